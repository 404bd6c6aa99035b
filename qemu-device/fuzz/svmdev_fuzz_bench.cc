// Throughput of the device fuzz target: runs generated inputs through
// LLVMFuzzerTestOneInput for a few seconds (or argv[1] seconds) and prints
// executions per second. Built with the same sanitizers and coverage
// instrumentation as the libFuzzer binary, without libFuzzer's mutator.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// -fsanitize-coverage wants these hooks; the benchmark only pays for them.
extern "C" void __sanitizer_cov_8bit_counters_init(uint8_t*, uint8_t*) {}
extern "C" void __sanitizer_cov_pcs_init(const uintptr_t*, const uintptr_t*) {}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  std::mt19937 rng(1);
  std::vector<uint8_t> input;
  uint64_t execs = 0;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    input.resize(64 + rng() % 448);  // typical corpus sizes
    for (uint8_t& b : input) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(input.data(), input.size());
    execs++;
    if (execs % 256 == 0)
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::printf("svmdev_fuzz_bench: %llu execs in %.1f s: %.0f exec/s\n",
              static_cast<unsigned long long>(execs), elapsed, execs / elapsed);
  return 0;
}

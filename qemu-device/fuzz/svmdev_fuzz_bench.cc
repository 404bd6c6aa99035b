// Throughput of the device fuzz target: runs generated inputs through
// LLVMFuzzerTestOneInput for a few seconds (or argv[1] seconds) and prints
// executions per second of wall time and of this process's CPU time; the
// second is what one core gives when the machine is shared. Built with the
// same sanitizers and coverage instrumentation as the libFuzzer binary,
// without libFuzzer's mutator.
#include <time.h>

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

static double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  std::mt19937 rng(1);
  std::vector<uint8_t> input;
  uint64_t execs = 0;
  auto start = std::chrono::steady_clock::now();
  double cpu_start = CpuSeconds();
  double elapsed = 0;
  while (elapsed < seconds) {
    input.resize(64 + rng() % 448);  // typical corpus sizes
    // Four bytes a draw: the generator should cost little next to the target.
    for (size_t i = 0; i < input.size(); i += 4) {
      uint32_t r = rng();
      for (size_t j = i; j < i + 4 && j < input.size(); j++, r >>= 8)
        input[j] = static_cast<uint8_t>(r);
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
    execs++;
    if (execs % 256 == 0)
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  double cpu = CpuSeconds() - cpu_start;
  std::printf("svmdev_fuzz_bench: %llu execs in %.1f s: %.0f exec/s, %.0f exec per CPU second\n",
              static_cast<unsigned long long>(execs), elapsed, execs / elapsed, execs / cpu);
  return 0;
}

// Raw byte mutation of the binary form against the structured mutator, on
// the example programs: mutations per second and how the results decode.
//
//   mutate_bench [iterations]
//
// Every byte string decodes to a valid program, so "valid" for raw bytes is
// the stricter question of whether the bytes were a program as they stand
// (Encode(Decode(b)) == b): otherwise the decoder folded a value, picked
// another buffer or thread, dropped an op or skipped junk, and the mutation
// was not the one the bytes spell. "changed" counts results whose program
// differs from the input's, the mutations an engine does not waste a run on.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "program/binary.h"
#include "program/corpus_files.h"
#include "program/mutate.h"
#include "program/validate.h"

namespace svmfuzz {
namespace {

constexpr size_t kMaxSize = 4096;

std::vector<std::vector<uint8_t>> Seeds() {
  std::vector<std::vector<uint8_t>> seeds;
  for (const Program& p : ReadCorpus(SVMFUZZ_CORPUS_DIR)) seeds.push_back(Encode(p));
  return seeds;
}

// One to four of the byte-level steps engines use: bit flip, random byte,
// byte inserted, byte erased.
void Havoc(Mutator* rng, std::vector<uint8_t>* b) {
  for (uint64_t n = 1 + rng->Below(4); n > 0; n--) {
    const uint64_t kind = b->empty() ? 2 : rng->Below(4);
    const size_t at = b->empty() ? 0 : rng->Below(b->size());
    switch (kind) {
      case 0: (*b)[at] ^= static_cast<uint8_t>(1 << rng->Below(8)); break;
      case 1: (*b)[at] = static_cast<uint8_t>(rng->Below(256)); break;
      case 2:
        if (b->size() < kMaxSize) b->insert(b->begin() + at, static_cast<uint8_t>(rng->Below(256)));
        break;
      default: b->erase(b->begin() + at); break;
    }
  }
}

struct Figures {
  double per_second = 0;
  double valid = 0;
  double changed = 0;
};

template <typename Step>
Figures Measure(const std::vector<std::vector<uint8_t>>& seeds, int iterations, Step step) {
  using Clock = std::chrono::steady_clock;
  int valid = 0, changed = 0;
  std::chrono::duration<double> spent{0};
  for (int i = 0; i < iterations; i++) {
    const std::vector<uint8_t>& in = seeds[i % seeds.size()];
    const auto start = Clock::now();
    const std::vector<uint8_t> out = step(i, in);
    spent += Clock::now() - start;
    const Program p = Decode(out);
    valid += !Validate(p) && Encode(p) == out;
    changed += p != Decode(in);
  }
  return {iterations / spent.count(), static_cast<double>(valid) / iterations,
          static_cast<double>(changed) / iterations};
}

}  // namespace
}  // namespace svmfuzz

int main(int argc, char** argv) {
  using namespace svmfuzz;
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 200000;
  const auto seeds = Seeds();
  if (seeds.empty() || iterations <= 0) {
    std::fprintf(stderr, "mutate_bench: no seeds in %s or no iterations\n", SVMFUZZ_CORPUS_DIR);
    return 1;
  }
  Mutator rng(1);
  const Figures raw = Measure(seeds, iterations, [&](int, const std::vector<uint8_t>& in) {
    std::vector<uint8_t> b = in;
    Havoc(&rng, &b);
    return b;
  });
  const Figures structured = Measure(seeds, iterations, [&](int i, const std::vector<uint8_t>& in) {
    const std::vector<uint8_t>& other = seeds[(i + 1) % seeds.size()];
    return Mutator(i).MutateBytes(in.data(), in.size(), i % 2 ? other.data() : nullptr,
                                  other.size(), kMaxSize);
  });
  std::printf("%d mutations of %zu seed programs each\n", iterations, seeds.size());
  std::printf("%-12s %14s %8s %8s\n", "", "mutations/s", "valid", "changed");
  std::printf("%-12s %14.0f %8.3f %8.3f\n", "raw bytes", raw.per_second, raw.valid, raw.changed);
  std::printf("%-12s %14.0f %8.3f %8.3f\n", "structured", structured.per_second, structured.valid,
              structured.changed);
  return 0;
}

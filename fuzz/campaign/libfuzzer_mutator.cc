// libFuzzer's custom mutator for svmfuzz-guest-fuzz: inputs are decoded,
// mutated as programs (program/mutate.h) and encoded again, so nearly every
// run the engine pays for is a new, meaningful program. Linked into the
// libFuzzer harness and into its test, which supplies LLVMFuzzerMutate.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "program/binary.h"
#include "program/mutate.h"
#include "program/validate.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

// One input in this many gets libFuzzer's byte-level havoc instead: it
// reaches argument values and record boundaries the structured steps do not
// prefer, and the decoder makes something valid of whatever it leaves.
constexpr uint64_t kHavocOneIn = 16;

// SVMFUZZ_MUTATOR=bytes turns the structured steps off: libFuzzer's byte
// mutations and a byte-level crossover only, the baseline the structured
// mutator is measured against (svmfuzz bench --mutator-minutes).
// Read on every call: next to a guest run it costs nothing.
bool BytesOnly() {
  const char* v = std::getenv("SVMFUZZ_MUTATOR");
  return v != nullptr && std::strcmp(v, "bytes") == 0;
}

size_t Store(const std::vector<uint8_t>& bytes, uint8_t* out, size_t max_size) {
  const size_t n = bytes.size() < max_size ? bytes.size() : max_size;
  if (n > 0) std::memcpy(out, bytes.data(), n);
  return n;
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  if (BytesOnly()) return LLVMFuzzerMutate(data, size, max_size);
  svmfuzz::Mutator mutator(seed);
  if (mutator.Below(kHavocOneIn) == 0) {
    std::vector<uint8_t> raw(data, data + size);
    raw.resize(max_size);
    raw.resize(LLVMFuzzerMutate(raw.data(), size, max_size));
    // Kept in canonical form, and only if it still is a program with ops.
    svmfuzz::Program p = svmfuzz::Decode(raw);
    if (!svmfuzz::Validate(p) && !p.ops.empty()) {
      svmfuzz::FitSize(&p, max_size);
      if (!p.ops.empty()) return Store(svmfuzz::Encode(p), data, max_size);
    }
  }
  return Store(mutator.MutateBytes(data, size, nullptr, 0, max_size), data, max_size);
}

extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* data1, size_t size1,
                                            const uint8_t* data2, size_t size2, uint8_t* out,
                                            size_t max_out_size, unsigned int seed) {
  svmfuzz::Mutator mutator(seed);
  if (BytesOnly()) {
    // A head of one input and a tail of the other, as libFuzzer's own
    // crossover makes when no custom one is given.
    const size_t head = size1 ? mutator.Below(size1 + 1) : 0;
    const size_t from = size2 ? mutator.Below(size2 + 1) : 0;
    size_t n = 0;
    for (size_t i = 0; i < head && n < max_out_size; ++i) out[n++] = data1[i];
    for (size_t i = from; i < size2 && n < max_out_size; ++i) out[n++] = data2[i];
    return n;
  }
  svmfuzz::Program a = svmfuzz::Decode(data1, size1);
  const svmfuzz::Program b = svmfuzz::Decode(data2, size2);
  if (svmfuzz::Validate(a) || svmfuzz::Validate(b)) return 0;
  const svmfuzz::Mutation kind =
      mutator.Below(2) ? svmfuzz::Mutation::kSplice : svmfuzz::Mutation::kInsertSlice;
  // 0 tells libFuzzer there was nothing to cross: it tries another mutation.
  if (!mutator.Apply(kind, &a, &b)) return 0;
  svmfuzz::FitSize(&a, max_out_size);
  return Store(svmfuzz::Encode(a), out, max_out_size);
}

// The engines' entry points into the structured mutator: libFuzzer's custom
// mutator and crossover, linked in here with a stand-in LLVMFuzzerMutate,
// and the AFL++ custom mutator library, loaded as afl-fuzz loads it.
#include <dlfcn.h>
#include <stdlib.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "program/binary.h"
#include "program/corpus_files.h"
#include "program/text.h"
#include "program/validate.h"

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed);
extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* data1, size_t size1,
                                            const uint8_t* data2, size_t size2, uint8_t* out,
                                            size_t max_out_size, unsigned int seed);

namespace {

int havoc_calls = 0;

}  // namespace

// libFuzzer's byte-level mutator, stood in for by a change that depends on
// the input alone, as libFuzzer's does on its seed.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size) {
  havoc_calls++;
  if (size < max_size && size % 3 == 0) data[size++] = static_cast<uint8_t>(size);
  if (size > 0) data[size / 2] ^= 0x5a;
  return size;
}

namespace svmfuzz {
namespace {

std::vector<std::vector<uint8_t>> CorpusBytes() {
  std::vector<std::string> errors;
  std::vector<std::vector<uint8_t>> out;
  for (const Program& p : ReadCorpus(SVMFUZZ_CORPUS_DIR, &errors)) out.push_back(Encode(p));
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_GE(out.size(), 5u);
  return out;
}

// The bytes are a valid program as they stand, in canonical form.
::testing::AssertionResult IsProgram(const uint8_t* data, size_t size) {
  const Program p = Decode(data, size);
  if (auto e = Validate(p)) return ::testing::AssertionFailure() << e->message;
  if (Encode(p) != std::vector<uint8_t>(data, data + size))
    return ::testing::AssertionFailure() << "not the canonical encoding of\n" << Print(p);
  return ::testing::AssertionSuccess();
}

TEST(LibFuzzerMutator, MutatesCorpusAndJunkIntoProgramsWithinMaxSize) {
  const auto corpus = CorpusBytes();
  havoc_calls = 0;
  int changed = 0;
  for (unsigned seed = 0; seed < 20000; seed++) {
    std::vector<uint8_t> in = corpus[seed % corpus.size()];
    if (seed % 7 == 0) in.assign(seed % 50, static_cast<uint8_t>(seed));  // junk
    const std::vector<uint8_t> before = in;
    const size_t max_size = seed % 5 == 0 ? 32 : 4096;
    in.resize(std::max(max_size, in.size()));
    const size_t n = LLVMFuzzerCustomMutator(in.data(), before.size(), max_size, seed);
    ASSERT_LE(n, max_size);
    ASSERT_TRUE(IsProgram(in.data(), n)) << "seed " << seed;
    changed += std::vector<uint8_t>(in.begin(), in.begin() + n) != before;
  }
  EXPECT_GT(changed, 18000);
  // The byte-level fallback is taken now and then, not mostly.
  EXPECT_GT(havoc_calls, 500);
  EXPECT_LT(havoc_calls, 4000);
}

TEST(LibFuzzerMutator, SameSeedSameResult) {
  const auto corpus = CorpusBytes();
  for (unsigned seed = 0; seed < 200; seed++) {
    std::vector<uint8_t> a = corpus[seed % corpus.size()], b = a;
    const size_t size = a.size();
    a.resize(4096);
    b.resize(4096);
    const size_t na = LLVMFuzzerCustomMutator(a.data(), size, 4096, seed);
    const size_t nb = LLVMFuzzerCustomMutator(b.data(), size, 4096, seed);
    ASSERT_EQ(std::vector<uint8_t>(a.begin(), a.begin() + na),
              std::vector<uint8_t>(b.begin(), b.begin() + nb));
  }
}

TEST(LibFuzzerMutator, CrossOverTakesOpsOfBothParents) {
  ParseError error;
  const auto sleeps = Parse("sleep us=1\nsleep us=2\nsleep us=3\n", &error);
  const auto yields = Parse("yield\nyield\n", &error);
  ASSERT_TRUE(sleeps && yields);
  const std::vector<uint8_t> a = Encode(*sleeps), b = Encode(*yields);
  for (unsigned seed = 0; seed < 200; seed++) {
    std::vector<uint8_t> out(64);
    const size_t n = LLVMFuzzerCustomCrossOver(a.data(), a.size(), b.data(), b.size(), out.data(),
                                               out.size(), seed);
    ASSERT_GT(n, 0u);
    ASSERT_TRUE(IsProgram(out.data(), n));
    bool sleep = false, yield = false;
    for (const Op& op : Decode(out.data(), n).ops) {
      sleep |= op.code == OpCode::kSleep;
      yield |= op.code == OpCode::kYield;
    }
    EXPECT_TRUE(sleep && yield) << seed;
  }
  const auto corpus = CorpusBytes();
  for (unsigned seed = 0; seed < 2000; seed++) {
    const auto& x = corpus[seed % corpus.size()];
    const auto& y = corpus[(seed / corpus.size()) % corpus.size()];
    std::vector<uint8_t> out(seed % 3 == 0 ? 40 : 4096);
    const size_t n = LLVMFuzzerCustomCrossOver(x.data(), x.size(), y.data(), y.size(), out.data(),
                                               out.size(), seed);
    ASSERT_LE(n, out.size());
    ASSERT_TRUE(IsProgram(out.data(), n));
  }
}

// The baseline of the mutator benchmark: libFuzzer's byte mutations as they
// are, and a crossover of a head and a tail, with no structured step.
TEST(LibFuzzerMutator, BytesModeLeavesProgramsToTheEngine) {
  ASSERT_EQ(setenv("SVMFUZZ_MUTATOR", "bytes", 1), 0);
  const auto corpus = CorpusBytes();
  havoc_calls = 0;
  for (unsigned seed = 0; seed < 100; seed++) {
    std::vector<uint8_t> in = corpus[seed % corpus.size()], expect = in;
    const size_t size = in.size();
    in.resize(4096);
    expect.resize(4096);
    const size_t n = LLVMFuzzerCustomMutator(in.data(), size, 4096, seed);
    const size_t m = LLVMFuzzerMutate(expect.data(), size, 4096);
    ASSERT_EQ(std::vector<uint8_t>(in.begin(), in.begin() + n),
              std::vector<uint8_t>(expect.begin(), expect.begin() + m));
  }
  EXPECT_EQ(havoc_calls, 200);
  const std::vector<uint8_t> a(10, 0xaa), b(10, 0xbb);
  for (unsigned seed = 0; seed < 100; seed++) {
    std::vector<uint8_t> out(12);
    const size_t n = LLVMFuzzerCustomCrossOver(a.data(), a.size(), b.data(), b.size(), out.data(),
                                               out.size(), seed);
    ASSERT_LE(n, out.size());
    size_t i = 0;
    while (i < n && out[i] == 0xaa) i++;
    while (i < n && out[i] == 0xbb) i++;
    EXPECT_EQ(i, n) << "not a head of a, then a tail of b";
  }
  ASSERT_EQ(unsetenv("SVMFUZZ_MUTATOR"), 0);
}

struct AflMutator {
  using Init = void* (*)(void*, unsigned int);
  using Fuzz = size_t (*)(void*, uint8_t*, size_t, uint8_t**, uint8_t*, size_t, size_t);
  using Describe = const char* (*)(void*, size_t);
  using Deinit = void (*)(void*);

  AflMutator() {
    handle = dlopen(SVMFUZZ_AFL_MUTATOR, RTLD_NOW | RTLD_LOCAL);
    if (!handle) return;
    init = reinterpret_cast<Init>(dlsym(handle, "afl_custom_init"));
    fuzz = reinterpret_cast<Fuzz>(dlsym(handle, "afl_custom_fuzz"));
    describe = reinterpret_cast<Describe>(dlsym(handle, "afl_custom_describe"));
    deinit = reinterpret_cast<Deinit>(dlsym(handle, "afl_custom_deinit"));
  }
  ~AflMutator() {
    if (handle) dlclose(handle);
  }

  void* handle = nullptr;
  Init init = nullptr;
  Fuzz fuzz = nullptr;
  Describe describe = nullptr;
  Deinit deinit = nullptr;
};

TEST(AflMutator, LoadsAndMutatesCorpusIntoPrograms) {
  AflMutator lib;
  ASSERT_NE(lib.handle, nullptr) << dlerror();
  ASSERT_TRUE(lib.init && lib.fuzz && lib.describe && lib.deinit);
  void* state = lib.init(nullptr, 1234);
  ASSERT_NE(state, nullptr);
  auto corpus = CorpusBytes();
  int changed = 0, runs = 0;
  for (int i = 0; i < 20000; i++, runs++) {
    std::vector<uint8_t>& in = corpus[i % corpus.size()];
    std::vector<uint8_t>& add = corpus[(i / 3) % corpus.size()];
    const size_t max_size = i % 4 == 0 ? 48 : 4096;
    uint8_t* out = nullptr;
    const size_t n = lib.fuzz(state, in.data(), in.size(), &out, i % 2 ? add.data() : nullptr,
                              add.size(), max_size);
    ASSERT_LE(n, max_size);
    ASSERT_TRUE(n == 0 || out != nullptr);
    ASSERT_TRUE(IsProgram(out, n)) << "input " << i;
    changed += std::vector<uint8_t>(out, out + n) != in;
    const char* what = lib.describe(state, 32);
    ASSERT_NE(what, nullptr);
    ASSERT_GT(std::string(what).size(), 0u);
  }
  EXPECT_GT(changed, runs * 9 / 10);
  lib.deinit(state);
  // Same seed, same mutations.
  void* a = lib.init(nullptr, 7);
  void* b = lib.init(nullptr, 7);
  for (int i = 0; i < 100; i++) {
    uint8_t *oa = nullptr, *ob = nullptr;
    const size_t na = lib.fuzz(a, corpus[0].data(), corpus[0].size(), &oa, nullptr, 0, 4096);
    const size_t nb = lib.fuzz(b, corpus[0].data(), corpus[0].size(), &ob, nullptr, 0, 4096);
    ASSERT_EQ(std::vector<uint8_t>(oa, oa + na), std::vector<uint8_t>(ob, ob + nb));
  }
  lib.deinit(a);
  lib.deinit(b);
}

}  // namespace
}  // namespace svmfuzz

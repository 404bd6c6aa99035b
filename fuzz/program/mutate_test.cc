#include "program/mutate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>

#include "program/binary.h"
#include "program/corpus_files.h"
#include "program/must_parse.h"
#include "program/text.h"
#include "program/validate.h"

namespace svmfuzz {
namespace {

std::vector<Program> Corpus() {
  std::vector<std::string> errors;
  std::vector<Program> programs = ReadCorpus(SVMFUZZ_CORPUS_DIR, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_GE(programs.size(), 5u);
  return programs;
}

::testing::AssertionResult IsValid(const Program& p) {
  if (auto e = Validate(p)) return ::testing::AssertionFailure() << e->message << "\n" << Print(p);
  return ::testing::AssertionSuccess();
}

int CountCode(const std::vector<Op>& ops, OpCode code) {
  int n = 0;
  for (const Op& op : ops) n += (op.code == code) + CountCode(op.body, code);
  return n;
}

// Runs `kind` on `p` with seeds 0..runs-1 and hands each result that applied
// to `check`; returns how many applied.
int ForSeeds(Mutation kind, const Program& p, int runs,
             const std::function<void(const Program&)>& check, const Program* other = nullptr) {
  int applied = 0;
  for (int seed = 0; seed < runs; seed++) {
    Mutator m(seed);
    Program q = p;
    if (!m.Apply(kind, &q, other)) {
      EXPECT_EQ(q, p) << "a mutation that did not apply changed the program";
      continue;
    }
    applied++;
    EXPECT_TRUE(IsValid(q));
    check(q);
  }
  return applied;
}

TEST(Mutator, HundredThousandMutationsOfCorpusEmptyAndGarbageAreValid) {
  std::vector<Program> pool = Corpus();
  pool.push_back(Program{});
  Mutator rng(1);
  for (int i = 0; i < 8; i++) {
    std::vector<uint8_t> junk(1 + rng.Below(200));
    for (uint8_t& b : junk) b = static_cast<uint8_t>(rng.Below(256));
    pool.push_back(Decode(junk));
  }
  const size_t seeds = pool.size();
  const size_t max_sizes[] = {16, 128, 1024, 4096};
  std::map<Mutation, int> seen;
  Mutator m(42);
  for (int i = 0; i < 100000; i++) {
    // Chains of mutations: most inputs are earlier results, some are seeds again.
    const size_t from = m.Below(4) == 0 ? m.Below(seeds) : m.Below(pool.size());
    Program p = pool[from];
    const Program& other = pool[m.Below(pool.size())];
    const size_t max_size = max_sizes[m.Below(4)];
    seen[m.Mutate(&p, m.Below(2) ? &other : nullptr, max_size)]++;
    ASSERT_TRUE(IsValid(p)) << "mutation " << i;
    ASSERT_LE(CountOps(p.ops), kMaxOps);
    const std::vector<uint8_t> bytes = Encode(p);
    ASSERT_LE(bytes.size(), max_size);
    ASSERT_EQ(Decode(bytes), p);
    if (pool.size() < 512) {
      pool.push_back(std::move(p));
    } else {
      pool[seeds + m.Below(pool.size() - seeds)] = std::move(p);
    }
  }
  for (size_t k = 0; k < kNumMutations; k++)
    EXPECT_GT(seen[static_cast<Mutation>(k)], 100) << MutationName(static_cast<Mutation>(k));
}

TEST(Mutator, BytesFromGarbageAndEmptyInputsGiveValidProgramsWithinMaxSize) {
  Mutator rng(7);
  for (int i = 0; i < 20000; i++) {
    std::vector<uint8_t> junk(rng.Below(300)), other(rng.Below(300));
    for (uint8_t& b : junk) b = static_cast<uint8_t>(rng.Below(256));
    for (uint8_t& b : other) b = static_cast<uint8_t>(rng.Below(256));
    const size_t max_size = rng.Below(600);
    Mutator m(i);
    const std::vector<uint8_t> out =
        m.MutateBytes(junk.data(), junk.size(), i % 2 ? other.data() : nullptr, other.size(),
                      max_size);
    ASSERT_LE(out.size(), max_size);
    const Program p = Decode(out);
    ASSERT_TRUE(IsValid(p));
    // The output is the canonical form of what it decodes to.
    ASSERT_EQ(Encode(p), out);
  }
  // An empty program grows an op; stacked steps may take it away again.
  int grown = 0;
  for (int seed = 0; seed < 200; seed++) {
    Mutator m(seed);
    Program p;
    m.Mutate(&p);
    EXPECT_FALSE(p.ops.empty());
    EXPECT_TRUE(IsValid(p));
    grown += !Decode(m.MutateBytes(nullptr, 0, nullptr, 0, 4096)).ops.empty();
  }
  EXPECT_GT(grown, 150);
}

TEST(Mutator, SameSeedSameResultsOtherSeedOthers) {
  const std::vector<Program> corpus = Corpus();
  auto run = [&](uint64_t seed) {
    Mutator m(seed);
    std::vector<Program> out;
    Program p = corpus[0];
    for (int i = 0; i < 2000; i++) {
      m.Mutate(&p, &corpus[i % corpus.size()], 4096);
      out.push_back(p);
    }
    return out;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
  const std::vector<uint8_t> in = Encode(corpus[1]);
  EXPECT_EQ(Mutator(9).MutateBytes(in.data(), in.size(), nullptr, 0, 4096),
            Mutator(9).MutateBytes(in.data(), in.size(), nullptr, 0, 4096));
}

TEST(Mutator, RepairKeepsValidProgramsAndFixesBrokenOnes) {
  for (const Program& p : Corpus()) EXPECT_EQ(Repair(p), p);
  Program broken = MustParse(
      "mmap buf=0 pages=4 kind=anon prot=rw\n"
      "thread_create tid=1\n"
      "@1 touch buf=0 off=0 pages=4\n");
  broken.ops.erase(broken.ops.begin() + 1);  // the thread the touch ran on
  broken.ops[0].args[1] = 2;                 // the buffer shrinks under the touch
  const Program fixed = Repair(broken);
  EXPECT_TRUE(IsValid(fixed));
  ASSERT_EQ(fixed.ops.size(), 2u);
  EXPECT_EQ(fixed.ops[1].thread, 0u);
  EXPECT_LE(fixed.ops[1].arg("off") + fixed.ops[1].arg("pages"), 2u);
}

TEST(Mutator, InsertAddsAValidOp) {
  int grew = 0, runs = 0;
  for (const Program& p : Corpus()) {
    runs += ForSeeds(Mutation::kInsert, p, 200, [&](const Program& q) {
      grew += CountOps(q.ops) > CountOps(p.ops);
    });
  }
  // An inserted munmap or thread_join can end what later ops needed.
  EXPECT_GT(grew, runs * 9 / 10);
  EXPECT_EQ(ForSeeds(Mutation::kInsert, Program{}, 200,
                     [](const Program& q) { EXPECT_GE(q.ops.size(), 1u); }),
            200);
  // Ops that need a buffer get a live one, with an offset and a count inside it.
  const Program mapped = MustParse("mmap buf=3 pages=5 kind=anon prot=rw\n");
  ForSeeds(Mutation::kInsert, mapped, 500, [](const Program& q) {
    for (const Op& op : q.ops)
      if (ArgIndex(op.code, "buf") >= 0 && op.code != OpCode::kMmap) EXPECT_EQ(op.arg("buf"), 3u);
  });
  Program full;
  full.ops.resize(kMaxOps);
  Mutator m(0);
  EXPECT_FALSE(m.Apply(Mutation::kInsert, &full));
  EXPECT_EQ(CountOps(full.ops), kMaxOps);
  m.Mutate(&full);
  EXPECT_LE(CountOps(full.ops), kMaxOps);
}

TEST(Mutator, DeleteDuplicateSwapMove) {
  const Program flat = MustParse("sleep us=1\nyield\nsleep us=2\nsleep us=3\n");
  EXPECT_EQ(ForSeeds(Mutation::kDelete, flat, 100,
                     [&](const Program& q) { EXPECT_EQ(q.ops.size(), 3u); }),
            100);
  EXPECT_EQ(ForSeeds(Mutation::kDuplicate, flat, 100,
                     [&](const Program& q) {
                       ASSERT_EQ(q.ops.size(), 5u);
                       bool twice = false;
                       for (size_t i = 0; i + 1 < q.ops.size(); i++)
                         twice |= q.ops[i] == q.ops[i + 1];
                       EXPECT_TRUE(twice);
                     }),
            100);
  auto same_ops = [&](const Program& q) {
    EXPECT_NE(q, flat);
    std::vector<std::string> a, b;
    for (const Op& op : q.ops) a.push_back(Print(Program{{op}}));
    for (const Op& op : flat.ops) b.push_back(Print(Program{{op}}));
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b);
  };
  EXPECT_EQ(ForSeeds(Mutation::kSwap, flat, 100, same_ops), 100);
  int moved = 0;
  ForSeeds(Mutation::kMove, flat, 100, [&](const Program& q) {
    if (q == flat) return;  // moved back to where it was
    moved++;
    same_ops(q);
  });
  EXPECT_GT(moved, 50);
  // A moved mmap that its users now precede is repaired, never left invalid.
  const Program deps = MustParse(
      "mmap buf=0 pages=4 kind=anon prot=rw\ntouch buf=0 off=1 pages=3\n"
      "fork wait=yes {\n  read buf=0 off=0 pages=4\n}\n");
  for (Mutation kind : {Mutation::kMove, Mutation::kSwap, Mutation::kDelete, Mutation::kDuplicate})
    ForSeeds(kind, deps, 200, [](const Program&) {});
}

TEST(Mutator, ArgStaysInRangeAndPrefersBoundaries) {
  const Program p = MustParse("sleep us=500\n");
  std::map<uint64_t, int> values;
  EXPECT_EQ(ForSeeds(Mutation::kArg, p, 2000,
                     [&](const Program& q) {
                       ASSERT_EQ(q.ops.size(), 1u);
                       EXPECT_EQ(q.ops[0].code, OpCode::kSleep);
                       values[q.ops[0].arg("us")]++;
                     }),
            2000);
  EXPECT_GT(values[0], 100);
  EXPECT_GT(values[1000000], 100);
  EXPECT_GT(values[1], 50);
  int near = 0;
  for (uint64_t v = 492; v <= 508; v++) near += v != 500 ? values[v] : 0;
  EXPECT_GT(near, 100);
  // A changed buffer brings its offset and count inside the new one.
  const Program bufs = MustParse(
      "mmap buf=0 pages=64 kind=anon prot=rw\nmmap buf=1 pages=2 kind=anon prot=rw\n"
      "touch buf=0 off=40 pages=20\n");
  int switched = 0;
  ForSeeds(Mutation::kArg, bufs, 500, [&](const Program& q) {
    switched += q.ops.size() == 3 && q.ops[2].arg("buf") == 1;
  });
  EXPECT_GT(switched, 10);
}

TEST(Mutator, RetagThreadMovesOpsBetweenRunningThreads) {
  const Program p = MustParse(
      "thread_create tid=1\nthread_create tid=2\nyield\n@1 sleep us=3\nthread_join tid=1\n");
  std::map<uint64_t, int> yield_on;
  EXPECT_EQ(ForSeeds(Mutation::kRetagThread, p, 300,
                     [&](const Program& q) {
                       EXPECT_NE(q, p);
                       for (const Op& op : q.ops) {
                         if (Describe(op.code).main_thread_only) EXPECT_EQ(op.thread, 0u);
                         if (op.code == OpCode::kYield) yield_on[op.thread]++;
                       }
                     }),
            300);
  EXPECT_GT(yield_on[1], 0);
  EXPECT_GT(yield_on[2], 0);
  // With no second thread, one is started for the op.
  const Program alone = MustParse("sleep us=1\n");
  ForSeeds(Mutation::kRetagThread, alone, 50, [](const Program& q) {
    ASSERT_EQ(q.ops.size(), 2u);
    EXPECT_EQ(q.ops[0].code, OpCode::kThreadCreate);
    EXPECT_EQ(q.ops[1].thread, q.ops[0].arg("tid"));
  });
  EXPECT_EQ(ForSeeds(Mutation::kRetagThread, MustParse("thread_create tid=1\n"), 10,
                     [](const Program&) {}),
            0);
}

TEST(Mutator, RetagFileMovesDriverOpsBetweenUsableFiles) {
  const Program p = MustParse(
      "mmap buf=0 pages=4 kind=anon prot=rw\nopen_dev file=2 dev=1 personality=slow\n"
      "map_present buf=0 off=0 pages=4\ntouch buf=0 off=0 pages=1\n");
  EXPECT_EQ(ForSeeds(Mutation::kRetagFile, p, 100,
                     [&](const Program& q) { EXPECT_EQ(q.ops[2].file, 2u); }),
            100);
  // With one usable file, another is opened for the op.
  const Program one = MustParse("mmap buf=0 pages=4 kind=anon prot=rw\nrelease\n");
  ForSeeds(Mutation::kRetagFile, one, 50, [](const Program& q) {
    ASSERT_EQ(q.ops.size(), 3u);
    EXPECT_EQ(q.ops[1].code, OpCode::kOpenDev);
    EXPECT_NE(q.ops[2].file, 0u);
    EXPECT_EQ(q.ops[2].file, q.ops[1].arg("file"));
  });
}

TEST(Mutator, WrapMakesAForkBodyAndUnwrapUndoesIt) {
  const Program p = MustParse(
      "mmap buf=0 pages=8 kind=anon prot=rw\ntouch buf=0 off=0 pages=8\n"
      "write buf=0 off=1 pages=2 seed=3\nread buf=0 off=0 pages=8\n");
  int bodies = 0;
  EXPECT_EQ(ForSeeds(Mutation::kWrap, p, 200,
                     [&](const Program& q) {
                       ASSERT_EQ(CountCode(q.ops, OpCode::kFork), 1);
                       for (const Op& op : q.ops)
                         if (op.code == OpCode::kFork) bodies += !op.body.empty();
                     }),
            200);
  EXPECT_EQ(bodies, 200);
  const Program nested = MustParse("fork wait=no {\n  fork wait=no {\n    yield\n  }\n}\n");
  ForSeeds(Mutation::kWrap, nested, 100, [](const Program&) {});
  ASSERT_EQ(ForSeeds(Mutation::kUnwrap, nested, 100,
                     [&](const Program& q) { EXPECT_EQ(CountCode(q.ops, OpCode::kFork), 1); }),
            100);
  EXPECT_EQ(ForSeeds(Mutation::kUnwrap, p, 10, [](const Program&) {}), 0);
}

TEST(Mutator, SpliceAndInsertSliceTakeOpsOfBothParents) {
  const Program a = MustParse("sleep us=1\nsleep us=2\nsleep us=3\n");
  const Program b = MustParse("yield\nyield\nyield\nyield\n");
  auto both = [](const Program& q) {
    EXPECT_GT(CountCode(q.ops, OpCode::kSleep), 0);
    EXPECT_GT(CountCode(q.ops, OpCode::kYield), 0);
  };
  EXPECT_EQ(ForSeeds(Mutation::kSplice, a, 200, both, &b), 200);
  EXPECT_EQ(ForSeeds(Mutation::kInsertSlice, a, 200,
                     [&](const Program& q) {
                       both(q);
                       EXPECT_EQ(CountCode(q.ops, OpCode::kSleep), 3);
                     },
                     &b),
            200);
  EXPECT_EQ(ForSeeds(Mutation::kSplice, a, 10, [](const Program&) {}), 0);
  // Crossing corpus programs gives valid programs within kMaxOps.
  const std::vector<Program> corpus = Corpus();
  for (const Program& x : corpus)
    for (const Program& y : corpus)
      for (Mutation kind : {Mutation::kSplice, Mutation::kInsertSlice})
        ForSeeds(kind, x, 20, [](const Program& q) { EXPECT_LE(CountOps(q.ops), kMaxOps); }, &y);
}

TEST(Mutator, FitSizeCutsFromTheEnd) {
  for (const Program& p : Corpus()) {
    const size_t full = Encode(p).size();
    for (size_t max : {size_t{0}, size_t{5}, full / 2, full}) {
      Program q = p;
      FitSize(&q, max);
      EXPECT_TRUE(IsValid(q));
      EXPECT_LE(Encode(q).size(), max);
      if (max == full) EXPECT_EQ(q, p);
    }
  }
}

TEST(CapDelays, CapsSleepsAndDelaysInForksToo) {
  Program p = MustParse(
      "sleep us=1000000\nsleep us=5\nfork wait=yes {\n  sleep us=300000\n  delay_acks us=900000\n}\n"
      "yield\n");
  EXPECT_TRUE(CapDelays(&p));
  EXPECT_EQ(Print(p), "sleep us=20000\nsleep us=5\nfork wait=yes {\n  sleep us=20000\n"
                      "  delay_acks us=20000\n}\nyield\n");
  EXPECT_FALSE(Validate(p));
  EXPECT_FALSE(CapDelays(&p));
}

}  // namespace
}  // namespace svmfuzz

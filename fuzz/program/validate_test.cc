#include "program/validate.h"

#include <gtest/gtest.h>

#include <string>

namespace svmfuzz {
namespace {

Op MakeOp(OpCode code, std::initializer_list<uint64_t> args, uint64_t thread = 0,
          std::vector<Op> body = {}) {
  Op op;
  op.code = code;
  op.thread = thread;
  int i = 0;
  for (uint64_t a : args) op.args[i++] = a;
  op.body = std::move(body);
  return op;
}

constexpr uint64_t kAnon = 0, kRw = 3;
Op Mmap(uint64_t buf, uint64_t pages) { return MakeOp(OpCode::kMmap, {buf, pages, kAnon, kRw}); }
Op Touch(uint64_t buf, uint64_t off, uint64_t pages, uint64_t thread = 0) {
  return MakeOp(OpCode::kTouch, {buf, off, pages}, thread);
}
Op Fork(std::vector<Op> body) { return MakeOp(OpCode::kFork, {1}, 0, std::move(body)); }
Op Yield() { return MakeOp(OpCode::kYield, {}); }

// Expects `p` to be rejected at `path`, argument `arg`, with `words` in the message.
void ExpectInvalid(const Program& p, std::vector<size_t> path, int arg, const std::string& words) {
  const auto e = Validate(p);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->path, path);
  EXPECT_EQ(e->arg, arg);
  EXPECT_NE(e->message.find(words), std::string::npos) << e->message;
}

TEST(Validate, AcceptsAValidProgram) {
  Program p;
  p.ops = {Mmap(0, 16),
           MakeOp(OpCode::kThreadCreate, {1}),
           MakeOp(OpCode::kWrite, {0, 0, 16, 7}, 1),
           MakeOp(OpCode::kMigrateToDevice, {0, 4, 8}),
           Fork({Touch(0, 0, 16), Mmap(1, 2), Fork({Touch(1, 1, 1)})}),
           MakeOp(OpCode::kThreadJoin, {1}),
           MakeOp(OpCode::kMunmap, {0, 0, 16}),
           Mmap(0, 1)};
  EXPECT_FALSE(Validate(p).has_value());
  EXPECT_FALSE(Validate(Program{}).has_value());
}

TEST(Validate, BufferMustBeMappedBeforeUse) {
  ExpectInvalid(Program{{Touch(0, 0, 1)}}, {0}, 0, "buffer 0 is not mapped");
}

TEST(Validate, BufferEndsWithAFullMunmapOnly) {
  Program p{{Mmap(2, 8), MakeOp(OpCode::kMunmap, {2, 0, 4}), Touch(2, 0, 1)}};
  EXPECT_FALSE(Validate(p).has_value());
  p.ops.push_back(MakeOp(OpCode::kMunmap, {2, 0, 8}));
  p.ops.push_back(Touch(2, 0, 1));
  ExpectInvalid(p, {4}, 0, "buffer 2 is not mapped");
}

TEST(Validate, BufferIdIsDefinedOnce) {
  ExpectInvalid(Program{{Mmap(1, 1), Mmap(1, 1)}}, {1}, 0, "already mapped");
  ExpectInvalid(Program{{Mmap(kMaxBuffers, 1)}}, {0}, 0, "is not below 16");
}

TEST(Validate, RangesStayInsideTheBuffer) {
  ExpectInvalid(Program{{Mmap(0, 8), Touch(0, 8, 1)}}, {1}, 1, "offset 8 is outside buffer 0");
  ExpectInvalid(Program{{Mmap(0, 8), Touch(0, 4, 5)}}, {1}, 2, "5 pages from offset 4 do not fit");
  ExpectInvalid(Program{{Mmap(0, 8), Touch(0, 0, 0)}}, {1}, 2, "0 pages");
  ExpectInvalid(Program{{Mmap(0, 8), MakeOp(OpCode::kDeviceAccess, {0, 9, 0, 0})}}, {1}, 1,
                "outside");
}

TEST(Validate, RangesFollowMremap) {
  Program p{{Mmap(0, 8), MakeOp(OpCode::kMremap, {0, 2, 1}), Touch(0, 0, 3)}};
  ExpectInvalid(p, {2}, 2, "do not fit buffer 0 of 2 pages");
}

TEST(Validate, ValuesStayInTheirRanges) {
  ExpectInvalid(Program{{Mmap(0, 0)}}, {0}, 1, "pages=0 is not in [1, 1024]");
  ExpectInvalid(Program{{Mmap(0, kMaxPages + 1)}}, {0}, 1, "pages=1025");
  ExpectInvalid(Program{{MakeOp(OpCode::kMmap, {0, 1, 6, 0})}}, {0}, 2, "kind=6 is not in [0, 5]");
  ExpectInvalid(Program{{MakeOp(OpCode::kSleep, {1000001})}}, {0}, 0, "us=1000001");
  ExpectInvalid(Program{{MakeOp(OpCode::kFailNth, {0})}}, {0}, 0, "nth=0");
}

TEST(Validate, UnusedArgumentSlotsAreZero) {
  ExpectInvalid(Program{{MakeOp(OpCode::kYield, {0, 0, 1})}}, {0}, 2, "unused argument slot 2");
}

TEST(Validate, UnknownOpcode) {
  Op op;
  op.code = static_cast<OpCode>(kNumOps);
  ExpectInvalid(Program{{op}}, {0}, -1, "unknown opcode");
}

TEST(Validate, ThreadsRunBetweenCreateAndJoin) {
  ExpectInvalid(Program{{Mmap(0, 1), Touch(0, 0, 1, 1)}}, {1}, -1, "thread 1 is not running");
  ExpectInvalid(Program{{MakeOp(OpCode::kThreadCreate, {1}), MakeOp(OpCode::kThreadJoin, {1}),
                         MakeOp(OpCode::kYield, {}, 1)}},
                {2}, -1, "thread 1 is not running");
  ExpectInvalid(Program{{MakeOp(OpCode::kThreadCreate, {3}), MakeOp(OpCode::kThreadCreate, {3})}},
                {1}, 0, "already running");
  ExpectInvalid(Program{{MakeOp(OpCode::kThreadJoin, {2})}}, {0}, 0, "thread 2 is not running");
  ExpectInvalid(Program{{MakeOp(OpCode::kThreadCreate, {0})}}, {0}, 0, "thread id 0");
  ExpectInvalid(Program{{MakeOp(OpCode::kThreadCreate, {kMaxThreads})}}, {0}, 0, "thread id 8");
}

TEST(Validate, SomeOpsRunOnTheMainThreadOnly) {
  Program p{{MakeOp(OpCode::kThreadCreate, {1}), MakeOp(OpCode::kThreadCreate, {2}, 1)}};
  ExpectInvalid(p, {1}, -1, "thread_create runs on the main thread only");
  p.ops[1] = MakeOp(OpCode::kFork, {0}, 1);
  ExpectInvalid(p, {1}, -1, "fork runs on the main thread only");
}

TEST(Validate, ForkChildInheritsMappingsButNotThreads) {
  ExpectInvalid(
      Program{{MakeOp(OpCode::kThreadCreate, {1}), Fork({MakeOp(OpCode::kYield, {}, 1)})}}, {1, 0},
      -1, "thread 1 is not running");
  ExpectInvalid(Program{{Fork({Mmap(0, 1)}), Touch(0, 0, 1)}}, {1}, 0, "buffer 0 is not mapped");
  ExpectInvalid(Program{{Mmap(0, 4), Fork({MakeOp(OpCode::kMunmap, {0, 0, 4}), Touch(0, 0, 1)})}},
                {1, 1}, 0, "not mapped");
  EXPECT_FALSE(
      Validate(Program{{Mmap(0, 4), Fork({MakeOp(OpCode::kMunmap, {0, 0, 4})}), Touch(0, 0, 1)}})
          .has_value());
}

TEST(Validate, ForksNestTwoDeep) {
  EXPECT_FALSE(Validate(Program{{Fork({Fork({Yield()})})}}).has_value());
  ExpectInvalid(Program{{Fork({Fork({Fork({})})})}}, {0, 0, 0}, -1, "nest deeper than 2");
}

TEST(Validate, OnlyForkTakesABlock) {
  ExpectInvalid(Program{{MakeOp(OpCode::kYield, {}, 0, {Yield()})}}, {0}, -1, "takes no block");
}

Op Mirror(uint64_t file) {
  Op op = MakeOp(OpCode::kMirror, {0, 0, 1, 0});
  op.file = file;
  return op;
}
Op OpenDev(uint64_t file) { return MakeOp(OpCode::kOpenDev, {file, 0, 1}); }

TEST(Validate, DriverFilesAreOpenedBeforeUse) {
  EXPECT_FALSE(Validate(Program{{Mmap(0, 1), Mirror(0)}}).has_value());
  ExpectInvalid(Program{{Mmap(0, 1), Mirror(1)}}, {1}, -1, "file 1 is not open");
  EXPECT_FALSE(
      Validate(Program{{Mmap(0, 1), OpenDev(1), Mirror(1), OpenDev(0), Mirror(0)}}).has_value());
  ExpectInvalid(Program{{OpenDev(3), OpenDev(3)}}, {1}, 0, "file 3 is already open");
  ExpectInvalid(Program{{OpenDev(kMaxFiles)}}, {0}, 0, "file id 4 is not below 4");
  // File 0's first use bound it without a personality: too late to choose one.
  ExpectInvalid(Program{{Mmap(0, 1), Mirror(0), OpenDev(0)}}, {2}, 0,
                "file 0 is open: an earlier driver op used it");
  Op touch = Touch(0, 0, 1);
  touch.file = 1;
  ExpectInvalid(Program{{Mmap(0, 1), OpenDev(1), touch}}, {2}, -1, "touch uses no driver file");
  ExpectInvalid(Program{{MakeOp(OpCode::kOpenDev, {1, 4, 0})}}, {0}, 1, "dev=4 is not in [0, 3]");
  ExpectInvalid(Program{{MakeOp(OpCode::kOpenDev, {1, 0, 7})}}, {0}, 2, "personality=7");
}

TEST(Validate, ForkChildHasItsParentsFilesToBindAgain) {
  EXPECT_FALSE(Validate(Program{{Mmap(0, 1), OpenDev(2), Fork({Mirror(2)})}}).has_value());
  ExpectInvalid(Program{{Mmap(0, 1), OpenDev(2), Fork({OpenDev(2)})}}, {2, 0}, 0, "already open");
  ExpectInvalid(Program{{Mmap(0, 1), Fork({OpenDev(2)}), Mirror(2)}}, {2}, -1, "not open");
  // Its own file 0 is not bound until it uses it, whatever the parent did.
  EXPECT_FALSE(Validate(Program{{Mmap(0, 1), Mirror(0), Fork({OpenDev(0)})}}).has_value());
}

TEST(Validate, ChildrenAreEarlierForksOfTheProcess) {
  const Op kill = MakeOp(OpCode::kKillChild, {1});
  const Op mrelease = MakeOp(OpCode::kMrelease, {1});
  ExpectInvalid(Program{{Fork({}), kill}}, {1}, 0,
                "child 1 names no earlier fork of this process (it has 1)");
  EXPECT_FALSE(Validate(Program{{Fork({}), Fork({}), kill, mrelease}}).has_value());
  ExpectInvalid(Program{{Fork({}), Fork({kill})}}, {1, 0}, 0, "it has 0");
  // From another thread too: its child may not exist yet when it runs, an error, not invalid.
  Op on_thread = kill;
  on_thread.thread = 1;
  EXPECT_FALSE(
      Validate(Program{{MakeOp(OpCode::kThreadCreate, {1}), Fork({}), Fork({}), on_thread}})
          .has_value());
}

TEST(Validate, OpCountIsBounded) {
  Program p;
  p.ops.assign(kMaxOps - 1, Yield());
  p.ops.push_back(Fork({}));
  EXPECT_FALSE(Validate(p).has_value());
  p.ops.back().body.push_back(Yield());
  ExpectInvalid(p, {kMaxOps - 1, 0}, -1, "more than 256 ops");
}

}  // namespace
}  // namespace svmfuzz

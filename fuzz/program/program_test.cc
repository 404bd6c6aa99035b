#include "program/program.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace svmfuzz {
namespace {

OpCode Code(size_t i) { return static_cast<OpCode>(i); }

TEST(OpTable, NamesAreUniqueAndFound) {
  std::set<std::string> names;
  for (size_t i = 0; i < kNumOps; i++) {
    const OpDesc& d = Describe(Code(i));
    EXPECT_TRUE(names.insert(d.name).second) << d.name;
    EXPECT_EQ(FindOp(d.name), &d);
  }
  EXPECT_EQ(FindOp("nope"), nullptr);
}

TEST(OpTable, ArgumentsAreWellFormed) {
  for (size_t i = 0; i < kNumOps; i++) {
    const OpDesc& d = Describe(Code(i));
    SCOPED_TRACE(d.name);
    ASSERT_LE(d.num_args, kMaxArgs);
    std::set<std::string> names;
    for (int j = 0; j < d.num_args; j++) {
      const ArgDesc& a = d.args[j];
      EXPECT_TRUE(names.insert(a.name).second) << a.name;
      EXPECT_EQ(ArgIndex(d.code, a.name), j);
      EXPECT_LE(a.min, a.max);
      EXPECT_EQ(a.values != nullptr, a.kind == ArgKind::kEnum);
      if (a.kind == ArgKind::kEnum)
        for (uint64_t v = 0; v <= a.max; v++) EXPECT_NE(a.values[v], nullptr);
      // Offsets and counts refer to the op's buffer, which comes first.
      if (a.kind == ArgKind::kPageOffset) EXPECT_EQ(d.args[0].kind, ArgKind::kBuffer);
      if (a.kind == ArgKind::kPageCount) EXPECT_EQ(d.args[j - 1].kind, ArgKind::kPageOffset);
      if (a.kind == ArgKind::kBuffer || a.kind == ArgKind::kNewBuffer) EXPECT_EQ(j, 0);
    }
    EXPECT_EQ(d.has_body, d.code == OpCode::kFork);
    EXPECT_NE(std::string(d.doc), "");
  }
}

// Scope::Apply reads these ops' arguments by position.
TEST(OpTable, ScopeChangingOpsHaveTheExpectedLayout) {
  EXPECT_EQ(ArgIndex(OpCode::kMmap, "buf"), 0);
  EXPECT_EQ(ArgIndex(OpCode::kMmap, "pages"), 1);
  EXPECT_EQ(ArgIndex(OpCode::kMremap, "buf"), 0);
  EXPECT_EQ(ArgIndex(OpCode::kMremap, "pages"), 1);
  EXPECT_EQ(ArgIndex(OpCode::kMunmap, "buf"), 0);
  EXPECT_EQ(ArgIndex(OpCode::kMunmap, "off"), 1);
  EXPECT_EQ(ArgIndex(OpCode::kMunmap, "pages"), 2);
  EXPECT_EQ(ArgIndex(OpCode::kThreadCreate, "tid"), 0);
  EXPECT_EQ(ArgIndex(OpCode::kThreadJoin, "tid"), 0);
  EXPECT_EQ(ArgIndex(OpCode::kOpenDev, "file"), 0);
}

// The driver ops, and only they, name a driver file; open_dev makes one.
TEST(OpTable, DriverOpsUseAFile) {
  for (OpCode c : {OpCode::kMirror, OpCode::kRelease, OpCode::kDeviceAccess, OpCode::kDropAcks,
                   OpCode::kDriverFailCopy})
    EXPECT_TRUE(Describe(c).uses_file) << Describe(c).name;
  for (OpCode c : {OpCode::kMmap, OpCode::kFork, OpCode::kOpenDev, OpCode::kKillChild,
                   OpCode::kOomKill, OpCode::kYield})
    EXPECT_FALSE(Describe(c).uses_file) << Describe(c).name;
}

Op MakeOp(OpCode code, std::initializer_list<uint64_t> args) {
  Op op;
  op.code = code;
  int i = 0;
  for (uint64_t a : args) op.args[i++] = a;
  return op;
}

TEST(Scope, TracksMappingsAndThreads) {
  Scope s;
  s.Apply(MakeOp(OpCode::kMmap, {3, 16, 0, 3}));
  EXPECT_TRUE(s.BufferMapped(3));
  EXPECT_EQ(s.BufferPages(3), 16u);
  s.Apply(MakeOp(OpCode::kMunmap, {3, 0, 8}));  // partial: still mapped
  EXPECT_TRUE(s.BufferMapped(3));
  s.Apply(MakeOp(OpCode::kMremap, {3, 4, 1}));
  EXPECT_EQ(s.BufferPages(3), 4u);
  s.Apply(MakeOp(OpCode::kThreadCreate, {2}));
  EXPECT_TRUE(s.ThreadRunning(2));
  EXPECT_EQ(s.RunningThreads(), std::vector<uint64_t>{2});

  const Scope child = s.ForChild();
  EXPECT_TRUE(child.BufferMapped(3));
  EXPECT_FALSE(child.ThreadRunning(2));

  s.Apply(MakeOp(OpCode::kThreadJoin, {2}));
  EXPECT_FALSE(s.ThreadRunning(2));
  s.Apply(MakeOp(OpCode::kMunmap, {3, 0, 4}));
  EXPECT_FALSE(s.BufferMapped(3));
  EXPECT_EQ(s.FreeBuffers().size(), kMaxBuffers);
}

TEST(Scope, TracksFilesAndForks) {
  Scope s;
  EXPECT_TRUE(s.FileUsable(0));
  EXPECT_FALSE(s.FileUsable(1));
  EXPECT_EQ(s.FreeFiles().size(), kMaxFiles);
  s.Apply(MakeOp(OpCode::kOpenDev, {2, 1, 3}));
  EXPECT_TRUE(s.FileOpen(2));
  EXPECT_EQ(s.UsableFiles(), (std::vector<uint64_t>{0, 2}));
  s.Apply(MakeOp(OpCode::kMirror, {0, 0, 1, 0}));  // file 0's first use opens it
  EXPECT_FALSE(s.FileFree(0));
  EXPECT_EQ(s.FreeFiles(), (std::vector<uint64_t>{1, 3}));
  for (uint64_t i = 0; i < kMaxChildren + 2; i++) s.Apply(MakeOp(OpCode::kFork, {1}));
  EXPECT_EQ(s.Children(), kMaxChildren);

  // A child has its parent's opened files (to bind again), its own file 0, no forks.
  const Scope child = s.ForChild();
  EXPECT_TRUE(child.FileOpen(2));
  EXPECT_TRUE(child.FileFree(0));
  EXPECT_EQ(child.Children(), 0u);
}

TEST(Op, ArgByName) {
  const Op op = MakeOp(OpCode::kWrite, {1, 2, 3, 0xbeef});
  EXPECT_EQ(op.arg("buf"), 1u);
  EXPECT_EQ(op.arg("seed"), 0xbeefu);
}

}  // namespace
}  // namespace svmfuzz

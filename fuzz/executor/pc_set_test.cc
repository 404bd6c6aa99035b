#include "executor/pc_set.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>

namespace svmfuzz {
namespace {

TEST(PcSetTest, KeepsEachPcOnce) {
  PcSet set;
  EXPECT_TRUE(set.Insert(0xffffffff81000010));
  EXPECT_FALSE(set.Insert(0xffffffff81000010));
  EXPECT_TRUE(set.Insert(0xffffffff81000020));
  EXPECT_EQ(set.size(), 2u);
}

TEST(PcSetTest, GrowsPastItsFirstTableAndKeepsWhatItHad) {
  PcSet set;
  std::set<uint64_t> want;
  // Kernel text addresses a few bytes apart, as KCOV reports them.
  for (uint64_t i = 0; i < 5 * PcSet::kInitialSlots; i++) {
    const uint64_t pc = 0xffffffff81000000 + i * 7;
    EXPECT_EQ(set.Insert(pc), want.insert(pc).second);
    EXPECT_FALSE(set.Insert(pc));
  }
  EXPECT_EQ(set.size(), want.size());
  EXPECT_GE(set.slots(), 2 * set.size());
  for (uint64_t pc : want) EXPECT_FALSE(set.Insert(pc)) << pc;
}

TEST(PcSetTest, ClearForgetsEverythingAndKeepsTheTable) {
  PcSet set;
  for (uint64_t i = 1; i <= 3 * PcSet::kInitialSlots; i++) set.Insert(i * 16);
  const size_t slots = set.slots();
  set.Clear();
  EXPECT_EQ(set.size(), 0u);
  EXPECT_EQ(set.slots(), slots);
  for (uint64_t i = 1; i <= 3 * PcSet::kInitialSlots; i++) EXPECT_TRUE(set.Insert(i * 16)) << i;
}

}  // namespace
}  // namespace svmfuzz

#include "executor/buffers.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "executor/guarded_access.h"
#include "protocol/protocol.h"

namespace svmfuzz {
namespace {

constexpr uintptr_t kBase = 0x200000000000ull;
constexpr int kRW = PROT_READ | PROT_WRITE;

class BuffersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InstallFaultHandlers();
    b_ = std::make_unique<Buffers>(kBase);
  }
  void TearDown() override {
    for (uint64_t id = 0; id < kMaxBuffers; id++) b_->Munmap(id, 0, kMaxPages);
  }
  static uint8_t* Addr(uint64_t id, uint64_t page) {
    return reinterpret_cast<uint8_t*>(kBase + id * Buffers::kSlotSize + page * kPageSize);
  }
  std::unique_ptr<Buffers> b_;
  std::vector<PageMismatch> bad_;
};

TEST_F(BuffersTest, WriteThenVerify) {
  ASSERT_EQ(b_->Mmap(0, 8, MapKind::kAnon, kRW).err, 0);
  EXPECT_EQ(b_->Write(0, 2, 4, 7, &bad_).err, 0);
  OpOutcome same = b_->Verify(0, 2, 4, 7, &bad_);
  EXPECT_EQ(same.err, 0);
  EXPECT_EQ(same.ret, 0);
  // A verify with another seed fails, but the data is what the shadow says.
  OpOutcome other = b_->Verify(0, 2, 4, 8, &bad_);
  EXPECT_EQ(other.err, EILSEQ);
  EXPECT_GT(other.ret, 4 * 4096 * 9 / 10);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
  // A verify of the right seed that meets a changed byte fails, and its
  // check names the page; the pages it found equal are not read again.
  Addr(0, 3)[17] ^= 0x40;
  OpOutcome bad = b_->Verify(0, 2, 4, 7, &bad_);
  EXPECT_EQ(bad.err, EILSEQ);
  EXPECT_EQ(bad.ret, 1);
  ASSERT_EQ(bad_.size(), 1u);
  EXPECT_EQ(bad_[0].page, 3u);
  EXPECT_EQ(bad_[0].offset, 17);
}

TEST_F(BuffersTest, CorruptionIsFoundWithItsPlace) {
  ASSERT_EQ(b_->Mmap(3, 4, MapKind::kAnon, kRW).err, 0);
  b_->Write(3, 0, 4, 1, &bad_);
  const uint8_t was = Addr(3, 2)[100];
  Addr(3, 2)[100] = static_cast<uint8_t>(~was);  // behind the shadow's back
  b_->Read(3, 0, 4, &bad_);
  ASSERT_EQ(bad_.size(), 1u);
  EXPECT_EQ(bad_[0].buffer, 3);
  EXPECT_EQ(bad_[0].page, 2u);
  EXPECT_EQ(bad_[0].offset, 100);
  EXPECT_EQ(bad_[0].expected, was);
  EXPECT_EQ(bad_[0].actual, static_cast<uint8_t>(~was));
}

TEST_F(BuffersTest, FreshPagesMustBeZero) {
  ASSERT_EQ(b_->Mmap(1, 2, MapKind::kFile, kRW).err, 0);
  Addr(1, 1)[7] = 1;
  b_->CheckAll(&bad_);
  ASSERT_EQ(bad_.size(), 1u);
  EXPECT_EQ(bad_[0].page, 1u);
  EXPECT_EQ(bad_[0].expected, 0);
}

TEST_F(BuffersTest, DontneedZeroesPrivateAndKeepsShared) {
  ASSERT_EQ(b_->Mmap(0, 4, MapKind::kAnon, kRW).err, 0);
  ASSERT_EQ(b_->Mmap(1, 4, MapKind::kShared, kRW).err, 0);
  ASSERT_EQ(b_->Mmap(2, 4, MapKind::kFile, kRW).err, 0);
  for (uint64_t id : {0, 1, 2}) {
    b_->Write(id, 0, 4, 5, &bad_);
    EXPECT_EQ(b_->Madvise(id, 0, 4, Advice::kDontneed).err, 0);
  }
  EXPECT_EQ(b_->Verify(0, 0, 4, 5, &bad_).err, EILSEQ);
  EXPECT_EQ(b_->Verify(1, 0, 4, 5, &bad_).err, 0);
  EXPECT_EQ(b_->Verify(2, 0, 4, 5, &bad_).err, EILSEQ);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
}

TEST_F(BuffersTest, FaultsAndHolesAreResultsNotCrashes) {
  ASSERT_EQ(b_->Mmap(0, 4, MapKind::kAnon, kRW).err, 0);
  b_->Write(0, 0, 4, 3, &bad_);
  ASSERT_EQ(b_->Mprotect(0, 1, 1, PROT_NONE).err, 0);
  OpOutcome r = b_->Read(0, 0, 4, &bad_);
  EXPECT_EQ(r.err, EFAULT);
  EXPECT_EQ(r.ret, SIGSEGV);
  EXPECT_TRUE(r.flags & proto::kOpAccessFault);
  OpOutcome w = b_->Write(0, 0, 4, 4, &bad_);
  EXPECT_EQ(w.err, EFAULT);
  ASSERT_EQ(b_->Mprotect(0, 1, 1, kRW).err, 0);
  // Page 0 holds seed 4, page 1 was not written, the rest keep seed 3.
  EXPECT_EQ(b_->Verify(0, 0, 1, 4, &bad_).err, 0);
  EXPECT_EQ(b_->Verify(0, 2, 2, 3, &bad_).err, 0);
  ASSERT_EQ(b_->Munmap(0, 3, 1).err, 0);
  OpOutcome t = b_->Touch(0, 0, 4, &bad_);
  EXPECT_EQ(t.err, EFAULT);
  EXPECT_TRUE(t.flags & proto::kOpSkipped);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
}

TEST_F(BuffersTest, MremapKeepsContentAndZeroesGrowth) {
  ASSERT_EQ(b_->Mmap(5, 2, MapKind::kAnon, kRW).err, 0);
  b_->Write(5, 0, 2, 11, &bad_);
  ASSERT_EQ(b_->Mremap(5, 6, false).err, 0);
  EXPECT_EQ(b_->Verify(5, 0, 2, 11, &bad_).err, 0);
  EXPECT_EQ(b_->Read(5, 2, 4, &bad_).err, 0);
  ASSERT_EQ(b_->Mremap(5, 1, true).err, 0);
  EXPECT_EQ(b_->Touch(5, 1, 1, &bad_).err, EFAULT);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
}

TEST_F(BuffersTest, HugetlbMapsOrSaysWhyNot) {
  const OpOutcome o = b_->Mmap(6, 3, MapKind::kHugetlb, kRW);
  if (o.err != 0) {
    EXPECT_EQ(o.err, ENOMEM);  // no huge pages reserved on this machine
    return;
  }
  b_->Write(6, 0, 3, 2, &bad_);
  EXPECT_EQ(b_->Munmap(6, 1, 1).err, EINVAL);  // not huge-page aligned
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
}

TEST_F(BuffersTest, DontneedOfPartOfAHugePageIsNoMismatch) {
  const OpOutcome o = b_->Mmap(6, 8, MapKind::kHugetlb, kRW);
  if (o.err != 0) GTEST_SKIP() << "no huge pages reserved on this machine";
  b_->Write(6, 0, 8, 2, &bad_);
  // Kernels differ in what they drop of a huge page asked in part (all of
  // it, or nothing): either way the shadow must not claim the wrong one.
  for (uint64_t off : {0, 1}) {
    const OpOutcome d = b_->Madvise(6, off, 1, Advice::kDontneed);
    ASSERT_TRUE(d.err == 0 || d.err == EINVAL) << d.err;
    b_->CheckAll(&bad_);
    EXPECT_TRUE(bad_.empty()) << off;
  }
}

TEST_F(BuffersTest, AChildWritingASharedBufferIsNoMismatch) {
  ASSERT_EQ(b_->Mmap(0, 2, MapKind::kShared, kRW).err, 0);
  ASSERT_EQ(b_->Mmap(1, 2, MapKind::kAnon, kRW).err, 0);
  b_->Write(0, 0, 2, 1, &bad_);
  b_->Write(1, 0, 2, 1, &bad_);
  Buffers::ForkToken token = b_->BeforeFork({0, 1});
  const pid_t pid = fork();
  if (pid == 0) {
    b_->AfterForkChild();
    std::vector<PageMismatch> bad;
    b_->Write(0, 0, 2, 2, &bad);
    b_->Write(1, 0, 2, 2, &bad);
    b_->CheckAll(&bad);
    _exit(bad.empty() ? 0 : 1);
  }
  b_->AfterForkParent();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(status, 0);
  b_->ChildGone(token);
  // The shared buffer holds the child's data; the private one kept ours.
  EXPECT_EQ(b_->Verify(0, 0, 2, 2, &bad_).err, 0);
  EXPECT_EQ(b_->Verify(1, 0, 2, 1, &bad_).err, 0);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
}

// Device ops, with the device played by memcpy: the shadow must follow what
// the device did, and a device read must see what the shadow says.
// A thread's op still writing a buffer that another thread unmaps and maps
// again at the same address writes the new mapping: no mismatch while it
// runs, and its pages are unknown after it.
TEST_F(BuffersTest, AChangeOfAnEarlierMappingIsNoMismatch) {
  ASSERT_EQ(b_->Mmap(0, 4, MapKind::kAnon, kRW).err, 0);
  std::vector<PageMismatch> inside;
  bool remapped = false;
  const OpOutcome o = b_->OnPages(
      0, 0, 4, Buffers::DeviceEffect::kWrite, 7,
      [&](uint8_t* addr, uint64_t, uint8_t* data) {
        if (!remapped) {
          remapped = true;
          EXPECT_EQ(b_->Munmap(0, 0, 4).err, 0);
          EXPECT_EQ(b_->Mmap(0, 4, MapKind::kAnon, kRW).err, 0);
        }
        std::memcpy(addr, data, kPageSize);
        // The new mapping's own write and check meet the old op's bytes.
        EXPECT_EQ(b_->Touch(0, 0, 4, &inside).err, 0);
        return 0;
      },
      &bad_);
  EXPECT_EQ(o.err, 0);
  EXPECT_TRUE(inside.empty()) << inside.size() << " mismatches while the old op ran";
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty()) << bad_.size() << " mismatches after it";
  // Once it is over, the buffer is shadowed again.
  ASSERT_EQ(b_->Write(0, 0, 4, 9, &bad_).err, 0);
  Addr(0, 1)[5] ^= 0xff;  // behind the shadow's back
  b_->CheckAll(&bad_);
  EXPECT_EQ(bad_.size(), 1u);
}

TEST_F(BuffersTest, DeviceEffectsAreShadowed) {
  using Effect = Buffers::DeviceEffect;
  ASSERT_EQ(b_->Mmap(2, 4, MapKind::kAnon, kRW).err, 0);
  const auto dev_write = [](uint8_t* addr, uint64_t, uint8_t* data) {
    std::memcpy(addr, data, kPageSize);
    return 0;
  };
  const auto dev_read = [](uint8_t* addr, uint64_t, uint8_t* data) {
    std::memcpy(data, addr, kPageSize);
    return 0;
  };
  const auto dev_add = [](uint8_t* addr, uint64_t, uint8_t*) {
    ++*reinterpret_cast<uint64_t*>(addr);
    return 0;
  };
  OpOutcome w = b_->OnPages(2, 0, 4, Effect::kWrite, 9, dev_write, &bad_);
  EXPECT_EQ(w.err, 0);
  EXPECT_EQ(w.ret, 4);
  EXPECT_EQ(b_->Verify(2, 0, 4, 9, &bad_).err, 0);
  b_->OnPages(2, 1, 2, Effect::kAdd, 0, dev_add, &bad_);
  b_->OnPages(2, 1, 1, Effect::kAdd, 0, dev_add, &bad_);
  b_->OnPages(2, 0, 4, Effect::kRead, 0, dev_read, &bad_);
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
  Addr(2, 3)[8] ^= 1;  // lost behind the device's back
  b_->OnPages(2, 0, 4, Effect::kRead, 0, dev_read, &bad_);
  ASSERT_EQ(bad_.size(), 1u);
  EXPECT_EQ(bad_[0].page, 3u);
  EXPECT_EQ(bad_[0].offset, 8);
  bad_.clear();
  b_->OnPages(2, 3, 1, Effect::kClobber, 0, dev_add, &bad_);  // the shadow gives up on page 3
  b_->CheckAll(&bad_);
  EXPECT_TRUE(bad_.empty());
  const auto fails = [](uint8_t*, uint64_t page, uint8_t*) { return page == 1 ? EIO : 0; };
  OpOutcome f = b_->OnPages(2, 0, 4, Effect::kWrite, 5, fails, &bad_);
  EXPECT_EQ(f.err, EIO);
  EXPECT_EQ(f.ret, 1);
}

}  // namespace
}  // namespace svmfuzz

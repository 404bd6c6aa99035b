#include "svmdev/svmdev_core.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "svmdev/svmdev_hw.h"
#include "svmdev_testbed.h"

namespace svmdev {
namespace {

constexpr uint64_t kRW = SVMDEV_PTE_VALID | SVMDEV_PTE_READ | SVMDEV_PTE_WRITE;
constexpr uint64_t kRWA = kRW | SVMDEV_PTE_ATOMIC;

template <typename T>
T Payload(const CtlMessage& m) {
  T v{};
  EXPECT_EQ(m.payload.size(), sizeof(T));
  std::memcpy(&v, m.payload.data(), std::min(sizeof(T), m.payload.size()));
  return v;
}

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(tb_.Enable()); }

  // Sets up ctx with a fresh root and returns the root.
  uint64_t SetupCtx(uint16_t ctx) {
    uint64_t root = tb_.NewTable();
    auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_CTX_SETUP, ctx, root));
    EXPECT_EQ(c.size(), 1u);
    EXPECT_EQ(c.at(0).status, SVMDEV_STATUS_OK);
    return root;
  }
  svmdev_cpl One(const svmdev_cmd& cmd) {
    auto c = tb_.Submit(cmd);
    EXPECT_EQ(c.size(), 1u);
    return c.empty() ? svmdev_cpl{} : c[0];
  }
  // The one message on the channel is the EVT_ACCESS_DONE of the host access tag.
  void ExpectAccessDone(uint32_t tag, uint32_t status) {
    auto m = tb_.CtlReceive();
    ASSERT_EQ(m.size(), 1u);
    auto e = Payload<svmdev_ctl_event>(m[0]);
    EXPECT_EQ(e.kind, SVMDEV_EVT_ACCESS_DONE);
    EXPECT_EQ(e.tag, tag);
    EXPECT_EQ(e.code, status);
  }
  bool Saw(unsigned vec) const {
    return std::find(tb_.irqs.begin(), tb_.irqs.end(), vec) != tb_.irqs.end();
  }

  Testbed tb_;
};

TEST(CoreConfig, RejectsUnusableConfigurations) {
  svmdev_host_ops ops{};
  auto fail = [](void*, uint64_t, const void*, uint64_t) { return -1; };
  ops.dma_read = [](void*, uint64_t, void*, uint64_t) { return -1; };
  ops.dma_write = fail;
  ops.raise_irq = [](void*, unsigned) {};
  char err[128] = "";
  svmdev_config cfg{};
  cfg.vram_size = 4097;
  EXPECT_EQ(svmdev_core_new(&cfg, &ops, err, sizeof(err)), nullptr);
  EXPECT_NE(std::string(err).find("4097"), std::string::npos);
  cfg.vram_size = 4096;
  cfg.num_contexts = 5000;
  EXPECT_EQ(svmdev_core_new(&cfg, &ops, err, sizeof(err)), nullptr);
  cfg.num_contexts = 0;
  ops.raise_irq = nullptr;
  EXPECT_EQ(svmdev_core_new(&cfg, &ops, err, sizeof(err)), nullptr);
}

TEST(CoreRegisters, ResetValues) {
  Testbed tb;
  EXPECT_EQ(tb.Read32(SVMDEV_REG_ID), SVMDEV_ID_MAGIC);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_VERSION), SVMDEV_VERSION);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_CAPS), 0xfu);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_NUM_CTX), 4u);
  EXPECT_EQ(tb.Read64(SVMDEV_REG_VRAM_SIZE), 1u << 20);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_VRAM_SIZE + 4), 0u);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_STATUS), 0u);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_IRQ_MASK), SVMDEV_IRQ_ALL);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_MAX_STALLED), 256u);
  EXPECT_TRUE(tb.errors.empty());
}

TEST(CoreRegisters, MalformedAccessesAreGuestErrorsNotCrashes) {
  Testbed tb;
  EXPECT_EQ(svmdev_core_mmio_read(tb.core(), 0xff8, 4), 0xffffffffu);
  EXPECT_EQ(svmdev_core_mmio_read(tb.core(), SVMDEV_REG_ID, 2), 0xffffu);
  EXPECT_EQ(svmdev_core_mmio_read(tb.core(), SVMDEV_REG_ID + 1, 4), 0xffffffffu);
  EXPECT_EQ(svmdev_core_mmio_read(tb.core(), UINT64_MAX, 8), ~0ull);
  svmdev_core_mmio_write(tb.core(), SVMDEV_REG_ID, 1, 4);
  svmdev_core_mmio_write(tb.core(), SVMDEV_REG_CONTROL, 1, 1);
  EXPECT_EQ(tb.errors.size(), 6u);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_ID), SVMDEV_ID_MAGIC);
}

TEST(CoreRegisters, SixtyFourBitRegistersTakeHalves) {
  Testbed tb;
  tb.Write32(SVMDEV_REG_CMDQ_BASE, 0x1000);
  tb.Write32(SVMDEV_REG_CMDQ_BASE + 4, 0x2);
  EXPECT_EQ(tb.Read64(SVMDEV_REG_CMDQ_BASE), 0x200001000ull);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_CMDQ_BASE + 4), 2u);
}

TEST(CoreRings, EnableRefusesUnusableRings) {
  Testbed tb;
  tb.Write32(SVMDEV_REG_IRQ_MASK, 0);
  tb.Write64(SVMDEV_REG_CMDQ_BASE, 0x1001);  // misaligned
  tb.Write32(SVMDEV_REG_CMDQ_ENTRIES, 3);    // not a power of two
  tb.Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_ENABLE);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED, 0u);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_ERROR_CODE), SVMDEV_STATUS_BAD_RING);
  EXPECT_EQ(tb.irqs, std::vector<unsigned>{SVMDEV_VEC_ERROR});
  // A ring whose end wraps the address space is unusable too.
  tb.Write64(SVMDEV_REG_CMDQ_BASE, UINT64_MAX - 63);
  tb.Write32(SVMDEV_REG_CMDQ_ENTRIES, 4);
  tb.Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_ENABLE);
  EXPECT_EQ(tb.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED, 0u);
}

TEST_F(CoreTest, NopCompletesWithSeqAndInterrupt) {
  svmdev_cmd c = Testbed::Cmd(SVMDEV_OP_NOP, 0, 0, 0, 0, SVMDEV_CMD_F_IRQ);
  svmdev_cpl r = One(c);
  EXPECT_EQ(r.seq, c.seq);
  EXPECT_EQ(r.status, SVMDEV_STATUS_OK);
  EXPECT_EQ(r.opcode, SVMDEV_OP_NOP);
  EXPECT_TRUE(Saw(SVMDEV_VEC_CMD));
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_CMDS)), 1u);
}

TEST_F(CoreTest, MalformedCommandsFailWithTheirStatus) {
  struct Case {
    svmdev_cmd cmd;
    uint32_t status;
  } cases[] = {
      {Testbed::Cmd(0x7f), SVMDEV_STATUS_BAD_OPCODE},
      {Testbed::Cmd(SVMDEV_OP_CTX_SETUP, 4, 0x10000), SVMDEV_STATUS_BAD_CTX},
      {Testbed::Cmd(SVMDEV_OP_CTX_SETUP, 0, 0x10001), SVMDEV_STATUS_BAD_ARG},
      {Testbed::Cmd(SVMDEV_OP_CTX_SETUP, 0, 0), SVMDEV_STATUS_BAD_ARG},
      {Testbed::Cmd(SVMDEV_OP_INVALIDATE, 1, 0, 4096), SVMDEV_STATUS_CTX_DISABLED},
      {Testbed::AccessCmd(2, 0, SVMDEV_ACC_READ, 8), SVMDEV_STATUS_CTX_DISABLED},
      {Testbed::Cmd(SVMDEV_OP_COPY, 0, 0, 1 << 20, 4096,
                    SVMDEV_COPY_F_DST_VRAM), SVMDEV_STATUS_BAD_VRAM},
      {Testbed::Cmd(SVMDEV_OP_COPY, 0, UINT64_MAX - 10, 0, 4096), SVMDEV_STATUS_BAD_ARG},
      {Testbed::Cmd(SVMDEV_OP_COPY, 0, 0, 0, 0), SVMDEV_STATUS_BAD_ARG},
      {Testbed::Cmd(SVMDEV_OP_COPY, 0, 64 << 20, 0, 4096), SVMDEV_STATUS_DMA_ERROR},
  };
  for (const Case& k : cases) {
    svmdev_cpl r = One(k.cmd);
    EXPECT_EQ(r.status, k.status) << "opcode " << int{k.cmd.opcode};
    EXPECT_EQ(tb_.Read32(SVMDEV_REG_ERROR_CODE), k.status);
  }
  svmdev_cmd rsvd = Testbed::Cmd(SVMDEV_OP_NOP);
  rsvd.rsvd = 1;
  EXPECT_EQ(One(rsvd).status, SVMDEV_STATUS_BAD_ARG);
  EXPECT_TRUE(Saw(SVMDEV_VEC_ERROR));
  // ERROR_CODE clears when its value is written back.
  tb_.Write32(SVMDEV_REG_ERROR_CODE, SVMDEV_STATUS_BAD_ARG);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_ERROR_CODE), 0u);
}

TEST_F(CoreTest, MalformedAccessesAreRefused) {
  SetupCtx(0);
  const svmdev_cmd bad[] = {
      Testbed::AccessCmd(0, 0, SVMDEV_ACC_READ, 3),
      Testbed::AccessCmd(0, 4094, SVMDEV_ACC_READ, 4),       // crosses a page
      Testbed::AccessCmd(0, 1ull << 48, SVMDEV_ACC_READ, 8),  // above 48 bits
      Testbed::AccessCmd(0, 2, SVMDEV_ACC_ATOMIC, 4),         // misaligned atomic
      Testbed::AccessCmd(0, 0, SVMDEV_ACC_ATOMIC, 8, 0, 9),   // unknown atomic op
      Testbed::AccessCmd(0, 0, 7, 8),                         // unknown kind
  };
  for (const svmdev_cmd& c : bad) EXPECT_EQ(One(c).status, SVMDEV_STATUS_BAD_ARG);
}

TEST_F(CoreTest, ReadsAndWritesSystemMemoryThroughTheTables) {
  uint64_t root = SetupCtx(0);
  const uint64_t va = 0x7f0000001000, page = Testbed::kData;
  tb_.Map(root, va, page, kRW);
  tb_.MemWrite(page + 0x10, 0x1122334455667788, 8);
  svmdev_cpl r = One(Testbed::AccessCmd(0, va + 0x10, SVMDEV_ACC_READ, 8));
  EXPECT_EQ(r.status, SVMDEV_STATUS_OK);
  EXPECT_EQ(r.value, 0x1122334455667788u);
  EXPECT_EQ(One(Testbed::AccessCmd(0, va + 0x20, SVMDEV_ACC_WRITE, 2, 0xabcd)).status,
            SVMDEV_STATUS_OK);
  EXPECT_EQ(tb_.MemRead(page + 0x20, 4), 0xabcdu);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_TLB_HITS)), 1u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_WALKS)), 1u);
}

TEST_F(CoreTest, BufferAccessMovesAWholePage) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x400000, Testbed::kData, kRW);
  for (unsigned i = 0; i < 4096; i++) tb_.mem[Testbed::kData + i] = static_cast<uint8_t>(i * 7);
  svmdev_cmd c = Testbed::AccessCmd(0, 0x400000, SVMDEV_ACC_READ, 4096);
  c.flags = SVMDEV_ACC_F_BUF;
  c.arg[4] = Testbed::kData + 0x10000;
  EXPECT_EQ(One(c).status, SVMDEV_STATUS_OK);
  EXPECT_EQ(std::memcmp(&tb_.mem[Testbed::kData], &tb_.mem[Testbed::kData + 0x10000], 4096), 0);
}

TEST_F(CoreTest, AtomicsOnVramNeedTheAtomicBit) {
  uint64_t root = SetupCtx(1);
  tb_.Map(root, 0x10000, 0x3000, kRWA | SVMDEV_PTE_VRAM);
  tb_.Map(root, 0x20000, 0x4000, kRW | SVMDEV_PTE_VRAM);
  std::memcpy(tb_.vram() + 0x3008, "\x05\0\0\0\0\0\0\0", 8);
  auto add = One(Testbed::AccessCmd(1, 0x10008, SVMDEV_ACC_ATOMIC, 8, 10, SVMDEV_AOP_ADD));
  EXPECT_EQ(add.status, SVMDEV_STATUS_OK);
  EXPECT_EQ(add.value, 5u);
  auto cas = One(Testbed::AccessCmd(1, 0x10008, SVMDEV_ACC_ATOMIC, 8, 99, SVMDEV_AOP_CMPXCHG, 15));
  EXPECT_EQ(cas.value, 15u);
  auto miss = One(Testbed::AccessCmd(1, 0x10008, SVMDEV_ACC_ATOMIC, 8, 1, SVMDEV_AOP_CMPXCHG, 15));
  EXPECT_EQ(miss.value, 99u);
  auto x = One(Testbed::AccessCmd(1, 0x1000c, SVMDEV_ACC_ATOMIC, 4, 0xffffffff, SVMDEV_AOP_XCHG));
  EXPECT_EQ(x.value, 0u);
  uint64_t v;
  std::memcpy(&v, tb_.vram() + 0x3008, 8);
  EXPECT_EQ(v, 0xffffffff00000063ull);
  // Without PTE_ATOMIC the atomic stalls on a permission fault.
  auto c = tb_.Submit(Testbed::AccessCmd(1, 0x20000, SVMDEV_ACC_ATOMIC, 4, 1, SVMDEV_AOP_ADD));
  EXPECT_TRUE(c.empty());
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].reason, SVMDEV_FAULT_PERM);
  EXPECT_EQ(f[0].access, SVMDEV_ACC_ATOMIC);
}

TEST_F(CoreTest, HugePagesMapTwoMegabytes) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x40000000, 0x200000, kRW, true);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x40000000 + 0x1ff000, SVMDEV_ACC_WRITE, 8, 42)).status,
            SVMDEV_STATUS_OK);
  EXPECT_EQ(tb_.MemRead(0x200000 + 0x1ff000, 8), 42u);
  // One walk serves the whole 2 MiB.
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x40000000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_OK);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_WALKS)), 1u);
  // A 2 MiB VRAM page must fit in VRAM (1 MiB here).
  tb_.Map(root, 0x40200000, 0x0, kRW | SVMDEV_PTE_VRAM, true);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x40200000, SVMDEV_ACC_READ, 8)).status,
            SVMDEV_STATUS_BAD_VRAM);
  // A huge leaf at a 4 KiB level, or a misaligned one, is malformed.
  uint64_t slot = tb_.LeafSlot(root, 0x80000000, true);
  tb_.MemWrite(slot, 0x1000 | kRW | SVMDEV_PTE_HUGE, 8);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x80000000, SVMDEV_ACC_READ, 8)).status,
            SVMDEV_STATUS_BAD_PTE);
}

TEST_F(CoreTest, MalformedTablesGiveBadPteOrBadVram) {
  uint64_t root = SetupCtx(0);
  uint64_t slot = tb_.LeafSlot(root, 0x1000, false);
  tb_.MemWrite(slot, Testbed::kData | kRW | (1ull << 60), 8);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_BAD_PTE);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_ERROR_ADDR), slot);
  tb_.MemWrite(slot, (1ull << 20) | kRW | SVMDEV_PTE_VRAM, 8);  // one page past VRAM
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_BAD_VRAM);
  // A table pointer outside guest memory is a DMA error on the walk.
  tb_.MemWrite(root, (1ull << 40) | SVMDEV_PTE_VALID, 8);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status,
            SVMDEV_STATUS_DMA_ERROR);
  // Permission bits in a non-leaf entry are malformed.
  tb_.MemWrite(root, tb_.NewTable() | kRW, 8);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_BAD_PTE);
}

TEST_F(CoreTest, MissStallsRaisesAFaultAndReplaySucceeds) {
  uint64_t root = SetupCtx(2);
  svmdev_cmd acc = Testbed::AccessCmd(2, 0x5000, SVMDEV_ACC_WRITE, 4, 0xfeed);
  acc.flags = SVMDEV_CMD_F_IRQ;
  EXPECT_TRUE(tb_.Submit(acc).empty());
  EXPECT_TRUE(Saw(SVMDEV_VEC_FAULT));
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].va, 0x5000u);
  EXPECT_EQ(f[0].ctx, 2);
  EXPECT_EQ(f[0].seq, acc.seq);
  EXPECT_EQ(f[0].reason, SVMDEV_FAULT_NOT_PRESENT);
  EXPECT_NE(f[0].fault_id, 0u);
  // Other commands keep running while the access waits.
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_NOP)).status, SVMDEV_STATUS_OK);
  tb_.Map(root, 0x5000, Testbed::kData, kRW);
  svmdev_cmd replay = Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 2, f[0].fault_id);
  auto c = tb_.Submit(replay);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].seq, acc.seq);  // the access completes first
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_OK);
  EXPECT_EQ(c[0].aux, f[0].fault_id);
  EXPECT_EQ(c[1].seq, replay.seq);
  EXPECT_EQ(c[1].value, 1u);
  EXPECT_EQ(tb_.MemRead(Testbed::kData, 4), 0xfeedu);
  // The id is gone now.
  EXPECT_EQ(One(replay).status, SVMDEV_STATUS_NO_FAULT);
}

TEST_F(CoreTest, ReplayThatMissesAgainRaisesANewFault) {
  SetupCtx(0);
  tb_.Submit(Testbed::AccessCmd(0, 0x9000, SVMDEV_ACC_READ, 8));
  auto f1 = tb_.DrainFaults();
  ASSERT_EQ(f1.size(), 1u);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 0, f1[0].fault_id));
  ASSERT_EQ(c.size(), 1u);
  auto f2 = tb_.DrainFaults();
  ASSERT_EQ(f2.size(), 1u);
  EXPECT_NE(f2[0].fault_id, f1[0].fault_id);
  c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_CANCEL, 0, 0, 0, 0, SVMDEV_FLT_F_ALL));
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_CANCELLED);
  EXPECT_EQ(c[1].value, 1u);
}

TEST_F(CoreTest, CancelAndDestroyFailStalledAccesses) {
  SetupCtx(0);
  SetupCtx(1);
  tb_.Submit(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8));
  tb_.Submit(Testbed::AccessCmd(1, 0x1000, SVMDEV_ACC_READ, 8));
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 2u);
  // A fault id only resolves in its own context.
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_FAULT_CANCEL, 1, f[0].fault_id)).status,
            SVMDEV_STATUS_NO_FAULT);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_CANCEL, 0, f[0].fault_id));
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_CANCELLED);
  c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_CTX_DESTROY, 1));
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_CANCELLED);
  EXPECT_EQ(c[1].value, 1u);
}

TEST_F(CoreTest, StallLimitFailsTheAccessAtOnce) {
  SetupCtx(0);
  for (unsigned i = 0; i < 256; i++) {
    tb_.Push(Testbed::AccessCmd(0, i * 4096ull, SVMDEV_ACC_READ, 8));
    if (i % 32 == 31) {
      tb_.Doorbell();
      tb_.DrainFaults();
    }
  }
  EXPECT_TRUE(tb_.DrainCompletions().empty());
  svmdev_cpl r = One(Testbed::AccessCmd(0, 0x100000000, SVMDEV_ACC_READ, 8));
  EXPECT_EQ(r.status, SVMDEV_STATUS_STALL_LIMIT);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_FAULTS)), 256u);
}

TEST_F(CoreTest, PermissionUpgradeNeedsNoInvalidation) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x1000, Testbed::kData, SVMDEV_PTE_VALID | SVMDEV_PTE_READ);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_OK);
  tb_.Map(root, 0x1000, Testbed::kData, kRW);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_WRITE, 8, 5)).status, SVMDEV_STATUS_OK);
  EXPECT_TRUE(tb_.DrainFaults().empty());
}

TEST_F(CoreTest, InvalidationContract) {
  uint64_t root = SetupCtx(0);
  const uint64_t a = Testbed::kData, b = Testbed::kData + 0x1000;
  tb_.MemWrite(a, 111, 8);
  tb_.MemWrite(b, 222, 8);
  tb_.Map(root, 0x3000, a, kRW);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 111u);
  // The TLB keeps the old translation until an INVALIDATE completes...
  tb_.Map(root, 0x3000, b, kRW);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 111u);
  // ...an invalidation of another range does not drop it...
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0x4000, 0x1000)).status, SVMDEV_STATUS_OK);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 111u);
  // ...and after one covering it, no access uses the old one.
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0x3fff, 2)).status, SVMDEV_STATUS_OK);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 222u);
  // Clearing the leaf and invalidating everything makes the next access fault.
  tb_.MemWrite(tb_.LeafSlot(root, 0x3000, false), 0, 8);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0, 0, 0, SVMDEV_INV_F_ALL)).status,
            SVMDEV_STATUS_OK);
  EXPECT_TRUE(tb_.Submit(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).empty());
  EXPECT_EQ(tb_.DrainFaults().size(), 1u);
  // A range that wraps is refused.
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, UINT64_MAX, 2)).status,
            SVMDEV_STATUS_BAD_ARG);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_STALE)), 0u);
}

TEST_F(CoreTest, CopyEngineMovesBetweenSystemMemoryAndVram) {
  for (unsigned i = 0; i < 8192; i++) tb_.mem[Testbed::kData + i] = static_cast<uint8_t>(i % 251);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_COPY, 0, Testbed::kData, 0x2000, 8192,
                             SVMDEV_COPY_F_DST_VRAM)).value, 8192u);
  EXPECT_EQ(std::memcmp(tb_.vram() + 0x2000, &tb_.mem[Testbed::kData], 8192), 0);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_COPY, 0, 0x2001, 0x2000, 100,
                             SVMDEV_COPY_F_SRC_VRAM | SVMDEV_COPY_F_DST_VRAM)).status,
            SVMDEV_STATUS_OK);
  EXPECT_EQ(tb_.vram()[0x2000], 1);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_COPY, 0, 0x2000, Testbed::kData + 0x10000, 5000,
                             SVMDEV_COPY_F_SRC_VRAM)).status, SVMDEV_STATUS_OK);
  EXPECT_EQ(std::memcmp(tb_.vram() + 0x2000, &tb_.mem[Testbed::kData + 0x10000], 5000), 0);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_COPY, 0, Testbed::kData, Testbed::kData + 0x20000, 9000))
                .status, SVMDEV_STATUS_OK);
  EXPECT_EQ(std::memcmp(&tb_.mem[Testbed::kData], &tb_.mem[Testbed::kData + 0x20000], 9000), 0);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_COPY, 0, (1 << 20) - 4095, 0, 4096,
                             SVMDEV_COPY_F_SRC_VRAM | SVMDEV_COPY_F_DST_VRAM)).status,
            SVMDEV_STATUS_BAD_VRAM);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_COPY_BYTES)), 8192u + 100 + 5000 + 9000);
}

TEST_F(CoreTest, FullCompletionRingHoldsCompletionsBack) {
  for (int batch = 0; batch < 2; batch++) {
    for (unsigned i = 0; i < 40; i++) tb_.Push(Testbed::Cmd(SVMDEV_OP_NOP));
    tb_.Doorbell();
  }
  // 63 fit; the 64th is held and the device stops consuming commands.
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_CPLQ_TAIL), 63u);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_CMDQ_HEAD), 64u % Testbed::kEntries);
  EXPECT_TRUE(tb_.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_CPLQ_FULL);
  auto c = tb_.DrainCompletions();
  EXPECT_EQ(c.size(), 80u);
  for (size_t i = 1; i < c.size(); i++) EXPECT_EQ(c[i].seq, c[i - 1].seq + 1);
}

TEST_F(CoreTest, RingDmaFailureHaltsUntilReEnabled) {
  tb_.Write32(SVMDEV_REG_CONTROL, 0);
  tb_.Write64(SVMDEV_REG_CMDQ_BASE, 1ull << 40);
  tb_.Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_ENABLE);
  tb_.Write32(SVMDEV_REG_CMDQ_TAIL, 1);
  EXPECT_TRUE(tb_.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_HALTED);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_ERROR_CODE), SVMDEV_STATUS_DMA_ERROR);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_ERROR_ADDR), 1ull << 40);
  // Ring registers are locked while enabled.
  tb_.Write64(SVMDEV_REG_CMDQ_BASE, Testbed::kCmdq);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_CMDQ_BASE), 1ull << 40);
  tb_.Write32(SVMDEV_REG_CONTROL, 0);
  EXPECT_TRUE(tb_.Enable());
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_HALTED, 0u);
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_NOP)).status, SVMDEV_STATUS_OK);
}

TEST_F(CoreTest, MaskedInterruptFiresWhenUnmasked) {
  tb_.Write32(SVMDEV_REG_IRQ_MASK, SVMDEV_IRQ_CMD);
  One(Testbed::Cmd(SVMDEV_OP_NOP, 0, 0, 0, 0, SVMDEV_CMD_F_IRQ));
  EXPECT_FALSE(Saw(SVMDEV_VEC_CMD));
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_IRQ_STATUS), SVMDEV_IRQ_CMD);
  tb_.Write32(SVMDEV_REG_IRQ_MASK, 0);
  EXPECT_TRUE(Saw(SVMDEV_VEC_CMD));
  tb_.Write32(SVMDEV_REG_IRQ_STATUS, SVMDEV_IRQ_CMD);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_IRQ_STATUS), 0u);
}

TEST_F(CoreTest, ResetCommandAndRegister) {
  SetupCtx(0);
  tb_.Submit(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8));
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_RESET));
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_CANCELLED);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status,
            SVMDEV_STATUS_CTX_DISABLED);
  tb_.vram()[5] = 9;
  tb_.Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_RESET);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_STATUS), 0u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_CMDS)), 0u);
  EXPECT_EQ(tb_.vram()[5], 9);  // VRAM survives a reset
}

// ---- host control channel ----

TEST_F(CoreTest, ControlChannelPingCountersAndMalformedInput) {
  tb_.CtlSend(SVMDEV_CTL_PING, 7, nullptr, 0);
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].hdr.type, SVMDEV_CTL_PING | SVMDEV_CTL_REPLY);
  EXPECT_EQ(m[0].hdr.tag, 7u);
  // Garbage is skipped; a wrong length and an unknown type get error replies.
  const uint8_t junk[] = {1, 2, 3, SVMDEV_CTL_MAGIC, SVMDEV_CTL_PING, 4, 0, 9, 0, 0, 0,
                          1, 2, 3, 4};
  svmdev_core_ctl_input(tb_.core(), junk, sizeof(junk));
  tb_.CtlSend(0x42, 10, nullptr, 0);
  m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].hdr.type, SVMDEV_CTL_ERROR);
  EXPECT_EQ(m[0].hdr.tag, 9u);
  EXPECT_EQ(Payload<svmdev_ctl_result>(m[1]).status, SVMDEV_STATUS_BAD_OPCODE);
  // Input split byte by byte still parses.
  svmdev_ctl_hdr h{SVMDEV_CTL_MAGIC, SVMDEV_CTL_COUNTERS, 0, 11};
  for (size_t i = 0; i < sizeof(h); i++)
    svmdev_core_ctl_input(tb_.core(), reinterpret_cast<uint8_t*>(&h) + i, 1);
  m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].payload.size(), 8u * SVMDEV_NUM_COUNTERS);
  // An oversized length is refused without waiting for a payload.
  h = svmdev_ctl_hdr{SVMDEV_CTL_MAGIC, SVMDEV_CTL_PING, 0xffff, 12};
  svmdev_core_ctl_input(tb_.core(), &h, sizeof(h));
  m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].hdr.type, SVMDEV_CTL_ERROR);
}

TEST_F(CoreTest, ControlChannelAccessStallsAndReportsWhenDone) {
  uint64_t root = SetupCtx(3);
  uint32_t mask = SVMDEV_EVT_FAULT | SVMDEV_EVT_ACCESS_DONE;
  tb_.CtlSend(SVMDEV_CTL_EVENTS, 1, &mask, sizeof(mask));
  svmdev_ctl_access a{};
  a.va = 0x6000;
  a.value = 77;
  a.ctx = 3;
  a.kind = SVMDEV_ACC_WRITE;
  a.size = 8;
  tb_.CtlReceive();
  tb_.CtlSend(SVMDEV_CTL_ACCESS, 5, &a, sizeof(a));
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 2u);  // fault event, then the reply
  EXPECT_EQ(m[0].hdr.type, SVMDEV_CTL_EVENT);
  auto r = Payload<svmdev_ctl_result>(m[1]);
  EXPECT_EQ(r.status, SVMDEV_STATUS_STALLED);
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].flags, SVMDEV_FAULT_F_HOST);
  EXPECT_EQ(f[0].fault_id, r.fault_id);
  tb_.Map(root, 0x6000, Testbed::kData, kRW);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 3, r.fault_id));
  EXPECT_EQ(c.size(), 1u);  // a host access completes on the channel, not the ring
  ExpectAccessDone(5, SVMDEV_STATUS_OK);
  EXPECT_EQ(tb_.MemRead(Testbed::kData, 8), 77u);
}

TEST_F(CoreTest, ControlChannelFaultStorm) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x2000, Testbed::kData, kRW);
  svmdev_ctl_storm s{};
  s.va = 0;
  s.stride = 0x1000;
  s.count = 300;
  s.kind = SVMDEV_ACC_READ;
  tb_.CtlSend(SVMDEV_CTL_FAULT_STORM, 1, &s, sizeof(s));
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(Payload<svmdev_ctl_result>(m[0]).value, 256u);  // every slot, page 2 mapped
  size_t faults = 0;
  for (int i = 0; i < 8; i++) faults += tb_.DrainFaults().size();
  EXPECT_EQ(faults, 256u);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_CANCEL, 0, 0, 0, 0, SVMDEV_FLT_F_ALL));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].value, 256u);
}

TEST_F(CoreTest, ControlChannelDelayAndDropInvalidationAcks) {
  SetupCtx(0);
  svmdev_ctl_inval_mode mode{SVMDEV_INVAL_DELAY, 1, 2, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 1, &mode, sizeof(mode));
  svmdev_cmd inv = Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0, 0, 0, SVMDEV_INV_F_ALL);
  EXPECT_TRUE(tb_.Submit(inv).empty());
  EXPECT_EQ(tb_.Submit(Testbed::Cmd(SVMDEV_OP_NOP)).size(), 1u);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_NOP));
  ASSERT_EQ(c.size(), 2u);  // the held completion comes after the second command
  EXPECT_EQ(c[1].seq, inv.seq);
  mode = svmdev_ctl_inval_mode{SVMDEV_INVAL_DROP, 1, 0, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 2, &mode, sizeof(mode));
  EXPECT_TRUE(tb_.Submit(inv).empty());
  EXPECT_EQ(tb_.Submit(Testbed::Cmd(SVMDEV_OP_NOP)).size(), 1u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_INVALIDATIONS)), 2u);
  // Held until RELEASE when commands is 0.
  mode = svmdev_ctl_inval_mode{SVMDEV_INVAL_DELAY, 1, 0, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 3, &mode, sizeof(mode));
  EXPECT_TRUE(tb_.Submit(inv).empty());
  for (int i = 0; i < 5; i++) tb_.Submit(Testbed::Cmd(SVMDEV_OP_NOP));
  tb_.CtlReceive();
  tb_.CtlSend(SVMDEV_CTL_RELEASE, 4, nullptr, 0);
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(Payload<svmdev_ctl_result>(m[0]).value, 1u);
  c = tb_.DrainCompletions();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].opcode, SVMDEV_OP_INVALIDATE);
}

TEST_F(CoreTest, StaleAccessOracleCatchesAnEarlyAcknowledgement) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x1000, Testbed::kData, kRW);
  One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8));
  uint32_t mask = SVMDEV_EVT_STALE | SVMDEV_EVT_INVALIDATE;
  tb_.CtlSend(SVMDEV_CTL_EVENTS, 1, &mask, sizeof(mask));
  svmdev_ctl_inval_mode mode{SVMDEV_INVAL_EARLY_ACK, 1, 2, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 2, &mode, sizeof(mode));
  tb_.CtlReceive();
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0x1000, 0x1000)).status, SVMDEV_STATUS_OK);
  tb_.CtlSend(SVMDEV_CTL_TLB, 3, nullptr, 0);
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  uint32_t n;
  std::memcpy(&n, m[0].payload.data(), 4);
  ASSERT_EQ(n, 1u);
  svmdev_ctl_tlb_entry t;
  std::memcpy(&t, m[0].payload.data() + 4, sizeof(t));
  EXPECT_EQ(t.stale, 1);
  EXPECT_EQ(t.target, Testbed::kData);
  One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8));
  m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(Payload<svmdev_ctl_event>(m[0]).kind, SVMDEV_EVT_STALE);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_STALE)), 1u);
  // Two commands later the held invalidation is performed.
  One(Testbed::Cmd(SVMDEV_OP_NOP));
  m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(Payload<svmdev_ctl_event>(m[0]).kind, SVMDEV_EVT_INVALIDATE);
}

TEST_F(CoreTest, ControlChannelFailsDmas) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x1000, Testbed::kData, kRW);
  svmdev_ctl_fail_dma f{2, 1};  // command fetch, walk level 3 pass; level 2 fails
  tb_.CtlSend(SVMDEV_CTL_FAIL_DMA, 1, &f, sizeof(f));
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status,
            SVMDEV_STATUS_DMA_ERROR);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).status, SVMDEV_STATUS_OK);
}

// ---- ring restart: CONTROL.ENABLE cleared, then set ----

class RestartTest : public CoreTest {
 protected:
  void Restart() {
    tb_.Write32(SVMDEV_REG_CONTROL, 0);
    ASSERT_TRUE(tb_.Enable());
  }
  uint32_t Status() const { return tb_.Read32(SVMDEV_REG_STATUS); }
};

TEST_F(RestartTest, DropsEveryTranslationAndKeepsContexts) {
  uint64_t root0 = SetupCtx(0), root1 = SetupCtx(1);
  const uint64_t a = Testbed::kData, b = Testbed::kData + 0x1000;
  tb_.MemWrite(a, 111, 8);
  tb_.MemWrite(b, 222, 8);
  tb_.Map(root0, 0x3000, a, kRW);
  tb_.Map(root1, 0x3000, a, kRW);
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 111u);
  EXPECT_EQ(One(Testbed::AccessCmd(1, 0x3000, SVMDEV_ACC_READ, 8)).value, 111u);
  // Remapped without an INVALIDATE: only the restart stands between the two.
  tb_.Map(root0, 0x3000, b, kRW);
  tb_.Map(root1, 0x3000, b, kRW);
  Restart();
  uint64_t walks = tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_WALKS));
  EXPECT_EQ(One(Testbed::AccessCmd(0, 0x3000, SVMDEV_ACC_READ, 8)).value, 222u);
  EXPECT_EQ(One(Testbed::AccessCmd(1, 0x3000, SVMDEV_ACC_READ, 8)).value, 222u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_WALKS)), walks + 2);
  tb_.CtlSend(SVMDEV_CTL_TLB, 1, nullptr, 0);
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  uint32_t n = 0;
  std::memcpy(&n, m[0].payload.data(), 4);
  EXPECT_EQ(n, 2u);  // only the two entries walked since
}

// The driver's error worker aborts an INVALIDATE whose completion never came
// (dropped) or that the device still holds (delayed, not yet performed).
TEST_F(RestartTest, CompletesAnAbortedInvalidation) {
  const uint64_t a = Testbed::kData, b = Testbed::kData + 0x1000;
  tb_.MemWrite(a, 111, 8);
  tb_.MemWrite(b, 222, 8);
  for (uint32_t mode : {SVMDEV_INVAL_DROP, SVMDEV_INVAL_DELAY}) {
    SCOPED_TRACE(mode);
    uint64_t root = SetupCtx(0);
    tb_.Map(root, 0x5000, a, kRW);
    EXPECT_EQ(One(Testbed::AccessCmd(0, 0x5000, SVMDEV_ACC_READ, 8)).value, 111u);
    svmdev_ctl_inval_mode m{mode, 1, 0, 0};
    tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 1, &m, sizeof(m));
    tb_.Map(root, 0x5000, b, kRW);
    EXPECT_TRUE(tb_.Submit(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0x5000, 0x1000)).empty());
    Restart();
    EXPECT_EQ(One(Testbed::AccessCmd(0, 0x5000, SVMDEV_ACC_READ, 8)).value, 222u);
    // The held one is gone, not released later.
    tb_.CtlReceive();
    tb_.CtlSend(SVMDEV_CTL_RELEASE, 2, nullptr, 0);
    auto r = tb_.CtlReceive();
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(Payload<svmdev_ctl_result>(r[0]).value, 0u);
    EXPECT_TRUE(tb_.DrainCompletions().empty());
  }
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_STALE)), 0u);
}

// Dropping the next three acknowledgements costs one fence timeout: the
// restart that ends it ends the rest of the fault too.
TEST_F(RestartTest, EndsTheInvalidationFaultsTheHostAskedFor) {
  SetupCtx(0);
  svmdev_ctl_inval_mode m{SVMDEV_INVAL_DROP, 3, 0, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 1, &m, sizeof(m));
  const svmdev_cmd inv = Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0, 0, 0, SVMDEV_INV_F_ALL);
  EXPECT_TRUE(tb_.Submit(inv).empty());
  Restart();
  for (int i = 0; i < 3; i++) {
    auto c = tb_.Submit(inv);
    ASSERT_EQ(c.size(), 1u) << i;
    EXPECT_EQ(c[0].status, SVMDEV_STATUS_OK);
  }
}

TEST_F(RestartTest, StalledAccessIsNeverReplayedIntoItsBuffer) {
  uint64_t root = SetupCtx(0);
  const uint64_t buf = Testbed::kData + 0x8000, page = Testbed::kData;
  for (unsigned i = 0; i < 64; i++) tb_.mem[page + i] = 0x5a;
  svmdev_cmd rd = Testbed::AccessCmd(0, 0x7000, SVMDEV_ACC_READ, 64);
  rd.flags = SVMDEV_ACC_F_BUF;
  rd.arg[4] = buf;
  svmdev_cmd wr = Testbed::AccessCmd(0, 0x7100, SVMDEV_ACC_WRITE, 8, 0xdead);
  EXPECT_TRUE(tb_.Submit(rd).empty());
  EXPECT_TRUE(tb_.Submit(wr).empty());
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 2u);
  Restart();
  tb_.Map(root, 0x7000, page, kRW);
  // The fault ids are gone: neither access runs, nothing lands in memory.
  EXPECT_EQ(One(Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 0, f[0].fault_id)).status,
            SVMDEV_STATUS_NO_FAULT);
  svmdev_cpl all = One(Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 0, 0, 0, 0, SVMDEV_FLT_F_ALL));
  EXPECT_EQ(all.status, SVMDEV_STATUS_OK);
  EXPECT_EQ(all.value, 0u);
  for (unsigned i = 0; i < 64; i++) ASSERT_EQ(tb_.mem[buf + i], 0) << i;
  EXPECT_EQ(tb_.MemRead(page + 0x100, 8), 0u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_CANCELS)), 2u);
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_REPLAYS)), 0u);
  EXPECT_TRUE(tb_.DrainFaults().empty());
}

TEST_F(RestartTest, StalledHostAccessIsReportedCancelled) {
  SetupCtx(2);
  uint32_t mask = SVMDEV_EVT_ACCESS_DONE;
  tb_.CtlSend(SVMDEV_CTL_EVENTS, 1, &mask, sizeof(mask));
  svmdev_ctl_access a{};
  a.va = 0x6000;
  a.ctx = 2;
  a.kind = SVMDEV_ACC_WRITE;
  a.size = 8;
  tb_.CtlSend(SVMDEV_CTL_ACCESS, 9, &a, sizeof(a));
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(Payload<svmdev_ctl_result>(m[1]).status, SVMDEV_STATUS_STALLED);
  Restart();
  ExpectAccessDone(9, SVMDEV_STATUS_CANCELLED);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_ERROR_CODE), 0u);  // a cancel is not an error
}

TEST_F(RestartTest, DiscardsQueuedCompletionsAndFaultRecords) {
  SetupCtx(0);
  // 70 stalls into a 64-entry fault ring, 70 NOPs into a 64-entry completion ring.
  for (unsigned i = 0; i < 70; i++) {
    tb_.Push(Testbed::AccessCmd(0, i * 4096ull, SVMDEV_ACC_READ, 8));
    if (i % 35 == 34) tb_.Doorbell();
  }
  for (unsigned i = 0; i < 70; i++) {
    tb_.Push(Testbed::Cmd(SVMDEV_OP_NOP));
    if (i % 35 == 34) tb_.Doorbell();
  }
  ASSERT_EQ(Status() & (SVMDEV_STS_CPLQ_FULL | SVMDEV_STS_FLTQ_FULL),
            SVMDEV_STS_CPLQ_FULL | SVMDEV_STS_FLTQ_FULL);
  Restart();
  EXPECT_EQ(Status(), SVMDEV_STS_ENABLED);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_CPLQ_TAIL), 0u);
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_FLTQ_TAIL), 0u);
  svmdev_cmd nop = Testbed::Cmd(SVMDEV_OP_NOP);
  auto c = tb_.Submit(nop);
  ASSERT_EQ(c.size(), 1u);  // only the new command's completion
  EXPECT_EQ(c[0].seq, nop.seq);
  EXPECT_TRUE(tb_.DrainFaults().empty());
}

TEST_F(RestartTest, FailedEnableKeepsTheWork) {
  SetupCtx(0);
  EXPECT_TRUE(tb_.Submit(Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8)).empty());
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 1u);
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  tb_.Write32(SVMDEV_REG_CONTROL, 0);
  tb_.Write32(SVMDEV_REG_CMDQ_ENTRIES, 3);
  tb_.Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_ENABLE);
  ASSERT_EQ(Status() & SVMDEV_STS_ENABLED, 0u);
  EXPECT_EQ(svmdev_core_save(tb_.core(), nullptr, 0), n);
  Restart();
  // A successful enable then drops the stalled access: the state shrinks.
  EXPECT_LT(svmdev_core_save(tb_.core(), nullptr, 0), n);
}

// ---- bounded work and memory ----

// A guest that never reads the fault ring, and cancels or replays each stall:
// records must not pile up inside the device.
TEST_F(CoreTest, FaultRecordsStayBoundedWhenTheRingIsNeverRead) {
  SetupCtx(0);
  for (unsigned i = 0; i < 600; i++) {
    svmdev_cmd acc = Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 8);
    tb_.Push(acc);
    uint8_t op = i % 2 ? SVMDEV_OP_FAULT_CANCEL : SVMDEV_OP_FAULT_REPLAY;  // replay misses again
    tb_.Push(Testbed::Cmd(op, 0, 0, 0, 0, SVMDEV_FLT_F_ALL));
    tb_.Doorbell();
    tb_.DrainCompletions();
  }
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  EXPECT_LE(n, svmdev_core_state_max(tb_.core()));
  std::vector<uint8_t> blob(n);
  svmdev_core_save(tb_.core(), blob.data(), n);
  EXPECT_EQ(svmdev_core_load(tb_.core(), blob.data(), n), 0);
  // Every access is cancelled: the records that never reached the ring left
  // with them, and the ring holds the first 63.
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_FLTQ_FULL, 0u);
  EXPECT_EQ(tb_.DrainFaults().size(), Testbed::kEntries - 1);
  EXPECT_TRUE(tb_.DrainFaults().empty());
}

// Every list at its longest still fits the bound a snapshot load checks.
TEST_F(CoreTest, StateMaxBoundsTheLargestSave) {
  SetupCtx(0);
  for (unsigned i = 0; i < 256; i++) {
    tb_.Push(Testbed::AccessCmd(0, (i + 1) * 4096ull, SVMDEV_ACC_READ, 8));
    if (i % 32 == 31) tb_.Doorbell();
  }
  svmdev_ctl_inval_mode mode{SVMDEV_INVAL_DELAY, 64, 0, 0};
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 1, &mode, sizeof(mode));
  for (unsigned i = 0; i < 64; i++) {
    tb_.Push(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0, 0, 0, SVMDEV_INV_F_ALL));
    if (i % 32 == 31) tb_.Doorbell();
  }
  ASSERT_TRUE(tb_.Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_FLTQ_FULL);
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  EXPECT_LE(n, svmdev_core_state_max(tb_.core()));
  EXPECT_GT(n, svmdev_core_state_max(tb_.core()) / 2);
}

// An enabled testbed with the given slices (0: the defaults); by hand, the
// test runs the deferred work itself.
std::unique_ptr<Testbed> SlicedTestbed(uint32_t commands, uint32_t copy_bytes, bool by_hand,
                                       uint64_t vram_size = 1 << 20) {
  Testbed::Options opt;
  opt.slice_commands = commands;
  opt.slice_copy_bytes = copy_bytes;
  opt.vram_size = vram_size;
  auto tb = std::make_unique<Testbed>(opt);
  EXPECT_TRUE(tb->Enable());
  tb->auto_continue = !by_hand;
  return tb;
}

TEST(CoreSlices, DoorbellDoesABoundedSliceAndTheRestContinues) {
  auto tb = SlicedTestbed(8, 0, true);
  for (unsigned i = 0; i < 30; i++) tb->Push(Testbed::Cmd(SVMDEV_OP_NOP));
  tb->Doorbell();
  EXPECT_EQ(tb->Read32(SVMDEV_REG_CMDQ_HEAD), 8u);
  EXPECT_EQ(tb->Read32(SVMDEV_REG_CPLQ_TAIL), 8u);
  EXPECT_TRUE(tb->scheduled());
  EXPECT_EQ(tb->RunScheduled(), 3u);  // 8 + 8 + 6 more
  EXPECT_EQ(tb->Read32(SVMDEV_REG_CMDQ_HEAD), 30u);
  EXPECT_FALSE(tb->scheduled());
  EXPECT_EQ(tb->DrainCompletions().size(), 30u);
  // A few commands finish inside the doorbell write.
  for (unsigned i = 0; i < 8; i++) tb->Push(Testbed::Cmd(SVMDEV_OP_NOP));
  tb->Doorbell();
  EXPECT_FALSE(tb->scheduled());
  EXPECT_EQ(tb->DrainCompletions().size(), 8u);
}

TEST(CoreSlices, CopySpansSlicesAndCompletesOnce) {
  auto tb = SlicedTestbed(0, 0, true, 16 << 20);
  for (uint64_t i = 0; i < (16 << 20); i++) tb->vram()[i] = static_cast<uint8_t>(i * 13 >> 3);
  std::vector<uint8_t> want(tb->vram(), tb->vram() + (16 << 20));
  // 2 MiB (a huge page) completes within the doorbell write...
  svmdev_cmd small = Testbed::Cmd(SVMDEV_OP_COPY, 0, 0, 8 << 20, 2 << 20, 6);
  std::memmove(&want[8 << 20], &want[0], 2 << 20);
  tb->Push(small);
  tb->Doorbell();
  EXPECT_FALSE(tb->scheduled());
  EXPECT_EQ(tb->Read32(SVMDEV_REG_CPLQ_TAIL), 1u);
  // ...9 MiB takes three slices of the default 4 MiB, and waits for them.
  svmdev_cmd big = Testbed::Cmd(SVMDEV_OP_COPY, 0, 1 << 20, 6 << 20, 9 << 20, 6);
  std::memmove(&want[6 << 20], &want[1 << 20], 9 << 20);
  tb->Push(big);
  tb->Push(Testbed::Cmd(SVMDEV_OP_NOP));
  tb->Doorbell();
  EXPECT_TRUE(tb->scheduled());
  EXPECT_EQ(tb->Read32(SVMDEV_REG_CPLQ_TAIL), 1u);
  EXPECT_EQ(tb->RunScheduled(), 2u);
  auto c = tb->DrainCompletions();
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[1].seq, big.seq);
  EXPECT_EQ(c[1].value, 9u << 20);
  EXPECT_EQ(c[2].opcode, SVMDEV_OP_NOP);  // in order, after the copy
  EXPECT_TRUE(std::equal(want.begin(), want.end(), tb->vram()));
}

// Overlapping VRAM ranges copy as memmove in either direction, whatever the slicing.
TEST(CoreSlices, OverlappingCopyInSmallSlicesIsAMemmove) {
  auto tb = SlicedTestbed(0, 4096, false);
  for (uint64_t i = 0; i < tb->vram_size(); i++) tb->vram()[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<uint8_t> want(tb->vram(), tb->vram() + tb->vram_size());
  for (auto [src, dst] : {std::pair{0x1000ull, 0x3801ull}, std::pair{0x9000ull, 0x7fffull}}) {
    std::memmove(&want[dst], &want[src], 50000);
    auto c = tb->Submit(Testbed::Cmd(SVMDEV_OP_COPY, 0, src, dst, 50000, 6));
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].status, SVMDEV_STATUS_OK);
  }
  EXPECT_TRUE(std::equal(want.begin(), want.end(), tb->vram()));
  // System memory to system memory and VRAM to system memory, sliced too.
  for (unsigned i = 0; i < 20000; i++) tb->mem[Testbed::kData + i] = static_cast<uint8_t>(i % 253);
  const uint64_t data = Testbed::kData;
  auto c = tb->Submit(Testbed::Cmd(SVMDEV_OP_COPY, 0, data, data + 0x8000, 20000));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_OK);
  EXPECT_EQ(std::memcmp(&tb->mem[data], &tb->mem[data + 0x8000], 20000), 0);
  c = tb->Submit(
      Testbed::Cmd(SVMDEV_OP_COPY, 0, 0x100, data + 0x10000, 10000, SVMDEV_COPY_F_SRC_VRAM));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].status, SVMDEV_STATUS_OK);
  EXPECT_EQ(std::memcmp(tb->vram() + 0x100, &tb->mem[data + 0x10000], 10000), 0);
}

TEST(CoreSlices, CopyInProgressSurvivesASnapshotAndDiesWithARestart) {
  auto tb = SlicedTestbed(0, 4096, true);
  std::memset(tb->vram(), 0xab, 0x8000);
  svmdev_cmd copy = Testbed::Cmd(SVMDEV_OP_COPY, 0, 0, 0x10000, 0x8000, 6);
  tb->Push(copy);
  tb->Doorbell();
  ASSERT_TRUE(tb->scheduled());
  size_t n = svmdev_core_save(tb->core(), nullptr, 0);
  std::vector<uint8_t> blob(n);
  svmdev_core_save(tb->core(), blob.data(), n);
  // A restart drops it: no completion, the rest never copied.
  tb->Write32(SVMDEV_REG_CONTROL, 0);
  ASSERT_TRUE(tb->Enable());
  tb->RunScheduled();
  EXPECT_TRUE(tb->DrainCompletions().empty());
  EXPECT_EQ(std::count(tb->vram() + 0x10000, tb->vram() + 0x18000, 0xab), 4096);
  // The snapshot taken mid-copy finishes it.
  ASSERT_EQ(svmdev_core_load(tb->core(), blob.data(), n), 0);
  svmdev_core_continue(tb->core());
  EXPECT_GT(tb->RunScheduled(), 0u);
  auto c = tb->DrainCompletions();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].seq, copy.seq);
  EXPECT_EQ(c[0].value, 0x8000u);
  EXPECT_EQ(std::count(tb->vram() + 0x10000, tb->vram() + 0x18000, 0xab), 0x8000);
}

// A DMA aimed back at the device's own registers must not run the core inside itself.
TEST_F(CoreTest, RegisterAccessFromTheDevicesOwnDmaIsRefused) {
  uint64_t reads = 0;
  tb_.on_dma_write = [&](uint64_t, uint64_t) {
    svmdev_core_mmio_write(tb_.core(), SVMDEV_REG_CONTROL, SVMDEV_CTRL_RESET, 4);
    reads += svmdev_core_mmio_read(tb_.core(), SVMDEV_REG_ID, 4) == SVMDEV_ID_MAGIC;
  };
  for (int i = 0; i < 3; i++) tb_.Push(Testbed::Cmd(SVMDEV_OP_NOP));
  tb_.Doorbell();
  tb_.on_dma_write = nullptr;
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_STATUS), SVMDEV_STS_ENABLED);
  EXPECT_EQ(tb_.DrainCompletions().size(), 3u);
  EXPECT_EQ(reads, 0u);
  EXPECT_EQ(tb_.errors.size(), 6u);
}

// ---- smaller gaps ----

TEST_F(CoreTest, AccessBufferThatWrapsIsRefused) {
  uint64_t root = SetupCtx(0);
  tb_.Map(root, 0x1000, Testbed::kData, kRW);
  svmdev_cmd c = Testbed::AccessCmd(0, 0x1000, SVMDEV_ACC_READ, 256);
  c.flags = SVMDEV_ACC_F_BUF;
  c.arg[4] = UINT64_MAX - 100;
  EXPECT_EQ(One(c).status, SVMDEV_STATUS_BAD_ARG);
  c.arg[4] = UINT64_MAX - 256;  // the highest buffer that does not wrap: no memory there
  EXPECT_EQ(One(c).status, SVMDEV_STATUS_DMA_ERROR);
}

TEST_F(CoreTest, ControlChannelReservedFieldsMustBeZero) {
  SetupCtx(0);
  svmdev_ctl_access a{};
  a.kind = SVMDEV_ACC_READ;
  a.size = 8;
  a.rsvd[2] = 1;
  svmdev_ctl_storm st{};
  st.count = 1;
  st.rsvd[0] = 1;
  svmdev_ctl_inval_mode mode{SVMDEV_INVAL_NORMAL, 0, 0, 1};
  uint32_t mask = 1u << 5;
  tb_.CtlSend(SVMDEV_CTL_ACCESS, 1, &a, sizeof(a));
  tb_.CtlSend(SVMDEV_CTL_FAULT_STORM, 2, &st, sizeof(st));
  tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 3, &mode, sizeof(mode));
  tb_.CtlSend(SVMDEV_CTL_EVENTS, 4, &mask, sizeof(mask));
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 4u);
  for (uint32_t i = 0; i < 4; i++) {
    EXPECT_EQ(m[i].hdr.tag, i + 1);
    EXPECT_EQ(Payload<svmdev_ctl_result>(m[i]).status, SVMDEV_STATUS_BAD_ARG) << i;
  }
  EXPECT_EQ(tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_FAULTS)), 0u);
}

TEST_F(CoreTest, PartialControlMessageDoesNotSurviveAReconnect) {
  svmdev_ctl_hdr h{SVMDEV_CTL_MAGIC, SVMDEV_CTL_ACCESS, sizeof(svmdev_ctl_access), 1};
  svmdev_core_ctl_input(tb_.core(), &h, sizeof(h));
  svmdev_core_ctl_input(tb_.core(), "\0\0\0", 3);
  svmdev_core_ctl_reset(tb_.core());
  tb_.CtlSend(SVMDEV_CTL_PING, 2, nullptr, 0);
  auto m = tb_.CtlReceive();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].hdr.type, SVMDEV_CTL_PING | SVMDEV_CTL_REPLY);
  EXPECT_EQ(m[0].hdr.tag, 2u);
}

// Snapshots hold fields, not structs: no padding (uninitialised host memory) in them.
TEST(CoreSnapshot, RecordsAreSavedWithoutPadding) {
  auto size = [](uint32_t contexts) {
    Testbed::Options opt;
    opt.contexts = contexts;
    Testbed tb(opt);
    return svmdev_core_save(tb.core(), nullptr, 0);
  };
  EXPECT_EQ(size(5) - size(4), 8u + 1u);  // root, live
  Testbed tb;
  ASSERT_TRUE(tb.Enable());
  tb.Submit(Testbed::Cmd(SVMDEV_OP_CTX_SETUP, 0, tb.NewTable()));
  tb.Write32(SVMDEV_REG_CONTROL, 0);  // the fault record stays queued
  size_t before = svmdev_core_save(tb.core(), nullptr, 0);
  svmdev_ctl_access a{};
  a.va = 0x1000;
  a.kind = SVMDEV_ACC_READ;
  a.size = 8;
  tb.CtlSend(SVMDEV_CTL_ACCESS, 1, &a, sizeof(a));
  // A stalled access (8+4+4+2+1+1, its access 4*8+2+1+1+1+1) and its record (32).
  EXPECT_EQ(svmdev_core_save(tb.core(), nullptr, 0) - before, 20u + 38u + 32u);
}

// ---- snapshots ----

TEST_F(CoreTest, SnapshotRoundTripRestoresEverything) {
  uint64_t root = SetupCtx(1);
  tb_.Map(root, 0x1000, Testbed::kData, kRW);
  One(Testbed::AccessCmd(1, 0x1000, SVMDEV_ACC_READ, 8));
  tb_.Submit(Testbed::AccessCmd(1, 0x8000, SVMDEV_ACC_READ, 8));  // stalls
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  std::vector<uint8_t> blob(n);
  ASSERT_EQ(svmdev_core_save(tb_.core(), blob.data(), blob.size()), n);
  auto f = tb_.DrainFaults();
  ASSERT_EQ(f.size(), 1u);
  // Run on, then go back.
  tb_.Submit(Testbed::Cmd(SVMDEV_OP_CTX_DESTROY, 1));
  ASSERT_EQ(svmdev_core_load(tb_.core(), blob.data(), blob.size()), 0);
  std::vector<uint8_t> again(n);
  svmdev_core_save(tb_.core(), again.data(), again.size());
  EXPECT_EQ(blob, again);
  tb_.Map(root, 0x8000, Testbed::kData, kRW);
  auto c = tb_.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_REPLAY, 1, f[0].fault_id));
  ASSERT_GE(c.size(), 2u);
  EXPECT_EQ(c[c.size() - 2].status, SVMDEV_STATUS_OK);
}

TEST_F(CoreTest, SaveIntoAShortBufferWritesNothing) {
  SetupCtx(1);
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  std::vector<uint8_t> blob(n, 0xaa);
  EXPECT_EQ(svmdev_core_save(tb_.core(), blob.data(), n - 1), n);
  EXPECT_EQ(blob, std::vector<uint8_t>(n, 0xaa));
}

// The fuzzers reuse one testbed: Recreate must leave nothing of the last input.
TEST_F(CoreTest, RecreateStartsOverFromZeroedMemory) {
  uint64_t root = SetupCtx(1);
  tb_.Map(root, 0x1000, Testbed::kData + 0x3000, kRW);
  tb_.Map(root, 0x2000, 0x5000, kRW | SVMDEV_PTE_VRAM);
  One(Testbed::AccessCmd(1, 0x1008, SVMDEV_ACC_WRITE, 8, 0x1234));
  One(Testbed::AccessCmd(1, 0x2010, SVMDEV_ACC_WRITE, 8, 0x5678));
  tb_.MemWrite(tb_.mem.size() - 8, ~0ull, 8);
  tb_.Recreate();
  EXPECT_EQ(std::count(tb_.mem.begin(), tb_.mem.end(), 0), static_cast<long>(tb_.mem.size()));
  EXPECT_EQ(std::count(tb_.vram(), tb_.vram() + tb_.vram_size(), 0),
            static_cast<long>(tb_.vram_size()));
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_STATUS), 0u);
  EXPECT_EQ(Testbed::Cmd(SVMDEV_OP_NOP).seq, 1u);
}

TEST_F(CoreTest, SnapshotLoadRejectsDamagedState) {
  size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
  std::vector<uint8_t> blob(n);
  svmdev_core_save(tb_.core(), blob.data(), n);
  EXPECT_NE(svmdev_core_load(tb_.core(), blob.data(), n - 1), 0);
  std::mt19937 rng(1);
  for (int i = 0; i < 2000; i++) {
    std::vector<uint8_t> bad = blob;
    bad[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8));
    if (svmdev_core_load(tb_.core(), bad.data(), n) == 0) {
      // Accepted: it must still be a state the device runs from safely.
      tb_.Submit(Testbed::Cmd(SVMDEV_OP_NOP));
      ASSERT_EQ(svmdev_core_load(tb_.core(), blob.data(), n), 0);
    }
  }
  EXPECT_EQ(tb_.Read32(SVMDEV_REG_ID), SVMDEV_ID_MAGIC);
}

// ---- against the reference MMU ----

// Random tables and accesses; after a full invalidation the device must agree
// with the reference walk on every access: status, target and data.
TEST(CoreReference, RandomTablesAgreeWithTheReferenceMmu) {
  std::mt19937_64 rng(42);
  Testbed tb;
  ASSERT_TRUE(tb.Enable());
  uint64_t root = tb.NewTable();
  ASSERT_EQ(tb.Submit(Testbed::Cmd(SVMDEV_OP_CTX_SETUP, 0, root)).at(0).status, 0u);
  std::vector<uint64_t> vas;
  for (int i = 0; i < 64; i++) vas.push_back((rng() % 512) << 12 | (rng() % 4) << 30);
  const uint64_t perms[] = {SVMDEV_PTE_VALID | SVMDEV_PTE_READ, kRW, kRWA, 0,
                            SVMDEV_PTE_VALID | SVMDEV_PTE_ATOMIC};
  for (int round = 0; round < 400; round++) {
    uint64_t va = vas[rng() % vas.size()];
    bool vram = rng() % 2;
    uint64_t target = vram ? (rng() % 300) << 12 : Testbed::kData + ((rng() % 256) << 12);
    tb.Map(root, va, target, perms[rng() % 5] | (vram ? SVMDEV_PTE_VRAM : 0));
    ASSERT_EQ(tb.Submit(Testbed::Cmd(SVMDEV_OP_INVALIDATE, 0, 0, 0, 0, SVMDEV_INV_F_ALL))
                  .at(0).status, 0u);
    for (int k = 0; k < 8; k++) {
      uint64_t a = vas[rng() % vas.size()] + (rng() % 512) * 8;
      uint8_t kind = static_cast<uint8_t>(rng() % 3);
      RefXlate ref = tb.Reference(root, a, kind);
      uint64_t before = 0;
      if (ref.kind == RefXlate::kOk) {
        if (ref.vram) std::memcpy(&before, tb.vram() + ref.addr, 8);
        else before = tb.MemRead(ref.addr, 8);
      }
      uint64_t value = rng();
      auto c = tb.Submit(Testbed::AccessCmd(0, a, kind, 8, value, SVMDEV_AOP_ADD));
      auto faults = tb.DrainFaults();
      if (ref.kind == RefXlate::kFault) {
        ASSERT_TRUE(c.empty());
        ASSERT_EQ(faults.size(), 1u);
        EXPECT_EQ(faults[0].reason, ref.status);
        tb.Submit(Testbed::Cmd(SVMDEV_OP_FAULT_CANCEL, 0, faults[0].fault_id));
        continue;
      }
      ASSERT_EQ(c.size(), 1u);
      if (ref.kind == RefXlate::kError) {
        EXPECT_EQ(c[0].status, ref.status);
        continue;
      }
      ASSERT_EQ(c[0].status, SVMDEV_STATUS_OK);
      uint64_t after = 0;
      if (ref.vram) std::memcpy(&after, tb.vram() + ref.addr, 8);
      else after = tb.MemRead(ref.addr, 8);
      if (kind == SVMDEV_ACC_READ) EXPECT_EQ(c[0].value, before);
      if (kind == SVMDEV_ACC_WRITE) EXPECT_EQ(after, value);
      if (kind == SVMDEV_ACC_ATOMIC) {
        EXPECT_EQ(c[0].value, before);
        EXPECT_EQ(after, before + value);
      }
    }
  }
  EXPECT_TRUE(tb.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_ACCESSES)) > 100);
}

}  // namespace
}  // namespace svmdev

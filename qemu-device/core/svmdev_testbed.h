// A host for the svmdev core in one process, shared by the unit tests and the
// in-process fuzzer: flat fake guest memory, rings at fixed addresses, a
// page-table builder, and a reference MMU written from the spec alone (it
// shares no code with the core's walker) that the checks compare against.
#ifndef SVMDEV_TESTBED_H
#define SVMDEV_TESTBED_H

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "svmdev/svmdev_core.h"
#include "svmdev/svmdev_hw.h"

namespace svmdev {

struct CtlMessage {
  svmdev_ctl_hdr hdr;
  std::vector<uint8_t> payload;
};

// What the page tables say about one access, per the spec.
struct RefXlate {
  enum Kind { kOk, kFault, kError } kind = kError;
  uint32_t status = 0;  // kError: SVMDEV_STATUS_*; kFault: SVMDEV_FAULT_*
  bool vram = false;
  uint64_t addr = 0;  // target of the va
  uint64_t page = 0;  // base of the leaf's page (4 KiB or 2 MiB)
  bool huge = false;
};

class Testbed {
 public:
  // Guest-physical layout of the fake memory.
  static constexpr uint64_t kCmdq = 0x1000;
  static constexpr uint64_t kCplq = 0x3000;
  static constexpr uint64_t kFltq = 0x4000;
  static constexpr uint32_t kEntries = 64;
  static constexpr uint64_t kPtPool = 0x10000;
  static constexpr uint64_t kData = 0x100000;

  struct Options {
    uint64_t mem_size = 4 << 20;
    uint64_t vram_size = 1 << 20;
    uint32_t contexts = 4;
    bool host_vram = true;  // the testbed owns VRAM, as QEMU does
    uint64_t data_base = kData;  // page tables come from [kPtPool, data_base)
    // Work per slice (0: the core's defaults); the testbed's schedule
    // callback records that more is left.
    uint32_t slice_commands = 0;
    uint32_t slice_copy_bytes = 0;
  };

  explicit Testbed(const Options& opt);
  Testbed() : Testbed(Options{}) {}
  ~Testbed();
  Testbed(const Testbed&) = delete;
  Testbed& operator=(const Testbed&) = delete;

  // A new core over zeroed memory and VRAM, reusing the buffers (fuzzers run
  // thousands of inputs a second). Only memory written through the testbed
  // (MemWrite, Push, page tables, device DMA) is zeroed again.
  void Recreate();

  svmdev_core* core() const { return core_; }
  uint8_t* vram() const { return svmdev_core_vram(core_); }
  uint64_t vram_size() const { return opt_.vram_size; }

  uint32_t Read32(uint64_t off) const;
  uint64_t Read64(uint64_t off) const;
  void Write32(uint64_t off, uint32_t v);
  void Write64(uint64_t off, uint64_t v);

  // Programs the three rings and sets CONTROL.ENABLE; true if it took.
  bool Enable();
  // Writes a command at the ring tail; Doorbell publishes everything pushed.
  void Push(const svmdev_cmd& cmd);
  void Doorbell();
  // Push, doorbell, and return the completions that appeared.
  std::vector<svmdev_cpl> Submit(const svmdev_cmd& cmd);
  std::vector<svmdev_cpl> DrainCompletions();
  std::vector<svmdev_fault> DrainFaults();
  // Runs the work the core deferred, as a host's bottom half would, until none
  // is left; returns how many slices that took. The drains call it first
  // unless auto_continue is off.
  unsigned RunScheduled();
  bool scheduled() const { return scheduled_; }
  bool auto_continue = true;

  static svmdev_cmd Cmd(uint8_t op, uint16_t ctx = 0, uint64_t a0 = 0, uint64_t a1 = 0,
                        uint64_t a2 = 0, uint8_t flags = 0);
  static svmdev_cmd AccessCmd(uint16_t ctx, uint64_t va, uint8_t kind, uint16_t size,
                              uint64_t value = 0, uint8_t aop = 0, uint64_t compare = 0);

  // Page tables in the fake memory; tables come from a pool after kPtPool.
  uint64_t NewTable();
  // Points va at target (guest-physical or, with SVMDEV_PTE_VRAM, a VRAM
  // offset) with the given leaf bits, creating tables on the way.
  void Map(uint64_t root, uint64_t va, uint64_t target, uint64_t bits, bool huge = false);
  // Guest-physical address of the leaf entry for va (creating tables), 0 if
  // a huge leaf is in the way.
  uint64_t LeafSlot(uint64_t root, uint64_t va, bool huge);
  // Reads memory like DMA does, so on_dma_read sees it.
  RefXlate Reference(uint64_t root, uint64_t va, uint8_t kind);

  uint64_t MemRead(uint64_t addr, unsigned size) const;
  void MemWrite(uint64_t addr, uint64_t value, unsigned size);

  void CtlSend(uint8_t type, uint32_t tag, const void* payload, uint16_t len);
  // Messages the device sent since the last call.
  std::vector<CtlMessage> CtlReceive();

  // Fake guest memory. Direct writes bypass what Recreate zeroes.
  std::vector<uint8_t> mem;
  std::vector<unsigned> irqs;
  std::vector<std::string> errors;
  uint64_t dma_writes = 0;
  // Called before each DMA read: lets the fuzzer supply memory on demand.
  std::function<void(uint64_t addr, uint64_t len)> on_dma_read;
  // Called after each DMA write that landed.
  std::function<void(uint64_t addr, uint64_t len)> on_dma_write;

 private:
  static int DmaRead(void* opaque, uint64_t addr, void* buf, uint64_t len);
  static int DmaWrite(void* opaque, uint64_t addr, const void* buf, uint64_t len);
  bool InMem(uint64_t addr, uint64_t len) const;
  // Marks pages for Recreate to zero; the range must be in memory.
  void Touch(uint64_t addr, uint64_t len);
  void NewCore();
  uint32_t pending_tail() const { return tail_valid_ ? tail_ : Read32(SVMDEV_REG_CMDQ_TAIL); }

  Options opt_;
  svmdev_core* core_ = nullptr;
  std::vector<uint8_t> host_vram_;
  std::vector<uint8_t> ctl_out_;
  std::vector<uint8_t> dirty_;  // per page of mem: written since Recreate
  uint64_t pt_next_ = kPtPool;
  uint32_t tail_ = 0;  // command ring tail pushed but not yet rung
  bool tail_valid_ = false;
  bool scheduled_ = false;  // the core asked for svmdev_core_continue
  // Sequence numbers of Cmd; Recreate restarts them so that a fuzz input
  // replays the same way in any process.
  static uint64_t next_seq_;
};

}  // namespace svmdev

#endif  // SVMDEV_TESTBED_H

// svmdev core: registers, rings, commands, the device MMU with its TLB,
// replayable faults, the copy engine, atomics, VRAM, the host control channel
// and snapshots, behind the C ABI of svmdev_core.h. docs/device-spec.md is the
// contract. Every value read from the guest (registers, rings, page tables) or
// from the host channel is checked before use: the device refuses, it never
// aborts.
//
// This private header holds the core's state and declares its members; they
// are defined, a section each, in
//   svmdev_host_channel.cc: host services, host channel output, host control channel;
//   svmdev_mmu.cc: TLB and page-table walk, memory behind a translation, device
//     accesses, invalidations;
//   svmdev_commands.cc: rings, copy engine, commands, registers;
//   svmdev_snapshot.cc: snapshots (svmdev_core_save, _load and _state_max);
//   svmdev_core.cc: the rest of the C ABI.
#ifndef SVMDEV_CORE_STATE_H
#define SVMDEV_CORE_STATE_H

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "svmdev/svmdev_core.h"
#include "svmdev/svmdev_hw.h"

// Records go to guest memory as they lie in host memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian hosts only");

namespace svmdev::core_detail {

inline constexpr unsigned kTlbEntries = 64;
inline constexpr unsigned kMaxStalled = 256;
inline constexpr unsigned kMaxHeld = 64;  // invalidations held back by the host channel
// Completions queued while the ring is full: one command's own, the accesses
// a FAULT_REPLAY/CANCEL finished, and the held invalidations it or a RELEASE
// let go. Commands run only with none queued, so queued completions plus the
// held ones still to come never exceed this.
inline constexpr unsigned kMaxCpls = kMaxStalled + kMaxHeld + 2;
// Work of one slice: what one register write or host message does at most.
inline constexpr uint32_t kSliceCommands = 256;
inline constexpr uint32_t kSliceCopyBytes = 4u << 20;
inline constexpr uint32_t kDefaultContexts = 16;
inline constexpr uint32_t kMaxContexts = 4096;
inline constexpr uint64_t kVaLimit = 1ull << SVMDEV_VA_BITS;
inline constexpr uint64_t kBounce = 4096;
inline constexpr uint32_t kCaps = SVMDEV_CAP_HUGE_2M | SVMDEV_CAP_ATOMICS | SVMDEV_CAP_VRAM |
                                  SVMDEV_CAP_REPLAY;
inline constexpr uint32_t kStatusFault = 0xffffffffu;  // internal: the access must stall
inline constexpr uint32_t kEventsAll = SVMDEV_EVT_FAULT | SVMDEV_EVT_INVALIDATE | SVMDEV_EVT_STALE |
                                       SVMDEV_EVT_ERROR | SVMDEV_EVT_ACCESS_DONE;

struct Access {
  uint64_t va = 0;
  uint64_t value = 0;
  uint64_t compare = 0;
  uint64_t buf = 0;
  uint16_t size = 0;
  uint8_t kind = 0;
  uint8_t aop = 0;
  uint8_t use_buf = 0;
  uint8_t probe = 0;  // translate only (fault storms)
};

enum Origin : uint8_t { kFromCommand = 0, kFromHost = 1 };

// An access waiting for FAULT_REPLAY or FAULT_CANCEL.
struct Stalled {
  uint64_t seq = 0;       // command seq, or host tag
  uint32_t fault_id = 0;
  uint32_t cmd_index = 0;
  uint16_t ctx = 0;
  uint8_t origin = kFromCommand;
  uint8_t cmd_flags = 0;
  Access acc;
};

struct TlbEntry {
  uint64_t va = 0;  // page base
  uint64_t target = 0;
  uint64_t pte = 0;
  uint16_t ctx = 0;
  uint8_t valid = 0;
  uint8_t stale = 0;  // an acknowledged invalidation covers it
  uint64_t Size() const {
    return (pte & SVMDEV_PTE_HUGE) ? SVMDEV_HUGE_SIZE : SVMDEV_PAGE_SIZE;
  }
};

struct Ring {
  uint64_t base = 0;
  uint32_t entries = 0;
  uint32_t head = 0;
  uint32_t tail = 0;
  bool Empty() const { return head == tail; }
  bool Full() const { return (tail + 1) % entries == head; }
  bool Usable(uint64_t record) const {
    return entries >= 2 && entries <= SVMDEV_RING_MAX_ENTRIES && (entries & (entries - 1)) == 0 &&
           base % record == 0 && base <= UINT64_MAX - entries * record && head < entries &&
           tail < entries;
  }
};

struct Pending {
  svmdev_cpl cpl;
  uint8_t irq;
};

// An INVALIDATE whose effect or acknowledgement the host channel holds back.
struct Held {
  uint64_t va = 0;
  uint64_t len = 0;  // 0: whole context
  uint32_t commands_left = 0;  // 0: until RELEASE
  uint16_t ctx = 0;
  uint8_t performed = 0;
  uint8_t acked = 0;
  uint8_t drop_ack = 0;
  Pending cpl{};
};

struct Ctx {
  uint64_t root = 0;
  uint8_t live = 0;
};

// A COPY in progress: it may span slices, and the commands after it wait.
struct CopyJob {
  uint64_t seq = 0;
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t len = 0;
  uint64_t done = 0;
  uint32_t index = 0;
  uint16_t ctx = 0;
  uint8_t flags = 0;
  uint8_t active = 0;
};

// Everything a snapshot carries.
struct State {
  uint32_t control = 0;
  uint32_t halted = 0;
  uint32_t irq_status = 0;
  uint32_t irq_mask = SVMDEV_IRQ_ALL;
  uint32_t error_code = 0;
  uint64_t error_addr = 0;
  Ring cmdq, cplq, fltq;
  uint64_t counters[SVMDEV_NUM_COUNTERS] = {};
  std::vector<Ctx> ctx;
  TlbEntry tlb[kTlbEntries];
  uint32_t tlb_next = 0;
  uint32_t next_fault_id = 1;
  std::vector<Stalled> stalled;
  std::deque<Pending> cpls;
  std::deque<svmdev_fault> faults;
  std::vector<Held> held;
  CopyJob copy;
  // host-channel settings
  uint32_t inval_mode = SVMDEV_INVAL_NORMAL;
  uint32_t inval_count = 0;
  uint32_t inval_commands = 0;
  uint32_t dma_skip = 0;
  uint32_t dma_fail = 0;
  uint32_t event_mask = 0;
  uint64_t event_count = 0;
};

struct Xlate {
  uint32_t status = SVMDEV_STATUS_OK;  // or kStatusFault
  uint8_t reason = 0;
  uint8_t vram = 0;
  uint64_t addr = 0;  // target of the va itself
};

// The arguments of a COPY (svmdev_commands.cc); a snapshot's COPY in progress
// is checked with it too.
uint32_t CheckCopy(uint64_t vram_size, uint64_t src, bool src_vram, uint64_t dst, bool dst_vram,
                   uint64_t len, uint64_t* bad);

}  // namespace svmdev::core_detail

struct svmdev_core {
  // The helper types, by the names the member functions use.
  using Access = svmdev::core_detail::Access;
  using CopyJob = svmdev::core_detail::CopyJob;
  using Ctx = svmdev::core_detail::Ctx;
  using Held = svmdev::core_detail::Held;
  using Pending = svmdev::core_detail::Pending;
  using Ring = svmdev::core_detail::Ring;
  using Stalled = svmdev::core_detail::Stalled;
  using State = svmdev::core_detail::State;
  using TlbEntry = svmdev::core_detail::TlbEntry;
  using Xlate = svmdev::core_detail::Xlate;

  svmdev_config cfg;
  svmdev_host_ops ops;
  std::unique_ptr<uint8_t[]> own_vram;
  uint8_t* vram = nullptr;
  State st;
  std::vector<uint8_t> ctl_in;
  uint64_t err_addr = 0;  // address behind the status a helper returns
  uint32_t slice_cmds = 0;  // left in the current slice
  uint64_t slice_bytes = 0;
  bool busy = false;  // inside a register access or a slice of work

  // ---- host services (svmdev_host_channel.cc) ----
  void GuestError(const char* msg) const;
  bool InjectedDmaFailure();
  bool DmaRead(uint64_t addr, void* buf, uint64_t len);
  bool DmaWrite(uint64_t addr, const void* buf, uint64_t len);
  void Raise(unsigned vec);

  // ---- host channel output (svmdev_host_channel.cc) ----
  void Send(uint8_t type, uint32_t tag, const void* payload, uint16_t len);
  void Event(uint32_t kind, uint16_t ctx, uint64_t va, uint64_t arg, uint32_t code,
             uint8_t access, uint8_t reason, uint32_t tag);
  void Error(uint32_t status, uint64_t addr, const char* msg);

  // ---- rings (svmdev_commands.cc) ----
  void Halt(uint64_t addr, const char* msg);
  bool Running() const { return (st.control & SVMDEV_CTRL_ENABLE) && !st.halted; }
  void FlushCompletions();
  void FlushFaults();
  void Complete(const svmdev_cpl& cpl, bool irq);

  // ---- TLB and page-table walk (svmdev_mmu.cc) ----
  void TlbInvalidate(uint16_t ctx, bool all, uint64_t va, uint64_t len);
  void TlbMarkStale(uint16_t ctx, bool all, uint64_t va, uint64_t len);
  void TlbInsert(uint16_t ctx, uint64_t va, uint64_t target, uint64_t pte);
  Xlate Target(const TlbEntry& e, uint64_t va) const;
  Xlate Translate(uint16_t ctx, uint64_t va, uint8_t kind);
  Xlate Walk(uint16_t ctx, uint64_t va, uint8_t kind);

  // ---- memory behind a translation (svmdev_mmu.cc) ----
  bool MemRead(const Xlate& x, void* buf, uint64_t len);
  bool MemWrite(const Xlate& x, const void* buf, uint64_t len);

  // ---- device accesses (svmdev_mmu.cc) ----
  static bool ValidAccess(const Access& a);
  uint32_t DoAccess(uint16_t ctx, const Access& a, uint64_t* value, uint8_t* reason);
  void Finish(const Stalled& s, uint32_t status, uint64_t value);
  uint32_t Run(Stalled s, uint64_t* value, bool complete_now);
  uint32_t NewFaultId();
  void Withdraw(uint32_t fault_id);
  uint64_t Resolve(uint16_t ctx, bool all, uint32_t id, bool replay);

  // ---- invalidations (svmdev_mmu.cc) ----
  void Perform(Held& h);
  void Ack(Held& h);
  void Release(Held& h);
  uint64_t ReleaseAll();
  void TickHeld();
  void Invalidate(Held h);

  // ---- copy engine (svmdev_commands.cc) ----
  uint32_t StartCopy(const svmdev_cmd& c, uint32_t index);
  void StepCopy();

  // ---- commands (svmdev_commands.cc) ----
  uint32_t CheckCtx(uint16_t ctx, bool must_be_live);
  uint64_t CancelCtx(uint16_t ctx);
  uint32_t Execute(const svmdev_cmd& c, uint32_t index, uint64_t* value);
  void CompleteCommand(const svmdev_cpl& cpl, bool irq);
  void ProcessCommands();

  // ---- registers (svmdev_commands.cc) ----
  uint64_t* Reg64(uint64_t off);
  uint32_t Status() const;
  bool Read32(uint64_t off, uint32_t* v);
  uint64_t MmioRead(uint64_t off, unsigned size);
  bool RingRegWritable();
  void SetIndex(Ring& r, uint32_t v, uint32_t* field);
  void Enable(bool on);
  void Restart();
  void Write32(uint64_t off, uint32_t v);
  static bool IsRingBase(uint64_t off);
  void MmioWrite(uint64_t off, uint64_t v, unsigned size);
  void Reset();

  // ---- host control channel (svmdev_host_channel.cc) ----
  void Reply(uint8_t type, uint32_t tag, uint32_t status, uint64_t value, uint32_t fault_id);
  static bool Zero(const uint8_t* p, size_t n);
  void CtlAccess(uint32_t tag, const svmdev_ctl_access& q);
  void CtlStorm(uint32_t tag, const svmdev_ctl_storm& q);
  void CtlTlb(uint32_t tag);
  void CtlMessage(const svmdev_ctl_hdr& h, const uint8_t* p);
  void CtlInput(const uint8_t* buf, size_t len);
};

#endif  // SVMDEV_CORE_STATE_H

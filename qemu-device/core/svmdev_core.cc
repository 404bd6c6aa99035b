// svmdev core: registers, rings, commands, the device MMU with its TLB,
// replayable faults, the copy engine, atomics, VRAM, the host control channel
// and snapshots, behind the C ABI of svmdev_core.h. docs/device-spec.md is the
// contract. Every value read from the guest (registers, rings, page tables) or
// from the host channel is checked before use: the device refuses, it never
// aborts.
#include "svmdev/svmdev_core.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "svmdev/svmdev_hw.h"

// Records go to guest memory as they lie in host memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian hosts only");

namespace {

constexpr unsigned kTlbEntries = 64;
constexpr unsigned kMaxStalled = 256;
constexpr unsigned kMaxHeld = 64;  // invalidations held back by the host channel
// Completions queued while the ring is full: one command's own, the accesses
// a FAULT_REPLAY/CANCEL finished, and the held invalidations it or a RELEASE
// let go. Commands run only with none queued, so queued completions plus the
// held ones still to come never exceed this.
constexpr unsigned kMaxCpls = kMaxStalled + kMaxHeld + 2;
// Work of one slice: what one register write or host message does at most.
constexpr uint32_t kSliceCommands = 256;
constexpr uint32_t kSliceCopyBytes = 4u << 20;
constexpr uint32_t kDefaultContexts = 16;
constexpr uint32_t kMaxContexts = 4096;
constexpr uint64_t kVaLimit = 1ull << SVMDEV_VA_BITS;
constexpr uint64_t kBounce = 4096;
constexpr uint32_t kCaps = SVMDEV_CAP_HUGE_2M | SVMDEV_CAP_ATOMICS | SVMDEV_CAP_VRAM |
                           SVMDEV_CAP_REPLAY;
constexpr uint32_t kStatusFault = 0xffffffffu;  // internal: the access must stall
constexpr uint32_t kEventsAll = SVMDEV_EVT_FAULT | SVMDEV_EVT_INVALIDATE | SVMDEV_EVT_STALE |
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

bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a <= b + (blen - 1) && b <= a + (alen - 1);
}

// The arguments of a COPY; *bad is the address behind a refusal.
uint32_t CheckCopy(uint64_t vram_size, uint64_t src, bool src_vram, uint64_t dst, bool dst_vram,
                   uint64_t len, uint64_t* bad) {
  if (len == 0 || len > SVMDEV_COPY_MAX) {
    *bad = len;
    return SVMDEV_STATUS_BAD_ARG;
  }
  if ((!src_vram && src > UINT64_MAX - len) || (!dst_vram && dst > UINT64_MAX - len)) {
    *bad = src_vram ? dst : src;
    return SVMDEV_STATUS_BAD_ARG;
  }
  for (auto [in_vram, off] : {std::pair{src_vram, src}, std::pair{dst_vram, dst}}) {
    if (in_vram && (off > vram_size || vram_size - off < len)) {
      *bad = off;
      return SVMDEV_STATUS_BAD_VRAM;
    }
  }
  return SVMDEV_STATUS_OK;
}

uint8_t PermFor(uint8_t kind) {
  switch (kind) {
    case SVMDEV_ACC_READ: return SVMDEV_PTE_READ;
    case SVMDEV_ACC_WRITE: return SVMDEV_PTE_WRITE;
    default: return SVMDEV_PTE_ATOMIC;
  }
}

}  // namespace

struct svmdev_core {
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

  // ---- host services ----
  void GuestError(const char* msg) const {
    if (ops.guest_error) ops.guest_error(ops.opaque, msg);
  }
  bool InjectedDmaFailure() {
    if (st.dma_skip > 0) {
      st.dma_skip--;
      return false;
    }
    if (st.dma_fail > 0) {
      st.dma_fail--;
      return true;
    }
    return false;
  }
  bool DmaRead(uint64_t addr, void* buf, uint64_t len) {
    if (InjectedDmaFailure() || ops.dma_read(ops.opaque, addr, buf, len) != 0) {
      st.counters[SVMDEV_CNT_DMA_ERRORS]++;
      err_addr = addr;
      return false;
    }
    return true;
  }
  bool DmaWrite(uint64_t addr, const void* buf, uint64_t len) {
    if (InjectedDmaFailure() || ops.dma_write(ops.opaque, addr, buf, len) != 0) {
      st.counters[SVMDEV_CNT_DMA_ERRORS]++;
      err_addr = addr;
      return false;
    }
    return true;
  }
  void Raise(unsigned vec) {
    uint32_t bit = 1u << vec;
    st.irq_status |= bit;
    if (!(st.irq_mask & bit)) ops.raise_irq(ops.opaque, vec);
  }

  // ---- host channel output ----
  void Send(uint8_t type, uint32_t tag, const void* payload, uint16_t len) {
    if (!ops.ctl_send) return;
    uint8_t msg[sizeof(svmdev_ctl_hdr) + SVMDEV_CTL_MAX_PAYLOAD];
    svmdev_ctl_hdr h{SVMDEV_CTL_MAGIC, type, len, tag};
    std::memcpy(msg, &h, sizeof(h));
    if (len) std::memcpy(msg + sizeof(h), payload, len);
    ops.ctl_send(ops.opaque, msg, sizeof(h) + len);
  }
  void Event(uint32_t kind, uint16_t ctx, uint64_t va, uint64_t arg, uint32_t code,
             uint8_t access, uint8_t reason, uint32_t tag) {
    st.event_count++;
    if (!(st.event_mask & kind) || !ops.ctl_send) return;
    svmdev_ctl_event e{};
    bool det = (cfg.flags & SVMDEV_CORE_DETERMINISTIC) || !ops.now_ns;
    e.stamp = det ? st.event_count : ops.now_ns(ops.opaque);
    e.va = va;
    e.arg = arg;
    e.kind = kind;
    e.code = code;
    e.ctx = ctx;
    e.access = access;
    e.reason = reason;
    e.tag = tag;
    Send(SVMDEV_CTL_EVENT, 0, &e, sizeof(e));
  }

  void Error(uint32_t status, uint64_t addr, const char* msg) {
    st.error_code = status;
    st.error_addr = addr;
    st.counters[SVMDEV_CNT_ERRORS]++;
    GuestError(msg);
    Event(SVMDEV_EVT_ERROR, 0, 0, addr, status, 0, 0, 0);
    Raise(SVMDEV_VEC_ERROR);
  }

  // ---- rings ----
  void Halt(uint64_t addr, const char* msg) {
    st.halted = 1;
    Error(SVMDEV_STATUS_DMA_ERROR, addr, msg);
  }
  bool Running() const { return (st.control & SVMDEV_CTRL_ENABLE) && !st.halted; }

  void FlushCompletions() {
    while (Running() && !st.cpls.empty() && !st.cplq.Full()) {
      // A copy: nothing of the queue is referenced while the DMA runs.
      const Pending p = st.cpls.front();
      uint64_t addr = st.cplq.base + uint64_t{st.cplq.tail} * sizeof(svmdev_cpl);
      if (!DmaWrite(addr, &p.cpl, sizeof(p.cpl))) {
        Halt(addr, "svmdev: completion ring write failed");
        return;
      }
      st.cplq.tail = (st.cplq.tail + 1) % st.cplq.entries;
      st.cpls.pop_front();
      if (p.irq) Raise(SVMDEV_VEC_CMD);
    }
  }
  void FlushFaults() {
    while (Running() && !st.faults.empty() && !st.fltq.Full()) {
      uint64_t addr = st.fltq.base + uint64_t{st.fltq.tail} * sizeof(svmdev_fault);
      const svmdev_fault f = st.faults.front();
      if (!DmaWrite(addr, &f, sizeof(f))) {
        Halt(addr, "svmdev: fault ring write failed");
        return;
      }
      st.fltq.tail = (st.fltq.tail + 1) % st.fltq.entries;
      st.faults.pop_front();
      Raise(SVMDEV_VEC_FAULT);
    }
  }
  void Complete(const svmdev_cpl& cpl, bool irq) {
    st.cpls.push_back(Pending{cpl, irq});
    FlushCompletions();
  }

  // ---- TLB and page-table walk ----
  void TlbInvalidate(uint16_t ctx, bool all, uint64_t va, uint64_t len) {
    for (TlbEntry& e : st.tlb) {
      if (e.valid && e.ctx == ctx && (all || Overlaps(e.va, e.Size(), va, len))) e.valid = 0;
    }
  }
  void TlbMarkStale(uint16_t ctx, bool all, uint64_t va, uint64_t len) {
    for (TlbEntry& e : st.tlb) {
      if (e.valid && e.ctx == ctx && (all || Overlaps(e.va, e.Size(), va, len))) e.stale = 1;
    }
  }
  void TlbInsert(uint16_t ctx, uint64_t va, uint64_t target, uint64_t pte) {
    TlbEntry& e = st.tlb[st.tlb_next];
    st.tlb_next = (st.tlb_next + 1) % kTlbEntries;
    e = TlbEntry{va, target, pte, ctx, 1, 0};
  }
  Xlate Target(const TlbEntry& e, uint64_t va) const {
    Xlate x;
    x.vram = (e.pte & SVMDEV_PTE_VRAM) != 0;
    x.addr = e.target + (va - e.va);
    return x;
  }

  Xlate Translate(uint16_t ctx, uint64_t va, uint8_t kind) {
    uint64_t need = PermFor(kind);
    for (TlbEntry& e : st.tlb) {
      if (!e.valid || e.ctx != ctx || va < e.va || va - e.va >= e.Size()) continue;
      if (!(e.pte & need)) {
        e.valid = 0;  // maybe upgraded since: walk again before faulting
        break;
      }
      st.counters[SVMDEV_CNT_TLB_HITS]++;
      if (e.stale) {
        st.counters[SVMDEV_CNT_STALE]++;
        Event(SVMDEV_EVT_STALE, ctx, va, e.target, 0, kind, 0, 0);
      }
      return Target(e, va);
    }
    st.counters[SVMDEV_CNT_TLB_MISSES]++;
    return Walk(ctx, va, kind);
  }

  Xlate Walk(uint16_t ctx, uint64_t va, uint8_t kind) {
    st.counters[SVMDEV_CNT_WALKS]++;
    Xlate x;
    uint64_t table = st.ctx[ctx].root;
    for (int level = SVMDEV_PT_LEVELS - 1; level >= 0; level--) {
      uint64_t pte_addr = table + 8 * SVMDEV_PT_INDEX(va, static_cast<unsigned>(level));
      uint64_t pte = 0;
      if (!DmaRead(pte_addr, &pte, sizeof(pte))) {
        x.status = SVMDEV_STATUS_DMA_ERROR;
        return x;
      }
      if (!(pte & SVMDEV_PTE_VALID)) {
        x.status = kStatusFault;
        x.reason = SVMDEV_FAULT_NOT_PRESENT;
        return x;
      }
      err_addr = pte_addr;
      if (pte & SVMDEV_PTE_RSVD_MASK) {
        x.status = SVMDEV_STATUS_BAD_PTE;
        return x;
      }
      bool leaf = level == 0 || (level == 1 && (pte & SVMDEV_PTE_HUGE));
      uint64_t addr = pte & SVMDEV_PTE_ADDR_MASK;
      if (!leaf) {
        if (pte & (SVMDEV_PTE_READ | SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC | SVMDEV_PTE_VRAM |
                   SVMDEV_PTE_HUGE)) {
          x.status = SVMDEV_STATUS_BAD_PTE;
          return x;
        }
        table = addr;
        continue;
      }
      uint64_t size = level == 1 ? SVMDEV_HUGE_SIZE : SVMDEV_PAGE_SIZE;
      if ((level == 0 && (pte & SVMDEV_PTE_HUGE)) || addr % size != 0) {
        x.status = SVMDEV_STATUS_BAD_PTE;
        return x;
      }
      if ((pte & SVMDEV_PTE_VRAM) && (addr > cfg.vram_size || cfg.vram_size - addr < size)) {
        err_addr = addr;
        x.status = SVMDEV_STATUS_BAD_VRAM;
        return x;
      }
      if (!(pte & PermFor(kind))) {
        x.status = kStatusFault;
        x.reason = SVMDEV_FAULT_PERM;
        return x;
      }
      uint64_t base = va & ~(size - 1);
      TlbInsert(ctx, base, addr, pte);
      return Target(st.tlb[(st.tlb_next + kTlbEntries - 1) % kTlbEntries], va);
    }
    x.status = SVMDEV_STATUS_BAD_PTE;  // not reached: level 0 is always a leaf
    return x;
  }

  // ---- memory behind a translation ----
  bool MemRead(const Xlate& x, void* buf, uint64_t len) {
    if (x.vram) {
      std::memcpy(buf, vram + x.addr, len);  // the walk checked the page is in VRAM
      return true;
    }
    return DmaRead(x.addr, buf, len);
  }
  bool MemWrite(const Xlate& x, const void* buf, uint64_t len) {
    if (x.vram) {
      std::memcpy(vram + x.addr, buf, len);
      return true;
    }
    return DmaWrite(x.addr, buf, len);
  }

  // ---- device accesses ----
  static bool ValidAccess(const Access& a) {
    if (a.va >= kVaLimit) return false;
    switch (a.kind) {
      case SVMDEV_ACC_READ:
      case SVMDEV_ACC_WRITE:
        if (a.use_buf) {
          if (a.size < 1 || a.size > SVMDEV_PAGE_SIZE || a.buf > UINT64_MAX - a.size) return false;
        } else if (a.size != 1 && a.size != 2 && a.size != 4 && a.size != 8) {
          return false;
        }
        break;
      case SVMDEV_ACC_ATOMIC:
        if (a.use_buf || (a.size != 4 && a.size != 8) || a.va % a.size != 0 ||
            a.aop > SVMDEV_AOP_AND)
          return false;
        break;
      default:
        return false;
    }
    return (a.va % SVMDEV_PAGE_SIZE) + a.size <= SVMDEV_PAGE_SIZE;
  }

  // Performs an access; kStatusFault means it must stall (x.reason says why).
  uint32_t DoAccess(uint16_t ctx, const Access& a, uint64_t* value, uint8_t* reason) {
    Xlate x = Translate(ctx, a.va, a.kind);
    if (x.status == kStatusFault) *reason = x.reason;
    if (x.status != SVMDEV_STATUS_OK) return x.status;
    *value = 0;
    if (a.probe) return SVMDEV_STATUS_OK;
    if (a.use_buf) {
      uint8_t data[SVMDEV_PAGE_SIZE];
      bool ok = a.kind == SVMDEV_ACC_READ
                    ? MemRead(x, data, a.size) && DmaWrite(a.buf, data, a.size)
                    : DmaRead(a.buf, data, a.size) && MemWrite(x, data, a.size);
      if (!ok) return SVMDEV_STATUS_DMA_ERROR;
    } else if (a.kind == SVMDEV_ACC_READ) {
      if (!MemRead(x, value, a.size)) return SVMDEV_STATUS_DMA_ERROR;
    } else if (a.kind == SVMDEV_ACC_WRITE) {
      if (!MemWrite(x, &a.value, a.size)) return SVMDEV_STATUS_DMA_ERROR;
    } else {
      uint64_t old = 0;
      if (!MemRead(x, &old, a.size)) return SVMDEV_STATUS_DMA_ERROR;
      uint64_t mask = a.size == 8 ? ~0ull : 0xffffffffull;
      uint64_t nv = old;
      switch (a.aop) {
        case SVMDEV_AOP_ADD: nv = (old + a.value) & mask; break;
        case SVMDEV_AOP_XCHG: nv = a.value & mask; break;
        case SVMDEV_AOP_CMPXCHG: nv = old == (a.compare & mask) ? a.value & mask : old; break;
        case SVMDEV_AOP_OR: nv = old | (a.value & mask); break;
        default: nv = old & a.value; break;
      }
      if (!MemWrite(x, &nv, a.size)) return SVMDEV_STATUS_DMA_ERROR;
      *value = old;
    }
    st.counters[SVMDEV_CNT_ACCESSES]++;
    return SVMDEV_STATUS_OK;
  }

  void Finish(const Stalled& s, uint32_t status, uint64_t value) {
    if (status != SVMDEV_STATUS_OK && status != SVMDEV_STATUS_CANCELLED)
      Error(status, err_addr, "svmdev: device access failed");
    if (s.origin == kFromHost) {
      Event(SVMDEV_EVT_ACCESS_DONE, s.ctx, s.acc.va, value, status, s.acc.kind, 0,
            static_cast<uint32_t>(s.seq));
      return;
    }
    svmdev_cpl c{};
    c.seq = s.seq;
    c.value = value;
    c.status = status;
    c.ctx = s.ctx;
    c.opcode = SVMDEV_OP_ACCESS;
    c.cmd_index = s.cmd_index;
    c.aux = s.fault_id;
    Complete(c, s.cmd_flags & SVMDEV_CMD_F_IRQ);
  }

  // Runs an access to its end or stalls it. Returns the status; a stalled
  // access returns kStatusFault and its id in s.fault_id, and completes later.
  uint32_t Run(Stalled s, uint64_t* value, bool complete_now) {
    uint8_t reason = 0;
    uint32_t status = DoAccess(s.ctx, s.acc, value, &reason);
    if (status == kStatusFault) {
      if (st.stalled.size() >= kMaxStalled) {
        status = SVMDEV_STATUS_STALL_LIMIT;
        err_addr = s.acc.va;
      } else {
        s.fault_id = NewFaultId();
        svmdev_fault f{};
        f.va = s.acc.va & ~(SVMDEV_PAGE_SIZE - 1);
        f.seq = s.seq;
        f.fault_id = s.fault_id;
        f.ctx = s.ctx;
        f.access = s.acc.kind;
        f.reason = reason;
        f.flags = s.origin == kFromHost ? SVMDEV_FAULT_F_HOST : 0;
        st.stalled.push_back(s);
        st.faults.push_back(f);
        st.counters[SVMDEV_CNT_FAULTS]++;
        Event(SVMDEV_EVT_FAULT, s.ctx, f.va, 0, f.fault_id, f.access, reason, 0);
        FlushFaults();
        *value = s.fault_id;
        return kStatusFault;
      }
    }
    if (complete_now) Finish(s, status, *value);
    return status;
  }

  // Never 0, and unique among the stalled accesses even after the counter
  // wraps, so that a fault id names one access and one record.
  uint32_t NewFaultId() {
    for (;;) {
      uint32_t id = st.next_fault_id++;
      if (st.next_fault_id == 0) st.next_fault_id = 1;
      if (std::none_of(st.stalled.begin(), st.stalled.end(),
                       [id](const Stalled& s) { return s.fault_id == id; }))
        return id;
    }
  }
  // A record still waiting for ring space leaves with its access: the queue
  // holds at most one record per stalled access.
  void Withdraw(uint32_t fault_id) {
    auto it = std::find_if(st.faults.begin(), st.faults.end(),
                           [fault_id](const svmdev_fault& f) { return f.fault_id == fault_id; });
    if (it != st.faults.end()) st.faults.erase(it);
  }

  // Replays (or cancels) the stalled accesses of ctx that match.
  uint64_t Resolve(uint16_t ctx, bool all, uint32_t id, bool replay) {
    std::vector<Stalled> picked;
    for (size_t i = 0; i < st.stalled.size();) {
      const Stalled& s = st.stalled[i];
      if (s.ctx == ctx && (all || s.fault_id == id)) {
        Withdraw(s.fault_id);
        picked.push_back(s);
        st.stalled.erase(st.stalled.begin() + static_cast<long>(i));
      } else {
        i++;
      }
    }
    for (const Stalled& s : picked) {
      uint64_t value = 0;
      if (replay) {
        st.counters[SVMDEV_CNT_REPLAYS]++;
        Run(s, &value, true);
      } else {
        st.counters[SVMDEV_CNT_CANCELS]++;
        Finish(s, SVMDEV_STATUS_CANCELLED, 0);
      }
    }
    return picked.size();
  }

  // ---- invalidations ----
  void Perform(Held& h) {
    TlbInvalidate(h.ctx, h.len == 0, h.va, h.len);
    h.performed = 1;
    st.counters[SVMDEV_CNT_INVALIDATIONS]++;
    Event(SVMDEV_EVT_INVALIDATE, h.ctx, h.va, h.len, 0, 0, 0, 0);
  }
  void Ack(Held& h) {
    h.acked = 1;
    if (h.drop_ack) return;
    // An acknowledgement that precedes the invalidation leaves stale entries.
    if (!h.performed) TlbMarkStale(h.ctx, h.len == 0, h.va, h.len);
    Complete(h.cpl.cpl, h.cpl.irq);
  }
  void Release(Held& h) {
    if (!h.performed) Perform(h);
    if (!h.acked) Ack(h);
  }
  uint64_t ReleaseAll() {
    std::vector<Held> held;
    held.swap(st.held);
    for (Held& h : held) Release(h);
    return held.size();
  }
  void TickHeld() {
    std::vector<Held> due;
    for (size_t i = 0; i < st.held.size();) {
      Held& h = st.held[i];
      if (h.commands_left > 0 && --h.commands_left == 0) {
        due.push_back(h);
        st.held.erase(st.held.begin() + static_cast<long>(i));
      } else {
        i++;
      }
    }
    for (Held& h : due) Release(h);
  }
  void Invalidate(Held h) {
    uint32_t mode = st.inval_count > 0 ? st.inval_mode : SVMDEV_INVAL_NORMAL;
    if (st.inval_count > 0) st.inval_count--;
    if (mode == SVMDEV_INVAL_DROP) h.drop_ack = 1;
    bool hold = (mode == SVMDEV_INVAL_DELAY || mode == SVMDEV_INVAL_EARLY_ACK) &&
                st.held.size() < kMaxHeld;
    if (!hold) {
      Release(h);
      return;
    }
    // The INVALIDATE's own command is counted by the tick that follows it.
    h.commands_left = st.inval_commands == 0 || st.inval_commands == UINT32_MAX
                          ? st.inval_commands
                          : st.inval_commands + 1;
    if (mode == SVMDEV_INVAL_EARLY_ACK) Ack(h);
    st.held.push_back(h);
  }

  // ---- copy engine ----
  // Checks a COPY and starts it; it completes from Work, slice by slice.
  uint32_t StartCopy(const svmdev_cmd& c, uint32_t index) {
    uint32_t status = CheckCopy(cfg.vram_size, c.arg[0], c.flags & SVMDEV_COPY_F_SRC_VRAM, c.arg[1],
                                c.flags & SVMDEV_COPY_F_DST_VRAM, c.arg[2], &err_addr);
    if (status != SVMDEV_STATUS_OK) return status;
    st.copy = CopyJob{c.seq, c.arg[0], c.arg[1], c.arg[2], 0, index, c.ctx, c.flags, 1};
    return kStatusFault;  // completes when the last byte is moved
  }

  // Moves what the slice allows of the COPY in progress.
  void StepCopy() {
    CopyJob& j = st.copy;
    bool sv = j.flags & SVMDEV_COPY_F_SRC_VRAM, dv = j.flags & SVMDEV_COPY_F_DST_VRAM;
    uint64_t n = std::min(j.len - j.done, slice_bytes);
    slice_bytes -= n;
    // Overlapping VRAM ranges copy as memmove: back to front when the
    // destination is above the source.
    uint64_t at = sv && dv && j.dst > j.src ? j.len - j.done - n : j.done;
    bool ok = true;
    if (sv && dv) {
      std::memmove(vram + j.dst + at, vram + j.src + at, n);
    } else if (sv) {
      ok = DmaWrite(j.dst + at, vram + j.src + at, n);
    } else if (dv) {
      ok = DmaRead(j.src + at, vram + j.dst + at, n);
    } else {
      uint8_t bounce[kBounce];
      for (uint64_t k = 0; ok && k < n; k += kBounce) {
        uint64_t m = std::min(kBounce, n - k);
        ok = DmaRead(j.src + at + k, bounce, m) && DmaWrite(j.dst + at + k, bounce, m);
      }
    }
    j.done += n;
    if (ok && j.done < j.len) return;
    CopyJob done = j;
    st.copy = CopyJob{};
    if (ok) st.counters[SVMDEV_CNT_COPY_BYTES] += done.len;
    uint32_t status = ok ? SVMDEV_STATUS_OK : SVMDEV_STATUS_DMA_ERROR;
    CompleteCommand(
        svmdev_cpl{done.seq, ok ? done.len : 0, status, done.ctx, SVMDEV_OP_COPY, 0, done.index, 0},
        done.flags & SVMDEV_CMD_F_IRQ);
  }

  // ---- commands ----
  uint32_t CheckCtx(uint16_t ctx, bool must_be_live) {
    err_addr = ctx;
    if (ctx >= st.ctx.size()) return SVMDEV_STATUS_BAD_CTX;
    if (must_be_live && !st.ctx[ctx].live) return SVMDEV_STATUS_CTX_DISABLED;
    return SVMDEV_STATUS_OK;
  }

  uint64_t CancelCtx(uint16_t ctx) {
    TlbInvalidate(ctx, true, 0, 0);
    st.ctx[ctx] = Ctx{};
    return Resolve(ctx, true, 0, false);
  }

  // Returns the completion status, or kStatusFault when the command completes
  // later (a stalled ACCESS, an INVALIDATE, a COPY).
  uint32_t Execute(const svmdev_cmd& c, uint32_t index, uint64_t* value) {
    *value = 0;
    err_addr = 0;
    if (c.rsvd != 0) return SVMDEV_STATUS_BAD_ARG;
    uint32_t s;
    switch (c.opcode) {
      case SVMDEV_OP_NOP:
        return SVMDEV_STATUS_OK;
      case SVMDEV_OP_CTX_SETUP:
        if ((s = CheckCtx(c.ctx, false)) != SVMDEV_STATUS_OK) return s;
        if (c.arg[0] == 0 || (c.arg[0] & ~SVMDEV_PTE_ADDR_MASK) != 0) {
          err_addr = c.arg[0];
          return SVMDEV_STATUS_BAD_ARG;
        }
        TlbInvalidate(c.ctx, true, 0, 0);
        st.ctx[c.ctx] = Ctx{c.arg[0], 1};
        return SVMDEV_STATUS_OK;
      case SVMDEV_OP_CTX_DESTROY:
        if ((s = CheckCtx(c.ctx, true)) != SVMDEV_STATUS_OK) return s;
        *value = CancelCtx(c.ctx);
        return SVMDEV_STATUS_OK;
      case SVMDEV_OP_INVALIDATE: {
        if ((s = CheckCtx(c.ctx, true)) != SVMDEV_STATUS_OK) return s;
        bool all = c.flags & SVMDEV_INV_F_ALL;
        if (!all && (c.arg[1] == 0 || c.arg[1] - 1 > UINT64_MAX - c.arg[0])) {
          err_addr = c.arg[0];
          return SVMDEV_STATUS_BAD_ARG;
        }
        Held h;
        h.ctx = c.ctx;
        h.va = all ? 0 : c.arg[0];
        h.len = all ? 0 : c.arg[1];
        h.cpl.cpl = svmdev_cpl{c.seq, 0, SVMDEV_STATUS_OK, c.ctx, c.opcode, 0, index, 0};
        h.cpl.irq = c.flags & SVMDEV_CMD_F_IRQ;
        Invalidate(h);
        return kStatusFault;  // completes through Ack
      }
      case SVMDEV_OP_COPY:
        return StartCopy(c, index);
      case SVMDEV_OP_ACCESS: {
        if ((s = CheckCtx(c.ctx, true)) != SVMDEV_STATUS_OK) return s;
        Stalled a;
        a.seq = c.seq;
        a.cmd_index = index;
        a.ctx = c.ctx;
        a.origin = kFromCommand;
        a.cmd_flags = c.flags;
        a.acc.va = c.arg[0];
        a.acc.kind = SVMDEV_ACC_KIND(c.arg[1]);
        a.acc.size = SVMDEV_ACC_SIZE(c.arg[1]);
        a.acc.aop = SVMDEV_ACC_AOP(c.arg[1]);
        a.acc.value = c.arg[2];
        a.acc.compare = c.arg[3];
        a.acc.buf = c.arg[4];
        a.acc.use_buf = (c.flags & SVMDEV_ACC_F_BUF) != 0;
        if (c.arg[1] != SVMDEV_ACC_ARG1(a.acc.kind, a.acc.size, a.acc.aop) ||
            !ValidAccess(a.acc)) {
          err_addr = c.arg[0];
          return SVMDEV_STATUS_BAD_ARG;
        }
        return Run(a, value, false);
      }
      case SVMDEV_OP_FAULT_REPLAY:
      case SVMDEV_OP_FAULT_CANCEL: {
        if ((s = CheckCtx(c.ctx, true)) != SVMDEV_STATUS_OK) return s;
        bool all = c.flags & SVMDEV_FLT_F_ALL;
        if (!all && (c.arg[0] == 0 || c.arg[0] > UINT32_MAX)) {
          err_addr = c.arg[0];
          return SVMDEV_STATUS_NO_FAULT;
        }
        // The stalled accesses complete before the command itself.
        *value = Resolve(c.ctx, all, static_cast<uint32_t>(c.arg[0]),
                         c.opcode == SVMDEV_OP_FAULT_REPLAY);
        // Each replayed access counts as a command against the slice.
        slice_cmds -= static_cast<uint32_t>(std::min<uint64_t>(*value, slice_cmds));
        if (!all && *value == 0) {
          err_addr = c.arg[0];
          return SVMDEV_STATUS_NO_FAULT;
        }
        return SVMDEV_STATUS_OK;
      }
      case SVMDEV_OP_RESET:
        for (uint16_t i = 0; i < st.ctx.size(); i++) *value += CancelCtx(i);
        return SVMDEV_STATUS_OK;
      default:
        err_addr = c.opcode;
        return SVMDEV_STATUS_BAD_OPCODE;
    }
  }

  void CompleteCommand(const svmdev_cpl& cpl, bool irq) {
    if (cpl.status != SVMDEV_STATUS_OK) Error(cpl.status, err_addr, "svmdev: command failed");
    Complete(cpl, irq);
  }

  // A register write or host message starts a slice of work; what does not
  // fit continues from the host's schedule callback.
  void ProcessCommands() {
    // Without a schedule callback nobody would continue: do it all now.
    bool bounded = ops.schedule != nullptr;
    slice_cmds = bounded ? cfg.slice_commands : UINT32_MAX;
    slice_bytes = bounded ? cfg.slice_copy_bytes : UINT64_MAX;
    FlushCompletions();
    FlushFaults();
    while (Running() && st.cpls.empty()) {
      if (st.copy.active ? slice_bytes == 0 : !st.cmdq.Empty() && slice_cmds == 0) {
        ops.schedule(ops.opaque);
        return;
      }
      if (st.copy.active) {
        StepCopy();
        continue;
      }
      if (st.cmdq.Empty()) return;
      slice_cmds--;
      uint32_t index = st.cmdq.head;
      uint64_t addr = st.cmdq.base + uint64_t{index} * sizeof(svmdev_cmd);
      svmdev_cmd c;
      if (!DmaRead(addr, &c, sizeof(c))) {
        Halt(addr, "svmdev: command ring read failed");
        return;
      }
      st.cmdq.head = (index + 1) % st.cmdq.entries;
      st.counters[SVMDEV_CNT_CMDS]++;
      uint64_t value = 0;
      uint32_t status = Execute(c, index, &value);
      if (status != kStatusFault)
        CompleteCommand(svmdev_cpl{c.seq, value, status, c.ctx, c.opcode, 0, index, 0},
                        c.flags & SVMDEV_CMD_F_IRQ);
      TickHeld();
    }
  }

  // ---- registers ----
  uint64_t* Reg64(uint64_t off) {
    switch (off) {
      case SVMDEV_REG_ERROR_ADDR: return &st.error_addr;
      case SVMDEV_REG_CMDQ_BASE: return &st.cmdq.base;
      case SVMDEV_REG_CPLQ_BASE: return &st.cplq.base;
      case SVMDEV_REG_FLTQ_BASE: return &st.fltq.base;
      case SVMDEV_REG_VRAM_SIZE: return &cfg.vram_size;
    }
    if (off >= SVMDEV_REG_COUNTERS && off < SVMDEV_REG_COUNTER(SVMDEV_NUM_COUNTERS) && off % 8 == 0)
      return &st.counters[(off - SVMDEV_REG_COUNTERS) / 8];
    return nullptr;
  }
  uint32_t Status() const {
    uint32_t v = 0;
    if (st.control & SVMDEV_CTRL_ENABLE) v |= SVMDEV_STS_ENABLED;
    if (st.halted) v |= SVMDEV_STS_HALTED;
    if (!st.cpls.empty()) v |= SVMDEV_STS_CPLQ_FULL;
    if (!st.faults.empty()) v |= SVMDEV_STS_FLTQ_FULL;
    return v;
  }
  bool Read32(uint64_t off, uint32_t* v) {
    switch (off) {
      case SVMDEV_REG_ID: *v = SVMDEV_ID_MAGIC; return true;
      case SVMDEV_REG_VERSION: *v = SVMDEV_VERSION; return true;
      case SVMDEV_REG_CAPS: *v = kCaps; return true;
      case SVMDEV_REG_NUM_CTX: *v = static_cast<uint32_t>(st.ctx.size()); return true;
      case SVMDEV_REG_CONTROL: *v = st.control; return true;
      case SVMDEV_REG_STATUS: *v = Status(); return true;
      case SVMDEV_REG_IRQ_STATUS: *v = st.irq_status; return true;
      case SVMDEV_REG_IRQ_MASK: *v = st.irq_mask; return true;
      case SVMDEV_REG_ERROR_CODE: *v = st.error_code; return true;
      case SVMDEV_REG_MAX_STALLED: *v = kMaxStalled; return true;
      case SVMDEV_REG_CMDQ_ENTRIES: *v = st.cmdq.entries; return true;
      case SVMDEV_REG_CMDQ_HEAD: *v = st.cmdq.head; return true;
      case SVMDEV_REG_CMDQ_TAIL: *v = st.cmdq.tail; return true;
      case SVMDEV_REG_CPLQ_ENTRIES: *v = st.cplq.entries; return true;
      case SVMDEV_REG_CPLQ_HEAD: *v = st.cplq.head; return true;
      case SVMDEV_REG_CPLQ_TAIL: *v = st.cplq.tail; return true;
      case SVMDEV_REG_FLTQ_ENTRIES: *v = st.fltq.entries; return true;
      case SVMDEV_REG_FLTQ_HEAD: *v = st.fltq.head; return true;
      case SVMDEV_REG_FLTQ_TAIL: *v = st.fltq.tail; return true;
    }
    if (off % 4 != 0) return false;
    if (uint64_t* r = Reg64(off)) {
      *v = static_cast<uint32_t>(*r);
      return true;
    }
    if (off >= 4 && off % 8 == 4) {
      if (uint64_t* r = Reg64(off - 4)) {
        *v = static_cast<uint32_t>(*r >> 32);
        return true;
      }
    }
    return false;
  }

  uint64_t MmioRead(uint64_t off, unsigned size) {
    if (size == 8) {
      if (const uint64_t* r = Reg64(off)) return *r;
    } else if (size == 4) {
      uint32_t v;
      if (Read32(off, &v)) return v;
    }
    GuestError("svmdev: read of an unknown register or with a bad width");
    return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
  }

  bool RingRegWritable() {
    if (!(st.control & SVMDEV_CTRL_ENABLE)) return true;
    Error(SVMDEV_STATUS_BAD_RING, 0, "svmdev: ring register written while enabled");
    return false;
  }
  void SetIndex(Ring& r, uint32_t v, uint32_t* field) {
    if (!(st.control & SVMDEV_CTRL_ENABLE) || v >= r.entries) {
      Error(SVMDEV_STATUS_BAD_RING, v, "svmdev: ring index out of range or device disabled");
      return;
    }
    *field = v;
  }
  void Enable(bool on) {
    if (!on) {
      st.control &= ~SVMDEV_CTRL_ENABLE;
      return;
    }
    if (st.control & SVMDEV_CTRL_ENABLE) return;
    for (Ring* r : {&st.cmdq, &st.cplq, &st.fltq}) r->head = r->tail = 0;
    if (!st.cmdq.Usable(sizeof(svmdev_cmd)) || !st.cplq.Usable(sizeof(svmdev_cpl)) ||
        !st.fltq.Usable(sizeof(svmdev_fault))) {
      Error(SVMDEV_STATUS_BAD_RING, st.cmdq.base, "svmdev: enable with unusable rings");
      return;
    }
    Restart();
    st.halted = 0;
    st.control |= SVMDEV_CTRL_ENABLE;
    ProcessCommands();
  }
  // A ring restart starts with no outstanding work and no cached translation:
  // the driver has aborted everything it had in flight (and may have freed the
  // pages behind it), so nothing may complete, be replayed or use an old entry.
  // Contexts stay: their page tables in guest memory are authoritative. The
  // invalidation faults the host asked for end with the ring life they were
  // asked in: a restarted device starts clean, so one fault costs the driver
  // one fence timeout, not one for every acknowledgement the host named.
  void Restart() {
    st.inval_count = 0;
    for (TlbEntry& e : st.tlb) e = TlbEntry{};
    st.tlb_next = 0;
    std::vector<Stalled> stalled;
    stalled.swap(st.stalled);
    st.cpls.clear();
    st.faults.clear();
    st.held.clear();
    st.copy = CopyJob{};
    for (const Stalled& s : stalled) {
      st.counters[SVMDEV_CNT_CANCELS]++;
      // A host access has no ring to lose: its waiter hears the outcome.
      if (s.origin == kFromHost) Finish(s, SVMDEV_STATUS_CANCELLED, 0);
    }
  }

  void Write32(uint64_t off, uint32_t v) {
    switch (off) {
      case SVMDEV_REG_CONTROL:
        if (v & SVMDEV_CTRL_RESET) {
          Reset();
          return;
        }
        if (v & ~SVMDEV_CTRL_ENABLE) GuestError("svmdev: reserved CONTROL bits set");
        Enable(v & SVMDEV_CTRL_ENABLE);
        return;
      case SVMDEV_REG_IRQ_STATUS:
        st.irq_status &= ~v;
        return;
      case SVMDEV_REG_IRQ_MASK: {
        uint32_t unmasked = st.irq_mask & ~v & SVMDEV_IRQ_ALL;
        st.irq_mask = v & SVMDEV_IRQ_ALL;
        // A cause that arrived while masked is signalled when unmasked.
        for (unsigned vec = 0; vec < SVMDEV_NUM_VECTORS; vec++)
          if (unmasked & st.irq_status & (1u << vec)) ops.raise_irq(ops.opaque, vec);
        return;
      }
      case SVMDEV_REG_ERROR_CODE:
        if (v == st.error_code) st.error_code = 0;
        return;
      case SVMDEV_REG_CMDQ_ENTRIES:
        if (RingRegWritable()) st.cmdq.entries = v;
        return;
      case SVMDEV_REG_CPLQ_ENTRIES:
        if (RingRegWritable()) st.cplq.entries = v;
        return;
      case SVMDEV_REG_FLTQ_ENTRIES:
        if (RingRegWritable()) st.fltq.entries = v;
        return;
      case SVMDEV_REG_CMDQ_TAIL:
        SetIndex(st.cmdq, v, &st.cmdq.tail);
        ProcessCommands();
        return;
      case SVMDEV_REG_CPLQ_HEAD:
        SetIndex(st.cplq, v, &st.cplq.head);
        ProcessCommands();
        return;
      case SVMDEV_REG_FLTQ_HEAD:
        SetIndex(st.fltq, v, &st.fltq.head);
        FlushFaults();
        return;
    }
    bool high = off % 8 == 4;
    uint64_t base = high ? off - 4 : off;
    if (off % 4 == 0 && IsRingBase(base)) {
      uint64_t* r = Reg64(base);
      uint64_t nv = high ? (*r & 0xffffffffull) | uint64_t{v} << 32
                         : (*r & ~0xffffffffull) | v;
      if (RingRegWritable()) *r = nv;
      return;
    }
    GuestError("svmdev: write to a read-only or unknown register");
  }
  static bool IsRingBase(uint64_t off) {
    return off == SVMDEV_REG_CMDQ_BASE || off == SVMDEV_REG_CPLQ_BASE ||
           off == SVMDEV_REG_FLTQ_BASE;
  }

  void MmioWrite(uint64_t off, uint64_t v, unsigned size) {
    if (size == 8 && IsRingBase(off)) {
      if (RingRegWritable()) *Reg64(off) = v;
    } else if (size == 4) {
      Write32(off, static_cast<uint32_t>(v));
    } else {
      GuestError("svmdev: register write with a bad width");
    }
  }

  void Reset() {
    State fresh;
    fresh.ctx.assign(st.ctx.size(), Ctx{});
    fresh.inval_mode = st.inval_mode;
    fresh.inval_count = st.inval_count;
    fresh.inval_commands = st.inval_commands;
    fresh.dma_skip = st.dma_skip;
    fresh.dma_fail = st.dma_fail;
    fresh.event_mask = st.event_mask;
    fresh.event_count = st.event_count;
    st = std::move(fresh);
  }

  // ---- host control channel ----
  void Reply(uint8_t type, uint32_t tag, uint32_t status, uint64_t value, uint32_t fault_id) {
    svmdev_ctl_result r{value, status, fault_id};
    Send(type, tag, &r, sizeof(r));
  }

  static bool Zero(const uint8_t* p, size_t n) {
    return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
  }

  void CtlAccess(uint32_t tag, const svmdev_ctl_access& q) {
    Stalled s;
    s.seq = tag;
    s.ctx = q.ctx;
    s.origin = kFromHost;
    s.acc.va = q.va;
    s.acc.kind = q.kind;
    s.acc.size = q.size;
    s.acc.aop = q.aop;
    s.acc.value = q.value;
    s.acc.compare = q.compare;
    uint32_t status = CheckCtx(q.ctx, true);
    if (status == SVMDEV_STATUS_OK && (!ValidAccess(s.acc) || !Zero(q.rsvd, sizeof(q.rsvd))))
      status = SVMDEV_STATUS_BAD_ARG;
    uint64_t value = 0;
    if (status == SVMDEV_STATUS_OK) status = Run(s, &value, false);
    if (status == kStatusFault) {
      Reply(SVMDEV_CTL_ACCESS | SVMDEV_CTL_REPLY, tag, SVMDEV_STATUS_STALLED, 0,
            static_cast<uint32_t>(value));
      return;
    }
    Reply(SVMDEV_CTL_ACCESS | SVMDEV_CTL_REPLY, tag, status, value, 0);
  }

  void CtlStorm(uint32_t tag, const svmdev_ctl_storm& q) {
    uint32_t status = CheckCtx(q.ctx, true);
    if (status == SVMDEV_STATUS_OK &&
        (q.kind > SVMDEV_ACC_ATOMIC || q.va >= kVaLimit || !Zero(q.rsvd, sizeof(q.rsvd))))
      status = SVMDEV_STATUS_BAD_ARG;
    uint64_t stalled = 0;
    for (uint32_t i = 0; status == SVMDEV_STATUS_OK && i < q.count; i++) {
      // va + i * stride stays below the VA limit, so it cannot wrap.
      if (q.stride != 0 && i > (kVaLimit - 1 - q.va) / q.stride) break;
      Stalled s;
      s.seq = tag;
      s.ctx = q.ctx;
      s.origin = kFromHost;
      s.acc.va = q.va + i * q.stride;
      s.acc.kind = q.kind;
      s.acc.size = 1;
      s.acc.probe = 1;
      if (st.stalled.size() >= kMaxStalled) break;
      uint64_t value = 0;
      if (Run(s, &value, false) == kStatusFault) stalled++;
    }
    Reply(SVMDEV_CTL_FAULT_STORM | SVMDEV_CTL_REPLY, tag, status, stalled, 0);
  }

  void CtlTlb(uint32_t tag) {
    uint8_t out[4 + kTlbEntries * sizeof(svmdev_ctl_tlb_entry)];
    uint32_t n = 0;
    for (const TlbEntry& e : st.tlb) {
      if (!e.valid) continue;
      svmdev_ctl_tlb_entry t{e.va, e.target, e.pte, e.ctx, (e.pte & SVMDEV_PTE_HUGE) ? uint8_t{1} : uint8_t{0}, e.stale, 0};
      std::memcpy(out + 4 + n * sizeof(t), &t, sizeof(t));
      n++;
    }
    std::memcpy(out, &n, 4);
    Send(SVMDEV_CTL_TLB | SVMDEV_CTL_REPLY, tag, out,
         static_cast<uint16_t>(4 + n * sizeof(svmdev_ctl_tlb_entry)));
  }

  void CtlMessage(const svmdev_ctl_hdr& h, const uint8_t* p) {
    uint8_t rtype = h.type | SVMDEV_CTL_REPLY;
    auto want = [&](size_t n) {
      if (h.len == n) return true;
      Reply(SVMDEV_CTL_ERROR, h.tag, SVMDEV_STATUS_BAD_ARG, h.len, 0);
      return false;
    };
    switch (h.type) {
      case SVMDEV_CTL_PING: {
        if (!want(0)) return;
        uint32_t r[2] = {SVMDEV_VERSION, Status()};
        Send(rtype, h.tag, r, sizeof(r));
        return;
      }
      case SVMDEV_CTL_ACCESS: {
        svmdev_ctl_access q;
        if (!want(sizeof(q))) return;
        std::memcpy(&q, p, sizeof(q));
        CtlAccess(h.tag, q);
        break;
      }
      case SVMDEV_CTL_FAULT_STORM: {
        svmdev_ctl_storm q;
        if (!want(sizeof(q))) return;
        std::memcpy(&q, p, sizeof(q));
        CtlStorm(h.tag, q);
        break;
      }
      case SVMDEV_CTL_INVAL_MODE: {
        svmdev_ctl_inval_mode q;
        if (!want(sizeof(q))) return;
        std::memcpy(&q, p, sizeof(q));
        if (q.mode > SVMDEV_INVAL_EARLY_ACK || q.rsvd != 0) {
          Reply(rtype, h.tag, SVMDEV_STATUS_BAD_ARG, 0, 0);
          return;
        }
        st.inval_mode = q.mode;
        st.inval_count = q.count;
        st.inval_commands = q.commands;
        Reply(rtype, h.tag, SVMDEV_STATUS_OK, 0, 0);
        return;
      }
      case SVMDEV_CTL_FAIL_DMA: {
        svmdev_ctl_fail_dma q;
        if (!want(sizeof(q))) return;
        std::memcpy(&q, p, sizeof(q));
        st.dma_skip = q.skip;
        st.dma_fail = q.count;
        Reply(rtype, h.tag, SVMDEV_STATUS_OK, 0, 0);
        return;
      }
      case SVMDEV_CTL_COUNTERS:
        if (!want(0)) return;
        Send(rtype, h.tag, st.counters, sizeof(st.counters));
        return;
      case SVMDEV_CTL_TLB:
        if (!want(0)) return;
        CtlTlb(h.tag);
        return;
      case SVMDEV_CTL_EVENTS: {
        uint32_t mask;
        if (!want(sizeof(mask))) return;
        std::memcpy(&mask, p, sizeof(mask));
        if (mask & ~kEventsAll) {
          Reply(rtype, h.tag, SVMDEV_STATUS_BAD_ARG, 0, 0);
          return;
        }
        st.event_mask = mask;
        Reply(rtype, h.tag, SVMDEV_STATUS_OK, 0, 0);
        return;
      }
      case SVMDEV_CTL_RELEASE:
        if (!want(0)) return;
        Reply(rtype, h.tag, SVMDEV_STATUS_OK, ReleaseAll(), 0);
        break;
      default:
        Reply(SVMDEV_CTL_ERROR, h.tag, SVMDEV_STATUS_BAD_OPCODE, h.type, 0);
        return;
    }
    // Host actions may free ring space or complete commands.
    ProcessCommands();
  }

  void CtlInput(const uint8_t* buf, size_t len) {
    ctl_in.insert(ctl_in.end(), buf, buf + len);
    size_t pos = 0;
    while (ctl_in.size() - pos >= sizeof(svmdev_ctl_hdr)) {
      if (ctl_in[pos] != SVMDEV_CTL_MAGIC) {
        pos++;  // resynchronise on the next magic byte
        continue;
      }
      svmdev_ctl_hdr h;
      std::memcpy(&h, &ctl_in[pos], sizeof(h));
      if (h.len > SVMDEV_CTL_MAX_PAYLOAD) {
        Reply(SVMDEV_CTL_ERROR, h.tag, SVMDEV_STATUS_BAD_ARG, h.len, 0);
        pos += sizeof(h);
        continue;
      }
      if (ctl_in.size() - pos - sizeof(h) < h.len) break;
      CtlMessage(h, &ctl_in[pos + sizeof(h)]);
      pos += sizeof(h) + h.len;
    }
    ctl_in.erase(ctl_in.begin(), ctl_in.begin() + static_cast<long>(pos));
  }
};

// ---- snapshots ----
namespace {

// Counts the bytes of a state and, given a buffer, writes them: a save
// serializes twice instead of growing a vector (fuzzers save often).
class Writer {
 public:
  static constexpr bool kLoad = false;
  explicit Writer(uint8_t* out = nullptr) : out_(out) {}
  template <typename T>
  bool operator()(const T& v) {
    if (out_ != nullptr) std::memcpy(out_ + size_, &v, sizeof(T));
    size_ += sizeof(T);
    return true;
  }
  size_t Size() const { return size_; }

 private:
  uint8_t* out_;
  size_t size_ = 0;
};

class Reader {
 public:
  static constexpr bool kLoad = true;
  Reader(const void* buf, size_t len) : p_(static_cast<const uint8_t*>(buf)), left_(len) {}
  template <typename T>
  bool operator()(T& v) {
    if (left_ < sizeof(T)) return false;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    left_ -= sizeof(T);
    return true;
  }
  bool Done() const { return left_ == 0; }

 private:
  const uint8_t* p_;
  size_t left_;
};

constexpr uint32_t kStateMagic = 0x53564d32;  // "SVM2"

// One list of fields per struct, for both directions. Scalars and the
// interface's records (sized without padding) go as they are; the core's own
// structs go field by field, so that no padding byte reaches a snapshot.
template <typename IO, typename T>
std::enable_if_t<std::is_arithmetic_v<T>, bool> Io(IO& io, T& v) {
  return io(v);
}
template <typename IO>
bool Io(IO& io, svmdev_cpl& v) {
  return io(v);
}
template <typename IO>
bool Io(IO& io, svmdev_fault& v) {
  return io(v);
}
template <typename IO>
bool Io(IO& io, Ring& r) {
  return io(r.base) && io(r.entries) && io(r.head) && io(r.tail);
}
template <typename IO>
bool Io(IO& io, Ctx& c) {
  return io(c.root) && io(c.live);
}
template <typename IO>
bool Io(IO& io, TlbEntry& e) {
  return io(e.va) && io(e.target) && io(e.pte) && io(e.ctx) && io(e.valid) && io(e.stale);
}
template <typename IO>
bool Io(IO& io, Access& a) {
  return io(a.va) && io(a.value) && io(a.compare) && io(a.buf) && io(a.size) && io(a.kind) &&
         io(a.aop) && io(a.use_buf) && io(a.probe);
}
template <typename IO>
bool Io(IO& io, Stalled& x) {
  return io(x.seq) && io(x.fault_id) && io(x.cmd_index) && io(x.ctx) && io(x.origin) &&
         io(x.cmd_flags) && Io(io, x.acc);
}
template <typename IO>
bool Io(IO& io, Pending& p) {
  return io(p.cpl) && io(p.irq);
}
template <typename IO>
bool Io(IO& io, Held& h) {
  return io(h.va) && io(h.len) && io(h.commands_left) && io(h.ctx) && io(h.performed) &&
         io(h.acked) && io(h.drop_ack) && Io(io, h.cpl);
}
template <typename IO>
bool Io(IO& io, CopyJob& j) {
  return io(j.seq) && io(j.src) && io(j.dst) && io(j.len) && io(j.done) && io(j.index) &&
         io(j.ctx) && io(j.flags) && io(j.active);
}
template <typename IO, typename C>
bool IoList(IO& io, C& list, uint32_t max) {
  uint32_t n = static_cast<uint32_t>(list.size());
  if (!io(n)) return false;
  if constexpr (IO::kLoad) {
    if (n > max) return false;
    list.resize(n);
  }
  for (auto& x : list)
    if (!Io(io, x)) return false;
  return true;
}

// The whole state; a load fails early on another configuration.
template <typename IO>
bool Io(IO& io, const svmdev_config& cfg, State& s) {
  uint32_t magic = kStateMagic, nctx = cfg.num_contexts;
  uint64_t vram_size = cfg.vram_size;
  if (!io(magic) || magic != kStateMagic || !io(vram_size) || vram_size != cfg.vram_size ||
      !io(nctx) || nctx != cfg.num_contexts)
    return false;
  if constexpr (IO::kLoad) s.ctx.resize(nctx);
  bool ok = io(s.control) && io(s.halted) && io(s.irq_status) && io(s.irq_mask) &&
            io(s.error_code) && io(s.error_addr) && Io(io, s.cmdq) && Io(io, s.cplq) &&
            Io(io, s.fltq);
  for (uint64_t& c : s.counters) ok = ok && io(c);
  for (Ctx& c : s.ctx) ok = ok && Io(io, c);
  for (TlbEntry& e : s.tlb) ok = ok && Io(io, e);
  return ok && io(s.tlb_next) && io(s.next_fault_id) && IoList(io, s.stalled, kMaxStalled) &&
         IoList(io, s.cpls, kMaxCpls) && IoList(io, s.faults, kMaxStalled) &&
         IoList(io, s.held, kMaxHeld) && Io(io, s.copy) && io(s.inval_mode) && io(s.inval_count) &&
         io(s.inval_commands) && io(s.dma_skip) && io(s.dma_fail) && io(s.event_mask) &&
         io(s.event_count);
}

size_t Serialize(const svmdev_config& cfg, const State& s, uint8_t* out) {
  Writer w(out);
  Io(w, cfg, const_cast<State&>(s));  // a writer only reads the state
  return w.Size();
}

// A snapshot may come from anywhere: check what the core relies on.
bool Consistent(const svmdev_config& cfg, const State& s) {
  const uint64_t sizes[3] = {sizeof(svmdev_cmd), sizeof(svmdev_cpl), sizeof(svmdev_fault)};
  const Ring* rings[3] = {&s.cmdq, &s.cplq, &s.fltq};
  for (int i = 0; i < 3; i++) {
    // Indexes only matter while enabled; enabling zeroes them.
    if ((s.control & SVMDEV_CTRL_ENABLE) && !rings[i]->Usable(sizes[i])) return false;
  }
  if (s.control & ~SVMDEV_CTRL_ENABLE || s.halted > 1 || s.irq_mask & ~SVMDEV_IRQ_ALL ||
      s.irq_status & ~SVMDEV_IRQ_ALL)
    return false;
  for (const Ctx& c : s.ctx) {
    if (c.live > 1 || (c.root & ~SVMDEV_PTE_ADDR_MASK) != 0) return false;
  }
  if (s.tlb_next >= kTlbEntries) return false;
  uint32_t nctx = cfg.num_contexts;
  for (const TlbEntry& e : s.tlb) {
    if (!e.valid) continue;
    uint64_t size = e.Size();
    bool vram = e.pte & SVMDEV_PTE_VRAM;
    if (e.ctx >= nctx || e.va % size || e.va >= kVaLimit || e.target % size ||
        (vram && (e.target > cfg.vram_size || cfg.vram_size - e.target < size)) ||
        (!vram && e.target > SVMDEV_PTE_ADDR_MASK))
      return false;
  }
  if (s.next_fault_id == 0) return false;
  for (size_t i = 0; i < s.stalled.size(); i++) {
    const Stalled& x = s.stalled[i];
    if (x.ctx >= nctx || x.origin > kFromHost || x.fault_id == 0 ||
        (!x.acc.probe && !svmdev_core::ValidAccess(x.acc)) || x.acc.va >= kVaLimit)
      return false;
    for (size_t k = 0; k < i; k++)
      if (s.stalled[k].fault_id == x.fault_id) return false;
  }
  // At most one queued record per stalled access, each naming its own.
  for (size_t i = 0; i < s.faults.size(); i++) {
    uint32_t id = s.faults[i].fault_id;
    if (std::none_of(s.stalled.begin(), s.stalled.end(),
                     [id](const Stalled& x) { return x.fault_id == id; }))
      return false;
    for (size_t k = 0; k < i; k++)
      if (s.faults[k].fault_id == id) return false;
  }
  size_t acks_to_come = 0;
  for (const Held& h : s.held) {
    if (h.ctx >= nctx || (h.len != 0 && h.len - 1 > UINT64_MAX - h.va)) return false;
    acks_to_come += !h.acked && !h.drop_ack;
  }
  if (s.cpls.size() + acks_to_come > kMaxCpls) return false;
  const CopyJob& j = s.copy;
  uint64_t bad;
  if (j.active > 1 ||
      (j.active && (j.done >= j.len ||
                    CheckCopy(cfg.vram_size, j.src, j.flags & SVMDEV_COPY_F_SRC_VRAM, j.dst,
                              j.flags & SVMDEV_COPY_F_DST_VRAM, j.len, &bad) != SVMDEV_STATUS_OK)))
    return false;
  return s.inval_mode <= SVMDEV_INVAL_EARLY_ACK && (s.event_mask & ~kEventsAll) == 0;
}

// Lists at their longest: the size of the largest state.
size_t StateMax(const svmdev_config& cfg) {
  State s;
  s.ctx.resize(cfg.num_contexts);
  s.stalled.resize(kMaxStalled);
  s.cpls.resize(kMaxCpls);
  s.faults.resize(kMaxStalled);
  s.held.resize(kMaxHeld);
  return Serialize(cfg, s, nullptr);
}

}  // namespace

// ---- the C ABI ----
extern "C" svmdev_core* svmdev_core_new(const svmdev_config* cfg, const svmdev_host_ops* ops,
                                        char* err, size_t errlen) {
  if (cfg == nullptr || ops == nullptr || !ops->dma_read || !ops->dma_write || !ops->raise_irq) {
    std::snprintf(err, errlen, "svmdev: missing configuration or host callbacks");
    return nullptr;
  }
  if (cfg->vram_size == 0 || cfg->vram_size % SVMDEV_PAGE_SIZE != 0 ||
      cfg->vram_size > SVMDEV_PTE_ADDR_MASK + 1) {
    std::snprintf(err, errlen, "svmdev: vram size %llu is not a non-zero multiple of 4096 below 2^52",
                  static_cast<unsigned long long>(cfg->vram_size));
    return nullptr;
  }
  uint32_t nctx = cfg->num_contexts ? cfg->num_contexts : kDefaultContexts;
  if (nctx > kMaxContexts) {
    std::snprintf(err, errlen, "svmdev: %u contexts, at most %u", nctx, kMaxContexts);
    return nullptr;
  }
  auto* core = new (std::nothrow) svmdev_core{};
  if (core == nullptr) {
    std::snprintf(err, errlen, "svmdev: out of memory");
    return nullptr;
  }
  core->cfg = *cfg;
  core->cfg.num_contexts = nctx;
  if (cfg->slice_commands == 0) core->cfg.slice_commands = kSliceCommands;
  if (cfg->slice_copy_bytes == 0) core->cfg.slice_copy_bytes = kSliceCopyBytes;
  core->ops = *ops;
  core->vram = static_cast<uint8_t*>(cfg->vram);
  if (core->vram == nullptr) {
    core->own_vram.reset(new (std::nothrow) uint8_t[cfg->vram_size]());
    core->vram = core->own_vram.get();
    if (core->vram == nullptr) {
      delete core;
      std::snprintf(err, errlen, "svmdev: cannot allocate %llu bytes of vram",
                    static_cast<unsigned long long>(cfg->vram_size));
      return nullptr;
    }
  }
  core->st.ctx.assign(nctx, Ctx{});
  return core;
}

extern "C" void svmdev_core_free(svmdev_core* core) { delete core; }

extern "C" void svmdev_core_reset(svmdev_core* core) {
  core->Reset();
  core->ctl_in.clear();
}

// Guest-reachable entry points refuse a call made from inside the core: a
// DMA or an MSI-X message the core sent that came back as a register access.
class Entry {
 public:
  explicit Entry(svmdev_core* core) : core_(core), ok_(!core->busy) {
    if (ok_) {
      core->busy = true;
    } else {
      core->GuestError("svmdev: register access from the device's own DMA or interrupt refused");
    }
  }
  ~Entry() {
    if (ok_) core_->busy = false;
  }
  bool ok() const { return ok_; }

 private:
  svmdev_core* core_;
  bool ok_;
};

extern "C" uint64_t svmdev_core_mmio_read(svmdev_core* core, uint64_t offset, unsigned size) {
  Entry e(core);
  if (!e.ok()) return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
  return core->MmioRead(offset, size);
}

extern "C" void svmdev_core_mmio_write(svmdev_core* core, uint64_t offset, uint64_t value,
                                       unsigned size) {
  Entry e(core);
  if (e.ok()) core->MmioWrite(offset, value, size);
}

extern "C" void svmdev_core_continue(svmdev_core* core) {
  Entry e(core);
  if (e.ok()) core->ProcessCommands();
}

extern "C" void svmdev_core_ctl_input(svmdev_core* core, const void* buf, size_t len) {
  Entry e(core);
  if (e.ok()) core->CtlInput(static_cast<const uint8_t*>(buf), len);
}

extern "C" void svmdev_core_ctl_reset(svmdev_core* core) { core->ctl_in.clear(); }

extern "C" uint8_t* svmdev_core_vram(svmdev_core* core) { return core->vram; }

extern "C" size_t svmdev_core_save(const svmdev_core* core, void* buf, size_t len) {
  size_t n = Serialize(core->cfg, core->st, nullptr);
  if (buf != nullptr && len >= n) Serialize(core->cfg, core->st, static_cast<uint8_t*>(buf));
  return n;
}

extern "C" int svmdev_core_load(svmdev_core* core, const void* buf, size_t len) {
  Reader r(buf, len);
  State s;
  if (!Io(r, core->cfg, s) || !r.Done() || !Consistent(core->cfg, s)) return -1;
  core->st = std::move(s);
  core->ctl_in.clear();
  return 0;
}

extern "C" size_t svmdev_core_state_max(const svmdev_core* core) { return StateMax(core->cfg); }

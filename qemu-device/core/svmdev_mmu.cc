// svmdev core: the device MMU (the TLB and the page-table walk), the memory
// behind a translation, the device's accesses with their replayable faults, and
// invalidations.
#include <algorithm>
#include <cstring>
#include <vector>

#include "svmdev_core_state.h"

// The core's own types and limits (svmdev_core_state.h).
using namespace svmdev::core_detail;

namespace {

bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a <= b + (blen - 1) && b <= a + (alen - 1);
}

uint8_t PermFor(uint8_t kind) {
  switch (kind) {
    case SVMDEV_ACC_READ: return SVMDEV_PTE_READ;
    case SVMDEV_ACC_WRITE: return SVMDEV_PTE_WRITE;
    default: return SVMDEV_PTE_ATOMIC;
  }
}

}  // namespace

// ---- TLB and page-table walk ----
void svmdev_core::TlbInvalidate(uint16_t ctx, bool all, uint64_t va, uint64_t len) {
  for (TlbEntry& e : st.tlb) {
    if (e.valid && e.ctx == ctx && (all || Overlaps(e.va, e.Size(), va, len))) e.valid = 0;
  }
}

void svmdev_core::TlbMarkStale(uint16_t ctx, bool all, uint64_t va, uint64_t len) {
  for (TlbEntry& e : st.tlb) {
    if (e.valid && e.ctx == ctx && (all || Overlaps(e.va, e.Size(), va, len))) e.stale = 1;
  }
}

void svmdev_core::TlbInsert(uint16_t ctx, uint64_t va, uint64_t target, uint64_t pte) {
  TlbEntry& e = st.tlb[st.tlb_next];
  st.tlb_next = (st.tlb_next + 1) % kTlbEntries;
  e = TlbEntry{va, target, pte, ctx, 1, 0};
}

svmdev_core::Xlate svmdev_core::Target(const TlbEntry& e, uint64_t va) const {
  Xlate x;
  x.vram = (e.pte & SVMDEV_PTE_VRAM) != 0;
  x.addr = e.target + (va - e.va);
  return x;
}

svmdev_core::Xlate svmdev_core::Translate(uint16_t ctx, uint64_t va, uint8_t kind) {
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

svmdev_core::Xlate svmdev_core::Walk(uint16_t ctx, uint64_t va, uint8_t kind) {
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
bool svmdev_core::MemRead(const Xlate& x, void* buf, uint64_t len) {
  if (x.vram) {
    std::memcpy(buf, vram + x.addr, len);  // the walk checked the page is in VRAM
    return true;
  }
  return DmaRead(x.addr, buf, len);
}

bool svmdev_core::MemWrite(const Xlate& x, const void* buf, uint64_t len) {
  if (x.vram) {
    std::memcpy(vram + x.addr, buf, len);
    return true;
  }
  return DmaWrite(x.addr, buf, len);
}

// ---- device accesses ----
bool svmdev_core::ValidAccess(const Access& a) {
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
uint32_t svmdev_core::DoAccess(uint16_t ctx, const Access& a, uint64_t* value, uint8_t* reason) {
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

void svmdev_core::Finish(const Stalled& s, uint32_t status, uint64_t value) {
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
uint32_t svmdev_core::Run(Stalled s, uint64_t* value, bool complete_now) {
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
uint32_t svmdev_core::NewFaultId() {
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
void svmdev_core::Withdraw(uint32_t fault_id) {
  auto it = std::find_if(st.faults.begin(), st.faults.end(),
                         [fault_id](const svmdev_fault& f) { return f.fault_id == fault_id; });
  if (it != st.faults.end()) st.faults.erase(it);
}

// Replays (or cancels) the stalled accesses of ctx that match.
uint64_t svmdev_core::Resolve(uint16_t ctx, bool all, uint32_t id, bool replay) {
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
void svmdev_core::Perform(Held& h) {
  TlbInvalidate(h.ctx, h.len == 0, h.va, h.len);
  h.performed = 1;
  st.counters[SVMDEV_CNT_INVALIDATIONS]++;
  Event(SVMDEV_EVT_INVALIDATE, h.ctx, h.va, h.len, 0, 0, 0, 0);
}

void svmdev_core::Ack(Held& h) {
  h.acked = 1;
  if (h.drop_ack) return;
  // An acknowledgement that precedes the invalidation leaves stale entries.
  if (!h.performed) TlbMarkStale(h.ctx, h.len == 0, h.va, h.len);
  Complete(h.cpl.cpl, h.cpl.irq);
}

void svmdev_core::Release(Held& h) {
  if (!h.performed) Perform(h);
  if (!h.acked) Ack(h);
}

uint64_t svmdev_core::ReleaseAll() {
  std::vector<Held> held;
  held.swap(st.held);
  for (Held& h : held) Release(h);
  return held.size();
}

void svmdev_core::TickHeld() {
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

void svmdev_core::Invalidate(Held h) {
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

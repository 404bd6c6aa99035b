// svmdev core: the rings, the copy engine, the commands and the registers.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "svmdev_core_state.h"

// The core's own types and limits (svmdev_core_state.h).
using namespace svmdev::core_detail;

// ---- rings ----
void svmdev_core::Halt(uint64_t addr, const char* msg) {
  st.halted = 1;
  Error(SVMDEV_STATUS_DMA_ERROR, addr, msg);
}

void svmdev_core::FlushCompletions() {
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

void svmdev_core::FlushFaults() {
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

void svmdev_core::Complete(const svmdev_cpl& cpl, bool irq) {
  st.cpls.push_back(Pending{cpl, irq});
  FlushCompletions();
}

// ---- copy engine ----
namespace svmdev::core_detail {

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

}  // namespace svmdev::core_detail

// Checks a COPY and starts it; it completes from ProcessCommands, slice by slice.
uint32_t svmdev_core::StartCopy(const svmdev_cmd& c, uint32_t index) {
  uint32_t status = CheckCopy(cfg.vram_size, c.arg[0], c.flags & SVMDEV_COPY_F_SRC_VRAM, c.arg[1],
                              c.flags & SVMDEV_COPY_F_DST_VRAM, c.arg[2], &err_addr);
  if (status != SVMDEV_STATUS_OK) return status;
  st.copy = CopyJob{c.seq, c.arg[0], c.arg[1], c.arg[2], 0, index, c.ctx, c.flags, 1};
  return kStatusFault;  // completes when the last byte is moved
}

// Moves what the slice allows of the COPY in progress.
void svmdev_core::StepCopy() {
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
uint32_t svmdev_core::CheckCtx(uint16_t ctx, bool must_be_live) {
  err_addr = ctx;
  if (ctx >= st.ctx.size()) return SVMDEV_STATUS_BAD_CTX;
  if (must_be_live && !st.ctx[ctx].live) return SVMDEV_STATUS_CTX_DISABLED;
  return SVMDEV_STATUS_OK;
}

uint64_t svmdev_core::CancelCtx(uint16_t ctx) {
  TlbInvalidate(ctx, true, 0, 0);
  st.ctx[ctx] = Ctx{};
  return Resolve(ctx, true, 0, false);
}

// Returns the completion status, or kStatusFault when the command completes
// later (a stalled ACCESS, an INVALIDATE, a COPY).
uint32_t svmdev_core::Execute(const svmdev_cmd& c, uint32_t index, uint64_t* value) {
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

void svmdev_core::CompleteCommand(const svmdev_cpl& cpl, bool irq) {
  if (cpl.status != SVMDEV_STATUS_OK) Error(cpl.status, err_addr, "svmdev: command failed");
  Complete(cpl, irq);
}

// A register write or host message starts a slice of work; what does not
// fit continues from the host's schedule callback.
void svmdev_core::ProcessCommands() {
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
uint64_t* svmdev_core::Reg64(uint64_t off) {
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

uint32_t svmdev_core::Status() const {
  uint32_t v = 0;
  if (st.control & SVMDEV_CTRL_ENABLE) v |= SVMDEV_STS_ENABLED;
  if (st.halted) v |= SVMDEV_STS_HALTED;
  if (!st.cpls.empty()) v |= SVMDEV_STS_CPLQ_FULL;
  if (!st.faults.empty()) v |= SVMDEV_STS_FLTQ_FULL;
  return v;
}

bool svmdev_core::Read32(uint64_t off, uint32_t* v) {
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

uint64_t svmdev_core::MmioRead(uint64_t off, unsigned size) {
  if (size == 8) {
    if (const uint64_t* r = Reg64(off)) return *r;
  } else if (size == 4) {
    uint32_t v;
    if (Read32(off, &v)) return v;
  }
  GuestError("svmdev: read of an unknown register or with a bad width");
  return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
}

bool svmdev_core::RingRegWritable() {
  if (!(st.control & SVMDEV_CTRL_ENABLE)) return true;
  Error(SVMDEV_STATUS_BAD_RING, 0, "svmdev: ring register written while enabled");
  return false;
}

void svmdev_core::SetIndex(Ring& r, uint32_t v, uint32_t* field) {
  if (!(st.control & SVMDEV_CTRL_ENABLE) || v >= r.entries) {
    Error(SVMDEV_STATUS_BAD_RING, v, "svmdev: ring index out of range or device disabled");
    return;
  }
  *field = v;
}

void svmdev_core::Enable(bool on) {
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
void svmdev_core::Restart() {
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

void svmdev_core::Write32(uint64_t off, uint32_t v) {
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

bool svmdev_core::IsRingBase(uint64_t off) {
  return off == SVMDEV_REG_CMDQ_BASE || off == SVMDEV_REG_CPLQ_BASE ||
         off == SVMDEV_REG_FLTQ_BASE;
}

void svmdev_core::MmioWrite(uint64_t off, uint64_t v, unsigned size) {
  if (size == 8 && IsRingBase(off)) {
    if (RingRegWritable()) *Reg64(off) = v;
  } else if (size == 4) {
    Write32(off, static_cast<uint32_t>(v));
  } else {
    GuestError("svmdev: register write with a bad width");
  }
}

void svmdev_core::Reset() {
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

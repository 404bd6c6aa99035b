// svmdev core: the services the host gives the core, what the core sends on
// the host control channel, and the messages it takes from it.
#include <algorithm>
#include <cstring>

#include "svmdev_core_state.h"

// The core's own types and limits (svmdev_core_state.h).
using namespace svmdev::core_detail;

// ---- host services ----
void svmdev_core::GuestError(const char* msg) const {
  if (ops.guest_error) ops.guest_error(ops.opaque, msg);
}

bool svmdev_core::InjectedDmaFailure() {
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

bool svmdev_core::DmaRead(uint64_t addr, void* buf, uint64_t len) {
  if (InjectedDmaFailure() || ops.dma_read(ops.opaque, addr, buf, len) != 0) {
    st.counters[SVMDEV_CNT_DMA_ERRORS]++;
    err_addr = addr;
    return false;
  }
  return true;
}

bool svmdev_core::DmaWrite(uint64_t addr, const void* buf, uint64_t len) {
  if (InjectedDmaFailure() || ops.dma_write(ops.opaque, addr, buf, len) != 0) {
    st.counters[SVMDEV_CNT_DMA_ERRORS]++;
    err_addr = addr;
    return false;
  }
  return true;
}

void svmdev_core::Raise(unsigned vec) {
  uint32_t bit = 1u << vec;
  st.irq_status |= bit;
  if (!(st.irq_mask & bit)) ops.raise_irq(ops.opaque, vec);
}

// ---- host channel output ----
void svmdev_core::Send(uint8_t type, uint32_t tag, const void* payload, uint16_t len) {
  if (!ops.ctl_send) return;
  uint8_t msg[sizeof(svmdev_ctl_hdr) + SVMDEV_CTL_MAX_PAYLOAD];
  svmdev_ctl_hdr h{SVMDEV_CTL_MAGIC, type, len, tag};
  std::memcpy(msg, &h, sizeof(h));
  if (len) std::memcpy(msg + sizeof(h), payload, len);
  ops.ctl_send(ops.opaque, msg, sizeof(h) + len);
}

void svmdev_core::Event(uint32_t kind, uint16_t ctx, uint64_t va, uint64_t arg, uint32_t code,
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

void svmdev_core::Error(uint32_t status, uint64_t addr, const char* msg) {
  st.error_code = status;
  st.error_addr = addr;
  st.counters[SVMDEV_CNT_ERRORS]++;
  GuestError(msg);
  Event(SVMDEV_EVT_ERROR, 0, 0, addr, status, 0, 0, 0);
  Raise(SVMDEV_VEC_ERROR);
}

// ---- host control channel ----
void svmdev_core::Reply(uint8_t type, uint32_t tag, uint32_t status, uint64_t value,
                        uint32_t fault_id) {
  svmdev_ctl_result r{value, status, fault_id};
  Send(type, tag, &r, sizeof(r));
}

bool svmdev_core::Zero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

void svmdev_core::CtlAccess(uint32_t tag, const svmdev_ctl_access& q) {
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

void svmdev_core::CtlStorm(uint32_t tag, const svmdev_ctl_storm& q) {
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

void svmdev_core::CtlTlb(uint32_t tag) {
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

void svmdev_core::CtlMessage(const svmdev_ctl_hdr& h, const uint8_t* p) {
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

void svmdev_core::CtlInput(const uint8_t* buf, size_t len) {
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

// svmdev core: snapshots, and the C ABI's svmdev_core_save, svmdev_core_load
// and svmdev_core_state_max.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "svmdev/svmdev_core.h"
#include "svmdev_core_state.h"

// The core's own types and limits (svmdev_core_state.h).
using namespace svmdev::core_detail;

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

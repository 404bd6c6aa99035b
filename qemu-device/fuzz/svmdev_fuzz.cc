// In-process fuzzer of the svmdev core, for libFuzzer and AFL++ (libAFLDriver).
//
// The input is a tolerant sequence of actions: an opcode byte, then the few
// bytes that action reads; a short input reads zeros, so every byte string is
// a valid run. Actions are raw MMIO, raw commands, raw control-channel bytes,
// guest memory writes, and structured driver-like steps (map, access,
// invalidate, copy, replay) whose results a shadow model checks: translations
// and permissions against the reference MMU plus every translation the TLB may
// still hold, data against guest memory and VRAM. Guest memory the device
// reads before anyone wrote it is filled from the input on demand. Op bytes
// from 224 up select the robustness steps: snapshot blobs made or cut from
// the input, fault-record churn with the fault ring never read, large copies,
// ring restarts and deferred work. Every control-channel reply is checked
// for its framing, and the device state for its bound.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <vector>

#include "svmdev/svmdev_core.h"
#include "svmdev/svmdev_hw.h"
#include "svmdev_testbed.h"

namespace svmdev {
namespace {

// Checks stay on in every build: a failed one is a finding.
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "svmdev_fuzz: check failed at %d: %s\n", __LINE__, #cond); \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

// Small memories keep executions fast: 16 page tables, 64 data pages, 16 VRAM pages.
constexpr uint64_t kDataBase = 0x20000;
constexpr uint64_t kMemSize = 0x60000;
constexpr uint64_t kVramSize = 0x10000;
constexpr uint32_t kContexts = 4;
constexpr uint64_t kAllPerms = SVMDEV_PTE_READ | SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC;
// Small slices, so that continued work happens with these small memories.
constexpr uint32_t kSliceCommands = 4;
constexpr uint32_t kSliceCopyBytes = 16 << 10;
// Never mapped by the structured steps (PickVa stays below 2^41).
constexpr uint64_t kUnmappedVa = 1ull << 46;
constexpr uint32_t kEventsAll = SVMDEV_EVT_FAULT | SVMDEV_EVT_INVALIDATE | SVMDEV_EVT_STALE |
                                SVMDEV_EVT_ERROR | SVMDEV_EVT_ACCESS_DONE;
constexpr size_t kStateHeader = 4 + 8 + 4;  // magic, VRAM size, contexts

class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool Empty() const { return n_ == 0; }
  uint8_t U8() {
    if (n_ == 0) return 0;
    n_--;
    return *d_++;
  }
  uint16_t U16() { return static_cast<uint16_t>(U8() | U8() << 8); }
  uint32_t U32() { return U16() | static_cast<uint32_t>(U16()) << 16; }
  uint64_t U64() { return U32() | static_cast<uint64_t>(U32()) << 32; }
  void Bytes(void* out, size_t n) {
    auto* o = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < n; i++) o[i] = U8();
  }

 private:
  const uint8_t* d_;
  size_t n_;
};

// A translation the device may still be using from its TLB.
struct Cached {
  uint64_t va;  // page base
  uint64_t size;
  uint64_t page;  // target page base
  bool vram;
  uint64_t perms;
};

// Buffers kept across inputs: allocating and faulting them in per input would
// cost more than most inputs.
struct Scratch {
  uint8_t vram_before[kVramSize];
  uint8_t data[kMemSize];                     // the largest copy that can succeed
  std::vector<uint8_t> saved, resaved, made;  // device state blobs
};

class Fuzz {
 public:
  Fuzz(Input* in, Testbed* tb, Scratch* scratch) : in_(in), tb_(*tb), scratch_(scratch) {
    tb_.Recreate();
    tb_.on_dma_read = [this](uint64_t addr, uint64_t len) { Supply(addr, len); };
    CHECK(tb_.Enable());
    for (uint32_t i = 0; i < kContexts; i++) roots_[i] = tb_.NewTable();
  }

  void Run() {
    while (!in_->Empty()) {
      Step(in_->U8());
      Invariants();
    }
  }

  ~Fuzz() { tb_.on_dma_read = nullptr; }

  static Testbed::Options Options() {
    Testbed::Options o;
    o.mem_size = kMemSize;
    o.vram_size = kVramSize;
    o.contexts = kContexts;
    o.data_base = kDataBase;
    o.slice_commands = kSliceCommands;
    o.slice_copy_bytes = kSliceCopyBytes;
    return o;
  }

 private:

  // DMA of never-written data memory reads input bytes, a page at a time.
  void Supply(uint64_t addr, uint64_t len) {
    if (addr < kDataBase || addr >= kMemSize || len > kMemSize) return;
    for (uint64_t p = addr & ~0xfffull; p < addr + len && p < kMemSize; p += 0x1000) {
      size_t page = (p - kDataBase) >> 12;
      if (supplied_[page]) continue;
      supplied_[page] = true;
      for (uint64_t i = 0; i < 0x1000 && !in_->Empty(); i += 8) tb_.MemWrite(p + i, in_->U64(), 8);
    }
  }

  uint64_t PickVa() {
    uint8_t b = in_->U8();
    return (uint64_t{b} & 15) << 12 | (uint64_t{b} >> 4 & 3) << 21 | (uint64_t{b} >> 6) << 39;
  }
  uint64_t PickTarget(bool vram, bool huge) {
    uint8_t b = in_->U8();
    if (vram) return huge ? 0 : (uint64_t{b} % (kVramSize >> 12)) << 12;
    return huge ? 0 : kDataBase + ((uint64_t{b} % ((kMemSize - kDataBase) >> 12)) << 12);
  }
  uint16_t PickCtx() { return static_cast<uint16_t>(in_->U8() % (kContexts + 1)); }

  void Step(uint8_t op) {
    if (op >= 224) return Robustness(op - 224);
    switch (op % 16) {
      case 0: {  // raw register write
        uint16_t off = in_->U16() & 0xfff;
        unsigned size = 1u << (in_->U8() & 3);
        uint64_t v = in_->U64();
        if (off != SVMDEV_REG_IRQ_STATUS && off != SVMDEV_REG_IRQ_MASK &&
            off != SVMDEV_REG_ERROR_CODE)
          lost_ = true;
        svmdev_core_mmio_write(tb_.core(), off, v, size);
        break;
      }
      case 1: {  // raw register read
        uint16_t off = in_->U16() & 0xfff;
        svmdev_core_mmio_read(tb_.core(), off, 1u << (in_->U8() & 3));
        break;
      }
      case 2: {  // context setup with the context's root
        uint16_t ctx = PickCtx();
        Command(Testbed::Cmd(SVMDEV_OP_CTX_SETUP, ctx, ctx < kContexts ? roots_[ctx] : 0x10000));
        break;
      }
      case 3: {  // map a page
        uint16_t ctx = in_->U8() % kContexts;
        uint8_t b = in_->U8();
        bool huge = b & 0x80, vram = b & 0x40;
        uint64_t bits = b & 0x0f;
        uint64_t va = PickVa();
        if (huge) va &= ~(SVMDEV_HUGE_SIZE - 1);
        try {
          tb_.Map(roots_[ctx], va, PickTarget(vram, huge), bits | (vram ? SVMDEV_PTE_VRAM : 0),
                  huge);
        } catch (const std::runtime_error&) {
          // pool exhausted or a huge page in the way: the step does nothing
        }
        break;
      }
      case 4: {  // raw page-table entry
        uint16_t ctx = in_->U8() % kContexts;
        uint64_t va = PickVa();
        uint64_t v = in_->U64();
        try {
          uint64_t slot = tb_.LeafSlot(roots_[ctx], va, in_->U8() & 1);
          if (slot) tb_.MemWrite(slot, v, 8);
        } catch (const std::runtime_error&) {
        }
        break;
      }
      case 5:
      case 6: {  // device access
        uint16_t ctx = PickCtx();
        uint64_t va = PickVa() + (in_->U16() & 0xfff);
        uint8_t b = in_->U8();
        uint8_t kind = b % 3;
        uint16_t size = static_cast<uint16_t>(1u << (b >> 2 & 3));
        uint8_t aop = (b >> 4) % 5;
        if (kind == SVMDEV_ACC_ATOMIC) {
          size = size < 4 ? 4 : size;
          va &= ~(uint64_t{size} - 1);
        }
        if ((va & 0xfff) + size > 0x1000) va &= ~0xfffull;
        svmdev_cmd c = Testbed::AccessCmd(ctx, va, kind, size, in_->U64(), aop, in_->U64());
        Command(c);
        break;
      }
      case 7: {  // invalidate
        uint16_t ctx = PickCtx();
        uint8_t b = in_->U8();
        uint64_t va = PickVa(), len = (uint64_t{in_->U8()} + 1) << 12;
        Command(Testbed::Cmd(SVMDEV_OP_INVALIDATE, ctx, va, len, 0,
                             (b & 1) ? SVMDEV_INV_F_ALL : 0));
        break;
      }
      case 8:
        CopyStep(false);
        break;
      case 9: {  // replay or cancel a fault
        uint16_t ctx = PickCtx();
        uint8_t b = in_->U8();
        uint32_t id = faults_.empty() ? b : faults_[b % faults_.size()];
        uint8_t opc = (b & 1) ? SVMDEV_OP_FAULT_CANCEL : SVMDEV_OP_FAULT_REPLAY;
        Command(Testbed::Cmd(opc, ctx, id, 0, 0, (b & 2) ? SVMDEV_FLT_F_ALL : 0));
        break;
      }
      case 10: {  // raw command
        svmdev_cmd c;
        in_->Bytes(&c, sizeof(c));
        if (c.opcode == SVMDEV_OP_CTX_SETUP || c.opcode == SVMDEV_OP_COPY) lost_ = true;
        Command(c);
        break;
      }
      case 11: {  // raw control-channel bytes
        uint8_t n = in_->U8() % 64;
        uint8_t buf[64];
        in_->Bytes(buf, n);
        lost_ = true;
        ctl_raw_ = true;
        svmdev_core_ctl_input(tb_.core(), buf, n);
        CheckCtl(0, 0);
        break;
      }
      case 12:
        HostAction();
        break;
      case 13: {  // guest memory write outside the rings
        uint64_t addr = Testbed::kPtPool + in_->U32() % (kMemSize - Testbed::kPtPool - 8);
        tb_.MemWrite(addr, in_->U64(), 8);
        break;
      }
      case 14: {  // destroy, reset command, reset register
        uint8_t b = in_->U8();
        if (b % 3 == 0) Command(Testbed::Cmd(SVMDEV_OP_CTX_DESTROY, PickCtx()));
        if (b % 3 == 1) Command(Testbed::Cmd(SVMDEV_OP_RESET));
        if (b % 3 == 2) {
          svmdev_core_reset(tb_.core());
          Forget();
          lost_ = true;  // stalled accesses vanish without completions
        }
        break;
      }
      default:
        Snapshot();
        break;
    }
  }

  // A copy of up to 64 KiB, or (large) up to twice the largest COPY.
  void CopyStep(bool large) {
    uint8_t f = in_->U8() & 6;
    uint64_t src = in_->U32(), dst = in_->U32(), len = in_->U16() + 1u;
    if (large) len <<= in_->U8() % 12;
    if (!(f & SVMDEV_COPY_F_SRC_VRAM)) src = kDataBase + src % (kMemSize - kDataBase);
    if (!(f & SVMDEV_COPY_F_DST_VRAM)) dst = kDataBase + dst % (kMemSize - kDataBase);
    if (f & SVMDEV_COPY_F_SRC_VRAM) src %= kVramSize + 0x1000;
    if (f & SVMDEV_COPY_F_DST_VRAM) dst %= kVramSize + 0x1000;
    Copy(Testbed::Cmd(SVMDEV_OP_COPY, 0, src, dst, len, f));
  }

  void HostAction() {
    // Raw bytes may have left half a message: start the structured ones afresh.
    if (ctl_raw_) svmdev_core_ctl_reset(tb_.core());
    ctl_raw_ = false;
    uint8_t b = in_->U8();
    switch (b % 4) {
      case 0: {
        svmdev_ctl_inval_mode m{in_->U8() % 4u, in_->U8() % 4u, in_->U8() % 4u, 0};
        if (m.mode != SVMDEV_INVAL_NORMAL && m.count) inval_games_ = true;
        tb_.CtlSend(SVMDEV_CTL_INVAL_MODE, 1, &m, sizeof(m));
        CHECK(CheckCtl(1, SVMDEV_CTL_INVAL_MODE) == SVMDEV_STATUS_OK);
        break;
      }
      case 1: {
        svmdev_ctl_fail_dma f{in_->U8() % 8u, in_->U8() % 4u};
        if (f.count) dma_faults_ = true;
        tb_.CtlSend(SVMDEV_CTL_FAIL_DMA, 2, &f, sizeof(f));
        CHECK(CheckCtl(2, SVMDEV_CTL_FAIL_DMA) == SVMDEV_STATUS_OK);
        break;
      }
      case 2: {
        svmdev_ctl_storm s{};
        s.va = PickVa();
        s.stride = uint64_t{in_->U8()} << 12;
        s.ctx = PickCtx();
        s.count = in_->U8();
        s.kind = in_->U8() % 3;
        lost_ = true;  // probes may fill the TLB with translations the model does not see
        tb_.CtlSend(SVMDEV_CTL_FAULT_STORM, 3, &s, sizeof(s));
        uint32_t status = CheckCtl(3, SVMDEV_CTL_FAULT_STORM);
        CHECK(status == SVMDEV_STATUS_OK || status == SVMDEV_STATUS_BAD_CTX ||
              status == SVMDEV_STATUS_CTX_DISABLED);
        break;
      }
      default: {
        uint8_t types[] = {SVMDEV_CTL_PING, SVMDEV_CTL_COUNTERS, SVMDEV_CTL_TLB,
                           SVMDEV_CTL_RELEASE};
        uint8_t type = types[in_->U8() % 4];
        tb_.CtlSend(type, 4, nullptr, 0);
        CheckCtl(4, type);
        break;
      }
    }
    Collect();
  }

  // Checks the framing of everything the device sent since the last call. With
  // a tag, exactly one reply to that request of that type must be among it;
  // returns the status of a result reply (OK for the others).
  uint32_t CheckCtl(uint32_t tag, uint8_t type) {
    unsigned replies = 0;
    uint32_t status = SVMDEV_STATUS_OK;
    for (const CtlMessage& m : tb_.CtlReceive()) {
      CHECK(m.hdr.magic == SVMDEV_CTL_MAGIC && m.hdr.len == m.payload.size());
      if (m.hdr.type == SVMDEV_CTL_EVENT) {
        svmdev_ctl_event e;
        CHECK(m.hdr.len == sizeof(e) && m.hdr.tag == 0);
        std::memcpy(&e, m.payload.data(), sizeof(e));
        CHECK((e.kind & kEventsAll) == e.kind && (e.kind & (e.kind - 1)) == 0 && e.kind != 0);
        continue;
      }
      uint8_t req = m.hdr.type & ~SVMDEV_CTL_REPLY;
      CHECK(
          m.hdr.type == SVMDEV_CTL_ERROR ||
          ((m.hdr.type & SVMDEV_CTL_REPLY) && req >= SVMDEV_CTL_PING && req <= SVMDEV_CTL_RELEASE));
      size_t want = sizeof(svmdev_ctl_result);
      if (m.hdr.type == (SVMDEV_CTL_PING | SVMDEV_CTL_REPLY)) want = 8;
      if (m.hdr.type == (SVMDEV_CTL_COUNTERS | SVMDEV_CTL_REPLY)) want = 8 * SVMDEV_NUM_COUNTERS;
      if (m.hdr.type == (SVMDEV_CTL_TLB | SVMDEV_CTL_REPLY)) {
        uint32_t n = 0;
        CHECK(m.hdr.len >= 4);
        std::memcpy(&n, m.payload.data(), 4);
        CHECK(n <= 64);
        want = 4 + n * sizeof(svmdev_ctl_tlb_entry);
      }
      CHECK(m.hdr.len == want);
      if (tag == 0 || m.hdr.tag != tag) continue;
      CHECK(m.hdr.type == (type | SVMDEV_CTL_REPLY));
      replies++;
      if (want == sizeof(svmdev_ctl_result)) {
        svmdev_ctl_result r;
        std::memcpy(&r, m.payload.data(), sizeof(r));
        status = r.status;
      }
    }
    if (tag != 0) CHECK(replies == 1);
    return status;
  }

  // ---- robustness steps ----
  void Robustness(uint8_t step) {
    switch (step % 6) {
      case 0:
        LoadMadeBlob();
        break;
      case 1:
        LoadTruncatedBlob();
        break;
      case 2:
        FaultChurn();
        break;
      case 3:
        CopyStep(true);
        break;
      case 4:  // ring restart: no translation and no stalled access survives it
        tb_.Write32(SVMDEV_REG_CONTROL, 0);
        CHECK(tb_.Enable());
        Forget();
        Collect();
        break;
      default:  // deferred work: leave it pending across other steps, or run it
        if (in_->U8() & 1) {
          tb_.auto_continue = !tb_.auto_continue;
          lost_ = true;  // accesses complete out of the model's sight
        } else {
          svmdev_core_continue(tb_.core());
          tb_.RunScheduled();
        }
        break;
    }
  }

  size_t Save(std::vector<uint8_t>* blob) {
    size_t n = svmdev_core_save(tb_.core(), nullptr, 0);
    CHECK(n <= svmdev_core_state_max(tb_.core()));
    blob->resize(n);
    CHECK(svmdev_core_save(tb_.core(), blob->data(), n) == n);
    return n;
  }

  // A blob the device took is a state it saves back byte for byte.
  void Loaded(const std::vector<uint8_t>& blob) {
    lost_ = true;
    Forget();
    Save(&scratch_->resaved);
    CHECK(scratch_->resaved == blob);
  }

  // The real header (so the configuration matches), then input bytes.
  void LoadMadeBlob() {
    Save(&scratch_->saved);
    std::vector<uint8_t>& b = scratch_->made;
    size_t len = in_->U16() % (scratch_->saved.size() + 64);
    b.assign(scratch_->saved.begin(),
             scratch_->saved.begin() + static_cast<long>(std::min(len, kStateHeader)));
    while (b.size() < len) b.push_back(in_->U8());
    if (svmdev_core_load(tb_.core(), b.data(), b.size()) == 0) Loaded(b);
  }

  void LoadTruncatedBlob() {
    size_t n = Save(&scratch_->saved);
    size_t len = in_->U16() % n;
    CHECK(svmdev_core_load(tb_.core(), scratch_->saved.data(), len) != 0);
    Save(&scratch_->resaved);
    CHECK(scratch_->resaved == scratch_->saved);  // a refused load changes nothing
  }

  // Stalls, then cancels or replays them, with the fault ring never read: past
  // 256 records once per input (enough to overflow an unbounded queue), a
  // few rounds after that, so that inputs stay fast.
  void FaultChurn() {
    uint16_t ctx = PickCtx();
    unsigned rounds = in_->U16() % (churned_ ? 16 : 300);
    churned_ = true;
    // The tables do not change during the churn: one look at what the
    // replays may cache is enough.
    if (ctx < kContexts) Replaying(ctx);
    for (unsigned i = 0; i < rounds; i++) {
      uint8_t op = i % 2 ? SVMDEV_OP_FAULT_CANCEL : SVMDEV_OP_FAULT_REPLAY;
      tb_.Push(Testbed::AccessCmd(ctx, kUnmappedVa + (i % 8) * 4096, SVMDEV_ACC_READ, 8));
      tb_.Push(Testbed::Cmd(op, ctx, 0, 0, 0, SVMDEV_FLT_F_ALL));
      tb_.Doorbell();
      for (const svmdev_cpl& k : tb_.DrainCompletions()) Observe(k);
    }
    Save(&scratch_->saved);
    Collect();
  }

  // ---- shadow model ----
  void Forget() {
    for (auto& c : cached_) c.clear();
    pending_.clear();
  }
  void Drop(uint16_t ctx, bool all, uint64_t va, uint64_t len) {
    auto& v = cached_[ctx];
    for (size_t i = 0; i < v.size();) {
      const Cached& c = v[i];
      bool hit = all || (c.va <= va + (len - 1) && va <= c.va + (c.size - 1));
      if (hit) {
        v[i] = v.back();
        v.pop_back();
      } else {
        i++;
      }
    }
  }

  uint64_t Load(bool vram, uint64_t addr, unsigned size) {
    uint64_t v = 0;
    if (!vram) Supply(addr, size);
    if (vram) {
      if (addr + size <= kVramSize) std::memcpy(&v, tb_.vram() + addr, size);
    } else {
      v = tb_.MemRead(addr, size);
    }
    return v;
  }

  struct Candidate {
    bool vram;
    uint64_t addr;
    uint64_t before;
  };

  // Everything an access may legally use right now.
  std::vector<Candidate> Allowed(uint16_t ctx, uint64_t va, uint8_t kind, unsigned size,
                                 RefXlate* ref) {
    std::vector<Candidate> out;
    uint64_t need = kind == SVMDEV_ACC_READ    ? SVMDEV_PTE_READ
                    : kind == SVMDEV_ACC_WRITE ? SVMDEV_PTE_WRITE
                                               : SVMDEV_PTE_ATOMIC;
    for (const Cached& c : cached_[ctx]) {
      if (va >= c.va && va - c.va < c.size && (c.perms & need)) {
        uint64_t a = c.page + (va - c.va);
        out.push_back({c.vram, a, Load(c.vram, a, size)});
      }
    }
    *ref = tb_.Reference(roots_[ctx], va, kind);
    if (ref->kind == RefXlate::kOk) out.push_back({ref->vram, ref->addr, Load(ref->vram, ref->addr, size)});
    return out;
  }

  void CheckAccess(const svmdev_cmd& c, const svmdev_cpl* done, bool stalled,
                   const std::vector<Candidate>& allowed, const RefXlate& ref) {
    if (lost_ || inval_games_ || c.ctx >= kContexts || !live_[c.ctx]) return;
    if (done != nullptr && done->status == SVMDEV_STATUS_OK && ref.kind == RefXlate::kOk) {
      // What the device may have cached now, whether or not the data is checked below.
      uint64_t psize = ref.huge ? SVMDEV_HUGE_SIZE : SVMDEV_PAGE_SIZE;
      uint64_t va = c.arg[0] & ~(psize - 1);
      // The reference does not report permissions: record the page as usable
      // for every kind, which only widens what the model accepts.
      cached_[c.ctx].push_back({va, psize, ref.page, ref.vram, kAllPerms});
      if (cached_[c.ctx].size() > 512) lost_ = true;
    }
    uint8_t kind = SVMDEV_ACC_KIND(c.arg[1]);
    unsigned size = SVMDEV_ACC_SIZE(c.arg[1]);
    for (const Candidate& k : allowed)
      if (!k.vram && k.addr < Testbed::kPtPool) return;  // the rings: rewritten by the device
    if (stalled) {
      // The device walked and missed: the reference must agree.
      CHECK(ref.kind == RefXlate::kFault);
      return;
    }
    if (done == nullptr) return;
    if (done->status == SVMDEV_STATUS_DMA_ERROR && dma_faults_) return;
    if (done->status != SVMDEV_STATUS_OK) {
      // A walk error only happens on a walk, which sees what the reference sees.
      if (done->status == SVMDEV_STATUS_BAD_PTE || done->status == SVMDEV_STATUS_BAD_VRAM)
        CHECK(ref.kind == RefXlate::kError && ref.status == done->status);
      return;
    }
    CHECK(!allowed.empty());
    uint64_t mask = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
    bool match = false;
    for (const Candidate& k : allowed) {
      uint64_t now = Load(k.vram, k.addr, size);
      switch (kind) {
        case SVMDEV_ACC_READ: match |= done->value == k.before; break;
        case SVMDEV_ACC_WRITE: match |= now == (c.arg[2] & mask); break;
        default: match |= done->value == k.before; break;
      }
    }
    CHECK(match);
  }

  // Runs one command and checks what came back.
  void Command(const svmdev_cmd& c) {
    std::vector<Candidate> allowed;
    RefXlate ref;
    unsigned size = SVMDEV_ACC_SIZE(c.arg[1]);
    bool access = c.opcode == SVMDEV_OP_ACCESS && c.ctx < kContexts &&
                  !(c.flags & SVMDEV_ACC_F_BUF) && (size == 1 || size == 2 || size == 4 || size == 8);
    // After the push: the access may target the command slot itself.
    tb_.Push(c);
    if (access) allowed = Allowed(c.ctx, c.arg[0], SVMDEV_ACC_KIND(c.arg[1]), size, &ref);
    if (c.opcode == SVMDEV_OP_FAULT_REPLAY && c.ctx < kContexts) Replaying(c.ctx);
    uint64_t faults_before = tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_FAULTS));
    tb_.Doorbell();
    auto cpls = tb_.DrainCompletions();
    bool stalled = tb_.Read64(SVMDEV_REG_COUNTER(SVMDEV_CNT_FAULTS)) != faults_before;
    Collect();
    const svmdev_cpl* own = nullptr;
    for (const svmdev_cpl& k : cpls) {
      if (k.seq == c.seq && k.opcode == c.opcode) own = &k;
      Observe(k);
    }
    if (access && (own || stalled)) CheckAccess(c, own, stalled && !own, allowed, ref);
    if (c.opcode == SVMDEV_OP_ACCESS && stalled && !own) pending_[c.seq] = c;
    if (c.opcode == SVMDEV_OP_INVALIDATE && own && own->status == SVMDEV_STATUS_OK &&
        c.ctx < kContexts && !inval_games_)
      Drop(c.ctx, c.flags & SVMDEV_INV_F_ALL, c.arg[0], c.arg[1]);
  }

  // A replay walks again: whatever the tables say now may end up in the TLB.
  void Replaying(uint16_t ctx) {
    for (const auto& [seq, c] : pending_) {
      if (c.ctx != ctx) continue;
      RefXlate r = tb_.Reference(roots_[ctx], c.arg[0], SVMDEV_ACC_KIND(c.arg[1]));
      if (r.kind != RefXlate::kOk) continue;
      uint64_t psize = r.huge ? SVMDEV_HUGE_SIZE : SVMDEV_PAGE_SIZE;
      cached_[ctx].push_back({c.arg[0] & ~(psize - 1), psize, r.page, r.vram, kAllPerms});
    }
  }

  // Model updates from a completion.
  void Observe(const svmdev_cpl& k) {
    if (k.ctx >= kContexts) return;
    if (k.opcode == SVMDEV_OP_ACCESS && k.seq != 0) pending_.erase(k.seq);
    if (k.status != SVMDEV_STATUS_OK) return;
    switch (k.opcode) {
      case SVMDEV_OP_CTX_SETUP:
        live_[k.ctx] = true;
        Drop(k.ctx, true, 0, 0);
        break;
      case SVMDEV_OP_CTX_DESTROY:
        live_[k.ctx] = false;
        Drop(k.ctx, true, 0, 0);
        break;
      case SVMDEV_OP_RESET:
        for (uint16_t i = 0; i < kContexts; i++) {
          live_[i] = false;
          Drop(i, true, 0, 0);
        }
        break;
      default:
        break;
    }
  }

  void Copy(const svmdev_cmd& c) {
    bool sv = c.flags & SVMDEV_COPY_F_SRC_VRAM, dv = c.flags & SVMDEV_COPY_F_DST_VRAM;
    uint64_t src = c.arg[0], dst = c.arg[1], len = c.arg[2];
    uint8_t* vram = tb_.vram();
    if (dv) std::memcpy(scratch_->vram_before, vram, kVramSize);
    auto in_range = [&](bool in_vram, uint64_t a) {
      return in_vram ? a + len <= kVramSize : a + len <= kMemSize;
    };
    bool checkable = in_range(sv, src) && in_range(dv, dst);
    if (checkable) {
      if (!sv) Supply(src, len);
      std::memcpy(scratch_->data, sv ? vram + src : &tb_.mem[src], len);
    }
    auto cpls = tb_.Submit(c);
    Collect();
    for (const svmdev_cpl& k : cpls) Observe(k);
    const svmdev_cpl* own = nullptr;
    for (const svmdev_cpl& k : cpls)
      if (k.seq == c.seq && k.opcode == SVMDEV_OP_COPY) own = &k;
    if (own == nullptr || lost_) return;
    if (own->status == SVMDEV_STATUS_OK) {
      CHECK(checkable);
      const uint8_t* out = dv ? vram + dst : &tb_.mem[dst];
      bool overlap = sv == dv && src < dst + len && dst < src + len;
      if (!overlap || sv) CHECK(std::memcmp(out, scratch_->data, len) == 0);
    } else if (dv && own->status != SVMDEV_STATUS_DMA_ERROR) {
      // A refused copy leaves VRAM alone.
      CHECK(std::memcmp(scratch_->vram_before, vram, kVramSize) == 0);
    } else if (!checkable) {
      CHECK(own->status != SVMDEV_STATUS_OK);
    }
  }

  // Drains faults (remembering ids for replay) and any completions left.
  void Collect() {
    for (const svmdev_fault& f : tb_.DrainFaults()) {
      faults_.push_back(f.fault_id);
      if (faults_.size() > 64) faults_.erase(faults_.begin());
    }
    for (const svmdev_cpl& k : tb_.DrainCompletions()) Observe(k);
  }

  void Snapshot() {
    std::vector<uint8_t>& a = scratch_->saved;
    size_t n = Save(&a);
    CHECK(svmdev_core_load(tb_.core(), a.data(), n) == 0);
    Save(&scratch_->resaved);
    CHECK(a == scratch_->resaved);
    // A damaged blob is refused or loads into something the device survives.
    size_t at = in_->U16() % n;
    a[at] ^= static_cast<uint8_t>(in_->U8() | 1);
    if (svmdev_core_load(tb_.core(), a.data(), n) == 0) Loaded(a);
  }

  void Invariants() {
    uint32_t status = tb_.Read32(SVMDEV_REG_STATUS);
    CHECK((status & ~0xfu) == 0);
    if (status & SVMDEV_STS_ENABLED) {
      for (uint64_t reg : {SVMDEV_REG_CMDQ_ENTRIES, SVMDEV_REG_CPLQ_ENTRIES,
                           SVMDEV_REG_FLTQ_ENTRIES}) {
        uint32_t entries = tb_.Read32(reg);
        CHECK(entries >= 2 && (entries & (entries - 1)) == 0);
        CHECK(tb_.Read32(reg + 4) < entries && tb_.Read32(reg + 8) < entries);
      }
    }
    CHECK(tb_.Read32(SVMDEV_REG_ID) == SVMDEV_ID_MAGIC);
    CHECK(tb_.Read32(SVMDEV_REG_IRQ_STATUS) <= SVMDEV_IRQ_ALL);
    for (unsigned vec : tb_.irqs) CHECK(vec < SVMDEV_NUM_VECTORS);
    tb_.irqs.clear();
    tb_.errors.clear();
  }

  Input* in_;
  Testbed& tb_;
  Scratch* scratch_;
  uint64_t roots_[kContexts] = {};
  bool live_[kContexts] = {};
  std::vector<Cached> cached_[kContexts];
  std::map<uint64_t, svmdev_cmd> pending_;  // stalled accesses by seq
  std::vector<uint32_t> faults_;
  bool supplied_[(kMemSize - kDataBase) >> 12] = {};
  bool lost_ = false;         // the model no longer knows what the device may use
  bool inval_games_ = false;  // invalidations held back: stale use is allowed
  bool dma_faults_ = false;   // injected DMA failures may turn up anywhere
  bool ctl_raw_ = false;      // raw bytes went to the control channel
  bool churned_ = false;      // a long fault churn ran
};

}  // namespace
}  // namespace svmdev

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  svmdev::Input in(data, size);
  static svmdev::Testbed tb(svmdev::Fuzz::Options());
  static auto* scratch = new svmdev::Scratch;
  svmdev::Fuzz f(&in, &tb, scratch);
  f.Run();
  return 0;
}

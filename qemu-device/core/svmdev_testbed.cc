#include "svmdev_testbed.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace svmdev {

uint64_t Testbed::next_seq_ = 0;

Testbed::Testbed(const Options& opt)
    : mem(opt.mem_size),
      opt_(opt),
      dirty_((opt.mem_size + SVMDEV_PAGE_SIZE - 1) / SVMDEV_PAGE_SIZE) {
  if (opt.host_vram) host_vram_.assign(opt.vram_size, 0);
  NewCore();
}

void Testbed::Recreate() {
  svmdev_core_free(core_);
  core_ = nullptr;
  for (size_t p = 0; p < dirty_.size(); p++) {
    if (!dirty_[p]) continue;
    dirty_[p] = 0;
    uint64_t at = p * SVMDEV_PAGE_SIZE;
    std::memset(&mem[at], 0, std::min<uint64_t>(SVMDEV_PAGE_SIZE, mem.size() - at));
  }
  if (!host_vram_.empty()) std::memset(host_vram_.data(), 0, host_vram_.size());
  irqs.clear();
  errors.clear();
  dma_writes = 0;
  ctl_out_.clear();
  pt_next_ = kPtPool;
  tail_valid_ = false;
  scheduled_ = false;
  auto_continue = true;
  next_seq_ = 0;
  NewCore();
}

void Testbed::NewCore() {
  svmdev_config cfg{};
  cfg.vram_size = opt_.vram_size;
  cfg.num_contexts = opt_.contexts;
  cfg.flags = SVMDEV_CORE_DETERMINISTIC;
  cfg.slice_commands = opt_.slice_commands;
  cfg.slice_copy_bytes = opt_.slice_copy_bytes;
  if (opt_.host_vram) cfg.vram = host_vram_.data();
  svmdev_host_ops ops{};
  ops.opaque = this;
  ops.guest_error = [](void* o, const char* msg) {
    static_cast<Testbed*>(o)->errors.emplace_back(msg);
  };
  ops.dma_read = DmaRead;
  ops.dma_write = DmaWrite;
  ops.raise_irq = [](void* o, unsigned vec) { static_cast<Testbed*>(o)->irqs.push_back(vec); };
  ops.ctl_send = [](void* o, const void* buf, size_t len) {
    auto* tb = static_cast<Testbed*>(o);
    const auto* p = static_cast<const uint8_t*>(buf);
    tb->ctl_out_.insert(tb->ctl_out_.end(), p, p + len);
  };
  ops.schedule = [](void* o) { static_cast<Testbed*>(o)->scheduled_ = true; };
  char err[256] = "";
  core_ = svmdev_core_new(&cfg, &ops, err, sizeof(err));
  if (core_ == nullptr) throw std::runtime_error(err);
}

Testbed::~Testbed() { svmdev_core_free(core_); }

bool Testbed::InMem(uint64_t addr, uint64_t len) const {
  return addr <= mem.size() && mem.size() - addr >= len;
}

void Testbed::Touch(uint64_t addr, uint64_t len) {
  if (len == 0) return;
  for (uint64_t p = addr / SVMDEV_PAGE_SIZE; p <= (addr + len - 1) / SVMDEV_PAGE_SIZE; p++)
    dirty_[p] = 1;
}

// Fake DMA fails as a whole, before touching anything, like an unassigned
// address range does in QEMU.
int Testbed::DmaRead(void* opaque, uint64_t addr, void* buf, uint64_t len) {
  auto* tb = static_cast<Testbed*>(opaque);
  if (tb->on_dma_read) tb->on_dma_read(addr, len);
  if (!tb->InMem(addr, len)) return -1;
  std::memcpy(buf, &tb->mem[addr], len);
  return 0;
}

int Testbed::DmaWrite(void* opaque, uint64_t addr, const void* buf, uint64_t len) {
  auto* tb = static_cast<Testbed*>(opaque);
  if (!tb->InMem(addr, len)) return -1;
  std::memcpy(&tb->mem[addr], buf, len);
  tb->Touch(addr, len);
  tb->dma_writes++;
  if (tb->on_dma_write) tb->on_dma_write(addr, len);
  return 0;
}

uint32_t Testbed::Read32(uint64_t off) const {
  return static_cast<uint32_t>(svmdev_core_mmio_read(core_, off, 4));
}
uint64_t Testbed::Read64(uint64_t off) const { return svmdev_core_mmio_read(core_, off, 8); }
void Testbed::Write32(uint64_t off, uint32_t v) { svmdev_core_mmio_write(core_, off, v, 4); }
void Testbed::Write64(uint64_t off, uint64_t v) { svmdev_core_mmio_write(core_, off, v, 8); }

bool Testbed::Enable() {
  Write64(SVMDEV_REG_CMDQ_BASE, kCmdq);
  Write32(SVMDEV_REG_CMDQ_ENTRIES, kEntries);
  Write64(SVMDEV_REG_CPLQ_BASE, kCplq);
  Write32(SVMDEV_REG_CPLQ_ENTRIES, kEntries);
  Write64(SVMDEV_REG_FLTQ_BASE, kFltq);
  Write32(SVMDEV_REG_FLTQ_ENTRIES, kEntries);
  Write32(SVMDEV_REG_IRQ_MASK, 0);
  Write32(SVMDEV_REG_CONTROL, SVMDEV_CTRL_ENABLE);
  return Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED;
}

void Testbed::Push(const svmdev_cmd& cmd) {
  uint32_t entries = Read32(SVMDEV_REG_CMDQ_ENTRIES);
  uint64_t base = Read64(SVMDEV_REG_CMDQ_BASE);
  if (entries == 0) return;
  uint32_t tail = pending_tail();
  uint64_t at = base + uint64_t{tail} * sizeof(cmd);
  if (InMem(at, sizeof(cmd))) {
    std::memcpy(&mem[at], &cmd, sizeof(cmd));
    Touch(at, sizeof(cmd));
  }
  tail_ = (tail + 1) % entries;
  tail_valid_ = true;
}

void Testbed::Doorbell() {
  if (tail_valid_) Write32(SVMDEV_REG_CMDQ_TAIL, tail_);
  tail_valid_ = false;
}

std::vector<svmdev_cpl> Testbed::Submit(const svmdev_cmd& cmd) {
  Push(cmd);
  Doorbell();
  return DrainCompletions();
}

unsigned Testbed::RunScheduled() {
  unsigned slices = 0;
  while (scheduled_) {
    scheduled_ = false;
    svmdev_core_continue(core_);
    slices++;
  }
  return slices;
}

std::vector<svmdev_cpl> Testbed::DrainCompletions() {
  if (auto_continue) RunScheduled();
  std::vector<svmdev_cpl> out;
  uint32_t entries = Read32(SVMDEV_REG_CPLQ_ENTRIES);
  uint64_t base = Read64(SVMDEV_REG_CPLQ_BASE);
  if (!(Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED) || entries == 0) return out;
  // Each head write may let held completions in: loop until none are left.
  for (;;) {
    uint32_t head = Read32(SVMDEV_REG_CPLQ_HEAD);
    uint32_t tail = Read32(SVMDEV_REG_CPLQ_TAIL);
    if (head == tail) break;
    while (head != tail) {
      svmdev_cpl c{};
      if (InMem(base + uint64_t{head} * sizeof(c), sizeof(c)))
        std::memcpy(&c, &mem[base + uint64_t{head} * sizeof(c)], sizeof(c));
      out.push_back(c);
      head = (head + 1) % entries;
    }
    Write32(SVMDEV_REG_CPLQ_HEAD, head);
    if (auto_continue) RunScheduled();
    if (!(Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED)) break;
  }
  return out;
}

std::vector<svmdev_fault> Testbed::DrainFaults() {
  if (auto_continue) RunScheduled();
  std::vector<svmdev_fault> out;
  uint32_t entries = Read32(SVMDEV_REG_FLTQ_ENTRIES);
  uint64_t base = Read64(SVMDEV_REG_FLTQ_BASE);
  if (!(Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED) || entries == 0) return out;
  for (;;) {
    uint32_t head = Read32(SVMDEV_REG_FLTQ_HEAD);
    uint32_t tail = Read32(SVMDEV_REG_FLTQ_TAIL);
    if (head == tail) break;
    while (head != tail) {
      svmdev_fault f{};
      if (InMem(base + uint64_t{head} * sizeof(f), sizeof(f)))
        std::memcpy(&f, &mem[base + uint64_t{head} * sizeof(f)], sizeof(f));
      out.push_back(f);
      head = (head + 1) % entries;
    }
    Write32(SVMDEV_REG_FLTQ_HEAD, head);
    if (auto_continue) RunScheduled();
    if (!(Read32(SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED)) break;
  }
  return out;
}

svmdev_cmd Testbed::Cmd(uint8_t op, uint16_t ctx, uint64_t a0, uint64_t a1, uint64_t a2,
                        uint8_t flags) {
  svmdev_cmd c{};
  c.opcode = op;
  c.flags = flags;
  c.ctx = ctx;
  c.seq = ++next_seq_;
  c.arg[0] = a0;
  c.arg[1] = a1;
  c.arg[2] = a2;
  return c;
}

svmdev_cmd Testbed::AccessCmd(uint16_t ctx, uint64_t va, uint8_t kind, uint16_t size,
                              uint64_t value, uint8_t aop, uint64_t compare) {
  svmdev_cmd c = Cmd(SVMDEV_OP_ACCESS, ctx, va, SVMDEV_ACC_ARG1(kind, size, aop), value);
  c.arg[3] = compare;
  return c;
}

uint64_t Testbed::NewTable() {
  uint64_t t = pt_next_;
  if (!InMem(t, SVMDEV_PAGE_SIZE) || t + SVMDEV_PAGE_SIZE > opt_.data_base)
    throw std::runtime_error("testbed: page-table pool exhausted");
  pt_next_ += SVMDEV_PAGE_SIZE;
  std::memset(&mem[t], 0, SVMDEV_PAGE_SIZE);
  Touch(t, SVMDEV_PAGE_SIZE);
  return t;
}

uint64_t Testbed::LeafSlot(uint64_t root, uint64_t va, bool huge) {
  uint64_t table = root;
  int leaf_level = huge ? 1 : 0;
  for (int level = 3; level > leaf_level; level--) {
    uint64_t slot = table + 8 * SVMDEV_PT_INDEX(va, static_cast<unsigned>(level));
    uint64_t pte = MemRead(slot, 8);
    if (!(pte & SVMDEV_PTE_VALID)) {
      pte = NewTable() | SVMDEV_PTE_VALID;
      MemWrite(slot, pte, 8);
    } else if (pte & SVMDEV_PTE_HUGE) {
      return 0;
    }
    table = pte & SVMDEV_PTE_ADDR_MASK;
  }
  return table + 8 * SVMDEV_PT_INDEX(va, static_cast<unsigned>(leaf_level));
}

void Testbed::Map(uint64_t root, uint64_t va, uint64_t target, uint64_t bits, bool huge) {
  uint64_t slot = LeafSlot(root, va, huge);
  if (slot == 0) throw std::runtime_error("testbed: huge page in the way");
  MemWrite(slot, target | bits | (huge ? SVMDEV_PTE_HUGE : 0), 8);
}

RefXlate Testbed::Reference(uint64_t root, uint64_t va, uint8_t kind) {
  RefXlate r;
  uint64_t table = root;
  const uint64_t leaf_only = SVMDEV_PTE_READ | SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC |
                             SVMDEV_PTE_VRAM | SVMDEV_PTE_HUGE;
  for (int level = 3; level >= 0; level--) {
    uint64_t slot = table + 8 * ((va >> (12 + 9 * level)) & 511);
    if (on_dma_read) on_dma_read(slot, 8);
    if (!InMem(slot, 8)) {
      r.status = SVMDEV_STATUS_DMA_ERROR;
      return r;
    }
    uint64_t pte = MemRead(slot, 8);
    if (!(pte & SVMDEV_PTE_VALID)) {
      r.kind = RefXlate::kFault;
      r.status = SVMDEV_FAULT_NOT_PRESENT;
      return r;
    }
    uint64_t addr = pte & SVMDEV_PTE_ADDR_MASK;
    bool leaf = level == 0 || (level == 1 && (pte & SVMDEV_PTE_HUGE));
    uint64_t size = level == 1 ? (2u << 20) : 4096;
    if ((pte & SVMDEV_PTE_RSVD_MASK) || (!leaf && (pte & leaf_only)) ||
        (leaf && level == 0 && (pte & SVMDEV_PTE_HUGE)) || (leaf && addr % size)) {
      r.status = SVMDEV_STATUS_BAD_PTE;
      return r;
    }
    if (!leaf) {
      table = addr;
      continue;
    }
    if ((pte & SVMDEV_PTE_VRAM) && addr + size > opt_.vram_size) {
      r.status = SVMDEV_STATUS_BAD_VRAM;
      return r;
    }
    uint64_t need = kind == SVMDEV_ACC_READ    ? SVMDEV_PTE_READ
                    : kind == SVMDEV_ACC_WRITE ? SVMDEV_PTE_WRITE
                                               : SVMDEV_PTE_ATOMIC;
    if (!(pte & need)) {
      r.kind = RefXlate::kFault;
      r.status = SVMDEV_FAULT_PERM;
      return r;
    }
    r.kind = RefXlate::kOk;
    r.vram = pte & SVMDEV_PTE_VRAM;
    r.page = addr;
    r.huge = level == 1;
    r.addr = addr + (va & (size - 1));
    return r;
  }
  return r;
}

uint64_t Testbed::MemRead(uint64_t addr, unsigned size) const {
  uint64_t v = 0;
  if (InMem(addr, size)) std::memcpy(&v, &mem[addr], size);
  return v;
}

void Testbed::MemWrite(uint64_t addr, uint64_t value, unsigned size) {
  if (InMem(addr, size)) {
    std::memcpy(&mem[addr], &value, size);
    Touch(addr, size);
  }
}

void Testbed::CtlSend(uint8_t type, uint32_t tag, const void* payload, uint16_t len) {
  std::vector<uint8_t> msg(sizeof(svmdev_ctl_hdr) + len);
  svmdev_ctl_hdr h{SVMDEV_CTL_MAGIC, type, len, tag};
  std::memcpy(msg.data(), &h, sizeof(h));
  if (len) std::memcpy(msg.data() + sizeof(h), payload, len);
  svmdev_core_ctl_input(core_, msg.data(), msg.size());
}

std::vector<CtlMessage> Testbed::CtlReceive() {
  std::vector<CtlMessage> out;
  size_t pos = 0;
  while (ctl_out_.size() - pos >= sizeof(svmdev_ctl_hdr)) {
    CtlMessage m;
    std::memcpy(&m.hdr, &ctl_out_[pos], sizeof(m.hdr));
    if (ctl_out_.size() - pos - sizeof(m.hdr) < m.hdr.len) break;
    m.payload.assign(ctl_out_.begin() + static_cast<long>(pos + sizeof(m.hdr)),
                     ctl_out_.begin() + static_cast<long>(pos + sizeof(m.hdr) + m.hdr.len));
    pos += sizeof(m.hdr) + m.hdr.len;
    out.push_back(std::move(m));
  }
  ctl_out_.erase(ctl_out_.begin(), ctl_out_.begin() + static_cast<long>(pos));
  return out;
}

}  // namespace svmdev

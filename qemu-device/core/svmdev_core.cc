// svmdev core: the C ABI of svmdev_core.h. The core itself is declared in
// svmdev_core_state.h, which names the files that define it; the snapshot
// entry points are in svmdev_snapshot.cc.
#include "svmdev/svmdev_core.h"

#include <cstdio>
#include <new>

#include "svmdev_core_state.h"

// The core's own types and limits (svmdev_core_state.h).
using namespace svmdev::core_detail;

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

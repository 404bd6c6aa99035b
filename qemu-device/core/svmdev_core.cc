// svmdev core: the device's behaviour behind the C ABI of svmdev_core.h.
#include "svmdev/svmdev_core.h"

#include <cstdio>
#include <new>

#include "svmdev/svmdev_hw.h"

struct svmdev_core {
  svmdev_config cfg;
  svmdev_host_ops ops;

  void GuestError(const char* msg) const {
    if (ops.guest_error) ops.guest_error(ops.opaque, msg);
  }
};

extern "C" svmdev_core* svmdev_core_new(const svmdev_config* cfg, const svmdev_host_ops* ops,
                                        char* err, size_t errlen) {
  if (cfg == nullptr || ops == nullptr) {
    std::snprintf(err, errlen, "svmdev: missing configuration");
    return nullptr;
  }
  if (cfg->vram_size == 0 || cfg->vram_size % 4096 != 0) {
    std::snprintf(err, errlen, "svmdev: vram size %llu is not a non-zero multiple of 4096",
                  static_cast<unsigned long long>(cfg->vram_size));
    return nullptr;
  }
  auto* core = new (std::nothrow) svmdev_core{*cfg, *ops};
  if (core == nullptr) std::snprintf(err, errlen, "svmdev: out of memory");
  return core;
}

extern "C" void svmdev_core_free(svmdev_core* core) { delete core; }

extern "C" void svmdev_core_reset(svmdev_core*) {}

extern "C" uint64_t svmdev_core_mmio_read(svmdev_core* core, uint64_t offset, unsigned size) {
  if (size != 4) {
    core->GuestError("svmdev: register read of unsupported width");
    return ~0ull;
  }
  switch (offset) {
    case SVMDEV_REG_ID:
      return SVMDEV_ID_MAGIC;
    case SVMDEV_REG_VERSION:
      return SVMDEV_VERSION;
    default:
      core->GuestError("svmdev: read of an unknown register");
      return ~0ull;
  }
}

extern "C" void svmdev_core_mmio_write(svmdev_core* core, uint64_t, uint64_t, unsigned) {
  core->GuestError("svmdev: write to a read-only or unknown register");
}

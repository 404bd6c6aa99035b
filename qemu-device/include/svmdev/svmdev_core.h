/*
 * The C ABI of the svmdev core: what a host (the QEMU glue, the unit tests,
 * the in-process fuzzers) calls, and the callbacks it supplies. The core knows
 * nothing of QEMU.
 */
#ifndef SVMDEV_CORE_H
#define SVMDEV_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct svmdev_core svmdev_core;

/* Services the host gives the core. */
typedef struct svmdev_host_ops {
	void *opaque;
	/* Guest log of a malformed access: the device refuses it and goes on. */
	void (*guest_error)(void *opaque, const char *msg);
} svmdev_host_ops;

typedef struct svmdev_config {
	uint64_t vram_size;	/* bytes of device-private memory */
} svmdev_config;

/* Returns NULL and fills err when the configuration is unusable. */
svmdev_core *svmdev_core_new(const svmdev_config *cfg, const svmdev_host_ops *ops,
			     char *err, size_t errlen);
void svmdev_core_free(svmdev_core *core);
void svmdev_core_reset(svmdev_core *core);

/* BAR0 accesses; size is 1, 2, 4 or 8 bytes. */
uint64_t svmdev_core_mmio_read(svmdev_core *core, uint64_t offset, unsigned size);
void svmdev_core_mmio_write(svmdev_core *core, uint64_t offset, uint64_t value,
			    unsigned size);

#ifdef __cplusplus
}
#endif

#endif /* SVMDEV_CORE_H */

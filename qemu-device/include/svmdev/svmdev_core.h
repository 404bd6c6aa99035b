/*
 * The C ABI of the svmdev core: what a host (the QEMU glue, the unit tests,
 * the in-process fuzzers) calls, and the callbacks it supplies. The core knows
 * nothing of QEMU; it is single-threaded and calls back only from inside
 * these functions. A register access that arrives while the core is inside
 * one of them (a DMA or an interrupt aimed back at the device) is refused.
 */
#ifndef SVMDEV_CORE_H
#define SVMDEV_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct svmdev_core svmdev_core;

/* Services the host gives the core; those marked optional may be NULL. */
typedef struct svmdev_host_ops {
	void *opaque;
	/* Optional: log of a malformed guest action: the device refuses it and goes on. */
	void (*guest_error)(void *opaque, const char *msg);
	/* Guest-physical DMA; return 0 on success, non-zero when it failed. */
	int (*dma_read)(void *opaque, uint64_t addr, void *buf, uint64_t len);
	int (*dma_write)(void *opaque, uint64_t addr, const void *buf, uint64_t len);
	/* Signal an MSI-X vector (SVMDEV_VEC_*). */
	void (*raise_irq)(void *opaque, unsigned vector);
	/* Optional: bytes for the host control channel (replies, events). */
	void (*ctl_send)(void *opaque, const void *buf, size_t len);
	/* Optional: host clock for event stamps outside deterministic mode. */
	uint64_t (*now_ns)(void *opaque);
        /*
         * Optional: the core did one slice of work and more is left; call
         * svmdev_core_continue() soon, outside the current call (a bottom
         * half). Without it the core does all the work in the call that
         * started it, however long that takes.
         */
        void (*schedule)(void *opaque);
} svmdev_host_ops;

/* Event stamps count events instead of reading the host clock. */
#define SVMDEV_CORE_DETERMINISTIC (1u << 0)

typedef struct svmdev_config {
	uint64_t vram_size;	/* bytes, a non-zero multiple of 4096 */
	/* Host-owned VRAM of vram_size bytes (so the host can snapshot it),
	 * or NULL: the core allocates and zeroes its own. */
	void *vram;
	uint32_t num_contexts;	/* 1..4096; 0 means 16 */
	uint32_t flags;		/* SVMDEV_CORE_* */
        /* Work of one slice (with a schedule callback); 0 means the default. */
        uint32_t slice_commands;   /* commands consumed, default 256 */
        uint32_t slice_copy_bytes; /* COPY bytes moved, default 4 MiB */
} svmdev_config;

/* Returns NULL and fills err when the configuration is unusable. */
svmdev_core *svmdev_core_new(const svmdev_config *cfg, const svmdev_host_ops *ops,
			     char *err, size_t errlen);
void svmdev_core_free(svmdev_core *core);
/* Power-on reset; VRAM contents and host-channel settings are kept. */
void svmdev_core_reset(svmdev_core *core);

/* BAR0 accesses; size is 1, 2, 4 or 8 bytes. */
uint64_t svmdev_core_mmio_read(svmdev_core *core, uint64_t offset, unsigned size);
void svmdev_core_mmio_write(svmdev_core *core, uint64_t offset, uint64_t value,
			    unsigned size);

/* Runs the next slice of work after the schedule callback asked for it. */
void svmdev_core_continue(svmdev_core *core);

/* Bytes received on the host control channel, in any chunking. */
void svmdev_core_ctl_input(svmdev_core *core, const void *buf, size_t len);
/* The channel was connected or closed: a partial message is dropped. */
void svmdev_core_ctl_reset(svmdev_core *core);

/* The VRAM the core uses (the host's when it gave one). */
uint8_t *svmdev_core_vram(svmdev_core *core);

/*
 * Device state without VRAM, for snapshots. save returns the bytes needed
 * and writes them only if len is large enough. load returns 0, or -1 (state
 * unchanged) when the blob is malformed or made with another configuration.
 */
size_t svmdev_core_save(const svmdev_core *core, void *buf, size_t len);
int svmdev_core_load(svmdev_core *core, const void *buf, size_t len);
/* The largest blob save can produce with this configuration. */
size_t svmdev_core_state_max(const svmdev_core *core);

#ifdef __cplusplus
}
#endif

#endif /* SVMDEV_CORE_H */

/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * svmdev driver interface on /dev/svmdevN, shared by the driver and the
 * in-guest executor. Every field is a __u64 marked (in), (out) or (in/out).
 *
 * An open file is bound to one address space (SVMDEV_IOC_BIND, the caller's
 * mm) and one device context. Addresses are user virtual addresses of that
 * mm; ranges are page aligned and given in pages.
 */
#ifndef _UAPI_SVMDEV_UAPI_H
#define _UAPI_SVMDEV_UAPI_H

#include <linux/types.h>
#include <linux/ioctl.h>

/*
 * Notifier personalities (SVMDEV_IOC_BIND.personality). Each is a legal use
 * of the mmu_notifier API modelled on real drivers; the default is NONE.
 */
#define SVMDEV_PERS_NONE		0	/* interval notifiers only */
#define SVMDEV_PERS_REFUSE_NONBLOCK	1	/* mm notifier: -EAGAIN on every non-blockable start */
#define SVMDEV_PERS_BLOCK_SHARED	2	/* mm notifier: start waits on the fault-path lock */
#define SVMDEV_PERS_SLOW		3	/* mm notifier: blockable start sleeps ~1 ms */
/*
 * While a file with one of these personalities is open, the device's
 * CPU-fault path (migrate_to_ram) takes a device-wide lock and brings back an
 * aligned window of pages around the fault, as amdgpu and nouveau do: 16
 * pages, one page, or 512 (2 MiB, amdgpu's granule). With files of several
 * open on one device, the largest window applies.
 */
#define SVMDEV_PERS_SERIAL_TO_RAM	4
#define SVMDEV_PERS_SERIAL_TO_RAM_PAGE	5
#define SVMDEV_PERS_SERIAL_TO_RAM_2M	6
#define SVMDEV_PERS_MAX			6
#define SVMDEV_TO_RAM_WINDOW		16
#define SVMDEV_TO_RAM_WINDOW_2M		512

/**
 * struct svmdev_bind - bind the file to the caller's address space
 * @personality: (in) SVMDEV_PERS_*
 * @flags: (in) must be 0
 * @ctx: (out) device context index
 * @device: (out) device index (the N of /dev/svmdevN)
 */
struct svmdev_bind {
	__u64 personality;
	__u64 flags;
	__u64 ctx;
	__u64 device;
};

/*
 * SVMDEV_IOC_{MAP_PRESENT,MIRROR,MIGRATE,EXCLUSIVE,RELEASE} flags.
 * MAP_PRESENT maps what the CPU already maps (no CPU faults); MIRROR faults
 * the range in first (hmm_range_fault), as test_hmm's mirror does; RELEASE drops the device mappings of the range, or with
 * npages == 0 evicts every page of the device's memory to system memory.
 */
#define SVMDEV_RANGE_F_WRITE	(1u << 0)	/* MIRROR: ask for write access */
#define SVMDEV_RANGE_F_TO_SYS	(1u << 1)	/* MIGRATE: device -> system (else system -> device) */

/**
 * struct svmdev_range_op - an operation on [addr, addr + npages pages)
 * @addr: (in) page-aligned start
 * @npages: (in) pages
 * @flags: (in) SVMDEV_RANGE_F_*
 * @done: (out) pages mapped, migrated, made exclusive or released
 * @retries: (out) retry-loop iterations the operation needed
 */
struct svmdev_range_op {
	__u64 addr;
	__u64 npages;
	__u64 flags;
	__u64 done;
	__u64 retries;
};

/* SVMDEV_IOC_ACCESS kinds and atomic ops: the device's own encoding */
#define SVMDEV_UACC_READ	0
#define SVMDEV_UACC_WRITE	1
#define SVMDEV_UACC_ATOMIC	2
#define SVMDEV_UAOP_ADD		0
#define SVMDEV_UAOP_XCHG	1
#define SVMDEV_UAOP_CMPXCHG	2
#define SVMDEV_UAOP_OR		3
#define SVMDEV_UAOP_AND		4

/**
 * struct svmdev_access - one device access (the device's ACCESS command)
 * @addr: (in) virtual address; the access must not cross a 4 KiB page
 * @kind: (in) SVMDEV_UACC_*
 * @size: (in) bytes: 1, 2, 4, 8 inline; up to 4096 through @ptr
 * @aop: (in) SVMDEV_UAOP_* for atomics (size 4 or 8)
 * @value: (in/out) value to write / atomic operand; out: value read or old value
 * @compare: (in) CMPXCHG compare value
 * @ptr: (in) user buffer for size > 8 (read: filled, write: source); else 0
 * @status: (out) device completion status (SVMDEV_STATUS_*)
 * @faults: (out) device faults the access raised
 */
struct svmdev_access {
	__u64 addr;
	__u64 kind;
	__u64 size;
	__u64 aop;
	__u64 value;
	__u64 compare;
	__u64 ptr;
	__u64 status;
	__u64 faults;
};

/* SVMDEV_IOC_SNAPSHOT: one byte per page, what the device page table holds */
#define SVMDEV_SNAP_VALID	(1u << 0)
#define SVMDEV_SNAP_READ	(1u << 1)
#define SVMDEV_SNAP_WRITE	(1u << 2)
#define SVMDEV_SNAP_ATOMIC	(1u << 3)
#define SVMDEV_SNAP_VRAM	(1u << 4)

/**
 * struct svmdev_snapshot - read the device page table for a range
 * @addr: (in) page-aligned start
 * @npages: (in) pages, at most 65536
 * @ptr: (in) user array of @npages bytes, filled with SVMDEV_SNAP_*
 * @valid: (out) pages with a valid device mapping
 */
struct svmdev_snapshot {
	__u64 addr;
	__u64 npages;
	__u64 ptr;
	__u64 valid;
};

/**
 * struct svmdev_knobs - fault injection and test-only breakage, per file
 *
 * Injection knobs are legal driver behaviour under failure: they make the
 * driver take its error paths. Breakage knobs make the driver wrong on
 * purpose, to prove that an oracle fires; each is off when 0.
 *
 * @fail_vram_alloc: (in) fail this many device-page allocations, and the
 *	allocations of system pages in CPU faults on device pages of the
 *	file's address space (migrate_to_ram has no file: it takes the
 *	counts of a file of the faulting mm on the device)
 * @fail_copy: (in) treat this many copy-engine completions as failed, those
 *	of such CPU faults included
 * @fault_delay_ms: (in) sleep this long before handling each device fault
 * @break_skip_invalidate: (in) ignore this many interval invalidations
 * @break_livelock: (in) non-zero: the fault retry loop never commits
 * @break_leak_page: (in) leak a reference to this many faulted pages
 * @break_imbalance: (in) count this many extra invalidate_range_start calls
 * @break_fence_wait: (in) non-zero: a fence the device never acknowledges is
 *	waited for for ever, instead of restarting the rings after
 *	fence_timeout_ms
 */
struct svmdev_knobs {
	__u64 fail_vram_alloc;
	__u64 fail_copy;
	__u64 fault_delay_ms;
	__u64 break_skip_invalidate;
	__u64 break_livelock;
	__u64 break_leak_page;
	__u64 break_imbalance;
	__u64 break_fence_wait;
};

/* driver counters, SVMDEV_CTR_* index svmdev_counters.drv[] */
#define SVMDEV_CTR_FAULTS		0	/* fault records handled */
#define SVMDEV_CTR_FAULT_REPLAYS	1
#define SVMDEV_CTR_FAULT_CANCELS	2
#define SVMDEV_CTR_HMM_BUSY		3	/* hmm_range_fault() returned -EBUSY */
#define SVMDEV_CTR_READ_RETRY		4	/* mmu_interval_read_retry() said retry */
#define SVMDEV_CTR_MIGRATE_RETRY	5	/* always 0: no migration window is retried */
#define SVMDEV_CTR_EXCL_RETRY		6	/* device-exclusive loop retried */
#define SVMDEV_CTR_INVALIDATIONS	7	/* interval invalidations handled */
#define SVMDEV_CTR_INVAL_NONBLOCK_FAIL	8	/* non-blockable invalidations refused */
#define SVMDEV_CTR_FENCE_TIMEOUTS	9	/* fence waits that passed the bound */
#define SVMDEV_CTR_TO_DEV		10	/* pages migrated to VRAM */
#define SVMDEV_CTR_TO_RAM		11	/* pages migrated to system memory */
#define SVMDEV_CTR_CPU_FAULTS		12	/* migrate_to_ram() calls */
#define SVMDEV_CTR_EVICTED		13	/* pages evicted for space */
#define SVMDEV_CTR_LIVELOCK		14	/* livelock reports */
#define SVMDEV_CTR_COPY_ERRORS		15
#define SVMDEV_CTR_DEV_ERRORS		16	/* error interrupts */
#define SVMDEV_CTR_VRAM_FREE		17	/* snapshot: free device pages */
#define SVMDEV_CTR_RING_RESTARTS	18	/* rings restarted: work in flight lost */
#define SVMDEV_CTR_EXCL_THP		19	/* device-exclusive refused: THP tail page */
#define SVMDEV_NUM_CTRS			20

/**
 * struct svmdev_counters - counters of the device, driver and this file
 * @hw: (out) device counters, SVMDEV_CNT_* of svmdev_hw.h
 * @drv: (out) driver counters of the device, SVMDEV_CTR_*
 * @mn_starts: (out) invalidate_range_start calls seen on this file's mm
 * @mn_ends: (out) invalidate_range_end calls
 * @mn_refused: (out) starts refused with -EAGAIN by the personality
 * @balanced: (out) 1 if no start is outstanding
 */
struct svmdev_counters {
	__u64 hw[16];
	__u64 drv[32];
	__u64 mn_starts;
	__u64 mn_ends;
	__u64 mn_refused;
	__u64 balanced;
};

#define SVMDEV_IOC_MAGIC	'S'
#define SVMDEV_IOC_BIND		_IOWR(SVMDEV_IOC_MAGIC, 0x00, struct svmdev_bind)
#define SVMDEV_IOC_MAP_PRESENT	_IOWR(SVMDEV_IOC_MAGIC, 0x01, struct svmdev_range_op)
#define SVMDEV_IOC_MIRROR	_IOWR(SVMDEV_IOC_MAGIC, 0x02, struct svmdev_range_op)
#define SVMDEV_IOC_MIGRATE	_IOWR(SVMDEV_IOC_MAGIC, 0x03, struct svmdev_range_op)
#define SVMDEV_IOC_ACCESS	_IOWR(SVMDEV_IOC_MAGIC, 0x04, struct svmdev_access)
#define SVMDEV_IOC_SNAPSHOT	_IOWR(SVMDEV_IOC_MAGIC, 0x05, struct svmdev_snapshot)
#define SVMDEV_IOC_EXCLUSIVE	_IOWR(SVMDEV_IOC_MAGIC, 0x06, struct svmdev_range_op)
#define SVMDEV_IOC_RELEASE	_IOWR(SVMDEV_IOC_MAGIC, 0x07, struct svmdev_range_op)
#define SVMDEV_IOC_KNOBS	_IOW(SVMDEV_IOC_MAGIC, 0x08, struct svmdev_knobs)
#define SVMDEV_IOC_COUNTERS	_IOR(SVMDEV_IOC_MAGIC, 0x09, struct svmdev_counters)
#define SVMDEV_IOC_CHECK	_IOR(SVMDEV_IOC_MAGIC, 0x0a, struct svmdev_counters)

#endif /* _UAPI_SVMDEV_UAPI_H */

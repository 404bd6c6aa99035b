/* SPDX-License-Identifier: GPL-2.0 */
/*
 * svmdev guest driver: the structures shared by its files.
 *
 * Lifetimes, one struct each:
 *   struct svmdev        one PCI device (probe .. remove, then last file close)
 *   struct svmdev_mirror one open file bound to an mm and a device context
 *   struct svmdev_range  one mirrored VA chunk with its interval notifier
 *   struct svmdev_req    one command in flight (on the submitter's stack)
 *
 * Lock order: mirror->fault_lock -> mirror->pt_lock -> sdev->q_lock.
 * Nothing allocates memory with reclaim while holding fault_lock or pt_lock:
 * both are taken from mmu notifier callbacks, which reclaim can call.
 */
#ifndef SVMDEV_H
#define SVMDEV_H

#include <linux/completion.h>
#include <linux/dmapool.h>
#include <linux/hmm.h>
#include <linux/kref.h>
#include <linux/memremap.h>
#include <linux/miscdevice.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "svmdev/svmdev_hw.h"
#include "svmdev/svmdev_uapi.h"

#define SVMDEV_CMDQ_ENTRIES	256
#define SVMDEV_CPLQ_ENTRIES	1024
#define SVMDEV_FLTQ_ENTRIES	512
#define SVMDEV_MAX_INFLIGHT	1024	/* request slots, seq = gen << 16 | slot */

/* a mirrored range is one naturally aligned chunk of this size */
#define SVMDEV_RANGE_SHIFT	21
#define SVMDEV_RANGE_SIZE	(1UL << SVMDEV_RANGE_SHIFT)
#define SVMDEV_RANGE_PAGES	(SVMDEV_RANGE_SIZE >> PAGE_SHIFT)

/* invalid-entry software bit: the entry's DMA mapping awaits unmapping */
#define SVMDEV_PTE_SW_UNMAP	(1ull << 6)

/*
 * The retry loops and the outcomes of an interval invalidation, as
 * livelock reports and traces name them: EM(value, name) for each entry,
 * EMe for the last, expanded by whoever includes the list.
 */
#define SVMDEV_LOOPS						\
	EM(SVMDEV_LOOP_RANGE_FAULT,	"svmdev_range_fault")	\
	EM(SVMDEV_LOOP_EXCLUSIVE,	"svmdev_exclusive")	\
	EM(SVMDEV_LOOP_SNAPSHOT,	"dmirror_snapshot")	\
	EMe(SVMDEV_LOOP_SUBMIT,		"svmdev_submit")

#define SVMDEV_INVAL_OUTCOMES					\
	EM(SVMDEV_INVAL_CLEARED,	"cleared")		\
	EM(SVMDEV_INVAL_OWN_EXCLUSIVE,	"own_exclusive")	\
	EM(SVMDEV_INVAL_SKIPPED,	"skipped")		\
	EM(SVMDEV_INVAL_CONTENDED,	"contended")		\
	EMe(SVMDEV_INVAL_FENCE_PENDING,	"fence_pending")

#undef EM
#undef EMe
#define EM(a, b)	a,
#define EMe(a, b)	a

enum svmdev_loop { SVMDEV_LOOPS };
enum svmdev_inval_outcome { SVMDEV_INVAL_OUTCOMES };

#undef EM
#undef EMe

extern unsigned int svmdev_livelock_bound;
extern unsigned int svmdev_prefetch_pages;
extern unsigned int svmdev_fence_timeout_ms;

/* One command in flight, matched to its completion by seq. */
struct svmdev_req {
	struct completion done;
	u64 seq;
	u64 value;		/* completion value */
	u32 status;		/* completion status */
	bool irq;		/* its completion raises an interrupt */
	/* set by the submitter before submission, read by the fault worker */
	unsigned long hint_start;	/* fault the whole [start, end) at once */
	unsigned long hint_end;
	bool nofault;		/* a fault on this access is cancelled with -ENOENT */
	/* written by the fault worker under sdev->q_lock */
	unsigned int faults;
	int fault_err;		/* why the access was cancelled */
};

/* One level of the device page table, 512 entries in DMA memory. */
struct svmdev_pt {
	__le64 *entries;
	dma_addr_t dma;
	struct svmdev_pt **child;	/* NULL at level 0 */
	struct list_head spare;		/* on mirror->pt_spares while unused */
};

/* A mirrored chunk of the mm; lives from first use to file close. */
struct svmdev_range {
	struct mmu_interval_notifier notifier;
	struct svmdev_mirror *mirror;
	unsigned long start;
	unsigned long end;
};

/* The mm-wide notifiers of one file: balance counting and personality. */
struct svmdev_mmn {
	struct mmu_notifier count_mn;	/* start and end: counts the pairs */
	struct mmu_notifier pers_mn;	/* start only: the personality */
	bool pers_registered;
	atomic64_t starts;
	atomic64_t ends;
	atomic64_t active;		/* starts - ends, 0 when balanced */
	atomic64_t active_nonblock;	/* of which non-blockable (the reapers') */
	atomic64_t refused;
	bool reported;			/* an imbalance was reported once */
	bool released;			/* the mm's release callbacks have run */
};

/* Knob values, read and decremented without a lock: they are test aids. */
struct svmdev_knob_state {
	atomic_t fail_vram_alloc;
	atomic_t fail_copy;
	unsigned int fault_delay_ms;
	atomic_t skip_invalidate;
	bool livelock;
	atomic_t leak_page;
	atomic_t imbalance;
	bool fence_forever;
};

/* An open file bound to an mm and one device context. */
struct svmdev_mirror {
	struct svmdev *sdev;
	struct mm_struct *mm;		/* mmgrab()ed at bind */
	u16 ctx;
	bool compat;			/* a /dev/hmm_dmirrorN file */
	bool dying;			/* being destroyed: retry loops give up */
	unsigned int personality;
	int restarts_seen;		/* sdev->restarts last told to user space */
	/*
	 * The task in make_device_exclusive_range() for this file; a second
	 * caller at once only loses the exemption its restores get.
	 */
	struct task_struct *excl_task;
	u64 kcov_handle;		/* of the binding task, for the fault worker */
	struct svmdev_mmn mmn;
	struct svmdev_knob_state knobs;

	/*
	 * Held by the fault path around its page-table commit and by the
	 * BLOCK_SHARED personality's invalidate_range_start.
	 */
	struct mutex fault_lock;

	/*
	 * Protects the device page table (root and every table below it) and
	 * pt_spares; the "driver lock" of the mmu_interval_read_retry() loop,
	 * taken by every interval invalidate callback of this file.
	 */
	struct mutex pt_lock;
	struct svmdev_pt *root;
	struct list_head pt_spares;
	unsigned int nr_spares;

	/* Protects the ranges xarray against concurrent insertion. */
	struct mutex ranges_lock;
	struct xarray ranges;		/* va >> SVMDEV_RANGE_SHIFT -> range */
};

/* One PCI device. */
struct svmdev {
	struct kref kref;
	struct pci_dev *pdev;
	struct device *dev;
	void __iomem *regs;
	unsigned int index;		/* N of /dev/svmdevN */
	u32 caps;
	u32 num_ctx;
	u64 vram_size;
	bool use_irq;
	bool draining;			/* being removed: no new device pages */
	bool dead;			/* removed: no MMIO, no new commands */
	atomic_t restarts;		/* ring restarts: work in flight was lost */

	/* rings in DMA-coherent memory */
	struct svmdev_cmd *cmdq;
	dma_addr_t cmdq_dma;
	struct svmdev_cpl *cplq;
	dma_addr_t cplq_dma;
	struct svmdev_fault *fltq;
	dma_addr_t fltq_dma;

	/*
	 * Protects the command ring tail, the completion ring head, the
	 * request slots and each slotted request's result fields.
	 */
	spinlock_t q_lock;
	u32 cmdq_tail;
	u32 cmdq_head;			/* last CMDQ_HEAD read: it only advances */
	u32 cplq_head;
	u64 seq_ctr;
	unsigned int slot_cursor;
	struct svmdev_req *slots[SVMDEV_MAX_INFLIGHT];
	wait_queue_head_t slot_wq;	/* waiters for a free slot or ring space */

	/* the fault worker's, under q_lock: a ring restart resets it */
	u32 fltq_head;
	struct workqueue_struct *wq;
	struct work_struct fault_work;
	struct work_struct error_work;
	struct delayed_work poll_work;	/* without interrupts */

	/* contexts: index -> mirror; xa_lock guards lookups by the worker */
	struct xarray ctxs;

	/* device-private memory */
	struct dev_pagemap pgmap;
	struct resource *vram_res;
	unsigned long vram_pfn_first;
	unsigned long vram_npages;
	spinlock_t vram_lock;		/* protects vram_free and vram_nfree */
	struct page *vram_free;		/* free list through zone_device_data */
	unsigned long vram_nfree;
	struct mutex evict_lock;	/* one eviction at a time; protects evict_cursor */
	/* files of the SERIAL_TO_RAM personality, and the lock they impose */
	atomic_t serial_to_ram[3];	/* window 16 pages, 1 page, 2 MiB */
	struct mutex to_ram_lock;
	unsigned long evict_cursor;
	void *zero_buf;			/* a zeroed page, source of zero fills */
	dma_addr_t zero_dma;

	struct dma_pool *pt_pool;
	struct miscdevice misc;
	char misc_name[16];
	struct miscdevice compat_misc;
	char compat_name[20];
	bool compat_registered;
	struct dentry *debugfs;

	atomic64_t ctr[SVMDEV_NUM_CTRS];
};

/* [addr, addr + npages pages) as [*start, *end), if user space can map it. */
static inline int svmdev_check_range(u64 addr, u64 npages, unsigned long *start,
				     unsigned long *end)
{
	if (!npages || (addr & ~PAGE_MASK) || npages > (TASK_SIZE >> PAGE_SHIFT))
		return -EINVAL;
	if (addr >= TASK_SIZE || (TASK_SIZE - addr) >> PAGE_SHIFT < npages)
		return -EINVAL;
	*start = addr;
	*end = addr + (npages << PAGE_SHIFT);
	return 0;
}

static inline void svmdev_count(struct svmdev *sdev, unsigned int ctr)
{
	atomic64_inc(&sdev->ctr[ctr]);
}

/* svmdev_main.c: device, rings, commands */
void svmdev_get(struct svmdev *sdev);
void svmdev_put(struct svmdev *sdev);
void svmdev_req_init(struct svmdev_req *req);
int svmdev_submit(struct svmdev *sdev, struct svmdev_cmd *cmd,
		  struct svmdev_req *req, bool atomic);
int svmdev_wait(struct svmdev *sdev, struct svmdev_req *req, const char *what);
int svmdev_wait_ms(struct svmdev *sdev, struct svmdev_req *req,
		   const char *what, unsigned int ms);
void svmdev_restart(struct svmdev *sdev);
bool svmdev_wait_atomic(struct svmdev *sdev, struct svmdev_req *req,
			unsigned int usecs);
int svmdev_exec(struct svmdev *sdev, struct svmdev_cmd *cmd,
		struct svmdev_req *req, const char *what);
int svmdev_copy(struct svmdev *sdev, struct svmdev_mirror *mirror, u64 src,
		u64 dst, u64 bytes, u8 flags);
int svmdev_status_errno(u32 status);
u64 svmdev_read_counter(struct svmdev *sdev, unsigned int n);
void svmdev_loop_iter(struct svmdev *sdev, enum svmdev_loop loop,
		      unsigned long iter, bool *reported);

/* svmdev_pt.c: device page tables */
int svmdev_pt_init(struct svmdev_mirror *mirror);
void svmdev_pt_fini(struct svmdev_mirror *mirror);
int svmdev_pt_reserve(struct svmdev_mirror *mirror, unsigned int n);
int svmdev_pt_set(struct svmdev_mirror *mirror, unsigned long va, u64 leaf,
		  u64 *old);
u64 svmdev_pt_get(struct svmdev_mirror *mirror, unsigned long va);
bool svmdev_pt_any(struct svmdev_mirror *mirror, unsigned long start,
		   unsigned long end, u64 bits);
bool svmdev_pt_clear(struct svmdev_mirror *mirror, unsigned long start,
		     unsigned long end, bool blockable);
void svmdev_invalidate(struct svmdev_mirror *mirror, unsigned long start,
		       unsigned long end);

/* svmdev_mirror.c: binding, notifiers, the mirror loop, device faults */
struct svmdev_mirror *svmdev_mirror_create(struct svmdev *sdev, bool compat,
					   unsigned int personality);
void svmdev_mirror_destroy(struct svmdev_mirror *mirror);
struct svmdev_range *svmdev_range_get(struct svmdev_mirror *mirror,
				      unsigned long va);
int svmdev_mirror_fault(struct svmdev_mirror *mirror, unsigned long start,
			unsigned long end, bool write, bool fault,
			unsigned long *done, unsigned long *retries);
int svmdev_mirror_exclusive(struct svmdev_mirror *mirror, unsigned long start,
			    unsigned long end, unsigned long *done,
			    unsigned long *retries);
int svmdev_mirror_unmap(struct svmdev_mirror *mirror, unsigned long start,
			unsigned long end);
bool svmdev_mmn_check(struct svmdev_mirror *mirror, const char *when);
void svmdev_fault_work(struct work_struct *work);
int svmdev_device_access(struct svmdev_mirror *mirror, unsigned long va,
			 u64 arg1, u8 flags, u64 value, u64 compare,
			 dma_addr_t buf, struct svmdev_req *req);

/* svmdev_migrate.c: device-private memory, migration, eviction */
int svmdev_vram_init(struct svmdev *sdev);
void svmdev_vram_fini(struct svmdev *sdev);
int svmdev_migrate_to_dev(struct svmdev_mirror *mirror, unsigned long start,
			  unsigned long end, unsigned long *done,
			  unsigned long *retries);
int svmdev_migrate_to_sys(struct svmdev_mirror *mirror, unsigned long start,
			  unsigned long end, unsigned long *done);
unsigned long svmdev_evict(struct svmdev *sdev, unsigned long want);
bool svmdev_is_our_page(struct svmdev *sdev, struct page *page);
u64 svmdev_vram_offset(struct svmdev *sdev, struct page *page);

/* svmdev_file.c: /dev/svmdevN; svmdev_dmirror.c: /dev/hmm_dmirrorN */
extern const struct file_operations svmdev_fops;
extern const struct file_operations svmdev_dmirror_fops;

/* svmdev_debugfs.c */
void svmdev_debugfs_init(struct svmdev *sdev);
void svmdev_debugfs_fini(struct svmdev *sdev);
void svmdev_debugfs_module_init(void);
void svmdev_debugfs_module_exit(void);

#endif /* SVMDEV_H */

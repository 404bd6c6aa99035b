// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev mirroring: binding a file to an mm and a device context, the
 * interval notifiers that keep the device page table coherent, the
 * read_begin / hmm_range_fault / lock / read_retry loop, device-exclusive
 * mappings for atomics, the fault worker, and the mm-wide notifiers that
 * count invalidate_range_start/_end and act out a personality.
 */
#include <linux/delay.h>
#include <linux/kcov.h>
#include <linux/mm.h>
#include <linux/rmap.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/version.h>

#include "svmdev.h"
#include "svmdev_trace.h"

#define SVMDEV_FAULT_MAX_PAGES	4096	/* largest hinted fault window */
#define SVMDEV_EXCL_BATCH	64

/* ---- mm-wide notifiers ---- */

static struct svmdev_mirror *mmn_to_mirror(struct svmdev_mmn *mmn)
{
	return container_of(mmn, struct svmdev_mirror, mmn);
}

/*
 * Reports an outstanding start (or an end without start). Another thread
 * may be inside an invalidation right now, so the count gets a grace period
 * to settle before it is called unbalanced: a second, or ten while only
 * non-blockable starts are outstanding. Those are the OOM reaper's and
 * process_mrelease()'s, which run beside the exiting task's own release and
 * whose vCPU an emulated guest on a busy host may not run for a while.
 */
bool svmdev_mmn_check(struct svmdev_mirror *mirror, const char *when)
{
	struct svmdev_mmn *mmn = &mirror->mmn;
	int i;

	for (i = 0; i < 500 && atomic64_read(&mmn->active); i++) {
		if (i >= 50 && atomic64_read(&mmn->active) !=
			       atomic64_read(&mmn->active_nonblock))
			break;
		msleep(20);
	}
	if (!atomic64_read(&mmn->active))
		return true;
	if (!mmn->reported) {
		mmn->reported = true;
		pr_err("svmdev: unbalanced mmu_notifier start/end at %s: mm %p ctx %u starts %lld ends %lld outstanding %lld\n",
		       when, mirror->mm, mirror->ctx,
		       (long long)atomic64_read(&mmn->starts),
		       (long long)atomic64_read(&mmn->ends),
		       (long long)atomic64_read(&mmn->active));
	}
	return false;
}

static int svmdev_count_start(struct mmu_notifier *mn,
			      const struct mmu_notifier_range *range)
{
	struct svmdev_mmn *mmn = container_of(mn, struct svmdev_mmn, count_mn);
	struct svmdev_mirror *mirror = mmn_to_mirror(mmn);

	atomic64_inc(&mmn->starts);
	atomic64_inc(&mmn->active);
	if (!mmu_notifier_range_blockable(range))
		atomic64_inc(&mmn->active_nonblock);
	/* test-only: pretend a start was seen twice */
	if (atomic_add_unless(&mirror->knobs.imbalance, -1, 0)) {
		atomic64_inc(&mmn->starts);
		atomic64_inc(&mmn->active);
	}
	return 0;
}

static void svmdev_count_end(struct mmu_notifier *mn,
			     const struct mmu_notifier_range *range)
{
	struct svmdev_mmn *mmn = container_of(mn, struct svmdev_mmn, count_mn);

	atomic64_inc(&mmn->ends);
	atomic64_dec(&mmn->active);
	if (!mmu_notifier_range_blockable(range))
		atomic64_dec(&mmn->active_nonblock);
}

static void svmdev_count_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct svmdev_mmn *mmn = container_of(mn, struct svmdev_mmn, count_mn);

	svmdev_mmn_check(mmn_to_mirror(mmn), "mm release");
	/*
	 * The balance is judged here once the mm goes first. Until exit_mmap()
	 * takes the notifiers off the mm, the OOM reaper may still start an
	 * invalidation whose end then finds the list empty: callbacks racing
	 * with that teardown are not the file's to account for.
	 */
	WRITE_ONCE(mmn->released, true);
}

static const struct mmu_notifier_ops svmdev_count_ops = {
	.invalidate_range_start = svmdev_count_start,
	.invalidate_range_end = svmdev_count_end,
	.release = svmdev_count_release,
};

/*
 * Personalities have no invalidate_range_end: a start that may fail with
 * -EAGAIN must not have one.
 */
static int svmdev_pers_start(struct mmu_notifier *mn,
			     const struct mmu_notifier_range *range)
{
	struct svmdev_mmn *mmn = container_of(mn, struct svmdev_mmn, pers_mn);
	struct svmdev_mirror *mirror = mmn_to_mirror(mmn);
	bool blockable = mmu_notifier_range_blockable(range);

	switch (mirror->personality) {
	case SVMDEV_PERS_REFUSE_NONBLOCK:
		if (blockable)
			return 0;
		break;
	case SVMDEV_PERS_BLOCK_SHARED:
		/* wait for the fault path to finish its commit */
		if (blockable)
			mutex_lock(&mirror->fault_lock);
		else if (!mutex_trylock(&mirror->fault_lock))
			break;
		mutex_unlock(&mirror->fault_lock);
		return 0;
	case SVMDEV_PERS_SLOW:
		if (blockable)
			usleep_range(1000, 2000);
		return 0;
	default:
		return 0;
	}
	atomic64_inc(&mmn->refused);
	return -EAGAIN;
}

static const struct mmu_notifier_ops svmdev_pers_ops = {
	.invalidate_range_start = svmdev_pers_start,
};

/* ---- interval notifiers: one per mirrored chunk ---- */

static bool svmdev_range_invalidate(struct mmu_interval_notifier *mni,
				    const struct mmu_notifier_range *range,
				    unsigned long cur_seq)
{
	struct svmdev_range *r = container_of(mni, struct svmdev_range, notifier);
	struct svmdev_mirror *mirror = r->mirror;
	struct svmdev *sdev = mirror->sdev;
	unsigned long start = max(range->start, r->start);
	unsigned long end = min(range->end, r->end);
	bool blockable = mmu_notifier_range_blockable(range);
	enum svmdev_inval_outcome outcome;
	bool ok = true;

	trace_svmdev_invalidate_start(mirror, start, end, range->event,
				      blockable);
	/*
	 * Our own device-exclusive conversion keeps the same pages mapped, and
	 * so does the restore that make_device_exclusive_range() does itself
	 * of entries we made exclusive before: its get_user_pages() faults them
	 * back just to convert them again. Counted as a change, that restore
	 * would fail every retry of the loop that left them.
	 */
	if (range->event == MMU_NOTIFY_EXCLUSIVE &&
	    (range->owner == sdev || READ_ONCE(mirror->excl_task) == current)) {
		outcome = SVMDEV_INVAL_OWN_EXCLUSIVE;
		goto out;
	}
	/* test-only: leave the device mapping stale */
	if (atomic_add_unless(&mirror->knobs.skip_invalidate, -1, 0)) {
		outcome = SVMDEV_INVAL_SKIPPED;
		goto out;
	}

	if (blockable) {
		mutex_lock(&mirror->pt_lock);
	} else if (!mutex_trylock(&mirror->pt_lock)) {
		svmdev_count(sdev, SVMDEV_CTR_INVAL_NONBLOCK_FAIL);
		outcome = SVMDEV_INVAL_CONTENDED;
		ok = false;
		goto out;
	}
	mmu_interval_set_seq(mni, cur_seq);
	svmdev_count(sdev, SVMDEV_CTR_INVALIDATIONS);
	ok = svmdev_pt_clear(mirror, start, end, blockable);
	mutex_unlock(&mirror->pt_lock);
	if (ok) {
		outcome = SVMDEV_INVAL_CLEARED;
	} else {
		svmdev_count(sdev, SVMDEV_CTR_INVAL_NONBLOCK_FAIL);
		outcome = SVMDEV_INVAL_FENCE_PENDING;
	}
out:
	trace_svmdev_invalidate_end(mirror, start, end, outcome);
	return ok;
}

static const struct mmu_interval_notifier_ops svmdev_range_ops = {
	.invalidate = svmdev_range_invalidate,
};

struct svmdev_range *svmdev_range_get(struct svmdev_mirror *mirror,
				      unsigned long va)
{
	unsigned long idx = va >> SVMDEV_RANGE_SHIFT;
	struct svmdev_range *r, *old;
	int ret;

	r = xa_load(&mirror->ranges, idx);
	if (r)
		return r;
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return ERR_PTR(-ENOMEM);
	r->mirror = mirror;
	r->start = idx << SVMDEV_RANGE_SHIFT;
	r->end = r->start + SVMDEV_RANGE_SIZE;

	mutex_lock(&mirror->ranges_lock);
	old = xa_load(&mirror->ranges, idx);
	if (old) {
		ret = 0;
		goto err_free;
	}
	ret = mmu_interval_notifier_insert(&r->notifier, mirror->mm, r->start,
					   SVMDEV_RANGE_SIZE, &svmdev_range_ops);
	if (ret)
		goto err_free;
	ret = xa_insert(&mirror->ranges, idx, r, GFP_KERNEL);
	if (ret) {
		mmu_interval_notifier_remove(&r->notifier);
		goto err_free;
	}
	mutex_unlock(&mirror->ranges_lock);
	return r;

err_free:
	mutex_unlock(&mirror->ranges_lock);
	kfree(r);
	return old ? old : ERR_PTR(ret);
}

/* ---- binding ---- */

struct svmdev_mirror *svmdev_mirror_create(struct svmdev *sdev, bool compat,
					   unsigned int personality)
{
	struct svmdev_cmd cmd = { .opcode = SVMDEV_OP_CTX_SETUP };
	struct svmdev_mirror *mirror;
	struct svmdev_req req;
	u32 ctx;
	int ret;

	if (!current->mm)
		return ERR_PTR(-EINVAL);
	mirror = kzalloc(sizeof(*mirror), GFP_KERNEL);
	if (!mirror)
		return ERR_PTR(-ENOMEM);
	mirror->sdev = sdev;
	svmdev_get(sdev);
	mirror->compat = compat;
	mirror->personality = personality;
	mirror->kcov_handle = kcov_common_handle();
	mutex_init(&mirror->fault_lock);
	mutex_init(&mirror->pt_lock);
	mutex_init(&mirror->ranges_lock);
	xa_init(&mirror->ranges);
	mirror->mm = current->mm;
	mmgrab(mirror->mm);
	mirror->restarts_seen = atomic_read(&sdev->restarts);

	ret = svmdev_pt_init(mirror);
	if (ret)
		goto err_pt;
	ret = xa_alloc(&sdev->ctxs, &ctx, NULL, XA_LIMIT(0, sdev->num_ctx - 1),
		       GFP_KERNEL);
	if (ret) {
		ret = ret == -EBUSY ? -EBUSY : ret;
		goto err_pt;
	}
	mirror->ctx = ctx;
	cmd.ctx = ctx;
	cmd.arg[0] = mirror->root->dma;
	svmdev_req_init(&req);
	ret = svmdev_exec(sdev, &cmd, &req, "CTX_SETUP");
	if (ret)
		goto err_ctx;

	mirror->mmn.count_mn.ops = &svmdev_count_ops;
	ret = mmu_notifier_register(&mirror->mmn.count_mn, mirror->mm);
	if (ret)
		goto err_destroy;
	if (personality >= SVMDEV_PERS_SERIAL_TO_RAM) {
		atomic_inc(&sdev->serial_to_ram[personality - SVMDEV_PERS_SERIAL_TO_RAM]);
	} else if (personality != SVMDEV_PERS_NONE) {
		mirror->mmn.pers_mn.ops = &svmdev_pers_ops;
		ret = mmu_notifier_register(&mirror->mmn.pers_mn, mirror->mm);
		if (ret)
			goto err_count;
		mirror->mmn.pers_registered = true;
	}
	xa_store(&sdev->ctxs, ctx, mirror, GFP_KERNEL);
	return mirror;

err_count:
	mmu_notifier_unregister(&mirror->mmn.count_mn, mirror->mm);
err_destroy:
	cmd.opcode = SVMDEV_OP_CTX_DESTROY;
	svmdev_req_init(&req);
	svmdev_exec(sdev, &cmd, &req, "CTX_DESTROY");
err_ctx:
	xa_erase(&sdev->ctxs, ctx);
err_pt:
	svmdev_pt_fini(mirror);
	mmdrop(mirror->mm);
	svmdev_put(sdev);
	kfree(mirror);
	return ERR_PTR(ret);
}

void svmdev_mirror_destroy(struct svmdev_mirror *mirror)
{
	struct svmdev *sdev = mirror->sdev;
	struct svmdev_cmd cmd = {
		.opcode = SVMDEV_OP_CTX_DESTROY,
		.ctx = mirror->ctx,
	};
	struct svmdev_range *r;
	struct svmdev_req req;
	unsigned long idx;

	WRITE_ONCE(mirror->dying, true);
	/* the fault worker finds the context no more; let it finish with it */
	xa_store(&sdev->ctxs, mirror->ctx, NULL, GFP_KERNEL);
	if (!sdev->dead)
		flush_work(&sdev->fault_work);

	if (mirror->mmn.pers_registered)
		mmu_notifier_unregister(&mirror->mmn.pers_mn, mirror->mm);
	if (!READ_ONCE(mirror->mmn.released))
		svmdev_mmn_check(mirror, "file release");
	mmu_notifier_unregister(&mirror->mmn.count_mn, mirror->mm);

	xa_for_each(&mirror->ranges, idx, r) {
		mmu_interval_notifier_remove(&r->notifier);
		kfree(r);
	}
	xa_destroy(&mirror->ranges);

	svmdev_req_init(&req);
	svmdev_exec(sdev, &cmd, &req, "CTX_DESTROY");
	xa_erase(&sdev->ctxs, mirror->ctx);
	svmdev_pt_fini(mirror);
	if (mirror->personality >= SVMDEV_PERS_SERIAL_TO_RAM)
		atomic_dec(&sdev->serial_to_ram[mirror->personality -
						SVMDEV_PERS_SERIAL_TO_RAM]);
	mmdrop(mirror->mm);
	svmdev_put(sdev);
	kfree(mirror);
}

/* ---- the mirror loop ---- */

/* Writes a leaf; fences at once if it replaced a different translation. */
static int svmdev_commit_leaf(struct svmdev_mirror *mirror, unsigned long va,
			      u64 leaf)
{
	struct svmdev *sdev = mirror->sdev;
	u64 old, perms = SVMDEV_PTE_READ | SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC;
	bool same;
	int ret;

	ret = svmdev_pt_set(mirror, va, leaf, &old);
	if (ret)
		return ret;
	same = (old & SVMDEV_PTE_VALID) &&
	       (old & (SVMDEV_PTE_ADDR_MASK | SVMDEV_PTE_VRAM)) ==
	       (leaf & (SVMDEV_PTE_ADDR_MASK | SVMDEV_PTE_VRAM));
	if (same) {
		/* the new DMA mapping duplicates the old one */
		if (!(leaf & SVMDEV_PTE_VRAM))
			dma_unmap_page(sdev->dev, leaf & SVMDEV_PTE_ADDR_MASK,
				       PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (old & perms & ~leaf)
			svmdev_invalidate(mirror, va, va + PAGE_SIZE);
		return 0;
	}
	if (!(old & (SVMDEV_PTE_VALID | SVMDEV_PTE_SW_UNMAP)))
		return 0;
	/* a stale translation (left by a failed or skipped invalidation) */
	svmdev_invalidate(mirror, va, va + PAGE_SIZE);
	if (!(old & SVMDEV_PTE_VRAM))
		dma_unmap_page(sdev->dev, old & SVMDEV_PTE_ADDR_MASK, PAGE_SIZE,
			       DMA_BIDIRECTIONAL);
	return 0;
}

static void svmdev_unmap_dmas(struct svmdev *sdev, u64 *dmas,
			      unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		if (dmas[i])
			dma_unmap_page(sdev->dev, dmas[i], PAGE_SIZE,
				       DMA_BIDIRECTIONAL);
}

/* DMA-maps the system pages of a snapshot; device pages need none. */
static int svmdev_map_pfns(struct svmdev *sdev, struct hmm_range *hr,
			   u64 *dmas, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		unsigned long pfn = hr->hmm_pfns[i];
		struct page *page;
		dma_addr_t dma;

		dmas[i] = 0;
		if (!(pfn & HMM_PFN_VALID) || (pfn & HMM_PFN_ERROR))
			continue;
		page = hmm_pfn_to_page(pfn);
		if (is_device_private_page(page))
			continue;
		dma = dma_map_page(sdev->dev, page, 0, PAGE_SIZE,
				   DMA_BIDIRECTIONAL);
		if (dma_mapping_error(sdev->dev, dma)) {
			svmdev_unmap_dmas(sdev, dmas, i);
			return -EFAULT;
		}
		dmas[i] = dma;
	}
	return 0;
}

/* Fills the device page table from a snapshot. Caller holds pt_lock. */
static unsigned long svmdev_commit(struct svmdev_mirror *mirror,
				   struct hmm_range *hr, u64 *dmas)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long i, n = (hr->end - hr->start) >> PAGE_SHIFT, mapped = 0;

	for (i = 0; i < n; i++) {
		unsigned long pfn = hr->hmm_pfns[i];
		unsigned long va = hr->start + (i << PAGE_SHIFT);
		struct page *page;
		u64 leaf = SVMDEV_PTE_VALID | SVMDEV_PTE_READ;

		if (!(pfn & HMM_PFN_VALID) || (pfn & HMM_PFN_ERROR))
			continue;
		page = hmm_pfn_to_page(pfn);
		if (is_device_private_page(page)) {
			/* another device's page: only reachable by faulting it */
			if (!svmdev_is_our_page(sdev, page))
				continue;
			leaf |= SVMDEV_PTE_VRAM | svmdev_vram_offset(sdev, page);
			/* only the device reaches its memory: atomics are safe */
			if (pfn & HMM_PFN_WRITE)
				leaf |= SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC;
		} else {
			leaf |= dmas[i];
			if (pfn & HMM_PFN_WRITE)
				leaf |= SVMDEV_PTE_WRITE;
		}
		if (svmdev_commit_leaf(mirror, va, leaf)) {
			if (dmas[i])
				dma_unmap_page(sdev->dev, dmas[i], PAGE_SIZE,
					       DMA_BIDIRECTIONAL);
			continue;
		}
		/* test-only: a reference that is never dropped */
		if (atomic_add_unless(&mirror->knobs.leak_page, -1, 0))
			get_page(page);
		mapped++;
	}
	return mapped;
}

/*
 * Whether a write fault found one of our device pages that the CPU maps
 * read-only. hmm_range_fault() reports the caller's own device-private
 * pages as they are, without faulting them for write, so replaying the
 * device's write would fault again for ever.
 */
static bool svmdev_needs_write_fault(struct svmdev *sdev, struct hmm_range *hr,
				     unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		unsigned long pfn = hr->hmm_pfns[i];

		if ((pfn & HMM_PFN_VALID) && !(pfn & (HMM_PFN_WRITE | HMM_PFN_ERROR)) &&
		    svmdev_is_our_page(sdev, hmm_pfn_to_page(pfn)))
			return true;
	}
	return false;
}

static int svmdev_range_fault(struct svmdev_mirror *mirror,
			      struct svmdev_range *r, unsigned long start,
			      unsigned long end, bool write, bool fault,
			      unsigned long *done, unsigned long *retries)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long n = (end - start) >> PAGE_SHIFT, iter;
	struct mm_struct *mm = mirror->mm;
	struct hmm_range hr = {
		.notifier = &r->notifier,
		.start = start,
		.end = end,
		.dev_private_owner = sdev,
	};
	bool reported = false, migrated = false;
	unsigned long moved;
	u64 *dmas;
	int ret;

	if (fault)
		hr.default_flags = HMM_PFN_REQ_FAULT |
				   (write ? HMM_PFN_REQ_WRITE : 0);
	hr.hmm_pfns = kvcalloc(n, sizeof(*hr.hmm_pfns), GFP_KERNEL);
	dmas = kvcalloc(n, sizeof(*dmas), GFP_KERNEL);
	if (!hr.hmm_pfns || !dmas) {
		ret = -ENOMEM;
		goto out_free;
	}

	for (iter = 0;; iter++) {
		svmdev_loop_iter(sdev, SVMDEV_LOOP_RANGE_FAULT, iter, &reported);
		if (READ_ONCE(mirror->dying) || fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		if (iter) {
			(*retries)++;
			cond_resched();
		}
		hr.notifier_seq = mmu_interval_read_begin(&r->notifier);
		mmap_read_lock(mm);
		ret = hmm_range_fault(&hr);
		mmap_read_unlock(mm);
		if (ret == -EBUSY) {
			svmdev_count(sdev, SVMDEV_CTR_HMM_BUSY);
			continue;
		}
		if (ret)
			break;
		if (fault && write && svmdev_needs_write_fault(sdev, &hr, n)) {
			/*
			 * Bring the pages home once, so that the CPU's write
			 * fault decides: copy-on-write, or -EPERM on a
			 * read-only mapping. Pages that will not move are a
			 * write the CPU does not allow either.
			 */
			ret = -EPERM;
			if (migrated)
				break;
			migrated = true;
			moved = 0;
			svmdev_migrate_to_sys(mirror, start, end, &moved);
			continue;
		}
		ret = svmdev_map_pfns(sdev, &hr, dmas, n);
		if (ret)
			break;
		ret = svmdev_pt_reserve(mirror, SVMDEV_PT_LEVELS - 1);
		if (ret) {
			svmdev_unmap_dmas(sdev, dmas, n);
			break;
		}

		mutex_lock(&mirror->fault_lock);
		mutex_lock(&mirror->pt_lock);
		if (READ_ONCE(mirror->knobs.livelock) ||
		    mmu_interval_read_retry(&r->notifier, hr.notifier_seq)) {
			mutex_unlock(&mirror->pt_lock);
			mutex_unlock(&mirror->fault_lock);
			svmdev_unmap_dmas(sdev, dmas, n);
			svmdev_count(sdev, SVMDEV_CTR_READ_RETRY);
			continue;
		}
		*done += svmdev_commit(mirror, &hr, dmas);
		mutex_unlock(&mirror->pt_lock);
		mutex_unlock(&mirror->fault_lock);
		break;
	}
out_free:
	kvfree(dmas);
	kvfree(hr.hmm_pfns);
	return ret;
}

/*
 * Mirrors [start, end) into the device page table. With @fault, CPU pages
 * are faulted in (for write if @write) like a device fault would; without,
 * only what the CPU maps already is mirrored.
 */
/*
 * The first address at or after @addr, below @end, that a VMA covers, or
 * @end: a hole gets no interval notifier.
 */
static unsigned long svmdev_next_mapped(struct mm_struct *mm,
					unsigned long addr, unsigned long end)
{
	struct vm_area_struct *vma;

	mmap_read_lock(mm);
	vma = find_vma(mm, addr);
	addr = !vma || vma->vm_start >= end ? end : max(addr, vma->vm_start);
	mmap_read_unlock(mm);
	return addr;
}

int svmdev_mirror_fault(struct svmdev_mirror *mirror, unsigned long start,
			unsigned long end, bool write, bool fault,
			unsigned long *done, unsigned long *retries)
{
	unsigned long addr, next;
	struct svmdev_range *r;
	int ret = 0;

	if (!mmget_not_zero(mirror->mm))
		return -ESRCH;
	for (addr = start; addr < end; addr = next) {
		/* a faulting mirror fails on a hole; a snapshot steps over it */
		if (!fault) {
			addr = svmdev_next_mapped(mirror->mm, addr, end);
			if (addr == end)
				break;
			cond_resched();
		}
		r = svmdev_range_get(mirror, addr);
		next = min(ALIGN(addr + 1, SVMDEV_RANGE_SIZE), end);
		if (IS_ERR(r)) {
			ret = PTR_ERR(r);
			break;
		}
		ret = svmdev_range_fault(mirror, r, addr, next, write, fault,
					 done, retries);
		if (ret)
			break;
	}
	mmput(mirror->mm);
	return ret;
}

static void svmdev_release_pages(struct page **pages, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		if (!pages[i])
			continue;
		unlock_page(pages[i]);
		put_page(pages[i]);
	}
}

/*
 * Counts the pages of a refused batch that are tail pages of a large folio:
 * make_device_exclusive_range() in 6.12 refuses those whatever happens, so
 * a device atomic on one can never succeed (SVMDEV_CTR_EXCL_THP tells that
 * apart from a contended folio lock).
 */
/* get_user_pages_remote() lost its vmas argument in 6.5. */
static long svmdev_gup_one(struct mm_struct *mm, unsigned long addr,
			   struct page **page)
{
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 5, 0)
	return get_user_pages_remote(mm, addr, 1, FOLL_GET | FOLL_WRITE, page,
				     NULL, NULL);
#else
	return get_user_pages_remote(mm, addr, 1, FOLL_GET | FOLL_WRITE, page,
				     NULL);
#endif
}

static void svmdev_count_thp_tails(struct svmdev_mirror *mirror,
				   unsigned long start, struct page **pages,
				   unsigned long n, long got)
{
	struct mm_struct *mm = mirror->mm;
	unsigned long i;
	struct page *p;

	mmap_read_lock(mm);
	for (i = 0; i < n; i++) {
		if (i < got && pages[i])
			continue;
		if (svmdev_gup_one(mm, start + (i << PAGE_SHIFT), &p) != 1)
			continue;
		if (PageTail(p))
			svmdev_count(mirror->sdev, SVMDEV_CTR_EXCL_THP);
		put_page(p);
	}
	mmap_read_unlock(mm);
}

/* One batch of device-exclusive mappings within one range. */
static int svmdev_exclusive_batch(struct svmdev_mirror *mirror,
				  struct svmdev_range *r, unsigned long start,
				  unsigned long end, unsigned long *done,
				  unsigned long *retries)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long n = (end - start) >> PAGE_SHIFT, i, iter;
	struct page *pages[SVMDEV_EXCL_BATCH];
	u64 dmas[SVMDEV_EXCL_BATCH];
	struct mm_struct *mm = mirror->mm;
	bool reported = false;
	unsigned long seq;
	int ret, got;

	for (iter = 0;; iter++) {
		svmdev_loop_iter(sdev, SVMDEV_LOOP_EXCLUSIVE, iter, &reported);
		if (READ_ONCE(mirror->dying) || fatal_signal_pending(current))
			return -EINTR;
		if (iter) {
			(*retries)++;
			cond_resched();
		}
		memset(pages, 0, sizeof(pages));
		seq = mmu_interval_read_begin(&r->notifier);
		mmap_read_lock(mm);
		WRITE_ONCE(mirror->excl_task, current);
		got = make_device_exclusive_range(mm, start, end, pages, sdev);
		WRITE_ONCE(mirror->excl_task, NULL);
		mmap_read_unlock(mm);
		if (got < 0)
			return got;

		ret = 0;
		for (i = 0; i < n; i++) {
			dmas[i] = 0;
			if (i >= got || !pages[i]) {
				ret = -EBUSY;
				continue;
			}
			dmas[i] = dma_map_page(sdev->dev, pages[i], 0, PAGE_SIZE,
					       DMA_BIDIRECTIONAL);
			if (dma_mapping_error(sdev->dev, dmas[i])) {
				dmas[i] = 0;
				ret = -EFAULT;
			}
		}
		if (!ret)
			ret = svmdev_pt_reserve(mirror, SVMDEV_PT_LEVELS - 1);
		if (ret) {
			svmdev_unmap_dmas(sdev, dmas, n);
			svmdev_release_pages(pages, got);
			if (ret == -EBUSY)
				svmdev_count_thp_tails(mirror, start, pages, n, got);
			return ret;
		}

		mutex_lock(&mirror->fault_lock);
		mutex_lock(&mirror->pt_lock);
		if (mmu_interval_read_retry(&r->notifier, seq)) {
			mutex_unlock(&mirror->pt_lock);
			mutex_unlock(&mirror->fault_lock);
			svmdev_unmap_dmas(sdev, dmas, n);
			svmdev_release_pages(pages, got);
			svmdev_count(sdev, SVMDEV_CTR_EXCL_RETRY);
			continue;
		}
		for (i = 0; i < n; i++) {
			u64 leaf = dmas[i] | SVMDEV_PTE_VALID | SVMDEV_PTE_READ |
				   SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC;

			if (svmdev_commit_leaf(mirror, start + (i << PAGE_SHIFT), leaf)) {
				dma_unmap_page(sdev->dev, dmas[i], PAGE_SIZE,
					       DMA_BIDIRECTIONAL);
				ret = -ENOMEM;
				continue;
			}
			(*done)++;
		}
		mutex_unlock(&mirror->pt_lock);
		mutex_unlock(&mirror->fault_lock);
		svmdev_release_pages(pages, got);
		return ret;
	}
}

/*
 * Takes [start, end) device-exclusive (the CPU loses access until it
 * faults, which restores the pages) and maps it with PTE_ATOMIC.
 */
int svmdev_mirror_exclusive(struct svmdev_mirror *mirror, unsigned long start,
			    unsigned long end, unsigned long *done,
			    unsigned long *retries)
{
	unsigned long addr, next;
	int ret = 0;

	if (!mmget_not_zero(mirror->mm))
		return -ESRCH;
	for (addr = start; addr < end; addr = next) {
		struct svmdev_range *r = svmdev_range_get(mirror, addr);

		next = min3(ALIGN(addr + 1, SVMDEV_RANGE_SIZE),
			    addr + (SVMDEV_EXCL_BATCH << PAGE_SHIFT), end);
		if (IS_ERR(r)) {
			ret = PTR_ERR(r);
			break;
		}
		ret = svmdev_exclusive_batch(mirror, r, addr, next, done, retries);
		if (ret)
			break;
	}
	mmput(mirror->mm);
	return ret;
}

int svmdev_mirror_unmap(struct svmdev_mirror *mirror, unsigned long start,
			unsigned long end)
{
	mutex_lock(&mirror->pt_lock);
	svmdev_pt_clear(mirror, start, end, true);
	mutex_unlock(&mirror->pt_lock);
	return 0;
}

/* ---- device accesses issued for user space ---- */

/*
 * Runs one ACCESS and waits for it, through any faults it raises. A fatal
 * signal cancels the stalled access, so the device never writes a buffer
 * after its owner is gone.
 */
int svmdev_device_access(struct svmdev_mirror *mirror, unsigned long va,
			 u64 arg1, u8 flags, u64 value, u64 compare,
			 dma_addr_t buf, struct svmdev_req *req)
{
	struct svmdev *sdev = mirror->sdev;
	struct svmdev_cmd cmd = {
		.opcode = SVMDEV_OP_ACCESS,
		.flags = flags,
		.ctx = mirror->ctx,
		.arg = { va, arg1, value, compare, buf },
	};
	long left;
	int ret;

	ret = svmdev_submit(sdev, &cmd, req, false);
	if (ret)
		return ret;
	for (;;) {
		left = wait_for_completion_killable_timeout(&req->done, HZ / 10);
		if (left > 0)
			break;
		if (left < 0)
			goto cancel;
		/* lost interrupt or polling mode: look ourselves */
		svmdev_wait_atomic(sdev, req, 0);
		if (completion_done(&req->done))
			break;
	}
	goto done;

cancel:
	while (!completion_done(&req->done)) {
		/*
		 * Cancel every stalled access of the context, not the one fault
		 * id the worker last saw: a resumed access faults again under a
		 * new id, which the worker learns only when it reaches the
		 * record, maybe behind thousands of others. Chasing ids kept a
		 * killed task from exiting for tens of seconds. A fatal signal
		 * takes the whole thread group, whose accesses these are.
		 */
		struct svmdev_cmd cancel = {
			.opcode = SVMDEV_OP_FAULT_CANCEL,
			.flags = SVMDEV_FLT_F_ALL,
			.ctx = mirror->ctx,
		};
		struct svmdev_req creq;

		svmdev_req_init(&creq);
		svmdev_exec(sdev, &cancel, &creq, "FAULT_CANCEL");
		/* a completion this wait sees is consumed: done is false after it */
		if (wait_for_completion_timeout(&req->done, HZ / 10))
			break;
		svmdev_wait_atomic(sdev, req, 0);
	}
	return -EINTR;

done:
	if (req->status == SVMDEV_STATUS_OK)
		return 0;
	if (req->status == SVMDEV_STATUS_CANCELLED && req->fault_err)
		return req->fault_err;
	return svmdev_status_errno(req->status);
}

/* ---- the fault worker ---- */

static int svmdev_fault_window(struct svmdev_mirror *mirror, unsigned long va,
			       unsigned long *start, unsigned long *end)
{
	unsigned long span = (unsigned long)max(svmdev_prefetch_pages, 1U) << PAGE_SHIFT;
	struct vm_area_struct *vma;
	int ret = 0;

	if (!mmget_not_zero(mirror->mm))
		return -ESRCH;
	mmap_read_lock(mirror->mm);
	vma = vma_lookup(mirror->mm, va);
	if (vma) {
		*start = max(ALIGN_DOWN(va, span), vma->vm_start);
		*end = min(ALIGN_DOWN(va, span) + span, vma->vm_end);
	} else {
		ret = -EFAULT;
	}
	mmap_read_unlock(mirror->mm);
	mmput(mirror->mm);
	return ret;
}

static int svmdev_resolve_fault(struct svmdev_mirror *mirror,
				struct svmdev_fault *rec,
				unsigned long hint_start, unsigned long hint_end)
{
	unsigned long va = rec->va & PAGE_MASK, start, end;
	unsigned long done = 0, retries = 0;
	bool write = rec->access != SVMDEV_ACC_READ;
	int ret;

	if (hint_end > va && hint_start <= va) {
		start = va;
		end = min(hint_end, va + (SVMDEV_FAULT_MAX_PAGES << PAGE_SHIFT));
	} else {
		ret = svmdev_fault_window(mirror, va, &start, &end);
		if (ret)
			return ret;
	}
	if (rec->access != SVMDEV_ACC_ATOMIC)
		return svmdev_mirror_fault(mirror, start, end, write, true,
					   &done, &retries);

	ret = svmdev_mirror_fault(mirror, va, va + PAGE_SIZE, true, true, &done,
				  &retries);
	if (ret)
		return ret;
	mutex_lock(&mirror->pt_lock);
	done = !!(svmdev_pt_get(mirror, va) & SVMDEV_PTE_ATOMIC);
	mutex_unlock(&mirror->pt_lock);
	if (done)
		return 0;
	return svmdev_mirror_exclusive(mirror, va, va + PAGE_SIZE, &done, &retries);
}

static void svmdev_fault_reply(struct svmdev *sdev, struct svmdev_fault *rec,
			       u8 opcode)
{
	struct svmdev_cmd cmd = {
		.opcode = opcode,
		.ctx = rec->ctx,
		.arg = { rec->fault_id },
	};
	struct svmdev_req req;

	svmdev_req_init(&req);
	svmdev_exec(sdev, &cmd, &req, opcode == SVMDEV_OP_FAULT_REPLAY ?
		    "FAULT_REPLAY" : "FAULT_CANCEL");
}

static void svmdev_handle_fault(struct svmdev *sdev, struct svmdev_fault *rec)
{
	unsigned int slot = rec->seq % SVMDEV_MAX_INFLIGHT;
	unsigned long hint_start = 0, hint_end = 0, flags;
	struct svmdev_mirror *mirror;
	struct svmdev_req *req;
	bool nofault = false;
	int ret;

	svmdev_count(sdev, SVMDEV_CTR_FAULTS);
	xa_lock(&sdev->ctxs);
	mirror = xa_load(&sdev->ctxs, rec->ctx);
	xa_unlock(&sdev->ctxs);
	if (!mirror) {
		svmdev_fault_reply(sdev, rec, SVMDEV_OP_FAULT_CANCEL);
		svmdev_count(sdev, SVMDEV_CTR_FAULT_CANCELS);
		trace_svmdev_fault(sdev, rec, -ESRCH);
		return;
	}

	kcov_remote_start_common(mirror->kcov_handle);
	if (!(rec->flags & SVMDEV_FAULT_F_HOST)) {
		spin_lock_irqsave(&sdev->q_lock, flags);
		req = sdev->slots[slot];
		if (req && req->seq == rec->seq) {
			req->faults++;
			hint_start = req->hint_start;
			hint_end = req->hint_end;
			nofault = req->nofault;
		}
		spin_unlock_irqrestore(&sdev->q_lock, flags);
	}
	if (mirror->knobs.fault_delay_ms)
		msleep(mirror->knobs.fault_delay_ms);

	ret = nofault ? -ENOENT : svmdev_resolve_fault(mirror, rec, hint_start,
						       hint_end);
	if (ret) {
		spin_lock_irqsave(&sdev->q_lock, flags);
		req = sdev->slots[slot];
		if (req && req->seq == rec->seq)
			req->fault_err = ret;
		spin_unlock_irqrestore(&sdev->q_lock, flags);
		svmdev_fault_reply(sdev, rec, SVMDEV_OP_FAULT_CANCEL);
		svmdev_count(sdev, SVMDEV_CTR_FAULT_CANCELS);
	} else {
		svmdev_fault_reply(sdev, rec, SVMDEV_OP_FAULT_REPLAY);
		svmdev_count(sdev, SVMDEV_CTR_FAULT_REPLAYS);
	}
	kcov_remote_stop();
	trace_svmdev_fault(sdev, rec, ret);
}

void svmdev_fault_work(struct work_struct *work)
{
	struct svmdev *sdev = container_of(work, struct svmdev, fault_work);
	u32 mask = SVMDEV_FLTQ_ENTRIES - 1, tail;
	struct svmdev_fault rec;
	unsigned long flags;

	while (!READ_ONCE(sdev->dead)) {
		/* under q_lock: a ring restart resets the head */
		spin_lock_irqsave(&sdev->q_lock, flags);
		tail = readl(sdev->regs + SVMDEV_REG_FLTQ_TAIL);
		if (sdev->dead || tail > mask || tail == sdev->fltq_head) {
			spin_unlock_irqrestore(&sdev->q_lock, flags);
			break;
		}
		dma_rmb();
		memcpy(&rec, &sdev->fltq[sdev->fltq_head], sizeof(rec));
		sdev->fltq_head = (sdev->fltq_head + 1) & mask;
		writel(sdev->fltq_head, sdev->regs + SVMDEV_REG_FLTQ_HEAD);
		spin_unlock_irqrestore(&sdev->q_lock, flags);
		svmdev_handle_fault(sdev, &rec);
	}
}

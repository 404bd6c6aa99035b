// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev device page tables: four levels of 512 entries in DMA memory, one
 * tree per device context. Tables are allocated before pt_lock is taken
 * (svmdev_pt_reserve) and never freed before the context is destroyed.
 *
 * A leaf that is cleared keeps its DMA address with SVMDEV_PTE_SW_UNMAP set
 * (the device ignores every bit of an invalid entry) until the INVALIDATE
 * fence completes; only then is the page's DMA mapping torn down.
 */
#include <linux/dma-mapping.h>
#include <linux/slab.h>

#include "svmdev.h"

#define SVMDEV_PTE_PERMS (SVMDEV_PTE_READ | SVMDEV_PTE_WRITE | SVMDEV_PTE_ATOMIC)

static struct svmdev_pt *svmdev_pt_alloc(struct svmdev *sdev)
{
	struct svmdev_pt *pt;

	pt = kzalloc(sizeof(*pt), GFP_KERNEL);
	if (!pt)
		return NULL;
	pt->entries = dma_pool_zalloc(sdev->pt_pool, GFP_KERNEL, &pt->dma);
	if (!pt->entries)
		goto err_pt;
	pt->child = kcalloc(SVMDEV_PT_ENTRIES, sizeof(*pt->child), GFP_KERNEL);
	if (!pt->child)
		goto err_entries;
	INIT_LIST_HEAD(&pt->spare);
	return pt;

err_entries:
	dma_pool_free(sdev->pt_pool, pt->entries, pt->dma);
err_pt:
	kfree(pt);
	return NULL;
}

static void svmdev_pt_free_one(struct svmdev *sdev, struct svmdev_pt *pt)
{
	kfree(pt->child);
	dma_pool_free(sdev->pt_pool, pt->entries, pt->dma);
	kfree(pt);
}

static void svmdev_leaf_unmap(struct svmdev *sdev, u64 leaf)
{
	if (leaf & SVMDEV_PTE_VRAM)
		return;
	if (!(leaf & (SVMDEV_PTE_VALID | SVMDEV_PTE_SW_UNMAP)))
		return;
	dma_unmap_page(sdev->dev, leaf & SVMDEV_PTE_ADDR_MASK, PAGE_SIZE,
		       DMA_BIDIRECTIONAL);
}

int svmdev_pt_init(struct svmdev_mirror *mirror)
{
	INIT_LIST_HEAD(&mirror->pt_spares);
	mirror->root = svmdev_pt_alloc(mirror->sdev);
	return mirror->root ? 0 : -ENOMEM;
}

static void svmdev_pt_free_tree(struct svmdev *sdev, struct svmdev_pt *pt,
				int level)
{
	unsigned int i;

	for (i = 0; i < SVMDEV_PT_ENTRIES; i++) {
		if (level == 0)
			svmdev_leaf_unmap(sdev, le64_to_cpu(pt->entries[i]));
		else if (pt->child[i])
			svmdev_pt_free_tree(sdev, pt->child[i], level - 1);
	}
	svmdev_pt_free_one(sdev, pt);
}

/* The context must be destroyed: the device no longer walks these tables. */
void svmdev_pt_fini(struct svmdev_mirror *mirror)
{
	struct svmdev_pt *pt, *next;

	if (mirror->root)
		svmdev_pt_free_tree(mirror->sdev, mirror->root, SVMDEV_PT_LEVELS - 1);
	mirror->root = NULL;
	list_for_each_entry_safe(pt, next, &mirror->pt_spares, spare) {
		list_del(&pt->spare);
		svmdev_pt_free_one(mirror->sdev, pt);
	}
	mirror->nr_spares = 0;
}

/* Makes sure @n tables are spare. Called without pt_lock: it allocates. */
int svmdev_pt_reserve(struct svmdev_mirror *mirror, unsigned int n)
{
	struct svmdev_pt *pt, *next;
	LIST_HEAD(fresh);
	unsigned int have, i;

	mutex_lock(&mirror->pt_lock);
	have = mirror->nr_spares;
	mutex_unlock(&mirror->pt_lock);
	for (i = have; i < n; i++) {
		pt = svmdev_pt_alloc(mirror->sdev);
		if (!pt)
			goto err_free;
		list_add(&pt->spare, &fresh);
	}
	mutex_lock(&mirror->pt_lock);
	mirror->nr_spares += n > have ? n - have : 0;
	list_splice(&fresh, &mirror->pt_spares);
	mutex_unlock(&mirror->pt_lock);
	return 0;

err_free:
	list_for_each_entry_safe(pt, next, &fresh, spare) {
		list_del(&pt->spare);
		svmdev_pt_free_one(mirror->sdev, pt);
	}
	return -ENOMEM;
}

/* Level-0 table covering @va, created from spares if @create. */
static struct svmdev_pt *svmdev_pt_walk(struct svmdev_mirror *mirror,
					unsigned long va, bool create)
{
	struct svmdev_pt *pt = mirror->root;
	int level;

	lockdep_assert_held(&mirror->pt_lock);
	for (level = SVMDEV_PT_LEVELS - 1; level > 0; level--) {
		unsigned int idx = SVMDEV_PT_INDEX((u64)va, level);
		struct svmdev_pt *next = pt->child[idx];

		if (!next) {
			if (!create || list_empty(&mirror->pt_spares))
				return NULL;
			next = list_first_entry(&mirror->pt_spares,
						struct svmdev_pt, spare);
			list_del_init(&next->spare);
			mirror->nr_spares--;
			pt->child[idx] = next;
			pt->entries[idx] = cpu_to_le64(next->dma | SVMDEV_PTE_VALID);
		}
		pt = next;
	}
	return pt;
}

/*
 * Writes one leaf. *old receives the entry it replaced: the caller fences
 * and unmaps it if it was a different, stronger or pending mapping.
 */
int svmdev_pt_set(struct svmdev_mirror *mirror, unsigned long va, u64 leaf,
		  u64 *old)
{
	struct svmdev_pt *pt = svmdev_pt_walk(mirror, va, true);
	unsigned int idx = SVMDEV_PT_INDEX((u64)va, 0);

	if (!pt)
		return -ENOMEM;
	*old = le64_to_cpu(pt->entries[idx]);
	pt->entries[idx] = cpu_to_le64(leaf);
	return 0;
}

u64 svmdev_pt_get(struct svmdev_mirror *mirror, unsigned long va)
{
	struct svmdev_pt *pt = svmdev_pt_walk(mirror, va, false);

	return pt ? le64_to_cpu(pt->entries[SVMDEV_PT_INDEX((u64)va, 0)]) : 0;
}

static void svmdev_abandon(struct svmdev *sdev, struct svmdev_req *req)
{
	unsigned int slot = req->seq % SVMDEV_MAX_INFLIGHT;
	unsigned long flags;

	spin_lock_irqsave(&sdev->q_lock, flags);
	if (sdev->slots[slot] == req)
		sdev->slots[slot] = NULL;
	spin_unlock_irqrestore(&sdev->q_lock, flags);
}

/*
 * Fences [start, end) with INVALIDATE. A blockable fence always completes:
 * by the device's acknowledgement, or by a ring restart, after which the
 * device holds no translation at all (device-spec.md, "Ring restart"). An
 * error other than the restart's ABORTED says the device did not do the
 * invalidation, so the rings are restarted for it. A dead device was reset
 * and has no contexts left. A non-blockable fence may give up with -EAGAIN.
 */
static int svmdev_fence(struct svmdev_mirror *mirror, unsigned long start,
			unsigned long end, bool blockable)
{
	struct svmdev *sdev = mirror->sdev;
	struct svmdev_cmd cmd = {
		.opcode = SVMDEV_OP_INVALIDATE,
		.ctx = mirror->ctx,
		.arg = { start, end - start },
	};
	struct svmdev_req req;
	unsigned int ms;
	int ret;

	svmdev_req_init(&req);
	if (blockable) {
		/* test-only: the fence of a lost acknowledgement never ends */
		ms = READ_ONCE(mirror->knobs.fence_forever) ? 0 :
		     READ_ONCE(svmdev_fence_timeout_ms);
		ret = svmdev_submit(sdev, &cmd, &req, false);
		if (!ret)
			ret = svmdev_wait_ms(sdev, &req, "INVALIDATE", ms);
	} else {
		ret = svmdev_submit(sdev, &cmd, &req, true);
		if (!ret && !svmdev_wait_atomic(sdev, &req, 2000)) {
			svmdev_abandon(sdev, &req);
			svmdev_count(sdev, SVMDEV_CTR_FENCE_TIMEOUTS);
			return -EAGAIN;
		}
		if (!ret)
			ret = svmdev_status_errno(req.status);
		/* no ring restart from a context that must not sleep */
		if (ret && ret != -ECANCELED && ret != -ENODEV)
			return -EAGAIN;
	}
	if (ret == -ECANCELED || ret == -ENODEV || !ret)
		return 0;
	dev_warn(sdev->dev, "INVALIDATE of ctx %u failed (%d): restarting rings\n",
		 mirror->ctx, ret);
	svmdev_restart(sdev);
	return 0;
}

void svmdev_invalidate(struct svmdev_mirror *mirror, unsigned long start,
		       unsigned long end)
{
	svmdev_fence(mirror, start, end, true);
}

/*
 * The first leaf slot at or after *va, below end, that has a table. A
 * missing table is skipped whole at its own level, so a range as large as
 * the address space costs a few hundred steps, not one per 2 MiB.
 */
static __le64 *svmdev_pt_next(struct svmdev_mirror *mirror, unsigned long *va,
			      unsigned long end)
{
	lockdep_assert_held(&mirror->pt_lock);
	while (*va < end) {
		struct svmdev_pt *pt = mirror->root;
		int level;

		for (level = SVMDEV_PT_LEVELS - 1; level > 0 && pt; level--)
			pt = pt->child[SVMDEV_PT_INDEX((u64)*va, level)];
		if (pt)
			return &pt->entries[SVMDEV_PT_INDEX((u64)*va, 0)];
		/* the missing table sat at level + 1 of the walk */
		*va = ALIGN(*va + 1, 1UL << (PAGE_SHIFT + 9 * (level + 1)));
	}
	return NULL;
}

/* Whether any leaf of [start, end) has one of @bits. */
bool svmdev_pt_any(struct svmdev_mirror *mirror, unsigned long start,
		   unsigned long end, u64 bits)
{
	unsigned long va;
	__le64 *slot;

	for (va = start; (slot = svmdev_pt_next(mirror, &va, end)); va += PAGE_SIZE)
		if (le64_to_cpu(*slot) & bits)
			return true;
	return false;
}

/*
 * Removes the device's access to [start, end): clears the leaves, fences
 * with INVALIDATE, then drops the DMA mappings. Returns false only for a
 * non-blockable caller whose fence did not complete in time; the leaves stay
 * cleared and their mappings pending until a later fence.
 */
bool svmdev_pt_clear(struct svmdev_mirror *mirror, unsigned long start,
		     unsigned long end, bool blockable)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long va;
	bool any = false;
	__le64 *slot;

	lockdep_assert_held(&mirror->pt_lock);
	for (va = start; (slot = svmdev_pt_next(mirror, &va, end)); va += PAGE_SIZE) {
		u64 e = le64_to_cpu(*slot);

		if (e & SVMDEV_PTE_SW_UNMAP)
			any = true;
		if (!(e & SVMDEV_PTE_VALID))
			continue;
		any = true;
		if (e & SVMDEV_PTE_VRAM)
			e = 0;
		else
			e = (e & SVMDEV_PTE_ADDR_MASK) | SVMDEV_PTE_SW_UNMAP;
		*slot = cpu_to_le64(e);
	}
	if (!any)
		return true;
	if (svmdev_fence(mirror, start, end, blockable) == -EAGAIN)
		return false;
	for (va = start; (slot = svmdev_pt_next(mirror, &va, end)); va += PAGE_SIZE) {
		u64 e = le64_to_cpu(*slot);

		if (!(e & SVMDEV_PTE_SW_UNMAP))
			continue;
		svmdev_leaf_unmap(sdev, e);
		*slot = 0;
	}
	return true;
}

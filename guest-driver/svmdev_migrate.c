// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev device-private memory: one MEMORY_DEVICE_PRIVATE pagemap covering
 * the device's VRAM (page N of the pagemap is VRAM offset N * PAGE_SIZE),
 * migration to and from it with migrate_vma_*(), the CPU fault path
 * (migrate_to_ram), and eviction when VRAM runs short.
 *
 * Data always moves through the device's copy engine: the driver never
 * touches page contents.
 */
#include <linux/dma-mapping.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "svmdev.h"
#include "svmdev_trace.h"

#define SVMDEV_EVICT_BATCH	64

static struct svmdev *pgmap_to_svmdev(struct dev_pagemap *pgmap)
{
	return container_of(pgmap, struct svmdev, pgmap);
}

bool svmdev_is_our_page(struct svmdev *sdev, struct page *page)
{
	return is_device_private_page(page) && page->pgmap == &sdev->pgmap;
}

u64 svmdev_vram_offset(struct svmdev *sdev, struct page *page)
{
	return (u64)(page_to_pfn(page) - sdev->vram_pfn_first) << PAGE_SHIFT;
}

static struct page *svmdev_vram_alloc(struct svmdev *sdev,
				      struct svmdev_mirror *mirror)
{
	unsigned long flags;
	struct page *page;

	if (mirror && atomic_add_unless(&mirror->knobs.fail_vram_alloc, -1, 0))
		return NULL;
	spin_lock_irqsave(&sdev->vram_lock, flags);
	page = sdev->vram_free;
	if (page) {
		sdev->vram_free = page->zone_device_data;
		sdev->vram_nfree--;
	}
	spin_unlock_irqrestore(&sdev->vram_lock, flags);
	if (!page)
		return NULL;
	page->zone_device_data = NULL;
	zone_device_page_init(page);	/* referenced and locked */
	return page;
}

/* A device page that was allocated but will not be used. */
static void svmdev_vram_abort(struct page *page)
{
	unlock_page(page);
	put_page(page);
}

static void svmdev_page_free(struct page *page)
{
	struct svmdev *sdev = pgmap_to_svmdev(page->pgmap);
	unsigned long flags;

	spin_lock_irqsave(&sdev->vram_lock, flags);
	page->zone_device_data = sdev->vram_free;
	sdev->vram_free = page;
	sdev->vram_nfree++;
	spin_unlock_irqrestore(&sdev->vram_lock, flags);
}

/* Copies a system page (or zeroes, if NULL) into a device page. */
static int svmdev_copy_to_vram(struct svmdev *sdev, struct svmdev_mirror *mirror,
			       struct page *spage, struct page *dpage)
{
	u64 dst = svmdev_vram_offset(sdev, dpage);
	dma_addr_t dma;
	int ret;

	if (!spage)
		return svmdev_copy(sdev, mirror, sdev->zero_dma, dst, PAGE_SIZE,
				   SVMDEV_COPY_F_DST_VRAM);
	dma = dma_map_page(sdev->dev, spage, 0, PAGE_SIZE, DMA_TO_DEVICE);
	if (dma_mapping_error(sdev->dev, dma))
		return -EFAULT;
	ret = svmdev_copy(sdev, mirror, dma, dst, PAGE_SIZE, SVMDEV_COPY_F_DST_VRAM);
	dma_unmap_page(sdev->dev, dma, PAGE_SIZE, DMA_TO_DEVICE);
	return ret;
}

/*
 * Allocates a system page and copies a device page into it. Returns the new
 * page locked, or NULL with *err set. @fail_copy: the copy is failed as the
 * injection knobs ask.
 */
static struct page *svmdev_page_to_sys(struct svmdev *sdev,
				       struct svmdev_mirror *mirror,
				       struct page *spage,
				       struct vm_area_struct *vma,
				       unsigned long addr, bool fail_copy,
				       int *err)
{
	struct page *dpage;
	dma_addr_t dma;

	if (vma)
		dpage = alloc_page_vma(GFP_HIGHUSER_MOVABLE, vma, addr);
	else
		dpage = alloc_page(GFP_HIGHUSER_MOVABLE);
	if (!dpage) {
		*err = -ENOMEM;
		return NULL;
	}
	lock_page(dpage);
	dma = dma_map_page(sdev->dev, dpage, 0, PAGE_SIZE, DMA_FROM_DEVICE);
	if (dma_mapping_error(sdev->dev, dma)) {
		*err = -EFAULT;
		goto err_page;
	}
	if (fail_copy) {
		svmdev_count(sdev, SVMDEV_CTR_COPY_ERRORS);
		*err = -EIO;
	} else {
		*err = svmdev_copy(sdev, mirror, svmdev_vram_offset(sdev, spage),
				   dma, PAGE_SIZE, SVMDEV_COPY_F_SRC_VRAM);
	}
	dma_unmap_page(sdev->dev, dma, PAGE_SIZE, DMA_FROM_DEVICE);
	if (*err)
		goto err_page;
	return dpage;

err_page:
	unlock_page(dpage);
	put_page(dpage);
	return NULL;
}

/*
 * One count of an injection knob of a file of @mm on this device. The
 * CPU-fault path has no file of its own; a mirror leaves sdev->ctxs before
 * it is freed, and the lock keeps it while its counter is taken.
 */
static bool svmdev_take_fault_knob(struct svmdev *sdev, struct mm_struct *mm,
				   bool copy)
{
	struct svmdev_mirror *mirror;
	unsigned long idx;
	bool taken = false;

	xa_lock(&sdev->ctxs);
	xa_for_each(&sdev->ctxs, idx, mirror) {
		atomic_t *k = copy ? &mirror->knobs.fail_copy :
				     &mirror->knobs.fail_vram_alloc;

		if (mirror->mm == mm && atomic_add_unless(k, -1, 0)) {
			taken = true;
			break;
		}
	}
	xa_unlock(&sdev->ctxs);
	return taken;
}

/* Pages of the CPU-fault window: 0 when faults are not serialised. */
static unsigned long svmdev_to_ram_window(struct svmdev *sdev)
{
	if (atomic_read(&sdev->serial_to_ram[SVMDEV_PERS_SERIAL_TO_RAM_2M -
					     SVMDEV_PERS_SERIAL_TO_RAM]))
		return SVMDEV_TO_RAM_WINDOW_2M;
	if (atomic_read(&sdev->serial_to_ram[0]))
		return SVMDEV_TO_RAM_WINDOW;
	if (atomic_read(&sdev->serial_to_ram[SVMDEV_PERS_SERIAL_TO_RAM_PAGE -
					     SVMDEV_PERS_SERIAL_TO_RAM]))
		return 1;
	return 0;
}

/*
 * CPU fault on one of our pages. Called with the page locked and
 * referenced; on copy failure the access gets SIGBUS rather than a fault
 * that would be retried forever. While a file of a SERIAL_TO_RAM
 * personality is open, faults take a device-wide lock and bring back the
 * pages of an aligned window around the faulting one, within its VMA.
 */
static vm_fault_t svmdev_migrate_to_ram(struct vm_fault *vmf)
{
	struct svmdev *sdev = pgmap_to_svmdev(vmf->page->pgmap);
	unsigned long small[2 * SVMDEV_TO_RAM_WINDOW] = {};
	unsigned long *src = small, *dst = small + SVMDEV_TO_RAM_WINDOW;
	unsigned long addr = vmf->address & PAGE_MASK;
	unsigned long window = svmdev_to_ram_window(sdev);
	struct mm_struct *mm = vmf->vma->vm_mm;
	struct migrate_vma args = {
		.vma = vmf->vma,
		.start = addr,
		.end = addr + PAGE_SIZE,
		.pgmap_owner = sdev,
		.flags = MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
		.fault_page = vmf->page,
	};
	unsigned long i, moved = 0;
	vm_fault_t ret = 0;
	struct page *dpage;
	int err;

	svmdev_count(sdev, SVMDEV_CTR_CPU_FAULTS);
	if (window > SVMDEV_TO_RAM_WINDOW) {
		/* a large window is an optimisation: without memory, one page */
		src = kcalloc(2 * window, sizeof(*src), GFP_KERNEL);
		if (src) {
			dst = src + window;
		} else {
			src = small;
			window = 1;
		}
	}
	if (window) {
		unsigned long span = window * PAGE_SIZE;

		args.start = max(ALIGN_DOWN(addr, span), vmf->vma->vm_start);
		args.end = min(ALIGN_DOWN(addr, span) + span, vmf->vma->vm_end);
		mutex_lock(&sdev->to_ram_lock);
	}
	args.src = src;
	args.dst = dst;
	if (migrate_vma_setup(&args)) {
		ret = VM_FAULT_SIGBUS;
		goto out;
	}
	for (i = 0; i < args.npages; i++) {
		unsigned long va = args.start + i * PAGE_SIZE;

		if (!(src[i] & MIGRATE_PFN_MIGRATE))
			continue;
		if (svmdev_take_fault_knob(sdev, mm, false)) {
			dpage = NULL;
			err = -ENOMEM;
		} else {
			dpage = svmdev_page_to_sys(sdev, NULL,
					migrate_pfn_to_page(src[i]), vmf->vma,
					va, svmdev_take_fault_knob(sdev, mm, true),
					&err);
		}
		if (dpage) {
			dst[i] = migrate_pfn(page_to_pfn(dpage));
			if (src[i] & MIGRATE_PFN_WRITE)
				dst[i] |= MIGRATE_PFN_WRITE;
			moved++;
		} else if (va == addr) {
			/* only the faulting page decides the fault */
			ret = err == -ENOMEM ? VM_FAULT_OOM : VM_FAULT_SIGBUS;
		}
	}
	migrate_vma_pages(&args);
	if (moved)
		atomic64_add(moved, &sdev->ctr[SVMDEV_CTR_TO_RAM]);
	migrate_vma_finalize(&args);
out:
	if (window)
		mutex_unlock(&sdev->to_ram_lock);
	if (src != small)
		kfree(src);
	return ret;
}

static const struct dev_pagemap_ops svmdev_pgmap_ops = {
	.page_free = svmdev_page_free,
	.migrate_to_ram = svmdev_migrate_to_ram,
};

/* Fills dst[] with device pages holding copies of the collected src[]. */
static void svmdev_alloc_and_copy(struct svmdev_mirror *mirror,
				  struct migrate_vma *args)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long i;

	for (i = 0; i < args->npages; i++) {
		struct page *spage, *dpage;

		args->dst[i] = 0;
		if (!(args->src[i] & MIGRATE_PFN_MIGRATE))
			continue;
		/* NULL: an empty or zero-page entry, filled with zeroes */
		spage = migrate_pfn_to_page(args->src[i]);
		if (spage && is_zone_device_page(spage))
			continue;
		dpage = svmdev_vram_alloc(sdev, mirror);
		if (!dpage)
			continue;
		if (svmdev_copy_to_vram(sdev, mirror, spage, dpage)) {
			svmdev_vram_abort(dpage);
			continue;
		}
		args->dst[i] = migrate_pfn(page_to_pfn(dpage));
		if ((args->src[i] & MIGRATE_PFN_WRITE) ||
		    (!spage && (args->vma->vm_flags & VM_WRITE)))
			args->dst[i] |= MIGRATE_PFN_WRITE;
	}
}

static unsigned long svmdev_count_migrated(struct migrate_vma *args)
{
	unsigned long i, migrated = 0;

	for (i = 0; i < args->npages; i++)
		if (args->dst[i] && (args->src[i] & MIGRATE_PFN_MIGRATE))
			migrated++;
	return migrated;
}

int svmdev_migrate_to_dev(struct svmdev_mirror *mirror, unsigned long start,
			  unsigned long end, unsigned long *done,
			  unsigned long *retries)
{
	struct svmdev *sdev = mirror->sdev;
	struct mm_struct *mm = mirror->mm;
	unsigned long src[SVMDEV_RANGE_PAGES / 8], dst[SVMDEV_RANGE_PAGES / 8];
	unsigned long addr, next, migrated, mapped = 0;
	int ret = 0;

	if (READ_ONCE(sdev->draining) || !sdev->vram_npages)
		return -ENODEV;
	if (!mmget_not_zero(mm))
		return -ESRCH;
	for (addr = start; addr < end; addr = next) {
		struct migrate_vma args = {
			.src = src,
			.dst = dst,
			.pgmap_owner = sdev,
			.flags = MIGRATE_VMA_SELECT_SYSTEM,
		};
		unsigned long want, remap_retries = 0;

		next = min3(ALIGN(addr + 1, SVMDEV_RANGE_SIZE), end,
			    addr + ARRAY_SIZE(src) * PAGE_SIZE);
		want = (next - addr) >> PAGE_SHIFT;
		if (READ_ONCE(sdev->vram_nfree) < want)
			svmdev_evict(sdev, want - READ_ONCE(sdev->vram_nfree));

		mmap_read_lock(mm);
		args.vma = vma_lookup(mm, addr);
		if (!args.vma || !(args.vma->vm_flags & VM_READ)) {
			mmap_read_unlock(mm);
			ret = -EINVAL;
			break;
		}
		next = min(next, args.vma->vm_end);
		args.start = addr;
		args.end = next;
		ret = migrate_vma_setup(&args);
		if (ret) {
			mmap_read_unlock(mm);
			break;
		}
		svmdev_alloc_and_copy(mirror, &args);
		migrate_vma_pages(&args);
		migrated = svmdev_count_migrated(&args);
		migrate_vma_finalize(&args);
		mmap_read_unlock(mm);

		*done += migrated;
		atomic64_add(migrated, &sdev->ctr[SVMDEV_CTR_TO_DEV]);
		if (migrated < args.cpages)
			(*retries)++;

		/*
		 * The migration's invalidations cleared the window's leaves,
		 * including those of pages that were in VRAM already, and
		 * migrate_vma_pages() invalidates again when it fills empty
		 * entries. Map the window from what the CPU page table holds
		 * now, with the usual read_begin/read_retry loop, rather than
		 * trusting migrate_vma's view: a zap of a migration entry
		 * (MADV_DONTNEED needs only mmap_read_lock) would leave a
		 * migrated page unmapped and freed.
		 */
		ret = svmdev_mirror_fault(mirror, addr, next, false, false,
					  &mapped, &remap_retries);
		*retries += remap_retries;
		trace_svmdev_migrate_to_dev(mirror, addr, args.npages,
					    args.cpages, migrated,
					    remap_retries);
		if (ret)
			break;
	}
	mmput(mm);
	return ret;
}

int svmdev_migrate_to_sys(struct svmdev_mirror *mirror, unsigned long start,
			  unsigned long end, unsigned long *done)
{
	struct svmdev *sdev = mirror->sdev;
	struct mm_struct *mm = mirror->mm;
	unsigned long src[SVMDEV_RANGE_PAGES / 8], dst[SVMDEV_RANGE_PAGES / 8];
	unsigned long addr, next, migrated, i;
	int ret = 0, err;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	mmap_read_lock(mm);
	for (addr = start; addr < end; addr = next) {
		struct migrate_vma args = {
			.src = src,
			.dst = dst,
			.pgmap_owner = sdev,
			.flags = MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
		};

		args.vma = vma_lookup(mm, addr);
		if (!args.vma || !(args.vma->vm_flags & VM_READ)) {
			ret = -EINVAL;
			break;
		}
		next = min3(end, args.vma->vm_end,
			    addr + ARRAY_SIZE(src) * PAGE_SIZE);
		args.start = addr;
		args.end = next;
		ret = migrate_vma_setup(&args);
		if (ret)
			break;
		for (i = 0; i < args.npages; i++) {
			struct page *spage = migrate_pfn_to_page(src[i]);
			struct page *dpage;

			dst[i] = 0;
			if (!spage || !(src[i] & MIGRATE_PFN_MIGRATE) ||
			    !svmdev_is_our_page(sdev, spage))
				continue;
			dpage = svmdev_page_to_sys(sdev, mirror, spage, args.vma, false,
						   addr + (i << PAGE_SHIFT), &err);
			if (!dpage)
				continue;
			dst[i] = migrate_pfn(page_to_pfn(dpage));
			if (src[i] & MIGRATE_PFN_WRITE)
				dst[i] |= MIGRATE_PFN_WRITE;
		}
		migrate_vma_pages(&args);
		migrated = svmdev_count_migrated(&args);
		migrate_vma_finalize(&args);
		*done += migrated;
		atomic64_add(migrated, &sdev->ctr[SVMDEV_CTR_TO_RAM]);
		trace_svmdev_migrate_to_ram(mirror, addr, args.npages,
					    args.cpages, migrated);
	}
	mmap_read_unlock(mm);
	mmput(mm);
	return ret;
}

/*
 * Moves up to @want in-use device pages back to system memory, scanning
 * VRAM round-robin from where the last eviction stopped. Returns the
 * number evicted.
 */
unsigned long svmdev_evict(struct svmdev *sdev, unsigned long want)
{
	unsigned long *src, *dst, scanned = 0, evicted = 0, i, n;
	int err;

	if (!sdev->vram_npages || sdev->dead)
		return 0;
	src = kcalloc(SVMDEV_EVICT_BATCH, sizeof(*src), GFP_KERNEL);
	dst = kcalloc(SVMDEV_EVICT_BATCH, sizeof(*dst), GFP_KERNEL);
	if (!src || !dst)
		goto out_free;

	mutex_lock(&sdev->evict_lock);
	while (evicted < want && scanned < sdev->vram_npages) {
		n = min_t(unsigned long, SVMDEV_EVICT_BATCH,
			  sdev->vram_npages - sdev->evict_cursor);
		memset(src, 0, n * sizeof(*src));
		memset(dst, 0, n * sizeof(*dst));
		migrate_device_range(src, sdev->vram_pfn_first + sdev->evict_cursor, n);
		for (i = 0; i < n; i++) {
			struct page *spage = migrate_pfn_to_page(src[i]);
			struct page *dpage;

			if (!spage || !(src[i] & MIGRATE_PFN_MIGRATE))
				continue;
			dpage = svmdev_page_to_sys(sdev, NULL, spage, NULL, 0, false,
						   &err);
			if (!dpage)
				continue;
			dst[i] = migrate_pfn(page_to_pfn(dpage));
			if (src[i] & MIGRATE_PFN_WRITE)
				dst[i] |= MIGRATE_PFN_WRITE;
		}
		migrate_device_pages(src, dst, n);
		for (i = 0; i < n; i++)
			if (dst[i] && (src[i] & MIGRATE_PFN_MIGRATE))
				evicted++;
		migrate_device_finalize(src, dst, n);
		sdev->evict_cursor = (sdev->evict_cursor + n) % sdev->vram_npages;
		scanned += n;
	}
	mutex_unlock(&sdev->evict_lock);
	atomic64_add(evicted, &sdev->ctr[SVMDEV_CTR_EVICTED]);
out_free:
	kfree(dst);
	kfree(src);
	return evicted;
}

int svmdev_vram_init(struct svmdev *sdev)
{
	unsigned long i;
	void *addr;
	int ret;

	if (!(sdev->caps & SVMDEV_CAP_VRAM) || sdev->vram_size < PAGE_SIZE)
		return 0;
	sdev->zero_buf = dma_alloc_coherent(sdev->dev, PAGE_SIZE, &sdev->zero_dma,
					    GFP_KERNEL);
	if (!sdev->zero_buf)
		return -ENOMEM;
	sdev->vram_res = request_free_mem_region(&iomem_resource,
						 ALIGN_DOWN(sdev->vram_size, PAGE_SIZE),
						 dev_name(sdev->dev));
	if (IS_ERR(sdev->vram_res)) {
		ret = PTR_ERR(sdev->vram_res);
		goto err_zero;
	}
	sdev->pgmap.type = MEMORY_DEVICE_PRIVATE;
	sdev->pgmap.range.start = sdev->vram_res->start;
	sdev->pgmap.range.end = sdev->vram_res->end;
	sdev->pgmap.nr_range = 1;
	sdev->pgmap.ops = &svmdev_pgmap_ops;
	sdev->pgmap.owner = sdev;
	addr = memremap_pages(&sdev->pgmap, dev_to_node(sdev->dev));
	if (IS_ERR(addr)) {
		ret = PTR_ERR(addr);
		goto err_region;
	}
	sdev->vram_pfn_first = sdev->vram_res->start >> PAGE_SHIFT;
	sdev->vram_npages = resource_size(sdev->vram_res) >> PAGE_SHIFT;
	for (i = sdev->vram_npages; i-- > 0;) {
		struct page *page = pfn_to_page(sdev->vram_pfn_first + i);

		page->zone_device_data = sdev->vram_free;
		sdev->vram_free = page;
	}
	sdev->vram_nfree = sdev->vram_npages;
	return 0;

err_region:
	release_mem_region(sdev->vram_res->start, resource_size(sdev->vram_res));
err_zero:
	dma_free_coherent(sdev->dev, PAGE_SIZE, sdev->zero_buf, sdev->zero_dma);
	sdev->zero_buf = NULL;
	return ret;
}

/*
 * Every device page must be free by now (svmdev_evict): memunmap_pages()
 * waits for the last reference.
 */
void svmdev_vram_fini(struct svmdev *sdev)
{
	if (!sdev->zero_buf)
		return;
	if (sdev->vram_npages) {
		if (sdev->vram_nfree != sdev->vram_npages)
			dev_warn(sdev->dev, "%lu device pages still in use at removal\n",
				 sdev->vram_npages - sdev->vram_nfree);
		memunmap_pages(&sdev->pgmap);
		release_mem_region(sdev->vram_res->start,
				   resource_size(sdev->vram_res));
		sdev->vram_npages = 0;
	}
	dma_free_coherent(sdev->dev, PAGE_SIZE, sdev->zero_buf, sdev->zero_dma);
	sdev->zero_buf = NULL;
}

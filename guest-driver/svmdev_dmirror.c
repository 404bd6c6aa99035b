// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/hmm_dmirrorN (module parameter dmirror_compat=1): the HMM test
 * driver's ioctls, served by the real device so the kernel's hmm-tests
 * selftest runs unmodified against svmdev. Each open file mirrors the
 * opener's mm in its own device context, like test_hmm's struct dmirror.
 *
 * Device reads and writes are ACCESS commands of one page each, through a
 * DMA bounce page; the first fault of a request mirrors the rest of the
 * request (the request's fault hint), so a request faults once, as
 * test_hmm's does.
 */
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/hmm.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "svmdev.h"
#include "svmdev_dmirror_uapi.h"

#define DMIRROR_SNAPSHOT_BATCH	64

static int dmirror_open(struct inode *inode, struct file *filp)
{
	struct miscdevice *misc = filp->private_data;
	struct svmdev *sdev = container_of(misc, struct svmdev, compat_misc);
	struct svmdev_mirror *mirror;

	mirror = svmdev_mirror_create(sdev, true, SVMDEV_PERS_NONE);
	if (IS_ERR(mirror))
		return PTR_ERR(mirror);
	filp->private_data = mirror;
	return 0;
}

static int dmirror_release(struct inode *inode, struct file *filp)
{
	svmdev_mirror_destroy(filp->private_data);
	return 0;
}

/*
 * Device reads (or writes) of whole pages between [addr, addr + npages) and
 * the user buffer at ptr. With @nofault, a page the device has no mapping
 * for ends the request with -ENOENT instead of being faulted in.
 */
static int dmirror_rw(struct svmdev_mirror *mirror, struct hmm_dmirror_cmd *cmd,
		      bool write, bool nofault)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long size = cmd->npages << PAGE_SHIFT, i;
	u8 kind = write ? SVMDEV_ACC_WRITE : SVMDEV_ACC_READ;
	u8 __user *uptr = u64_to_user_ptr(cmd->ptr);
	dma_addr_t dma;
	void *bounce;
	int ret = 0;

	/* page by page through one bounce page: npages is the caller's */
	bounce = dma_alloc_coherent(sdev->dev, PAGE_SIZE, &dma, GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	for (i = 0; i < cmd->npages; i++) {
		unsigned long va = cmd->addr + (i << PAGE_SHIFT);
		struct svmdev_req req;

		svmdev_req_init(&req);
		req.hint_start = va;
		req.hint_end = cmd->addr + size;
		req.nofault = nofault;
		if (write && copy_from_user(bounce, uptr + (i << PAGE_SHIFT), PAGE_SIZE)) {
			ret = -EFAULT;
			break;
		}
		ret = svmdev_device_access(mirror, va,
					   SVMDEV_ACC_ARG1(kind, PAGE_SIZE, 0),
					   SVMDEV_ACC_F_BUF, 0, 0, dma, &req);
		cmd->faults += nofault ? 0 : req.faults;
		if (ret)
			break;
		if (!write && copy_to_user(uptr + (i << PAGE_SHIFT), bounce, PAGE_SIZE)) {
			ret = -EFAULT;
			break;
		}
		cmd->cpages++;
	}
	dma_free_coherent(sdev->dev, PAGE_SIZE, bounce, dma);
	return ret;
}

static int dmirror_check_exclusive(struct svmdev_mirror *mirror,
				   struct hmm_dmirror_cmd *cmd)
{
	unsigned long start = cmd->addr, end = start + (cmd->npages << PAGE_SHIFT);
	bool any;

	mutex_lock(&mirror->pt_lock);
	any = svmdev_pt_any(mirror, start, end, SVMDEV_PTE_ATOMIC);
	mutex_unlock(&mirror->pt_lock);
	return any ? -EPERM : 0;
}

/* ---- SNAPSHOT: what hmm_range_fault() reports, without faulting ---- */

struct dmirror_snap {
	struct mmu_interval_notifier notifier;
	struct svmdev_mirror *mirror;
};

static bool dmirror_snap_invalidate(struct mmu_interval_notifier *mni,
				    const struct mmu_notifier_range *range,
				    unsigned long cur_seq)
{
	struct dmirror_snap *snap = container_of(mni, struct dmirror_snap, notifier);
	struct svmdev_mirror *mirror = snap->mirror;

	if (mmu_notifier_range_blockable(range))
		mutex_lock(&mirror->pt_lock);
	else if (!mutex_trylock(&mirror->pt_lock))
		return false;
	mmu_interval_set_seq(mni, cur_seq);
	mutex_unlock(&mirror->pt_lock);
	return true;
}

static const struct mmu_interval_notifier_ops dmirror_snap_ops = {
	.invalidate = dmirror_snap_invalidate,
};

static u8 dmirror_prot(struct svmdev_mirror *mirror, unsigned long entry)
{
	struct page *page;
	u8 prot;

	if (entry & HMM_PFN_ERROR)
		return HMM_DMIRROR_PROT_ERROR;
	if (!(entry & HMM_PFN_VALID))
		return HMM_DMIRROR_PROT_NONE;
	page = hmm_pfn_to_page(entry);
	if (is_device_private_page(page))
		prot = svmdev_is_our_page(mirror->sdev, page) ?
		       HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL :
		       HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE;
	else if (is_zero_pfn(page_to_pfn(page)))
		prot = HMM_DMIRROR_PROT_ZERO;
	else
		prot = HMM_DMIRROR_PROT_NONE;
	prot |= entry & HMM_PFN_WRITE ? HMM_DMIRROR_PROT_WRITE :
		HMM_DMIRROR_PROT_READ;
	if (hmm_pfn_to_map_order(entry) + PAGE_SHIFT == PMD_SHIFT)
		prot |= HMM_DMIRROR_PROT_PMD;
	else if (hmm_pfn_to_map_order(entry) + PAGE_SHIFT == PUD_SHIFT)
		prot |= HMM_DMIRROR_PROT_PUD;
	return prot;
}

static int dmirror_snapshot_batch(struct svmdev_mirror *mirror,
				  unsigned long start, unsigned long end,
				  u8 *prot)
{
	struct svmdev *sdev = mirror->sdev;
	unsigned long pfns[DMIRROR_SNAPSHOT_BATCH], i, iter;
	struct dmirror_snap snap = { .mirror = mirror };
	struct hmm_range hr = {
		.notifier = &snap.notifier,
		.start = start,
		.end = end,
		.hmm_pfns = pfns,
		.dev_private_owner = sdev,
	};
	bool reported = false;
	int ret;

	ret = mmu_interval_notifier_insert(&snap.notifier, mirror->mm, start,
					   end - start, &dmirror_snap_ops);
	if (ret)
		return ret;
	for (iter = 0;; iter++) {
		svmdev_loop_iter(sdev, SVMDEV_LOOP_SNAPSHOT, iter, &reported);
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		hr.notifier_seq = mmu_interval_read_begin(&snap.notifier);
		mmap_read_lock(mirror->mm);
		ret = hmm_range_fault(&hr);
		mmap_read_unlock(mirror->mm);
		if (ret == -EBUSY) {
			svmdev_count(sdev, SVMDEV_CTR_HMM_BUSY);
			continue;
		}
		if (ret)
			break;
		mutex_lock(&mirror->pt_lock);
		if (mmu_interval_read_retry(&snap.notifier, hr.notifier_seq)) {
			mutex_unlock(&mirror->pt_lock);
			svmdev_count(sdev, SVMDEV_CTR_READ_RETRY);
			continue;
		}
		for (i = 0; i < (end - start) >> PAGE_SHIFT; i++)
			prot[i] = dmirror_prot(mirror, pfns[i]);
		mutex_unlock(&mirror->pt_lock);
		break;
	}
	mmu_interval_notifier_remove(&snap.notifier);
	return ret;
}

static int dmirror_snapshot(struct svmdev_mirror *mirror,
			    struct hmm_dmirror_cmd *cmd)
{
	unsigned long start = cmd->addr, end = start + (cmd->npages << PAGE_SHIFT);
	u8 __user *uptr = u64_to_user_ptr(cmd->ptr);
	u8 prot[DMIRROR_SNAPSHOT_BATCH];
	unsigned long addr, next, n;
	int ret = 0;

	if (!mmget_not_zero(mirror->mm))
		return -EINVAL;
	for (addr = start; addr < end; addr = next) {
		next = min(end, addr + (DMIRROR_SNAPSHOT_BATCH << PAGE_SHIFT));
		ret = dmirror_snapshot_batch(mirror, addr, next, prot);
		if (ret)
			break;
		n = (next - addr) >> PAGE_SHIFT;
		if (copy_to_user(uptr, prot, n)) {
			ret = -EFAULT;
			break;
		}
		cmd->cpages += n;
		uptr += n;
	}
	mmput(mirror->mm);
	return ret;
}

static long dmirror_ioctl(struct file *filp, unsigned int command,
			  unsigned long arg)
{
	struct svmdev_mirror *mirror = filp->private_data;
	void __user *uarg = (void __user *)arg;
	unsigned long start, end, done = 0, retries = 0;
	struct hmm_dmirror_cmd cmd;
	int ret;

	if (copy_from_user(&cmd, uarg, sizeof(cmd)))
		return -EFAULT;
	ret = svmdev_check_range(cmd.addr, cmd.npages, &start, &end);
	if (ret)
		return ret;
	if (READ_ONCE(mirror->sdev->dead))
		return -ENODEV;
	cmd.cpages = 0;
	cmd.faults = 0;

	switch (command) {
	case HMM_DMIRROR_READ:
		ret = dmirror_rw(mirror, &cmd, false, false);
		break;
	case HMM_DMIRROR_WRITE:
		ret = dmirror_rw(mirror, &cmd, true, false);
		break;
	case HMM_DMIRROR_MIGRATE_TO_DEV:
		ret = svmdev_migrate_to_dev(mirror, start, end, &done, &retries);
		/* hand back what the device now maps, as test_hmm does */
		if (!ret)
			ret = dmirror_rw(mirror, &cmd, false, true);
		break;
	case HMM_DMIRROR_MIGRATE_TO_SYS:
		ret = svmdev_migrate_to_sys(mirror, start, end, &done);
		cmd.cpages = done;
		break;
	case HMM_DMIRROR_EXCLUSIVE:
		ret = svmdev_mirror_exclusive(mirror, start, end, &done, &retries);
		if (!ret)
			ret = dmirror_rw(mirror, &cmd, false, true);
		break;
	case HMM_DMIRROR_CHECK_EXCLUSIVE:
		ret = dmirror_check_exclusive(mirror, &cmd);
		break;
	case HMM_DMIRROR_SNAPSHOT:
		ret = dmirror_snapshot(mirror, &cmd);
		break;
	case HMM_DMIRROR_RELEASE:
		svmdev_evict(mirror->sdev, ULONG_MAX);
		ret = 0;
		break;
	default:
		return -EINVAL;
	}
	if (ret)
		return ret;
	if (copy_to_user(uarg, &cmd, sizeof(cmd)))
		return -EFAULT;
	return 0;
}

/* Like test_hmm: a mapping of the device file is backed by zeroed pages. */
static int dmirror_mmap(struct file *filp, struct vm_area_struct *vma)
{
	unsigned long addr;

	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		struct page *page;
		int ret;

		page = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!page)
			return -ENOMEM;
		ret = vm_insert_page(vma, addr, page);
		if (ret) {
			__free_page(page);
			return ret;
		}
		put_page(page);
	}
	return 0;
}

const struct file_operations svmdev_dmirror_fops = {
	.owner = THIS_MODULE,
	.open = dmirror_open,
	.release = dmirror_release,
	.mmap = dmirror_mmap,
	.unlocked_ioctl = dmirror_ioctl,
	.llseek = default_llseek,
};

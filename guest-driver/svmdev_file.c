// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/svmdevN: the driver's own interface (include/svmdev/svmdev_uapi.h),
 * used by the in-guest executor. One open file is one svmdev_file;
 * SVMDEV_IOC_BIND ties it to the caller's mm and a device context.
 */
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "svmdev.h"

#define SVMDEV_SNAPSHOT_MAX	65536

struct svmdev_file {
	struct svmdev *sdev;
	struct mutex lock;		/* protects mirror (binding) */
	struct svmdev_mirror *mirror;
};

static int svmdev_open(struct inode *inode, struct file *filp)
{
	struct miscdevice *misc = filp->private_data;
	struct svmdev *sdev = container_of(misc, struct svmdev, misc);
	struct svmdev_file *sf;

	sf = kzalloc(sizeof(*sf), GFP_KERNEL);
	if (!sf)
		return -ENOMEM;
	sf->sdev = sdev;
	svmdev_get(sdev);
	mutex_init(&sf->lock);
	filp->private_data = sf;
	return 0;
}

static int svmdev_release_file(struct inode *inode, struct file *filp)
{
	struct svmdev_file *sf = filp->private_data;

	if (sf->mirror)
		svmdev_mirror_destroy(sf->mirror);
	svmdev_put(sf->sdev);
	kfree(sf);
	return 0;
}

static int svmdev_ioc_bind(struct svmdev_file *sf, void __user *uarg)
{
	struct svmdev_mirror *mirror;
	struct svmdev_bind b;
	int ret = 0;

	if (copy_from_user(&b, uarg, sizeof(b)))
		return -EFAULT;
	if (b.flags || b.personality > SVMDEV_PERS_MAX)
		return -EINVAL;
	mutex_lock(&sf->lock);
	if (sf->mirror) {
		ret = -EBUSY;
		goto out;
	}
	mirror = svmdev_mirror_create(sf->sdev, false, b.personality);
	if (IS_ERR(mirror)) {
		ret = PTR_ERR(mirror);
		goto out;
	}
	sf->mirror = mirror;
	b.ctx = mirror->ctx;
	b.device = sf->sdev->index;
	if (copy_to_user(uarg, &b, sizeof(b)))
		ret = -EFAULT;
out:
	mutex_unlock(&sf->lock);
	return ret;
}

static int svmdev_ioc_range(struct svmdev_mirror *mirror, unsigned int cmd,
			    void __user *uarg)
{
	unsigned long start, end, done = 0, retries = 0;
	struct svmdev_range_op op;
	int ret;

	if (copy_from_user(&op, uarg, sizeof(op)))
		return -EFAULT;
	if (cmd == SVMDEV_IOC_RELEASE && !op.npages) {
		op.done = svmdev_evict(mirror->sdev, ULONG_MAX);
		ret = 0;
		goto out;
	}
	ret = svmdev_check_range(op.addr, op.npages, &start, &end);
	if (ret)
		return ret;
	switch (cmd) {
	case SVMDEV_IOC_MAP_PRESENT:
		ret = svmdev_mirror_fault(mirror, start, end, false, false,
					  &done, &retries);
		break;
	case SVMDEV_IOC_MIRROR:
		ret = svmdev_mirror_fault(mirror, start, end,
					  op.flags & SVMDEV_RANGE_F_WRITE, true,
					  &done, &retries);
		break;
	case SVMDEV_IOC_MIGRATE:
		if (op.flags & SVMDEV_RANGE_F_TO_SYS)
			ret = svmdev_migrate_to_sys(mirror, start, end, &done);
		else
			ret = svmdev_migrate_to_dev(mirror, start, end, &done,
						    &retries);
		break;
	case SVMDEV_IOC_EXCLUSIVE:
		ret = svmdev_mirror_exclusive(mirror, start, end, &done, &retries);
		break;
	default:
		ret = svmdev_mirror_unmap(mirror, start, end);
		done = op.npages;
		break;
	}
	op.done = done;
	op.retries = retries;
out:
	if (copy_to_user(uarg, &op, sizeof(op)))
		return -EFAULT;
	return ret;
}

static int svmdev_ioc_access(struct svmdev_mirror *mirror, void __user *uarg)
{
	struct svmdev *sdev = mirror->sdev;
	struct svmdev_access a;
	struct svmdev_req req;
	dma_addr_t dma = 0;
	void *bounce = NULL;
	bool buf;
	u8 flags = 0;
	int ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.kind > SVMDEV_UACC_ATOMIC || !a.size || a.size > PAGE_SIZE ||
	    a.aop > SVMDEV_UAOP_AND ||
	    (a.addr & ~PAGE_MASK) + a.size > PAGE_SIZE)
		return -EINVAL;
	buf = a.kind != SVMDEV_UACC_ATOMIC && (a.size > 8 || a.ptr);
	if (buf) {
		bounce = dma_alloc_coherent(sdev->dev, PAGE_SIZE, &dma, GFP_KERNEL);
		if (!bounce)
			return -ENOMEM;
		flags = SVMDEV_ACC_F_BUF;
		if (a.kind == SVMDEV_UACC_WRITE &&
		    copy_from_user(bounce, u64_to_user_ptr(a.ptr), a.size)) {
			ret = -EFAULT;
			goto out_free;
		}
	}
	svmdev_req_init(&req);
	ret = svmdev_device_access(mirror, a.addr,
				   SVMDEV_ACC_ARG1(a.kind, a.size, a.aop), flags,
				   a.value, a.compare, dma, &req);
	a.status = req.status;
	a.faults = req.faults;
	if (!ret) {
		a.value = req.value;
		if (buf && a.kind == SVMDEV_UACC_READ &&
		    copy_to_user(u64_to_user_ptr(a.ptr), bounce, a.size))
			ret = -EFAULT;
	}
	if (copy_to_user(uarg, &a, sizeof(a)))
		ret = -EFAULT;
out_free:
	if (bounce)
		dma_free_coherent(sdev->dev, PAGE_SIZE, bounce, dma);
	return ret;
}

static int svmdev_ioc_snapshot(struct svmdev_mirror *mirror, void __user *uarg)
{
	unsigned long start, end, i;
	struct svmdev_snapshot s;
	u8 *flags;
	int ret;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.npages > SVMDEV_SNAPSHOT_MAX)
		return -EINVAL;
	ret = svmdev_check_range(s.addr, s.npages, &start, &end);
	if (ret)
		return ret;
	flags = kvzalloc(s.npages, GFP_KERNEL);
	if (!flags)
		return -ENOMEM;
	s.valid = 0;
	mutex_lock(&mirror->pt_lock);
	for (i = 0; i < s.npages; i++) {
		u64 leaf = svmdev_pt_get(mirror, start + (i << PAGE_SHIFT));

		if (!(leaf & SVMDEV_PTE_VALID))
			continue;
		flags[i] = SVMDEV_SNAP_VALID |
			   (leaf & SVMDEV_PTE_READ ? SVMDEV_SNAP_READ : 0) |
			   (leaf & SVMDEV_PTE_WRITE ? SVMDEV_SNAP_WRITE : 0) |
			   (leaf & SVMDEV_PTE_ATOMIC ? SVMDEV_SNAP_ATOMIC : 0) |
			   (leaf & SVMDEV_PTE_VRAM ? SVMDEV_SNAP_VRAM : 0);
		s.valid++;
	}
	mutex_unlock(&mirror->pt_lock);
	if (copy_to_user(u64_to_user_ptr(s.ptr), flags, s.npages) ||
	    copy_to_user(uarg, &s, sizeof(s)))
		ret = -EFAULT;
	kvfree(flags);
	return ret;
}

static int svmdev_ioc_knobs(struct svmdev_mirror *mirror, void __user *uarg)
{
	struct svmdev_knob_state *k = &mirror->knobs;
	struct svmdev_knobs u;

	if (copy_from_user(&u, uarg, sizeof(u)))
		return -EFAULT;
	atomic_set(&k->fail_vram_alloc, min_t(u64, u.fail_vram_alloc, INT_MAX));
	atomic_set(&k->fail_copy, min_t(u64, u.fail_copy, INT_MAX));
	WRITE_ONCE(k->fault_delay_ms, min_t(u64, u.fault_delay_ms, 10000));
	atomic_set(&k->skip_invalidate, min_t(u64, u.break_skip_invalidate, INT_MAX));
	WRITE_ONCE(k->livelock, !!u.break_livelock);
	atomic_set(&k->leak_page, min_t(u64, u.break_leak_page, INT_MAX));
	atomic_set(&k->imbalance, min_t(u64, u.break_imbalance, INT_MAX));
	WRITE_ONCE(k->fence_forever, !!u.break_fence_wait);
	return 0;
}

static int svmdev_ioc_counters(struct svmdev_mirror *mirror, void __user *uarg,
			       bool check)
{
	struct svmdev *sdev = mirror->sdev;
	struct svmdev_counters *c;
	unsigned int i;
	int ret = 0;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	c->balanced = check ? svmdev_mmn_check(mirror, "check") :
		      !atomic64_read(&mirror->mmn.active);
	for (i = 0; i < SVMDEV_NUM_COUNTERS; i++)
		c->hw[i] = svmdev_read_counter(sdev, i);
	for (i = 0; i < SVMDEV_NUM_CTRS; i++)
		c->drv[i] = atomic64_read(&sdev->ctr[i]);
	c->drv[SVMDEV_CTR_VRAM_FREE] = READ_ONCE(sdev->vram_nfree);
	c->mn_starts = atomic64_read(&mirror->mmn.starts);
	c->mn_ends = atomic64_read(&mirror->mmn.ends);
	c->mn_refused = atomic64_read(&mirror->mmn.refused);
	if (copy_to_user(uarg, c, sizeof(*c)))
		ret = -EFAULT;
	kfree(c);
	return ret;
}

/*
 * After a ring restart the next device ioctl of each file fails once with
 * -EIO: work the device lost may have been this file's, as when a fence of
 * its munmap() timed out, and nothing else would tell user space.
 */
static bool svmdev_restart_seen(struct svmdev_mirror *mirror)
{
	int restarts = atomic_read(&mirror->sdev->restarts);

	if (READ_ONCE(mirror->restarts_seen) == restarts)
		return false;
	WRITE_ONCE(mirror->restarts_seen, restarts);
	return true;
}

static long svmdev_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct svmdev_file *sf = filp->private_data;
	void __user *uarg = (void __user *)arg;
	struct svmdev_mirror *mirror;

	if (cmd == SVMDEV_IOC_BIND)
		return svmdev_ioc_bind(sf, uarg);
	mutex_lock(&sf->lock);
	mirror = sf->mirror;
	mutex_unlock(&sf->lock);
	if (!mirror)
		return -ENOTCONN;
	if (READ_ONCE(sf->sdev->dead))
		return -ENODEV;
	if (cmd != SVMDEV_IOC_KNOBS && cmd != SVMDEV_IOC_COUNTERS &&
	    cmd != SVMDEV_IOC_CHECK && svmdev_restart_seen(mirror))
		return -EIO;

	switch (cmd) {
	case SVMDEV_IOC_MAP_PRESENT:
	case SVMDEV_IOC_MIRROR:
	case SVMDEV_IOC_MIGRATE:
	case SVMDEV_IOC_EXCLUSIVE:
	case SVMDEV_IOC_RELEASE:
		return svmdev_ioc_range(mirror, cmd, uarg);
	case SVMDEV_IOC_ACCESS:
		return svmdev_ioc_access(mirror, uarg);
	case SVMDEV_IOC_SNAPSHOT:
		return svmdev_ioc_snapshot(mirror, uarg);
	case SVMDEV_IOC_KNOBS:
		return svmdev_ioc_knobs(mirror, uarg);
	case SVMDEV_IOC_COUNTERS:
		return svmdev_ioc_counters(mirror, uarg, false);
	case SVMDEV_IOC_CHECK:
		return svmdev_ioc_counters(mirror, uarg, true);
	default:
		return -ENOTTY;
	}
}

const struct file_operations svmdev_fops = {
	.owner = THIS_MODULE,
	.open = svmdev_open,
	.release = svmdev_release_file,
	.unlocked_ioctl = svmdev_ioctl,
	.llseek = noop_llseek,
};

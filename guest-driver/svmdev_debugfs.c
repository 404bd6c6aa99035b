// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev debugfs, one directory per device under svmdev/:
 *   counters  device and driver counters, name value per line
 *   mirrors   one line per bound file: ctx, mm, notifier start/end counts
 *   check     reading it checks every file's start/end balance
 *   evict     writing N evicts up to N device pages
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "svmdev.h"

static struct dentry *svmdev_debugfs_root;

static const char *const svmdev_hw_names[SVMDEV_NUM_COUNTERS] = {
	"cmds", "accesses", "tlb_hits", "tlb_misses", "walks", "faults",
	"replays", "cancels", "invalidations", "copy_bytes", "dma_errors",
	"errors", "stale",
};

static const char *const svmdev_drv_names[SVMDEV_NUM_CTRS] = {
	"faults", "fault_replays", "fault_cancels", "hmm_busy", "read_retry",
	"migrate_retry", "exclusive_retry", "invalidations",
	"inval_nonblock_fail", "fence_timeouts", "to_dev", "to_ram",
	"cpu_faults", "evicted", "livelock", "copy_errors", "dev_errors",
	"vram_free", "ring_restarts", "exclusive_thp",
};

static int svmdev_counters_show(struct seq_file *m, void *unused)
{
	struct svmdev *sdev = m->private;
	unsigned int i;

	for (i = 0; i < SVMDEV_NUM_COUNTERS; i++)
		seq_printf(m, "hw.%s %llu\n", svmdev_hw_names[i],
			   svmdev_read_counter(sdev, i));
	for (i = 0; i < SVMDEV_NUM_CTRS; i++)
		seq_printf(m, "drv.%s %lld\n", svmdev_drv_names[i],
			   i == SVMDEV_CTR_VRAM_FREE ? (long long)READ_ONCE(sdev->vram_nfree) :
			   (long long)atomic64_read(&sdev->ctr[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(svmdev_counters);

static int svmdev_mirrors_show(struct seq_file *m, void *unused)
{
	struct svmdev *sdev = m->private;
	struct svmdev_mirror *mirror;
	unsigned long idx;

	xa_lock(&sdev->ctxs);
	xa_for_each(&sdev->ctxs, idx, mirror)
		seq_printf(m, "ctx %u mm %p compat %d personality %u starts %lld ends %lld refused %lld\n",
			   mirror->ctx, mirror->mm, mirror->compat,
			   mirror->personality,
			   (long long)atomic64_read(&mirror->mmn.starts),
			   (long long)atomic64_read(&mirror->mmn.ends),
			   (long long)atomic64_read(&mirror->mmn.refused));
	xa_unlock(&sdev->ctxs);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(svmdev_mirrors);

/* One line per file: 0 balanced, 1 unbalanced (and reported in the log). */
static int svmdev_check_show(struct seq_file *m, void *unused)
{
	struct svmdev *sdev = m->private;
	struct svmdev_mirror *mirror;
	unsigned long idx;

	xa_lock(&sdev->ctxs);
	xa_for_each(&sdev->ctxs, idx, mirror)
		seq_printf(m, "ctx %u %s\n", mirror->ctx,
			   atomic64_read(&mirror->mmn.active) ? "unbalanced" : "balanced");
	xa_unlock(&sdev->ctxs);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(svmdev_check);

static int svmdev_evict_set(void *data, u64 val)
{
	svmdev_evict(data, val);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(svmdev_evict_fops, NULL, svmdev_evict_set, "%llu\n");

void svmdev_debugfs_init(struct svmdev *sdev)
{
	struct dentry *d;

	d = debugfs_create_dir(pci_name(sdev->pdev), svmdev_debugfs_root);
	sdev->debugfs = d;
	debugfs_create_file("counters", 0444, d, sdev, &svmdev_counters_fops);
	debugfs_create_file("mirrors", 0444, d, sdev, &svmdev_mirrors_fops);
	debugfs_create_file("check", 0444, d, sdev, &svmdev_check_fops);
	debugfs_create_file_unsafe("evict", 0200, d, sdev, &svmdev_evict_fops);
}

void svmdev_debugfs_fini(struct svmdev *sdev)
{
	debugfs_remove_recursive(sdev->debugfs);
}

void svmdev_debugfs_module_init(void)
{
	svmdev_debugfs_root = debugfs_create_dir("svmdev", NULL);
}

void svmdev_debugfs_module_exit(void)
{
	debugfs_remove_recursive(svmdev_debugfs_root);
}

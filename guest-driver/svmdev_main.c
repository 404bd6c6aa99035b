// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev: guest driver for the svmfuzz shared-virtual-memory test device.
 *
 * This file owns the PCI device: probe and remove, the three rings, command
 * submission and completion, interrupts (MSI-X, or polling when the device
 * offers none) and the error path. docs/device-spec.md is the contract.
 *
 * The guest is little-endian (x86-64): ring records are read and written in
 * CPU byte order.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>

#include "svmdev.h"

#define CREATE_TRACE_POINTS
#include "svmdev_trace.h"

static bool dmirror_compat;
module_param(dmirror_compat, bool, 0444);
MODULE_PARM_DESC(dmirror_compat,
		 "Back /dev/hmm_dmirror0 and 1 with the first two devices (test_hmm ioctls)");

unsigned int svmdev_livelock_bound = 10000;
module_param_named(livelock_bound, svmdev_livelock_bound, uint, 0644);
MODULE_PARM_DESC(livelock_bound,
		 "Retry-loop iterations after which a livelock is reported");

unsigned int svmdev_prefetch_pages = 16;
module_param_named(prefetch_pages, svmdev_prefetch_pages, uint, 0644);
MODULE_PARM_DESC(prefetch_pages, "Pages mirrored around a device fault");

unsigned int svmdev_fence_timeout_ms = 2000;
module_param_named(fence_timeout_ms, svmdev_fence_timeout_ms, uint, 0644);
MODULE_PARM_DESC(fence_timeout_ms,
		 "Restart the rings when a command is not completed after this long (0: wait for ever)");

static DEFINE_IDA(svmdev_ida);

static void svmdev_release(struct kref *kref)
{
	struct svmdev *sdev = container_of(kref, struct svmdev, kref);

	dma_pool_destroy(sdev->pt_pool);
	pci_dev_put(sdev->pdev);
	kfree(sdev);
}

void svmdev_get(struct svmdev *sdev)
{
	kref_get(&sdev->kref);
}

void svmdev_put(struct svmdev *sdev)
{
	kref_put(&sdev->kref, svmdev_release);
}

#undef EM
#undef EMe
#define EM(a, b)	[a] = b,
#define EMe(a, b)	[a] = b

static const char * const svmdev_loop_names[] = { SVMDEV_LOOPS };

#undef EM
#undef EMe

/*
 * Called at the top of every iteration of a retry loop, @iter counting
 * from 0 (the first attempt) or 1 (the first retry): traces each retry and
 * reports, once per loop, one that passes livelock_bound.
 */
void svmdev_loop_iter(struct svmdev *sdev, enum svmdev_loop loop,
		      unsigned long iter, bool *reported)
{
	if (iter)
		trace_svmdev_retry(sdev, loop, iter);
	if (*reported || !svmdev_livelock_bound || iter < svmdev_livelock_bound)
		return;
	*reported = true;
	svmdev_count(sdev, SVMDEV_CTR_LIVELOCK);
	trace_svmdev_livelock(sdev, loop, iter);
	pr_err("svmdev: livelock suspected in %s: %lu iterations without progress (pid %d %s)\n",
	       svmdev_loop_names[loop], iter, task_pid_nr(current),
	       current->comm);
	dump_stack();
}

int svmdev_status_errno(u32 status)
{
	switch (status) {
	case SVMDEV_STATUS_OK:
		return 0;
	case SVMDEV_STATUS_CANCELLED:
		return -EFAULT;
	case SVMDEV_STATUS_ABORTED:
		return -ECANCELED;
	case SVMDEV_STATUS_BAD_ARG:
	case SVMDEV_STATUS_BAD_CTX:
	case SVMDEV_STATUS_BAD_OPCODE:
		return -EINVAL;
	case SVMDEV_STATUS_STALL_LIMIT:
		return -EBUSY;
	default:
		return -EIO;
	}
}

u64 svmdev_read_counter(struct svmdev *sdev, unsigned int n)
{
	if (sdev->dead)
		return 0;
	return readq(sdev->regs + SVMDEV_REG_COUNTER(n));
}

void svmdev_req_init(struct svmdev_req *req)
{
	memset(req, 0, sizeof(*req));
	init_completion(&req->done);
	req->status = U32_MAX;
}

static void svmdev_finish_req(struct svmdev *sdev, unsigned int slot,
			      u32 status, u64 value)
{
	struct svmdev_req *req = sdev->slots[slot];

	sdev->slots[slot] = NULL;
	req->status = status;
	req->value = value;
	complete(&req->done);
}

/* Drains the completion ring. Caller holds q_lock. */
static void svmdev_process_cpl_locked(struct svmdev *sdev)
{
	u32 tail, mask = SVMDEV_CPLQ_ENTRIES - 1;
	bool freed = false;

	if (sdev->dead)
		return;
	tail = readl(sdev->regs + SVMDEV_REG_CPLQ_TAIL);
	if (tail > mask || tail == sdev->cplq_head)
		return;
	while (sdev->cplq_head != tail) {
		struct svmdev_cpl *cpl = &sdev->cplq[sdev->cplq_head];
		u64 seq;
		unsigned int slot;

		dma_rmb();
		seq = READ_ONCE(cpl->seq);
		slot = seq % SVMDEV_MAX_INFLIGHT;
		/* an abandoned or unknown request leaves no trace */
		if (sdev->slots[slot] && sdev->slots[slot]->seq == seq) {
			svmdev_finish_req(sdev, slot, READ_ONCE(cpl->status),
					  READ_ONCE(cpl->value));
			freed = true;
		}
		sdev->cplq_head = (sdev->cplq_head + 1) & mask;
	}
	writel(sdev->cplq_head, sdev->regs + SVMDEV_REG_CPLQ_HEAD);
	if (freed)
		wake_up(&sdev->slot_wq);
}

static void svmdev_process_cpl(struct svmdev *sdev)
{
	unsigned long flags;

	spin_lock_irqsave(&sdev->q_lock, flags);
	svmdev_process_cpl_locked(sdev);
	spin_unlock_irqrestore(&sdev->q_lock, flags);
}

/* Completes every request in flight with ABORTED. Caller holds q_lock. */
static void svmdev_abort_all_locked(struct svmdev *sdev)
{
	unsigned int i;

	for (i = 0; i < SVMDEV_MAX_INFLIGHT; i++)
		if (sdev->slots[i])
			svmdev_finish_req(sdev, i, SVMDEV_STATUS_ABORTED, 0);
	wake_up_all(&sdev->slot_wq);
}

static int svmdev_find_slot_locked(struct svmdev *sdev)
{
	unsigned int i, slot;

	for (i = 0; i < SVMDEV_MAX_INFLIGHT; i++) {
		slot = (sdev->slot_cursor + i) % SVMDEV_MAX_INFLIGHT;
		if (!sdev->slots[slot]) {
			sdev->slot_cursor = slot + 1;
			return slot;
		}
	}
	return -1;
}

/*
 * Whether the command ring is full. Register reads are costly, so the head
 * is read again only when the last value read says the ring is full.
 */
static bool svmdev_cmdq_full_locked(struct svmdev *sdev)
{
	u32 next = (sdev->cmdq_tail + 1) & (SVMDEV_CMDQ_ENTRIES - 1);

	if (next != sdev->cmdq_head)
		return false;
	sdev->cmdq_head = readl(sdev->regs + SVMDEV_REG_CMDQ_HEAD);
	return next == sdev->cmdq_head;
}

/*
 * Queues one command. @atomic callers (non-blockable invalidations) spin
 * for ring space instead of sleeping. The device runs most commands inside
 * the doorbell write, so completions are drained right after it, and
 * before it only when a slot or ring space is short.
 */
int svmdev_submit(struct svmdev *sdev, struct svmdev_cmd *cmd,
		  struct svmdev_req *req, bool atomic)
{
	u32 mask = SVMDEV_CMDQ_ENTRIES - 1;
	unsigned long flags, iter = 0;
	bool reported = false;
	int slot;

	for (;;) {
		spin_lock_irqsave(&sdev->q_lock, flags);
		if (sdev->dead) {
			spin_unlock_irqrestore(&sdev->q_lock, flags);
			return -ENODEV;
		}
		slot = svmdev_find_slot_locked(sdev);
		if (slot < 0 || svmdev_cmdq_full_locked(sdev)) {
			svmdev_process_cpl_locked(sdev);
			slot = svmdev_find_slot_locked(sdev);
		}
		if (slot >= 0 && !svmdev_cmdq_full_locked(sdev))
			break;
		spin_unlock_irqrestore(&sdev->q_lock, flags);
		if (atomic) {
			if (++iter > 100000)
				return -EBUSY;
			udelay(10);
			continue;
		}
		wait_event_timeout(sdev->slot_wq, false, 1);
		svmdev_loop_iter(sdev, SVMDEV_LOOP_SUBMIT, ++iter, &reported);
	}

	req->seq = (++sdev->seq_ctr * SVMDEV_MAX_INFLIGHT) + slot;
	cmd->seq = req->seq;
	cmd->rsvd = 0;
	/*
	 * Only an ACCESS can stall on a fault; every other command completes
	 * inside the doorbell write (or, when the device delays an
	 * invalidation, soon after), so its completion interrupt would only
	 * cost an exit and a drain of an empty ring. Waiters for those poll.
	 */
	req->irq = sdev->use_irq && cmd->opcode == SVMDEV_OP_ACCESS;
	if (req->irq)
		cmd->flags |= SVMDEV_CMD_F_IRQ;
	sdev->slots[slot] = req;
	memcpy(&sdev->cmdq[sdev->cmdq_tail], cmd, sizeof(*cmd));
	sdev->cmdq_tail = (sdev->cmdq_tail + 1) & mask;
	/* writel orders the ring write before the doorbell */
	writel(sdev->cmdq_tail, sdev->regs + SVMDEV_REG_CMDQ_TAIL);
	svmdev_process_cpl_locked(sdev);
	spin_unlock_irqrestore(&sdev->q_lock, flags);
	return 0;
}

/*
 * Waits for a request's completion for at most @ms (0: for ever). A device
 * that has not completed it by then is taken to have lost it, as real
 * devices lose work: its rings are restarted, which completes the request
 * with ABORTED (-ECANCELED) after the device has dropped its translations.
 */
int svmdev_wait_ms(struct svmdev *sdev, struct svmdev_req *req,
		   const char *what, unsigned int ms)
{
	unsigned long step = req->irq ? HZ / 10 : 1;
	unsigned long deadline = jiffies + msecs_to_jiffies(ms);

	while (!wait_for_completion_timeout(&req->done, step)) {
		svmdev_process_cpl(sdev);
		if (ms && time_after(jiffies, deadline) &&
		    !completion_done(&req->done)) {
			svmdev_count(sdev, SVMDEV_CTR_FENCE_TIMEOUTS);
			dev_warn(sdev->dev, "%s seq %llu not completed after %u ms: restarting rings\n",
				 what, req->seq, ms);
			svmdev_restart(sdev);
			deadline = jiffies + msecs_to_jiffies(ms);
		}
	}
	return svmdev_status_errno(req->status);
}

int svmdev_wait(struct svmdev *sdev, struct svmdev_req *req, const char *what)
{
	return svmdev_wait_ms(sdev, req, what, svmdev_fence_timeout_ms);
}

/* Polls for a completion for at most @usecs; false if it did not come. */
bool svmdev_wait_atomic(struct svmdev *sdev, struct svmdev_req *req,
			unsigned int usecs)
{
	while (!completion_done(&req->done)) {
		svmdev_process_cpl(sdev);
		if (completion_done(&req->done))
			break;
		if (!usecs--)
			return false;
		udelay(1);
	}
	return true;
}

int svmdev_exec(struct svmdev *sdev, struct svmdev_cmd *cmd,
		struct svmdev_req *req, const char *what)
{
	int ret;

	ret = svmdev_submit(sdev, cmd, req, false);
	if (ret)
		return ret;
	return svmdev_wait(sdev, req, what);
}

int svmdev_copy(struct svmdev *sdev, struct svmdev_mirror *mirror, u64 src,
		u64 dst, u64 bytes, u8 flags)
{
	struct svmdev_cmd cmd = {
		.opcode = SVMDEV_OP_COPY,
		.flags = flags,
		.arg = { src, dst, bytes },
	};
	struct svmdev_req req;
	int ret;

	if (mirror && atomic_add_unless(&mirror->knobs.fail_copy, -1, 0)) {
		svmdev_count(sdev, SVMDEV_CTR_COPY_ERRORS);
		return -EIO;
	}
	svmdev_req_init(&req);
	ret = svmdev_exec(sdev, &cmd, &req, "COPY");
	if (ret)
		svmdev_count(sdev, SVMDEV_CTR_COPY_ERRORS);
	return ret;
}

static irqreturn_t svmdev_irq_cmd(int irq, void *data)
{
	struct svmdev *sdev = data;

	writel(SVMDEV_IRQ_CMD, sdev->regs + SVMDEV_REG_IRQ_STATUS);
	svmdev_process_cpl(sdev);
	return IRQ_HANDLED;
}

static irqreturn_t svmdev_irq_fault(int irq, void *data)
{
	struct svmdev *sdev = data;

	writel(SVMDEV_IRQ_FAULT, sdev->regs + SVMDEV_REG_IRQ_STATUS);
	queue_work(sdev->wq, &sdev->fault_work);
	return IRQ_HANDLED;
}

static irqreturn_t svmdev_irq_error(int irq, void *data)
{
	struct svmdev *sdev = data;

	writel(SVMDEV_IRQ_ERROR, sdev->regs + SVMDEV_REG_IRQ_STATUS);
	schedule_work(&sdev->error_work);
	return IRQ_HANDLED;
}

static void svmdev_poll_work(struct work_struct *work)
{
	struct svmdev *sdev = container_of(to_delayed_work(work), struct svmdev,
					   poll_work);
	u32 pending;

	if (sdev->dead)
		return;
	pending = readl(sdev->regs + SVMDEV_REG_IRQ_STATUS);
	if (pending)
		writel(pending, sdev->regs + SVMDEV_REG_IRQ_STATUS);
	svmdev_process_cpl(sdev);
	if (pending & SVMDEV_IRQ_FAULT ||
	    readl(sdev->regs + SVMDEV_REG_FLTQ_TAIL) != sdev->fltq_head)
		queue_work(sdev->wq, &sdev->fault_work);
	if (pending & SVMDEV_IRQ_ERROR)
		schedule_work(&sdev->error_work);
	schedule_delayed_work(&sdev->poll_work, 1);
}

static int svmdev_enable(struct svmdev *sdev)
{
	void __iomem *r = sdev->regs;

	writel(0, r + SVMDEV_REG_CONTROL);
	writeq(sdev->cmdq_dma, r + SVMDEV_REG_CMDQ_BASE);
	writel(SVMDEV_CMDQ_ENTRIES, r + SVMDEV_REG_CMDQ_ENTRIES);
	writeq(sdev->cplq_dma, r + SVMDEV_REG_CPLQ_BASE);
	writel(SVMDEV_CPLQ_ENTRIES, r + SVMDEV_REG_CPLQ_ENTRIES);
	writeq(sdev->fltq_dma, r + SVMDEV_REG_FLTQ_BASE);
	writel(SVMDEV_FLTQ_ENTRIES, r + SVMDEV_REG_FLTQ_ENTRIES);
	sdev->cmdq_tail = 0;
	sdev->cmdq_head = 0;
	sdev->cplq_head = 0;
	sdev->fltq_head = 0;
	writel(SVMDEV_CTRL_ENABLE, r + SVMDEV_REG_CONTROL);
	if (!(readl(r + SVMDEV_REG_STATUS) & SVMDEV_STS_ENABLED)) {
		dev_err(sdev->dev, "rings refused: error %u at %#llx\n",
			readl(r + SVMDEV_REG_ERROR_CODE),
			readq(r + SVMDEV_REG_ERROR_ADDR));
		return -EIO;
	}
	return 0;
}

/*
 * Restarts the rings with nothing in flight. The device drops its TLB and
 * every stalled access when its rings are enabled (device-spec.md, "Ring
 * restart"), so the requests are completed as ABORTED only after that: an
 * aborted INVALIDATE is then a complete one. A device that refuses the new
 * rings is reset, which drops its contexts too, and is dead to the driver.
 */
void svmdev_restart(struct svmdev *sdev)
{
	unsigned long flags;

	spin_lock_irqsave(&sdev->q_lock, flags);
	if (!sdev->dead) {
		if (svmdev_enable(sdev)) {
			writel(SVMDEV_CTRL_RESET, sdev->regs + SVMDEV_REG_CONTROL);
			sdev->dead = true;
		}
		atomic_inc(&sdev->restarts);
		svmdev_count(sdev, SVMDEV_CTR_RING_RESTARTS);
	}
	svmdev_abort_all_locked(sdev);
	spin_unlock_irqrestore(&sdev->q_lock, flags);
}

/*
 * Error interrupt: log the status and, if a ring DMA failed and halted the
 * device, restart it with empty rings. Requests in flight are lost then.
 */
static void svmdev_error_work(struct work_struct *work)
{
	struct svmdev *sdev = container_of(work, struct svmdev, error_work);
	u32 code, status;
	u64 addr;

	if (sdev->dead)
		return;
	code = readl(sdev->regs + SVMDEV_REG_ERROR_CODE);
	addr = readq(sdev->regs + SVMDEV_REG_ERROR_ADDR);
	if (code) {
		writel(code, sdev->regs + SVMDEV_REG_ERROR_CODE);
		svmdev_count(sdev, SVMDEV_CTR_DEV_ERRORS);
		dev_dbg(sdev->dev, "device error %u at %#llx\n", code, addr);
	}
	status = readl(sdev->regs + SVMDEV_REG_STATUS);
	if (!(status & SVMDEV_STS_HALTED))
		return;
	dev_warn(sdev->dev, "device halted (error %u at %#llx): restarting rings\n",
		 code, addr);
	svmdev_restart(sdev);
}

static int svmdev_setup_irqs(struct svmdev *sdev)
{
	static irqreturn_t (*const handlers[SVMDEV_NUM_VECTORS])(int, void *) = {
		[SVMDEV_VEC_CMD] = svmdev_irq_cmd,
		[SVMDEV_VEC_FAULT] = svmdev_irq_fault,
		[SVMDEV_VEC_ERROR] = svmdev_irq_error,
	};
	struct pci_dev *pdev = sdev->pdev;
	int ret, i;

	ret = pci_alloc_irq_vectors(pdev, SVMDEV_NUM_VECTORS,
				    SVMDEV_NUM_VECTORS, PCI_IRQ_MSIX);
	if (ret < 0) {
		dev_info(sdev->dev, "no MSI-X (%d): polling\n", ret);
		return 0;
	}
	for (i = 0; i < SVMDEV_NUM_VECTORS; i++) {
		ret = pci_request_irq(pdev, i, handlers[i], NULL, sdev,
				      "svmdev%u-%d", sdev->index, i);
		if (ret)
			goto err_free;
	}
	sdev->use_irq = true;
	writel(0, sdev->regs + SVMDEV_REG_IRQ_MASK);
	return 0;

err_free:
	while (--i >= 0)
		pci_free_irq(pdev, i, sdev);
	pci_free_irq_vectors(pdev);
	return ret;
}

static void svmdev_teardown_irqs(struct svmdev *sdev)
{
	int i;

	if (!sdev->use_irq)
		return;
	writel(SVMDEV_IRQ_ALL, sdev->regs + SVMDEV_REG_IRQ_MASK);
	for (i = 0; i < SVMDEV_NUM_VECTORS; i++)
		pci_free_irq(sdev->pdev, i, sdev);
	pci_free_irq_vectors(sdev->pdev);
	sdev->use_irq = false;
}

static int svmdev_alloc_rings(struct svmdev *sdev)
{
	struct device *dev = sdev->dev;

	sdev->cmdq = dmam_alloc_coherent(dev, SVMDEV_CMDQ_ENTRIES * sizeof(*sdev->cmdq),
					 &sdev->cmdq_dma, GFP_KERNEL);
	sdev->cplq = dmam_alloc_coherent(dev, SVMDEV_CPLQ_ENTRIES * sizeof(*sdev->cplq),
					 &sdev->cplq_dma, GFP_KERNEL);
	sdev->fltq = dmam_alloc_coherent(dev, SVMDEV_FLTQ_ENTRIES * sizeof(*sdev->fltq),
					 &sdev->fltq_dma, GFP_KERNEL);
	if (!sdev->cmdq || !sdev->cplq || !sdev->fltq)
		return -ENOMEM;
	return 0;
}

static int svmdev_register_nodes(struct svmdev *sdev)
{
	int ret;

	snprintf(sdev->misc_name, sizeof(sdev->misc_name), "svmdev%u", sdev->index);
	sdev->misc.minor = MISC_DYNAMIC_MINOR;
	sdev->misc.name = sdev->misc_name;
	sdev->misc.fops = &svmdev_fops;
	sdev->misc.parent = sdev->dev;
	ret = misc_register(&sdev->misc);
	if (ret)
		return ret;

	/* hmm-tests treats hmm_dmirror2 and 3 as device-coherent: not ours */
	if (!dmirror_compat || sdev->index > 1)
		return 0;
	snprintf(sdev->compat_name, sizeof(sdev->compat_name), "hmm_dmirror%u",
		 sdev->index);
	sdev->compat_misc.minor = MISC_DYNAMIC_MINOR;
	sdev->compat_misc.name = sdev->compat_name;
	sdev->compat_misc.fops = &svmdev_dmirror_fops;
	sdev->compat_misc.parent = sdev->dev;
	ret = misc_register(&sdev->compat_misc);
	if (ret) {
		misc_deregister(&sdev->misc);
		return ret;
	}
	sdev->compat_registered = true;
	return 0;
}

static void svmdev_unregister_nodes(struct svmdev *sdev)
{
	if (sdev->compat_registered)
		misc_deregister(&sdev->compat_misc);
	misc_deregister(&sdev->misc);
}

static int svmdev_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct svmdev *sdev;
	u32 magic, version;
	int ret;

	sdev = kzalloc(sizeof(*sdev), GFP_KERNEL);
	if (!sdev)
		return -ENOMEM;
	kref_init(&sdev->kref);
	sdev->pdev = pci_dev_get(pdev);
	sdev->dev = &pdev->dev;
	spin_lock_init(&sdev->q_lock);
	init_waitqueue_head(&sdev->slot_wq);
	spin_lock_init(&sdev->vram_lock);
	mutex_init(&sdev->evict_lock);
	mutex_init(&sdev->to_ram_lock);
	xa_init_flags(&sdev->ctxs, XA_FLAGS_ALLOC);
	INIT_WORK(&sdev->fault_work, svmdev_fault_work);
	INIT_WORK(&sdev->error_work, svmdev_error_work);
	INIT_DELAYED_WORK(&sdev->poll_work, svmdev_poll_work);

	ret = pcim_enable_device(pdev);
	if (ret)
		goto err_put;
	ret = pcim_iomap_regions(pdev, BIT(SVMDEV_BAR_REGS), "svmdev");
	if (ret)
		goto err_put;
	sdev->regs = pcim_iomap_table(pdev)[SVMDEV_BAR_REGS];

	magic = readl(sdev->regs + SVMDEV_REG_ID);
	version = readl(sdev->regs + SVMDEV_REG_VERSION);
	if (magic != SVMDEV_ID_MAGIC) {
		dev_err(&pdev->dev, "not an svmdev: id register reads %#x\n", magic);
		ret = -ENODEV;
		goto err_put;
	}
	if (version >> 16 != SVMDEV_VERSION >> 16) {
		dev_err(&pdev->dev, "interface version %#x, driver speaks %#x\n",
			version, SVMDEV_VERSION);
		ret = -ENODEV;
		goto err_put;
	}
	sdev->caps = readl(sdev->regs + SVMDEV_REG_CAPS);
	sdev->num_ctx = readl(sdev->regs + SVMDEV_REG_NUM_CTX);
	sdev->vram_size = readq(sdev->regs + SVMDEV_REG_VRAM_SIZE);
	if (!sdev->num_ctx || sdev->num_ctx > 4096 ||
	    !(sdev->caps & SVMDEV_CAP_REPLAY)) {
		dev_err(&pdev->dev, "unusable device: %u contexts, caps %#x\n",
			sdev->num_ctx, sdev->caps);
		ret = -ENODEV;
		goto err_put;
	}

	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(52));
	if (ret)
		goto err_put;
	pci_set_master(pdev);
	writel(SVMDEV_CTRL_RESET, sdev->regs + SVMDEV_REG_CONTROL);

	ret = svmdev_alloc_rings(sdev);
	if (ret)
		goto err_put;
	sdev->pt_pool = dma_pool_create("svmdev-pt", &pdev->dev, PAGE_SIZE,
					PAGE_SIZE, 0);
	if (!sdev->pt_pool) {
		ret = -ENOMEM;
		goto err_put;
	}
	ret = ida_alloc(&svmdev_ida, GFP_KERNEL);
	if (ret < 0)
		goto err_put;
	sdev->index = ret;

	sdev->wq = alloc_ordered_workqueue("svmdev%u", 0, sdev->index);
	if (!sdev->wq) {
		ret = -ENOMEM;
		goto err_ida;
	}
	ret = svmdev_enable(sdev);
	if (ret)
		goto err_wq;
	ret = svmdev_setup_irqs(sdev);
	if (ret)
		goto err_disable;
	if (!sdev->use_irq)
		schedule_delayed_work(&sdev->poll_work, 1);

	ret = svmdev_vram_init(sdev);
	if (ret)
		goto err_irqs;
	pci_set_drvdata(pdev, sdev);
	ret = svmdev_register_nodes(sdev);
	if (ret)
		goto err_vram;
	svmdev_debugfs_init(sdev);

	dev_info(&pdev->dev, "svmdev interface %u.%u\n", version >> 16, version & 0xffff);
	dev_info(&pdev->dev, "svmdev%u: %u contexts, %llu MiB VRAM, caps %#x, %s\n",
		 sdev->index, sdev->num_ctx, sdev->vram_size >> 20, sdev->caps,
		 sdev->use_irq ? "MSI-X" : "polling");
	return 0;

err_vram:
	sdev->draining = true;
	svmdev_vram_fini(sdev);
err_irqs:
	cancel_delayed_work_sync(&sdev->poll_work);
	svmdev_teardown_irqs(sdev);
	cancel_work_sync(&sdev->error_work);
err_disable:
	writel(0, sdev->regs + SVMDEV_REG_CONTROL);
err_wq:
	destroy_workqueue(sdev->wq);
err_ida:
	ida_free(&svmdev_ida, sdev->index);
err_put:
	svmdev_put(sdev);
	return ret;
}

static void svmdev_remove(struct pci_dev *pdev)
{
	struct svmdev *sdev = pci_get_drvdata(pdev);
	unsigned long flags;

	svmdev_debugfs_fini(sdev);
	svmdev_unregister_nodes(sdev);

	/* bring device memory home while the copy engine still runs */
	sdev->draining = true;
	svmdev_evict(sdev, ULONG_MAX);

	spin_lock_irqsave(&sdev->q_lock, flags);
	writel(SVMDEV_CTRL_RESET, sdev->regs + SVMDEV_REG_CONTROL);
	sdev->dead = true;
	svmdev_abort_all_locked(sdev);
	spin_unlock_irqrestore(&sdev->q_lock, flags);

	cancel_delayed_work_sync(&sdev->poll_work);
	svmdev_teardown_irqs(sdev);
	cancel_work_sync(&sdev->error_work);
	destroy_workqueue(sdev->wq);
	svmdev_vram_fini(sdev);
	ida_free(&svmdev_ida, sdev->index);
	dev_info(&pdev->dev, "removed\n");
	svmdev_put(sdev);
}

static const struct pci_device_id svmdev_ids[] = {
	{ PCI_DEVICE(SVMDEV_PCI_VENDOR_ID, SVMDEV_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, svmdev_ids);

static struct pci_driver svmdev_driver = {
	.name = "svmdev",
	.id_table = svmdev_ids,
	.probe = svmdev_probe,
	.remove = svmdev_remove,
};

static int __init svmdev_init(void)
{
	int ret;

	svmdev_debugfs_module_init();
	ret = pci_register_driver(&svmdev_driver);
	if (ret)
		svmdev_debugfs_module_exit();
	return ret;
}

static void __exit svmdev_exit(void)
{
	pci_unregister_driver(&svmdev_driver);
	svmdev_debugfs_module_exit();
}

module_init(svmdev_init);
module_exit(svmdev_exit);

MODULE_DESCRIPTION("svmfuzz shared-virtual-memory test device");
MODULE_LICENSE("GPL");

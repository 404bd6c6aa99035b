/*
 * QEMU glue for svmdev: QOM type, PCIe config, BAR0 registers, MSI-X in
 * BAR2, DMA, VRAM as a RAM region, the host control chardev, vmstate and a
 * bottom half that continues work a register write left. Everything the
 * device does lives in the core (svmdev_core.h); this file only connects it
 * to QEMU.
 */
#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "chardev/char-fe.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/pci/pci.h"
#include "hw/pci/pcie.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "migration/vmstate.h"
#include "qom/object.h"

#include "svmdev/svmdev_core.h"
#include "svmdev/svmdev_hw.h"

#define TYPE_SVMDEV "svmdev"
OBJECT_DECLARE_SIMPLE_TYPE(SvmDevState, SVMDEV)

struct SvmDevState {
	PCIDevice parent_obj;
	MemoryRegion regs;
	/* VRAM lives in guest RAM blocks so savevm/loadvm carry it. */
	MemoryRegion vram;
	CharBackend chr;
	svmdev_core *core;
	/* runs the rest of the work one register write or message started */
	QEMUBH *bh;

	/* properties */
	uint64_t vram_size;
	uint32_t contexts;

	/* the core's state while a snapshot is saved or loaded */
	uint32_t state_len;
	uint8_t *state;
};

/* ---- host services for the core ---- */

static void svmdev_guest_error(void *opaque, const char *msg)
{
	qemu_log_mask(LOG_GUEST_ERROR, "%s\n", msg);
}

/*
 * A DMA or an MSI-X message aimed at the device's own registers or MSI-X
 * table would run the device inside itself, or rewrite its own interrupt
 * routing: such targets fail like an unassigned address.
 */
static bool svmdev_hits_own_bars(SvmDevState *s, uint64_t addr, uint64_t len)
{
	static const int bars[] = { SVMDEV_BAR_REGS, SVMDEV_BAR_MSIX };
	PCIDevice *pdev = PCI_DEVICE(s);
	uint64_t last = addr + len - 1;
	size_t i;

	if (len == 0)
		return false;
	if (last < addr)
		return true;
	for (i = 0; i < ARRAY_SIZE(bars); i++) {
		pcibus_t base = pci_get_bar_addr(pdev, bars[i]);
		uint64_t size = pdev->io_regions[bars[i]].size;

		if (base != PCI_BAR_UNMAPPED && size && addr <= base + size - 1 && base <= last)
			return true;
	}
	return false;
}

static int svmdev_dma_read(void *opaque, uint64_t addr, void *buf, uint64_t len)
{
	SvmDevState *s = opaque;

	if (svmdev_hits_own_bars(s, addr, len)) {
		qemu_log_mask(LOG_GUEST_ERROR, "svmdev: DMA read of its own BARs refused\n");
		return -1;
	}
	return pci_dma_read(PCI_DEVICE(s), addr, buf, len) != MEMTX_OK;
}

static int svmdev_dma_write(void *opaque, uint64_t addr, const void *buf, uint64_t len)
{
	SvmDevState *s = opaque;

	if (svmdev_hits_own_bars(s, addr, len)) {
		qemu_log_mask(LOG_GUEST_ERROR, "svmdev: DMA write to its own BARs refused\n");
		return -1;
	}
	return pci_dma_write(PCI_DEVICE(s), addr, buf, len) != MEMTX_OK;
}

static void svmdev_raise_irq(void *opaque, unsigned vector)
{
	SvmDevState *s = opaque;
	PCIDevice *pdev = PCI_DEVICE(s);

	if (!msix_enabled(pdev))
		return;
	if (svmdev_hits_own_bars(s, msix_get_message(pdev, vector).address, 4)) {
		qemu_log_mask(LOG_GUEST_ERROR,
			      "svmdev: MSI-X vector %u aims at its own BARs: not sent\n", vector);
		return;
	}
	msix_notify(pdev, vector);
}

static void svmdev_schedule(void *opaque)
{
	SvmDevState *s = opaque;

	qemu_bh_schedule(s->bh);
}

static void svmdev_bh(void *opaque)
{
	SvmDevState *s = opaque;

	svmdev_core_continue(s->core);
}

static void svmdev_ctl_send(void *opaque, const void *buf, size_t len)
{
	SvmDevState *s = opaque;

	if (qemu_chr_fe_backend_connected(&s->chr))
		qemu_chr_fe_write_all(&s->chr, buf, len);
}

static uint64_t svmdev_now_ns(void *opaque)
{
	return qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
}

static int svmdev_ctl_can_read(void *opaque)
{
	return SVMDEV_CTL_MAX_PAYLOAD;
}

static void svmdev_ctl_read(void *opaque, const uint8_t *buf, int size)
{
	SvmDevState *s = opaque;

	svmdev_core_ctl_input(s->core, buf, size);
}

/* A new connection starts with a new message, not the rest of an old one. */
static void svmdev_ctl_event(void *opaque, QEMUChrEvent event)
{
	SvmDevState *s = opaque;

	if (event == CHR_EVENT_OPENED || event == CHR_EVENT_CLOSED)
		svmdev_core_ctl_reset(s->core);
}

/* ---- BAR0 ---- */

static uint64_t svmdev_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
	SvmDevState *s = opaque;

	return svmdev_core_mmio_read(s->core, addr, size);
}

static void svmdev_mmio_write(void *opaque, hwaddr addr, uint64_t val, unsigned size)
{
	SvmDevState *s = opaque;

	svmdev_core_mmio_write(s->core, addr, val, size);
}

static const MemoryRegionOps svmdev_mmio_ops = {
	.read = svmdev_mmio_read,
	.write = svmdev_mmio_write,
	.endianness = DEVICE_LITTLE_ENDIAN,
	.valid = { .min_access_size = 1, .max_access_size = 8 },
	.impl = { .min_access_size = 1, .max_access_size = 8 },
};

/* ---- lifetime ---- */

static void svmdev_realize(PCIDevice *pdev, Error **errp)
{
	SvmDevState *s = SVMDEV(pdev);
	svmdev_host_ops ops = {
		.opaque = s,
		.guest_error = svmdev_guest_error,
		.dma_read = svmdev_dma_read,
		.dma_write = svmdev_dma_write,
		.raise_irq = svmdev_raise_irq,
		.ctl_send = svmdev_ctl_send,
		.now_ns = svmdev_now_ns,
		.schedule = svmdev_schedule,
	};
	svmdev_config cfg = { .vram_size = s->vram_size, .num_contexts = s->contexts };
	char err[256] = "";
	unsigned v;

	ERRP_GUARD();

	if (s->vram_size == 0 || s->vram_size % SVMDEV_PAGE_SIZE) {
		error_setg(errp, "svmdev: vram-size must be a non-zero multiple of 4 KiB");
		return;
	}
	memory_region_init_ram(&s->vram, OBJECT(s), "svmdev-vram", s->vram_size, errp);
	if (*errp)
		return;
	cfg.vram = memory_region_get_ram_ptr(&s->vram);

	s->core = svmdev_core_new(&cfg, &ops, err, sizeof(err));
	if (!s->core) {
		error_setg(errp, "%s", err);
		goto err_vram;
	}
	if (pcie_endpoint_cap_init(pdev, 0) < 0) {
		error_setg(errp, "svmdev: cannot add the PCIe capability");
		goto err_core;
	}
	memory_region_init_io(&s->regs, OBJECT(s), &svmdev_mmio_ops, s, "svmdev-regs",
			      SVMDEV_BAR_REGS_SIZE);
	pci_register_bar(pdev, SVMDEV_BAR_REGS,
			 PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_64,
			 &s->regs);
	if (msix_init_exclusive_bar(pdev, SVMDEV_NUM_VECTORS, SVMDEV_BAR_MSIX, errp))
		goto err_core;
	for (v = 0; v < SVMDEV_NUM_VECTORS; v++)
		msix_vector_use(pdev, v);
#ifdef qemu_bh_new_guarded
	/* QEMU blocks the device's own registers while the bottom half runs too. */
	s->bh = qemu_bh_new_guarded(svmdev_bh, s, &DEVICE(s)->mem_reentrancy_guard);
#else
	s->bh = qemu_bh_new(svmdev_bh, s);
#endif
	qemu_chr_fe_set_handlers(&s->chr, svmdev_ctl_can_read, svmdev_ctl_read,
				 svmdev_ctl_event, NULL, s, NULL, true);
	return;

err_core:
	svmdev_core_free(s->core);
	s->core = NULL;
err_vram:
	object_unparent(OBJECT(&s->vram));
}

static void svmdev_exit(PCIDevice *pdev)
{
	SvmDevState *s = SVMDEV(pdev);

	qemu_chr_fe_deinit(&s->chr, false);
	qemu_bh_delete(s->bh);
	s->bh = NULL;
	msix_unuse_all_vectors(pdev);
	msix_uninit_exclusive_bar(pdev);
	svmdev_core_free(s->core);
	s->core = NULL;
}

static void svmdev_reset(DeviceState *dev)
{
	SvmDevState *s = SVMDEV(dev);

	if (s->core)
		svmdev_core_reset(s->core);
}

/* ---- snapshots: the core serializes itself, VRAM goes with guest RAM ---- */

static int svmdev_pre_save(void *opaque)
{
	SvmDevState *s = opaque;
	size_t len = svmdev_core_save(s->core, NULL, 0);

	g_free(s->state);
	s->state = g_malloc(len);
	s->state_len = len;
	svmdev_core_save(s->core, s->state, len);
	return 0;
}

static int svmdev_post_save(void *opaque)
{
	SvmDevState *s = opaque;

	g_free(s->state);
	s->state = NULL;
	s->state_len = 0;
	return 0;
}

static int svmdev_post_load(void *opaque, int version_id)
{
	SvmDevState *s = opaque;
	int ret = svmdev_core_load(s->core, s->state, s->state_len);

	svmdev_post_save(s);
	if (ret) {
		error_report("svmdev: device state in the snapshot is malformed");
		return -EINVAL;
	}
	/* Work that was left when the snapshot was taken goes on. */
	qemu_bh_schedule(s->bh);
	return 0;
}

/* The stream sizes an allocation: no more than a save can produce. */
static bool svmdev_state_len_valid(void *opaque, int version_id)
{
	SvmDevState *s = opaque;

	return s->state_len <= svmdev_core_state_max(s->core);
}

static const VMStateDescription svmdev_vmstate = {
	.name = "svmdev",
	.version_id = 1,
	.minimum_version_id = 1,
	.pre_save = svmdev_pre_save,
	.post_save = svmdev_post_save,
	.post_load = svmdev_post_load,
	.fields = (VMStateField[]) {
		VMSTATE_PCI_DEVICE(parent_obj, SvmDevState),
		VMSTATE_MSIX(parent_obj, SvmDevState),
		VMSTATE_UINT32(state_len, SvmDevState),
		VMSTATE_VALIDATE("svmdev state_len", svmdev_state_len_valid),
		VMSTATE_VBUFFER_ALLOC_UINT32(state, SvmDevState, 1, NULL, state_len),
		VMSTATE_END_OF_LIST()
	},
};

static Property svmdev_properties[] = {
	DEFINE_PROP_SIZE("vram-size", SvmDevState, vram_size, 256 * MiB),
	DEFINE_PROP_UINT32("contexts", SvmDevState, contexts, 16),
	DEFINE_PROP_CHR("chardev", SvmDevState, chr),
	DEFINE_PROP_END_OF_LIST(),
};

static void svmdev_class_init(ObjectClass *klass, void *data)
{
	DeviceClass *dc = DEVICE_CLASS(klass);
	PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

	k->realize = svmdev_realize;
	k->exit = svmdev_exit;
	k->vendor_id = SVMDEV_PCI_VENDOR_ID;
	k->device_id = SVMDEV_PCI_DEVICE_ID;
	k->revision = SVMDEV_PCI_REVISION;
	k->class_id = SVMDEV_PCI_CLASS;
	dc->desc = "svmfuzz shared-virtual-memory test device";
	dc->reset = svmdev_reset;
	dc->vmsd = &svmdev_vmstate;
	device_class_set_props(dc, svmdev_properties);
	set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo svmdev_info = {
	.name = TYPE_SVMDEV,
	.parent = TYPE_PCI_DEVICE,
	.instance_size = sizeof(SvmDevState),
	.class_init = svmdev_class_init,
	.interfaces = (InterfaceInfo[]) {
		{ INTERFACE_PCIE_DEVICE },
		{ }
	},
};

static void svmdev_register_types(void)
{
	type_register_static(&svmdev_info);
}

type_init(svmdev_register_types)

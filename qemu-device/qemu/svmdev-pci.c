/*
 * QEMU glue for svmdev: QOM type, PCIe config, BAR0, properties.
 * Everything the device does lives in the core (svmdev_core.h); this file
 * only connects it to QEMU.
 */
#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "hw/pci/pci.h"
#include "hw/pci/pcie.h"
#include "hw/qdev-properties.h"
#include "qom/object.h"

#include "svmdev/svmdev_core.h"
#include "svmdev/svmdev_hw.h"

#define TYPE_SVMDEV "svmdev"
OBJECT_DECLARE_SIMPLE_TYPE(SvmDevState, SVMDEV)

struct SvmDevState {
	PCIDevice parent_obj;
	MemoryRegion regs;
	svmdev_core *core;
	uint64_t vram_size;
};

static void svmdev_guest_error(void *opaque, const char *msg)
{
	qemu_log_mask(LOG_GUEST_ERROR, "%s\n", msg);
}

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

static void svmdev_realize(PCIDevice *pdev, Error **errp)
{
	SvmDevState *s = SVMDEV(pdev);
	svmdev_config cfg = { .vram_size = s->vram_size };
	svmdev_host_ops ops = { .opaque = s, .guest_error = svmdev_guest_error };
	char err[256] = "";

	s->core = svmdev_core_new(&cfg, &ops, err, sizeof(err));
	if (!s->core) {
		error_setg(errp, "%s", err);
		return;
	}
	if (pcie_endpoint_cap_init(pdev, 0) < 0) {
		svmdev_core_free(s->core);
		s->core = NULL;
		error_setg(errp, "svmdev: cannot add the PCIe capability");
		return;
	}
	memory_region_init_io(&s->regs, OBJECT(s), &svmdev_mmio_ops, s, "svmdev-regs",
			      SVMDEV_BAR_REGS_SIZE);
	pci_register_bar(pdev, SVMDEV_BAR_REGS,
			 PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_64,
			 &s->regs);
}

static void svmdev_exit(PCIDevice *pdev)
{
	SvmDevState *s = SVMDEV(pdev);

	svmdev_core_free(s->core);
	s->core = NULL;
}

static void svmdev_reset(DeviceState *dev)
{
	SvmDevState *s = SVMDEV(dev);

	if (s->core)
		svmdev_core_reset(s->core);
}

static Property svmdev_properties[] = {
	DEFINE_PROP_SIZE("vram-size", SvmDevState, vram_size, 256 * MiB),
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

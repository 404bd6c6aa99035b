// SPDX-License-Identifier: GPL-2.0
/*
 * svmdev: guest driver for the svmfuzz shared-virtual-memory test device.
 *
 * This first version binds to the device, maps its registers and checks that
 * it speaks the interface version this driver was built for.
 */
#include <linux/module.h>
#include <linux/pci.h>

#include "svmdev/svmdev_hw.h"

struct svmdev {
	struct pci_dev *pdev;
	void __iomem *regs;
};

static int svmdev_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct svmdev *sdev;
	u32 magic, version;
	int ret;

	sdev = devm_kzalloc(&pdev->dev, sizeof(*sdev), GFP_KERNEL);
	if (!sdev)
		return -ENOMEM;
	sdev->pdev = pdev;

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = pcim_iomap_regions(pdev, BIT(SVMDEV_BAR_REGS), "svmdev");
	if (ret)
		return ret;
	sdev->regs = pcim_iomap_table(pdev)[SVMDEV_BAR_REGS];

	magic = readl(sdev->regs + SVMDEV_REG_ID);
	version = readl(sdev->regs + SVMDEV_REG_VERSION);
	if (magic != SVMDEV_ID_MAGIC) {
		dev_err(&pdev->dev, "not an svmdev: id register reads %#x\n", magic);
		return -ENODEV;
	}
	if (version >> 16 != SVMDEV_VERSION >> 16) {
		dev_err(&pdev->dev, "interface version %#x, driver speaks %#x\n",
			version, SVMDEV_VERSION);
		return -ENODEV;
	}
	pci_set_drvdata(pdev, sdev);
	dev_info(&pdev->dev, "svmdev interface %u.%u\n", version >> 16, version & 0xffff);
	return 0;
}

static void svmdev_remove(struct pci_dev *pdev)
{
	dev_info(&pdev->dev, "removed\n");
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
module_pci_driver(svmdev_driver);

MODULE_DESCRIPTION("svmfuzz shared-virtual-memory test device");
MODULE_LICENSE("GPL");

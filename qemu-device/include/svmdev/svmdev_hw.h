/* SPDX-License-Identifier: GPL-2.0 */
/*
 * svmdev hardware interface: every PCI ID, BAR, register and bit the device
 * exposes, named once. Included by the device model, the guest driver and the
 * tests. docs/device-spec.md describes the behaviour behind each name.
 */
#ifndef SVMDEV_HW_H
#define SVMDEV_HW_H

#define SVMDEV_PCI_VENDOR_ID	0x1234	/* QEMU's own vendor ID */
#define SVMDEV_PCI_DEVICE_ID	0x5356	/* "SV": unused by QEMU's devices */
#define SVMDEV_PCI_REVISION	0x01
#define SVMDEV_PCI_CLASS	0x1280	/* processing accelerator */

/* BAR0: 64 KiB of 32/64-bit registers */
#define SVMDEV_BAR_REGS		0
#define SVMDEV_BAR_REGS_SIZE	0x10000

#define SVMDEV_REG_ID		0x0000	/* RO 32: SVMDEV_ID_MAGIC */
#define SVMDEV_REG_VERSION	0x0004	/* RO 32: interface version */

#define SVMDEV_ID_MAGIC		0x444d5653u	/* "SVMD" little-endian */
#define SVMDEV_VERSION		0x00010000u	/* major 1, minor 0 */

#endif /* SVMDEV_HW_H */

/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The HMM test driver's ioctl interface (lib/test_hmm_uapi.h of Linux 6.12),
 * reproduced so that the unmodified hmm-tests selftest can drive svmdev
 * through /dev/hmm_dmirrorN. Layout, numbers and values must not change.
 */
#ifndef _SVMDEV_DMIRROR_UAPI_H
#define _SVMDEV_DMIRROR_UAPI_H

#include <linux/types.h>
#include <linux/ioctl.h>

/*
 * @addr: (in) user address the device reads or writes
 * @ptr: (in) user buffer the data is copied to or from
 * @npages: (in) pages
 * @cpages: (out) pages copied
 * @faults: (out) device faults seen
 */
struct hmm_dmirror_cmd {
	__u64 addr;
	__u64 ptr;
	__u64 npages;
	__u64 cpages;
	__u64 faults;
};

#define HMM_DMIRROR_READ		_IOWR('H', 0x00, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_WRITE		_IOWR('H', 0x01, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_DEV	_IOWR('H', 0x02, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_SYS	_IOWR('H', 0x03, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_SNAPSHOT		_IOWR('H', 0x04, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_EXCLUSIVE		_IOWR('H', 0x05, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_CHECK_EXCLUSIVE	_IOWR('H', 0x06, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_RELEASE		_IOWR('H', 0x07, struct hmm_dmirror_cmd)

/* SNAPSHOT: one byte per page in hmm_dmirror_cmd.ptr */
enum {
	HMM_DMIRROR_PROT_ERROR			= 0xFF,
	HMM_DMIRROR_PROT_NONE			= 0x00,
	HMM_DMIRROR_PROT_READ			= 0x01,
	HMM_DMIRROR_PROT_WRITE			= 0x02,
	HMM_DMIRROR_PROT_PMD			= 0x04,
	HMM_DMIRROR_PROT_PUD			= 0x08,
	HMM_DMIRROR_PROT_ZERO			= 0x10,
	HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL	= 0x20,
	HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE	= 0x30,
	HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL	= 0x40,
	HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE	= 0x50,
};

#endif /* _SVMDEV_DMIRROR_UAPI_H */

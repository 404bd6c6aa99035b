/* SPDX-License-Identifier: GPL-2.0 */
/*
 * svmdev hardware interface: every PCI ID, BAR, register, ring layout,
 * command, page-table bit, fault record, interrupt vector and status code the
 * device exposes, named once. Included by the device model, the guest driver
 * (kernel), the tests and the fuzzers. docs/device-spec.md describes the
 * behaviour behind each name. All multi-byte values are little-endian.
 */
#ifndef SVMDEV_HW_H
#define SVMDEV_HW_H

#ifdef __KERNEL__
#include <linux/types.h>
typedef u8 svmdev_u8;
typedef u16 svmdev_u16;
typedef u32 svmdev_u32;
typedef u64 svmdev_u64;
#else
#include <stdint.h>
typedef uint8_t svmdev_u8;
typedef uint16_t svmdev_u16;
typedef uint32_t svmdev_u32;
typedef uint64_t svmdev_u64;
#endif

#ifdef __cplusplus
#define SVMDEV_SIZE_CHECK(type, size) static_assert(sizeof(type) == (size), #type)
#else
#define SVMDEV_SIZE_CHECK(type, size) _Static_assert(sizeof(type) == (size), #type)
#endif

/* ---- PCI identity ---- */
#define SVMDEV_PCI_VENDOR_ID	0x1234	/* QEMU's own vendor ID */
#define SVMDEV_PCI_DEVICE_ID	0x5356	/* "SV": unused by QEMU's devices */
#define SVMDEV_PCI_REVISION	0x01
#define SVMDEV_PCI_CLASS	0x1200	/* processing accelerator */

/* BAR0: registers; BAR2: the MSI-X table and PBA */
#define SVMDEV_BAR_REGS		0
#define SVMDEV_BAR_REGS_SIZE	0x1000
#define SVMDEV_BAR_MSIX		2

/* ---- MSI-X vectors and the matching IRQ_STATUS / IRQ_MASK bits ---- */
#define SVMDEV_VEC_CMD		0	/* a completion with SVMDEV_CMD_F_IRQ was written */
#define SVMDEV_VEC_FAULT	1	/* a fault record was written */
#define SVMDEV_VEC_ERROR	2	/* ERROR_CODE was set */
#define SVMDEV_NUM_VECTORS	3
#define SVMDEV_IRQ_CMD		(1u << SVMDEV_VEC_CMD)
#define SVMDEV_IRQ_FAULT	(1u << SVMDEV_VEC_FAULT)
#define SVMDEV_IRQ_ERROR	(1u << SVMDEV_VEC_ERROR)
#define SVMDEV_IRQ_ALL		0x7u

/*
 * ---- Registers in BAR0 ----
 * 32-bit registers take 4-byte accesses. 64-bit registers take one 8-byte
 * access or two 4-byte accesses (low half at the offset, high half at +4).
 * Other widths, unaligned or unknown offsets: reads return all ones, writes
 * are ignored; both are guest errors.
 */
#define SVMDEV_REG_ID		0x000	/* RO 32: SVMDEV_ID_MAGIC */
#define SVMDEV_REG_VERSION	0x004	/* RO 32: SVMDEV_VERSION */
#define SVMDEV_REG_CAPS		0x008	/* RO 32: SVMDEV_CAP_* */
#define SVMDEV_REG_NUM_CTX	0x00c	/* RO 32: number of contexts */
#define SVMDEV_REG_VRAM_SIZE	0x010	/* RO 64: bytes of VRAM */
#define SVMDEV_REG_CONTROL	0x018	/* RW 32: SVMDEV_CTRL_*, reset 0 */
#define SVMDEV_REG_STATUS	0x01c	/* RO 32: SVMDEV_STS_* */
#define SVMDEV_REG_IRQ_STATUS	0x020	/* RW1C 32: SVMDEV_IRQ_*, reset 0 */
#define SVMDEV_REG_IRQ_MASK	0x024	/* RW 32: SVMDEV_IRQ_*, 1 = masked, reset SVMDEV_IRQ_ALL */
#define SVMDEV_REG_ERROR_CODE	0x028	/* RW1C 32: last SVMDEV_STATUS_* error, write it back to clear */
#define SVMDEV_REG_MAX_STALLED	0x02c	/* RO 32: stalled-access slots */
#define SVMDEV_REG_ERROR_ADDR	0x030	/* RO 64: address behind the last error */

#define SVMDEV_REG_CMDQ_BASE	0x040	/* RW 64: guest-physical, 64-byte aligned */
#define SVMDEV_REG_CMDQ_ENTRIES	0x048	/* RW 32: power of two, 2..SVMDEV_RING_MAX_ENTRIES */
#define SVMDEV_REG_CMDQ_HEAD	0x04c	/* RO 32: next entry the device reads */
#define SVMDEV_REG_CMDQ_TAIL	0x050	/* RW 32: doorbell, next entry the driver writes */
#define SVMDEV_REG_CPLQ_BASE	0x058	/* RW 64: guest-physical, 32-byte aligned */
#define SVMDEV_REG_CPLQ_ENTRIES	0x060	/* RW 32 */
#define SVMDEV_REG_CPLQ_HEAD	0x064	/* RW 32: next entry the driver reads */
#define SVMDEV_REG_CPLQ_TAIL	0x068	/* RO 32: next entry the device writes */
#define SVMDEV_REG_FLTQ_BASE	0x070	/* RW 64: guest-physical, 32-byte aligned */
#define SVMDEV_REG_FLTQ_ENTRIES	0x078	/* RW 32 */
#define SVMDEV_REG_FLTQ_HEAD	0x07c	/* RW 32: next entry the driver reads */
#define SVMDEV_REG_FLTQ_TAIL	0x080	/* RO 32: next entry the device writes */

/* RO 64 counters, free-running, cleared by reset */
#define SVMDEV_REG_COUNTERS	0x100
#define SVMDEV_CNT_CMDS		0	/* commands consumed */
#define SVMDEV_CNT_ACCESSES	1	/* device accesses completed OK */
#define SVMDEV_CNT_TLB_HITS	2
#define SVMDEV_CNT_TLB_MISSES	3
#define SVMDEV_CNT_WALKS	4	/* page-table walks */
#define SVMDEV_CNT_FAULTS	5	/* fault records raised */
#define SVMDEV_CNT_REPLAYS	6
#define SVMDEV_CNT_CANCELS	7
#define SVMDEV_CNT_INVALIDATIONS 8	/* invalidations performed */
#define SVMDEV_CNT_COPY_BYTES	9
#define SVMDEV_CNT_DMA_ERRORS	10
#define SVMDEV_CNT_ERRORS	11	/* error statuses reported */
#define SVMDEV_CNT_STALE	12	/* accesses through an invalidated translation */
#define SVMDEV_NUM_COUNTERS	13
#define SVMDEV_REG_COUNTER(n)	(SVMDEV_REG_COUNTERS + 8 * (n))

#define SVMDEV_ID_MAGIC		0x444d5653u	/* "SVMD" little-endian */
#define SVMDEV_VERSION		0x00010000u	/* major 1, minor 0 */

#define SVMDEV_CAP_HUGE_2M	(1u << 0)	/* 2 MiB leaves at level 1 */
#define SVMDEV_CAP_ATOMICS	(1u << 1)
#define SVMDEV_CAP_VRAM		(1u << 2)
#define SVMDEV_CAP_REPLAY	(1u << 3)	/* replayable faults */

/* rings live; 0->1 validates the rings, zeroes the indexes, drops the TLB and all
 * outstanding work (stalled accesses, queued records, held invalidations) */
#define SVMDEV_CTRL_ENABLE	(1u << 0)
#define SVMDEV_CTRL_RESET	(1u << 1)	/* write 1: whole-device reset, reads 0 */

#define SVMDEV_STS_ENABLED	(1u << 0)
#define SVMDEV_STS_HALTED	(1u << 1)	/* a ring DMA failed: clear ENABLE, set it again */
#define SVMDEV_STS_CPLQ_FULL	(1u << 2)	/* completions wait for CPLQ_HEAD to move */
#define SVMDEV_STS_FLTQ_FULL	(1u << 3)	/* fault records wait for FLTQ_HEAD to move */

#define SVMDEV_RING_MAX_ENTRIES	65536u

/* ---- Command ring entry: 64 bytes ---- */
struct svmdev_cmd {
	svmdev_u8 opcode;	/* SVMDEV_OP_* */
	svmdev_u8 flags;	/* SVMDEV_CMD_F_* and per-opcode flags */
	svmdev_u16 ctx;		/* context index, where the opcode takes one */
	svmdev_u32 rsvd;	/* must be 0 */
	svmdev_u64 seq;		/* driver's tag, echoed in the completion */
	svmdev_u64 arg[6];
};
SVMDEV_SIZE_CHECK(struct svmdev_cmd, 64);

#define SVMDEV_CMD_F_IRQ	(1u << 0)	/* raise SVMDEV_VEC_CMD on completion */

#define SVMDEV_OP_NOP		0x00
#define SVMDEV_OP_CTX_SETUP	0x01	/* arg0 = page-table root (4 KiB aligned) */
#define SVMDEV_OP_CTX_DESTROY	0x02	/* cancels the context's stalled accesses */
#define SVMDEV_OP_INVALIDATE	0x03	/* arg0 = va, arg1 = bytes; flag ALL = whole context */
#define SVMDEV_OP_COPY		0x04	/* arg0 = src, arg1 = dst, arg2 = bytes */
#define SVMDEV_OP_ACCESS	0x05	/* device access of a va, see SVMDEV_ACC_* */
#define SVMDEV_OP_FAULT_REPLAY	0x06	/* arg0 = fault id; flag ALL = every fault of ctx */
#define SVMDEV_OP_FAULT_CANCEL	0x07	/* arg0 = fault id; flag ALL = every fault of ctx */
#define SVMDEV_OP_RESET		0x08	/* destroys every context, flushes the TLB */

#define SVMDEV_INV_F_ALL	(1u << 1)	/* INVALIDATE: ignore va/bytes */
#define SVMDEV_FLT_F_ALL	(1u << 1)	/* FAULT_REPLAY/CANCEL: every fault of ctx */
#define SVMDEV_COPY_F_SRC_VRAM	(1u << 1)	/* src is a VRAM offset, else guest-physical */
#define SVMDEV_COPY_F_DST_VRAM	(1u << 2)
#define SVMDEV_COPY_MAX		(64u << 20)	/* largest COPY */

/*
 * ACCESS: arg0 = va, arg1 = kind | size << 8 | atomic op << 24,
 * arg2 = write value / atomic operand, arg3 = compare value,
 * arg4 = guest-physical buffer for SVMDEV_ACC_BUF (size up to 4096).
 * Inline accesses are 1, 2, 4 or 8 bytes; atomics 4 or 8, naturally aligned.
 * No access crosses a 4 KiB page.
 */
#define SVMDEV_ACC_READ		0
#define SVMDEV_ACC_WRITE	1
#define SVMDEV_ACC_ATOMIC	2
#define SVMDEV_ACC_KIND(a1)	((a1) & 0xff)
#define SVMDEV_ACC_SIZE(a1)	(((a1) >> 8) & 0x1fff)
#define SVMDEV_ACC_AOP(a1)	(((a1) >> 24) & 0xff)
#define SVMDEV_ACC_ARG1(kind, size, aop) \
	((svmdev_u64)(kind) | (svmdev_u64)(size) << 8 | (svmdev_u64)(aop) << 24)
#define SVMDEV_ACC_F_BUF	(1u << 1)	/* data moves to/from the buffer at arg4 */
#define SVMDEV_AOP_ADD		0
#define SVMDEV_AOP_XCHG		1
#define SVMDEV_AOP_CMPXCHG	2
#define SVMDEV_AOP_OR		3
#define SVMDEV_AOP_AND		4

/* ---- Completion ring entry: 32 bytes ---- */
struct svmdev_cpl {
	svmdev_u64 seq;		/* the command's seq */
	svmdev_u64 value;	/* ACCESS: value read / old value; COPY: bytes copied */
	svmdev_u32 status;	/* SVMDEV_STATUS_* */
	svmdev_u16 ctx;
	svmdev_u8 opcode;
	svmdev_u8 rsvd;
	svmdev_u32 cmd_index;	/* command ring slot the command came from */
	svmdev_u32 aux;		/* ACCESS: id of the last fault it raised, else 0 */
};
SVMDEV_SIZE_CHECK(struct svmdev_cpl, 32);

/* ---- Fault ring entry: 32 bytes ---- */
struct svmdev_fault {
	svmdev_u64 va;		/* faulting address, page-aligned down */
	svmdev_u64 seq;		/* seq of the stalled ACCESS, or the host request tag */
	svmdev_u32 fault_id;	/* names the stalled access in REPLAY/CANCEL; never 0 */
	svmdev_u16 ctx;
	svmdev_u8 access;	/* SVMDEV_ACC_READ/WRITE/ATOMIC */
	svmdev_u8 reason;	/* SVMDEV_FAULT_* */
	svmdev_u32 flags;	/* SVMDEV_FAULT_F_* */
	svmdev_u32 rsvd;
};
SVMDEV_SIZE_CHECK(struct svmdev_fault, 32);

#define SVMDEV_FAULT_NOT_PRESENT 1	/* a level had VALID clear */
#define SVMDEV_FAULT_PERM	2	/* leaf lacks READ, WRITE or ATOMIC */
#define SVMDEV_FAULT_F_HOST	(1u << 0)	/* raised by a host-channel access */

/* ---- Status codes: completions, ERROR_CODE, host-channel replies ---- */
#define SVMDEV_STATUS_OK		0
#define SVMDEV_STATUS_BAD_OPCODE	1
#define SVMDEV_STATUS_BAD_CTX		2	/* index out of range */
#define SVMDEV_STATUS_CTX_DISABLED	3	/* context not set up */
#define SVMDEV_STATUS_BAD_ARG		4	/* reserved field, size, alignment, range */
#define SVMDEV_STATUS_BAD_VRAM		5	/* VRAM offset/length outside VRAM */
#define SVMDEV_STATUS_DMA_ERROR		6	/* guest-physical access failed */
#define SVMDEV_STATUS_BAD_PTE		7	/* reserved bits or VRAM bit in a table entry */
#define SVMDEV_STATUS_CANCELLED		8	/* stalled access cancelled */
#define SVMDEV_STATUS_NO_FAULT		9	/* REPLAY/CANCEL of an unknown fault id */
#define SVMDEV_STATUS_STALL_LIMIT	10	/* every stalled-access slot taken */
#define SVMDEV_STATUS_BAD_RING		11	/* ring base/entries/index unusable */
#define SVMDEV_STATUS_ABORTED		12	/* dropped by a reset */
#define SVMDEV_STATUS_STALLED		13	/* host channel only: access waits on a fault */

/*
 * ---- Device page tables, in guest memory ----
 * 4 levels of 512 64-bit entries, one 4 KiB table each, 48-bit VA:
 * level 3 index = va[47:39], 2 = va[38:30], 1 = va[29:21], 0 = va[20:12].
 * A level-1 entry with HUGE maps 2 MiB; a level-0 entry maps 4 KiB.
 */
#define SVMDEV_PTE_VALID	(1ull << 0)
#define SVMDEV_PTE_READ		(1ull << 1)	/* leaf only */
#define SVMDEV_PTE_WRITE	(1ull << 2)	/* leaf only */
#define SVMDEV_PTE_ATOMIC	(1ull << 3)	/* leaf only */
#define SVMDEV_PTE_VRAM		(1ull << 4)	/* leaf only: address is a VRAM offset */
#define SVMDEV_PTE_HUGE		(1ull << 5)	/* level 1 only: 2 MiB leaf */
#define SVMDEV_PTE_ADDR_MASK	0x000ffffffffff000ull	/* bits 51:12 */
#define SVMDEV_PTE_RSVD_MASK	0xfff0000000000fc0ull	/* must be 0 */
#define SVMDEV_PT_LEVELS	4
#define SVMDEV_PT_ENTRIES	512
#define SVMDEV_VA_BITS		48
#define SVMDEV_PAGE_SHIFT	12
#define SVMDEV_PAGE_SIZE	(1ull << SVMDEV_PAGE_SHIFT)
#define SVMDEV_HUGE_SHIFT	21
#define SVMDEV_HUGE_SIZE	(1ull << SVMDEV_HUGE_SHIFT)
#define SVMDEV_PT_INDEX(va, level) \
	(((va) >> (SVMDEV_PAGE_SHIFT + 9 * (level))) & (SVMDEV_PT_ENTRIES - 1))

/*
 * ---- Host control channel (byte stream, see the spec) ----
 * Every message: struct svmdev_ctl_hdr, then len payload bytes.
 */
struct svmdev_ctl_hdr {
	svmdev_u8 magic;	/* SVMDEV_CTL_MAGIC */
	svmdev_u8 type;		/* SVMDEV_CTL_* */
	svmdev_u16 len;		/* payload bytes, at most SVMDEV_CTL_MAX_PAYLOAD */
	svmdev_u32 tag;		/* host's tag, echoed in the reply */
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_hdr, 8);
#define SVMDEV_CTL_MAGIC	0xd5
#define SVMDEV_CTL_MAX_PAYLOAD	4096

/* requests (host -> device); the reply has type | SVMDEV_CTL_REPLY */
#define SVMDEV_CTL_PING		0x01	/* -> u32 version, u32 status */
#define SVMDEV_CTL_ACCESS	0x02	/* struct svmdev_ctl_access -> struct svmdev_ctl_result */
#define SVMDEV_CTL_FAULT_STORM	0x03	/* struct svmdev_ctl_storm -> result, value = stalled */
#define SVMDEV_CTL_INVAL_MODE	0x04	/* struct svmdev_ctl_inval_mode -> result */
#define SVMDEV_CTL_FAIL_DMA	0x05	/* struct svmdev_ctl_fail_dma -> result */
#define SVMDEV_CTL_COUNTERS	0x06	/* -> u64[SVMDEV_NUM_COUNTERS] */
#define SVMDEV_CTL_TLB		0x07	/* -> u32 count, then struct svmdev_ctl_tlb_entry[] */
#define SVMDEV_CTL_EVENTS	0x08	/* u32 mask of SVMDEV_EVT_* to stream -> result */
#define SVMDEV_CTL_RELEASE	0x09	/* perform held invalidations now -> result */
#define SVMDEV_CTL_REPLY	0x80
#define SVMDEV_CTL_EVENT	0xe0	/* unsolicited: struct svmdev_ctl_event */
#define SVMDEV_CTL_ERROR	0xff	/* reply to a malformed request: struct svmdev_ctl_result */

struct svmdev_ctl_access {
	svmdev_u64 va;
	svmdev_u64 value;	/* write value / atomic operand */
	svmdev_u64 compare;	/* CMPXCHG */
	svmdev_u16 ctx;
	svmdev_u8 kind;		/* SVMDEV_ACC_READ/WRITE/ATOMIC */
	svmdev_u8 size;		/* 1, 2, 4, 8 */
	svmdev_u8 aop;		/* SVMDEV_AOP_* */
	svmdev_u8 rsvd[3];
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_access, 32);

struct svmdev_ctl_result {
	svmdev_u64 value;
	svmdev_u32 status;	/* SVMDEV_STATUS_* */
	svmdev_u32 fault_id;	/* when status is SVMDEV_STATUS_STALLED */
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_result, 16);

struct svmdev_ctl_storm {
	svmdev_u64 va;
	svmdev_u64 stride;	/* bytes between accesses */
	svmdev_u16 ctx;
	svmdev_u16 count;	/* accesses to issue */
	svmdev_u8 kind;		/* SVMDEV_ACC_READ/WRITE/ATOMIC */
	svmdev_u8 rsvd[3];
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_storm, 24);

#define SVMDEV_INVAL_NORMAL	0	/* perform and acknowledge at once */
#define SVMDEV_INVAL_DELAY	1	/* hold both until `commands` more commands ran */
#define SVMDEV_INVAL_DROP	2	/* perform, never write the completion */
#define SVMDEV_INVAL_EARLY_ACK	3	/* acknowledge at once, perform later (a device bug) */
struct svmdev_ctl_inval_mode {
	svmdev_u32 mode;	/* SVMDEV_INVAL_* */
	svmdev_u32 count;	/* how many following INVALIDATEs it applies to */
	svmdev_u32 commands;	/* DELAY/EARLY_ACK: commands until the held part happens */
	svmdev_u32 rsvd;
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_inval_mode, 16);

struct svmdev_ctl_fail_dma {
	svmdev_u32 skip;	/* let this many DMAs succeed first */
	svmdev_u32 count;	/* then fail this many */
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_fail_dma, 8);

struct svmdev_ctl_tlb_entry {
	svmdev_u64 va;		/* page-aligned */
	svmdev_u64 target;	/* guest-physical or VRAM offset */
	svmdev_u64 pte;		/* leaf entry as read */
	svmdev_u16 ctx;
	svmdev_u8 huge;
	svmdev_u8 stale;	/* an acknowledged invalidation covers it */
	svmdev_u32 rsvd;
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_tlb_entry, 32);

#define SVMDEV_EVT_FAULT	(1u << 0)	/* a fault record was raised */
#define SVMDEV_EVT_INVALIDATE	(1u << 1)	/* an invalidation was performed */
#define SVMDEV_EVT_STALE	(1u << 2)	/* access through an invalidated translation */
#define SVMDEV_EVT_ERROR	(1u << 3)	/* an error status was reported */
#define SVMDEV_EVT_ACCESS_DONE	(1u << 4)	/* a stalled host access finished */
struct svmdev_ctl_event {
	svmdev_u64 stamp;	/* event number (deterministic mode) or host ns */
	svmdev_u64 va;		/* FAULT/STALE: address; INVALIDATE: start */
	svmdev_u64 arg;		/* INVALIDATE: bytes; STALE: target; ERROR: address;
				 * ACCESS_DONE: value */
	svmdev_u32 kind;	/* one SVMDEV_EVT_* bit */
	svmdev_u32 code;	/* FAULT: fault id; ERROR/ACCESS_DONE: status */
	svmdev_u16 ctx;
	svmdev_u8 access;	/* FAULT/STALE: SVMDEV_ACC_* */
	svmdev_u8 reason;	/* FAULT: SVMDEV_FAULT_* */
	svmdev_u32 tag;		/* ACCESS_DONE: request tag */
};
SVMDEV_SIZE_CHECK(struct svmdev_ctl_event, 40);

#endif /* SVMDEV_HW_H */

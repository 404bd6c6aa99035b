/* SPDX-License-Identifier: GPL-2.0 */
/*
 * svmdev tracepoints: device faults, interval invalidations, migration
 * windows, retry-loop iterations and livelock reports.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM svmdev

#if !defined(_SVMDEV_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _SVMDEV_TRACE_H

#include <linux/tracepoint.h>

#include "svmdev.h"

#define SVMDEV_MMU_EVENTS					\
	EM(MMU_NOTIFY_UNMAP,		"unmap")		\
	EM(MMU_NOTIFY_CLEAR,		"clear")		\
	EM(MMU_NOTIFY_PROTECTION_VMA,	"protection_vma")	\
	EM(MMU_NOTIFY_PROTECTION_PAGE,	"protection_page")	\
	EM(MMU_NOTIFY_SOFT_DIRTY,	"soft_dirty")		\
	EM(MMU_NOTIFY_RELEASE,		"release")		\
	EM(MMU_NOTIFY_MIGRATE,		"migrate")		\
	EMe(MMU_NOTIFY_EXCLUSIVE,	"exclusive")

/* Export the enum values, so that tools can decode the symbols. */
#undef EM
#undef EMe
#define EM(a, b)	TRACE_DEFINE_ENUM(a);
#define EMe(a, b)	TRACE_DEFINE_ENUM(a);

SVMDEV_MMU_EVENTS
SVMDEV_INVAL_OUTCOMES
SVMDEV_LOOPS

#undef EM
#undef EMe
#define EM(a, b)	{ a, b },
#define EMe(a, b)	{ a, b }

TRACE_EVENT(svmdev_fault,
	TP_PROTO(const struct svmdev *sdev, const struct svmdev_fault *rec,
		 int result),
	TP_ARGS(sdev, rec, result),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(u16, ctx)
		__field(u8, access)
		__field(bool, host)
		__field(u64, va)
		__field(int, result)
	),
	TP_fast_assign(
		__entry->dev = sdev->index;
		__entry->ctx = rec->ctx;
		__entry->access = rec->access;
		__entry->host = rec->flags & SVMDEV_FAULT_F_HOST;
		__entry->va = rec->va;
		__entry->result = result;
	),
	TP_printk("dev=%u ctx=%u va=0x%llx access=%s host=%d result=%d",
		  __entry->dev, __entry->ctx, __entry->va,
		  __print_symbolic(__entry->access,
				   { SVMDEV_ACC_READ, "read" },
				   { SVMDEV_ACC_WRITE, "write" },
				   { SVMDEV_ACC_ATOMIC, "atomic" }),
		  __entry->host, __entry->result)
);

TRACE_EVENT(svmdev_invalidate_start,
	TP_PROTO(const struct svmdev_mirror *mirror, unsigned long start,
		 unsigned long end, enum mmu_notifier_event event,
		 bool blockable),
	TP_ARGS(mirror, start, end, event, blockable),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(u16, ctx)
		__field(bool, blockable)
		__field(unsigned int, event)
		__field(unsigned long, start)
		__field(unsigned long, end)
	),
	TP_fast_assign(
		__entry->dev = mirror->sdev->index;
		__entry->ctx = mirror->ctx;
		__entry->blockable = blockable;
		__entry->event = event;
		__entry->start = start;
		__entry->end = end;
	),
	TP_printk("dev=%u ctx=%u range=0x%lx-0x%lx event=%s blockable=%d",
		  __entry->dev, __entry->ctx, __entry->start, __entry->end,
		  __print_symbolic(__entry->event, SVMDEV_MMU_EVENTS),
		  __entry->blockable)
);

TRACE_EVENT(svmdev_invalidate_end,
	TP_PROTO(const struct svmdev_mirror *mirror, unsigned long start,
		 unsigned long end, enum svmdev_inval_outcome outcome),
	TP_ARGS(mirror, start, end, outcome),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(u16, ctx)
		__field(unsigned int, outcome)
		__field(unsigned long, start)
		__field(unsigned long, end)
	),
	TP_fast_assign(
		__entry->dev = mirror->sdev->index;
		__entry->ctx = mirror->ctx;
		__entry->outcome = outcome;
		__entry->start = start;
		__entry->end = end;
	),
	TP_printk("dev=%u ctx=%u range=0x%lx-0x%lx outcome=%s",
		  __entry->dev, __entry->ctx, __entry->start, __entry->end,
		  __print_symbolic(__entry->outcome, SVMDEV_INVAL_OUTCOMES))
);

TRACE_EVENT(svmdev_migrate_to_dev,
	TP_PROTO(const struct svmdev_mirror *mirror, unsigned long start,
		 unsigned long npages, unsigned long collected,
		 unsigned long migrated, unsigned long retries),
	TP_ARGS(mirror, start, npages, collected, migrated, retries),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(u16, ctx)
		__field(unsigned long, start)
		__field(unsigned long, npages)
		__field(unsigned long, collected)
		__field(unsigned long, migrated)
		__field(unsigned long, retries)
	),
	TP_fast_assign(
		__entry->dev = mirror->sdev->index;
		__entry->ctx = mirror->ctx;
		__entry->start = start;
		__entry->npages = npages;
		__entry->collected = collected;
		__entry->migrated = migrated;
		__entry->retries = retries;
	),
	TP_printk("dev=%u ctx=%u start=0x%lx npages=%lu collected=%lu migrated=%lu retries=%lu",
		  __entry->dev, __entry->ctx, __entry->start, __entry->npages,
		  __entry->collected, __entry->migrated, __entry->retries)
);

/* No retries here: nothing in a window to system memory is retried. */
TRACE_EVENT(svmdev_migrate_to_ram,
	TP_PROTO(const struct svmdev_mirror *mirror, unsigned long start,
		 unsigned long npages, unsigned long collected,
		 unsigned long migrated),
	TP_ARGS(mirror, start, npages, collected, migrated),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(u16, ctx)
		__field(unsigned long, start)
		__field(unsigned long, npages)
		__field(unsigned long, collected)
		__field(unsigned long, migrated)
	),
	TP_fast_assign(
		__entry->dev = mirror->sdev->index;
		__entry->ctx = mirror->ctx;
		__entry->start = start;
		__entry->npages = npages;
		__entry->collected = collected;
		__entry->migrated = migrated;
	),
	TP_printk("dev=%u ctx=%u start=0x%lx npages=%lu collected=%lu migrated=%lu",
		  __entry->dev, __entry->ctx, __entry->start, __entry->npages,
		  __entry->collected, __entry->migrated)
);

DECLARE_EVENT_CLASS(svmdev_loop_class,
	TP_PROTO(const struct svmdev *sdev, enum svmdev_loop loop,
		 unsigned long iter),
	TP_ARGS(sdev, loop, iter),
	TP_STRUCT__entry(
		__field(unsigned int, dev)
		__field(unsigned int, loop)
		__field(unsigned long, iter)
	),
	TP_fast_assign(
		__entry->dev = sdev->index;
		__entry->loop = loop;
		__entry->iter = iter;
	),
	TP_printk("dev=%u loop=%s iter=%lu", __entry->dev,
		  __print_symbolic(__entry->loop, SVMDEV_LOOPS), __entry->iter)
);

/* one more iteration of a retry loop; iter counts the retries so far */
DEFINE_EVENT(svmdev_loop_class, svmdev_retry,
	TP_PROTO(const struct svmdev *sdev, enum svmdev_loop loop,
		 unsigned long iter),
	TP_ARGS(sdev, loop, iter)
);

/* a retry loop passed livelock_bound iterations */
DEFINE_EVENT(svmdev_loop_class, svmdev_livelock,
	TP_PROTO(const struct svmdev *sdev, enum svmdev_loop loop,
		 unsigned long iter),
	TP_ARGS(sdev, loop, iter)
);

#endif /* _SVMDEV_TRACE_H */

/* The header lives with the module's sources, not in include/trace/events. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE svmdev_trace
#include <trace/define_trace.h>

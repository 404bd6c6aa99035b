// SPDX-License-Identifier: GPL-2.0
/*
 * Oversized ranges through the driver's range ioctls, run in the guest:
 * ranges as large as the address space with a few pages mapped, ranges that
 * end past TASK_SIZE or lie beyond it, and ranges whose end wraps, on
 * /dev/svmdev0 and, when the driver serves it (dmirror_compat=1), on
 * /dev/hmm_dmirror0. Every call must come back, with a result or a clean
 * error (which one is the driver's choice), within a few seconds and without
 * a kernel report: a soft lockup or WARNING of our own driver would be a
 * false finding. One line per call:
 *
 *	huge_ranges: <case>: <errno name or ok> in <ms> ms
 *
 * then the notifier balance of the svmdev file and "huge_ranges: done". The
 * exit status is 0 when every call returned.
 *
 *	gcc -static -O1 -Wall -Werror -o huge_ranges huge_ranges.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../../include/svmdev/svmdev_uapi.h"
#include "../svmdev_dmirror_uapi.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PAGE		4096ULL
/* its end wraps past 2^64 */
#define WRAP_ADDR	(0ULL - PAGE)
/* npages << PAGE_SHIFT is 0: a size that wraps by itself */
#define NPAGES_WRAP	(1ULL << 52)
/* the kernel's half: past TASK_SIZE with four or five paging levels */
#define KERNEL_ADDR	0xffff800000000000ULL
/* more than INT_MAX bytes, the largest buffer kvmalloc() takes quietly */
#define NPAGES_4G	(1ULL << 20)
#define SNAPSHOT_MAX	65536ULL

/*
 * The few mapped pages of the otherwise empty ranges, one each in distant
 * 2 MiB ranges and top-level device tables, away from the binary, its heap
 * and the mmap area below the stack.
 */
static const uint64_t sparse[] = {
	0x40000000ULL,		/* 1 GiB */
	0x10000000000ULL,	/* 1 TiB */
	0x400000000000ULL,	/* 64 TiB */
	0x600000000000ULL,	/* 96 TiB */
};
#define NSPARSE (sizeof(sparse) / sizeof(sparse[0]))

static const char *errno_name(int err)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {
#define E(x) { x, #x }
		E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(E2BIG), E(EBADF),
		E(EAGAIN), E(ENOMEM), E(EFAULT), E(EBUSY), E(EEXIST), E(ENODEV),
		E(EINVAL), E(ENOSPC), E(ERANGE), E(ENOTTY), E(EOVERFLOW), E(ENOTCONN),
		E(ETIMEDOUT), E(ECANCELED), E(EOPNOTSUPP),
#undef E
	};
	static char other[24];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == err)
			return names[i].name;
	snprintf(other, sizeof(other), "errno%d", err);
	return other;
}

static void die(const char *what)
{
	printf("huge_ranges: %s: %s\n", what, errno_name(errno));
	exit(1);
}

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One ioctl, timed, and its case line. */
static int run_case(const char *name, int fd, unsigned long cmd, void *arg)
{
	uint64_t start = now_ms();
	int err;

	err = ioctl(fd, cmd, arg) ? errno : 0;
	printf("huge_ranges: %s: %s in %llu ms\n", name, err ? errno_name(err) : "ok",
	       (unsigned long long)(now_ms() - start));
	return err;
}

static int range_case(const char *name, int fd, unsigned long cmd, uint64_t addr,
		      uint64_t npages, uint64_t flags)
{
	struct svmdev_range_op op = { .addr = addr, .npages = npages, .flags = flags };

	return run_case(name, fd, cmd, &op);
}

static int snapshot_case(const char *name, int fd, uint64_t addr, uint64_t npages,
			 uint8_t *flags)
{
	struct svmdev_snapshot s = {
		.addr = addr,
		.npages = npages,
		.ptr = (uintptr_t)flags,
	};

	return run_case(name, fd, SVMDEV_IOC_SNAPSHOT, &s);
}

static int dmirror_case(const char *name, int fd, unsigned long cmd, uint64_t addr,
			uint64_t npages, void *buf)
{
	struct hmm_dmirror_cmd c = {
		.addr = addr,
		.ptr = (uintptr_t)buf,
		.npages = npages,
	};

	return run_case(name, fd, cmd, &c);
}

/*
 * TASK_SIZE of this process. With five paging levels the kernel maps above
 * 47 bits only where it is asked to, so a fixed mapping there tells.
 */
static uint64_t task_size(void)
{
	void *want = (void *)(1ULL << 52), *p;

	p = mmap(want, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		 -1, 0);
	if (p == MAP_FAILED)
		return (1ULL << 47) - PAGE;
	munmap(p, PAGE);
	return p == want ? (1ULL << 56) - PAGE : (1ULL << 47) - PAGE;
}

static void map_sparse(void)
{
	size_t i;

	for (i = 0; i < NSPARSE; i++) {
		void *p = mmap((void *)(uintptr_t)sparse[i], PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p != MAP_FAILED && p != (void *)(uintptr_t)sparse[i])
			errno = EEXIST;
		if (p != (void *)(uintptr_t)sparse[i])
			die("mmap of a sparse page");
		/* present, so that a mirror without faults maps it */
		memset(p, 0x5a, PAGE);
	}
}

/* How many sparse pages the device page table maps, or -errno. */
static int sparse_mapped(int fd)
{
	int n = 0;
	size_t i;

	for (i = 0; i < NSPARSE; i++) {
		uint8_t flag = 0;
		struct svmdev_snapshot s = {
			.addr = sparse[i],
			.npages = 1,
			.ptr = (uintptr_t)&flag,
		};

		if (ioctl(fd, SVMDEV_IOC_SNAPSHOT, &s))
			return -errno;
		n += !!(flag & SVMDEV_SNAP_VALID);
	}
	return n;
}

/* Whether a range ioctl that succeeded did its work, not just returned. */
static void report_sparse(const char *name, int fd)
{
	int n = sparse_mapped(fd);

	if (n < 0)
		printf("huge_ranges: %s: snapshot failed with %s\n", name, errno_name(-n));
	else
		printf("huge_ranges: %s: %d of %zu sparse pages mapped\n", name, n, NSPARSE);
}

static void svmdev_cases(int fd, uint64_t ts, uint8_t *flags)
{
	uint64_t all = ts / PAGE, rest = (ts - sparse[0]) / PAGE;

	/* The whole address space: the holes cost nothing, the pages get mapped. */
	if (!range_case("map_present_all", fd, SVMDEV_IOC_MAP_PRESENT, 0, all, 0))
		report_sparse("map_present_all", fd);
	if (!range_case("release_all", fd, SVMDEV_IOC_RELEASE, 0, all, 0))
		report_sparse("release_all", fd);
	range_case("release_last_page", fd, SVMDEV_IOC_RELEASE, ts - PAGE, 1, 0);
	range_case("release_past_end", fd, SVMDEV_IOC_RELEASE, ts - PAGE, 2, 0);
	range_case("release_past", fd, SVMDEV_IOC_RELEASE, ts, 1, 0);
	range_case("release_kernel", fd, SVMDEV_IOC_RELEASE, KERNEL_ADDR, all, 0);
	range_case("release_wrap", fd, SVMDEV_IOC_RELEASE, WRAP_ADDR, 2, 0);
	range_case("release_npages_wrap", fd, SVMDEV_IOC_RELEASE, PAGE, NPAGES_WRAP, 0);
	range_case("release_npages_max", fd, SVMDEV_IOC_RELEASE, 0, UINT64_MAX, 0);
	range_case("map_present_past", fd, SVMDEV_IOC_MAP_PRESENT, ts, 1, 0);
	range_case("map_present_kernel", fd, SVMDEV_IOC_MAP_PRESENT, KERNEL_ADDR, 512, 0);
	range_case("map_present_wrap", fd, SVMDEV_IOC_MAP_PRESENT, WRAP_ADDR, 2, 0);
	range_case("map_present_npages_wrap", fd, SVMDEV_IOC_MAP_PRESENT, PAGE, NPAGES_WRAP, 0);

	/* From a mapped page to TASK_SIZE: a faulting range stops at the first hole. */
	range_case("mirror_all", fd, SVMDEV_IOC_MIRROR, sparse[0], rest,
		   SVMDEV_RANGE_F_WRITE);
	range_case("mirror_wrap", fd, SVMDEV_IOC_MIRROR, WRAP_ADDR, 2, 0);
	range_case("migrate_all", fd, SVMDEV_IOC_MIGRATE, sparse[0], rest, 0);
	range_case("migrate_to_sys_all", fd, SVMDEV_IOC_MIGRATE, sparse[0], rest,
		   SVMDEV_RANGE_F_TO_SYS);
	range_case("migrate_wrap", fd, SVMDEV_IOC_MIGRATE, WRAP_ADDR, 2, 0);
	range_case("exclusive_all", fd, SVMDEV_IOC_EXCLUSIVE, sparse[0], rest, 0);
	range_case("exclusive_wrap", fd, SVMDEV_IOC_EXCLUSIVE, WRAP_ADDR, 2, 0);

	snapshot_case("snapshot_top", fd, ts - SNAPSHOT_MAX * PAGE, SNAPSHOT_MAX, flags);
	snapshot_case("snapshot_all", fd, 0, all, flags);
	snapshot_case("snapshot_past", fd, ts, 1, flags);
	snapshot_case("snapshot_wrap", fd, WRAP_ADDR, 2, flags);
}

/*
 * The test_hmm interface. @buf is two pages followed by a guard page: the
 * caller's buffer, not npages, bounds what may be copied.
 */
static void dmirror_cases(int fd, uint64_t ts, uint8_t *buf)
{
	uint64_t all = ts / PAGE, rest = (ts - sparse[0]) / PAGE;

	dmirror_case("dmirror_read_4g", fd, HMM_DMIRROR_READ, sparse[0], NPAGES_4G, buf);
	dmirror_case("dmirror_write_4g", fd, HMM_DMIRROR_WRITE, sparse[0], NPAGES_4G, buf);
	dmirror_case("dmirror_read_all", fd, HMM_DMIRROR_READ, 0, all, buf);
	dmirror_case("dmirror_read_past", fd, HMM_DMIRROR_READ, ts, 1, buf);
	dmirror_case("dmirror_read_kernel", fd, HMM_DMIRROR_READ, KERNEL_ADDR, 1, buf);
	dmirror_case("dmirror_read_wrap", fd, HMM_DMIRROR_READ, WRAP_ADDR, 2, buf);
	dmirror_case("dmirror_write_npages_wrap", fd, HMM_DMIRROR_WRITE, PAGE, NPAGES_WRAP,
		     buf);
	dmirror_case("dmirror_snapshot_all", fd, HMM_DMIRROR_SNAPSHOT, 0, all, buf);
	dmirror_case("dmirror_snapshot_past_end", fd, HMM_DMIRROR_SNAPSHOT, ts - PAGE, 2,
		     buf);
	dmirror_case("dmirror_snapshot_wrap", fd, HMM_DMIRROR_SNAPSHOT, WRAP_ADDR, 2, buf);
	dmirror_case("dmirror_migrate_all", fd, HMM_DMIRROR_MIGRATE_TO_DEV, sparse[0], rest,
		     buf);
	dmirror_case("dmirror_migrate_to_sys_all", fd, HMM_DMIRROR_MIGRATE_TO_SYS, sparse[0],
		     rest, buf);
	dmirror_case("dmirror_migrate_wrap", fd, HMM_DMIRROR_MIGRATE_TO_DEV, WRAP_ADDR, 2, buf);
	dmirror_case("dmirror_exclusive_all", fd, HMM_DMIRROR_EXCLUSIVE, sparse[0], rest, buf);
	dmirror_case("dmirror_check_exclusive_all", fd, HMM_DMIRROR_CHECK_EXCLUSIVE, 0, all,
		     buf);
	dmirror_case("dmirror_release_wrap", fd, HMM_DMIRROR_RELEASE, WRAP_ADDR, 2, buf);
	dmirror_case("dmirror_release_all", fd, HMM_DMIRROR_RELEASE, 0, all, buf);
}

int main(void)
{
	struct svmdev_bind bind = { .personality = SVMDEV_PERS_NONE };
	struct svmdev_counters c;
	uint8_t *buf, *flags;
	uint64_t ts;
	size_t i;
	int fd, dfd;

	/* the lines reach the console even if the guest stops in a call */
	setvbuf(stdout, NULL, _IOLBF, 0);
	ts = task_size();
	printf("huge_ranges: TASK_SIZE 0x%llx\n", (unsigned long long)ts);
	map_sparse();
	buf = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || mprotect(buf + 2 * PAGE, PAGE, PROT_NONE))
		die("mmap of the buffer");
	memset(buf, 0xa5, 2 * PAGE);
	flags = malloc(SNAPSHOT_MAX);
	if (!flags)
		die("malloc");

	fd = open("/dev/svmdev0", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open /dev/svmdev0");
	if (ioctl(fd, SVMDEV_IOC_BIND, &bind))
		die("SVMDEV_IOC_BIND");
	svmdev_cases(fd, ts, flags);

	dfd = open("/dev/hmm_dmirror0", O_RDWR | O_CLOEXEC);
	if (dfd < 0) {
		printf("huge_ranges: no dmirror cases: open /dev/hmm_dmirror0: %s\n",
		       errno_name(errno));
	} else {
		dmirror_cases(dfd, ts, buf);
		close(dfd);
	}

	/* Mirrored once more, then unmapped: invalidations for the balance check. */
	range_case("map_present_all_again", fd, SVMDEV_IOC_MAP_PRESENT, 0, ts / PAGE, 0);
	for (i = 0; i < NSPARSE; i++)
		munmap((void *)(uintptr_t)sparse[i], PAGE);
	if (ioctl(fd, SVMDEV_IOC_CHECK, &c))
		die("SVMDEV_IOC_CHECK");
	printf("huge_ranges: notifier starts %llu ends %llu: %s\n",
	       (unsigned long long)c.mn_starts, (unsigned long long)c.mn_ends,
	       c.balanced ? "balanced" : "UNBALANCED");
	printf("huge_ranges: ring restarts %llu, fence timeouts %llu\n",
	       (unsigned long long)c.drv[SVMDEV_CTR_RING_RESTARTS],
	       (unsigned long long)c.drv[SVMDEV_CTR_FENCE_TIMEOUTS]);
	close(fd);
	printf("huge_ranges: done\n");
	return 0;
}

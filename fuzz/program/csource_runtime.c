/*
 * What the executor does for each op, without the executor
 * (fuzz/program/csource_runtime.c of svmfuzz; svmprog prog2c pastes it into
 * every reproducer, with the driver's uapi and the program's settings).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* svmprog: uapi */

/* svmprog: program */

/* Helpers a program does not use are no error. */
#define HELPER static __attribute__((unused))

#define PAGE 4096UL
#define HUGE_PAGE (2UL << 20)
#define WORDS_PER_PAGE (PAGE / 8)
#define NBUF 16
#define MAX_PAGES 1024
#define NFILES 4
#define NTHREADS 8
#define NCHILDREN 8
#define MAX_FORKS 256
/* Buffer i lives where the executor maps it, so that addresses (and THP
 * alignment) are the same: BUF_BASE + i * BUF_SLOT. */
#define BUF_BASE 0x100000000000UL
#define BUF_SLOT (16UL << 20)

enum { KIND_ANON, KIND_SHARED, KIND_FILE, KIND_FILE_SHARED, KIND_HUGE, KIND_HUGETLB };

/* Linux 5.14 and 6.1 values, for C libraries older than them. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif

static int verbose;

/* ---- op results ---- */

/* The op's value beside its errno: pages done, bytes that differ, a pid. */
static __thread long long op_ret;

HELPER void done(int op, int err)
{
	if (verbose)
		fprintf(stderr, "[pid %d] op %d: %s: %s, ret %lld\n", getpid(), op, op_text[op],
			err ? strerror(err) : "ok", op_ret);
	op_ret = 0;
}

HELPER int write_file(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;
	ssize_t n;

	if (fd < 0)
		return errno;
	n = write(fd, value, strlen(value));
	if (n != (ssize_t)strlen(value))
		err = n < 0 ? errno : EIO;
	close(fd);
	return err;
}

/* ---- CPU accesses that may fault ---- */

/* A fault inside GUARD_BEGIN .. GUARD_END ends the access and fails the op
 * with EFAULT, as the executor's guarded accesses do. */
static __thread sigjmp_buf guard_env;
static __thread volatile sig_atomic_t guard_armed;

#define GUARD_BEGIN(err) \
	if (sigsetjmp(guard_env, 1)) { \
		err = EFAULT; \
	} else { \
		guard_armed = 1;
#define GUARD_END \
		guard_armed = 0; \
	}

static void on_fault(int sig)
{
	if (guard_armed) {
		guard_armed = 0;
		siglongjmp(guard_env, sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_fault_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

/* The 8 bytes at word `word` of a buffer filled with pattern(seed): the
 * executor's own pattern, so a write here and a verify there agree. */
static uint64_t pattern_word(uint32_t seed, uint64_t word)
{
	uint64_t x = (((uint64_t)seed << 32) ^ word) + 0x9e3779b97f4a7c15ull;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

HELPER void fill_pattern(uint64_t *dst, size_t page, uint32_t seed)
{
	for (size_t k = 0; k < WORDS_PER_PAGE; k++)
		dst[k] = pattern_word(seed, page * WORDS_PER_PAGE + k);
}

/* ---- buffers ---- */

struct buffer {
	unsigned char *addr; /* NULL: not mapped */
	size_t map_bytes, pages;
	int kind, memfd;
	unsigned char mapped[MAX_PAGES]; /* a partial munmap leaves holes */
};
static struct buffer bufs[NBUF];
static pthread_mutex_t bufs_mu = PTHREAD_MUTEX_INITIALIZER;

/* The part of pages [off, off + n) of a buffer that an op works on. */
struct range {
	unsigned char *addr; /* of page `first` */
	size_t first, count;
	int clipped; /* part of the asked range is not mapped */
	unsigned char mapped[MAX_PAGES];
};

/* EFAULT if the buffer is not mapped (an earlier op failed) or off is past it. */
static int resolve(int id, size_t off, size_t n, struct range *r)
{
	struct buffer *b = &bufs[id];
	int err = 0;

	pthread_mutex_lock(&bufs_mu);
	if (!b->addr || off >= b->pages) {
		err = EFAULT;
	} else {
		r->first = off;
		r->count = n < b->pages - off ? n : b->pages - off;
		r->clipped = r->count < n;
		r->addr = b->addr + off * PAGE;
		for (size_t i = 0; i < r->count; i++) {
			r->mapped[i] = b->mapped[off + i];
			r->clipped |= !r->mapped[i];
		}
	}
	pthread_mutex_unlock(&bufs_mu);
	return err;
}

/* CPU accesses fail with EFAULT when part of their range was not mapped. */
static int finish(const struct range *r, int err)
{
	return !err && r->clipped ? EFAULT : err;
}

static size_t bytes_for(int kind, size_t pages)
{
	size_t bytes = pages * PAGE;

	return kind == KIND_HUGETLB ? (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE : bytes;
}

static void forget(struct buffer *b)
{
	if (b->memfd >= 0)
		close(b->memfd);
	b->addr = NULL;
	b->map_bytes = b->pages = 0;
	b->memfd = -1;
	memset(b->mapped, 0, sizeof(b->mapped));
}

HELPER int op_mmap(int id, size_t pages, int kind, int prot)
{
	struct buffer *b = &bufs[id];
	void *want = (void *)(BUF_BASE + id * BUF_SLOT), *p;
	size_t bytes = bytes_for(kind, pages);
	int flags = MAP_FIXED_NOREPLACE, fd = -1, err = 0;

	pthread_mutex_lock(&bufs_mu);
	/* A munmap the program counted as whole may have failed (hugetlb
	 * alignment): the id is reused, so the old mapping goes. */
	if (b->addr) {
		munmap(b->addr, b->map_bytes);
		forget(b);
	}
	switch (kind) {
	case KIND_ANON:
	case KIND_HUGE:
		flags |= MAP_PRIVATE | MAP_ANONYMOUS;
		break;
	case KIND_SHARED:
		flags |= MAP_SHARED | MAP_ANONYMOUS;
		break;
	case KIND_HUGETLB:
		flags |= MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
		break;
	default:
		/* A tmpfs file as large as any buffer can grow, so mremap never
		 * runs past its end. */
		fd = memfd_create("svmfuzz-buffer", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, MAX_PAGES * PAGE)) {
			err = errno;
			if (fd >= 0)
				close(fd);
			pthread_mutex_unlock(&bufs_mu);
			return err;
		}
		flags |= kind == KIND_FILE ? MAP_PRIVATE : MAP_SHARED;
		break;
	}
	p = mmap(want, bytes, prot, flags, fd, 0);
	if (p == MAP_FAILED || p != want) {
		err = p == MAP_FAILED ? errno : EEXIST;
		if (p != MAP_FAILED)
			munmap(p, bytes);
		if (fd >= 0)
			close(fd);
	} else {
		if (kind == KIND_HUGE)
			madvise(p, bytes, MADV_HUGEPAGE);
		b->addr = p;
		b->map_bytes = bytes;
		b->pages = pages;
		b->kind = kind;
		b->memfd = fd;
		for (size_t i = 0; i < MAX_PAGES; i++)
			b->mapped[i] = i < pages;
	}
	pthread_mutex_unlock(&bufs_mu);
	return err;
}

HELPER int op_munmap(int id, size_t off, size_t n)
{
	struct range r;
	size_t len;
	int whole, err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	pthread_mutex_lock(&bufs_mu);
	whole = r.first == 0 && r.count == bufs[id].pages;
	len = whole ? bufs[id].map_bytes : r.count * PAGE;
	pthread_mutex_unlock(&bufs_mu);
	if (munmap(r.addr, len))
		return errno;
	pthread_mutex_lock(&bufs_mu);
	if (whole)
		forget(&bufs[id]);
	else
		memset(bufs[id].mapped + r.first, 0, r.count);
	pthread_mutex_unlock(&bufs_mu);
	return 0;
}

HELPER int op_mprotect(int id, size_t off, size_t n, int prot)
{
	struct range r;
	int err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	return mprotect(r.addr, r.count * PAGE, prot) ? errno : 0;
}

HELPER int op_madvise(int id, size_t off, size_t n, int advice)
{
	struct range r;
	int err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	return madvise(r.addr, r.count * PAGE, advice) ? errno : 0;
}

HELPER int op_mremap(int id, size_t pages, int may_move)
{
	struct buffer *b = &bufs[id];
	size_t old_bytes, new_bytes, old_pages;
	unsigned char *addr;
	void *p;

	pthread_mutex_lock(&bufs_mu);
	addr = b->addr;
	old_bytes = b->map_bytes;
	new_bytes = bytes_for(b->kind, pages);
	pthread_mutex_unlock(&bufs_mu);
	if (!addr)
		return EFAULT;
	p = mremap(addr, old_bytes, new_bytes, may_move ? MREMAP_MAYMOVE : 0);
	if (p == MAP_FAILED)
		return errno;
	pthread_mutex_lock(&bufs_mu);
	if (b->addr == addr) {
		old_pages = b->pages;
		b->addr = p;
		b->map_bytes = new_bytes;
		b->pages = pages;
		for (size_t i = old_pages < pages ? old_pages : pages;
		     i < (old_pages > pages ? old_pages : pages); i++)
			b->mapped[i] = i < pages;
	}
	pthread_mutex_unlock(&bufs_mu);
	return 0;
}

/* Reads one byte of each page: faults it in. */
HELPER int op_touch(int id, size_t off, size_t n)
{
	struct range r;
	int err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	GUARD_BEGIN(err)
	for (size_t i = 0; i < r.count; i++)
		if (r.mapped[i])
			(void)*(volatile unsigned char *)(r.addr + i * PAGE);
	GUARD_END
	return finish(&r, err);
}

/* Reads every word of the range, or writes pattern(seed) to it. */
static int cpu_words(int id, size_t off, size_t n, int write, uint32_t seed)
{
	struct range r;
	int err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	GUARD_BEGIN(err)
	for (size_t i = 0; i < r.count; i++) {
		volatile uint64_t *w = (volatile uint64_t *)(r.addr + i * PAGE);

		for (size_t k = 0; r.mapped[i] && k < WORDS_PER_PAGE; k++) {
			if (write)
				w[k] = pattern_word(seed, (r.first + i) * WORDS_PER_PAGE + k);
			else
				(void)w[k];
		}
	}
	GUARD_END
	return finish(&r, err);
}

HELPER int op_read(int id, size_t off, size_t n)
{
	return cpu_words(id, off, n, 0, 0);
}

HELPER int op_write(int id, size_t off, size_t n, uint32_t seed)
{
	return cpu_words(id, off, n, 1, seed);
}

/* EILSEQ, with the bytes that differ from pattern(seed), is the
 * reproducer's sign of lost or corrupted data. */
HELPER int op_verify(int id, size_t off, size_t n, uint32_t seed)
{
	static __thread volatile long long differ, first_page;
	struct range r;
	int err;

	if ((err = resolve(id, off, n, &r)))
		return err;
	differ = 0;
	first_page = -1;
	GUARD_BEGIN(err)
	for (size_t i = 0; i < r.count; i++) {
		volatile uint64_t *w = (volatile uint64_t *)(r.addr + i * PAGE);

		if (!r.mapped[i])
			continue;
		for (size_t k = 0; k < WORDS_PER_PAGE; k++) {
			uint64_t x = w[k] ^ pattern_word(seed, (r.first + i) * WORDS_PER_PAGE + k);

			for (int j = 0; j < 8; j++)
				if ((x >> (8 * j)) & 0xff) {
					differ++;
					if (first_page < 0)
						first_page = (long long)(r.first + i);
				}
		}
	}
	GUARD_END
	if (err)
		return err;
	op_ret = differ;
	if (differ) {
		fprintf(stderr, "svmfuzz-repro: verify: %lld bytes of buf %d pages %zu..%zu differ "
			"from pattern(%u), the first in page %lld\n", differ, id, r.first,
			r.first + r.count - 1, seed, first_page);
		return EILSEQ;
	}
	return finish(&r, 0);
}

/* ---- driver files ---- */

struct dev_file {
	int declared; /* else driver ops on it fail with EBADF until open_dev */
	int dev, personality;
	int fd; /* -1 until bound, on open_dev or first use */
	unsigned long long ctx;
#if !TARGET_TEST_HMM
	unsigned long long knobs[sizeof(initial_knobs) / sizeof(initial_knobs[0])];
	int have_knobs;
#endif
};
static struct dev_file files[NFILES];
static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;

#if !TARGET_TEST_HMM
_Static_assert(sizeof(struct svmdev_knobs) == sizeof(initial_knobs),
	       "one value per field of struct svmdev_knobs");

static int apply_knobs(struct dev_file *f)
{
	struct svmdev_knobs k;

	memcpy(&k, f->knobs, sizeof(k));
	return ioctl(f->fd, SVMDEV_IOC_KNOBS, &k) ? errno : 0;
}
#endif

/* The driver binds an open file to the address space of the task that
 * binds it, so each process binds its own. -errno on failure. */
static int bind_locked(struct dev_file *f)
{
	char path[32];
	int fd;

#if TARGET_TEST_HMM
	/* test_hmm mirrors the address space of the task that opens it. */
	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", f->dev);
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
#else
	struct svmdev_bind bind;
	int err = 0;

	snprintf(path, sizeof(path), "/dev/svmdev%d", f->dev);
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
	memset(&bind, 0, sizeof(bind));
	bind.personality = f->personality;
	if (ioctl(fd, SVMDEV_IOC_BIND, &bind))
		err = errno;
	f->ctx = bind.ctx;
	f->fd = fd;
	if (!err && f->have_knobs)
		err = apply_knobs(f);
	f->fd = -1;
	if (err) {
		close(fd);
		return -err;
	}
#endif
	return f->fd = fd;
}

/* The bound file, bound first if it is declared; -errno. */
static int file_fd(int i)
{
	struct dev_file *f = &files[i];
	int fd;

	pthread_mutex_lock(&files_mu);
	fd = f->fd >= 0 ? f->fd : !f->declared ? -EBADF : bind_locked(f);
	pthread_mutex_unlock(&files_mu);
	return fd;
}

/* A driver op's file and the mapped part of its range. */
static int file_range(int file, int id, size_t off, size_t n, int *fd, struct range *r)
{
	if ((*fd = file_fd(file)) < 0)
		return -*fd;
	return resolve(id, off, n, r);
}

HELPER int op_open_dev(int i, int dev, int personality)
{
	struct dev_file *f = &files[i];
	int fd;

	pthread_mutex_lock(&files_mu);
	if (f->fd >= 0) {
		fd = -EBUSY;
	} else {
		f->declared = 1;
		f->dev = dev;
		f->personality = personality;
		fd = bind_locked(f);
	}
	op_ret = (long long)f->ctx;
	pthread_mutex_unlock(&files_mu);
	return fd < 0 ? -fd : 0;
}

/* The device acts on each mapped page of the range on its own, as svmdev's
 * device accesses go page by page: one(fd, addr, data, arg) does the page at
 * addr with the 4 KiB data, filled with pattern(seed) first if `fill`.
 * Stops at the first that fails; ret: the pages before it. */
typedef int (*page_fn)(int fd, uintptr_t addr, uint64_t *data, int arg);

HELPER int each_page(int file, int id, size_t off, size_t n, int fill, uint32_t seed,
		     page_fn one, int arg)
{
	uint64_t data[WORDS_PER_PAGE];
	struct range r;
	int fd, err = 0;
	size_t i;

	if ((err = file_range(file, id, off, n, &fd, &r)))
		return err;
	for (i = 0; i < r.count; i++) {
		if (!r.mapped[i])
			continue;
		if (fill)
			fill_pattern(data, r.first + i, seed);
		if ((err = one(fd, (uintptr_t)(r.addr + i * PAGE), data, arg)))
			break;
	}
	op_ret = (long long)i;
	return !err && r.clipped ? EFAULT : err;
}

/* A device action: the host has the device do it through its control
 * channel, which the guest cannot reach. */
HELPER int host_only(int op)
{
	fprintf(stderr, "svmfuzz-repro: op %d (%s) is a device action the host performs through "
		"svmdev's control channel; this reproducer cannot do it from the guest and goes on "
		"without it\n", op, op_text[op]);
	return EOPNOTSUPP;
}

#if !TARGET_TEST_HMM
/* SVMDEV_IOC_{MIRROR,PREFETCH,MIGRATE,EXCLUSIVE} on the mapped part of the range. */
HELPER int svm_range(int file, int id, size_t off, size_t n, unsigned long cmd, uint64_t flags)
{
	struct svmdev_range_op op;
	struct range r;
	int fd, err;

	if ((err = file_range(file, id, off, n, &fd, &r)))
		return err;
	memset(&op, 0, sizeof(op));
	op.addr = (uintptr_t)r.addr;
	op.npages = r.count;
	op.flags = flags;
	err = ioctl(fd, cmd, &op) ? errno : 0;
	op_ret = (long long)op.done;
	return err;
}

/* npages 0: evict every page of the device's memory. */
HELPER int svm_release(int file)
{
	struct svmdev_range_op op;
	int fd, err;

	if ((fd = file_fd(file)) < 0)
		return -fd;
	memset(&op, 0, sizeof(op));
	err = ioctl(fd, SVMDEV_IOC_RELEASE, &op) ? errno : 0;
	op_ret = (long long)op.done;
	return err;
}

HELPER int svm_snapshot(int file, int id, size_t off, size_t n)
{
	unsigned char states[MAX_PAGES];
	struct svmdev_snapshot s;
	struct range r;
	int fd, err;

	if ((err = file_range(file, id, off, n, &fd, &r)))
		return err;
	memset(&s, 0, sizeof(s));
	s.addr = (uintptr_t)r.addr;
	s.npages = r.count;
	s.ptr = (uintptr_t)states;
	err = ioctl(fd, SVMDEV_IOC_SNAPSHOT, &s) ? errno : 0;
	op_ret = (long long)s.valid;
	return err;
}

/* One SVMDEV_IOC_ACCESS: a 4 KiB read or write, or an atomic add of 1 to
 * the page's first word; EIO when the device completed it with an error. */
static int svm_access_page(int fd, uintptr_t addr, uint64_t *data, int kind)
{
	struct svmdev_access a;

	memset(&a, 0, sizeof(a));
	a.addr = addr;
	a.kind = kind;
	a.size = kind == SVMDEV_UACC_ATOMIC ? 8 : PAGE;
	a.aop = SVMDEV_UAOP_ADD;
	a.value = kind == SVMDEV_UACC_ATOMIC;
	a.ptr = kind == SVMDEV_UACC_ATOMIC ? 0 : (uintptr_t)data;
	if (ioctl(fd, SVMDEV_IOC_ACCESS, &a))
		return errno;
	return a.status ? EIO : 0;
}

HELPER int svm_access(int file, int id, size_t off, size_t n, int kind, uint32_t seed)
{
	return each_page(file, id, off, n, kind == SVMDEV_UACC_WRITE, seed, svm_access_page, kind);
}

/* drv_fail_alloc (field 0) and drv_fail_copy (field 1): the ioctl sets
 * every knob at once, so the others are written again. */
HELPER int svm_set_knob(int file, int field, uint64_t count)
{
	struct dev_file *f = &files[file];
	int fd, err;

	if ((fd = file_fd(file)) < 0)
		return -fd;
	pthread_mutex_lock(&files_mu);
	f->knobs[field] = count;
	f->have_knobs = 1;
	err = apply_knobs(f);
	pthread_mutex_unlock(&files_mu);
	return err;
}

/* The driver's balance check of each file's mm notifier, as the executor
 * makes it when the program's first process ends: an outstanding
 * invalidate_range_start is reported on the console. */
static void check_files(void)
{
	struct svmdev_counters c;

	for (int i = 0; i < NFILES; i++) {
		if (files[i].fd < 0)
			continue;
		memset(&c, 0, sizeof(c));
		if (ioctl(files[i].fd, SVMDEV_IOC_CHECK, &c)) {
			fprintf(stderr, "svmfuzz-repro: file %d: SVMDEV_IOC_CHECK: %s\n", i,
				strerror(errno));
			continue;
		}
		if (verbose || !c.balanced)
			fprintf(stderr, "svmfuzz-repro: file %d: notifier starts %llu ends %llu: %s\n",
				i, (unsigned long long)c.mn_starts, (unsigned long long)c.mn_ends,
				c.balanced ? "balanced" : "UNBALANCED");
	}
}
#else
/* One HMM_DMIRROR_* command over the mapped part of the range, with a
 * bounce buffer of `per_page` bytes a page (4096 for the data the commands
 * copy out, 1 for SNAPSHOT's page states); `then`, if not 0, a second
 * command on the same range and buffer once the first succeeded.
 *
 * mirror write=yes is READ then WRITE: test_hmm faults for writing only in
 * HMM_DMIRROR_WRITE, which stores its buffer, so what READ read is written
 * back. A CPU write to the range between the two is lost, which svmdev
 * never does. */
HELPER int dmirror_range(int file, int id, size_t off, size_t n, unsigned long cmd,
			 unsigned long then, size_t per_page)
{
	struct hmm_dmirror_cmd c;
	struct range r;
	void *bounce;
	int fd, err;

	if ((err = file_range(file, id, off, n, &fd, &r)))
		return err;
	if (!(bounce = calloc(r.count, per_page)))
		return ENOMEM;
	memset(&c, 0, sizeof(c));
	c.addr = (uintptr_t)r.addr;
	c.ptr = (uintptr_t)bounce;
	c.npages = r.count;
	err = ioctl(fd, cmd, &c) ? errno : 0;
	if (!err && then) {
		c.cpages = c.faults = 0;
		err = ioctl(fd, then, &c) ? errno : 0;
	}
	op_ret = (long long)c.cpages;
	free(bounce);
	return err;
}

/* test_hmm evicts all of its device memory. */
HELPER int dmirror_release(int file)
{
	struct hmm_dmirror_cmd c;
	int fd;

	if ((fd = file_fd(file)) < 0)
		return -fd;
	memset(&c, 0, sizeof(c));
	return ioctl(fd, HMM_DMIRROR_RELEASE, &c) ? errno : 0;
}

static int dmirror_page(int fd, uintptr_t addr, uint64_t *data, int write)
{
	struct hmm_dmirror_cmd c;

	memset(&c, 0, sizeof(c));
	c.addr = addr;
	c.ptr = (uintptr_t)data;
	c.npages = 1;
	return ioctl(fd, write ? HMM_DMIRROR_WRITE : HMM_DMIRROR_READ, &c) ? errno : 0;
}

/* A device read (or write of pattern(seed)) of each page on its own. */
HELPER int dmirror_pages(int file, int id, size_t off, size_t n, int write, uint32_t seed)
{
	return each_page(file, id, off, n, write, seed, dmirror_page, write);
}
#endif

/* ---- fault injection ---- */

#define FAILSLAB "/sys/kernel/debug/failslab/"
#define FAIL_PAGE_ALLOC "/sys/kernel/debug/fail_page_alloc/"

HELPER int set_fail(const char *dir, const char *name, unsigned long value)
{
	char path[96], v[32];

	snprintf(path, sizeof(path), "%s%s", dir, name);
	snprintf(v, sizeof(v), "%lu", value);
	return write_file(path, v);
}

/* Only the program's processes may fail (task-filter and make-it-fail),
 * one line per failure, sleeping allocations included: the executor's
 * settings. */
HELPER void prepare_fault_injection(void)
{
	const char *dirs[] = {FAILSLAB, FAIL_PAGE_ALLOC};
	char path[96];

	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%sprobability", dirs[i]);
		if (access(path, F_OK))
			continue;
		set_fail(dirs[i], "probability", 0);
		set_fail(dirs[i], "interval", 1);
		set_fail(dirs[i], "times", 0);
		set_fail(dirs[i], "verbose", 0);
		write_file(strcat(strcpy(path, dirs[i]), "task-filter"), "Y");
		write_file(strcat(strcpy(path, dirs[i]), "ignore-gfp-wait"), "N");
	}
	write_file(FAIL_PAGE_ALLOC "ignore-gfp-highmem", "N");
	write_file(FAIL_PAGE_ALLOC "min-order", "0");
}

HELPER int op_fail_probability(const char *dir, unsigned long percent, unsigned long times)
{
	int err = set_fail(dir, "times", times);

	return err ? err : set_fail(dir, "probability", percent);
}

HELPER void disarm_fault_injection(void)
{
	op_fail_probability(FAILSLAB, 0, 0);
	op_fail_probability(FAIL_PAGE_ALLOC, 0, 0);
}

/* fail_nth: the nth allocation of the thread's next op fails
 * (/proc/thread-self/fail-nth). */
static __thread int fail_nth_fd = -2;

HELPER int op_fail_nth(void)
{
	if (fail_nth_fd == -2)
		fail_nth_fd = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
	return fail_nth_fd >= 0 ? 0 : EOPNOTSUPP;
}

HELPER void fail_nth_arm(unsigned long nth)
{
	char v[32];

	if (fail_nth_fd < 0)
		return;
	snprintf(v, sizeof(v), "%lu", nth);
	(void)!pwrite(fail_nth_fd, v, strlen(v), 0);
}

/* Reads back 0 if the failure happened; disarms it if it did not. */
HELPER void fail_nth_disarm(void)
{
	char v[32] = {0};

	if (fail_nth_fd < 0)
		return;
	if (pread(fail_nth_fd, v, sizeof(v) - 1, 0) > 0 && atoi(v) == 0) {
		if (verbose)
			fprintf(stderr, "[pid %d] the armed allocation failure happened\n", getpid());
		return;
	}
	(void)!pwrite(fail_nth_fd, "0", 1, 0);
}

/* ---- processes and threads ---- */

static pthread_t threads[NTHREADS];
static int thread_running[NTHREADS];
/* Per fork of this process, in program order; -1 until it is made. A pidfd
 * names the child even once it is reaped. */
static int pidfds[NCHILDREN];
static pid_t unwaited[MAX_FORKS];
static int num_unwaited;
static int first_process;

/* A process of the program starts: the first has file 0 declared on
 * /dev/...0 with no personality; a fork child keeps its parent's file
 * choices and binds them again for itself. */
static void process_start(int first)
{
	first_process = first;
	memset(thread_running, 0, sizeof(thread_running));
	for (int i = 0; i < NCHILDREN; i++)
		pidfds[i] = -1;
	num_unwaited = 0;
	for (int i = 0; i < NFILES; i++) {
		struct dev_file *f = &files[i];

		if (first) {
			memset(f, 0, sizeof(*f));
			f->declared = i == 0;
		}
		/* The parent's descriptors stay open here, bound to its mm. */
		f->fd = -1;
#if !TARGET_TEST_HMM
		memcpy(f->knobs, initial_knobs, sizeof(f->knobs));
		f->have_knobs = HAVE_KNOBS;
#endif
	}
}

static void process_end(void)
{
	int status;

	for (int t = 1; t < NTHREADS; t++)
		if (thread_running[t])
			pthread_join(threads[t], NULL);
	for (int i = 0; i < num_unwaited; i++)
		while (waitpid(unwaited[i], &status, 0) < 0 && errno == EINTR)
			;
	for (int i = 0; i < NCHILDREN; i++)
		if (pidfds[i] >= 0)
			close(pidfds[i]);
#if !TARGET_TEST_HMM
	if (first_process)
		check_files();
#endif
}

HELPER int op_thread_create(int tid, void *(*fn)(void *))
{
	int err = pthread_create(&threads[tid], NULL, fn, NULL);

	thread_running[tid] = !err;
	return err;
}

HELPER int op_thread_join(int tid)
{
	if (thread_running[tid])
		pthread_join(threads[tid], NULL);
	thread_running[tid] = 0;
	return 0;
}

/* The child runs `body` and exits; wait: the parent waits for it (ret: its
 * wait status), else it is reaped when this process's block ends. */
HELPER int op_fork(int child, int wait, void (*body)(void))
{
	int status = 0;
	pid_t pid;

	/* Held across fork(), so the child gets them consistent and free. */
	pthread_mutex_lock(&bufs_mu);
	pthread_mutex_lock(&files_mu);
	pid = fork();
	pthread_mutex_unlock(&files_mu);
	pthread_mutex_unlock(&bufs_mu);
	if (pid == 0) {
		process_start(0);
		body();
		process_end();
		_exit(0);
	}
	if (pid < 0)
		return errno;
	if (child < NCHILDREN)
		__atomic_store_n(&pidfds[child], (int)syscall(SYS_pidfd_open, pid, 0),
				 __ATOMIC_SEQ_CST);
	if (!wait) {
		if (num_unwaited < MAX_FORKS)
			unwaited[num_unwaited++] = pid;
		op_ret = pid;
		return 0;
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	op_ret = status;
	return 0;
}

/* kill_child: pidfd_send_signal SIGKILL; mrelease: process_mrelease. ESRCH
 * for a child another thread's fork has not made yet. */
HELPER int op_kill_child(int child)
{
	int pidfd = __atomic_load_n(&pidfds[child], __ATOMIC_SEQ_CST);

	if (pidfd < 0)
		return ESRCH;
	return syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) ? errno : 0;
}

HELPER int op_mrelease(int child)
{
	int pidfd = __atomic_load_n(&pidfds[child], __ATOMIC_SEQ_CST);

	if (pidfd < 0)
		return ESRCH;
	return syscall(SYS_process_mrelease, pidfd, 0) ? errno : 0;
}

/* The highest oom_score_adj wins the OOM killer's choice, and the manual
 * OOM kill (sysrq f) takes the real path: oom_kill_process and the
 * reaper's non-blocking unmap. */
HELPER int op_oom_kill(void)
{
	write_file("/proc/self/oom_score_adj", "1000");
	write_file("/proc/sysrq-trigger", "f");
	/* The kill comes from a workqueue; if it does not come, say so. */
	for (int i = 0; i < 200; i++)
		usleep(10000);
	return ESRCH;
}

HELPER int op_sleep(unsigned long us)
{
	struct timespec ts = {us / 1000000, us % 1000000 * 1000};

	nanosleep(&ts, NULL);
	return 0;
}

HELPER int op_yield(void)
{
	sched_yield();
	return 0;
}

/* ---- main: the executor's part ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One run: the program in a fresh process group, killed with its forks
 * if it outlives PROGRAM_TIMEOUT_MS. */
static void run_once(long run)
{
	uint64_t start = now_ms();
	int status = 0, timed_out = 0;
	pid_t pid = fork();

	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Above everything else, so memory pressure kills the program first. */
		write_file("/proc/self/oom_score_adj", "500");
		if (USES_FAIL_PROBABILITY)
			write_file("/proc/self/make-it-fail", "1");
		process_start(1);
		proc_0();
		process_end();
		_exit(0);
	}
	if (pid < 0) {
		perror("svmfuzz-repro: fork");
		exit(1);
	}
	setpgid(pid, pid);
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ms() - start > PROGRAM_TIMEOUT_MS) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		usleep(10000);
	}
	/* Children it left behind (wait=no forks of a process that died). */
	kill(-pid, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	if (USES_FAIL_PROBABILITY)
		disarm_fault_injection();
	if (timed_out)
		fprintf(stderr, "svmfuzz-repro: run %ld: killed after %d ms\n", run,
			PROGRAM_TIMEOUT_MS);
	else if (WIFSIGNALED(status))
		fprintf(stderr, "svmfuzz-repro: run %ld: killed by signal %d\n", run,
			WTERMSIG(status));
	else if (verbose || WEXITSTATUS(status))
		fprintf(stderr, "svmfuzz-repro: run %ld: exit status %d\n", run, WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
	long runs = DEFAULT_RUNS;
	int opt;

	while ((opt = getopt(argc, argv, "vn:")) != -1) {
		if (opt == 'v') {
			verbose = 1;
		} else if (opt == 'n') {
			runs = atol(optarg);
		} else {
			fprintf(stderr, "usage: %s [-v] [-n RUNS]  (RUNS 0: until killed)\n", argv[0]);
			return 2;
		}
	}
	/* Never the OOM killer's choice: the program's processes are. */
	write_file("/proc/self/oom_score_adj", "-1000");
	/* An OOM kill prints one report, not every task. */
	write_file("/proc/sys/vm/oom_dump_tasks", "0");
	if (USES_FAIL_PROBABILITY)
		prepare_fault_injection();
	/* Orphans of the program come here to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	install_fault_handlers();
	for (long run = 0; !runs || run < runs; run++)
		run_once(run);
	fprintf(stderr, "svmfuzz-repro: done\n");
	return 0;
}

/* svmprog: ops */

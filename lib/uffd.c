/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd seam. Opening, feature negotiation and the UFFDIO_*
 * ioctls, each returning bytes done or -errno, so that the rest of the
 * library never looks at errno or at the kernel's in-struct result fields.
 *
 * Feature negotiation needs two descriptors: UFFDIO_API may be called only
 * once per descriptor, so a probe descriptor asks for nothing and reads
 * what the kernel supports, then the real one asks for what we use.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "uffd.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

static const char access_help[] =
	"userfaultfd is refused for this process: run as root, or allow "
	"unprivileged use with `sysctl vm.unprivileged_userfaultfd=1`, or "
	"give this user read/write access to /dev/userfaultfd (e.g. "
	"`setfacl -m u:$USER:rw /dev/userfaultfd`)";

/* A blocking, close-on-exec userfaultfd, from the syscall or the device. */
static int open_raw(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	int dev, err;

	if (fd >= 0)
		return fd;
	err = errno;
	if (err != EPERM && err != EACCES)
		return err == ENOSYS
			       ? upg_seterr(
					 -ENOSYS,
					 "this kernel has no userfaultfd (CONFIG_USERFAULTFD)")
			       : upg_seterr(-err, "userfaultfd: %s",
					    strerror(err));
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return upg_seterr(-EPERM, "%s", access_help);
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	err = errno;
	close(dev);
	if (fd < 0)
		return upg_seterr(-EPERM, "%s (/dev/userfaultfd: %s)",
				  access_help, strerror(err));
	return fd;
}

static int api(int fd, uint64_t features, uint64_t *got)
{
	struct uffdio_api a = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &a) < 0)
		return -errno;
	*got = a.features;
	return 0;
}

/* PAGEMAP_SCAN exists when an empty scan succeeds. */
static bool have_pagemap_scan(void)
{
	struct pm_scan_arg a = { .size = sizeof(a) };
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = ioctl(fd, PAGEMAP_SCAN, &a) >= 0;
	close(fd);
	return ok;
}

static uint64_t wanted(uint64_t have, bool want_move, bool want_wp_async,
		       bool want_remove)
{
	uint64_t f = 0;

	f |= have & (UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID |
		     UFFD_FEATURE_POISON);
	if (want_remove && (have & UFFD_FEATURE_EVENT_REMOVE))
		f |= UFFD_FEATURE_EVENT_REMOVE;
	if (want_move && (have & UFFD_FEATURE_MOVE))
		f |= UFFD_FEATURE_MOVE;
	/*
	 * WP_ASYNC resolves write-protect faults in the kernel. The copy
	 * fallback for eviction (no UFFDIO_MOVE) needs writes to block while
	 * a page is copied out, so asynchronous WP goes only with MOVE.
	 */
	if (want_wp_async && (f & UFFD_FEATURE_MOVE) &&
	    (have & UFFD_FEATURE_WP_ASYNC) && have_pagemap_scan())
		f |= UFFD_FEATURE_WP_ASYNC;
	return f;
}

int upg_uffd_open(bool want_move, bool want_wp_async, bool want_remove,
		  struct upg_uffd_caps *caps)
{
	uint64_t have = 0, got = 0, want;
	int probe, fd, err;

	probe = open_raw();
	if (probe < 0)
		return probe;
	err = api(probe, 0, &have);
	close(probe);
	if (err)
		return upg_seterr(err, "UFFDIO_API: %s", strerror(-err));
	fd = open_raw();
	if (fd < 0)
		return fd;
	want = wanted(have, want_move, want_wp_async, want_remove);
	err = api(fd, want, &got);
	if (err) {
		close(fd);
		return upg_seterr(err, "UFFDIO_API: %s", strerror(-err));
	}
	/* The kernel answers with everything it supports, not what we got. */
	got &= want;
	caps->features = got;
	caps->wp = got & UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	caps->wp_async = got & UFFD_FEATURE_WP_ASYNC;
	caps->move = got & UFFD_FEATURE_MOVE;
	caps->remove = got & UFFD_FEATURE_EVENT_REMOVE;
	return fd;
}

int upg_uffd_register(int uffd, void *start, size_t len, bool missing, bool wp)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)start, .len = len },
		.mode = (missing ? UFFDIO_REGISTER_MODE_MISSING : 0) |
			(wp ? UFFDIO_REGISTER_MODE_WP : 0),
	};

	if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0)
		return upg_seterr(-errno, "UFFDIO_REGISTER %p+%zu: %s", start,
				  len, strerror(errno));
	return 0;
}

int upg_uffd_unregister(int uffd, void *start, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)start, .len = len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/*
 * The kernel reports progress in the struct (bytes, or -errno when none).
 * Partial progress is success with a short count; the caller retries the
 * rest, which then reports its own error.
 */
static long result(long done, int err)
{
	return done > 0 ? done : -err;
}

long upg_uffd_copy(int uffd, void *dst, const void *src, size_t len, bool wp,
		   bool wake)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) |
			(wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE),
	};

	if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
		return (long)len;
	return result(c.copy, errno);
}

long upg_uffd_zeropage(int uffd, void *dst, size_t len, bool wake)
{
	struct uffdio_zeropage z = {
		.range = { .start = (uintptr_t)dst, .len = len },
		.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
	};

	if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0)
		return (long)len;
	return result(z.zeropage, errno);
}

long upg_uffd_move(int uffd, void *dst, void *src, size_t len)
{
	struct uffdio_move m = {
		.dst = (uintptr_t)dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES |
			UFFDIO_MOVE_MODE_DONTWAKE,
	};

	if (ioctl(uffd, UFFDIO_MOVE, &m) == 0)
		return (long)len;
	return result(m.move, errno);
}

int upg_uffd_wake(int uffd, void *start, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)start, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int upg_uffd_poison(int uffd, void *start, size_t len)
{
	struct uffdio_poison p = {
		.range = { .start = (uintptr_t)start, .len = len },
	};

	return ioctl(uffd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

int upg_uffd_writeprotect(int uffd, void *start, size_t len, bool wp)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)start, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int upg_uffd_scan_written(int pagemap_fd, void *start, size_t len,
			  struct page_region *vec, size_t nvec, bool protect)
{
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.flags = protect ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC
				 : 0,
		.start = (uintptr_t)start,
		.end = (uintptr_t)start + len,
		.vec = (uintptr_t)vec,
		.vec_len = nvec,
		/*
		 * PRESENT too: matching empty entries would be protected
		 * with uffd-wp markers, which UFFDIO_ZEROPAGE refuses.
		 */
		.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_WRITTEN,
	};
	int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &a);

	return n < 0 ? -errno : n;
}

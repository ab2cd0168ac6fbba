/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd seam: opening and negotiating features, and one wrapper
 * per UFFDIO_* ioctl. Every kernel errno of the userfaultfd protocol is
 * interpreted here and nowhere else:
 *
 *   EEXIST  a page is already mapped: the fault is resolved (by someone)
 *   EAGAIN  the mm is changing (an event is pending) or the operation was
 *           partial; the wrappers report how much was done
 *   ENOENT  the range is no longer registered (unmapped, MAP_FIXED over)
 *   ESRCH   the process is exiting
 *
 * Kernel headers on the build machine may be older than the kernel we run
 * on; constants from newer kernels are defined here, guarded, and every
 * feature is detected at run time through UFFDIO_API.
 */
#ifndef UPG_UFFD_H
#define UPG_UFFD_H

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* Linux 6.1 headers lack these (added in 6.4 - 6.8). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* PAGEMAP_SCAN (Linux 6.7) on /proc/self/pagemap. */
#include <linux/fs.h>
#ifndef PAGEMAP_SCAN
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#endif

/* What the runtime asks for and what it got. */
struct upg_uffd_caps {
	uint64_t features; /* negotiated UFFD_FEATURE_* */
	bool wp;	   /* anonymous write-protect (5.7+) */
	bool wp_async;	   /* UFFD_FEATURE_WP_ASYNC + PAGEMAP_SCAN (6.7+) */
	bool move;	   /* UFFDIO_MOVE (6.8+) */
	bool remove;	   /* UFFD_EVENT_REMOVE */
};

/*
 * upg_uffd_open() - open a blocking userfaultfd and negotiate features
 * @want_*: features the options allow; the result says what is in use
 * Return: the fd, or -errno with upg_last_error() explaining (for EPERM:
 * how to grant access).
 */
int upg_uffd_open(bool want_move, bool want_wp_async, bool want_remove,
		  struct upg_uffd_caps *caps);

/* Register [start, start+len) for MISSING (+ WP if @wp) faults. */
int upg_uffd_register(int uffd, void *start, size_t len, bool missing, bool wp);
int upg_uffd_unregister(int uffd, void *start, size_t len);

/*
 * upg_uffd_copy() - install @len bytes from @src at @dst
 * @wp: install write-protected
 * Return: bytes installed (may be short: EAGAIN after partial progress, or a
 * page in the middle already mapped), or -EEXIST when the first page is
 * already mapped, -EAGAIN when nothing could be done because the mm is
 * changing, -ENOENT/-ESRCH when the range or process is gone.
 */
long upg_uffd_copy(int uffd, void *dst, const void *src, size_t len, bool wp,
		   bool wake);

/* upg_uffd_zeropage() - map the zero page; same returns as upg_uffd_copy */
long upg_uffd_zeropage(int uffd, void *dst, size_t len, bool wake);

/*
 * upg_uffd_move() - move pages from @src to @dst (both registered)
 * Holes in @src are allowed (counted as moved, nothing lands at @dst).
 * Return: bytes moved (short on EBUSY/EAGAIN after progress), or -errno:
 * -EBUSY for a page shared with a child or pinned, -EAGAIN, -EEXIST.
 */
long upg_uffd_move(int uffd, void *dst, void *src, size_t len);

/* upg_uffd_wake() - wake threads waiting on faults in the range */
int upg_uffd_wake(int uffd, void *start, size_t len);

/*
 * upg_uffd_poison() - make accesses to the range raise SIGBUS (Linux 6.6,
 * UFFD_FEATURE_POISON), for pages whose contents are lost.
 */
int upg_uffd_poison(int uffd, void *start, size_t len);

/* upg_uffd_writeprotect() - set (@wp) or clear write-protection */
int upg_uffd_writeprotect(int uffd, void *start, size_t len, bool wp);

/*
 * upg_uffd_scan_written() - find present pages written since their
 * protection (PAGEMAP_SCAN) and, if @protect, protect them again atomically
 * (PM_SCAN_WP_MATCHING)
 * @pagemap_fd: open /proc/self/pagemap
 * @vec, @nvec: output runs of written pages
 * Return: number of runs filled, or -errno.
 */
int upg_uffd_scan_written(int pagemap_fd, void *start, size_t len,
			  struct page_region *vec, size_t nvec, bool protect);

#endif

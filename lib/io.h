/* SPDX-License-Identifier: MIT */
/*
 * Block I/O through io_uring: the only seam to liburing. A ring belongs to
 * one thread at a time (each fault handler and the evictor own one), so it
 * needs no lock.
 */
#ifndef UPG_IO_H
#define UPG_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upg_io;

/* One transfer: @len bytes between @buf and file offset @off. */
struct upg_io_op {
	void *buf;
	size_t len;
	uint64_t off;
	int res; /* out: 0, or -errno (-ENODATA: a short transfer) */
};

/*
 * upg_io_create() - a ring with @depth entries
 * Return: 0, or -errno (-ENOSYS/-EPERM when io_uring is unavailable).
 */
int upg_io_create(unsigned depth, struct upg_io **out);
void upg_io_destroy(struct upg_io *io);

/*
 * upg_io_set_poll() - how long upg_io_run() polls for a read's completion
 * before sleeping (0: sleep at once); UPG_IO_POLL_NS for a new ring
 */
void upg_io_set_poll(struct upg_io *io, uint64_t ns);
uint64_t upg_io_poll(const struct upg_io *io);

#define UPG_IO_POLL_NS 200000ULL

/*
 * upg_io_register() - register @len bytes at @buf as the ring's one fixed
 * buffer: later transfers that lie inside it skip pinning its pages.
 * Return: 0, -EBUSY if one is registered already, or -errno from the
 * kernel (-ENOMEM past RLIMIT_MEMLOCK); transfers work either way.
 */
int upg_io_register(struct upg_io *io, void *buf, size_t len);

/* upg_io_is_fixed() - whether [@buf, @buf + @len) is in the fixed buffer */
bool upg_io_is_fixed(const struct upg_io *io, const void *buf, size_t len);

/*
 * upg_io_run() - submit @n transfers on @fd and wait for all of them
 * (reads by polling a while, yielding the CPU, then by sleeping)
 * Each op's res says how it went. Return: the number that failed.
 */
unsigned upg_io_run(struct upg_io *io, int fd, struct upg_io_op *ops,
		    unsigned n, bool write);

/*
 * upg_io_start() - submit @n transfers without waiting
 * At most the ring's depth may be in flight in all. The ops must stay in
 * place until upg_io_finish() has waited for every one of them.
 * Return: transfers queued.
 */
unsigned upg_io_start(struct upg_io *io, int fd, struct upg_io_op *ops,
		      unsigned n, bool write);
void upg_io_finish(struct upg_io *io, struct upg_io_op *ops, unsigned n);

/*
 * upg_io_inject() - make the next transfers fail (tests only)
 * @after: transfers that still succeed first; @err: the -errno to return
 * (-EIO, -ENOSPC) or 0 to stop injecting; @write: inject into writes (true)
 * or reads. Global, for every ring.
 */
void upg_io_inject(bool write, unsigned after, int err);

#endif

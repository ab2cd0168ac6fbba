/* SPDX-License-Identifier: MIT */
/*
 * io_uring transfers for the swap file. Each call submits a batch and
 * reaps all of it before returning: the callers (a fault handler reading a
 * readahead window, the evictor writing a batch) need every result before
 * they can publish page states, and the parallelism they want is the
 * device's queue depth, not overlap with their own work.
 *
 * A ring may have one registered ("fixed") buffer: transfers inside it go
 * out as READ_FIXED / WRITE_FIXED, which skip pinning the buffer's pages
 * for every request (a quarter of a 512 KiB O_DIRECT write's submission
 * time here). Registration can fail (RLIMIT_MEMLOCK for an unprivileged
 * process): transfers then work as before.
 *
 * Reads are waited for by polling the completion queue, yielding the CPU
 * between looks, for up to the ring's poll time (UPG_SWAP_POLL for the
 * fault handlers' rings, UPG_IO_POLL_NS by default) before sleeping: a fault handler reads
 * with the faulting thread blocked, usually on this CPU, and sleeping
 * costs an idle exit and a wake-up, 10-30 us of a 4 KiB read's ~70 in
 * this VM (swap-in p50 98-106 -> 77-90 us). Yielding, not spinning, so
 * that another thread wanting this CPU gets it. Writes (the evictor, which
 * overlaps them with work) are waited for by sleeping.
 *
 * Error injection (tests only) is global and lock-free: an atomic budget
 * of transfers that may still succeed.
 */
#include <errno.h>
#include <liburing.h>
#include <sched.h>
#include <sys/uio.h>
#include <stdatomic.h>
#include <string.h>

#include "common.h"
#include "io.h"

struct upg_io {
	struct io_uring ring;
	unsigned depth;
	uint64_t poll_ns;
	char *fixed; /* the registered buffer, or NULL */
	size_t fixed_len;
};

struct inject {
	_Atomic int err;
	_Atomic long after;
};

static struct inject inject_rw[2]; /* [0] reads, [1] writes */

void upg_io_inject(bool write, unsigned after, int err)
{
	atomic_store(&inject_rw[write].after, (long)after);
	atomic_store(&inject_rw[write].err, err);
}

static int injected(bool write)
{
	struct inject *in = &inject_rw[write];
	int err = atomic_load_explicit(&in->err, memory_order_relaxed);

	if (!err || atomic_fetch_sub(&in->after, 1) > 0)
		return 0;
	return err;
}

int upg_io_create(unsigned depth, struct upg_io **out)
{
	struct upg_io *io = upg_map(sizeof(*io));
	int err;

	if (!io)
		return -ENOMEM;
	err = io_uring_queue_init(depth, &io->ring, 0);
	if (err < 0) {
		upg_unmap(io, sizeof(*io));
		return upg_seterr(err, "io_uring_queue_init: %s",
				  strerror(-err));
	}
	io->depth = depth;
	io->poll_ns = UPG_IO_POLL_NS;
	*out = io;
	return 0;
}

void upg_io_destroy(struct upg_io *io)
{
	if (!io)
		return;
	io_uring_queue_exit(&io->ring);
	upg_unmap(io, sizeof(*io));
}

int upg_io_register(struct upg_io *io, void *buf, size_t len)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	int err;

	if (io->fixed)
		return -EBUSY;
	err = io_uring_register_buffers(&io->ring, &iov, 1);
	if (err < 0)
		return err;
	io->fixed = buf;
	io->fixed_len = len;
	return 0;
}

bool upg_io_is_fixed(const struct upg_io *io, const void *buf, size_t len)
{
	const char *p = buf;

	return io->fixed && p >= io->fixed &&
	       (size_t)(p - io->fixed) <= io->fixed_len &&
	       len <= io->fixed_len - (size_t)(p - io->fixed);
}

static void prep(struct upg_io *io, struct io_uring_sqe *sqe, int fd,
		 struct upg_io_op *op, bool write)
{
	unsigned len = (unsigned)op->len;

	if (upg_io_is_fixed(io, op->buf, op->len) && write)
		io_uring_prep_write_fixed(sqe, fd, op->buf, len, op->off, 0);
	else if (upg_io_is_fixed(io, op->buf, op->len))
		io_uring_prep_read_fixed(sqe, fd, op->buf, len, op->off, 0);
	else if (write)
		io_uring_prep_write(sqe, fd, op->buf, len, op->off);
	else
		io_uring_prep_read(sqe, fd, op->buf, len, op->off);
	io_uring_sqe_set_data(sqe, op);
}

/* Queue ops [0, n) (n <= depth); injected failures complete at once. */
static unsigned queue(struct upg_io *io, int fd, struct upg_io_op *ops,
		      unsigned n, bool write)
{
	unsigned queued = 0;

	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe;
		int err = injected(write);

		if (err) {
			ops[i].res = err;
			continue;
		}
		sqe = io_uring_get_sqe(&io->ring);
		prep(io, sqe, fd, &ops[i], write);
		queued++;
	}
	return queued;
}

void upg_io_set_poll(struct upg_io *io, uint64_t ns)
{
	io->poll_ns = ns;
}

uint64_t upg_io_poll(const struct upg_io *io)
{
	return io->poll_ns;
}

/* A completion, if one comes within the ring's poll time. */
static int poll_cqe(struct upg_io *io, struct io_uring_cqe **cqe)
{
	uint64_t t0 = upg_now_ns();
	int err;

	/* sched_yield() returns at once if nothing else wants the CPU. */
	while ((err = io_uring_peek_cqe(&io->ring, cqe)) == -EAGAIN &&
	       upg_now_ns() - t0 < io->poll_ns)
		sched_yield();
	return err;
}

/*
 * Reap one completion into its op, polling first if @poll. Return: false
 * if the ring failed.
 */
static bool reap_one(struct upg_io *io, bool poll)
{
	struct io_uring_cqe *cqe;
	struct upg_io_op *op;
	int err = poll && io->poll_ns ? poll_cqe(io, &cqe) : -EAGAIN;

	while (err == -EAGAIN || err == -EINTR)
		err = io_uring_wait_cqe(&io->ring, &cqe);
	if (err < 0)
		return false;
	op = io_uring_cqe_get_data(cqe);
	op->res = cqe->res < 0 ? cqe->res : 0;
	if (!op->res && (size_t)cqe->res < op->len)
		op->res = -ENODATA; /* short: the caller says which */
	io_uring_cqe_seen(&io->ring, cqe);
	return true;
}

unsigned upg_io_start(struct upg_io *io, int fd, struct upg_io_op *ops,
		      unsigned n, bool write)
{
	unsigned queued;
	int ret;

	for (unsigned i = 0; i < n; i++)
		ops[i].res = i < io->depth ? -EINPROGRESS : -EAGAIN;
	queued = queue(io, fd, ops, MIN(n, io->depth), write);
	ret = queued ? io_uring_submit(&io->ring) : 0;
	if (ret >= 0)
		return queued;
	for (unsigned i = 0; i < n; i++) /* nothing went out */
		ops[i].res = ops[i].res != -EINPROGRESS ? ops[i].res : ret;
	return 0;
}

/*
 * Completions of several requests in flight arrive in any order, and each
 * lands in its own op: wait until these @n ops are all done.
 */
static void wait_ops(struct upg_io *io, struct upg_io_op *ops, unsigned n,
		     bool poll)
{
	for (unsigned i = 0; i < n; i++)
		while (ops[i].res == -EINPROGRESS)
			if (!reap_one(io, poll))
				ops[i].res = -EIO; /* the ring failed */
}

void upg_io_finish(struct upg_io *io, struct upg_io_op *ops, unsigned n)
{
	wait_ops(io, ops, n, false);
}

unsigned upg_io_run(struct upg_io *io, int fd, struct upg_io_op *ops,
		    unsigned n, bool write)
{
	unsigned failed = 0;

	for (unsigned done = 0; done < n; done += io->depth) {
		unsigned k = MIN(n - done, io->depth);

		upg_io_start(io, fd, ops + done, k, write);
		wait_ops(io, ops + done, k, !write);
	}
	for (unsigned i = 0; i < n; i++)
		failed += ops[i].res != 0;
	return failed;
}

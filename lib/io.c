/* SPDX-License-Identifier: MIT */
/*
 * io_uring transfers for the swap file. Each call submits a batch and
 * reaps all of it before returning: the callers (a fault handler reading a
 * readahead window, the evictor writing a batch) need every result before
 * they can publish page states, and the parallelism they want is the
 * device's queue depth, not overlap with their own work.
 *
 * Error injection (tests only) is global and lock-free: an atomic budget
 * of transfers that may still succeed.
 */
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <string.h>

#include "common.h"
#include "io.h"

struct upg_io {
	struct io_uring ring;
	unsigned depth;
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

/* Queue ops [0, n) (n <= depth); injected failures complete at once. */
static unsigned queue(struct upg_io *io, int fd, struct upg_io_op *ops,
		      unsigned n, bool write)
{
	unsigned queued = 0;

	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe;

		ops[i].res = injected(write);
		if (ops[i].res)
			continue;
		sqe = io_uring_get_sqe(&io->ring);
		if (write)
			io_uring_prep_write(sqe, fd, ops[i].buf,
					    (unsigned)ops[i].len, ops[i].off);
		else
			io_uring_prep_read(sqe, fd, ops[i].buf,
					   (unsigned)ops[i].len, ops[i].off);
		io_uring_sqe_set_data(sqe, &ops[i]);
		queued++;
	}
	return queued;
}

static void reap(struct upg_io *io, unsigned queued)
{
	while (queued) {
		struct io_uring_cqe *cqe;
		struct upg_io_op *op;
		int err = io_uring_wait_cqe(&io->ring, &cqe);

		if (err == -EINTR)
			continue;
		if (err < 0)
			return; /* ops not reaped keep res = -EINPROGRESS */
		op = io_uring_cqe_get_data(cqe);
		op->res = cqe->res < 0 ? cqe->res : 0;
		if (!op->res && (size_t)cqe->res < op->len)
			op->res = -ENODATA; /* short: the caller says which */
		io_uring_cqe_seen(&io->ring, cqe);
		queued--;
	}
}

unsigned upg_io_run(struct upg_io *io, int fd, struct upg_io_op *ops,
		    unsigned n, bool write)
{
	unsigned failed = 0;

	for (unsigned i = 0; i < n; i++)
		ops[i].res = -EINPROGRESS;
	for (unsigned done = 0; done < n;) {
		unsigned k = MIN(n - done, io->depth);
		unsigned queued = queue(io, fd, ops + done, k, write);
		int ret = queued ? io_uring_submit(&io->ring) : 0;

		if (ret < 0) /* nothing went out: fail the batch */
			for (unsigned i = done; i < done + k; i++)
				ops[i].res = ops[i].res ? ops[i].res : ret;
		else
			reap(io, queued);
		done += k;
	}
	for (unsigned i = 0; i < n; i++)
		failed += ops[i].res != 0;
	return failed;
}

/* SPDX-License-Identifier: MIT */
/*
 * Swap tier benchmark, every phase next to its baseline in the same run,
 * one JSON line per phase:
 *
 *   swapin     random single-page swap-ins (readahead and fault-around off)
 *              against a bare io_uring 4 KiB read, queue depth 1, of a new
 *              file on the same file system in the swap file's mode
 *              (O_DIRECT or buffered, from UPG_SWAP_DIRECT; buffered, both
 *              mostly hit the page cache): p50/p99 of both and the ratio;
 *   scan       a sequential scan of swapped data with readahead against
 *              the same scan with UPG_SWAP_READAHEAD=1: MB/s and the ratio;
 *   writeback  write-back throughput per second of write-back run time
 *              (selecting, packing, copying, hashing, writing and
 *              publishing), logical (pages written back x 4 KiB: "ratio")
 *              and physical (bytes written to the file, objects packed:
 *              "ratio_physical"), while a fill pushes everything
 *              through a 32 MiB pool, against the file's own sequential
 *              write bandwidth: a new file on the same file system, in
 *              the swap file's mode (O_DIRECT or buffered, from
 *              UPG_SWAP_DIRECT), 512 KiB, 1 MiB and 4 MiB requests at
 *              queue depths 1 and 4 from a registered buffer of 2 MiB
 *              pages (like write-back's staging; the disk here takes
 *              writes from huge pages 1.3-1.4x faster than from 4 KiB
 *              pages; the best from 4 KiB pages, what sessions 1-3
 *              compared with, is reported too), each measured before
 *              and after the
 *              fills and averaged, the best shape's average; also the
 *              file's bandwidth with 512 KiB requests at depth 1 (what
 *              sessions 1-2 compared with), in the best shape for a
 *              writer that copies each request's bytes from cold memory
 *              first, as write-back must ("file_copying_mbs"; here the
 *              copying does not overlap the device's progress, so it
 *              costs a third of the bandwidth), and the fill's own rate.
 *              Twice: "writeback" fills a new swap file, against a new
 *              bare file; "writeback_reuse" then gives that region back
 *              and fills another, whose pages go to the slots it freed,
 *              against a bare file written over (a first write to a
 *              block costs ext4 an unwritten-extent conversion that
 *              rewrites do not pay).
 *
 * Usage: bench_swap [--quick] [--dir DIR] [--phase swapin|scan|writeback]
 * (default dir: $TMPDIR or /var/tmp; default: every phase)
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <upager.h>

#include "wordtext.h"

#define PAGE 4096UL
#define MiB (1UL << 20)

static size_t size_mb = 256;
static const char *dir;
static bool direct = true; /* the swap file's mode, from UPG_SWAP_DIRECT */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)(p / 100 * (double)(n - 1))];
}

static struct upg *runtime(unsigned readahead, unsigned cluster, size_t pool)
{
	struct upg_params p;
	struct upg *u;

	upg_params_init(&p);
	if (upg_params_from_env(&p))
		goto fail;
	p.budget = 16 * MiB;
	p.pool_max = pool;
	p.cluster = cluster;
	p.swap_readahead = readahead;
	if (dir)
		snprintf(p.swap_file, sizeof(p.swap_file), "%s", dir);
	direct = p.swap_direct;
	if (upg_create(&p, &u))
		goto fail;
	return u;
fail:
	fprintf(stderr, "bench_swap: %s\n", upg_last_error());
	exit(1);
}

static char *filled(struct upg *u, size_t bytes, double *secs)
{
	char *m;
	double t0 = now();

	if (upg_reserve(u, bytes, (void **)&m)) {
		fprintf(stderr, "bench_swap: %s\n", upg_last_error());
		exit(1);
	}
	for (size_t off = 0; off < bytes; off += PAGE)
		wordtext_fill(m + off, PAGE, off / PAGE);
	if (secs)
		*secs = now() - t0;
	return m;
}

static struct upg_stats stats(struct upg *u)
{
	struct upg_stats s = { .size = sizeof(s) };

	upg_stats_get(u, &s);
	return s;
}

/* ---- bare io_uring on a file of the same file system ---- */

/* A new file of @bytes in the swap file's directory and mode. */
static int bare_file(size_t bytes)
{
	char path[512];
	const char *d = dir ? dir : getenv("TMPDIR");
	int fd;

	snprintf(path, sizeof(path), "%s", d && *d ? d : "/var/tmp");
	fd = open(path, O_TMPFILE | O_RDWR | (direct ? O_DIRECT : 0), 0600);
	if (fd < 0 || fallocate(fd, 0, 0, (off_t)bytes) < 0) {
		fprintf(stderr, "bench_swap: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

/*
 * Write @bytes in @req-byte requests, @depth at a time, from @buf (the
 * ring's registered buffer if @fixed). Return: seconds.
 */
static double bare_write_from(struct io_uring *ring, int fd, char *buf,
			      size_t bytes, size_t req, unsigned depth,
			      bool fixed)
{
	double t0 = now();
	size_t off = 0, inflight = 0;
	struct io_uring_cqe *cqe;

	while (off < bytes || inflight) {
		while (off < bytes && inflight < depth) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

			if (fixed)
				io_uring_prep_write_fixed(
					sqe, fd, buf, (unsigned)req, off, 0);
			else
				io_uring_prep_write(sqe, fd, buf, (unsigned)req,
						    off);
			off += req;
			inflight++;
		}
		io_uring_submit(ring);
		io_uring_wait_cqe(ring, &cqe);
		io_uring_cqe_seen(ring, cqe);
		inflight--;
	}
	return now() - t0;
}

static double bare_write(struct io_uring *ring, int fd, char *buf, size_t bytes,
			 size_t req, unsigned depth)
{
	return bare_write_from(ring, fd, buf, bytes, req, depth, false);
}

static double bare_read_p(struct io_uring *ring, int fd, char *buf,
			  size_t pages, size_t n, double p50_p99[2])
{
	double *lat = malloc(n * sizeof(*lat));
	struct io_uring_cqe *cqe;
	uint64_t x = 88172645463325252ULL;

	for (size_t i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		double t0;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		io_uring_prep_read(sqe, fd, buf, PAGE, (x % pages) * PAGE);
		t0 = now();
		io_uring_submit(ring);
		io_uring_wait_cqe(ring, &cqe);
		io_uring_cqe_seen(ring, cqe);
		lat[i] = (now() - t0) * 1e6;
	}
	p50_p99[0] = pct(lat, n, 50);
	p50_p99[1] = pct(lat, n, 99);
	free(lat);
	return p50_p99[0];
}

/* ---- phases ---- */

static void phase_swapin(size_t n)
{
	struct upg *u = runtime(1, 1, MiB);
	size_t bytes = size_mb * MiB, pages = bytes / PAGE;
	char *m = filled(u, bytes, NULL), *buf;
	double *lat = malloc(n * sizeof(*lat)), bare[2];
	uint64_t x = 2463534242ULL, sum = 0;
	struct io_uring ring;
	struct upg_stats s;
	int fd;

	for (size_t i = 0; i < n; i++) {
		double t0;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		t0 = now();
		sum += (unsigned char)m[(x % pages) * PAGE + 64];
		lat[i] = (now() - t0) * 1e6;
	}
	s = stats(u);
	upg_destroy(u);
	fd = bare_file(bytes);
	buf = aligned_alloc(PAGE, 256 * 1024);
	memset(buf, 'x', 256 * 1024);
	io_uring_queue_init(64, &ring, 0);
	bare_write(&ring, fd, buf, bytes, 256 * 1024, 8);
	bare_read_p(&ring, fd, buf, pages, n, bare);
	io_uring_queue_exit(&ring);
	close(fd);
	printf("{\"phase\":\"swapin\",\"accesses\":%zu,\"swap_faults\":%llu,"
	       "\"p50_us\":%.1f,\"p99_us\":%.1f,\"bare_read_p50_us\":%.1f,"
	       "\"bare_read_p99_us\":%.1f,\"ratio_p50\":%.2f,\"sum\":%llu}\n",
	       n, (unsigned long long)s.fault_swap, pct(lat, n, 50),
	       pct(lat, n, 99), bare[0], bare[1], pct(lat, n, 50) / bare[0],
	       (unsigned long long)(sum & 1));
	free(lat);
	free(buf);
}

static double scan_mbs(unsigned readahead, unsigned long long *faults)
{
	struct upg *u = runtime(readahead, 16, MiB);
	size_t bytes = size_mb * MiB;
	char *m = filled(u, bytes, NULL);
	volatile unsigned long sum = 0;
	double t0, dt;

	/* Evict the start of the region first: scan what is in the file. */
	t0 = now();
	for (size_t off = 0; off < bytes; off += PAGE)
		sum += (unsigned char)m[off];
	dt = now() - t0;
	*faults = stats(u).fault_swap;
	upg_destroy(u);
	return (double)bytes / MiB / dt;
}

static void phase_scan(void)
{
	unsigned long long f_ra, f_no;
	double ra = scan_mbs(32, &f_ra), no = scan_mbs(1, &f_no);

	printf("{\"phase\":\"scan\",\"size_mb\":%zu,\"readahead_mbs\":%.1f,"
	       "\"readahead_faults\":%llu,\"no_readahead_mbs\":%.1f,"
	       "\"no_readahead_faults\":%llu,\"ratio\":%.2f}\n",
	       size_mb, ra, f_ra, no, f_no, ra / no);
}

/*
 * The file's sequential write bandwidth with one request shape, MB/s: into
 * a new file's fallocated (unwritten) blocks, or with @overwrite into
 * blocks written before (as a swap file's are once its slots are reused).
 */
/*
 * A buffer like write-back's staging: in 2 MiB pages where the kernel
 * gives them (a write from huge pages is a few long segments; this VM's
 * disk takes them 1.3-1.4x faster than writes from 4 KiB pages), and
 * registered with the ring.
 */
static char *staging_like(size_t len, bool huge_pages, char **raw,
			  size_t *maplen)
{
	const size_t huge = 2 * MiB;
	char *buf;

	*maplen = ((len + huge - 1) & ~(huge - 1)) + huge;
	*raw = mmap(NULL, *maplen, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*raw == MAP_FAILED) {
		perror("bench_swap: mmap");
		exit(1);
	}
	buf = (char *)(((uintptr_t)*raw + huge - 1) & ~(huge - 1));
	if (huge_pages)
		madvise(buf, *maplen - huge, MADV_HUGEPAGE);
	return buf;
}

/*
 * The file's sequential write bandwidth with one request shape, MB/s: into
 * a new file's fallocated (unwritten) blocks, or with @overwrite into
 * blocks written before (as a swap file's are once its slots are reused).
 * The source is a registered buffer of huge pages, as write-back's is, or
 * with @small of 4 KiB pages (as sessions 1-3 measured).
 */
static double bare_write_mbs(size_t bytes, size_t req, unsigned depth,
			     bool overwrite, bool small)
{
	int fd = bare_file(bytes);
	size_t maplen;
	char *raw, *buf = staging_like(req, !small, &raw, &maplen);
	struct iovec iov = { .iov_base = buf, .iov_len = req };
	struct io_uring ring;
	bool fixed;
	double secs;

	memset(buf, 'x', req);
	io_uring_queue_init(64, &ring, 0);
	fixed = !io_uring_register_buffers(&ring, &iov, 1);
	if (overwrite)
		bare_write_from(&ring, fd, buf, bytes, req, depth, fixed);
	secs = bare_write_from(&ring, fd, buf, bytes, req, depth, fixed);
	io_uring_queue_exit(&ring);
	close(fd);
	munmap(raw, maplen);
	return (double)bytes / MiB / secs;
}

/*
 * The file's sequential write bandwidth, MB/s, for a writer that copies
 * each request's bytes from memory into its part of the staging before
 * submitting it, as write-back must: @req-byte requests, @depth at a
 * time, from a source of @bytes written once beforehand (cold by the time
 * it is copied). On this VM the copying does not overlap the device's
 * progress the way the wait does: see bench/RESULTS.md.
 */
static double bare_copy_write_mbs(size_t bytes, size_t req, unsigned depth,
				  bool overwrite)
{
	int fd = bare_file(bytes);
	size_t maplen, off = 0, inflight = 0;
	char *raw, *buf = staging_like(req * depth, true, &raw, &maplen);
	char *src = malloc(bytes);
	struct iovec iov = { .iov_base = buf, .iov_len = req * depth };
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned free_part[8];
	double t0;
	bool fixed;

	if (!src) {
		perror("bench_swap: malloc");
		exit(1);
	}
	for (size_t i = 0; i < bytes; i += PAGE)
		wordtext_fill(src + i, PAGE, i / PAGE);
	memset(buf, 'x', req * depth);
	io_uring_queue_init(64, &ring, 0);
	fixed = !io_uring_register_buffers(&ring, &iov, 1);
	if (overwrite)
		bare_write_from(&ring, fd, buf, bytes, req, depth, fixed);
	for (unsigned k = 0; k < depth; k++)
		free_part[k] = k;
	t0 = now();
	while (off < bytes || inflight) {
		struct io_uring_sqe *sqe;
		char *part;

		if (inflight == depth || off >= bytes) { /* a part comes free */
			io_uring_wait_cqe(&ring, &cqe);
			free_part[depth - inflight] = (unsigned)cqe->user_data;
			io_uring_cqe_seen(&ring, cqe);
			inflight--;
			continue;
		}
		part = buf + free_part[depth - inflight - 1] * req;
		memcpy(part, src + off, req);
		sqe = io_uring_get_sqe(&ring);
		if (fixed)
			io_uring_prep_write_fixed(sqe, fd, part, (unsigned)req,
						  off, 0);
		else
			io_uring_prep_write(sqe, fd, part, (unsigned)req, off);
		sqe->user_data = free_part[depth - inflight - 1];
		io_uring_submit(&ring);
		off += req;
		inflight++;
	}
	t0 = now() - t0;
	io_uring_queue_exit(&ring);
	close(fd);
	munmap(raw, maplen);
	free(src);
	return (double)bytes / MiB / t0;
}

struct bare_bw {
	double best, at_512k_qd1;
	size_t best_req;
	unsigned best_depth;
	double best_small; /* the best shape from 4 KiB pages */
	double copying;	   /* the best shape, copying its bytes first */
};

#define NREQS 3
#define NDEPTHS 2

/*
 * The file's bandwidth with each request size and depth, measured @reps
 * times (around the fill, on a shared machine), averaged per shape; the
 * best shape's average is the file's bandwidth. (The best single
 * measurement would favour the file by the noise.)
 */
static void bare_bandwidth(struct bare_bw *b, double sum[2][NREQS][NDEPTHS],
			   unsigned reps, bool overwrite)
{
	static const size_t reqs[NREQS] = { 512 * 1024, MiB, 4 * MiB };
	static const unsigned depths[NDEPTHS] = { 1, 4 };
	size_t bytes = size_mb * MiB;

	for (size_t i = 0; i < NREQS; i++) {
		for (size_t j = 0; j < NDEPTHS; j++) {
			double mbs;

			sum[1][i][j] += bare_write_mbs(
				bytes, reqs[i], depths[j], overwrite, true);
			if (sum[1][i][j] / reps > b->best_small)
				b->best_small = sum[1][i][j] / reps;
			sum[0][i][j] += bare_write_mbs(
				bytes, reqs[i], depths[j], overwrite, false);
			mbs = sum[0][i][j] / reps;
			if (i == 0 && j == 0)
				b->at_512k_qd1 = mbs;
			if (mbs <= b->best)
				continue;
			b->best = mbs;
			b->best_req = reqs[i];
			b->best_depth = depths[j];
		}
	}
}

/* Statistics once the evictor has settled (no write-back run half done). */
static struct upg_stats settled(struct upg *u)
{
	struct upg_stats s = stats(u), t;

	for (int i = 0; i < 100; i++) {
		usleep(20 * 1000);
		t = stats(u);
		if (t.swap_writeback == s.swap_writeback &&
		    t.lat_swap_write.count == s.lat_swap_write.count)
			break;
		s = t;
	}
	return t;
}

/*
 * Write-back throughput per second of write-back time, MB/s: logical (the
 * pages written back, 4 KiB each) and, with @physical, the bytes written
 * to the file (packed objects: fewer than the pages' bytes).
 */
static double wb_mbs(const struct upg_stats *s, const struct upg_stats *from,
		     bool physical)
{
	double pages = (double)(s->swap_writeback - from->swap_writeback);
	double bytes = (double)(s->swap_write_bytes - from->swap_write_bytes);
	double ns = (double)(s->lat_swap_write.sum_ns -
			     from->lat_swap_write.sum_ns);

	return (physical ? bytes : pages * PAGE) / MiB / (ns * 1e-9);
}

static void print_wb(const char *phase, const struct upg_stats *s,
		     const struct upg_stats *from, double fill,
		     const struct bare_bw *bw)
{
	double wb = wb_mbs(s, from, false), phys = wb_mbs(s, from, true);
	unsigned long long pages = s->swap_writes - from->swap_writes;
	unsigned long long bytes = s->swap_write_bytes - from->swap_write_bytes;

	printf("{\"phase\":\"%s\",\"pages_written\":%llu,"
	       "\"written_back\":%llu,\"bytes_written\":%llu,"
	       "\"bytes_per_page\":%.0f,\"fill_s\":%.2f,\"fill_mbs\":%.1f,"
	       "\"writeback_mbs\":%.1f,\"writeback_physical_mbs\":%.1f,"
	       "\"file_seq_write_mbs\":%.1f,"
	       "\"file_best_req_kb\":%zu,\"file_best_depth\":%u,"
	       "\"file_512k_qd1_mbs\":%.1f,\"ratio\":%.2f,"
	       "\"ratio_physical\":%.2f,\"ratio_512k_qd1\":%.2f,"
	       "\"file_buffer\":\"registered, 2 MiB pages\","
	       "\"file_4k_pages_mbs\":%.1f,\"ratio_4k_pages\":%.2f,"
	       "\"file_copying_mbs\":%.1f,\"ratio_copying\":%.2f,"
	       "\"ratio_copying_physical\":%.2f,"
	       "\"ratio_is\":\"pages written back x 4096 B per second of "
	       "write-back time / file_seq_write_mbs\","
	       "\"ratio_physical_is\":\"bytes written to the swap file per "
	       "second of write-back time / file_seq_write_mbs\"}\n",
	       phase, pages,
	       (unsigned long long)(s->swap_writeback - from->swap_writeback),
	       bytes, pages ? (double)bytes / (double)pages : 0.0, fill,
	       (double)size_mb / fill, wb, phys, bw->best, bw->best_req / 1024,
	       bw->best_depth, bw->at_512k_qd1, wb / bw->best, phys / bw->best,
	       wb / bw->at_512k_qd1, bw->best_small, wb / bw->best_small,
	       bw->copying, wb / bw->copying, phys / bw->copying);
}

/*
 * Two fills of 256 MiB through a 32 MiB pool (large enough that a
 * write-back run is many batches long): the first into a new swap file,
 * against a new bare file; the second, after the first region is given
 * back, into the slots it freed, against a bare file written over.
 */
static void phase_writeback(void)
{
	struct upg *u = runtime(32, 16, 32 * MiB);
	size_t bytes = size_mb * MiB;
	double fresh_sum[2][NREQS][NDEPTHS] = { { { 0 } } };
	double reuse_sum[2][NREQS][NDEPTHS] = { { { 0 } } };
	struct bare_bw fresh = { 0 }, reuse = { 0 };
	struct upg_stats s0 = { 0 }, s1, s2;
	double fill1, fill2;
	char *m;

	bare_bandwidth(&fresh, fresh_sum, 1, false);
	bare_bandwidth(&reuse, reuse_sum, 1, true);
	m = filled(u, bytes, &fill1);
	s1 = settled(u);
	upg_release(u, m);
	filled(u, bytes, &fill2);
	s2 = settled(u);
	upg_destroy(u);
	fresh.best = reuse.best = fresh.best_small = reuse.best_small = 0;
	bare_bandwidth(&fresh, fresh_sum, 2, false);
	bare_bandwidth(&reuse, reuse_sum, 2, true);
	for (int rep = 0; rep < 2; rep++) {
		fresh.copying += bare_copy_write_mbs(bytes, fresh.best_req,
						     fresh.best_depth, false) /
				 2;
		reuse.copying += bare_copy_write_mbs(bytes, reuse.best_req,
						     reuse.best_depth, true) /
				 2;
	}
	print_wb("writeback", &s1, &s0, fill1, &fresh);
	print_wb("writeback_reuse", &s2, &s1, fill2, &reuse);
}

int main(int argc, char **argv)
{
	const char *phase = NULL;
	size_t n = 20000;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			size_mb = 96;
			n = 3000;
		} else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			dir = argv[++i];
		} else if (!strcmp(argv[i], "--phase") && i + 1 < argc) {
			phase = argv[++i];
		} else {
			fprintf(stderr,
				"usage: bench_swap [--quick] [--dir DIR] "
				"[--phase swapin|scan|writeback]\n");
			return 2;
		}
	}
	if (!phase || !strcmp(phase, "swapin"))
		phase_swapin(n);
	if (!phase || !strcmp(phase, "scan"))
		phase_scan();
	if (!phase || !strcmp(phase, "writeback"))
		phase_writeback();
	return 0;
}

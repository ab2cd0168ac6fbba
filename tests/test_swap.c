/* SPDX-License-Identifier: MIT */
/*
 * The swap file tier: where the file lives and who can see it, clean pages
 * that keep their slot, a file system that fills up, write and read errors
 * (injected), a corrupt file, fork() with swapped pages. Integrity at 8x
 * oversubscription is in test_integrity.c.
 *
 * Tests that mount a file system do it in a private mount namespace
 * (unshare), so the mount goes away with the test process even if it
 * crashes.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compress.h"
#include "helpers.h"
#include "io.h"
#include "runtime.h"

#define BUDGET (8 * MiB)
#define SIZE (64 * MiB)
#define NPAGES (SIZE / PAGE)

TestSuite(swap, .timeout = 180);

/* A runtime whose 1 MiB pool overflows into the swap file at once. */
static struct upg *swap_runtime(const char *file)
{
	char opt[300];
	const char *opts[] = { "POOL_MAX=1M", file ? opt : NULL, NULL };

	snprintf(opt, sizeof(opt), "SWAP_FILE=%s", file ? file : "");
	return t_runtime(BUDGET, opts);
}

static size_t dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	size_t n = 0;

	cr_assert(d, "%s: %s", dir, strerror(errno));
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

Test(swap, default_file_is_unlinked_and_private)
{
	char dir[] = "/tmp/upg-swap-XXXXXX", link[64], target[512];
	struct upg *u;
	struct stat st;
	ssize_t n;

	cr_assert(mkdtemp(dir));
	setenv("TMPDIR", dir, 1);
	u = swap_runtime(NULL);
	cr_assert(u->swap);
	cr_expect_eq(dir_entries(dir), 2, "the swap file is visible in %s",
		     dir);
	cr_assert_eq(fstat(upg_swap_fd(u->swap), &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	cr_expect_eq(st.st_nlink, 0, "the swap file has a name");
	snprintf(link, sizeof(link), "/proc/self/fd/%d", upg_swap_fd(u->swap));
	n = readlink(link, target, sizeof(target) - 1);
	cr_assert_gt(n, 0);
	target[n] = 0;
	cr_expect(strstr(target, dir), "%s is not in %s", target, dir);
	upg_destroy(u);
	unsetenv("TMPDIR");
	rmdir(dir);
}

Test(swap, named_directory_and_bad_path)
{
	struct upg_params p;
	struct upg *u = NULL;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, "SWAP_FILE", "/nonexistent/dir/f"), 0);
	cr_assert_lt(upg_create(&p, &u), 0);
	if (strstr(upg_last_error(), "userfaultfd"))
		cr_skip_test("userfaultfd unavailable: %s", upg_last_error());
	cr_expect(strstr(upg_last_error(), "UPG_SWAP_FILE") &&
			  strstr(upg_last_error(), "/nonexistent/dir/f") &&
			  strstr(upg_last_error(), "No such file"),
		  "unclear error: %s", upg_last_error());
	cr_expect_eq(upg_params_set(&p, "SWAP_READAHEAD", "3"), 0);
	cr_expect_lt(upg_create(&p, &u), 0);
	cr_expect(strstr(upg_last_error(), "UPG_SWAP_READAHEAD"), "%s",
		  upg_last_error());
}

/* Read every page; return how many pages the file took in meanwhile. */
static uint64_t read_pass(struct upg *u, const char *m)
{
	uint64_t before = t_stats(u).swap_writes;

	cr_assert_eq(t_verify(m, NPAGES, T_TEXT), 0);
	return t_stats(u).swap_writes - before;
}

Test(swap, clean_pages_keep_their_slot)
{
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, SIZE);
	struct upg_stats s;
	uint64_t w1, w2;

	t_fill(m, NPAGES, T_TEXT);
	w1 = read_pass(u, m);
	w2 = read_pass(u, m);
	s = t_stats(u);
	cr_expect_gt(s.fault_swap, 0);
	cr_expect_gt(s.swap_clean_drop, NPAGES / 2, "clean drops: %llu",
		     (unsigned long long)s.swap_clean_drop);
	/* Read-only passes write (almost) nothing: only pool write-back. */
	cr_expect_lt(w2, NPAGES / 10, "pass 2 wrote %llu pages (pass 1: %llu)",
		     (unsigned long long)w2, (unsigned long long)w1);
	upg_destroy(u);
}

/* A private mount namespace and a small tmpfs in a fresh directory. */
static void small_fs(char *dir, const char *size)
{
	char opt[32];

	if (unshare(CLONE_NEWNS) < 0)
		cr_skip_test("cannot make a mount namespace: %s",
			     strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	cr_assert(mkdtemp(dir));
	snprintf(opt, sizeof(opt), "size=%s,mode=0700", size);
	if (mount("upg-test", dir, "tmpfs", 0, opt) < 0)
		cr_skip_test("cannot mount tmpfs: %s", strerror(errno));
}

static void small_fs_done(char *dir)
{
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

Test(swap, full_file_system_overruns_without_loss)
{
	char dir[] = "/tmp/upg-fs-XXXXXX";
	struct upg *u;
	struct upg_stats s;
	char *m;

	small_fs(dir, "4m");
	u = swap_runtime(dir);
	m = t_region(u, 32 * MiB);
	t_fill(m, 32 * MiB / PAGE, T_RANDOM);
	cr_expect_eq(t_verify(m, 32 * MiB / PAGE, T_RANDOM), 0);
	s = t_stats(u);
	cr_expect_gt(s.swap_err_nospc, 0, "the file system never filled");
	cr_expect_gt(s.swap_writes, 0);
	cr_expect_leq(s.swap_file_bytes, 4 * MiB);
	cr_expect_gt(s.budget_overruns, 0);
	cr_expect_eq(s.fault_error + s.swap_read_errors, 0);
	upg_destroy(u);
	small_fs_done(dir);
}

static void write_errors(int err, size_t expect_field)
{
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, 32 * MiB);
	struct upg_stats s;
	uint64_t *counters = (uint64_t *)&s;

	upg_io_inject(true, 0, err);
	t_fill(m, 32 * MiB / PAGE, T_TEXT);
	cr_expect_eq(t_verify(m, 32 * MiB / PAGE, T_TEXT), 0);
	s = t_stats(u);
	cr_expect_gt(counters[expect_field / 8], 0, "error not counted");
	cr_expect_eq(s.swap_writes, 0);
	cr_expect_gt(s.budget_overruns, 0);
	/* The file works again: writing resumes, nothing was lost. */
	upg_io_inject(true, 0, 0);
	t_fill(m, 32 * MiB / PAGE, T_TEXT);
	usleep(1100 * 1000); /* past the failure back-off */
	cr_expect_eq(t_verify(m, 32 * MiB / PAGE, T_TEXT), 0);
	cr_expect_eq(t_verify(m, 32 * MiB / PAGE, T_TEXT), 0);
	s = t_stats(u);
	cr_expect_gt(s.swap_writes, 0, "writes did not resume");
	upg_destroy(u);
}

Test(swap, write_error_keeps_pages)
{
	write_errors(-EIO, offsetof(struct upg_stats, swap_err_io));
}

Test(swap, short_write_keeps_pages)
{
	write_errors(-ENODATA, offsetof(struct upg_stats, swap_err_short));
}

/* The first page of @m that lives in the swap file. */
static char *swapped_page(struct upg *u, char *m, uint64_t *slot)
{
	struct upg_region *r = upg_region_find(u, m);

	for (size_t i = 0; i < r->npages; i++) {
		uint64_t v = atomic_load(&r->pte[i]);

		if (pte_state(v) == PTE_EVICTED && (v & PTE_SWAP)) {
			*slot = upg_swap_loc_slot(pte_payload(v));
			return m + i * PAGE;
		}
	}
	cr_assert_fail("no page in the swap file");
	return NULL;
}

/*
 * In a child (whose stderr goes to @log): touch a swapped page that cannot
 * be read back. It must die of SIGBUS, not read zeros.
 */
static void touch_lost_page(char *page, bool corrupt, uint64_t slot, int fd,
			    const char *log)
{
	/* Aligned: the file may be open with O_DIRECT. */
	static char junk[PAGE] __attribute__((aligned(PAGE))) = "not it";
	int status, out;
	pid_t pid = fork();

	/* No assertion in the child: under --full-stats it would hang. */
	if (!pid) {
		out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(out, 2);
		if (corrupt &&
		    pwrite(fd, junk, PAGE, (off_t)(slot * PAGE)) != PAGE)
			_exit(5);
		if (!corrupt)
			upg_io_inject(false, 0, -EIO);
		_exit(page[100] == 0 ? 3 : 4);
	}
	cr_assert_geq(pid, 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
		  "the lost page did not raise SIGBUS (status %#x)", status);
}

static void lost_page(bool corrupt, const char *why)
{
	char log[] = "/tmp/upg-log-XXXXXX", text[4096] = "";
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, SIZE), *page;
	uint64_t slot;
	int fd = mkstemp(log);

	cr_assert_geq(fd, 0);
	t_fill(m, NPAGES, T_TEXT);
	page = swapped_page(u, m, &slot);
	touch_lost_page(page, corrupt, slot, upg_swap_fd(u->swap), log);
	cr_assert_geq(read(fd, text, sizeof(text) - 1), 0);
	cr_expect(strstr(text, "cannot read back page") && strstr(text, why) &&
			  strstr(text, "slot"),
		  "unclear error: %s", text);
	close(fd);
	unlink(log);
	/* Injected errors were the child's: the parent's page is intact. */
	if (!corrupt)
		cr_expect(t_page_check(page, T_TEXT,
				       (uint64_t)(page - m) / PAGE, 0));
	upg_destroy(u);
}

Test(swap, read_error_raises_sigbus)
{
	lost_page(false, "Input/output error");
}

Test(swap, corrupt_file_detected_by_checksum)
{
	lost_page(true, "checksum");
}

/*
 * Transfers from and into a ring's fixed buffer go out as WRITE_FIXED /
 * READ_FIXED; one that only partly lies in it, or outside it, as plain
 * ones. Every byte must land where it belongs either way.
 */
Test(swap, fixed_buffer_transfers_round_trip)
{
	enum { N = 16 };
	char path[] = "/tmp/upg-io-XXXXXX";
	char *buf = aligned_alloc(PAGE, (N + 4) * PAGE), *fixed = buf + PAGE;
	struct upg_io_op op[3];
	struct upg_io *io;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	unlink(path);
	cr_assert_eq(upg_io_create(8, &io), 0);
	cr_assert_eq(upg_io_register(io, fixed, N * PAGE), 0);
	cr_expect_eq(upg_io_register(io, fixed, N * PAGE), -EBUSY);
	cr_expect(upg_io_is_fixed(io, fixed + 3 * PAGE, 4 * PAGE));
	cr_expect_not(upg_io_is_fixed(io, fixed + (N - 1) * PAGE, 2 * PAGE));
	cr_expect_not(upg_io_is_fixed(io, buf, PAGE));
	cr_expect_not(upg_io_is_fixed(io, fixed + (N + 1) * PAGE, PAGE));
	for (size_t i = 0; i < (N + 4) * PAGE; i++)
		buf[i] = (char)(i * 7 + i / PAGE);
	op[0] = (struct upg_io_op){ fixed + 2 * PAGE, 3 * PAGE, 0, 0 };
	op[1] = (struct upg_io_op){ fixed + (N - 1) * PAGE, 2 * PAGE, 3 * PAGE,
				    0 };
	op[2] = (struct upg_io_op){ buf, PAGE, 5 * PAGE, 0 };
	cr_assert_eq(upg_io_run(io, fd, op, 3, true), 0);
	memset(fixed, 0, N * PAGE);
	op[0] = (struct upg_io_op){ fixed, 6 * PAGE, 0, 0 };
	cr_assert_eq(upg_io_run(io, fd, op, 1, false), 0);
	for (size_t i = 0; i < 6 * PAGE; i++) {
		size_t from = i < 3 * PAGE   ? 3 * PAGE + i
			      : i < 5 * PAGE ? N * PAGE + i - 3 * PAGE
					     : i - 5 * PAGE;

		cr_assert_eq(fixed[i], (char)(from * 7 + from / PAGE),
			     "byte %zu", i);
	}
	upg_io_destroy(io);
	close(fd);
	free(buf);
}

/*
 * Reads are waited for by polling, then sleeping: sixteen reads in one
 * run, whose completions come in any order, each land in their own page.
 */
Test(swap, polled_reads_land_in_their_pages)
{
	enum { N = 16 };
	char path[] = "/tmp/upg-io-XXXXXX";
	char *buf = aligned_alloc(PAGE, 2 * N * PAGE), *rd = buf + N * PAGE;
	struct upg_io_op op[N];
	struct upg_io *io;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	unlink(path);
	for (size_t i = 0; i < N * PAGE; i++)
		buf[i] = (char)(i / PAGE * 31 + i % 251);
	cr_assert_eq(pwrite(fd, buf, N * PAGE, 0), (ssize_t)(N * PAGE));
	cr_assert_eq(upg_io_create(N, &io), 0);
	cr_assert_eq(upg_io_poll(io), UPG_IO_POLL_NS);
	for (int k = 0; k < 4; k++) {
		upg_io_set_poll(io, k % 2 ? 0 : UPG_IO_POLL_NS); /* or sleep */
		memset(rd, 0, N * PAGE);
		for (int i = 0; i < N; i++) /* page i from page N-1-i */
			op[i] = (struct upg_io_op){ rd + i * PAGE, PAGE,
						    (uint64_t)(N - 1 - i) *
							    PAGE,
						    0 };
		cr_assert_eq(upg_io_run(io, fd, op, N, false), 0);
		for (int i = 0; i < N; i++)
			cr_assert_eq(memcmp(rd + i * PAGE,
					    buf + (N - 1 - i) * PAGE, PAGE),
				     0, "round %d, page %d", k, i);
	}
	upg_io_destroy(io);
	close(fd);
	free(buf);
}

/*
 * UPG_SWAP_POLL reaches the handlers' rings: with 0 they sleep at once,
 * and swapped pages still read back right.
 */
Test(swap, swap_poll_option_reaches_handlers)
{
	static const char *const opts[] = { "POOL_MAX=1M", "SWAP_POLL=0",
					    NULL };
	struct upg *u = t_runtime(BUDGET, opts);
	char *m = t_region(u, 32 * MiB);
	unsigned rings = 0;

	t_fill(m, 32 * MiB / PAGE, T_TEXT);
	cr_expect_eq(t_verify(m, 32 * MiB / PAGE, T_TEXT), 0);
	cr_assert_gt(t_stats(u).fault_swap, 0);
	for (unsigned i = 0; i < u->nhandlers; i++) {
		if (!u->handlers[i].io)
			continue;
		rings++;
		cr_expect_eq(upg_io_poll(u->handlers[i].io), 0);
	}
	cr_expect_gt(rings, 0, "no handler read from the file");
	upg_destroy(u);
}

/*
 * The evictor's write-back staging is its ring's fixed buffer, aligned for
 * 2 MiB pages, mapped (and pinned by the registration) only once
 * write-back runs: a runtime whose pool never fills holds none of it.
 */
Test(swap, writeback_buffer_is_registered)
{
	struct upg *u = swap_runtime(NULL);
	char *m;

	if (geteuid())
		cr_skip_test("RLIMIT_MEMLOCK may refuse registration");
	cr_assert(u->ev_io);
	cr_assert_null(u->wb_buf, "staging mapped before any write-back");
	m = t_region(u, SIZE);
	t_fill(m, NPAGES, T_TEXT);
	cr_assert_gt(t_stats(u).swap_writeback, 0);
	cr_assert(u->wb_buf);
	cr_expect(upg_io_is_fixed(u->ev_io, u->wb_buf,
				  (size_t)UPG_WB_DEPTH * UPG_WB_BATCH * PAGE));
	cr_expect_eq(t_verify(m, NPAGES, T_TEXT), 0);
	/* Aligned for huge pages (long segments per write). */
	cr_expect_eq((uintptr_t)u->wb_buf % (2 * MiB), 0);
	upg_destroy(u);
}

/* A swap file of its own in a fresh directory, with a ring. */
struct bare_swap {
	char dir[32];
	struct upg_swap *sw;
	struct upg_io *io;
	struct upg_stat_shard st;
};

static void bare_swap_open(struct bare_swap *b)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->dir, sizeof(b->dir), "/tmp/upg-slots-XXXXXX");
	cr_assert(mkdtemp(b->dir));
	cr_assert_eq(upg_swap_open(b->dir, 0, false, &b->sw), 0, "%s",
		     upg_last_error());
	cr_assert_eq(upg_io_create(8, &b->io), 0);
}

static void bare_swap_close(struct bare_swap *b)
{
	upg_io_destroy(b->io);
	upg_swap_close(b->sw);
	rmdir(b->dir);
}

/* Damage byte @off of slot @slot in place. */
static void damage(struct bare_swap *b, uint64_t slot, size_t off)
{
	int fd = upg_swap_fd(b->sw);
	char c;

	cr_assert_eq(pread(fd, &c, 1, (off_t)(slot * PAGE + off)), 1);
	c ^= 0x20;
	cr_assert_eq(pwrite(fd, &c, 1, (off_t)(slot * PAGE + off)), 1);
}

/* Object of page @want: LZ4, or the page itself if it does not compress. */
static uint32_t object_of(const char *want, char *obj)
{
	int len = upg_compress_page(want, obj, UPG_COMPRESS_MAX);

	if (len > 0)
		return (uint32_t)len;
	memcpy(obj, want, PAGE);
	return PAGE;
}

/*
 * Pack @n objects (of the pages at @want) through @stage, write them and
 * wait for the write. Return: the number written.
 */
static unsigned put_objects(struct bare_swap *b, char (*want)[PAGE], unsigned n,
			    char *stage, uint64_t *locs)
{
	static struct upg_swap_wr w;
	static char obj[UPG_SWAP_WRITE_MAX][PAGE];
	uint32_t len[UPG_SWAP_WRITE_MAX];
	size_t offs[UPG_SWAP_WRITE_MAX];
	unsigned got;

	cr_assert_leq(n, UPG_SWAP_WRITE_MAX);
	for (unsigned i = 0; i < n; i++)
		len[i] = object_of(want[i], obj[i]);
	got = upg_swap_pack(b->sw, &b->st, len, n, stage, locs, offs, &w);
	for (unsigned i = 0; i < got; i++)
		memcpy(stage + offs[i], obj[i], len[i]);
	upg_swap_submit(b->sw, b->io, &w);
	return n - upg_swap_write_finish(b->sw, b->io, &b->st, &w);
}

/* Read object @loc alone into @page. */
static int get_one(struct bare_swap *b, uint64_t loc, char *page)
{
	static char scratch[2 * PAGE] __attribute__((aligned(PAGE)));

	return upg_swap_read(b->sw, b->io, &loc, 1, page, scratch);
}

/* Staging, read and scratch buffers for @n objects (upg_swap_read()). */
struct obj_bufs {
	char *stage, *rd, *scratch;
};

static struct obj_bufs obj_bufs_get(size_t n)
{
	struct obj_bufs bf = {
		.stage = aligned_alloc(PAGE, n * PAGE),
		.rd = aligned_alloc(PAGE, n * PAGE),
		.scratch = aligned_alloc(PAGE, 2 * n * PAGE),
	};

	cr_assert(bf.stage && bf.rd && bf.scratch);
	return bf;
}

static void obj_bufs_put(struct obj_bufs *bf)
{
	free(bf->stage);
	free(bf->rd);
	free(bf->scratch);
}

/*
 * Objects (LZ4 blocks) and whole pages (a page that does not compress)
 * are packed end to end and read back as the pages, one by one or all in
 * one read. The checksum covers each slot's 4 KiB: damage anywhere in a
 * slot (an object, or the zeros after the last) is an error for the
 * objects lying in it, and only for them. A page's own checksum (for
 * clean drops) is known at once for a whole page, after the first read
 * for an object.
 */
Test(swap, objects_and_whole_pages_round_trip)
{
	enum { N = 3 };
	static char want[N][PAGE];
	struct obj_bufs bf = obj_bufs_get(N);
	uint64_t locs[N];
	struct bare_swap b;

	bare_swap_open(&b);
	for (int i = 0; i < N; i++) /* page 1 does not compress */
		t_page_fill(want[i], i == 1 ? T_RANDOM : T_TEXT, (uint64_t)i,
			    0);
	cr_assert_eq(put_objects(&b, want, N, bf.stage, locs), N);
	cr_assert_eq(upg_swap_loc_len(locs[1]), PAGE, "random compressed");
	cr_assert_lt(upg_swap_loc_len(locs[0]), PAGE / 2);
	cr_assert(upg_swap_follows(locs[0], locs[1]) &&
		  upg_swap_follows(locs[1], locs[2]));
	/* Packed: the whole page starts right after object 0, in its slot. */
	cr_expect_eq(upg_swap_loc_slot(locs[1]), upg_swap_loc_slot(locs[0]));
	cr_expect_eq(upg_swap_loc_off(locs[1]), upg_swap_loc_len(locs[0]));

	cr_expect(upg_swap_matches(b.sw, locs[1], want[1]));
	cr_expect_not(upg_swap_matches(b.sw, locs[0], want[0]));
	cr_assert_eq(upg_swap_read(b.sw, b.io, locs, N, bf.rd, bf.scratch), 0);
	for (int i = 0; i < N; i++)
		cr_expect_eq(memcmp(bf.rd + i * PAGE, want[i], PAGE), 0,
			     "page %d", i);
	cr_expect(upg_swap_matches(b.sw, locs[0], want[0]));
	want[0][PAGE - 1] ^= 1;
	cr_expect_not(upg_swap_matches(b.sw, locs[0], want[0]));
	want[0][PAGE - 1] ^= 1;

	/* Damage in the last slot: object 2 fails, object 0 does not. */
	damage(&b, upg_swap_loc_last(locs[2]), PAGE - 1);
	cr_expect_eq(get_one(&b, locs[2], bf.rd), -EBADMSG);
	cr_expect_eq(get_one(&b, locs[0], bf.rd), 0);
	cr_expect_eq(memcmp(bf.rd, want[0], PAGE), 0);
	damage(&b, upg_swap_loc_slot(locs[0]), upg_swap_loc_len(locs[0]) / 2);
	cr_expect_eq(get_one(&b, locs[0], bf.rd), -EBADMSG);
	/* Objects that do not follow each other are refused. */
	locs[2] = locs[0];
	cr_expect_eq(upg_swap_read(b.sw, b.io, locs, N, bf.rd, bf.scratch),
		     -EINVAL);
	bare_swap_close(&b);
	obj_bufs_put(&bf);
}

/*
 * Slots checksummed while objects are staged (upg_swap_staged(), called
 * for some objects only, as write-back may skip one) have the checksums
 * that submit would record: every object reads back, and a whole page
 * alone in its slot is known by its checksum.
 */
Test(swap, staged_checksums_read_back)
{
	enum { N = 48 };
	static char want[N][PAGE], obj[N][PAGE];
	static struct upg_swap_wr w;
	struct obj_bufs bf = obj_bufs_get(N);
	uint32_t len[N];
	uint64_t locs[N];
	size_t offs[N];
	struct bare_swap b;

	bare_swap_open(&b);
	for (unsigned i = 0; i < N; i++) {
		t_page_fill(want[i], i % 7 ? T_TEXT : T_RANDOM, i, 3);
		len[i] = object_of(want[i], obj[i]);
	}
	cr_assert_eq(
		upg_swap_pack(b.sw, &b.st, len, N, bf.stage, locs, offs, &w),
		N);
	for (unsigned i = 0; i < N; i++) {
		memcpy(bf.stage + offs[i], obj[i], len[i]);
		if (i % 5 != 3)
			upg_swap_staged(b.sw, &w, i);
	}
	upg_swap_submit(b.sw, b.io, &w);
	cr_assert_eq(upg_swap_write_finish(b.sw, b.io, &b.st, &w), 0);
	cr_expect_eq(upg_swap_loc_off(locs[0]), 0);
	cr_expect(upg_swap_matches(b.sw, locs[0], want[0]));
	cr_assert_eq(upg_swap_read(b.sw, b.io, locs, N, bf.rd, bf.scratch), 0);
	for (unsigned i = 0; i < N; i++)
		cr_expect_eq(memcmp(bf.rd + i * PAGE, want[i], PAGE), 0,
			     "page %u", i);
	bare_swap_close(&b);
	obj_bufs_put(&bf);
}

/*
 * Text objects (1-3 KiB) pack across slot boundaries: some span two
 * slots, a write of N pages takes fewer slots than pages, and every page
 * reads back, alone or all in one read.
 */
Test(swap, packed_objects_span_slots)
{
	enum { N = 64 };
	static char want[N][PAGE];
	struct obj_bufs bf = obj_bufs_get(N);
	uint64_t locs[N], bytes = 0;
	unsigned spanning = 0;
	struct bare_swap b;

	bare_swap_open(&b);
	for (int i = 0; i < N; i++)
		t_page_fill(want[i], T_TEXT, (uint64_t)i, 7);
	cr_assert_eq(put_objects(&b, want, N, bf.stage, locs), N);
	for (int i = 0; i < N; i++) {
		spanning +=
			upg_swap_loc_last(locs[i]) > upg_swap_loc_slot(locs[i]);
		bytes += upg_swap_loc_len(locs[i]);
	}
	cr_expect_gt(spanning, N / 4, "%u objects span two slots", spanning);
	/* Tight: no gaps but after the last object. */
	cr_expect_eq(upg_swap_used(b.sw), (bytes + PAGE - 1) / PAGE,
		     "%llu slots for %llu bytes",
		     (unsigned long long)upg_swap_used(b.sw),
		     (unsigned long long)bytes);
	cr_assert_eq(upg_swap_read(b.sw, b.io, locs, N, bf.rd, bf.scratch), 0);
	for (int i = 0; i < N; i++)
		cr_expect_eq(memcmp(bf.rd + i * PAGE, want[i], PAGE), 0,
			     "page %d", i);
	for (int i = N - 1; i >= 0; i--) {
		cr_assert_eq(get_one(&b, locs[i], bf.rd), 0, "page %d", i);
		cr_expect_eq(memcmp(bf.rd, want[i], PAGE), 0, "page %d alone",
			     i);
	}
	bare_swap_close(&b);
	obj_bufs_put(&bf);
}

/*
 * A slot is free only once every object lying in it is: freeing objects
 * one by one, in an order that leaves each slot held by its last object
 * until the end, frees no slot early (the survivors still read back), and
 * the slots are reused afterwards.
 */
Test(swap, slot_freed_when_all_its_objects_are)
{
	enum { N = 32 };
	static char want[N][PAGE];
	char *stage = aligned_alloc(PAGE, N * PAGE);
	char *rd = aligned_alloc(PAGE, PAGE);
	uint64_t locs[N], again[N], used, file;
	struct bare_swap b;

	bare_swap_open(&b);
	for (int i = 0; i < N; i++)
		t_page_fill(want[i], T_TEXT, (uint64_t)i, 3);
	cr_assert_eq(put_objects(&b, want, N, stage, locs), N);
	used = upg_swap_used(b.sw);
	cr_assert_eq(used, upg_swap_loc_last(locs[N - 1]) -
				   upg_swap_loc_slot(locs[0]) + 1);
	/* Even objects first: every slot still holds an odd one (objects
	 * are shorter than a slot, so each slot holds two neighbours). */
	for (int i = 0; i < N; i += 2)
		upg_swap_free(b.sw, locs[i]);
	cr_expect_eq(upg_swap_used(b.sw), used, "a slot was freed early");
	for (int i = 1; i < N; i += 2) {
		cr_assert_eq(get_one(&b, locs[i], rd), 0, "page %d", i);
		cr_expect_eq(memcmp(rd, want[i], PAGE), 0, "page %d", i);
	}
	for (int i = 1; i < N; i += 2)
		upg_swap_free(b.sw, locs[i]);
	cr_expect_eq(upg_swap_used(b.sw), 0);
	file = upg_swap_file_bytes(b.sw);
	cr_assert_eq(put_objects(&b, want, N, stage, again), N);
	cr_expect_eq(upg_swap_used(b.sw), used);
	cr_expect_eq(upg_swap_file_bytes(b.sw), file, "the file grew");
	bare_swap_close(&b);
	free(stage);
	free(rd);
}

/*
 * Tiny objects (nearly empty pages): no more than UPG_SWAP_SLOT_OBJS start
 * in one slot, the next goes to the next slot, and each keeps its own page
 * checksum.
 */
Test(swap, tiny_objects_per_slot_capped)
{
	enum { N = 40 };
	static char want[N][PAGE];
	struct obj_bufs bf = obj_bufs_get(N);
	unsigned in_slot = 0;
	uint64_t locs[N];
	struct bare_swap b;

	bare_swap_open(&b);
	for (int i = 0; i < N; i++)
		snprintf(want[i] + 100, 64, "page %d", i);
	cr_assert_eq(put_objects(&b, want, N, bf.stage, locs), N);
	for (int i = 0; i < N; i++) {
		cr_assert_lt(upg_swap_loc_len(locs[i]), 200);
		in_slot = i && upg_swap_loc_slot(locs[i]) ==
						  upg_swap_loc_slot(locs[i - 1])
				  ? in_slot + 1
				  : 1;
		cr_assert_leq(in_slot, UPG_SWAP_SLOT_OBJS, "object %d", i);
	}
	cr_expect_eq(upg_swap_used(b.sw),
		     (N + UPG_SWAP_SLOT_OBJS - 1) / UPG_SWAP_SLOT_OBJS);
	cr_assert_eq(upg_swap_read(b.sw, b.io, locs, N, bf.rd, bf.scratch), 0);
	for (int i = 0; i < N; i++) {
		cr_expect_eq(memcmp(bf.rd + i * PAGE, want[i], PAGE), 0,
			     "page %d", i);
		cr_expect(upg_swap_matches(b.sw, locs[i], want[i]), "%d", i);
		cr_expect_not(
			upg_swap_matches(b.sw, locs[i], want[(i + 1) % N]));
	}
	bare_swap_close(&b);
	obj_bufs_put(&bf);
}

/*
 * A write that fails (EIO, ENOSPC) frees every slot it took, and its
 * objects get no location; the file works again afterwards.
 */
Test(swap, failed_packed_write_frees_its_slots)
{
	enum { N = 48 };
	static char want[N][PAGE];
	char *stage = aligned_alloc(PAGE, N * PAGE);
	uint64_t locs[N];
	struct bare_swap b;

	bare_swap_open(&b);
	for (int i = 0; i < N; i++)
		t_page_fill(want[i], T_TEXT, (uint64_t)i, 9);
	upg_io_inject(true, 0, -EIO);
	cr_expect_eq(put_objects(&b, want, N, stage, locs), 0);
	upg_io_inject(true, 0, 0);
	for (int i = 0; i < N; i++)
		cr_expect_eq(locs[i], 0, "object %d has a location", i);
	cr_expect_eq(upg_swap_used(b.sw), 0, "slots leaked");
	cr_expect_eq(b.st.c[UPG_STAT_swap_err_io], 1);
	cr_expect_eq(put_objects(&b, want, N, stage, locs), N);
	bare_swap_close(&b);
	free(stage);
}

/*
 * Write-back stores the pool's objects packed: a written-back text page's
 * location holds its LZ4 block, shorter than a page, and pages written
 * back together lie in fewer slots than pages; every page reads back.
 */
Test(swap, writeback_stores_pool_objects)
{
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, SIZE), *buf = aligned_alloc(PAGE, 2 * PAGE);
	struct upg_region *r = upg_region_find(u, m);
	size_t swapped = 0, objects = 0;
	struct upg_stats s;

	t_fill(m, NPAGES, T_TEXT);
	s = t_stats(u);
	cr_assert_gt(s.swap_writeback, NPAGES / 4);
	cr_expect_lt(s.swap_write_bytes, s.swap_writes * PAGE * 9 / 10,
		     "%llu bytes for %llu pages: not packed",
		     (unsigned long long)s.swap_write_bytes,
		     (unsigned long long)s.swap_writes);
	for (size_t i = 0; i < NPAGES; i++) {
		uint64_t v = atomic_load(&r->pte[i]), loc = pte_payload(v);
		char page[PAGE], out[PAGE];
		uint32_t len = upg_swap_loc_len(loc);

		if (pte_state(v) != PTE_EVICTED || !(v & PTE_SWAP))
			continue;
		swapped++;
		cr_assert_eq(pread(upg_swap_fd(u->swap), buf, 2 * PAGE,
				   (off_t)(upg_swap_loc_slot(loc) * PAGE)),
			     (ssize_t)(2 * PAGE));
		t_page_fill(page, T_TEXT, i, 0);
		objects += len < PAGE &&
			   !upg_decompress_page(buf + upg_swap_loc_off(loc),
						(int)len, out) &&
			   !memcmp(out, page, PAGE);
	}
	cr_expect_gt(objects, swapped / 2, "%zu objects in %zu swapped pages",
		     objects, swapped);
	cr_expect_eq(t_verify(m, NPAGES, T_TEXT), 0);
	upg_destroy(u);
	free(buf);
}

/*
 * Readahead over packed objects: a sequential scan of text pages written
 * back brings several pages in per swap fault (their objects follow each
 * other across slots), and every page reads back right, twice (the
 * second pass after pages were dropped clean or written back again).
 */
Test(swap, readahead_reads_packed_objects)
{
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, SIZE);
	struct upg_stats s;

	t_fill(m, NPAGES, T_TEXT);
	cr_assert_gt(t_stats(u).swap_writeback, NPAGES / 2);
	cr_expect_eq(t_verify(m, NPAGES, T_TEXT), 0);
	cr_expect_eq(t_verify(m, NPAGES, T_TEXT), 0);
	s = t_stats(u);
	cr_expect_gt(s.fault_swap, 0);
	cr_expect_gt(s.swap_ra_pages, 4 * s.fault_swap,
		     "%llu pages read ahead in %llu swap faults",
		     (unsigned long long)s.swap_ra_pages,
		     (unsigned long long)s.fault_swap);
	cr_expect_eq(s.swap_read_errors + s.fault_error, 0);
	upg_destroy(u);
}

/*
 * A sequential scan through a pool far smaller than the data: pages that
 * were evicted together sit together in the file, so each swap fault
 * reads a long run (the window grows to UPG_SWAP_READAHEAD, 32; about 31
 * pages a fault here). bench_swap's scan showed the failure this guards
 * against: eviction batches that outgrew its 1 MiB pool split runs
 * between the pool and the file, 11 pages a fault.
 */
Test(swap, readahead_runs_survive_a_full_pool)
{
	static const char *const opts[] = { "POOL_MAX=1M", NULL };
	struct upg *u = t_runtime(16 * MiB, opts);
	size_t n = 4 * SIZE / PAGE;
	char *m = t_region(u, 4 * SIZE);
	struct upg_stats a, b;
	uint64_t faults, pages;

	t_fill(m, n, T_TEXT);
	a = t_stats(u);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	b = t_stats(u);
	faults = b.fault_swap - a.fault_swap;
	pages = faults + b.swap_ra_pages - a.swap_ra_pages;
	cr_assert_gt(faults, 0);
	cr_expect_geq(pages, 16 * faults,
		      "%llu pages in %llu swap faults (%llu written straight)",
		      (unsigned long long)pages, (unsigned long long)faults,
		      (unsigned long long)b.swap_direct);
	upg_destroy(u);
}

/*
 * Every page written is one that left the pool (write-back) or went
 * straight to the file: no entry joins two batches in flight together.
 * (With a small pool of incompressible pages, runs kept selecting the
 * entries in flight, still in the pool until published, and wrote most
 * pages two to four times.)
 */
Test(swap, writeback_writes_each_page_once)
{
	struct upg *u = swap_runtime(NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_TEXT);
	upg_evict_pause(u); /* between passes: no write-back run half done */
	s = t_stats(u);
	upg_evict_resume(u);
	cr_expect_gt(s.swap_writeback, n / 4);
	cr_expect_leq(s.swap_writes - s.swap_writeback - s.swap_direct,
		      s.swap_writes / 100,
		      "%llu writes: %llu written back, %llu direct",
		      (unsigned long long)s.swap_writes,
		      (unsigned long long)s.swap_writeback,
		      (unsigned long long)s.swap_direct);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	upg_destroy(u);
}

/*
 * Rewriting swapped pages over and over frees slots as fast as it takes
 * them: the file reuses them instead of growing by every pass (it grew by
 * about the region's size per pass, up to the file system's end).
 */
Test(swap, file_reuses_freed_slots)
{
	/* A cap, so that a regression cannot fill the file system. */
	static const char *const opts[] = { "POOL_MAX=1M", "SWAP_MAX=1G",
					    NULL };
	struct upg *u = t_runtime(BUDGET, opts);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	uint64_t peak = 0;
	struct upg_stats s;

	for (uint64_t pass = 0; pass < 6; pass++) {
		for (size_t p = 0; p < n; p++)
			t_page_fill(m + p * PAGE, T_RANDOM, p, pass);
		s = t_stats(u);
		peak = MAX(peak, s.swap_slots_used);
	}
	for (size_t p = 0; p < n; p++)
		cr_assert(t_page_check(m + p * PAGE, T_RANDOM, p, 5), "%zu", p);
	s = t_stats(u);
	cr_expect_gt(s.swap_writes, 3 * n, "the file was barely used");
	cr_expect_leq(s.swap_file_bytes, (peak * 4 / 3 + 8192) * PAGE,
		      "file %llu MiB for at most %llu slots in use",
		      (unsigned long long)s.swap_file_bytes >> 20,
		      (unsigned long long)peak);
	upg_destroy(u);
}

/* Parent and child share the file: neither may overwrite the other. */
Test(swap, fork_shares_the_file_safely)
{
	struct upg *u = swap_runtime(NULL);
	char *m = t_region(u, SIZE);
	int status;
	pid_t pid;

	t_fill(m, NPAGES, T_TEXT);
	cr_assert_gt(t_stats(u).swap_writes, NPAGES / 2);
	pid = fork();
	if (!pid) { /* no assertion in the child, as above */
		if (t_verify(m, NPAGES, T_TEXT))
			_exit(1);
		for (size_t p = 0; p < NPAGES; p++)
			t_page_fill(m + p * PAGE, T_TEXT, p, 2);
		for (size_t p = 0; p < NPAGES; p++)
			if (!t_page_check(m + p * PAGE, T_TEXT, p, 2))
				_exit(2);
		_exit(0);
	}
	cr_assert_geq(pid, 0);
	for (size_t p = 0; p < NPAGES; p++)
		t_page_fill(m + p * PAGE, T_TEXT, p, 1);
	for (size_t p = 0; p < NPAGES; p++)
		cr_expect(t_page_check(m + p * PAGE, T_TEXT, p, 1),
			  "parent page %zu", p);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && !WEXITSTATUS(status),
		  "child failed: %#x", status);
	upg_destroy(u);
}

static bool sum_eq(const struct upg_swap_sum *x, const struct upg_swap_sum *y)
{
	return x->a == y->a && x->b == y->b;
}

/*
 * Every version of the checksum the CPU has gives the plain C version's
 * sums, for whole pages and for lengths that end inside a stripe.
 */
Test(swap, checksum_versions_agree)
{
	static const size_t lens[] = {
		0, 1, 63, 64, 65, 100, 4095, 4096, 8191
	};
	static const char *name[UPG_SUM_NR] = { "C", "SSE2", "AVX2",
						"AVX-512" };
	static char buf[8192];
	unsigned checked = 0;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 2654435761U >> 13);
	for (int v = UPG_SUM_SSE2; v < UPG_SUM_NR; v++) {
		if (!upg_swap_sum_has((enum upg_sum_version)v)) {
			cr_log_info("checksum: no %s on this CPU or build",
				    name[v]);
			continue;
		}
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
			for (size_t at = 0; at < 3; at++) {
				struct upg_swap_sum c, x;

				upg_swap_sum_by(UPG_SUM_C, buf + at, lens[l],
						&c);
				upg_swap_sum_by((enum upg_sum_version)v,
						buf + at, lens[l], &x);
				cr_assert(sum_eq(&c, &x),
					  "%s differs, %zu bytes at +%zu",
					  name[v], lens[l], at);
			}
		checked++;
	}
	cr_log_info("checksum: %u vector versions checked", checked);
	struct upg_swap_sum best, c;

	upg_swap_sum(buf, PAGE, &best);
	upg_swap_sum_by(UPG_SUM_C, buf, PAGE, &c);
	cr_assert(sum_eq(&best, &c));
}

/*
 * The checksum sees what a damaged slot or a racing store would leave:
 * any one bit flipped, two stripes swapped, a word moved within its
 * stripe, a page of zeros against a page with one byte set, and a
 * shorter length over the same bytes.
 */
Test(swap, checksum_sees_changes)
{
	static char page[PAGE], other[PAGE];
	struct upg_swap_sum h, g;

	t_page_fill(page, T_TEXT, 7, 3);
	upg_swap_sum(page, PAGE, &h);
	for (size_t bit = 0; bit < PAGE * 8; bit += 7) {
		page[bit / 8] ^= (char)(1 << bit % 8);
		upg_swap_sum(page, PAGE, &g);
		page[bit / 8] ^= (char)(1 << bit % 8);
		cr_assert(!sum_eq(&h, &g), "bit %zu flipped, same sum", bit);
	}
	memcpy(other, page, PAGE);
	memcpy(other + 64, page + 128, 64);
	memcpy(other + 128, page + 64, 64);
	upg_swap_sum(other, PAGE, &g);
	cr_assert(!sum_eq(&h, &g), "stripes 1 and 2 swapped, same sum");
	memcpy(other, page, PAGE);
	memcpy(other + 8, page + 16, 8);
	memcpy(other + 16, page + 8, 8);
	upg_swap_sum(other, PAGE, &g);
	cr_assert(!sum_eq(&h, &g), "words 1 and 2 swapped, same sum");
	memset(page, 0, PAGE);
	memset(other, 0, PAGE);
	other[PAGE - 1] = 1;
	upg_swap_sum(page, PAGE, &h);
	upg_swap_sum(other, PAGE, &g);
	cr_assert(!sum_eq(&h, &g), "zeros and one byte set, same sum");
	upg_swap_sum(page, PAGE - 64, &g);
	cr_assert(!sum_eq(&h, &g), "zeros of two lengths, same sum");
}

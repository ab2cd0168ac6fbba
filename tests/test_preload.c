/* SPDX-License-Identifier: MIT */
/*
 * libupager-preload.so under real workloads: the programs in tests/preload/
 * run with LD_PRELOAD (and upagerctl), checking every block they free.
 * A program that finds the runtime refused (no userfaultfd) falls back to
 * glibc and says so: the test is then skipped with that line as reason.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FALLBACK "cannot page this program's heap"

struct run {
	int status; /* exit status, or 128 + signal */
	char out[16384];
};

/* The environment plus LD_PRELOAD (unless @no_preload) and @extra. */
static char **make_env(const char *const *extra, bool no_preload)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 16, sizeof(*env));
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) &&
		    strncmp(environ[i], "UPG_", 4))
			env[k++] = environ[i];
	if (!no_preload)
		env[k++] = "LD_PRELOAD=" UPG_PRELOAD_LIB;
	for (; extra && *extra; extra++)
		env[k++] = (char *)*extra;
	return env;
}

static int wait_timeout(pid_t pid, int seconds)
{
	for (long ms = 0; ms < seconds * 1000L; ms += 10) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
					     : 128 + WTERMSIG(st);
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert_fail("timed out after %d s (deadlock?)", seconds);
	return -1;
}

static void run_prog(struct run *r, const char *const *argv,
		     const char *const *extra, bool no_preload, int timeout)
{
	int fd = memfd_create("out", 0);
	posix_spawn_file_actions_t fa;
	char **env = make_env(extra, no_preload);
	ssize_t n;
	pid_t pid;

	cr_assert_geq(fd, 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd, 1);
	posix_spawn_file_actions_adddup2(&fa, fd, 2);
	cr_assert_eq(posix_spawn(&pid, argv[0], &fa, NULL, (char **)argv, env),
		     0, "cannot start %s", argv[0]);
	r->status = wait_timeout(pid, timeout);
	n = pread(fd, r->out, sizeof(r->out) - 1, 0);
	r->out[n > 0 ? n : 0] = 0;
	close(fd);
	posix_spawn_file_actions_destroy(&fa);
	free(env);
}

/* Run a test program under the preload library; skip if it fell back. */
static void preload_ok(const char *prog, const char *arg,
		       const char *const *extra)
{
	const char *argv[] = { prog, arg, NULL };
	struct run r;
	const char *fb;

	run_prog(&r, argv, extra, false, 240);
	fb = strstr(r.out, FALLBACK);
	if (fb)
		cr_skip_test("runtime refused: %.200s", fb);
	cr_assert_eq(r.status, 0, "%s %s: status %d, output:\n%s", prog, arg,
		     r.status, r.out);
}

#define BIN(name) UPG_TEST_BIN_DIR "/" name

TestSuite(preload, .timeout = 300);

Test(preload, larson_blocks_freed_by_other_threads)
{
	preload_ok(BIN("preload-stress"), "larson", NULL);
}

Test(preload, larson_oversubscribed)
{
	const char *const env[] = { "UPG_BUDGET=4M", NULL };

	preload_ok(BIN("preload-stress"), "larson", env);
}

/*
 * Discards raise REMOVE events, during which UFFDIO_MOVE fails with EAGAIN.
 * Such victims once went to the copy path, whose write-protection does not
 * hold stores off under UFFD_FEATURE_WP_ASYNC: larson found corrupted
 * blocks in every run. Single-page moves make the race most frequent.
 */
Test(preload, larson_oversubscribed_remove_events)
{
	const char *const env[] = { "UPG_BUDGET=4M", "UPG_REMOVE_EVENTS=on",
				    "UPG_REMAP=off", NULL };

	preload_ok(BIN("preload-stress"), "larson", env);
}

Test(preload, xmalloc_producers_and_consumers)
{
	preload_ok(BIN("preload-stress"), "xmalloc", NULL);
}

Test(preload, cache_scratch)
{
	preload_ok(BIN("preload-stress"), "scratch", NULL);
}

Test(preload, thread_exit_while_holding_cached_blocks)
{
	preload_ok(BIN("preload-stress"), "thread-exit", NULL);
}

Test(preload, glibc_api_and_foreign_pointers)
{
	preload_ok(BIN("preload-api"), "glibc", NULL);
}

Test(preload, jemalloc_api)
{
	preload_ok(BIN("preload-api"), "jemalloc", NULL);
}

Test(preload, cxx_new_and_delete)
{
#ifdef UPG_HAVE_CXX
	preload_ok(BIN("preload-cxx"), NULL, NULL);
#else
	cr_skip_test("no C++ compiler at build time");
#endif
}

/* An invalid budget makes the runtime refuse: one line, then glibc. */
Test(preload, falls_back_to_glibc_with_one_error_line)
{
	const char *const argv[] = { "/bin/sh", "-c", "echo ran; exit 4",
				     NULL };
	const char *const env[] = { "UPG_BUDGET=1K", NULL };
	struct run r;
	const char *fb;

	run_prog(&r, argv, env, false, 60);
	cr_assert_eq(r.status, 4, "output:\n%s", r.out);
	cr_assert(strstr(r.out, "ran\n"), "output:\n%s", r.out);
	fb = strstr(r.out, FALLBACK);
	cr_assert(fb && strstr(r.out, "UPG_BUDGET"), "output:\n%s", r.out);
	cr_assert_null(strstr(fb + 1, FALLBACK), "said twice:\n%s", r.out);
}

TestSuite(preload_fork, .timeout = 300);

/* Needs the runtime's fork support: without it the child reads zeros. */
Test(preload_fork, child_verifies_oversubscribed_heap)
{
	const char *const env[] = { "UPG_BUDGET=16M", NULL };

	preload_ok(BIN("preload-fork"), "oversub", env);
}

Test(preload_fork, fork_while_other_threads_allocate)
{
	preload_ok(BIN("preload-fork"), "threads", NULL);
}

/*
 * A child's runtime starts threads on stacks cached from exited threads:
 * their DTVs must not be in managed memory (redis's BGSAVE child hung).
 */
Test(preload_fork, child_starts_threads_over_evicted_heap)
{
	const char *const env[] = { "UPG_BUDGET=16M", NULL };

	preload_ok(BIN("preload-fork"), "dtv", env);
}

/* Each run a new process: forks race with the heap's creation. */
Test(preload_fork, fork_while_threads_allocate_first_time)
{
	for (int run = 0; run < 10; run++)
		preload_ok(BIN("preload-fork"), "creation", NULL);
}

Test(preload_fork, posix_spawn_vfork_system_popen)
{
	preload_ok(BIN("preload-fork"), "spawn", NULL);
}

TestSuite(upagerctl, .timeout = 60);

Test(upagerctl, passes_options_and_exit_status)
{
	const char *const argv[] = { UPG_UPAGERCTL,
				     "run",
				     "--budget",
				     "64M",
				     "--stats",
				     "--swap",
				     "/tmp/x.swap",
				     "--",
				     "/bin/sh",
				     "-c",
				     "echo \"$UPG_BUDGET $UPG_STATS "
				     "$UPG_SWAP_FILE $LD_PRELOAD\"; exit 9",
				     NULL };
	struct run r;

	run_prog(&r, argv, NULL, true, 30);
	cr_assert_eq(r.status, 9, "output:\n%s", r.out);
	cr_assert(strstr(r.out, "64M 1 /tmp/x.swap /"), "output:\n%s", r.out);
	cr_assert(strstr(r.out, "libupager-preload.so"), "output:\n%s", r.out);
}

static void expect_usage_error(const char *const *argv, const char *words)
{
	struct run r;

	run_prog(&r, argv, NULL, true, 30);
	cr_assert_eq(r.status, 2, "output:\n%s", r.out);
	cr_assert(strstr(r.out, words), "no '%s' in:\n%s", words, r.out);
}

Test(upagerctl, rejects_bad_options_by_name)
{
	const char *const a1[] = { UPG_UPAGERCTL, "run", "--budget",
				   "12X",	  "--",	 "/bin/true",
				   NULL };
	const char *const a2[] = { UPG_UPAGERCTL, "run",       "--frobnicate",
				   "--",	  "/bin/true", NULL };
	const char *const a3[] = { UPG_UPAGERCTL, "run", "--budget", "64M",
				   NULL };
	const char *const a4[] = { UPG_UPAGERCTL, "run", "--set",
				   "NOPE=1",	  "--",	 "/bin/true",
				   NULL };

	expect_usage_error(a1, "--budget 12X: UPG_BUDGET");
	expect_usage_error(a1, "512M");
	expect_usage_error(a2, "unknown option '--frobnicate'");
	expect_usage_error(a3, "no PROGRAM");
	expect_usage_error(a4, "NOPE");
}

Test(upagerctl, runs_a_program_under_a_budget)
{
	const char *const argv[] = { UPG_UPAGERCTL, "run",
				     "--budget",    "8M",
				     "--",	    BIN("preload-stress"),
				     "larson",	    NULL };
	struct run r;

	run_prog(&r, argv, NULL, true, 240);
	if (strstr(r.out, FALLBACK))
		cr_skip_test("runtime refused: %.200s",
			     strstr(r.out, FALLBACK));
	cr_assert_eq(r.status, 0, "output:\n%s", r.out);
	cr_assert(strstr(r.out, "ok larson"));
}

Test(upagerctl, missing_program_is_127)
{
	const char *const argv[] = { UPG_UPAGERCTL, "run", "--",
				     "/nonexistent/program", NULL };
	struct run r;

	run_prog(&r, argv, NULL, true, 30);
	cr_assert_eq(r.status, 127, "output:\n%s", r.out);
	cr_assert(strstr(r.out, "/nonexistent/program"));
}

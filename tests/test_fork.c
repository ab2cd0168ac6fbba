/* SPDX-License-Identifier: MIT */
/*
 * fork(): a child sees exactly the parent's memory at the moment of fork,
 * evicted pages included, goes on paging it under its own runtime, and the
 * parent is unaffected by what the child writes. Without the runtime's
 * atfork handlers the child reads evicted pages as zeros, which every test
 * here would catch.
 *
 * Children report through their exit status: 0 for success, 10 + a step
 * number for a failed check, so that a failure names the step.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define BUDGET (16 * MiB)
#define SIZE (4 * BUDGET)
#define NPAGES (SIZE / PAGE)

extern char **environ;

static int wait_child(pid_t pid)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child died with signal %d",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return WEXITSTATUS(status);
}

/* Rewrite every page at version 1 and check; 0 or the failed step. */
static int child_rewrite(struct upg *u, char *mem)
{
	struct upg_stats s = { .size = sizeof(s) };

	for (size_t p = 0; p < NPAGES; p++)
		t_page_fill(mem + p * PAGE, T_TEXT, p, 1);
	for (size_t p = 0; p < NPAGES; p++)
		if (!t_page_check(mem + p * PAGE, T_TEXT, p, 1))
			return 2;
	/* Not t_stats(): a child must not assert (see fork_and_verify). */
	if (upg_stats_get(u, &s))
		return 3;
	return s.evict_pages > 0 && s.fault_pool > 0 ? 0 : 3;
}

static int child_main(struct upg *u, char *mem, bool grandchild)
{
	int err;
	pid_t pid;

	if (t_verify(mem, NPAGES, T_TEXT))
		return 1;
	if (grandchild) {
		/* The rebuilt runtime forks again; the grandchild pages too. */
		pid = fork();
		if (pid < 0)
			return 4;
		if (!pid)
			_exit(child_main(u, mem, false));
		if (waitpid(pid, &err, 0) != pid || !WIFEXITED(err) ||
		    WEXITSTATUS(err))
			return 5;
	}
	return child_rewrite(u, mem);
}

static void fork_and_verify(const char *const *opts, const char *feature)
{
	struct upg *u = t_runtime(BUDGET, opts);
	char *mem = t_region(u, SIZE);
	struct upg_stats s;
	pid_t pid;
	int rc;

	t_fill(mem, NPAGES, T_TEXT);
	s = t_stats(u);
	cr_assert_gt(s.evict_pages, NPAGES / 2, "evicted %llu",
		     (unsigned long long)s.evict_pages);
	pid = fork();
	/* The child must not assert: with --full-stats (meson test) every
	 * assertion is a message the runner refuses from a grandchild, and
	 * the child would hang waiting for the reply. */
	if (!pid)
		_exit(child_main(u, mem, true));
	cr_assert_geq(pid, 0);
	rc = wait_child(pid);
	cr_assert_eq(rc, 0, "the child failed at step %d", rc);
	cr_assert_eq(t_verify(mem, NPAGES, T_TEXT), 0,
		     "the child's writes reached the parent");
	cr_assert(strstr(upg_features(u), feature), "expected \"%s\" in \"%s\"",
		  feature, upg_features(u));
	upg_destroy(u);
}

Test(fork, child_sees_evicted_pages_and_parent_is_unaffected, .timeout = 120)
{
	fork_and_verify(NULL, "remap");
}

/* Shared pages make UFFDIO_MOVE fail with EBUSY: they are copied out. */
Test(fork, single_page_moves, .timeout = 120)
{
	static const char *const opts[] = { "UPG_REMAP=0", NULL };

	fork_and_verify(opts, "move wp_async");
}

Test(fork, copy_eviction, .timeout = 120)
{
	static const char *const opts[] = { "UPG_MOVE=0", NULL };

	fork_and_verify(opts, "copy-evict");
}

Test(fork, all_dirty_without_wp_async, .timeout = 120)
{
	static const char *const opts[] = { "UPG_WP_ASYNC=0", NULL };

	fork_and_verify(opts, "all-dirty");
}

struct writer {
	char *mem;
	size_t first;
	_Atomic size_t cur;	     /* page being rewritten, or 0 */
	_Atomic uint8_t ver[NPAGES]; /* last complete version per page */
	_Atomic bool stop;
};

/*
 * Keep rewriting pages whole. A fork may copy the page being written half
 * done; every other page must hold exactly its last complete version.
 */
static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (uint8_t v = 1; !atomic_load(&w->stop); v = (uint8_t)(v % 5 + 1))
		for (size_t p = w->first; p < NPAGES; p += 7) {
			atomic_store(&w->cur, p);
			t_page_fill(w->mem + p * PAGE, T_TEXT, p, v);
			atomic_store(&w->ver[p], v);
			atomic_store(&w->cur, 0);
		}
	return NULL;
}

static int child_check_torn(struct writer *w)
{
	size_t cur = atomic_load(&w->cur);

	if (t_verify(w->mem, w->first, T_TEXT))
		return 1;
	for (size_t p = w->first; p < NPAGES; p++)
		if (p != cur && !t_page_check(w->mem + p * PAGE, T_TEXT, p,
					      atomic_load(&w->ver[p])))
			return 2;
	return 0;
}

Test(fork, while_another_thread_faults_and_evicts, .timeout = 120)
{
	struct upg *u = t_runtime(BUDGET, NULL);
	char *mem = t_region(u, SIZE);
	static struct writer w;
	pthread_t th;
	pid_t pid;
	int rc;

	t_fill(mem, NPAGES, T_TEXT);
	w.mem = mem;
	w.first = NPAGES / 2;
	cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
	for (int i = 0; i < 8; i++) {
		usleep(20000);
		pid = fork();
		if (!pid) /* no assertion in the child: see above */
			_exit(child_check_torn(&w));
		cr_assert_geq(pid, 0);
		rc = wait_child(pid);
		cr_assert_eq(rc, 0, "fork %d: child failed at step %d", i, rc);
	}
	atomic_store(&w.stop, true);
	pthread_join(th, NULL);
	cr_assert_eq(child_check_torn(&w), 0);
	upg_destroy(u);
}

/* posix_spawn (vfork-like, no atfork handlers) must keep working. */
Test(fork, posix_spawn_and_vfork_exec, .timeout = 60)
{
	struct upg *u = t_runtime(BUDGET, NULL);
	char *mem = t_region(u, SIZE);
	char *argv[] = { "/bin/true", NULL };
	pid_t pid;

	t_fill(mem, NPAGES, T_TEXT);
	cr_assert_eq(posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ),
		     0);
	cr_assert_eq(wait_child(pid), 0);
	pid = vfork();
	if (!pid) {
		execv("/bin/true", argv);
		_exit(127);
	}
	cr_assert_eq(wait_child(pid), 0);
	cr_assert_eq(t_verify(mem, NPAGES, T_TEXT), 0);
	upg_destroy(u);
}

/* SPDX-License-Identifier: MIT */
/*
 * fork() and friends under the preload library:
 *
 *   preload-fork oversub   a child verifies a heap 4x the budget byte for
 *                          byte (run with UPG_BUDGET=16M), and changes it
 *                          without the parent seeing the change
 *   preload-fork threads   fork while other threads allocate; children
 *                          allocate, start threads and exit
 *   preload-fork spawn     posix_spawn, vfork+exec, system, popen
 *   preload-fork dtv       threads' DTVs stay out of managed memory, and a
 *                          child forked after they exited, with the heap
 *                          4x the budget, starts (run with UPG_BUDGET=16M)
 *   preload-fork creation  fork again and again while other threads make
 *                          their first allocations (the first one creates
 *                          the heap, unless the loader's did); children
 *                          allocate and exit
 *
 * A hang is caught by alarm(): the program dies of SIGALRM.
 */
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pcommon.h"

extern char **environ;

struct blocks {
	size_t n;
	char **p;
	size_t *len;
};

/* Blocks of 100 B to 64 KiB totalling @bytes, each with its pattern. */
static void blocks_make(struct blocks *b, size_t bytes, uint64_t seed)
{
	size_t total = 0, cap = bytes / 100 + 1;

	b->p = malloc(cap * sizeof(*b->p));
	b->len = malloc(cap * sizeof(*b->len));
	b->n = 0;
	while (total < bytes && b->n < cap) {
		size_t n = 100 + p_rand(&seed) % (64 << 10);

		b->p[b->n] = malloc(n);
		CHECK(b->p[b->n], "malloc(%zu)", n);
		b->len[b->n] = n;
		p_fill(b->p[b->n], n, b->n);
		total += n;
		b->n++;
	}
}

static size_t blocks_bad(const struct blocks *b, size_t xor_tag)
{
	size_t bad = 0;

	for (size_t i = 0; i < b->n; i++)
		bad += !p_check(b->p[i], b->len[i], i ^ xor_tag);
	return bad;
}

static long rss_anon_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static int wait_status(pid_t pid)
{
	int st;

	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	if (WIFSIGNALED(st))
		FAIL("child %d killed by signal %d", pid, WTERMSIG(st));
	return WEXITSTATUS(st);
}

static void oversub(void)
{
	struct blocks b;
	size_t bad;
	pid_t pid;

	blocks_make(&b, 64 << 20, 42);
	CHECK(p_managed(b.p[0]), "blocks are not in managed memory");
	printf("heap 64 MiB, RssAnon %ld KiB\n", rss_anon_kib());
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid) {
		bad = blocks_bad(&b, 0);
		if (bad)
			FAIL("child: %zu of %zu blocks differ from the parent's",
			     bad, b.n);
		for (size_t i = 0; i < b.n; i += 2)
			p_fill(b.p[i], b.len[i], i ^ 1); /* child's own */
		for (size_t i = 0; i < b.n; i += 2)
			CHECK(p_check(b.p[i], b.len[i], i ^ 1), "child rw");
		_exit(0);
	}
	CHECK(wait_status(pid) == 0, "child failed");
	bad = blocks_bad(&b, 0);
	CHECK(!bad, "parent: %zu blocks changed by the child", bad);
}

/* ---- fork while other threads allocate ---- */

static atomic_bool stop;

static void *churn(void *arg)
{
	uint64_t s = (uintptr_t)arg + 1;
	void *keep[64] = { 0 };
	size_t len[64];

	while (!atomic_load(&stop)) {
		unsigned i = (unsigned)(p_rand(&s) % 64);

		if (keep[i]) {
			CHECK(p_check(keep[i], len[i], i), "churn: corrupted");
			free(keep[i]);
		}
		len[i] = p_rand(&s) % 64 ? 16 + p_rand(&s) % 2000
					 : (1 << 20) + p_rand(&s) % 100000;
		keep[i] = malloc(len[i]);
		p_fill(keep[i], len[i], i);
	}
	for (int i = 0; i < 64; i++)
		free(keep[i]);
	return NULL;
}

static void *child_thread(void *arg)
{
	for (int i = 0; i < 1000; i++)
		free(malloc(16 + i));
	return arg;
}

static void child_work(const struct blocks *b)
{
	pthread_t t;
	void *r;

	if (blocks_bad(b, 0))
		_exit(3);
	for (int i = 0; i < 2000; i++)
		free(malloc(16 + (i % 300) * 8));
	if (pthread_create(&t, NULL, child_thread, (void *)b) ||
	    pthread_join(t, &r) || r != b)
		_exit(4);
	_exit(0);
}

static void threads(void)
{
	pthread_t th[3];
	struct blocks b;

	blocks_make(&b, 4 << 20, 7);
	for (uintptr_t t = 0; t < 3; t++)
		pthread_create(&th[t], NULL, churn, (void *)t);
	for (int k = 0; k < 40; k++) {
		pid_t pid = fork();

		CHECK(pid >= 0, "fork");
		if (!pid)
			child_work(&b);
		CHECK(wait_status(pid) == 0, "fork %d: child failed", k);
	}
	atomic_store(&stop, true);
	for (int t = 0; t < 3; t++)
		pthread_join(th[t], NULL);
	CHECK(!blocks_bad(&b, 0), "parent heap changed");
}

/* ---- fork while the heap and the threads' caches are created ---- */

static atomic_bool go;

static void *first_alloc(void *arg)
{
	while (!atomic_load(&go))
		;
	for (int i = 0; i < 200; i++) {
		char *p = malloc(16 + (size_t)i * 40);

		CHECK(p, "malloc");
		p[0] = 1;
		free(p);
	}
	return arg;
}

/* Wait up to 20 s for @pid: a child stuck on an inherited lock fails. */
static int wait_bounded(pid_t pid)
{
	for (int ms = 0; ms < 20000; ms++) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
					     : 100 + WTERMSIG(st);
		usleep(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	FAIL("child %d hung (a lock held across fork?)", pid);
}

static void creation(void)
{
	pthread_t th[3];

	for (int t = 0; t < 3; t++)
		pthread_create(&th[t], NULL, first_alloc, NULL);
	atomic_store(&go, true);
	for (int k = 0; k < 12; k++) {
		pid_t pid = fork();

		CHECK(pid >= 0, "fork");
		if (!pid) {
			for (int i = 0; i < 300; i++) {
				size_t n = 16 + (size_t)i * 100;
				char *p = malloc(n);

				if (!p)
					_exit(2);
				p_fill(p, n, (uint64_t)i);
				if (!p_check(p, n, (uint64_t)i))
					_exit(3);
				free(p);
			}
			_exit(0);
		}
		CHECK(wait_bounded(pid) == 0, "fork %d: child failed", k);
	}
	for (int t = 0; t < 3; t++)
		pthread_join(th[t], NULL);
}

/* ---- thread control blocks ---- */

/* The caller's DTV: the second word of the TCB (x86-64 only). */
static void *dtv_of_self(void *arg)
{
#if defined(__x86_64__)
	__asm__ volatile("mov %%fs:8, %0" : "=r"(*(void **)arg));
#endif
	return NULL;
}

/* Whether @a and @b lie in the same mapping. */
static bool same_mapping(const void *a, const void *b)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long lo, hi, x = (unsigned long)a, y = (unsigned long)b;
	char line[512];
	bool same = false;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && x >= lo &&
		    x < hi) {
			same = y >= lo && y < hi;
			break;
		}
	if (f)
		fclose(f);
	return same;
}

/*
 * A fork child rebuilds its runtime on stacks cached from threads that
 * exited, whose DTVs pthread_create writes before the child can serve a
 * fault: they must not be in (evicted) managed memory.
 */
static void dtv(void)
{
	void *heap = malloc(100), *d = NULL;
	struct blocks b;
	pthread_t t;
	pid_t pid;

	CHECK(p_managed(heap), "malloc is not upager's");
	for (int i = 0; i < 4; i++) {
		CHECK(!pthread_create(&t, NULL, dtv_of_self, &d) &&
			      !pthread_join(t, NULL),
		      "thread %d", i);
		CHECK(!same_mapping(d, heap),
		      "thread %d: its DTV %p is in managed memory", i, d);
	}
	blocks_make(&b, 64 << 20, 5); /* evicts the first blocks */
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid)
		_exit(blocks_bad(&b, 0) ? 3 : 0);
	CHECK(wait_bounded(pid) == 0, "child failed");
}

/* ---- exec paths ---- */

static void spawn(void)
{
	char *sh_argv[] = { "sh", "-c", "exit 3", NULL };
	char *true_argv[] = { "true", NULL };
	struct blocks b;
	char line[16] = "";
	FILE *f;
	pid_t pid;

	blocks_make(&b, 32 << 20, 9);
	CHECK(!posix_spawn(&pid, "/bin/sh", NULL, NULL, sh_argv, environ),
	      "posix_spawn");
	CHECK(wait_status(pid) == 3, "posix_spawn child status");
	pid = vfork();
	if (!pid) {
		execve("/bin/true", true_argv, environ);
		_exit(127);
	}
	CHECK(pid > 0 && wait_status(pid) == 0, "vfork+exec");
	CHECK(WEXITSTATUS(system("exit 5")) == 5, "system()");
	f = popen("echo hello", "r");
	CHECK(f && fgets(line, sizeof(line), f), "popen");
	CHECK(!strcmp(line, "hello\n") && pclose(f) == 0, "popen output");
	CHECK(!blocks_bad(&b, 0), "heap changed");
}

int main(int argc, char **argv)
{
	alarm(240);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2)
		FAIL("usage: preload-fork oversub|threads|spawn|creation|dtv");
	if (!strcmp(argv[1], "oversub"))
		oversub();
	else if (!strcmp(argv[1], "threads"))
		threads();
	else if (!strcmp(argv[1], "spawn"))
		spawn();
	else if (!strcmp(argv[1], "creation"))
		creation();
	else if (!strcmp(argv[1], "dtv"))
		dtv();
	else
		FAIL("unknown test %s", argv[1]);
	printf("ok %s\n", argv[1]);
	return 0;
}

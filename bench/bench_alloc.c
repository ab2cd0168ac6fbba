/* SPDX-License-Identifier: MIT */
/*
 * Allocation benchmarks in the manner of larson and xmalloc-test, using
 * plain malloc/free so that the same binary measures glibc's allocator and
 * (under LD_PRELOAD or `upagerctl run`) upager's. Prints one JSON line per
 * run; never asserts.
 *
 *   bench_alloc larson|xmalloc [--threads N] [--seconds S] [--slots N]
 *                              [--max-size BYTES]
 *
 * larson: each thread replaces random blocks of its own slot array; every
 * round (0.1 s) the arrays move to new threads, so blocks are freed by
 * threads that did not allocate them. Footprint: threads x slots x about
 * max-size/2. xmalloc: half the threads allocate batches that the other
 * half free.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned nthreads = 2, slots = 10000;
static double seconds = 3;
static size_t max_size = 1000;
static atomic_bool stop;
static _Atomic uint64_t total_ops;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static size_t pick(uint64_t *s)
{
	return 8 + rnd(s) % max_size;
}

/* "glibc" or the preload library's jemalloc-style version string. */
static const char *allocator(void)
{
	int (*ctl)(const char *, void *, size_t *, void *, size_t) =
		(int (*)(const char *, void *, size_t *, void *, size_t))dlsym(
			RTLD_DEFAULT, "mallctl");
	const char *v = "glibc";
	size_t len = sizeof(v);

	if (ctl && ctl("version", &v, &len, NULL, 0))
		v = "unknown";
	return v;
}

/* ---- larson ---- */

/*
 * One cache line each: every operation writes ->seed, and two threads'
 * structs on one line made the line bounce between the CPUs on every
 * operation, a cost of the benchmark that hid the allocators' own (both
 * allocators ran at about 21 M ops/s on two CPUs, against 29 and 62 M
 * with both threads on one CPU).
 */
struct lthread {
	void **slot;
	uint64_t seed;
	uint64_t deadline;
} __attribute__((aligned(64)));

static void *larson_main(void *arg)
{
	struct lthread *t = arg;
	uint64_t ops = 0;

	while (now_ns() < t->deadline && !atomic_load(&stop)) {
		for (int i = 0; i < 1000; i++) {
			size_t k = rnd(&t->seed) % slots;
			size_t n = pick(&t->seed);

			free(t->slot[k]);
			t->slot[k] = malloc(n);
			/* touch it, as a program would */
			((char *)t->slot[k])[0] = (char)k;
			((char *)t->slot[k])[n - 1] = (char)n;
		}
		ops += 1000;
	}
	atomic_fetch_add(&total_ops, ops);
	return NULL;
}

static void larson(void)
{
	struct lthread *t = aligned_alloc(64, nthreads * sizeof(*t));
	pthread_t *th = calloc(nthreads, sizeof(*th));
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);

	memset(t, 0, nthreads * sizeof(*t));
	for (unsigned i = 0; i < nthreads; i++) {
		t[i].slot = calloc(slots, sizeof(void *));
		t[i].seed = i * 7919 + 1;
		for (unsigned k = 0; k < slots; k++)
			t[i].slot[k] = malloc(pick(&t[i].seed));
	}
	while (now_ns() < end) {
		void **first = t[0].slot;
		uint64_t round = now_ns() + 100000000ULL;

		for (unsigned i = 0; i < nthreads; i++) {
			t[i].slot = i + 1 < nthreads ? t[i + 1].slot : first;
			t[i].deadline = round < end ? round : end;
			pthread_create(&th[i], NULL, larson_main, &t[i]);
		}
		for (unsigned i = 0; i < nthreads; i++)
			pthread_join(th[i], NULL);
	}
}

/* ---- xmalloc ---- */

#define BATCH 256

struct xbatch {
	struct xbatch *next;
	void *p[BATCH];
};

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static struct xbatch *queue;
static unsigned queued;

static void *producer(void *arg)
{
	uint64_t s = (uintptr_t)arg * 104729 + 1;

	while (!atomic_load(&stop)) {
		struct xbatch *b = malloc(sizeof(*b));

		for (int i = 0; i < BATCH; i++) {
			size_t n = pick(&s);

			b->p[i] = malloc(n);
			((char *)b->p[i])[n - 1] = 1;
		}
		pthread_mutex_lock(&qlock);
		while (queued > 64 && !atomic_load(&stop))
			pthread_cond_wait(&qcond, &qlock);
		b->next = queue;
		queue = b;
		queued++;
		pthread_cond_broadcast(&qcond);
		pthread_mutex_unlock(&qlock);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	uint64_t ops = 0;

	(void)arg;
	for (;;) {
		struct xbatch *b;

		pthread_mutex_lock(&qlock);
		while (!queue && !atomic_load(&stop))
			pthread_cond_wait(&qcond, &qlock);
		b = queue;
		if (b) {
			queue = b->next;
			queued--;
			pthread_cond_broadcast(&qcond);
		}
		pthread_mutex_unlock(&qlock);
		if (!b)
			break;
		for (int i = 0; i < BATCH; i++)
			free(b->p[i]);
		free(b);
		ops += BATCH;
	}
	atomic_fetch_add(&total_ops, ops);
	return NULL;
}

static void xmalloc(void)
{
	unsigned np = nthreads > 1 ? nthreads / 2 : 1, nc = np;
	pthread_t *th = calloc(np + nc, sizeof(*th));
	struct timespec ts = { (time_t)seconds,
			       (long)((seconds - (time_t)seconds) * 1e9) };

	for (uintptr_t i = 0; i < np; i++)
		pthread_create(&th[i], NULL, producer, (void *)i);
	for (unsigned i = 0; i < nc; i++)
		pthread_create(&th[np + i], NULL, consumer, NULL);
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	pthread_mutex_lock(&qlock);
	pthread_cond_broadcast(&qcond);
	pthread_mutex_unlock(&qlock);
	for (unsigned i = 0; i < np + nc; i++)
		pthread_join(th[i], NULL);
}

int main(int argc, char **argv)
{
	const char *which = argc > 1 ? argv[1] : "larson";
	uint64_t t0;
	double el;

	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--threads"))
			nthreads = (unsigned)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--slots"))
			slots = (unsigned)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--max-size"))
			max_size = (size_t)atol(argv[i + 1]);
	}
	t0 = now_ns();
	if (!strcmp(which, "xmalloc"))
		xmalloc();
	else
		larson();
	el = (double)(now_ns() - t0) / 1e9;
	printf("{\"bench\":\"%s\",\"allocator\":\"%s\",\"threads\":%u,"
	       "\"slots\":%u,\"max_size\":%zu,\"seconds\":%.2f,"
	       "\"ops\":%llu,\"ops_per_sec\":%.0f}\n",
	       which, allocator(), nthreads, slots, max_size, el,
	       (unsigned long long)total_ops, (double)total_ops / el);
	return 0;
}

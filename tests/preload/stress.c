/* SPDX-License-Identifier: MIT */
/*
 * Allocator stress programs in the manner of the classic ones (larson,
 * xmalloc-test, cache-scratch, glibc's tst-thread-exit), checking every
 * block's contents before it is freed:
 *
 *   preload-stress larson|xmalloc|scratch|thread-exit [SCALE]
 *
 * SCALE multiplies the work (default 1). Exit 0 when all checks pass.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>

#include "pcommon.h"

static unsigned scale = 1;

static size_t pick_size(uint64_t *s)
{
	uint64_t r = p_rand(s);

	if (r % 64 == 0)
		return 4096 + r % (128 << 10); /* some page runs */
	return 8 + (r >> 8) % 1000;
}

/* ---- larson: blocks outlive the thread that allocated them ---- */

#define L_SLOTS 2000

struct lslot {
	void *p;
	size_t n;
	uint64_t tag;
};

struct larson {
	struct lslot *slots;
	uint64_t seed;
};

static void *larson_main(void *arg)
{
	struct larson *l = arg;

	for (unsigned i = 0; i < 20000; i++) {
		struct lslot *s = &l->slots[p_rand(&l->seed) % L_SLOTS];

		if (s->p) {
			if (!p_check(s->p, s->n, s->tag))
				p_explain(s->p, s->n, s->tag);
			CHECK(p_check(s->p, s->n, s->tag),
			      "larson: block %p "
			      "(%zu bytes) corrupted",
			      s->p, s->n);
			free(s->p);
		}
		s->n = pick_size(&l->seed);
		s->tag = p_rand(&l->seed);
		s->p = malloc(s->n);
		CHECK(s->p, "larson: malloc(%zu) failed", s->n);
		p_fill(s->p, s->n, s->tag);
	}
	return NULL;
}

static void larson(void)
{
	enum { T = 4 };
	struct larson l[T];
	pthread_t th[T];

	for (int t = 0; t < T; t++)
		l[t] = (struct larson){ calloc(L_SLOTS, sizeof(struct lslot)),
					t * 7919 + 1 };
	for (unsigned round = 0; round < 10 * scale; round++) {
		/* Each round's threads take over the previous ones' blocks. */
		struct lslot *first = l[0].slots;

		for (int t = 0; t < T; t++) {
			l[t].slots = t + 1 < T ? l[t + 1].slots : first;
			pthread_create(&th[t], NULL, larson_main, &l[t]);
		}
		for (int t = 0; t < T; t++)
			pthread_join(th[t], NULL);
	}
	CHECK(p_managed(l[0].slots[0].p ? l[0].slots[0].p : l[0].slots),
	      "blocks are not in managed memory");
	for (int t = 0; t < T; t++) {
		for (int i = 0; i < L_SLOTS; i++)
			free(l[t].slots[i].p);
		free(l[t].slots);
	}
}

/* ---- xmalloc: producers allocate, consumers free ---- */

#define X_BATCH 64

struct xbatch {
	struct xbatch *next;
	void *p[X_BATCH];
	size_t n[X_BATCH];
};

static pthread_mutex_t xlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t xcond = PTHREAD_COND_INITIALIZER;
static struct xbatch *xqueue;
static unsigned xproducers_left;
static _Atomic unsigned long xfreed;

static void *producer(void *arg)
{
	uint64_t s = (uintptr_t)arg * 104729 + 3;

	for (unsigned b = 0; b < 300 * scale; b++) {
		struct xbatch *x = malloc(sizeof(*x));

		for (int i = 0; i < X_BATCH; i++) {
			x->n[i] = pick_size(&s);
			x->p[i] = malloc(x->n[i]);
			CHECK(x->p[i], "xmalloc: malloc failed");
			p_fill(x->p[i], x->n[i], (uintptr_t)x->p[i]);
		}
		pthread_mutex_lock(&xlock);
		x->next = xqueue;
		xqueue = x;
		pthread_cond_signal(&xcond);
		pthread_mutex_unlock(&xlock);
	}
	pthread_mutex_lock(&xlock);
	xproducers_left--;
	pthread_cond_broadcast(&xcond);
	pthread_mutex_unlock(&xlock);
	return NULL;
}

static struct xbatch *take_batch(void)
{
	struct xbatch *x;

	pthread_mutex_lock(&xlock);
	while (!xqueue && xproducers_left)
		pthread_cond_wait(&xcond, &xlock);
	x = xqueue;
	if (x)
		xqueue = x->next;
	pthread_mutex_unlock(&xlock);
	return x;
}

static void *consumer(void *arg)
{
	struct xbatch *x;

	(void)arg;
	while ((x = take_batch())) {
		for (int i = 0; i < X_BATCH; i++) {
			CHECK(p_check(x->p[i], x->n[i], (uintptr_t)x->p[i]),
			      "xmalloc: block %p corrupted", x->p[i]);
			free(x->p[i]);
		}
		free(x);
		atomic_fetch_add(&xfreed, X_BATCH);
	}
	return NULL;
}

static void xmalloc(void)
{
	enum { P = 2, C = 2 };
	pthread_t th[P + C];

	xproducers_left = P;
	for (uintptr_t t = 0; t < P; t++)
		pthread_create(&th[t], NULL, producer, (void *)t);
	for (int t = 0; t < C; t++)
		pthread_create(&th[P + t], NULL, consumer, NULL);
	for (int t = 0; t < P + C; t++)
		pthread_join(th[t], NULL);
	CHECK(xfreed == (unsigned long)P * 300 * scale * X_BATCH,
	      "xmalloc: %lu blocks freed", (unsigned long)xfreed);
}

/* ---- cache-scratch: small blocks handed between threads ---- */

static void *scratch_main(void *arg)
{
	uint64_t *first = arg;

	free(first); /* a block another thread allocated */
	for (unsigned i = 0; i < 20000 * scale; i++) {
		volatile uint64_t *o = malloc(8);

		for (uint64_t k = 0; k < 50; k++)
			o[0] = k + i;
		CHECK(o[0] == 49 + i, "scratch: lost store");
		free((void *)o);
	}
	return NULL;
}

static void scratch(void)
{
	enum { T = 4 };
	pthread_t th[T];

	for (int t = 0; t < T; t++) {
		uint64_t *o = malloc(8);

		CHECK(p_managed(o), "blocks are not in managed memory");
		pthread_create(&th[t], NULL, scratch_main, o);
	}
	for (int t = 0; t < T; t++)
		pthread_join(th[t], NULL);
}

/* ---- thread exit while holding cached blocks ---- */

struct held {
	void *p[500];
	size_t n[500];
};

static void *exiting_main(void *arg)
{
	struct held *h = arg;
	void *gone[500];
	uint64_t s = (uintptr_t)arg | 1;

	for (int i = 0; i < 500; i++) {
		gone[i] = malloc(pick_size(&s));
		h->n[i] = pick_size(&s);
		h->p[i] = malloc(h->n[i]);
		p_fill(h->p[i], h->n[i], i);
	}
	for (int i = 0; i < 500; i++)
		free(gone[i]); /* into this thread's cache, then it exits */
	return NULL;
}

static void thread_exit(void)
{
	struct held *h = malloc(4 * sizeof(*h));
	struct mallinfo2 m;

	for (unsigned round = 0; round < 200 * scale; round++) {
		pthread_t th[4];

		for (int t = 0; t < 4; t++)
			pthread_create(&th[t], NULL, exiting_main, &h[t]);
		for (int t = 0; t < 4; t++) {
			pthread_join(th[t], NULL);
			for (int i = 0; i < 500; i++) {
				CHECK(p_check(h[t].p[i], h[t].n[i], i),
				      "thread-exit: block corrupted");
				free(h[t].p[i]);
			}
		}
	}
	malloc_trim(0);
	m = mallinfo2();
	/* 200 rounds x 4 threads x 500 blocks of ~2 KiB passed through the
	 * caches of exited threads: had they leaked, ~800 MiB. */
	CHECK(m.uordblks < (64UL << 20), "thread-exit: %zu bytes in use",
	      m.uordblks);
	free(h);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		FAIL("usage: preload-stress larson|xmalloc|scratch|thread-exit "
		     "[SCALE]");
	if (argc > 2)
		scale = (unsigned)atoi(argv[2]);
	if (!strcmp(argv[1], "larson"))
		larson();
	else if (!strcmp(argv[1], "xmalloc"))
		xmalloc();
	else if (!strcmp(argv[1], "scratch"))
		scratch();
	else if (!strcmp(argv[1], "thread-exit"))
		thread_exit();
	else
		FAIL("unknown test %s", argv[1]);
	printf("ok %s\n", argv[1]);
	return 0;
}

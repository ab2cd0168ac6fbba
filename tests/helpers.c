/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static const char *const users[] = { "alice", "bob",   "carol", "dave",
				     "erin",  "frank", "grace", "heidi" };
static const char *const paths[] = { "/api/v1/items",  "/api/v1/users",
				     "/static/app.js", "/index.html",
				     "/api/v1/orders", "/login" };
static const char *const levels[] = { "INFO", "INFO", "INFO", "WARN", "DEBUG" };

uint64_t t_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t seed_of(uint64_t idx, uint64_t version)
{
	return (idx + 1) * 0x9E3779B97F4A7C15ULL ^
	       (version + 1) * 0xBF58476D1CE4E5B9ULL;
}

/* Log lines: text that LZ4 compresses about 2-3x, like real logs. */
static void fill_text(char *p, uint64_t s)
{
	size_t off = 0;
	char line[160];

	while (off < PAGE) {
		uint64_t r = t_rand(&s);
		int n = snprintf(
			line, sizeof(line),
			"2026-11-21T16:%02u:%02u.%03u %s [worker-%u] GET "
			"%s/%u status=200 bytes=%u user=%s\n",
			(unsigned)(r % 60), (unsigned)(r >> 8) % 60,
			(unsigned)(r >> 16) % 1000, levels[(r >> 26) % 5],
			(unsigned)(r >> 29) % 8, paths[(r >> 32) % 6],
			(unsigned)(r >> 35) % 10000,
			(unsigned)(r >> 48) % 65536, users[(r >> 61) % 8]);
		size_t k = MIN((size_t)n, PAGE - off);

		memcpy(p + off, line, k);
		off += k;
	}
}

void t_page_fill(void *page, enum t_kind kind, uint64_t idx, uint64_t version)
{
	uint64_t s = seed_of(idx, version), *w = page;

	switch (kind) {
	case T_TEXT:
		fill_text(page, s);
		/* Make every page unique: a header with its identity. */
		w[0] = idx;
		w[1] = version;
		break;
	case T_RANDOM:
		for (size_t i = 0; i < PAGE / 8; i++)
			w[i] = t_rand(&s);
		break;
	case T_SAME:
		/* Small values, like counters or fill patterns. */
		for (size_t i = 0; i < PAGE / 8; i++)
			w[i] = idx * 3 + version + 1;
		break;
	case T_ZERO:
		memset(page, 0, PAGE);
		break;
	}
}

bool t_page_check(const void *page, enum t_kind kind, uint64_t idx,
		  uint64_t version)
{
	char want[PAGE];

	t_page_fill(want, kind, idx, version);
	return memcmp(want, page, PAGE) == 0;
}

void t_fill(void *base, size_t npages, enum t_kind kind)
{
	for (size_t i = 0; i < npages; i++)
		t_page_fill((char *)base + i * PAGE, kind, i, 0);
}

size_t t_verify(const void *base, size_t npages, enum t_kind kind)
{
	size_t bad = 0;

	for (size_t i = 0; i < npages; i++)
		bad += !t_page_check((const char *)base + i * PAGE, kind, i, 0);
	return bad;
}

struct upg *t_runtime(size_t budget, const char *const *opts)
{
	struct upg_params p;
	struct upg *u;
	int err;

	upg_params_init(&p);
	p.budget = budget;
	p.pool_max = 2048 * MiB;
	for (; opts && *opts; opts++) {
		char name[64];
		const char *eq = strchr(*opts, '=');

		cr_assert(eq && (size_t)(eq - *opts) < sizeof(name));
		memcpy(name, *opts, (size_t)(eq - *opts));
		name[eq - *opts] = 0;
		cr_assert_eq(upg_params_set(&p, name, eq + 1), 0, "%s",
			     upg_last_error());
	}
	err = upg_create(&p, &u);
	if (err == -EPERM || err == -ENOSYS)
		cr_skip_test("userfaultfd unavailable: %s", upg_last_error());
	cr_assert_eq(err, 0, "upg_create: %s", upg_last_error());
	return u;
}

void *t_region(struct upg *u, size_t len)
{
	void *p = NULL;

	cr_assert_eq(upg_reserve(u, len, &p), 0, "%s", upg_last_error());
	return p;
}

struct upg_stats t_stats(struct upg *u)
{
	struct upg_stats s = { .size = sizeof(s) };

	cr_assert_eq(upg_stats_get(u, &s), 0);
	return s;
}

void t_evict_all(struct upg *u, size_t low, size_t high)
{
	cr_assert_eq(upg_set_budget(u, low), 0, "%s", upg_last_error());
	cr_assert_eq(upg_set_budget(u, high), 0, "%s", upg_last_error());
}

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define RACE_BUDGET (4 * MiB)
#define RACE_PAGES (8 * RACE_BUDGET / PAGE)

struct racer {
	uint64_t *mem;
	uint64_t *truth; /* per page: last sequence written, ordinary RAM */
	unsigned id, nthreads;
	uint64_t deadline;
	size_t bad;
};

uint64_t t_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* One store to a page the thread owns, checked right away and later. */
static void race_step(struct racer *r, uint64_t *s)
{
	size_t mine = RACE_PAGES / r->nthreads;
	size_t page = (t_rand(s) % mine) * r->nthreads + r->id;
	size_t word = page * (PAGE / 8) + t_rand(s) % (PAGE / 8);
	size_t old = (t_rand(s) % mine) * r->nthreads + r->id;
	uint64_t seq = ++r->truth[page];

	r->mem[word] = seq;
	r->mem[page * (PAGE / 8)] = seq; /* first word: the page's latest */
	r->bad += r->mem[word] != seq;
	r->bad += r->mem[old * (PAGE / 8)] != r->truth[old];
}

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	uint64_t s = r->id * 0x9E3779B97F4A7C15ULL + 1;

	while (t_now_ns() < r->deadline)
		for (int i = 0; i < 256; i++)
			race_step(r, &s);
	return NULL;
}

size_t t_store_race(const char *const *opts, unsigned threads, unsigned seconds,
		    struct upg_stats *out)
{
	struct upg *u = t_runtime(RACE_BUDGET, opts);
	uint64_t *mem = t_region(u, RACE_PAGES * PAGE);
	uint64_t *truth = calloc(RACE_PAGES, sizeof(*truth));
	struct racer r[8];
	pthread_t th[8];
	size_t bad = 0;

	cr_assert(truth && threads <= 8);
	/* Incompressible pages, so that a small pool overflows to the file. */
	t_fill(mem, RACE_PAGES, T_RANDOM);
	for (size_t p = 0; p < RACE_PAGES; p++)
		mem[p * (PAGE / 8)] = 0;
	for (unsigned t = 0; t < threads; t++) {
		r[t] = (struct racer){ mem,
				       truth,
				       t,
				       threads,
				       t_now_ns() + seconds * 1000000000ULL,
				       0 };
		pthread_create(&th[t], NULL, racer_main, &r[t]);
	}
	for (unsigned t = 0; t < threads; t++) {
		pthread_join(th[t], NULL);
		bad += r[t].bad;
	}
	for (size_t p = 0; p < RACE_PAGES; p++)
		bad += mem[p * (PAGE / 8)] != truth[p];
	*out = t_stats(u);
	free(truth);
	upg_destroy(u);
	return bad;
}

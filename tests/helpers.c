/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static const char *const users[] = { "alice", "bob", "carol", "dave",
				      "erin", "frank", "grace", "heidi" };
static const char *const paths[] = { "/api/v1/items", "/api/v1/users",
				     "/static/app.js", "/index.html",
				     "/api/v1/orders", "/login" };
static const char *const levels[] = { "INFO", "INFO", "INFO", "WARN",
				      "DEBUG" };

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
	return (idx + 1) * 0x9E3779B97F4A7C15ULL ^ (version + 1) * 0xBF58476D1CE4E5B9ULL;
}

/* Log lines: text that LZ4 compresses about 2-3x, like real logs. */
static void fill_text(char *p, uint64_t s)
{
	size_t off = 0;
	char line[160];

	while (off < PAGE) {
		uint64_t r = t_rand(&s);
		int n = snprintf(line, sizeof(line),
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

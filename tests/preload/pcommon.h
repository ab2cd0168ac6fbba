/* SPDX-License-Identifier: MIT */
/*
 * Shared by the programs that tests/test_preload.c runs under
 * libupager-preload.so: block patterns, a check that blocks really are in
 * managed memory, and failure reporting. A program exits 0 when every
 * check passed, 1 (after printing why) otherwise.
 */
#ifndef UPG_PCOMMON_H
#define UPG_PCOMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAIL(...)                                                    \
	do {                                                         \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__);                        \
		fputc('\n', stderr);                                 \
		exit(1);                                             \
	} while (0)

#define CHECK(cond, ...)                   \
	do {                               \
		if (!(cond))               \
			FAIL(__VA_ARGS__); \
	} while (0)

static inline uint64_t p_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static inline uint64_t p_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Fill @n bytes with a pattern of @tag; the first word holds the tag. */
static inline void p_fill(void *p, size_t n, uint64_t tag)
{
	unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		c[i] = (unsigned char)(tag * 31 + i * 7 + (i >> 9));
	if (n >= 8)
		memcpy(p, &tag, 8);
}

static inline bool p_check(const void *p, size_t n, uint64_t tag)
{
	const unsigned char *c = p;
	uint64_t t;

	if (n >= 8) {
		memcpy(&t, p, 8);
		if (t != tag)
			return false;
	}
	for (size_t i = n >= 8 ? 8 : 0; i < n; i++)
		if (c[i] != (unsigned char)(tag * 31 + i * 7 + (i >> 9)))
			return false;
	return true;
}

/* Describe the first byte of @p that differs from its pattern. */
static inline void p_explain(const void *p, size_t n, uint64_t tag)
{
	const unsigned char *c = p;
	size_t bad = 0, first = n;

	for (size_t i = 0; i < n; i++) {
		unsigned char want =
			(unsigned char)(tag * 31 + i * 7 + (i >> 9));

		if (i < 8 && n >= 8)
			want = ((const unsigned char *)&tag)[i];
		if (c[i] != want) {
			bad++;
			if (first == n)
				first = i;
		}
	}
	if (first < n)
		fprintf(stderr,
			"%zu of %zu bytes differ, first at %zu (%p): "
			"0x%02x\n",
			bad, n, first, (const void *)(c + first), c[first]);
}

/*
 * Whether @p lies in a mapping of 1 GiB or more: upager's heap region
 * (UPG_RESERVE, 64G by default), never glibc's heap for small blocks.
 */
static inline bool p_managed(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long lo, hi, a = (unsigned long)p;
	char line[512];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo &&
		    a < hi) {
			found = hi - lo >= (1UL << 30);
			break;
		}
	fclose(f);
	return found;
}

#endif

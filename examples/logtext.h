/* SPDX-License-Identifier: MIT */
/*
 * Log-like text for the demo's pages: deterministic (page N always reads
 * the same), compressible about 2.5x with LZ4 like real logs, and cheap to
 * generate, because the demo writes every page once and regenerates every
 * page again to verify it.
 */
#ifndef UPAGER_EXAMPLES_LOGTEXT_H
#define UPAGER_EXAMPLES_LOGTEXT_H

#include <stdint.h>

#define LOGTEXT_PAGE 4096UL

/* splitmix64's finaliser: a cheap, well-mixed hash of @x. */
static inline uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* splitmix64: the next pseudo-random number of the sequence at @s. */
static inline uint64_t next_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ULL;
	return mix(*s);
}

/* logtext_init() - build the line table; call once before logtext_page() */
void logtext_init(void);

/*
 * logtext_page() - write the text of page @page, LOGTEXT_PAGE bytes
 * @dst: destination, ordinary or managed memory
 * @page: page number; the same number always gives the same text
 *
 * Thread-safe after logtext_init().
 */
void logtext_page(char *dst, uint64_t page);

#endif

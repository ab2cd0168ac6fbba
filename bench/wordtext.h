/* SPDX-License-Identifier: MIT */
/*
 * Benchmark data: lines of words from a 64-word vocabulary with numbers
 * mixed in (LZ4 ratio about 1.5), deterministic per seed. Shared by the
 * benchmarks so that their figures describe the same data.
 */
#ifndef UPG_BENCH_WORDTEXT_H
#define UPG_BENCH_WORDTEXT_H

#include <stddef.h>
#include <stdint.h>

/* xorshift64*: the benchmarks' generator. */
uint64_t wordtext_rand(uint64_t *s);

/* Fill @len bytes at @page with word text for @seed. */
void wordtext_fill(char *page, size_t len, uint64_t seed);

#endif

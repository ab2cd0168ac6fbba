/* SPDX-License-Identifier: MIT */
/*
 * The swap file's checksums: every slot's 4 KiB, and every object's page
 * when it is first read back (swap.c).
 *
 * Four independent multiply-rotate lanes over 32-byte blocks of the data
 * (so the multiplies overlap), the tail zero-padded, folded into 128 bits
 * with the length. Not cryptographic: it guards against a racing store and
 * a damaged file, not an adversary. ~0.2 us for a page here.
 */
#include <string.h>

#include "swap.h"

static uint64_t rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t mix(uint64_t h, uint64_t w, uint64_t k)
{
	return rotl((h ^ w) * k, 31);
}

struct lanes {
	uint64_t h[4];
};

static void mix_block(struct lanes *l, const void *block)
{
	uint64_t w[4];

	memcpy(w, block, sizeof(w));
	l->h[0] = mix(l->h[0], w[0], 0xff51afd7ed558ccdULL);
	l->h[1] = mix(l->h[1], w[1], 0xc4ceb9fe1a85ec53ULL);
	l->h[2] = mix(l->h[2], w[2], 0x94d049bb133111ebULL);
	l->h[3] = mix(l->h[3], w[3], 0xbf58476d1ce4e5b9ULL);
}

void upg_swap_sum(const void *data, size_t len, struct upg_swap_sum *out)
{
	struct lanes l = { { 0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
			     0x165667b19e3779f9ULL, 0x27d4eb2f165667c5ULL } };
	const char *p = data;
	char tail[32] = { 0 };
	uint64_t h0, h1;
	size_t i;

	for (i = 0; i + sizeof(tail) <= len; i += sizeof(tail))
		mix_block(&l, p + i);
	if (i < len) {
		memcpy(tail, p + i, len - i);
		mix_block(&l, tail);
	}
	h0 = mix(l.h[0], l.h[2] ^ len, 0xff51afd7ed558ccdULL);
	h1 = mix(l.h[1], l.h[3], 0xc4ceb9fe1a85ec53ULL);
	h0 ^= h0 >> 33;
	h1 ^= h1 >> 29;
	out->a = h0 * 0x94d049bb133111ebULL;
	out->b = h1 * 0xbf58476d1ce4e5b9ULL;
}

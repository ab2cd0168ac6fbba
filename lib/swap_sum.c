/* SPDX-License-Identifier: MIT */
/*
 * The swap file's checksums: every slot's 4 KiB, and every object's page
 * when it is first read back (swap.c).
 *
 * Eight 64-bit lanes over 64-byte stripes, the way xxHash's XXH3
 * accumulates: each word, xored with a key that changes with its lane and
 * with its stripe (so data moved within a slot sums differently), adds the
 * product of its two 32-bit halves to its lane, and itself to the
 * neighbouring lane (so a zero half does not hide the other). No multiply
 * waits for another, so vector code does a whole stripe at a time: SSE2,
 * AVX2 or AVX-512, picked once from what the CPU has, all giving the sums
 * of the plain C version. A page took ~180 ns with the four
 * multiply-rotate chains this replaced, each step waiting for the last:
 * 12 of the ~170 ms that bench_swap --phase writeback's runs took.
 * The lanes are folded into 128 bits with the length. Not cryptographic:
 * it guards against a racing store and a damaged file, not an adversary.
 */
#include <stdatomic.h>
#include <string.h>

#include "swap.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define LANES 8
#define STRIPE (LANES * sizeof(uint64_t))
#define KEY_STEP 0x9e3779b97f4a7c15ULL /* each lane's key, stripe to stripe */

static const uint64_t key0[LANES] = {
	0xc2b2ae3d27d4eb4fULL, 0x165667b19e3779f9ULL, 0x27d4eb2f165667c5ULL,
	0xff51afd7ed558ccdULL, 0xc4ceb9fe1a85ec53ULL, 0x94d049bb133111ebULL,
	0xbf58476d1ce4e5b9ULL, 0x85ebca77c2b2ae63ULL,
};

typedef void stripes_fn(uint64_t *acc, const char *p, size_t n);

/* The sums, a lane at a time: what every vector version must give. */
static void stripes_c(uint64_t *acc, const char *p, size_t n)
{
	uint64_t key[LANES], d[LANES];

	memcpy(key, key0, sizeof(key));
	for (size_t s = 0; s < n; s++, p += STRIPE) {
		memcpy(d, p, STRIPE);
		for (unsigned j = 0; j < LANES; j++) {
			uint64_t x = d[j] ^ key[j];

			acc[j] += (x & 0xffffffffULL) * (x >> 32);
			acc[j ^ 1] += d[j];
			key[j] += KEY_STEP;
		}
	}
}

#if defined(__x86_64__)
/*
 * One version per vector width @V (VN of them to a stripe), from its
 * intrinsics: unaligned load, xor, add, 32x32->64 multiply of the low
 * halves, 64-bit shift right, the two 64-bit words of each 128 bits
 * swapped, and a broadcast.
 */
#define DEFINE_STRIPES(name, tgt, V, LOAD, XOR, ADD, MUL, SRL, SWAP, SET1)     \
	__attribute__((target(tgt))) static void name(uint64_t *acc,           \
						      const char *p, size_t n) \
	{                                                                      \
		enum { VN = STRIPE / sizeof(V) };                              \
		V a[VN], k[VN], step = SET1((long long)KEY_STEP);              \
                                                                               \
		for (unsigned v = 0; v < VN; v++) {                            \
			memcpy(&a[v], acc + v * (sizeof(V) / 8), sizeof(V));   \
			memcpy(&k[v], key0 + v * (sizeof(V) / 8), sizeof(V));  \
		}                                                              \
		for (size_t s = 0; s < n; s++, p += STRIPE) {                  \
			for (unsigned v = 0; v < VN; v++) {                    \
				const void *q = p + v * sizeof(V);             \
				V d = LOAD(q), x = XOR(d, k[v]);               \
				a[v] = ADD(a[v], MUL(x, SRL(x, 32)));          \
				a[v] = ADD(a[v], SWAP(d));                     \
				k[v] = ADD(k[v], step);                        \
			}                                                      \
		}                                                              \
		for (unsigned v = 0; v < VN; v++)                              \
			memcpy(acc + v * (sizeof(V) / 8), &a[v], sizeof(V));   \
	}

#define SWAP128(d) _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2))
#define SWAP256(d) _mm256_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2))
#define SWAP512(d) \
	_mm512_shuffle_epi32(d, (_MM_PERM_ENUM)_MM_SHUFFLE(1, 0, 3, 2))

DEFINE_STRIPES(stripes_sse2, "sse2", __m128i, _mm_loadu_si128, _mm_xor_si128,
	       _mm_add_epi64, _mm_mul_epu32, _mm_srli_epi64, SWAP128,
	       _mm_set1_epi64x)
DEFINE_STRIPES(stripes_avx2, "avx2", __m256i, _mm256_loadu_si256,
	       _mm256_xor_si256, _mm256_add_epi64, _mm256_mul_epu32,
	       _mm256_srli_epi64, SWAP256, _mm256_set1_epi64x)
DEFINE_STRIPES(stripes_avx512, "avx512f", __m512i, _mm512_loadu_si512,
	       _mm512_xor_si512, _mm512_add_epi64, _mm512_mul_epu32,
	       _mm512_srli_epi64, SWAP512, _mm512_set1_epi64)
#endif

static stripes_fn *const versions[UPG_SUM_NR] = {
	[UPG_SUM_C] = stripes_c,
#if defined(__x86_64__)
	[UPG_SUM_SSE2] = stripes_sse2,
	[UPG_SUM_AVX2] = stripes_avx2,
	[UPG_SUM_AVX512] = stripes_avx512,
#endif
};

bool upg_swap_sum_has(enum upg_sum_version v)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (v == UPG_SUM_AVX512)
		return __builtin_cpu_supports("avx512f");
	if (v == UPG_SUM_AVX2)
		return __builtin_cpu_supports("avx2");
#endif
	return v < UPG_SUM_NR && versions[v];
}

/* The widest version the CPU has, found on the first call (any thread). */
static stripes_fn *stripes_best(void)
{
	static stripes_fn *_Atomic best;
	stripes_fn *f = atomic_load_explicit(&best, memory_order_relaxed);

	if (f)
		return f;
	for (int v = UPG_SUM_NR - 1; !f; v--)
		if (upg_swap_sum_has((enum upg_sum_version)v))
			f = versions[v];
	atomic_store_explicit(&best, f, memory_order_relaxed);
	return f;
}

static uint64_t rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t avalanche(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 29;
	return h;
}

void upg_swap_sum_by(enum upg_sum_version v, const void *data, size_t len,
		     struct upg_swap_sum *out)
{
	stripes_fn *stripes = v == UPG_SUM_BEST ? stripes_best() : versions[v];
	uint64_t acc[LANES] = { 0 }, h0 = len * KEY_STEP, h1 = ~len;
	char tail[STRIPE] = { 0 };
	size_t whole = len / STRIPE;

	stripes(acc, data, whole);
	if (len % STRIPE) { /* zero-padded, with the first stripe's keys */
		memcpy(tail, (const char *)data + whole * STRIPE, len % STRIPE);
		stripes_c(acc, tail, 1);
	}
	for (unsigned j = 0; j < LANES / 2; j++) {
		h0 = rotl((h0 ^ acc[j]) * 0xc2b2ae3d27d4eb4fULL, 31);
		h1 = rotl((h1 ^ acc[j + LANES / 2]) * 0x165667b19e3779f9ULL,
			  27);
	}
	out->a = avalanche(h0 + h1);
	out->b = avalanche(h1 ^ rotl(h0, 17));
}

void upg_swap_sum(const void *data, size_t len, struct upg_swap_sum *out)
{
	upg_swap_sum_by(UPG_SUM_BEST, data, len, out);
}

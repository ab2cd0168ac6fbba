/* SPDX-License-Identifier: MIT */
/*
 * Page contents of the oversubscription workload (see oversub_pages.h).
 *
 * Generators must be cheap, because every page is generated twice (fill
 * and verification) and verification of a 2 GiB set generates 512K pages:
 * log text copies precomputed line tails, prose-like words come from 256
 * template pages built once (wordtext formats word by word, ~50x slower),
 * binary and random pages come from one splitmix step per word. Each
 * system compresses page by page, so repeating templates across pages
 * changes no system's compression ratio.
 *
 * The tables are written by ovs_pages_init() and only read afterwards.
 * They live in static storage, not in malloc memory, so that under the
 * preload library they are not managed (and not paged) themselves.
 */
#include <errno.h>
#include <string.h>

#include "logtext.h"
#include "oversub_pages.h"
#include "wordtext.h"

#define TEMPLATES 256
#define HEADER_MAGIC 0x4f56535550414745ULL /* "OVSUPAGE" */

static char templates[TEMPLATES][OVS_PAGE];

static const char *const data_names[] = {
	[OVS_TEXT] = "text",	 [OVS_WORDS_TEXT] = "words",
	[OVS_BINARY] = "binary", [OVS_RANDOM] = "random",
	[OVS_ZEROS] = "zeros",	 [OVS_MIX] = "mix",
};

const char *ovs_data_name(enum ovs_data d)
{
	return data_names[d];
}

int ovs_data_parse(const char *s, enum ovs_data *out)
{
	unsigned i;

	for (i = 0; i < sizeof(data_names) / sizeof(data_names[0]); i++) {
		if (!strcmp(s, data_names[i])) {
			*out = (enum ovs_data)i;
			return 0;
		}
	}
	return -EINVAL;
}

void ovs_pages_init(void)
{
	unsigned i;

	logtext_init();
	for (i = 0; i < TEMPLATES; i++)
		wordtext_fill(templates[i], OVS_PAGE, 1000 + i);
}

enum ovs_data ovs_page_kind(enum ovs_data d, uint64_t page)
{
	unsigned r;

	if (d != OVS_MIX)
		return d;
	r = (unsigned)(mix(page ^ 0x6d6978ULL) % 20);
	if (r < 10)
		return OVS_TEXT;
	if (r < 15)
		return OVS_BINARY;
	if (r < 17)
		return OVS_ZEROS;
	return OVS_RANDOM;
}

size_t ovs_stamp_index(uint64_t page)
{
	return 1 + (size_t)(mix(page) % (OVS_WORDS - 1));
}

uint64_t ovs_stamp(enum ovs_data d, uint64_t page, uint32_t version)
{
	/* A zero page stays all zeros until its first write. */
	if (!version && ovs_page_kind(d, page) == OVS_ZEROS)
		return 0;
	return mix((page << 32) | version) | 1;
}

/*
 * 64-byte records as a program's heap holds them: an id, a small counter,
 * flag bits, two pointer-like words sharing their high bits, a timestamp,
 * a price-like double, and padding.
 */
static void binary_page(uint64_t *w, uint64_t page)
{
	uint64_t rng = page ^ 0x62696e617279ULL;
	size_t i;

	for (i = 0; i < OVS_WORDS; i += 8) {
		uint64_t r = next_rand(&rng);
		double price = (double)((r >> 40) % 100000) / 100.0;

		w[i] = page * 64 + i / 8;
		w[i + 1] = (r % 1000) | ((r >> 10) & 7) << 32;
		w[i + 2] = 0x00007f3a00000000ULL | ((r >> 16) & 0xfffff) << 4;
		w[i + 3] = r & 1 ? w[i + 2] + 64 : 0;
		w[i + 4] = 1700000000000ULL + page * 1000 + i;
		memcpy(&w[i + 5], &price, sizeof(price));
		w[i + 6] = 0;
		w[i + 7] = 0;
	}
}

static void random_page(uint64_t *w, uint64_t page)
{
	uint64_t rng = page ^ 0x72616e646f6dULL;
	size_t i;

	for (i = 0; i < OVS_WORDS; i++)
		w[i] = next_rand(&rng);
}

static void base_page(char *dst, enum ovs_data kind, uint64_t page)
{
	switch (kind) {
	case OVS_TEXT:
		logtext_page(dst, page);
		break;
	case OVS_WORDS_TEXT:
		memcpy(dst, templates[mix(page) % TEMPLATES], OVS_PAGE);
		break;
	case OVS_BINARY:
		binary_page((uint64_t *)dst, page);
		break;
	case OVS_RANDOM:
		random_page((uint64_t *)dst, page);
		break;
	default:
		memset(dst, 0, OVS_PAGE);
		return;
	}
	((uint64_t *)dst)[0] = page ^ HEADER_MAGIC;
}

void ovs_page_fill(char *dst, enum ovs_data d, uint64_t page, uint32_t version)
{
	uint64_t stamp = ovs_stamp(d, page, version);

	base_page(dst, ovs_page_kind(d, page), page);
	memcpy(dst + ovs_stamp_index(page) * sizeof(uint64_t), &stamp,
	       sizeof(stamp));
}

/* SPDX-License-Identifier: MIT */
/*
 * The oversubscription workload's page contents: what page N holds at
 * version V, for each kind of data. A page is a pure function of (kind,
 * N, V), so the final verification can regenerate every page and compare
 * it byte for byte, and an operation can check one word cheaply.
 *
 * Layout of a page (4 KiB): word 0 is a header naming the page (absent in
 * zero pages), the stamp word at a page-dependent offset holds
 * oversub_stamp(N, V), everything else is the kind's base content, which
 * never changes after the fill.
 */
#ifndef UPG_BENCH_OVERSUB_PAGES_H
#define UPG_BENCH_OVERSUB_PAGES_H

#include <stddef.h>
#include <stdint.h>

#define OVS_PAGE 4096UL
#define OVS_WORDS (OVS_PAGE / sizeof(uint64_t))

enum ovs_data {
	OVS_TEXT,	/* log-like text, LZ4 about 2.5x (examples/logtext) */
	OVS_WORDS_TEXT, /* prose-like words, LZ4 about 1.5x (wordtext) */
	OVS_BINARY,	/* records of ids, counters, pointers and padding */
	OVS_RANDOM,	/* incompressible */
	OVS_ZEROS,	/* zero pages: same-filled for every system */
	OVS_MIX, /* per page: 50% text, 25% binary, 10% zeros, 15% random */
};

/* The name of @d as the command line spells it. */
const char *ovs_data_name(enum ovs_data d);

/* Parse a --data value. Return: 0, or -EINVAL. */
int ovs_data_parse(const char *s, enum ovs_data *out);

/* Build the tables the generators read; call once before the others. */
void ovs_pages_init(void);

/* The concrete kind (never OVS_MIX) of page @page under @d. */
enum ovs_data ovs_page_kind(enum ovs_data d, uint64_t page);

/* Index of the word of @page that operations read and write. */
size_t ovs_stamp_index(uint64_t page);

/* What the stamp word of @page holds at @version under @d. */
uint64_t ovs_stamp(enum ovs_data d, uint64_t page, uint32_t version);

/* Write the full expected contents of @page at @version to @dst. */
void ovs_page_fill(char *dst, enum ovs_data d, uint64_t page, uint32_t version);

#endif

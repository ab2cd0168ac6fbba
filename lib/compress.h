/* SPDX-License-Identifier: MIT */
/*
 * Page compression: same-filled detection and LZ4. The only file that
 * includes <lz4.h> is compress.c.
 */
#ifndef UPG_COMPRESS_H
#define UPG_COMPRESS_H

#include <stdbool.h>
#include <stdint.h>

/* Worst-case compressed size of one page that we still keep compressed. */
#define UPG_COMPRESS_MAX 3584

/*
 * upg_page_same_filled() - whether @page is one 64-bit word repeated
 * Returns true and the word in @word.
 */
bool upg_page_same_filled(const void *page, uint64_t *word);

/* upg_page_fill() - fill a page with @word repeated */
void upg_page_fill(void *page, uint64_t word);

/*
 * upg_compress_page() - LZ4-compress one page into @dst (@cap bytes)
 * Return: the compressed length, or 0 when it does not fit in @cap
 * (the page does not compress well enough: store it raw).
 */
int upg_compress_page(const void *page, void *dst, int cap);

/*
 * upg_decompress_page() - restore one page from @len bytes at @src
 * Return: 0, or -EIO when the data is corrupt.
 */
int upg_decompress_page(const void *src, int len, void *page);

#endif

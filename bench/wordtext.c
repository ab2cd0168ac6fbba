/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "wordtext.h"

uint64_t wordtext_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static const char *const words[64] = {
	"the",	    "of",      "and",	  "to",	     "in",     "is",
	"that",	    "for",     "it",	  "as",	     "was",    "with",
	"be",	    "by",      "on",	  "not",     "he",     "this",
	"are",	    "or",      "his",	  "from",    "at",     "which",
	"but",	    "have",    "an",	  "had",     "they",   "you",
	"were",	    "their",   "one",	  "all",     "we",     "can",
	"her",	    "has",     "there",	  "been",    "if",     "more",
	"when",	    "will",    "would",	  "who",     "so",     "no",
	"memory",   "page",    "kernel",  "process", "thread", "fault",
	"compress", "storage", "request", "server",  "client", "value",
	"key",	    "index",   "record",  "time",
};

void wordtext_fill(char *page, size_t len, uint64_t seed)
{
	uint64_t s = seed * 2654435761ULL + 1;
	size_t off = 0;

	while (off < len) {
		char word[32];
		uint64_t r = wordtext_rand(&s);
		int n;

		if (r % 11 == 0)
			n = snprintf(word, sizeof(word), "%u ",
				     (unsigned)(r >> 40) % 100000);
		else
			n = snprintf(word, sizeof(word), "%s%c", words[r % 64],
				     (r >> 32) % 13 ? ' ' : '\n');
		if ((size_t)n > len - off)
			n = (int)(len - off);
		memcpy(page + off, word, (size_t)n);
		off += (size_t)n;
	}
}

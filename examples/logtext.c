/* SPDX-License-Identifier: MIT */
/*
 * Log-like text: lines such as
 *
 *   2025-06-03T04:12:09.417Z INFO  worker-3 user=carol op=read
 *   path=/home/carol/docs/report-0042.txt bytes=18432 took=12ms
 *
 * (one line each), with timestamps that grow down the page. Invariant: a
 * page's text depends only on its number. The line table is written once
 * by logtext_init() and only read afterwards, so any thread may generate.
 */
#include <stddef.h>
#include <string.h>

#include "logtext.h"

#define PAGE LOGTEXT_PAGE

/*
 * A line is a timestamp, then one of TAILS precomputed tails (level, user,
 * operation, path, size, duration): a page costs a few copies per line
 * rather than formatting, which matters because the demo generates every
 * page twice. A tail is at most ~110 bytes; its slot holds TAIL_MAX.
 */
#define TAILS 4096
#define TAIL_MAX 128
#define TIME_LEN 25 /* "2025-06-03T04:12:09.417Z " */

struct tail {
	unsigned char len;
	char s[TAIL_MAX];
};

static struct tail tails[TAILS];

/* @v in decimal, zero-padded to @width digits. */
static char *put_num(char *p, unsigned long v, int width)
{
	char d[24];
	int n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v || n < width);
	while (n)
		*p++ = d[--n];
	return p;
}

/* Two digits of @v < 100; no loop, this runs for every line. */
static char *put2(char *p, unsigned long v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
	return p + 2;
}

/* The timestamp at @ms milliseconds: TIME_LEN bytes. */
static char *put_time(char *p, unsigned long ms)
{
	memcpy(p, "2025-06-", 8);
	p = put2(p + 8, 1 + ms / 86400000 % 28);
	*p++ = 'T';
	p = put2(p, ms / 3600000 % 24);
	*p++ = ':';
	p = put2(p, ms / 60000 % 60);
	*p++ = ':';
	p = put2(p, ms / 1000 % 60);
	*p++ = '.';
	*p++ = (char)('0' + ms / 100 % 10);
	p = put2(p, ms % 100);
	memcpy(p, "Z ", 2);
	return p + 2;
}

#define PICK(a, r) ((a)[(r) % (sizeof(a) / sizeof((a)[0]))])

/* The rest of a line after its timestamp, "INFO  worker-3 ... took=12ms\n". */
static char *put_tail(char *p, uint64_t r)
{
	static const char *const level[] = { "INFO  ", "INFO  ", "INFO  ",
					     "DEBUG ", "WARN  ", "ERROR " };
	static const char *const user[] = {
		"alice", "bob",	  "carol", "dave", "erin",  "frank",
		"grace", "heidi", "ivan",  "judy", "oscar", "peggy"
	};
	static const char *const op[] = { "read", "write",  "open",
					  "stat", "rename", "unlink" };
	static const char *const dir[] = { "docs",  "src",    "mail",
					   "cache", "photos", "build" };
	static const char *const file[] = { "report", "main",	"notes",
					    "index",  "config", "draft",
					    "invoice" };
	static const char *const ext[] = { ".txt",  ".c",   ".md",
					   ".json", ".jpg", ".log" };
	const char *u = PICK(user, r >> 8);

	p = stpcpy(p, PICK(level, r));
	p = put_num(stpcpy(p, "worker-"), (r >> 4) % 8, 1);
	p = stpcpy(stpcpy(stpcpy(p, " user="), u), " op=");
	p = stpcpy(stpcpy(stpcpy(p, PICK(op, r >> 12)), " path=/home/"), u);
	p = stpcpy(stpcpy(stpcpy(p, "/"), PICK(dir, r >> 16)), "/");
	p = put_num(stpcpy(stpcpy(p, PICK(file, r >> 20)), "-"),
		    (r >> 24) % 100, 4);
	p = stpcpy(stpcpy(p, PICK(ext, r >> 32)), " bytes=");
	p = put_num(p, (r >> 36) % 65536, 1);
	p = put_num(stpcpy(p, " took="), (r >> 52) % 200, 1);
	return stpcpy(p, "ms\n");
}

void logtext_init(void)
{
	char buf[TAIL_MAX + 64]; /* put_tail() has no bound */
	uint64_t rng = 42;
	unsigned i;

	for (i = 0; i < TAILS; i++) {
		size_t n = (size_t)(put_tail(buf, next_rand(&rng)) - buf);

		tails[i].len = (unsigned char)n;
		memcpy(tails[i].s, buf, n);
	}
}

void logtext_page(char *dst, uint64_t page)
{
	char line[TIME_LEN + TAIL_MAX];
	uint64_t rng = page;
	unsigned long ms = (unsigned long)page * 5003;
	char *p = dst, *end = dst + PAGE;

	/*
	 * Lines go straight to @dst while a timestamp and a whole tail slot
	 * fit: copying the slot at its fixed size is much faster than
	 * copying t->len bytes.
	 */
	while (end - p >= (ptrdiff_t)sizeof(line)) {
		uint64_t r = next_rand(&rng);
		const struct tail *t = &tails[r % TAILS];

		p = put_time(p, ms += r >> 56);
		memcpy(p, t->s, TAIL_MAX);
		p += t->len;
	}
	while (p < end) {
		uint64_t r = next_rand(&rng);
		const struct tail *t = &tails[r % TAILS];
		char *q = put_time(line, ms += r >> 56);
		size_t n = (size_t)(q - line) + t->len;

		memcpy(q, t->s, t->len);
		n = n < (size_t)(end - p) ? n : (size_t)(end - p);
		memcpy(p, line, n); /* the last line is cut */
		p += n;
	}
}

/* SPDX-License-Identifier: MIT */
/*
 * Options: one X-macro table, UPG_OPTIONS, generates the defaults, the
 * UPG_* environment parsing, upg_params_set() and the printout of struct
 * upg_params. Adding an option is one line in the table plus its field.
 *
 * No locking: parameters are plain values owned by the caller, read once at
 * init and never on the fault path. Invariants: a failed
 * upg_params_from_env() or upg_params_set() leaves the parameters unchanged,
 * and every failure leaves upg_last_error() naming the variable, the value
 * and the accepted forms. Parsing is ASCII-only and locale-independent
 * enough for option text (no strtoul: it accepts spaces and signs).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common.h"
#include "options.h"

/*
 * X(NAME, field, type, default, help): environment variable UPG_<NAME>,
 * field of struct upg_params, type (size, uint, bool, level, path or idle),
 * the default as text (parsed by upg_params_init()) and one line of help.
 */
/* clang-format off */
#define UPG_OPTIONS(X)							\
	X(BUDGET, budget, size, "1G",					\
	  "resident bytes at most (4M or more)")			\
	X(POOL_MAX, pool_max, size, "0",				\
	  "compressed pool limit; 0 = 1/4 of RAM")			\
	X(HEADROOM, headroom, size, "0",				\
	  "free budget the evictor keeps; 0 = auto")			\
	X(RESERVE, reserve, size, "64G",				\
	  "default region size (allocator)")				\
	X(FREE_DIRTY, free_dirty, size, "0",				\
	  "freed bytes the allocator keeps before discarding; 0 = auto") \
	X(HANDLERS, handlers, uint, "0",				\
	  "fault handler threads; 0 = one per CPU")			\
	X(IDLE_HANDLERS, idle_handlers, idle, "auto",			\
	  "fault handlers at idle priority: on, off, or auto (idle, "	\
	  "normal while faults wait for a busy CPU)")			\
	X(CLUSTER, cluster, uint, "16",					\
	  "fault-around pages, power of two 1-256")			\
	X(MOVE, use_move, bool, "on",					\
	  "evict with UFFDIO_MOVE if the kernel has it")		\
	X(REMAP, use_remap, bool, "on",					\
	  "evict scattered pages by moving page tables (mremap)")	\
	X(WP_ASYNC, use_wp_async, bool, "on",				\
	  "track clean pages with async write-protect")			\
	X(REMOVE_EVENTS, use_remove, bool, "on",			\
	  "follow the program's madvise(DONTNEED)")			\
	X(POOL_COMPACT, pool_compact, bool, "on",			\
	  "move pool objects out of sparse chunks to give memory back") \
	X(SWAP_FILE, swap_file, path, "",				\
	  "swap file, directory or device; empty = unlinked "		\
	  "file in $TMPDIR or /var/tmp; off = none")			\
	X(SWAP_MAX, swap_max, size, "0",				\
	  "swap file size limit; 0 = the file system's")		\
	X(SWAP_DIRECT, swap_direct, bool, "on",				\
	  "O_DIRECT swap I/O (no page cache)")				\
	X(SWAP_READAHEAD, swap_readahead, uint, "32",			\
	  "swap-in readahead, pages, power of two 1-256; 1 = off")	\
	X(SWAP_POLL, swap_poll_us, uint, "200",				\
	  "swap-in: poll for the read this many microseconds "		\
	  "(0-10000) before sleeping; 0 = sleep at once")		\
	X(STATS, stats, bool, "off",					\
	  "print statistics at exit")					\
	X(LOG, log_level, level, "1",					\
	  "0 error, 1 warn, 2 info, 3 debug")
/* clang-format on */

#define SIZE_FORMS "a size such as 4096, 64K, 512M or 2G"
#define BOOL_FORMS "on or off (also 1/0, yes/no, true/false)"
#define LEVEL_FORMS "a log level: 0-3 or error, warn, info, debug"
#define IDLE_FORMS "auto, or " BOOL_FORMS

/* clang-format off */
enum opt_id {
#define OPT_ENUM(n, f, t, d, h) OPT_##n,
	UPG_OPTIONS(OPT_ENUM)
#undef OPT_ENUM
	OPT_NR
};

/* The C type of each option type; the table's fields are checked against it. */
#define ctype_size size_t
#define ctype_uint unsigned
#define ctype_bool bool
#define ctype_level int
#define ctype_path char *
#define ctype_idle enum upg_idle_mode
#define OPT_CHECK(n, f, t, d, h)					\
	_Static_assert(_Generic(((struct upg_params *)0)->f,		\
				ctype_##t: 1, default: 0),		\
		       "UPG_" #n ": the field's type does not match " #t);
UPG_OPTIONS(OPT_CHECK)
#undef OPT_CHECK
/* clang-format on */

/* "UPG_BUDGET, UPG_POOL_MAX, ..., " for error messages. */
#define OPT_NAME_LIST(n, f, t, d, h) "UPG_" #n ", "
static const char opt_names[] = UPG_OPTIONS(OPT_NAME_LIST);
#undef OPT_NAME_LIST

/*
 * A parser writes *field only on success; on failure it returns -EINVAL and
 * sets the error text with @name ("UPG_BUDGET", or NULL for none).
 */
typedef int opt_parse_fn(const char *name, const char *s, void *field);
typedef void opt_format_fn(const void *field, char *buf, size_t len);

struct opt {
	const char *name; /* "UPG_BUDGET" */
	size_t off;	  /* of the field in struct upg_params */
	opt_parse_fn *parse;
	opt_format_fn *format;
	const char *def;
	const char *help;
};

static opt_parse_fn parse_size, parse_uint, parse_bool, parse_level, parse_path,
	parse_idle;
static opt_format_fn format_size, format_uint, format_bool, format_level,
	format_path, format_idle;

#define PATH_MAX_LEN sizeof(((struct upg_params *)0)->swap_file)

/* clang-format off */
static const struct opt opts[OPT_NR] = {
#define OPT_DESC(n, f, t, d, h)						\
	{ "UPG_" #n, offsetof(struct upg_params, f),			\
	  parse_##t, format_##t, d, h },
	UPG_OPTIONS(OPT_DESC)
#undef OPT_DESC
};
/* clang-format on */

struct word {
	const char *word;
	int value;
};

static const struct word bool_words[] = {
	{ "1", 1 },   { "0", 0 },  { "on", 1 },	  { "off", 0 },
	{ "yes", 1 }, { "no", 0 }, { "true", 1 }, { "false", 0 },
};

static const struct word level_words[] = {
	{ "error", UPG_LOG_ERROR },  { "warn", UPG_LOG_WARN },
	{ "warning", UPG_LOG_WARN }, { "info", UPG_LOG_INFO },
	{ "debug", UPG_LOG_DEBUG },
};

/* ---- parsing ---- */

/*
 * Set the error for value @s of option @name. The value is cut at 80
 * characters so that the accepted forms always fit in the message.
 */
static int bad_value(const char *name, const char *s, const char *expected)
{
	return upg_seterr(-EINVAL, "%s%sinvalid value \"%.80s\": expected %s",
			  name ? name : "", name ? ": " : "", s, expected);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Parse the decimal digits at *s, at most @max, and move *s past them.
 * Return: 0, -EINVAL if there is no digit, -ERANGE above @max.
 */
static int parse_digits(const char **s, uint64_t max, uint64_t *out)
{
	const char *p = *s;
	uint64_t v = 0;

	if (!is_digit(*p))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (d > max || v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*s = p;
	*out = v;
	return 0;
}

/* Return: 0, -EINVAL for a malformed size, -ERANGE past SIZE_MAX. */
static int size_from_text(const char *s, size_t *out)
{
	static const char units[] = "kmgtpe";
	const char *u = NULL;
	unsigned shift = 0;
	uint64_t v;
	int ret;

	ret = parse_digits(&s, SIZE_MAX, &v);
	if (ret < 0)
		return ret;
	if (*s)
		u = strchr(units, *s | 0x20); /* ASCII lower case */
	if (u) {
		shift = 10 * (unsigned)(u - units + 1);
		s++;
	}
	if (*s && strcasecmp(s, "b") && (!u || strcasecmp(s, "ib")))
		return -EINVAL;
	if (v > (SIZE_MAX >> shift))
		return -ERANGE;
	*out = (size_t)v << shift;
	return 0;
}

static int parse_size(const char *name, const char *s, void *field)
{
	int ret = size_from_text(s, field);

	if (ret == -ERANGE)
		return upg_seterr(-EINVAL,
				  "%s%sinvalid value \"%.80s\": too large, the "
				  "most is %zu bytes",
				  name ? name : "", name ? ": " : "", s,
				  (size_t)SIZE_MAX);
	if (ret < 0 && strchr(s, '.'))
		return bad_value(name, s,
				 SIZE_FORMS " (whole numbers only: write "
					    "1536M, not 1.5G)");
	if (ret < 0)
		return bad_value(name, s, SIZE_FORMS);
	return 0;
}

static int parse_uint(const char *name, const char *s, void *field)
{
	const char *p = s;
	char forms[64];
	uint64_t v;

	if (parse_digits(&p, UINT_MAX, &v) == 0 && !*p) {
		*(unsigned *)field = (unsigned)v;
		return 0;
	}
	snprintf(forms, sizeof(forms), "a whole number from 0 to %u", UINT_MAX);
	return bad_value(name, s, forms);
}

static int find_word(const struct word *w, size_t n, const char *s, int *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (!strcasecmp(s, w[i].word)) {
			*out = w[i].value;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_bool(const char *name, const char *s, void *field)
{
	int v;

	if (find_word(bool_words, ARRAY_SIZE(bool_words), s, &v) < 0)
		return bad_value(name, s, BOOL_FORMS);
	*(bool *)field = v;
	return 0;
}

static int parse_level(const char *name, const char *s, void *field)
{
	const char *p = s;
	uint64_t v;
	int w;

	if (find_word(level_words, ARRAY_SIZE(level_words), s, &w) == 0) {
		*(int *)field = w;
		return 0;
	}
	if (parse_digits(&p, UPG_LOG_DEBUG, &v) == 0 && !*p) {
		*(int *)field = (int)v;
		return 0;
	}
	return bad_value(name, s, LEVEL_FORMS);
}

static int parse_idle(const char *name, const char *s, void *field)
{
	int v;

	if (!strcasecmp(s, "auto")) {
		*(enum upg_idle_mode *)field = UPG_IDLE_AUTO;
		return 0;
	}
	if (find_word(bool_words, ARRAY_SIZE(bool_words), s, &v) < 0)
		return bad_value(name, s, IDLE_FORMS);
	*(enum upg_idle_mode *)field = v ? UPG_IDLE_ON : UPG_IDLE_OFF;
	return 0;
}

static int parse_path(const char *name, const char *s, void *field)
{
	char forms[64];

	if (strlen(s) < PATH_MAX_LEN) {
		memcpy(field, s, strlen(s) + 1);
		return 0;
	}
	snprintf(forms, sizeof(forms), "a path of at most %zu bytes",
		 PATH_MAX_LEN - 1);
	return bad_value(name, s, forms);
}

int upg_opt_parse_size(const char *s, size_t *out)
{
	if (!s || !out)
		return upg_seterr(-EINVAL, "invalid size: none given");
	return parse_size(NULL, s, out);
}

int upg_parse_size(const char *s, size_t *out)
{
	return upg_opt_parse_size(s, out);
}

int upg_opt_parse_bool(const char *s, bool *out)
{
	if (!s || !out)
		return upg_seterr(-EINVAL, "invalid boolean: none given");
	return parse_bool(NULL, s, out);
}

/* ---- formatting ---- */

static const char size_units[] = "KMGTPE";

const char *upg_opt_format_size(size_t v, char *buf, size_t len)
{
	unsigned i = 0;

	while (v && !(v & 1023) && i < sizeof(size_units) - 1) {
		v >>= 10;
		i++;
	}
	if (i)
		snprintf(buf, len, "%zu%c", v, size_units[i - 1]);
	else
		snprintf(buf, len, "%zu", v);
	return buf;
}

/* Like upg_opt_format_size() but rounded to the largest unit: "23.4G". */
static const char *format_size_approx(size_t v, char *buf, size_t len)
{
	unsigned i = 0;

	while (i < sizeof(size_units) - 1 && (v >> (10 * (i + 1))))
		i++;
	if (!i || !(v & ((1UL << (10 * i)) - 1)))
		return upg_opt_format_size(v, buf, len);
	snprintf(buf, len, "%.1f%c", (double)v / (double)(1UL << (10 * i)),
		 size_units[i - 1]);
	return buf;
}

static void format_size(const void *field, char *buf, size_t len)
{
	upg_opt_format_size(*(const size_t *)field, buf, len);
}

static void format_uint(const void *field, char *buf, size_t len)
{
	snprintf(buf, len, "%u", *(const unsigned *)field);
}

static void format_bool(const void *field, char *buf, size_t len)
{
	snprintf(buf, len, "%s", *(const bool *)field ? "on" : "off");
}

static void format_level(const void *field, char *buf, size_t len)
{
	snprintf(buf, len, "%d", *(const int *)field);
}

static void format_idle(const void *field, char *buf, size_t len)
{
	static const char *const names[] = { "off", "on", "auto" };
	unsigned v = *(const enum upg_idle_mode *)field;

	snprintf(buf, len, "%s", v < ARRAY_SIZE(names) ? names[v] : "?");
}

static void format_path(const void *field, char *buf, size_t len)
{
	snprintf(buf, len, "%s", (const char *)field);
}

size_t upg_opt_phys_mem(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long psize = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || psize <= 0)
		return 0;
	if ((unsigned long)pages > SIZE_MAX / (unsigned long)psize)
		return SIZE_MAX;
	return (size_t)pages * (size_t)psize;
}

/* ---- the parameter set ---- */

static void *field_of(struct upg_params *p, const struct opt *o)
{
	return (char *)p + o->off;
}

static const void *cfield_of(const struct upg_params *p, const struct opt *o)
{
	return (const char *)p + o->off;
}

/* Parameters must come from upg_params_init(): it sets p->size. */
static int check_params(const struct upg_params *p)
{
	if (p && p->size >= sizeof(*p))
		return 0;
	return upg_seterr(-EINVAL, "struct upg_params: not initialised "
				   "with upg_params_init()");
}

void upg_params_init(struct upg_params *p)
{
	unsigned i;

	if (!p)
		return;
	memset(p, 0, sizeof(*p));
	p->size = sizeof(*p);
	/* The defaults are valid: the tests parse every one of them. */
	for (i = 0; i < OPT_NR; i++)
		opts[i].parse(opts[i].name, opts[i].def, field_of(p, &opts[i]));
}

int upg_params_from_env(struct upg_params *p)
{
	struct upg_params tmp;
	unsigned i;
	int ret;

	ret = check_params(p);
	if (ret < 0)
		return ret;
	tmp = *p;
	for (i = 0; i < OPT_NR; i++) {
		const char *v = getenv(opts[i].name);

		if (!v)
			continue;
		ret = opts[i].parse(opts[i].name, v, field_of(&tmp, &opts[i]));
		if (ret < 0)
			return ret;
	}
	*p = tmp;
	return 0;
}

static const struct opt *find_opt(const char *name)
{
	unsigned i;

	if (!strncasecmp(name, "UPG_", 4))
		name += 4;
	for (i = 0; i < OPT_NR; i++) {
		if (!strcasecmp(name, opts[i].name + 4))
			return &opts[i];
	}
	return NULL;
}

int upg_params_set(struct upg_params *p, const char *name, const char *value)
{
	const struct opt *o;
	int ret;

	ret = check_params(p);
	if (ret < 0)
		return ret;
	if (!name)
		return upg_seterr(-EINVAL, "upg_params_set: no option name");
	o = find_opt(name);
	if (!o)
		return upg_seterr(-ENOENT,
				  "unknown option \"%.80s\"; the options are "
				  "%.*s",
				  name, (int)sizeof(opt_names) - 3, opt_names);
	if (!value)
		return upg_seterr(-EINVAL, "%s: no value given", o->name);
	return o->parse(o->name, value, field_of(p, o));
}

/* ---- validation ---- */

static int check_budget(const struct upg_params *p)
{
	size_t phys = upg_opt_phys_mem();
	char b[32], m[32];

	upg_opt_format_size(p->budget, b, sizeof(b));
	if (p->budget < UPG_BUDGET_MIN)
		return upg_seterr(
			-EINVAL, "UPG_BUDGET: must be at least %s (got %s)",
			upg_opt_format_size(UPG_BUDGET_MIN, m, sizeof(m)), b);
	if (phys && p->budget > phys)
		return upg_seterr(-EINVAL,
				  "UPG_BUDGET: %s is more than this machine's "
				  "%s of memory",
				  b, format_size_approx(phys, m, sizeof(m)));
	if (p->budget > p->reserve)
		return upg_seterr(
			-EINVAL,
			"UPG_BUDGET: %s is larger than the region "
			"size UPG_RESERVE=%s",
			b, upg_opt_format_size(p->reserve, m, sizeof(m)));
	return 0;
}

static int check_pool(const struct upg_params *p)
{
	char v[32], b[32];

	if (p->pool_max && p->pool_max < (1UL << 20))
		return upg_seterr(
			-EINVAL,
			"UPG_POOL_MAX: must be 0 (auto) or at least "
			"1M (got %s)",
			upg_opt_format_size(p->pool_max, v, sizeof(v)));
	if (p->headroom && p->headroom >= p->budget)
		return upg_seterr(
			-EINVAL,
			"UPG_HEADROOM: %s must be less than "
			"UPG_BUDGET=%s (or 0 for auto)",
			upg_opt_format_size(p->headroom, v, sizeof(v)),
			upg_opt_format_size(p->budget, b, sizeof(b)));
	return 0;
}

static int check_counts(const struct upg_params *p)
{
	unsigned c = p->cluster;

	if (!c || c > 256 || (c & (c - 1)))
		return upg_seterr(-EINVAL,
				  "UPG_CLUSTER: must be a power of two from 1 "
				  "to 256 (got %u)",
				  c);
	c = p->swap_readahead;
	if (!c || c > 256 || (c & (c - 1)))
		return upg_seterr(-EINVAL,
				  "UPG_SWAP_READAHEAD: must be a power of two "
				  "from 1 to 256 (got %u)",
				  c);
	if (p->swap_poll_us > UPG_SWAP_POLL_MAX_US)
		return upg_seterr(-EINVAL,
				  "UPG_SWAP_POLL: must be at most %u "
				  "microseconds, 0 to sleep at once (got %u)",
				  UPG_SWAP_POLL_MAX_US, p->swap_poll_us);
	if (p->swap_max && p->swap_max < (1UL << 20))
		return upg_seterr(-EINVAL,
				  "UPG_SWAP_MAX: must be 0 (no limit) or at "
				  "least 1M (got %zu)",
				  p->swap_max);
	if (p->handlers > 1024)
		return upg_seterr(
			-EINVAL,
			"UPG_HANDLERS: must be at most 1024, or 0 for "
			"one per CPU (got %u)",
			p->handlers);
	if (p->log_level < UPG_LOG_ERROR || p->log_level > UPG_LOG_DEBUG)
		return upg_seterr(-EINVAL, "UPG_LOG: must be %s (got %d)",
				  LEVEL_FORMS, p->log_level);
	return 0;
}

int upg_opt_validate(const struct upg_params *p)
{
	int ret;

	ret = check_params(p);
	if (!ret)
		ret = check_budget(p);
	if (!ret)
		ret = check_pool(p);
	if (!ret)
		ret = check_counts(p);
	return ret;
}

/* ---- printing ---- */

#define VAL_LEN 32

struct widths {
	int name, value, def;
};

static struct widths column_widths(char val[][VAL_LEN])
{
	struct widths w = { (int)strlen("variable"), (int)strlen("value"),
			    (int)strlen("default") };
	unsigned i;

	for (i = 0; i < OPT_NR; i++) {
		w.name = MAX(w.name, (int)strlen(opts[i].name));
		w.value = MAX(w.value, (int)strlen(val[i]));
		w.def = MAX(w.def, (int)strlen(opts[i].def));
	}
	return w;
}

void upg_options_print(FILE *f, const struct upg_params *p)
{
	struct upg_params defaults;
	char val[OPT_NR][VAL_LEN];
	struct widths w;
	unsigned i;

	upg_params_init(&defaults);
	if (!p)
		p = &defaults;
	for (i = 0; i < OPT_NR; i++)
		opts[i].format(cfield_of(p, &opts[i]), val[i], VAL_LEN);
	w = column_widths(val);
	fprintf(f, "%-*s  %-*s  %-*s  %s\n", w.name, "variable", w.value,
		"value", w.def, "default", "meaning");
	for (i = 0; i < OPT_NR; i++)
		fprintf(f, "%-*s  %-*s  %-*s  %s\n", w.name, opts[i].name,
			w.value, val[i], w.def, opts[i].def, opts[i].help);
}

/* SPDX-License-Identifier: MIT */
/* The oversubscription workload's command line (see oversub_args.h). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <upager.h>

#include "oversub_args.h"

#define PAGE OVS_PAGE
#define MiB (1UL << 20)
#define MAX_THREADS OVS_MAX_THREADS

const char *const ovs_mode_names[] = { "malloc", "api" };
const char *const ovs_pattern_names[] = { "uniform", "zipf", "seq", "hotcold" };
const char *const ovs_corrupt_names[] = { "none", "lost-write", "zero-page" };

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

void ovs_usage(FILE *f)
{
	fprintf(f,
		"usage: oversub [options]\n"
		"\n"
		"Fill a working set, run timed operations on its pages, verify\n"
		"every page, print one JSON line. Run it under a memory limit\n"
		"(cgroup + swap), under LD_PRELOAD=libupager-preload.so, or with\n"
		"--mode api. bench/oversub-compare runs it under each system.\n"
		"\n"
		"  --mode M        malloc (default: aligned_alloc, so it runs\n"
		"                  under any pager) or api (upg_reserve)\n"
		"  --size SIZE     working set (default 1G)\n"
		"  --budget SIZE   api mode: resident budget (default UPG_BUDGET)\n"
		"  --data D        text (log lines, LZ4 ~2.5x; default), words\n"
		"                  (prose, ~1.5x), binary, random, zeros, mix\n"
		"                  (50%% text, 25%% binary, 10%% zeros, 15%% random)\n"
		"  --pattern P     uniform (default), zipf, seq, hotcold\n"
		"  --theta T       zipf skew, 0 < T < 1 (default 0.99); ranks are\n"
		"                  scrambled over the pages\n"
		"  --hot-frac F    hotcold: share of pages that is hot (0.1)\n"
		"  --hot-prob P    hotcold: share of accesses to them (0.9)\n"
		"  --writes PCT    operations that write, 0-100 (default 100:\n"
		"                  every operation is a read-modify-write)\n"
		"  --threads N     worker threads, 1-%d (default 1); each works\n"
		"                  on its own contiguous slice of the pages\n"
		"  --seconds S     duration of the operations (default 10)\n"
		"  --ops N         run N operations in all instead\n"
		"  --seed N        seed of the page choices (default 1)\n"
		"  --hist FILE     write the latency histogram (lower_ns upper_ns\n"
		"                  count per line) to FILE\n"
		"  --debug-corrupt K  before verifying, damage one page on\n"
		"                  purpose: lost-write or zero-page (tests the\n"
		"                  verification; the run must then fail)\n"
		"  --help          this text\n"
		"\n"
		"SIZE takes a K, M, G or T suffix. An operation reads one word of\n"
		"a page and checks it; a write stores the page's next version.\n"
		"The JSON line has the run's ops/s, latency percentiles, CPU\n"
		"time and faults (getrusage), peak RSS and the verdict; in api\n"
		"mode also upager's statistics (counted from the start, fill\n"
		"included).\n"
		"Exit status: 0 all pages verified, 1 a page was wrong, 2 usage\n"
		"or setup error.\n",
		MAX_THREADS);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* A real number in (lo, hi), or [lo, hi] when @closed. */
static int parse_real(const char *s, double lo, double hi, bool closed,
		      double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || isnan(v))
		return -EINVAL;
	if (closed ? v < lo || v > hi : v <= lo || v >= hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_name(const char *s, const char *const *names, unsigned n,
		      unsigned *out)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

static int bad_flag(const char *flag, const char *value, const char *forms)
{
	fprintf(stderr, "oversub: --%s: invalid value \"%s\": expected %s\n",
		flag, value, forms);
	return -EINVAL;
}

static int apply_enum(struct config *c, const char *flag, const char *arg)
{
	unsigned v;

	if (!strcmp(flag, "mode")) {
		if (parse_name(arg, ovs_mode_names, 2, &v))
			return bad_flag(flag, arg, "malloc or api");
		c->mode = (enum mode)v;
	} else if (!strcmp(flag, "pattern")) {
		if (parse_name(arg, ovs_pattern_names, 4, &v))
			return bad_flag(flag, arg,
					"uniform, zipf, seq or hotcold");
		c->pattern = (enum pattern)v;
	} else if (!strcmp(flag, "data")) {
		if (ovs_data_parse(arg, &c->data))
			return bad_flag(flag, arg,
					"text, words, binary, random, zeros "
					"or mix");
	} else {
		if (parse_name(arg, ovs_corrupt_names, 3, &v))
			return bad_flag(flag, arg,
					"none, lost-write or zero-page");
		c->corrupt = (enum corrupt)v;
	}
	return 0;
}

static int apply_number(struct config *c, const char *flag, const char *arg)
{
	uint64_t v;

	if (!strcmp(flag, "size")) {
		if (upg_parse_size(arg, &c->size) || c->size < PAGE)
			return bad_flag(flag, arg, "a size like 1G (>= 4K)");
	} else if (!strcmp(flag, "budget")) {
		if (upg_parse_size(arg, &c->budget) || !c->budget)
			return bad_flag(flag, arg, "a size like 256M");
	} else if (!strcmp(flag, "theta")) {
		if (parse_real(arg, 0, 1, false, &c->theta))
			return bad_flag(flag, arg, "a number in (0, 1)");
	} else if (!strcmp(flag, "hot-frac")) {
		if (parse_real(arg, 0, 1, false, &c->hot_frac))
			return bad_flag(flag, arg, "a number in (0, 1)");
	} else if (!strcmp(flag, "hot-prob")) {
		if (parse_real(arg, 0, 1, true, &c->hot_prob))
			return bad_flag(flag, arg, "a number in [0, 1]");
	} else if (!strcmp(flag, "writes")) {
		if (parse_u64(arg, 100, &v))
			return bad_flag(flag, arg, "a percentage, 0 to 100");
		c->writes = (unsigned)v;
	} else if (!strcmp(flag, "threads")) {
		if (parse_u64(arg, MAX_THREADS, &v) || !v)
			return bad_flag(flag, arg, "1 to 64");
		c->threads = (unsigned)v;
	} else if (!strcmp(flag, "seconds")) {
		if (parse_real(arg, 0, 86400, false, &c->seconds))
			return bad_flag(flag, arg, "seconds, 0 < S < 86400");
	} else if (!strcmp(flag, "ops")) {
		if (parse_u64(arg, UINT64_MAX, &c->ops) || !c->ops)
			return bad_flag(flag, arg, "a positive count");
	} else if (parse_u64(arg, UINT64_MAX, &c->seed)) {
		return bad_flag(flag, arg, "a whole number");
	}
	return 0;
}

static const struct option longopts[] = {
	{ "mode", required_argument, NULL, 'e' },
	{ "pattern", required_argument, NULL, 'e' },
	{ "data", required_argument, NULL, 'e' },
	{ "debug-corrupt", required_argument, NULL, 'e' },
	{ "size", required_argument, NULL, 'n' },
	{ "budget", required_argument, NULL, 'n' },
	{ "theta", required_argument, NULL, 'n' },
	{ "hot-frac", required_argument, NULL, 'n' },
	{ "hot-prob", required_argument, NULL, 'n' },
	{ "writes", required_argument, NULL, 'n' },
	{ "threads", required_argument, NULL, 'n' },
	{ "seconds", required_argument, NULL, 'n' },
	{ "ops", required_argument, NULL, 'n' },
	{ "seed", required_argument, NULL, 'n' },
	{ "hist", required_argument, NULL, 'H' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Return: 0 to run, 1 for --help, -EINVAL after saying why. */
int ovs_parse_args(struct config *c, int argc, char **argv)
{
	int opt, idx = 0, ret = 0;

	*c = (struct config){ .size = 1024 * MiB,
			      .theta = 0.99,
			      .hot_frac = 0.1,
			      .hot_prob = 0.9,
			      .writes = 100,
			      .threads = 1,
			      .seconds = 10,
			      .seed = 1 };
	while (!ret &&
	       (opt = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		const char *flag = longopts[idx].name;

		if (opt == 'h')
			return 1;
		if (opt == '?')
			return -EINVAL;
		if (opt == 'H')
			c->hist_path = optarg;
		else if (opt == 'e')
			ret = apply_enum(c, flag, optarg);
		else
			ret = apply_number(c, flag, optarg);
		idx = 0;
	}
	if (!ret && optind < argc) {
		fprintf(stderr, "oversub: unexpected argument \"%s\"\n",
			argv[optind]);
		return -EINVAL;
	}
	if (!ret && c->threads > c->size / PAGE) {
		fprintf(stderr, "oversub: more threads than pages\n");
		return -EINVAL;
	}
	if (!ret && c->budget && c->mode != MODE_API) {
		fprintf(stderr, "oversub: --budget needs --mode api (in malloc "
				"mode the pager sets the limit)\n");
		return -EINVAL;
	}
	return ret;
}

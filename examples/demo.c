/* SPDX-License-Identifier: MIT */
/*
 * upager-demo: a working set four times larger than its resident budget.
 *
 * The demo reserves one managed region (1G by default) under a 256M budget,
 * fills it with log-like text, then runs random read-modify-write
 * operations for a while: each reads one word of a random page, checks it
 * against what the program last wrote there and writes a new value. The
 * truth lives outside managed memory (a version number per page, in malloc
 * memory), so a lost store or a stale page is caught on the spot; at the
 * end every page is compared byte for byte with its expected contents.
 *
 * Threads: worker i owns the pages p with p % threads == i, so the version
 * array needs no locking. The main thread samples upg_stats_get() for the
 * progress line while the workers run.
 *
 * Exit status: 0 when every page verified, 1 on a mismatch, 2 on a usage or
 * setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <upager.h>

#include "logtext.h"

#define PAGE LOGTEXT_PAGE
#define WORDS (PAGE / sizeof(uint64_t))
#define MiB (1UL << 20)
#define MAX_THREADS 256
#define MAX_BAD 8 /* mismatching pages reported by number */

enum { EXIT_MISMATCH = 1, EXIT_SETUP = 2 };

struct config {
	size_t budget; /* resident bytes */
	size_t size;   /* working set bytes */
	unsigned seconds;
	unsigned threads;
	bool json;
	bool options; /* print the option table and exit */
};

/* Pages found wrong; the lock is taken only on a mismatch. */
struct bad_pages {
	pthread_mutex_t lock;
	size_t count;
	size_t page[MAX_BAD];
};

/* Each counter on its own cache line: workers never share one. */
struct worker {
	_Alignas(64) _Atomic uint64_t ops;
	struct demo *d;
	unsigned id;
	pthread_t thread;
};

struct demo {
	struct config cfg;
	struct upg *u;
	char *mem; /* the managed region */
	size_t npages;
	uint32_t *version; /* per page, in ordinary memory: the truth */
	struct worker *workers;
	atomic_bool stop;
	struct bad_pages bad_ops;    /* found by the operations */
	struct bad_pages bad_verify; /* found by the final verification */
	double fill_s, run_s, verify_s;
	uint64_t ops;
	struct upg_stats end; /* after the operations, before verification */
};

static volatile sig_atomic_t interrupted;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (double)MiB;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: upager-demo [--budget SIZE] [--size SIZE] [--seconds N]\n"
		"                   [--threads N] [--json] [--options]\n"
		"\n"
		"Random read-modify-write over a working set larger than the\n"
		"resident budget, then a byte-for-byte check of every page.\n"
		"\n"
		"  --budget SIZE  resident budget (default 256M; or UPG_BUDGET)\n"
		"  --size SIZE    working set (default 1G)\n"
		"  --seconds N    duration of the operations (default 10)\n"
		"  --threads N    worker threads (default 1)\n"
		"  --json         print the summary as one JSON line\n"
		"  --options      print the UPG_* options in effect and exit\n"
		"\n"
		"SIZE is a whole number with an optional K, M, G or T suffix.\n"
		"Other settings come from UPG_* environment variables\n"
		"(see --options). Exit status: 0 all pages correct, 1 mismatch,\n"
		"2 usage or setup error.\n");
}

/* "4096", "64K", "256M", "1G", "1T" (optionally followed by B or iB). */
static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int bad_flag(const char *flag, const char *value, const char *forms)
{
	fprintf(stderr, "upager-demo: %s: invalid value \"%s\": expected %s\n",
		flag, value, forms);
	return -EINVAL;
}

/* Apply one flag; Return: 0, or -EINVAL after saying why. */
static int apply_flag(struct config *c, int opt, const char *arg)
{
	switch (opt) {
	case 'b':
		if (upg_parse_size(arg, &c->budget) < 0)
			return bad_flag("--budget", arg, "a size like 256M");
		return 0;
	case 's':
		if (upg_parse_size(arg, &c->size) < 0 || c->size < PAGE)
			return bad_flag("--size", arg, "a size like 1G");
		return 0;
	case 't':
		if (parse_uint(arg, 86400, &c->seconds) < 0)
			return bad_flag("--seconds", arg, "0 to 86400");
		return 0;
	case 'j':
		if (parse_uint(arg, MAX_THREADS, &c->threads) < 0 ||
		    !c->threads)
			return bad_flag("--threads", arg, "1 to 256");
		return 0;
	}
	return -EINVAL;
}

/*
 * Parse the flags into @c. Return: 0 to run, 1 when --help was given,
 * -EINVAL on a usage error.
 */
static int parse_args(struct config *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "budget", required_argument, NULL, 'b' },
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "threads", required_argument, NULL, 'j' },
		{ "json", no_argument, NULL, 'J' },
		{ "options", no_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (opt == 'h')
			return 1;
		if (opt == 'J')
			c->json = true;
		else if (opt == 'o')
			c->options = true;
		else if (opt == '?' || apply_flag(c, opt, optarg) < 0)
			return -EINVAL;
	}
	if (optind < argc) {
		fprintf(stderr, "upager-demo: unexpected argument \"%s\"\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/*
 * The runtime's parameters: the table's defaults, the demo's budget, then
 * UPG_* from the environment, then --budget. Return: 0, 1 for --help,
 * -EINVAL after printing why.
 */
static int configure(struct config *c, struct upg_params *p, int argc,
		     char **argv)
{
	int ret;

	*c = (struct config){ .size = 1024 * MiB, .seconds = 10, .threads = 1 };
	upg_params_init(p);
	p->budget = 256 * MiB;
	if (upg_params_from_env(p) < 0) {
		fprintf(stderr, "upager-demo: %s\n", upg_last_error());
		return -EINVAL;
	}
	c->budget = p->budget;
	ret = parse_args(c, argc, argv);
	p->budget = c->budget;
	if (!ret && c->threads > c->size / PAGE) {
		fprintf(stderr, "upager-demo: more threads than pages\n");
		return -EINVAL;
	}
	return ret;
}

/* ------------------------------------------------------------------ */
/* Page contents                                                       */
/* ------------------------------------------------------------------ */

/* The word of @page that operations read and write. */
static uint64_t *stamp_word(char *page_base, size_t page)
{
	return (uint64_t *)page_base + mix(page) % WORDS;
}

/* What the stamp word of @page holds at @version. */
static uint64_t stamp(size_t page, uint32_t version)
{
	return mix(((uint64_t)page << 32) | version);
}

/* The expected contents of @page at @version. */
static void expected_page(char *dst, size_t page, uint32_t version)
{
	uint64_t v = stamp(page, version);

	logtext_page(dst, page);
	memcpy(stamp_word(dst, page), &v, sizeof(v));
}

/* ------------------------------------------------------------------ */
/* Setup and fill                                                      */
/* ------------------------------------------------------------------ */

static int setup_error(const char *what, int err)
{
	fprintf(stderr, "upager-demo: %s: %s\n", what,
		*upg_last_error() ? upg_last_error() : strerror(-err));
	return err;
}

static int setup(struct demo *d, const struct upg_params *p)
{
	void *mem;
	int ret;

	d->npages = (d->cfg.size + PAGE - 1) / PAGE;
	d->version = calloc(d->npages, sizeof(*d->version));
	d->workers = calloc(d->cfg.threads, sizeof(*d->workers));
	if (!d->version || !d->workers)
		return setup_error("out of memory", -ENOMEM);
	pthread_mutex_init(&d->bad_ops.lock, NULL);
	pthread_mutex_init(&d->bad_verify.lock, NULL);
	ret = upg_create(p, &d->u);
	if (ret < 0)
		return setup_error("upg_create", ret);
	ret = upg_reserve(d->u, d->npages * PAGE, &mem);
	if (ret < 0)
		return setup_error("upg_reserve", ret);
	d->mem = mem;
	return 0;
}

static void teardown(struct demo *d)
{
	upg_destroy(d->u);
	free(d->workers);
	free(d->version);
}

/* Write every page once; most of them are evicted as the fill goes on. */
static void fill(struct demo *d)
{
	double t0 = now();
	size_t i;

	for (i = 0; i < d->npages; i++)
		expected_page(d->mem + i * PAGE, i, 0);
	d->fill_s = now() - t0;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

static void bad_add(struct bad_pages *b, size_t page)
{
	pthread_mutex_lock(&b->lock);
	if (b->count < MAX_BAD)
		b->page[b->count] = page;
	b->count++;
	pthread_mutex_unlock(&b->lock);
}

/* Read the stamp of @page, check it, write the next one. */
static void rmw_one(struct demo *d, size_t page)
{
	uint64_t *w = stamp_word(d->mem + page * PAGE, page);
	uint32_t v = d->version[page];

	if (*w != stamp(page, v))
		bad_add(&d->bad_ops, page);
	d->version[page] = v + 1;
	*w = stamp(page, v + 1);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct demo *d = w->d;
	unsigned n = d->cfg.threads;
	size_t own = (d->npages - w->id + n - 1) / n; /* pages of this worker */
	uint64_t rng = w->id * 0x1234567ULL + 1;
	int i;

	/* Relaxed: the flag only ends the loop, it publishes no data. */
	while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
		for (i = 0; i < 64; i++)
			rmw_one(d, w->id + n * (next_rand(&rng) % own));
		atomic_fetch_add_explicit(&w->ops, 64, memory_order_relaxed);
	}
	return NULL;
}

static uint64_t ops_total(struct demo *d)
{
	uint64_t sum = 0;
	unsigned i;

	for (i = 0; i < d->cfg.threads; i++)
		sum += atomic_load_explicit(&d->workers[i].ops,
					    memory_order_relaxed);
	return sum;
}

static int start_workers(struct demo *d)
{
	unsigned i;
	int ret;

	for (i = 0; i < d->cfg.threads; i++) {
		d->workers[i].d = d;
		d->workers[i].id = i;
		ret = pthread_create(&d->workers[i].thread, NULL, worker_main,
				     &d->workers[i]);
		if (ret) {
			d->cfg.threads = i; /* join only those started */
			return setup_error("pthread_create", -ret);
		}
	}
	return 0;
}

static void stop_workers(struct demo *d)
{
	unsigned i;

	atomic_store(&d->stop, true);
	for (i = 0; i < d->cfg.threads; i++)
		pthread_join(d->workers[i].thread, NULL);
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

struct sample {
	double t;
	uint64_t ops, faults, evictions;
};

static struct sample take_sample(struct demo *d, struct upg_stats *s)
{
	s->size = sizeof(*s);
	upg_stats_get(d->u, s);
	return (struct sample){ now(), ops_total(d),
				s->fault_zero + s->fault_pool + s->fault_same,
				s->evict_pages };
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

static double rate(uint64_t a, uint64_t b, double dt)
{
	return dt > 0 ? (double)(a - b) / dt : 0;
}

/* One progress line; on a terminal it overwrites the previous one. */
static void progress(struct demo *d, struct sample *prev, double start,
		     bool tty)
{
	struct upg_stats s;
	struct sample cur = take_sample(d, &s);
	double dt = cur.t - prev->t;

	fprintf(stderr,
		"%s%5.1f s %9.0f ops/s  resident %4.0f/%.0f MiB  "
		"pool %4.0f MiB %.2fx  faults %7.0f/s  evictions %7.0f/s%s",
		tty ? "\r" : "", cur.t - start, rate(cur.ops, prev->ops, dt),
		mib(s.resident * PAGE), mib(s.budget * PAGE),
		mib(s.pool_used_bytes),
		ratio(s.pool_stored_bytes, s.pool_compressed_bytes),
		rate(cur.faults, prev->faults, dt),
		rate(cur.evictions, prev->evictions, dt),
		tty ? "\033[K" : "\n");
	*prev = cur;
}

static void sleep_until(double t)
{
	double dt = t - now();
	struct timespec ts;

	if (dt <= 0)
		return;
	ts.tv_sec = (time_t)dt;
	ts.tv_nsec = (long)((dt - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL); /* an early wake-up (signal) is harmless */
}

/* Print progress every @period seconds until the end or Ctrl-C. */
static void monitor(struct demo *d, double start, double period)
{
	bool tty = isatty(STDERR_FILENO);
	double end = start + d->cfg.seconds, next = start + period;
	struct upg_stats s;
	struct sample prev = take_sample(d, &s);

	prev.t = start;
	while (!interrupted && now() < end) {
		sleep_until(next < end ? next : end);
		if (now() >= next) {
			progress(d, &prev, start, tty);
			next += period;
		}
	}
	if (tty)
		fputc('\n', stderr);
}

static int run(struct demo *d)
{
	double period = isatty(STDERR_FILENO) ? 0.5 : 1.0;
	double start = now();
	int ret;

	ret = start_workers(d);
	if (!ret)
		monitor(d, start, period);
	stop_workers(d);
	d->run_s = now() - start;
	d->ops = ops_total(d);
	return ret;
}

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Ctrl-C ends the operations early; the verification still runs. */
static void catch_sigint(void)
{
	struct sigaction sa = { .sa_handler = on_sigint,
				.sa_flags = (int)SA_RESETHAND };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */
/* ------------------------------------------------------------------ */

static size_t first_difference(const char *a, const char *b)
{
	size_t i = 0;

	while (i < PAGE && a[i] == b[i])
		i++;
	return i;
}

static void report_bad(struct demo *d, size_t page, const char *want)
{
	const char *got = d->mem + page * PAGE;
	size_t at = first_difference(want, got);

	if (d->bad_verify.count < MAX_BAD)
		fprintf(stderr,
			"upager-demo: page %zu differs at byte %zu: "
			"expected 0x%02x, found 0x%02x\n",
			page, at, (unsigned char)want[at],
			(unsigned char)got[at]);
	bad_add(&d->bad_verify, page);
}

static void verify(struct demo *d)
{
	static char want[PAGE];
	double t0 = now();
	size_t i;

	for (i = 0; i < d->npages; i++) {
		expected_page(want, i, d->version[i]);
		if (memcmp(want, d->mem + i * PAGE, PAGE))
			report_bad(d, i, want);
	}
	d->verify_s = now() - t0;
}

/* ------------------------------------------------------------------ */
/* Summary                                                             */
/* ------------------------------------------------------------------ */

static void print_latency(const char *kind, const struct upg_hist *h)
{
	if (!h->count)
		return;
	printf("  %-5s p50 %7.1f us  p99 %7.1f us\n", kind,
	       (double)upg_hist_percentile(h, 50) / 1000,
	       (double)upg_hist_percentile(h, 99) / 1000);
}

static void print_bad_list(const char *what, const struct bad_pages *b)
{
	size_t i;

	printf("%s: %zu bad page%s:", what, b->count, b->count == 1 ? "" : "s");
	for (i = 0; i < b->count && i < MAX_BAD; i++)
		printf(" %zu", b->page[i]);
	printf("%s\n", b->count > MAX_BAD ? " ..." : "");
}

static void print_verdict(const struct demo *d)
{
	if (d->bad_ops.count)
		print_bad_list("operations found a stale word", &d->bad_ops);
	if (d->bad_verify.count)
		print_bad_list("verification failed", &d->bad_verify);
	else
		printf("verified %zu pages: all correct\n", d->npages);
}

static void print_summary(const struct demo *d)
{
	const struct upg_stats *s = &d->end;

	printf("upager %s, features: %s\n", upg_version(), upg_features(d->u));
	printf("working set %.0f MiB, budget %.0f MiB, %u thread%s\n",
	       mib(d->npages * PAGE), mib(d->cfg.budget), d->cfg.threads,
	       d->cfg.threads == 1 ? "" : "s");
	printf("fill        %zu pages in %.2f s\n", d->npages, d->fill_s);
	printf("operations  %" PRIu64 " in %.2f s: %.0f ops/s\n", d->ops,
	       d->run_s, rate(d->ops, 0, d->run_s));
	printf("faults      zero %" PRIu64 ", pool %" PRIu64 ", same %" PRIu64
	       "\n",
	       s->fault_zero, s->fault_pool, s->fault_same);
	print_latency("zero", &s->lat_zero);
	print_latency("pool", &s->lat_pool);
	print_latency("same", &s->lat_same);
	printf("evictions   %" PRIu64 " (clean drops %" PRIu64 ")\n",
	       s->evict_pages, s->evict_clean_drop);
	printf("pool        %.1f MiB stored in %.1f MiB (%.1f MiB used): "
	       "ratio %.2fx\n",
	       mib(s->pool_stored_bytes), mib(s->pool_compressed_bytes),
	       mib(s->pool_used_bytes),
	       ratio(s->pool_stored_bytes, s->pool_compressed_bytes));
	printf("resident    peak %.1f MiB of %.1f MiB budget\n",
	       mib(s->resident_peak * PAGE), mib(s->budget * PAGE));
	printf("verify      %.2f s\n", d->verify_s);
	print_verdict(d);
}

static void json_hist(const char *kind, const struct upg_hist *h)
{
	printf(",\"%s_p50_ns\":%" PRIu64 ",\"%s_p99_ns\":%" PRIu64, kind,
	       upg_hist_percentile(h, 50), kind, upg_hist_percentile(h, 99));
}

static void print_json(const struct demo *d)
{
	const struct upg_stats *s = &d->end;

	printf("{\"version\":\"%s\",\"features\":\"%s\",\"size_bytes\":%zu,"
	       "\"budget_bytes\":%zu,\"threads\":%u,\"fill_s\":%.3f,"
	       "\"seconds\":%.3f,\"ops\":%" PRIu64 ",\"ops_per_s\":%.0f",
	       upg_version(), upg_features(d->u), d->npages * PAGE,
	       d->cfg.budget, d->cfg.threads, d->fill_s, d->run_s, d->ops,
	       rate(d->ops, 0, d->run_s));
	printf(",\"fault_zero\":%" PRIu64 ",\"fault_pool\":%" PRIu64
	       ",\"fault_same\":%" PRIu64,
	       s->fault_zero, s->fault_pool, s->fault_same);
	json_hist("fault_zero", &s->lat_zero);
	json_hist("fault_pool", &s->lat_pool);
	json_hist("fault_same", &s->lat_same);
	printf(",\"evict_pages\":%" PRIu64 ",\"evict_clean_drop\":%" PRIu64
	       ",\"pool_stored_bytes\":%" PRIu64
	       ",\"pool_compressed_bytes\":%" PRIu64
	       ",\"pool_used_bytes\":%" PRIu64 ",\"pool_ratio\":%.3f"
	       ",\"resident_peak_bytes\":%" PRIu64,
	       s->evict_pages, s->evict_clean_drop, s->pool_stored_bytes,
	       s->pool_compressed_bytes, s->pool_used_bytes,
	       ratio(s->pool_stored_bytes, s->pool_compressed_bytes),
	       s->resident_peak * PAGE);
	printf(",\"pages\":%zu,\"bad_ops\":%zu,\"bad_pages\":%zu,"
	       "\"verify_s\":%.3f,\"verified\":%s}\n",
	       d->npages, d->bad_ops.count, d->bad_verify.count, d->verify_s,
	       d->bad_ops.count || d->bad_verify.count ? "false" : "true");
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void announce(const struct demo *d)
{
	fprintf(stderr,
		"upager-demo: %.0f MiB working set, %.0f MiB budget, "
		"%u thread%s, %u s (features: %s)\n",
		mib(d->npages * PAGE), mib(d->cfg.budget), d->cfg.threads,
		d->cfg.threads == 1 ? "" : "s", d->cfg.seconds,
		upg_features(d->u));
}

static int demo(struct demo *d, const struct upg_params *p)
{
	if (setup(d, p) < 0)
		return EXIT_SETUP;
	announce(d);
	logtext_init();
	fprintf(stderr, "filling %zu pages with log text...\n", d->npages);
	fill(d);
	catch_sigint();
	if (run(d) < 0)
		return EXIT_SETUP;
	d->end.size = sizeof(d->end);
	upg_stats_get(d->u, &d->end);
	fprintf(stderr, "verifying %zu pages...\n", d->npages);
	verify(d);
	if (d->cfg.json)
		print_json(d);
	else
		print_summary(d);
	return d->bad_ops.count || d->bad_verify.count ? EXIT_MISMATCH : 0;
}

int main(int argc, char **argv)
{
	static struct demo d;
	struct upg_params p;
	int ret;

	ret = configure(&d.cfg, &p, argc, argv);
	if (ret > 0) {
		usage(stdout);
		return 0;
	}
	if (ret < 0) {
		fprintf(stderr, "Try 'upager-demo --help'.\n");
		return EXIT_SETUP;
	}
	if (d.cfg.options) {
		upg_options_print(stdout, &p);
		return 0;
	}
	ret = demo(&d, &p);
	fflush(stdout);
	teardown(&d);
	return ret;
}

/* SPDX-License-Identifier: MIT */
/*
 * oversub: one oversubscription workload, the same under every pager.
 *
 * The working set comes from plain malloc (--mode malloc, so the program
 * runs unchanged under the kernel's swap and under libupager-preload.so)
 * or from upg_reserve() (--mode api). The program fills it with data of
 * one kind, runs operations on pages chosen by a pattern, timing each one,
 * then regenerates every page and compares it byte for byte. It prints one
 * JSON line and exits 0 when every page verified, 1 when one did not, 2 on
 * a usage or setup error.
 *
 * An operation reads the stamp word of one page and checks it; a write
 * operation then stores the next version's stamp. The truth (a version
 * per page) lives in mmap()ed memory that neither malloc nor upager owns,
 * so a lost write, a stale page or a zero-filled page is caught.
 *
 * Threads: worker i owns the i-th of @threads contiguous slices of the
 * pages and is the only one to touch them or their versions, so nothing is
 * locked. Every pattern draws from the worker's own slice; a sequential
 * scan with two threads is two scans of two halves, as a program that
 * splits its data between threads would run it.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <upager.h>

#include "logtext.h"
#include "oversub_args.h"
#include "oversub_hist.h"
#include "oversub_pages.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#define PAGE OVS_PAGE
#define BATCH 64 /* operations between looks at the stop flag */

/* A worker's page chooser: index k in [0, own) of the worker's pages. */
struct chooser {
	uint64_t first, own; /* the worker's pages: [first, first + own) */
	uint64_t mul, add;   /* scramble: k = (rank * mul + add) % own */
	uint64_t hot;	     /* hot/cold: ranks [0, hot) are hot */
	uint64_t next;	     /* seq: next index */
	double zetan, alpha, eta, half_pow_theta;
};

struct bad {
	uint64_t pages, zero, stale, other;
	uint64_t first; /* first bad page, UINT64_MAX if none */
};

/* Each worker on its own cache lines: workers share nothing they write. */
struct worker {
	_Alignas(64) struct ovs_hist hist;
	struct oversub *o;
	unsigned id;
	uint64_t rng;
	uint64_t ops, bad_ops;
	struct chooser ch;
	struct bad bad;
	pthread_t thread;
};

struct oversub {
	struct config cfg;
	struct upg *u;
	char *mem;
	size_t npages;
	uint32_t *version; /* mmap()ed: neither malloc's nor upager's */
	struct worker *workers;
	atomic_bool stop;
	double fill_s, run_s, verify_s, ns_per_tick, lz4_ratio;
	double lz4_compress_ns,
		lz4_decompress_ns; /* a page, see measure_lz4() */
	double run_t0, run_t1;	   /* CLOCK_MONOTONIC seconds: the operations */
	struct rusage ru_start, ru_end, ru_exit;
	long rss_end_kib;
	struct upg_stats st;
	struct ovs_hist all;
	struct bad bad;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The operation timer: the TSC where there is one (~20 cycles). */
static inline uint64_t ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __rdtsc();
#else
	return (uint64_t)(now() * 1e9);
#endif
}

/* ------------------------------------------------------------------ */
/* Page choice                                                         */
/* ------------------------------------------------------------------ */

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* Uniform in [0, n): the high half of a 64x64-bit product. */
static inline uint64_t below(uint64_t *rng, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)next_rand(rng) * n) >> 64);
}

static inline double unit(uint64_t *rng)
{
	return (double)(next_rand(rng) >> 11) * 0x1.0p-53;
}

/* Gray et al.'s Zipfian generator, as YCSB uses it: O(n) set-up. */
static void zipf_init(struct chooser *ch, double theta)
{
	double zeta2 = 1 + pow(0.5, theta);
	uint64_t i;

	ch->zetan = 0;
	for (i = 1; i <= ch->own; i++)
		ch->zetan += pow((double)i, -theta);
	ch->alpha = 1 / (1 - theta);
	ch->eta = (1 - pow(2.0 / (double)ch->own, 1 - theta)) /
		  (1 - zeta2 / ch->zetan);
	ch->half_pow_theta = pow(0.5, theta);
}

static uint64_t zipf_rank(struct chooser *ch, uint64_t *rng)
{
	double u = unit(rng), uz = u * ch->zetan;
	uint64_t r;

	if (uz < 1)
		return 0;
	if (uz < 1 + ch->half_pow_theta)
		return 1 % ch->own;
	r = (uint64_t)((double)ch->own *
		       pow(ch->eta * u - ch->eta + 1, ch->alpha));
	return r < ch->own ? r : ch->own - 1;
}

static void chooser_init(struct worker *w)
{
	const struct config *c = &w->o->cfg;
	struct chooser *ch = &w->ch;
	uint64_t n = c->threads, pages = w->o->npages;

	ch->first = pages * w->id / n;
	ch->own = pages * (w->id + 1) / n - ch->first;
	ch->mul = 2654435761ULL % ch->own ? 2654435761ULL : 2654435769ULL;
	while (gcd(ch->mul, ch->own) != 1)
		ch->mul += 2;
	ch->add = mix(w->id + c->seed) % ch->own;
	ch->hot = (uint64_t)ceil(c->hot_frac * (double)ch->own);
	if (c->pattern == PAT_ZIPF)
		zipf_init(ch, c->theta);
}

static inline uint64_t scramble(const struct chooser *ch, uint64_t rank)
{
	return (uint64_t)(((unsigned __int128)rank * ch->mul + ch->add) %
			  ch->own);
}

static inline uint64_t next_index(struct worker *w, enum pattern p)
{
	struct chooser *ch = &w->ch;
	uint64_t k;

	switch (p) {
	case PAT_ZIPF:
		return scramble(ch, zipf_rank(ch, &w->rng));
	case PAT_SEQ:
		k = ch->next;
		ch->next = k + 1 < ch->own ? k + 1 : 0;
		return k;
	case PAT_HOTCOLD:
		if (ch->hot >= ch->own || unit(&w->rng) < w->o->cfg.hot_prob)
			k = below(&w->rng, ch->hot);
		else
			k = ch->hot + below(&w->rng, ch->own - ch->hot);
		return scramble(ch, k);
	default:
		return below(&w->rng, ch->own);
	}
}

/* ------------------------------------------------------------------ */
/* Setup, fill                                                         */
/* ------------------------------------------------------------------ */

static int setup_error(const char *what, int err)
{
	fprintf(stderr, "oversub: %s: %s\n", what, strerror(-err));
	return err;
}

static int map_anon(size_t len, void **out)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	return 0;
}

static int setup_api(struct oversub *o)
{
	struct upg_params p;
	void *mem;
	int ret;

	upg_params_init(&p);
	if (upg_params_from_env(&p) < 0) {
		fprintf(stderr, "oversub: %s\n", upg_last_error());
		return -EINVAL;
	}
	if (o->cfg.budget)
		p.budget = o->cfg.budget;
	ret = upg_create(&p, &o->u);
	if (ret < 0) {
		fprintf(stderr, "oversub: upg_create: %s\n", upg_last_error());
		return ret;
	}
	ret = upg_reserve(o->u, o->npages * PAGE, &mem);
	if (ret < 0) {
		fprintf(stderr, "oversub: upg_reserve: %s\n", upg_last_error());
		return ret;
	}
	o->cfg.budget = upg_get_budget(o->u);
	o->mem = mem;
	return 0;
}

static int setup(struct oversub *o)
{
	size_t vlen, wlen;
	void *v, *w;
	int ret;

	o->npages = o->cfg.size / PAGE;
	vlen = (o->npages * sizeof(uint32_t) + PAGE - 1) & ~(PAGE - 1);
	wlen = (o->cfg.threads * sizeof(struct worker) + PAGE - 1) &
	       ~(PAGE - 1);
	ret = map_anon(vlen, &v);
	if (!ret)
		ret = map_anon(wlen, &w);
	if (ret)
		return setup_error("mmap", ret);
	o->version = v;
	o->workers = w;
	if (o->cfg.mode == MODE_API)
		return setup_api(o);
	o->mem = aligned_alloc(PAGE, o->npages * PAGE);
	if (!o->mem)
		return setup_error("aligned_alloc (working set)", -ENOMEM);
	return 0;
}

static void fill(struct oversub *o)
{
	double t0 = now();
	size_t i;

	for (i = 0; i < o->npages; i++)
		ovs_page_fill(o->mem + i * PAGE, o->cfg.data, i, 0);
	o->fill_s = now() - t0;
}

/*
 * LZ4 on up to 1024 pages spread over the set, as filled: the ratio, and
 * the time to compress and decompress a page (the fastest of three
 * rounds), the work any compressing pager does per page it swaps out and
 * in, whatever else it costs.
 */
static void measure_lz4(struct oversub *o)
{
	static char page[PAGE], back[PAGE], out[LZ4_COMPRESSBOUND(PAGE)];
	size_t step = o->npages > 1024 ? o->npages / 1024 : 1, i;
	double best_c = INFINITY, best_d = INFINITY;

	for (int round = 0; round < 3; round++) {
		uint64_t in = 0, comp = 0, npages = 0;
		double tc = 0, td = 0, t;

		for (i = 0; i < o->npages; i += step, npages++) {
			int n;

			ovs_page_fill(page, o->cfg.data, i, 0);
			t = now();
			n = LZ4_compress_default(page, out, (int)PAGE,
						 (int)sizeof(out));
			tc += now() - t;
			in += PAGE;
			comp += n > 0 && (size_t)n < PAGE ? (uint64_t)n : PAGE;
			if (n <= 0)
				continue;
			t = now();
			LZ4_decompress_safe(out, back, n, (int)PAGE);
			td += now() - t;
		}
		o->lz4_ratio = comp ? (double)in / (double)comp : 0;
		best_c = fmin(best_c, tc / (double)npages);
		best_d = fmin(best_d, td / (double)npages);
	}
	o->lz4_compress_ns = best_c * 1e9;
	o->lz4_decompress_ns = best_d * 1e9;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

static inline uint64_t *stamp_word(struct oversub *o, uint64_t page)
{
	return (uint64_t *)(o->mem + page * PAGE) + ovs_stamp_index(page);
}

/* Check the stamp of @page; on a write, store the next version's. */
static inline void operate(struct worker *w, uint64_t page, bool write)
{
	struct oversub *o = w->o;
	volatile uint64_t *word = stamp_word(o, page);
	uint32_t v = o->version[page];

	if (*word != ovs_stamp(o->cfg.data, page, v))
		w->bad_ops++;
	if (write) {
		o->version[page] = v + 1;
		*word = ovs_stamp(o->cfg.data, page, v + 1);
	}
}

static void run_batch(struct worker *w, unsigned n)
{
	const struct config *c = &w->o->cfg;
	unsigned i;

	for (i = 0; i < n; i++) {
		uint64_t page = w->ch.first + next_index(w, c->pattern);
		bool write = c->writes == 100 ||
			     (c->writes && below(&w->rng, 100) < c->writes);
		uint64_t t0 = ticks();

		operate(w, page, write);
		ovs_hist_add(&w->hist, ticks() - t0);
	}
	w->ops += n;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct oversub *o = w->o;
	uint64_t quota = o->cfg.ops;

	if (quota)
		quota = quota / o->cfg.threads +
			(w->id < quota % o->cfg.threads);
	/* Relaxed: the flag only ends the loop, it publishes no data. */
	while (!atomic_load_explicit(&o->stop, memory_order_relaxed)) {
		uint64_t left = quota ? quota - w->ops : BATCH;

		if (!left)
			break;
		run_batch(w, left < BATCH ? (unsigned)left : BATCH);
	}
	return NULL;
}

static int start_workers(struct oversub *o, void *(*fn)(void *))
{
	unsigned i;
	int ret;

	for (i = 0; i < o->cfg.threads; i++) {
		ret = pthread_create(&o->workers[i].thread, NULL, fn,
				     &o->workers[i]);
		if (ret) {
			setup_error("pthread_create", -ret);
			atomic_store(&o->stop, true);
			while (i--)
				pthread_join(o->workers[i].thread, NULL);
			return -ret;
		}
	}
	return 0;
}

static void join_workers(struct oversub *o)
{
	unsigned i;

	for (i = 0; i < o->cfg.threads; i++)
		pthread_join(o->workers[i].thread, NULL);
}

static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s };

	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int run(struct oversub *o)
{
	double t0, t1;
	uint64_t c0, c1;
	unsigned i;
	int ret;

	for (i = 0; i < o->cfg.threads; i++) {
		struct worker *w = &o->workers[i];

		w->o = o;
		w->id = i;
		w->rng = mix(o->cfg.seed * 1000003 + i);
		chooser_init(w);
	}
	getrusage(RUSAGE_SELF, &o->ru_start);
	t0 = now();
	c0 = ticks();
	ret = start_workers(o, worker_main);
	if (ret)
		return ret;
	if (!o->cfg.ops) {
		sleep_s(o->cfg.seconds);
		atomic_store(&o->stop, true);
	}
	join_workers(o);
	c1 = ticks();
	t1 = now();
	getrusage(RUSAGE_SELF, &o->ru_end);
	o->run_s = t1 - t0;
	o->run_t0 = t0;
	o->run_t1 = t1;
	o->ns_per_tick = c1 > c0 ? (t1 - t0) * 1e9 / (double)(c1 - c0) : 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */
/* ------------------------------------------------------------------ */

static bool all_zero(const char *p)
{
	static const char zero[PAGE];

	return !memcmp(p, zero, PAGE);
}

/* A page that holds an older version's stamp: a lost write. */
static bool is_stale(struct oversub *o, uint64_t page, const char *got)
{
	uint32_t v = o->version[page], old;
	uint64_t word;

	memcpy(&word, got + ovs_stamp_index(page) * sizeof(word), sizeof(word));
	for (old = v ? v - 1 : 0; v && old + 4 >= v; old--) {
		if (word == ovs_stamp(o->cfg.data, page, old))
			return true;
		if (!old)
			break;
	}
	return false;
}

static void classify(struct oversub *o, struct bad *b, uint64_t page)
{
	const char *got = o->mem + page * PAGE;

	if (!b->pages++)
		b->first = page;
	if (all_zero(got))
		b->zero++;
	else if (is_stale(o, page, got))
		b->stale++;
	else
		b->other++;
}

static void *verify_main(void *arg)
{
	struct worker *w = arg;
	struct oversub *o = w->o;
	char want[PAGE];
	uint64_t p;

	w->bad.first = UINT64_MAX;
	for (p = w->ch.first; p < w->ch.first + w->ch.own; p++) {
		ovs_page_fill(want, o->cfg.data, p, o->version[p]);
		if (memcmp(want, o->mem + p * PAGE, PAGE))
			classify(o, &w->bad, p);
	}
	return NULL;
}

/* Damage one page on purpose (--debug-corrupt), as a pager bug would. */
static void corrupt(struct oversub *o)
{
	uint64_t page = mix(o->cfg.seed) % o->npages;

	if (o->cfg.corrupt == CORRUPT_LOST_WRITE)
		o->version[page]++; /* a write the memory never saw */
	else if (o->cfg.corrupt == CORRUPT_ZERO_PAGE)
		memset(o->mem + page * PAGE, 0, PAGE);
}

static int verify(struct oversub *o)
{
	double t0 = now();
	unsigned i;
	int ret;

	corrupt(o);
	o->bad.first = UINT64_MAX;
	ret = start_workers(o, verify_main);
	if (ret)
		return ret;
	join_workers(o);
	for (i = 0; i < o->cfg.threads; i++) {
		struct bad *b = &o->workers[i].bad;

		if (b->first < o->bad.first)
			o->bad.first = b->first;
		o->bad.pages += b->pages;
		o->bad.zero += b->zero;
		o->bad.stale += b->stale;
		o->bad.other += b->other;
	}
	o->verify_s = now() - t0;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

static double tv_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static long status_kib(const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, n) && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

static uint64_t bad_ops(const struct oversub *o)
{
	uint64_t sum = 0;
	unsigned i;

	for (i = 0; i < o->cfg.threads; i++)
		sum += o->workers[i].bad_ops;
	return sum;
}

static bool verified(const struct oversub *o)
{
	return !o->bad.pages && !bad_ops(o);
}

static void json_config(const struct oversub *o)
{
	const struct config *c = &o->cfg;

	printf("{\"program\":\"oversub\",\"mode\":\"%s\",\"data\":\"%s\","
	       "\"pattern\":\"%s\",\"theta\":%g,\"hot_frac\":%g,"
	       "\"hot_prob\":%g,\"writes_pct\":%u,\"threads\":%u,"
	       "\"size_bytes\":%zu,\"pages\":%zu,\"budget_bytes\":%zu,"
	       "\"seed\":%" PRIu64 ",\"lz4_ratio\":%.3f,"
	       "\"lz4_compress_ns\":%.0f,\"lz4_decompress_ns\":%.0f",
	       ovs_mode_names[c->mode], ovs_data_name(c->data),
	       ovs_pattern_names[c->pattern], c->theta, c->hot_frac,
	       c->hot_prob, c->writes, c->threads, o->npages * PAGE, o->npages,
	       c->budget, c->seed, o->lz4_ratio, o->lz4_compress_ns,
	       o->lz4_decompress_ns);
}

/*
 * The fewest and most operations of one thread: a pager that lets one
 * thread keep its pages resident while the other waits shows here.
 */
static void json_threads(const struct oversub *o)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	unsigned i;

	for (i = 0; i < o->cfg.threads; i++) {
		uint64_t n = o->workers[i].ops;

		lo = n < lo ? n : lo;
		hi = n > hi ? n : hi;
	}
	printf(",\"thread_ops_min\":%" PRIu64 ",\"thread_ops_max\":%" PRIu64,
	       lo, hi);
}

static void json_run(const struct oversub *o)
{
	const struct ovs_hist *h = &o->all;
	double k = o->ns_per_tick;

	printf(",\"fill_s\":%.3f,\"seconds\":%.3f,\"ops\":%" PRIu64
	       ",\"ops_per_s\":%.0f,\"lat_mean_ns\":%.0f,\"lat_p50_ns\":%.0f"
	       ",\"lat_p90_ns\":%.0f,\"lat_p99_ns\":%.0f"
	       ",\"lat_p999_ns\":%.0f,\"lat_max_ns\":%.0f",
	       o->fill_s, o->run_s, h->count,
	       o->run_s > 0 ? (double)h->count / o->run_s : 0,
	       h->count ? (double)h->sum * k / (double)h->count : 0,
	       ovs_hist_percentile(h, 50) * k, ovs_hist_percentile(h, 90) * k,
	       ovs_hist_percentile(h, 99) * k, ovs_hist_percentile(h, 99.9) * k,
	       (double)h->max * k);
	/* so that a sampler can tell the operations from fill and verify */
	printf(",\"run_start_mono_s\":%.3f,\"run_end_mono_s\":%.3f", o->run_t0,
	       o->run_t1);
	json_threads(o);
}

static void json_rusage(const struct oversub *o)
{
	const struct rusage *a = &o->ru_start, *b = &o->ru_end,
			    *e = &o->ru_exit;

	printf(",\"run_cpu_user_s\":%.3f,\"run_cpu_sys_s\":%.3f"
	       ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f"
	       ",\"run_minflt\":%ld,\"run_majflt\":%ld"
	       ",\"minflt\":%ld,\"majflt\":%ld"
	       ",\"peak_rss_bytes\":%ld,\"rss_end_bytes\":%ld",
	       tv_s(&b->ru_utime) - tv_s(&a->ru_utime),
	       tv_s(&b->ru_stime) - tv_s(&a->ru_stime), tv_s(&e->ru_utime),
	       tv_s(&e->ru_stime), b->ru_minflt - a->ru_minflt,
	       b->ru_majflt - a->ru_majflt, e->ru_minflt, e->ru_majflt,
	       e->ru_maxrss * 1024, o->rss_end_kib * 1024);
}

static void json_upager(const struct oversub *o)
{
	const struct upg_stats *s = &o->st;

	if (!o->u)
		return;
	printf(",\"upager\":{\"features\":\"%s\",\"fault_zero\":%" PRIu64
	       ",\"fault_pool\":%" PRIu64 ",\"fault_same\":%" PRIu64
	       ",\"refault\":%" PRIu64 ",\"evict_pages\":%" PRIu64
	       ",\"evict_clean_drop\":%" PRIu64
	       ",\"resident_peak_bytes\":%" PRIu64
	       ",\"pool_stored_bytes\":%" PRIu64
	       ",\"pool_compressed_bytes\":%" PRIu64
	       ",\"pool_used_bytes\":%" PRIu64 ",\"pool_parked_bytes\":%" PRIu64
	       ",\"pool_hole_bytes\":%" PRIu64
	       ",\"pool_compact_moved\":%" PRIu64 ",\"pool_p99_ns\":%" PRIu64
	       ",\"budget_overruns\":%" PRIu64 "}",
	       upg_features(o->u), s->fault_zero, s->fault_pool, s->fault_same,
	       s->refault, s->evict_pages, s->evict_clean_drop,
	       s->resident_peak * PAGE, s->pool_stored_bytes,
	       s->pool_compressed_bytes, s->pool_used_bytes,
	       s->pool_parked_bytes, s->pool_hole_bytes, s->pool_compact_moved,
	       upg_hist_percentile(&s->lat_pool, 99), s->budget_overruns);
}

static void print_json(const struct oversub *o)
{
	json_config(o);
	json_run(o);
	json_rusage(o);
	json_upager(o);
	printf(",\"verify_s\":%.3f,\"bad_ops\":%" PRIu64
	       ",\"bad_pages\":%" PRIu64 ",\"bad_zero\":%" PRIu64
	       ",\"bad_stale\":%" PRIu64 ",\"bad_other\":%" PRIu64
	       ",\"first_bad_page\":%" PRId64 ",\"debug_corrupt\":\"%s\""
	       ",\"verified\":%s}\n",
	       o->verify_s, bad_ops(o), o->bad.pages, o->bad.zero, o->bad.stale,
	       o->bad.other, o->bad.pages ? (int64_t)o->bad.first : (int64_t)-1,
	       ovs_corrupt_names[o->cfg.corrupt],
	       verified(o) ? "true" : "false");
	fflush(stdout);
}

static int write_hist(const struct oversub *o)
{
	FILE *f = fopen(o->cfg.hist_path, "w");
	int ret;

	if (!f)
		return setup_error(o->cfg.hist_path, -errno);
	ret = ovs_hist_write(&o->all, f, o->ns_per_tick);
	if (fclose(f) || ret)
		return setup_error(o->cfg.hist_path, -EIO);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void collect(struct oversub *o)
{
	unsigned i;

	for (i = 0; i < o->cfg.threads; i++)
		ovs_hist_merge(&o->all, &o->workers[i].hist);
	o->rss_end_kib = status_kib("VmRSS");
	if (o->u) {
		o->st.size = sizeof(o->st);
		upg_stats_get(o->u, &o->st);
	}
}

static int oversub(struct oversub *o)
{
	if (setup(o) < 0)
		return EXIT_SETUP;
	ovs_pages_init();
	measure_lz4(o);
	fill(o);
	if (run(o) < 0)
		return EXIT_SETUP;
	collect(o);
	if (verify(o) < 0)
		return EXIT_SETUP;
	getrusage(RUSAGE_SELF, &o->ru_exit);
	print_json(o);
	if (o->cfg.hist_path && write_hist(o) < 0)
		return EXIT_SETUP;
	return verified(o) ? 0 : EXIT_MISMATCH;
}

int main(int argc, char **argv)
{
	static struct oversub o;
	int ret;

	ret = ovs_parse_args(&o.cfg, argc, argv);
	if (ret > 0) {
		ovs_usage(stdout);
		return 0;
	}
	if (ret < 0) {
		fprintf(stderr, "Try 'oversub --help'.\n");
		return EXIT_SETUP;
	}
	ret = oversub(&o);
	if (o.u)
		upg_destroy(o.u);
	return ret;
}

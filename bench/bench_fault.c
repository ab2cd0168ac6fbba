/* SPDX-License-Identifier: MIT */
/*
 * Fault cost of upager next to the mechanism's floor, measured in the same
 * run. Prints one JSON object per line on stdout (diagnostics go to
 * stderr); never asserts.
 *
 *   bench_fault [--quick] [--phase latency|firsttouch|threads|contended]
 *               [--pages N] [--mib N] [--faults N] [--reps N] [--rounds N]
 *
 * latency:    per-touch latency (p50/p99/p99.9/mean) on CPU 0 of
 *             - the kernel's own anonymous first-touch fault (read, write),
 *             - the floor: a bare userfaultfd handler pinned to the
 *               faulter's CPU, blocking in read() on a blocking uffd,
 *               resolving exactly one page with UFFDIO_ZEROPAGE or
 *               UFFDIO_COPY of a 4 KiB buffer,
 *             - the same bare handler shaped like upager (one per CPU on
 *               one uffd), to separate that shape's cost from upager's,
 *             - upager zero-fill faults (cluster 1, random order; a read
 *               takes UFFDIO_ZEROPAGE, a write UFFDIO_COPY),
 *             - upager pool hits on evicted text pages (cluster 1) with
 *               the budget raised again so that no eviction runs, and once
 *               more with the small budget kept (evictor running),
 *             - LZ4_decompress_safe of the same kind of page, warm (just
 *               compressed) and aged like the pool (interleaved);
 *             then the ratios against the targets.
 * firsttouch: sequential one-byte writes to every page of N MiB: kernel,
 *             upager with cluster 16 and 64 (budget larger than N).
 * threads:    faults/s with 1 and 2 faulting threads (thread i on CPU i),
 *             distinct random pages: pure computation (the machine's
 *             ceiling), kernel, bare uffd, upager zero-fill, pool hits.
 *
 * This runs on a shared 2-vCPU VM whose speed drifts from minute to
 * minute, so the series of a phase run interleaved, round after round
 * (--rounds 1 runs each in one piece), and each phase ends with a
 * "machine" line (host steal, memory reported to the host). Every faulting
 * thread is pinned; runtimes are created from an unpinned thread so that
 * they start their usual one handler per CPU. Each timed touch includes
 * one clock_gettime pair (clock_overhead_ns) in every series alike. Lines
 * with "metric" carry a ratio and, where the design sets one, its target
 * ("cmp" says which way, "met" the verdict).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <upager.h>

#include "wordtext.h"

#define PAGE 4096UL
#define MIB (1UL << 20)
#define NO_TARGET (-1.0)
#define MIN_SZ(a, b) ((a) < (b) ? (a) : (b))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct cfg {
	bool quick;
	const char *phase; /* NULL: all */
	size_t lat_pages;  /* timed faults per latency series */
	size_t ft_mib;	   /* first-touch size */
	int ft_reps;	   /* first-touch repetitions (median reported) */
	size_t thr_faults; /* faults per thread in the threads phase */
	size_t lz4_pages;  /* distinct pages in the LZ4 measurement */
	size_t rounds;	   /* interleaving rounds (latency, threads) */
	size_t phys;	   /* physical memory, bytes */
	int ncpu;	   /* CPUs we may run on */
	double clock_ns;   /* cost of one clock_gettime, median */
	cpu_set_t allowed; /* the process's CPUs at start */
};

static struct cfg cfg;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
	return wordtext_rand(s);
}

static void shuffle(uint32_t *a, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (size_t i = n; i > 1; i--) {
		size_t j = rnd(&s) % i;
		uint32_t t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* Page indices first, first+1, ..., first+n-1 in random order. */
static uint32_t *random_order(size_t first, size_t n, uint64_t seed)
{
	uint32_t *a = malloc(n * sizeof(*a));

	if (!a) {
		fprintf(stderr, "bench_fault: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		a[i] = (uint32_t)(first + i);
	shuffle(a, n, seed);
	return a;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p) {
		fprintf(stderr, "bench_fault: out of memory\n");
		exit(1);
	}
	return p;
}

static int pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Back to every allowed CPU (upg_create sizes its handlers by this). */
static void unpin_self(void)
{
	pthread_setaffinity_np(pthread_self(), sizeof(cfg.allowed),
			       &cfg.allowed);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double clock_overhead(void)
{
	uint64_t s[1001];

	for (size_t i = 0; i < 1001; i++) {
		uint64_t t = now_ns();

		s[i] = now_ns() - t;
	}
	qsort(s, 1001, sizeof(s[0]), cmp_u64);
	return (double)s[500];
}

static void *anon_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* 4 KiB pages, as upager installs (THP would be 512 pages a fault). */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* ------------------------------------------------------------------ */
/* JSON lines                                                          */
/* ------------------------------------------------------------------ */

struct jb {
	char buf[8192];
	size_t len;
};

static void jraw(struct jb *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void jraw(struct jb *j, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (j->len >= sizeof(j->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(j->buf + j->len, sizeof(j->buf) - j->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		j->len = MIN_SZ(j->len + (size_t)n, sizeof(j->buf) - 1);
}

static void jbegin(struct jb *j, const char *phase)
{
	j->len = 0;
	jraw(j, "{\"bench\":\"fault\",\"phase\":\"%s\",\"quick\":%s", phase,
	     cfg.quick ? "true" : "false");
}

/* A string value, escaped (error messages may hold quotes). */
static void jstr(struct jb *j, const char *k, const char *v)
{
	jraw(j, ",\"%s\":\"", k);
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '"' || c == '\\')
			jraw(j, "\\%c", c);
		else if (c < 0x20)
			jraw(j, "\\u%04x", c);
		else
			jraw(j, "%c", c);
	}
	jraw(j, "\"");
}

static void jint(struct jb *j, const char *k, uint64_t v)
{
	jraw(j, ",\"%s\":%llu", k, (unsigned long long)v);
}

static void jnum(struct jb *j, const char *k, double v)
{
	if (isfinite(v))
		jraw(j, ",\"%s\":%.3f", k, v);
	else
		jraw(j, ",\"%s\":null", k);
}

static void jend(struct jb *j)
{
	jraw(j, "}");
	puts(j->buf);
	fflush(stdout);
}

/* A ratio line; @target < 0 means "for information, no target". */
static void jratio(const char *phase, const char *metric, double num,
		   double den, double target, const char *cmp, const char *what)
{
	struct jb j;

	jbegin(&j, phase);
	jstr(&j, "metric", metric);
	jnum(&j, "ratio", den > 0 ? num / den : NAN);
	jnum(&j, "numerator", num);
	jnum(&j, "denominator", den);
	if (target >= 0) {
		jnum(&j, "target", target);
		jstr(&j, "cmp", cmp);
		jstr(&j, "met",
		     den > 0 && (cmp[0] == '<' ? num / den <= target
					       : num / den >= target)
			     ? "yes"
			     : "no");
	}
	jstr(&j, "what", what);
	jend(&j);
}

static void jerror(const char *phase, const char *what, const char *msg)
{
	struct jb j;

	jbegin(&j, phase);
	jstr(&j, "error", what);
	jstr(&j, "detail", msg);
	jend(&j);
}

/* ------------------------------------------------------------------ */
/* Latency samples                                                     */
/* ------------------------------------------------------------------ */

struct summary {
	size_t count;
	double p50, p99, p999, mean, min, max;
};

static double rank(const uint64_t *s, size_t n, double q)
{
	size_t i = (size_t)ceil(q * (double)n);

	return (double)s[i ? MIN_SZ(i, n) - 1 : 0];
}

static struct summary summarize(uint64_t *s, size_t n)
{
	struct summary r = { .count = n };
	double sum = 0;

	if (!n)
		return r;
	qsort(s, n, sizeof(*s), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)s[i];
	r.p50 = rank(s, n, 0.50);
	r.p99 = rank(s, n, 0.99);
	r.p999 = rank(s, n, 0.999);
	r.mean = sum / (double)n;
	r.min = (double)s[0];
	r.max = (double)s[n - 1];
	return r;
}

static void jsummary(struct jb *j, const struct summary *s)
{
	jint(j, "count", s->count);
	jnum(j, "p50_ns", s->p50);
	jnum(j, "p99_ns", s->p99);
	jnum(j, "p999_ns", s->p999);
	jnum(j, "mean_ns", s->mean);
	jnum(j, "min_ns", s->min);
	jnum(j, "max_ns", s->max);
	jnum(j, "clock_overhead_ns", cfg.clock_ns);
}

/* ------------------------------------------------------------------ */
/* upager statistics, as deltas over a measurement                     */
/* ------------------------------------------------------------------ */

static void stats_read(struct upg *u, struct upg_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	upg_stats_get(u, s);
}

static double hist_delta_p50(const struct upg_hist *a, const struct upg_hist *b)
{
	struct upg_hist d = { .count = b->count - a->count,
			      .sum_ns = b->sum_ns - a->sum_ns };

	for (int i = 0; i < UPG_HIST_BUCKETS; i++)
		d.bucket[i] = b->bucket[i] - a->bucket[i];
	return (double)upg_hist_percentile(&d, 50);
}

/* clang-format off */
#define GAUGES(X)							\
	X(resident) X(resident_peak) X(budget) X(pool_objects) X(pool_same) \
	X(pool_stored_bytes) X(pool_compressed_bytes) X(pool_used_bytes) \
	X(pool_max_bytes)
/* clang-format on */

/*
 * @acc += @b - @a for every counter and histogram bucket (the struct is
 * uint64_t from fault_zero to its end); gauges take @b's value.
 */
static void stats_accum(struct upg_stats *acc, const struct upg_stats *a,
			const struct upg_stats *b)
{
	size_t off = offsetof(struct upg_stats, fault_zero);
	size_t n = (sizeof(*acc) - off) / sizeof(uint64_t);
	uint64_t *x = (uint64_t *)((char *)acc + off);
	const uint64_t *p = (const uint64_t *)((const char *)a + off);
	const uint64_t *q = (const uint64_t *)((const char *)b + off);

	for (size_t i = 0; i < n; i++)
		x[i] += q[i] - p[i];
#define GAUGE(f) acc->f = b->f;
	GAUGES(GAUGE)
#undef GAUGE
}

/* clang-format off */
#define DELTA_COUNTERS(X)						\
	X(fault_zero) X(fault_pool) X(fault_same) X(fault_dup)		\
	X(fault_deferred) X(fault_write) X(fault_around_zero)		\
	X(fault_around_pool) X(fault_copy_retry) X(fault_error)	\
	X(evict_pages) X(evict_batches) X(evict_sync) X(evict_clean_drop) \
	X(evict_compressed) X(evict_same) X(refault) X(budget_overruns)
/* clang-format on */

static void jstats(struct jb *j, const struct upg_stats *a,
		   const struct upg_stats *b)
{
	jraw(j, ",\"stats\":{\"_\":0");
#define DELTA(f) jint(j, #f, b->f - a->f);
	DELTA_COUNTERS(DELTA)
#undef DELTA
	jint(j, "resident", b->resident);
	jint(j, "budget_pages", b->budget);
	jint(j, "pool_objects", b->pool_objects);
	jnum(j, "pool_ratio",
	     b->pool_compressed_bytes ? (double)b->pool_stored_bytes /
						(double)b->pool_compressed_bytes
				      : NAN);
	/* The handler's own service time (fault read to install + wake). */
	jnum(j, "handler_zero_p50_ns",
	     hist_delta_p50(&a->lat_zero, &b->lat_zero));
	jnum(j, "handler_pool_p50_ns",
	     hist_delta_p50(&a->lat_pool, &b->lat_pool));
	jraw(j, "}");
}

/* ------------------------------------------------------------------ */
/* Text-like page contents                                             */
/* ------------------------------------------------------------------ */

#define TEMPLATES 64

static char templates[TEMPLATES][PAGE];

static void gen_text(char *page, uint64_t seed)
{
	wordtext_fill(page, PAGE, seed);
}

static void text_init(void)
{
	for (uint64_t i = 0; i < TEMPLATES; i++)
		gen_text(templates[i], i + 1);
}

/*
 * Page @i: a template rotated by a page-dependent offset, stamped with its
 * index, so that every page differs but all compress alike (~2-3x).
 */
static void page_text(char *dst, uint64_t i)
{
	const char *t = templates[(i * 7) % TEMPLATES];
	size_t rot = (size_t)((i * 977) % PAGE);
	char stamp[24];
	int n;

	memcpy(dst, t + rot, PAGE - rot);
	memcpy(dst + PAGE - rot, t, rot);
	n = snprintf(stamp, sizeof(stamp), "page %llu\n",
		     (unsigned long long)i);
	memcpy(dst, stamp, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* Faulting threads                                                    */
/* ------------------------------------------------------------------ */

/* Pages compressed with LZ4, packed one after another like pool objects. */
struct lz4set {
	char *c;
	size_t *off;
	int *len;
	size_t k;
	double ratio;
	long sink;
};

struct job {
	char *base;
	struct lz4set *lz4; /* decompress entries instead of touching pages */
	const uint32_t *order; /* page indices; NULL = 0, 1, 2, ... */
	size_t n;
	bool write;
	int cpu;
	uint64_t *lat; /* per-touch ns, or NULL */
	pthread_barrier_t *bar;
	uint64_t t0, t1;
	int err;
};

static inline void touch(char *p, bool write)
{
	if (write)
		*(volatile char *)p = 1;
	else
		(void)*(volatile char *)p;
}

static void lz4_one(struct lz4set *z, size_t i)
{
	static __thread char out[PAGE];

	z->sink += LZ4_decompress_safe(z->c + z->off[i], out, z->len[i],
				       (int)PAGE);
}

static inline void job_one(struct job *jb, size_t i)
{
	size_t idx = jb->order ? jb->order[i] : i;

	if (jb->lz4)
		lz4_one(jb->lz4, idx);
	else
		touch(jb->base + idx * PAGE, jb->write);
}

static void *job_main(void *arg)
{
	struct job *jb = arg;

	jb->err = pin_self(jb->cpu);
	if (jb->bar)
		pthread_barrier_wait(jb->bar);
	jb->t0 = now_ns();
	for (size_t i = 0; i < jb->n; i++) {
		if (jb->lat) {
			uint64_t t = now_ns();

			job_one(jb, i);
			jb->lat[i] = now_ns() - t;
		} else {
			job_one(jb, i);
		}
	}
	jb->t1 = now_ns();
	return NULL;
}

/* Run @n jobs at once (released together); returns the wall time in ns. */
static uint64_t run_jobs(struct job *jobs, int n)
{
	pthread_barrier_t bar;
	pthread_t t[8];
	uint64_t t0 = UINT64_MAX, t1 = 0;

	pthread_barrier_init(&bar, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		jobs[i].bar = &bar;
		if (pthread_create(&t[i], NULL, job_main, &jobs[i])) {
			fprintf(stderr, "bench_fault: pthread_create failed\n");
			exit(1);
		}
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (jobs[i].err)
			fprintf(stderr, "bench_fault: cannot pin to CPU %d\n",
				jobs[i].cpu);
		t0 = jobs[i].t0 < t0 ? jobs[i].t0 : t0;
		t1 = jobs[i].t1 > t1 ? jobs[i].t1 : t1;
	}
	pthread_barrier_destroy(&bar);
	return t1 - t0;
}

static int max_threads(void)
{
	return cfg.ncpu >= 2 ? 2 : 1;
}

/* ------------------------------------------------------------------ */
/* The floor: a bare userfaultfd handler                               */
/* ------------------------------------------------------------------ */

enum bare_mode { BARE_ZEROPAGE, BARE_COPY };

struct bare_handler {
	struct bare *b;
	int cpu;
	pthread_t thread;
	uint64_t served; /* faults this handler resolved (its own counter) */
};

struct bare {
	int uffd;
	enum bare_mode mode;
	char *region;
	size_t len;
	int nhandlers;
	struct bare_handler h[2];
	char src[PAGE] __attribute__((aligned(4096)));
};

static void bare_resolve(struct bare *b, uint64_t addr)
{
	struct uffdio_zeropage z = { .range = { addr, PAGE } };
	struct uffdio_copy c = { .dst = addr,
				 .src = (uintptr_t)b->src,
				 .len = PAGE };
	struct uffdio_range w = { addr, PAGE };
	int ret;

	do {
		ret = b->mode == BARE_ZEROPAGE
			      ? ioctl(b->uffd, UFFDIO_ZEROPAGE, &z)
			      : ioctl(b->uffd, UFFDIO_COPY, &c);
	} while (ret < 0 && errno == EAGAIN);
	if (ret < 0) /* EEXIST: resolved by someone else; wake anyway */
		ioctl(b->uffd, UFFDIO_WAKE, &w);
}

/* Blocking read of one message, resolve exactly one page; until cancelled. */
static void *bare_main(void *arg)
{
	struct bare_handler *h = arg;
	struct uffd_msg m;

	pin_self(h->cpu);
	for (;;) {
		ssize_t n = read(h->b->uffd, &m, sizeof(m));

		if (n != (ssize_t)sizeof(m)) {
			if (n < 0 && errno != EINTR && errno != EAGAIN)
				return NULL;
			continue;
		}
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		bare_resolve(h->b,
			     m.arg.pagefault.address & ~(uint64_t)(PAGE - 1));
		__atomic_store_n(&h->served, h->served + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* A region of @len registered (MISSING) on a fresh blocking uffd. */
static struct bare *bare_start(enum bare_mode mode, size_t len, int nhandlers)
{
	struct bare *b = aligned_alloc(4096, sizeof(*b));
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };

	if (!b)
		return NULL;
	memset(b, 0, sizeof(*b));
	gen_text(b->src, 12345);
	b->mode = mode;
	b->len = len;
	b->nhandlers = nhandlers;
	b->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (b->uffd < 0 || ioctl(b->uffd, UFFDIO_API, &api) < 0)
		goto err;
	b->region = anon_map(len);
	reg.range.start = (uintptr_t)b->region;
	reg.range.len = len;
	if (!b->region || ioctl(b->uffd, UFFDIO_REGISTER, &reg) < 0)
		goto err;
	for (int i = 0; i < nhandlers; i++) {
		b->h[i] = (struct bare_handler){ .b = b, .cpu = i };
		if (pthread_create(&b->h[i].thread, NULL, bare_main, &b->h[i]))
			goto err;
	}
	return b;
err:
	jerror("floor", "cannot set up a bare userfaultfd", strerror(errno));
	exit(2);
}

/* Which handler served the faults: the one on the faulter's CPU, or not. */
static void jbare(struct jb *j, struct bare *b)
{
	for (int i = 0; i < b->nhandlers; i++) {
		char k[32];

		snprintf(k, sizeof(k), "served_by_cpu%d", b->h[i].cpu);
		jint(j, k, __atomic_load_n(&b->h[i].served, __ATOMIC_RELAXED));
	}
}

static void bare_stop(struct bare *b)
{
	/* The handlers sit in read(), a cancellation point, holding nothing. */
	for (int i = 0; i < b->nhandlers; i++) {
		pthread_cancel(b->h[i].thread);
		pthread_join(b->h[i].thread, NULL);
	}
	munmap(b->region, b->len);
	close(b->uffd);
	free(b);
}

/* ------------------------------------------------------------------ */
/* upager runtimes                                                     */
/* ------------------------------------------------------------------ */

static size_t clamp_budget(size_t want)
{
	size_t cap = cfg.phys ? cfg.phys / 4 * 3 : want;

	want = (want + MIB - 1) & ~(MIB - 1);
	return want < cap ? want : cap;
}

/* Must be called from an unpinned thread (handlers: one per CPU). */
static struct upg *rt_create(const char *phase, unsigned cluster, size_t budget)
{
	struct upg_params p;
	struct upg *u;
	char c[16];
	int err;

	unpin_self();
	upg_params_init(&p);
	/* UPG_* variables apply (to compare fallbacks); the phase's own
	 * cluster and budget win. */
	err = upg_params_from_env(&p);
	snprintf(c, sizeof(c), "%u", cluster);
	if (!err)
		err = upg_params_set(&p, "CLUSTER", c);
	p.budget = clamp_budget(budget);
	if (!err)
		err = upg_create(&p, &u);
	if (err) {
		jerror(phase, "upg_create failed", upg_last_error());
		exit(2);
	}
	return u;
}

static char *rt_reserve(struct upg *u, const char *phase, size_t len)
{
	void *addr;

	if (upg_reserve(u, len, &addr)) {
		jerror(phase, "upg_reserve failed", upg_last_error());
		exit(2);
	}
	return addr;
}

static void rt_set_budget(struct upg *u, const char *phase, size_t bytes)
{
	if (upg_set_budget(u, clamp_budget(bytes))) {
		jerror(phase, "upg_set_budget failed", upg_last_error());
		exit(2);
	}
}

static void jruntime(struct jb *j, struct upg *u, unsigned cluster)
{
	jint(j, "cluster", cluster);
	jint(j, "budget_mib", upg_get_budget(u) / MIB);
	jstr(j, "features", upg_features(u));
}

/* Pages of [base, base + npages) not mapped (evicted), in random order. */
static uint32_t *evicted_pages(char *base, size_t npages, size_t *count,
			       uint64_t seed)
{
	unsigned char *vec = xmalloc(npages);
	uint32_t *out = xmalloc(npages * sizeof(*out));
	size_t n = 0;

	if (mincore(base, npages * PAGE, vec) < 0) {
		jerror("latency", "mincore failed", strerror(errno));
		exit(2);
	}
	for (size_t i = 0; i < npages; i++)
		if (!(vec[i] & 1))
			out[n++] = (uint32_t)i;
	free(vec);
	shuffle(out, n, seed);
	*count = n;
	return out;
}

/* Fill @npages pages with text (takes zero-fill faults), no timing. */
static void fill_text_region(char *base, size_t npages)
{
	for (size_t i = 0; i < npages; i++)
		page_text(base + i * PAGE, i);
}

/*
 * Evict: shrink the budget to @small (blocks until done), then raise it
 * to @big so that the faults that follow run without eviction.
 */
static void evict_most(struct upg *u, size_t small, size_t big)
{
	rt_set_budget(u, "latency", small);
	rt_set_budget(u, "latency", big);
}

/* ------------------------------------------------------------------ */
/* Phase: latency                                                      */
/* ------------------------------------------------------------------ */

/*
 * A timed series: touches of order[0, n) in @base, run in chunks so that
 * the series of one phase interleave (round after round) and background
 * load on this shared VM falls on all of them alike.
 */
struct series {
	const char *impl, *kind, *op;
	char *base;
	const uint32_t *order;
	size_t n, done;
	bool write;
	struct upg *u;	    /* stats source, or NULL */
	struct bare *bare;  /* the floor's handlers, or NULL */
	struct lz4set *lz4; /* an LZ4 series instead of touches */
	struct upg_stats acc;
	uint64_t *lat;
	struct summary s;
};

static void series_init(struct series *s, const char *impl, const char *kind,
			const char *op, char *base, const uint32_t *order,
			size_t n, struct upg *u)
{
	*s = (struct series){ .impl = impl,
			      .kind = kind,
			      .op = op,
			      .base = base,
			      .order = order,
			      .n = n,
			      .write = strcmp(op, "write") == 0,
			      .u = u };
	s->lat = xmalloc(n * sizeof(*s->lat));
}

/* Time the next share of @s on CPU 0, @left rounds (this one too) left. */
static void series_chunk(struct series *s, size_t left)
{
	struct job jb = { .base = s->base,
			  .order = s->order + s->done,
			  .write = s->write,
			  .cpu = 0,
			  .lz4 = s->lz4,
			  .lat = s->lat + s->done };
	struct upg_stats a, b;

	jb.n = (s->n - s->done + left - 1) / left;
	if (s->u)
		stats_read(s->u, &a);
	run_jobs(&jb, 1);
	if (s->u) {
		stats_read(s->u, &b);
		stats_accum(&s->acc, &a, &b);
	}
	s->done += jb.n;
}

/* Summarise, print and free the samples of @s. */
static void series_done(struct series *s, const char *handler)
{
	static const struct upg_stats zero;
	struct jb j;

	s->s = summarize(s->lat, s->done);
	free(s->lat);
	s->lat = NULL;
	jbegin(&j, "latency");
	jstr(&j, "impl", s->impl);
	jstr(&j, "kind", s->kind);
	jstr(&j, "op", s->op);
	jint(&j, "cpu", 0);
	jint(&j, "pages", s->done);
	jstr(&j, "order", "random");
	if (s->lz4) {
		jstr(&j, "memory", "aged like the pool (interleaved)");
		jnum(&j, "compress_ratio", s->lz4->ratio);
	}
	if (s->u)
		jruntime(&j, s->u, 1);
	if (s->bare) {
		jstr(&j, "handler", handler);
		jbare(&j, s->bare);
	}
	jsummary(&j, &s->s);
	if (s->u)
		jstats(&j, &zero, &s->acc);
	jend(&j);
}

/* Compress @k text pages (the pool's kind of page), packed. */
static void lz4set_build(struct lz4set *z, size_t k)
{
	int cap = LZ4_compressBound((int)PAGE);
	char *src = xmalloc(PAGE);
	size_t off = 0;

	z->k = k;
	z->c = xmalloc(k * (size_t)cap);
	z->off = xmalloc(k * sizeof(*z->off));
	z->len = xmalloc(k * sizeof(*z->len));
	for (size_t i = 0; i < k; i++) {
		page_text(src, i * 31 + 5);
		z->off[i] = off;
		z->len[i] =
			LZ4_compress_default(src, z->c + off, (int)PAGE, cap);
		off += (size_t)z->len[i];
	}
	z->ratio = (double)(k * PAGE) / (double)off;
	free(src);
}

static void lz4set_free(struct lz4set *z)
{
	if (z->sink % (long)PAGE)
		fprintf(stderr, "bench_fault: LZ4 round trip failed\n");
	free(z->c);
	free(z->off);
	free(z->len);
}

/*
 * LZ4_decompress_safe alone, just after compression (the set is warm):
 * best mean of three passes over the first lz4_pages entries
 * ("ns_per_page") and single-call percentiles on CPU 0.
 * Return: the single-call p50 (it pairs with the p50s it is added to).
 */
static double lz4_warm(struct lz4set *z)
{
	size_t k = MIN_SZ(cfg.lz4_pages, z->k);
	uint64_t best = UINT64_MAX, t;
	struct job jb = { .lz4 = z, .n = k, .cpu = 0 };
	struct summary s;
	struct jb j;

	for (int pass = 0; pass < 3; pass++) {
		t = run_jobs(&jb, 1);
		best = t < best ? t : best;
	}
	jb.lat = xmalloc(k * sizeof(*jb.lat));
	run_jobs(&jb, 1);
	s = summarize(jb.lat, k);
	free(jb.lat);
	jbegin(&j, "latency");
	jstr(&j, "impl", "lz4");
	jstr(&j, "kind", "pool");
	jstr(&j, "op", "decompress");
	jstr(&j, "memory", "warm");
	jint(&j, "cpu", 0);
	jint(&j, "pages", k);
	jnum(&j, "ns_per_page", (double)best / (double)k);
	jnum(&j, "compress_ratio", z->ratio);
	jsummary(&j, &s);
	jend(&j);
	return s.p50;
}

#define SMALL_BUDGET (8 * MIB)

enum {
	S_KERN_R,
	S_KERN_W,
	S_FZERO_R,
	S_FCOPY_R,
	S_FCOPY_W,
	S_FZERO2_R,
	S_FCOPY2_R,
	S_FCOPY2_W,
	S_LZ4,
	S_ZERO_R,
	S_ZERO_W,
	S_POOL_R,
	S_POOL_W,
	S_PRESSURE,
	NSERIES
};

/* Everything the latency phase keeps alive while its series interleave. */
struct lat_env {
	size_t n, npool;
	uint32_t *rd, *wr, *ev;
	char *kern;
	struct bare *bz, *bc, *bz2, *bc2;
	struct upg *uz, *up;
	char *zbase, *pbase;
	size_t big;
	struct series s[NSERIES];
	struct lz4set z;
	double lz4; /* warm LZ4 p50 */
};

/*
 * Pool hits: fill with text, evict nearly everything, raise the budget
 * again (no eviction while timing); the evicted pages in random order.
 */
static uint32_t *pool_setup(struct lat_env *e, size_t *nev)
{
	e->npool = 2 * e->n + 4096;
	e->big = 2 * e->npool * PAGE + 64 * MIB;
	e->up = rt_create("latency", 1, e->big);
	e->pbase = rt_reserve(e->up, "latency", e->npool * PAGE);
	fill_text_region(e->pbase, e->npool);
	evict_most(e->up, SMALL_BUDGET, e->big);
	return evicted_pages(e->pbase, e->npool, nev, 3);
}

static void lat_setup(struct lat_env *e)
{
	size_t n = e->n, m, nev;
	struct series *s = e->s;

	e->rd = random_order(0, n, 1);
	e->wr = random_order(n, n, 2);
	lz4set_build(&e->z, n);
	e->lz4 = lz4_warm(&e->z);
	e->kern = anon_map(2 * n * PAGE);
	if (!e->kern) {
		jerror("latency", "mmap failed", strerror(errno));
		exit(2);
	}
	e->bz = bare_start(BARE_ZEROPAGE, 2 * n * PAGE, 1);
	e->bc = bare_start(BARE_COPY, 2 * n * PAGE, 1);
	/* For diagnosis: upager's shape, one handler per CPU, no upager. */
	e->bz2 = bare_start(BARE_ZEROPAGE, 2 * n * PAGE, max_threads());
	e->bc2 = bare_start(BARE_COPY, 2 * n * PAGE, max_threads());
	e->uz = rt_create("latency", 1, 4 * n * PAGE + 64 * MIB);
	e->zbase = rt_reserve(e->uz, "latency", 2 * n * PAGE);
	e->ev = pool_setup(e, &nev);
	m = MIN_SZ(n, nev / 2);
	if (m < n)
		fprintf(stderr, "bench_fault: only %zu evicted pages\n", nev);
	series_init(&s[S_KERN_R], "kernel", "zero", "read", e->kern, e->rd, n,
		    NULL);
	series_init(&s[S_KERN_W], "kernel", "zero", "write", e->kern, e->wr, n,
		    NULL);
	series_init(&s[S_FZERO_R], "floor_zeropage", "zero", "read",
		    e->bz->region, e->rd, n, NULL);
	series_init(&s[S_FCOPY_R], "floor_copy", "copy", "read", e->bc->region,
		    e->rd, n, NULL);
	series_init(&s[S_FCOPY_W], "floor_copy", "copy", "write", e->bc->region,
		    e->wr, n, NULL);
	series_init(&s[S_FZERO2_R], "floor_zeropage_per_cpu", "zero", "read",
		    e->bz2->region, e->rd, n, NULL);
	series_init(&s[S_FCOPY2_R], "floor_copy_per_cpu", "copy", "read",
		    e->bc2->region, e->rd, n, NULL);
	series_init(&s[S_FCOPY2_W], "floor_copy_per_cpu", "copy", "write",
		    e->bc2->region, e->wr, n, NULL);
	series_init(&s[S_LZ4], "lz4", "pool", "decompress", NULL, e->rd, n,
		    NULL);
	s[S_LZ4].lz4 = &e->z;
	series_init(&s[S_ZERO_R], "upager", "zero", "read", e->zbase, e->rd, n,
		    e->uz);
	series_init(&s[S_ZERO_W], "upager", "zero", "write", e->zbase, e->wr, n,
		    e->uz);
	series_init(&s[S_POOL_R], "upager", "pool", "read", e->pbase, e->ev, m,
		    e->up);
	series_init(&s[S_POOL_W], "upager", "pool", "write", e->pbase,
		    e->ev + m, m, e->up);
	s[S_FZERO_R].bare = e->bz;
	s[S_FCOPY_R].bare = s[S_FCOPY_W].bare = e->bc;
	s[S_FZERO2_R].bare = e->bz2;
	s[S_FCOPY2_R].bare = s[S_FCOPY2_W].bare = e->bc2;
}

/*
 * With the small budget kept, so that the evictor runs meanwhile (pages
 * read back are dropped clean, written ones compressed again). Not
 * interleaved: the pressure would leak into the other series.
 */
static void lat_pressure(struct lat_env *e)
{
	struct series *s = &e->s[S_PRESSURE];
	size_t nev;

	free(e->ev);
	rt_set_budget(e->up, "latency", SMALL_BUDGET);
	e->ev = evicted_pages(e->pbase, e->npool, &nev, 4);
	series_init(s, "upager", "pool_pressure", "read", e->pbase, e->ev,
		    MIN_SZ(e->n, nev), e->up);
	series_chunk(s, 1);
	series_done(s, NULL);
}

static void lat_teardown(struct lat_env *e)
{
	munmap(e->kern, 2 * e->n * PAGE);
	bare_stop(e->bz);
	bare_stop(e->bc);
	bare_stop(e->bz2);
	bare_stop(e->bc2);
	upg_destroy(e->uz);
	upg_destroy(e->up);
	free(e->rd);
	free(e->wr);
	free(e->ev);
	lz4set_free(&e->z);
}

static void lat_ratios(const struct lat_env *e)
{
	const struct series *s = e->s;

	jratio("latency", "zero_read_p50_vs_floor", s[S_ZERO_R].s.p50,
	       s[S_FZERO_R].s.p50, 1.5,
	       "<=", "upager zero-fill read / bare ZEROPAGE floor, p50");
	jratio("latency", "zero_write_p50_vs_floor", s[S_ZERO_W].s.p50,
	       s[S_FCOPY_W].s.p50, 1.5,
	       "<=", "upager zero-fill write / bare COPY floor (write), p50");
	/*
	 * The target's "LZ4 decompression time for pool hits": decompressing
	 * entries that are as cold as the pool's (the aged series). The warm
	 * series decompresses what was just compressed, from the cache, which
	 * no pool hit does; its ratios are kept for comparison.
	 */
	jratio("latency", "pool_read_p50_vs_floor_lz4_aged", s[S_POOL_R].s.p50,
	       s[S_FCOPY_R].s.p50 + s[S_LZ4].s.p50, 1.5, "<=",
	       "upager pool-hit read / (bare COPY floor + LZ4 decompress p50 "
	       "of entries aged like the pool)");
	jratio("latency", "pool_write_p50_vs_floor_lz4_aged", s[S_POOL_W].s.p50,
	       s[S_FCOPY_W].s.p50 + s[S_LZ4].s.p50, 1.5, "<=",
	       "upager pool-hit write / (bare COPY floor + LZ4 decompress p50 "
	       "of entries aged like the pool)");
	jratio("latency", "pool_read_p50_vs_floor_lz4", s[S_POOL_R].s.p50,
	       s[S_FCOPY_R].s.p50 + e->lz4, NO_TARGET, "",
	       "upager pool-hit read / (bare COPY floor + warm LZ4 p50: the "
	       "entry just compressed, in the cache)");
	jratio("latency", "pool_write_p50_vs_floor_lz4", s[S_POOL_W].s.p50,
	       s[S_FCOPY_W].s.p50 + e->lz4, NO_TARGET, "",
	       "upager pool-hit write / (bare COPY floor + warm LZ4 p50)");
	jratio("latency", "pool_pressure_read_p50_vs_floor_lz4",
	       s[S_PRESSURE].s.p50, s[S_FCOPY_R].s.p50 + e->lz4, NO_TARGET, "",
	       "pool-hit read with the evictor running / (COPY floor + LZ4)");
	jratio("latency", "zero_read_p99_vs_floor", s[S_ZERO_R].s.p99,
	       s[S_FZERO_R].s.p99, NO_TARGET, "",
	       "upager zero-fill read / ZEROPAGE floor, p99");
	jratio("latency", "pool_read_p99_vs_floor_lz4", s[S_POOL_R].s.p99,
	       s[S_FCOPY_R].s.p99 + e->lz4, NO_TARGET, "",
	       "upager pool-hit read / (COPY floor + LZ4), p99");
	jratio("latency", "pool_read_p50_vs_floor_per_cpu_lz4_aged",
	       s[S_POOL_R].s.p50, s[S_FCOPY2_R].s.p50 + s[S_LZ4].s.p50,
	       NO_TARGET, "",
	       "pool-hit read / (COPY floor with a handler per CPU + aged LZ4)");
	jratio("latency", "pool_write_p50_vs_floor_per_cpu_lz4_aged",
	       s[S_POOL_W].s.p50, s[S_FCOPY2_W].s.p50 + s[S_LZ4].s.p50,
	       NO_TARGET, "",
	       "pool-hit write / (COPY floor with a handler per CPU + aged LZ4)");
	jratio("latency", "zero_read_p50_vs_floor_per_cpu", s[S_ZERO_R].s.p50,
	       s[S_FZERO2_R].s.p50, NO_TARGET, "",
	       "upager zero-fill read / ZEROPAGE floor with a handler per CPU");
	jratio("latency", "zero_write_p50_vs_floor_per_cpu", s[S_ZERO_W].s.p50,
	       s[S_FCOPY2_W].s.p50, NO_TARGET, "",
	       "upager zero-fill write / COPY floor with a handler per CPU");
	jratio("latency", "floor_zeropage_vs_kernel_read", s[S_FZERO_R].s.p50,
	       s[S_KERN_R].s.p50, NO_TARGET, "",
	       "bare uffd ZEROPAGE / kernel first-touch read, p50");
	jratio("latency", "floor_copy_vs_kernel_write", s[S_FCOPY_W].s.p50,
	       s[S_KERN_W].s.p50, NO_TARGET, "",
	       "bare uffd COPY / kernel first-touch write, p50");
}

static void phase_latency(void)
{
	static const char *const bare1 = "1 thread, CPU 0, blocking read()";
	static const char *const bare2 = "one per CPU, pinned, blocking read()";
	struct lat_env e = { .n = cfg.lat_pages };

	lat_setup(&e);
	for (size_t r = 0; r < cfg.rounds; r++)
		for (int i = 0; i < S_PRESSURE; i++)
			series_chunk(&e.s[i], cfg.rounds - r);
	for (int i = 0; i < S_PRESSURE; i++)
		series_done(&e.s[i], e.s[i].bare && e.s[i].bare->nhandlers > 1
					     ? bare2
					     : bare1);
	lat_pressure(&e);
	lat_ratios(&e);
	lat_teardown(&e);
}

/* ------------------------------------------------------------------ */
/* Phase: first-touch throughput                                       */
/* ------------------------------------------------------------------ */

/* Sequential one-byte writes to every page of @base on CPU 0; ns. */
static uint64_t seq_touch(char *base, size_t len)
{
	struct job jb = {
		.base = base, .n = len / PAGE, .write = true, .cpu = 0
	};

	return run_jobs(&jb, 1);
}

static uint64_t ft_kernel_once(size_t len)
{
	char *p = anon_map(len);
	uint64_t ns;

	if (!p) {
		jerror("firsttouch", "mmap failed", strerror(errno));
		exit(2);
	}
	ns = seq_touch(p, len);
	munmap(p, len);
	return ns;
}

static uint64_t ft_upager_once(struct upg *u, size_t len)
{
	char *p = rt_reserve(u, "firsttouch", len);
	uint64_t ns = seq_touch(p, len);

	upg_release(u, p);
	return ns;
}

static double median_ns(uint64_t *ns, int n)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	return n % 2 ? (double)ns[n / 2]
		     : ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / 2;
}

/* One first-touch line; returns MB/s (10^6 bytes per second). */
static double jft(const char *impl, struct upg *u, unsigned cluster,
		  uint64_t *ns, int reps, const struct upg_stats *a,
		  const struct upg_stats *b)
{
	size_t len = cfg.ft_mib * MIB;
	double med = median_ns(ns, reps), mbps = (double)len / med * 1e3;
	struct jb j;

	jbegin(&j, "firsttouch");
	jstr(&j, "impl", impl);
	jstr(&j, "op", "write");
	jstr(&j, "order", "sequential");
	jint(&j, "cpu", 0);
	jint(&j, "mib", cfg.ft_mib);
	jint(&j, "reps", (uint64_t)reps);
	if (u)
		jruntime(&j, u, cluster);
	jnum(&j, "seconds", med / 1e9);
	jnum(&j, "mb_per_s", mbps);
	jnum(&j, "ns_per_page", med / (double)(len / PAGE));
	jnum(&j, "best_ns_per_page", (double)ns[0] / (double)(len / PAGE));
	jnum(&j, "worst_ns_per_page",
	     (double)ns[reps - 1] / (double)(len / PAGE));
	if (u) {
		uint64_t f = b->fault_zero - a->fault_zero;

		jnum(&j, "pages_per_fault",
		     f ? (double)(b->fault_zero - a->fault_zero +
				  b->fault_around_zero - a->fault_around_zero) /
				     (double)f
		       : NAN);
		jstats(&j, a, b);
	}
	jend(&j);
	return mbps;
}

/* Repetitions interleaved (kernel, c16, c64, kernel, ...) against drift. */
static void phase_firsttouch(void)
{
	size_t len = cfg.ft_mib * MIB, budget = 2 * len + 64 * MIB;
	struct upg *u16 = rt_create("firsttouch", 16, budget);
	struct upg *u64 = rt_create("firsttouch", 64, budget);
	uint64_t k[16], a[16], b[16];
	struct upg_stats a0, a1, b0, b1;
	int reps = cfg.ft_reps;
	double mk, m16, m64;

	stats_read(u16, &a0);
	stats_read(u64, &b0);
	for (int i = 0; i < reps; i++) {
		k[i] = ft_kernel_once(len);
		a[i] = ft_upager_once(u16, len);
		b[i] = ft_upager_once(u64, len);
	}
	stats_read(u16, &a1);
	stats_read(u64, &b1);
	mk = jft("kernel", NULL, 0, k, reps, NULL, NULL);
	m16 = jft("upager", u16, 16, a, reps, &a0, &a1);
	m64 = jft("upager", u64, 64, b, reps, &b0, &b1);
	jratio("firsttouch", "firsttouch_c16_vs_kernel", m16, mk, 0.5,
	       ">=", "upager (cluster 16) MB/s / kernel MB/s");
	jratio("firsttouch", "firsttouch_c64_vs_kernel", m64, mk, 0.5,
	       ">=", "upager (cluster 64) MB/s / kernel MB/s");
	upg_destroy(u16);
	upg_destroy(u64);
}

/* ------------------------------------------------------------------ */
/* Phase: faults while other work holds every CPU                      */
/* ------------------------------------------------------------------ */

/*
 * Handler priority under contention: one faulting thread (random zero-fill
 * writes) while a spinning thread holds every CPU, for each
 * UPG_IDLE_HANDLERS mode, in interleaved rounds of at most CONT_ROUND_NS
 * each. Idle handlers starve here (they run only on an idle CPU); auto
 * must stay close to normal priority.
 */
#define CONT_ROUND_NS 500000000ULL

enum { C_OFF, C_ON, C_AUTO, NCONT };

struct cont {
	const char *mode;
	struct upg *u;
	char *base;
	size_t next, npages;
	double faults, ns;
	struct upg_stats acc;
};

struct hog_arg {
	int cpu;
	_Atomic bool *stop;
};

static void *hog_main(void *arg)
{
	struct hog_arg *h = arg;

	pin_self(h->cpu);
	while (!atomic_load_explicit(h->stop, memory_order_relaxed))
		;
	return NULL;
}

static void cont_round(struct cont *c, const uint32_t *order, size_t per)
{
	struct hog_arg h[CPU_SETSIZE];
	pthread_t th[CPU_SETSIZE];
	_Atomic bool stop = false;
	struct upg_stats a, b;
	size_t n = 0, nh = 0;
	uint64_t t0, t;

	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &cfg.allowed))
			continue;
		h[nh] = (struct hog_arg){ .cpu = cpu, .stop = &stop };
		pthread_create(&th[nh], NULL, hog_main, &h[nh]);
		nh++;
	}
	unpin_self();
	stats_read(c->u, &a);
	t0 = t = now_ns();
	while (n < per && c->next < c->npages && t - t0 < CONT_ROUND_NS) {
		c->base[(size_t)order[c->next++] * PAGE] = 1;
		if (++n % 16 == 0)
			t = now_ns();
	}
	t = now_ns();
	stats_read(c->u, &b);
	atomic_store(&stop, true);
	for (size_t i = 0; i < nh; i++)
		pthread_join(th[i], NULL);
	stats_accum(&c->acc, &a, &b);
	c->faults += (double)n;
	c->ns += (double)(t - t0);
}

static void phase_contended(void)
{
	static const char *const modes[NCONT] = { "off", "on", "auto" };
	static const struct upg_stats zero;
	size_t npages = cfg.thr_faults, per = npages / cfg.rounds + 1;
	uint32_t *order = random_order(0, npages, 31);
	struct cont c[NCONT];
	struct jb j;

	for (int i = 0; i < NCONT; i++) {
		c[i] = (struct cont){ .mode = modes[i], .npages = npages };
		setenv("UPG_IDLE_HANDLERS", modes[i], 1);
		c[i].u =
			rt_create("contended", 1, 2 * npages * PAGE + 64 * MIB);
		c[i].base = rt_reserve(c[i].u, "contended", npages * PAGE);
	}
	unsetenv("UPG_IDLE_HANDLERS");
	usleep(100000); /* the guard lowers its handlers */
	for (size_t r = 0; r < cfg.rounds; r++)
		for (int i = 0; i < NCONT; i++)
			cont_round(&c[i], order, per);
	for (int i = 0; i < NCONT; i++) {
		jbegin(&j, "contended");
		jstr(&j, "impl", "upager_zero");
		jstr(&j, "idle_handlers", c[i].mode);
		jint(&j, "hogs", (uint64_t)cfg.ncpu);
		jint(&j, "faults", (uint64_t)c[i].faults);
		jnum(&j, "seconds", c[i].ns / 1e9);
		jnum(&j, "faults_per_s", c[i].faults / (c[i].ns / 1e9));
		jruntime(&j, c[i].u, 1);
		jstats(&j, &zero, &c[i].acc);
		jend(&j);
	}
	jratio("contended", "contended_auto_vs_off",
	       c[C_AUTO].faults / c[C_AUTO].ns, c[C_OFF].faults / c[C_OFF].ns,
	       0.8, ">=",
	       "faults/s beside a spinning thread on every CPU, "
	       "UPG_IDLE_HANDLERS=auto / off");
	jratio("contended", "contended_on_vs_off", c[C_ON].faults / c[C_ON].ns,
	       c[C_OFF].faults / c[C_OFF].ns, NO_TARGET, "",
	       "the same, always idle / off: what the guard saves");
	for (int i = 0; i < NCONT; i++)
		upg_destroy(c[i].u);
	free(order);
}

/* ------------------------------------------------------------------ */
/* Phase: fault throughput with 1 and 2 threads                        */
/* ------------------------------------------------------------------ */

/*
 * One implementation's fault-throughput runs. Its region holds 3F fresh
 * (or evicted) pages in random order, consumed round by round: F by the
 * 1-thread runs, 2F by the 2-thread runs, so that every page faults once.
 * The spin baseline (no pages) is pure computation.
 */
struct tseries {
	const char *impl, *op, *handler;
	char *base;
	const uint32_t *order;
	size_t next;
	struct upg *u;
	struct bare *bare;
	double work[3], ns[3]; /* by thread count */
	struct upg_stats acc[3];
};

struct spin_arg {
	int cpu;
	uint64_t iters, sink;
	pthread_barrier_t *bar;
};

static void *spin_main(void *arg)
{
	struct spin_arg *a = arg;
	uint64_t x = (uint64_t)a->cpu + 1;

	pin_self(a->cpu);
	pthread_barrier_wait(a->bar);
	for (uint64_t i = 0; i < a->iters; i++)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	a->sink = x;
	return NULL;
}

/* @t threads of @iters LCG steps each; returns the wall time in ns. */
static uint64_t spin_run(int t, uint64_t iters)
{
	struct spin_arg a[2];
	pthread_barrier_t bar;
	pthread_t th[2];
	uint64_t ns;

	pthread_barrier_init(&bar, NULL, (unsigned)t + 1);
	for (int i = 0; i < t; i++) {
		a[i] = (struct spin_arg){ .cpu = i,
					  .iters = iters,
					  .bar = &bar };
		pthread_create(&th[i], NULL, spin_main, &a[i]);
	}
	pthread_barrier_wait(&bar);
	ns = now_ns();
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	ns = now_ns() - ns;
	pthread_barrier_destroy(&bar);
	return ns;
}

/* One round of @s with @t threads: @per faults (or spin steps) each. */
static void tseries_chunk(struct tseries *s, int t, size_t per)
{
	struct job jobs[2];
	struct upg_stats a, b;
	uint64_t ns;

	if (!s->base) {
		per *= 2000; /* ~1-2 ns a step against ~5 us a fault */
		ns = spin_run(t, per);
	} else {
		for (int i = 0; i < t; i++)
			jobs[i] = (struct job){
				.base = s->base,
				.order = s->order + s->next + (size_t)i * per,
				.n = per,
				.write = strcmp(s->op, "write") == 0,
				.cpu = i
			};
		if (s->u)
			stats_read(s->u, &a);
		ns = run_jobs(jobs, t);
		if (s->u) {
			stats_read(s->u, &b);
			stats_accum(&s->acc[t], &a, &b);
		}
		s->next += per * (size_t)t;
	}
	s->work[t] += (double)(per * (size_t)t);
	s->ns[t] += (double)ns;
}

static void jthr(const struct tseries *s, int t)
{
	static const struct upg_stats zero;
	double rate = s->work[t] / (s->ns[t] / 1e9);
	struct jb j;

	jbegin(&j, "threads");
	jstr(&j, "impl", s->impl);
	jstr(&j, "op", s->op);
	jint(&j, "threads", (uint64_t)t);
	jstr(&j, "cpus", t == 1 ? "0" : "0,1");
	jint(&j, "rounds", cfg.rounds);
	jnum(&j, "seconds", s->ns[t] / 1e9);
	if (!s->base) {
		jnum(&j, "steps", s->work[t]);
		jnum(&j, "steps_per_s", rate);
		jend(&j);
		return;
	}
	jstr(&j, "order", "random");
	jint(&j, "faults_per_thread", (uint64_t)s->work[t] / (uint64_t)t);
	jint(&j, "faults", (uint64_t)s->work[t]);
	jnum(&j, "faults_per_s", rate);
	jnum(&j, "us_per_fault_per_thread", 1e6 / rate * t);
	if (s->u) {
		jruntime(&j, s->u, 1);
		jstats(&j, &zero, &s->acc[t]);
	} else if (s->bare) {
		jstr(&j, "handler", s->handler);
		jbare(&j, s->bare); /* cumulative over 1 and 2 threads */
	}
	jend(&j);
}

static void thr_ratio(const struct tseries *s, double target)
{
	char name[64];

	snprintf(name, sizeof(name), "threads_%s_2t_vs_1t", s->impl);
	jratio("threads", name, s->work[2] / s->ns[2] * 1e9,
	       s->work[1] / s->ns[1] * 1e9, target, ">=",
	       s->base ? "faults/s with 2 threads / with 1 thread"
		       : "pure computation, 2 threads / 1: the machine's "
			 "ceiling for every 2-thread ratio right now");
}

enum { T_SPIN, T_KERN, T_FLOOR, T_ZERO, T_POOL, NTSERIES };

struct thr_env {
	size_t pages; /* 3F */
	uint32_t *order, *ev;
	struct bare *bc;
	struct upg *uz, *up;
	struct tseries s[NTSERIES];
};

static void thr_pool_setup(struct thr_env *e)
{
	size_t npool = e->pages + 4096, nev;
	size_t big = 2 * npool * PAGE + 64 * MIB;
	char *base;

	e->up = rt_create("threads", 1, big);
	base = rt_reserve(e->up, "threads", npool * PAGE);
	fill_text_region(base, npool);
	evict_most(e->up, SMALL_BUDGET, big);
	e->ev = evicted_pages(base, npool, &nev, 40);
	if (nev < e->pages) {
		jerror("threads", "too few evicted pages", "upager_pool");
		exit(2);
	}
	e->s[T_POOL] = (struct tseries){ .impl = "upager_pool",
					 .op = "read",
					 .base = base,
					 .order = e->ev,
					 .u = e->up };
}

static void thr_setup(struct thr_env *e)
{
	size_t len = e->pages * PAGE;
	char *kern = anon_map(len);

	if (!kern) {
		jerror("threads", "mmap failed", strerror(errno));
		exit(2);
	}
	e->order = random_order(0, e->pages, 30);
	e->bc = bare_start(BARE_COPY, len, max_threads());
	e->uz = rt_create("threads", 1, 2 * len + 64 * MIB);
	e->s[T_SPIN] = (struct tseries){ .impl = "cpu_spin", .op = "lcg" };
	e->s[T_KERN] = (struct tseries){
		.impl = "kernel", .op = "write", .base = kern, .order = e->order
	};
	e->s[T_FLOOR] = (struct tseries){
		.impl = "floor_copy",
		.op = "write",
		.base = e->bc->region,
		.order = e->order,
		.bare = e->bc,
		.handler = "one per CPU, pinned, blocking read()"
	};
	e->s[T_ZERO] =
		(struct tseries){ .impl = "upager_zero",
				  .op = "write",
				  .order = e->order,
				  .base = rt_reserve(e->uz, "threads", len),
				  .u = e->uz };
	thr_pool_setup(e);
}

static void thr_teardown(struct thr_env *e)
{
	munmap(e->s[T_KERN].base, e->pages * PAGE);
	bare_stop(e->bc);
	upg_destroy(e->uz);
	upg_destroy(e->up);
	free(e->order);
	free(e->ev);
}

/*
 * Rounds of: every implementation with 1 thread, then with 2, so that
 * background load on the VM falls on all of them alike.
 */
static void phase_threads(void)
{
	struct thr_env e = { .pages = 3 * cfg.thr_faults };
	size_t per = cfg.thr_faults / cfg.rounds;

	if (max_threads() < 2)
		jerror("threads", "only one CPU available",
		       "2-thread runs skipped");
	if (!per)
		per = 1;
	thr_setup(&e);
	for (size_t r = 0; r < cfg.rounds; r++)
		for (int i = 0; i < NTSERIES; i++)
			for (int t = 1; t <= max_threads(); t++)
				tseries_chunk(&e.s[i], t, per);
	for (int i = 0; i < NTSERIES; i++)
		for (int t = 1; t <= max_threads(); t++)
			jthr(&e.s[i], t);
	if (max_threads() >= 2)
		for (int i = 0; i < NTSERIES; i++)
			thr_ratio(&e.s[i],
				  i == T_ZERO || i == T_POOL ? 1.7 : NO_TARGET);
	thr_teardown(&e);
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_fault [--quick]\n"
		"                   [--phase latency|firsttouch|threads|contended]\n"
		"                   [--pages N] [--mib N] [--faults N] [--reps N]\n"
		"                   [--rounds N]\n"
		"  --quick     small sizes (whole run < 20 s)\n"
		"  --pages N   timed faults per latency series (default 50000)\n"
		"  --mib N     first-touch size in MiB (default 1024)\n"
		"  --faults N  faults per thread, threads phase (default 60000)\n"
		"  --reps N    first-touch repetitions, 1-15 (default 5)\n"
		"  --rounds N  interleaving rounds, latency and threads (default\n"
		"              20; 1 runs each series in one piece)\n");
}

static size_t parse_num(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	if (*end || !v) {
		fprintf(stderr, "bench_fault: bad number '%s'\n", s);
		usage(stderr);
		exit(1);
	}
	return (size_t)v;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "phase", required_argument, NULL, 'p' },
		{ "pages", required_argument, NULL, 'n' },
		{ "mib", required_argument, NULL, 'm' },
		{ "faults", required_argument, NULL, 'f' },
		{ "reps", required_argument, NULL, 'r' },
		{ "rounds", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	size_t pages = 0, mib = 0, faults = 0, reps = 0, rounds = 0;
	int c;

	while ((c = getopt_long(argc, argv, "qp:n:m:f:r:R:h", opts, NULL)) !=
	       -1) {
		switch (c) {
		case 'q':
			cfg.quick = true;
			break;
		case 'p':
			cfg.phase = optarg;
			break;
		case 'n':
			pages = parse_num(optarg);
			break;
		case 'm':
			mib = parse_num(optarg);
			break;
		case 'f':
			faults = parse_num(optarg);
			break;
		case 'r':
			reps = parse_num(optarg);
			break;
		case 'R':
			rounds = parse_num(optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(1);
		}
	}
	if (optind < argc) {
		usage(stderr);
		exit(1);
	}
	cfg.lat_pages = pages ? pages : cfg.quick ? 3000 : 50000;
	cfg.ft_mib = mib ? mib : cfg.quick ? 64 : 1024;
	cfg.thr_faults = faults ? faults : cfg.quick ? 4000 : 60000;
	cfg.ft_reps = (int)(reps ? MIN_SZ(reps, 15) : cfg.quick ? 1 : 5);
	cfg.lz4_pages = cfg.quick ? 1024 : 8192;
	cfg.rounds = rounds ? rounds : cfg.quick ? 4 : 20;
}

/* The first line of /proc/stat: user nice system idle iowait irq softirq steal. */
struct cpustat {
	unsigned long long v[8];
};

static void cpustat_read(struct cpustat *c)
{
	FILE *f = fopen("/proc/stat", "r");

	memset(c, 0, sizeof(*c));
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &c->v[0],
		   &c->v[1], &c->v[2], &c->v[3], &c->v[4], &c->v[5], &c->v[6],
		   &c->v[7]) != 8)
		memset(c, 0, sizeof(*c));
	fclose(f);
}

/* Share of CPU time in @b - @a that was busy (@idx < 0) or in field @idx. */
static double cpustat_share(const struct cpustat *a, const struct cpustat *b,
			    int idx)
{
	double total = 0, part;

	for (int i = 0; i < 8; i++)
		total += (double)(b->v[i] - a->v[i]);
	part = idx >= 0 ? (double)(b->v[idx] - a->v[idx])
			: total - (double)(b->v[3] - a->v[3] + b->v[4] -
					   a->v[4]);
	return total > 0 ? part / total : NAN;
}

/* Share of all CPU time that was busy over @ms (other load on the VM). */
static double cpu_busy(unsigned ms)
{
	struct cpustat a, b;

	cpustat_read(&a);
	usleep(ms * 1000);
	cpustat_read(&b);
	return cpustat_share(&a, &b, -1);
}

/*
 * Guest memory freed here is reported to the host (virtio-balloon free
 * page reporting) and faults in the host again when reused: a cost that
 * every fresh page allocation may pay, upager or kernel alike.
 */
static double reported_mib(void)
{
	FILE *f = fopen("/sys/module/page_reporting/parameters/reported_kib",
			"r");
	unsigned long long v;
	double r = NAN;

	if (f) {
		if (fscanf(f, "%llu", &v) == 1)
			r = (double)v / 1024;
		fclose(f);
	}
	return r;
}

struct phase_clock {
	struct cpustat cs;
	double reported;
	uint64_t t;
};

static void phase_begin(struct phase_clock *c)
{
	cpustat_read(&c->cs);
	c->reported = reported_mib();
	c->t = now_ns();
}

/* What the machine did during a phase: host steal, memory reported. */
static void phase_end(const struct phase_clock *c, const char *phase)
{
	struct cpustat now;
	struct jb j;

	cpustat_read(&now);
	jbegin(&j, "machine");
	jstr(&j, "after", phase);
	jnum(&j, "seconds", (double)(now_ns() - c->t) / 1e9);
	jnum(&j, "busy_share", cpustat_share(&c->cs, &now, -1));
	jnum(&j, "steal_share", cpustat_share(&c->cs, &now, 7));
	jnum(&j, "reported_to_host_mib", reported_mib() - c->reported);
	jend(&j);
}

static double loadavg1(void)
{
	double l = NAN;
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = NAN;
		fclose(f);
	}
	return l;
}

/* The machine as we found it: other load makes every number noisier. */
static void jmachine(const char *phase)
{
	struct jb j;

	jbegin(&j, phase);
	jint(&j, "cpus", (uint64_t)cfg.ncpu);
	jint(&j, "phys_mib", cfg.phys / MIB);
	jnum(&j, "loadavg1", loadavg1());
	jnum(&j, "cpu_busy_idle_window", cpu_busy(300));
	jstr(&j, "upager_version", upg_version());
	if (strcmp(phase, "setup") == 0) {
		jint(&j, "lat_pages", cfg.lat_pages);
		jint(&j, "ft_mib", cfg.ft_mib);
		jint(&j, "ft_reps", (uint64_t)cfg.ft_reps);
		jint(&j, "thr_faults", cfg.thr_faults);
		jint(&j, "lz4_pages", cfg.lz4_pages);
		jint(&j, "rounds", cfg.rounds);
		jnum(&j, "clock_overhead_ns", cfg.clock_ns);
	}
	jend(&j);
}

static const struct {
	const char *name;
	void (*run)(void);
} phases[] = {
	{ "latency", phase_latency },
	{ "firsttouch", phase_firsttouch },
	{ "threads", phase_threads },
	{ "contended", phase_contended },
};

static bool want(const char *phase)
{
	return !cfg.phase || strcmp(cfg.phase, phase) == 0;
}

int main(int argc, char **argv)
{
	cpu_set_t set;

	parse_args(argc, argv);
	if (cfg.phase && !want("latency") && !want("firsttouch") &&
	    !want("threads") && !want("contended")) {
		fprintf(stderr, "bench_fault: unknown phase '%s'\n", cfg.phase);
		usage(stderr);
		return 1;
	}
	cfg.phys =
		(size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
	cfg.ncpu =
		sched_getaffinity(0, sizeof(set), &set) ? 1 : CPU_COUNT(&set);
	cfg.allowed = set;
	if (!CPU_ISSET(0, &set) || (cfg.ncpu >= 2 && !CPU_ISSET(1, &set))) {
		jerror("setup", "CPUs 0 and 1 must be allowed", "");
		return 2;
	}
	cfg.clock_ns = clock_overhead();
	text_init();
	jmachine("setup");
	for (size_t i = 0; i < ARRAY_LEN(phases); i++) {
		struct phase_clock c;

		if (!want(phases[i].name))
			continue;
		phase_begin(&c);
		phases[i].run();
		phase_end(&c, phases[i].name);
	}
	jmachine("end");
	return 0;
}

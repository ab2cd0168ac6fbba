/* SPDX-License-Identifier: MIT */
/*
 * Statistics: summing the shards, counter names, latency percentiles and
 * the UPG_STATS=1 report. Everything is generated from UPG_STATS_COUNTERS
 * and UPG_STATS_HISTS in <upager/stats.h>.
 *
 * No locks: shards are read with relaxed loads while their owners keep
 * counting, so a sum is a snapshot that may be slightly stale and slightly
 * inconsistent (a histogram's count may differ from the sum of its buckets;
 * percentiles therefore rank against the bucket total). Nothing here
 * allocates: the report only calls fprintf() on the caller's stream, so it
 * may run at exit in a preloaded program whose malloc is managed.
 */
#include <inttypes.h>
#include <string.h>

#include "stats.h"

static const char *const counter_names[] = {
#define STAT_NAME(name, desc) #name,
	UPG_STATS_COUNTERS(STAT_NAME)
#undef STAT_NAME
};

static const char *const counter_descs[] = {
#define STAT_DESC(name, desc) desc,
	UPG_STATS_COUNTERS(STAT_DESC)
#undef STAT_DESC
};

static const size_t counter_off[] = {
#define STAT_OFF(name, desc) offsetof(struct upg_stats, name),
	UPG_STATS_COUNTERS(STAT_OFF)
#undef STAT_OFF
};

static const char *const hist_names[] = {
#define HIST_NAME(name, desc) "lat_" #name,
	UPG_STATS_HISTS(HIST_NAME)
#undef HIST_NAME
};

static const size_t hist_off[] = {
#define HIST_OFF(name, desc) offsetof(struct upg_stats, lat_##name),
	UPG_STATS_HISTS(HIST_OFF)
#undef HIST_OFF
};

/* Width of the name column: the longest counter name. */
#define NAME_WIDTH 22

static uint64_t *counter(struct upg_stats *s, unsigned id)
{
	return (uint64_t *)((char *)s + counter_off[id]);
}

static uint64_t counter_val(const struct upg_stats *s, unsigned id)
{
	return *(const uint64_t *)((const char *)s + counter_off[id]);
}

static struct upg_hist *hist(struct upg_stats *s, unsigned id)
{
	return (struct upg_hist *)((char *)s + hist_off[id]);
}

static const struct upg_hist *chist(const struct upg_stats *s, unsigned id)
{
	return (const struct upg_hist *)((const char *)s + hist_off[id]);
}

const char *upg_stat_name(unsigned id)
{
	return id < UPG_STAT_NR ? counter_names[id] : NULL;
}

const char *upg_stat_desc(unsigned id)
{
	return id < UPG_STAT_NR ? counter_descs[id] : NULL;
}

/* ---- summing ---- */

static uint64_t load(const _Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static void add_hist(struct upg_hist *sum, const struct upg_stat_hist *h)
{
	unsigned b;

	sum->count += load(&h->count);
	sum->sum_ns += load(&h->sum_ns);
	for (b = 0; b < UPG_HIST_BUCKETS; b++)
		sum->bucket[b] += load(&h->bucket[b]);
}

static void add_shard(struct upg_stats *sum, const struct upg_stat_shard *sh)
{
	unsigned id;

	for (id = 0; id < UPG_STAT_NR; id++)
		*counter(sum, id) += load(&sh->c[id]);
	for (id = 0; id < UPG_HIST_NR; id++)
		add_hist(hist(sum, id), &sh->h[id]);
}

/*
 * Every counter and histogram of @out is overwritten with the sum (gauge
 * slots too: they are 0 in the shards unless a shard keeps one as a
 * wrapping add/sub, which sums correctly), so the caller fills gauges
 * afterwards. Only @out->size bytes are written, for callers built against
 * an older, smaller struct.
 */
void upg_stat_sum(const struct upg_stat_shard *shards, unsigned n,
		  struct upg_stats *out)
{
	struct upg_stats sum;
	unsigned i;

	memset(&sum, 0, sizeof(sum));
	for (i = 0; i < n; i++)
		add_shard(&sum, &shards[i]);
	sum.size = out->size;
	sum.version = UPG_STATS_VERSION;
	memcpy(out, &sum, MIN((size_t)out->size, sizeof(sum)));
}

/* ---- percentiles ---- */

/* 2^f for f in [0, 1], without libm: the series of e^(f ln 2). */
static double exp2_frac(double f)
{
	double x = f * 0.69314718055994530942, term = 1, sum = 1;
	int k;

	/* x <= ln 2, so the 14th term is below 1e-13 */
	for (k = 1; k < 14; k++) {
		term *= x / k;
		sum += term;
	}
	return sum;
}

uint64_t upg_hist_percentile(const struct upg_hist *h, double p)
{
	uint64_t total = 0, cum = 0;
	double rank;
	unsigned i;

	for (i = 0; i < UPG_HIST_BUCKETS; i++)
		total += h->bucket[i];
	if (!total)
		return 0;
	p = p > 0 ? (p < 100 ? p : 100) : 0; /* NaN counts as 0 */
	rank = p / 100 * (double)total;
	for (i = 0; i < UPG_HIST_BUCKETS - 1; i++) {
		if (h->bucket[i] && (double)(cum + h->bucket[i]) >= rank)
			break;
		cum += h->bucket[i];
	}
	if (!h->bucket[i]) /* only reachable through the last bucket */
		return (uint64_t)1 << i;
	/* Geometric: samples spread evenly on a log scale in [2^i, 2^(i+1)) */
	return (uint64_t)((double)((uint64_t)1 << i) *
			  exp2_frac((rank - (double)cum) /
				    (double)h->bucket[i]));
}

/* ---- the report ---- */

static void print_row(FILE *f, const char *name, const char *value,
		      const char *desc)
{
	fprintf(f, "  %-*s %14s  %s\n", NAME_WIDTH, name, value, desc);
}

static void print_counters(FILE *f, const struct upg_stats *s)
{
	char v[24];
	unsigned id;

	for (id = 0; id < UPG_STAT_NR; id++) {
		snprintf(v, sizeof(v), "%" PRIu64, counter_val(s, id));
		print_row(f, counter_names[id], v, counter_descs[id]);
	}
}

/* "a/b" with two decimals, "-" when b is 0. */
static const char *ratio(char *buf, size_t len, uint64_t a, uint64_t b,
			 const char *unit)
{
	if (!b)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.2f%s", (double)a / (double)b, unit);
	return buf;
}

static void print_derived(FILE *f, const struct upg_stats *s)
{
	uint64_t faults = s->fault_zero + s->fault_pool + s->fault_same;
	uint64_t used = s->pool_used_bytes, comp = s->pool_compressed_bytes;
	uint64_t waste = used > comp ? used - comp : 0;
	char v[32];

	fprintf(f, "derived:\n");
	snprintf(v, sizeof(v), "%" PRIu64, faults);
	print_row(f, "faults", v, "faults resolved (zero + pool + same)");
	print_row(f, "pool_hit_pct",
		  ratio(v, sizeof(v), 100 * s->fault_pool, faults, "%"),
		  "faults resolved from the pool, percent");
	print_row(f, "pool_ratio",
		  ratio(v, sizeof(v), s->pool_stored_bytes, comp, "x"),
		  "compression: pool_stored_bytes / pool_compressed_bytes");
	print_row(f, "pool_frag_pct",
		  ratio(v, sizeof(v), 100 * waste, used, "%"),
		  "pool_used_bytes not holding compressed data, percent");
}

static void print_us(FILE *f, double ns)
{
	fprintf(f, " %10.2f", ns / 1000);
}

static void print_hist(FILE *f, const char *name, const struct upg_hist *h)
{
	fprintf(f, "  %-*s %10" PRIu64, NAME_WIDTH, name, h->count);
	if (!h->count) {
		fprintf(f, " %10s %10s %10s %10s\n", "-", "-", "-", "-");
		return;
	}
	print_us(f, (double)h->sum_ns / (double)h->count);
	print_us(f, (double)upg_hist_percentile(h, 50));
	print_us(f, (double)upg_hist_percentile(h, 99));
	print_us(f, (double)upg_hist_percentile(h, 99.9));
	fputc('\n', f);
}

void upg_stat_print(FILE *f, const struct upg_stats *s)
{
	unsigned id;

	fprintf(f, "upager stats:\n");
	print_counters(f, s);
	print_derived(f, s);
	fprintf(f, "latency (us):\n  %-*s %10s %10s %10s %10s %10s\n",
		NAME_WIDTH, "", "count", "mean", "p50", "p99", "p99.9");
	for (id = 0; id < UPG_HIST_NR; id++)
		print_hist(f, hist_names[id], chist(s, id));
}

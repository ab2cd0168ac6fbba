/* SPDX-License-Identifier: MIT */
/* Latency histogram of the oversubscription workload (see the header). */
#include <errno.h>
#include <inttypes.h>

#include "oversub_hist.h"

uint64_t ovs_hist_lower(unsigned i)
{
	unsigned e, m;

	if (i < 16)
		return i;
	e = 4 + (i - 16) / 8;
	m = (i - 16) % 8;
	return (uint64_t)(8 + m) << (e - 3);
}

/* One past the highest value of bucket @i. */
static double upper(unsigned i)
{
	if (i + 1 < OVS_HIST_BUCKETS)
		return (double)ovs_hist_lower(i + 1);
	return 2.0 * (double)ovs_hist_lower(i);
}

void ovs_hist_merge(struct ovs_hist *dst, const struct ovs_hist *src)
{
	unsigned i;

	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
	for (i = 0; i < OVS_HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
}

double ovs_hist_percentile(const struct ovs_hist *h, double p)
{
	double rank = p / 100.0 * (double)h->count, seen = 0;
	unsigned i;

	if (!h->count)
		return 0;
	for (i = 0; i < OVS_HIST_BUCKETS; i++) {
		double n = (double)h->bucket[i], lo;

		if (!n || seen + n < rank) {
			seen += n;
			continue;
		}
		lo = (double)ovs_hist_lower(i);
		return lo + (upper(i) - lo) * (rank - seen) / n;
	}
	return (double)h->max;
}

int ovs_hist_write(const struct ovs_hist *h, FILE *f, double ns_per_tick)
{
	unsigned i;

	fprintf(f, "# lower_ns upper_ns count\n");
	for (i = 0; i < OVS_HIST_BUCKETS; i++) {
		if (!h->bucket[i])
			continue;
		fprintf(f, "%.1f %.1f %" PRIu64 "\n",
			(double)ovs_hist_lower(i) * ns_per_tick,
			upper(i) * ns_per_tick, h->bucket[i]);
	}
	return ferror(f) ? -EIO : 0;
}

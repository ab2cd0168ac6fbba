/* SPDX-License-Identifier: MIT */
/*
 * Log-bucket latency histogram of the oversubscription workload: exact
 * below 16 ticks, then 8 sub-buckets per power of two (12.5% resolution),
 * so that recording one operation is a count-leading-zeros, two shifts and
 * an increment. Samples are in timer ticks (the TSC on x86, nanoseconds
 * elsewhere); ovs_hist_ns() converts a bucket bound with the calibrated
 * rate. One histogram per thread, merged after the threads are joined.
 */
#ifndef UPG_BENCH_OVERSUB_HIST_H
#define UPG_BENCH_OVERSUB_HIST_H

#include <stdint.h>
#include <stdio.h>

#define OVS_HIST_BUCKETS 496

struct ovs_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t bucket[OVS_HIST_BUCKETS];
};

static inline unsigned ovs_hist_index(uint64_t x)
{
	unsigned e;

	if (x < 16)
		return (unsigned)x;
	e = 63 - (unsigned)__builtin_clzll(x);
	return 16 + (e - 4) * 8 + (unsigned)((x >> (e - 3)) & 7);
}

static inline void ovs_hist_add(struct ovs_hist *h, uint64_t x)
{
	h->count++;
	h->sum += x;
	if (x > h->max)
		h->max = x;
	h->bucket[ovs_hist_index(x)]++;
}

/* Lowest value of bucket @i, in ticks. */
uint64_t ovs_hist_lower(unsigned i);

/* Add @src into @dst. */
void ovs_hist_merge(struct ovs_hist *dst, const struct ovs_hist *src);

/*
 * ovs_hist_percentile() - estimate a percentile in ticks
 * @h: histogram
 * @p: percentile in [0, 100]
 *
 * Linear interpolation inside the bucket. Return: 0 for an empty one.
 */
double ovs_hist_percentile(const struct ovs_hist *h, double p);

/*
 * ovs_hist_write() - write the non-empty buckets as text
 * @h: histogram
 * @f: stream
 * @ns_per_tick: conversion of the bucket bounds to nanoseconds
 *
 * One line per bucket: "lower_ns upper_ns count", after a '#' header.
 * Return: 0, or -EIO if the stream failed.
 */
int ovs_hist_write(const struct ovs_hist *h, FILE *f, double ns_per_tick);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * The oversubscription workload's configuration and its command line (see
 * oversub.c for the program). Parsing validates every value and names the
 * accepted forms on error.
 */
#ifndef UPG_BENCH_OVERSUB_ARGS_H
#define UPG_BENCH_OVERSUB_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "oversub_pages.h"

#define OVS_MAX_THREADS 64

enum { EXIT_MISMATCH = 1, EXIT_SETUP = 2 };
enum mode { MODE_MALLOC, MODE_API };
enum pattern { PAT_UNIFORM, PAT_ZIPF, PAT_SEQ, PAT_HOTCOLD };
enum corrupt { CORRUPT_NONE, CORRUPT_LOST_WRITE, CORRUPT_ZERO_PAGE };

extern const char *const ovs_mode_names[];
extern const char *const ovs_pattern_names[];
extern const char *const ovs_corrupt_names[];

struct config {
	enum mode mode;
	enum ovs_data data;
	enum pattern pattern;
	size_t size;
	size_t budget; /* api mode; 0 = UPG_BUDGET or upager's default */
	double theta;
	double hot_frac, hot_prob; /* hot/cold: share of pages, of accesses */
	unsigned writes;	   /* percent of operations that write */
	unsigned threads;
	double seconds;
	uint64_t ops; /* total; 0 = run for --seconds */
	uint64_t seed;
	const char *hist_path;
	enum corrupt corrupt;
};

/* ovs_usage() - print the --help text to @f */
void ovs_usage(FILE *f);

/*
 * ovs_parse_args() - the command line into @c (defaults first)
 *
 * Return: 0 to run, 1 when --help was given, -EINVAL after printing why.
 */
int ovs_parse_args(struct config *c, int argc, char **argv);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * The option table: size, boolean, count and log-level parsing, the UPG_*
 * environment, upg_params_set(), validation and the printout. Criterion
 * runs each test in its own process, so setenv() does not leak.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "options.h"

#define K (1UL << 10)
#define M (1UL << 20)
#define G (1UL << 30)
#define T (1UL << 40)

static const char *const all_names[] = {
	"UPG_BUDGET",	     "UPG_POOL_MAX", "UPG_HEADROOM", "UPG_RESERVE",
	"UPG_HANDLERS",	     "UPG_CLUSTER",  "UPG_MOVE",     "UPG_WP_ASYNC",
	"UPG_REMOVE_EVENTS", "UPG_STATS",    "UPG_LOG",
};

static void expect_size(const char *s, size_t want)
{
	size_t v = 12345;

	cr_assert_eq(upg_opt_parse_size(s, &v), 0, "\"%s\": %s", s,
		     upg_last_error());
	cr_assert_eq(v, want, "\"%s\" gave %zu, want %zu", s, v, want);
}

static void expect_bad_size(const char *s)
{
	size_t v = 12345;

	cr_assert_eq(upg_opt_parse_size(s, &v), -EINVAL, "\"%s\" accepted", s);
	cr_assert_eq(v, 12345, "\"%s\" wrote the output on failure", s);
}

/* Set @name to @value and expect -EINVAL with @want inside the message. */
static void expect_set_error(const char *name, const char *value,
			     const char *want)
{
	struct upg_params p, before;

	upg_params_init(&p);
	before = p;
	cr_assert_eq(upg_params_set(&p, name, value), -EINVAL,
		     "%s=\"%s\" accepted", name, value);
	cr_assert(strstr(upg_last_error(), want), "\"%s\" lacks \"%s\"",
		  upg_last_error(), want);
	cr_assert_eq(memcmp(&p, &before, sizeof(p)), 0,
		     "a failed set changed the parameters");
}

static void expect_validate_error(const struct upg_params *p, const char *want)
{
	cr_assert_eq(upg_opt_validate(p), -EINVAL, "accepted, want \"%s\"",
		     want);
	cr_assert(strstr(upg_last_error(), want), "\"%s\" lacks \"%s\"",
		  upg_last_error(), want);
}

Test(options, size_plain_bytes, .timeout = 10)
{
	expect_size("0", 0);
	expect_size("4096", 4096);
	expect_size("007", 7);
	expect_size("18446744073709551615", SIZE_MAX);
}

Test(options, size_every_suffix_and_case, .timeout = 10)
{
	expect_size("64K", 64 * K);
	expect_size("64k", 64 * K);
	expect_size("512M", 512 * M);
	expect_size("512m", 512 * M);
	expect_size("2G", 2 * G);
	expect_size("2g", 2 * G);
	expect_size("1T", T);
	expect_size("3t", 3 * T);
	expect_size("2P", 2 * T * K);
	expect_size("1E", T * M);
	expect_size("15E", 15 * T * M);
}

Test(options, size_b_and_ib_tails, .timeout = 10)
{
	expect_size("512MiB", 512 * M);
	expect_size("512mib", 512 * M);
	expect_size("512MIB", 512 * M);
	expect_size("512MB", 512 * M);
	expect_size("512mb", 512 * M);
	expect_size("1KiB", K);
	expect_size("4096B", 4096);
	expect_size("4096b", 4096);
}

Test(options, size_rejects_malformed, .timeout = 10)
{
	static const char *const bad[] = {
		"",	"abc",	 "-1",	"+1",	  " 1G", "1G ", "1 G",
		"12Mx", "1GiBx", "1iB", "4096iB", "K",	 "1KK", "0x10",
		"1.5G", "1e3",	 "1Bi", "1MiBB",  "G1",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_bad_size(bad[i]);
}

Test(options, size_rejects_overflow, .timeout = 10)
{
	expect_bad_size("99999999999999999999");
	expect_bad_size("18446744073709551616");
	expect_bad_size("16E");
	expect_bad_size("17179869184G");
	expect_set_error("BUDGET", "99999999999999999999", "too large");
	expect_set_error("BUDGET", "16E", "UPG_BUDGET");
}

Test(options, garbage_budget_names_variable, .timeout = 10)
{
	expect_set_error("BUDGET", "abc",
			 "UPG_BUDGET: invalid value \"abc\": expected a size "
			 "such as 4096, 64K, 512M or 2G");
}

Test(options, decimal_size_says_whole_numbers_only, .timeout = 10)
{
	expect_set_error("UPG_RESERVE", "1.5G", "UPG_RESERVE");
	expect_set_error("UPG_RESERVE", "1.5G", "\"1.5G\"");
	expect_set_error("UPG_RESERVE", "1.5G", "whole numbers only");
}

Test(options, long_value_keeps_accepted_forms, .timeout = 10)
{
	char v[400];

	memset(v, 'x', sizeof(v) - 1);
	v[sizeof(v) - 1] = 0;
	expect_set_error("POOL_MAX", v, "such as 4096, 64K, 512M or 2G");
}

Test(options, bool_words_any_case, .timeout = 10)
{
	static const char *const yes[] = { "1",	  "on",	  "ON",	 "yes",
					   "Yes", "true", "TRUE" };
	static const char *const no[] = { "0",	"off",	 "Off",	 "no",
					  "NO", "false", "False" };
	bool b;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = false;
		cr_assert_eq(upg_opt_parse_bool(yes[i], &b), 0, "%s", yes[i]);
		cr_assert(b, "\"%s\" is false", yes[i]);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = true;
		cr_assert_eq(upg_opt_parse_bool(no[i], &b), 0, "%s", no[i]);
		cr_assert(!b, "\"%s\" is true", no[i]);
	}
}

Test(options, bool_rejects_others, .timeout = 10)
{
	static const char *const bad[] = { "",	  "2",	 "y",	   "n", "onn",
					   " on", "on ", "enable", "-1" };
	size_t i;
	bool b = true;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(upg_opt_parse_bool(bad[i], &b), -EINVAL,
			     "\"%s\" accepted", bad[i]);
	cr_assert(b, "a failed parse wrote the output");
	expect_set_error("STATS", "maybe",
			 "UPG_STATS: invalid value \"maybe\": expected on or "
			 "off (also 1/0, yes/no, true/false)");
}

Test(options, uint_decimal_range_checked, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, "HANDLERS", "8"), 0);
	cr_assert_eq(p.handlers, 8);
	cr_assert_eq(upg_params_set(&p, "HANDLERS", "4294967295"), 0);
	cr_assert_eq(p.handlers, 4294967295u);
	expect_set_error("HANDLERS", "4294967296", "UPG_HANDLERS");
	expect_set_error("HANDLERS", "-1", "from 0 to 4294967295");
	expect_set_error("HANDLERS", "+3", "UPG_HANDLERS");
	expect_set_error("CLUSTER", "8x", "UPG_CLUSTER: invalid value \"8x\"");
	expect_set_error("CLUSTER", "", "UPG_CLUSTER");
	expect_set_error("CLUSTER", "16K", "UPG_CLUSTER");
}

Test(options, log_level_numbers_and_words, .timeout = 10)
{
	static const struct {
		const char *s;
		int level;
	} ok[] = { { "0", 0 },	  { "3", 3 },	    { "error", 0 },
		   { "warn", 1 }, { "WARNING", 1 }, { "info", 2 },
		   { "Debug", 3 } };
	struct upg_params p;
	size_t i;

	upg_params_init(&p);
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(upg_params_set(&p, "LOG", ok[i].s), 0, "%s",
			     ok[i].s);
		cr_assert_eq(p.log_level, ok[i].level, "%s", ok[i].s);
	}
	expect_set_error("LOG", "4", "UPG_LOG: invalid value \"4\"");
	expect_set_error("LOG", "verbose", "error, warn, info, debug");
	expect_set_error("LOG", "-1", "0-3");
}

Test(options, defaults_match_table, .timeout = 10)
{
	struct upg_params p;

	memset(&p, 0xa5, sizeof(p));
	upg_params_init(&p);
	cr_assert_eq(p.size, sizeof(p));
	cr_assert_eq(p.budget, G);
	cr_assert_eq(p.pool_max, 0);
	cr_assert_eq(p.headroom, 0);
	cr_assert_eq(p.reserve, 64 * G);
	cr_assert_eq(p.handlers, 0);
	cr_assert_eq(p.cluster, 16);
	cr_assert(p.use_move && p.use_wp_async && p.use_remove);
	cr_assert(!p.stats);
	cr_assert_eq(p.log_level, 1);
}

Test(options, defaults_are_valid, .timeout = 10)
{
	struct upg_params p;

	if (upg_opt_phys_mem() < G)
		cr_skip_test("machine has less than the 1G default budget");
	upg_params_init(&p);
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
}

/* Every value printed by upg_options_print() parses back to itself. */
Test(options, defaults_round_trip_through_set, .timeout = 10)
{
	struct upg_params p, q;

	upg_params_init(&p);
	upg_params_init(&q);
	cr_assert_eq(upg_params_set(&q, "BUDGET", "1073741824"), 0);
	cr_assert_eq(upg_params_set(&q, "reserve", "65536M"), 0);
	cr_assert_eq(upg_params_set(&q, "Move", "yes"), 0);
	cr_assert_eq(upg_params_set(&q, "upg_log", "warn"), 0);
	cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);
}

Test(options, set_accepts_prefix_and_any_case, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, "UPG_BUDGET", "2G"), 0);
	cr_assert_eq(p.budget, 2 * G);
	cr_assert_eq(upg_params_set(&p, "upg_pool_max", "256M"), 0);
	cr_assert_eq(p.pool_max, 256 * M);
	cr_assert_eq(upg_params_set(&p, "Remove_Events", "off"), 0);
	cr_assert(!p.use_remove);
	cr_assert_eq(upg_params_set(&p, "wp_async", "0"), 0);
	cr_assert(!p.use_wp_async);
	cr_assert_eq(upg_params_set(&p, "uPg_StAtS", "true"), 0);
	cr_assert(p.stats);
}

Test(options, set_unknown_name_lists_valid_names, .timeout = 10)
{
	struct upg_params p;
	size_t i;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, "BUDGETS", "1G"), -ENOENT);
	cr_assert(strstr(upg_last_error(), "\"BUDGETS\""), "%s",
		  upg_last_error());
	for (i = 0; i < sizeof(all_names) / sizeof(all_names[0]); i++)
		cr_assert(strstr(upg_last_error(), all_names[i]),
			  "\"%s\" lacks %s", upg_last_error(), all_names[i]);
	cr_assert_eq(upg_params_set(&p, "UPG_", "1"), -ENOENT);
	cr_assert_eq(upg_params_set(&p, "", "1"), -ENOENT);
}

Test(options, set_rejects_null_and_uninitialised, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, NULL, "1"), -EINVAL);
	cr_assert_eq(upg_params_set(&p, "BUDGET", NULL), -EINVAL);
	cr_assert(strstr(upg_last_error(), "UPG_BUDGET"));
	p.size = 0;
	cr_assert_eq(upg_params_set(&p, "BUDGET", "1G"), -EINVAL);
	cr_assert(strstr(upg_last_error(), "upg_params_init"));
	cr_assert_eq(upg_params_from_env(NULL), -EINVAL);
}

Test(options, env_unset_keeps_defaults, .timeout = 10)
{
	struct upg_params p, d;
	size_t i;

	for (i = 0; i < sizeof(all_names) / sizeof(all_names[0]); i++)
		unsetenv(all_names[i]);
	upg_params_init(&p);
	upg_params_init(&d);
	cr_assert_eq(upg_params_from_env(&p), 0, "%s", upg_last_error());
	cr_assert_eq(memcmp(&p, &d, sizeof(p)), 0);
}

Test(options, env_applies_every_type, .timeout = 10)
{
	struct upg_params p;

	setenv("UPG_BUDGET", "512M", 1);
	setenv("UPG_POOL_MAX", "2GiB", 1);
	setenv("UPG_HANDLERS", "4", 1);
	setenv("UPG_MOVE", "off", 1);
	setenv("UPG_STATS", "1", 1);
	setenv("UPG_LOG", "debug", 1);
	upg_params_init(&p);
	cr_assert_eq(upg_params_from_env(&p), 0, "%s", upg_last_error());
	cr_assert_eq(p.budget, 512 * M);
	cr_assert_eq(p.pool_max, 2 * G);
	cr_assert_eq(p.handlers, 4);
	cr_assert(!p.use_move);
	cr_assert(p.stats);
	cr_assert_eq(p.log_level, 3);
	cr_assert_eq(p.reserve, 64 * G, "an unset variable changed");
}

Test(options, env_garbage_budget_fails_naming_variable, .timeout = 10)
{
	struct upg_params p, before;

	setenv("UPG_BUDGET", "garbage", 1);
	setenv("UPG_STATS", "on", 1);
	upg_params_init(&p);
	before = p;
	cr_assert_eq(upg_params_from_env(&p), -EINVAL);
	cr_assert_str_eq(upg_last_error(),
			 "UPG_BUDGET: invalid value \"garbage\": expected a "
			 "size such as 4096, 64K, 512M or 2G");
	cr_assert_eq(memcmp(&p, &before, sizeof(p)), 0,
		     "a failed from_env changed the parameters");
}

Test(options, env_empty_value_is_invalid, .timeout = 10)
{
	struct upg_params p;

	setenv("UPG_WP_ASYNC", "", 1);
	upg_params_init(&p);
	cr_assert_eq(upg_params_from_env(&p), -EINVAL);
	cr_assert(strstr(upg_last_error(), "UPG_WP_ASYNC: invalid value \"\""),
		  "%s", upg_last_error());
}

Test(options, env_first_invalid_in_table_order_reported, .timeout = 10)
{
	struct upg_params p;

	setenv("UPG_LOG", "loud", 1);
	setenv("UPG_CLUSTER", "many", 1);
	upg_params_init(&p);
	cr_assert_eq(upg_params_from_env(&p), -EINVAL);
	cr_assert(strstr(upg_last_error(), "UPG_CLUSTER"), "%s",
		  upg_last_error());
}

Test(options, validate_zero_budget, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	p.budget = 0;
	cr_assert_eq(upg_opt_validate(&p), -EINVAL);
	cr_assert_str_eq(upg_last_error(),
			 "UPG_BUDGET: must be at least 4M (got 0)");
	p.budget = M;
	expect_validate_error(&p, "UPG_BUDGET: must be at least 4M (got 1M)");
	p.budget = UPG_BUDGET_MIN - 1;
	expect_validate_error(&p, "UPG_BUDGET: must be at least 4M");
}

Test(options, validate_budget_larger_than_ram, .timeout = 10)
{
	size_t phys = upg_opt_phys_mem();
	struct upg_params p;

	if (!phys || phys > SIZE_MAX / 4)
		cr_skip_test("physical memory size unknown");
	upg_params_init(&p);
	p.budget = (phys + G) & ~(G - 1);
	p.reserve = 4 * p.budget;
	expect_validate_error(&p, "UPG_BUDGET: ");
	expect_validate_error(&p, " is more than this machine's ");
	expect_validate_error(&p, " of memory");
}

Test(options, validate_budget_larger_than_reserve, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	p.budget = 64 * M;
	p.reserve = 32 * M;
	cr_assert_eq(upg_opt_validate(&p), -EINVAL);
	cr_assert_str_eq(upg_last_error(),
			 "UPG_BUDGET: 64M is larger than the region size "
			 "UPG_RESERVE=32M");
	p.reserve = 64 * M;
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
}

Test(options, validate_cluster_power_of_two, .timeout = 10)
{
	static const unsigned bad[] = { 0, 3, 12, 257, 512 };
	static const unsigned good[] = { 1, 2, 64, 256 };
	struct upg_params p;
	size_t i;

	upg_params_init(&p);
	p.budget = 64 * M;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.cluster = bad[i];
		expect_validate_error(&p,
				      "UPG_CLUSTER: must be a power of two");
	}
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		p.cluster = good[i];
		cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
	}
}

/* UPG_SWAP_POLL: microseconds, 0-10000, 200 by default. */
Test(options, swap_poll_range_and_errors, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	p.budget = 64 * M;
	cr_assert_eq(p.swap_poll_us, 200);
	cr_assert_eq(upg_params_set(&p, "SWAP_POLL", "0"), 0);
	cr_assert_eq(p.swap_poll_us, 0);
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
	cr_assert_eq(upg_params_set(&p, "swap_poll", "10000"), 0);
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
	p.swap_poll_us = 10001;
	expect_validate_error(&p,
			      "UPG_SWAP_POLL: must be at most 10000 "
			      "microseconds, 0 to sleep at once (got 10001)");
	expect_set_error("UPG_SWAP_POLL", "200us",
			 "UPG_SWAP_POLL: invalid value \"200us\": expected a "
			 "whole number");
	expect_set_error("UPG_SWAP_POLL", "-1", "UPG_SWAP_POLL");
}

Test(options, env_swap_poll_malformed_names_variable, .timeout = 10)
{
	struct upg_params p;

	setenv("UPG_SWAP_POLL", "0.5", 1);
	upg_params_init(&p);
	cr_assert_eq(upg_params_from_env(&p), -EINVAL);
	cr_assert(strstr(upg_last_error(), "UPG_SWAP_POLL: invalid value "
					   "\"0.5\""),
		  "%s", upg_last_error());
	setenv("UPG_SWAP_POLL", "50", 1);
	upg_params_init(&p);
	cr_assert_eq(upg_params_from_env(&p), 0, "%s", upg_last_error());
	cr_assert_eq(p.swap_poll_us, 50);
}

Test(options, validate_handlers_pool_headroom_log, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	p.budget = 64 * M;
	p.handlers = 1025;
	expect_validate_error(&p, "UPG_HANDLERS: must be at most 1024");
	p.handlers = 1024;
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
	p.pool_max = 512 * K;
	expect_validate_error(&p, "UPG_POOL_MAX: must be 0 (auto) or at least "
				  "1M (got 512K)");
	p.pool_max = M;
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
	p.headroom = 64 * M;
	expect_validate_error(&p, "UPG_HEADROOM: 64M must be less than "
				  "UPG_BUDGET=64M");
	p.headroom = 8 * M;
	p.log_level = 4;
	expect_validate_error(&p, "UPG_LOG: must be");
	p.log_level = 0;
	cr_assert_eq(upg_opt_validate(&p), 0, "%s", upg_last_error());
}

Test(options, validate_rejects_uninitialised, .timeout = 10)
{
	struct upg_params p;

	upg_params_init(&p);
	p.size = 8;
	expect_validate_error(&p, "upg_params_init");
	cr_assert_eq(upg_opt_validate(NULL), -EINVAL);
}

Test(options, format_size_largest_exact_unit, .timeout = 10)
{
	static const struct {
		size_t v;
		const char *s;
	} cases[] = {
		{ 0, "0" },
		{ 1000, "1000" },
		{ 4096, "4K" },
		{ 1536 * K, "1536K" },
		{ 512 * M, "512M" },
		{ G, "1G" },
		{ 3 * T, "3T" },
		{ T * M, "1E" },
		{ SIZE_MAX, "18446744073709551615" },
	};
	char buf[32];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_str_eq(
			upg_opt_format_size(cases[i].v, buf, sizeof(buf)),
			cases[i].s);
}

Test(options, format_then_parse_round_trips, .timeout = 10)
{
	char buf[32];
	size_t v, back;

	for (v = 1; v && v < SIZE_MAX / 3; v = v * 3 + (v & 1)) {
		upg_opt_format_size(v, buf, sizeof(buf));
		cr_assert_eq(upg_opt_parse_size(buf, &back), 0, "%s", buf);
		cr_assert_eq(back, v, "%s", buf);
		upg_opt_format_size(v << 10, buf, sizeof(buf));
		cr_assert_eq(upg_opt_parse_size(buf, &back), 0, "%s", buf);
		cr_assert_eq(back, v << 10, "%s", buf);
	}
}

Test(options, phys_mem_is_pages, .timeout = 10)
{
	size_t phys = upg_opt_phys_mem();

	if (!phys)
		cr_skip_test("sysconf(_SC_PHYS_PAGES) unsupported");
	cr_assert_eq(phys % 4096, 0);
	cr_assert_geq(phys, 16 * M);
}

static char *print_options(const struct upg_params *p)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	cr_assert_not_null(f);
	upg_options_print(f, p);
	cr_assert_eq(fclose(f), 0);
	return out;
}

Test(options, print_lists_every_variable, .timeout = 10)
{
	char *out = print_options(NULL);
	size_t i;

	for (i = 0; i < sizeof(all_names) / sizeof(all_names[0]); i++)
		cr_assert(strstr(out, all_names[i]), "missing %s in:\n%s",
			  all_names[i], out);
	cr_assert(strstr(out, "variable"), "no header in:\n%s", out);
	cr_assert(strstr(out, "64G"), "no reserve default in:\n%s", out);
	free(out);
}

Test(options, print_shows_current_values_aligned, .timeout = 10)
{
	struct upg_params p;
	char *out, *line, *budget;

	upg_params_init(&p);
	cr_assert_eq(upg_params_set(&p, "BUDGET", "3G"), 0);
	cr_assert_eq(upg_params_set(&p, "STATS", "yes"), 0);
	out = print_options(&p);
	budget = strstr(out, "UPG_BUDGET");
	cr_assert(budget && strstr(budget, "3G"), "%s", out);
	cr_assert(strstr(out, "UPG_STATS"), "%s", out);
	/* The help column starts at the same offset on every line. */
	line = strstr(out, "UPG_LOG");
	cr_assert(line, "%s", out);
	cr_assert_eq(strstr(budget, "resident") - budget,
		     strstr(line, "0 error") - line, "%s", out);
	free(out);
}

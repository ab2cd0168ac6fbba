/* SPDX-License-Identifier: MIT */
/*
 * The oversubscription workload (bench/oversub) as the benchmark suite
 * relies on it: its verification must catch a lost write and a zero-filled
 * page (--debug-corrupt damages one page on purpose, the run must fail and
 * say how), and its one result line must be valid JSON carrying the fields
 * the runner reads. The program runs as a child process, without swap or
 * cgroups, so nothing here changes the machine.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#ifndef OVERSUB_PATH
#define OVERSUB_PATH "build/bench/oversub"
#endif

#define OUT_MAX 8192

struct result {
	int status; /* exit status, or -signal */
	char out[OUT_MAX];
};

/* ---- a JSON syntax check, enough for one line of oversub ---- */

static const char *value(const char *p);

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static const char *string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		if (*p == '\\' && p[1])
			p++;
		if ((unsigned char)*p < 0x20)
			return NULL;
		p++;
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *number(const char *p)
{
	char *end;

	strtod(p, &end);
	return end == p ? NULL : end;
}

static const char *object(const char *p)
{
	p = ws(p + 1);
	if (*p == '}')
		return p + 1;
	for (;;) {
		p = string(ws(p));
		if (!p || *(p = ws(p)) != ':')
			return NULL;
		p = value(ws(p + 1));
		if (!p)
			return NULL;
		p = ws(p);
		if (*p == '}')
			return p + 1;
		if (*p != ',')
			return NULL;
		p++;
	}
}

static const char *value(const char *p)
{
	if (*p == '{')
		return object(p);
	if (*p == '"')
		return string(p);
	if (!strncmp(p, "true", 4))
		return p + 4;
	if (!strncmp(p, "false", 5))
		return p + 5;
	if (!strncmp(p, "null", 4))
		return p + 4;
	return number(p);
}

/* Whether @line is one JSON object followed only by a newline. */
static bool json_line(const char *line)
{
	const char *end = *line == '{' ? object(line) : NULL;

	return end && (!*end || !strcmp(end, "\n"));
}

/* The text after "@key": in @json, or NULL. */
static const char *field(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	return p ? p + strlen(pat) : NULL;
}

static long long field_int(const char *json, const char *key)
{
	const char *p = field(json, key);

	cr_assert(p, "no \"%s\" in %s", key, json);
	return strtoll(p, NULL, 10);
}

/* ---- running the program ---- */

static void run(struct result *r, const char *const *args)
{
	const char *argv[32] = { OVERSUB_PATH };
	int fd[2], st;
	size_t n = 0, i;
	ssize_t got;
	pid_t pid;

	if (access(OVERSUB_PATH, X_OK))
		cr_skip_test("%s not built (meson -Dbench=true)", OVERSUB_PATH);
	for (i = 0; args[i] && i < 30; i++)
		argv[i + 1] = args[i];
	cr_assert(!pipe(fd));
	pid = fork();
	if (!pid) { /* no assertion here: with --full-stats it would hang */
		dup2(fd[1], STDOUT_FILENO);
		close(fd[0]);
		execv(OVERSUB_PATH, (char *const *)argv);
		_exit(127);
	}
	cr_assert(pid > 0);
	close(fd[1]);
	while (n < OUT_MAX - 1 &&
	       (got = read(fd[0], r->out + n, OUT_MAX - 1 - n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		cr_assert(got > 0);
		n += (size_t)got;
	}
	r->out[n] = 0;
	close(fd[0]);
	cr_assert(waitpid(pid, &st, 0) == pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

TestSuite(oversub, .timeout = 60);

Test(oversub, clean_run_verifies_and_prints_json)
{
	static const char *const args[] = {
		"--size",    "8M",   "--ops",	 "20000", "--threads", "2",
		"--pattern", "zipf", "--writes", "50",	  NULL
	};
	struct result r;

	run(&r, args);
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	cr_assert(json_line(r.out), "not one JSON line: %s", r.out);
	cr_assert_eq(field_int(r.out, "ops"), 20000);
	cr_assert_eq(field_int(r.out, "bad_pages"), 0);
	cr_assert(field(r.out, "lat_p99_ns") && field(r.out, "peak_rss_bytes"));
	cr_assert(!strncmp(field(r.out, "verified"), "true", 4));
}

/* Damage one page on purpose (@kind): the run must fail, naming it. */
static void corrupt_fails(const char *kind, const char *counter)
{
	const char *const args[] = { "--size",		"8M", "--ops", "5000",
				     "--debug-corrupt", kind, NULL };
	struct result r;

	run(&r, args);
	cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.out);
	cr_assert(json_line(r.out), "not one JSON line: %s", r.out);
	cr_assert_eq(field_int(r.out, "bad_pages"), 1);
	cr_assert_eq(field_int(r.out, counter), 1, "%s: %s", counter, r.out);
	cr_assert(!strncmp(field(r.out, "verified"), "false", 5));
}

Test(oversub, lost_write_fails_verification)
{
	corrupt_fails("lost-write", "bad_stale");
}

Test(oversub, zero_page_fails_verification)
{
	corrupt_fails("zero-page", "bad_zero");
}

Test(oversub, api_mode_verifies_under_upager)
{
	static const char *const args[] = { "--mode", "api",	  "--size",
					    "32M",    "--budget", "8M",
					    "--ops",  "20000",	  "--pattern",
					    "seq",    NULL };
	struct result r;

	run(&r, args);
	if (r.status == 2 && !r.out[0])
		cr_skip_test("upager runtime unavailable (userfaultfd?)");
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	cr_assert(json_line(r.out), "not one JSON line: %s", r.out);
	cr_assert(field(r.out, "upager"), "no upager stats: %s", r.out);
	cr_assert_gt(field_int(r.out, "fault_pool"), 0, "no pool hit: %s",
		     r.out);
}

Test(oversub, bad_option_is_a_usage_error)
{
	static const char *const args[] = { "--pattern", "spiral", NULL };
	struct result r;

	run(&r, args);
	cr_assert_eq(r.status, 2);
	cr_assert_eq(r.out[0], 0, "printed a result: %s", r.out);
}

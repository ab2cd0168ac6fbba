/* SPDX-License-Identifier: MIT */
/*
 * upagerctl: command-line front end.
 *
 *   upagerctl run [--budget SIZE] [--pool SIZE] [--swap PATH] [--stats]
 *                 [--set NAME=VALUE]... -- PROGRAM [ARGS...]
 *   upagerctl options
 *
 * `run` starts PROGRAM with libupager-preload.so (by absolute path) in
 * LD_PRELOAD and the options as UPG_* variables, then execs it: the exit
 * status is PROGRAM's own. Options are checked here first, with the
 * library's own parser, so a typo is an error naming the option instead of
 * a program silently running unmanaged.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "options.h"
#include "upager.h"

#ifndef UPG_LIBDIR
#define UPG_LIBDIR "/usr/local/lib"
#endif
#define PRELOAD_NAME "libupager-preload.so"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: upagerctl run [OPTIONS] -- PROGRAM [ARGS...]\n"
		"       upagerctl options\n"
		"\n"
		"run: start PROGRAM with its heap (malloc) paged by upager\n"
		"  --budget SIZE     resident bytes at most (UPG_BUDGET), "
		"e.g. 512M\n"
		"  --pool SIZE       compressed pool limit (UPG_POOL_MAX)\n"
		"  --swap PATH       swap file (UPG_SWAP_FILE)\n"
		"  --stats           print statistics at exit (UPG_STATS=1)\n"
		"  --set NAME=VALUE  any option of `upagerctl options`\n"
		"  --preload PATH    the preload library (default: found next "
		"to upagerctl,\n"
		"                    in the build tree or in " UPG_LIBDIR ")\n"
		"  -h, --help        this text\n"
		"\n"
		"SIZE: a number with an optional K, M, G or T suffix. The exit "
		"status is\nPROGRAM's; 126/127 if it cannot be started, 2 for "
		"a usage error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fputs("upagerctl: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\n(see upagerctl --help)\n", stderr);
	return 2;
}

/* Directory of this executable, with a trailing slash, in @buf. */
static bool self_dir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0)
		return false;
	buf[n] = 0;
	slash = strrchr(buf, '/');
	if (!slash)
		return false;
	slash[1] = 0;
	return true;
}

/* The preload library by absolute path, or NULL. */
static const char *find_preload(char *out)
{
	static const char *const rel[] = { "", "../lib/", "../lib64/",
					   "../lib/x86_64-linux-gnu/" };
	char dir[PATH_MAX], cand[PATH_MAX + 64];

	if (self_dir(dir, sizeof(dir)))
		for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
			snprintf(cand, sizeof(cand), "%s%s" PRELOAD_NAME, dir,
				 rel[i]);
			if (!access(cand, R_OK) && realpath(cand, out))
				return out;
		}
	if (!access(UPG_LIBDIR "/" PRELOAD_NAME, R_OK) &&
	    realpath(UPG_LIBDIR "/" PRELOAD_NAME, out))
		return out;
	return NULL;
}

struct run_opts {
	struct upg_params p;
	const char *preload;
	const char *swap;
	bool stats;
	char **argv;
};

/* Check "NAME=VALUE" with the library's parser and export it. */
static int set_option(struct run_opts *o, const char *opt, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char name[64], var[80];

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(name))
		return usage_error("%s: expected NAME=VALUE", opt);
	memcpy(name, arg, (size_t)(eq - arg));
	name[eq - arg] = 0;
	if (upg_params_set(&o->p, name, eq + 1)) {
		fprintf(stderr, "upagerctl: %s %s: %s\n", opt, arg,
			upg_last_error());
		return 2;
	}
	snprintf(var, sizeof(var), "%s%s",
		 strncasecmp(name, "UPG_", 4) ? "UPG_" : "", name);
	for (char *c = var; *c; c++)
		if (*c >= 'a' && *c <= 'z')
			*c = (char)(*c - 'a' + 'A');
	return setenv(var, eq + 1, 1) ? 1 : 0;
}

static int set_named(struct run_opts *o, const char *opt, const char *name,
		     const char *val)
{
	char var[64];

	if (!val)
		return usage_error("%s needs a value", opt);
	if (upg_params_set(&o->p, name, val)) {
		fprintf(stderr, "upagerctl: %s %s: %s\n", opt, val,
			upg_last_error());
		return 2;
	}
	snprintf(var, sizeof(var), "UPG_%s", name);
	return setenv(var, val, 1) ? 1 : 0;
}

/* One option at argv[*i]; Return: 0, or an exit status. */
static int parse_one(struct run_opts *o, int argc, char **argv, int *i)
{
	const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;

	if (!strcmp(a, "--stats")) {
		o->stats = true;
		return 0;
	}
	if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
		usage(stdout);
		exit(0);
	}
	(*i)++;
	if (!strcmp(a, "--budget"))
		return set_named(o, a, "BUDGET", v);
	if (!strcmp(a, "--pool"))
		return set_named(o, a, "POOL_MAX", v);
	if (!strcmp(a, "--set"))
		return v ? set_option(o, a, v)
			 : usage_error("%s needs NAME=VALUE", a);
	if (!strcmp(a, "--swap") || !strcmp(a, "--preload")) {
		if (!v || !*v)
			return usage_error("%s needs a path", a);
		*(a[2] == 's' ? &o->swap : &o->preload) = v;
		return 0;
	}
	return usage_error("unknown option '%s'", a);
}

static int parse_run(struct run_opts *o, int argc, char **argv)
{
	int i, err;

	upg_params_init(&o->p);
	if (upg_params_from_env(&o->p)) {
		fprintf(stderr, "upagerctl: %s\n", upg_last_error());
		return 2;
	}
	for (i = 0; i < argc && strcmp(argv[i], "--"); i++) {
		if (argv[i][0] != '-')
			break; /* the program, without "--" */
		err = parse_one(o, argc, argv, &i);
		if (err)
			return err;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc)
		return usage_error("%s", "no PROGRAM to run");
	o->argv = argv + i;
	if (upg_opt_validate(&o->p)) {
		fprintf(stderr, "upagerctl: %s\n", upg_last_error());
		return 2;
	}
	return 0;
}

/* LD_PRELOAD=@lib, ahead of whatever the caller had. */
static int set_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	char buf[PATH_MAX * 4];

	if (old && *old) {
		snprintf(buf, sizeof(buf), "%s:%s", lib, old);
		lib = buf;
	}
	return setenv("LD_PRELOAD", lib, 1);
}

static int run(int argc, char **argv)
{
	struct run_opts o = { 0 };
	char lib[PATH_MAX];
	int err = parse_run(&o, argc, argv);

	if (err)
		return err;
	if (o.preload) {
		if (!realpath(o.preload, lib))
			return usage_error("--preload %s: no such file",
					   o.preload);
	} else if (!find_preload(lib)) {
		fprintf(stderr,
			"upagerctl: cannot find " PRELOAD_NAME
			" next to upagerctl, in ../lib or in " UPG_LIBDIR
			"; use --preload PATH\n");
		return 127;
	}
	if ((o.swap && setenv("UPG_SWAP_FILE", o.swap, 1)) ||
	    (o.stats && setenv("UPG_STATS", "1", 1)) || set_preload(lib)) {
		perror("upagerctl: setenv");
		return 1;
	}
	execvp(o.argv[0], o.argv);
	err = errno;
	fprintf(stderr, "upagerctl: cannot run %s: %s\n", o.argv[0],
		strerror(err));
	return err == ENOENT ? 127 : 126;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "run"))
		return run(argc - 2, argv + 2);
	if (!strcmp(argv[1], "options")) {
		upg_options_print(stdout, NULL);
		return 0;
	}
	return usage_error("unknown command '%s': expected run or options",
			   argv[1]);
}

/* SPDX-License-Identifier: MIT */
/*
 * The preload library's API surface, run under LD_PRELOAD:
 *
 *   preload-api glibc     the glibc malloc family, foreign pointers
 *   preload-api jemalloc  mallocx ... mallctl
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <unistd.h>

#include "pcommon.h"

/*
 * jemalloc's API comes from the preload library at run time: this program
 * does not link against any jemalloc, so look the functions up.
 */
#define MALLOCX_LG_ALIGN(la) ((int)(la))
#define MALLOCX_ALIGN(a) ((int)__builtin_ctzl(a))
#define MALLOCX_ZERO ((int)0x40)
static void *(*mallocx)(size_t, int);
static void *(*rallocx)(void *, size_t, int);
static size_t (*xallocx)(void *, size_t, size_t, int);
static size_t (*sallocx)(const void *, int);
static void (*dallocx)(void *, int);
static void (*sdallocx)(void *, size_t, int);
static size_t (*nallocx)(size_t, int);
static int (*mallctl)(const char *, void *, size_t *, void *, size_t);
static void (*malloc_stats_print)(void (*)(void *, const char *), void *,
				  const char *);

#define LOOKUP(fn)                                        \
	do {                                              \
		*(void **)&fn = dlsym(RTLD_DEFAULT, #fn); \
		CHECK(fn, "%s is not exported", #fn);     \
	} while (0)

static void lookup_jemalloc(void)
{
	LOOKUP(mallocx);
	LOOKUP(rallocx);
	LOOKUP(xallocx);
	LOOKUP(sallocx);
	LOOKUP(dallocx);
	LOOKUP(sdallocx);
	LOOKUP(nallocx);
	LOOKUP(mallctl);
	LOOKUP(malloc_stats_print);
}

void *__libc_malloc(size_t n);
void __libc_free(void *p);

static void aligned_family(void)
{
	void *p = NULL;

	for (size_t a = sizeof(void *); a <= (1 << 20); a *= 2) {
		CHECK(!posix_memalign(&p, a, 100), "posix_memalign %zu", a);
		CHECK((uintptr_t)p % a == 0 && p_managed(p), "align %zu", a);
		free(p);
		p = aligned_alloc(a, 3 * a);
		CHECK(p && (uintptr_t)p % a == 0, "aligned_alloc %zu", a);
		free(p);
		p = memalign(a, 10);
		CHECK(p && (uintptr_t)p % a == 0, "memalign %zu", a);
		free(p);
	}
	CHECK(posix_memalign(&p, 24, 10) == EINVAL, "posix_memalign(24)");
	p = memalign(24, 10); /* glibc rounds to 32 */
	CHECK(p && (uintptr_t)p % 32 == 0, "memalign(24)");
	free(p);
	p = valloc(10);
	CHECK(p && (uintptr_t)p % 4096 == 0, "valloc");
	free(p);
	p = pvalloc(5000);
	CHECK(p && (uintptr_t)p % 4096 == 0 && malloc_usable_size(p) >= 8192,
	      "pvalloc");
	free(p);
}

/* Blocks made by glibc itself (before a preload, or by the loader). */
static void foreign(void)
{
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	void *(*glibc_malloc)(size_t) = libc ? dlsym(libc, "malloc") : NULL;
	char *p;

	CHECK(glibc_malloc && glibc_malloc != malloc, "glibc's malloc");
	p = glibc_malloc(100);
	CHECK(p && !p_managed(p), "glibc block");
	p_fill(p, 100, 5);
	CHECK(malloc_usable_size(p) >= 100, "usable size of a glibc block");
	p = realloc(p, 1000); /* stays with glibc */
	CHECK(p && p_check(p, 100, 5), "realloc of a glibc block");
	free(p);
	free(glibc_malloc(10));
}

static void glibc(void)
{
	char *p = malloc(0), *q;
	volatile size_t huge = SIZE_MAX / 2; /* no compile-time warning */
	struct mallinfo2 m;

	CHECK(p && p_managed(p), "malloc(0) gives a managed block");
	free(p);
	p = calloc(1000, 1000);
	CHECK(p && p[999999] == 0 && p[0] == 0, "calloc");
	memset(p, 1, 1000000);
	free(p);
	p = calloc(1000, 1000); /* reuses the dirty block */
	for (size_t i = 0; i < 1000000; i += 997)
		CHECK(p[i] == 0, "calloc of reused memory at %zu", i);
	free(p);
	errno = 0;
	CHECK(!calloc(huge, 4) && errno == ENOMEM, "calloc overflow");
	CHECK(!reallocarray(NULL, huge, 4), "reallocarray overflow");
	p = reallocarray(NULL, 10, 10);
	q = realloc(p, 0);
	CHECK(!q, "realloc(p, 0) frees and returns NULL");
	p = __libc_malloc(50);
	CHECK(p_managed(p), "__libc_malloc is ours");
	__libc_free(p);
	{
		void (*cfree_fn)(void *) =
			(void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");

		CHECK(cfree_fn, "cfree is not exported");
		cfree_fn(malloc(10));
	}
	aligned_family();
	foreign();
	CHECK(mallopt(M_ARENA_MAX, 1) == 1, "mallopt");
	for (int i = 0; i < 100; i++)
		free(malloc(1 << 20));
	malloc_trim(0);
	m = mallinfo2();
	CHECK(m.arena > 0 && m.uordblks < m.arena, "mallinfo2");
	CHECK(!malloc_info(0, stdout), "malloc_info");
}

static void jemalloc(void)
{
	char *p, *q;
	size_t sz = sizeof(size_t), v = 0, u;
	const char *ver;
	uint64_t epoch = 1;

	lookup_jemalloc();
	p = mallocx(100, 0);
	CHECK(p && p_managed(p) && sallocx(p, 0) >= 100, "mallocx");
	CHECK(nallocx(100, 0) == sallocx(p, 0), "nallocx = sallocx");
	p_fill(p, 100, 9);
	p = rallocx(p, 5000, MALLOCX_ZERO);
	CHECK(p && p_check(p, 100, 9), "rallocx keeps contents");
	for (size_t i = 112; i < 5000; i++)
		CHECK(!p[i], "rallocx MALLOCX_ZERO at %zu", i);
	p = rallocx(p, 200, MALLOCX_LG_ALIGN(12));
	CHECK(p && (uintptr_t)p % 4096 == 0 && p_check(p, 100, 9),
	      "rallocx aligned");
	sdallocx(p, 200, 0);
	p = mallocx(3000, MALLOCX_ALIGN(1024) | MALLOCX_ZERO);
	CHECK(p && (uintptr_t)p % 1024 == 0 && !p[2999], "mallocx flags");
	dallocx(p, 0);
	/* xallocx grows a page run in place when the next pages are free */
	p = mallocx(1 << 20, 0);
	q = mallocx(1 << 20, 0);
	dallocx(q, 0);
	u = xallocx(p, 2 << 20, 0, 0);
	CHECK(u >= (2 << 20), "xallocx grew to %zu", u);
	CHECK(xallocx(p, 1 << 20, 0, 0) == (1 << 20), "xallocx shrink");
	dallocx(p, 0);
	CHECK(!mallctl("epoch", &epoch, &sz, &epoch, sz), "epoch");
	sz = sizeof(v);
	CHECK(!mallctl("stats.allocated", &v, &sz, NULL, 0) && v > 0,
	      "stats.allocated");
	CHECK(!mallctl("stats.resident", &v, &sz, NULL, 0) && v > 0,
	      "stats.resident");
	CHECK(!mallctl("stats.active", &v, &sz, NULL, 0), "stats.active");
	CHECK(!mallctl("arenas.page", &v, &sz, NULL, 0) && v == 4096,
	      "arenas.page");
	sz = sizeof(ver);
	CHECK(!mallctl("version", &ver, &sz, NULL, 0) && strstr(ver, "upager"),
	      "version");
	CHECK(!mallctl("arena.1.purge", NULL, NULL, NULL, 0), "purge");
	CHECK(mallctl("no.such.name", NULL, NULL, NULL, 0) == ENOENT,
	      "unknown name");
	malloc_stats_print(NULL, NULL, NULL);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		FAIL("usage: preload-api glibc|jemalloc");
	if (!strcmp(argv[1], "glibc"))
		glibc();
	else if (!strcmp(argv[1], "jemalloc"))
		jemalloc();
	else
		FAIL("unknown test %s", argv[1]);
	printf("ok %s\n", argv[1]);
	return 0;
}

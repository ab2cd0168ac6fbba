/* SPDX-License-Identifier: MIT */
/*
 * Probe: does UFFDIO_MOVE report what it moved?
 *
 * A writer thread on CPU 0 keeps storing into 16 contiguous pages
 * (write-protected asynchronously, like upager's clean pages) while this
 * thread, on CPU 1, moves all 16 with one multi-page UFFDIO_MOVE into a
 * staging area and puts them back. After a move that fails, it counts the
 * source pages that vanished beyond the count the kernel reported. On
 * Linux 6.18 it finds such moves (e.g. EEXIST with a count of 0 after all
 * 16 pages moved), which is why upager moves one page per ioctl.
 *
 * Prints one JSON line; never asserts. Usage: probe_move_count [seconds]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffd.h"

#define NP 16
#define PG 4096UL

static int uffd, pagemap;
static char *reg, *stg;
static _Atomic int stop;

static void pin(int cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

static void *writer(void *arg)
{
	uint64_t s = 1;

	(void)arg;
	pin(0);
	while (!atomic_load(&stop)) {
		s = s * 6364136223846793005ULL + 1;
		((volatile uint64_t *)(reg + (s >> 60) * PG))[0] = s;
	}
	return NULL;
}

/* Missing pages (moved out) are resolved with zeros: contents don't matter. */
static void *handler(void *arg)
{
	static char zero[PG];
	struct uffd_msg m;

	(void)arg;
	pin(0);
	while (!atomic_load(&stop)) {
		if (read(uffd, &m, sizeof(m)) != sizeof(m) ||
		    m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		upg_uffd_copy(uffd,
			      (void *)(uintptr_t)(m.arg.pagefault.address &
						  ~(PG - 1)),
			      zero, PG, true, true);
	}
	return NULL;
}

static void protect(void)
{
	struct page_region vec[NP];

	upg_uffd_scan_written(pagemap, reg, NP * PG, vec, NP, true);
}

static int present(char *base, unsigned char *vec)
{
	int n = 0;

	mincore(base, NP * PG, vec);
	for (int i = 0; i < NP; i++)
		n += vec[i] & 1;
	return n;
}

/* One round; returns the pages moved beyond the reported count. */
static int round_trip(long *failed)
{
	unsigned char before[NP], after[NP];
	long ret, claimed;
	int beyond = 0;

	protect();
	present(reg, before);
	ret = upg_uffd_move(uffd, stg, reg, NP * PG);
	present(reg, after);
	if (ret != (long)(NP * PG)) {
		(*failed)++;
		claimed = ret > 0 ? ret / (long)PG : 0;
		for (long i = claimed; i < NP; i++)
			beyond += (before[i] & 1) && !(after[i] & 1);
	}
	/* Fresh staging: map over it and register it again. */
	mmap(stg, NP * PG, PROT_READ | PROT_WRITE,
	     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	upg_uffd_register(uffd, stg, NP * PG, false, true);
	upg_uffd_wake(uffd, reg, NP * PG);
	return beyond;
}

static int setup(void)
{
	struct upg_uffd_caps caps;

	uffd = upg_uffd_open(true, true, false, &caps);
	if (uffd < 0 || !caps.move || !caps.wp_async)
		return -1;
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	reg = mmap(NULL, NP * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stg = mmap(NULL, NP * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	madvise(reg, NP * PG, MADV_NOHUGEPAGE);
	memset(reg, 1, NP * PG);
	if (upg_uffd_register(uffd, reg, NP * PG, true, true) ||
	    upg_uffd_register(uffd, stg, NP * PG, false, true))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 10;
	long rounds = 0, failed = 0, misreported = 0, pages_beyond = 0;
	pthread_t w, h;
	time_t end;

	if (setup() < 0) {
		printf("{\"probe\":\"move_count\",\"error\":\"needs "
		       "UFFDIO_MOVE and WP_ASYNC\"}\n");
		return 2;
	}
	pin(1);
	pthread_create(&h, NULL, handler, NULL);
	pthread_create(&w, NULL, writer, NULL);
	for (end = time(NULL) + seconds; time(NULL) < end; rounds++) {
		int beyond = round_trip(&failed);

		misreported += beyond > 0;
		pages_beyond += beyond;
	}
	atomic_store(&stop, true);
	printf("{\"probe\":\"move_count\",\"seconds\":%d,\"pages_per_move\":%d,"
	       "\"rounds\":%ld,\"failed_moves\":%ld,\"misreported_moves\":%ld,"
	       "\"pages_moved_beyond_count\":%ld}\n",
	       seconds, NP, rounds, failed, misreported, pages_beyond);
	fflush(stdout);
	_exit(0);
}

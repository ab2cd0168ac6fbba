/* SPDX-License-Identifier: MIT */
/*
 * Internal helpers shared by every file of the library: page size, branch
 * hints, time, the logging seam and the thread-local error message.
 */
#ifndef UPG_COMMON_H
#define UPG_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UPG_PAGE_SHIFT 12
#define UPG_PAGE_SIZE (1UL << UPG_PAGE_SHIFT)
#define UPG_PAGE_MASK (~(UPG_PAGE_SIZE - 1))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define UPG_CACHELINE 64
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

enum upg_log_level {
	UPG_LOG_ERROR = 0,
	UPG_LOG_WARN = 1,
	UPG_LOG_INFO = 2,
	UPG_LOG_DEBUG = 3,
};

/*
 * Logging never allocates and never touches managed memory: it formats into
 * a stack buffer and write(2)s it to stderr. Safe inside the fault handler
 * and inside malloc.
 */
extern int upg_log_level;
void upg_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define upg_err(...) upg_log(UPG_LOG_ERROR, __VA_ARGS__)
#define upg_warn(...) upg_log(UPG_LOG_WARN, __VA_ARGS__)
#define upg_info(...) upg_log(UPG_LOG_INFO, __VA_ARGS__)
#define upg_dbg(...)                                          \
	do {                                                  \
		if (unlikely(upg_log_level >= UPG_LOG_DEBUG)) \
			upg_log(UPG_LOG_DEBUG, __VA_ARGS__);  \
	} while (0)

/*
 * Record why the calling thread's last call failed (see upg_last_error()).
 * Returns @err so that callers can write `return upg_seterr(-EINVAL, ...)`.
 */
int upg_seterr(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Memory for the library's own metadata: anonymous mmap, never malloc (in
 * preload mode malloc is ours and lives in managed memory).
 */
void *upg_map(size_t len);
void upg_unmap(void *p, size_t len);

static inline uint64_t upg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* upg_deadline() - the CLOCK_MONOTONIC time @ns from now, for timed waits */
static inline void upg_deadline(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ns += (uint64_t)ts->tv_nsec;
	ts->tv_sec += (time_t)(ns / 1000000000ULL);
	ts->tv_nsec = (long)(ns % 1000000000ULL);
}

/*
 * upg_futex_wait() - sleep while *@w == @val, at most @timeout (NULL: no
 * limit); upg_futex_wake() - wake one sleeper. Process-private futexes.
 */
static inline void upg_futex_wait(_Atomic uint32_t *w, uint32_t val,
				  const struct timespec *timeout)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, timeout, NULL, 0);
}

static inline void upg_futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif

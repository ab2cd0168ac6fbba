/* SPDX-License-Identifier: MIT */
/*
 * upager: user-space paging over userfaultfd.
 *
 * A runtime (struct upg) owns managed regions of anonymous memory. Only a
 * budget's worth of their pages is resident at once; the rest is kept
 * compressed in an LZ4 pool. Loads, stores and system calls on managed
 * memory behave exactly as on ordinary memory.
 *
 * Errors: functions returning int give 0 (or a count) on success and
 * -errno on failure; upg_last_error() then describes the failure in words.
 * The library never aborts on an error it can report.
 */
#ifndef UPAGER_H
#define UPAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <upager/alloc.h>
#include <upager/stats.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UPG_API __attribute__((visibility("default")))

#define UPG_VERSION_MAJOR 0
#define UPG_VERSION_MINOR 1
#define UPG_VERSION_PATCH 0
#define UPG_VERSION_STRING "0.1.0"

struct upg;

/*
 * Runtime parameters. Initialise with upg_params_init() (the defaults of the
 * option table), optionally apply the UPG_* environment with
 * upg_params_from_env(), then adjust fields. Every field has an environment
 * variable; see `upagerctl options` or upg_options_print().
 */
/*
 * UPG_IDLE_HANDLERS. Every fault wakes every handler blocked on the
 * userfaultfd; at idle priority (SCHED_IDLE) the ones that lose the race
 * do not preempt the program on their CPU, but an idle handler starves
 * while other work keeps its CPU busy. AUTO runs them idle and has a
 * watchdog raise them to normal priority as soon as a fault waits.
 */
enum upg_idle_mode {
	UPG_IDLE_OFF = 0,  /* normal priority */
	UPG_IDLE_ON = 1,   /* always SCHED_IDLE */
	UPG_IDLE_AUTO = 2, /* SCHED_IDLE, normal while faults wait */
};

struct upg_params {
	size_t size;	 /* sizeof(struct upg_params), set by init */
	size_t budget;	 /* UPG_BUDGET: resident bytes at most */
	size_t pool_max; /* UPG_POOL_MAX: compressed pool limit, 0 = auto */
	size_t headroom; /* UPG_HEADROOM: free space the evictor keeps, 0 = auto */
	size_t reserve;	   /* UPG_RESERVE: default region size (allocator) */
	size_t free_dirty; /* UPG_FREE_DIRTY: freed bytes kept undiscarded */
	unsigned handlers; /* UPG_HANDLERS: fault threads, 0 = one per CPU */
	unsigned cluster;  /* UPG_CLUSTER: fault-around window, pages */
	bool use_move;	   /* UPG_MOVE: evict with UFFDIO_MOVE if available */
	bool use_wp_async; /* UPG_WP_ASYNC: clean-page tracking */
	bool use_remove;   /* UPG_REMOVE_EVENTS: follow program madvise() */
	bool stats;	   /* UPG_STATS: print statistics at exit */
	int log_level;	   /* UPG_LOG: 0 errors, 1 warnings, 2 info, 3 debug */
	bool use_remap;	   /* UPG_REMAP: evict scattered pages with mremap */
	/* UPG_SWAP_FILE: file, directory or block device; "" = an unlinked
	 * file in $TMPDIR or /var/tmp; "off" = no swap tier */
	char swap_file[256];
	size_t swap_max;	 /* UPG_SWAP_MAX: file size limit, 0 = none */
	bool swap_direct;	 /* UPG_SWAP_DIRECT: O_DIRECT swap I/O */
	unsigned swap_readahead; /* UPG_SWAP_READAHEAD: pages, 1 = off */
	/* UPG_IDLE_HANDLERS: handler priority, see enum upg_idle_mode */
	enum upg_idle_mode idle_handlers;
	/* UPG_SWAP_POLL: microseconds a swap-in polls for its read before
	 * sleeping (0 = sleep at once), at most UPG_SWAP_POLL_MAX_US */
	unsigned swap_poll_us;
	/* UPG_POOL_COMPACT: move pool objects out of sparse chunks, so that
	 * the memory of the holes frees leave goes back */
	bool pool_compact;
};

#define UPG_SWAP_POLL_MAX_US 10000

/**
 * upg_params_init() - fill @p with the option table's defaults
 * @p: parameters to initialise
 */
UPG_API void upg_params_init(struct upg_params *p);

/**
 * upg_params_from_env() - apply the UPG_* environment variables to @p
 * @p: parameters, initialised with upg_params_init()
 *
 * Return: 0, or -EINVAL when a variable has an invalid value; then
 * upg_last_error() names the variable, the value and the accepted forms.
 */
UPG_API int upg_params_from_env(struct upg_params *p);

/**
 * upg_params_set() - set one option by name, as the environment would
 * @p: parameters
 * @name: option name, with or without the UPG_ prefix, any case
 * @value: text value ("512M", "on", "4")
 *
 * Return: 0, -ENOENT for an unknown option, -EINVAL for a bad value
 * (upg_last_error() says why).
 */
UPG_API int upg_params_set(struct upg_params *p, const char *name,
			   const char *value);

/**
 * upg_options_print() - print the option table with values and help
 * @f: stream
 * @p: current values, or NULL to print the defaults
 */
UPG_API void upg_options_print(FILE *f, const struct upg_params *p);

/**
 * upg_create() - start a runtime: open userfaultfd, start handler threads
 * @p: parameters, or NULL for the defaults plus the UPG_* environment
 * @out: the new runtime
 *
 * Return: 0; -EINVAL for invalid parameters; -EPERM when userfaultfd is
 * refused (upg_last_error() says how to allow it); -ENOSYS when the kernel
 * lacks userfaultfd; -ENOMEM.
 */
UPG_API int upg_create(const struct upg_params *p, struct upg **out);

/**
 * upg_destroy() - stop the runtime and release every region it owns
 * @u: runtime, or NULL
 *
 * Heaps over @u that are still alive are destroyed with it, as by
 * upg_heap_destroy(). No thread may touch managed memory of @u during or
 * after this call.
 */
UPG_API void upg_destroy(struct upg *u);

/**
 * upg_reserve() - reserve a managed region
 * @u: runtime
 * @len: bytes, rounded up to the page size; up to what the address space
 *	allows (a 1 TiB reservation costs a few page-table pages)
 * @addr: where the region starts
 *
 * The region reads as zeros until written. Thread-safe.
 *
 * Return: 0; -EINVAL for a zero length; -ENOMEM when the address space is
 * exhausted; another -errno if registration fails.
 */
UPG_API int upg_reserve(struct upg *u, size_t len, void **addr);

/**
 * upg_release() - give a region back, with every page it stores
 * @u: runtime
 * @addr: an address returned by upg_reserve()
 *
 * Return: 0, or -ENOENT if @addr does not start a region of @u.
 */
UPG_API int upg_release(struct upg *u, void *addr);

/**
 * upg_discard() - declare a range's contents dead
 * @u: runtime
 * @addr: start, page aligned
 * @len: bytes, rounded up to pages
 *
 * The next touch of a discarded page reads zeros; its resident page and any
 * stored copy are freed before this returns. Thread-safe.
 *
 * Return: 0; -EINVAL if the range is not page aligned or not inside one
 * region of @u.
 */
UPG_API int upg_discard(struct upg *u, void *addr, size_t len);

/**
 * upg_set_budget() - change the resident budget while running
 * @u: runtime
 * @bytes: new budget
 *
 * Shrinking evicts down to the new budget before returning (unless the pool
 * is full, see the budget_overruns statistic).
 *
 * Return: 0, -EINVAL for a budget below the minimum (upg_last_error()).
 */
UPG_API int upg_set_budget(struct upg *u, size_t bytes);

/**
 * upg_get_budget() - the current resident budget in bytes
 * @u: runtime
 */
UPG_API size_t upg_get_budget(const struct upg *u);

/**
 * upg_stats_get() - read the statistics
 * @u: runtime
 * @s: filled in; set s->size = sizeof(*s) first
 *
 * Return: 0, -EINVAL if s->size is smaller than version 1's struct.
 */
UPG_API int upg_stats_get(struct upg *u, struct upg_stats *s);

/**
 * upg_stats_print() - print statistics in the `UPG_STATS=1` format
 * @u: runtime
 * @f: stream
 */
UPG_API void upg_stats_print(struct upg *u, FILE *f);

/**
 * upg_features() - kernel features in use, as text
 * @u: runtime
 *
 * Return: e.g. "move wp_async remove", valid while @u lives.
 */
UPG_API const char *upg_features(const struct upg *u);

/**
 * upg_owns() - whether @addr lies in a region of @u
 */
UPG_API bool upg_owns(struct upg *u, const void *addr);

/**
 * upg_parse_size() - parse a size the way UPG_* options are parsed
 * @s: "4096", "64K", "512M", "2G", "1T" (suffixes in either case, with an
 *	optional "B" or "iB")
 * @out: the size in bytes
 *
 * Return: 0, or -EINVAL for a malformed or too large size
 * (upg_last_error() says which forms are accepted).
 */
UPG_API int upg_parse_size(const char *s, size_t *out);

/**
 * upg_last_error() - description of the calling thread's last failure
 *
 * Return: a string owned by the library (thread-local), "" if none.
 */
UPG_API const char *upg_last_error(void);

/**
 * upg_version() - the library's version, "MAJOR.MINOR.PATCH"
 */
UPG_API const char *upg_version(void);

#ifdef __cplusplus
}
#endif

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Logging, the thread-local error message and metadata mappings.
 *
 * Nothing here allocates: messages are formatted on the stack and written
 * with one write(2), so they may be emitted from a fault handler or from
 * inside malloc. The error message buffer is thread-local (initial-exec TLS
 * so that reading it never allocates either).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "upager.h"
#include "common.h"

int upg_log_level = UPG_LOG_WARN;

static __thread char last_error[512] __attribute__((tls_model("initial-exec")));

static const char *const level_names[] = { "error", "warning", "info",
					   "debug" };

void upg_log(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (level > upg_log_level)
		return;
	n = snprintf(buf, sizeof(buf), "upager: %s: ", level_names[level & 3]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* Best effort: a failed log write has nowhere else to go. */
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}

int upg_seterr(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	upg_dbg("%s", last_error);
	return err;
}

const char *upg_last_error(void)
{
	return last_error;
}

void *upg_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void upg_unmap(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

/* SPDX-License-Identifier: MIT */
/*
 * The option table: one X-macro list (options.c) generates the defaults,
 * the UPG_* environment parsing, the help text and the printout of struct
 * upg_params. Read once at init, never on the fault path.
 */
#ifndef UPG_OPTIONS_H
#define UPG_OPTIONS_H

#include <stddef.h>

#include "upager.h"

/* Smallest budget a runtime accepts (fault-around and eviction batches). */
#define UPG_BUDGET_MIN (4UL << 20)

/*
 * upg_opt_validate() - check a parameter set as a whole
 * Checks the budget against UPG_BUDGET_MIN, physical memory and the
 * default region size (UPG_RESERVE), the cluster size, the handler count.
 * Return: 0, or -EINVAL with upg_last_error() naming the option, the value
 * and what is accepted.
 */
int upg_opt_validate(const struct upg_params *p);

/*
 * upg_opt_parse_size() - parse "4096", "64K", "512M", "2G", "1T" (case
 * insensitive, optional "B"/"iB"). Return: 0 or -EINVAL.
 */
int upg_opt_parse_size(const char *s, size_t *out);

/* upg_opt_parse_bool() - 1/0, on/off, yes/no, true/false. 0 or -EINVAL. */
int upg_opt_parse_bool(const char *s, bool *out);

/* upg_opt_format_size() - "512M"-style text for @v into @buf */
const char *upg_opt_format_size(size_t v, char *buf, size_t len);

/* Physical memory of the machine in bytes (sysconf), 0 if unknown. */
size_t upg_opt_phys_mem(void);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * The bootstrap arena: memory for the runtime's own threads (fault
 * handlers, the evictor, pthread_create inside upg_create(), a fork child
 * rebuilding its runtime) and for allocations made before a heap is up.
 * None of these may use managed memory: a fault handler touching it
 * deadlocks, and a fork child has no handlers yet.
 *
 * One reservation of ordinary anonymous memory, carved by an atomic bump
 * pointer into power-of-two blocks (32 B to 64 MiB) with a 16-byte header
 * just before the pointer. Freed blocks go to one lock-free stack per
 * class. The stack head packs a 32-bit tag with a 32-bit block index so a
 * pop that raced with a pop and a push (ABA) fails its compare-and-swap.
 * Block memory stays mapped, so reading a stale next index is harmless.
 *
 * No lock anywhere, hence nothing for fork to inherit in a locked state.
 * The arena is small by design: blocks are never returned to the kernel.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "alloc.h"

#define BOOT_SIZE (4UL << 30)
#define BOOT_MIN_SHIFT 5
#define BOOT_MAX_SHIFT 26
#define BOOT_NCLASS (BOOT_MAX_SHIFT - BOOT_MIN_SHIFT + 1)
#define BOOT_MAGIC 0xb007

struct boot_hdr {
	uint16_t magic;
	uint16_t cls;
	uint32_t off; /* from the block's start to the user pointer */
	uint64_t pad;
};

static _Atomic uintptr_t boot_base;
static _Atomic size_t boot_used;
static _Atomic uint64_t boot_free[BOOT_NCLASS];

static uintptr_t arena(void)
{
	uintptr_t b = atomic_load_explicit(&boot_base, memory_order_acquire);
	uintptr_t none = 0;
	void *m;

	if (likely(b))
		return b;
	m = mmap(NULL, BOOT_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return 0;
	if (!atomic_compare_exchange_strong(&boot_base, &none, (uintptr_t)m)) {
		munmap(m, BOOT_SIZE); /* another thread won */
		return none;
	}
	return (uintptr_t)m;
}

static unsigned class_for(size_t n)
{
	unsigned k = BOOT_MIN_SHIFT;

	while (k <= BOOT_MAX_SHIFT && (1UL << k) < n)
		k++;
	return k - BOOT_MIN_SHIFT;
}

static _Atomic uint64_t *next_word(uintptr_t base, uint32_t idx)
{
	return (_Atomic uint64_t *)(base + ((uintptr_t)(idx - 1) << 4));
}

static uintptr_t pop(uintptr_t base, unsigned c)
{
	uint64_t old = atomic_load(&boot_free[c]), new;

	do {
		uint32_t idx = (uint32_t)old;

		if (!idx)
			return 0;
		new = ((old >> 32) + 1) << 32 |
		      (uint32_t)atomic_load_explicit(next_word(base, idx),
						     memory_order_relaxed);
	} while (!atomic_compare_exchange_weak(&boot_free[c], &old, new));
	return base + ((uintptr_t)((uint32_t)old - 1) << 4);
}

static void push(uintptr_t base, unsigned c, uintptr_t blk)
{
	uint32_t idx = (uint32_t)((blk - base) >> 4) + 1;
	uint64_t old = atomic_load(&boot_free[c]), new;

	do {
		atomic_store_explicit(next_word(base, idx), (uint32_t)old,
				      memory_order_relaxed);
		new = ((old >> 32) + 1) << 32 | idx;
	} while (!atomic_compare_exchange_weak(&boot_free[c], &old, new));
}

static uintptr_t block_get(uintptr_t base, unsigned c)
{
	size_t size = 1UL << (c + BOOT_MIN_SHIFT), off;
	uintptr_t b = pop(base, c);

	if (b)
		return b;
	off = atomic_fetch_add(&boot_used, size);
	if (off + size > BOOT_SIZE)
		return 0; /* the bump pointer stays past the end: no reuse */
	return base + off;
}

void *upg_boot_aligned(size_t align, size_t n)
{
	uintptr_t base = arena(), b, p;
	struct boot_hdr *hd;
	unsigned c;

	if (align < 16)
		align = 16;
	if (!base || n > (1UL << BOOT_MAX_SHIFT) - align - 16)
		goto err_nomem;
	c = class_for(n + 16 + (align > 16 ? align : 0));
	b = block_get(base, c);
	if (!b)
		goto err_nomem;
	p = (b + 16 + align - 1) & ~(uintptr_t)(align - 1);
	hd = (struct boot_hdr *)(p - 16);
	hd->magic = BOOT_MAGIC;
	hd->cls = (uint16_t)c;
	hd->off = (uint32_t)(p - b);
	return (void *)p;

err_nomem:
	errno = ENOMEM;
	return NULL;
}

void *upg_boot_malloc(size_t n)
{
	return upg_boot_aligned(16, n);
}

bool upg_boot_owns(const void *p)
{
	uintptr_t base = atomic_load_explicit(&boot_base, memory_order_relaxed);

	return base && (uintptr_t)p >= base && (uintptr_t)p < base + BOOT_SIZE;
}

static struct boot_hdr *header(const void *p)
{
	struct boot_hdr *hd = (struct boot_hdr *)((uintptr_t)p - 16);

	if (hd->magic != BOOT_MAGIC || hd->cls >= BOOT_NCLASS) {
		upg_err("allocator: %p is not a bootstrap block", p);
		return NULL;
	}
	return hd;
}

size_t upg_boot_usable_size(const void *p)
{
	struct boot_hdr *hd = header(p);

	if (!hd)
		return 0;
	return (1UL << (hd->cls + BOOT_MIN_SHIFT)) - hd->off;
}

void upg_boot_free(void *p)
{
	struct boot_hdr *hd = header(p);
	uintptr_t b;

	if (!hd)
		return;
	b = (uintptr_t)p - hd->off;
	hd->magic = 0; /* a second free is reported, not pushed twice */
	push(atomic_load(&boot_base), hd->cls, b);
}

void *upg_boot_realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (!p)
		return upg_boot_malloc(n);
	old = upg_boot_usable_size(p);
	if (n <= old && old)
		return p;
	q = upg_boot_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old);
	upg_boot_free(p);
	return q;
}

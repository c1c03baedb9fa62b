/*
 * Coroutines for request handlers (see coro.h and docs/coroutines.md). Each coroutine runs on its
 * own mmap'd stack with a PROT_NONE guard page below it, so an overflow faults instead of
 * silently corrupting a neighbour. The coroutine's record (struct coro_s) lives at the top of
 * that same mapping: one mmap per coroutine and no malloc on the request path. When a coroutine
 * finishes, its mapping goes back to the pool's idle list: up to max_free of them, or more while
 * the pool keeps no more stacks than the most coroutines alive at once since the last
 * coro_pool_trim(). Under a steady concurrency of a thousand handlers, unmapping all but
 * max_free and mapping them again (page faults, zeroed pages, TLB shootdowns) cut a worker's
 * throughput by two thirds (bench/RESULTS.md). The owner calls coro_pool_trim() now and then
 * (a worker: once a second), which unmaps what the last period did not need, so an idle
 * worker's memory returns to its steady size within a couple of seconds after a burst.
 *
 * The switch itself is coro__switch in coro_switch.S (x86-64 and aarch64): it saves only the
 * callee-saved registers, which makes it a few nanoseconds. Elsewhere, or when built with
 * -DCORO_USE_UCONTEXT, the portable but slower swapcontext() (a sigprocmask system call per
 * switch) is used instead. Under AddressSanitizer every switch is announced to it, and under
 * valgrind every stack is registered, so neither mistakes a switch for a wild stack access.
 */
#include "trackd/coro.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(CORO_USE_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__))
#define CORO_UCONTEXT 1
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif
#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#define CORO_VALGRIND 1
#include <valgrind/valgrind.h>
#endif
#endif

/* Deferred calls stored in the record itself; a handler rarely needs more. */
#define CORO_DEFER_INLINE 4
/* Smallest stack a pool hands out: room for the record, libc calls and sanitizer frames. */
#define CORO_STACK_MIN ((size_t)16 * 1024)
/* The record's alignment at the top of the mapping (a cache line). */
#define CORO_RECORD_ALIGN 64

enum coro_state {
    CORO_SUSPENDED = 1, /* created, or yielded: may be resumed */
    CORO_RUNNING,       /* between resume and yield */
    CORO_DEAD,          /* finished; the record sits in the idle list or is unmapped */
};

struct coro_defer_s {
    void (*fn)(void *);
    void *arg;
};

#ifdef CORO_UCONTEXT
typedef ucontext_t coro_ctx_t;
#else
typedef void *coro_ctx_t; /* the saved stack pointer; registers are on that stack */

/* In coro_switch.S. */
__attribute__((visibility("hidden"))) void coro__switch(void **save_sp, void *to_sp);
__attribute__((visibility("hidden"))) void coro__trampoline(void);
#endif

struct coro_s {
    coro_ctx_t ctx;    /* the coroutine's context while it is not running */
    coro_ctx_t caller; /* the resumer's context while the coroutine runs */
    coro_pool_t *pool;
    coro_fn fn;
    void *arg;
    void *data;
    char *map;    /* start of the mapping: guard page, then the stack, then this record */
    coro_t *next; /* next idle mapping in the pool */
    enum coro_state state;
    size_t ndefer;
    size_t defer_cap;
    struct coro_defer_s *defer; /* defer_inline, or a heap array once that is full */
    struct coro_defer_s defer_inline[CORO_DEFER_INLINE];
    /* Only used under ASan; kept always, as the record costs no allocation of its own. */
    void *asan_fake_stack;  /* ASan's fake stack of the coroutine while it is switched out */
    void *asan_caller_fake; /* same for the resumer while the coroutine runs */
    const void *asan_caller_bottom;
    size_t asan_caller_size;
#ifdef CORO_VALGRIND
    unsigned vg_stack_id;
#endif
};

struct coro_pool_s {
    size_t page;
    size_t map_size; /* guard page + stack (the record included) */
    size_t max_free;
    size_t nfree;
    size_t active;
    size_t peak;     /* most coroutines alive at once since the last trim */
    coro_t *idle;    /* finished coroutines whose mapping is kept for reuse */
    coro_t *current; /* the coroutine running now, NULL while the loop runs */
};

/* Usable stack: from above the guard page up to the record. */
static inline char *coro_stack_lo(const coro_t *co)
{
    return co->map + co->pool->page;
}

static inline size_t coro_stack_size(const coro_t *co)
{
    return (size_t)((const char *)co - coro_stack_lo(co));
}

/*
 * AddressSanitizer keeps its own idea of the current stack bounds and of each stack's "fake
 * stack" (for use-after-return detection). Before a switch we tell it which stack we go to;
 * after the switch, on the new stack, we confirm and learn where we came from. A save slot of
 * NULL when leaving means the stack being left is finished, so ASan may drop its fake stack.
 */
static inline void coro_asan_start(void **fake_save, const void *bottom, size_t size)
{
#ifdef CORO_ASAN
    __sanitizer_start_switch_fiber(fake_save, bottom, size);
#else
    (void)fake_save, (void)bottom, (void)size;
#endif
}

static inline void coro_asan_finish(void *fake, const void **bottom_old, size_t *size_old)
{
#ifdef CORO_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
    (void)fake, (void)bottom_old, (void)size_old;
#endif
}

/* Frames that never returned leave their redzones poisoned; a reused stack must start clean. */
static inline void coro_asan_unpoison(coro_t *co)
{
#ifdef CORO_ASAN
    ASAN_UNPOISON_MEMORY_REGION(coro_stack_lo(co), coro_stack_size(co));
#else
    (void)co;
#endif
}

static inline void coro_jump(coro_ctx_t *from, coro_ctx_t *to)
{
#ifdef CORO_UCONTEXT
    int rc = swapcontext(from, to);
    assert(rc == 0);
    (void)rc;
#else
    coro__switch(from, *to);
#endif
}

static void coro_run_defers(coro_t *co)
{
    /* Taken one at a time from the end, so a deferred call may itself defer another. */
    while (co->ndefer > 0) {
        struct coro_defer_s d = co->defer[--co->ndefer];
        d.fn(d.arg);
    }
    if (co->defer != co->defer_inline)
        free(co->defer);
    co->defer = co->defer_inline;
    co->defer_cap = CORO_DEFER_INLINE;
}

/* Runs on the coroutine's stack, from its first resume to its end; never returns. */
static void coro_main(coro_t *co)
{
    coro_asan_finish(NULL, &co->asan_caller_bottom, &co->asan_caller_size);
    co->fn(co, co->arg);
    coro_run_defers(co);
    co->state = CORO_DEAD;
    /* The last switch away: coro_resume, back on the loop's stack, releases this stack. */
    coro_asan_start(NULL, co->asan_caller_bottom, co->asan_caller_size);
    coro_jump(&co->ctx, &co->caller);
    abort(); /* a dead coroutine is never resumed */
}

#ifdef CORO_UCONTEXT
/* makecontext() passes int arguments only, so the pointer travels in two halves. */
static void coro_uc_main(unsigned int hi, unsigned int lo)
{
    coro_main((coro_t *)(((uintptr_t)hi << 16 << 16) | (uintptr_t)lo));
}
#endif

/* Prepare co->ctx so that the first switch to it enters coro_main(co). */
static void coro_init_ctx(coro_t *co)
{
#ifdef CORO_UCONTEXT
    uintptr_t p = (uintptr_t)co;
    int rc = getcontext(&co->ctx);
    assert(rc == 0);
    (void)rc;
    co->ctx.uc_stack.ss_sp = coro_stack_lo(co);
    co->ctx.uc_stack.ss_size = coro_stack_size(co);
    co->ctx.uc_link = NULL;
    makecontext(&co->ctx, (void (*)(void))coro_uc_main, 2, (unsigned int)(p >> 16 >> 16),
                (unsigned int)(p & 0xffffffffu));
#else
    /*
     * The frame coro__switch pops (its layout is described in coro_switch.S), placed right below
     * the record: the record is 64-byte aligned and the frame a multiple of 16 bytes, so the
     * stack is aligned as the ABI requires when the trampoline calls coro_main.
     */
    uintptr_t *frame;
#if defined(__x86_64__)
    frame = (uintptr_t *)co - 8;
    frame[0] = 0x1f80 | ((uintptr_t)0x037f << 32); /* MXCSR and x87 control word: ABI defaults */
    frame[1] = 0;                                  /* r15 */
    frame[2] = 0;                                  /* r14 */
    frame[3] = (uintptr_t)coro_main;               /* r13: entry function */
    frame[4] = (uintptr_t)co;                      /* r12: its argument */
    frame[5] = 0;                                  /* rbx */
    frame[6] = 0;                                  /* rbp: ends the frame-pointer chain */
    frame[7] = (uintptr_t)coro__trampoline;        /* return address */
#elif defined(__aarch64__)
    /* FPCR (frame[20]) stays 0: round to nearest, no traps, the ABI's initial state. */
    frame = (uintptr_t *)co - 22;
    memset(frame, 0, 22 * sizeof(*frame));
    frame[0] = (uintptr_t)co;                /* x19: argument of the entry function */
    frame[1] = (uintptr_t)coro_main;         /* x20: entry function */
    frame[11] = (uintptr_t)coro__trampoline; /* x30: return address; x29 = 0 ends the chain */
#endif
    co->ctx = frame;
#endif
}

/* Map a fresh stack with its guard page and place the record at its top. */
static coro_t *coro_map(coro_pool_t *pool)
{
    char *map = mmap(NULL, pool->map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (mprotect(map, pool->page, PROT_NONE) != 0) {
        munmap(map, pool->map_size);
        return NULL;
    }
    uintptr_t top = (uintptr_t)map + pool->map_size;
    coro_t *co = (coro_t *)((top - sizeof(coro_t)) & ~(uintptr_t)(CORO_RECORD_ALIGN - 1));
    co->map = map;
    co->pool = pool;
#ifdef CORO_VALGRIND
    co->vg_stack_id = VALGRIND_STACK_REGISTER(map + pool->page, map + pool->map_size);
#endif
    return co;
}

static void coro_unmap(coro_t *co)
{
    char *map = co->map;
    size_t size = co->pool->map_size;
#ifdef CORO_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->vg_stack_id);
#endif
    coro_asan_unpoison(co);
    munmap(map, size);
}

coro_pool_t *coro_pool_new(size_t stack_size, size_t max_free)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    /* Beyond this, rounding up could overflow; no real stack comes near it. */
    if (stack_size > SIZE_MAX / 4) {
        errno = EINVAL;
        return NULL;
    }
    if (stack_size < CORO_STACK_MIN)
        stack_size = CORO_STACK_MIN;
    stack_size = (stack_size + (size_t)page - 1) / (size_t)page * (size_t)page;

    coro_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    pool->page = (size_t)page;
    pool->map_size = stack_size + (size_t)page;
    pool->max_free = max_free;
    return pool;
}

void coro_pool_free(coro_pool_t *pool)
{
    if (pool == NULL)
        return;
    /* A suspended coroutine's stack may hold the only pointers to its resources. */
    assert(pool->active == 0 && "coro_pool_free with coroutines that have not finished");
    while (pool->idle != NULL) {
        coro_t *co = pool->idle;
        pool->idle = co->next;
        coro_unmap(co);
    }
    free(pool);
}

size_t coro_pool_active(const coro_pool_t *pool)
{
    return pool->active;
}

size_t coro_pool_idle(const coro_pool_t *pool)
{
    return pool->nfree;
}

void coro_pool_trim(coro_pool_t *pool)
{
    pool->peak = pool->active;
    if (pool->nfree <= pool->max_free)
        return;
    /* The idle list is most recently used first: keep its head (warm pages), cut the rest. */
    coro_t **link = &pool->idle;
    for (size_t i = 0; i < pool->max_free; i++)
        link = &(*link)->next;
    coro_t *co = *link;
    *link = NULL;
    pool->nfree = pool->max_free;
    while (co != NULL) {
        coro_t *next = co->next;
        coro_unmap(co);
        co = next;
    }
}

coro_t *coro_new(coro_pool_t *pool, coro_fn fn, void *arg)
{
    coro_t *co = pool->idle;
    if (co != NULL) {
        pool->idle = co->next;
        pool->nfree--;
    } else {
        co = coro_map(pool);
        if (co == NULL)
            return NULL;
    }
    co->fn = fn;
    co->arg = arg;
    co->data = NULL;
    co->next = NULL;
    co->state = CORO_SUSPENDED;
    co->ndefer = 0;
    co->defer_cap = CORO_DEFER_INLINE;
    co->defer = co->defer_inline;
    co->asan_fake_stack = NULL;
    co->asan_caller_fake = NULL;
    co->asan_caller_bottom = NULL;
    co->asan_caller_size = 0;
    coro_init_ctx(co);
    if (++pool->active > pool->peak)
        pool->peak = pool->active;
    return co;
}

/* Back on the loop's stack after the coroutine's last switch: keep or unmap its stack. */
static void coro_release(coro_t *co)
{
    coro_pool_t *pool = co->pool;
    pool->active--;
    if (pool->nfree < pool->max_free || pool->active + pool->nfree < pool->peak) {
        coro_asan_unpoison(co);
        co->next = pool->idle;
        pool->idle = co;
        pool->nfree++;
    } else {
        coro_unmap(co);
    }
}

int coro_resume(coro_t *co)
{
    coro_pool_t *pool = co->pool;
    assert(co->state != CORO_DEAD && "coro_resume of a finished coroutine");
    assert(co->state == CORO_SUSPENDED && "coro_resume of a running coroutine");
    assert(pool->current == NULL && "coro_resume from inside a coroutine of the same pool");
    pool->current = co;
    co->state = CORO_RUNNING;
    coro_asan_start(&co->asan_caller_fake, coro_stack_lo(co), coro_stack_size(co));
    coro_jump(&co->caller, &co->ctx);
    coro_asan_finish(co->asan_caller_fake, NULL, NULL);
    pool->current = NULL;
    if (co->state == CORO_DEAD) {
        coro_release(co);
        return 0;
    }
    return 1;
}

void coro_yield(coro_t *co)
{
    /* The frame address, unlike a local's, is on the real stack even under ASan's fake stacks. */
    assert(co->state == CORO_RUNNING && co->pool->current == co &&
           (char *)__builtin_frame_address(0) >= coro_stack_lo(co) &&
           (char *)__builtin_frame_address(0) < (char *)co && "coro_yield from outside `co`");
    co->state = CORO_SUSPENDED;
    coro_asan_start(&co->asan_fake_stack, co->asan_caller_bottom, co->asan_caller_size);
    coro_jump(&co->ctx, &co->caller);
    /* The resumer may differ from last time (another coroutine): learn its stack again. */
    coro_asan_finish(co->asan_fake_stack, &co->asan_caller_bottom, &co->asan_caller_size);
}

int coro_defer(coro_t *co, void (*fn)(void *), void *arg)
{
    assert(co->state != CORO_DEAD && "coro_defer on a finished coroutine");
    if (co->ndefer == co->defer_cap) {
        struct coro_defer_s *d;
        if (co->defer_cap > SIZE_MAX / 2 / sizeof(*d))
            return -ENOMEM;
        size_t cap = co->defer_cap * 2;
        if (co->defer == co->defer_inline) {
            d = malloc(cap * sizeof(*d));
            if (d == NULL)
                return -ENOMEM;
            memcpy(d, co->defer_inline, sizeof(co->defer_inline));
        } else {
            d = realloc(co->defer, cap * sizeof(*d));
            if (d == NULL)
                return -ENOMEM;
        }
        co->defer = d;
        co->defer_cap = cap;
    }
    co->defer[co->ndefer].fn = fn;
    co->defer[co->ndefer].arg = arg;
    co->ndefer++;
    return 0;
}

void *coro_data(const coro_t *co)
{
    return co->data;
}

void coro_set_data(coro_t *co, void *data)
{
    co->data = data;
}

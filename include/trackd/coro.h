/*
 * Green-thread coroutines for request handlers. A handler is plain sequential C that calls
 * coro_yield() while it waits (for the log to make its events durable, for a write to drain);
 * the callback that ends the wait calls coro_resume(). Stacks come from a per-loop pool, are
 * mmap'd with a guard page below them, and are returned to the pool when the coroutine ends.
 * Not thread-safe: a pool and its coroutines belong to one event loop thread.
 */
#ifndef TRACKD_CORO_H
#define TRACKD_CORO_H

#include <stddef.h>

typedef struct coro_s coro_t;
typedef struct coro_pool_s coro_pool_t;

/** Body of a coroutine. When it returns the coroutine is finished; its deferred calls run. */
typedef void (*coro_fn)(coro_t *co, void *arg);

/** Stack size the server gives each request handler; only pages a handler touches use memory. */
#define CORO_STACK_SIZE_DEFAULT ((size_t)256 * 1024)

/**
 * Create a pool of stacks of `stack_size` bytes (rounded up to pages, at least 16 KiB), keeping
 * `max_free` idle, or more: as many as the most coroutines alive at once since the last
 * coro_pool_trim() need. NULL if out of memory.
 */
coro_pool_t *coro_pool_new(size_t stack_size, size_t max_free);

/**
 * Unmap the idle stacks beyond max_free (the least recently used) and start a new period for the
 * peak at the coroutines alive now. Call it periodically (say once a second).
 */
void coro_pool_trim(coro_pool_t *pool);

/** Idle stacks the pool keeps mapped. */
size_t coro_pool_idle(const coro_pool_t *pool);

/** Free the pool and its idle stacks. Every coroutine from it must have finished. */
void coro_pool_free(coro_pool_t *pool);

/** Coroutines currently alive (created and not finished) in the pool. */
size_t coro_pool_active(const coro_pool_t *pool);

/** Create a coroutine that will run fn(co, arg) on its first resume. NULL if out of memory. */
coro_t *coro_new(coro_pool_t *pool, coro_fn fn, void *arg);

/**
 * Switch into `co` until it yields or finishes. Returns 1 if it yielded (still alive), 0 if it
 * finished: then its deferred calls have run and `co` is freed and must not be used again.
 * Must be called from outside any coroutine of the pool (from the loop).
 */
int coro_resume(coro_t *co);

/** From inside `co`: switch back to whoever resumed it. Returns when it is resumed again. */
void coro_yield(coro_t *co);

/**
 * Run fn(arg) when `co` finishes, in reverse order of registration: ties a resource to the
 * coroutine so an early return leaks nothing. Returns 0 or -ENOMEM.
 */
int coro_defer(coro_t *co, void (*fn)(void *), void *arg);

/** The user pointer slot of the coroutine (initially NULL). */
void *coro_data(const coro_t *co);
void coro_set_data(coro_t *co, void *data);

#endif

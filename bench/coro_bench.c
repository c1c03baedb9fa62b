/*
 * Cost of a coroutine switch (coro.c), with swapcontext() measured in the same run as the
 * reference. One iteration is a resume and the yield that answers it, i.e. two switches; the
 * figure printed is the time of an iteration divided by two, best of BENCH_RUNS runs so that a
 * preempted run does not count. Also prints the cost of a whole short-lived coroutine
 * (coro_new, resume to the end, stack back to the pool), what each request pays.
 *
 *   coro_bench [ITERATIONS]   (default 10000000; swapcontext and create/finish use a tenth)
 */
#include "trackd/coro.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#define BENCH_RUNS 5
#define BENCH_ITERATIONS_DEFAULT 10000000L
#define BENCH_UC_STACK (64 * 1024)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- coro ---- */

static void ping_body(coro_t *co, void *arg)
{
    volatile int *running = arg;
    while (*running)
        coro_yield(co);
}

/* Nanoseconds per switch for one run of `n` resume+yield pairs; negative on failure. */
static double bench_coro_switch(coro_pool_t *pool, long n)
{
    volatile int running = 1;
    coro_t *co = coro_new(pool, ping_body, (void *)&running);
    if (co == NULL)
        return -1;
    coro_resume(co); /* first entry is not a steady-state switch */
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        coro_resume(co);
    double t1 = now_ns();
    running = 0;
    if (coro_resume(co) != 0)
        return -1;
    return (t1 - t0) / (double)n / 2;
}

static void empty_body(coro_t *co, void *arg)
{
    (void)co;
    (void)arg;
}

/* Nanoseconds per coroutine created, run to its end and released to the pool. */
static double bench_coro_lifecycle(coro_pool_t *pool, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        coro_t *co = coro_new(pool, empty_body, NULL);
        if (co == NULL || coro_resume(co) != 0)
            return -1;
    }
    return (now_ns() - t0) / (double)n;
}

/* ---- swapcontext reference ---- */

static ucontext_t uc_main, uc_co;
static volatile int uc_running;

static void uc_body(void)
{
    while (uc_running)
        swapcontext(&uc_co, &uc_main);
}

static double bench_ucontext_switch(void *stack, long n)
{
    if (getcontext(&uc_co) != 0)
        return -1;
    uc_co.uc_stack.ss_sp = stack;
    uc_co.uc_stack.ss_size = BENCH_UC_STACK;
    uc_co.uc_link = &uc_main;
    makecontext(&uc_co, uc_body, 0);
    uc_running = 1;
    swapcontext(&uc_main, &uc_co);
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        swapcontext(&uc_main, &uc_co);
    double t1 = now_ns();
    uc_running = 0;
    swapcontext(&uc_main, &uc_co); /* lets uc_body return to uc_main through uc_link */
    return (t1 - t0) / (double)n / 2;
}

static void keep_best(double *best, double v)
{
    if (v >= 0 && (*best < 0 || v < *best))
        *best = v;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : BENCH_ITERATIONS_DEFAULT;
    if (n < 10) {
        fprintf(stderr, "usage: %s [ITERATIONS >= 10]\n", argv[0]);
        return 2;
    }
    long n_slow = n / 10;
    coro_pool_t *pool = coro_pool_new(CORO_STACK_SIZE_DEFAULT, 4);
    void *uc_stack = malloc(BENCH_UC_STACK);
    if (pool == NULL || uc_stack == NULL) {
        fprintf(stderr, "coro_bench: out of memory\n");
        return 1;
    }

    double coro = -1, uc = -1, life = -1;
    for (int run = 0; run < BENCH_RUNS; run++) {
        keep_best(&coro, bench_coro_switch(pool, n));
        keep_best(&uc, bench_ucontext_switch(uc_stack, n_slow));
        keep_best(&life, bench_coro_lifecycle(pool, n_slow));
    }
    if (coro < 0 || uc < 0 || life < 0) {
        fprintf(stderr, "coro_bench: a run failed\n");
        return 1;
    }
    printf("coro switch:          %6.2f ns/switch  (%ld resume+yield pairs, best of %d)\n", coro, n,
           BENCH_RUNS);
    printf("swapcontext switch:   %6.2f ns/switch  (%ld pairs, best of %d)\n", uc, n_slow,
           BENCH_RUNS);
    printf("coro new+run+finish:  %6.2f ns/coroutine  (%ld, pooled stack, best of %d)\n", life,
           n_slow, BENCH_RUNS);
    coro_pool_free(pool);
    free(uc_stack);
    return 0;
}

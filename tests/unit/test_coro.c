/*
 * Unit tests of coro.c: switching order and values, deferred calls, the stack pool, many live
 * coroutines, guard pages, deep stacks and the asserts that catch misuse. Crashes that a test
 * expects happen in a forked child, whose fate the test checks.
 */
#include "test.h"

#include "trackd/coro.h"

#include <errno.h>
#include <fcntl.h>
#include <fenv.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#define TEST_STACK CORO_STACK_SIZE_DEFAULT

/* A trace that bodies and the loop append to, to check the order things happened in. */
typedef struct {
    char buf[256];
    size_t len;
} trace_t;

static void trace(trace_t *t, const char *s)
{
    size_t n = strlen(s);
    CHECK(t->len + n < sizeof(t->buf));
    memcpy(t->buf + t->len, s, n + 1);
    t->len += n;
}

/* Run fn(arg) in a child process, silenced and without core dumps; return its wait status. */
static int run_in_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDERR_FILENO);
        /* Sanitizers install their own SIGSEGV handler, which would exit instead of dying. */
        signal(SIGSEGV, SIG_DFL);
        fn(arg);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

/* ---- ping-pong ---- */

struct pingpong {
    trace_t t;
    int rounds;
};

static void pingpong_body(coro_t *co, void *arg)
{
    struct pingpong *pp = arg;
    char step[16];
    for (int i = 0; i < pp->rounds; i++) {
        int *v = coro_data(co); /* the loop hands a value in through data... */
        snprintf(step, sizeof(step), "c%d ", *v);
        trace(&pp->t, step);
        *v *= 10; /* ...and reads the answer back from the same place */
        coro_yield(co);
    }
    trace(&pp->t, "end");
}

TEST(coro_resume_and_yield_alternate_in_order_passing_values_through_data)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 4);
    CHECK(pool != NULL);
    struct pingpong pp = {.rounds = 3};
    coro_t *co = coro_new(pool, pingpong_body, &pp);
    CHECK(co != NULL);
    CHECK(coro_data(co) == NULL);
    char step[16];
    int v;
    for (int i = 1; i <= 3; i++) {
        v = i;
        coro_set_data(co, &v);
        snprintf(step, sizeof(step), "m%d ", i);
        trace(&pp.t, step);
        CHECK_EQ_INT(coro_resume(co), 1);
        CHECK_EQ_INT(v, i * 10);
    }
    trace(&pp.t, "m ");
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_STR(pp.t.buf, "m1 c1 m2 c2 m3 c3 m end");
    coro_pool_free(pool);
}

/* ---- deferred calls ---- */

struct deferred {
    trace_t *t;
    const char *name;
};

static void defer_trace(void *arg)
{
    struct deferred *d = arg;
    trace(d->t, d->name);
}

struct defer_case {
    trace_t t;
    struct deferred d[8];
    int n;          /* how many to register */
    int return_at;  /* registered count at which the body returns early, -1 for never */
    int yield_each; /* yield after each registration */
};

static void defer_body(coro_t *co, void *arg)
{
    struct defer_case *dc = arg;
    for (int i = 0; i < dc->n; i++) {
        if (i == dc->return_at)
            return;
        CHECK_EQ_INT(coro_defer(co, defer_trace, &dc->d[i]), 0);
        if (dc->yield_each)
            coro_yield(co);
    }
    trace(&dc->t, "body ");
}

static void defer_case_init(struct defer_case *dc, int n, int return_at, int yield_each)
{
    static const char *const names[] = {"1", "2", "3", "4", "5", "6", "7", "8"};
    memset(dc, 0, sizeof(*dc));
    for (int i = 0; i < 8; i++) {
        dc->d[i].t = &dc->t;
        dc->d[i].name = names[i];
    }
    dc->n = n;
    dc->return_at = return_at;
    dc->yield_each = yield_each;
}

TEST(coro_deferred_calls_run_in_reverse_order_when_the_body_returns)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 4);
    CHECK(pool != NULL);
    struct defer_case dc;
    /* Eight: more than fit inline, so the spill to the heap is exercised too. */
    defer_case_init(&dc, 8, -1, 0);
    coro_t *co = coro_new(pool, defer_body, &dc);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_STR(dc.t.buf, "body 87654321");
    coro_pool_free(pool);
}

TEST(coro_deferred_calls_run_when_the_body_returns_early_and_not_at_a_yield)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 4);
    CHECK(pool != NULL);
    struct defer_case dc;
    defer_case_init(&dc, 8, 5, 1);
    coro_t *co = coro_new(pool, defer_body, &dc);
    CHECK(co != NULL);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(coro_resume(co), 1);
        CHECK_EQ_INT(dc.t.len, 0); /* nothing runs while the coroutine merely waits */
    }
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_STR(dc.t.buf, "54321");
    coro_pool_free(pool);
}

static void defer_count(void *arg)
{
    (*(int *)arg)++;
}

static void defer_from_outside_body(coro_t *co, void *arg)
{
    CHECK_EQ_INT(*(int *)arg, 0);
}

TEST(coro_defer_registered_before_the_first_resume_runs_at_the_end)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 4);
    CHECK(pool != NULL);
    int count = 0;
    coro_t *co = coro_new(pool, defer_from_outside_body, &count);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_defer(co, defer_count, &count), 0);
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_INT(count, 1);
    coro_pool_free(pool);
}

/* ---- the pool ---- */

static void record_frame_body(coro_t *co, void *arg)
{
    *(void **)arg = __builtin_frame_address(0);
}

TEST(coro_stack_of_a_finished_coroutine_is_reused_by_the_next_one)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    void *frame1 = NULL, *frame2 = NULL;
    coro_t *co1 = coro_new(pool, record_frame_body, &frame1);
    CHECK(co1 != NULL);
    CHECK_EQ_INT(coro_resume(co1), 0);
    /* Map something, so that an unmapped stack would not come back at the same place. */
    void *other = mmap(NULL, TEST_STACK * 2, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(other != MAP_FAILED);
    coro_t *co2 = coro_new(pool, record_frame_body, &frame2);
    CHECK(co2 != NULL);
    CHECK_EQ_INT(coro_resume(co2), 0);
    CHECK(frame1 != NULL);
    CHECK(frame1 == frame2);
    CHECK(co1 == co2);
    munmap(other, TEST_STACK * 2);
    coro_pool_free(pool);
}

static int page_is_mapped(const void *addr)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned char vec;
    void *p = (void *)((uintptr_t)addr & ~((uintptr_t)page - 1));
    if (mincore(p, 1, &vec) == 0)
        return 1;
    CHECK_EQ_INT(errno, ENOMEM);
    return 0;
}

static void yield_once_body(coro_t *co, void *arg)
{
    if (arg != NULL)
        *(void **)arg = __builtin_frame_address(0);
    coro_yield(co);
}

/* Stacks of frame[0..n) still mapped. */
static int count_mapped(void *const *frame, int n)
{
    int mapped = 0;
    for (int i = 0; i < n; i++)
        mapped += page_is_mapped(frame[i]);
    return mapped;
}

TEST(coro_pool_keeps_the_stacks_of_its_peak_until_trimmed_then_max_free)
{
    enum { MAX_FREE = 3, N = 8, ROUNDS = 4 };
    coro_pool_t *pool = coro_pool_new(TEST_STACK, MAX_FREE);
    CHECK(pool != NULL);
    coro_t *co[N];
    void *frame[N];
    for (int round = 0; round < ROUNDS; round++) {
        /* Alternate burst sizes so the idle list is both filled and drained. */
        int n = round % 2 ? 2 : N;
        for (int i = 0; i < n; i++) {
            co[i] = coro_new(pool, yield_once_body, &frame[i]);
            CHECK(co[i] != NULL);
            CHECK_EQ_INT(coro_resume(co[i]), 1);
        }
        for (int i = 0; i < n; i++)
            CHECK_EQ_INT(coro_resume(co[i]), 0);
        /* A burst as large as the peak since the last trim finds its stacks again. */
        CHECK_EQ_INT(count_mapped(frame, n), n);
        CHECK_EQ_INT((int)coro_pool_idle(pool), N);
        /* The trim gives back all but max_free (nothing is alive). */
        coro_pool_trim(pool);
        CHECK_EQ_INT((int)coro_pool_idle(pool), MAX_FREE);
        CHECK_EQ_INT(count_mapped(frame, n), n < MAX_FREE ? n : MAX_FREE);
        /* Refill to the peak for the next round's check: a new period starts at 0. */
        for (int i = 0; i < N; i++) {
            co[i] = coro_new(pool, yield_once_body, &frame[i]);
            CHECK_EQ_INT(coro_resume(co[i]), 1);
        }
        for (int i = 0; i < N; i++)
            CHECK_EQ_INT(coro_resume(co[i]), 0);
    }
    coro_pool_free(pool);
    for (int i = 0; i < N; i++)
        CHECK(!page_is_mapped(frame[i]));
}

TEST(coro_pool_trim_keeps_what_the_coroutines_alive_now_account_for)
{
    enum { MAX_FREE = 2, N = 10, LIVE = 6 };
    coro_pool_t *pool = coro_pool_new(TEST_STACK, MAX_FREE);
    CHECK(pool != NULL);
    coro_t *co[N];
    for (int i = 0; i < N; i++) {
        co[i] = coro_new(pool, yield_once_body, NULL);
        CHECK_EQ_INT(coro_resume(co[i]), 1);
    }
    /* Four finish: their stacks stay (the peak of ten since the last trim holds them). */
    for (int i = LIVE; i < N; i++)
        CHECK_EQ_INT(coro_resume(co[i]), 0);
    CHECK_EQ_INT((int)coro_pool_idle(pool), N - LIVE);
    /* The trim resets the peak to the six alive: idle beyond max_free goes. */
    coro_pool_trim(pool);
    CHECK_EQ_INT((int)coro_pool_idle(pool), MAX_FREE);
    /* The six finish: the peak is six now, so with two idle at most six stacks stay mapped. */
    for (int i = 0; i < LIVE; i++)
        CHECK_EQ_INT(coro_resume(co[i]), 0);
    CHECK_EQ_INT((int)coro_pool_idle(pool), LIVE);
    coro_pool_trim(pool);
    CHECK_EQ_INT((int)coro_pool_idle(pool), MAX_FREE);
    coro_pool_free(pool);
}

TEST(coro_pool_active_counts_coroutines_created_and_not_finished)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 4);
    CHECK(pool != NULL);
    CHECK_EQ_INT(coro_pool_active(pool), 0);
    coro_t *a = coro_new(pool, yield_once_body, NULL);
    coro_t *b = coro_new(pool, yield_once_body, NULL);
    CHECK(a != NULL && b != NULL);
    CHECK_EQ_INT(coro_pool_active(pool), 2);
    CHECK_EQ_INT(coro_resume(a), 1);
    CHECK_EQ_INT(coro_pool_active(pool), 2);
    CHECK_EQ_INT(coro_resume(a), 0);
    CHECK_EQ_INT(coro_pool_active(pool), 1);
    CHECK_EQ_INT(coro_resume(b), 1);
    CHECK_EQ_INT(coro_resume(b), 0);
    CHECK_EQ_INT(coro_pool_active(pool), 0);
    coro_pool_free(pool);
}

/* ---- many at once ---- */

struct many {
    int *out;
    int index;
};

static void many_body(coro_t *co, void *arg)
{
    struct many *m = arg;
    m->out[m->index] = -1;
    coro_yield(co);
    m->out[m->index] = m->index;
}

TEST_T(coro_ten_thousand_live_coroutines_each_yield_then_finish, 60)
{
    enum { N = 10000 };
    coro_pool_t *pool = coro_pool_new(CORO_STACK_SIZE_DEFAULT, 64);
    CHECK(pool != NULL);
    coro_t **co = calloc(N, sizeof(*co));
    struct many *m = calloc(N, sizeof(*m));
    int *out = calloc(N, sizeof(*out));
    CHECK(co != NULL && m != NULL && out != NULL);
    for (int i = 0; i < N; i++) {
        m[i].out = out;
        m[i].index = i;
        co[i] = coro_new(pool, many_body, &m[i]);
        CHECK(co[i] != NULL);
        CHECK_EQ_INT(coro_resume(co[i]), 1);
    }
    CHECK_EQ_INT(coro_pool_active(pool), N);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(out[i], -1);
    /* Finish them in reverse, so the order of resumption is not the order of creation. */
    for (int i = N - 1; i >= 0; i--)
        CHECK_EQ_INT(coro_resume(co[i]), 0);
    CHECK_EQ_INT(coro_pool_active(pool), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(out[i], i);
    coro_pool_free(pool);
    free(co);
    free(m);
    free(out);
}

/* ---- nesting and per-coroutine state ---- */

static void inner_body(coro_t *co, void *arg)
{
    trace(arg, "i1 ");
    coro_yield(co);
    trace(arg, "i2 ");
}

struct outer {
    trace_t t;
    coro_pool_t *inner_pool;
};

static void outer_body(coro_t *co, void *arg)
{
    struct outer *o = arg;
    coro_t *in = coro_new(o->inner_pool, inner_body, &o->t);
    CHECK(in != NULL);
    trace(&o->t, "o1 ");
    CHECK_EQ_INT(coro_resume(in), 1);
    coro_yield(co);
    trace(&o->t, "o2 ");
    CHECK_EQ_INT(coro_resume(in), 0);
    trace(&o->t, "o3");
}

TEST(coro_coroutine_can_resume_a_coroutine_of_another_pool)
{
    coro_pool_t *outer_pool = coro_pool_new(TEST_STACK, 1);
    struct outer o = {.inner_pool = coro_pool_new(TEST_STACK, 1)};
    CHECK(outer_pool != NULL && o.inner_pool != NULL);
    coro_t *co = coro_new(outer_pool, outer_body, &o);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 1);
    trace(&o.t, "m ");
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_STR(o.t.buf, "o1 i1 m o2 i2 o3");
    coro_pool_free(o.inner_pool);
    coro_pool_free(outer_pool);
}

/* Division whose rounding shows the mode the FPU (SSE on x86-64) is in. Valgrind always rounds
 * SSE arithmetic to nearest, so there it is left out. */
static double third(void)
{
    volatile double one = 1.0, three = 3.0;
    return one / three;
}

static int rounds_up(double nearest)
{
    return RUNNING_ON_VALGRIND || third() > nearest;
}

struct rounding {
    double nearest; /* 1/3 rounded to nearest */
    int ok;
};

static void rounding_body(coro_t *co, void *arg)
{
    struct rounding *r = arg;
    CHECK_EQ_INT(fegetround(), FE_TONEAREST);
    CHECK_EQ_INT(fesetround(FE_UPWARD), 0);
    coro_yield(co);
    r->ok = fegetround() == FE_UPWARD && rounds_up(r->nearest);
    fesetround(FE_TONEAREST);
}

TEST(coro_rounding_mode_set_in_a_coroutine_stays_in_that_coroutine)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    struct rounding r = {.nearest = third()};
    coro_t *co = coro_new(pool, rounding_body, &r);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 1);
    /* Both the x87 control word (which fegetround reads) and the SSE one were switched back. */
    CHECK_EQ_INT(fegetround(), FE_TONEAREST);
    CHECK(third() == r.nearest);
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK(r.ok);
    coro_pool_free(pool);
}

/* ---- registers ---- */

/*
 * Many integer and floating-point values live across every switch, on both sides: the compiler
 * keeps them in callee-saved registers, which a switch that forgot one would corrupt.
 */
#define REG_ROUNDS 100

static long mix(volatile long *seed, long *a, long *b, long *c, long *d, long *e, long *f,
                double *x, double *y, double *z, double *w)
{
    long s = *seed;
    *a += s, *b ^= *a, *c += *b * 3, *d -= *c, *e += *d ^ 7, *f += *e + 1;
    *x += (double)*a, *y *= 1.0001, *z -= *x * 0.5, *w += *y;
    return *a + *b + *c + *d + *e + *f + (long)(*x + *y + *z + *w);
}

enum reg_switch { REG_NONE, REG_YIELD, REG_RESUME };

static long reg_work(volatile long *seed, enum reg_switch how, coro_t *co)
{
    long a = *seed, b = a + 1, c = a + 2, d = a + 3, e = a + 4, f = a + 5, total = 0;
    double x = (double)a, y = 1.5, z = -2.5, w = 4.25;
    for (int i = 0; i < REG_ROUNDS; i++) {
        if (how == REG_YIELD)
            coro_yield(co);
        else if (how == REG_RESUME)
            CHECK_EQ_INT(coro_resume(co), 1);
        total += mix(seed, &a, &b, &c, &d, &e, &f, &x, &y, &z, &w);
    }
    return total;
}

static void reg_body(coro_t *co, void *arg)
{
    volatile long seed = 1000;
    *(long *)arg = reg_work(&seed, REG_YIELD, co);
}

TEST(coro_callee_saved_registers_survive_switches_on_both_sides)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    long in_coro = 0;
    coro_t *co = coro_new(pool, reg_body, &in_coro);
    CHECK(co != NULL);
    volatile long seed = 7, seed_coro = 1000;
    long in_loop = reg_work(&seed, REG_RESUME, co);
    CHECK_EQ_INT(coro_resume(co), 0);
    /* The same work without any switch gives the expected values. */
    CHECK_EQ_INT(in_loop, reg_work(&seed, REG_NONE, NULL));
    CHECK_EQ_INT(in_coro, reg_work(&seed_coro, REG_NONE, NULL));
    coro_pool_free(pool);
}

/* ---- longjmp on a coroutine stack ---- */

/* Leaves frames with 64-byte arrays (and, under ASan, poisoned redzones around them). */
static void __attribute__((noinline)) jump_from_deep(jmp_buf *jb, int depth)
{
    volatile char small[64];
    small[0] = (char)depth;
    if (depth < 0)
        return;
    if (depth == 0)
        longjmp(*jb, 1);
    jump_from_deep(jb, depth - 1);
    small[1] = small[0];
}

/* Writes every byte of a large array lying where the abandoned frames were. */
static unsigned __attribute__((noinline)) fill_stack(void)
{
    volatile unsigned char big[8192];
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(big); i++)
        sum += big[i];
    return sum;
}

static void longjmp_body(coro_t *co, void *arg)
{
    jmp_buf jb;
    if (setjmp(jb) == 0)
        jump_from_deep(&jb, 20);
    coro_yield(co);
    *(unsigned *)arg = fill_stack();
}

/* Under ASan this needs the switch annotations: the redzones of the frames longjmp skips are
 * cleared only if ASan knows which stack it is on. */
TEST(coro_longjmp_inside_a_coroutine_leaves_its_stack_usable)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    unsigned sum = 0;
    coro_t *co = coro_new(pool, longjmp_body, &sum);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 1);
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK_EQ_INT(sum, 8192 / 256 * (255 * 256 / 2));
    coro_pool_free(pool);
}

/* ---- stack depth and the guard page ---- */

struct deep {
    char *top;       /* frame address at the start of the body */
    size_t target;   /* how deep to go, in bytes */
    size_t reached;  /* how deep it went, in bytes */
    unsigned frames; /* and in frames */
    unsigned result; /* checksum computed through every frame */
};

/* Each frame holds a 512-byte array that must survive the calls below it. */
static unsigned recurse(struct deep *d, unsigned depth)
{
    volatile unsigned char buf[512];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(depth + i);
    unsigned sum = 0;
    size_t used = (size_t)(d->top - (char *)__builtin_frame_address(0));
    if (used < d->target)
        sum = recurse(d, depth + 1);
    else {
        d->reached = used;
        d->frames = depth + 1;
    }
    for (size_t i = 0; i < sizeof(buf); i++)
        sum += buf[i] ^ (unsigned char)(depth + i);
    return sum + 1;
}

static void deep_body(coro_t *co, void *arg)
{
    struct deep *d = arg;
    d->top = __builtin_frame_address(0);
    d->result = recurse(d, 0);
}

TEST(coro_recursion_using_three_quarters_of_the_stack_works)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    struct deep d = {.target = TEST_STACK / 4 * 3};
    coro_t *co = coro_new(pool, deep_body, &d);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 0);
    CHECK(d.reached >= d.target);
    CHECK(d.frames > 100);
    /* Every frame found its own array intact: each contributed exactly 1. */
    CHECK_EQ_INT(d.result, d.frames);
    coro_pool_free(pool);
}

static void write_below_body(coro_t *co, void *arg)
{
    /* Walk down from this frame one write per 256 bytes until the guard page stops us. */
    volatile char *p = __builtin_frame_address(0);
    size_t limit = *(size_t *)arg;
    for (size_t off = 0; off < limit; off += 256)
        p[-(ptrdiff_t)off] = 1;
}

static void guard_child(void *arg)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 0);
    /* mmap places new mappings below older ones: the second stack ends where the first one's
     * guard page starts, so that without a guard page the walk would land in mapped memory and
     * survive. */
    coro_t *co = coro_new(pool, write_below_body, arg);
    coro_t *below = coro_new(pool, yield_once_body, NULL);
    if (pool == NULL || below == NULL || co == NULL)
        _exit(2);
    coro_resume(co);
    _exit(0); /* the walk went past the stack and nothing stopped it */
}

TEST(coro_write_below_the_stack_hits_the_guard_page_and_kills_with_sigsegv)
{
    size_t limit = TEST_STACK + 64 * 1024;
    int status = run_in_child(guard_child, &limit);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_INT(WTERMSIG(status), SIGSEGV);
}

TEST(coro_stack_has_an_inaccessible_guard_page_right_below_it)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    CHECK(pool != NULL);
    void *frame = NULL;
    coro_t *co = coro_new(pool, yield_once_body, &frame);
    CHECK(co != NULL);
    CHECK_EQ_INT(coro_resume(co), 1);
    /* Find the mapping holding the frame, and the one ending where it starts. */
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char line[512];
    uintptr_t stack_lo = 0, guard_lo = 0, prev_lo = 0, prev_hi = 0;
    char prev_perms[8] = "";
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        char perms[8];
        CHECK(sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3);
        if ((uintptr_t)frame >= lo && (uintptr_t)frame < hi) {
            CHECK_EQ_STR(perms, "rw-p");
            stack_lo = lo;
            if (prev_hi == lo && strcmp(prev_perms, "---p") == 0)
                guard_lo = prev_lo;
        }
        prev_lo = lo;
        prev_hi = hi;
        memcpy(prev_perms, perms, sizeof(perms));
    }
    fclose(f);
    CHECK(stack_lo != 0);
    CHECK(guard_lo != 0);
    CHECK(stack_lo - guard_lo >= (uintptr_t)sysconf(_SC_PAGESIZE));
    /* The stack proper is the size asked for, less the record at its top (a few KiB at most,
     * with the ucontext fallback on aarch64). */
    CHECK((uintptr_t)frame - stack_lo > TEST_STACK - 16 * 1024);
    CHECK_EQ_INT(coro_resume(co), 0);
    coro_pool_free(pool);
}

/* ---- misuse caught by assert ---- */

#ifndef NDEBUG
static void finish_body(coro_t *co, void *arg)
{
}

static void resume_finished_child(void *arg)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1); /* keeps the record mapped */
    coro_t *co = coro_new(pool, finish_body, NULL);
    if (co == NULL || coro_resume(co) != 0)
        _exit(2);
    coro_resume(co);
    _exit(0);
}

TEST(coro_resume_of_a_finished_coroutine_is_caught_by_assert)
{
    int status = run_in_child(resume_finished_child, NULL);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_INT(WTERMSIG(status), SIGABRT);
}

static void yield_outside_child(void *arg)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    coro_t *co = coro_new(pool, yield_once_body, NULL);
    if (co == NULL || coro_resume(co) != 1)
        _exit(2);
    coro_yield(co); /* from the loop, not from inside co */
    _exit(0);
}

TEST(coro_yield_from_outside_the_coroutine_is_caught_by_assert)
{
    int status = run_in_child(yield_outside_child, NULL);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_INT(WTERMSIG(status), SIGABRT);
}

static void nested_resume_body(coro_t *co, void *arg)
{
    coro_resume(arg); /* same pool: forbidden */
}

static void resume_inside_child(void *arg)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    coro_t *victim = coro_new(pool, yield_once_body, NULL);
    coro_t *co = coro_new(pool, nested_resume_body, victim);
    if (co == NULL || victim == NULL)
        _exit(2);
    coro_resume(co);
    _exit(0);
}

TEST(coro_resume_from_inside_a_coroutine_of_the_same_pool_is_caught_by_assert)
{
    int status = run_in_child(resume_inside_child, NULL);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_INT(WTERMSIG(status), SIGABRT);
}

static void free_unfinished_child(void *arg)
{
    coro_pool_t *pool = coro_pool_new(TEST_STACK, 1);
    coro_t *co = coro_new(pool, yield_once_body, NULL);
    if (co == NULL || coro_resume(co) != 1)
        _exit(2);
    coro_pool_free(pool); /* a pool may be freed only once all its coroutines finished */
    _exit(0);
}

TEST(coro_pool_free_with_an_unfinished_coroutine_is_caught_by_assert)
{
    int status = run_in_child(free_unfinished_child, NULL);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_INT(WTERMSIG(status), SIGABRT);
}
#endif

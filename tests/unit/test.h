/*
 * A minimal unit-test harness. Each TEST() registers itself at load time; the runner (main.c)
 * runs every test in a child process with a timeout, as libuv's runner does, so a crash or a hang
 * fails that test alone. The run ends with the line "N passed, N failed".
 */
#ifndef TRACKD_TEST_H
#define TRACKD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);

/** Register a test; called by the TEST() macro from a constructor. */
void test_register(const char *name, test_fn fn, int timeout_s);

/** Define a test named `name` (a sentence in snake_case saying what it pins). */
#define TEST(name) TEST_T(name, 10)
/** Same, with a timeout in seconds other than the default 10. */
#define TEST_T(name, secs)                                                                         \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_reg_##name(void)                                 \
    {                                                                                              \
        test_register(#name, test_##name, secs);                                                   \
    }                                                                                              \
    static void test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,  \
                    a_, #b, b_);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,    \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/** Absolute path of the running test binary, for tests that re-run it (argv[0], not
 * /proc/self/exe, which names valgrind's tool when run under valgrind). */
const char *test_self_path(void);

/** A fresh empty directory under $TMPDIR for this test; removed by the runner afterwards. */
const char *test_tmpdir(void);

#endif

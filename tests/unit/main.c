/*
 * Unit-test runner: forks one child per registered test, with a timeout, and reports TAP-style
 * lines followed by "N passed, N failed" alone on the last line. `unit-tests PATTERN` runs only
 * the tests whose name contains PATTERN.
 */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_MAX 1024

static struct {
    const char *name;
    test_fn fn;
    int timeout_s;
} tests[TEST_MAX];
static int ntests;
static char tmpdir[256];
static char self_path[4096];

void test_register(const char *name, test_fn fn, int timeout_s)
{
    if (ntests == TEST_MAX) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].timeout_s = timeout_s;
    ntests++;
}

const char *test_self_path(void)
{
    return self_path;
}

const char *test_tmpdir(void)
{
    return tmpdir;
}

static int cmp_tests(const void *a, const void *b)
{
    const char *na = *(const char *const *)a, *nb = *(const char *const *)b;
    return strcmp(na, nb);
}

static int run_one(int i)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/trackd-unit-XXXXXX", base);
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 0;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm((unsigned)tests[i].timeout_s);
        tests[i].fn();
        fflush(NULL);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "  could not remove %s\n", tmpdir);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 1;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    return 0;
}

int main(int argc, char **argv)
{
    const char *pattern = argc > 1 ? argv[1] : NULL;

    if (realpath(argv[0], self_path) == NULL)
        snprintf(self_path, sizeof(self_path), "/proc/self/exe");
    int passed = 0, failed = 0, n = 0;

    /* Sort by name so the order is stable whatever the link order. */
    qsort(tests, (size_t)ntests, sizeof(tests[0]), cmp_tests);
    for (int i = 0; i < ntests; i++) {
        if (pattern && strstr(tests[i].name, pattern) == NULL)
            continue;
        n++;
        if (run_one(i)) {
            passed++;
            printf("ok %d - %s\n", n, tests[i].name);
        } else {
            failed++;
            printf("not ok %d - %s\n", n, tests[i].name);
        }
        fflush(stdout);
    }
    /* A run nested in a test (TRACKD_UNIT_NESTED, see test_log.c's fault shim) must not print a
     * second summary line for CI to read. */
    printf("1..%d\n%s%d passed, %d failed\n", n, getenv("TRACKD_UNIT_NESTED") ? "nested run: " : "",
           passed, failed);
    return failed ? 1 : 0;
}

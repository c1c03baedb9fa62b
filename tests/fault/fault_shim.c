/*
 * LD_PRELOAD fault injection for the log writer's tests (tests/unit/test_log.c runs its fault
 * tests in a child under this library). Built by `make build/fault_shim.so`.
 *
 *   TRACKD_FAULT_FSYNC_FILE=PATH   while PATH exists, fsync and fdatasync fail with EIO
 *   TRACKD_FAULT_ENOSPC_FILE=PATH  while PATH exists, write, writev, pwrite and pwritev to a
 *                                  regular file fail with ENOSPC (pipes and terminals still work,
 *                                  so the test's own messages get out)
 *   TRACKD_FAULT_SLOW_FILE=PATH    while PATH exists, pwritev to a regular file first sleeps
 *                                  TRACKD_FAULT_SLOW_MS milliseconds (default 20): a write
 *                                  blocked by dirty-page throttling, as the caller sees it
 *   TRACKD_FAULT_TRACE=PATH        append one line per call to PATH: "OP FILE OFFSET LENGTH"
 *                                  (OFFSET -1 for write/writev, 0 0 for fsync and fdatasync,
 *                                  the range for sync_file_range), FILE being
 *                                  what /proc/self/fd says the descriptor is
 *
 * The environment is read at each call, so a test may set or clear the variables as it goes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* Lets a test check that the shim really is loaded (dlsym(RTLD_DEFAULT, ...)). */
int trackd_fault_shim_loaded = 1;

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*sync_fn)(int);
typedef int (*range_fn)(int, off_t, off_t, unsigned int);

static void *next_sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == NULL)
        abort();
    return p;
}

static int file_exists(const char *env)
{
    const char *p = getenv(env);
    return p != NULL && *p && access(p, F_OK) == 0;
}

static int is_regular(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static void trace(const char *op, int fd, long long off, long long len)
{
    const char *out = getenv("TRACKD_FAULT_TRACE");
    if (out == NULL || *out == 0)
        return;
    char link[64], path[PATH_MAX], line[PATH_MAX + 128];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n < 0)
        n = 0;
    path[n] = 0;
    int len_line = snprintf(line, sizeof(line), "%s %s %lld %lld\n", op, n ? path : "?", off, len);
    int tfd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (tfd < 0)
        return;
    /* One write per line through the real write, so this never traces itself. */
    static write_fn real;
    if (real == NULL)
        real = (write_fn)next_sym("write");
    if (real(tfd, line, (size_t)len_line) < 0)
        len_line = 0;
    close(tfd);
}

static long long iov_len(const struct iovec *iov, int cnt)
{
    long long n = 0;
    for (int i = 0; i < cnt; i++)
        n += (long long)iov[i].iov_len;
    return n;
}

static int enospc(int fd)
{
    if (file_exists("TRACKD_FAULT_ENOSPC_FILE") && is_regular(fd)) {
        errno = ENOSPC;
        return 1;
    }
    return 0;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    static write_fn real;
    if (real == NULL)
        real = (write_fn)next_sym("write");
    if (enospc(fd))
        return -1;
    if (is_regular(fd))
        trace("write", fd, -1, (long long)len);
    return real(fd, buf, len);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    static writev_fn real;
    if (real == NULL)
        real = (writev_fn)next_sym("writev");
    if (enospc(fd))
        return -1;
    trace("writev", fd, -1, iov_len(iov, cnt));
    return real(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    static pwrite_fn real;
    if (real == NULL)
        real = (pwrite_fn)next_sym("pwrite");
    if (enospc(fd))
        return -1;
    trace("pwrite", fd, (long long)off, (long long)len);
    return real(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    return pwrite(fd, buf, len, off);
}

/* TRACKD_FAULT_SLOW_FILE: sleep before a write to a regular file. */
static void maybe_slow(int fd)
{
    if (!file_exists("TRACKD_FAULT_SLOW_FILE") || !is_regular(fd))
        return;
    const char *ms = getenv("TRACKD_FAULT_SLOW_MS");
    long v = ms && *ms ? strtol(ms, NULL, 10) : 20;
    usleep((useconds_t)(v > 0 ? v : 0) * 1000);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    static pwritev_fn real;
    if (real == NULL)
        real = (pwritev_fn)next_sym("pwritev");
    if (enospc(fd))
        return -1;
    maybe_slow(fd);
    trace("pwritev", fd, (long long)off, iov_len(iov, cnt));
    return real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return pwritev(fd, iov, cnt, off);
}

static int fail_sync(void)
{
    if (file_exists("TRACKD_FAULT_FSYNC_FILE")) {
        errno = EIO;
        return 1;
    }
    return 0;
}

int fsync(int fd)
{
    static sync_fn real;
    if (real == NULL)
        real = (sync_fn)next_sym("fsync");
    trace("fsync", fd, 0, 0);
    if (fail_sync())
        return -1;
    return real(fd);
}

int fdatasync(int fd)
{
    static sync_fn real;
    if (real == NULL)
        real = (sync_fn)next_sym("fdatasync");
    trace("fdatasync", fd, 0, 0);
    if (fail_sync())
        return -1;
    return real(fd);
}

int sync_file_range(int fd, off_t off, off_t len, unsigned int flags)
{
    static range_fn real;
    if (real == NULL)
        real = (range_fn)next_sym("sync_file_range");
    trace("sync_file_range", fd, (long long)off, (long long)len);
    return real(fd, off, len, flags);
}

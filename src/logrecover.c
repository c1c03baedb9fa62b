/*
 * Opening a log (log.h, docs/log-format.md): taking a slot directory, and start-up recovery.
 * Every closed segment is scanned whole and must end cleanly, or the log refuses to open; the
 * newest one has a torn or damaged tail (what a crash interrupted) cut off, and any zero padding
 * after its data (fsync mode's preallocation) too, and is appended to.
 * Runs on the loop thread inside log_open, before the writer thread exists.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trackd/msg.h"
#include "trackd/segment.h"

#include "log_internal.h"

#define LOG_COPY_CHUNK (1u << 20) /* save_tail's read size */

static int fsync_dir_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Copy [off, end of file) of `fd` to a new file `name` in the slot, durably. */
static int save_tail(log_t *log, int fd, uint64_t off, uint64_t size, const char *name)
{
    uint8_t *buf = malloc(LOG_COPY_CHUNK);
    if (buf == NULL)
        return -ENOMEM;
    int r = 0;
    int out = openat(log->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, LOG_FILE_MODE);
    if (out < 0) {
        r = -errno;
        goto done;
    }
    while (off < size && r == 0) {
        size_t want = size - off < LOG_COPY_CHUNK ? (size_t)(size - off) : LOG_COPY_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            break;
        }
        ssize_t m = write(out, buf, (size_t)n);
        if (m != n)
            r = m < 0 ? -errno : -ENOSPC;
        off += (uint64_t)n;
    }
    if (r == 0 && (fsync(out) < 0 || fsync(log->dirfd) < 0))
        r = -errno;
    close(out);
done:
    free(buf);
    return r;
}

/* Lock slot `slot`; 0, -EWOULDBLOCK if another log holds it, or another -errno. */
static int slot_try(log_t *log, int slot)
{
    char dir[PATH_MAX];
    int n = snprintf(dir, sizeof(dir), "%s/w%03d", log->data_dir, slot);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return -ENAMETOOLONG;
    int created = mkdir(dir, LOG_DIR_MODE) == 0;
    if (!created && errno != EEXIST)
        return -errno;
    if (created) {
        int r = fsync_dir_path(log->data_dir);
        if (r)
            return r;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int lfd = openat(dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, LOG_FILE_MODE);
    if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) < 0) {
        int r = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
        if (lfd >= 0)
            close(lfd);
        close(dfd);
        return r;
    }
    memcpy(log->dir, dir, sizeof(dir));
    log->slot = slot;
    log->dirfd = dfd;
    log->lockfd = lfd;
    return 0;
}

/* The preferred slot if free, else the lowest free one: two logs never share a directory. */
/* Create the data directory if needed, durably (its entry in the parent fsynced too). */
static int make_data_dir(const char *path)
{
    if (mkdir(path, LOG_DIR_MODE) < 0)
        return errno == EEXIST ? 0 : -errno;
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    return fsync_dir_path(parent);
}

int log__take_slot(log_t *log)
{
    int r = make_data_dir(log->data_dir);
    if (r) {
        msg_error("log: cannot create %s: %s", log->data_dir, strerror(-r));
        return r;
    }
    r = slot_try(log, log->cfg.slot);
    if (r != -EWOULDBLOCK)
        return r;
    for (int s = 1; s <= LOG_SLOT_MAX; s++) {
        if (s == log->cfg.slot)
            continue;
        r = slot_try(log, s);
        if (r == 0)
            msg_warn("log: slot %d is in use by another process; using slot %d", log->cfg.slot, s);
        if (r != -EWOULDBLOCK)
            return r;
    }
    return -EBUSY;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sequence numbers of the slot's segments, sorted. */
static int list_segments(log_t *log, uint64_t **out, size_t *nout)
{
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(log->dir);
    if (d == NULL)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (segment_parse_name(de->d_name, &seq) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[n++] = seq;
    }
    closedir(d);
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_u64);
    *out = v;
    *nout = n;
    return 0;
}

/*
 * A closed segment was fsynced whole before the next one was created, so anything but a clean
 * end is damage: refuse to start rather than skip acknowledged records.
 */
static int check_closed(log_t *log, uint64_t seq)
{
    char name[SEGMENT_NAME_SIZE];
    segment_scan_t sc;
    segment_name(name, sizeof(name), seq);
    int fd = openat(log->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = segment_scan_fd(fd, NULL, NULL, &sc);
    close(fd);
    if (r < 0) {
        msg_error("log: cannot read %s/%s: %s", log->dir, name, strerror(-r));
        return r;
    }
    if (!sc.header_ok || sc.tail != SEGMENT_TAIL_CLEAN) {
        msg_error("log: closed segment %s/%s is %s at offset %" PRIu64 " (%" PRIu64
                  " valid records before it); refusing to start: inspect it with "
                  "`trackctl verify` and move it aside with `trackctl repair`",
                  log->dir, name, segment_tail_name(sc.tail), sc.bad_offset, sc.records);
        return -EBADMSG;
    }
    if (sc.header.seq != seq || sc.header.slot != (uint32_t)log->slot)
        msg_warn("log: %s/%s says segment %" PRIu64 " of slot %" PRIu32 "", log->dir, name,
                 sc.header.seq, sc.header.slot);
    /* Its data size: a zero tail (which only a failed cut at a roll leaves) is not data. */
    return log__segs_add(&log->w, seq, sc.end, sc.header.created_ms);
}

/*
 * Recover the last segment: cut a torn or damaged tail (an append the crash interrupted) and
 * reopen it for appending. If whole valid records follow the damage, this is not a torn append:
 * those bytes are first copied to <name>.damaged-<offset> so nothing readable is destroyed.
 */
static int recover_last(log_t *log, uint64_t seq)
{
    log_writer_t *w = &log->w;
    char name[SEGMENT_NAME_SIZE], side[SEGMENT_NAME_SIZE + 32];
    segment_scan_t sc;
    segment_name(name, sizeof(name), seq);
    int fd = openat(log->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = segment_scan_fd(fd, NULL, NULL, &sc);
    if (r < 0)
        goto fail;
    if (!sc.header_ok) {
        if (sc.tail != SEGMENT_TAIL_TORN) {
            msg_error("log: segment %s/%s has a damaged header; refusing to start (move it aside "
                      "with `trackctl repair`)",
                      log->dir, name);
            r = -EBADMSG;
            goto fail;
        }
        /* Created, but its header never became durable: no record in it was acknowledged. */
        uint8_t hdr[SEGMENT_HEADER_SIZE];
        segment_header_t h = {SEGMENT_VERSION, (uint32_t)log->slot, seq, log__real_ms()};
        segment_header_encode(hdr, &h);
        if (ftruncate(fd, 0) < 0 || pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
            fsync(fd) < 0) {
            r = errno ? -errno : -EIO;
            goto fail;
        }
        msg_warn("log: recovered %s/%s: rewrote its torn header (%" PRIu64 " bytes)", log->dir,
                 name, sc.file_size);
        sc.header = h;
        sc.end = sizeof(hdr);
    } else if (sc.tail == SEGMENT_TAIL_CLEAN && sc.end < sc.file_size) {
        /*
         * Zero-filled space after the data (fsync mode preallocates): the normal end, nothing
         * dropped. Cut off so the segment is at its data end; the writer zero-fills again.
         */
        if (ftruncate(fd, (off_t)sc.end) < 0 || fsync(fd) < 0) {
            r = -errno;
            goto fail;
        }
    } else if (sc.tail != SEGMENT_TAIL_CLEAN) {
        /* Zero padding after the bad bytes is not counted: it never held anything. */
        uint64_t dropped = sc.nonzero_end - sc.end;
        if (sc.after_bad) {
            snprintf(side, sizeof(side), "%s.damaged-%" PRIu64, name, sc.end);
            r = save_tail(log, fd, sc.end, sc.nonzero_end, side);
            if (r) {
                msg_error("log: cannot save the damaged tail of %s/%s: %s", log->dir, name,
                          strerror(-r));
                goto fail;
            }
            msg_error("log: %s/%s is damaged at offset %" PRIu64 " with %" PRIu64
                      " whole records after the damage; saved them in %s",
                      log->dir, name, sc.end, sc.after_bad, side);
        }
        if (ftruncate(fd, (off_t)sc.end) < 0 || fsync(fd) < 0) {
            r = -errno;
            goto fail;
        }
        msg_warn("log: recovered %s/%s: dropped %" PRIu64 " bytes at offset %" PRIu64
                 " (a %s record, then %" PRIu64 " whole records); %" PRIu64 " records kept",
                 log->dir, name, dropped, sc.end, segment_tail_name(sc.tail), sc.after_bad,
                 sc.records);
        if (sc.file_size > sc.nonzero_end)
            msg_info("log: %s/%s: also cut %" PRIu64 " bytes of zero padding", log->dir, name,
                     sc.file_size - sc.nonzero_end);
    }
    r = log__segs_add(w, seq, sc.end, sc.header.created_ms);
    if (r)
        goto fail;
    w->fd = fd;
    w->seq = seq;
    w->size = w->synced = w->zero_end = w->kicked = sc.end;
    w->prealloc_off = 0;
    w->created_ms = sc.header.created_ms;
    return 0;
fail:
    if (r != -EBADMSG)
        msg_error("log: cannot recover %s/%s: %s", log->dir, name, strerror(-r));
    close(fd);
    return r;
}

/*
 * Every closed segment is scanned in full at start (see docs/log-format.md for why); the last
 * one is recovered and appended to, or a first segment is created in an empty slot.
 */
int log__recover(log_t *log)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    int r = list_segments(log, &seqs, &n);
    if (r)
        return r;
    for (size_t i = 0; i + 1 < n && r == 0; i++)
        r = check_closed(log, seqs[i]);
    if (r == 0 && n > 0)
        r = recover_last(log, seqs[n - 1]);
    if (r == 0 && n == 0)
        r = log__seg_create(log);
    free(seqs);
    return r;
}

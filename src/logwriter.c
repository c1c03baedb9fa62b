/*
 * The event log's writer (log.h, docs/log-format.md): the segment files and the writer thread,
 * log.c's other half. The writer takes every buffer queued since its last batch, writes them with
 * one pwritev per IOV_MAX ranges at the end of the current segment, and in fsync mode makes them
 * durable with one fdatasync (group commit: what arrives during an fsync goes into the next one).
 * Its state (log_t.w) is its own, or the loop thread's while it holds it for a write of its own
 * (log__write_on_loop, write mode).
 *
 * In fsync mode each batch ends with an fdatasync, and an fdatasync after an append must also
 * make the new file size durable (an inode write or a journal commit), which costs about as much
 * as the data. So the writer keeps zero-filled space ahead of the data end, written and
 * fdatasynced once per chunk, between batches, and pwrites records over the zeros: their
 * fdatasync then only writes data blocks. A record header of zeros marks the end of data
 * (docs/log-format.md); a segment is cut back to its data end when it is closed, so closed
 * segments are never padded.
 *
 * Failures follow what PostgreSQL and Redis learned about fsync: after a failed fdatasync the
 * kernel may have dropped the dirty pages, so the segment is abandoned (never written or synced
 * again through that descriptor), its unacknowledged tail is cut off and re-verified through a
 * fresh descriptor, and a new segment is started; if that keeps failing, the process exits and
 * start-up recovery takes over. A failed or short write is cut off with ftruncate and retried
 * with a probe write once a second, so a full disk heals by itself.
 */
#include "trackd/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "trackd/msg.h"
#include "trackd/segment.h"

#include "log_internal.h"

#define LOG_RETRY_MS 1000        /* between retries of a failed writer */
#define LOG_RECOVER_ATTEMPTS 5   /* after an fsync failure; then the process exits */
#define LOG_TICK_MS 1000         /* the writer wakes at least this often (age roll, retention) */
#define LOG_PROBE_BYTES 4096     /* written (then cut off) to learn that space is back */
#define LOG_IOV_MAX 1024         /* POSIX guarantees IOV_MAX >= 16; Linux has 1024 */
#define LOG_WRITE_MAX (1u << 20) /* a pwritev takes no more buffers once it has this much */
/*
 * fsync mode keeps zero-filled, durable space ahead of the data: when less than the low-water
 * mark is left, it is extended by a chunk (never past segment_max_bytes), written as zeros from a
 * static buffer of LOG_ZERO_BUF bytes, one iovec each.
 */
#define LOG_ZERO_LOW_WATER (512u << 10)
#define LOG_ZERO_CHUNK (1u << 20)
#define LOG_ZERO_BUF (64u << 10)

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t log__real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- Segment files (writer thread, or log_open before it starts) ---- */

int log__segs_add(log_writer_t *w, uint64_t seq, uint64_t size, uint64_t created_ms)
{
    if (w->nsegs == w->segs_cap) {
        size_t cap = w->segs_cap ? w->segs_cap * 2 : 16;
        log_seg_t *n = realloc(w->segs, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        w->segs = n;
        w->segs_cap = cap;
    }
    w->segs[w->nsegs++] = (log_seg_t){seq, size, created_ms};
    w->segs_bytes += size;
    return 0;
}

static void segs_set_size(log_writer_t *w, uint64_t seq, uint64_t size)
{
    for (size_t i = w->nsegs; i-- > 0;)
        if (w->segs[i].seq == seq) {
            w->segs_bytes += size - w->segs[i].size;
            w->segs[i].size = size;
            return;
        }
}

/*
 * Create segment w->seq + 1 and make it the current one. Its header is written and fsynced, and
 * the directory fsynced, before this returns, so no record is ever acknowledged in a segment
 * that could vanish or lose its header in a crash.
 */
int log__seg_create(log_t *log)
{
    log_writer_t *w = &log->w;
    char name[SEGMENT_NAME_SIZE];
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    uint64_t seq = w->seq + 1;
    segment_header_t h = {SEGMENT_VERSION, (uint32_t)log->slot, seq, log__real_ms()};
    int r = 0;

    segment_name(name, sizeof(name), seq);
    int fd = openat(log->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, LOG_FILE_MODE);
    if (fd < 0) {
        r = -errno;
        msg_error("log: cannot create %s/%s: %s", log->dir, name, strerror(-r));
        return r;
    }
    segment_header_encode(hdr, &h);
    ssize_t n = pwrite(fd, hdr, sizeof(hdr), 0);
    if (n != (ssize_t)sizeof(hdr))
        r = n < 0 ? -errno : -ENOSPC;
    else if (fsync(fd) < 0 || fsync(log->dirfd) < 0)
        r = -errno;
    if (r == 0)
        r = log__segs_add(w, seq, sizeof(hdr), h.created_ms);
    if (r < 0) {
        msg_error("log: cannot start segment %s/%s: %s", log->dir, name, strerror(-r));
        close(fd);
        unlinkat(log->dirfd, name, 0);
        return r;
    }
    w->fd = fd;
    w->seq = seq;
    w->size = w->synced = w->zero_end = w->kicked = sizeof(hdr);
    w->dropped = 0;
    w->prealloc_off = 0;
    w->created_ms = h.created_ms;
    w->st.segments = w->nsegs;
    return 0;
}

static void enter_fail(log_t *log, int kind, int err)
{
    log_writer_t *w = &log->w;
    w->fail_kind = kind;
    w->fail_err = err;
    w->retry_at = mono_ms() + LOG_RETRY_MS;
}

/*
 * fdatasync the current segment. On failure the segment is abandoned: the descriptor is closed
 * without another fsync (a second fsync may report success for pages the kernel already
 * dropped), and recovery later cuts the segment back to what was acknowledged.
 */
static int seg_sync_as(log_t *log, int records)
{
    log_writer_t *w = &log->w;
    uint64_t t0 = mono_ns();
    int r = fdatasync(w->fd) < 0 ? -errno : 0;
    uint64_t dt = mono_ns() - t0;
    if (records) {
        w->st.fsyncs++;
        w->st.fsync_ns_total += dt;
        if (dt > w->st.fsync_ns_max)
            w->st.fsync_ns_max = dt;
    }
    if (r == 0) {
        w->synced = w->size;
        return 0;
    }
    char name[SEGMENT_NAME_SIZE];
    segment_name(name, sizeof(name), w->seq);
    msg_error("log: fdatasync of %s/%s failed: %s; abandoning the segment", log->dir, name,
              strerror(-r));
    w->st.fsync_errors++;
    w->broken_seq = w->seq;
    /* In fsync mode nothing past `synced` was acknowledged; in the others all written was. */
    w->broken_end = log->cfg.durability == CONFIG_DURABILITY_FSYNC ? w->synced : w->size;
    w->broken_verified = 0;
    w->attempts = 0;
    close(w->fd);
    w->fd = -1;
    enter_fail(log, FAIL_FSYNC, -EIO);
    return -EIO;
}

/* fdatasync covering records (counted in the stats). */
static int seg_sync(log_t *log)
{
    return seg_sync_as(log, 1);
}

/*
 * fsync mode, between batches: if less than LOG_ZERO_LOW_WATER bytes of zeros are left ahead of
 * the data, write LOG_ZERO_CHUNK more (up to segment_max_bytes) and fdatasync them, so that the
 * fdatasyncs of the records written over them only write data (the size does not change). The
 * zeros get their own fdatasync here, off the acknowledgement path: left dirty, they and the
 * size change would be written by the next record fdatasync (bench/log.md). If the zeros cannot
 * be written (ENOSPC, a file size limit), the segment just goes on with plain appends, where the
 * disk-full handling applies. A failed fdatasync abandons the segment like any other.
 */
static void seg_prealloc(log_t *log)
{
    static const uint8_t zeros[LOG_ZERO_BUF];
    struct iovec iov[LOG_ZERO_CHUNK / LOG_ZERO_BUF];
    log_writer_t *w = &log->w;
    uint64_t max = log->cfg.segment_max_bytes;

    if (log->cfg.durability != CONFIG_DURABILITY_FSYNC || w->fd < 0 || w->fail_kind ||
        w->prealloc_off || w->size > w->synced)
        return;
    if (w->zero_end < w->size)
        w->zero_end = w->size;
    if (w->zero_end >= max || w->zero_end - w->size >= LOG_ZERO_LOW_WATER)
        return;
    uint64_t from = w->zero_end;
    uint64_t to = max - from < LOG_ZERO_CHUNK ? max : from + LOG_ZERO_CHUNK;
    size_t cnt = 0;
    for (uint64_t off = from; off < to; off += LOG_ZERO_BUF) {
        iov[cnt].iov_base = (void *)zeros;
        iov[cnt++].iov_len = to - off < LOG_ZERO_BUF ? (size_t)(to - off) : LOG_ZERO_BUF;
    }
    ssize_t n = pwritev(w->fd, iov, (int)cnt, (off_t)from);
    if (n < 0 || (uint64_t)n != to - from) {
        int err = n < 0 ? -errno : -ENOSPC;
        /* Zeros are valid padding: if they cannot be cut off again, they stay counted. */
        if (n > 0 && ftruncate(w->fd, (off_t)from) < 0)
            w->zero_end = from + (uint64_t)n;
        w->prealloc_off = 1;
        msg_warn("log: cannot zero-fill segment %" PRIu64 " in %s ahead of its data: %s; "
                 "appending without preallocation",
                 w->seq, log->dir, strerror(-err));
        return;
    }
    w->zero_end = to;
    seg_sync_as(log, 0);
}

/*
 * Cut the zero-filled space off the current segment (its records are durable already), so that a
 * closed segment ends at its data end. If that fails the zeros stay: they are valid padding.
 */
static void seg_trim(log_t *log)
{
    log_writer_t *w = &log->w;
    if (w->zero_end <= w->size)
        return;
    if (ftruncate(w->fd, (off_t)w->size) < 0 || fsync(w->fd) < 0)
        msg_warn("log: cannot cut the zero-filled tail off segment %" PRIu64 " in %s: %s "
                 "(readers take its zeros as the end of data)",
                 w->seq, log->dir, strerror(errno));
    w->zero_end = w->size;
}

/*
 * Drop the current segment's pages before `on_disk` less cache_keep_bytes from the page cache,
 * once that is a step (writebehind_bytes, or LOG_WRITEBEHIND) more than last time. `on_disk` is
 * where the data is durable (fsync mode) or where the writeback started by the previous
 * write-behind step ended (the others); pages still dirty or under writeback are left alone by
 * the kernel, so each call also covers the previous `keep` bytes again. A log written at tens of
 * MB/s would otherwise fill memory with pages that only a reader might want, and evict what the
 * rest of the machine uses: every new page has to be reclaimed from somewhere.
 */
static void seg_dropbehind(log_t *log, uint64_t on_disk)
{
    log_writer_t *w = &log->w;
    uint64_t keep = log->cfg.cache_keep_bytes;
    uint64_t step = log->cfg.writebehind_bytes ? log->cfg.writebehind_bytes : LOG_WRITEBEHIND;

    if (keep == 0 || on_disk < keep || on_disk - keep < w->dropped + step)
        return;
    uint64_t from = w->dropped > keep ? w->dropped - keep : 0;
    (void)posix_fadvise(w->fd, (off_t)from, (off_t)(on_disk - keep - from), POSIX_FADV_DONTNEED);
    w->dropped = on_disk - keep;
}

/* A closed (durable) segment: all of it leaves the page cache, when drop-behind is on. */
static void seg_dropall(log_t *log)
{
    if (log->cfg.cache_keep_bytes)
        (void)posix_fadvise(log->w.fd, 0, 0, POSIX_FADV_DONTNEED);
}

/*
 * write/none modes: once writebehind_bytes more are written, start their writeback without
 * waiting for it. Advisory: a failure here shows up at the fdatasync that closes the segment.
 */
static void seg_writebehind(log_t *log)
{
    log_writer_t *w = &log->w;
    uint64_t every = log->cfg.writebehind_bytes;

    if (every == 0 || w->size - w->kicked < every)
        return;
    uint64_t before = w->kicked; /* its writeback started a step ago: on disk by now, mostly */
    (void)sync_file_range(w->fd, (off_t)w->kicked, (off_t)(w->size - w->kicked),
                          SYNC_FILE_RANGE_WRITE);
    w->kicked = w->size;
    seg_dropbehind(log, before);
}

static void writer_retention(log_t *log);

/* Close the current segment (durable in every mode), start the next, apply retention. */
static int seg_roll(log_t *log)
{
    log_writer_t *w = &log->w;
    if (w->fd >= 0) {
        if (w->size > w->synced) {
            int r = seg_sync(log);
            if (r)
                return r;
        }
        seg_trim(log);
        seg_dropall(log);
        close(w->fd);
        w->fd = -1;
        segs_set_size(w, w->seq, w->size);
    }
    int r = log__seg_create(log);
    if (r)
        enter_fail(log, FAIL_NOSEG, r);
    else
        writer_retention(log);
    return r;
}

/* A write failed: cut off whatever part of it landed, so no partial record stays on disk. */
static void write_failed(log_t *log, int err)
{
    log_writer_t *w = &log->w;
    w->st.write_errors++;
    msg_error("log: write to segment %" PRIu64 " in %s failed: %s", w->seq, log->dir,
              strerror(-err));
    w->need_truncate = ftruncate(w->fd, (off_t)w->size) < 0;
    w->zero_end = w->size; /* the zeros ahead are cut off too (retried with the truncation) */
    if (w->kicked > w->size)
        w->kicked = w->size;
    enter_fail(log, FAIL_WRITE, err);
}

/* Fill in the record crcs of data[0..len) (whole records; the loop thread left them zero). */
static size_t records_encode(uint8_t *p, size_t len)
{
    size_t n = 0;
    for (uint8_t *end = p + len; p < end; n++) {
        uint32_t rlen = (uint32_t)log__get_le(p, 4);
        segment_record_encode(p, p + SEGMENT_RECORD_HEADER_SIZE, rlen, log__get_le(p + 8, 8),
                              p[16]);
        p += SEGMENT_RECORD_HEADER_SIZE + rlen;
    }
    return n;
}

static int seg_too_old(const log_t *log)
{
    const log_writer_t *w = &log->w;
    return log->cfg.segment_max_age_ms && w->size > SEGMENT_HEADER_SIZE &&
           log__real_ms() - w->created_ms >= log->cfg.segment_max_age_ms;
}

static void writer_publish(log_t *log, log_buf_t *batch, int exited);

/*
 * Set each buffer's outcome: appends in the first `ok` bytes of the batch are stored, the rest
 * failed with `err`. `ok` always falls on an append boundary.
 */
static void batch_outcome(log_buf_t *batch, uint64_t ok, int err)
{
    for (log_buf_t *x = batch; x; x = x->next) {
        x->ok = ok >= x->len ? x->len : (size_t)ok;
        x->status = x->ok == x->len ? 0 : err;
        ok -= x->ok;
    }
}

/*
 * Write one batch (buffers in append order) and set each buffer's outcome. Appends are written
 * in order, so the written ones and the durable ones are both prefixes of the batch, counted in
 * bytes: an append is acknowledged with 0 only if it is inside the prefix the mode promises
 * (durable for fsync, written otherwise). An append never straddles two segments. Without fsync,
 * buffers written whole go back to the loop after each pwritev, so the loop can free and refill
 * the queue while the rest is written. Returns the buffers still to be published.
 */
static log_buf_t *write_batch(log_t *log, log_buf_t *batch)
{
    log_writer_t *w = &log->w;
    struct iovec iov[LOG_IOV_MAX];
    int fsync_mode = log->cfg.durability == CONFIG_DURABILITY_FSYNC;
    uint64_t max = log->cfg.segment_max_bytes;
    uint64_t written = 0, synced = 0; /* bytes of the batch from `batch` on */
    log_buf_t *b = batch;             /* next append to write: number ai of buffer b */
    size_t ai = 0;
    int err = 0;

    while (b) {
        size_t from = ai ? b->ends[ai - 1] : 0;
        if (w->fd < 0) {
            err = log__seg_create(log);
            if (err) {
                enter_fail(log, FAIL_NOSEG, err);
                break;
            }
        }
        if (w->size > SEGMENT_HEADER_SIZE &&
            (w->size + (b->ends[ai] - from) > max || seg_too_old(log))) {
            /* Sync first, so what is durable counts as such even if the new segment fails. */
            if (w->size > w->synced && (err = seg_sync(log)) != 0)
                break;
            synced = written;
            err = seg_roll(log);
            if (err)
                break;
        }
        /*
         * One group: whole appends that fit in the segment (at least one) and in one pwritev, of
         * bounded size, so that without fsync the first buffers go back while the rest is written.
         */
        size_t cnt = 0, recs = 0;
        uint64_t total = 0;
        while (b && cnt < LOG_IOV_MAX && total < LOG_WRITE_MAX) {
            size_t to = from;
            while (ai < b->nends &&
                   (total + (to - from) == 0 || w->size + total + (b->ends[ai] - from) <= max))
                to = b->ends[ai++];
            if (to > from) {
                recs += records_encode(b->data + from, to - from);
                iov[cnt].iov_base = b->data + from;
                iov[cnt++].iov_len = to - from;
                total += to - from;
            }
            if (ai < b->nends)
                break; /* the segment is full */
            b = b->next;
            ai = 0;
            from = 0;
        }
        ssize_t n = pwritev(w->fd, iov, (int)cnt, (off_t)w->size);
        if (n < 0 || (uint64_t)n != total) {
            /* A short write to a regular file means the disk or a file size limit is full. */
            err = n < 0 ? -errno : -ENOSPC;
            write_failed(log, err);
            break;
        }
        w->size += total;
        if (w->zero_end < w->size)
            w->zero_end = w->size; /* appended past the zeros */
        if (!fsync_mode)
            seg_writebehind(log);
        written += total;
        w->st.bytes_appended += total;
        w->st.records_appended += recs;
        if (b && b != batch && !fsync_mode) {
            /* Hand back the buffers written whole; `b` and the rest stay. */
            log_buf_t *x = batch;
            while (x->next != b)
                x = x->next;
            x->next = NULL;
            for (x = batch; x; x = x->next)
                written -= x->len;
            batch_outcome(batch, UINT64_MAX, 0);
            writer_publish(log, batch, 0);
            batch = b;
        }
    }
    if (err == 0 && fsync_mode && w->size > w->synced && (err = seg_sync(log)) == 0)
        seg_dropbehind(log, w->synced);
    if (w->fd >= 0)
        segs_set_size(w, w->seq, w->size);
    batch_outcome(batch, err == 0 ? UINT64_MAX : fsync_mode ? synced : written, err);
    w->st.batches++;
    return batch;
}

/*
 * After an fsync failure: through a fresh descriptor, cut the abandoned segment back to what was
 * acknowledged, make that durable and read it back whole. Only then may a new segment start.
 */
static int verify_broken(log_t *log)
{
    log_writer_t *w = &log->w;
    char name[SEGMENT_NAME_SIZE];
    segment_scan_t sc;
    segment_name(name, sizeof(name), w->broken_seq);
    int fd = openat(log->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (ftruncate(fd, (off_t)w->broken_end) < 0 || fsync(fd) < 0)
        r = -errno;
    if (r == 0)
        r = segment_scan_fd(fd, NULL, NULL, &sc);
    close(fd);
    if (r == 0 && (!sc.header_ok || sc.tail != SEGMENT_TAIL_CLEAN || sc.end != w->broken_end)) {
        msg_error("log: %s/%s does not read back whole after an fsync failure (%s at %" PRIu64 ")",
                  log->dir, name, segment_tail_name(sc.tail), sc.bad_offset);
        r = -EIO;
    }
    if (r == 0)
        segs_set_size(w, w->broken_seq, w->broken_end);
    return r;
}

/* Try to leave the failed state; called once per LOG_RETRY_MS while failed. */
static void writer_recover(log_t *log)
{
    log_writer_t *w = &log->w;
    static const uint8_t zeros[LOG_PROBE_BYTES];
    int ok = 0;

    switch (w->fail_kind) {
    case FAIL_WRITE:
        if (w->need_truncate && ftruncate(w->fd, (off_t)w->size) < 0)
            break;
        w->need_truncate = 0;
        ssize_t n = pwrite(w->fd, zeros, sizeof(zeros), (off_t)w->size);
        if (n != 0)
            w->need_truncate = ftruncate(w->fd, (off_t)w->size) < 0;
        ok = n == (ssize_t)sizeof(zeros) && !w->need_truncate;
        w->prealloc_off = !ok; /* space is back: zero-filling may work again */
        break;
    case FAIL_NOSEG:
        ok = log__seg_create(log) == 0;
        break;
    case FAIL_FSYNC:
        if (!w->broken_verified)
            w->broken_verified = verify_broken(log) == 0;
        ok = w->broken_verified && log__seg_create(log) == 0;
        if (!ok && ++w->attempts >= LOG_RECOVER_ATTEMPTS) {
            msg_error("log: cannot recover %s after an fsync failure in %d attempts", log->dir,
                      w->attempts);
            w->fatal = 1;
        }
        break;
    }
    if (ok) {
        msg_info("log: %s is writable again (segment %" PRIu64 ")", log->dir, w->seq);
        w->fail_kind = FAIL_NONE;
        w->fail_err = 0;
    } else {
        w->retry_at = mono_ms() + LOG_RETRY_MS;
    }
}

/* 1 if the oldest segment is closed, so that retention may delete it. */
static int oldest_is_closed(const log_writer_t *w)
{
    return w->nsegs > 1 && !(w->fd >= 0 && w->segs[0].seq == w->seq);
}

/* 1 if `extra` more bytes would put the slot over its size limit with a segment to delete. */
static int retention_over_size(const log_t *log, uint64_t extra)
{
    uint64_t max = log->cfg.retention_max_bytes;
    return max && oldest_is_closed(&log->w) && log->w.segs_bytes + extra > max;
}

/*
 * Retention (off unless configured): delete the oldest closed segments while the slot is over
 * its size limit, or while a segment's data is older than the age limit (all of segment i was
 * written before segment i+1 was created). The current segment is never deleted.
 */
static void writer_retention(log_t *log)
{
    log_writer_t *w = &log->w;
    uint64_t now = log__real_ms();
    size_t removed = 0;
    if (!log->cfg.retention_max_bytes && !log->cfg.retention_max_age_ms)
        return;
    while (oldest_is_closed(w)) {
        int over_size =
            log->cfg.retention_max_bytes && w->segs_bytes > log->cfg.retention_max_bytes;
        int over_age = log->cfg.retention_max_age_ms &&
                       now > w->segs[1].created_ms + log->cfg.retention_max_age_ms;
        if (!over_size && !over_age)
            break;
        char name[SEGMENT_NAME_SIZE];
        segment_name(name, sizeof(name), w->segs[0].seq);
        if (unlinkat(log->dirfd, name, 0) < 0 && errno != ENOENT) {
            msg_warn("log: retention cannot remove %s/%s: %s", log->dir, name, strerror(errno));
            break;
        }
        msg_info("log: retention removed %s/%s (%" PRIu64 " bytes, %s limit)", log->dir, name,
                 w->segs[0].size, over_size ? "size" : "age");
        w->segs_bytes -= w->segs[0].size;
        memmove(w->segs, w->segs + 1, (w->nsegs - 1) * sizeof(*w->segs));
        w->nsegs--;
        removed++;
    }
    if (removed && fsync(log->dirfd) < 0)
        msg_warn("log: fsync of %s failed: %s", log->dir, strerror(errno));
}

/* Copy the writer's counters and state where the loop thread reads them (under the mutex). */
static void publish_stats_locked(log_t *log)
{
    log_writer_t *w = &log->w;
    w->st.segments = w->nsegs;
    w->st.segment_bytes = w->segs_bytes;
    log->st = w->st;
    log->st.writable = w->fail_kind == FAIL_NONE;
    atomic_store(&log->fail_err, w->fail_err);
    log->fatal = w->fatal;
}

/* Hand finished entries and fresh counters to the loop thread. */
static void writer_publish(log_t *log, log_buf_t *batch, int exited)
{
    pthread_mutex_lock(&log->mu);
    if (batch) {
        *log->done_tail = batch;
        while (batch->next)
            batch = batch->next;
        log->done_tail = &batch->next;
    }
    publish_stats_locked(log);
    log->exited = exited;
    pthread_mutex_unlock(&log->mu);
    if (batch || exited || log->w.fatal)
        uv_async_send(&log->async);
}

static void cond_wait_until(log_t *log, uint64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(&log->cond, &log->mu, &ts);
}

void *log__writer_main(void *arg)
{
    log_t *log = arg;
    log_writer_t *w = &log->w;
    int none = log->cfg.durability == CONFIG_DURABILITY_NONE;

    w->next_tick = mono_ms();
    w->next_flush = mono_ms() + (uint64_t)log->cfg.flush_interval_ms;
    for (;;) {
        pthread_mutex_lock(&log->mu);
        for (;;) {
            /* The loop thread is writing inline: `w` is its until it gives it back. */
            while (log->loop_owns) {
                log->owner_wait = 1;
                pthread_cond_wait(&log->cond, &log->mu);
            }
            uint64_t now = mono_ms();
            if (log->closing)
                break;
            if (log->pending && (w->fail_kind || !none || log->urgent || now >= w->next_flush))
                break;
            uint64_t deadline = w->next_tick;
            if (w->fail_kind && w->retry_at < deadline)
                deadline = w->retry_at;
            if (log->pending && none && w->next_flush < deadline)
                deadline = w->next_flush;
            if (now >= deadline)
                break;
            log->writer_idle = 1;
            cond_wait_until(log, deadline);
            log->writer_idle = 0;
        }
        log_buf_t *batch = log->pending;
        int closing = log->closing;
        log->pending = NULL;
        log->pending_tail = &log->pending;
        log->urgent = 0;
        pthread_mutex_unlock(&log->mu);

        uint64_t now = mono_ms();
        if (w->fail_kind && now >= w->retry_at && !closing)
            writer_recover(log);
        if (batch) {
            if (w->fail_kind)
                batch_outcome(batch, 0, w->fail_err);
            else
                batch = write_batch(log, batch);
            w->next_flush = mono_ms() + (uint64_t)log->cfg.flush_interval_ms;
        }
        int tick = now >= w->next_tick;
        if (tick) {
            if (!w->fail_kind && seg_too_old(log))
                seg_roll(log);
            w->next_tick = now + LOG_TICK_MS;
        }
        /* After each batch too: the current segment's growth counts against the size limit. */
        if (batch || tick)
            writer_retention(log);
        writer_publish(log, batch, 0);
        /* With the batch acknowledged, before taking the next: the zeros ahead, if short. */
        if (batch && !closing) {
            seg_prealloc(log);
            if (w->fail_kind)
                writer_publish(log, NULL, 0); /* its fdatasync failed: refuse appends now */
        }

        if (closing) {
            pthread_mutex_lock(&log->mu);
            int more = log->pending != NULL;
            pthread_mutex_unlock(&log->mu);
            if (more)
                continue;
            if (w->fd >= 0 && !w->fail_kind && w->size > w->synced)
                seg_sync(log);
            /* A clean stop leaves the segment at its data end, as start-up recovery would. */
            if (w->fd >= 0 && !w->fail_kind) {
                seg_trim(log);
                seg_dropall(log);
            }
            if (w->fd >= 0)
                close(w->fd);
            w->fd = -1;
            writer_publish(log, NULL, 1);
            return NULL;
        }
    }
}

/* ---- Writing on the loop thread (write mode) ---- */

int log__write_on_loop(log_t *log, log_buf_t *b, log_buf_t **done, uint64_t *dt_ns)
{
    log_writer_t *w = &log->w;
    uint64_t max = log->cfg.segment_max_bytes, every = log->cfg.writebehind_bytes;

    pthread_mutex_lock(&log->mu);
    int own = log->writer_idle && log->pending == NULL && !log->closing;
    log->loop_owns = own;
    pthread_mutex_unlock(&log->mu);
    if (!own)
        return -1;
    /* The writer is parked: `w` is ours. Anything that may block is left to the writer. */
    int simple = w->fd >= 0 && w->fail_kind == FAIL_NONE && w->size + b->len <= max &&
                 (every == 0 || w->size + b->len - w->kicked < every) && !seg_too_old(log) &&
                 !retention_over_size(log, b->len);
    uint64_t dt = 0;
    if (simple) {
        uint64_t t0 = mono_ns();
        b->next = NULL;
        write_batch(log, b); /* one buffer, no roll: it comes back with its outcome set */
        dt = mono_ns() - t0;
        w->st.inline_batches++;
        if (dt > log->cfg.inline_slow_ns)
            w->st.inline_slow++;
        /* Retention, which may unlink and fsync, waits for the writer's next tick. */
    }
    pthread_mutex_lock(&log->mu);
    if (simple)
        publish_stats_locked(log);
    log->loop_owns = 0;
    int wake = log->owner_wait;
    log->owner_wait = 0;
    *done = simple ? log->done : NULL; /* earlier appends: their callbacks go first */
    if (*done) {
        log->done = NULL;
        log->done_tail = &log->done;
    }
    pthread_mutex_unlock(&log->mu);
    if (wake)
        pthread_cond_signal(&log->cond);
    *dt_ns = dt;
    return simple ? 0 : -1;
}

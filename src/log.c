/*
 * The event log (log.h, docs/log-format.md), its loop-thread half: the append queue, the
 * hand-over to the writer, the callbacks, opening and closing. The writer thread and the segment
 * files are in logwriter.c; taking a slot and start-up recovery, which run inside log_open, in
 * logrecover.c.
 *
 * The loop thread only encodes records into a buffer; one writer thread per log does the disk
 * work. The appends of one loop iteration share a buffer, handed to the writer (one mutex hold,
 * at most one wake-up) from a uv_prepare callback, that is when the loop has run every callback
 * that was ready and is about to block: a wake-up and the two context switches that follow it
 * are paid per iteration, not per request, which matters most when the loop and the writer share
 * one core. Finished buffers come back through one uv_async_send per batch, whose callback runs
 * the appends' callbacks in append order and keeps the buffers for reuse.
 *
 * In write mode, where an append is acknowledged once it is written, a wake-up of the writer and
 * its uv_async_send back cost two context switches per loop iteration, about 4 % of a core at
 * full load. So when the writer is idle and nothing is queued before it, the loop thread writes
 * an iteration's buffer itself, if it is small (inline_max_bytes) and the write needs nothing
 * slow (no segment to roll, no writeback to start, no failure to recover): it takes the writer
 * state under the mutex, writes with the writer's own code (log__write_on_loop), and runs the
 * callbacks at once. Anything else goes to the writer thread as before. A buffered write can
 * still block (dirty page throttling, reclaim), and the loop must not: an inline write slower
 * than inline_slow_ns (LOG_INLINE_SLOW_NS) turns inline writing off for LOG_INLINE_BACKOFF_MS, a
 * time doubled for each slow write that follows within LOG_INLINE_BACKOFF_MAX_MS, up to that. (A
 * busy loop here sees a write over 2 ms about once in 20,000.)
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

#define LOG_BUF_INITIAL (64u << 10)     /* first size of an append buffer; grows by doubling */
#define LOG_BUF_ENDS_INITIAL 64         /* appends an append buffer first has room for */
#define LOG_BUF_SPARE 4                 /* buffers kept for reuse ... */
#define LOG_BUF_SPARE_MAX (1u << 20)    /* ... if not larger (a burst gives its memory back) */
#define LOG_BUF_HANDOVER (256u << 10)   /* a buffer this full goes to the writer at once */
#define LOG_INLINE_MAX (64u << 10)      /* write mode: largest buffer the loop writes itself */
#define LOG_INLINE_SLOW_NS 2000000ull   /* an inline write this slow ... */
#define LOG_INLINE_BACKOFF_MS 1000      /* ... leaves writing to the writer thread this long, */
#define LOG_INLINE_BACKOFF_MAX_MS 64000 /* doubled for each slow one within this time */

void log_config_from(log_config_t *lc, const config_t *cfg, int slot)
{
    memset(lc, 0, sizeof(*lc));
    lc->data_dir = cfg->data_dir;
    lc->slot = slot;
    lc->durability = cfg->durability;
    lc->segment_max_bytes = cfg->segment_max_bytes;
    lc->segment_max_age_ms = cfg->segment_max_age_s * 1000;
    lc->retention_max_bytes = cfg->retention_max_bytes;
    lc->retention_max_age_ms = cfg->retention_max_age_s * 1000;
    lc->queue_max_bytes = cfg->queue_max_bytes;
    lc->flush_interval_ms = cfg->flush_interval_ms;
    lc->writebehind_bytes = LOG_WRITEBEHIND;
    lc->inline_max_bytes = cfg->durability == CONFIG_DURABILITY_WRITE ? LOG_INLINE_MAX : 0;
    lc->inline_slow_ns = LOG_INLINE_SLOW_NS;
    lc->cache_keep_bytes = cfg->log_cache_bytes;
}

/* ---- Loop thread ---- */

static void buf_free(log_buf_t *b)
{
    if (b) {
        free(b->data);
        free(b->ends);
        free(b);
    }
}

/* An empty buffer: a recycled one, or a new one (without memory yet: buf_reserve gets it). */
static log_buf_t *buf_get(log_t *log)
{
    log_buf_t *b = log->spare;
    if (b) {
        log->spare = b->next;
        log->nspare--;
    } else {
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            return NULL;
    }
    b->next = NULL;
    b->reqs = NULL;
    b->reqs_tail = &b->reqs;
    b->nends = b->len = b->nrec = 0;
    return b;
}

/* Keep a buffer for reuse, unless enough are kept or it grew large in a burst. */
static void buf_put(log_t *log, log_buf_t *b)
{
    if (log->nspare >= LOG_BUF_SPARE || b->cap > LOG_BUF_SPARE_MAX) {
        buf_free(b);
        return;
    }
    b->next = log->spare;
    log->spare = b;
    log->nspare++;
}

/* Room for `bytes` more record bytes and one more append in `b`. */
static int buf_reserve(log_buf_t *b, size_t bytes)
{
    if (b->len + bytes > b->cap) {
        size_t cap = b->cap ? b->cap : LOG_BUF_INITIAL;
        while (cap < b->len + bytes)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL)
            return -ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (b->nends == b->ends_cap) {
        size_t cap = b->ends_cap ? b->ends_cap * 2 : LOG_BUF_ENDS_INITIAL;
        size_t *e = realloc(b->ends, cap * sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
        b->ends = e;
        b->ends_cap = cap;
    }
    return 0;
}

/* Durability none: acknowledge what was queued, in order (a callback may append again). */
static void ack_queued(log_t *log)
{
    while (log->ack_head) {
        log_append_t *req = log->ack_head;
        log->ack_head = req->next;
        if (log->ack_head == NULL)
            log->ack_tail = &log->ack_head;
        req->cb(req, 0);
    }
}

static void buf_finish(log_t *log, log_buf_t *b);

/* Run the callbacks of buffers the writer finished (the uv_async callback's work). */
static void finish_all(log_t *log, log_buf_t *done)
{
    while (done) {
        log_buf_t *b = done;
        done = b->next;
        buf_finish(log, b);
    }
}

/* An inline write took `dt` ns: leave writes to the writer thread for a while. */
static void inline_backoff(log_t *log, uint64_t dt)
{
    uint64_t now = uv_now(log->loop);
    uint64_t ms = log->inline_backoff_ms;

    if (ms == 0 || now - log->inline_slow_at > LOG_INLINE_BACKOFF_MAX_MS)
        ms = LOG_INLINE_BACKOFF_MS;
    else if (ms < LOG_INLINE_BACKOFF_MAX_MS)
        ms *= 2;
    log->inline_backoff_ms = ms;
    log->inline_slow_at = now;
    log->inline_off_until = now + ms;
    msg_warn("log: a write to %s took %.1f ms on the event loop; the writer thread does all "
             "writes for the next %.0f s",
             log->dir, (double)dt / 1e6, (double)ms / 1000);
}

/*
 * Write mode: write `b` on the loop thread if the writer thread lets it (log__write_on_loop),
 * unless `b` is large or a recent slow write turned this off. Returns 0 if it did (callbacks
 * run), -1 if the writer thread must.
 */
static int write_inline(log_t *log, log_buf_t *b)
{
    log_buf_t *done;
    uint64_t dt;

    if (b->len > log->cfg.inline_max_bytes || uv_now(log->loop) < log->inline_off_until)
        return -1;
    if (log__write_on_loop(log, b, &done, &dt) != 0)
        return -1;
    if (dt > log->cfg.inline_slow_ns)
        inline_backoff(log, dt);
    finish_all(log, done);
    buf_finish(log, b);
    return 0;
}

/* Give the open buffer to the writer, waking it if it sleeps and has a reason to start. */
static void hand_over(log_t *log, int may_write)
{
    log_buf_t *b = log->open;
    int none = log->cfg.durability == CONFIG_DURABILITY_NONE;

    if (b == NULL || b->len == 0)
        return;
    log->open = NULL;
    /*
     * Only from on_prepare may the loop write the buffer itself: that runs callbacks, which
     * resume handlers, and log_append's caller (a handler) must never see that happen inside it.
     * Written inline, its callbacks may have appended again: those go on in the same way.
     */
    while (may_write && log->cfg.durability == CONFIG_DURABILITY_WRITE &&
           log->cfg.inline_max_bytes && write_inline(log, b) == 0) {
        b = log->open;
        if (b == NULL || b->len == 0)
            return;
        log->open = NULL;
    }
    pthread_mutex_lock(&log->mu);
    int first = log->pending == NULL;
    *log->pending_tail = b;
    log->pending_tail = &b->next;
    /*
     * In none mode the writer sleeps out its flush interval unless the queue is half full; it
     * only needs waking for the first buffer, to start counting the interval.
     */
    if (none && log->queue_bytes > log->cfg.queue_max_bytes / 2)
        log->urgent = 1;
    int wake = log->writer_idle && (!none || log->urgent || first);
    pthread_mutex_unlock(&log->mu);
    /*
     * Signalled after unlocking: on a shared core the writer runs as soon as it is woken, and
     * would only block on the mutex still held here. The writer cannot miss it: it was seen
     * idle under the mutex, so it is inside pthread_cond_timedwait (or re-checking after a
     * timeout, which finds the buffer).
     */
    if (wake)
        pthread_cond_signal(&log->cond);
}

/* Runs once per loop iteration, before the loop polls for I/O (and may block). */
static void on_prepare(uv_prepare_t *h)
{
    log_t *log = h->data;

    ack_queued(log);
    hand_over(log, 1);
}

static void log_free(log_t *log)
{
    if (log->dirfd >= 0)
        close(log->dirfd);
    if (log->lockfd >= 0)
        close(log->lockfd); /* releases the slot */
    if (log->w.fd >= 0)
        close(log->w.fd);
    free(log->w.segs);
    buf_free(log->open);
    while (log->spare) {
        log_buf_t *b = log->spare;
        log->spare = b->next;
        buf_free(b);
    }
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->cond);
    free(log);
}

/* Close callback of both handles: the log goes with the second. */
static void on_handle_closed(uv_handle_t *h)
{
    log_t *log = h->data;
    if (--log->handles_open > 0)
        return;
    void (*cb)(void *) = log->close_cb;
    void *arg = log->close_arg;
    log_free(log);
    if (cb)
        cb(arg);
}

static void close_handles(log_t *log)
{
    log->close_started = 1;
    uv_close((uv_handle_t *)&log->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&log->async, on_handle_closed);
}

/* Run the callbacks of a finished buffer and keep it for reuse. */
static void buf_finish(log_t *log, log_buf_t *b)
{
    /* Release the queue space first: a callback may append again. */
    log->queue_bytes -= b->len;
    log->queue_records -= b->nrec;
    for (log_append_t *req = b->reqs, *next; req; req = next) {
        next = req->next; /* the callback may reuse req */
        req->cb(req, req->seq <= b->ok ? 0 : b->status);
    }
    if (log->cfg.durability == CONFIG_DURABILITY_NONE && b->ok < b->len) {
        size_t lost = 0;
        for (size_t off = b->ok; off < b->len; lost++)
            off += SEGMENT_RECORD_HEADER_SIZE + (size_t)log__get_le(b->data + off, 4);
        msg_error("log: %zu acknowledged records (durability none) were lost: %s", lost,
                  strerror(-b->status));
    }
    buf_put(log, b);
}

static void on_async(uv_async_t *h)
{
    log_t *log = h->data;

    /* Durability none: acknowledgements in append order, before anything the writer returns. */
    ack_queued(log);
    pthread_mutex_lock(&log->mu);
    log_buf_t *done = log->done;
    log->done = NULL;
    log->done_tail = &log->done;
    int exited = log->exited, fatal = log->fatal;
    pthread_mutex_unlock(&log->mu);

    finish_all(log, done);
    if (fatal) {
        msg_error("log: the event log in %s cannot be written; exiting so the worker restarts",
                  log->dir);
        exit(LOG_EXIT_FATAL);
    }
    if (exited && !log->close_started) {
        pthread_join(log->thread, NULL);
        close_handles(log);
    }
}

int log_append(log_t *log, log_append_t *req, const log_record_t *recs, size_t n, log_append_cb cb)
{
    size_t bytes = 0;
    if (log->closing_loop)
        return -ESHUTDOWN;
    if (n == 0)
        return -EINVAL;
    int err = atomic_load_explicit(&log->fail_err, memory_order_relaxed);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].len > SEGMENT_MAX_PAYLOAD)
            return -EMSGSIZE;
        bytes += SEGMENT_RECORD_HEADER_SIZE + recs[i].len;
        if (bytes > log->cfg.queue_max_bytes)
            return -ENOBUFS;
    }
    if (log->queue_bytes + bytes > log->cfg.queue_max_bytes)
        return -ENOBUFS;
    if (log->open == NULL && (log->open = buf_get(log)) == NULL)
        return -ENOMEM;
    log_buf_t *b = log->open;
    if (buf_reserve(b, bytes) < 0)
        return -ENOMEM;
    uint8_t *p = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        log__put_le(p, recs[i].len, 4);
        log__put_le(p + 4, 0, 4);
        log__put_le(p + 8, recs[i].time_ms, 8);
        p[16] = recs[i].endpoint;
        p[17] = p[18] = p[19] = 0;
        memcpy(p + SEGMENT_RECORD_HEADER_SIZE, recs[i].payload, recs[i].len);
        p += SEGMENT_RECORD_HEADER_SIZE + recs[i].len;
    }
    b->len += bytes;
    b->ends[b->nends++] = b->len;
    b->nrec += n;
    req->cb = cb;
    req->seq = b->len; /* its end in the buffer, compared with the writer's `ok` */
    req->next = NULL;
    if (log->cfg.durability == CONFIG_DURABILITY_NONE) {
        *log->ack_tail = req;
        log->ack_tail = &req->next;
    } else {
        *b->reqs_tail = req;
        b->reqs_tail = &req->next;
    }
    log->queue_bytes += bytes;
    log->queue_records += n;
    /*
     * Handed to the writer by on_prepare, once per loop iteration; a long iteration (a large
     * import, a caller appending in a loop) hands over as it goes, so the writer works meanwhile.
     */
    if (b->len >= LOG_BUF_HANDOVER)
        hand_over(log, 0);
    return 0;
}

int log_can_accept(const log_t *log, size_t bytes)
{
    return !log->closing_loop && atomic_load(&((log_t *)log)->fail_err) == 0 &&
           log->queue_bytes + bytes <= log->cfg.queue_max_bytes;
}

void log_get_stats(const log_t *log, log_stats_t *st)
{
    log_t *l = (log_t *)log; /* the mutex is not part of the log's logical state */
    pthread_mutex_lock(&l->mu);
    *st = l->st;
    pthread_mutex_unlock(&l->mu);
    st->queue_bytes = log->queue_bytes;
    st->queue_records = log->queue_records;
    st->slot = log->slot;
}

void log_close(log_t *log, void (*close_cb)(void *arg), void *arg)
{
    if (log->closing_loop)
        return;
    log->closing_loop = 1;
    log->close_cb = close_cb;
    log->close_arg = arg;
    hand_over(log, 0);
    pthread_mutex_lock(&log->mu);
    log->closing = 1;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->mu);
}

/* ---- Opening (slots and recovery are in logrecover.c) ---- */

int log_open(log_t **logp, uv_loop_t *loop, const log_config_t *cfg)
{
    pthread_condattr_t ca;
    sigset_t all, old;
    int r;

    if (cfg->data_dir == NULL || cfg->slot < 1 || cfg->slot > LOG_SLOT_MAX ||
        cfg->segment_max_bytes <= SEGMENT_HEADER_SIZE || cfg->queue_max_bytes == 0 ||
        cfg->flush_interval_ms <= 0)
        return -EINVAL;
    log_t *log = calloc(1, sizeof(*log));
    if (log == NULL)
        return -ENOMEM;
    log->loop = loop;
    log->cfg = *cfg;
    log->dirfd = log->lockfd = log->w.fd = -1;
    log->pending_tail = &log->pending;
    log->done_tail = &log->done;
    log->ack_tail = &log->ack_head;
    if (snprintf(log->data_dir, sizeof(log->data_dir), "%s", cfg->data_dir) >=
        (int)sizeof(log->data_dir)) {
        free(log);
        return -ENAMETOOLONG;
    }
    log->cfg.data_dir = log->data_dir;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&log->mu, NULL);

    r = log__take_slot(log);
    if (r) {
        msg_error("log: no slot available in %s: %s", log->data_dir, strerror(-r));
        goto fail;
    }
    r = log__recover(log);
    if (r)
        goto fail;
    log->w.st.segments = log->w.nsegs;
    log->st = log->w.st;
    log->st.writable = 1;
    r = uv_async_init(loop, &log->async, on_async);
    if (r)
        goto fail;
    log->async.data = log;
    log->handles_open = 1;
    uv_prepare_init(loop, &log->prepare); /* cannot fail */
    log->prepare.data = log;
    log->handles_open++;
    uv_prepare_start(&log->prepare, on_prepare);
    /* The prepare handle alone does not keep the loop running (the async handle does). */
    uv_unref((uv_handle_t *)&log->prepare);
    /* The writer takes no signals: they belong to the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r = -pthread_create(&log->thread, NULL, log__writer_main, log);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        /* The handles are initialised: they can only be freed from their close callbacks. */
        close_handles(log);
        return r;
    }
    msg_info("log: slot %d in %s, segment %" PRIu64 " at %" PRIu64 " bytes", log->slot, log->dir,
             log->w.seq, log->w.size);
    *logp = log;
    return 0;
fail:
    log_free(log);
    return r;
}

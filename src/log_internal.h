/*
 * Private to the event log (log.c: the loop thread's queue and callbacks; logwriter.c: segment
 * files, the writer thread, failures; logrecover.c: slots and start-up recovery). The public
 * interface is include/trackd/log.h. Functions shared between the files carry the log__ prefix.
 */
#ifndef TRACKD_LOG_INTERNAL_H
#define TRACKD_LOG_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "trackd/log.h"

#define LOG_SLOT_MAX 9999 /* slots tried before log_open gives up with -EBUSY */
#define LOG_DIR_MODE 0750
#define LOG_FILE_MODE 0640
/*
 * write and none modes: writeback of each LOG_WRITEBEHIND bytes is started as they are written
 * (sync_file_range), so the fdatasync that closes a segment, which runs before the next batch
 * is written and so delays its acknowledgements, finds little left to write. Left to the kernel,
 * a 128 MiB segment closed with most of it dirty stalled acknowledgements for 76 ms.
 */
#define LOG_WRITEBEHIND (4u << 20)

/* Why the writer is not accepting (w.fail_kind). */
enum { FAIL_NONE, FAIL_WRITE, FAIL_NOSEG, FAIL_FSYNC };

/*
 * The appends of one loop iteration, encoded as they go on disk (record crcs are filled in by the
 * writer), handed to the writer as one unit. The loop thread fills it; from the hand-over until it
 * comes back in `done` only the writer touches it.
 */
typedef struct log_buf_s {
    struct log_buf_s *next;
    log_append_t *reqs, **reqs_tail; /* callbacks to run, in order (none in durability none) */
    size_t *ends;                    /* end offset in data of each append, in order */
    size_t nends, ends_cap;
    size_t len, cap, nrec; /* bytes of records in data, allocated, records */
    size_t ok;             /* set by the writer: appends ending at or before `ok` are stored, */
    int status;            /* ... the others failed with this error */
    uint8_t *data;
} log_buf_t;

typedef struct {
    uint64_t seq, size, created_ms;
} log_seg_t;

/*
 * State only the writer thread touches (and log_open, before the thread exists), or the loop
 * thread while it holds it for an inline write (log_t.loop_owns, handed over under the mutex).
 */
typedef struct {
    int fd;                     /* current segment, -1 if none */
    uint64_t seq, size, synced; /* its sequence, end of data, end known durable */
    uint64_t kicked;            /* writeback started up to here (write/none modes) */
    uint64_t dropped;           /* dropped from the page cache up to here (cache_keep_bytes) */
    uint64_t zero_end;          /* fsync mode: the file is zeros from `size` up to here */
    int prealloc_off;           /* zero-filling failed in this segment: plain appends only */
    uint64_t created_ms;
    log_seg_t *segs;     /* every segment of the slot, oldest first */
    uint64_t segs_bytes; /* the sum of their sizes */
    size_t nsegs, segs_cap;
    int fail_kind, fail_err, attempts, need_truncate, broken_verified;
    uint64_t broken_seq, broken_end;          /* the segment abandoned after an fsync failure */
    uint64_t retry_at, next_tick, next_flush; /* monotonic ms */
    log_stats_t st;
    int fatal;
} log_writer_t;

struct log_s {
    uv_loop_t *loop;
    uv_async_t async;
    log_config_t cfg;
    char data_dir[PATH_MAX];
    char dir[PATH_MAX];
    int slot, dirfd, lockfd;
    pthread_t thread;

    /* Loop thread only. */
    uv_prepare_t prepare; /* hands the iteration's appends over before the loop blocks */
    log_buf_t *open;      /* appends not yet handed over */
    log_buf_t *spare;     /* recycled buffers */
    size_t nspare;
    size_t queue_bytes, queue_records;
    log_append_t *ack_head, **ack_tail; /* durability none: acknowledged before the loop blocks */
    uint64_t inline_off_until;          /* write mode: no inline writes before this (uv_now), */
    uint64_t inline_slow_at, inline_backoff_ms; /* set by the last slow one, at this time */
    int closing_loop, close_started, handles_open;
    void (*close_cb)(void *arg);
    void *close_arg;

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    log_buf_t *pending, **pending_tail;
    log_buf_t *done, **done_tail;
    int closing, exited, writer_idle, urgent, fatal;
    int loop_owns, owner_wait; /* the loop thread has the writer state `w` (an inline write) */
    log_stats_t st;
    atomic_int fail_err; /* what log_append returns while the writer is failed; 0 = writable */

    log_writer_t w;
};

/** Little-endian integers of the record header: put `n` bytes of v at p, get them back. */
static inline void log__put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t log__get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/** The writer thread (logwriter.c); `arg` is the log. */
void *log__writer_main(void *arg);

/**
 * Write mode, on the loop thread: if the writer thread is idle with nothing queued, take its
 * state and, if writing `b` needs nothing slow (no roll, no writeback to start, no failure), write
 * it with the writer's own code. Returns 0 with b's outcome set, the buffers the writer finished
 * before in *done (their callbacks go first) and the write's duration in *dt_ns; -1 if the
 * writer thread must write `b`.
 */
int log__write_on_loop(log_t *log, log_buf_t *b, log_buf_t **done, uint64_t *dt_ns);

/** Wall-clock time in Unix milliseconds (segment creation times). */
uint64_t log__real_ms(void);

/** Append a segment to the writer's list of the slot's segments. */
int log__segs_add(log_writer_t *w, uint64_t seq, uint64_t size, uint64_t created_ms);

/** Create segment w.seq + 1, header and directory durable, and make it current. */
int log__seg_create(log_t *log);

/** Take the preferred slot of cfg.slot, or the lowest free one; sets dir, dirfd, lockfd. */
int log__take_slot(log_t *log);

/** Check the closed segments, recover the last one (or create the first). See log-format.md. */
int log__recover(log_t *log);

#endif

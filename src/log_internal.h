/*
 * Private to the log writer (log.c: queue, writer thread, failures; logrecover.c: slots and
 * start-up recovery). The public interface is include/trackd/log.h. Functions shared between
 * the two files carry the log__ prefix.
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

/* Why the writer is not accepting (w.fail_kind). */
enum { FAIL_NONE, FAIL_WRITE, FAIL_NOSEG, FAIL_FSYNC };

/* One log_append: its records encoded as they will be on disk (crc filled in by the writer). */
typedef struct log_entry_s {
    struct log_entry_s *next;
    log_append_t *req; /* NULL once acknowledged (durability none) */
    size_t bytes, n;
    int status;
    uint8_t data[];
} log_entry_t;

typedef struct {
    uint64_t seq, size, created_ms;
} log_seg_t;

/* State only the writer thread touches (and log_open, before the thread exists). */
typedef struct {
    int fd;                     /* current segment, -1 if none */
    uint64_t seq, size, synced; /* its sequence, end of data, end known durable */
    uint64_t created_ms;
    log_seg_t *segs; /* every segment of the slot, oldest first */
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
    size_t queue_bytes, queue_records;
    uint64_t next_seq;
    log_append_t *ack_head, **ack_tail; /* durability none: acknowledged on the next async run */
    int closing_loop, close_started;
    void (*close_cb)(void *arg);
    void *close_arg;

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    log_entry_t *pending, **pending_tail;
    log_entry_t *done, **done_tail;
    int closing, exited, writer_idle, urgent, fatal;
    log_stats_t st;
    atomic_int fail_err; /* what log_append returns while the writer is failed; 0 = writable */

    log_writer_t w;
};

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

/*
 * The append-only writer: the only path from a request to disk. One log per worker, owning one
 * slot directory (see segment.h). Handlers on the loop thread call log_append(); a writer thread
 * takes everything queued since its last batch, writes it with one write(2), and in fsync mode
 * makes it durable with one fdatasync (group commit). Completion callbacks run on the loop thread,
 * in append order, once the records are as durable as the configured mode promises.
 */
#ifndef TRACKD_LOG_H
#define TRACKD_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "trackd/config.h"

/**
 * Exit status of a worker whose log can neither write nor recover (an fdatasync failed and no
 * fresh segment could be opened in several tries, one a second): the log calls exit() with it
 * from the loop thread, after the pending callbacks ran with -EIO, so the master restarts the
 * worker and start-up recovery runs (sysexits' EX_IOERR).
 */
#define LOG_EXIT_FATAL 74

typedef struct log_s log_t;
typedef struct log_append_s log_append_t;

/** Called on the loop thread: status 0 = durable per the mode, negative errno = not stored. */
typedef void (*log_append_cb)(log_append_t *req, int status);

/** One append request; embedded by the caller, untouched by it until the callback ran. */
struct log_append_s {
    void *data; /* the caller's */
    /* private */
    log_append_cb cb;
    uint64_t seq;
    log_append_t *next;
};

/** A record to append: payload bytes (copied by log_append), receive time and endpoint. */
typedef struct {
    const void *payload;
    size_t len;
    uint64_t time_ms;
    uint8_t endpoint; /* segment_endpoint_t */
} log_record_t;

/** Writer settings; log_config_from() fills them from the server config. */
typedef struct {
    const char *data_dir;
    int slot; /* preferred slot (worker index, >= 1); next free one if taken */
    config_durability_t durability;
    uint64_t segment_max_bytes;
    uint64_t segment_max_age_ms;
    uint64_t retention_max_bytes;  /* 0 = off */
    uint64_t retention_max_age_ms; /* 0 = off */
    size_t queue_max_bytes;
    int flush_interval_ms;
    uint64_t writebehind_bytes; /* write/none modes: start writeback each time this much more
                                   is written (0 = leave it all to the kernel) */
    size_t inline_max_bytes;    /* write mode: the loop thread writes an iteration's appends up
                                   to this size itself while the writer is idle (0 = never) */
    uint64_t inline_slow_ns;    /* an inline write slower than this turns them off a while */
    uint64_t cache_keep_bytes;  /* the newest data of the segment left in the page cache; older
                                   pages are dropped once written back (0 = the kernel decides) */
} log_config_t;

/** Writer counters for /metrics and tests (a snapshot). */
typedef struct {
    uint64_t records_appended, bytes_appended, batches, fsyncs, fsync_errors, write_errors;
    uint64_t fsync_ns_total, fsync_ns_max; /* fsyncs: fdatasyncs covering records (not headers) */
    uint64_t inline_batches, inline_slow;  /* batches the loop thread wrote itself; those slow
                                              enough to turn that off for a while */
    size_t queue_bytes, queue_records;     /* appended, callback not yet run */
    uint64_t segments, segment_bytes;      /* segment files in the slot and their total size */
    int slot;
    int writable; /* 0 while the writer is in a failed state (503) */
} log_stats_t;

/** Fill a log_config_t from the server config (data_dir pointer borrowed from cfg). */
void log_config_from(log_config_t *lc, const config_t *cfg, int slot);

/**
 * Open the log on `loop`: take a slot directory (lock held while open), recover its last
 * segment (truncate a torn or damaged tail, logging what was dropped), refuse a damaged closed
 * segment, start the writer thread. Returns 0 or a negative errno (message on stderr).
 */
int log_open(log_t **logp, uv_loop_t *loop, const log_config_t *cfg);

/**
 * Queue `n` records for appending, all or none. Returns 0 and later calls cb exactly once, or
 * fails at once without calling cb: -ENOBUFS when the queue is full, the writer's error while it
 * is in a failed state (-EIO after an fdatasync failure, -ENOSPC or another write error until a
 * retry succeeds), -ESHUTDOWN after log_close began, -EINVAL for n == 0, -EMSGSIZE for a payload
 * over SEGMENT_MAX_PAYLOAD, -ENOMEM. The payloads are copied. The writer gets the appends of a
 * loop iteration together, when the loop is about to poll (or as soon as 256 KiB are waiting).
 */
int log_append(log_t *log, log_append_t *req, const log_record_t *recs, size_t n, log_append_cb cb);

/** 1 if an append of `bytes` would be accepted now (for shedding load before reading a body). */
int log_can_accept(const log_t *log, size_t bytes);

/** Snapshot of the counters. */
void log_get_stats(const log_t *log, log_stats_t *st);

/**
 * Stop: flush and make durable everything queued, run all pending callbacks, join the writer,
 * release the slot, then call close_cb (which may be NULL) on the loop. Frees the log.
 */
void log_close(log_t *log, void (*close_cb)(void *arg), void *arg);

#endif

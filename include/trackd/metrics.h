/*
 * What one worker tells its operator: GET /metrics in the Prometheus text format (version 0.0.4)
 * and GET /readyz. Every series carries a `worker` label, because each worker is scraped on its
 * own port (worker_listen): a scrape through the shared `listen` socket reaches one worker at
 * random. docs/operations.md lists the series, what they mean and the alerts built on them.
 *
 * track.c gathers the numbers (its own counters, the HTTP server's, the log's) into a
 * metrics_input_t; this module samples what the process itself knows (resident memory from
 * /proc/self/statm, free disk space of data_dir, cached for METRICS_DISK_CACHE_MS) and formats.
 */
#ifndef TRACKD_METRICS_H
#define TRACKD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "trackd/config.h"
#include "trackd/http.h"
#include "trackd/log.h"
#include "trackd/track.h"

/** statvfs() of data_dir runs at most this often; /readyz and /metrics use the cached value. */
#define METRICS_DISK_CACHE_MS 1000

/** Upper bounds (seconds) of the request latency histogram's buckets (Prometheus `le`). */
#define METRICS_LATENCY_BUCKETS                                                                    \
    {                                                                                              \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10             \
    }

/** Facts about the worker process, some sampled and cached. Zero-initialise, then init. */
typedef struct {
    int worker;          /* 1-based worker index; 0 outside a worker (tests) */
    double start_time_s; /* Unix time the worker started */
    const char *data_dir;
    uint64_t disk_at_ms; /* monotonic ms of the last statvfs; 0 = never */
    uint64_t disk_free, disk_total;
    int disk_err; /* negative errno of the last statvfs, or 0 */
} metrics_proc_t;

/** Start the facts of worker `worker` whose log lives under `data_dir` (borrowed). */
void metrics_proc_init(metrics_proc_t *p, int worker, const char *data_dir);

/**
 * Free and total bytes of data_dir's file system (free = available to an unprivileged user),
 * sampled at most every METRICS_DISK_CACHE_MS. Returns 0 or the statvfs error.
 */
int metrics_disk(metrics_proc_t *p, uint64_t now_ms, uint64_t *free_bytes, uint64_t *total_bytes);

/** Resident memory of this process (bytes), from /proc/self/statm. Returns 0 or -errno. */
int metrics_rss(uint64_t *bytes);

/** Everything one scrape exports; the pointers are borrowed for the call. */
typedef struct {
    const config_t *cfg;
    metrics_proc_t *proc;
    const track_stats_t *track;
    const http_stats_t *http; /* NULL: no server attached */
    size_t coroutines;
    const log_stats_t *log; /* NULL: no log */
    size_t rate_buckets;    /* token buckets tracked */
    uint64_t now_ms;        /* monotonic, for the disk cache */
} metrics_input_t;

/**
 * Format the Prometheus text of `in` into a malloc'd buffer (*out, *outlen; free() it).
 * Returns 0 or -ENOMEM.
 */
int metrics_render(const metrics_input_t *in, char **out, size_t *outlen);

/**
 * Readiness: the log is open and writable, its queue is under queue_high_water, data_dir has
 * more than disk_low_water_bytes free. Returns 1 if ready; else 0 with the failed checks in
 * `why` (one line, "; "-separated).
 */
int metrics_ready(const metrics_input_t *in, char *why, size_t whylen);

#endif

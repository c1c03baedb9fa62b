/*
 * trackbench's load generator: one libuv loop driving many HTTP/1.1 connections, in closed loop
 * (each connection sends its next request as soon as the previous answer arrives) or open loop
 * (requests are due at a fixed rate; latency counts from the time a request was due, not from
 * when a connection was free to send it, so a stalled server cannot hide its stall: the
 * coordinated-omission correction of wrk2). trackbench --procs N runs one bench_run() per process
 * and merges the bench_stats_t they report.
 */
#ifndef TRACKD_BENCH_CLIENT_H
#define TRACKD_BENCH_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "trackd/bench_payload.h"
#include "trackd/hist.h"

/** Most --target options. */
#define BENCH_MAX_TARGETS 16
/** Status codes are counted in an array of this size (larger ones count as 599). */
#define BENCH_STATUS_MAX 600

/** One server to load, from "http://HOST:PORT[/PREFIX]". */
typedef struct {
    char url[512];
    char hostport[300]; /* the Host header */
    char prefix[256];   /* mount path prefix without trailing slash, or "" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
} bench_target_t;

/** The run's options; totals are for the whole run and are split evenly between processes. */
typedef struct {
    bench_target_t targets[BENCH_MAX_TARGETS];
    size_t ntargets;
    size_t connections;           /* total concurrent connections (open loop: the pool's size) */
    int procs;                    /* processes sharing the load */
    double rate;                  /* total requests/s for the open loop; 0 = closed loop */
    double duration_s;            /* measured time after warmup; 0 = until `requests` are done */
    double warmup_s;              /* time before measuring (requests are sent, not counted) */
    uint64_t requests;            /* total requests to issue, warmup included; 0 = no limit */
    int timeout_ms;               /* per connect and per request; counted as errors */
    int keepalive;                /* 0 = one connection per request */
    unsigned mix[BENCH_EP_COUNT]; /* endpoint weights */
    unsigned shapes[BENCH_SHAPE_COUNT]; /* payload shape weights */
    size_t batch;                       /* events per request */
    size_t event_bytes;                 /* approximate event size */
    char token[256];
    char import_secret[256];
    char query[1024];          /* extra query flags for every request */
    char ledger[4096];         /* file of acknowledged insert ids ("" = none); appended to */
    size_t ramp_from, ramp_to; /* --ramp: connections go from ramp_from to ramp_to ... */
    double ramp_s;             /* ... over this many seconds (0 = no ramp) */
    unsigned source_addrs;     /* to a 127.x target, connect from 127.0.0.1..N in turn (0, 1: no
                                  bind, the kernel's choice of source) */
    int progress;              /* call the progress callback every second */
} bench_opts_t;

/** Counters of a run (or of one second of it). Plain data: copied through a pipe as is. */
typedef struct {
    uint64_t issued;       /* requests started (assigned to a connection) */
    uint64_t sent;         /* requests written */
    uint64_t completed;    /* responses received, any status */
    uint64_t ok;           /* 2xx with body `1`, verbose status 1, or /import status OK */
    uint64_t rejected_2xx; /* 2xx with any other body (e.g. `0`) */
    uint64_t events_sent, events_ok;
    uint64_t bytes_sent, bytes_recv;
    uint64_t err_connect; /* connect failed or timed out */
    uint64_t err_timeout; /* no complete response within timeout_ms of sending */
    uint64_t err_read;    /* reset or closed before the response was complete */
    uint64_t err_write;
    uint64_t err_parse;   /* not HTTP */
    uint64_t unsolicited; /* responses that arrived with no request outstanding */
    uint64_t unsent;      /* open loop: due requests never sent (no connection free) */
    uint64_t connects;    /* connections established */
    uint64_t retry_after_n, retry_after_min, retry_after_max, retry_after_sum; /* seconds */
    uint64_t ledgered;                 /* ids written to the ledger */
    uint64_t status[BENCH_STATUS_MAX]; /* responses by status code */
    uint64_t elapsed_ns;               /* measured time (from warmup end to the last answer) */
    uint64_t cpu_ns;                   /* user + system CPU time of the process(es) */
    uint64_t conns_open;               /* gauge: connections open at the snapshot */
    uint64_t procs;                    /* how many processes' stats were merged */
    hist_t latency;                    /* ns, from the intended send time */
} bench_stats_t;

/** Called every second with the counters of that second (tick counts from 1). */
typedef void (*bench_progress_cb)(const bench_stats_t *second, unsigned tick, void *arg);

/** Empty `s`. */
void bench_stats_init(bench_stats_t *s);

/** Add `src` into `dst` (counters and gauges summed, elapsed the longest, min/max kept). */
void bench_stats_merge(bench_stats_t *dst, const bench_stats_t *src);

/**
 * Run process `proc` (0-based, of o->procs) until the duration or request count is reached, or
 * SIGINT/SIGTERM, then wait for answers in flight (bounded by the timeout) and fill `out`.
 * Returns 0 or a negative errno (message on stderr).
 */
int bench_run(const bench_opts_t *o, int proc, bench_progress_cb cb, void *arg, bench_stats_t *out);

#endif

/*
 * The Mixpanel-compatible ingestion API (../shared/API.md) on top of http.h: routing, flags,
 * payload decoding, authentication, CORS, and the answers clients expect. A request goes
 * head check (route, method, credentials, load shedding: before any body byte is read) ->
 * track_prepare (decode and validate, no I/O) -> log_append and wait -> track_finish (the answer).
 * The I/O-free steps are public so the fuzz target runs them without sockets or a log.
 * /healthz, /readyz and /metrics are answered at the head too (metrics.h renders them).
 */
#ifndef TRACKD_TRACK_H
#define TRACKD_TRACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "trackd/config.h"
#include "trackd/decode.h"
#include "trackd/event.h"
#include "trackd/hist.h"
#include "trackd/http.h"
#include "trackd/log.h"

/** Query/form parameters looked at per request; more -> 400. */
#define TRACK_MAX_PAIRS 64
/** Longest Origin echoed back (longer: no CORS headers). */
#define TRACK_MAX_ORIGIN 256
/** Longest Access-Control-Request-Headers echoed back (longer: not echoed). */
#define TRACK_MAX_ACRH 512
/** Longest redirect= URL followed. */
#define TRACK_MAX_REDIRECT 2048
/**
 * CPU overload: API requests are shed at their head while the work admitted and not started
 * would keep a new request waiting this long (ms; http_server_backlog_ns). New work would only
 * wait behind it, and a client that waits seconds for a 200 retries anyway. (Event-loop lag is
 * measured and exported, but not shed on: it also rises with connection churn, which refusing
 * requests does not reduce.)
 */
#define TRACK_QUEUE_DELAY_SHED_MS 1000

/** What a request is for (req->tag, and the rows of the counters). */
typedef enum {
    TRACK_RT_NONE = 0, /* unknown path */
    TRACK_RT_TRACK,
    TRACK_RT_ENGAGE,
    TRACK_RT_GROUPS,
    TRACK_RT_IMPORT,
    TRACK_RT_HEALTHZ,
    TRACK_RT_METRICS,
    TRACK_RT_READYZ,
    TRACK_RT_COUNT
} track_route_t;

/** Statuses counted separately; all others land in the last column. */
#define TRACK_STATUSES                                                                             \
    {                                                                                              \
        200, 204, 302, 400, 401, 404, 405, 413, 415, 429, 500, 503                                 \
    }
#define TRACK_NSTATUS 13

/** Why events of a decoded request were not stored (trackd_events_rejected_total{reason}). */
typedef enum {
    TRACK_REJ_INVALID = 0,  /* failed validation (the rest of the batch is stored) */
    TRACK_REJ_RATE_LIMITED, /* their token was over its rate limit (429) */
    TRACK_REJ_NOT_STORED,   /* the log refused or failed the append (503) */
    TRACK_REJ_COUNT
} track_reject_t;

/** Why a request was shed at its head, before its body was read (503 + Retry-After). */
typedef enum {
    TRACK_SHED_QUEUE = 0, /* the writer queue passed queue_high_water */
    TRACK_SHED_MEMORY,    /* the request memory budget is past its high-water mark or too full */
    TRACK_SHED_LOG,       /* the log is in its failed state */
    TRACK_SHED_CPU,       /* admitted work needs the CPU too long (TRACK_QUEUE_DELAY_SHED_MS) */
    TRACK_SHED_COUNT
} track_shed_t;

/** Counters of one worker (for /metrics). */
typedef struct {
    uint64_t requests[TRACK_RT_COUNT][TRACK_NSTATUS];
    uint64_t events_stored, events_rejected, body_bytes, shed, log_errors;
    uint64_t stored_by[TRACK_RT_COUNT];    /* events_stored by endpoint */
    uint64_t rejected_by[TRACK_REJ_COUNT]; /* events_rejected by reason */
    uint64_t shed_by[TRACK_SHED_COUNT];    /* shed by reason */
    hist_t latency[TRACK_RT_COUNT];        /* head complete -> answer, ns, by endpoint */
    uint64_t loop_lag_ns, loop_lag_max_ns; /* last measured event-loop lag, and the largest */
} track_stats_t;

typedef struct track_s track_t;

/** Create the API state. `log` may be NULL (nothing can be stored: events get 503). */
track_t *track_new(const config_t *cfg, log_t *log);

/** Free it. */
void track_free(track_t *t);

/** The http_handler_t that serves the API with `t`. */
http_handler_t track_handler(track_t *t);

/** Let /metrics include the server's connection counters (optional). */
void track_set_server(track_t *t, http_server_t *s);

/** Say which worker this is (1-based; its slot is the log's) for /metrics. Default 0. */
void track_set_worker(track_t *t, int index);

/**
 * Report the event loop's lag (how late a periodic timer fired, ns); the worker calls it on
 * every tick, /metrics exports it.
 */
void track_note_loop_lag(track_t *t, uint64_t lag_ns);

/** The counters (live: valid while `t` is; large, so not copied). */
const track_stats_t *track_stats(const track_t *t);

/** An answer with the storage it points into. Free with track_answer_free(). */
typedef struct {
    http_response_t resp;
    size_t hlen;
    char hdr[2048];
    char small[512];
    char *heap; /* large body, if any */
} track_answer_t;

/** Release what an answer owns. */
void track_answer_free(track_answer_t *a);

/**
 * The head check, on the loop before the body is read: route and method, OPTIONS preflight,
 * /healthz, /readyz, /metrics, /import credentials, load shedding (log failed, writer queue over
 * queue_high_water, request memory over its high-water mark or unable to reserve the body,
 * admitted work needing the CPU for longer than TRACK_QUEUE_DELAY_SHED_MS).
 * Returns 1 with `a` filled when the request is answered now, 0 to read the body and run the
 * handler. Sets req->tag.
 */
int track_head(track_t *t, http_request_t *req, const struct sockaddr *peer, track_answer_t *a);

/** Everything a request needs between decoding and its answer. */
typedef struct {
    int route;
    int verbose, strict, want_ip, img;
    int legacy;           /* /import in a /track shape (data=, no strict=1): /track answers */
    const char *callback; /* validated JSONP name (copied into cb_buf) or NULL */
    const char *redirect; /* validated URL (a copy owned by the work) or NULL */
    char cb_buf[130];
    uint64_t retry_after_s; /* 429: seconds until the token's bucket holds enough */
    char ip[64];            /* client address when ip=1 */
    char *gunzipped;        /* owned buffers */
    char *payload;
    event_batch_t batch;
    int parsed; /* batch holds records to free */
    /* For the caller that appends: */
    log_append_t append;
    int log_status;
    int log_done;
    int waiting;
    void *co;
} track_work_t;

/**
 * Decode and validate a complete request (no I/O). Returns 1 with the answer in `a` when the
 * request ends here (bad input, nothing to store), or 0 when w->batch.nrecords records must be
 * appended to the log before track_finish(). Call track_work_free() in both cases.
 */
int track_prepare(track_t *t, http_request_t *req, const struct sockaddr *peer, track_work_t *w,
                  track_answer_t *a);

/** Build the answer once the append finished with `log_status` (0 or a negative errno). */
void track_finish(track_t *t, http_request_t *req, track_work_t *w, int log_status,
                  track_answer_t *a);

/** Free what the work owns. */
void track_work_free(track_work_t *w);

/** 1 if `name` is a JSONP callback name trackd accepts (^[A-Za-z_$][A-Za-z0-9_$.]{0,127}$). */
int track_valid_callback(const char *name, size_t len);

/**
 * The client address to record: the peer, or when the peer is a trusted proxy the rightmost
 * X-Forwarded-For entry that is not itself a trusted proxy (else X-Real-IP). Writes the textual
 * address to `out`; returns 0 or -EINVAL when no usable address is known.
 */
int track_client_ip(const config_t *cfg, const http_request_t *req, const struct sockaddr *peer,
                    char *out, size_t outlen);

#endif

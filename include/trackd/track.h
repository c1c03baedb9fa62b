/*
 * The Mixpanel-compatible ingestion API (../shared/API.md) on top of http.h: routing, flags,
 * payload decoding, authentication, CORS, and the answers clients expect. A request goes
 * head check (route, method, credentials, load shedding: before any body byte is read) ->
 * track_prepare (decode and validate, no I/O) -> log_append and wait -> track_finish (the answer).
 * The I/O-free steps are public so the fuzz target runs them without sockets or a log.
 */
#ifndef TRACKD_TRACK_H
#define TRACKD_TRACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "trackd/config.h"
#include "trackd/decode.h"
#include "trackd/event.h"
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

/** What a request is for (req->tag, and the rows of the counters). */
typedef enum {
    TRACK_RT_NONE = 0, /* unknown path */
    TRACK_RT_TRACK,
    TRACK_RT_ENGAGE,
    TRACK_RT_GROUPS,
    TRACK_RT_IMPORT,
    TRACK_RT_HEALTHZ,
    TRACK_RT_METRICS,
    TRACK_RT_COUNT
} track_route_t;

/** Statuses counted separately; all others land in the last column. */
#define TRACK_STATUSES                                                                             \
    {                                                                                              \
        200, 204, 302, 400, 401, 404, 405, 413, 415, 500, 503                                      \
    }
#define TRACK_NSTATUS 12

/** Counters of one worker (for /metrics). */
typedef struct {
    uint64_t requests[TRACK_RT_COUNT][TRACK_NSTATUS];
    uint64_t events_stored, events_rejected, body_bytes, shed, log_errors;
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

/** Counters snapshot. */
void track_get_stats(const track_t *t, track_stats_t *st);

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
 * /healthz, /metrics, /import credentials, load shedding. Returns 1 with `a` filled when the
 * request is answered now, 0 to read the body and run the handler. Sets req->tag.
 */
int track_head(track_t *t, http_request_t *req, const struct sockaddr *peer, track_answer_t *a);

/** Everything a request needs between decoding and its answer. */
typedef struct {
    int route;
    int verbose, strict, want_ip, img;
    const char *callback; /* validated JSONP name or NULL */
    const char *redirect; /* validated URL or NULL */
    char ip[64];          /* client address when ip=1 */
    char *gunzipped;      /* owned buffers */
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

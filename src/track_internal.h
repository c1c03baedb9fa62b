/*
 * Private to the API module: track.c (routing, the head check, decoding, the handler) and
 * track_answer.c (building answers: CORS, error bodies in each endpoint's shape, the answer after
 * the log). The public interface is include/trackd/track.h. Shared functions carry the track__
 * prefix.
 */
#ifndef TRACKD_TRACK_INTERNAL_H
#define TRACKD_TRACK_INTERNAL_H

#include "trackd/metrics.h"
#include "trackd/ratelimit.h"
#include "trackd/track.h"

struct track_s {
    const config_t *cfg;
    log_t *log;
    http_server_t *server;
    ratelimit_t *rl;
    metrics_proc_t proc;
    track_stats_t stats;
};

/** Count an answer of `route` with `status` in the requests table. */
void track__count(track_t *t, int route, int status);

/** Empty an answer (no headers, no body, status 0). */
void track__ans_init(track_answer_t *a);

/** Append one already validated header line (printf-style, ending in CRLF); dropped if too long. */
void track__ans_header(track_answer_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Point the response at the collected header lines (call after the last ans_header). */
void track__ans_finish(track_answer_t *a);

/** Set a small body (copied into the answer, truncated to its inline buffer). */
void track__ans_body(track_answer_t *a, const char *type, const char *body, size_t len);

/** The headers every API answer carries: no caching, and CORS for an acceptable Origin. */
void track__api_headers(track_answer_t *a, const http_request_t *req);

/** 1 if the Origin header may be echoed (printable ASCII, no blanks or commas, bounded). */
int track__origin_ok(const http_str_t *o);

/** 1 if Access-Control-Request-Headers may be echoed (header-name tokens, commas, spaces). */
int track__acrh_ok(const http_str_t *h);

/**
 * An error answer of an API endpoint, counted: the reason as JSON when `verbose`, else as text;
 * /import's JSON error shape unless `legacy` (an /import request in a /track shape answers like
 * /track); JSONP when `callback`. 503 carries Retry-After: retry_after_s.
 */
void track__error(track_t *t, track_answer_t *a, const http_request_t *req, int route, int legacy,
                  int status, const char *reason, int verbose, const char *callback);

#endif

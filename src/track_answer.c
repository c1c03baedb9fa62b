/*
 * The answers of the ingestion API (track.h): the shapes clients judge success by (API.md
 * "Responses": `1`/`0`, verbose JSON, JSONP, the pixel GIF, redirects, /import's JSON), error
 * bodies in each endpoint's shape, and the headers every API answer carries.
 *
 * Nothing unvalidated reaches a response header or a JSONP body: Origin and the requested CORS
 * headers are checked byte by byte and dropped when they do not pass; callback names and redirect
 * URLs were validated by track.c before they get here; reasons are JSON-escaped ASCII.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "track_internal.h"

/* A 1x1 transparent GIF (GIF89a, one-entry palette, transparency extension), for img=1. */
static const unsigned char track_gif[] = {
    'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

static const int track_statuses[] = TRACK_STATUSES;

#define TRACK_API_METHODS "GET, POST, OPTIONS"

void track__count(track_t *t, int route, int status)
{
    size_t col = TRACK_NSTATUS - 1;
    for (size_t i = 0; i < sizeof(track_statuses) / sizeof(track_statuses[0]); i++) {
        if (track_statuses[i] == status) {
            col = i;
            break;
        }
    }
    if (route < 0 || route >= TRACK_RT_COUNT)
        route = TRACK_RT_NONE;
    t->stats.requests[route][col]++;
}

void track_answer_free(track_answer_t *a)
{
    free(a->heap);
    a->heap = NULL;
}

void track__ans_init(track_answer_t *a)
{
    memset(&a->resp, 0, sizeof(a->resp));
    a->hlen = 0;
    a->hdr[0] = '\0';
    a->heap = NULL;
}

void track__ans_header(track_answer_t *a, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (a->hlen >= sizeof(a->hdr))
        return;
    va_start(ap, fmt);
    n = vsnprintf(a->hdr + a->hlen, sizeof(a->hdr) - a->hlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(a->hdr) - a->hlen) {
        a->hdr[a->hlen] = '\0'; /* drop a header that does not fit rather than cut it */
        return;
    }
    a->hlen += (size_t)n;
}

/* Append a constant header line. */
static void ans_lit(track_answer_t *a, const char *line, size_t len)
{
    if (a->hlen + len < sizeof(a->hdr)) {
        memcpy(a->hdr + a->hlen, line, len);
        a->hlen += len;
        a->hdr[a->hlen] = '\0';
    }
}

#define ANS_LIT(a, lit) ans_lit(a, lit, sizeof(lit) - 1)

void track__ans_finish(track_answer_t *a)
{
    a->resp.headers = a->hdr;
    a->resp.headers_len = a->hlen;
}

void track__ans_body(track_answer_t *a, const char *type, const char *body, size_t len)
{
    if (len > sizeof(a->small))
        len = sizeof(a->small);
    memcpy(a->small, body, len);
    a->resp.body = a->small;
    a->resp.body_len = len;
    a->resp.content_type = type;
}

/* A body formatted into the answer's inline buffer (truncated to fit). */
__attribute__((format(printf, 3, 4))) static void ans_bodyf(track_answer_t *a, const char *type,
                                                            const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(a->small, sizeof(a->small), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    a->resp.body = a->small;
    a->resp.body_len = (size_t)n < sizeof(a->small) ? (size_t)n : sizeof(a->small) - 1;
    a->resp.content_type = type;
}

int track__origin_ok(const http_str_t *o)
{
    if (o->p == NULL || o->len == 0 || o->len > TRACK_MAX_ORIGIN)
        return 0;
    for (size_t i = 0; i < o->len; i++) {
        unsigned char ch = (unsigned char)o->p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == ',')
            return 0;
    }
    return 1;
}

int track__acrh_ok(const http_str_t *h)
{
    if (h->p == NULL || h->len == 0 || h->len > TRACK_MAX_ACRH)
        return 0;
    for (size_t i = 0; i < h->len; i++) {
        unsigned char ch = (unsigned char)h->p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == ',' || ch == ' '))
            return 0;
    }
    return 1;
}

/* Retry-After is exposed so that a page on another origin can honour a 429/503's delay. */
void track__api_headers(track_answer_t *a, const http_request_t *req)
{
    const http_str_t *o = &req->headers[HTTP_H_ORIGIN];

    ANS_LIT(a, "Cache-Control: no-cache, no-store\r\n");
    if (track__origin_ok(o))
        track__ans_header(a,
                          "Access-Control-Allow-Origin: %.*s\r\nAccess-Control-Allow-Credentials: "
                          "true\r\nAccess-Control-Expose-Headers: Retry-After\r\n"
                          "Vary: Origin\r\n",
                          (int)o->len, o->p);
}

void track__error(track_t *t, track_answer_t *a, const http_request_t *req, int route, int legacy,
                  int status, const char *reason, int verbose, const char *callback)
{
    char esc[512];

    track__ans_init(a);
    a->resp.status = status;
    track__api_headers(a, req);
    if (status == 503)
        track__ans_header(a, "Retry-After: %d\r\n", t->cfg->retry_after_s);
    if (status == 405)
        track__ans_header(a, "Allow: %s\r\n",
                          route == TRACK_RT_HEALTHZ || route == TRACK_RT_METRICS ||
                                  route == TRACK_RT_READYZ
                              ? "GET"
                              : TRACK_API_METHODS);
    http_json_escape(esc, sizeof(esc), reason, strlen(reason));
    if (status == 401) {
        static const char b[] = "{\"code\":401,\"error\":\"Invalid credentials\","
                                "\"status\":\"Unauthorized\"}";
        track__ans_body(a, "application/json", b, sizeof(b) - 1);
    } else if (route == TRACK_RT_IMPORT && !legacy) {
        ans_bodyf(a, "application/json", "{\"code\":%d,\"error\":\"%s\",\"status\":\"%s\"}", status,
                  esc, http_status_text(status));
    } else if (callback) {
        if (verbose)
            ans_bodyf(a, "text/javascript; charset=utf-8", "%s({\"status\":0,\"error\":\"%s\"})",
                      callback, esc);
        else
            ans_bodyf(a, "text/javascript; charset=utf-8", "%s(0)", callback);
    } else if (verbose) {
        ans_bodyf(a, "application/json", "{\"status\":0,\"error\":\"%s\"}", esc);
    } else {
        track__ans_body(a, "text/plain; charset=utf-8", reason, strlen(reason));
    }
    track__ans_finish(a);
    track__count(t, route, status);
}

/* ---- answers after the log -------------------------------------------------------------- */

/* Append the failed_records array; returns the bytes written (0 if it did not fit). */
static size_t track_failed_json(const event_batch_t *b, char *out, size_t outlen)
{
    size_t o = 0;
    int n;

    n = snprintf(out, outlen, "[");
    o += (size_t)n;
    for (size_t i = 0; i < b->nfailures && o < outlen; i++) {
        const event_failure_t *f = &b->failures[i];
        char id[96], field[128], msg[400];
        http_json_escape(id, sizeof(id), f->insert_id, strnlen(f->insert_id, sizeof(f->insert_id)));
        http_json_escape(field, sizeof(field), f->field, strnlen(f->field, sizeof(f->field)));
        http_json_escape(msg, sizeof(msg), f->message, strnlen(f->message, sizeof(f->message)));
        n = snprintf(out + o, outlen - o,
                     "%s{\"index\":%zu,\"$insert_id\":\"%s\",\"field\":\"%s\",\"message\":\"%s\"}",
                     i ? "," : "", f->index, id, field, msg);
        if (n < 0 || (size_t)n >= outlen - o)
            return 0;
        o += (size_t)n;
    }
    if (o + 1 >= outlen)
        return 0;
    out[o++] = ']';
    out[o] = '\0';
    return o;
}

/* The body of a request with failed records (/import always, strict=1 elsewhere). */
static void track_failures_body(track_answer_t *a, const event_batch_t *b, int import)
{
    /* Each failure formats into well under 800 bytes; the rest is a fixed frame. */
    size_t cap = 256 + b->nfailures * 800;
    char *buf = malloc(cap);
    size_t o;
    int n;

    if (buf == NULL) {
        track__ans_body(a, "text/plain; charset=utf-8", "out of memory", 13);
        a->resp.status = 503;
        return;
    }
    n = snprintf(buf, cap,
                 "{\"code\":400,\"error\":\"some data points in the request failed "
                 "validation\",\"failed_records\":");
    o = (size_t)n;
    o += track_failed_json(b, buf + o, cap - o);
    n = snprintf(buf + o, cap - o, ",\"num_records_imported\":%zu,\"status\":%s}", b->nrecords,
                 import ? "\"Bad Request\"" : "0");
    o += (size_t)n;
    a->heap = buf;
    a->resp.body = buf;
    a->resp.body_len = o;
    a->resp.content_type = "application/json";
    a->resp.status = 400;
}

/* The /track shape: `1`/`0`, verbose JSON, JSONP around either. */
static void track_plain_answer(track_answer_t *a, const track_work_t *w)
{
    const event_batch_t *b = &w->batch;
    int ok = b->nrecords > 0;
    char esc[300], inner[400];
    size_t ilen;
    const char *type = "text/plain; charset=utf-8";

    if (w->verbose) {
        /* A partly valid batch is status 1, and still says why the others were refused. */
        const char *err = b->error[0] ? b->error : NULL;
        if (!ok && err == NULL)
            err = "no valid event";
        if (err == NULL || (ok && b->nfailures == 0)) {
            ilen = (size_t)snprintf(inner, sizeof(inner), "{\"status\":1,\"error\":null}");
        } else {
            http_json_escape(esc, sizeof(esc), err, strlen(err));
            ilen =
                (size_t)snprintf(inner, sizeof(inner), "{\"status\":%d,\"error\":\"%s\"}", ok, esc);
        }
        type = "application/json";
    } else {
        inner[0] = ok ? '1' : '0';
        inner[1] = '\0';
        ilen = 1;
    }
    if (w->callback)
        ans_bodyf(a, "text/javascript; charset=utf-8", "%s(%s)", w->callback, inner);
    else
        track__ans_body(a, type, inner, ilen);
}

void track_finish(track_t *t, http_request_t *req, track_work_t *w, int log_status,
                  track_answer_t *a)
{
    const event_batch_t *b = &w->batch;
    int import = w->route == TRACK_RT_IMPORT && !w->legacy;

    track__ans_init(a);
    if (log_status != 0) {
        t->stats.log_errors++;
        t->stats.rejected_by[TRACK_REJ_NOT_STORED] += b->nrecords;
        track__error(t, a, req, w->route, w->legacy, 503,
                     log_status == -ENOBUFS ? "server busy, retry later" : "event log unavailable",
                     w->verbose, w->callback);
        return;
    }
    t->stats.events_stored += b->nrecords;
    if (w->route >= 0 && w->route < TRACK_RT_COUNT)
        t->stats.stored_by[w->route] += b->nrecords;
    track__api_headers(a, req);
    a->resp.status = 200;
    if (b->nfailures > 0 && (import || w->strict)) {
        track_failures_body(a, b, import);
    } else if (import) {
        ans_bodyf(a, "application/json",
                  "{\"code\":200,\"num_records_imported\":%zu,\"status\":\"OK\"}", b->nrecords);
    } else if (w->redirect) {
        a->resp.status = 302;
        track__ans_header(a, "Location: %s\r\n", w->redirect);
    } else if (w->img) {
        a->resp.body = (const char *)track_gif;
        a->resp.body_len = sizeof(track_gif);
        a->resp.content_type = "image/gif";
    } else {
        track_plain_answer(a, w);
    }
    track__ans_finish(a);
    track__count(t, w->route, a->resp.status);
}

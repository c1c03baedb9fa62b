/*
 * The socket-free half of http.h: request assembly on llhttp, the size limits enforced while bytes
 * arrive, and answer formatting. The server (http.c) and the fuzz target (fuzz/fuzz_http.c) both
 * drive http_parser_feed(), so what the fuzzer explores is exactly what a connection runs.
 *
 * llhttp runs in its default strict state: no llhttp_set_lenient_* call exists in trackd. It
 * already refuses Content-Length together with Transfer-Encoding, duplicate Content-Length, and a
 * Transfer-Encoding whose last coding is not chunked; the head callback re-checks those (a
 * request-smuggling check should not hang on one library flag) and adds what llhttp leaves to the
 * application: Host on HTTP/1.1, codings other than chunked, and every size limit.
 *
 * Memory: a request lives from its first byte to the end of its handler. Its head (the target and
 * the few headers trackd reads; other headers are counted, not stored) goes into an inline buffer
 * that grows on the heap only for big heads; the body gets its own buffer, sized from
 * Content-Length or grown for chunked bodies, never beyond max_body_bytes. Requests are recycled
 * through a small per-loop cache so a keep-alive stream of small requests does not malloc.
 *
 * Every byte a request holds is charged to the loop's memory budget (memory_budget_bytes,
 * http_mem.c) before it is allocated: the request itself at its first byte, a head that grows, a
 * body as it grows (or reserved whole from Content-Length by the handler's head check). A charge
 * that would pass the budget fails the request with 503, so thousands of slow clients cannot add up
 * to more than the budget. The request cache is outside the budget: it is bounded by
 * HTTP_REQ_CACHE_MAX.
 */
#include "trackd/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_internal.h"

/** Requests kept for reuse per loop. */
#define HTTP_REQ_CACHE_MAX 64
/** A recycled request keeps a body buffer up to this size. */
#define HTTP_BODY_KEEP 16384
/** First allocation for a chunked body. */
#define HTTP_BODY_FIRST 4096

/* Header names trackd reads, lower case, indexed by http_header_id_t. */
static const char *const http_header_names[HTTP_H_COUNT] = {
    [HTTP_H_HOST] = "host",
    [HTTP_H_CONTENT_TYPE] = "content-type",
    [HTTP_H_CONTENT_ENCODING] = "content-encoding",
    [HTTP_H_TRANSFER_ENCODING] = "transfer-encoding",
    [HTTP_H_CONTENT_LENGTH] = "content-length",
    [HTTP_H_EXPECT] = "expect",
    [HTTP_H_ORIGIN] = "origin",
    [HTTP_H_ACR_HEADERS] = "access-control-request-headers",
    [HTTP_H_AUTHORIZATION] = "authorization",
    [HTTP_H_X_FORWARDED_FOR] = "x-forwarded-for",
    [HTTP_H_X_REAL_IP] = "x-real-ip",
};

static int http_on_message_begin(llhttp_t *ll);
static int http_on_url(llhttp_t *ll, const char *at, size_t len);
static int http_on_url_complete(llhttp_t *ll);
static int http_on_header_field(llhttp_t *ll, const char *at, size_t len);
static int http_on_header_field_complete(llhttp_t *ll);
static int http_on_header_value(llhttp_t *ll, const char *at, size_t len);
static int http_on_header_value_complete(llhttp_t *ll);
static int http_on_headers_complete(llhttp_t *ll);
static int http_on_body(llhttp_t *ll, const char *at, size_t len);
static int http_on_message_complete(llhttp_t *ll);

static const llhttp_settings_t http_settings = {
    .on_message_begin = http_on_message_begin,
    .on_url = http_on_url,
    .on_url_complete = http_on_url_complete,
    .on_header_field = http_on_header_field,
    .on_header_field_complete = http_on_header_field_complete,
    .on_header_value = http_on_header_value,
    .on_header_value_complete = http_on_header_value_complete,
    .on_headers_complete = http_on_headers_complete,
    .on_body = http_on_body,
    .on_message_complete = http_on_message_complete,
};

/* What the parser paused for (http_parser_t.paused). */
enum { HTTP_PAUSE_NONE = 0, HTTP_PAUSE_HEAD = 1, HTTP_PAUSE_REQUEST = 2 };

void http_env_init(http_env_t *env, const config_t *cfg)
{
    memset(env, 0, sizeof(*env));
    env->cfg = cfg;
    env->mem_budget = cfg->memory_budget_bytes ? cfg->memory_budget_bytes : SIZE_MAX;
}

void http_env_free(http_env_t *env)
{
    while (env->free_reqs) {
        http_request_t *r = env->free_reqs;
        env->free_reqs = r->next_free;
        free(r->body);
        free(r);
    }
    env->nfree = 0;
}

/* A request for the next message, charged to the budget: 0, -ENOBUFS or -ENOMEM. */
static int http_request_new(http_env_t *env, http_request_t **out)
{
    http_request_t *r = env->free_reqs;
    char *body = NULL;
    size_t body_cap = 0;

    if (http_env_charge(env, sizeof(*r) + (r ? r->body_cap : 0), 0) != 0)
        return -ENOBUFS;
    if (r) {
        env->free_reqs = r->next_free;
        env->nfree--;
        body = r->body;
        body_cap = r->body_cap;
    } else {
        r = malloc(sizeof(*r));
        if (r == NULL) {
            http_env_release(env, sizeof(*r));
            return -ENOMEM;
        }
    }
    /* Clear the public part and the bookkeeping, not the inline buffer. */
    memset(r, 0, offsetof(http_request_t, inline_buf));
    r->buf = r->inline_buf;
    r->cap = sizeof(r->inline_buf);
    r->cur = -1;
    r->body = body; /* kept as spare capacity; body_len 0 until a body arrives */
    r->body_cap = body_cap;
    r->env = env;
    r->mem = sizeof(*r) + body_cap;
    r->mem_body = body_cap;
    *out = r;
    return 0;
}

void http_request_free(http_env_t *env, http_request_t *r)
{
    if (r == NULL)
        return;
    if (r->env)
        http_env_release(r->env, r->mem);
    r->mem = r->mem_body = 0;
    if (r->buf != r->inline_buf)
        free(r->buf);
    if (r->body_cap > HTTP_BODY_KEEP) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
    }
    if (env == NULL || env->nfree >= HTTP_REQ_CACHE_MAX) {
        free(r->body);
        free(r);
        return;
    }
    r->next_free = env->free_reqs;
    env->free_reqs = r;
    env->nfree++;
}

/* Head storage limit: the URL and the stored header values, each with its separators. */
static size_t http_head_cap_max(const config_t *cfg)
{
    return cfg->max_url_bytes + 2 * cfg->max_header_bytes + 64;
}

static int http_head_reserve(http_parser_t *p, size_t more)
{
    http_request_t *r = p->req;
    size_t need = r->len + more, ncap;
    char *nb;

    if (need <= r->cap)
        return 0;
    if (need > http_head_cap_max(p->env->cfg))
        return -E2BIG;
    ncap = r->cap * 2;
    while (ncap < need)
        ncap *= 2;
    /* The inline buffer was charged with the request; a heap head is charged as it grows. */
    size_t charged = r->buf == r->inline_buf ? 0 : r->cap;
    if (http__req_charge(r, ncap - charged, 0) != 0)
        return -ENOBUFS;
    if (r->buf == r->inline_buf) {
        nb = malloc(ncap);
        if (nb)
            memcpy(nb, r->buf, r->len);
    } else {
        nb = realloc(r->buf, ncap);
    }
    if (nb == NULL) {
        http_env_release(r->env, ncap - charged);
        r->mem -= ncap - charged;
        return -ENOMEM;
    }
    r->buf = nb;
    r->cap = ncap;
    return 0;
}

static int http_fail(http_parser_t *p, int status, const char *reason)
{
    p->error_status = (uint16_t)status;
    p->error_reason = reason;
    llhttp_set_error_reason(&p->ll, reason);
    return HPE_USER;
}

static int http_head_append(http_parser_t *p, const char *at, size_t len)
{
    int err = http_head_reserve(p, len);

    if (err == -ENOMEM)
        return http_fail(p, 503, "out of memory");
    if (err == -ENOBUFS)
        return http_fail(p, 503, "server busy, retry later");
    if (err)
        return http_fail(p, 431, "request header fields too large");
    memcpy(p->req->buf + p->req->len, at, len);
    p->req->len += len;
    return 0;
}

static int http_on_message_begin(llhttp_t *ll)
{
    http_parser_t *p = ll->data;

    if (p->req == NULL) {
        int err = http_request_new(p->env, &p->req);
        if (err)
            return http_fail(p, 503,
                             err == -ENOBUFS ? "server busy, retry later" : "out of memory");
    }
    return 0;
}

static int http_on_url(llhttp_t *ll, const char *at, size_t len)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;
    size_t have = r->len - r->target_off;

    if (have + len > p->env->cfg->max_url_bytes) {
        /* Keep what fits so an early error can still see verbose=1 in the query. */
        size_t room = p->env->cfg->max_url_bytes - have;
        if (room > 0 && http_head_reserve(p, room) == 0) {
            memcpy(r->buf + r->len, at, room);
            r->len += room;
        }
        return http_fail(p, 414, "request URI too long");
    }
    return http_head_append(p, at, len);
}

static int http_on_url_complete(llhttp_t *ll)
{
    http_parser_t *p = ll->data;
    return http_head_append(p, "", 1);
}

static int http_on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;

    r->header_bytes += (uint32_t)len;
    if (r->header_bytes > p->env->cfg->max_header_bytes)
        return http_fail(p, 431, "request header fields too large");
    for (size_t i = 0; i < len; i++) {
        if (r->name_len < HTTP_NAME_MAX) {
            char ch = at[i];
            r->name[r->name_len] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        if (r->name_len <= HTTP_NAME_MAX)
            r->name_len++;
    }
    return 0;
}

static int http_on_header_field_complete(llhttp_t *ll)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;

    r->cur = -1;
    if (r->name_len == 0)
        return http_fail(p, 400, "empty header name"); /* field-name is a token: 1+ chars */
    if (++r->nheaders > p->env->cfg->max_headers)
        return http_fail(p, 431, "too many header fields");
    if (r->name_len <= HTTP_NAME_MAX) {
        for (int i = 0; i < HTTP_H_COUNT; i++) {
            const char *n = http_header_names[i];
            if (strlen(n) == r->name_len && memcmp(n, r->name, r->name_len) == 0) {
                r->cur = (int8_t)i;
                break;
            }
        }
    }
    r->name_len = 0;
    if (r->cur >= 0) {
        if (r->hcount[r->cur] < UINT8_MAX)
            r->hcount[r->cur]++;
        /* The value is collected after the end of the head so far; see value_complete. */
    }
    return 0;
}

static int http_on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;

    r->header_bytes += (uint32_t)len;
    if (r->header_bytes > p->env->cfg->max_header_bytes)
        return http_fail(p, 431, "request header fields too large");
    /*
     * llhttp reports an obsolete line fold ("\r\n " continuing a value) as one more span of the
     * same value. A value legitimately comes in two spans only across a read boundary: the first
     * ended where that read ended and the next starts where this read starts. Anything else is
     * a fold, which RFC 9112 lets a server refuse: a fold can hide a header from a proxy.
     */
    if (r->vspans > 0 && !(r->vspan_at_end && at == p->exec_start))
        return http_fail(p, 400, "obsolete header line folding");
    r->vspans = 1;
    r->vspan_at_end = at + len == p->exec_end;
    if (r->cur < 0)
        return 0;
    if (!r->in_value) {
        /* First span of this value: remember where it starts. */
        r->in_value = 1;
        r->vstart = (uint32_t)r->len;
    }
    return http_head_append(p, at, len);
}

static int http_on_header_value_complete(llhttp_t *ll)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;
    size_t vstart, vlen;
    int id = r->cur;
    int err;

    r->vspans = 0;
    if (id < 0)
        return 0;
    vstart = r->in_value ? r->vstart : r->len; /* an empty value has no span */
    r->in_value = 0;
    r->cur = -1;
    vlen = r->len - vstart;
    if (r->hcount[id] > 1 && r->hoff[id] != 0) {
        /* A repeated header: join as "old, new" so a list header (X-Forwarded-For) stays whole. */
        size_t ooff = r->hoff[id] - 1, olen = strlen(r->buf + ooff);
        if ((err = http_head_reserve(p, olen + 3)) != 0)
            return http_fail(p, err == -E2BIG ? 431 : 503,
                             err == -E2BIG ? "request header fields too large"
                                           : "server busy, retry later");
        memmove(r->buf + vstart + olen + 2, r->buf + vstart, vlen);
        memcpy(r->buf + vstart, r->buf + ooff, olen);
        memcpy(r->buf + vstart + olen, ", ", 2);
        r->len = vstart + olen + 2 + vlen;
    }
    r->hoff[id] = (uint32_t)vstart + 1; /* 0 means absent */
    return http_head_append(p, "", 1);
}

/* Trim blanks at both ends of s[0..*len) and return the new start. */
static const char *http_trim(const char *s, size_t *len)
{
    while (*len > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        (*len)--;
    }
    while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    return s;
}

/* Split the target into path and query; absolute-form targets keep only their path. */
static void http_split_target(http_request_t *r)
{
    char *t = r->buf + r->target_off;
    size_t len = strlen(t);
    char *q;

    if (len > 7 && (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        char *slash = strchr(strstr(t, "//") + 2, '/');
        char *qm = strchr(strstr(t, "//") + 2, '?');
        if (slash == NULL || (qm && qm < slash)) {
            /* "http://host" or "http://host?x": the path is "/" (reuse the byte before). */
            char *rest = qm ? qm : t + len;
            if (rest > t) {
                rest[-1] = '/';
                t = rest - 1;
            }
        } else {
            t = slash;
        }
        len = strlen(t);
    }
    r->target.p = t;
    r->target.len = len;
    q = memchr(t, '?', len);
    if (q) {
        *q = '\0';
        r->path.p = t;
        r->path.len = (size_t)(q - t);
        r->query.p = q + 1;
        r->query.len = len - r->path.len - 1;
    } else {
        r->path.p = t;
        r->path.len = len;
    }
}

static int http_on_headers_complete(llhttp_t *ll)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;
    const config_t *cfg = p->env->cfg;

    r->method = llhttp_get_method(ll);
    r->http_major = llhttp_get_http_major(ll);
    r->http_minor = llhttp_get_http_minor(ll);
    r->keep_alive = (uint8_t)(llhttp_should_keep_alive(ll) && !ll->upgrade);
    r->chunked = (ll->flags & F_CHUNKED) != 0;
    r->has_length = (ll->flags & F_CONTENT_LENGTH) != 0;
    r->content_length = r->has_length ? ll->content_length : 0;
    for (int i = 0; i < HTTP_H_COUNT; i++) {
        if (r->hoff[i]) {
            r->headers[i].p = r->buf + r->hoff[i] - 1;
            r->headers[i].len = strlen(r->headers[i].p);
        }
    }
    http_split_target(r);
    r->head_done = 1;
    r->start_ns = uv_hrtime();

    /*
     * Only HTTP/1.0 and 1.1, and only origin-form ("/path") or absolute-form with http(s)
     * (RFC 9112 3.2.2: a server must accept it; it is served by its path). A request line without
     * a version (HTTP/0.9), authority-form (CONNECT) or asterisk-form (OPTIONS *) is refused:
     * trackd serves none of them, and each is read differently by different intermediaries.
     */
    if (r->http_major != 1)
        return http_fail(p, r->http_major == 0 ? 400 : 505,
                         r->http_major == 0 ? "HTTP/0.9 not supported"
                                            : "HTTP version not supported");
    if (r->target.len == 0 || r->target.p[0] != '/')
        return http_fail(p, 400, "unsupported request target");
    if (r->hcount[HTTP_H_CONTENT_LENGTH] > 1)
        return http_fail(p, 400, "duplicate Content-Length");
    if (r->hcount[HTTP_H_TRANSFER_ENCODING] > 0) {
        size_t n = r->headers[HTTP_H_TRANSFER_ENCODING].len;
        const char *te = http_trim(r->headers[HTTP_H_TRANSFER_ENCODING].p, &n);
        if (r->hcount[HTTP_H_CONTENT_LENGTH] > 0)
            return http_fail(p, 400, "Content-Length with Transfer-Encoding");
        if (n != 7 || strncasecmp(te, "chunked", 7) != 0 || !r->chunked)
            return http_fail(p, 400, "unsupported Transfer-Encoding");
        if (r->http_major == 1 && r->http_minor == 0)
            return http_fail(p, 400, "Transfer-Encoding in HTTP/1.0");
    }
    if (r->http_major == 1 && r->http_minor >= 1 && r->hcount[HTTP_H_HOST] != 1)
        return http_fail(p, 400, r->hcount[HTTP_H_HOST] ? "duplicate Host" : "missing Host");
    if (r->has_length && r->content_length > cfg->max_body_bytes)
        return http_fail(p, 413, "request body too large");
    if (r->hcount[HTTP_H_EXPECT]) {
        size_t n = r->headers[HTTP_H_EXPECT].len;
        const char *e = http_trim(r->headers[HTTP_H_EXPECT].p, &n);
        if (n == 12 && strncasecmp(e, "100-continue", 12) == 0)
            r->expect_continue = r->http_major == 1 && r->http_minor >= 1;
        else
            return http_fail(p, 417, "unsupported expectation");
    }
    p->paused = HTTP_PAUSE_HEAD;
    return HPE_PAUSED;
}

static int http_on_body(llhttp_t *ll, const char *at, size_t len)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;
    size_t max = p->env->cfg->max_body_bytes;

    if (r->body_bytes + len > max || r->body_bytes + len < r->body_bytes)
        return http_fail(p, 413, "request body too large");
    r->body_bytes += len;
    if (r->discard_body)
        return 0;
    if (r->body_len + len + 1 > r->body_cap) {
        /*
         * Grow by doubling, never past Content-Length (+1 for the NUL) or max_body_bytes: memory
         * follows the bytes that actually arrived, not what a client announces.
         */
        size_t limit = r->has_length ? (size_t)r->content_length + 1 : max + 1;
        size_t ncap = r->body_cap ? r->body_cap * 2 : HTTP_BODY_FIRST;
        while (ncap < r->body_len + len + 1)
            ncap *= 2;
        if (ncap > limit)
            ncap = limit;
        if (http__body_charge(r, ncap) != 0)
            return http_fail(p, 503, "server busy, retry later");
        char *nb = realloc(r->body, ncap);
        if (nb == NULL)
            return http_fail(p, 503, "out of memory");
        r->body = nb;
        r->body_cap = ncap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return 0;
}

static int http_on_message_complete(llhttp_t *ll)
{
    http_parser_t *p = ll->data;
    http_request_t *r = p->req;

    if (r->body && r->body_cap > r->body_len)
        r->body[r->body_len] = '\0';
    p->paused = HTTP_PAUSE_REQUEST;
    return HPE_PAUSED;
}

void http_parser_init(http_parser_t *p, http_env_t *env)
{
    memset(p, 0, sizeof(*p));
    llhttp_init(&p->ll, HTTP_REQUEST, &http_settings);
    p->ll.data = p;
    p->env = env;
}

void http_parser_free(http_parser_t *p)
{
    http_request_free(p->env, p->req);
    p->req = NULL;
}

http_event_t http_parser_feed(http_parser_t *p, const char *data, size_t len, size_t *used)
{
    const config_t *cfg = p->env->cfg;
    int was_head = p->req == NULL || !p->req->head_done;
    size_t n;
    llhttp_errno_t err;

    *used = 0;
    if (p->failed)
        return HTTP_EV_ERROR;
    if (p->paused == HTTP_PAUSE_REQUEST && p->req) {
        /* The caller did not take the request: drop it. */
        http_request_free(p->env, p->req);
        p->req = NULL;
    }
    if (p->paused) {
        /* After a head, llhttp may still have work without input (a body-less request ends). */
        int head = p->paused == HTTP_PAUSE_HEAD;
        llhttp_resume(&p->ll);
        p->paused = HTTP_PAUSE_NONE;
        if (len == 0 && !head)
            return HTTP_EV_MORE;
    } else if (len == 0) {
        return HTTP_EV_MORE;
    }

    p->exec_start = data;
    p->exec_end = data + len;
    err = llhttp_execute(&p->ll, data, len);
    if (err == HPE_OK) {
        n = len;
    } else if (err == HPE_PAUSED) {
        n = (size_t)(llhttp_get_error_pos(&p->ll) - data);
    } else {
        n = llhttp_get_error_pos(&p->ll) ? (size_t)(llhttp_get_error_pos(&p->ll) - data) : 0;
        if (n > len)
            n = len;
        if (p->error_status == 0) {
            if (err == HPE_PAUSED_UPGRADE) {
                p->error_status = 400;
                p->error_reason = "protocol upgrade not supported";
            } else {
                p->error_status = 400;
                p->error_reason = llhttp_get_error_reason(&p->ll);
                if (p->error_reason == NULL)
                    p->error_reason = llhttp_errno_name(err);
            }
        }
        p->failed = 1;
        *used = n;
        return HTTP_EV_ERROR;
    }
    *used = n;

    /* Bound the whole head, padding and ignored headers included. */
    if (was_head && p->req) {
        p->head_bytes += (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n);
        if (p->head_bytes > cfg->max_url_bytes + cfg->max_header_bytes + HTTP_HEAD_SLACK &&
            !p->req->head_done) {
            p->failed = 1;
            p->error_status = 431;
            p->error_reason = "request header fields too large";
            return HTTP_EV_ERROR;
        }
    }
    if (p->paused == HTTP_PAUSE_HEAD)
        return HTTP_EV_HEAD;
    if (p->paused == HTTP_PAUSE_REQUEST) {
        p->head_bytes = 0;
        return HTTP_EV_REQUEST;
    }
    return HTTP_EV_MORE;
}

http_request_t *http_parser_req(const http_parser_t *p)
{
    return p->req;
}

void http_parser_discard_body(http_parser_t *p)
{
    if (p->req)
        p->req->discard_body = 1;
}

http_request_t *http_parser_take(http_parser_t *p)
{
    http_request_t *r = p->req;

    if (p->paused != HTTP_PAUSE_REQUEST)
        return NULL;
    p->req = NULL;
    p->head_bytes = 0;
    return r;
}

int http_parser_idle(const http_parser_t *p)
{
    return p->req == NULL && !p->failed;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 302:
        return "Found";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 505:
        return "HTTP Version Not Supported";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* The Date header changes once a second: format it once per second per thread (one loop). */
static _Thread_local struct {
    time_t t;
    char s[64];
} http_date_cache;

static const char *http_date(void)
{
    time_t now = time(NULL);

    if (now != http_date_cache.t || http_date_cache.s[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(http_date_cache.s, sizeof(http_date_cache.s), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        http_date_cache.t = now;
    }
    return http_date_cache.s;
}

/* Append `len` bytes at out[*o] if they fit in `cap`; returns 0 or -ENOSPC. */
static int http_put(char *out, size_t cap, size_t *o, const char *s, size_t len)
{
    if (*o + len > cap)
        return -ENOSPC;
    memcpy(out + *o, s, len);
    *o += len;
    return 0;
}

#define HTTP_PUT_LIT(out, cap, o, lit) http_put(out, cap, o, lit, sizeof(lit) - 1)

/* Answers are formatted on every request: plain copies, no printf. */
int http_format_head(char *out, size_t outlen, const http_response_t *r, int keep_alive, int http10)
{
    const char *reason = http_status_text(r->status), *date = http_date();
    char num[24], *np = num + sizeof(num);
    size_t o = 0, v = r->body_len;
    int err = 0;

    if (r->status < 100 || r->status > 999)
        return -EINVAL;
    do
        *--np = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    char status[4] = {(char)('0' + r->status / 100), (char)('0' + r->status / 10 % 10),
                      (char)('0' + r->status % 10), ' '};
    err |= HTTP_PUT_LIT(out, outlen, &o, "HTTP/1.1 ");
    err |= http_put(out, outlen, &o, status, 4);
    err |= http_put(out, outlen, &o, reason, strlen(reason));
    err |= HTTP_PUT_LIT(out, outlen, &o, "\r\nServer: trackd\r\nDate: ");
    err |= http_put(out, outlen, &o, date, strlen(date));
    if (r->content_type) {
        err |= HTTP_PUT_LIT(out, outlen, &o, "\r\nContent-Type: ");
        err |= http_put(out, outlen, &o, r->content_type, strlen(r->content_type));
    }
    err |= HTTP_PUT_LIT(out, outlen, &o, "\r\nContent-Length: ");
    err |= http_put(out, outlen, &o, np, (size_t)(num + sizeof(num) - np));
    err |= HTTP_PUT_LIT(out, outlen, &o, "\r\n");
    if (!keep_alive)
        err |= HTTP_PUT_LIT(out, outlen, &o, "Connection: close\r\n");
    else if (http10)
        err |= HTTP_PUT_LIT(out, outlen, &o, "Connection: keep-alive\r\n");
    if (r->headers_len)
        err |= http_put(out, outlen, &o, r->headers, r->headers_len);
    err |= HTTP_PUT_LIT(out, outlen, &o, "\r\n");
    if (err || o > INT32_MAX)
        return -ENOSPC;
    return (int)o;
}

http_str_t http_query_raw(const char *q, size_t len, const char *name)
{
    http_str_t v = {NULL, 0};
    size_t nlen = strlen(name), i = 0;

    if (q == NULL)
        return v;
    while (i <= len) {
        /* memchr: a `data` value of hundreds of bytes is skipped in a few instructions. */
        const char *amp = i < len ? memchr(q + i, '&', len - i) : NULL;
        size_t end = amp ? (size_t)(amp - q) : len;
        if (end - i >= nlen && memcmp(q + i, name, nlen) == 0 &&
            (end - i == nlen || q[i + nlen] == '=')) {
            size_t vs = i + nlen + (end - i > nlen ? 1 : 0);
            v.p = q + vs;
            v.len = end - vs;
            return v;
        }
        i = end + 1;
    }
    return v;
}

size_t http_json_escape(char *out, size_t outlen, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t elen;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            elen = 2;
        } else if (ch >= 0x80) {
            /* Reasons are ASCII; a stray byte must not make the JSON invalid UTF-8. */
            esc[0] = '?';
            elen = 1;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            elen = 6;
        } else {
            esc[0] = (char)ch;
            elen = 1;
        }
        if (o + elen >= outlen)
            break;
        memcpy(out + o, esc, elen);
        o += elen;
    }
    if (outlen)
        out[o] = '\0';
    return o;
}

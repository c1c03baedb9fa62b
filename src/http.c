/*
 * The connection half of http.h: accepting, reading, running each request's handler in a
 * coroutine, writing answers, keep-alive, pipelining and timeouts, on one libuv loop.
 *
 * A connection handles one request at a time. While a handler runs (or an answer is still
 * draining), bytes that arrive are parked in `pending` and parsed once it is done, so answers go
 * back in request order; past HTTP_PENDING_MAX the connection stops reading (backpressure) rather
 * than buffer more. An idle keep-alive connection holds only its handles, its parser and this
 * struct: reads land in one per-loop buffer and only the bytes of a request in progress are copied
 * (by the parser, into the request).
 *
 * Lifetime: a connection is freed when its handles are closed AND no coroutine uses it (`refs`).
 * A client that vanishes while its handler waits on the log only closes the socket; the handler
 * finishes, its events stay stored, and http_conn_respond() tells it the answer was dropped.
 *
 * Memory: parked bytes and answers waiting to drain are charged to the loop's memory budget
 * (http_env_charge), like the requests themselves (http_parser.c). A busy connection reads at
 * most what the budget has room for, and stops reading when it has none, until its handler is
 * done: the bytes wait in the kernel's socket buffer instead of ours.
 *
 * Closing after an error answer is "lingering": shut down our side, then read and discard what
 * the client still sends for a while, so the kernel does not reset the connection and destroy
 * the answer before the client reads it (a 413 sent before the body was read, for instance).
 */
#include "trackd/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/msg.h"

/** Size of the per-loop read buffer. */
#define HTTP_READ_BUF (64 * 1024)
/** Size of the per-loop buffer answers are formatted into. */
#define HTTP_WRITE_BUF (16 * 1024)
/** Bytes parked per connection while a request is busy before reading stops. */
#define HTTP_PENDING_MAX (64 * 1024)
/** How long a closing connection may keep sending before it is cut. */
#define HTTP_LINGER_MS 2000
/* At a graceful stop, a connection that has not sent its first byte yet gets this long to. */
#define HTTP_STOP_GRACE_MS 1000
/** Stack of a handler coroutine: jansson recursion and zlib inflate run on it. */
#define HTTP_CORO_STACK (256 * 1024)
/** Idle coroutine stacks kept per loop. */
#define HTTP_CORO_FREE 64
/** Body of the 503 sent to a connection beyond max_connections. */
#define HTTP_BUSY_BODY "too many connections"
/** A busy connection reads only if the memory budget has at least this much room. */
#define HTTP_PARK_MIN 4096

typedef enum {
    HTTP_PH_IDLE = 0, /* between requests (keep-alive) */
    HTTP_PH_HEAD,     /* reading a head */
    HTTP_PH_BODY,     /* reading a body */
    HTTP_PH_BUSY,     /* handler running or answer draining */
    HTTP_PH_LINGER,   /* answered, closing: discarding input */
} http_phase_t;

struct http_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_parser_t parser;
    http_server_t *server;
    http_conn_t *prev, *next;
    coro_t *co;          /* handler running, or NULL */
    http_request_t *req; /* the request the handler owns */
    char *pending;       /* bytes read while busy, not parsed yet */
    uint32_t pending_len, pending_cap;
    uint64_t deadline;  /* loop time (ms) the current phase times out at; 0 = none */
    uint64_t timer_due; /* when the armed timer fires; 0 = not armed */
    uint32_t writes;    /* uv_write requests in flight */
    uint8_t refs;       /* handles open (2) + a running coroutine (1) */
    uint8_t phase;
    uint8_t closing;     /* uv_close called */
    uint8_t close_after; /* close once the answer has drained */
    uint8_t read_eof;    /* the client shut down its side */
    uint8_t reading;     /* uv_read_start active */
    uint8_t answered;    /* the current request got its answer */
    uint8_t early;       /* answered at its head: drop the request when it completes */
    uint8_t keep_alive;  /* the current request allows another */
    uint8_t http10;
    uint8_t used;        /* the client has sent at least one byte */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
};

struct http_server_s {
    uv_loop_t *loop;
    const config_t *cfg;
    http_handler_t handler;
    http_env_t env;
    coro_pool_t *coros;
    http_conn_t *conns; /* all open connections */
    size_t nalloc;      /* connections not freed yet (open or closing) */
    http_stats_t stats;
    int stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    char rbuf[HTTP_READ_BUF];
    char wbuf[HTTP_WRITE_BUF];
};

/* One uv_write in flight, with the bytes it writes right after it. */
typedef struct {
    uv_write_t req;
    http_conn_t *conn;
    size_t charged; /* bytes charged to the memory budget for this write */
    char data[];
} http_write_t;

static void conn_close(http_conn_t *c);
static void conn_process(http_conn_t *c, const char *data, size_t len, int from_pending);
static void conn_continue(http_conn_t *c);
static void conn_on_timer(uv_timer_t *t);
static void conn_start_linger(http_conn_t *c);
static void conn_read_start(http_conn_t *c);

http_server_t *http_server_new(uv_loop_t *loop, const config_t *cfg, const http_handler_t *h)
{
    http_server_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->handler = *h;
    http_env_init(&s->env, cfg);
    s->coros = coro_pool_new(HTTP_CORO_STACK, HTTP_CORO_FREE);
    if (s->coros == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void http_server_free(http_server_t *s)
{
    if (s == NULL)
        return;
    coro_pool_free(s->coros);
    http_env_free(&s->env);
    free(s);
}

void http_server_stats(const http_server_t *s, http_stats_t *st)
{
    *st = s->stats;
    st->mem_used = s->env.mem_used;
    st->mem_peak = s->env.mem_peak;
    st->mem_budget = s->env.mem_budget;
    st->mem_refused = s->env.mem_refused;
}

/* Free the parked bytes and give their memory back. */
static void conn_pending_free(http_conn_t *c)
{
    http_env_release(&c->server->env, c->pending_cap);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_cap = 0;
}

size_t http_conn_idle_bytes(void)
{
    return sizeof(http_conn_t);
}

size_t http_server_coroutines(const http_server_t *s)
{
    return coro_pool_active(s->coros);
}

http_env_t *http_server_env(http_server_t *s)
{
    return &s->env;
}

const struct sockaddr *http_conn_peer(const http_conn_t *c)
{
    return &c->peer.sa;
}

static void conn_unref(http_conn_t *c)
{
    http_server_t *s = c->server;

    if (--c->refs > 0)
        return;
    http_parser_free(&c->parser);
    conn_pending_free(c);
    free(c);
    s->nalloc--;
    if (s->stopping && s->nalloc == 0 && s->stop_cb) {
        void (*cb)(void *) = s->stop_cb;
        s->stop_cb = NULL;
        cb(s->stop_arg);
    }
}

static void conn_on_close(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(http_conn_t *c)
{
    http_server_t *s = c->server;

    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->stats.conns_open--;
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

/* Set the deadline of the current phase; the timer is moved only if it would fire too late. */
static void conn_set_deadline(http_conn_t *c, int ms)
{
    uint64_t now = uv_now(c->server->loop);

    if (ms <= 0) {
        c->deadline = 0;
        return;
    }
    c->deadline = now + (uint64_t)ms;
    if (c->timer_due == 0 || c->timer_due > c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, conn_on_timer, (uint64_t)ms, 0);
    }
}

static http_phase_t conn_phase(const http_conn_t *c)
{
    if (c->phase == HTTP_PH_LINGER)
        return HTTP_PH_LINGER;
    if (c->co || c->writes)
        return HTTP_PH_BUSY;
    if (c->parser.req == NULL)
        return HTTP_PH_IDLE;
    return c->parser.req->head_done ? HTTP_PH_BODY : HTTP_PH_HEAD;
}

/* Re-derive the phase after progress; `got_body` restarts the body gap timer. */
static void conn_update_phase(http_conn_t *c, int got_body)
{
    const config_t *cfg = c->server->cfg;
    http_phase_t ph = conn_phase(c);

    if (c->closing || ph == HTTP_PH_LINGER)
        return;
    if (ph == HTTP_PH_IDLE && c->server->stopping) {
        conn_close(c); /* stopping: a connection that became idle is done */
        return;
    }
    if (ph == c->phase) {
        if (ph == HTTP_PH_BODY && got_body)
            conn_set_deadline(c, cfg->body_timeout_ms);
        return;
    }
    c->phase = (uint8_t)ph;
    switch (ph) {
    case HTTP_PH_IDLE:
        conn_set_deadline(c, cfg->keepalive_timeout_ms);
        break;
    case HTTP_PH_HEAD:
        conn_set_deadline(c, cfg->header_timeout_ms);
        break;
    case HTTP_PH_BODY:
        conn_set_deadline(c, cfg->body_timeout_ms);
        break;
    case HTTP_PH_BUSY:
        /* A handler is bounded by the log; a draining answer by write_timeout_ms. */
        conn_set_deadline(c, c->writes ? cfg->write_timeout_ms : 0);
        break;
    default:
        break;
    }
}

static void conn_count_status(http_server_t *s, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        s->stats.responses[cls]++;
}

static void conn_on_write(uv_write_t *req, int status)
{
    http_write_t *w = (http_write_t *)req;
    http_conn_t *c = w->conn;

    http_env_release(&c->server->env, w->charged);
    free(w);
    c->writes--;
    if (status < 0 && !c->closing)
        conn_close(c);
    if (!c->closing && c->writes == 0) {
        if (c->close_after)
            conn_start_linger(c);
        else if (c->co == NULL)
            conn_continue(c);
    }
    conn_unref(c);
}

/* Write bufs now if the socket takes them, else queue a copy of what is left. */
static int conn_write(http_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
    size_t total = 0, skip;
    int n;

    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    c->server->stats.bytes_out += total;
    n = c->writes ? UV_EAGAIN : uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (n == (int)total)
        return 0;
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return -ECONNRESET;
    }
    skip = n > 0 ? (size_t)n : 0;
    http_write_t *w = malloc(sizeof(*w) + total - skip);
    if (w == NULL) {
        conn_close(c);
        return -ENOMEM;
    }
    /* The answer exists already: charged in any case, so new requests see the memory it holds. */
    w->charged = sizeof(*w) + total - skip;
    http_env_charge(&c->server->env, w->charged, 1);
    size_t o = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t l = bufs[i].len;
        const char *b = bufs[i].base;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(w->data + o, b + skip, l - skip);
        o += l - skip;
        skip = 0;
    }
    w->conn = c;
    uv_buf_t rest = uv_buf_init(w->data, (unsigned)o);
    int err = uv_write(&w->req, (uv_stream_t *)&c->tcp, &rest, 1, conn_on_write);
    if (err) {
        http_env_release(&c->server->env, w->charged);
        free(w);
        conn_close(c);
        return -ECONNRESET;
    }
    c->writes++;
    c->refs++;
    c->phase = HTTP_PH_BUSY;
    conn_set_deadline(c, c->server->cfg->write_timeout_ms);
    return 0;
}

int http_conn_respond(http_conn_t *c, const http_response_t *r)
{
    http_server_t *s = c->server;
    int keep, n;
    uv_buf_t bufs[2];
    unsigned nbufs = 1;

    if (c->answered)
        return -EALREADY;
    c->answered = 1;
    conn_count_status(s, r->status);
    if (c->closing)
        return -ECONNRESET;
    keep = c->keep_alive && !r->close && !s->stopping && !c->read_eof;
    n = http_format_head(s->wbuf, sizeof(s->wbuf), r, keep, c->http10);
    if (n < 0) {
        /* Extra headers too long for the buffer: a handler bug. Answer without them. */
        http_response_t plain = *r;
        plain.headers = NULL;
        plain.headers_len = 0;
        msg_warn("answer headers too long (%zu bytes), sent without them", r->headers_len);
        n = http_format_head(s->wbuf, sizeof(s->wbuf), &plain, keep, c->http10);
        if (n < 0)
            return n;
    }
    if (!keep)
        c->close_after = 1;
    if ((size_t)n + r->body_len <= sizeof(s->wbuf)) {
        /* One buffer, one write(2): the common case. */
        if (r->body_len)
            memcpy(s->wbuf + n, r->body, r->body_len);
        bufs[0] = uv_buf_init(s->wbuf, (unsigned)(n + (int)r->body_len));
    } else {
        bufs[0] = uv_buf_init(s->wbuf, (unsigned)n);
        bufs[1] = uv_buf_init((char *)r->body, (unsigned)r->body_len);
        nbufs = 2;
    }
    return conn_write(c, bufs, nbufs);
}

int http_conn_error(http_conn_t *c, int status, const char *reason, int verbose, int close)
{
    char body[512], hdr[64];
    http_response_t r = {.status = status, .close = close};

    if (verbose) {
        char esc[300];
        http_json_escape(esc, sizeof(esc), reason, strlen(reason));
        r.body_len = (size_t)snprintf(body, sizeof(body), "{\"status\":0,\"error\":\"%s\"}", esc);
        r.content_type = "application/json";
    } else {
        r.body_len = (size_t)snprintf(body, sizeof(body), "%s", reason);
        r.content_type = "text/plain; charset=utf-8";
    }
    if (r.body_len >= sizeof(body))
        r.body_len = sizeof(body) - 1;
    r.body = body;
    r.headers = hdr;
    if (status == 503)
        r.headers_len = (size_t)snprintf(hdr, sizeof(hdr),
                                         "Retry-After: %d\r\nCache-Control: no-cache, no-store\r\n",
                                         c->server->cfg->retry_after_s);
    else
        r.headers_len = (size_t)snprintf(hdr, sizeof(hdr), "Cache-Control: no-cache, no-store\r\n");
    return http_conn_respond(c, &r);
}

/* verbose=1 in the query of the request being read, as far as it was read. */
static int conn_verbose(const http_conn_t *c)
{
    const http_request_t *r = c->parser.req;
    http_str_t v;

    if (r == NULL)
        return 0;
    if (r->head_done) {
        v = http_query_raw(r->query.p, r->query.len, "verbose");
    } else {
        const char *q = memchr(r->buf, '?', r->len);
        if (q == NULL)
            return 0;
        v = http_query_raw(q + 1, r->len - (size_t)(q + 1 - r->buf), "verbose");
    }
    return v.p && v.len == 1 && v.p[0] == '1';
}

/* Answer an error of the HTTP layer (no handler involved) and close. */
static void conn_fail(http_conn_t *c, int status, const char *reason)
{
    char why[96];

    if (status == 413) {
        /* The reference API's wording, which clients and operators recognise. */
        snprintf(why, sizeof(why), "request exceeds max limit of %zu bytes",
                 c->server->cfg->max_body_bytes);
        reason = why;
    }
    c->answered = 0;
    if (c->parser.req && c->parser.req->head_done) {
        c->http10 = c->parser.req->http_major == 1 && c->parser.req->http_minor == 0;
    }
    c->keep_alive = 0;
    http_conn_error(c, status, reason, conn_verbose(c), 1);
    if (!c->closing && c->writes == 0)
        conn_start_linger(c);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    http_conn_t *c = req->data;
    free(req);
    if (status < 0 && !c->closing)
        conn_close(c);
    conn_unref(c);
}

/* Answered with Connection: close: send FIN, then discard input until EOF or the linger time. */
static void conn_start_linger(http_conn_t *c)
{
    uv_shutdown_t *sh;

    if (c->closing || c->phase == HTTP_PH_LINGER)
        return;
    c->phase = HTTP_PH_LINGER;
    if (c->read_eof) {
        conn_close(c);
        return;
    }
    sh = malloc(sizeof(*sh));
    if (sh == NULL || uv_shutdown(sh, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
        free(sh);
        conn_close(c);
        return;
    }
    sh->data = c;
    c->refs++;
    conn_pending_free(c);
    c->deadline = 0;
    conn_set_deadline(c, HTTP_LINGER_MS);
    conn_read_start(c);
}

static void conn_on_timer(uv_timer_t *t)
{
    http_conn_t *c = t->data;
    uint64_t now = uv_now(c->server->loop);

    c->timer_due = 0;
    if (c->closing || c->deadline == 0)
        return;
    if (now < c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, conn_on_timer, c->deadline - now, 0);
        return;
    }
    c->deadline = 0;
    switch (c->phase) {
    case HTTP_PH_HEAD:
    case HTTP_PH_BODY:
        c->server->stats.timeouts++;
        if (c->phase == HTTP_PH_HEAD)
            c->server->stats.header_timeouts++;
        else
            c->server->stats.body_timeouts++;
        conn_fail(c, 408,
                  c->phase == HTTP_PH_HEAD ? "request head timed out" : "request body timed out");
        break;
    case HTTP_PH_BUSY:
        if (c->writes) {
            c->server->stats.timeouts++;
            conn_close(c); /* the answer did not drain in write_timeout_ms */
        }
        break;
    default:
        conn_close(c); /* idle keep-alive or linger over */
        break;
    }
}

/* Run the handler of a complete request in a new coroutine. Returns 1 if it is still waiting. */
static void conn_coro_main(coro_t *co, void *arg)
{
    http_conn_t *c = arg;
    http_server_t *s = c->server;

    s->handler.handle(s->handler.data, co, c, c->req);
    if (!c->answered)
        http_conn_error(c, 500, "handler gave no answer", 0, 1);
    http_request_free(&s->env, c->req);
    c->req = NULL;
}

static int conn_start_handler(http_conn_t *c, http_request_t *req)
{
    http_server_t *s = c->server;

    c->req = req;
    c->co = coro_new(s->coros, conn_coro_main, c);
    if (c->co == NULL) {
        http_request_free(&s->env, req);
        c->req = NULL;
        http_conn_error(c, 503, "out of memory", 0, 1);
        return 0;
    }
    coro_set_data(c->co, c);
    c->refs++;
    if (coro_resume(c->co)) {
        c->phase = HTTP_PH_BUSY;
        c->deadline = 0;
        return 1;
    }
    c->co = NULL;
    c->refs--; /* cannot reach 0: the handles hold theirs during this callback */
    return 0;
}

void http_resume(coro_t *co)
{
    http_conn_t *c = coro_data(co);

    if (coro_resume(co))
        return;
    c->co = NULL;
    conn_continue(c);
    conn_unref(c);
}

/* A head is complete: let the application look at it before the body is read. */
static int conn_on_head(http_conn_t *c)
{
    http_server_t *s = c->server;
    http_request_t *r = c->parser.req;
    int has_body = r->chunked || r->content_length > 0;

    s->stats.requests++;
    c->answered = 0;
    c->early = 0;
    c->http10 = r->http_major == 1 && r->http_minor == 0;
    /* An answer given before the body is read closes: the body would have to be skipped. */
    c->keep_alive = r->keep_alive && !has_body;
    if (s->handler.head(s->handler.data, c, r) == HTTP_HEAD_ANSWERED) {
        c->early = 1;
        if (!c->answered)
            http_conn_error(c, 500, "handler gave no answer", 0, 1);
        if (has_body || c->close_after) {
            if (!c->closing && c->writes == 0)
                conn_start_linger(c);
            return -1;
        }
        http_parser_discard_body(&c->parser);
        return 0;
    }
    c->keep_alive = r->keep_alive;
    if (r->expect_continue && has_body) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        if (conn_write(c, &b, 1) != 0)
            return -1;
    }
    return 0;
}

/*
 * Park unparsed bytes until the connection is free again. They were read already, so they are
 * charged whatever the budget says (conn_on_alloc keeps such reads within the room left); the
 * buffer doubles while there is room, else grows to just what it must hold.
 */
static int conn_park(http_conn_t *c, const char *data, size_t len)
{
    http_env_t *env = &c->server->env;

    if (c->pending_len + len > c->pending_cap) {
        size_t need = c->pending_len + len;
        size_t ncap = c->pending_cap ? c->pending_cap : 4096;
        while (ncap < need)
            ncap *= 2;
        if (ncap - c->pending_cap > http_env_room(env))
            ncap = (need + 1023) & ~(size_t)1023;
        char *nb = realloc(c->pending, ncap);
        if (nb == NULL)
            return -ENOMEM;
        http_env_charge(env, ncap - c->pending_cap, 1);
        c->pending = nb;
        c->pending_cap = (uint32_t)ncap;
    }
    memcpy(c->pending + c->pending_len, data, len);
    c->pending_len += (uint32_t)len;
    return 0;
}

static void conn_process(http_conn_t *c, const char *data, size_t len, int from_pending)
{
    http_server_t *s = c->server;
    size_t used;

    while (!c->closing && c->phase != HTTP_PH_LINGER && !c->close_after && c->co == NULL &&
           c->writes == 0) {
        http_event_t ev = http_parser_feed(&c->parser, data, len, &used);
        data += used;
        len -= used;
        if (ev == HTTP_EV_MORE)
            break;
        if (ev == HTTP_EV_ERROR) {
            s->stats.parse_errors++;
            conn_fail(c, c->parser.error_status, c->parser.error_reason);
            break;
        }
        if (ev == HTTP_EV_HEAD) {
            if (conn_on_head(c) != 0)
                break;
            continue;
        }
        /* HTTP_EV_REQUEST */
        http_request_t *req = http_parser_take(&c->parser);
        if (c->early) {
            c->early = 0;
            http_request_free(&s->env, req);
            continue;
        }
        conn_start_handler(c, req);
    }
    if (from_pending) {
        if (len && !c->closing && c->phase != HTTP_PH_LINGER) {
            memmove(c->pending, data, len);
            c->pending_len = (uint32_t)len;
        } else {
            conn_pending_free(c);
        }
    } else if (len && !c->closing && c->phase != HTTP_PH_LINGER) {
        if (conn_park(c, data, len) != 0)
            conn_close(c);
    }
    /* An answer that closes the connection went out in full: start closing. */
    if (!c->closing && c->close_after && c->co == NULL && c->writes == 0)
        conn_start_linger(c);
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    http_conn_t *c = h->data;
    buf->base = c->server->rbuf;
    buf->len = sizeof(c->server->rbuf);
    if ((c->co || c->writes || c->pending_len) && c->phase != HTTP_PH_LINGER) {
        /* What is read now must be parked: read no more than the budget holds (0 = pause). */
        size_t room = http_env_room(&c->server->env);
        if (room < HTTP_PARK_MIN + 1024)
            buf->len = 0;
        else if (room - 1024 < buf->len)
            buf->len = room - 1024; /* conn_park may round its buffer up by up to 1 KiB */
    }
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    http_conn_t *c = stream->data;
    http_server_t *s = c->server;

    if (nread == 0 || c->closing)
        return;
    if (nread == UV_ENOBUFS) {
        /* conn_on_alloc found no room to park more: pause until the handler is done. */
        uv_read_stop(stream);
        c->reading = 0;
        s->stats.read_pauses++;
        return;
    }
    if (nread < 0) {
        uv_read_stop(stream);
        c->reading = 0;
        if (nread == UV_EOF && c->phase != HTTP_PH_LINGER) {
            c->read_eof = 1;
            /* A half-closed client may still wait for the answer of a request in flight. */
            if (c->co || c->writes)
                return;
            if (c->pending_len) {
                conn_continue(c);
                return;
            }
        } else if (c->co) {
            s->stats.client_gone++;
        }
        conn_close(c);
        return;
    }
    s->stats.bytes_in += (uint64_t)nread;
    c->used = 1;
    if (c->phase == HTTP_PH_LINGER)
        return; /* discard */
    if (c->co || c->writes || c->pending_len) {
        if (conn_park(c, buf->base, (size_t)nread) != 0) {
            conn_close(c);
            return;
        }
        if (c->pending_len >= HTTP_PENDING_MAX) {
            uv_read_stop(stream);
            c->reading = 0;
        }
        if (c->co || c->writes)
            return;
        conn_continue(c);
        return;
    }
    conn_process(c, buf->base, (size_t)nread, 0);
    conn_update_phase(c, 1);
}

static void conn_read_start(http_conn_t *c)
{
    if (!c->reading && !c->read_eof && !c->closing) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) == 0)
            c->reading = 1;
    }
}

/* The connection is free again: parse what was parked, read again, set the next deadline. */
static void conn_continue(http_conn_t *c)
{
    if (c->closing || c->co || c->writes)
        return;
    if (c->close_after) {
        conn_start_linger(c);
        return;
    }
    if (c->pending_len)
        conn_process(c, c->pending, c->pending_len, 1);
    if (c->closing || c->phase == HTTP_PH_LINGER)
        return;
    if (c->co == NULL && c->writes == 0 && c->close_after) {
        conn_start_linger(c);
        return;
    }
    if (c->pending_len < HTTP_PENDING_MAX)
        conn_read_start(c);
    if (c->read_eof && c->co == NULL && c->writes == 0 && c->pending_len == 0) {
        conn_close(c);
        return;
    }
    conn_update_phase(c, 0);
}

int http_server_accept(http_server_t *s, uv_stream_t *listener)
{
    http_conn_t *c = calloc(1, sizeof(*c));
    int err, len;

    if (c == NULL)
        return -ENOMEM;
    c->server = s;
    s->nalloc++;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2;
    http_parser_init(&c->parser, &s->env);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->stats.conns_open++;
    err = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (err) {
        conn_close(c);
        return err;
    }
    s->stats.conns_total++;
    len = sizeof(c->peer);
    if (uv_tcp_getpeername(&c->tcp, &c->peer.sa, &len) != 0)
        c->peer.sa.sa_family = AF_UNSPEC;
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->stopping || s->stats.conns_open > s->cfg->max_connections) {
        /* Over the limit: a short 503 rather than a silent reset, then close. */
        char busy[256];
        int n = snprintf(busy, sizeof(busy),
                         "HTTP/1.1 503 Service Unavailable\r\nServer: trackd\r\n"
                         "Content-Type: text/plain\r\nRetry-After: %d\r\n"
                         "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                         s->cfg->retry_after_s, sizeof(HTTP_BUSY_BODY) - 1, HTTP_BUSY_BODY);
        uv_buf_t b = uv_buf_init(busy, (unsigned)n);
        s->stats.conns_rejected++;
        conn_count_status(s, 503);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        conn_close(c);
        return 0;
    }
    c->phase = HTTP_PH_IDLE;
    /* Nothing sent yet: the first head must come within header_timeout_ms. */
    conn_set_deadline(c, s->cfg->header_timeout_ms);
    conn_read_start(c);
    if (!c->reading)
        conn_close(c);
    return 0;
}

/* 1 if the client's next bytes are already waiting in the kernel's socket buffer. */
static int conn_bytes_waiting(http_conn_t *c)
{
    uv_os_fd_t fd;
    char b;

    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return 0;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void http_server_stop(http_server_t *s, void (*cb)(void *arg), void *arg)
{
    http_conn_t *c, *next;

    s->stopping = 1;
    s->stop_cb = cb;
    s->stop_arg = arg;
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->co || c->writes || c->pending_len || !http_parser_idle(&c->parser))
            continue;
        /*
         * An idle connection is closed only if it is truly quiet. One that was accepted but has
         * not sent a byte yet, or whose next request is already in our socket buffer, is kept:
         * its request is still answered (with Connection: close), since the client cannot know
         * we are stopping. A silent one gets HTTP_STOP_GRACE_MS to speak.
         */
        if (c->used && !conn_bytes_waiting(c))
            conn_close(c);
        else
            conn_set_deadline(c, HTTP_STOP_GRACE_MS);
    }
    /* Closing connections are freed in close callbacks; the last one calls cb. */
    if (s->nalloc == 0 && s->stop_cb) {
        s->stop_cb = NULL;
        cb(arg);
    }
}

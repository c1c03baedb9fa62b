/*
 * The connection half of http.h: accepting, reading, parsing, keep-alive, pipelining, timeouts
 * and closing, on one libuv loop. Running each request's handler (through the loop's run queue,
 * in a coroutine) and writing its answer are in http_run.c; http_internal.h is what the two share.
 *
 * A connection handles one request at a time. While a handler runs (or waits in the run queue, or
 * an answer is still draining), bytes that arrive are parked in `pending` and parsed once it is
 * done, so answers go back in request order; past HTTP_PENDING_MAX the connection stops reading
 * (backpressure) rather than buffer more. An idle keep-alive connection holds only its handles,
 * its parser and this struct: reads land in one per-loop buffer and only the bytes of a request
 * in progress are copied (by the parser, into the request).
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
 * the client still sends for a while (up to HTTP_LINGER_MAX_BYTES), so the kernel does not reset
 * the connection and destroy the answer before the client reads it (a 413 sent before the body
 * was read, for instance).
 */
#include "trackd/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/msg.h"
#include "http_internal.h"

static void conn_process(http_conn_t *c, const char *data, size_t len, int from_pending);
static void conn_on_timer(uv_timer_t *t);
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
    if (s->run_open) {
        /* Freed without a stop (a worker that failed to start): finish the close here. */
        uv_close((uv_handle_t *)&s->run_check, NULL);
        uv_close((uv_handle_t *)&s->run_idle, NULL);
        uv_run(s->loop, UV_RUN_NOWAIT);
    }
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
    st->runnable = s->nrun;
    st->queue_delay_ns = http_server_queue_delay_ns(s);
    st->backlog_ns = http_server_backlog_ns(s);
}

static void http_run_closed(uv_handle_t *h)
{
    (void)h;
}

/* The server has no connection left while stopping: close the run timer, tell the owner. */
static void http_server_stopped(http_server_t *s)
{
    void (*cb)(void *) = s->stop_cb;

    if (cb == NULL)
        return;
    s->stop_cb = NULL;
    if (s->run_open) {
        s->run_open = 0;
        uv_close((uv_handle_t *)&s->run_check, http_run_closed);
        uv_close((uv_handle_t *)&s->run_idle, http_run_closed);
    }
    cb(s->stop_arg);
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

void http_server_trim(http_server_t *s)
{
    coro_pool_trim(s->coros);
}

http_env_t *http_server_env(http_server_t *s)
{
    return &s->env;
}

const struct sockaddr *http_conn_peer(const http_conn_t *c)
{
    return &c->peer.sa;
}

void http__conn_unref(http_conn_t *c)
{
    http_server_t *s = c->server;

    if (--c->refs > 0)
        return;
    http_parser_free(&c->parser);
    conn_pending_free(c);
    free(c);
    s->nalloc--;
    if (s->stopping && s->nalloc == 0)
        http_server_stopped(s);
}

static void conn_on_close(uv_handle_t *h)
{
    http__conn_unref(h->data);
}

void http__conn_close(http_conn_t *c)
{
    http_server_t *s = c->server;

    if (c->closing)
        return;
    c->closing = 1;
    http__unstarted_clear(c);
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
void http__conn_set_deadline(http_conn_t *c, int ms)
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

/* How long an idle connection may stay open at a graceful stop (see HTTP_STOP_GRACE_MS). */
static int http_stop_grace(const http_server_t *s)
{
    int half = s->cfg->shutdown_timeout_ms / 2;

    return half < 1 ? 1 : half < HTTP_STOP_GRACE_MS ? half : HTTP_STOP_GRACE_MS;
}

/* Body phase: the gap timeout, but never past the whole body's deadline. */
static void conn_set_body_deadline(http_conn_t *c)
{
    uint64_t now = uv_now(c->server->loop);
    uint64_t gap = (uint64_t)c->server->cfg->body_timeout_ms;
    uint64_t left = c->body_end > now ? c->body_end - now : 1;

    http__conn_set_deadline(c, (int)(left < gap ? left : gap));
}

static http_phase_t conn_phase(const http_conn_t *c)
{
    if (c->phase == HTTP_PH_LINGER)
        return HTTP_PH_LINGER;
    if (c->co || c->queued || c->writes)
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
    if (ph == c->phase) {
        if (ph == HTTP_PH_BODY && got_body)
            conn_set_body_deadline(c);
        return;
    }
    c->phase = (uint8_t)ph;
    switch (ph) {
    case HTTP_PH_IDLE:
        /* Stopping: its last answer (sent before the stop) allowed another request. */
        http__conn_set_deadline(c, c->server->stopping ? http_stop_grace(c->server)
                                                       : cfg->keepalive_timeout_ms);
        break;
    case HTTP_PH_HEAD:
        http__conn_set_deadline(c, cfg->header_timeout_ms);
        break;
    case HTTP_PH_BODY: {
        /* The whole body's deadline: two gaps, plus its length (or the largest) at the floor. */
        const http_request_t *r = c->parser.req;
        uint64_t len = r->has_length ? r->content_length : cfg->max_body_bytes;
        c->body_end = uv_now(c->server->loop) + 2 * (uint64_t)cfg->body_timeout_ms +
                      len * 1000 / HTTP_BODY_MIN_RATE;
        conn_set_body_deadline(c);
        break;
    }
    case HTTP_PH_BUSY:
        /* A handler is bounded by the log; a draining answer by write_timeout_ms. */
        http__conn_set_deadline(c, c->writes ? cfg->write_timeout_ms : 0);
        break;
    default:
        break;
    }
}

void http__count_status(http_server_t *s, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        s->stats.responses[cls]++;
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

    http__unstarted_clear(c);
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
        http__conn_start_linger(c);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    http_conn_t *c = req->data;
    free(req);
    if (status < 0 && !c->closing)
        http__conn_close(c);
    http__conn_unref(c);
}

/* Answered with Connection: close: send FIN, then discard input until EOF or the linger time. */
void http__conn_start_linger(http_conn_t *c)
{
    uv_shutdown_t *sh;

    if (c->closing || c->phase == HTTP_PH_LINGER)
        return;
    c->phase = HTTP_PH_LINGER;
    if (c->read_eof) {
        http__conn_close(c);
        return;
    }
    sh = malloc(sizeof(*sh));
    if (sh == NULL || uv_shutdown(sh, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
        free(sh);
        http__conn_close(c);
        return;
    }
    sh->data = c;
    c->refs++;
    conn_pending_free(c);
    /* Nothing more is parsed: the request in progress (and its body reservation) can go now. */
    http_parser_free(&c->parser);
    c->deadline = 0;
    http__conn_set_deadline(c, HTTP_LINGER_MS);
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
            http__conn_close(c); /* the answer did not drain in write_timeout_ms */
        }
        break;
    default:
        http__conn_close(c); /* idle keep-alive or linger over */
        break;
    }
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
                http__conn_start_linger(c);
            return -1;
        }
        http_parser_discard_body(&c->parser);
        return 0;
    }
    c->keep_alive = r->keep_alive;
    http__unstarted_set(c, r->len + (r->has_length ? r->content_length : 0));
    if (r->expect_continue && has_body) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        if (http__conn_write(c, &b, 1) != 0)
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
           !c->queued && c->writes == 0) {
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
        http__queue_handler(c, req);
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
            http__conn_close(c);
    }
    /* An answer that closes the connection went out in full: start closing. */
    if (!c->closing && c->close_after && c->co == NULL && !c->queued && c->writes == 0)
        http__conn_start_linger(c);
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    http_conn_t *c = h->data;
    buf->base = c->server->rbuf;
    buf->len = sizeof(c->server->rbuf);
    if ((c->co || c->queued || c->writes || c->pending_len) && c->phase != HTTP_PH_LINGER) {
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
            if (c->co || c->queued || c->writes)
                return;
            if (c->pending_len) {
                http__conn_continue(c);
                return;
            }
        } else if (c->co) {
            s->stats.client_gone++; /* (a queued one is counted when it leaves the queue) */
        }
        http__conn_close(c);
        return;
    }
    s->stats.bytes_in += (uint64_t)nread;
    if (c->phase == HTTP_PH_LINGER) {
        /* Discard, up to the cap; then stop reading and let the linger timer close. */
        c->dropped += (uint32_t)(nread < HTTP_LINGER_MAX_BYTES ? nread : HTTP_LINGER_MAX_BYTES);
        if (c->dropped >= HTTP_LINGER_MAX_BYTES) {
            uv_read_stop(stream);
            c->reading = 0;
        }
        return;
    }
    if (c->co || c->queued || c->writes || c->pending_len) {
        if (conn_park(c, buf->base, (size_t)nread) != 0) {
            http__conn_close(c);
            return;
        }
        if (c->pending_len >= HTTP_PENDING_MAX) {
            uv_read_stop(stream);
            c->reading = 0;
        }
        if (c->co || c->queued || c->writes)
            return;
        http__conn_continue(c);
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
void http__conn_continue(http_conn_t *c)
{
    if (c->closing || c->co || c->queued || c->writes)
        return;
    if (c->close_after) {
        http__conn_start_linger(c);
        return;
    }
    if (c->pending_len)
        conn_process(c, c->pending, c->pending_len, 1);
    if (c->closing || c->phase == HTTP_PH_LINGER)
        return;
    if (c->co == NULL && !c->queued && c->writes == 0 && c->close_after) {
        http__conn_start_linger(c);
        return;
    }
    if (c->pending_len < HTTP_PENDING_MAX)
        conn_read_start(c);
    if (c->read_eof && c->co == NULL && !c->queued && c->writes == 0 && c->pending_len == 0) {
        http__conn_close(c);
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
        http__conn_close(c);
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
        http__count_status(s, 503);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        http__conn_close(c);
        return 0;
    }
    c->phase = HTTP_PH_IDLE;
    /* Nothing sent yet: the first head must come within header_timeout_ms. */
    http__conn_set_deadline(c, s->cfg->header_timeout_ms);
    conn_read_start(c);
    if (!c->reading)
        http__conn_close(c);
    return 0;
}

void http_server_stop(http_server_t *s, void (*cb)(void *arg), void *arg)
{
    s->stopping = 1;
    s->stop_cb = cb;
    s->stop_arg = arg;
    for (http_conn_t *c = s->conns; c; c = c->next) {
        if (c->co || c->queued || c->writes || c->pending_len || !http_parser_idle(&c->parser))
            continue;
        /*
         * Idle: not closed now, since the client cannot know we are stopping and may be sending
         * its next request (or, just accepted, its first) right now. It gets the stop grace to
         * send one, which is answered with Connection: close, or to close the connection.
         */
        http__conn_set_deadline(c, http_stop_grace(s));
    }
    /* Closing connections are freed in close callbacks; the last one calls cb. */
    if (s->nalloc == 0)
        http_server_stopped(s);
}

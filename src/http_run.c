/*
 * The handler side of a connection (http.h): the run queue that starts handlers, their
 * coroutines, and writing answers. A complete request does not run its handler inside the read
 * callback that completed it: it joins the loop's run queue, drained in slices of
 * HTTP_RUN_SLICE_MS by a check handle after each poll (an idle handle keeps the poll from
 * blocking meanwhile; a zero timer would not do: libuv 1.44 runs a timer re-armed from its own
 * callback again in the same iteration). So however many requests complete at once, the loop gets
 * back to reading new heads within a slice.
 *
 * The queue is also where CPU overload shows: http_server_backlog_ns() is the larger of how long
 * the oldest queued request has waited and what the admitted, not yet started requests will cost
 * (their bytes times the CPU time per byte the handlers measured), and the head check sheds new
 * requests while it is over its limit, so the excess is answered 503 at once instead of waiting
 * its turn to time out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/msg.h"
#include "http_internal.h"

uint64_t http_server_backlog_ns(const http_server_t *s)
{
    uint64_t queued = http_server_queue_delay_ns(s);
    uint64_t work = s->ns_samples < HTTP_RUN_WARMUP
                        ? 0
                        : (uint64_t)((double)s->unstarted_bytes * s->ns_per_byte);
    return queued > work ? queued : work;
}

/* The connection's request no longer waits for the CPU (started, refused or gone). */
void http__unstarted_clear(http_conn_t *c)
{
    http_server_t *s = c->server;

    s->unstarted_bytes -= c->unstarted < s->unstarted_bytes ? c->unstarted : s->unstarted_bytes;
    c->unstarted = 0;
}

/* Count (or recount, once its size is known) the request as admitted and not started. */
void http__unstarted_set(http_conn_t *c, uint64_t bytes)
{
    http__unstarted_clear(c);
    c->unstarted = bytes + HTTP_RUN_REQ_BYTES;
    c->server->unstarted_bytes += c->unstarted;
}

uint64_t http_server_queue_delay_ns(const http_server_t *s)
{
    if (s->run_head == NULL)
        return 0;
    uint64_t now = uv_hrtime();
    return now > s->run_head->run_since ? now - s->run_head->run_since : 0;
}

static void conn_on_write(uv_write_t *req, int status)
{
    http_write_t *w = (http_write_t *)req;
    http_conn_t *c = w->conn;

    http_env_release(&c->server->env, w->charged);
    free(w);
    c->writes--;
    if (status < 0 && !c->closing)
        http__conn_close(c);
    if (!c->closing && c->writes == 0) {
        if (c->close_after)
            http__conn_start_linger(c);
        else if (c->co == NULL && !c->queued)
            http__conn_continue(c);
    }
    http__conn_unref(c);
}

/* Write bufs now if the socket takes them, else queue a copy of what is left. */
int http__conn_write(http_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
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
        http__conn_close(c);
        return -ECONNRESET;
    }
    skip = n > 0 ? (size_t)n : 0;
    http_write_t *w = malloc(sizeof(*w) + total - skip);
    if (w == NULL) {
        http__conn_close(c);
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
        http__conn_close(c);
        return -ECONNRESET;
    }
    c->writes++;
    c->refs++;
    c->phase = HTTP_PH_BUSY;
    http__conn_set_deadline(c, c->server->cfg->write_timeout_ms);
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
    http__count_status(s, r->status);
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
    return http__conn_write(c, bufs, nbufs);
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

/*
 * Start the handler of a request that left the run queue (the queue's reference on the
 * connection becomes the coroutine's). A client that went away meanwhile gets nothing run.
 * `t0` is the time it starts; returns the time it stopped running (one clock read per handler
 * serves both the cost sample and the run queue's slice).
 */
static uint64_t conn_run_handler(http_conn_t *c, uint64_t t0)
{
    http_server_t *s = c->server;
    uint64_t bytes = c->unstarted, t1;

    http__unstarted_clear(c);
    if (c->closing) {
        s->stats.client_gone++;
        http_request_free(&s->env, c->req);
        c->req = NULL;
        http__conn_unref(c);
        return t0;
    }
    c->co = coro_new(s->coros, conn_coro_main, c);
    if (c->co == NULL) {
        http_request_free(&s->env, c->req);
        c->req = NULL;
        http_conn_error(c, 503, "out of memory", 0, 1);
        http__conn_continue(c);
        http__conn_unref(c);
        return uv_hrtime();
    }
    coro_set_data(c->co, c);
    int waiting = coro_resume(c->co);
    t1 = uv_hrtime();
    /* Learn what a byte of request costs: the handler's first run is its CPU part. */
    if (bytes > 0) {
        double sample = (double)(t1 - t0) / (double)bytes;
        s->ns_per_byte = s->ns_samples == 0
                             ? sample
                             : s->ns_per_byte + HTTP_RUN_EWMA * (sample - s->ns_per_byte);
        if (s->ns_samples < HTTP_RUN_WARMUP)
            s->ns_samples++;
    }
    if (waiting)
        return t1; /* waiting (for the log): http_resume() goes on */
    c->co = NULL;
    http__conn_continue(c);
    http__conn_unref(c);
    return t1;
}

/* Run queued handlers for one slice; more are left for the next loop iteration. */
static void http_run_queue(uv_check_t *t)
{
    http_server_t *s = t->data;
    uint64_t start = uv_hrtime(), now = start;

    while (s->run_head) {
        http_conn_t *c = s->run_head;
        s->run_head = c->run_next;
        if (s->run_head == NULL)
            s->run_tail = NULL;
        s->nrun--;
        c->queued = 0;
        c->run_next = NULL;
        uint64_t waited = start > c->run_since ? start - c->run_since : 0;
        if (waited > s->stats.queue_delay_max_ns)
            s->stats.queue_delay_max_ns = waited;
        now = conn_run_handler(c, now);
        if (now - start >= (uint64_t)HTTP_RUN_SLICE_MS * 1000000)
            break;
    }
    if (s->run_head == NULL) {
        uv_check_stop(&s->run_check);
        uv_idle_stop(&s->run_idle);
    }
}

/* Idle callback: nothing to do, its being active is what keeps the poll from blocking. */
static void http_run_idle(uv_idle_t *h)
{
    (void)h;
}

/* A complete request: queue its handler (the connection is busy until it has answered). */
void http__queue_handler(http_conn_t *c, http_request_t *req)
{
    http_server_t *s = c->server;

    c->req = req;
    c->queued = 1;
    /* A request without a body is queued as its head completes: that clock read serves. */
    c->run_since = req->body_len == 0 && req->start_ns ? req->start_ns : uv_hrtime();
    http__unstarted_set(c, req->len + req->body_len);
    c->run_next = NULL;
    if (s->run_tail)
        s->run_tail->run_next = c;
    else
        s->run_head = c;
    s->run_tail = c;
    s->nrun++;
    c->refs++; /* the queue's; the coroutine's once it runs */
    c->phase = HTTP_PH_BUSY;
    c->deadline = 0;
    if (!s->run_open) {
        uv_check_init(s->loop, &s->run_check);
        uv_idle_init(s->loop, &s->run_idle);
        s->run_check.data = s;
        s->run_open = 1;
    }
    if (!uv_is_active((uv_handle_t *)&s->run_check)) {
        uv_check_start(&s->run_check, http_run_queue);
        uv_idle_start(&s->run_idle, http_run_idle);
    }
}

void http_resume(coro_t *co)
{
    http_conn_t *c = coro_data(co);

    if (coro_resume(co))
        return;
    c->co = NULL;
    http__conn_continue(c);
    http__conn_unref(c);
}

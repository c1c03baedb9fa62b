/*
 * trackbench's load loop (see bench_client.h). Connections live in one array; each is in exactly
 * one state, and the lists it may sit on follow from that state:
 *   FREE        slot unused                         free stack
 *   BACKOFF     failed, reconnects after a pause    backoff list (FIFO: one fixed pause)
 *   CONNECTING  connect in progress                 deadline list
 *   IDLE        open loop: connected, nothing to do idle stack (lazily cleaned)
 *   BUSY        request written, answer awaited     deadline list
 *   CLOSING     uv_close() called
 * Every connect and request gets the same timeout, so the deadline list is in deadline order and
 * a 10 ms tick only ever looks at its head. A request is "issued" when a connection is assigned to
 * it, with its intended time: now in closed loop, its slot in the schedule in open loop. Nothing
 * on the request path allocates: templates are patched in place and written with uv_try_write();
 * only a write the socket could not take whole borrows a buffer from a reused pool. Responses go
 * through llhttp and keep just the status, Retry-After, Connection and the first bytes of body.
 */
#include "trackd/bench_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <llhttp.h>
#include <uv.h>

/* Granularity of timeouts, ramp steps and reconnects. */
#define BENCH_TICK_MS 10
/* Pause before a connection that failed is tried again, so a dead server is not spun on. */
#define BENCH_RECONNECT_MS 100
/* After the stop, answers in flight are awaited at most timeout + this long. */
#define BENCH_DRAIN_SLACK_MS 1000
#define BENCH_PROGRESS_MS 1000
#define BENCH_READ_BUF (64 * 1024)
#define BENCH_LEDGER_BUF (256 * 1024)
/* File descriptors kept free for the loop, the ledger and the pipe to the parent. */
#define BENCH_FD_RESERVE 64
#define BENCH_HNAME_MAX 16
#define BENCH_HVAL_MAX 16
#define BENCH_BODY_KEEP 64
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

enum { CONN_FREE, CONN_BACKOFF, CONN_CONNECTING, CONN_IDLE, CONN_BUSY, CONN_CLOSING };

typedef struct conn_s conn_t;
typedef struct bench_s bench_t;

typedef struct {
    conn_t *head, *tail;
} conn_list_t;

struct conn_s {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    llhttp_t parser;
    bench_t *b;
    conn_t *prev, *next; /* deadline or backoff list */
    conn_t *link;        /* free or idle stack */
    bench_tmpl_t *tmpl;  /* of the request in flight */
    char *wbuf;          /* pool buffer of an unfinished write */
    uint64_t intended;   /* when the request in flight was due */
    uint64_t deadline;   /* connect/request deadline, or reconnect time in BACKOFF */
    uint64_t first_id;   /* insert-id counter of its first event */
    uint32_t target;
    uint8_t state;
    uint8_t listed;   /* on the deadline or backoff list */
    uint8_t on_idle;  /* on the idle stack (maybe stale) */
    uint8_t pending;  /* issued, waits for the connection to send */
    uint8_t writing;  /* uv_write() outstanding */
    uint8_t answered; /* llhttp saw a whole response */
    uint8_t failed;   /* closing after an error: reconnect after a pause */
    uint8_t reuse;    /* answered while uv_write() was outstanding: ready once it completes */
    uint8_t hname_len, hval_len, hname_over, body_len;
    int32_t retry_after;
    char hname[BENCH_HNAME_MAX];
    char hval[BENCH_HVAL_MAX];
    char body[BENCH_BODY_KEEP + 1];
};

struct bench_s {
    const bench_opts_t *o;
    uv_loop_t loop;
    uv_timer_t tick, dispatch_timer, phase_timer, progress_timer;
    uv_signal_t sigint, sigterm;
    llhttp_settings_t settings;
    conn_t *conns;
    size_t nconns;
    conn_t *free_top, *idle_top;
    conn_list_t deadlines, backoff;
    size_t open, active, busy;
    size_t limit, limit_from, limit_to;
    uint64_t ramp_ns;
    int closed_loop, running, finished, stops;
    uint64_t t_start, t_measure, t_stop, t_last, drain_until, timeout_ns;
    uint64_t t_end; /* scheduled end (warmup + duration), UINT64_MAX if none */
    uint64_t issued, max_issue;
    double interval_ns;
    uint64_t next_k;
    uint32_t rr;       /* round-robin over targets */
    uint32_t next_src; /* round-robin over loopback source addresses */
    /* templates: ntargets x nkinds, picked by cumulative weight */
    bench_tmpl_t *tmpls;
    size_t nkinds;
    uint64_t cum[BENCH_EP_COUNT * BENCH_SHAPE_COUNT];
    uint64_t wtotal;
    size_t max_req;
    char **pool;
    size_t pool_n, pool_cap;
    char prefix[BENCH_ID_PREFIX_LEN + 1];
    uint64_t next_id;
    uint64_t rng;
    int ledger_fd, ledger_err;
    char *ledger_buf;
    size_t ledger_len;
    bench_progress_cb cb;
    void *cb_arg;
    unsigned ticks;
    uint64_t last_progress;
    bench_stats_t total, sec;
    char readbuf[BENCH_READ_BUF];
};

/* --- stats ------------------------------------------------------------------------------ */

void bench_stats_init(bench_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->retry_after_min = UINT64_MAX;
    hist_init(&s->latency);
}

/* bench_stats_merge() adds the leading counters as an array of uint64_t. */
_Static_assert(offsetof(bench_stats_t, status) % sizeof(uint64_t) == 0, "counters are uint64_t");

void bench_stats_merge(bench_stats_t *dst, const bench_stats_t *src)
{
    /* Every field up to `status` is a uint64_t counter; min and max are fixed up after. */
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    uint64_t rmin =
        dst->retry_after_min < src->retry_after_min ? dst->retry_after_min : src->retry_after_min;
    uint64_t rmax =
        dst->retry_after_max > src->retry_after_max ? dst->retry_after_max : src->retry_after_max;
    for (size_t i = 0; i < offsetof(bench_stats_t, status) / sizeof(uint64_t); i++)
        d[i] += s[i];
    dst->retry_after_min = rmin;
    dst->retry_after_max = rmax;
    for (size_t i = 0; i < BENCH_STATUS_MAX; i++)
        dst->status[i] += src->status[i];
    if (src->elapsed_ns > dst->elapsed_ns)
        dst->elapsed_ns = src->elapsed_ns;
    dst->cpu_ns += src->cpu_ns;
    dst->conns_open += src->conns_open;
    dst->procs += src->procs;
    hist_merge(&dst->latency, &src->latency);
}

/* The counters of a response go to both the run's and the current second's stats. */
#define BOTH(b, field, n)                                                                          \
    do {                                                                                           \
        (b)->total.field += (n);                                                                   \
        (b)->sec.field += (n);                                                                     \
    } while (0)

/* --- small helpers ---------------------------------------------------------------------- */

static uint64_t rng_next(bench_t *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

static size_t share(uint64_t total, int proc, int procs)
{
    return (size_t)(total / (uint64_t)procs + ((uint64_t)proc < total % (uint64_t)procs));
}

static void list_push(conn_list_t *l, conn_t *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    c->listed = 1;
}

static void list_remove(conn_list_t *l, conn_t *c)
{
    if (!c->listed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->listed = 0;
}

static uint64_t intended_at(const bench_t *b, uint64_t k)
{
    return b->t_start + (uint64_t)((double)k * b->interval_ns);
}

static int can_issue(const bench_t *b)
{
    return b->running && (b->max_issue == 0 || b->issued < b->max_issue);
}

/* Open loop: request k exists (within the request count and before the scheduled end). */
static int k_due_by(const bench_t *b, uint64_t k, uint64_t until)
{
    uint64_t at = intended_at(b, k);
    return (b->max_issue == 0 || k < b->max_issue) && at < b->t_end && at <= until;
}

/* Requests remain to be issued: a new connection has a use. */
static int more_work(const bench_t *b)
{
    return b->closed_loop ? can_issue(b) : b->running && k_due_by(b, b->next_k, UINT64_MAX);
}

/* --- ledger ----------------------------------------------------------------------------- */

static void ledger_flush(bench_t *b)
{
    size_t off = 0;
    while (off < b->ledger_len) {
        ssize_t n = write(b->ledger_fd, b->ledger_buf + off, b->ledger_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            if (!b->ledger_err)
                fprintf(stderr, "trackbench: ledger write: %s\n", strerror(e));
            b->ledger_err = -e;
            break;
        }
        off += (size_t)n;
    }
    b->ledger_len = 0;
}

/* Whole lines only, and only from a full buffer: processes appending to one file never mix. */
static void ledger_ids(bench_t *b, uint64_t first, size_t n)
{
    if (b->ledger_fd < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (b->ledger_len + BENCH_ID_LEN + 1 > BENCH_LEDGER_BUF)
            ledger_flush(b);
        bench_id_format(b->ledger_buf + b->ledger_len, b->prefix, first + i);
        b->ledger_buf[b->ledger_len + BENCH_ID_LEN] = '\n';
        b->ledger_len += BENCH_ID_LEN + 1;
    }
    BOTH(b, ledgered, n);
}

/* --- write buffers ---------------------------------------------------------------------- */

static char *pool_get(bench_t *b)
{
    if (b->pool_n > 0)
        return b->pool[--b->pool_n];
    return malloc(b->max_req);
}

static void pool_put(bench_t *b, char *p)
{
    if (p == NULL)
        return;
    if (b->pool_n == b->pool_cap) {
        size_t cap = b->pool_cap ? b->pool_cap * 2 : 16;
        char **np = realloc(b->pool, cap * sizeof(*np));
        if (np == NULL) {
            free(p); /* keeping it was only an optimisation */
            return;
        }
        b->pool = np;
        b->pool_cap = cap;
    }
    b->pool[b->pool_n++] = p;
}

/* --- connection lifecycle --------------------------------------------------------------- */

static void conn_open(conn_t *c);
static void conn_ready(conn_t *c);
static void dispatch(bench_t *b, uint64_t until);
static void maybe_finish(bench_t *b);

static void conn_free(conn_t *c)
{
    bench_t *b = c->b;
    c->state = CONN_FREE;
    b->active--;
    c->link = b->free_top;
    b->free_top = c;
}

static void issue(conn_t *c, uint64_t intended)
{
    bench_t *b = c->b;
    c->intended = intended;
    c->pending = 1;
    b->issued++;
    b->busy++;
    BOTH(b, issued, 1);
}

/* Start (or restart) an active slot that holds no handle. */
static void conn_launch(conn_t *c)
{
    bench_t *b = c->b;
    int per_request = b->closed_loop && !b->o->keepalive;
    if (!more_work(b)) {
        conn_free(c);
        return;
    }
    if (per_request)
        issue(c, uv_hrtime());
    conn_open(c);
}

static void on_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    bench_t *b = c->b;
    b->open--;
    pool_put(b, c->wbuf);
    c->wbuf = NULL;
    if (b->finished) {
        c->state = CONN_FREE;
        b->active--;
        return;
    }
    int maintained = b->closed_loop || b->o->keepalive;
    if (b->running && maintained && b->active <= b->limit) {
        if (c->failed) {
            c->state = CONN_BACKOFF;
            c->deadline = uv_hrtime() + BENCH_RECONNECT_MS * NS_PER_MS;
            list_push(&b->backoff, c);
        } else {
            c->state = CONN_BACKOFF; /* no handle: conn_launch() may free or open it */
            conn_launch(c);
        }
    } else {
        conn_free(c);
    }
    if (!maintained)
        dispatch(b, uv_hrtime());
    maybe_finish(b);
}

/* Close `c`; a request it carried is over (the caller has counted how it ended). */
static void conn_close(conn_t *c, int failed)
{
    bench_t *b = c->b;
    if (c->state == CONN_CLOSING || c->state == CONN_FREE || c->state == CONN_BACKOFF)
        return;
    list_remove(&b->deadlines, c);
    if (c->pending || c->state == CONN_BUSY)
        b->busy--;
    c->pending = 0;
    c->failed = (uint8_t)failed;
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static bench_tmpl_t *pick_template(bench_t *b, uint32_t target)
{
    uint64_t r = rng_next(b) % b->wtotal;
    size_t k = 0;
    while (b->cum[k] <= r)
        k++;
    return &b->tmpls[target * b->nkinds + k];
}

static void on_write(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    bench_t *b = c->b;
    int reuse = c->reuse;
    c->writing = c->reuse = 0;
    pool_put(b, c->wbuf);
    c->wbuf = NULL;
    if (status == UV_ECANCELED || c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        if (c->state == CONN_BUSY)
            BOTH(b, err_write, 1);
        conn_close(c, c->state == CONN_BUSY);
    } else if (reuse && c->state == CONN_IDLE) {
        conn_ready(c);
    }
    maybe_finish(b);
}

/* Write the request issued to the connected `c`. */
static void conn_send(conn_t *c)
{
    bench_t *b = c->b;
    bench_tmpl_t *t = pick_template(b, c->target);
    if (t->nslots > 0) {
        c->first_id = b->next_id;
        b->next_id += t->nslots;
        bench_tmpl_patch(t, b->prefix, c->first_id);
    }
    c->tmpl = t;
    c->pending = 0;
    c->state = CONN_BUSY;
    c->answered = 0;
    c->deadline = uv_hrtime() + b->timeout_ns;
    list_push(&b->deadlines, c);
    BOTH(b, sent, 1);
    BOTH(b, events_sent, t->events);
    BOTH(b, bytes_sent, t->len);

    uv_buf_t buf = uv_buf_init(t->buf, (unsigned)t->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        BOTH(b, err_write, 1);
        conn_close(c, 1);
        return;
    }
    if ((size_t)n == t->len)
        return;
    /* The socket took part of it: the rest must outlive the next patch of the template. */
    c->wbuf = pool_get(b);
    if (c->wbuf == NULL) {
        BOTH(b, err_write, 1);
        conn_close(c, 1);
        return;
    }
    memcpy(c->wbuf, t->buf + n, t->len - (size_t)n);
    buf = uv_buf_init(c->wbuf, (unsigned)(t->len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        BOTH(b, err_write, 1);
        conn_close(c, 1);
        return;
    }
    c->writing = 1;
}

static int body_ok(conn_t *c)
{
    const char *p = c->body;
    c->body[c->body_len] = '\0';
    while (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t')
        p++;
    if (p[0] == '1' && (p[1] == '\0' || p[1] == '\n' || p[1] == '\r'))
        return 1;
    if (p[0] != '{')
        return 0;
    return strstr(p, "\"status\":1") || strstr(p, "\"status\": 1") ||
           strstr(p, "\"status\":\"OK\"") || strstr(p, "\"status\": \"OK\"");
}

/* A whole response arrived on `c`: count it, then reuse or close the connection. */
static void conn_response(conn_t *c, int eof)
{
    bench_t *b = c->b;
    unsigned status = c->parser.status_code;
    int keep = !eof && b->o->keepalive && llhttp_should_keep_alive(&c->parser);

    c->answered = 0;
    if (status >= BENCH_STATUS_MAX)
        status = BENCH_STATUS_MAX - 1;
    BOTH(b, status[status], 1);
    if (c->retry_after >= 0) {
        uint64_t ra = (uint64_t)c->retry_after;
        BOTH(b, retry_after_n, 1);
        BOTH(b, retry_after_sum, ra);
        bench_stats_t *both[2] = {&b->total, &b->sec};
        for (int i = 0; i < 2; i++) {
            if (ra < both[i]->retry_after_min)
                both[i]->retry_after_min = ra;
            if (ra > both[i]->retry_after_max)
                both[i]->retry_after_max = ra;
        }
    }
    if (c->state != CONN_BUSY) {
        /* e.g. a 408 on an idle keep-alive connection, or a 503 on accept */
        BOTH(b, unsolicited, 1);
        conn_close(c, 0);
        return;
    }
    list_remove(&b->deadlines, c);
    b->busy--;
    c->state = CONN_IDLE;
    uint64_t now = uv_hrtime();
    uint64_t lat = now > c->intended ? now - c->intended : 0;
    hist_record(&b->total.latency, lat);
    hist_record(&b->sec.latency, lat);
    BOTH(b, completed, 1);
    if (status >= 200 && status < 300) {
        if (body_ok(c)) {
            BOTH(b, ok, 1);
            BOTH(b, events_ok, c->tmpl->events);
            ledger_ids(b, c->first_id, c->tmpl->nslots);
        } else {
            BOTH(b, rejected_2xx, 1);
        }
    }
    /* The write callback may still be queued although the server has read it all (it answered);
     * the connection is reused once it has run. */
    if (!keep)
        conn_close(c, 0);
    else if (c->writing)
        c->reuse = 1;
    else
        conn_ready(c);
    maybe_finish(b);
}

/* `c` is connected and has nothing to do. */
static void conn_ready(conn_t *c)
{
    bench_t *b = c->b;
    c->state = CONN_IDLE;
    if (b->closed_loop) {
        if (can_issue(b)) {
            issue(c, uv_hrtime());
            conn_send(c);
        } else {
            conn_close(c, 0);
        }
        return;
    }
    if (!b->running) {
        conn_close(c, 0);
        return;
    }
    if (k_due_by(b, b->next_k, uv_hrtime())) {
        issue(c, intended_at(b, b->next_k++));
        conn_send(c);
        return;
    }
    if (!c->on_idle) {
        c->on_idle = 1;
        c->link = b->idle_top;
        b->idle_top = c;
    }
}

/* --- llhttp callbacks: keep only what the report needs ---------------------------------- */

static int on_msg_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    c->hname_len = c->hval_len = c->hname_over = 0;
    c->body_len = 0;
    c->retry_after = -1;
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    for (size_t i = 0; i < len; i++) {
        if (c->hname_len == BENCH_HNAME_MAX) {
            c->hname_over = 1;
            break;
        }
        char ch = at[i];
        c->hname[c->hname_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    return 0;
}

static int is_retry_after(const conn_t *c)
{
    return !c->hname_over && c->hname_len == 11 && memcmp(c->hname, "retry-after", 11) == 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (!is_retry_after(c))
        return 0;
    for (size_t i = 0; i < len && c->hval_len < BENCH_HVAL_MAX - 1; i++)
        c->hval[c->hval_len++] = at[i];
    return 0;
}

static int on_hvalue_done(llhttp_t *p)
{
    conn_t *c = p->data;
    if (is_retry_after(c)) {
        /* Seconds; an HTTP-date is seen but counted as 0. */
        long v = 0;
        for (size_t i = 0; i < c->hval_len && c->hval[i] >= '0' && c->hval[i] <= '9'; i++)
            v = v * 10 + (c->hval[i] - '0');
        c->retry_after = (int32_t)(v > 86400 ? 86400 : v);
    }
    c->hname_len = c->hval_len = c->hname_over = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    size_t room = BENCH_BODY_KEEP - c->body_len;
    if (len > room)
        len = room;
    memcpy(c->body + c->body_len, at, len);
    c->body_len = (uint8_t)(c->body_len + len);
    return 0;
}

static int on_msg_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->answered = 1;
    return HPE_PAUSED; /* handled by the read callback, which may close or reuse `c` */
}

/* --- libuv callbacks -------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    /* One buffer for all: a read callback consumes its bytes before the next read. */
    *buf = uv_buf_init(c->b->readbuf, sizeof(c->b->readbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    bench_t *b = c->b;
    if (c->state == CONN_CLOSING)
        return;
    if (nread > 0) {
        BOTH(b, bytes_recv, (uint64_t)nread);
        llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
        if (c->answered) {
            /* Bytes past the response would be an answer to nothing: ignore them. */
            llhttp_resume(&c->parser);
            conn_response(c, 0);
            return;
        }
        if (err != HPE_OK) {
            if (c->state == CONN_BUSY)
                BOTH(b, err_parse, 1);
            conn_close(c, 1);
        }
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_EOF) {
        /* A response delimited by the end of the connection ends here. */
        llhttp_finish(&c->parser);
        if (c->answered) {
            conn_response(c, 1);
            return;
        }
    }
    if (c->state == CONN_BUSY) {
        BOTH(b, err_read, 1);
        conn_close(c, 1);
    } else {
        conn_close(c, 0); /* the server closed an idle keep-alive connection */
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    bench_t *b = c->b;
    if (status == UV_ECANCELED || c->state != CONN_CONNECTING)
        return;
    list_remove(&b->deadlines, c);
    if (status < 0) {
        BOTH(b, err_connect, 1);
        conn_close(c, 1);
        return;
    }
    BOTH(b, connects, 1);
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        BOTH(b, err_connect, 1);
        conn_close(c, 1);
        return;
    }
    c->state = CONN_IDLE;
    if (c->pending)
        conn_send(c);
    else
        conn_ready(c);
}

/*
 * A loopback IPv4 target gets its connections from 127.0.0.1 .. 127.0.0.N in turn. Each source
 * address has its own ephemeral ports towards the server's address: 20,000 connections from one
 * address fill most of the range (32768-60999), and the kernel's search for a free port then
 * makes every connect() cost a millisecond. IP_BIND_ADDRESS_NO_PORT leaves the port to connect(),
 * which only needs the 4-tuple to be unique.
 */
static int bind_source(bench_t *b, conn_t *c, const bench_target_t *t)
{
    const struct sockaddr_in *dst = (const struct sockaddr_in *)&t->addr;
    if (b->o->source_addrs <= 1 || t->addr.ss_family != AF_INET ||
        (ntohl(dst->sin_addr.s_addr) >> 24) != 127)
        return 0;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + b->next_src++ % b->o->source_addrs);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&src, sizeof(src)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc != 0)
        close(fd);
    return rc;
}

/* Open a connection for the active slot `c`. */
static void conn_open(conn_t *c)
{
    bench_t *b = c->b;
    const bench_target_t *t;
    c->target = b->rr++ % (uint32_t)b->o->ntargets;
    t = &b->o->targets[c->target];
    c->failed = c->answered = c->writing = c->reuse = 0;
    if (uv_tcp_init(&b->loop, &c->tcp) != 0) {
        BOTH(b, err_connect, 1);
        if (c->pending) {
            c->pending = 0;
            b->busy--;
        }
        c->state = CONN_BACKOFF;
        c->deadline = uv_hrtime() + BENCH_RECONNECT_MS * NS_PER_MS;
        list_push(&b->backoff, c);
        return;
    }
    c->tcp.data = c;
    c->creq.data = c;
    b->open++;
    c->state = CONN_CONNECTING;
    llhttp_init(&c->parser, HTTP_RESPONSE, &b->settings);
    c->parser.data = c;
    int rc = bind_source(b, c, t);
    if (rc == 0)
        rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&t->addr, on_connect);
    if (rc != 0) {
        BOTH(b, err_connect, 1);
        conn_close(c, 1);
        return;
    }
    c->deadline = uv_hrtime() + b->timeout_ns;
    list_push(&b->deadlines, c);
}

/* --- scheduling ------------------------------------------------------------------------- */

static void on_dispatch_timer(uv_timer_t *t)
{
    bench_t *b = t->data;
    dispatch(b, uv_hrtime());
    maybe_finish(b);
}

/* Open loop: send every request due by `until` that a connection can take. */
static void dispatch(bench_t *b, uint64_t until)
{
    if (b->closed_loop || !b->running)
        return;
    while (k_due_by(b, b->next_k, until)) {
        conn_t *c;
        if (b->o->keepalive) {
            while ((c = b->idle_top) != NULL) {
                b->idle_top = c->link;
                c->on_idle = 0;
                if (c->state == CONN_IDLE)
                    break;
            }
            if (c == NULL)
                break; /* all busy: the backlog waits, its latency counting */
            issue(c, intended_at(b, b->next_k++));
            conn_send(c);
        } else {
            if (b->active >= b->limit || (c = b->free_top) == NULL)
                break;
            b->free_top = c->link;
            b->active++;
            issue(c, intended_at(b, b->next_k++));
            conn_open(c);
        }
    }
    if (b->running && k_due_by(b, b->next_k, UINT64_MAX)) {
        uint64_t next = intended_at(b, b->next_k), now = uv_hrtime();
        uint64_t ms = next > now ? (next - now + NS_PER_MS - 1) / NS_PER_MS : 0;
        /* Due but blocked requests are retried when a connection frees up, and on the tick. */
        if (next <= now)
            ms = BENCH_TICK_MS;
        uv_timer_start(&b->dispatch_timer, on_dispatch_timer, ms, 0);
    }
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        if (h->type == UV_TCP) {
            conn_t *c = h->data;
            c->state = CONN_CLOSING;
            uv_close(h, on_close);
        } else {
            uv_close(h, NULL);
        }
    }
}

static void finish(bench_t *b)
{
    if (b->finished)
        return;
    b->finished = 1;
    b->t_last = uv_hrtime();
    for (size_t i = 0; i < b->nconns; i++) {
        conn_t *c = &b->conns[i];
        if (c->state == CONN_BACKOFF) {
            list_remove(&b->backoff, c);
            c->state = CONN_FREE;
            b->active--;
        }
    }
    uv_walk(&b->loop, close_walk, NULL);
}

/* Stop issuing; answers in flight are still awaited. `at` is the scheduled end. */
static void stop(bench_t *b, uint64_t at)
{
    if (!b->running)
        return;
    if (!b->closed_loop) {
        dispatch(b, at > 0 ? at - 1 : 0);
        /* Due before the end but never sent: the server was too slow for the rate. */
        uint64_t k = b->next_k;
        while (k_due_by(b, k, at > 0 ? at - 1 : 0))
            k++;
        BOTH(b, unsent, k - b->next_k);
    }
    b->running = 0;
    b->t_stop = at;
    b->drain_until = uv_hrtime() + b->timeout_ns + BENCH_DRAIN_SLACK_MS * NS_PER_MS;
    uv_timer_stop(&b->dispatch_timer);
    for (size_t i = 0; i < b->nconns; i++) {
        conn_t *c = &b->conns[i];
        if (c->state == CONN_BACKOFF) {
            list_remove(&b->backoff, c);
            conn_free(c);
        } else if (c->state == CONN_IDLE || (c->state == CONN_CONNECTING && !c->pending)) {
            conn_close(c, 0);
        }
    }
    maybe_finish(b);
}

static void maybe_finish(bench_t *b)
{
    if (b->finished)
        return;
    if (b->running) {
        int done = b->closed_loop ? (b->max_issue && b->issued >= b->max_issue)
                                  : !k_due_by(b, b->next_k, UINT64_MAX);
        if (done && b->busy == 0)
            stop(b, uv_hrtime());
        return;
    }
    if (b->busy == 0)
        finish(b);
}

/*
 * Open connections up to the current limit, while there is work for them (more_work() is checked
 * each time: a closed-loop launch without keep-alive issues a request).
 */
static void fill_connections(bench_t *b)
{
    conn_t *c;
    if (!b->closed_loop && !b->o->keepalive)
        return; /* open loop without keep-alive connects per request, in dispatch() */
    while (b->active < b->limit && (c = b->free_top) != NULL && more_work(b)) {
        b->free_top = c->link;
        b->active++;
        c->state = CONN_BACKOFF;
        conn_launch(c);
    }
}

static void on_tick(uv_timer_t *t)
{
    bench_t *b = t->data;
    uint64_t now = uv_hrtime();
    conn_t *c;

    while ((c = b->deadlines.head) != NULL && c->deadline <= now) {
        if (c->state == CONN_CONNECTING)
            BOTH(b, err_connect, 1);
        else
            BOTH(b, err_timeout, 1);
        conn_close(c, 1);
    }
    while (b->running && (c = b->backoff.head) != NULL && c->deadline <= now) {
        list_remove(&b->backoff, c);
        conn_launch(c);
    }
    if (b->running && b->ramp_ns > 0) {
        uint64_t el = now - b->t_start;
        size_t span = b->limit_to - b->limit_from;
        b->limit = el >= b->ramp_ns
                       ? b->limit_to
                       : b->limit_from + (size_t)((double)span * (double)el / (double)b->ramp_ns);
    }
    fill_connections(b);
    dispatch(b, now);
    if (!b->running && !b->finished && now >= b->drain_until)
        finish(b);
    maybe_finish(b);
}

static void on_progress(uv_timer_t *t)
{
    bench_t *b = t->data;
    uint64_t now = uv_hrtime();
    b->sec.elapsed_ns = now - b->last_progress;
    b->sec.conns_open = b->open;
    b->sec.procs = 1;
    b->last_progress = now;
    if (b->cb)
        b->cb(&b->sec, ++b->ticks, b->cb_arg);
    bench_stats_init(&b->sec);
}

static void on_phase(uv_timer_t *t)
{
    bench_t *b = t->data;
    uint64_t warm = (uint64_t)(b->o->warmup_s * (double)NS_PER_S);
    if (b->t_measure == 0 && warm > 0) {
        /* Warmup over: what follows is measured. Ids sent so far still go to the ledger. */
        b->t_measure = uv_hrtime();
        bench_stats_init(&b->total);
        if (b->o->duration_s > 0)
            uv_timer_start(&b->phase_timer, on_phase, (uint64_t)(b->o->duration_s * 1000.0), 0);
        return;
    }
    stop(b, b->t_start + warm + (uint64_t)(b->o->duration_s * (double)NS_PER_S));
}

static void on_signal(uv_signal_t *s, int signum)
{
    bench_t *b = s->data;
    if (b->stops++ == 0)
        stop(b, uv_hrtime());
    else
        finish(b); /* a second ^C: do not wait for answers */
}

/* --- setup ------------------------------------------------------------------------------ */

static int build_templates(bench_t *b)
{
    const bench_opts_t *o = b->o;
    size_t kinds = 0;
    uint64_t w = 0;
    for (int ep = 0; ep < BENCH_EP_COUNT; ep++)
        for (int sh = 0; sh < BENCH_SHAPE_COUNT; sh++)
            if (o->mix[ep] && o->shapes[sh]) {
                w += (uint64_t)o->mix[ep] * o->shapes[sh];
                b->cum[kinds++] = w;
            }
    if (kinds == 0)
        return -EINVAL;
    b->nkinds = kinds;
    b->wtotal = w;
    b->tmpls = calloc(o->ntargets * kinds, sizeof(*b->tmpls));
    if (b->tmpls == NULL)
        return -ENOMEM;
    uint64_t now_ms = (uint64_t)time(NULL) * 1000;
    for (size_t t = 0; t < o->ntargets; t++) {
        size_t k = 0;
        for (int ep = 0; ep < BENCH_EP_COUNT; ep++)
            for (int sh = 0; sh < BENCH_SHAPE_COUNT; sh++) {
                if (!o->mix[ep] || !o->shapes[sh])
                    continue;
                bench_tmpl_opts_t to = {.host = o->targets[t].hostport,
                                        .path_prefix = o->targets[t].prefix,
                                        .query = o->query,
                                        .endpoint = (bench_endpoint_t)ep,
                                        .shape = (bench_shape_t)sh,
                                        .batch = o->batch,
                                        .event_bytes = o->event_bytes,
                                        .token = o->token,
                                        .import_secret = o->import_secret,
                                        .keepalive = o->keepalive,
                                        .time_ms = now_ms};
                bench_tmpl_t *tm = &b->tmpls[t * kinds + k++];
                int rc = bench_tmpl_build(tm, &to);
                if (rc != 0)
                    return rc;
                if (tm->len > b->max_req)
                    b->max_req = tm->len;
            }
    }
    return 0;
}

static void bench_free(bench_t *b)
{
    if (b->tmpls)
        for (size_t i = 0; i < b->o->ntargets * b->nkinds; i++)
            bench_tmpl_free(&b->tmpls[i]);
    free(b->tmpls);
    for (size_t i = 0; i < b->pool_n; i++)
        free(b->pool[i]);
    free(b->pool);
    free(b->conns);
    free(b->ledger_buf);
    if (b->ledger_fd >= 0)
        close(b->ledger_fd);
    free(b);
}

int bench_run(const bench_opts_t *o, int proc, bench_progress_cb cb, void *arg, bench_stats_t *out)
{
    int rc;
    bench_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    b->o = o;
    b->ledger_fd = -1;
    b->cb = cb;
    b->cb_arg = arg;
    bench_stats_init(&b->total);
    bench_stats_init(&b->sec);
    signal(SIGPIPE, SIG_IGN);

    /* This process's share of the totals. */
    size_t conns = share(o->connections, proc, o->procs);
    b->limit_from = b->limit_to = b->limit = conns;
    if (o->ramp_s > 0) {
        b->limit_from = b->limit = share(o->ramp_from, proc, o->procs);
        b->limit_to = share(o->ramp_to, proc, o->procs);
        b->ramp_ns = (uint64_t)(o->ramp_s * (double)NS_PER_S);
    }
    b->nconns = b->limit_to > conns ? b->limit_to : conns;
    b->max_issue = o->requests ? share(o->requests, proc, o->procs) : 0;
    b->closed_loop = o->rate <= 0;
    if (!b->closed_loop)
        b->interval_ns = (double)NS_PER_S * (double)o->procs / o->rate;
    b->timeout_ns = (uint64_t)o->timeout_ms * NS_PER_MS;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        b->nconns + BENCH_FD_RESERVE > rl.rlim_cur) {
        fprintf(stderr,
                "trackbench: %zu connections in one process, but only %llu open files allowed:"
                " use more --procs\n",
                b->nconns, (unsigned long long)rl.rlim_cur);
        rc = -EMFILE;
        goto out;
    }

    bench_id_prefix(b->prefix);
    arc4random_buf(&b->rng, sizeof(b->rng));
    b->rng |= 1;
    if ((rc = build_templates(b)) != 0) {
        fprintf(stderr, "trackbench: cannot build requests: %s\n", strerror(-rc));
        goto out;
    }
    if (o->ledger[0]) {
        b->ledger_buf = malloc(BENCH_LEDGER_BUF);
        b->ledger_fd = open(o->ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (b->ledger_buf == NULL || b->ledger_fd < 0) {
            rc = b->ledger_buf == NULL ? -ENOMEM : -errno;
            fprintf(stderr, "trackbench: ledger %s: %s\n", o->ledger, strerror(-rc));
            goto out;
        }
    }
    b->conns = calloc(b->nconns ? b->nconns : 1, sizeof(*b->conns));
    if (b->conns == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = b->nconns; i-- > 0;) {
        conn_t *c = &b->conns[i];
        c->b = b;
        c->state = CONN_FREE;
        c->link = b->free_top;
        b->free_top = c;
    }

    llhttp_settings_init(&b->settings);
    b->settings.on_message_begin = on_msg_begin;
    b->settings.on_header_field = on_hfield;
    b->settings.on_header_value = on_hvalue;
    b->settings.on_header_value_complete = on_hvalue_done;
    b->settings.on_body = on_body;
    b->settings.on_message_complete = on_msg_complete;

    if ((rc = uv_loop_init(&b->loop)) != 0)
        goto out;
    uv_timer_init(&b->loop, &b->tick);
    uv_timer_init(&b->loop, &b->dispatch_timer);
    uv_timer_init(&b->loop, &b->phase_timer);
    uv_timer_init(&b->loop, &b->progress_timer);
    uv_signal_init(&b->loop, &b->sigint);
    uv_signal_init(&b->loop, &b->sigterm);
    b->tick.data = b->dispatch_timer.data = b->phase_timer.data = b->progress_timer.data = b;
    b->sigint.data = b->sigterm.data = b;
    uv_signal_start(&b->sigint, on_signal, SIGINT);
    uv_signal_start(&b->sigterm, on_signal, SIGTERM);

    b->running = 1;
    uv_update_time(&b->loop);
    b->t_start = b->last_progress = uv_hrtime();
    if (o->warmup_s <= 0)
        b->t_measure = b->t_start;
    b->t_end = o->duration_s > 0
                   ? b->t_start + (uint64_t)((o->warmup_s + o->duration_s) * (double)NS_PER_S)
                   : UINT64_MAX;
    uv_timer_start(&b->tick, on_tick, BENCH_TICK_MS, BENCH_TICK_MS);
    if (o->progress)
        uv_timer_start(&b->progress_timer, on_progress, BENCH_PROGRESS_MS, BENCH_PROGRESS_MS);
    if (o->warmup_s > 0)
        uv_timer_start(&b->phase_timer, on_phase, (uint64_t)(o->warmup_s * 1000.0), 0);
    else if (o->duration_s > 0)
        uv_timer_start(&b->phase_timer, on_phase, (uint64_t)(o->duration_s * 1000.0), 0);

    /* Open the first connections (all of them, or the ramp's start) and go. */
    fill_connections(b);
    dispatch(b, uv_hrtime());
    maybe_finish(b);

    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (!b->finished) {
        /* Nothing left to wait for without finish(): e.g. zero connections and no duration. */
        finish(b);
        uv_run(&b->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&b->loop);

    if (b->ledger_fd >= 0)
        ledger_flush(b);
    *out = b->total;
    out->elapsed_ns = b->t_last > b->t_measure && b->t_measure ? b->t_last - b->t_measure : 0;
    out->conns_open = 0;
    out->procs = 1;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out->cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * NS_PER_S +
                      (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
    rc = b->ledger_err;
out:
    bench_free(b);
    return rc;
}

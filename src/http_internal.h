/*
 * Private to the HTTP layer: http.c (connections: accepting, reading, parsing, timeouts,
 * closing), http_run.c (running handlers through the run queue, writing their answers),
 * http_parser.c (request assembly) and http_mem.c (the memory budget). The public interface is
 * include/trackd/http.h. Functions shared between the two files carry the
 * http__ prefix.
 */
#ifndef TRACKD_HTTP_INTERNAL_H
#define TRACKD_HTTP_INTERNAL_H

#include <stdint.h>

#include "trackd/http.h"

/** Size of the per-loop read buffer. */
#define HTTP_READ_BUF (64 * 1024)
/** Size of the per-loop buffer answers are formatted into. */
#define HTTP_WRITE_BUF (16 * 1024)
/** Bytes parked per connection while a request is busy before reading stops. */
#define HTTP_PENDING_MAX (64 * 1024)
/** How long a closing connection may keep sending before it is cut. */
#define HTTP_LINGER_MS 2000
/**
 * Bytes a closing connection may send that are read and dropped; past them it is no longer read
 * (its bytes stay in the kernel) until the linger time ends. Without the cap, clients that get a
 * 503 before their body (load shedding) would make the loop read every byte of every refused
 * upload: under overload, that reading is what delays everyone else.
 */
#define HTTP_LINGER_MAX_BYTES (64 * 1024)
/*
 * At a graceful stop, an idle connection stays open this long (at most half of
 * shutdown_timeout_ms), and a request it brings meanwhile is answered with Connection: close.
 * Closing it at once races with a client that reuses it at that moment (nginx taking it from its
 * upstream keep-alive pool): the request is lost, and nginx cannot retry a POST it has sent. A
 * client that closes its idle connections sooner than this (nginx's upstream keepalive_timeout
 * in conf/nginx.conf.in) never meets a close it did not ask for.
 */
#define HTTP_STOP_GRACE_MS 2000
/** Stack of a handler coroutine: jansson recursion and zlib inflate run on it. */
#define HTTP_CORO_STACK (256 * 1024)
/** Idle coroutine stacks kept per loop. */
#define HTTP_CORO_FREE 64
/** Body of the 503 sent to a connection beyond max_connections. */
#define HTTP_BUSY_BODY "too many connections"
/** A busy connection reads only if the memory budget has at least this much room. */
#define HTTP_PARK_MIN 4096
/** Handlers run for about this long before the loop polls again (new heads, answers to write). */
#define HTTP_RUN_SLICE_MS 10
/** Bytes a request counts for in the CPU backlog on top of its head and body (fixed costs). */
#define HTTP_RUN_REQ_BYTES 512
/** Weight of a new sample in the CPU-time-per-byte average (1/16: a few dozen requests). */
#define HTTP_RUN_EWMA 0.0625
/** Samples the average needs before it is believed (the first handlers run with cold caches). */
#define HTTP_RUN_WARMUP 16
/**
 * Slowest body accepted on average (bytes/s): the whole body must arrive within twice
 * body_timeout_ms plus its length at this rate, so a client trickling a byte just inside every
 * gap cannot hold a connection and its body reservation for ever (slow POST), while a client
 * that is merely slow and steady (a small body over a bad mobile link) still gets through.
 */
#define HTTP_BODY_MIN_RATE (16 * 1024)

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
    coro_t *co;            /* handler running, or NULL */
    http_request_t *req;   /* the request the handler owns (or will, once out of the run queue) */
    http_conn_t *run_next; /* next in the server's run queue */
    uint64_t run_since;    /* uv_hrtime() it joined the run queue */
    uint64_t unstarted;    /* bytes it counts for in the server's unstarted_bytes */
    char *pending;         /* bytes read while busy, not parsed yet */
    uint32_t pending_len, pending_cap;
    uint32_t dropped;   /* bytes read and dropped while lingering */
    uint64_t deadline;  /* loop time (ms) the current phase times out at; 0 = none */
    uint64_t timer_due; /* when the armed timer fires; 0 = not armed */
    uint64_t body_end;  /* loop time (ms) the whole body must have arrived by */
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
    uint8_t queued; /* in the run queue: complete, its handler not started yet */
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
    http_conn_t *conns;               /* all open connections */
    size_t nalloc;                    /* connections not freed yet (open or closing) */
    http_conn_t *run_head, *run_tail; /* complete requests waiting for the CPU, oldest first */
    size_t nrun;
    uv_check_t run_check;     /* drains the run queue after each poll */
    uv_idle_t run_idle;       /* active while the queue is not empty: the poll does not block */
    int run_open;             /* run_check and run_idle initialised and not closed yet */
    uint64_t unstarted_bytes; /* admitted requests whose handler has not started: their bytes */
    double ns_per_byte;       /* average CPU time of a handler's first run per request byte */
    unsigned ns_samples;      /* samples in ns_per_byte (up to HTTP_RUN_WARMUP) */
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

/** Close the connection (its handles; it is freed once nothing uses it). */
void http__conn_close(http_conn_t *c);

/** Drop one reference (handles, coroutine, run queue, write, shutdown); frees at zero. */
void http__conn_unref(http_conn_t *c);

/** The connection is free again: parse what was parked, read again, set the next deadline. */
void http__conn_continue(http_conn_t *c);

/** Set the deadline of the current phase (`ms` from now; <= 0: none). */
void http__conn_set_deadline(http_conn_t *c, int ms);

/** Answered with Connection: close: send FIN, drop what the client still sends, then close. */
void http__conn_start_linger(http_conn_t *c);

/** Count an answer's status class. */
void http__count_status(http_server_t *s, int status);

/** Write `bufs` now if the socket takes them, else queue a copy. 0 or a negative errno. */
int http__conn_write(http_conn_t *c, uv_buf_t *bufs, unsigned nbufs);

/** A complete request: queue its handler; the connection is busy until it has answered. */
void http__queue_handler(http_conn_t *c, http_request_t *req);

/** Count the connection's admitted request in the CPU backlog with `bytes` (replacing any). */
void http__unstarted_set(http_conn_t *c, uint64_t bytes);

/** The connection's request no longer waits for the CPU (started, refused or gone). */
void http__unstarted_clear(http_conn_t *c);

/** Charge `bytes` to the request's env and remember them on it (http_mem.c). 0 or -ENOBUFS. */
int http__req_charge(http_request_t *r, size_t bytes, int force);

/** Make sure `cap` bytes of the request's body are charged (reserved or allocated). */
int http__body_charge(http_request_t *r, size_t cap);

#endif

/*
 * HTTP/1.1 for trackd, in two layers.
 *
 * The parser (http_parser_*) turns bytes into requests with llhttp in strict mode and enforces
 * every size limit of config.h while the bytes arrive; it needs no socket, so the fuzz target and
 * the server run the same code. It reports a request twice: once when its head is complete (so the
 * handler can refuse it before the body is read) and once when it is complete.
 *
 * The server (http_server_*, http_conn_*) owns the connections of one libuv loop: reading into one
 * per-loop buffer, keep-alive and pipelining (answers go back in request order, one request at a
 * time per connection), timeouts, Expect: 100-continue, and writing answers. Each complete request
 * runs in its own coroutine (coro.h), so a handler is sequential code that may wait for the log.
 * An idle keep-alive connection holds no coroutine and no buffer. docs/http.md lists the limits
 * and the status each one produces.
 */
#ifndef TRACKD_HTTP_H
#define TRACKD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <llhttp.h>
#include <uv.h>

#include "trackd/config.h"
#include "trackd/coro.h"

/** Head bytes allowed on top of max_url_bytes + max_header_bytes (request line, CRLFs, padding). */
#define HTTP_HEAD_SLACK 1024
/** Longest header name the parser looks at; longer names are counted but never matched. */
#define HTTP_NAME_MAX 32
/** Bytes of the head kept inside a request before it grows onto the heap. */
#define HTTP_REQ_INLINE 2048
/** Share of memory_budget_bytes (percent) from which new requests are shed at their head. */
#define HTTP_MEM_HIGH_WATER_PCT 75

/** The headers the server and handlers care about; all others are counted and dropped. */
typedef enum {
    HTTP_H_HOST,
    HTTP_H_CONTENT_TYPE,
    HTTP_H_CONTENT_ENCODING,
    HTTP_H_TRANSFER_ENCODING,
    HTTP_H_CONTENT_LENGTH,
    HTTP_H_EXPECT,
    HTTP_H_ORIGIN,
    HTTP_H_ACR_HEADERS, /* Access-Control-Request-Headers */
    HTTP_H_AUTHORIZATION,
    HTTP_H_X_FORWARDED_FOR,
    HTTP_H_X_REAL_IP,
    HTTP_H_COUNT
} http_header_id_t;

/** A byte span; `p` is NULL when the item is absent. Spans of a request are NUL-terminated. */
typedef struct {
    const char *p;
    size_t len;
} http_str_t;

/**
 * One request. The public part is valid from the head event on (body fields once complete).
 * Repeated headers are joined with ", " as RFC 9110 allows for lists; `hcount` says how many
 * lines there were.
 */
typedef struct http_request_s http_request_t;
struct http_request_s {
    uint8_t method; /* llhttp_method_t */
    uint8_t http_major, http_minor;
    uint8_t keep_alive;      /* the client allows another request on this connection */
    uint8_t chunked;         /* Transfer-Encoding: chunked */
    uint8_t has_length;      /* Content-Length was given */
    uint8_t expect_continue; /* Expect: 100-continue */
    uint64_t content_length;
    http_str_t target; /* as sent */
    http_str_t path;   /* origin-form path, without the query */
    http_str_t query;  /* after '?', without it; p NULL if there was no '?' */
    http_str_t headers[HTTP_H_COUNT];
    uint8_t hcount[HTTP_H_COUNT];
    char *body; /* complete body (chunked decoded), NUL-terminated; only if body_len > 0 */
    size_t body_len;
    size_t body_bytes; /* bytes of body received so far (also when discarded) */
    int tag;           /* for the handler: set at the head event, read at the request */
    uint64_t start_ns; /* uv_hrtime() when the head was complete (for latency histograms) */

    /* private to http.c */
    http_request_t *next_free;
    struct http_env_s *env; /* whose memory budget the request is charged to */
    size_t mem;             /* bytes charged to env->mem_used for this request */
    size_t mem_body;        /* ... of which for the body (reserved or allocated) */
    char *buf;              /* head storage: inline_buf or heap */
    size_t len, cap;
    size_t body_cap;
    uint32_t target_off, hoff[HTTP_H_COUNT];
    uint32_t nheaders, header_bytes, vstart;
    int8_t cur; /* header being read, or -1 */
    uint8_t name_len, in_value, discard_body, head_done, vspans, vspan_at_end;
    char name[HTTP_NAME_MAX];
    char inline_buf[HTTP_REQ_INLINE];
};

/**
 * Per-loop state the parsers of a loop share: the limits, a cache of request buffers, and the
 * memory budget (config memory_budget_bytes) that every request buffer of the loop is charged
 * to: request structs and heads, bodies (reserved from Content-Length at the head), bytes parked
 * for pipelining, answers waiting to drain, and what handlers charge (gzip output).
 */
typedef struct http_env_s {
    const config_t *cfg;
    http_request_t *free_reqs;
    size_t nfree;
    size_t mem_used;      /* bytes charged now */
    size_t mem_peak;      /* highest mem_used seen */
    size_t mem_budget;    /* memory_budget_bytes (SIZE_MAX if 0) */
    uint64_t mem_refused; /* charges refused because they would pass the budget */
} http_env_t;

/** Initialise `env` for the limits in `cfg` (borrowed). */
void http_env_init(http_env_t *env, const config_t *cfg);

/** Free the cached request buffers. */
void http_env_free(http_env_t *env);

/** Release a request obtained from http_parser_take(). */
void http_request_free(http_env_t *env, http_request_t *req);

/**
 * Charge `bytes` to the loop's memory budget. Returns 0, or -ENOBUFS (nothing charged) if it
 * would pass the budget and `force` is 0. `force` is for bytes that already exist (a read that
 * must be kept); they still count, so new requests are refused until the total drops.
 */
int http_env_charge(http_env_t *env, size_t bytes, int force);

/** Give back bytes charged with http_env_charge(). */
void http_env_release(http_env_t *env, size_t bytes);

/** Bytes left in the budget (0 when it is used up or passed). */
size_t http_env_room(const http_env_t *env);

/** 1 when the budget is used past HTTP_MEM_HIGH_WATER_PCT: shed new requests at the head. */
int http_env_over_high_water(const http_env_t *env);

/**
 * Reserve the body of `req` in the budget before it is read: Content-Length + 1 bytes (nothing
 * for a chunked body, which is charged as it grows). Returns 0 or -ENOBUFS; the reservation is
 * released with the request (or its body, http_request_drop_body()).
 */
int http_request_reserve_body(http_request_t *req);

/**
 * Charge `bytes` the handler holds for `req` (gzip output, ...) to the budget; released with the
 * request. Returns 0 or -ENOBUFS (nothing charged) unless `force`.
 */
int http_request_charge(http_request_t *req, size_t bytes, int force);

/** Give back `bytes` charged with http_request_charge() before the request ends. */
void http_request_release(http_request_t *req, size_t bytes);

/** The budget `req` is charged to (its loop's); NULL for a request not from a parser. */
http_env_t *http_request_env(const http_request_t *req);

/**
 * Free the body of a complete request the handler no longer needs (it has decoded it), and give
 * its bytes back to the budget; body becomes NULL and body_len 0. For handlers that wait long.
 */
void http_request_drop_body(http_request_t *req);

/** What http_parser_feed() stopped for. */
typedef enum {
    HTTP_EV_MORE = 0,    /* every byte consumed; feed more */
    HTTP_EV_HEAD = 1,    /* the head of the current request is complete: see http_parser_req() */
    HTTP_EV_REQUEST = 2, /* a complete request: take it with http_parser_take() */
    HTTP_EV_ERROR = 3,   /* protocol error or limit: answer error_status and close */
} http_event_t;

/** Request assembly state; embedded in a connection (small: no buffer while idle). */
typedef struct {
    llhttp_t ll;
    http_env_t *env;
    http_request_t *req; /* request in progress, NULL between requests */
    uint32_t head_bytes; /* bytes of the current head seen so far */
    uint16_t error_status;
    uint8_t paused; /* llhttp paused at a head or request event */
    uint8_t failed;
    const char *error_reason;
    const char *exec_start, *exec_end; /* the bytes being parsed (to tell folds from splits) */
} http_parser_t;

/** Initialise a parser on `env`. */
void http_parser_init(http_parser_t *p, http_env_t *env);

/** Free the request in progress, if any. */
void http_parser_free(http_parser_t *p);

/**
 * Consume bytes until an event: returns the event and sets *used to the bytes consumed (the
 * caller feeds the rest again after handling the event). After HTTP_EV_ERROR the parser stays
 * failed; error_status and error_reason say why.
 */
http_event_t http_parser_feed(http_parser_t *p, const char *data, size_t len, size_t *used);

/** The request in progress (valid after HTTP_EV_HEAD and until http_parser_take()). */
http_request_t *http_parser_req(const http_parser_t *p);

/** After HTTP_EV_HEAD: read the body but do not keep it (the answer is already decided). */
void http_parser_discard_body(http_parser_t *p);

/** After HTTP_EV_REQUEST: take ownership of the complete request (free with http_request_free). */
http_request_t *http_parser_take(http_parser_t *p);

/** 1 while the parser is between requests (no byte of a next request seen). */
int http_parser_idle(const http_parser_t *p);

/** An answer. `headers` holds extra header lines, each ending in CRLF, already validated. */
typedef struct {
    int status;
    const char *content_type; /* NULL: no body type */
    const char *headers;
    size_t headers_len;
    const char *body;
    size_t body_len;
    int close; /* close the connection after this answer */
} http_response_t;

/** The reason phrase of `status` ("OK", "Not Found", ...; "Unknown" for others). */
const char *http_status_text(int status);

/**
 * Format the status line and headers of `r` (with Date, Content-Length, Connection as needed)
 * into `out`. Returns the length, or -ENOSPC if `outlen` is too small.
 */
int http_format_head(char *out, size_t outlen, const http_response_t *r, int keep_alive,
                     int http10);

/**
 * Find `name` in a raw (still escaped) query or form string and return its raw value span (p
 * NULL if absent). Used before the query is decoded, e.g. for verbose=1 on an early error.
 */
http_str_t http_query_raw(const char *q, size_t len, const char *name);

/**
 * Write `s[0..len)` JSON-escaped (without quotes) into `out`, NUL-terminated, truncating to fit.
 * Bytes >= 0x80 become '?' (only ASCII reasons go through here). Returns the length written.
 */
size_t http_json_escape(char *out, size_t outlen, const char *s, size_t len);

/** Request/connection counters of one server (for /metrics). */
typedef struct {
    uint64_t conns_total, conns_rejected, requests, bytes_in, bytes_out;
    uint64_t timeouts, parse_errors, client_gone;
    uint64_t header_timeouts, body_timeouts; /* the 408s of `timeouts`, by phase */
    size_t conns_open;
    uint64_t responses[6];                 /* by status class: [1] 1xx ... [5] 5xx */
    size_t mem_used, mem_peak, mem_budget; /* the env's memory budget (bytes) */
    uint64_t mem_refused;                  /* charges the budget refused */
    uint64_t read_pauses;                  /* busy connections that stopped reading for memory */
    size_t runnable;                       /* complete requests waiting for the CPU */
    uint64_t queue_delay_ns;               /* how long the oldest of them has waited */
    uint64_t queue_delay_max_ns;           /* the longest any request waited to start */
    uint64_t backlog_ns;                   /* http_server_backlog_ns() */
} http_stats_t;

typedef struct http_server_s http_server_t;
typedef struct http_conn_s http_conn_t;

/** What the head hook decided. */
typedef enum {
    HTTP_HEAD_CONTINUE = 0, /* read the body and run the handler */
    HTTP_HEAD_ANSWERED = 1, /* the hook answered with http_conn_respond(); no handler */
} http_head_result_t;

/** The application: called by the server for each request. */
typedef struct {
    void *data;
    /**
     * Called on the loop (not in a coroutine) when a head is complete. It may answer at once
     * with http_conn_respond() and return HTTP_HEAD_ANSWERED (the body, if any, is not read:
     * the connection closes unless there is none), or return HTTP_HEAD_CONTINUE.
     */
    http_head_result_t (*head)(void *data, http_conn_t *c, http_request_t *req);
    /**
     * Runs in a coroutine once the request is complete; must answer with http_conn_respond()
     * (the server answers 500 if it does not). `req` is freed after it returns.
     */
    void (*handle)(void *data, coro_t *co, http_conn_t *c, http_request_t *req);
} http_handler_t;

/** Create the server for `loop` (limits from `cfg`, borrowed). NULL if out of memory. */
http_server_t *http_server_new(uv_loop_t *loop, const config_t *cfg, const http_handler_t *h);

/** Accept one connection from listening stream `server` (call from its connection callback). */
int http_server_accept(http_server_t *s, uv_stream_t *listener);

/**
 * Graceful stop: busy connections close after their current answer, idle ones after a short
 * grace (a request they bring meanwhile is answered, with Connection: close); cb(arg) runs once
 * no connection is left. Accept no more connections after this.
 */
void http_server_stop(http_server_t *s, void (*cb)(void *arg), void *arg);

/** Free the server. All connections must be closed (after http_server_stop's callback). */
void http_server_free(http_server_t *s);

/** Counters snapshot (conns_open is current). */
void http_server_stats(const http_server_t *s, http_stats_t *st);

/** Bytes one idle keep-alive connection holds (struct, handles, parser; no buffer, no stack). */
size_t http_conn_idle_bytes(void);

/** Coroutines currently running handlers. */
size_t http_server_coroutines(const http_server_t *s);

/** Give back the handler stacks the last period did not need (coro_pool_trim); about 1/s. */
void http_server_trim(http_server_t *s);

/**
 * How long the oldest complete request waiting for the CPU has waited (ns; 0 if none): the
 * server's queueing delay, which the head check compares to its limit to shed CPU overload.
 */
uint64_t http_server_queue_delay_ns(const http_server_t *s);

/**
 * The CPU time admitted work still needs before a new request would start (ns): the larger of
 * the queueing delay and the bytes of admitted, not yet started requests times the measured CPU
 * time per byte. The head check sheds while it is over its limit.
 */
uint64_t http_server_backlog_ns(const http_server_t *s);

/** The env shared by the server's parsers. */
http_env_t *http_server_env(http_server_t *s);

/**
 * Send the answer to the connection's current request. Returns 0, or -ECONNRESET when the
 * client is gone (the answer is dropped), -EALREADY if this request was answered already.
 */
int http_conn_respond(http_conn_t *c, const http_response_t *r);

/**
 * Wake a handler coroutine that waits (from a log or timer callback on the loop). Use this instead
 * of coro_resume(): when the handler finishes, the connection goes on with its next request.
 */
void http_resume(coro_t *co);

/** The peer's address (zeroed family AF_UNSPEC if unknown). */
const struct sockaddr *http_conn_peer(const http_conn_t *c);

/** Send an error answer for `status` with `reason`, as JSON if `verbose`, else plain text. */
int http_conn_error(http_conn_t *c, int status, const char *reason, int verbose, int close);

#endif

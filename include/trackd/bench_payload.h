/*
 * trackbench's request templates: whole HTTP requests in every payload shape of
 * ../shared/API.md, built once before the run. Each event of a /track or /import template carries
 * a `$insert_id` slot; per request the load loop only rewrites those slots in place (and, for
 * gzip, the trailer's CRC), so no request is ever encoded or allocated on the hot path.
 */
#ifndef TRACKD_BENCH_PAYLOAD_H
#define TRACKD_BENCH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

/** Random per-process part of an insert id: base36 characters. */
#define BENCH_ID_PREFIX_LEN 13
/** An insert id: prefix, '-', 16 lowercase hex digits of a per-process counter (a multiple of 3).
 */
#define BENCH_ID_LEN 30
/** Largest batch the API accepts (events per request). */
#define BENCH_MAX_BATCH 2000
/** Largest event size trackbench will pad to (the API's per-event limit is 1 MB). */
#define BENCH_MAX_EVENT_BYTES 1000000

/** Endpoints trackbench can mix. */
typedef enum {
    BENCH_EP_TRACK = 0,
    BENCH_EP_ENGAGE,
    BENCH_EP_GROUPS,
    BENCH_EP_IMPORT,
    BENCH_EP_COUNT,
} bench_endpoint_t;

/** Payload shapes (API.md "Where the payload arrives"). */
typedef enum {
    BENCH_SHAPE_GET = 0,     /* GET ?data=<base64>, URL-escaped */
    BENCH_SHAPE_FORM_B64,    /* POST form data=<base64>, URL-escaped (browser) */
    BENCH_SHAPE_FORM_B64RAW, /* POST form data=<base64>, not escaped (Node batches) */
    BENCH_SHAPE_FORM_JSON,   /* POST form data=<JSON>, URL-escaped (Python) */
    BENCH_SHAPE_JSON,        /* POST raw JSON, application/json (Swift) */
    BENCH_SHAPE_GZIP,        /* POST raw JSON with Content-Encoding: gzip */
    BENCH_SHAPE_BEACON,      /* POST text/plain body data=<base64> (sendBeacon) */
    BENCH_SHAPE_COUNT,
} bench_shape_t;

/** What one template holds. Strings are borrowed for the duration of bench_tmpl_build(). */
typedef struct {
    const char *host;        /* Host header, e.g. "127.0.0.1:8000" */
    const char *path_prefix; /* "" or a mount prefix such as "/_mp" (no trailing slash) */
    const char *query;       /* extra query flags ("verbose=1&ip=1") or "" */
    bench_endpoint_t endpoint;
    bench_shape_t shape;
    size_t batch;              /* events per request, 1..BENCH_MAX_BATCH; 1 sends an object */
    size_t event_bytes;        /* approximate size of one event's JSON */
    const char *token;         /* project token */
    const char *import_secret; /* for /import: Basic auth; NULL or "" = none */
    int keepalive;             /* 0: send Connection: close */
    uint64_t time_ms;          /* event time */
} bench_tmpl_opts_t;

/** A built request. `buf` is rewritten in place by bench_tmpl_patch(). */
typedef struct {
    char *buf; /* the whole HTTP request */
    size_t len;
    size_t events;    /* events per request */
    size_t nslots;    /* insert-id slots (events on /track and /import, else 0) */
    size_t *slot_off; /* offset in buf of slot i */
    int slot_b64;     /* slots hold base64 of the id (40 chars) instead of the id (30) */
    char *plain;      /* gzip only: the uncompressed JSON, kept for the CRC */
    size_t plain_len;
    size_t *plain_off; /* gzip only: offset of slot i in plain */
    size_t crc_off;    /* gzip only: offset in buf of the trailer's CRC32 */
    bench_endpoint_t endpoint;
    bench_shape_t shape;
} bench_tmpl_t;

/** Name of an endpoint ("track") or shape ("form-b64"); parse returns the enum or -EINVAL. */
const char *bench_endpoint_name(bench_endpoint_t ep);
const char *bench_shape_name(bench_shape_t shape);
int bench_endpoint_parse(const char *s, size_t len);
int bench_shape_parse(const char *s, size_t len);

/** Fill `out` (BENCH_ID_PREFIX_LEN + 1 bytes) with a fresh random prefix from arc4random. */
void bench_id_prefix(char *out);

/** Write the id of `counter` (BENCH_ID_LEN bytes, no NUL) to `out`. */
void bench_id_format(char *out, const char *prefix, uint64_t counter);

/**
 * Build the request described by `o` into `t`. Slots start with ids 0.. of prefix "0000000000000".
 * Returns 0, -EINVAL for impossible options, or -ENOMEM (then `t` holds nothing to free).
 */
int bench_tmpl_build(bench_tmpl_t *t, const bench_tmpl_opts_t *o);

/** Give the events of `t` the ids prefix-first .. prefix-(first + nslots - 1), in order. */
void bench_tmpl_patch(bench_tmpl_t *t, const char *prefix, uint64_t first);

/** Free what `t` owns. */
void bench_tmpl_free(bench_tmpl_t *t);

#endif

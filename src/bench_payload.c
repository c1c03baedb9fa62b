/*
 * trackbench request templates (see bench_payload.h). A template is built in three steps: the
 * events' JSON with the position of every `$insert_id` value recorded; the body in the wanted
 * shape, carrying those positions through each encoding; the HTTP head in front. The positions
 * make per-request ids a matter of overwriting bytes:
 *  - escaped or plain JSON: ids are [a-z0-9-], which no escaping changes;
 *  - base64: each id starts at a JSON offset that is a multiple of 3 and is 30 bytes long, so it
 *    is exactly 40 base64 characters of its own; ASCII input in groups of three never encodes to
 *    '+' or '/', so URL-escaping leaves those 40 characters alone too;
 *  - gzip: the text between ids is deflated with Z_FULL_FLUSH (no back-reference crosses it) and
 *    each id is a stored block of its own; only the CRC32 in the trailer must be recomputed.
 */
#include "trackd/bench_payload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* A growable byte buffer for building templates (never used on the hot path). */
typedef struct {
    char *p;
    size_t len, cap;
    int err;
} sbuf_t;

static const char *const endpoint_names[BENCH_EP_COUNT] = {"track", "engage", "groups", "import"};
static const char *const shape_names[BENCH_SHAPE_COUNT] = {
    "get", "form-b64", "form-b64-raw", "form-json", "json", "gzip", "beacon"};
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char *const event_names[] = {"Page View", "Signed up", "Added to cart", "Purchase",
                                          "Search"};
#define N_EVENT_NAMES (sizeof(event_names) / sizeof(event_names[0]))
/* Stored block header of a deflate stream, after a flush left it byte-aligned (RFC 1951 3.2.4). */
#define STORED_HDR_LEN 5
#define GZIP_HDR_LEN 10
#define GZIP_TRAILER_LEN 8

const char *bench_endpoint_name(bench_endpoint_t ep)
{
    return (unsigned)ep < BENCH_EP_COUNT ? endpoint_names[ep] : "?";
}

const char *bench_shape_name(bench_shape_t shape)
{
    return (unsigned)shape < BENCH_SHAPE_COUNT ? shape_names[shape] : "?";
}

static int name_lookup(const char *const *names, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -EINVAL;
}

int bench_endpoint_parse(const char *s, size_t len)
{
    return name_lookup(endpoint_names, BENCH_EP_COUNT, s, len);
}

int bench_shape_parse(const char *s, size_t len)
{
    return name_lookup(shape_names, BENCH_SHAPE_COUNT, s, len);
}

void bench_id_prefix(char *out)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int i = 0; i < BENCH_ID_PREFIX_LEN; i++)
        out[i] = digits[arc4random_uniform(36)];
    out[BENCH_ID_PREFIX_LEN] = '\0';
}

void bench_id_format(char *out, const char *prefix, uint64_t counter)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, prefix, BENCH_ID_PREFIX_LEN);
    out[BENCH_ID_PREFIX_LEN] = '-';
    for (int i = BENCH_ID_LEN - 1; i > BENCH_ID_PREFIX_LEN; i--) {
        out[i] = hex[counter & 15];
        counter >>= 4;
    }
}

/* --- building blocks -------------------------------------------------------------------- */

static int sb_reserve(sbuf_t *b, size_t extra)
{
    if (b->err)
        return b->err;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return b->err = -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void sb_add(sbuf_t *b, const void *s, size_t n)
{
    if (sb_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_fmt(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void base64_encode(char *out, const unsigned char *in, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3, out += 4) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = b64_alphabet[(v >> 6) & 63];
        out[3] = b64_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[3] = '=';
    }
}

static size_t base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/*
 * Append src[0..n) percent-escaped as a form value (space as '+', like Python's urlencode),
 * mapping the slot offsets `in` (ascending, relative to src) to offsets in `b` (`out`).
 */
static void sb_escape(sbuf_t *b, const char *src, size_t n, const size_t *in, size_t nslots,
                      size_t *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    if (sb_reserve(b, n * 3) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (k < nslots && in[k] == i)
            out[k++] = b->len;
        unsigned char c = (unsigned char)src[i];
        if (is_unreserved(c)) {
            b->p[b->len++] = (char)c;
        } else if (c == ' ') {
            b->p[b->len++] = '+';
        } else {
            b->p[b->len++] = '%';
            b->p[b->len++] = hex[c >> 4];
            b->p[b->len++] = hex[c & 15];
        }
    }
    b->p[b->len] = '\0';
}

/* Append src unchanged, mapping slot offsets the same way as sb_escape(). */
static void sb_plain(sbuf_t *b, const char *src, size_t n, const size_t *in, size_t nslots,
                     size_t *out)
{
    size_t base = b->len;
    sb_add(b, src, n);
    for (size_t k = 0; k < nslots; k++)
        out[k] = base + in[k];
}

/* Deterministic filler text: lowercase words, compressible about as well as real properties. */
static void sb_pad(sbuf_t *b, size_t n, uint32_t *seed)
{
    if (sb_reserve(b, n) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        uint32_t r = (*seed >> 16) & 0x7fff;
        b->p[b->len++] = (r % 7 == 0 && i > 0 && i + 1 < n) ? ' ' : (char)('a' + r % 26);
    }
    b->p[b->len] = '\0';
}

/* --- the events ----------------------------------------------------------------------- */

/* Append one event; for /track and /import record where its insert id starts. */
static void add_event(sbuf_t *j, const bench_tmpl_opts_t *o, size_t i, size_t *slot, uint32_t *seed)
{
    static const char zero_prefix[BENCH_ID_PREFIX_LEN + 1] = "0000000000000";
    size_t start = j->len;
    size_t user = i % 1000;

    switch (o->endpoint) {
    case BENCH_EP_TRACK:
    case BENCH_EP_IMPORT: {
        sb_fmt(j,
               "{\"event\":\"%s\",\"properties\":{\"token\":\"%s\",\"distinct_id\":\"user-%zu\","
               "\"time\":%llu,\"$os\":\"Linux\",\"$browser\":\"Chrome\",\"mp_lib\":\"trackbench\","
               "\"$current_url\":\"https://example.com/page/%zu\",",
               event_names[i % N_EVENT_NAMES], o->token, user, (unsigned long long)o->time_ms,
               i % 97);
        /* Blanks before the key so that the id starts at a multiple of 3 (see top of file). */
        static const char key[] = "\"$insert_id\":\"";
        size_t at = j->len + sizeof(key) - 1;
        sb_add(j, "  ", (3 - at % 3) % 3);
        sb_str(j, key);
        *slot = j->len;
        char id[BENCH_ID_LEN];
        bench_id_format(id, zero_prefix, i);
        sb_add(j, id, BENCH_ID_LEN);
        sb_str(j, "\",\"plan\":\"pro\",\"pad\":\"");
        break;
    }
    case BENCH_EP_ENGAGE:
        sb_fmt(j,
               "{\"$token\":\"%s\",\"$distinct_id\":\"user-%zu\",\"$set\":{\"plan\":\"pro\","
               "\"$name\":\"User %zu\",\"pad\":\"",
               o->token, user, user);
        break;
    default:
        sb_fmt(j,
               "{\"$token\":\"%s\",\"$group_key\":\"company\",\"$group_id\":\"c-%zu\","
               "\"$set\":{\"plan\":\"pro\",\"pad\":\"",
               o->token, user);
        break;
    }
    static const char tail[] = "\"}}";
    size_t sofar = j->len - start + sizeof(tail) - 1;
    sb_pad(j, o->event_bytes > sofar ? o->event_bytes - sofar : 0, seed);
    sb_str(j, tail);
}

static int has_slots(bench_endpoint_t ep)
{
    return ep == BENCH_EP_TRACK || ep == BENCH_EP_IMPORT;
}

static int token_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 255)
        return 0;
    for (; *s; s++)
        if (!is_unreserved((unsigned char)*s))
            return 0;
    return 1;
}

/* --- gzip ----------------------------------------------------------------------------- */

/* Deflate `n` bytes with `flush`, growing `b` until zlib has written everything. */
static int deflate_into(z_stream *z, sbuf_t *b, const char *src, size_t n, int flush)
{
    z->next_in = (Bytef *)(uintptr_t)src;
    z->avail_in = (uInt)n;
    for (;;) {
        if (sb_reserve(b, 4096 + n / 2) != 0)
            return b->err;
        z->next_out = (Bytef *)b->p + b->len;
        z->avail_out = (uInt)(b->cap - b->len - 1);
        int rc = deflate(z, flush);
        b->len = b->cap - 1 - z->avail_out;
        if (rc == Z_STREAM_END)
            return 0;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -EINVAL;
        /* Room left over means zlib has consumed and flushed everything it was given. */
        if (z->avail_out > 0)
            return flush == Z_FINISH ? -EINVAL : 0;
    }
}

static void put_le32(char *p, uint32_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)((v >> 8) & 0xff);
    p[2] = (char)((v >> 16) & 0xff);
    p[3] = (char)(v >> 24);
}

/* Gzip `json` into `b`, each slot as its own stored block; `out` gets the slots' offsets. */
static int gzip_body(sbuf_t *b, const sbuf_t *json, const size_t *in, size_t nslots, size_t *out)
{
    static const unsigned char hdr[GZIP_HDR_LEN] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    int rc = 0;
    size_t pos = 0;
    sb_add(b, hdr, sizeof(hdr));
    for (size_t k = 0; k < nslots && rc == 0; k++) {
        rc = deflate_into(&z, b, json->p + pos, in[k] - pos, Z_FULL_FLUSH);
        if (rc != 0)
            break;
        const unsigned char stored[STORED_HDR_LEN] = {0, BENCH_ID_LEN, 0,
                                                      (unsigned char)~BENCH_ID_LEN, 0xff};
        sb_add(b, stored, sizeof(stored));
        out[k] = b->len;
        sb_add(b, json->p + in[k], BENCH_ID_LEN);
        pos = in[k] + BENCH_ID_LEN;
    }
    if (rc == 0)
        rc = deflate_into(&z, b, json->p + pos, json->len - pos, Z_FINISH);
    deflateEnd(&z);
    if (rc != 0)
        return rc;
    char trailer[GZIP_TRAILER_LEN];
    put_le32(trailer, (uint32_t)crc32(0, (const Bytef *)json->p, (uInt)json->len));
    put_le32(trailer + 4, (uint32_t)json->len);
    sb_add(b, trailer, sizeof(trailer));
    return b->err;
}

/* --- the request ---------------------------------------------------------------------- */

void bench_tmpl_free(bench_tmpl_t *t)
{
    free(t->buf);
    free(t->slot_off);
    free(t->plain);
    free(t->plain_off);
    memset(t, 0, sizeof(*t));
}

int bench_tmpl_build(bench_tmpl_t *t, const bench_tmpl_opts_t *o)
{
    sbuf_t json = {0}, body = {0}, req = {0}, enc = {0};
    size_t *json_off = NULL, *body_off = NULL;
    int rc = 0;

    memset(t, 0, sizeof(*t));
    if (o->batch < 1 || o->batch > BENCH_MAX_BATCH || o->event_bytes > BENCH_MAX_EVENT_BYTES ||
        (unsigned)o->endpoint >= BENCH_EP_COUNT || (unsigned)o->shape >= BENCH_SHAPE_COUNT ||
        !token_ok(o->token))
        return -EINVAL;
    size_t nslots = has_slots(o->endpoint) ? o->batch : 0;
    json_off = calloc(o->batch, sizeof(*json_off));
    body_off = calloc(o->batch, sizeof(*body_off));
    if (json_off == NULL || body_off == NULL) {
        rc = -ENOMEM;
        goto out;
    }

    /* 1. The events. */
    uint32_t seed = 42;
    if (o->batch > 1)
        sb_str(&json, "[");
    for (size_t i = 0; i < o->batch; i++) {
        if (i > 0)
            sb_str(&json, ",");
        add_event(&json, o, i, &json_off[i], &seed);
    }
    if (o->batch > 1)
        sb_str(&json, "]");
    if ((rc = json.err) != 0)
        goto out;

    /* 2. The body (or, for GET, the escaped data value) in the wanted shape. */
    int slot_b64 = 0;
    const char *ctype = NULL;
    switch (o->shape) {
    case BENCH_SHAPE_GET:
    case BENCH_SHAPE_FORM_B64:
    case BENCH_SHAPE_FORM_B64RAW:
    case BENCH_SHAPE_BEACON: {
        slot_b64 = 1;
        if (sb_reserve(&enc, base64_len(json.len)) != 0) {
            rc = enc.err;
            goto out;
        }
        base64_encode(enc.p, (const unsigned char *)json.p, json.len);
        enc.len = base64_len(json.len);
        for (size_t k = 0; k < nslots; k++)
            json_off[k] = json_off[k] / 3 * 4;
        if (o->shape != BENCH_SHAPE_GET)
            sb_str(&body, "data=");
        if (o->shape == BENCH_SHAPE_FORM_B64RAW)
            sb_plain(&body, enc.p, enc.len, json_off, nslots, body_off);
        else
            sb_escape(&body, enc.p, enc.len, json_off, nslots, body_off);
        ctype = o->shape == BENCH_SHAPE_BEACON ? "text/plain;charset=UTF-8"
                                               : "application/x-www-form-urlencoded";
        break;
    }
    case BENCH_SHAPE_FORM_JSON:
        sb_str(&body, "data=");
        sb_escape(&body, json.p, json.len, json_off, nslots, body_off);
        ctype = "application/x-www-form-urlencoded";
        break;
    case BENCH_SHAPE_JSON:
        sb_plain(&body, json.p, json.len, json_off, nslots, body_off);
        ctype = "application/json";
        break;
    default:
        if ((rc = gzip_body(&body, &json, json_off, nslots, body_off)) != 0)
            goto out;
        ctype = "application/json";
        break;
    }
    if ((rc = body.err) != 0)
        goto out;

    /* 3. The head; for GET the data goes into the request line. */
    const char *query = o->query ? o->query : "";
    size_t body_base;
    if (o->shape == BENCH_SHAPE_GET) {
        sb_fmt(&req, "GET %s/%s?data=", o->path_prefix, bench_endpoint_name(o->endpoint));
        body_base = req.len;
        sb_add(&req, body.p, body.len);
        sb_fmt(&req, "%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: trackbench\r\n", *query ? "&" : "",
               query, o->host);
    } else {
        sb_fmt(&req,
               "POST %s/%s%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: trackbench\r\n"
               "Content-Type: %s\r\nContent-Length: %zu\r\n",
               o->path_prefix, bench_endpoint_name(o->endpoint), *query ? "?" : "", query, o->host,
               ctype, body.len);
        if (o->shape == BENCH_SHAPE_GZIP)
            sb_str(&req, "Content-Encoding: gzip\r\n");
        body_base = 0; /* set below, after the blank line */
    }
    if (o->endpoint == BENCH_EP_IMPORT && o->import_secret && *o->import_secret) {
        size_t sl = strlen(o->import_secret);
        char *cred = malloc(sl + 2), *b64 = malloc(base64_len(sl + 1) + 1);
        if (cred && b64) {
            memcpy(cred, o->import_secret, sl);
            cred[sl] = ':';
            base64_encode(b64, (const unsigned char *)cred, sl + 1);
            b64[base64_len(sl + 1)] = '\0';
            sb_fmt(&req, "Authorization: Basic %s\r\n", b64);
        } else {
            req.err = -ENOMEM;
        }
        free(cred);
        free(b64);
    }
    if (!o->keepalive)
        sb_str(&req, "Connection: close\r\n");
    sb_str(&req, "\r\n");
    if (o->shape != BENCH_SHAPE_GET) {
        body_base = req.len;
        sb_add(&req, body.p, body.len);
    }
    if ((rc = req.err) != 0)
        goto out;

    for (size_t k = 0; k < nslots; k++)
        body_off[k] += body_base;
    t->buf = req.p;
    t->len = req.len;
    req.p = NULL;
    t->events = o->batch;
    t->nslots = nslots;
    t->slot_off = body_off;
    body_off = NULL;
    t->slot_b64 = slot_b64;
    t->endpoint = o->endpoint;
    t->shape = o->shape;
    if (o->shape == BENCH_SHAPE_GZIP) {
        /* gzip_body() left json_off relative to the JSON: keep both for patching. */
        t->plain = json.p;
        t->plain_len = json.len;
        json.p = NULL;
        t->plain_off = json_off;
        json_off = NULL;
        t->crc_off = t->len - GZIP_TRAILER_LEN;
    }
out:
    free(json.p);
    free(body.p);
    free(req.p);
    free(enc.p);
    free(json_off);
    free(body_off);
    return rc;
}

void bench_tmpl_patch(bench_tmpl_t *t, const char *prefix, uint64_t first)
{
    char id[BENCH_ID_LEN];
    for (size_t k = 0; k < t->nslots; k++) {
        bench_id_format(id, prefix, first + k);
        if (t->slot_b64) {
            base64_encode(t->buf + t->slot_off[k], (const unsigned char *)id, BENCH_ID_LEN);
        } else {
            memcpy(t->buf + t->slot_off[k], id, BENCH_ID_LEN);
            if (t->plain)
                memcpy(t->plain + t->plain_off[k], id, BENCH_ID_LEN);
        }
    }
    if (t->plain && t->nslots > 0)
        put_le32(t->buf + t->crc_off,
                 (uint32_t)crc32(0, (const Bytef *)t->plain, (uInt)t->plain_len));
}

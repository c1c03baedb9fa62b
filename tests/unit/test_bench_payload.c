/*
 * Unit tests of trackbench's request templates: every shape decodes (with the test's own
 * decoders: percent, base64, zlib's inflate) back to JSON events whose `$insert_id`s are the
 * patched ones, the Content-Length is right, and patching twice leaves no trace of the first ids.
 */
#include "test.h"

#include <errno.h>
#include <jansson.h>
#include <zlib.h>

#include "trackd/bench_payload.h"

static const char PREFIX[] = "abcdefghij123";

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static char *b64dec(const char *s, size_t n, size_t *outlen)
{
    char *out = malloc(n / 4 * 3 + 4);
    CHECK(out != NULL);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64val(s[i]);
        CHECK(v >= 0);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c - 'a' + 10;
}

/* Percent-decode in place ('+' is a space); returns the new length. */
static size_t pct_dec(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            CHECK(i + 2 < n);
            s[o++] = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else {
            s[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    s[o] = '\0';
    return o;
}

static char *gunzip(const char *in, size_t n, size_t *outlen)
{
    size_t cap = 1 << 22;
    char *out = malloc(cap);
    CHECK(out != NULL);
    z_stream z;
    memset(&z, 0, sizeof(z));
    CHECK(inflateInit2(&z, 16 + 15) == Z_OK); /* gzip only: the header and CRC are checked */
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap - 1;
    int rc = inflate(&z, Z_FINISH);
    if (rc != Z_STREAM_END)
        fprintf(stderr, "  inflate: %d %s\n", rc, z.msg ? z.msg : "");
    CHECK(rc == Z_STREAM_END);
    CHECK(z.avail_in == 0);
    *outlen = cap - 1 - z.avail_out;
    out[*outlen] = '\0';
    inflateEnd(&z);
    return out;
}

/* Find header `name` (with ": ") in the head; returns its value or NULL. */
static const char *header(const char *head, const char *name)
{
    const char *p = strstr(head, name);
    return p ? p + strlen(name) : NULL;
}

/* Decode the request in `t` to its JSON text (malloc'd). */
static char *request_json(const bench_tmpl_t *t, size_t *jlen)
{
    char *req = malloc(t->len + 1);
    CHECK(req != NULL);
    memcpy(req, t->buf, t->len);
    req[t->len] = '\0';
    char *end = strstr(req, "\r\n\r\n");
    CHECK(end != NULL);
    char *body = end + 4;
    size_t blen = t->len - (size_t)(body - req);
    *end = '\0';
    char *data = NULL, *json = NULL;
    size_t dlen = 0;

    if (t->shape == BENCH_SHAPE_GET) {
        CHECK(strncmp(req, "GET /", 5) == 0);
        CHECK(blen == 0);
        data = strstr(req, "?data=");
        CHECK(data != NULL);
        data += 6;
        dlen = strcspn(data, "& ");
    } else {
        CHECK(strncmp(req, "POST /", 6) == 0);
        const char *cl = header(req, "Content-Length: ");
        CHECK(cl != NULL);
        CHECK_EQ_INT(strtoul(cl, NULL, 10), blen);
        if (t->shape == BENCH_SHAPE_JSON) {
            json = malloc(blen + 1);
            CHECK(json != NULL);
            memcpy(json, body, blen);
            json[blen] = '\0';
            *jlen = blen;
        } else if (t->shape == BENCH_SHAPE_GZIP) {
            CHECK(header(req, "Content-Encoding: gzip") != NULL);
            json = gunzip(body, blen, jlen);
        } else {
            CHECK(strncmp(body, "data=", 5) == 0);
            data = body + 5;
            dlen = blen - 5;
        }
    }
    if (json == NULL) {
        int escaped = t->shape != BENCH_SHAPE_FORM_B64RAW;
        if (t->shape == BENCH_SHAPE_FORM_B64RAW)
            CHECK(memchr(data, '%', dlen) == NULL);
        if (escaped)
            dlen = pct_dec(data, dlen);
        if (t->shape == BENCH_SHAPE_FORM_JSON) {
            json = strndup(data, dlen);
            CHECK(json != NULL);
            *jlen = dlen;
        } else {
            json = b64dec(data, dlen, jlen);
        }
    }
    free(req);
    return json;
}

/* Check the events of `t` carry the ids PREFIX-first.. in order, and return the parsed array. */
static json_t *check_events(const bench_tmpl_t *t, uint64_t first, size_t batch)
{
    size_t jlen;
    char *text = request_json(t, &jlen);
    json_error_t err;
    json_t *root = json_loadb(text, jlen, 0, &err);
    if (root == NULL)
        fprintf(stderr, "  bad JSON (%s): %.200s\n", err.text, text);
    CHECK(root != NULL);
    free(text);
    json_t *arr = root;
    if (batch == 1) {
        CHECK(json_is_object(root));
        arr = json_array();
        json_array_append(arr, root);
        json_decref(root);
    }
    CHECK(json_is_array(arr));
    CHECK_EQ_INT(json_array_size(arr), batch);
    for (size_t i = 0; i < batch; i++) {
        json_t *ev = json_array_get(arr, i);
        if (t->endpoint == BENCH_EP_TRACK || t->endpoint == BENCH_EP_IMPORT) {
            CHECK(json_is_string(json_object_get(ev, "event")));
            json_t *props = json_object_get(ev, "properties");
            CHECK_EQ_STR(json_string_value(json_object_get(props, "token")), "tok");
            char want[BENCH_ID_LEN + 1];
            bench_id_format(want, PREFIX, first + i);
            want[BENCH_ID_LEN] = '\0';
            CHECK_EQ_STR(json_string_value(json_object_get(props, "$insert_id")), want);
        } else {
            CHECK_EQ_STR(json_string_value(json_object_get(ev, "$token")), "tok");
        }
    }
    return arr;
}

static void build(bench_tmpl_t *t, bench_endpoint_t ep, bench_shape_t shape, size_t batch,
                  size_t event_bytes)
{
    bench_tmpl_opts_t o = {.host = "127.0.0.1:8000",
                           .path_prefix = "",
                           .query = "",
                           .endpoint = ep,
                           .shape = shape,
                           .batch = batch,
                           .event_bytes = event_bytes,
                           .token = "tok",
                           .import_secret = "s3cret",
                           .keepalive = 1,
                           .time_ms = 1732527000123ull};
    CHECK_EQ_INT(bench_tmpl_build(t, &o), 0);
}

TEST(bench_id_is_30_chars_of_the_api_alphabet_and_unique_per_counter)
{
    char pfx[BENCH_ID_PREFIX_LEN + 1], a[BENCH_ID_LEN + 1], b[BENCH_ID_LEN + 1];
    bench_id_prefix(pfx);
    CHECK_EQ_INT(strlen(pfx), BENCH_ID_PREFIX_LEN);
    bench_id_format(a, pfx, 0);
    bench_id_format(b, pfx, 0x123456789abcdefull);
    a[BENCH_ID_LEN] = b[BENCH_ID_LEN] = '\0';
    CHECK_EQ_INT(strspn(a, "abcdefghijklmnopqrstuvwxyz0123456789-"), BENCH_ID_LEN);
    CHECK(BENCH_ID_LEN <= 36 && BENCH_ID_LEN % 3 == 0);
    CHECK(strcmp(a, b) != 0);
    CHECK_EQ_STR(b + BENCH_ID_PREFIX_LEN, "-0123456789abcdef");
    char pfx2[BENCH_ID_PREFIX_LEN + 1];
    bench_id_prefix(pfx2);
    CHECK(strcmp(pfx, pfx2) != 0); /* 67 random bits: equal only by a broken generator */
}

TEST(bench_every_shape_and_endpoint_decodes_to_the_patched_ids)
{
    static const size_t batches[] = {1, 2, 3, 50};
    for (int ep = 0; ep < BENCH_EP_COUNT; ep++) {
        for (int sh = 0; sh < BENCH_SHAPE_COUNT; sh++) {
            for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
                bench_tmpl_t t;
                build(&t, (bench_endpoint_t)ep, (bench_shape_t)sh, batches[bi], 300);
                CHECK_EQ_INT(t.events, batches[bi]);
                /* Patch twice: the second ids must replace the first everywhere (CRC too). */
                bench_tmpl_patch(&t, PREFIX, 7);
                bench_tmpl_patch(&t, PREFIX, 1000003 * (uint64_t)(bi + 1));
                json_decref(check_events(&t, 1000003 * (uint64_t)(bi + 1), batches[bi]));
                bench_tmpl_free(&t);
            }
        }
    }
}

TEST(bench_events_are_about_the_requested_size)
{
    static const size_t sizes[] = {300, 1000, 5000};
    for (size_t s = 0; s < 3; s++) {
        bench_tmpl_t t;
        build(&t, BENCH_EP_TRACK, BENCH_SHAPE_JSON, 10, sizes[s]);
        bench_tmpl_patch(&t, PREFIX, 0);
        json_t *arr = check_events(&t, 0, 10);
        for (size_t i = 0; i < 10; i++) {
            char *one = json_dumps(json_array_get(arr, i), JSON_COMPACT);
            CHECK(one != NULL);
            size_t n = strlen(one);
            /* Blanks for alignment are the only difference between our text and jansson's. */
            CHECK(n + 3 >= sizes[s] && n <= sizes[s] + 3);
            free(one);
        }
        json_decref(arr);
        bench_tmpl_free(&t);
    }
}

TEST(bench_gzip_body_compresses_and_keeps_a_valid_crc_after_patching)
{
    bench_tmpl_t t;
    build(&t, BENCH_EP_TRACK, BENCH_SHAPE_GZIP, 200, 600);
    CHECK(t.len < t.plain_len); /* real deflate between the stored ids */
    for (uint64_t first = 0; first < 5000; first += 997) {
        bench_tmpl_patch(&t, PREFIX, first);
        json_decref(check_events(&t, first, 200));
    }
    bench_tmpl_free(&t);
}

TEST(bench_request_heads_carry_the_options)
{
    bench_tmpl_opts_t o = {.host = "localhost:9",
                           .path_prefix = "/_mp",
                           .query = "verbose=1&ip=1",
                           .endpoint = BENCH_EP_IMPORT,
                           .shape = BENCH_SHAPE_JSON,
                           .batch = 2,
                           .event_bytes = 100,
                           .token = "tok",
                           .import_secret = "s3cret",
                           .keepalive = 0,
                           .time_ms = 1};
    bench_tmpl_t t;
    CHECK_EQ_INT(bench_tmpl_build(&t, &o), 0);
    CHECK(strncmp(t.buf, "POST /_mp/import?verbose=1&ip=1 HTTP/1.1\r\n", 42) == 0);
    CHECK(strstr(t.buf, "\r\nHost: localhost:9\r\n") != NULL);
    CHECK(strstr(t.buf, "\r\nConnection: close\r\n") != NULL);
    /* base64("s3cret:") */
    CHECK(strstr(t.buf, "\r\nAuthorization: Basic czNjcmV0Og==\r\n") != NULL);
    bench_tmpl_free(&t);

    o.shape = BENCH_SHAPE_GET;
    o.endpoint = BENCH_EP_TRACK;
    o.keepalive = 1;
    CHECK_EQ_INT(bench_tmpl_build(&t, &o), 0);
    CHECK(strncmp(t.buf, "GET /_mp/track?data=", 20) == 0);
    CHECK(strstr(t.buf, "&verbose=1&ip=1 HTTP/1.1\r\n") != NULL);
    CHECK(strstr(t.buf, "Connection:") == NULL);
    CHECK(strstr(t.buf, "Authorization:") == NULL);
    bench_tmpl_free(&t);
}

TEST(bench_template_rejects_impossible_options)
{
    bench_tmpl_opts_t o = {.host = "h",
                           .path_prefix = "",
                           .query = "",
                           .endpoint = BENCH_EP_TRACK,
                           .shape = BENCH_SHAPE_JSON,
                           .batch = BENCH_MAX_BATCH + 1,
                           .event_bytes = 100,
                           .token = "tok",
                           .keepalive = 1};
    bench_tmpl_t t;
    CHECK_EQ_INT(bench_tmpl_build(&t, &o), -EINVAL);
    o.batch = 0;
    CHECK_EQ_INT(bench_tmpl_build(&t, &o), -EINVAL);
    o.batch = 1;
    o.token = "bad\"token";
    CHECK_EQ_INT(bench_tmpl_build(&t, &o), -EINVAL);
}

TEST(bench_names_parse_back)
{
    for (int i = 0; i < BENCH_SHAPE_COUNT; i++) {
        const char *n = bench_shape_name((bench_shape_t)i);
        CHECK_EQ_INT(bench_shape_parse(n, strlen(n)), i);
    }
    for (int i = 0; i < BENCH_EP_COUNT; i++) {
        const char *n = bench_endpoint_name((bench_endpoint_t)i);
        CHECK_EQ_INT(bench_endpoint_parse(n, strlen(n)), i);
    }
    CHECK_EQ_INT(bench_shape_parse("gzipx", 5), -EINVAL);
    CHECK_EQ_INT(bench_endpoint_parse("trac", 4), -EINVAL);
}

/*
 * The API semantics of track.c through its I/O-free steps: requests are assembled by the real
 * parser from raw bytes, then go through track_head / track_prepare / track_finish exactly as the
 * coroutine handler runs them (the log's answer is given as the status it would report).
 */
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <time.h>

#include "trackd/config.h"
#include "trackd/http.h"
#include "trackd/track.h"

static config_t cfg;
static http_env_t env;

typedef struct {
    int status;
    char head[4096];
    char body[65536]; /* /metrics is the largest answer */
    int stored;       /* records the log would have been asked to store */
} outcome_t;

static void setup(void)
{
    config_defaults(&cfg);
    http_env_init(&env, &cfg);
}

static struct sockaddr_in peer_addr(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    CHECK(inet_pton(AF_INET, ip, &sa.sin_addr) == 1);
    return sa;
}

/* Parse `raw` into one complete request. */
static http_request_t *parse(http_parser_t *p, const char *raw)
{
    size_t used, len = strlen(raw), off = 0;
    http_event_t ev;

    http_parser_init(p, &env);
    for (;;) {
        ev = http_parser_feed(p, raw + off, len - off, &used);
        off += used;
        CHECK(ev != HTTP_EV_ERROR);
        if (ev == HTTP_EV_REQUEST)
            return http_parser_take(p);
        CHECK(ev != HTTP_EV_MORE || off < len);
    }
}

/* Run one request through `t` as the server would, with the log answering `log_status`. */
static void run_on(track_t *t, const char *raw, const char *peer, int log_status, outcome_t *o)
{
    http_parser_t p;
    http_request_t *req;
    track_answer_t a;
    track_work_t w;
    struct sockaddr_in sa = peer_addr(peer ? peer : "10.0.0.1");

    CHECK(t != NULL);
    memset(o, 0, sizeof(*o));
    /* The head check needs the head only; the parser has the whole request by now. */
    req = parse(&p, raw);
    if (track_head(t, req, (struct sockaddr *)&sa, &a) == 0) {
        if (track_prepare(t, req, (struct sockaddr *)&sa, &w, &a) == 0) {
            o->stored = (int)w.batch.nrecords;
            track_finish(t, req, &w, log_status, &a);
        }
        track_work_free(&w);
    }
    o->status = a.resp.status;
    int n = http_format_head(o->head, sizeof(o->head), &a.resp, 1, 0);
    CHECK(n > 0);
    CHECK(a.resp.body_len < sizeof(o->body));
    if (a.resp.body_len)
        memcpy(o->body, a.resp.body, a.resp.body_len);
    o->body[a.resp.body_len] = '\0';
    track_answer_free(&a);
    http_request_free(&env, req);
    http_parser_free(&p);
}

/* Run one request through a fresh API state. */
static void run(const char *raw, const char *peer, int log_status, outcome_t *o)
{
    track_t *t = track_new(&cfg, NULL);
    CHECK(t != NULL);
    run_on(t, raw, peer, log_status, o);
    track_free(t);
}

static const char *event_json(void)
{
    static char buf[256];
    snprintf(buf, sizeof(buf),
             "{\"event\":\"e\",\"properties\":{\"token\":\"T\",\"distinct_id\":\"d\",\"time\":%ld,"
             "\"$insert_id\":\"abc-1\"}}",
             (long)time(NULL));
    return buf;
}

static void b64(const char *in, char *out)
{
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(in), o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[o++] = tb[(v >> 18) & 63];
        out[o++] = tb[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tb[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tb[v & 63] : '=';
    }
    out[o] = '\0';
}

static const char *post(const char *path, const char *ctype, const char *body)
{
    static char buf[16384];
    snprintf(buf, sizeof(buf),
             "POST %s HTTP/1.1\r\nHost: h\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
             path, ctype, strlen(body), body);
    return buf;
}

TEST(track_every_payload_shape_stores_the_event)
{
    char b[1024], body[4096], esc[2048];
    static char raw[16400];
    outcome_t o;
    size_t e = 0;

    setup();
    b64(event_json(), b);
    for (const char *s = b; *s; s++)
        e += (size_t)(*s == '+' || *s == '/' || *s == '=' ? sprintf(esc + e, "%%%02X", *s)
                                                          : sprintf(esc + e, "%c", *s));
    snprintf(raw, sizeof(raw), "GET /track?data=%s HTTP/1.1\r\nHost: h\r\n\r\n", esc);
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_STR(o.body, "1");
    CHECK_EQ_INT(o.stored, 1);

    snprintf(body, sizeof(body), "data=%s", esc); /* escaped form */
    run(post("/track/", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    snprintf(body, sizeof(body), "data=%s", b); /* unescaped: '+' stays '+' */
    run(post("/track", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    snprintf(body, sizeof(body), "data=%s", event_json()); /* plain JSON in a form */
    run(post("/track", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    snprintf(body, sizeof(body), "[%s,%s]", event_json(), event_json()); /* raw JSON array */
    run(post("/track", "application/json", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    CHECK_EQ_INT(o.stored, 2);
    snprintf(body, sizeof(body), "data=%s", b); /* sendBeacon */
    run(post("/track", "text/plain;charset=UTF-8", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    /* Flags in the form body (the Python library). */
    snprintf(body, sizeof(body), "data=%s&verbose=1", esc);
    run(post("/track", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "{\"status\":1,\"error\":null}");
}

TEST(track_is_acknowledged_only_when_the_log_succeeded)
{
    static char raw[16400];
    char body[2048];
    outcome_t o;

    setup();
    cfg.retry_after_s = 3;
    snprintf(body, sizeof(body), "data=%s&verbose=1", event_json());
    snprintf(raw, sizeof(raw), "%s", post("/track", "application/x-www-form-urlencoded", body));
    run(raw, NULL, -ENOBUFS, &o);
    CHECK_EQ_INT(o.status, 503);
    CHECK(strstr(o.head, "Retry-After: 3\r\n") != NULL);
    CHECK(strstr(o.body, "\"status\":0") != NULL);
    run(raw, NULL, -EIO, &o);
    CHECK_EQ_INT(o.status, 503);
}

TEST(track_bad_input_is_400_with_a_reason_in_verbose_mode)
{
    outcome_t o;

    setup();
    run("GET /track?verbose=1&data=%%%% HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    run("GET /track?verbose=1&data=!!notbase64 HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK(strstr(o.body, "\"error\":\"") != NULL);
    run("GET /track?verbose=1 HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK_EQ_STR(o.body, "{\"status\":0,\"error\":\"data, missing or empty\"}");
    run(post("/track?verbose=1", "application/json", "{\"event\":"), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    /* Decodes, but no event is valid: 200 with 0 (the reference's answer). */
    run(post("/track", "application/json", "{\"event\":\"x\"}"), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_STR(o.body, "0");
    CHECK_EQ_INT(o.stored, 0);
}

TEST(track_jsonp_callback_is_validated_and_wraps_the_answer)
{
    static char raw[16400];
    outcome_t o;

    setup();
    CHECK(track_valid_callback("cb", 2));
    CHECK(track_valid_callback("$jq_1.x", 7));
    CHECK(!track_valid_callback("1cb", 3));
    CHECK(!track_valid_callback("a(b)", 4));
    CHECK(!track_valid_callback("", 0));
    char longname[200];
    memset(longname, 'a', sizeof(longname));
    CHECK(track_valid_callback(longname, 128));
    CHECK(!track_valid_callback(longname, 129));

    snprintf(raw, sizeof(raw), "%s",
             post("/track?callback=mp.cb", "application/json", event_json()));
    run(raw, NULL, 0, &o);
    CHECK_EQ_STR(o.body, "mp.cb(1)");
    CHECK(strstr(o.head, "Content-Type: text/javascript") != NULL);
    snprintf(raw, sizeof(raw), "%s",
             post("/track?callback=mp.cb&verbose=1", "application/json", event_json()));
    run(raw, NULL, 0, &o);
    CHECK_EQ_STR(o.body, "mp.cb({\"status\":1,\"error\":null})");
    snprintf(raw, sizeof(raw), "%s",
             post("/track?callback=alert(1)%2F%2F", "application/json", event_json()));
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK_EQ_INT(o.stored, 0);
}

TEST(track_img_answers_a_gif_and_redirect_only_to_listed_hosts)
{
    static char raw[16400];
    outcome_t o;
    char err[128];

    setup();
    CHECK(config_set(&cfg, "redirect_host", "ok.example", err, sizeof(err)) == 0);
    snprintf(raw, sizeof(raw), "%s", post("/track?img=1", "application/json", event_json()));
    run(raw, NULL, 0, &o);
    CHECK(strstr(o.head, "Content-Type: image/gif") != NULL);
    CHECK(memcmp(o.body, "GIF89a", 6) == 0);
    snprintf(raw, sizeof(raw), "%s",
             post("/track?redirect=https%3A%2F%2Fok.example%2Fthanks", "application/json",
                  event_json()));
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 302);
    CHECK(strstr(o.head, "\r\nLocation: https://ok.example/thanks\r\n") != NULL);
    static const char *const bad[] = {
        "https%3A%2F%2Fevil.example%2F", "https%3A%2F%2Fok.example%40evil.example%2F",
        "https%3A%2F%2Fok.example%2F%0D%0ASet-Cookie%3A%20x", "javascript%3Aalert(1)",
        "https%3A%2F%2Fevil.example%5C%40ok.example"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "/track?redirect=%s", bad[i]);
        snprintf(raw, sizeof(raw), "%s", post(path, "application/json", event_json()));
        run(raw, NULL, 0, &o);
        CHECK_EQ_INT(o.status, 200); /* ignored, never followed */
        CHECK(strstr(o.head, "Location") == NULL);
        CHECK(strstr(o.head, "Set-Cookie") == NULL);
    }
    config_free(&cfg);
}

TEST(track_cors_echoes_a_clean_origin_and_preflight_gets_204)
{
    outcome_t o;

    setup();
    cfg.cors_max_age_s = 600;
    run("OPTIONS /track/ HTTP/1.1\r\nHost: h\r\nOrigin: https://site.example\r\n"
        "Access-Control-Request-Headers: content-type, x-mp\r\n\r\n",
        NULL, 0, &o);
    CHECK_EQ_INT(o.status, 204);
    CHECK(strstr(o.head, "Access-Control-Allow-Origin: https://site.example\r\n") != NULL);
    CHECK(strstr(o.head, "Access-Control-Allow-Credentials: true\r\n") != NULL);
    CHECK(strstr(o.head, "Vary: Origin\r\n") != NULL);
    CHECK(strstr(o.head, "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n") != NULL);
    CHECK(strstr(o.head, "Access-Control-Allow-Headers: content-type, x-mp\r\n") != NULL);
    CHECK(strstr(o.head, "Access-Control-Max-Age: 600\r\n") != NULL);
    /* Junk is not reflected. */
    run("OPTIONS /track HTTP/1.1\r\nHost: h\r\nOrigin: https://a b\r\n"
        "Access-Control-Request-Headers: x;y\r\n\r\n",
        NULL, 0, &o);
    CHECK_EQ_INT(o.status, 204);
    CHECK(strstr(o.head, "Allow-Origin") == NULL);
    CHECK(strstr(o.head, "Allow-Headers") == NULL);
}

TEST(track_import_needs_a_secret_and_reports_failed_records)
{
    static char raw[16400];
    char body[4096], err[128];
    outcome_t o;

    setup();
    CHECK(config_set(&cfg, "import_secret", "s3cret", err, sizeof(err)) == 0);
    snprintf(body, sizeof(body), "[%s,{\"event\":\"x\",\"properties\":{\"token\":\"T\"}}]",
             event_json());
    run(post("/import", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 401);
    CHECK_EQ_STR(o.body,
                 "{\"code\":401,\"error\":\"Invalid credentials\",\"status\":\"Unauthorized\"}");
    CHECK_EQ_INT(o.stored, 0);
    /* Basic base64("s3cret:") */
    snprintf(raw, sizeof(raw),
             "POST /import HTTP/1.1\r\nHost: h\r\nAuthorization: Basic czNjcmV0Og==\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK_EQ_INT(o.stored, 1); /* the valid one is still stored */
    CHECK(strstr(o.body, "\"failed_records\":[{\"index\":1,") != NULL);
    CHECK(strstr(o.body, "\"num_records_imported\":1") != NULL);
    snprintf(raw, sizeof(raw), "%s",
             post("/import?api_key=s3cret", "application/json", event_json()));
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_STR(o.body, "{\"code\":200,\"num_records_imported\":1,\"status\":\"OK\"}");
    config_free(&cfg);
}

TEST(track_unknown_token_is_401_and_nothing_is_stored)
{
    char body[2048], err[128];
    outcome_t o;

    setup();
    CHECK(config_set(&cfg, "token", "OTHER", err, sizeof(err)) == 0);
    snprintf(body, sizeof(body), "[%s]", event_json());
    run(post("/track", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 401);
    CHECK_EQ_INT(o.stored, 0);
    config_free(&cfg);
}

TEST(track_strict_mode_reports_failed_records_on_track)
{
    char body[2048];
    outcome_t o;

    setup();
    snprintf(body, sizeof(body), "[%s,{\"event\":\"\"}]", event_json());
    run(post("/track?strict=1", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK_EQ_INT(o.stored, 1);
    CHECK(strstr(o.body, "\"failed_records\":[{\"index\":1") != NULL);
}

TEST(track_client_ip_trusts_forwarded_headers_only_from_trusted_proxies)
{
    char err[128], ip[64];
    http_parser_t p;
    http_request_t *req;
    struct sockaddr_in proxy = peer_addr("10.1.2.3"), other = peer_addr("192.0.2.9");

    setup();
    CHECK(config_set(&cfg, "trusted_proxy", "10.0.0.0/8", err, sizeof(err)) == 0);
    req = parse(&p, "GET /track HTTP/1.1\r\nHost: h\r\n"
                    "X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.9.9.9\r\n\r\n");
    CHECK(track_client_ip(&cfg, req, (struct sockaddr *)&proxy, ip, sizeof(ip)) == 0);
    CHECK_EQ_STR(ip, "203.0.113.7"); /* rightmost that is not one of our proxies */
    CHECK(track_client_ip(&cfg, req, (struct sockaddr *)&other, ip, sizeof(ip)) == 0);
    CHECK_EQ_STR(ip, "192.0.2.9"); /* an untrusted peer's headers are ignored */
    http_request_free(&env, req);
    http_parser_free(&p);

    req = parse(&p, "GET /track HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.5:443, 10.0.0.6\r\n"
                    "X-Forwarded-For: [::ffff:10.0.0.7]:80\r\n\r\n");
    CHECK(track_client_ip(&cfg, req, (struct sockaddr *)&proxy, ip, sizeof(ip)) == 0);
    CHECK_EQ_STR(ip, "10.0.0.5"); /* all of them are our proxies: the leftmost */
    http_request_free(&env, req);
    http_parser_free(&p);

    req = parse(&p, "GET /track HTTP/1.1\r\nHost: h\r\nX-Real-IP: 198.51.100.4\r\n\r\n");
    CHECK(track_client_ip(&cfg, req, (struct sockaddr *)&proxy, ip, sizeof(ip)) == 0);
    CHECK_EQ_STR(ip, "198.51.100.4");
    http_request_free(&env, req);
    http_parser_free(&p);

    req = parse(&p, "GET /track HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: junk, 203.0.113.8\r\n\r\n");
    CHECK(track_client_ip(&cfg, req, (struct sockaddr *)&proxy, ip, sizeof(ip)) == 0);
    CHECK_EQ_STR(ip, "203.0.113.8");
    http_request_free(&env, req);
    http_parser_free(&p);
    config_free(&cfg);
}

TEST(track_healthz_and_metrics_answer_without_a_log)
{
    outcome_t o;

    setup();
    run("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    run("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK(strstr(o.body, "trackd_events_stored_total") != NULL);
    run("POST /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 405);
    CHECK(strstr(o.head, "Allow: GET\r\n") != NULL);
}

TEST(track_import_in_a_legacy_shape_answers_like_track_for_the_node_library)
{
    static char raw[16400];
    char b[1024], esc[2048], body[4096], bad[4096];
    outcome_t o;
    size_t e = 0;

    setup();
    b64(event_json(), b);
    for (const char *s = b; *s; s++)
        e += (size_t)(*s == '+' || *s == '/' || *s == '=' ? sprintf(esc + e, "%%%02X", *s)
                                                          : sprintf(esc + e, "%c", *s));
    /* GET ?data= and a form body data=: the library wants exactly `1` ... */
    snprintf(raw, sizeof(raw), "GET /import?data=%s&verbose=0 HTTP/1.1\r\nHost: h\r\n\r\n", esc);
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_STR(o.body, "1");
    CHECK_EQ_INT(o.stored, 1);
    snprintf(body, sizeof(body), "data=%s", b);
    run(post("/import?ip=0&verbose=0", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "1");
    /* ... or verbose JSON with status 1. */
    run(post("/import?verbose=1", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "{\"status\":1,\"error\":null}");
    /* Failed records in the legacy shape: 200 and `1` for the valid ones, as /track says. */
    snprintf(bad, sizeof(bad), "data=[%s,{\"event\":\"x\",\"properties\":{\"token\":\"T\"}}]",
             event_json());
    run(post("/import", "application/x-www-form-urlencoded", bad), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_STR(o.body, "1");
    CHECK_EQ_INT(o.stored, 1);
    /* strict=1 (query or form) and raw JSON bodies keep /import's own answers. */
    run(post("/import?strict=1", "application/x-www-form-urlencoded", body), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "{\"code\":200,\"num_records_imported\":1,\"status\":\"OK\"}");
    char strict[4200];
    snprintf(strict, sizeof(strict), "%s&strict=1", body);
    run(post("/import", "application/x-www-form-urlencoded", strict), NULL, 0, &o);
    CHECK_EQ_STR(o.body, "{\"code\":200,\"num_records_imported\":1,\"status\":\"OK\"}");
    snprintf(strict, sizeof(strict), "%s&strict=1", bad);
    run(post("/import", "application/x-www-form-urlencoded", strict), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK(strstr(o.body, "\"failed_records\":[{\"index\":1,") != NULL);
    run(post("/import", "text/plain", event_json()), NULL, 0, &o); /* JSON without the type */
    CHECK_EQ_STR(o.body, "{\"code\":200,\"num_records_imported\":1,\"status\":\"OK\"}");
    /* Errors follow the shape too; 401 is the same for every shape. */
    run("GET /import?verbose=1&data=!!! HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK(strncmp(o.body, "{\"status\":0,\"error\":", 20) == 0);
    run(post("/import", "application/json", "{\"event\":"), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 400);
    CHECK(strncmp(o.body, "{\"code\":400,", 12) == 0);
    char err[128];
    CHECK(config_set(&cfg, "import_secret", "s3cret", err, sizeof(err)) == 0);
    snprintf(raw, sizeof(raw), "GET /import?data=%s HTTP/1.1\r\nHost: h\r\n\r\n", esc);
    run(raw, NULL, 0, &o);
    CHECK_EQ_INT(o.status, 401);
    CHECK_EQ_STR(o.body,
                 "{\"code\":401,\"error\":\"Invalid credentials\",\"status\":\"Unauthorized\"}");
    config_free(&cfg);
}

TEST(track_readyz_is_503_with_the_reason_without_a_log_and_metrics_label_the_worker)
{
    track_t *t;
    outcome_t o;

    setup();
    snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s", test_tmpdir());
    run("GET /readyz HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 503);
    CHECK_EQ_STR(o.body, "not ready: no event log");
    CHECK(strstr(o.head, "Retry-After: 1\r\n") != NULL);
    run("POST /readyz HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 405);
    t = track_new(&cfg, NULL);
    track_set_worker(t, 3);
    run_on(t, post("/track", "application/json", event_json()), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    run_on(t, "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK(strstr(o.head, "Content-Type: text/plain; version=0.0.4") != NULL);
    CHECK(strstr(o.body,
                 "trackd_requests_total{worker=\"3\",endpoint=\"track\",status=\"200\"} 1\n"));
    CHECK(strstr(o.body, "trackd_events_stored_total{worker=\"3\",endpoint=\"track\"} 1\n"));
    CHECK(strstr(o.body, "trackd_ready{worker=\"3\"} 0\n"));
    CHECK(strstr(o.body, "trackd_request_duration_seconds_count{worker=\"3\",endpoint=\"track\"}"));
    CHECK(track_stats(t)->requests[TRACK_RT_TRACK][0] == 1);
    track_free(t);
}

TEST(track_rate_limit_answers_429_with_retry_after_and_stores_nothing)
{
    char err[128], body[4096];
    track_t *t;
    outcome_t o;

    setup();
    CHECK(config_set(&cfg, "rate_limit", "1 3", err, sizeof(err)) == 0);
    t = track_new(&cfg, NULL);
    snprintf(body, sizeof(body), "[%s,%s]", event_json(), event_json());
    run_on(t, post("/track", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_INT(o.stored, 2);
    /* One event left in the bucket of T: two more are refused, whole, with the wait. */
    run_on(t, post("/track?verbose=1", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 429);
    CHECK_EQ_INT(o.stored, 0);
    CHECK(strstr(o.head, "Retry-After: 1\r\n") != NULL);
    CHECK_EQ_STR(o.body, "{\"status\":0,\"error\":\"rate limit exceeded, retry later\"}");
    CHECK_EQ_INT(track_stats(t)->rejected_by[TRACK_REJ_RATE_LIMITED], 2);
    CHECK_EQ_INT(track_stats(t)->requests[TRACK_RT_TRACK][9], 1); /* the 429 column */
    /* /import answers in its own shape. */
    run_on(t, post("/import", "application/json", body), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 429);
    CHECK(strstr(o.body, "\"status\":\"Too Many Requests\"") != NULL);
    /* The one that fits still passes. */
    run_on(t, post("/track", "application/json", event_json()), NULL, 0, &o);
    CHECK_EQ_INT(o.status, 200);
    track_free(t);
    config_free(&cfg);
}

/* Parse only the head of `raw` (the body is not fed): the state track_head runs in. */
static http_request_t *parse_head(http_parser_t *p, const char *raw)
{
    size_t used, len = strlen(raw), off = 0;
    http_event_t ev;

    http_parser_init(p, &env);
    for (;;) {
        ev = http_parser_feed(p, raw + off, len - off, &used);
        off += used;
        CHECK(ev != HTTP_EV_ERROR && ev != HTTP_EV_REQUEST);
        if (ev == HTTP_EV_HEAD)
            return http_parser_req(p);
        CHECK(off < len);
    }
}

TEST(track_head_sheds_with_503_when_the_memory_budget_cannot_hold_the_body)
{
    http_parser_t p, p2, p3;
    http_request_t *req, *req2;
    track_answer_t a;
    track_t *t;
    struct sockaddr_in sa = peer_addr("10.0.0.1");

    setup();
    cfg.memory_budget_bytes = 256 * 1024;
    http_env_free(&env);
    http_env_init(&env, &cfg);
    t = track_new(&cfg, NULL);
    /* 100 KiB fits: reserved before a byte of it is read. */
    req = parse_head(&p, "POST /track HTTP/1.1\r\nHost: h\r\nContent-Length: 102400\r\n\r\n");
    CHECK_EQ_INT(track_head(t, req, (struct sockaddr *)&sa, &a), 0);
    CHECK(env.mem_used > 102400);
    /* A second one of 100 KiB passes the 75% high-water mark: refused at its head. */
    req2 = parse_head(
        &p2, "POST /track?verbose=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 102400\r\n\r\n");
    CHECK_EQ_INT(track_head(t, req2, (struct sockaddr *)&sa, &a), 0);
    req =
        parse_head(&p3, "POST /track?verbose=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
    CHECK_EQ_INT(track_head(t, req, (struct sockaddr *)&sa, &a), 1);
    CHECK_EQ_INT(a.resp.status, 503);
    CHECK(memmem(a.hdr, a.hlen, "Retry-After: 1\r\n", 16) != NULL);
    CHECK(strstr(a.resp.body, "server busy") != NULL);
    CHECK_EQ_INT(track_stats(t)->shed_by[TRACK_SHED_MEMORY], 1);
    track_answer_free(&a);
    http_parser_free(&p3);
    /* Once the first two are gone the budget has room again. */
    http_parser_free(&p2);
    http_parser_free(&p);
    req2 = parse_head(&p2, "POST /track HTTP/1.1\r\nHost: h\r\nContent-Length: 102400\r\n\r\n");
    CHECK_EQ_INT(track_head(t, req2, (struct sockaddr *)&sa, &a), 0);
    /* More than the whole budget never fits. */
    http_parser_free(&p2);
    req2 = parse_head(&p2, "POST /track HTTP/1.1\r\nHost: h\r\nContent-Length: 300000\r\n\r\n");
    CHECK_EQ_INT(track_head(t, req2, (struct sockaddr *)&sa, &a), 1);
    CHECK_EQ_INT(a.resp.status, 503);
    http_parser_free(&p2);
    CHECK_EQ_INT(env.mem_used, 0);
    track_free(t);
    http_env_free(&env);
}

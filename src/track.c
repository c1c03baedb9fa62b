/*
 * The ingestion API (../shared/API.md) as an http.h application. Every payload shape the official
 * clients send ends up as one `data` value: from the query (GET), from a form body (escaped or
 * not, also inside a sendBeacon text/plain body), or the raw JSON body itself; gzip bodies are
 * inflated first within max_decoded_bytes. Flags come from the query or the form body.
 *
 * Cheap refusals happen at the head, before a body byte is read: unknown path, wrong method,
 * bad /import credentials, and load shedding (the log failed, its queue past queue_high_water,
 * the request memory budget past its high-water mark or unable to hold the announced body,
 * requests already waiting for the CPU too long: admitted work is more than it gets through). The
 * handler proper runs in a coroutine: decode and validate (track_prepare), check the per-token
 * rate limits, log_append and yield until the log says the events are durable, then answer
 * (track_finish, in track_answer.c). A 200 is only ever sent after the log reported success; any
 * log failure is a 503 with Retry-After and claims nothing stored.
 *
 * While a handler waits for durability it holds only its request head and the validated records:
 * the body, the inflated body and the decoded payload are freed (and given back to the memory
 * budget) as soon as the records are built, so thousands of requests waiting on a slow disk cost
 * little more than what the log's own queue holds.
 */
#include "trackd/track.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "trackd/msg.h"
#include "trackd/segment.h"
#include "track_internal.h"

track_t *track_new(const config_t *cfg, log_t *log)
{
    track_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cfg = cfg;
    t->log = log;
    t->rl = ratelimit_new(cfg);
    if (t->rl == NULL) {
        free(t);
        return NULL;
    }
    for (int r = 0; r < TRACK_RT_COUNT; r++)
        hist_init(&t->stats.latency[r]);
    metrics_proc_init(&t->proc, 0, cfg->data_dir);
    return t;
}

void track_free(track_t *t)
{
    if (t == NULL)
        return;
    ratelimit_free(t->rl);
    free(t);
}

void track_set_server(track_t *t, http_server_t *s)
{
    t->server = s;
}

void track_set_worker(track_t *t, int index)
{
    t->proc.worker = index;
}

void track_note_loop_lag(track_t *t, uint64_t lag_ns)
{
    t->stats.loop_lag_ns = lag_ns;
    if (lag_ns > t->stats.loop_lag_max_ns)
        t->stats.loop_lag_max_ns = lag_ns;
}

const track_stats_t *track_stats(const track_t *t)
{
    return &t->stats;
}

static uint64_t track_mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- /healthz, /readyz, /metrics -------------------------------------------------------- */

/* Gather what a scrape or a readiness check looks at; `hs`, `ls` are the caller's storage. */
static void track_metrics_input(track_t *t, metrics_input_t *in, http_stats_t *hs, log_stats_t *ls)
{
    memset(in, 0, sizeof(*in));
    in->cfg = t->cfg;
    in->proc = &t->proc;
    in->track = &t->stats;
    in->rate_buckets = ratelimit_buckets(t->rl);
    in->now_ms = track_mono_ms();
    if (t->server) {
        http_server_stats(t->server, hs);
        in->http = hs;
        in->coroutines = http_server_coroutines(t->server);
    }
    if (t->log) {
        log_get_stats(t->log, ls);
        in->log = ls;
    }
}

/* Answer /healthz, /readyz or /metrics (GET only). Never touches the log's queue. */
static void track_ops(track_t *t, int route, track_answer_t *a)
{
    metrics_input_t in;
    http_stats_t hs;
    log_stats_t ls;
    char why[512];

    a->resp.status = 200;
    track__ans_header(a, "Cache-Control: no-cache, no-store\r\n");
    if (route == TRACK_RT_HEALTHZ) {
        /* Liveness: the loop runs. Nothing else, so a busy worker is not restarted for it. */
        track__ans_body(a, "text/plain; charset=utf-8", "ok", 2);
    } else if (route == TRACK_RT_READYZ) {
        track_metrics_input(t, &in, &hs, &ls);
        if (metrics_ready(&in, why, sizeof(why))) {
            track__ans_body(a, "text/plain; charset=utf-8", "ready", 5);
        } else {
            char body[600];
            int n = snprintf(body, sizeof(body), "not ready: %s", why);
            a->resp.status = 503;
            track__ans_header(a, "Retry-After: %d\r\n", t->cfg->retry_after_s);
            track__ans_body(a, "text/plain; charset=utf-8", body,
                            n < (int)sizeof(body) ? (size_t)n : sizeof(body) - 1);
        }
    } else {
        char *text = NULL;
        size_t len = 0;
        track_metrics_input(t, &in, &hs, &ls);
        if (metrics_render(&in, &text, &len) != 0) {
            a->resp.status = 503;
            track__ans_header(a, "Retry-After: %d\r\n", t->cfg->retry_after_s);
            track__ans_body(a, "text/plain; charset=utf-8", "out of memory", 13);
        } else {
            a->heap = text;
            a->resp.body = text;
            a->resp.body_len = len;
            a->resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
        }
    }
    track__ans_finish(a);
    track__count(t, route, a->resp.status);
}

/* ---- routing and the head check --------------------------------------------------------- */

static int track_route(const http_str_t *path)
{
#define ROUTE(p, rt)                                                                               \
    {                                                                                              \
        p, sizeof(p) - 1, rt                                                                       \
    }
    static const struct {
        const char *p;
        size_t len;
        int rt;
    } routes[] = {ROUTE("/track", TRACK_RT_TRACK),     ROUTE("/engage", TRACK_RT_ENGAGE),
                  ROUTE("/groups", TRACK_RT_GROUPS),   ROUTE("/import", TRACK_RT_IMPORT),
                  ROUTE("/healthz", TRACK_RT_HEALTHZ), ROUTE("/metrics", TRACK_RT_METRICS),
                  ROUTE("/readyz", TRACK_RT_READYZ)};
#undef ROUTE
    size_t len = path->len;

    if (len > 1 && path->p[len - 1] == '/')
        len--; /* the browser library sends /track/ */
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (routes[i].len == len && memcmp(routes[i].p, path->p, len) == 0)
            return routes[i].rt;
    }
    return TRACK_RT_NONE;
}

static int track_flag_raw_on(const http_request_t *req, const char *name)
{
    http_str_t v = http_query_raw(req->query.p, req->query.len, name);
    return v.p && v.len == 1 && v.p[0] == '1';
}

/* /import credentials: Authorization: Basic base64(SECRET:) or api_key= in the query. */
static int track_import_auth(const track_t *t, const http_request_t *req)
{
    const config_list_t *secrets = &t->cfg->import_secrets;
    const http_str_t *auth = &req->headers[HTTP_H_AUTHORIZATION];
    http_str_t key;

    if (secrets->n == 0)
        return 1; /* no secret configured: /import is open (docs/http.md) */
    if (auth->p && auth->len > 6 && strncasecmp(auth->p, "Basic ", 6) == 0) {
        const char *b = auth->p + 6;
        size_t blen = auth->len - 6;
        char dec[512];
        size_t dlen = 0;
        while (blen && *b == ' ') {
            b++;
            blen--;
        }
        if (blen / 4 * 3 + 3 < sizeof(dec) && decode_base64(b, blen, dec, &dlen) == 0) {
            char *colon = memchr(dec, ':', dlen);
            size_t ulen = colon ? (size_t)(colon - dec) : dlen;
            if (ulen > 0 && config_list_has(secrets, dec, ulen))
                return 1;
        }
    }
    key = http_query_raw(req->query.p, req->query.len, "api_key");
    if (key.p && key.len > 0 && key.len < 512) {
        char dec[512];
        memcpy(dec, key.p, key.len);
        ssize_t n = decode_percent(dec, key.len, 1);
        if (n > 0 && config_list_has(secrets, dec, (size_t)n))
            return 1;
    }
    return 0;
}

/* Content-Type without parameters, compared case-insensitively. */
static int track_ctype_is(const http_str_t *ct, const char *type);

/*
 * Whether an /import request is in one of /track's legacy shapes (GET ?data=, or a form body
 * with data=) and without strict=1: it then gets /track's answers, which the official Node
 * library requires (docs/http.md, "Compatibility"). At the head the body is not read yet, so a
 * POST counts as the JSON shape only when it says Content-Type: application/json; track_prepare
 * decides for good once it has seen the body.
 */
static int track_import_legacy_guess(const http_request_t *req)
{
    if (track_flag_raw_on(req, "strict"))
        return 0;
    if (req->method == HTTP_GET)
        return 1;
    return !track_ctype_is(&req->headers[HTTP_H_CONTENT_TYPE], "application/json");
}

/* 503 + Retry-After before the body is read, counted under `why`. */
static int track_shed(track_t *t, track_answer_t *a, const http_request_t *req, int route,
                      int legacy, int verbose, track_shed_t why)
{
    t->stats.shed++;
    t->stats.shed_by[why]++;
    track__error(t, a, req, route, legacy, 503,
                 why == TRACK_SHED_LOG ? "event log unavailable" : "server busy, retry later",
                 verbose, NULL);
    return 1;
}

int track_head(track_t *t, http_request_t *req, const struct sockaddr *peer, track_answer_t *a)
{
    int route = track_route(&req->path);
    int verbose = track_flag_raw_on(req, "verbose");
    int legacy = route == TRACK_RT_IMPORT && track_import_legacy_guess(req);
    http_env_t *env = http_request_env(req);

    (void)peer;
    req->tag = route;
    track__ans_init(a);
    if (route == TRACK_RT_NONE) {
        track__error(t, a, req, route, 0, 404, "not found", verbose, NULL);
        return 1;
    }
    if (route == TRACK_RT_HEALTHZ || route == TRACK_RT_METRICS || route == TRACK_RT_READYZ) {
        if (req->method != HTTP_GET) {
            track__error(t, a, req, route, 0, 405, "method not allowed", verbose, NULL);
            return 1;
        }
        track_ops(t, route, a);
        return 1;
    }
    if (req->method == HTTP_OPTIONS) {
        /* CORS preflight: same origin headers, the methods, the requested headers echoed. */
        const http_str_t *h = &req->headers[HTTP_H_ACR_HEADERS];
        a->resp.status = 204;
        track__api_headers(a, req);
        track__ans_header(a, "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n");
        if (track__acrh_ok(h))
            track__ans_header(a, "Access-Control-Allow-Headers: %.*s\r\n", (int)h->len, h->p);
        track__ans_header(a, "Access-Control-Max-Age: %d\r\n", t->cfg->cors_max_age_s);
        track__ans_finish(a);
        track__count(t, route, 204);
        return 1;
    }
    if (req->method != HTTP_GET && req->method != HTTP_POST) {
        track__error(t, a, req, route, legacy, 405, "method not allowed", verbose, NULL);
        return 1;
    }
    if (route == TRACK_RT_IMPORT && !track_import_auth(t, req)) {
        track__error(t, a, req, route, legacy, 401, "Invalid credentials", verbose, NULL);
        return 1;
    }
    /* Shed before reading the body: what the log or the budget would refuse anyway. */
    if (t->log) {
        size_t want = req->has_length && req->content_length > 0 ? (size_t)req->content_length
                                                                 : req->query.len + 1;
        size_t max = t->cfg->queue_max_bytes, hw = config_queue_high_water(t->cfg);
        if (!log_can_accept(t->log, 0))
            return track_shed(t, a, req, route, legacy, verbose, TRACK_SHED_LOG);
        /* Room under the high-water mark: the queue ends at most `hw` full (hw <= max). */
        if (want > hw || !log_can_accept(t->log, want + (max - hw)))
            return track_shed(t, a, req, route, legacy, verbose, TRACK_SHED_QUEUE);
    }
    /* CPU: what was admitted already waits too long for its turn; this would wait longer. */
    if (t->server &&
        http_server_backlog_ns(t->server) > (uint64_t)TRACK_QUEUE_DELAY_SHED_MS * 1000000)
        return track_shed(t, a, req, route, legacy, verbose, TRACK_SHED_CPU);
    /* Memory last: the reservation it makes is kept only by requests that go on. */
    if (env && (http_env_over_high_water(env) || http_request_reserve_body(req) != 0))
        return track_shed(t, a, req, route, legacy, verbose, TRACK_SHED_MEMORY);
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------- */

/* The parameters the API reads from a query string or a form body: the first of each name. */
typedef struct {
    const decode_pair_t *data, *verbose, *strict, *ip, *img, *callback, *redirect;
} track_params_t;

/* One pass over the pairs (rather than one lookup per name: this runs for every request). */
static void track_params(const decode_pair_t *p, size_t n, track_params_t *out)
{
#define TRACK_PARAM(name, field)                                                                   \
    if (p[i].key_len == sizeof(name) - 1 && memcmp(p[i].key, name, sizeof(name) - 1) == 0) {       \
        if (out->field == NULL)                                                                    \
            out->field = &p[i];                                                                    \
        continue;                                                                                  \
    }
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        TRACK_PARAM("data", data)
        TRACK_PARAM("verbose", verbose)
        TRACK_PARAM("strict", strict)
        TRACK_PARAM("ip", ip)
        TRACK_PARAM("img", img)
        TRACK_PARAM("callback", callback)
        TRACK_PARAM("redirect", redirect)
    }
#undef TRACK_PARAM
}

static int track_flag_on(const decode_pair_t *p)
{
    return p && ((p->val_len == 1 && p->val[0] == '1') ||
                 (p->val_len == 4 && strncasecmp(p->val, "true", 4) == 0));
}

int track_valid_callback(const char *name, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        int alpha = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' || ch == '$';
        if (!alpha && (i == 0 || !((ch >= '0' && ch <= '9') || ch == '.')))
            return 0;
    }
    return 1;
}

/* A redirect target on the allow-list: http(s), printable, no userinfo, host listed. */
static int track_redirect_ok(const config_t *cfg, const char *url, size_t len)
{
    const char *host, *end;
    char lower[256];
    size_t hlen;

    if (cfg->redirect_hosts.n == 0 || len == 0 || len > TRACK_MAX_REDIRECT)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ch == '"' || ch == '<' || ch == '>')
            return 0;
    }
    if (len > 7 && strncasecmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (len > 8 && strncasecmp(url, "https://", 8) == 0)
        host = url + 8;
    else
        return 0;
    end = host;
    while (end < url + len && *end != '/' && *end != '?' && *end != '#') {
        if (*end == '@')
            return 0;
        end++;
    }
    hlen = (size_t)(end - host);
    if (hlen > 0 && host[0] == '[') {
        const char *rb = memchr(host, ']', hlen);
        if (rb == NULL)
            return 0;
        host++;
        hlen = (size_t)(rb - host);
    } else {
        const char *colon = memchr(host, ':', hlen);
        if (colon)
            hlen = (size_t)(colon - host);
    }
    if (hlen == 0 || hlen >= sizeof(lower))
        return 0;
    for (size_t i = 0; i < hlen; i++)
        lower[i] = (char)(host[i] >= 'A' && host[i] <= 'Z' ? host[i] + 32 : host[i]);
    return config_list_has(&cfg->redirect_hosts, lower, hlen);
}

/* Parse one address ("1.2.3.4", "1.2.3.4:80", "::1", "[::1]:80") into `ss`. */
static int track_parse_addr(const char *s, size_t len, struct sockaddr_storage *ss)
{
    char buf[64];

    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (rb == NULL)
            return -EINVAL;
        s++;
        len = (size_t)(rb - s);
    } else {
        const char *dot = memchr(s, '.', len), *colon = memchr(s, ':', len);
        if (dot && colon && dot < colon)
            len = (size_t)(colon - s); /* IPv4 with a port; "::ffff:1.2.3.4" is IPv6 */
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        return 0;
    }
    return -EINVAL;
}

static int track_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)outlen) ? 0 : -EINVAL;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out, (socklen_t)outlen)
                       ? 0
                       : -EINVAL;
        return inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)outlen) ? 0 : -EINVAL;
    }
    return -EINVAL;
}

int track_client_ip(const config_t *cfg, const http_request_t *req, const struct sockaddr *peer,
                    char *out, size_t outlen)
{
    const http_str_t *xff = &req->headers[HTTP_H_X_FORWARDED_FOR];
    const http_str_t *xri = &req->headers[HTTP_H_X_REAL_IP];
    struct sockaddr_storage ss;

    if (peer == NULL || peer->sa_family == AF_UNSPEC)
        return -EINVAL;
    if (!config_is_trusted_proxy(cfg, peer))
        return track_format_addr(peer, out, outlen);
    if (xff->p && xff->len) {
        /* Proxies append: walk from the right, skipping our own proxies, take the first other. */
        size_t end = xff->len;
        for (;;) {
            size_t start = end;
            while (start > 0 && xff->p[start - 1] != ',')
                start--;
            if (track_parse_addr(xff->p + start, end - start, &ss) != 0)
                break; /* garbage from the client's side of the chain: stop trusting */
            /* The first address that is not ours, or the leftmost if all of them are. */
            if (!config_is_trusted_proxy(cfg, (struct sockaddr *)&ss) || start == 0)
                return track_format_addr((struct sockaddr *)&ss, out, outlen);
            end = start - 1;
        }
    }
    if (xri->p && track_parse_addr(xri->p, xri->len, &ss) == 0)
        return track_format_addr((struct sockaddr *)&ss, out, outlen);
    return track_format_addr(peer, out, outlen);
}

/* Content-Type without parameters, compared case-insensitively. */
static int track_ctype_is(const http_str_t *ct, const char *type)
{
    size_t n = strlen(type), len;
    const char *p = ct->p;

    if (p == NULL)
        return 0;
    len = ct->len;
    while (len && *p == ' ') {
        p++;
        len--;
    }
    if (len < n || strncasecmp(p, type, n) != 0)
        return 0;
    return len == n || p[n] == ';' || p[n] == ' ';
}

static int track_looks_json(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')
            continue;
        return s[i] == '{' || s[i] == '[';
    }
    return 0;
}

void track_work_free(track_work_t *w)
{
    if (w->parsed) {
        event_batch_free(&w->batch);
        w->parsed = 0;
    }
    free(w->gunzipped);
    w->gunzipped = NULL;
    free(w->payload);
    w->payload = NULL;
    free((char *)w->redirect);
    w->redirect = NULL;
}

/*
 * Wall-clock receive time (Unix ms), read for each request. (Deriving it from the head's
 * monotonic time plus an offset read once a second saved a clock read but could lag the wall
 * clock by a millisecond, enough to clamp the time of an event sent "now" by a client whose
 * clock agrees with ours: the black-box tests caught it.)
 */
static uint64_t track_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Bytes the validated records of a batch hold (charged while the handler waits). */
static size_t track_batch_bytes(const event_batch_t *b)
{
    size_t n = b->nrecords * sizeof(log_record_t) + b->nfailures * sizeof(event_failure_t);
    for (size_t i = 0; i < b->nrecords; i++)
        n += b->records[i].len + 1;
    return n;
}

/* Per-token rate limits over the records of `w`: 0 to go on, 1 with a 429 in `a`. */
static int track_rate_limit(track_t *t, http_request_t *req, track_work_t *w, track_answer_t *a)
{
    ratelimit_want_t *wants;
    size_t nw;
    uint64_t retry = 0;
    int rc;

    if (!ratelimit_enabled(t->rl))
        return 0;
    if (ratelimit_wants(w->batch.records, w->batch.nrecords, &wants, &nw) != 0)
        return 0; /* out of memory: the limiter must not refuse traffic for its own trouble */
    rc = ratelimit_take(t->rl, wants, nw, uv_hrtime(), &retry);
    free(wants);
    if (rc != 1)
        return 0;
    t->stats.rejected_by[TRACK_REJ_RATE_LIMITED] += w->batch.nrecords;
    w->retry_after_s = retry;
    track__error(t, a, req, w->route, w->legacy, 429, "rate limit exceeded, retry later",
                 w->verbose, w->callback);
    track__ans_header(a, "Retry-After: %llu\r\n", (unsigned long long)retry);
    track__ans_finish(a);
    return 1;
}

int track_prepare(track_t *t, http_request_t *req, const struct sockaddr *peer, track_work_t *w,
                  track_answer_t *a)
{
    const config_t *cfg = t->cfg;
    decode_pair_t qp[TRACK_MAX_PAIRS], bp[TRACK_MAX_PAIRS];
    size_t nq = 0, nb = 0;
    track_params_t q, b; /* from the query and the body: the query's win, but for data */
    const decode_pair_t *data, *cb, *rd;
    const char *json = NULL, *body = req->body;
    size_t json_len = 0, body_len = req->body_len, gz_charged = 0;
    char reason[160];
    int rc;

    memset(w, 0, sizeof(*w));
    w->route = req->tag;
    w->legacy = w->route == TRACK_RT_IMPORT && track_import_legacy_guess(req);
    track__ans_init(a);
    t->stats.body_bytes += req->body_len;

    /* The query is ours to decode in place (the request belongs to this handler). */
    if (req->query.p) {
        rc = decode_form((char *)req->query.p, req->query.len, qp, TRACK_MAX_PAIRS, &nq);
        if (rc) {
            w->verbose = track_flag_raw_on(req, "verbose");
            track__error(t, a, req, w->route, w->legacy, 400,
                         rc == -E2BIG ? "too many query parameters" : "malformed query string",
                         w->verbose, NULL);
            return 1;
        }
    }
    track_params(qp, nq, &q);
    w->verbose = track_flag_on(q.verbose);

    if (body_len > 0) {
        const http_str_t *ce = &req->headers[HTTP_H_CONTENT_ENCODING];
        if (ce->p && ce->len && !track_ctype_is(ce, "identity")) {
            http_env_t *env = http_request_env(req);
            size_t outlen = 0, limit = cfg->max_decoded_bytes;
            int tight = 0;
            if (!track_ctype_is(ce, "gzip") && !track_ctype_is(ce, "x-gzip") &&
                !track_ctype_is(ce, "deflate")) {
                track__error(t, a, req, w->route, w->legacy, 415, "unsupported Content-Encoding",
                             w->verbose, NULL);
                return 1;
            }
            /* Inflate into what the memory budget has room for, never more. */
            if (env && http_env_room(env) < limit) {
                limit = http_env_room(env);
                tight = 1;
            }
            rc = decode_gunzip(body, body_len, limit, &w->gunzipped, &outlen);
            if (rc == -E2BIG && tight) {
                t->stats.shed++;
                t->stats.shed_by[TRACK_SHED_MEMORY]++;
                track__error(t, a, req, w->route, w->legacy, 503, "server busy, retry later",
                             w->verbose, NULL);
                return 1;
            }
            if (rc == -E2BIG) {
                snprintf(reason, sizeof(reason), "request exceeds max limit of %zu bytes",
                         cfg->max_decoded_bytes);
                track__error(t, a, req, w->route, w->legacy, 413, reason, w->verbose, NULL);
                return 1;
            }
            if (rc) {
                track__error(t, a, req, w->route, w->legacy, rc == -ENOMEM ? 503 : 400,
                             rc == -ENOMEM ? "out of memory" : "invalid gzip body", w->verbose,
                             NULL);
                return 1;
            }
            gz_charged = outlen + 1;
            http_request_charge(req, gz_charged, 1);
            body = w->gunzipped;
            body_len = outlen;
        }
        if (track_ctype_is(&req->headers[HTTP_H_CONTENT_TYPE], "application/json") ||
            track_looks_json(body, body_len)) {
            /* A raw JSON body (Swift, the reference's examples): the body is the data. */
            json = body;
            json_len = body_len;
            w->legacy = 0;
        } else {
            /* A form, also inside sendBeacon's text/plain body. Decoded in place: ours. */
            rc = decode_form((char *)body, body_len, bp, TRACK_MAX_PAIRS, &nb);
            if (rc) {
                track__error(t, a, req, w->route, w->legacy, 400,
                             rc == -E2BIG ? "too many form parameters" : "malformed form body",
                             w->verbose, NULL);
                return 1;
            }
        }
    }

    track_params(bp, nb, &b);
#define EITHER(field) (q.field ? q.field : b.field)
    w->verbose = track_flag_on(EITHER(verbose));
    w->strict = track_flag_on(EITHER(strict));
    w->want_ip = track_flag_on(EITHER(ip));
    w->img = track_flag_on(EITHER(img));
    if (w->route == TRACK_RT_IMPORT && json == NULL)
        w->legacy = !w->strict; /* data= from the query or a form: the /track shapes */
    cb = EITHER(callback);
    if (cb && cb->val_len > 0) {
        if (!track_valid_callback(cb->val, cb->val_len)) {
            track__error(t, a, req, w->route, w->legacy, 400, "invalid callback name", w->verbose,
                         NULL);
            return 1;
        }
        /* Copied: the body it may come from is freed before the answer is built. */
        memcpy(w->cb_buf, cb->val, cb->val_len);
        w->cb_buf[cb->val_len] = '\0';
        w->callback = w->cb_buf;
    }
    rd = EITHER(redirect);
#undef EITHER
    if (rd && track_redirect_ok(cfg, rd->val, rd->val_len)) {
        w->redirect = strndup(rd->val, rd->val_len);
        if (w->redirect == NULL) {
            track__error(t, a, req, w->route, w->legacy, 503, "out of memory", w->verbose,
                         w->callback);
            return 1;
        }
    }

    if (json == NULL) {
        /* The form body's data wins over the query's (a POST may carry both). */
        data = b.data ? b.data : q.data;
        if (data == NULL || data->val_len == 0) {
            track__error(t, a, req, w->route, w->legacy, 400, "data, missing or empty", w->verbose,
                         w->callback);
            return 1;
        }
        rc = decode_payload(data->val, data->val_len, &json, &json_len, &w->payload);
        if (rc) {
            track__error(t, a, req, w->route, w->legacy, 400, "data, not valid base64 or JSON",
                         w->verbose, w->callback);
            return 1;
        }
    }

    if (w->want_ip && track_client_ip(cfg, req, peer, w->ip, sizeof(w->ip)) != 0)
        w->ip[0] = '\0';

    event_opts_t opts = {
        .endpoint = (uint8_t)(w->route == TRACK_RT_ENGAGE   ? SEGMENT_EP_ENGAGE
                              : w->route == TRACK_RT_GROUPS ? SEGMENT_EP_GROUPS
                              : w->route == TRACK_RT_IMPORT ? SEGMENT_EP_IMPORT
                                                            : SEGMENT_EP_TRACK),
        .ip = w->want_ip && w->ip[0] ? w->ip : NULL,
        .now_ms = track_now_ms(),
        .max_events = cfg->max_events_per_request,
        .max_event_bytes = cfg->max_event_bytes,
        .tokens = &cfg->tokens,
        .fast_path = (uint8_t)(cfg->json_fast_path != 0),
    };
    rc = event_batch_parse(&w->batch, json, json_len, &opts);
    if (rc == -EACCES) {
        track__error(t, a, req, w->route, w->legacy, 401, "Invalid credentials", w->verbose, NULL);
        return 1;
    }
    if (rc) {
        int status = rc == -E2BIG ? 413 : rc == -ENOMEM ? 503 : 400;
        const char *why = w->batch.error[0] ? w->batch.error : "data, not valid JSON";
        track__error(t, a, req, w->route, w->legacy, status, rc == -ENOMEM ? "out of memory" : why,
                     w->verbose, w->callback);
        return 1;
    }
    w->parsed = 1;
    /* The records are copies: what they were decoded from is not needed any more. */
    free(w->gunzipped);
    w->gunzipped = NULL;
    free(w->payload);
    w->payload = NULL;
    http_request_release(req, gz_charged);
    http_request_drop_body(req);
    http_request_charge(req, track_batch_bytes(&w->batch), 1);
    t->stats.events_rejected += w->batch.nfailures;
    t->stats.rejected_by[TRACK_REJ_INVALID] += w->batch.nfailures;
    if (w->batch.nrecords == 0) {
        track_finish(t, req, w, 0, a);
        return 1;
    }
    if (track_rate_limit(t, req, w, a))
        return 1;
    return 0;
}

/* ---- the coroutine handler ------------------------------------------------------------ */

/* Latency of an answered API request, from its complete head to now. */
static void track_observe(track_t *t, const http_request_t *req)
{
    int r = req->tag;

    if (r >= TRACK_RT_TRACK && r <= TRACK_RT_IMPORT && req->start_ns)
        hist_record(&t->stats.latency[r], uv_hrtime() - req->start_ns);
}

static void track_on_logged(log_append_t *req, int status)
{
    track_work_t *w = req->data;

    w->log_status = status;
    w->log_done = 1;
    /* Only wake the handler if it is parked in coro_yield (not still inside log_append). */
    if (w->waiting)
        http_resume(w->co);
}

static void track_handle(void *data, coro_t *co, http_conn_t *c, http_request_t *req)
{
    track_t *t = data;
    track_work_t w;
    track_answer_t a;
    int rc;

    if (track_prepare(t, req, http_conn_peer(c), &w, &a) == 0) {
        rc = -EIO;
        if (t->log) {
            w.co = co;
            w.append.data = &w;
            rc = log_append(t->log, &w.append, w.batch.records, w.batch.nrecords, track_on_logged);
        }
        if (rc == 0) {
            while (!w.log_done) {
                w.waiting = 1;
                coro_yield(co);
                w.waiting = 0;
            }
            rc = w.log_status;
        }
        track_finish(t, req, &w, rc, &a);
    }
    http_conn_respond(c, &a.resp);
    track_observe(t, req);
    track_answer_free(&a);
    track_work_free(&w);
}

static http_head_result_t track_on_head(void *data, http_conn_t *c, http_request_t *req)
{
    track_t *t = data;
    track_answer_t a;

    if (track_head(t, req, http_conn_peer(c), &a) == 0)
        return HTTP_HEAD_CONTINUE;
    http_conn_respond(c, &a.resp);
    track_observe(t, req);
    track_answer_free(&a);
    return HTTP_HEAD_ANSWERED;
}

http_handler_t track_handler(track_t *t)
{
    http_handler_t h = {.data = t, .head = track_on_head, .handle = track_handle};
    return h;
}

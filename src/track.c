/*
 * The ingestion API (../shared/API.md) as an http.h application. Every payload shape the official
 * clients send ends up as one `data` value: from the query (GET), from a form body (escaped or
 * not, also inside a sendBeacon text/plain body), or the raw JSON body itself; gzip bodies are
 * inflated first within max_decoded_bytes. Flags come from the query or the form body.
 *
 * Cheap refusals happen at the head, before a body byte is read: unknown path, wrong method,
 * bad /import credentials, and load shedding when the log's queue is over its mark. The handler
 * proper runs in a coroutine: decode and validate (track_prepare), log_append and yield until the
 * log says the events are durable, then answer (track_finish). A 200 is only ever sent after the
 * log reported success; any log failure is a 503 with Retry-After and claims nothing stored.
 *
 * Nothing unvalidated reaches a response header: Origin, the requested CORS headers and redirect
 * URLs are checked byte by byte and dropped (or refused) when they do not pass.
 */
#include "trackd/track.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "trackd/msg.h"
#include "trackd/segment.h"

struct track_s {
    const config_t *cfg;
    log_t *log;
    http_server_t *server;
    track_stats_t stats;
};

/* A 1x1 transparent GIF (GIF89a, one-entry palette, transparency extension), for img=1. */
static const unsigned char track_gif[] = {
    'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

static const int track_statuses[] = TRACK_STATUSES;

static const char *const track_route_names[TRACK_RT_COUNT] = {
    "other", "track", "engage", "groups", "import", "healthz", "metrics"};

#define TRACK_API_METHODS "GET, POST, OPTIONS"

track_t *track_new(const config_t *cfg, log_t *log)
{
    track_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cfg = cfg;
    t->log = log;
    return t;
}

void track_free(track_t *t)
{
    free(t);
}

void track_set_server(track_t *t, http_server_t *s)
{
    t->server = s;
}

void track_get_stats(const track_t *t, track_stats_t *st)
{
    *st = t->stats;
}

static void track_count(track_t *t, int route, int status)
{
    size_t col = TRACK_NSTATUS - 1;
    for (size_t i = 0; i < sizeof(track_statuses) / sizeof(track_statuses[0]); i++) {
        if (track_statuses[i] == status) {
            col = i;
            break;
        }
    }
    if (route < 0 || route >= TRACK_RT_COUNT)
        route = TRACK_RT_NONE;
    t->stats.requests[route][col]++;
}

/* ---- answers ---------------------------------------------------------------------------- */

void track_answer_free(track_answer_t *a)
{
    free(a->heap);
    a->heap = NULL;
}

static void ans_init(track_answer_t *a)
{
    memset(&a->resp, 0, sizeof(a->resp));
    a->hlen = 0;
    a->hdr[0] = '\0';
    a->heap = NULL;
}

/* Append one header line (already validated) to the answer. */
__attribute__((format(printf, 2, 3))) static void ans_header(track_answer_t *a, const char *fmt,
                                                             ...)
{
    va_list ap;
    int n;

    if (a->hlen >= sizeof(a->hdr))
        return;
    va_start(ap, fmt);
    n = vsnprintf(a->hdr + a->hlen, sizeof(a->hdr) - a->hlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(a->hdr) - a->hlen) {
        a->hdr[a->hlen] = '\0'; /* drop a header that does not fit rather than cut it */
        return;
    }
    a->hlen += (size_t)n;
}

/* Append a constant header line. */
static void ans_lit(track_answer_t *a, const char *line, size_t len)
{
    if (a->hlen + len < sizeof(a->hdr)) {
        memcpy(a->hdr + a->hlen, line, len);
        a->hlen += len;
        a->hdr[a->hlen] = '\0';
    }
}

#define ANS_LIT(a, lit) ans_lit(a, lit, sizeof(lit) - 1)

static void ans_finish(track_answer_t *a)
{
    a->resp.headers = a->hdr;
    a->resp.headers_len = a->hlen;
}

/* Set a small body (copied into the answer). */
static void ans_body(track_answer_t *a, const char *type, const char *body, size_t len)
{
    if (len > sizeof(a->small))
        len = sizeof(a->small);
    memcpy(a->small, body, len);
    a->resp.body = a->small;
    a->resp.body_len = len;
    a->resp.content_type = type;
}

/* An Origin we are willing to echo: printable ASCII without blanks or commas, bounded. */
static int track_origin_ok(const http_str_t *o)
{
    if (o->p == NULL || o->len == 0 || o->len > TRACK_MAX_ORIGIN)
        return 0;
    for (size_t i = 0; i < o->len; i++) {
        unsigned char ch = (unsigned char)o->p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == ',')
            return 0;
    }
    return 1;
}

/* Requested headers we are willing to echo: header-name tokens separated by commas/blanks. */
static int track_acrh_ok(const http_str_t *h)
{
    if (h->p == NULL || h->len == 0 || h->len > TRACK_MAX_ACRH)
        return 0;
    for (size_t i = 0; i < h->len; i++) {
        unsigned char ch = (unsigned char)h->p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == ',' || ch == ' '))
            return 0;
    }
    return 1;
}

/* Headers every API answer carries: no caching, and CORS for credentialed browser requests. */
static void track_api_headers(track_answer_t *a, const http_request_t *req)
{
    const http_str_t *o = &req->headers[HTTP_H_ORIGIN];

    ANS_LIT(a, "Cache-Control: no-cache, no-store\r\n");
    if (track_origin_ok(o))
        ans_header(a,
                   "Access-Control-Allow-Origin: %.*s\r\nAccess-Control-Allow-Credentials: "
                   "true\r\nVary: Origin\r\n",
                   (int)o->len, o->p);
}

/* An error answer of an API endpoint: reason as JSON when verbose, else as text. */
static void track_error(track_t *t, track_answer_t *a, const http_request_t *req, int route,
                        int status, const char *reason, int verbose, const char *callback)
{
    char esc[512];

    ans_init(a);
    a->resp.status = status;
    track_api_headers(a, req);
    if (status == 503)
        ans_header(a, "Retry-After: %d\r\n", t->cfg->retry_after_s);
    if (status == 405)
        ans_header(a, "Allow: %s\r\n",
                   route == TRACK_RT_HEALTHZ || route == TRACK_RT_METRICS ? "GET"
                                                                          : TRACK_API_METHODS);
    http_json_escape(esc, sizeof(esc), reason, strlen(reason));
    if (status == 401) {
        static const char b[] = "{\"code\":401,\"error\":\"Invalid credentials\","
                                "\"status\":\"Unauthorized\"}";
        ans_body(a, "application/json", b, sizeof(b) - 1);
    } else if (route == TRACK_RT_IMPORT) {
        int n =
            snprintf(a->small, sizeof(a->small), "{\"code\":%d,\"error\":\"%s\",\"status\":\"%s\"}",
                     status, esc, http_status_text(status));
        a->resp.body = a->small;
        a->resp.body_len = n < (int)sizeof(a->small) ? (size_t)n : sizeof(a->small) - 1;
        a->resp.content_type = "application/json";
    } else if (callback) {
        int n = verbose ? snprintf(a->small, sizeof(a->small),
                                   "%s({\"status\":0,\"error\":\"%s\"})", callback, esc)
                        : snprintf(a->small, sizeof(a->small), "%s(0)", callback);
        a->resp.body = a->small;
        a->resp.body_len = n < (int)sizeof(a->small) ? (size_t)n : sizeof(a->small) - 1;
        a->resp.content_type = "text/javascript; charset=utf-8";
    } else if (verbose) {
        int n = snprintf(a->small, sizeof(a->small), "{\"status\":0,\"error\":\"%s\"}", esc);
        a->resp.body = a->small;
        a->resp.body_len = n < (int)sizeof(a->small) ? (size_t)n : sizeof(a->small) - 1;
        a->resp.content_type = "application/json";
    } else {
        ans_body(a, "text/plain; charset=utf-8", reason, strlen(reason));
    }
    ans_finish(a);
    track_count(t, route, status);
}

/* ---- routing and the head check --------------------------------------------------------- */

static int track_route(const http_str_t *path)
{
    static const struct {
        const char *p;
        int rt;
    } routes[] = {{"/track", TRACK_RT_TRACK},     {"/engage", TRACK_RT_ENGAGE},
                  {"/groups", TRACK_RT_GROUPS},   {"/import", TRACK_RT_IMPORT},
                  {"/healthz", TRACK_RT_HEALTHZ}, {"/metrics", TRACK_RT_METRICS}};
    size_t len = path->len;

    if (len > 1 && path->p[len - 1] == '/')
        len--; /* the browser library sends /track/ */
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strlen(routes[i].p) == len && memcmp(routes[i].p, path->p, len) == 0)
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

static void track_metrics(track_t *t, track_answer_t *a);

int track_head(track_t *t, http_request_t *req, const struct sockaddr *peer, track_answer_t *a)
{
    int route = track_route(&req->path);
    int verbose = track_flag_raw_on(req, "verbose");

    (void)peer;
    req->tag = route;
    ans_init(a);
    if (route == TRACK_RT_NONE) {
        track_error(t, a, req, route, 404, "not found", verbose, NULL);
        return 1;
    }
    if (route == TRACK_RT_HEALTHZ || route == TRACK_RT_METRICS) {
        if (req->method != HTTP_GET) {
            track_error(t, a, req, route, 405, "method not allowed", verbose, NULL);
            return 1;
        }
        if (route == TRACK_RT_METRICS) {
            track_metrics(t, a);
        } else {
            ans_header(a, "Cache-Control: no-cache, no-store\r\n");
            ans_body(a, "text/plain; charset=utf-8", "ok", 2);
            a->resp.status = 200;
            ans_finish(a);
        }
        track_count(t, route, 200);
        return 1;
    }
    if (req->method == HTTP_OPTIONS) {
        /* CORS preflight: same origin headers, the methods, the requested headers echoed. */
        const http_str_t *h = &req->headers[HTTP_H_ACR_HEADERS];
        a->resp.status = 204;
        track_api_headers(a, req);
        ans_header(a, "Access-Control-Allow-Methods: " TRACK_API_METHODS "\r\n");
        if (track_acrh_ok(h))
            ans_header(a, "Access-Control-Allow-Headers: %.*s\r\n", (int)h->len, h->p);
        ans_header(a, "Access-Control-Max-Age: %d\r\n", t->cfg->cors_max_age_s);
        ans_finish(a);
        track_count(t, route, 204);
        return 1;
    }
    if (req->method != HTTP_GET && req->method != HTTP_POST) {
        track_error(t, a, req, route, 405, "method not allowed", verbose, NULL);
        return 1;
    }
    if (route == TRACK_RT_IMPORT && !track_import_auth(t, req)) {
        track_error(t, a, req, route, 401, "Invalid credentials", verbose, NULL);
        return 1;
    }
    if (t->log) {
        /* Shed before reading the body: a full queue would refuse these events anyway. */
        size_t want = req->has_length && req->content_length > 0 ? (size_t)req->content_length
                                                                 : req->query.len + 1;
        if (!log_can_accept(t->log, want)) {
            t->stats.shed++;
            track_error(t, a, req, route, 503, "server busy, retry later", verbose, NULL);
            return 1;
        }
    }
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------- */

/* A parameter from the query, else from the form body. */
static const decode_pair_t *track_param(const decode_pair_t *q, size_t nq, const decode_pair_t *b,
                                        size_t nb, const char *name)
{
    const decode_pair_t *p = decode_form_get(q, nq, name);
    return p ? p : decode_form_get(b, nb, name);
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
}

static uint64_t track_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int track_prepare(track_t *t, http_request_t *req, const struct sockaddr *peer, track_work_t *w,
                  track_answer_t *a)
{
    const config_t *cfg = t->cfg;
    decode_pair_t qp[TRACK_MAX_PAIRS], bp[TRACK_MAX_PAIRS];
    size_t nq = 0, nb = 0;
    const decode_pair_t *data, *cb, *rd;
    const char *json = NULL, *body = req->body;
    size_t json_len = 0, body_len = req->body_len;
    char reason[160];
    int rc;

    memset(w, 0, sizeof(*w));
    w->route = req->tag;
    ans_init(a);
    t->stats.body_bytes += req->body_len;

    /* The query is ours to decode in place (the request belongs to this handler). */
    if (req->query.p) {
        rc = decode_form((char *)req->query.p, req->query.len, qp, TRACK_MAX_PAIRS, &nq);
        if (rc) {
            w->verbose = track_flag_raw_on(req, "verbose");
            track_error(t, a, req, w->route, 400,
                        rc == -E2BIG ? "too many query parameters" : "malformed query string",
                        w->verbose, NULL);
            return 1;
        }
    }
    w->verbose = track_flag_on(decode_form_get(qp, nq, "verbose"));

    if (body_len > 0) {
        const http_str_t *ce = &req->headers[HTTP_H_CONTENT_ENCODING];
        if (ce->p && ce->len && !track_ctype_is(ce, "identity")) {
            size_t outlen = 0;
            if (!track_ctype_is(ce, "gzip") && !track_ctype_is(ce, "x-gzip") &&
                !track_ctype_is(ce, "deflate")) {
                track_error(t, a, req, w->route, 415, "unsupported Content-Encoding", w->verbose,
                            NULL);
                return 1;
            }
            rc = decode_gunzip(body, body_len, cfg->max_decoded_bytes, &w->gunzipped, &outlen);
            if (rc == -E2BIG) {
                snprintf(reason, sizeof(reason), "request exceeds max limit of %zu bytes",
                         cfg->max_decoded_bytes);
                track_error(t, a, req, w->route, 413, reason, w->verbose, NULL);
                return 1;
            }
            if (rc) {
                track_error(t, a, req, w->route, rc == -ENOMEM ? 503 : 400,
                            rc == -ENOMEM ? "out of memory" : "invalid gzip body", w->verbose,
                            NULL);
                return 1;
            }
            body = w->gunzipped;
            body_len = outlen;
        }
        if (track_ctype_is(&req->headers[HTTP_H_CONTENT_TYPE], "application/json") ||
            track_looks_json(body, body_len)) {
            /* A raw JSON body (Swift, the reference's examples): the body is the data. */
            json = body;
            json_len = body_len;
        } else {
            /* A form, also inside sendBeacon's text/plain body. Decoded in place: ours. */
            rc = decode_form((char *)body, body_len, bp, TRACK_MAX_PAIRS, &nb);
            if (rc) {
                track_error(t, a, req, w->route, 400,
                            rc == -E2BIG ? "too many form parameters" : "malformed form body",
                            w->verbose, NULL);
                return 1;
            }
        }
    }

    w->verbose = track_flag_on(track_param(qp, nq, bp, nb, "verbose"));
    w->strict = track_flag_on(track_param(qp, nq, bp, nb, "strict"));
    w->want_ip = track_flag_on(track_param(qp, nq, bp, nb, "ip"));
    w->img = track_flag_on(track_param(qp, nq, bp, nb, "img"));
    cb = track_param(qp, nq, bp, nb, "callback");
    if (cb && cb->val_len > 0) {
        if (!track_valid_callback(cb->val, cb->val_len)) {
            track_error(t, a, req, w->route, 400, "invalid callback name", w->verbose, NULL);
            return 1;
        }
        w->callback = cb->val;
    }
    rd = track_param(qp, nq, bp, nb, "redirect");
    if (rd && track_redirect_ok(cfg, rd->val, rd->val_len))
        w->redirect = rd->val;

    if (json == NULL) {
        /* The form body's data wins over the query's (a POST may carry both). */
        data = decode_form_get(bp, nb, "data");
        if (data == NULL)
            data = decode_form_get(qp, nq, "data");
        if (data == NULL || data->val_len == 0) {
            track_error(t, a, req, w->route, 400, "data, missing or empty", w->verbose,
                        w->callback);
            return 1;
        }
        rc = decode_payload(data->val, data->val_len, &json, &json_len, &w->payload);
        if (rc) {
            track_error(t, a, req, w->route, 400, "data, not valid base64 or JSON", w->verbose,
                        w->callback);
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
    };
    rc = event_batch_parse(&w->batch, json, json_len, &opts);
    if (rc == -EACCES) {
        track_error(t, a, req, w->route, 401, "Invalid credentials", w->verbose, NULL);
        return 1;
    }
    if (rc) {
        int status = rc == -E2BIG ? 413 : rc == -ENOMEM ? 503 : 400;
        const char *why = w->batch.error[0] ? w->batch.error : "data, not valid JSON";
        track_error(t, a, req, w->route, status, rc == -ENOMEM ? "out of memory" : why, w->verbose,
                    w->callback);
        return 1;
    }
    w->parsed = 1;
    t->stats.events_rejected += w->batch.nfailures;
    if (w->batch.nrecords == 0) {
        track_finish(t, req, w, 0, a);
        return 1;
    }
    return 0;
}

/* ---- answers after the log -------------------------------------------------------------- */

/* Append the failed_records array; returns the bytes written (0 if it did not fit). */
static size_t track_failed_json(const event_batch_t *b, char *out, size_t outlen)
{
    size_t o = 0;
    int n;

    n = snprintf(out, outlen, "[");
    o += (size_t)n;
    for (size_t i = 0; i < b->nfailures && o < outlen; i++) {
        const event_failure_t *f = &b->failures[i];
        char id[96], field[128], msg[400];
        http_json_escape(id, sizeof(id), f->insert_id, strnlen(f->insert_id, sizeof(f->insert_id)));
        http_json_escape(field, sizeof(field), f->field, strnlen(f->field, sizeof(f->field)));
        http_json_escape(msg, sizeof(msg), f->message, strnlen(f->message, sizeof(f->message)));
        n = snprintf(out + o, outlen - o,
                     "%s{\"index\":%zu,\"$insert_id\":\"%s\",\"field\":\"%s\",\"message\":\"%s\"}",
                     i ? "," : "", f->index, id, field, msg);
        if (n < 0 || (size_t)n >= outlen - o)
            return 0;
        o += (size_t)n;
    }
    if (o + 1 >= outlen)
        return 0;
    out[o++] = ']';
    out[o] = '\0';
    return o;
}

/* The body of a request with failed records (/import always, strict=1 elsewhere). */
static void track_failures_body(track_answer_t *a, const event_batch_t *b, int import)
{
    /* Each failure formats into well under 800 bytes; the rest is a fixed frame. */
    size_t cap = 256 + b->nfailures * 800;
    char *buf = malloc(cap);
    size_t o;
    int n;

    if (buf == NULL) {
        ans_body(a, "text/plain; charset=utf-8", "out of memory", 13);
        a->resp.status = 503;
        return;
    }
    n = snprintf(buf, cap,
                 "{\"code\":400,\"error\":\"some data points in the request failed "
                 "validation\",\"failed_records\":");
    o = (size_t)n;
    o += track_failed_json(b, buf + o, cap - o);
    n = snprintf(buf + o, cap - o, ",\"num_records_imported\":%zu,\"status\":%s}", b->nrecords,
                 import ? "\"Bad Request\"" : "0");
    o += (size_t)n;
    a->heap = buf;
    a->resp.body = buf;
    a->resp.body_len = o;
    a->resp.content_type = "application/json";
    a->resp.status = 400;
}

void track_finish(track_t *t, http_request_t *req, track_work_t *w, int log_status,
                  track_answer_t *a)
{
    const event_batch_t *b = &w->batch;
    int import = w->route == TRACK_RT_IMPORT;
    int ok = b->nrecords > 0;

    ans_init(a);
    if (log_status != 0) {
        t->stats.log_errors++;
        track_error(t, a, req, w->route, 503,
                    log_status == -ENOBUFS ? "server busy, retry later" : "event log unavailable",
                    w->verbose, w->callback);
        return;
    }
    t->stats.events_stored += b->nrecords;
    track_api_headers(a, req);
    a->resp.status = 200;
    if (b->nfailures > 0 && (import || w->strict)) {
        track_failures_body(a, b, import);
    } else if (import) {
        int n =
            snprintf(a->small, sizeof(a->small),
                     "{\"code\":200,\"num_records_imported\":%zu,\"status\":\"OK\"}", b->nrecords);
        a->resp.body = a->small;
        a->resp.body_len = (size_t)n;
        a->resp.content_type = "application/json";
    } else if (w->redirect) {
        a->resp.status = 302;
        ans_header(a, "Location: %s\r\n", w->redirect);
    } else if (w->img) {
        a->resp.body = (const char *)track_gif;
        a->resp.body_len = sizeof(track_gif);
        a->resp.content_type = "image/gif";
    } else {
        char esc[300], inner[400];
        size_t ilen;
        const char *type = "text/plain; charset=utf-8";
        if (w->verbose) {
            /* A partly valid batch is status 1, and still says why the others were refused. */
            const char *err = b->error[0] ? b->error : NULL;
            if (!ok && err == NULL)
                err = "no valid event";
            if (err == NULL || (ok && b->nfailures == 0)) {
                ilen = (size_t)snprintf(inner, sizeof(inner), "{\"status\":1,\"error\":null}");
            } else {
                http_json_escape(esc, sizeof(esc), err, strlen(err));
                ilen = (size_t)snprintf(inner, sizeof(inner), "{\"status\":%d,\"error\":\"%s\"}",
                                        ok, esc);
            }
            type = "application/json";
        } else {
            inner[0] = ok ? '1' : '0';
            inner[1] = '\0';
            ilen = 1;
        }
        if (w->callback) {
            int n = snprintf(a->small, sizeof(a->small), "%s(%s)", w->callback, inner);
            a->resp.body_len = n < (int)sizeof(a->small) ? (size_t)n : sizeof(a->small) - 1;
            a->resp.body = a->small;
            a->resp.content_type = "text/javascript; charset=utf-8";
        } else {
            ans_body(a, type, inner, ilen);
        }
    }
    ans_finish(a);
    track_count(t, w->route, a->resp.status);
}

/* ---- the coroutine handler ------------------------------------------------------------ */

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
    track_answer_free(&a);
    return HTTP_HEAD_ANSWERED;
}

http_handler_t track_handler(track_t *t)
{
    http_handler_t h = {.data = t, .head = track_on_head, .handle = track_handle};
    return h;
}

/* ---- /metrics ---------------------------------------------------------------------------- */

static void track_metrics(track_t *t, track_answer_t *a)
{
    size_t cap = 16384, o = 0;
    char *buf = malloc(cap);
    http_stats_t hs;
    int n;

#define TRACK_OUT(...)                                                                             \
    do {                                                                                           \
        n = snprintf(buf + o, cap - o, __VA_ARGS__);                                               \
        if (n > 0 && (size_t)n < cap - o)                                                          \
            o += (size_t)n;                                                                        \
    } while (0)

    a->resp.status = 200;
    ans_header(a, "Cache-Control: no-cache, no-store\r\n");
    if (buf == NULL) {
        ans_body(a, "text/plain; charset=utf-8", "", 0);
        ans_finish(a);
        return;
    }
    TRACK_OUT("# TYPE trackd_requests_total counter\n");
    for (int r = 0; r < TRACK_RT_COUNT; r++) {
        for (int s = 0; s < TRACK_NSTATUS; s++) {
            uint64_t v = t->stats.requests[r][s];
            if (v == 0)
                continue;
            if (s < (int)(sizeof(track_statuses) / sizeof(track_statuses[0])))
                TRACK_OUT("trackd_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                          track_route_names[r], track_statuses[s], (unsigned long long)v);
            else
                TRACK_OUT("trackd_requests_total{endpoint=\"%s\",status=\"other\"} %llu\n",
                          track_route_names[r], (unsigned long long)v);
        }
    }
    TRACK_OUT("# TYPE trackd_events_stored_total counter\ntrackd_events_stored_total %llu\n",
              (unsigned long long)t->stats.events_stored);
    TRACK_OUT("# TYPE trackd_events_rejected_total counter\ntrackd_events_rejected_total %llu\n",
              (unsigned long long)t->stats.events_rejected);
    TRACK_OUT("# TYPE trackd_body_bytes_total counter\ntrackd_body_bytes_total %llu\n",
              (unsigned long long)t->stats.body_bytes);
    TRACK_OUT("# TYPE trackd_shed_total counter\ntrackd_shed_total %llu\n",
              (unsigned long long)t->stats.shed);
    TRACK_OUT("# TYPE trackd_log_errors_total counter\ntrackd_log_errors_total %llu\n",
              (unsigned long long)t->stats.log_errors);
    if (t->server) {
        http_server_stats(t->server, &hs);
        TRACK_OUT("# TYPE trackd_connections_open gauge\ntrackd_connections_open %zu\n",
                  hs.conns_open);
        TRACK_OUT("# TYPE trackd_connections_total counter\ntrackd_connections_total %llu\n",
                  (unsigned long long)hs.conns_total);
        TRACK_OUT("# TYPE trackd_connections_rejected_total counter\n"
                  "trackd_connections_rejected_total %llu\n",
                  (unsigned long long)hs.conns_rejected);
        TRACK_OUT("# TYPE trackd_bytes_in_total counter\ntrackd_bytes_in_total %llu\n",
                  (unsigned long long)hs.bytes_in);
        TRACK_OUT("# TYPE trackd_bytes_out_total counter\ntrackd_bytes_out_total %llu\n",
                  (unsigned long long)hs.bytes_out);
        TRACK_OUT("# TYPE trackd_timeouts_total counter\ntrackd_timeouts_total %llu\n",
                  (unsigned long long)hs.timeouts);
        TRACK_OUT("# TYPE trackd_parse_errors_total counter\ntrackd_parse_errors_total %llu\n",
                  (unsigned long long)hs.parse_errors);
        TRACK_OUT("# TYPE trackd_coroutines gauge\ntrackd_coroutines %zu\n",
                  http_server_coroutines(t->server));
        TRACK_OUT("# TYPE trackd_responses_total counter\n");
        for (int cls = 1; cls <= 5; cls++)
            TRACK_OUT("trackd_responses_total{class=\"%dxx\"} %llu\n", cls,
                      (unsigned long long)hs.responses[cls]);
    }
    if (t->log) {
        log_stats_t ls;
        log_get_stats(t->log, &ls);
        TRACK_OUT("# TYPE trackd_log_queue_bytes gauge\ntrackd_log_queue_bytes %zu\n",
                  ls.queue_bytes);
        TRACK_OUT("# TYPE trackd_log_records_total counter\ntrackd_log_records_total %llu\n",
                  (unsigned long long)ls.records_appended);
        TRACK_OUT("# TYPE trackd_log_fsyncs_total counter\ntrackd_log_fsyncs_total %llu\n",
                  (unsigned long long)ls.fsyncs);
        TRACK_OUT("# TYPE trackd_log_writable gauge\ntrackd_log_writable %d\n", ls.writable);
    }
#undef TRACK_OUT
    a->heap = buf;
    a->resp.body = buf;
    a->resp.body_len = o;
    a->resp.content_type = "text/plain; version=0.0.4";
    ans_finish(a);
}

/*
 * Configuration: one table of options drives the defaults' help text, the config file reader,
 * the command line (--x-y for option x_y) and --help, so the four can never disagree. Values
 * are parsed strictly: a typo is an error naming the file and line (or the option), never a
 * silently ignored setting. Sizes take k/m/g suffixes (powers of 1024), durations ms/s/m/h.
 */
#include "trackd/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TRACKD_VERSION
#define TRACKD_VERSION "1.0.0"
#endif

/* Upper bounds that keep a typo from asking for something absurd. */
#define CONFIG_MAX_WORKERS 1024
#define CONFIG_MAX_RESTART_INTENSITY 1000
#define CONFIG_MAX_LIST_ITEMS 4096
#define CONFIG_MAX_MS ((uint64_t)INT_MAX)
#define CONFIG_MAX_S ((uint64_t)100 * 365 * 24 * 3600)
/* Rate limits: events per second and bucket sizes (a typo of 10^9 is refused). */
#define CONFIG_MAX_RATE ((uint64_t)100000000)
/* Longest token a rate_limit_token line may name (Mixpanel tokens are 32 hex characters). */
#define CONFIG_MAX_TOKEN 255

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

typedef enum {
    OPT_STR,      /* char[size] */
    OPT_HOSTPORT, /* char[size] holding "" or a valid HOST:PORT */
    OPT_WORKERS,  /* int, or "auto" (0, resolved by config_finish) */
    OPT_INT,      /* int count */
    OPT_COUNT,    /* size_t count */
    OPT_SIZE,     /* size_t bytes, suffixes */
    OPT_SIZE64,   /* uint64_t bytes, suffixes */
    OPT_MS,       /* int milliseconds, duration suffixes */
    OPT_SEC,      /* int seconds, duration suffixes (whole seconds) */
    OPT_SEC64,    /* uint64_t seconds, duration suffixes (whole seconds) */
    OPT_DURABILITY,
    OPT_LOG_LEVEL,
    OPT_BOOL,  /* int 0/1: "on" or "off" */
    OPT_LIST,  /* config_list_t */
    OPT_NETS,  /* trusted_proxies + ntrusted_proxies */
    OPT_RATE,  /* config_rate_t without a token: "RATE [BURST]" */
    OPT_RATES, /* rate_limit_tokens + nrate_limit_tokens: "TOKEN RATE [BURST]" items */
} config_type_t;

typedef struct {
    const char *name; /* config-file name; the command line uses it with '-' for '_' */
    config_type_t type;
    size_t off;
    size_t size;  /* OPT_STR/OPT_HOSTPORT: buffer size */
    uint64_t min; /* numbers: inclusive bounds in the option's unit */
    uint64_t max;
    const char *help;
} config_opt_t;

/* The `off` and `size` members of a config_opt_t for config_t's `field`. */
#define CONFIG_FIELD(field) offsetof(config_t, field), sizeof(((config_t *)0)->field)

static const config_opt_t config_opts[] = {
    {"listen", OPT_HOSTPORT, CONFIG_FIELD(listen), 0, 0,
     "address every worker accepts on (shared socket); \"\" for none"},
    {"worker_listen", OPT_HOSTPORT, CONFIG_FIELD(worker_listen), 0, 0,
     "worker i also listens alone on PORT+i-1 (for a proxy's upstream pool); \"\" = off"},
    {"workers", OPT_WORKERS, CONFIG_FIELD(workers), 1, CONFIG_MAX_WORKERS,
     "worker processes; \"auto\" = one per online core"},
    {"data_dir", OPT_STR, CONFIG_FIELD(data_dir), 0, 0, "root directory of the event log"},
    {"pidfile", OPT_STR, CONFIG_FIELD(pidfile), 0, 0,
     "pid file of the master, locked while it runs (\"\" = <data_dir>/trackd.pid)"},
    {"log_level", OPT_LOG_LEVEL, CONFIG_FIELD(log_level), 0, 0,
     "least severe operator message shown"},
    {"shutdown_timeout_ms", OPT_MS, CONFIG_FIELD(shutdown_timeout_ms), 1, CONFIG_MAX_MS,
     "graceful stop budget; workers still running after it are killed"},
    {"restart_intensity", OPT_INT, CONFIG_FIELD(restart_intensity), 0, CONFIG_MAX_RESTART_INTENSITY,
     "more than this many worker restarts within restart_period_s stops the master"},
    {"restart_period_s", OPT_SEC, CONFIG_FIELD(restart_period_s), 1, 7 * 86400,
     "window of restart_intensity"},
    {"durability", OPT_DURABILITY, CONFIG_FIELD(durability), 0, 0,
     "when an event is acknowledged: after fdatasync, after write(2), or on enqueue"},
    {"segment_max_bytes", OPT_SIZE64, CONFIG_FIELD(segment_max_bytes), 4 * KIB, 64 * GIB,
     "a log segment is closed and a new one started at this size"},
    {"segment_max_age_s", OPT_SEC64, CONFIG_FIELD(segment_max_age_s), 1, CONFIG_MAX_S,
     "... or when it is this old"},
    {"retention_max_bytes", OPT_SIZE64, CONFIG_FIELD(retention_max_bytes), 0, UINT64_MAX,
     "oldest closed segments are deleted beyond this total size (0 = keep everything)"},
    {"retention_max_age_s", OPT_SEC64, CONFIG_FIELD(retention_max_age_s), 0, CONFIG_MAX_S,
     "closed segments older than this are deleted (0 = keep everything)"},
    {"queue_max_bytes", OPT_SIZE, CONFIG_FIELD(queue_max_bytes), 64 * KIB, 64 * GIB,
     "bound of the writer queue; when full: 503 + Retry-After"},
    {"flush_interval_ms", OPT_MS, CONFIG_FIELD(flush_interval_ms), 1, CONFIG_MAX_MS,
     "durability none: the queue is flushed at least this often"},
    {"log_cache_bytes", OPT_SIZE64, CONFIG_FIELD(log_cache_bytes), 0, 64 * GIB,
     "older log data is dropped from the page cache once on disk (0 = left to the kernel)"},
    {"max_connections", OPT_COUNT, CONFIG_FIELD(max_connections), 1, 10000000,
     "open connections per worker; beyond it: 503 and close"},
    {"max_url_bytes", OPT_SIZE, CONFIG_FIELD(max_url_bytes), 256, 1 * MIB,
     "request target; longer: 414"},
    {"max_header_bytes", OPT_SIZE, CONFIG_FIELD(max_header_bytes), 1 * KIB, 1 * MIB,
     "all header lines together; more: 431"},
    {"max_headers", OPT_COUNT, CONFIG_FIELD(max_headers), 8, 10000, "header count; more: 431"},
    {"max_body_bytes", OPT_SIZE, CONFIG_FIELD(max_body_bytes), 1 * KIB, 1 * GIB,
     "body as received (after chunked decoding); larger: 413"},
    {"max_decoded_bytes", OPT_SIZE, CONFIG_FIELD(max_decoded_bytes), 1 * KIB, 4 * GIB,
     "body after gzip inflation; larger: 413"},
    {"header_timeout_ms", OPT_MS, CONFIG_FIELD(header_timeout_ms), 1, CONFIG_MAX_MS,
     "the whole request head must arrive within this; else 408 and close"},
    {"body_timeout_ms", OPT_MS, CONFIG_FIELD(body_timeout_ms), 1, CONFIG_MAX_MS,
     "longest gap between body reads; else 408 and close"},
    {"keepalive_timeout_ms", OPT_MS, CONFIG_FIELD(keepalive_timeout_ms), 1, CONFIG_MAX_MS,
     "an idle keep-alive connection is closed after this"},
    {"write_timeout_ms", OPT_MS, CONFIG_FIELD(write_timeout_ms), 1, CONFIG_MAX_MS,
     "a response must drain within this; else the connection is closed"},
    {"retry_after_s", OPT_SEC, CONFIG_FIELD(retry_after_s), 0, 86400,
     "Retry-After value sent with 503"},
    {"queue_high_water", OPT_SIZE, CONFIG_FIELD(queue_high_water), 0, 64 * GIB,
     "writer queue bytes from which requests are shed at the head (503) and /readyz fails"},
    {"disk_low_water_bytes", OPT_SIZE64, CONFIG_FIELD(disk_low_water_bytes), 0, UINT64_MAX,
     "/readyz fails while data_dir's file system has less free space than this"},
    {"memory_budget_bytes", OPT_SIZE, CONFIG_FIELD(memory_budget_bytes), 64 * KIB, 64 * GIB,
     "request buffers per worker (heads, bodies, gzip output); a request that would pass it: "
     "503 before its body is read"},
    {"rate_limit", OPT_RATE, CONFIG_FIELD(rate_limit), 0, CONFIG_MAX_RATE,
     "default per-token limit: events per second and burst (BURST default: RATE); over: 429 + "
     "Retry-After; 0 = off"},
    {"rate_limit_token", OPT_RATES, CONFIG_FIELD(rate_limit_tokens), 0, CONFIG_MAX_RATE,
     "per-token override of rate_limit (repeat or comma-separate; RATE 0 = unlimited)"},
    {"max_events_per_request", OPT_COUNT, CONFIG_FIELD(max_events_per_request), 1, 1000000,
     "events in one request; more: 413"},
    {"max_event_bytes", OPT_SIZE, CONFIG_FIELD(max_event_bytes), 64, 64 * MIB,
     "one event's JSON; larger: that event is invalid"},
    {"token", OPT_LIST, CONFIG_FIELD(tokens), 0, 0,
     "project token allowed (repeat or comma-separate; none = any token; unknown: 401)"},
    {"import_secret", OPT_LIST, CONFIG_FIELD(import_secrets), 0, 0,
     "secret accepted on /import (repeat or comma-separate; none = /import open)"},
    {"redirect_host", OPT_LIST, CONFIG_FIELD(redirect_hosts), 0, 0,
     "host `redirect=` may send to (repeat or comma-separate; none = redirect ignored)"},
    {"trusted_proxy", OPT_NETS, CONFIG_FIELD(trusted_proxies), 0, 0,
     "ADDR[/BITS] whose X-Forwarded-For / X-Real-IP is believed (repeat or comma-separate)"},
    {"json_fast_path", OPT_BOOL, CONFIG_FIELD(json_fast_path), 0, 0,
     "check ordinary /track and /import events in one pass, no JSON tree (off: jansson only)"},
    {"cors_max_age_s", OPT_SEC, CONFIG_FIELD(cors_max_age_s), 0, 86400 * 365,
     "Access-Control-Max-Age sent on preflight answers"},
};

#define CONFIG_NOPTS (sizeof(config_opts) / sizeof(config_opts[0]))

static void config_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void config_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void config_defaults(config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:8000");
    cfg->workers = 0; /* auto: resolved by config_finish */
    snprintf(cfg->data_dir, sizeof(cfg->data_dir), "./data");
    cfg->log_level = CONFIG_LOG_INFO;
    cfg->shutdown_timeout_ms = 10000;
    cfg->restart_intensity = 10;
    cfg->restart_period_s = 5;

    cfg->durability = CONFIG_DURABILITY_FSYNC;
    cfg->segment_max_bytes = 128 * MIB;
    cfg->segment_max_age_s = 3600;
    cfg->queue_max_bytes = 64 * MIB;
    cfg->flush_interval_ms = 100;
    cfg->log_cache_bytes = 16 * MIB;

    cfg->max_connections = 10000;
    cfg->max_url_bytes = 8192;
    cfg->max_header_bytes = 16384;
    cfg->max_headers = 64;
    cfg->max_body_bytes = 2097152;
    cfg->max_decoded_bytes = 8 * MIB;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 10000;
    cfg->keepalive_timeout_ms = 60000;
    cfg->write_timeout_ms = 30000;
    cfg->retry_after_s = 1;
    cfg->queue_high_water = 0; /* half of queue_max_bytes */
    cfg->disk_low_water_bytes = 256 * MIB;
    cfg->memory_budget_bytes = 64 * MIB;

    cfg->max_events_per_request = 2000;
    cfg->max_event_bytes = 1000000;
    cfg->cors_max_age_s = 86400;
    cfg->json_fast_path = 1;
}

static const config_opt_t *config_find(const char *name)
{
    for (size_t i = 0; i < CONFIG_NOPTS; i++)
        if (strcmp(config_opts[i].name, name) == 0)
            return &config_opts[i];
    return NULL;
}

/* Digits only, no sign, no overflow. */
static int config_parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static size_t config_digits(const char *s)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    return n;
}

/* "2m", "64k", "1G", "512kb", "3MiB", "100": bytes, suffixes in powers of 1024. */
static int config_parse_size(const char *s, uint64_t *out)
{
    size_t n = config_digits(s);
    const char *suf = s + n;
    uint64_t v, mul = 1;
    int rc;

    if ((rc = config_parse_u64(s, n, &v)) < 0)
        return rc;
    if (*suf != '\0') {
        switch (tolower((unsigned char)*suf)) {
        case 'k':
            mul = KIB;
            break;
        case 'm':
            mul = MIB;
            break;
        case 'g':
            mul = GIB;
            break;
        case 'b':
            mul = 1;
            break;
        default:
            return -EINVAL;
        }
        if (mul > 1) {
            suf++;
            if (strcasecmp(suf, "") != 0 && strcasecmp(suf, "b") != 0 && strcasecmp(suf, "ib") != 0)
                return -EINVAL;
        } else if (strcasecmp(suf, "b") != 0) {
            return -EINVAL;
        }
    }
    if (v > UINT64_MAX / mul)
        return -ERANGE;
    *out = v * mul;
    return 0;
}

/* "250ms", "10s", "5m", "1h", or a bare number in `unit_ms` units: milliseconds. */
static int config_parse_duration(const char *s, uint64_t unit_ms, uint64_t *out_ms)
{
    size_t n = config_digits(s);
    const char *suf = s + n;
    uint64_t v, mul;
    int rc;

    if ((rc = config_parse_u64(s, n, &v)) < 0)
        return rc;
    if (*suf == '\0')
        mul = unit_ms;
    else if (strcmp(suf, "ms") == 0)
        mul = 1;
    else if (strcmp(suf, "s") == 0)
        mul = 1000;
    else if (strcmp(suf, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(suf, "h") == 0)
        mul = 3600 * 1000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mul)
        return -ERANGE;
    *out_ms = v * mul;
    return 0;
}

int config_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *h, *colon;
    size_t hlen;
    uint64_t p;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        char v6[INET6_ADDRSTRLEN];
        struct in6_addr a;

        if (close == NULL || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        if (hlen == 0 || hlen >= sizeof(v6))
            return -EINVAL;
        memcpy(v6, h, hlen);
        v6[hlen] = '\0';
        if (inet_pton(AF_INET6, v6, &a) != 1)
            return -EINVAL;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -EINVAL;
        h = s;
        hlen = (size_t)(colon - s);
        /* An IPv6 literal needs brackets: "::1:8000" is ambiguous. */
        if (memchr(h, ':', hlen) != NULL)
            return -EINVAL;
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_')
                return -EINVAL;
    }
    if (config_parse_u64(colon + 1, strlen(colon + 1), &p) < 0 || p < 1 || p > 65535)
        return -EINVAL;
    if (hlen >= hostlen)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

/* Parse "ADDR[/BITS]"; a v4-mapped IPv6 network becomes the IPv4 network it stands for. */
static int config_parse_net(const char *s, config_net_t *net)
{
    char addr[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    int maxbits;
    uint64_t bits;

    if (alen == 0 || alen >= sizeof(addr))
        return -EINVAL;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(net, 0, sizeof(*net));
    if (inet_pton(AF_INET, addr, net->addr) == 1) {
        net->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
        net->family = AF_INET6;
        maxbits = 128;
    } else {
        return -EINVAL;
    }
    bits = (uint64_t)maxbits;
    if (slash && (config_parse_u64(slash + 1, strlen(slash + 1), &bits) < 0 || bits > 128 ||
                  (int)bits > maxbits))
        return -EINVAL;
    net->prefix = (int)bits;
    if (net->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)net->addr) &&
        net->prefix >= 96) {
        memmove(net->addr, net->addr + 12, 4);
        memset(net->addr + 4, 0, 12);
        net->family = AF_INET;
        net->prefix -= 96;
    }
    return 0;
}

static int config_prefix_match(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;

    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int config_is_trusted_proxy(const config_t *cfg, const struct sockaddr *addr)
{
    const uint8_t *bytes;
    int family;

    if (addr == NULL)
        return 0;
    if (addr->sa_family == AF_INET) {
        family = AF_INET;
        bytes = (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
    } else if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        /* A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: match them as IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            bytes = a6->s6_addr + 12;
        } else {
            family = AF_INET6;
            bytes = a6->s6_addr;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++) {
        const config_net_t *n = &cfg->trusted_proxies[i];
        if (n->family == family && config_prefix_match(n->addr, bytes, n->prefix))
            return 1;
    }
    return 0;
}

int config_list_has(const config_list_t *list, const char *s, size_t len)
{
    for (size_t i = 0; i < list->n; i++)
        if (strlen(list->items[i]) == len && memcmp(list->items[i], s, len) == 0)
            return 1;
    return 0;
}

static void config_list_clear(config_list_t *list)
{
    for (size_t i = 0; i < list->n; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

static int config_list_add(config_list_t *list, const char *s, size_t len)
{
    char **items;
    char *copy;

    if (list->n >= CONFIG_MAX_LIST_ITEMS)
        return -E2BIG;
    copy = strndup(s, len);
    if (copy == NULL)
        return -ENOMEM;
    items = realloc(list->items, (list->n + 1) * sizeof(*items));
    if (items == NULL) {
        free(copy);
        return -ENOMEM;
    }
    items[list->n++] = copy;
    list->items = items;
    return 0;
}

static int config_nets_add(config_t *cfg, const config_net_t *net)
{
    config_net_t *nets;

    if (cfg->ntrusted_proxies >= CONFIG_MAX_LIST_ITEMS)
        return -E2BIG;
    nets = realloc(cfg->trusted_proxies, (cfg->ntrusted_proxies + 1) * sizeof(*nets));
    if (nets == NULL)
        return -ENOMEM;
    nets[cfg->ntrusted_proxies++] = *net;
    cfg->trusted_proxies = nets;
    return 0;
}

/* "RATE [BURST]" (blank-separated counts); BURST defaults to RATE. */
static int config_parse_rate(const char *s, size_t n, config_rate_t *r)
{
    char buf[64], *p, *q;
    uint64_t rate, burst;

    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    p = buf;
    q = p + config_digits(p);
    if (config_parse_u64(p, (size_t)(q - p), &rate) < 0 || rate > CONFIG_MAX_RATE)
        return -EINVAL;
    burst = rate;
    if (*q != '\0') {
        if (!isspace((unsigned char)*q))
            return -EINVAL;
        while (isspace((unsigned char)*q))
            q++;
        p = q;
        q = p + config_digits(p);
        if (*q != '\0' || config_parse_u64(p, (size_t)(q - p), &burst) < 0 ||
            burst > CONFIG_MAX_RATE || (rate > 0 && burst == 0))
            return -EINVAL;
    }
    r->rate = rate;
    r->burst = rate > 0 && burst == 0 ? 1 : burst;
    return 0;
}

static void config_rates_clear(config_t *cfg)
{
    for (size_t i = 0; i < cfg->nrate_limit_tokens; i++)
        free(cfg->rate_limit_tokens[i].token);
    free(cfg->rate_limit_tokens);
    cfg->rate_limit_tokens = NULL;
    cfg->nrate_limit_tokens = 0;
}

/* One "TOKEN RATE [BURST]" item; a token listed again replaces its earlier limit. */
static int config_rates_add(config_t *cfg, const char *s, size_t n)
{
    config_rate_t r = {0}, *v;
    size_t tlen = 0;

    while (tlen < n && !isspace((unsigned char)s[tlen]))
        tlen++;
    if (tlen == 0 || tlen > CONFIG_MAX_TOKEN || tlen == n ||
        config_parse_rate(s + tlen, n - tlen, &r) < 0)
        return -EINVAL;
    for (size_t i = 0; i < cfg->nrate_limit_tokens; i++) {
        config_rate_t *o = &cfg->rate_limit_tokens[i];
        if (strlen(o->token) == tlen && memcmp(o->token, s, tlen) == 0) {
            o->rate = r.rate;
            o->burst = r.burst;
            return 0;
        }
    }
    if (cfg->nrate_limit_tokens >= CONFIG_MAX_LIST_ITEMS)
        return -E2BIG;
    r.token = strndup(s, tlen);
    if (r.token == NULL)
        return -ENOMEM;
    v = realloc(cfg->rate_limit_tokens, (cfg->nrate_limit_tokens + 1) * sizeof(*v));
    if (v == NULL) {
        free(r.token);
        return -ENOMEM;
    }
    v[cfg->nrate_limit_tokens++] = r;
    cfg->rate_limit_tokens = v;
    return 0;
}

/* Apply one comma-separated list value: "" clears the list, otherwise items are appended. */
static int config_set_list(config_t *cfg, const config_opt_t *o, const char *value, char *err,
                           size_t errlen)
{
    config_list_t *list = (config_list_t *)((char *)cfg + o->off);
    const char *p = value;
    int rc;

    if (*value == '\0') {
        if (o->type == OPT_RATES) {
            config_rates_clear(cfg);
        } else if (o->type == OPT_NETS) {
            free(cfg->trusted_proxies);
            cfg->trusted_proxies = NULL;
            cfg->ntrusted_proxies = 0;
        } else {
            config_list_clear(list);
        }
        return 0;
    }
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;

        while (n > 0 && isspace((unsigned char)*q)) {
            q++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)q[n - 1]))
            n--;
        if (n > 0) {
            if (o->type == OPT_NETS) {
                char item[INET6_ADDRSTRLEN + 8];
                config_net_t net;

                if (n >= sizeof(item)) {
                    config_err(err, errlen, "bad network '%.*s' for %s", (int)n, q, o->name);
                    return -EINVAL;
                }
                memcpy(item, q, n);
                item[n] = '\0';
                if (config_parse_net(item, &net) < 0) {
                    config_err(err, errlen, "bad network '%s' for %s (want ADDR or ADDR/BITS)",
                               item, o->name);
                    return -EINVAL;
                }
                rc = config_nets_add(cfg, &net);
            } else if (o->type == OPT_RATES) {
                rc = config_rates_add(cfg, q, n);
                if (rc == -EINVAL) {
                    config_err(err, errlen,
                               "bad rate limit '%.*s' for %s (want TOKEN RATE [BURST], counts "
                               "up to %llu, token up to %d bytes)",
                               (int)n, q, o->name, (unsigned long long)CONFIG_MAX_RATE,
                               CONFIG_MAX_TOKEN);
                    return rc;
                }
            } else {
                rc = config_list_add(list, q, n);
            }
            if (rc < 0) {
                config_err(err, errlen, "%s: %s", o->name, strerror(-rc));
                return rc;
            }
        }
        p = end ? end + 1 : p + strlen(p);
    }
    return 0;
}

static int config_set_opt(config_t *cfg, const config_opt_t *o, const char *value, char *err,
                          size_t errlen)
{
    char *field = (char *)cfg + o->off;
    uint64_t v = 0;
    int rc = 0;
    const char *what = "number";

    switch (o->type) {
    case OPT_STR:
    case OPT_HOSTPORT:
        if (strlen(value) >= o->size) {
            config_err(err, errlen, "value for %s is too long (at most %zu bytes)", o->name,
                       o->size - 1);
            return -ENAMETOOLONG;
        }
        if (o->type == OPT_HOSTPORT && *value != '\0') {
            char host[256];
            int port;
            if (config_parse_hostport(value, host, sizeof(host), &port) < 0) {
                config_err(err, errlen,
                           "bad address '%s' for %s (want HOST:PORT, [V6]:PORT or :PORT)", value,
                           o->name);
                return -EINVAL;
            }
        }
        if (o->type == OPT_STR && *value == '\0' && strcmp(o->name, "pidfile") != 0) {
            config_err(err, errlen, "%s must not be empty", o->name);
            return -EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case OPT_DURABILITY: {
        static const char *const names[] = {"fsync", "write", "none"};
        for (int i = 0; i < 3; i++)
            if (strcmp(value, names[i]) == 0) {
                *(config_durability_t *)field = (config_durability_t)i;
                return 0;
            }
        config_err(err, errlen, "bad durability '%s' (want fsync, write or none)", value);
        return -EINVAL;
    }
    case OPT_LOG_LEVEL: {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        for (int i = 0; i < 4; i++)
            if (strcmp(value, names[i]) == 0) {
                *(config_log_level_t *)field = (config_log_level_t)i;
                return 0;
            }
        config_err(err, errlen, "bad log_level '%s' (want error, warn, info or debug)", value);
        return -EINVAL;
    }
    case OPT_BOOL:
        if (strcmp(value, "on") == 0 || strcmp(value, "off") == 0) {
            *(int *)field = strcmp(value, "on") == 0;
            return 0;
        }
        config_err(err, errlen, "bad value '%s' for %s (want on or off)", value, o->name);
        return -EINVAL;
    case OPT_LIST:
    case OPT_NETS:
    case OPT_RATES:
        return config_set_list(cfg, o, value, err, errlen);
    case OPT_RATE: {
        config_rate_t r = {0};
        if (config_parse_rate(value, strlen(value), &r) < 0) {
            config_err(err, errlen,
                       "bad rate limit '%s' for %s (want RATE [BURST], counts up to %llu)", value,
                       o->name, (unsigned long long)CONFIG_MAX_RATE);
            return -EINVAL;
        }
        *(config_rate_t *)field = r;
        return 0;
    }
    case OPT_WORKERS:
        if (strcmp(value, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        rc = config_parse_u64(value, strlen(value), &v);
        break;
    case OPT_INT:
    case OPT_COUNT:
        rc = config_parse_u64(value, strlen(value), &v);
        break;
    case OPT_SIZE:
    case OPT_SIZE64:
        what = "size";
        rc = config_parse_size(value, &v);
        break;
    case OPT_MS:
        what = "duration";
        rc = config_parse_duration(value, 1, &v);
        break;
    case OPT_SEC:
    case OPT_SEC64:
        what = "duration";
        rc = config_parse_duration(value, 1000, &v);
        if (rc == 0 && v % 1000 != 0) {
            config_err(err, errlen, "bad duration '%s' for %s (whole seconds only)", value,
                       o->name);
            return -EINVAL;
        }
        v /= 1000;
        break;
    }
    if (rc == -EINVAL) {
        if (o->type == OPT_SIZE || o->type == OPT_SIZE64)
            config_err(err, errlen,
                       "bad size '%s' for %s (want a number with an optional "
                       "k, m or g suffix)",
                       value, o->name);
        else if (o->type == OPT_MS || o->type == OPT_SEC || o->type == OPT_SEC64)
            config_err(err, errlen,
                       "bad duration '%s' for %s (want a number with an optional "
                       "ms, s, m or h suffix)",
                       value, o->name);
        else
            config_err(err, errlen, "bad number '%s' for %s", value, o->name);
        return rc;
    }
    if (rc < 0 || v < o->min || v > o->max) {
        config_err(err, errlen, "%s '%s' for %s is out of range (%llu..%llu)", what, value, o->name,
                   (unsigned long long)o->min, (unsigned long long)o->max);
        return -ERANGE;
    }
    switch (o->type) {
    case OPT_WORKERS:
    case OPT_INT:
    case OPT_MS:
    case OPT_SEC:
        *(int *)field = (int)v; /* every int option has max <= INT_MAX */
        break;
    case OPT_COUNT:
    case OPT_SIZE:
        *(size_t *)field = (size_t)v;
        break;
    default:
        *(uint64_t *)field = v;
        break;
    }
    return 0;
}

int config_set(config_t *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const config_opt_t *o = config_find(key);

    if (o == NULL) {
        config_err(err, errlen, "unknown option '%s'", key);
        return -EINVAL;
    }
    return config_set_opt(cfg, o, value, err, errlen);
}

/*
 * Split one config-file line in place into name and value. Returns 1 for an option, 0 for a
 * blank or comment line, or -EINVAL with `*why` set.
 */
static int config_split_line(char *line, char **name, char **value, const char **why)
{
    char *p = line, *v, *end;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    *name = p;
    while (*p && !isspace((unsigned char)*p))
        p++;
    if (*p)
        *p++ = '\0';
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '"') {
        /* A quoted value may hold spaces and '#', or be empty: listen "". */
        v = p + 1;
        end = strchr(v, '"');
        if (end == NULL) {
            *why = "unterminated quote";
            return -EINVAL;
        }
        *end++ = '\0';
        while (isspace((unsigned char)*end))
            end++;
        if (*end != '\0' && *end != '#') {
            *why = "text after the closing quote";
            return -EINVAL;
        }
        *value = v;
        return 1;
    }
    if (*p == '\0' || *p == '#') {
        *why = "needs a value";
        return -EINVAL;
    }
    v = p;
    /* A '#' after whitespace starts a comment; inside a word it is part of the value. */
    for (end = v; *end; end++)
        if (*end == '#' && isspace((unsigned char)end[-1]))
            break;
    *end = '\0';
    while (end > v && isspace((unsigned char)end[-1]))
        *--end = '\0';
    *value = v;
    return 1;
}

int config_load_file(config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, *name, *value;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;

    if (f == NULL) {
        rc = -errno;
        config_err(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    while (getline(&line, &cap, f) >= 0) {
        const char *why = NULL;
        char msg[512];
        int r;

        lineno++;
        r = config_split_line(line, &name, &value, &why);
        if (r == 0)
            continue;
        if (r < 0) {
            config_err(err, errlen, "%s:%u: %s", path, lineno, why);
            rc = r;
            goto out;
        }
        if ((r = config_set(cfg, name, value, msg, sizeof(msg))) < 0) {
            config_err(err, errlen, "%s:%u: %s", path, lineno, msg);
            rc = r;
            goto out;
        }
    }
    if (ferror(f)) {
        rc = -EIO;
        config_err(err, errlen, "%s: read error", path);
    }
out:
    free(line);
    fclose(f);
    return rc;
}

/* Options of main's own that take no value (-t is acted on by main, not here). */
static int config_is_flag(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "-V") == 0 ||
           strcmp(arg, "--version") == 0 || strcmp(arg, "-t") == 0 ||
           strcmp(arg, "--test-config") == 0;
}

/* "--max-body-bytes" -> "max_body_bytes" into `out`; "" if it is not a long option. */
static void config_arg_name(const char *arg, char *out, size_t outlen)
{
    size_t i = 0;

    out[0] = '\0';
    if (strncmp(arg, "--", 2) != 0)
        return;
    for (arg += 2; *arg && *arg != '=' && i + 1 < outlen; arg++)
        out[i++] = *arg == '-' ? '_' : *arg;
    out[i] = '\0';
}

int config_from_args(config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    const char *file = NULL;
    unsigned char seen_list[CONFIG_NOPTS] = {0};
    int rc;

    /* First pass: --help/--version win over everything; find --config. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char name[64];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            config_usage(stdout);
            return 1;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("trackd %s\n", TRACKD_VERSION);
            return 1;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            file = a + 9;
            continue;
        }
        if (config_is_flag(a) || strchr(a, '=') != NULL)
            continue;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                config_err(err, errlen, "option '%s' needs a value", a);
                return -EINVAL;
            }
            file = argv[++i];
            continue;
        }
        /* Skip the value of a known option: it may itself start with '-'. */
        config_arg_name(a, name, sizeof(name));
        if (name[0] != '\0' && config_find(name) != NULL)
            i++;
    }
    if (file && (rc = config_load_file(cfg, file, err, errlen)) < 0)
        return rc;

    /* Second pass: every other option, over what the file said. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *value, *eq;
        char name[64], msg[512];
        const config_opt_t *o;
        int flaglen;

        if (config_is_flag(a))
            continue;
        if (a[0] != '-') {
            config_err(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -EINVAL;
        }
        if (strcmp(a, "-c") == 0) {
            i++;
            continue;
        }
        config_arg_name(a, name, sizeof(name));
        eq = strchr(a, '=');
        flaglen = eq ? (int)(eq - a) : (int)strlen(a);
        o = config_find(name);
        if (name[0] == '\0' || (o == NULL && strcmp(name, "config") != 0)) {
            config_err(err, errlen, "unknown option '%.*s' (see --help)", flaglen, a);
            return -EINVAL;
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            config_err(err, errlen, "option '%s' needs a value", a);
            return -EINVAL;
        }
        if (o == NULL)
            continue; /* --config, read above */
        /* A list given on the command line replaces the file's, then accumulates. */
        if ((o->type == OPT_LIST || o->type == OPT_NETS || o->type == OPT_RATES) &&
            !seen_list[o - config_opts]) {
            seen_list[o - config_opts] = 1;
            config_set_opt(cfg, o, "", NULL, 0);
        }
        if ((rc = config_set_opt(cfg, o, value, msg, sizeof(msg))) < 0) {
            config_err(err, errlen, "%.*s: %s", flaglen, a, msg);
            return rc;
        }
    }
    return 0;
}

void config_finish(config_t *cfg)
{
    if (cfg->pidfile[0] == '\0') {
        size_t n = strlen(cfg->data_dir);
        while (n > 1 && cfg->data_dir[n - 1] == '/')
            n--;
        snprintf(cfg->pidfile, sizeof(cfg->pidfile), "%.*s/trackd.pid", (int)n, cfg->data_dir);
    }
    if (cfg->workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1)
            n = 1;
        if (n > CONFIG_MAX_WORKERS)
            n = CONFIG_MAX_WORKERS;
        cfg->workers = (int)n;
    }
}

void config_free(config_t *cfg)
{
    config_list_clear(&cfg->tokens);
    config_list_clear(&cfg->import_secrets);
    config_list_clear(&cfg->redirect_hosts);
    free(cfg->trusted_proxies);
    cfg->trusted_proxies = NULL;
    cfg->ntrusted_proxies = 0;
    config_rates_clear(cfg);
}

size_t config_queue_high_water(const config_t *cfg)
{
    if (cfg->queue_high_water == 0 || cfg->queue_high_water > cfg->queue_max_bytes)
        return cfg->queue_max_bytes / 2;
    return cfg->queue_high_water;
}

const config_rate_t *config_rate_for(const config_t *cfg, const char *token, size_t len)
{
    for (size_t i = 0; i < cfg->nrate_limit_tokens; i++) {
        const config_rate_t *r = &cfg->rate_limit_tokens[i];
        if (strlen(r->token) == len && memcmp(r->token, token, len) == 0)
            return r;
    }
    return &cfg->rate_limit;
}

/* The shortest exact way to write a size ("2m") or a duration in ms ("10s"). */
static void config_fmt_size(char *out, size_t len, uint64_t v)
{
    if (v != 0 && v % GIB == 0)
        snprintf(out, len, "%llug", (unsigned long long)(v / GIB));
    else if (v != 0 && v % MIB == 0)
        snprintf(out, len, "%llum", (unsigned long long)(v / MIB));
    else if (v != 0 && v % KIB == 0)
        snprintf(out, len, "%lluk", (unsigned long long)(v / KIB));
    else
        snprintf(out, len, "%llu", (unsigned long long)v);
}

static void config_fmt_ms(char *out, size_t len, uint64_t ms)
{
    if (ms == 0)
        snprintf(out, len, "0");
    else if (ms % (3600 * 1000) == 0)
        snprintf(out, len, "%lluh", (unsigned long long)(ms / (3600 * 1000)));
    else if (ms % (60 * 1000) == 0)
        snprintf(out, len, "%llum", (unsigned long long)(ms / (60 * 1000)));
    else if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

static void config_fmt_default(const config_t *d, const config_opt_t *o, char *out, size_t len)
{
    const char *field = (const char *)d + o->off;

    switch (o->type) {
    case OPT_STR:
    case OPT_HOSTPORT:
        if (strcmp(o->name, "pidfile") == 0)
            snprintf(out, len, "<data_dir>/trackd.pid");
        else
            snprintf(out, len, "%s", *field ? field : "\"\"");
        break;
    case OPT_WORKERS:
        snprintf(out, len, "auto (%ld here)", sysconf(_SC_NPROCESSORS_ONLN));
        break;
    case OPT_INT:
        snprintf(out, len, "%d", *(const int *)field);
        break;
    case OPT_COUNT:
        snprintf(out, len, "%zu", *(const size_t *)field);
        break;
    case OPT_SIZE:
        if (strcmp(o->name, "queue_high_water") == 0 && *(const size_t *)field == 0)
            snprintf(out, len, "0 = half of queue_max_bytes");
        else
            config_fmt_size(out, len, *(const size_t *)field);
        break;
    case OPT_SIZE64:
        config_fmt_size(out, len, *(const uint64_t *)field);
        break;
    case OPT_MS:
        config_fmt_ms(out, len, (uint64_t) * (const int *)field);
        break;
    case OPT_SEC:
        config_fmt_ms(out, len, (uint64_t) * (const int *)field * 1000);
        break;
    case OPT_SEC64:
        config_fmt_ms(out, len, *(const uint64_t *)field * 1000);
        break;
    case OPT_DURABILITY: {
        static const char *const names[] = {"fsync", "write", "none"};
        snprintf(out, len, "%s", names[*(const config_durability_t *)field]);
        break;
    }
    case OPT_LOG_LEVEL: {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        snprintf(out, len, "%s", names[*(const config_log_level_t *)field]);
        break;
    }
    case OPT_BOOL:
        snprintf(out, len, "%s", *(const int *)field ? "on" : "off");
        break;
    case OPT_LIST:
    case OPT_NETS:
    case OPT_RATES:
        snprintf(out, len, "none");
        break;
    case OPT_RATE: {
        const config_rate_t *r = (const config_rate_t *)field;
        if (r->rate == 0)
            snprintf(out, len, "0 = off");
        else
            snprintf(out, len, "%llu %llu", (unsigned long long)r->rate,
                     (unsigned long long)r->burst);
        break;
    }
    }
}

static const char *config_metavar(const config_opt_t *o)
{
    switch (o->type) {
    case OPT_STR:
        return "PATH";
    case OPT_HOSTPORT:
        return "HOST:PORT";
    case OPT_WORKERS:
        return "N|auto";
    case OPT_INT:
    case OPT_COUNT:
        return "N";
    case OPT_SIZE:
    case OPT_SIZE64:
        return "SIZE";
    case OPT_MS:
    case OPT_SEC:
    case OPT_SEC64:
        return "DURATION";
    case OPT_DURABILITY:
        return "fsync|write|none";
    case OPT_LOG_LEVEL:
        return "error|warn|info|debug";
    case OPT_BOOL:
        return "on|off";
    case OPT_LIST:
        return "VALUE[,VALUE...]";
    case OPT_NETS:
        return "ADDR[/BITS][,...]";
    case OPT_RATE:
        return "\"RATE [BURST]\"";
    case OPT_RATES:
        return "\"TOKEN RATE [BURST]\"[,...]";
    }
    return "VALUE";
}

void config_usage(void *out)
{
    FILE *f = out;
    config_t d;

    config_defaults(&d);
    fprintf(f,
            "Usage: trackd [OPTIONS]\n"
            "Event-tracking ingestion server (Mixpanel-compatible /track, /engage, /groups, "
            "/import).\n\n"
            "  -c, --config FILE    read options from FILE first: one \"name value\" per line,\n"
            "                       '#' comments; the options below override it\n"
            "  -t, --test-config    check the configuration and exit (0 if valid)\n"
            "  -h, --help           print this help and exit\n"
            "  -V, --version        print the version and exit\n\n"
            "Every option below is also a config-file name (shown in brackets). Sizes take k, m\n"
            "or g suffixes (KiB, MiB, GiB); durations ms, s, m or h (a bare number is in the\n"
            "unit the name ends with); lists repeat the option or separate values with commas,\n"
            "and \"\" empties them. Both --name VALUE and --name=VALUE work.\n\n");
    for (size_t i = 0; i < CONFIG_NOPTS; i++) {
        const config_opt_t *o = &config_opts[i];
        char flag[64], def[64];
        size_t j = 0;

        for (const char *c = o->name; *c && j + 1 < sizeof(flag); c++)
            flag[j++] = *c == '_' ? '-' : *c;
        flag[j] = '\0';
        config_fmt_default(&d, o, def, sizeof(def));
        fprintf(f, "  --%s %s  [%s]  (default: %s)\n        %s\n", flag, config_metavar(o), o->name,
                def, o->help);
    }
    fprintf(f, "\nSignals: TERM/INT stop gracefully, HUP reloads the config file and restarts\n"
               "workers one at a time, USR2 starts a new binary on the same sockets.\n"
               "Exit status: 0 clean stop, 1 runtime failure, 2 bad configuration.\n");
}

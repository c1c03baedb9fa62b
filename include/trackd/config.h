/*
 * trackd's configuration: one struct filled from built-in defaults, then the config file, then
 * the command line (later wins). Every limit the server enforces lives here, with the HTTP status
 * it produces; README.md's configuration table lists the same names and defaults.
 */
#ifndef TRACKD_CONFIG_H
#define TRACKD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** Durability modes of the log writer (see log.h). */
typedef enum {
    CONFIG_DURABILITY_FSYNC = 0, /* ack after fdatasync covering the record (default) */
    CONFIG_DURABILITY_WRITE = 1, /* ack after write(2) returned */
    CONFIG_DURABILITY_NONE = 2,  /* ack on enqueue; flushed at least every flush_interval_ms */
} config_durability_t;

/** Log levels, lowest is most severe. */
typedef enum {
    CONFIG_LOG_ERROR = 0,
    CONFIG_LOG_WARN = 1,
    CONFIG_LOG_INFO = 2,
    CONFIG_LOG_DEBUG = 3,
} config_log_level_t;

/** A list of strings owned by the config (tokens, secrets, hosts). */
typedef struct {
    char **items;
    size_t n;
} config_list_t;

/** A per-token rate limit: `rate` events per second refilled into a bucket of `burst`. */
typedef struct {
    char *token;    /* the project token (owned); NULL for the default limit */
    uint64_t rate;  /* events per second; 0 = unlimited */
    uint64_t burst; /* bucket size in events (>= 1 when rate > 0) */
} config_rate_t;

/** One trusted proxy network (address + prefix length), parsed from "ADDR[/BITS]". */
typedef struct {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int prefix;
} config_net_t;

typedef struct {
    /* Process and listening. */
    char listen[256]; /* "HOST:PORT" all workers accept on ("" = none); default 127.0.0.1:8000 */
    char worker_listen[256]; /* "HOST:PORT": worker i (1-based) also listens on PORT+i-1 ("" = off)
                              */
    int workers;             /* worker processes; default: number of online cores */
    char data_dir[4096];     /* log root; default ./data */
    char pidfile[4096];      /* default: <data_dir>/trackd.pid ("" until resolved) */
    config_log_level_t log_level; /* default info */
    int shutdown_timeout_ms; /* graceful stop budget before workers are killed; default 10000 */
    int restart_intensity;   /* more than this many worker restarts ...  default 10 */
    int restart_period_s;    /* ... within this many seconds stops the master; default 5 */

    /* Log writer (log.h). */
    config_durability_t durability; /* default fsync */
    uint64_t segment_max_bytes;     /* roll size; default 128 MiB */
    uint64_t segment_max_age_s;     /* roll age; default 3600 */
    uint64_t retention_max_bytes;   /* 0 = keep everything (default) */
    uint64_t retention_max_age_s;   /* 0 = keep everything (default) */
    size_t queue_max_bytes;   /* writer queue bound; full -> 503 + Retry-After; default 64 MiB */
    int flush_interval_ms;    /* durability none: flush period; default 100 */
    uint64_t log_cache_bytes; /* newest log data left in the page cache; 0 = kernel's; 16 MiB */

    /* HTTP limits, each with the status it produces. */
    size_t max_connections;   /* per worker; beyond it: 503 and close; default 10000 */
    size_t max_url_bytes;     /* request target; 414; default 8192 */
    size_t max_header_bytes;  /* all header lines together; 431; default 16384 */
    size_t max_headers;       /* header count; 431; default 64 */
    size_t max_body_bytes;    /* body as received (after chunked decoding); 413; default 2097152 */
    size_t max_decoded_bytes; /* body after gzip inflation; 413; default 8 MiB */
    int header_timeout_ms; /* whole request head must arrive within; 408 + close; default 10000 */
    int body_timeout_ms;   /* gap allowed between body reads; 408 + close; default 10000 */
    int keepalive_timeout_ms; /* idle keep-alive connection closed after; default 60000 */
    int write_timeout_ms;     /* a response must drain within; connection closed; default 30000 */
    int retry_after_s;        /* Retry-After value sent with 503; default 1 */

    /* Overload control and readiness (docs/operations.md). */
    size_t queue_high_water;       /* writer queue bytes from which requests are shed at the head
                                      (503) and /readyz fails; 0 = half of queue_max_bytes */
    uint64_t disk_low_water_bytes; /* /readyz fails below this much free space in data_dir;
                                      default 256 MiB */
    size_t memory_budget_bytes;    /* request buffers per worker (heads, bodies, gzip output);
                                      a request that would pass it: 503 before its body is read;
                                      default 64 MiB */
    config_rate_t rate_limit; /* default per-token limit (token NULL); rate 0 = off (default) */
    config_rate_t *rate_limit_tokens; /* per-token overrides of rate_limit; over: 429 */
    size_t nrate_limit_tokens;

    /* API (../shared/API.md). */
    size_t max_events_per_request; /* default 2000; more -> 413 */
    size_t max_event_bytes;        /* one event's JSON; default 1000000 (invalid event) */
    config_list_t tokens;          /* allow-list; empty = any token accepted; unknown -> 401 */
    config_list_t import_secrets;  /* secrets accepted on /import; empty = /import open */
    config_list_t redirect_hosts;  /* hosts `redirect=` may send to; empty = redirect ignored */
    config_net_t *trusted_proxies; /* peers whose X-Forwarded-For / X-Real-IP is believed */
    size_t ntrusted_proxies;
    int cors_max_age_s; /* Access-Control-Max-Age on preflight; default 86400 */
    int json_fast_path; /* 1: /track and /import events are validated in one pass
                           without a JSON tree, jansson decodes the rest (and is the
                           fallback); 0: jansson for everything; default 1 */
} config_t;

/** Fill `cfg` with the built-in defaults. Never fails. */
void config_defaults(config_t *cfg);

/**
 * Read the config file at `path` into `cfg` (on top of what is there). Returns 0, or a negative
 * errno with a message naming the file and line written to `err` (size `errlen`).
 */
int config_load_file(config_t *cfg, const char *path, char *err, size_t errlen);

/**
 * Apply command-line options (argv as given to main). Handles --config FILE first, then the
 * others, so the command line overrides the file. Returns 0, 1 when --help or --version was
 * printed (caller exits 0), or a negative errno with a message in `err`.
 */
int config_from_args(config_t *cfg, int argc, char **argv, char *err, size_t errlen);

/** Set one option by its config-file name ("max_body_bytes", "durability", ...). */
int config_set(config_t *cfg, const char *key, const char *value, char *err, size_t errlen);

/** Fill defaults that depend on other options (pidfile under data_dir, worker count). */
void config_finish(config_t *cfg);

/** Free what the config owns (lists, proxies). The struct itself belongs to the caller. */
void config_free(config_t *cfg);

/** 1 if `addr` is inside one of the trusted proxy networks. */
int config_is_trusted_proxy(const config_t *cfg, const struct sockaddr *addr);

/** The writer queue's high-water mark in bytes: queue_high_water, or half of queue_max_bytes. */
size_t config_queue_high_water(const config_t *cfg);

/** The rate limit that applies to `token` (length `len`): its override, else rate_limit. */
const config_rate_t *config_rate_for(const config_t *cfg, const char *token, size_t len);

/** 1 if `s` (length `len`) is in `list`. */
int config_list_has(const config_list_t *list, const char *s, size_t len);

/** Print the --help text (every option, its default and its config-file name) to `out`. */
void config_usage(void *out);

/** Split "HOST:PORT" or "[V6]:PORT" into host and port. Returns 0 or -EINVAL. */
int config_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif

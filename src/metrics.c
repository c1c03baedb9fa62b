/*
 * /metrics and /readyz for one worker (metrics.h). Rendering is plain appends into a growing
 * buffer: a scrape is rare next to the requests it describes, so clarity wins over speed here,
 * but nothing here blocks: statvfs is cached per second and /proc/self/statm is one small read.
 *
 * Naming follows Prometheus conventions: counters end in _total, sizes in _bytes, durations in
 * _seconds, and the process facts use the standard process_* names so the usual dashboards and
 * `changes(process_start_time_seconds[1h])` (restarts) work unchanged.
 */
#include "trackd/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/** First size of the output buffer; it doubles as needed. */
#define METRICS_BUF_FIRST 16384

/* Names of the routes, rejection and shed reasons, as exported (indexes of track.h's enums). */
static const char *const metrics_routes[TRACK_RT_COUNT] = {
    "other", "track", "engage", "groups", "import", "healthz", "metrics", "readyz"};
static const char *const metrics_rejects[TRACK_REJ_COUNT] = {"invalid", "rate_limited",
                                                             "not_stored"};
static const char *const metrics_sheds[TRACK_SHED_COUNT] = {"queue", "memory", "log", "cpu"};
static const int metrics_statuses[] = TRACK_STATUSES;
static const double metrics_le[] = METRICS_LATENCY_BUCKETS;

void metrics_proc_init(metrics_proc_t *p, int worker, const char *data_dir)
{
    struct timespec ts;

    memset(p, 0, sizeof(*p));
    p->worker = worker;
    p->data_dir = data_dir;
    clock_gettime(CLOCK_REALTIME, &ts);
    p->start_time_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int metrics_disk(metrics_proc_t *p, uint64_t now_ms, uint64_t *free_bytes, uint64_t *total_bytes)
{
    if (p->disk_at_ms == 0 || now_ms >= p->disk_at_ms + METRICS_DISK_CACHE_MS ||
        now_ms < p->disk_at_ms) {
        struct statvfs sv;
        if (statvfs(p->data_dir ? p->data_dir : ".", &sv) == 0) {
            p->disk_free = (uint64_t)sv.f_bavail * sv.f_frsize;
            p->disk_total = (uint64_t)sv.f_blocks * sv.f_frsize;
            p->disk_err = 0;
        } else {
            p->disk_err = -errno;
        }
        p->disk_at_ms = now_ms ? now_ms : 1;
    }
    *free_bytes = p->disk_free;
    *total_bytes = p->disk_total;
    return p->disk_err;
}

int metrics_rss(uint64_t *bytes)
{
    char buf[128];
    unsigned long long size, resident;
    ssize_t n;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return n < 0 ? -errno : -EIO;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return -EIO;
    *bytes = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
    return 0;
}

/* ---- output buffer ---------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int err;
    char wl[32]; /* worker="N" */
} mbuf_t;

__attribute__((format(printf, 2, 3))) static void mb_printf(mbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->err)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = -EINVAL;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (np == NULL) {
            b->err = -ENOMEM;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* The HELP and TYPE lines of one metric family. */
static void mb_family(mbuf_t *b, const char *name, const char *type, const char *help)
{
    mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One unlabelled (but for the worker) series with an integer value. */
static void mb_u64(mbuf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    mb_family(b, name, type, help);
    mb_printf(b, "%s{%s} %llu\n", name, b->wl, (unsigned long long)v);
}

static void mb_f64(mbuf_t *b, const char *name, const char *type, const char *help, double v)
{
    mb_family(b, name, type, help);
    mb_printf(b, "%s{%s} %.9g\n", name, b->wl, v);
}

/* ---- the sections --------------------------------------------------------------------- */

static void metrics_process(mbuf_t *b, const metrics_input_t *in)
{
    uint64_t rss = 0;

    mb_family(b, "trackd_worker_info", "gauge",
              "Always 1; labels say which worker and log slot this is.");
    mb_printf(b, "trackd_worker_info{%s,slot=\"%d\"} 1\n", b->wl, in->log ? in->log->slot : 0);
    mb_family(b, "process_start_time_seconds", "gauge",
              "Unix time the worker started; each change is a restart (the master's log says "
              "why).");
    mb_printf(b, "process_start_time_seconds{%s} %.3f\n", b->wl, in->proc->start_time_s);
    if (metrics_rss(&rss) == 0)
        mb_u64(b, "process_resident_memory_bytes", "gauge",
               "Resident memory of the worker (/proc/self/statm).", rss);
}

static void metrics_requests(mbuf_t *b, const metrics_input_t *in)
{
    const track_stats_t *t = in->track;
    const size_t nst = sizeof(metrics_statuses) / sizeof(metrics_statuses[0]);

    mb_family(b, "trackd_requests_total", "counter",
              "Requests answered by the API, by endpoint and status (HTTP-layer errors such as "
              "408/431 are in trackd_http_responses_total).");
    for (int r = 0; r < TRACK_RT_COUNT; r++) {
        for (size_t s = 0; s < TRACK_NSTATUS; s++) {
            if (t->requests[r][s] == 0)
                continue;
            if (s < nst)
                mb_printf(b, "trackd_requests_total{%s,endpoint=\"%s\",status=\"%d\"} %llu\n",
                          b->wl, metrics_routes[r], metrics_statuses[s],
                          (unsigned long long)t->requests[r][s]);
            else
                mb_printf(b, "trackd_requests_total{%s,endpoint=\"%s\",status=\"other\"} %llu\n",
                          b->wl, metrics_routes[r], (unsigned long long)t->requests[r][s]);
        }
    }
    mb_family(b, "trackd_request_duration_seconds", "histogram",
              "Time from a complete request head to its answer, by API endpoint (includes "
              "reading the body and waiting for durability).");
    for (int r = TRACK_RT_TRACK; r <= TRACK_RT_IMPORT; r++) {
        const hist_t *h = &t->latency[r];
        for (size_t i = 0; i < sizeof(metrics_le) / sizeof(metrics_le[0]); i++)
            mb_printf(b,
                      "trackd_request_duration_seconds_bucket{%s,endpoint=\"%s\",le=\"%g\"} %llu\n",
                      b->wl, metrics_routes[r], metrics_le[i],
                      (unsigned long long)hist_count_le(h, (uint64_t)(metrics_le[i] * 1e9)));
        mb_printf(b,
                  "trackd_request_duration_seconds_bucket{%s,endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                  b->wl, metrics_routes[r], (unsigned long long)h->count);
        mb_printf(b, "trackd_request_duration_seconds_sum{%s,endpoint=\"%s\"} %.9f\n", b->wl,
                  metrics_routes[r], (double)h->sum / 1e9);
        mb_printf(b, "trackd_request_duration_seconds_count{%s,endpoint=\"%s\"} %llu\n", b->wl,
                  metrics_routes[r], (unsigned long long)h->count);
    }
    mb_family(b, "trackd_events_stored_total", "counter",
              "Events (and profile/group updates) acknowledged as durable, by endpoint.");
    for (int r = TRACK_RT_TRACK; r <= TRACK_RT_IMPORT; r++)
        mb_printf(b, "trackd_events_stored_total{%s,endpoint=\"%s\"} %llu\n", b->wl,
                  metrics_routes[r], (unsigned long long)t->stored_by[r]);
    mb_family(b, "trackd_events_rejected_total", "counter",
              "Decoded events not stored, by reason (requests refused before decoding are in "
              "trackd_requests_total and trackd_shed_total).");
    for (int i = 0; i < TRACK_REJ_COUNT; i++)
        mb_printf(b, "trackd_events_rejected_total{%s,reason=\"%s\"} %llu\n", b->wl,
                  metrics_rejects[i], (unsigned long long)t->rejected_by[i]);
    mb_family(b, "trackd_shed_total", "counter",
              "Requests answered 503 + Retry-After at their head, before the body was read, by "
              "reason.");
    for (int i = 0; i < TRACK_SHED_COUNT; i++)
        mb_printf(b, "trackd_shed_total{%s,reason=\"%s\"} %llu\n", b->wl, metrics_sheds[i],
                  (unsigned long long)t->shed_by[i]);
    mb_u64(b, "trackd_body_bytes_total", "counter", "Request body bytes handed to the API.",
           t->body_bytes);
    mb_u64(b, "trackd_rate_limit_buckets", "gauge", "Per-token rate limit buckets tracked.",
           in->rate_buckets);
    mb_f64(b, "trackd_loop_lag_seconds", "gauge",
           "How late the worker's periodic timer last fired (event loop busy time).",
           (double)t->loop_lag_ns / 1e9);
    mb_f64(b, "trackd_loop_lag_max_seconds", "gauge", "Largest trackd_loop_lag_seconds seen.",
           (double)t->loop_lag_max_ns / 1e9);
}

static void metrics_http(mbuf_t *b, const metrics_input_t *in)
{
    const http_stats_t *h = in->http;

    mb_u64(b, "trackd_connections_open", "gauge", "Client connections open now.", h->conns_open);
    mb_u64(b, "trackd_connections_total", "counter", "Client connections accepted.",
           h->conns_total);
    mb_u64(b, "trackd_connections_rejected_total", "counter",
           "Connections over max_connections (answered 503 and closed at accept).",
           h->conns_rejected);
    mb_u64(b, "trackd_bytes_in_total", "counter", "Bytes read from clients.", h->bytes_in);
    mb_u64(b, "trackd_bytes_out_total", "counter", "Bytes written to clients.", h->bytes_out);
    mb_family(b, "trackd_timeouts_total", "counter",
              "Requests closed with 408 because the head or the body stalled.");
    mb_printf(b, "trackd_timeouts_total{%s,phase=\"header\"} %llu\n", b->wl,
              (unsigned long long)h->header_timeouts);
    mb_printf(b, "trackd_timeouts_total{%s,phase=\"body\"} %llu\n", b->wl,
              (unsigned long long)h->body_timeouts);
    mb_u64(b, "trackd_parse_errors_total", "counter",
           "Requests refused by the HTTP parser (malformed, smuggling shapes, limits).",
           h->parse_errors);
    mb_family(b, "trackd_http_responses_total", "counter",
              "Every answer sent, by status class (includes the HTTP layer's own errors).");
    for (int cls = 1; cls <= 5; cls++)
        mb_printf(b, "trackd_http_responses_total{%s,class=\"%dxx\"} %llu\n", b->wl, cls,
                  (unsigned long long)h->responses[cls]);
    mb_u64(b, "trackd_coroutines", "gauge", "Request handlers running (waiting for the log).",
           in->coroutines);
    mb_u64(b, "trackd_runnable_requests", "gauge",
           "Complete requests waiting for the CPU to start their handler.", h->runnable);
    mb_f64(b, "trackd_queue_delay_seconds", "gauge",
           "How long the oldest of trackd_runnable_requests has waited.",
           (double)h->queue_delay_ns / 1e9);
    mb_f64(b, "trackd_cpu_backlog_seconds", "gauge",
           "CPU time the admitted, not yet started requests need (estimate; sheds over 0.1 s).",
           (double)h->backlog_ns / 1e9);
    mb_f64(b, "trackd_queue_delay_max_seconds", "gauge",
           "Longest any request waited for the CPU since the worker started.",
           (double)h->queue_delay_max_ns / 1e9);
    mb_u64(b, "trackd_request_memory_bytes", "gauge",
           "Request buffers held now (heads, bodies, parked and unsent bytes, gzip output).",
           h->mem_used);
    mb_u64(b, "trackd_request_memory_peak_bytes", "gauge", "Highest trackd_request_memory_bytes.",
           h->mem_peak);
    mb_u64(b, "trackd_request_memory_budget_bytes", "gauge", "memory_budget_bytes.",
           h->mem_budget == SIZE_MAX ? 0 : h->mem_budget);
    mb_u64(b, "trackd_request_memory_refused_total", "counter",
           "Allocations the memory budget refused (each one a 503 or a paused read).",
           h->mem_refused);
}

static void metrics_log(mbuf_t *b, const metrics_input_t *in)
{
    const log_stats_t *l = in->log;
    const config_t *cfg = in->cfg;

    mb_u64(b, "trackd_log_writable", "gauge", "1 while the log accepts appends, 0 while failed.",
           (uint64_t)l->writable);
    mb_u64(b, "trackd_log_queue_bytes", "gauge",
           "Bytes appended and not yet acknowledged (writer queue depth).", l->queue_bytes);
    mb_u64(b, "trackd_log_queue_records", "gauge", "Records appended and not yet acknowledged.",
           l->queue_records);
    mb_u64(b, "trackd_log_queue_high_water_bytes", "gauge",
           "queue_high_water: from here requests are shed and /readyz fails.",
           config_queue_high_water(cfg));
    mb_u64(b, "trackd_log_queue_max_bytes", "gauge", "queue_max_bytes.", cfg->queue_max_bytes);
    mb_u64(b, "trackd_log_records_total", "counter", "Records appended to the log.",
           l->records_appended);
    mb_u64(b, "trackd_log_bytes_total", "counter", "Bytes appended to the log.", l->bytes_appended);
    mb_u64(b, "trackd_log_batches_total", "counter", "Group-commit batches written.", l->batches);
    mb_u64(b, "trackd_log_inline_batches_total", "counter",
           "Batches the event loop wrote itself (write mode, writer thread idle).",
           l->inline_batches);
    mb_u64(b, "trackd_log_inline_slow_total", "counter",
           "Inline batches slow enough to leave writing to the writer thread for a while.",
           l->inline_slow);
    mb_u64(b, "trackd_log_write_errors_total", "counter", "Failed writes to a segment.",
           l->write_errors);
    mb_u64(b, "trackd_log_fsync_errors_total", "counter", "Failed fdatasyncs.", l->fsync_errors);
    /* The writer keeps a count, a total and a maximum: a summary without quantiles. */
    mb_family(b, "trackd_log_fsync_seconds", "summary",
              "fdatasync calls covering records and the time they took.");
    mb_printf(b, "trackd_log_fsync_seconds_sum{%s} %.9f\n", b->wl, (double)l->fsync_ns_total / 1e9);
    mb_printf(b, "trackd_log_fsync_seconds_count{%s} %llu\n", b->wl, (unsigned long long)l->fsyncs);
    mb_f64(b, "trackd_log_fsync_max_seconds", "gauge",
           "Longest fdatasync since the worker started.", (double)l->fsync_ns_max / 1e9);
    mb_u64(b, "trackd_log_segments", "gauge", "Segment files in the worker's slot.", l->segments);
    mb_u64(b, "trackd_log_segment_bytes", "gauge", "Bytes of the segment files of the slot.",
           l->segment_bytes);
}

static void metrics_disk_section(mbuf_t *b, const metrics_input_t *in)
{
    uint64_t free_b = 0, total_b = 0;

    if (metrics_disk(in->proc, in->now_ms, &free_b, &total_b) == 0) {
        mb_u64(b, "trackd_disk_free_bytes", "gauge",
               "Free space of data_dir's file system (sampled at most once a second).", free_b);
        mb_u64(b, "trackd_disk_total_bytes", "gauge", "Size of data_dir's file system.", total_b);
    }
    mb_u64(b, "trackd_disk_low_water_bytes", "gauge",
           "disk_low_water_bytes: under it /readyz fails.", in->cfg->disk_low_water_bytes);
}

int metrics_render(const metrics_input_t *in, char **out, size_t *outlen)
{
    mbuf_t b;
    char why[256];

    memset(&b, 0, sizeof(b));
    b.cap = METRICS_BUF_FIRST;
    b.p = malloc(b.cap);
    if (b.p == NULL)
        return -ENOMEM;
    b.p[0] = '\0';
    snprintf(b.wl, sizeof(b.wl), "worker=\"%d\"", in->proc->worker);
    metrics_process(&b, in);
    mb_u64(&b, "trackd_ready", "gauge", "1 when /readyz answers 200.",
           (uint64_t)metrics_ready(in, why, sizeof(why)));
    metrics_requests(&b, in);
    if (in->http)
        metrics_http(&b, in);
    if (in->log)
        metrics_log(&b, in);
    metrics_disk_section(&b, in);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

/* Append one failed check to `why`. */
__attribute__((format(printf, 3, 4))) static void ready_fail(char *why, size_t whylen,
                                                             const char *fmt, ...)
{
    size_t o = strlen(why);
    va_list ap;

    if (o >= whylen)
        return;
    if (o > 0 && o + 2 < whylen) {
        memcpy(why + o, "; ", 3);
        o += 2;
    }
    va_start(ap, fmt);
    vsnprintf(why + o, whylen - o, fmt, ap);
    va_end(ap);
}

int metrics_ready(const metrics_input_t *in, char *why, size_t whylen)
{
    const config_t *cfg = in->cfg;
    uint64_t free_b, total_b;
    int err, ok = 1;

    if (whylen)
        why[0] = '\0';
    if (in->log == NULL) {
        ok = 0;
        ready_fail(why, whylen, "no event log");
    } else {
        if (!in->log->writable) {
            ok = 0;
            ready_fail(why, whylen, "event log not writable");
        }
        if (in->log->queue_bytes >= config_queue_high_water(cfg)) {
            ok = 0;
            ready_fail(why, whylen, "writer queue %zu bytes, high water %zu", in->log->queue_bytes,
                       config_queue_high_water(cfg));
        }
    }
    if (in->http && in->http->mem_budget != SIZE_MAX &&
        in->http->mem_used >= in->http->mem_budget / 100 * HTTP_MEM_HIGH_WATER_PCT) {
        ok = 0;
        ready_fail(why, whylen, "request memory %zu bytes, high water %zu", in->http->mem_used,
                   in->http->mem_budget / 100 * HTTP_MEM_HIGH_WATER_PCT);
    }
    if (in->http && in->http->backlog_ns > (uint64_t)TRACK_QUEUE_DELAY_SHED_MS * 1000000) {
        ok = 0;
        ready_fail(why, whylen, "CPU backlog %llu ms, limit %d",
                   (unsigned long long)(in->http->backlog_ns / 1000000), TRACK_QUEUE_DELAY_SHED_MS);
    }
    err = metrics_disk(in->proc, in->now_ms, &free_b, &total_b);
    if (err) {
        ok = 0;
        ready_fail(why, whylen, "cannot stat data_dir: %s", strerror(-err));
    } else if (free_b < cfg->disk_low_water_bytes) {
        ok = 0;
        ready_fail(why, whylen, "disk free %llu bytes, low water %llu", (unsigned long long)free_b,
                   (unsigned long long)cfg->disk_low_water_bytes);
    }
    return ok;
}

/*
 * Unit tests of metrics.c: the Prometheus text is well-formed (every sample line is
 * `name{labels} value`, every family has HELP and TYPE, every sample carries the worker label),
 * histograms are cumulative and end in +Inf = _count, the numbers given are the numbers shown,
 * readiness names each failed check, and the process facts (RSS, disk) are real and cached.
 */
#include "test.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>

#include "trackd/config.h"
#include "trackd/metrics.h"

/* One sample line: NAME{LABELS} VALUE, labels name="value" pairs. Returns 1 if well-formed. */
static int sample_ok(const char *line, char *name, size_t nlen)
{
    const char *p = line, *start = line;
    size_t n;

    if (!(isalpha((unsigned char)*p) || *p == '_' || *p == ':'))
        return 0;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
        p++;
    n = (size_t)(p - start);
    if (n >= nlen)
        return 0;
    memcpy(name, start, n);
    name[n] = '\0';
    if (*p != '{')
        return 0;
    p++;
    if (strncmp(p, "worker=\"", 8) != 0)
        return 0; /* every series says which worker it is, first */
    while (*p != '}') {
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        if (*p++ != '=' || *p++ != '"')
            return 0;
        while (*p && *p != '"') {
            if (*p == '\\' || *p == '\n')
                return 0;
            p++;
        }
        if (*p++ != '"')
            return 0;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return 0;
    }
    p++;
    if (*p++ != ' ')
        return 0;
    char *end;
    if (strcmp(p, "+Inf") == 0)
        return 1;
    strtod(p, &end);
    return end != p && *end == '\0';
}

/* Check the whole text; returns the number of samples. */
static size_t check_exposition(char *text)
{
    char typed[256][80];
    size_t ntyped = 0, samples = 0;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            CHECK(ntyped < 256);
            CHECK(sscanf(line + 7, "%79s", typed[ntyped]) == 1);
            ntyped++;
            continue;
        }
        if (!sample_ok(line, name, sizeof(name))) {
            fprintf(stderr, "  bad sample line: %s\n", line);
            CHECK(0);
        }
        /* Its family was declared: the name, or the name without a histogram/summary suffix. */
        int found = 0;
        for (size_t i = 0; i < ntyped && !found; i++) {
            size_t l = strlen(typed[i]);
            found = strncmp(name, typed[i], l) == 0 &&
                    (name[l] == '\0' || strcmp(name + l, "_bucket") == 0 ||
                     strcmp(name + l, "_sum") == 0 || strcmp(name + l, "_count") == 0);
        }
        if (!found) {
            fprintf(stderr, "  sample without TYPE: %s\n", line);
            CHECK(0);
        }
        samples++;
    }
    return samples;
}

/* The value of the sample line starting with `prefix` (-1 if absent). */
static double value_of(const char *text, const char *prefix)
{
    const char *p = text;
    size_t n = strlen(prefix);

    while ((p = strstr(p, prefix)) != NULL) {
        if (p == text || p[-1] == '\n')
            return strtod(p + n, NULL);
        p += n;
    }
    return -1;
}

typedef struct {
    config_t cfg;
    metrics_proc_t proc;
    track_stats_t ts;
    http_stats_t hs;
    log_stats_t ls;
    metrics_input_t in;
} fixture_t;

static void fixture(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    config_defaults(&f->cfg);
    snprintf(f->cfg.data_dir, sizeof(f->cfg.data_dir), "%s", test_tmpdir());
    f->cfg.disk_low_water_bytes = 0;
    metrics_proc_init(&f->proc, 2, f->cfg.data_dir);
    for (int r = 0; r < TRACK_RT_COUNT; r++)
        hist_init(&f->ts.latency[r]);
    f->hs.mem_budget = f->cfg.memory_budget_bytes;
    f->ls.writable = 1;
    f->ls.slot = 2;
    f->in.cfg = &f->cfg;
    f->in.proc = &f->proc;
    f->in.track = &f->ts;
    f->in.http = &f->hs;
    f->in.log = &f->ls;
    f->in.now_ms = 1000;
}

TEST(metrics_text_is_well_formed_prometheus_with_a_worker_label_everywhere)
{
    static fixture_t f;
    char *text, *copy;
    size_t len;

    fixture(&f);
    f.ts.requests[TRACK_RT_TRACK][0] = 7;
    f.ts.requests[TRACK_RT_IMPORT][TRACK_NSTATUS - 1] = 2;
    f.ts.stored_by[TRACK_RT_TRACK] = 350;
    f.ts.rejected_by[TRACK_REJ_RATE_LIMITED] = 9;
    f.ts.shed_by[TRACK_SHED_MEMORY] = 4;
    f.hs.conns_open = 11;
    f.hs.mem_used = 12345;
    f.ls.queue_bytes = 777;
    f.ls.fsyncs = 3;
    f.ls.fsync_ns_total = 1500000000;
    f.ls.fsync_ns_max = 900000000;
    f.ls.segments = 2;
    f.ls.inline_batches = 41;
    f.ls.inline_slow = 1;
    CHECK_EQ_INT(metrics_render(&f.in, &text, &len), 0);
    CHECK(len == strlen(text));
    CHECK(value_of(text,
                   "trackd_requests_total{worker=\"2\",endpoint=\"track\",status=\"200\"} ") == 7);
    CHECK(value_of(text,
                   "trackd_requests_total{worker=\"2\",endpoint=\"import\",status=\"other\"} ") ==
          2);
    CHECK(value_of(text, "trackd_events_stored_total{worker=\"2\",endpoint=\"track\"} ") == 350);
    CHECK(value_of(text, "trackd_events_rejected_total{worker=\"2\",reason=\"rate_limited\"} ") ==
          9);
    CHECK(value_of(text, "trackd_shed_total{worker=\"2\",reason=\"memory\"} ") == 4);
    CHECK(value_of(text, "trackd_connections_open{worker=\"2\"} ") == 11);
    CHECK(value_of(text, "trackd_request_memory_bytes{worker=\"2\"} ") == 12345);
    CHECK(value_of(text, "trackd_log_queue_bytes{worker=\"2\"} ") == 777);
    CHECK(value_of(text, "trackd_log_fsync_seconds_count{worker=\"2\"} ") == 3);
    CHECK(value_of(text, "trackd_log_fsync_seconds_sum{worker=\"2\"} ") == 1.5);
    CHECK(value_of(text, "trackd_log_fsync_max_seconds{worker=\"2\"} ") == 0.9);
    CHECK(value_of(text, "trackd_log_inline_batches_total{worker=\"2\"} ") == 41);
    CHECK(value_of(text, "trackd_log_inline_slow_total{worker=\"2\"} ") == 1);
    CHECK(value_of(text, "trackd_worker_info{worker=\"2\",slot=\"2\"} ") == 1);
    CHECK(value_of(text, "trackd_ready{worker=\"2\"} ") == 1);
    CHECK(value_of(text, "process_resident_memory_bytes{worker=\"2\"} ") > 0);
    CHECK(value_of(text, "process_start_time_seconds{worker=\"2\"} ") > 1.7e9);
    CHECK(value_of(text, "trackd_disk_free_bytes{worker=\"2\"} ") > 0);
    copy = strdup(text);
    CHECK(check_exposition(copy) > 100);
    free(copy);
    free(text);
}

TEST(metrics_latency_histogram_is_cumulative_in_seconds_and_ends_with_the_count)
{
    static fixture_t f;
    char *text, line[160];
    size_t len;
    double prev = 0;
    static const double le[] = METRICS_LATENCY_BUCKETS;

    fixture(&f);
    hist_record(&f.ts.latency[TRACK_RT_TRACK], 300000);      /* 0.3 ms */
    hist_record(&f.ts.latency[TRACK_RT_TRACK], 2000000);     /* 2 ms */
    hist_record(&f.ts.latency[TRACK_RT_TRACK], 40000000);    /* 40 ms */
    hist_record(&f.ts.latency[TRACK_RT_TRACK], 30000000000); /* 30 s: only in +Inf */
    CHECK_EQ_INT(metrics_render(&f.in, &text, &len), 0);
    for (size_t i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
        snprintf(
            line, sizeof(line),
            "trackd_request_duration_seconds_bucket{worker=\"2\",endpoint=\"track\",le=\"%g\"} ",
            le[i]);
        double v = value_of(text, line);
        CHECK(v >= prev);
        prev = v;
        if (le[i] == 0.0005)
            CHECK(v == 1);
        if (le[i] == 0.0025)
            CHECK(v == 2);
        if (le[i] == 0.05)
            CHECK(v == 3);
    }
    CHECK(prev == 3);
    CHECK(value_of(text, "trackd_request_duration_seconds_bucket{worker=\"2\",endpoint=\"track\","
                         "le=\"+Inf\"} ") == 4);
    CHECK(value_of(text,
                   "trackd_request_duration_seconds_count{worker=\"2\",endpoint=\"track\"} ") == 4);
    double sum =
        value_of(text, "trackd_request_duration_seconds_sum{worker=\"2\",endpoint=\"track\"} ");
    CHECK(sum > 30.04 && sum < 30.05);
    free(text);
}

TEST(metrics_ready_names_every_failed_check)
{
    static fixture_t f;
    char why[512];

    fixture(&f);
    CHECK_EQ_INT(metrics_ready(&f.in, why, sizeof(why)), 1);
    CHECK_EQ_STR(why, "");
    f.ls.writable = 0;
    f.ls.queue_bytes = config_queue_high_water(&f.cfg);
    f.hs.mem_used = f.cfg.memory_budget_bytes;
    f.cfg.disk_low_water_bytes = UINT64_MAX;
    f.proc.disk_at_ms = 0;
    CHECK_EQ_INT(metrics_ready(&f.in, why, sizeof(why)), 0);
    CHECK(strstr(why, "event log not writable") != NULL);
    CHECK(strstr(why, "writer queue 33554432 bytes, high water 33554432") != NULL);
    CHECK(strstr(why, "request memory") != NULL);
    CHECK(strstr(why, "disk free") != NULL);
    /* Each condition alone is enough. */
    fixture(&f);
    f.ls.queue_bytes = config_queue_high_water(&f.cfg) - 1;
    CHECK_EQ_INT(metrics_ready(&f.in, why, sizeof(why)), 1);
    f.in.log = NULL;
    CHECK_EQ_INT(metrics_ready(&f.in, why, sizeof(why)), 0);
    CHECK_EQ_STR(why, "no event log");
    fixture(&f);
    snprintf(f.cfg.data_dir, sizeof(f.cfg.data_dir), "%s/missing", test_tmpdir());
    CHECK_EQ_INT(metrics_ready(&f.in, why, sizeof(why)), 0);
    CHECK(strstr(why, "cannot stat data_dir") != NULL);
}

TEST(metrics_disk_is_sampled_at_most_once_a_second)
{
    metrics_proc_t p;
    uint64_t fr, tot, fr2, tot2;

    metrics_proc_init(&p, 1, test_tmpdir());
    CHECK_EQ_INT(metrics_disk(&p, 5000, &fr, &tot), 0);
    CHECK(fr > 0 && tot >= fr);
    /* Within the second the cached numbers come back even if the file system changed. */
    p.disk_free = 42;
    CHECK_EQ_INT(metrics_disk(&p, 5000 + METRICS_DISK_CACHE_MS - 1, &fr2, &tot2), 0);
    CHECK_EQ_INT(fr2, 42);
    CHECK_EQ_INT(metrics_disk(&p, 5000 + METRICS_DISK_CACHE_MS, &fr2, &tot2), 0);
    CHECK(fr2 > 42);
    CHECK_EQ_INT(tot2, tot);
}

TEST(metrics_rss_reads_the_resident_size_of_this_process)
{
    uint64_t before, after;
    size_t n = 64 << 20;
    char *big;

    CHECK_EQ_INT(metrics_rss(&before), 0);
    CHECK(before > 100000);
    big = malloc(n);
    CHECK(big != NULL);
    memset(big, 1, n); /* touched: resident */
    CHECK_EQ_INT(metrics_rss(&after), 0);
    CHECK(after >= before + n / 2);
    free(big);
}

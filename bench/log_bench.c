/*
 * Benchmark of the log writer alone (no HTTP): 300-byte records appended through log_append on
 * a uv loop, as a worker would. Prints the machine (cores, kernel, filesystem, one fdatasync's
 * latency), then
 *   1. throughput per durability mode, the loop keeping the queue full (records/s, MB/s, and
 *      records per CPU-second of the whole process: loop thread + writer thread);
 *   2. fsync mode with 1, 64 and 1024 concurrent waiters, each appending again from its
 *      callback: records/s, records per fsync (the group commit), fsync latency, and the
 *      append-to-callback latency the client would see.
 * Results go to bench/log.md by hand.
 *
 *   log_bench [-d DIR] [-t SECONDS]     DIR on the disk to measure (default ./build), 3 s a run
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "trackd/hist.h"
#include "trackd/log.h"
#include "trackd/msg.h"
#include "trackd/segment.h"

#define RECORD_BYTES 300
#define FSYNC_PROBES 50
#define WAITERS_MAX 1024

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char payload[RECORD_BYTES];
static char base_dir[PATH_MAX];
static int run_no;

static void make_payload(void)
{
    /* A realistic event, padded to exactly RECORD_BYTES. */
    int n = snprintf(payload, sizeof(payload),
                     "{\"event\":\"Viewed page\",\"properties\":{\"token\":\"bench-token\","
                     "\"distinct_id\":\"user-4242\",\"time\":1764000000,\"$insert_id\":"
                     "\"bench0000000001\",\"$current_url\":\"https://shop.example.com/p/42\","
                     "\"pad\":\"");
    memset(payload + n, 'x', sizeof(payload) - (size_t)n - 2);
    memcpy(payload + sizeof(payload) - 2, "\"}", 2);
}

/* A fresh data dir for each run, so runs do not append to each other's segments. */
static log_config_t bench_config(config_durability_t mode)
{
    static char dir[PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%.4000s/run%d", base_dir, ++run_no);
    log_config_t c = {
        .data_dir = dir,
        .slot = 1,
        .durability = mode,
        .segment_max_bytes = 128u << 20,
        .segment_max_age_ms = 3600 * 1000,
        .queue_max_bytes = 64u << 20,
        .flush_interval_ms = 100,
    };
    return c;
}

static uint64_t completed, failed;
static int closed;

static void on_closed(void *arg)
{
    closed = 1;
}

static void close_log(uv_loop_t *loop, log_t *log)
{
    closed = 0;
    log_close(log, on_closed, NULL);
    while (!closed)
        uv_run(loop, UV_RUN_ONCE);
}

/* ---- 1. Throughput: keep the queue full ---- */

typedef struct free_req_s {
    log_append_t req;
    struct free_req_s *next;
} pool_req_t;

static pool_req_t *pool;

static void on_pipelined(log_append_t *req, int status)
{
    pool_req_t *p = (pool_req_t *)req;
    if (status)
        failed++;
    completed++;
    p->next = pool;
    pool = p;
}

static void bench_mode(const char *name, config_durability_t mode, double secs)
{
    uv_loop_t loop;
    log_t *log;
    uv_loop_init(&loop);
    log_config_t c = bench_config(mode);
    if (log_open(&log, &loop, &c) != 0)
        exit(1);
    /* Enough requests to fill the queue: 64 MiB / 320 bytes. */
    size_t nreq = c.queue_max_bytes / (RECORD_BYTES + SEGMENT_RECORD_HEADER_SIZE) + 1;
    pool_req_t *reqs = calloc(nreq, sizeof(*reqs));
    if (reqs == NULL)
        exit(1);
    pool = NULL;
    for (size_t i = 0; i < nreq; i++) {
        reqs[i].next = pool;
        pool = &reqs[i];
    }
    completed = failed = 0;
    uint64_t appended = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
    double c0 = cpu_s(), l0 = thread_cpu_s();
    log_record_t rec = {payload, sizeof(payload), 1764000000000ull, SEGMENT_EP_TRACK};
    while (now_ns() < end) {
        while (pool) {
            pool_req_t *p = pool;
            if (log_append(log, &p->req, &rec, 1, on_pipelined) != 0)
                break;
            pool = p->next;
            appended++;
        }
        uv_run(&loop, UV_RUN_ONCE);
    }
    while (completed < appended)
        uv_run(&loop, UV_RUN_ONCE);
    uint64_t t1 = now_ns();
    double cpu = cpu_s() - c0, loop_cpu = thread_cpu_s() - l0;
    log_stats_t st;
    log_get_stats(log, &st);
    close_log(&loop, log);
    double wall = (double)(t1 - t0) / 1e9;
    printf("| %-6s | %10.0f | %8.1f | %10.2f | %10.2f | %13.0f | %13.0f |\n", name,
           (double)completed / wall, (double)st.bytes_appended / wall / 1e6, loop_cpu / wall,
           (cpu - loop_cpu) / wall, (double)completed / loop_cpu, (double)completed / cpu);
    if (failed)
        printf("  (%" PRIu64 " appends failed)\n", failed);
    free(reqs);
    uv_loop_close(&loop);
}

/* ---- 2. Concurrent waiters in fsync mode ---- */

typedef struct {
    log_append_t req;
    uint64_t t0;
} waiter_t;

static log_t *wlog;
static uint64_t waiter_end;
static hist_t latency;
static int active;

static void waiter_append(waiter_t *w);

static void on_waiter(log_append_t *req, int status)
{
    waiter_t *w = req->data;
    uint64_t t = now_ns();
    hist_record(&latency, t - w->t0);
    completed++;
    if (status)
        failed++;
    if (t < waiter_end)
        waiter_append(w);
    else
        active--;
}

static void waiter_append(waiter_t *w)
{
    log_record_t rec = {payload, sizeof(payload), 1764000000000ull, SEGMENT_EP_TRACK};
    w->t0 = now_ns();
    if (log_append(wlog, &w->req, &rec, 1, on_waiter) != 0) {
        failed++;
        active--;
    }
}

static void bench_waiters(int nwaiters, double secs)
{
    static waiter_t ws[WAITERS_MAX];
    uv_loop_t loop;
    uv_loop_init(&loop);
    log_config_t c = bench_config(CONFIG_DURABILITY_FSYNC);
    if (log_open(&wlog, &loop, &c) != 0)
        exit(1);
    hist_init(&latency);
    completed = failed = 0;
    uint64_t t0 = now_ns();
    waiter_end = t0 + (uint64_t)(secs * 1e9);
    active = nwaiters;
    for (int i = 0; i < nwaiters; i++) {
        ws[i].req.data = &ws[i];
        waiter_append(&ws[i]);
    }
    while (active > 0)
        uv_run(&loop, UV_RUN_ONCE);
    double wall = (double)(now_ns() - t0) / 1e9;
    log_stats_t st;
    log_get_stats(wlog, &st);
    close_log(&loop, wlog);
    printf("| %5d | %9.0f | %7" PRIu64 " | %9.1f | %8.2f | %8.2f | %8.2f | %8.2f |\n", nwaiters,
           (double)completed / wall, st.fsyncs, st.fsyncs ? (double)completed / st.fsyncs : 0,
           st.fsyncs ? (double)st.fsync_ns_total / st.fsyncs / 1e6 : 0,
           (double)st.fsync_ns_max / 1e6, (double)hist_percentile(&latency, 50) / 1e6,
           (double)hist_percentile(&latency, 99) / 1e6);
    if (failed)
        printf("  (%" PRIu64 " appends failed)\n", failed);
    uv_loop_close(&loop);
}

/* ---- 3. Start-up: log_open scans every segment of the slot ---- */

static void bench_open_scan(uint64_t bytes)
{
    uv_loop_t loop;
    log_t *log;
    uv_loop_init(&loop);
    log_config_t c = bench_config(CONFIG_DURABILITY_WRITE);
    c.segment_max_bytes = 64u << 20;
    if (log_open(&log, &loop, &c) != 0)
        exit(1);
    static pool_req_t reqs[1024];
    pool = NULL;
    for (size_t i = 0; i < 1024; i++) {
        reqs[i].next = pool;
        pool = &reqs[i];
    }
    completed = failed = 0;
    uint64_t appended = 0, n = bytes / (RECORD_BYTES + SEGMENT_RECORD_HEADER_SIZE);
    log_record_t rec = {payload, sizeof(payload), 1764000000000ull, SEGMENT_EP_TRACK};
    while (appended < n) {
        while (pool && appended < n) {
            pool_req_t *p = pool;
            if (log_append(log, &p->req, &rec, 1, on_pipelined) != 0)
                break;
            pool = p->next;
            appended++;
        }
        uv_run(&loop, UV_RUN_ONCE);
    }
    while (completed < appended)
        uv_run(&loop, UV_RUN_ONCE);
    log_stats_t st;
    log_get_stats(log, &st);
    close_log(&loop, log);
    uint64_t t0 = now_ns();
    if (log_open(&log, &loop, &c) != 0)
        exit(1);
    double dt = (double)(now_ns() - t0) / 1e9;
    close_log(&loop, log);
    printf("- log_open of a slot with %" PRIu64 " segments, %.0f MB, %" PRIu64
           " records (page cache warm): %.3f s, %.0f MB/s\n",
           st.segments, (double)st.segment_bytes / 1e6, appended, dt,
           (double)st.segment_bytes / 1e6 / dt);
    uv_loop_close(&loop);
}

/* ---- Machine ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median latency of write(300 bytes) + fdatasync on a file in DIR: what one group commit costs. */
static void machine(void)
{
    struct utsname u;
    uname(&u);
    printf("- cores (nproc): %ld\n- kernel: %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), u.sysname,
           u.release);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd),
             "df -T '%.4000s' | tail -1 | awk '{print \"- filesystem: \" $2 \" on \" $1}'",
             base_dir);
    fflush(stdout);
    if (system(cmd) != 0)
        printf("- filesystem: (df failed)\n");
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%.4000s/fsync-probe", base_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    uint64_t lat[FSYNC_PROBES];
    for (int i = 0; i < FSYNC_PROBES; i++) {
        uint64_t t0 = now_ns();
        if (write(fd, payload, sizeof(payload)) != (ssize_t)sizeof(payload) || fdatasync(fd) != 0) {
            perror("fdatasync probe");
            exit(1);
        }
        lat[i] = now_ns() - t0;
    }
    close(fd);
    unlink(path);
    qsort(lat, FSYNC_PROBES, sizeof(lat[0]), cmp_u64);
    printf("- one append + fdatasync: median %.3f ms, min %.3f ms, max %.3f ms (%d probes)\n",
           (double)lat[FSYNC_PROBES / 2] / 1e6, (double)lat[0] / 1e6,
           (double)lat[FSYNC_PROBES - 1] / 1e6, FSYNC_PROBES);
}

int main(int argc, char **argv)
{
    const char *parent = "build";
    double secs = 3;
    int opt;
    while ((opt = getopt(argc, argv, "d:t:")) != -1) {
        if (opt == 'd')
            parent = optarg;
        else if (opt == 't')
            secs = atof(optarg);
        else {
            fprintf(stderr, "usage: %s [-d DIR] [-t SECONDS]\n", argv[0]);
            return 2;
        }
    }
    snprintf(base_dir, sizeof(base_dir), "%s/log-bench.XXXXXX", parent);
    if (mkdtemp(base_dir) == NULL) {
        perror(base_dir);
        return 1;
    }
    msg_set_level(CONFIG_LOG_WARN);
    make_payload();

    printf("## Machine\n\n");
    machine();
    printf("\n## Throughput, %d-byte records, one record per append, queue kept full (%.0f s)\n\n",
           RECORD_BYTES, secs);
    printf("| mode   |  records/s |     MB/s | loop cores | disk cores | recs/loop-cpu-s | "
           "recs/cpu-s |\n");
    printf("|--------|-----------:|---------:|-----------:|-----------:|--------------:|-----------"
           "---:|\n");
    bench_mode("write", CONFIG_DURABILITY_WRITE, secs);
    bench_mode("none", CONFIG_DURABILITY_NONE, secs);
    bench_mode("fsync", CONFIG_DURABILITY_FSYNC, secs);

    printf("\n## fsync mode, N waiters each appending again from its callback (%.0f s)\n\n", secs);
    printf("| waiters | records/s |  fsyncs | recs/fsync | fsync ms | fsync max | ack p50 ms | ack "
           "p99 ms |\n");
    printf("|------:|----------:|--------:|----------:|---------:|---------:|---------:|---------:|"
           "\n");
    int counts[] = {1, 64, 1024};
    for (int i = 0; i < 3; i++)
        bench_waiters(counts[i], secs);

    printf("\n## Start-up scan (every closed segment is read whole)\n\n");
    bench_open_scan(512u << 20);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", base_dir);
    return 0;
}

/*
 * Tests of the log writer (log.c) on real files in the test's directory, each with its own uv
 * loop: what is appended reads back whole and in order, group commit, rolling, retention, queue
 * bounds, slots, fsync mode's zero-filled space ahead of the data, start-up recovery of damaged
 * and zero-padded tails, and (through the LD_PRELOAD fault shim,
 * tests/fault/fault_shim.c) fsync and write failures.
 */
#include "test.h"

#include "trackd/log.h"
#include "trackd/segment.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXW 4096

/* One append and what its callback saw. */
typedef struct {
    log_append_t req;
    int done, status, order;
} waiter_t;

static int done_count, done_order;

static void on_done(log_append_t *req, int status)
{
    waiter_t *w = req->data;
    CHECK(!w->done);
    w->done = 1;
    w->status = status;
    w->order = done_order++;
    done_count++;
}

static int closed;

static void on_closed(void *arg)
{
    closed = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run the loop until *flag >= want, or fail after `ms`. */
static void run_until(uv_loop_t *loop, int *flag, int want, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (*flag < want) {
        CHECK(now_ms() < end);
        uv_run(loop, UV_RUN_NOWAIT);
        if (*flag < want)
            usleep(200);
    }
}

static void sleep_loop(uv_loop_t *loop, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static log_config_t test_config(void)
{
    log_config_t c = {
        .data_dir = test_tmpdir(),
        .slot = 1,
        .durability = CONFIG_DURABILITY_FSYNC,
        .segment_max_bytes = 128u << 20,
        .segment_max_age_ms = 3600 * 1000,
        .queue_max_bytes = 64u << 20,
        .flush_interval_ms = 100,
        .inline_max_bytes = 64u << 10, /* as log_config_from sets it (used in write mode) */
        /* Never slow here (valgrind makes some writes take several ms): a test sets its own. */
        .inline_slow_ns = 3600 * 1000000000ull,
    };
    return c;
}

static void close_log(uv_loop_t *loop, log_t *log)
{
    closed = 0;
    log_close(log, on_closed, NULL);
    run_until(loop, &closed, 1, 5000);
}

static void make_payload(char *buf, size_t size, int i)
{
    snprintf(buf, size, "{\"event\":\"e%d\",\"properties\":{\"n\":%d}}", i, i);
}

static int append_one(log_t *log, waiter_t *w, int i, uint8_t ep)
{
    char p[128];
    make_payload(p, sizeof(p), i);
    log_record_t r = {p, strlen(p), 1700000000000ull + (uint64_t)i, ep};
    memset(w, 0, sizeof(*w));
    w->req.data = w;
    return log_append(log, &w->req, &r, 1, on_done);
}

static void slot_dir(char *out, size_t size, int slot)
{
    snprintf(out, size, "%s/w%03d", test_tmpdir(), slot);
}

/* Segment sequence numbers present in a slot, sorted; returns how many. */
static int list_segs(int slot, uint64_t *seqs, int max)
{
    char dir[PATH_MAX];
    slot_dir(dir, sizeof(dir), slot);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t s;
        if (segment_parse_name(de->d_name, &s) == 0) {
            CHECK(n < max);
            seqs[n++] = s;
        }
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && seqs[j - 1] > seqs[j]; j--) {
            uint64_t t = seqs[j];
            seqs[j] = seqs[j - 1];
            seqs[j - 1] = t;
        }
    return n;
}

static void seg_path(char *out, size_t size, int slot, uint64_t seq)
{
    char dir[PATH_MAX], name[SEGMENT_NAME_SIZE];
    slot_dir(dir, sizeof(dir), slot);
    segment_name(name, sizeof(name), seq);
    snprintf(out, size, "%.4000s/%s", dir, name);
}

/* Checks records against make_payload(i) for consecutive i. */
typedef struct {
    int next;
    uint8_t ep;
} expect_t;

static int expect_cb(const segment_record_t *rec, void *arg)
{
    expect_t *x = arg;
    char want[128];
    make_payload(want, sizeof(want), x->next);
    CHECK_EQ_INT(rec->len, strlen(want));
    CHECK(memcmp(rec->payload, want, rec->len) == 0);
    CHECK_EQ_INT(rec->time_ms, 1700000000000ull + (uint64_t)x->next);
    if (x->ep)
        CHECK_EQ_INT(rec->endpoint, x->ep);
    x->next++;
    return 0;
}

/* Scan every segment of a slot in order, expecting records 0..n-1, all clean. */
static int scan_slot(int slot, int *nsegs)
{
    uint64_t seqs[MAXW];
    int n = list_segs(slot, seqs, MAXW);
    expect_t x = {0, 0};
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        segment_scan_t sc;
        seg_path(path, sizeof(path), slot, seqs[i]);
        CHECK_EQ_INT(segment_scan_path(path, expect_cb, &x, &sc), 0);
        CHECK(sc.header_ok);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        CHECK_EQ_INT(sc.header.seq, seqs[i]);
        CHECK_EQ_INT(sc.header.slot, slot);
    }
    if (nsegs)
        *nsegs = n;
    return x.next;
}

TEST(log_appended_records_read_back_in_order_with_times_and_endpoints)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[300];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 200; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_IMPORT), 0);
    /* Several records in one append. */
    char p[100][128];
    log_record_t recs[100];
    for (int i = 0; i < 100; i++) {
        make_payload(p[i], sizeof(p[i]), 200 + i);
        recs[i] = (log_record_t){p[i], strlen(p[i]), 1700000000000ull + 200 + (uint64_t)i,
                                 SEGMENT_EP_IMPORT};
    }
    memset(&w[200], 0, sizeof(w[200]));
    w[200].req.data = &w[200];
    CHECK_EQ_INT(log_append(log, &w[200].req, recs, 100, on_done), 0);
    run_until(&loop, &done_count, 201, 5000);
    for (int i = 0; i <= 200; i++) {
        CHECK_EQ_INT(w[i].status, 0);
        CHECK_EQ_INT(w[i].order, i);
    }
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.records_appended, 300);
    CHECK_EQ_INT(st.queue_bytes, 0);
    CHECK_EQ_INT(st.slot, 1);
    CHECK(st.writable);
    close_log(&loop, log);
    int nsegs;
    expect_t x = {0, SEGMENT_EP_IMPORT};
    char path[PATH_MAX];
    segment_scan_t sc;
    seg_path(path, sizeof(path), 1, 1);
    CHECK_EQ_INT(segment_scan_path(path, expect_cb, &x, &sc), 0);
    CHECK_EQ_INT(x.next, 300);
    CHECK_EQ_INT(scan_slot(1, &nsegs), 300);
    CHECK_EQ_INT(nsegs, 1);
    uv_loop_close(&loop);
}

TEST(log_group_commit_shares_fsyncs_among_64_waiters)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[64];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 64; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 64, 5000);
    log_stats_t st;
    log_get_stats(log, &st);
    fprintf(stderr, "  64 appends: %" PRIu64 " batches, %" PRIu64 " fsyncs\n", st.batches,
            st.fsyncs);
    CHECK(st.fsyncs >= 1);
    CHECK(st.fsyncs <= 8);
    CHECK(st.batches <= 8);
    for (int i = 0; i < 64; i++)
        CHECK_EQ_INT(w[i].status, 0);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 64);
    uv_loop_close(&loop);
}

TEST(log_acknowledges_only_after_the_record_is_on_disk_in_fsync_mode)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[50];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 50; i++) {
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, i + 1, 5000);
        /* Readable by another process the moment it is acknowledged. */
        CHECK_EQ_INT(scan_slot(1, NULL), i + 1);
    }
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK(st.fsyncs >= 50);
    close_log(&loop, log);
    uv_loop_close(&loop);
}

TEST(log_rolls_segments_by_size)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[200];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 1000;
    c.durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 200; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 200, 5000);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 200);
    uint64_t seqs[MAXW];
    CHECK_EQ_INT(list_segs(1, seqs, MAXW), nsegs);
    /* ~60-byte records: 15 fit in 1000 bytes; every segment stays within the limit. */
    CHECK(nsegs >= 200 / 16);
    for (int i = 0; i < nsegs; i++) {
        char path[PATH_MAX];
        struct stat sb;
        seg_path(path, sizeof(path), 1, seqs[i]);
        CHECK_EQ_INT(stat(path, &sb), 0);
        CHECK(sb.st_size <= 1000);
        CHECK_EQ_INT(seqs[i], (uint64_t)i + 1);
        if (i + 1 < nsegs)
            CHECK(sb.st_size > 1000 - 80);
    }
    uv_loop_close(&loop);
}

TEST(log_rolls_segments_by_age)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[3];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_age_ms = 300;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    CHECK_EQ_INT(append_one(log, &w[1], 1, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 2, 5000);
    sleep_loop(&loop, 400);
    CHECK_EQ_INT(append_one(log, &w[2], 2, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 3, 5000);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 3);
    CHECK_EQ_INT(nsegs, 2);
    segment_scan_t sc;
    char path[PATH_MAX];
    seg_path(path, sizeof(path), 1, 1);
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.records, 2);
    uv_loop_close(&loop);
}

TEST(log_idle_segment_rolls_by_age_without_new_records)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[1];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_age_ms = 200;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    /* The writer checks the age at least once a second. */
    uint64_t seqs[4];
    uint64_t end = now_ms() + 3000;
    while (list_segs(1, seqs, 4) < 2) {
        CHECK(now_ms() < end);
        sleep_loop(&loop, 50);
    }
    close_log(&loop, log);
    /* The empty new segment does not roll again. */
    CHECK_EQ_INT(list_segs(1, seqs, 4), 2);
    CHECK_EQ_INT(scan_slot(1, NULL), 1);
    uv_loop_close(&loop);
}

TEST(log_append_returns_enobufs_when_the_queue_is_full)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[100];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.queue_max_bytes = 1000;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    int accepted = 0, r = 0;
    size_t bytes = 0;
    /* The queue drains only when the loop runs the callbacks, so this is deterministic. */
    while ((r = append_one(log, &w[accepted], accepted, SEGMENT_EP_TRACK)) == 0) {
        char p[128];
        make_payload(p, sizeof(p), accepted);
        bytes += SEGMENT_RECORD_HEADER_SIZE + strlen(p);
        accepted++;
    }
    CHECK_EQ_INT(r, -ENOBUFS);
    CHECK(bytes <= 1000 && bytes > 1000 - 80);
    CHECK(!log_can_accept(log, 80));
    CHECK(log_can_accept(log, 1000 - bytes));
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.queue_bytes, bytes);
    CHECK_EQ_INT(st.queue_records, accepted);
    run_until(&loop, &done_count, accepted, 5000);
    CHECK(log_can_accept(log, 1000));
    CHECK_EQ_INT(append_one(log, &w[accepted], accepted, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, accepted + 1, 5000);
    /* A single append larger than the whole queue can never be accepted. */
    char big[1200];
    memset(big, 'x', sizeof(big));
    log_record_t rec = {big, sizeof(big), 1, SEGMENT_EP_TRACK};
    CHECK_EQ_INT(log_append(log, &w[99].req, &rec, 1, on_done), -ENOBUFS);
    CHECK_EQ_INT(log_append(log, &w[99].req, &rec, 0, on_done), -EINVAL);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), accepted + 1);
    uv_loop_close(&loop);
}

TEST(log_durability_none_acks_at_once_and_flushes_within_the_interval)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[10];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.durability = CONFIG_DURABILITY_NONE;
    c.flush_interval_ms = 100;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++)
            CHECK_EQ_INT(append_one(log, &w[round * 3 + i], round * 3 + i, SEGMENT_EP_TRACK), 0);
        uint64_t t0 = now_ms();
        run_until(&loop, &done_count, (round + 1) * 3, 1000);
        /* Acknowledged before the next flush could have written it. */
        CHECK(now_ms() - t0 < 50);
        while (scan_slot(1, NULL) < (round + 1) * 3) {
            CHECK(now_ms() - t0 <= 100 + 100);
            usleep(2000);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.fsyncs, 0);
    /* Each round's records went out together, when the interval was up. */
    CHECK(st.batches <= 6);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 9);
    uv_loop_close(&loop);
}

TEST(log_close_flushes_everything_and_runs_all_callbacks)
{
    for (int mode = 0; mode < 3; mode++) {
        uv_loop_t loop;
        log_t *log;
        static waiter_t w[101];
        uv_loop_init(&loop);
        log_config_t c = test_config();
        c.durability = (config_durability_t)mode;
        c.flush_interval_ms = 10000;
        char sub[PATH_MAX];
        snprintf(sub, sizeof(sub), "%s/m%d", test_tmpdir(), mode);
        c.data_dir = sub;
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        done_count = done_order = 0;
        for (int i = 0; i < 100; i++)
            CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        closed = 0;
        log_close(log, on_closed, NULL);
        CHECK_EQ_INT(append_one(log, &w[100], 0, SEGMENT_EP_TRACK), -ESHUTDOWN);
        run_until(&loop, &closed, 1, 5000);
        CHECK_EQ_INT(done_count, 100);
        /* The slot is released: another log takes it again. */
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        log_stats_t st;
        log_get_stats(log, &st);
        CHECK_EQ_INT(st.slot, 1);
        close_log(&loop, log);
        char path[PATH_MAX];
        segment_scan_t sc;
        CHECK(strlen(sub) < sizeof(path) - 40);
        snprintf(path, sizeof(path), "%.4000s/w001/00000000000000000001.seg", sub);
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        CHECK_EQ_INT(sc.records, 100);
        CHECK_EQ_INT(uv_loop_close(&loop), 0);
    }
}

/*
 * The appends made between two loop iterations reach the writer together, when the loop is
 * about to block: one batch, one wake-up of the writer (not one per append).
 */
TEST(log_appends_of_one_loop_iteration_are_written_as_one_batch)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[100];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    /* The loop has not run: nothing was handed over, whatever the writer does meanwhile. */
    usleep(50 * 1000);
    char path[PATH_MAX];
    struct stat sb;
    seg_path(path, sizeof(path), 1, 1);
    CHECK_EQ_INT(stat(path, &sb), 0);
    CHECK_EQ_INT(sb.st_size, SEGMENT_HEADER_SIZE);
    run_until(&loop, &done_count, 100, 5000);
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.batches, 1);
    CHECK_EQ_INT(st.records_appended, 100);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ_INT(w[i].status, 0);
        CHECK_EQ_INT(w[i].order, i);
    }
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 100);
    uv_loop_close(&loop);
}

/* Appends of 4 records each, segments that hold about two of them: no append is split. */
TEST(log_an_append_of_several_records_never_straddles_two_segments)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[30];
    static char p[120][128];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.durability = CONFIG_DURABILITY_WRITE;
    c.segment_max_bytes = 560;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int a = 0; a < 30; a++) {
        log_record_t recs[4];
        for (int j = 0; j < 4; j++) {
            int i = a * 4 + j;
            make_payload(p[i], sizeof(p[i]), i);
            recs[j] = (log_record_t){p[i], strlen(p[i]), 1700000000000ull + (uint64_t)i,
                                     SEGMENT_EP_TRACK};
        }
        memset(&w[a], 0, sizeof(w[a]));
        w[a].req.data = &w[a];
        CHECK_EQ_INT(log_append(log, &w[a].req, recs, 4, on_done), 0);
    }
    run_until(&loop, &done_count, 30, 5000);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 120);
    CHECK(nsegs >= 10);
    uint64_t seqs[MAXW];
    CHECK_EQ_INT(list_segs(1, seqs, MAXW), nsegs);
    for (int i = 0; i < nsegs; i++) {
        char path[PATH_MAX];
        segment_scan_t sc;
        seg_path(path, sizeof(path), 1, seqs[i]);
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        CHECK(sc.records > 0);
        CHECK_EQ_INT(sc.records % 4, 0);
        CHECK(sc.end <= 560);
    }
    uv_loop_close(&loop);
}

/* A callback that appends again (a pipelined request, say): order and outcomes hold. */
static log_t *chain_log;
static int chain_next, chain_max;
static waiter_t chain_w[2];

static void on_chain_done(log_append_t *req, int status)
{
    waiter_t *w = req->data;
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(w->order, done_order);
    done_order++;
    done_count++;
    if (chain_next < chain_max) {
        char p[128];
        int i = chain_next++;
        make_payload(p, sizeof(p), i);
        log_record_t r = {p, strlen(p), 1700000000000ull + (uint64_t)i, SEGMENT_EP_TRACK};
        w->order = i;
        CHECK_EQ_INT(log_append(chain_log, &w->req, &r, 1, on_chain_done), 0);
    }
}

TEST(log_callbacks_may_append_again_in_every_mode)
{
    /* Each mode, and write mode a second time with the writer thread doing every write. */
    for (int pass = 0; pass < 4; pass++) {
        int mode = pass < 3 ? pass : CONFIG_DURABILITY_WRITE;
        uv_loop_t loop;
        uv_loop_init(&loop);
        log_config_t c = test_config();
        char sub[PATH_MAX];
        snprintf(sub, sizeof(sub), "%s/m%d", test_tmpdir(), pass);
        c.data_dir = sub;
        c.durability = (config_durability_t)mode;
        if (pass == 3)
            c.inline_max_bytes = 0;
        c.flush_interval_ms = 10;
        CHECK_EQ_INT(log_open(&chain_log, &loop, &c), 0);
        done_count = done_order = 0;
        chain_max = mode == CONFIG_DURABILITY_FSYNC ? 200 : 2000;
        chain_next = 0;
        /* Two chains interleaved, as two connections would. */
        for (int k = 0; k < 2; k++) {
            char p[128];
            int i = chain_next++;
            make_payload(p, sizeof(p), i);
            log_record_t r = {p, strlen(p), 1700000000000ull + (uint64_t)i, SEGMENT_EP_TRACK};
            memset(&chain_w[k], 0, sizeof(chain_w[k]));
            chain_w[k].req.data = &chain_w[k];
            chain_w[k].order = i;
            CHECK_EQ_INT(log_append(chain_log, &chain_w[k].req, &r, 1, on_chain_done), 0);
        }
        run_until(&loop, &done_count, chain_max, 20000);
        /* Durability none acknowledges before writing: the queue empties a flush later. */
        log_stats_t st;
        uint64_t end = now_ms() + 5000;
        for (log_get_stats(chain_log, &st); st.queue_records > 0; log_get_stats(chain_log, &st)) {
            CHECK(now_ms() < end);
            sleep_loop(&loop, 5);
        }
        CHECK_EQ_INT(st.records_appended, chain_max);
        /* The loop writes batches itself in write mode only, and only where allowed. */
        if (pass == CONFIG_DURABILITY_WRITE)
            CHECK(st.inline_batches > 0);
        else
            CHECK_EQ_INT(st.inline_batches, 0);
        closed = 0;
        log_close(chain_log, on_closed, NULL);
        run_until(&loop, &closed, 1, 5000);
        char path[PATH_MAX];
        segment_scan_t sc;
        expect_t x = {0, SEGMENT_EP_TRACK};
        CHECK(strlen(sub) < sizeof(path) - 40);
        snprintf(path, sizeof(path), "%.4000s/w001/00000000000000000001.seg", sub);
        CHECK_EQ_INT(segment_scan_path(path, expect_cb, &x, &sc), 0);
        CHECK_EQ_INT(x.next, chain_max);
        CHECK_EQ_INT(uv_loop_close(&loop), 0);
    }
}

/* Open a write-mode log with `c` and let the writer thread's first tick pass: it is idle after. */
static void open_write_log_idle(uv_loop_t *loop, log_t **log, log_config_t *c)
{
    c->durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(log, loop, c), 0);
    sleep_loop(loop, 20);
    done_count = done_order = 0;
}

/*
 * Write mode: a small iteration's appends are written by the loop thread itself; a large append
 * goes to the writer thread at once, and what follows it in the same iteration too (the writer
 * is busy, or has buffers to give back first). Callbacks and records stay in append order.
 */
TEST(log_write_mode_loop_writes_small_batches_itself_in_append_order)
{
    enum { SMALL = 10, BIG = 6000 };
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[3 * SMALL + 1];
    static char p[BIG][64];
    static log_record_t recs[BIG];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    open_write_log_idle(&loop, &log, &c);
    for (int i = 0; i < SMALL; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, SMALL, 5000);
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.batches, 1);
    CHECK_EQ_INT(st.inline_batches, 1);
    CHECK_EQ_INT(st.records_appended, SMALL);

    /* Small appends, one of BIG records (over 256 KiB: handed over at once), small ones. */
    for (int i = SMALL; i < 2 * SMALL; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    for (int k = 0; k < BIG; k++) {
        int i = 2 * SMALL + k;
        make_payload(p[k], sizeof(p[k]), i);
        recs[k] =
            (log_record_t){p[k], strlen(p[k]), 1700000000000ull + (uint64_t)i, SEGMENT_EP_TRACK};
    }
    waiter_t *big = &w[3 * SMALL];
    memset(big, 0, sizeof(*big));
    big->req.data = big;
    CHECK_EQ_INT(log_append(log, &big->req, recs, BIG, on_done), 0);
    for (int i = 2 * SMALL; i < 3 * SMALL; i++)
        CHECK_EQ_INT(append_one(log, &w[i], BIG + i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 3 * SMALL + 1, 5000);
    for (int i = 0; i < 3 * SMALL; i++)
        CHECK_EQ_INT(w[i].status, 0);
    CHECK_EQ_INT(big->status, 0);
    /* Callbacks in append order: the first small ones, the big one, the last small ones. */
    for (int i = 0; i < 2 * SMALL; i++)
        CHECK_EQ_INT(w[i].order, i);
    CHECK_EQ_INT(big->order, 2 * SMALL);
    for (int i = 2 * SMALL; i < 3 * SMALL; i++)
        CHECK_EQ_INT(w[i].order, i + 1);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.records_appended, 3 * SMALL + BIG);
    CHECK(st.batches > st.inline_batches); /* the big one went to the writer thread */

    /* And once the writer is idle again, the loop writes the next small iteration. */
    sleep_loop(&loop, 20);
    uint64_t inline_before = st.inline_batches;
    CHECK_EQ_INT(append_one(log, &w[0], 3 * SMALL + BIG, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 3 * SMALL + 2, 5000);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, inline_before + 1);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 3 * SMALL + BIG + 1);
    uv_loop_close(&loop);
}

/*
 * log_append never runs a callback, whatever the inline limit: a 256 KiB append that hands the
 * open buffer over at once leaves its writing to the writer thread (a callback run inside
 * log_append would resume a handler inside another one).
 */
TEST(log_append_never_runs_callbacks_even_when_it_hands_over_at_once)
{
    enum { BIG = 6000 };
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[3];
    static char p[BIG][64];
    static log_record_t recs[BIG];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.inline_max_bytes = 4u << 20; /* larger than any buffer here */
    open_write_log_idle(&loop, &log, &c);
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    for (int k = 0; k < BIG; k++) {
        make_payload(p[k], sizeof(p[k]), 1 + k);
        recs[k] = (log_record_t){p[k], strlen(p[k]), 1700000000000ull + 1 + (uint64_t)k,
                                 SEGMENT_EP_TRACK};
    }
    memset(&w[1], 0, sizeof(w[1]));
    w[1].req.data = &w[1];
    CHECK_EQ_INT(log_append(log, &w[1].req, recs, BIG, on_done), 0);
    CHECK_EQ_INT(done_count, 0);
    CHECK_EQ_INT(append_one(log, &w[2], 1 + BIG, SEGMENT_EP_TRACK), 0);
    CHECK_EQ_INT(done_count, 0);
    run_until(&loop, &done_count, 3, 5000);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(w[i].status, 0);
        CHECK_EQ_INT(w[i].order, i);
    }
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), BIG + 2);
    uv_loop_close(&loop);
}

TEST(log_two_logs_on_one_data_dir_take_different_slots)
{
    uv_loop_t loop;
    log_t *a, *b, *c3;
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.slot = 2;
    CHECK_EQ_INT(log_open(&a, &loop, &c), 0);
    CHECK_EQ_INT(log_open(&b, &loop, &c), 0);
    CHECK_EQ_INT(log_open(&c3, &loop, &c), 0);
    log_stats_t sa, sb, sc;
    log_get_stats(a, &sa);
    log_get_stats(b, &sb);
    log_get_stats(c3, &sc);
    /* The preferred slot first, then the lowest free ones. */
    CHECK_EQ_INT(sa.slot, 2);
    CHECK_EQ_INT(sb.slot, 1);
    CHECK_EQ_INT(sc.slot, 3);
    static waiter_t w[3];
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(a, &w[0], 0, SEGMENT_EP_TRACK), 0);
    CHECK_EQ_INT(append_one(b, &w[1], 0, SEGMENT_EP_TRACK), 0);
    CHECK_EQ_INT(append_one(c3, &w[2], 0, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 3, 5000);
    close_log(&loop, a);
    close_log(&loop, b);
    close_log(&loop, c3);
    for (int s = 1; s <= 3; s++)
        CHECK_EQ_INT(scan_slot(s, NULL), 1);
    uv_loop_close(&loop);
}

TEST(log_retention_by_size_deletes_only_whole_closed_segments)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[300];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 1000;
    c.retention_max_bytes = 3500;
    c.durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 300; i++) {
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        if (i % 10 == 9)
            run_until(&loop, &done_count, i + 1, 5000);
    }
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK(st.segment_bytes <= 3500);
    CHECK(st.segments >= 3);
    close_log(&loop, log);
    uint64_t seqs[MAXW];
    int n = list_segs(1, seqs, MAXW);
    CHECK(n >= 3 && n <= 4);
    /* The newest segments remain, contiguous, each whole; the first record kept starts one. */
    uint64_t total = 0;
    expect_t x = {-1, 0};
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        segment_scan_t sc;
        CHECK_EQ_INT(seqs[i], seqs[0] + (uint64_t)i);
        seg_path(path, sizeof(path), 1, seqs[i]);
        if (i == 0) {
            CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
            CHECK(sc.records > 0);
            /* Find the first record's number from its payload. */
            int first = -1;
            FILE *f = fopen(path, "rb");
            CHECK(f != NULL);
            char buf[256];
            CHECK(fread(buf, 1, sizeof(buf), f) > 80);
            fclose(f);
            CHECK(sscanf(buf + SEGMENT_HEADER_SIZE + SEGMENT_RECORD_HEADER_SIZE,
                         "{\"event\":\"e%d\"", &first) == 1);
            x.next = first;
        }
        CHECK_EQ_INT(segment_scan_path(path, expect_cb, &x, &sc), 0);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        total += sc.file_size;
    }
    CHECK_EQ_INT(x.next, 300);
    CHECK(total <= 3500);
    CHECK(seqs[0] > 1);
    uv_loop_close(&loop);
}

TEST(log_retention_by_age_deletes_closed_segments_older_than_the_limit)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[3];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 100; /* one record per segment */
    c.retention_max_age_ms = 300;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    CHECK_EQ_INT(append_one(log, &w[1], 1, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 2, 5000);
    uint64_t seqs[8];
    CHECK_EQ_INT(list_segs(1, seqs, 8), 2);
    /* Segment 1 closed when segment 2 began; 300 ms later plus a writer tick it is gone. */
    uint64_t end = now_ms() + 3000;
    while (list_segs(1, seqs, 8) != 1) {
        CHECK(now_ms() < end);
        sleep_loop(&loop, 50);
    }
    CHECK_EQ_INT(seqs[0], 2);
    close_log(&loop, log);
    uv_loop_close(&loop);
}

TEST(log_keeps_every_segment_without_retention)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[100];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 200;
    c.durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 100, 5000);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 100);
    CHECK(nsegs >= 100 / 3);
    uv_loop_close(&loop);
}

/* ---- fsync mode: zero-filled space ahead of the data ---- */

static uint64_t file_size(const char *path)
{
    struct stat sb;
    CHECK_EQ_INT(stat(path, &sb), 0);
    return (uint64_t)sb.st_size;
}

/* End of data after records 0..n-1 of make_payload in one segment. */
static uint64_t data_end_of(int from, int n)
{
    uint64_t off = SEGMENT_HEADER_SIZE;
    for (int i = from; i < n; i++) {
        char p[128];
        make_payload(p, sizeof(p), i);
        off += SEGMENT_RECORD_HEADER_SIZE + strlen(p);
    }
    return off;
}

/* 1 if the bytes [from, to) of the file are all zero. */
static int zeros_between(const char *path, uint64_t from, uint64_t to)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    static uint8_t buf[1 << 16];
    int zero = 1;
    while (from < to && zero) {
        size_t want = to - from < sizeof(buf) ? (size_t)(to - from) : sizeof(buf);
        ssize_t n = pread(fd, buf, want, (off_t)from);
        CHECK(n > 0);
        for (ssize_t i = 0; i < n; i++)
            zero &= buf[i] == 0;
        from += (uint64_t)n;
    }
    close(fd);
    return zero;
}

/* Wait (running the loop) until the segment file is larger than `than`; returns its size. */
static uint64_t wait_size_above(uv_loop_t *loop, const char *path, uint64_t than, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (file_size(path) <= than && now_ms() < end)
        sleep_loop(loop, 5);
    return file_size(path);
}

TEST(log_fsync_mode_keeps_zeroed_space_ahead_of_the_data_within_the_segment_limit)
{
    static const uint64_t limits[] = {128u << 20, 100000};
    for (size_t k = 0; k < 2; k++) {
        uv_loop_t loop;
        log_t *log;
        static waiter_t w[64];
        uv_loop_init(&loop);
        log_config_t c = test_config();
        c.segment_max_bytes = limits[k];
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        done_count = done_order = 0;
        for (int i = 0; i < 64; i++)
            CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, 64, 5000);
        char path[PATH_MAX];
        seg_path(path, sizeof(path), 1, 1);
        uint64_t end = data_end_of(0, 64);
        /* Zero-filling starts after the batch, with no further append. */
        CHECK(wait_size_above(&loop, path, end, 3000) > end);
        /* The next batch waits for it to finish: then there are zeros past the data (at least
           the 512 KiB low-water mark), never past the segment limit. */
        static waiter_t more[2];
        CHECK_EQ_INT(append_one(log, &more[0], 64, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, 65, 5000);
        CHECK_EQ_INT(more[0].status, 0);
        end = data_end_of(0, 65);
        uint64_t size = file_size(path);
        CHECK(size <= c.segment_max_bytes);
        if (c.segment_max_bytes < (1u << 20))
            CHECK_EQ_INT(size, c.segment_max_bytes);
        else
            CHECK(size - end >= (512u << 10));
        CHECK(zeros_between(path, end, size));
        /* The live segment reads as clean, ending at its data; the stats count data only. */
        segment_scan_t sc;
        expect_t x = {0, 0};
        CHECK_EQ_INT(segment_scan_path(path, expect_cb, &x, &sc), 0);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        CHECK_EQ_INT(sc.end, end);
        CHECK_EQ_INT(sc.records, 65);
        CHECK_EQ_INT(sc.file_size, size);
        log_stats_t st;
        log_get_stats(log, &st);
        CHECK_EQ_INT(st.segment_bytes, end);
        /* Records are written over the zeros: the file does not grow. */
        CHECK_EQ_INT(append_one(log, &more[1], 65, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, 66, 5000);
        CHECK_EQ_INT(more[1].status, 0);
        CHECK_EQ_INT(file_size(path), size);
        CHECK_EQ_INT(scan_slot(1, NULL), 66);
        /* A clean stop cuts the zeros off. */
        close_log(&loop, log);
        CHECK_EQ_INT(file_size(path), data_end_of(0, 66));
        uv_loop_close(&loop);
        CHECK_EQ_INT(unlink(path), 0);
    }
}

/* Bytes of a file in the page cache (mincore over a mapping of it). */
static uint64_t resident_bytes(const char *path)
{
    long page = sysconf(_SC_PAGESIZE);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct stat sb;
    CHECK_EQ_INT(fstat(fd, &sb), 0);
    size_t pages = ((size_t)sb.st_size + (size_t)page - 1) / (size_t)page, n = 0;
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED);
    unsigned char *vec = malloc(pages);
    CHECK(vec != NULL);
    CHECK_EQ_INT(mincore(map, (size_t)sb.st_size, vec), 0);
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1;
    free(vec);
    munmap(map, (size_t)sb.st_size);
    close(fd);
    return (uint64_t)n * (uint64_t)page;
}

/*
 * 16 MiB of records in 1 MiB appends, the loop idle a little between them (the disk catches up),
 * with cache_keep_bytes `keep`: returns how much of the live segment is in the page cache.
 */
static uint64_t cached_after_16mib(config_durability_t mode, uint64_t keep)
{
    enum { REC = 4000, PER = 256, ROUNDS = 16 };
    static char payload[REC];
    static log_record_t recs[PER];
    static waiter_t w[ROUNDS];
    char sub[PATH_MAX], path[PATH_MAX];
    uv_loop_t loop;
    log_t *log;

    snprintf(sub, sizeof(sub), "%s/cache-%d-%d", test_tmpdir(), (int)mode, (int)(keep >> 10));
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.data_dir = sub;
    c.durability = mode;
    c.writebehind_bytes = 256u << 10;
    c.cache_keep_bytes = keep;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    memset(payload, 'x', sizeof(payload));
    for (int i = 0; i < PER; i++)
        recs[i] = (log_record_t){payload, REC, 1700000000000ull, SEGMENT_EP_TRACK};
    done_count = done_order = 0;
    for (int r = 0; r < ROUNDS; r++) {
        memset(&w[r], 0, sizeof(w[r]));
        w[r].req.data = &w[r];
        CHECK_EQ_INT(log_append(log, &w[r].req, recs, PER, on_done), 0);
        run_until(&loop, &done_count, r + 1, 5000);
        CHECK_EQ_INT(w[r].status, 0);
        sleep_loop(&loop, 30);
    }
    snprintf(path, sizeof(path), "%.4000s/w001/00000000000000000001.seg", sub);
    uint64_t cached = resident_bytes(path);
    close_log(&loop, log);
    /* A clean stop leaves none of the segment cached, when drop-behind is on. */
    if (keep)
        CHECK(resident_bytes(path) < (256u << 10));
    uv_loop_close(&loop);
    return cached;
}

/*
 * With cache_keep_bytes, the writer drops what is on disk from the page cache but the newest
 * `keep` bytes and what it wrote since, in every mode; without, the kernel keeps it all.
 */
TEST(log_drops_written_data_from_the_page_cache_but_the_newest)
{
    for (int mode = 0; mode < 3; mode++) {
        /* Also the last write-behind step, and in none mode a whole flush's batch. */
        CHECK(cached_after_16mib((config_durability_t)mode, 1u << 20) <= (6u << 20));
    }
    /* The control: left to the kernel (plenty of free memory here), nearly all of it stays. */
    CHECK(cached_after_16mib(CONFIG_DURABILITY_WRITE, 0) >= (12u << 20));
}

TEST(log_write_and_none_modes_do_not_preallocate)
{
    static const config_durability_t modes[] = {CONFIG_DURABILITY_WRITE, CONFIG_DURABILITY_NONE};
    for (size_t k = 0; k < 2; k++) {
        uv_loop_t loop;
        log_t *log;
        static waiter_t w[64];
        uv_loop_init(&loop);
        log_config_t c = test_config();
        c.durability = modes[k];
        c.flush_interval_ms = 10;
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        done_count = done_order = 0;
        char path[PATH_MAX];
        seg_path(path, sizeof(path), 1, 1);
        uint64_t end = data_end_of(0, 64);
        for (int i = 0; i < 64; i++)
            CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, 64, 5000);
        /* Written (none mode: within its flush interval), then nothing more. */
        uint64_t deadline = now_ms() + 3000;
        while (file_size(path) < end && now_ms() < deadline)
            sleep_loop(&loop, 5);
        sleep_loop(&loop, 300);
        CHECK_EQ_INT(file_size(path), end);
        close_log(&loop, log);
        CHECK_EQ_INT(file_size(path), end);
        uv_loop_close(&loop);
        CHECK_EQ_INT(unlink(path), 0);
    }
}

TEST(log_fsync_mode_roll_leaves_the_closed_segment_exactly_at_its_data_end)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[100];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 1500;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    int padded = 0; /* appends that found the current segment zero-filled ahead */
    for (int i = 0; i < 100; i++) {
        uint64_t seqs[MAXW];
        int n = list_segs(1, seqs, MAXW);
        char path[PATH_MAX];
        seg_path(path, sizeof(path), 1, seqs[n - 1]);
        segment_scan_t sc;
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        padded += sc.file_size > sc.end;
        CHECK(sc.file_size <= c.segment_max_bytes);
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, i + 1, 5000);
        CHECK_EQ_INT(w[i].status, 0);
        sleep_loop(&loop, 2); /* let the writer zero-fill between batches */
    }
    /* While the log is open: every closed segment is exactly its data, with no zeros. */
    uint64_t seqs[MAXW];
    int n = list_segs(1, seqs, MAXW);
    CHECK(n >= 4);
    for (int i = 0; i + 1 < n; i++) {
        char path[PATH_MAX];
        segment_scan_t sc;
        seg_path(path, sizeof(path), 1, seqs[i]);
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        CHECK(sc.records >= 1);
        CHECK_EQ_INT(sc.file_size, sc.end);
    }
    fprintf(stderr, "  %d of 100 appends found zeroed space ahead\n", padded);
    CHECK(padded >= 50);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 100);
    uv_loop_close(&loop);
}

/*
 * A file size limit stands in for a full disk: zero-filling fails, the log goes on with plain
 * appends (every record acknowledged, nothing but records in the file).
 */
TEST(log_fsync_mode_appends_plainly_when_zero_filling_fails)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {256u << 10, 256u << 10};
        signal(SIGXFSZ, SIG_IGN);
        CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &rl), 0);
        int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2); /* the warning is expected */
        uv_loop_t loop;
        log_t *log;
        static waiter_t w[40];
        uv_loop_init(&loop);
        log_config_t c = test_config();
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        done_count = done_order = 0;
        char path[PATH_MAX];
        seg_path(path, sizeof(path), 1, 1);
        for (int i = 0; i < 40; i++) {
            CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
            run_until(&loop, &done_count, i + 1, 5000);
            CHECK_EQ_INT(w[i].status, 0);
            sleep_loop(&loop, 2);
            CHECK_EQ_INT(file_size(path), data_end_of(0, i + 1));
        }
        log_stats_t st;
        log_get_stats(log, &st);
        CHECK(st.writable);
        CHECK_EQ_INT(st.write_errors, 0);
        close_log(&loop, log);
        dup2(saved, 2);
        CHECK_EQ_INT(scan_slot(1, NULL), 40);
        uv_loop_close(&loop);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

/* Write `n` records (0..n-1) in a fresh log and close it; returns the record end offsets. */
static void fill_log(int n, size_t *ends)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[64];
    CHECK(n <= 64);
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, n, 5000);
    close_log(&loop, log);
    uv_loop_close(&loop);
    size_t off = SEGMENT_HEADER_SIZE;
    for (int i = 0; i < n; i++) {
        char p[128];
        make_payload(p, sizeof(p), i);
        off += SEGMENT_RECORD_HEADER_SIZE + strlen(p);
        ends[i] = off;
    }
}

static void read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc(*len + 1);
    CHECK(*buf != NULL);
    CHECK(fread(*buf, 1, *len, f) == *len);
    fclose(f);
}

static void write_file(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(buf, 1, len, f) == len);
    fclose(f);
}

/* Reopen the log, append record `next`, close; the slot must then hold records 0..next. */
static void reopen_and_append(int next)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w;
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w, next, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    CHECK_EQ_INT(w.status, 0);
    close_log(&loop, log);
    uv_loop_close(&loop);
}

TEST_T(log_recovery_cuts_a_torn_tail_at_every_offset_of_the_last_three_records, 120)
{
    size_t ends[6];
    char path[PATH_MAX], *orig;
    size_t len;
    fill_log(6, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &orig, &len);
    CHECK_EQ_INT(len, ends[5]);
    /* Silence the recovery messages of ~150 reopenings. */
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    CHECK(saved >= 0 && devnull >= 0);
    for (size_t cut = ends[2]; cut < ends[5]; cut++) {
        int whole = 0;
        while (whole < 6 && ends[whole] <= cut)
            whole++;
        write_file(path, orig, cut);
        dup2(devnull, 2);
        reopen_and_append(whole);
        dup2(saved, 2);
        int nsegs;
        CHECK_EQ_INT(scan_slot(1, &nsegs), whole + 1);
        CHECK_EQ_INT(nsegs, 1);
    }
    close(devnull);
    close(saved);
    free(orig);
}

/* reopen_and_append(next) with stderr captured; returns the messages (malloc'd, NUL-ended). */
static char *reopen_and_append_quoted(int next)
{
    char errpath[PATH_MAX];
    snprintf(errpath, sizeof(errpath), "%s/stderr.txt", test_tmpdir());
    int saved = dup(2), efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && efd >= 0);
    fflush(stderr);
    dup2(efd, 2);
    close(efd);
    reopen_and_append(next);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *msgs;
    size_t mlen;
    read_file(errpath, &msgs, &mlen);
    msgs[mlen] = 0;
    return msgs;
}

/*
 * A crash in fsync mode leaves the last segment zero-filled after its data, with what reached the
 * disk of the unacknowledged batch in between: here the records cut at every offset of the last
 * three, then zeros. Recovery keeps every whole record, drops only the non-zero bytes of the cut
 * one (reported), reports nothing at a record boundary, and leaves the file at its data end.
 */
TEST_T(log_recovery_of_a_zero_padded_segment_at_every_cut_of_the_last_three_records, 120)
{
    size_t ends[6];
    char path[PATH_MAX], *orig;
    size_t len;
    fill_log(6, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &orig, &len);
    CHECK_EQ_INT(len, ends[5]);
    size_t padded = len + 8192;
    char *buf = calloc(1, padded);
    CHECK(buf != NULL);
    for (size_t cut = ends[2]; cut <= ends[5]; cut++) {
        int whole = 0;
        while (whole < 6 && ends[whole] <= cut)
            whole++;
        size_t end = ends[whole - 1];
        size_t nonzero = cut; /* what recovery must say it dropped: up to the last non-zero byte */
        while (nonzero > end && orig[nonzero - 1] == 0)
            nonzero--;
        memset(buf, 0, padded);
        memcpy(buf, orig, cut);
        write_file(path, buf, padded);
        char *msgs = reopen_and_append_quoted(whole);
        if (nonzero == end) {
            CHECK(strstr(msgs, "dropped") == NULL);
        } else {
            char want[96];
            snprintf(want, sizeof(want), "dropped %zu bytes at offset %zu", nonzero - end, end);
            if (strstr(msgs, want) == NULL)
                fprintf(stderr, "  cut %zu: expected \"%s\" in:\n%s", cut, want, msgs);
            CHECK(strstr(msgs, want) != NULL);
            CHECK(strstr(msgs, "a torn record") != NULL);
        }
        CHECK(strstr(msgs, "whole records after the damage") == NULL);
        free(msgs);
        int nsegs;
        CHECK_EQ_INT(scan_slot(1, &nsegs), whole + 1);
        CHECK_EQ_INT(nsegs, 1);
        CHECK_EQ_INT(file_size(path), data_end_of(0, whole + 1));
    }
    free(buf);
    free(orig);
}

/*
 * A page of a never-acknowledged batch that reached the disk before an earlier one: non-zero
 * bytes after zeros that start at a record boundary. A torn tail: dropped and reported.
 */
TEST(log_recovery_drops_bytes_found_after_the_zero_end_marker)
{
    size_t ends[5];
    char path[PATH_MAX], *orig;
    size_t len;
    fill_log(5, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &orig, &len);
    size_t garbage_at = len + 4096, size = len + 3 * 4096;
    char *buf = calloc(1, size);
    CHECK(buf != NULL);
    memcpy(buf, orig, len);
    /* A copy of the last two whole records (valid ones), out of place. */
    memcpy(buf + garbage_at, orig + ends[2], ends[4] - ends[2]);
    write_file(path, buf, size);
    char *msgs = reopen_and_append_quoted(5);
    char want[96];
    snprintf(want, sizeof(want), "dropped %zu bytes at offset %zu",
             garbage_at + ends[4] - ends[2] - len, len);
    CHECK(strstr(msgs, want) != NULL);
    free(msgs);
    CHECK_EQ_INT(scan_slot(1, NULL), 6);
    CHECK_EQ_INT(file_size(path), data_end_of(0, 6));
    free(buf);
    free(orig);
}

TEST(log_recovery_keeps_a_clean_zero_tail_without_reporting_a_drop)
{
    size_t ends[5];
    char path[PATH_MAX], *orig;
    size_t len;
    fill_log(5, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &orig, &len);
    char *buf = calloc(1, len + (1u << 20));
    CHECK(buf != NULL);
    memcpy(buf, orig, len);
    write_file(path, buf, len + (1u << 20));
    char *msgs = reopen_and_append_quoted(5);
    CHECK(strstr(msgs, "dropped") == NULL);
    CHECK(strstr(msgs, "warn") == NULL);
    free(msgs);
    CHECK_EQ_INT(scan_slot(1, NULL), 6);
    CHECK_EQ_INT(file_size(path), data_end_of(0, 6));
    free(buf);
    free(orig);
}

TEST(log_recovery_cuts_a_last_record_with_a_flipped_payload_byte)
{
    size_t ends[5];
    char path[PATH_MAX], *buf;
    size_t len;
    fill_log(5, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &buf, &len);
    buf[ends[3] + SEGMENT_RECORD_HEADER_SIZE + 3] ^= 0x01;
    write_file(path, buf, len);
    free(buf);
    reopen_and_append(4);
    CHECK_EQ_INT(scan_slot(1, NULL), 5);
    struct stat sb;
    CHECK_EQ_INT(stat(path, &sb), 0);
    CHECK_EQ_INT(sb.st_size, ends[4]); /* same lengths: record 4 replaced the damaged one */
}

TEST(log_recovery_saves_whole_records_found_after_damage_in_the_last_segment)
{
    size_t ends[5];
    char path[PATH_MAX], *buf;
    size_t len;
    fill_log(5, ends);
    seg_path(path, sizeof(path), 1, 1);
    read_file(path, &buf, &len);
    buf[ends[1] + SEGMENT_RECORD_HEADER_SIZE + 3] ^= 0x01; /* record 2 of 0..4 */
    write_file(path, buf, len);
    reopen_and_append(2);
    CHECK_EQ_INT(scan_slot(1, NULL), 3);
    char side[PATH_MAX + 64], *sbuf;
    size_t slen;
    snprintf(side, sizeof(side), "%s.damaged-%zu", path, ends[1]);
    read_file(side, &sbuf, &slen);
    CHECK_EQ_INT(slen, len - ends[1]);
    CHECK(memcmp(sbuf, buf + ends[1], slen) == 0);
    free(sbuf);
    free(buf);
}

TEST(log_open_fails_naming_file_and_offset_of_damage_in_a_closed_segment)
{
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[40];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 400;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 40; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 40, 5000);
    close_log(&loop, log);
    uint64_t seqs[64];
    CHECK(list_segs(1, seqs, 64) >= 3);
    /* Damage the middle of segment 2 (a closed one). */
    char path[PATH_MAX], *buf;
    size_t len;
    seg_path(path, sizeof(path), 1, 2);
    read_file(path, &buf, &len);
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK(sc.records >= 3);
    /* Record 1 starts after record 0, whose length field is the first u32 after the header. */
    const uint8_t *h0 = (const uint8_t *)buf + SEGMENT_HEADER_SIZE;
    size_t rec1 = SEGMENT_HEADER_SIZE + SEGMENT_RECORD_HEADER_SIZE +
                  (size_t)(h0[0] | h0[1] << 8 | h0[2] << 16 | (uint32_t)h0[3] << 24);
    buf[rec1 + SEGMENT_RECORD_HEADER_SIZE + 5] ^= 0x20;
    write_file(path, buf, len);
    free(buf);

    char errpath[PATH_MAX];
    snprintf(errpath, sizeof(errpath), "%s/stderr.txt", test_tmpdir());
    int saved = dup(2), efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && efd >= 0);
    dup2(efd, 2);
    int r = log_open(&log, &loop, &c);
    dup2(saved, 2);
    close(efd);
    CHECK_EQ_INT(r, -EBADMSG);
    char *msgs;
    size_t mlen;
    read_file(errpath, &msgs, &mlen);
    msgs[mlen] = 0;
    char want[64];
    snprintf(want, sizeof(want), "at offset %zu", rec1);
    CHECK(strstr(msgs, "00000000000000000002.seg") != NULL);
    CHECK(strstr(msgs, want) != NULL);
    free(msgs);
    /* Nothing was changed: the damaged file is still there, whole. */
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_DAMAGED);
    CHECK_EQ_INT(sc.file_size, len);
    /* The slot was released on failure. */
    char lock[PATH_MAX];
    snprintf(lock, sizeof(lock), "%s/w001/lock", test_tmpdir());
    int lfd = open(lock, O_RDWR);
    CHECK(lfd >= 0);
    CHECK_EQ_INT(flock(lfd, LOCK_EX | LOCK_NB), 0);
    close(lfd);
    uv_loop_close(&loop);
}

TEST(log_recovery_rewrites_a_torn_header_of_the_last_segment)
{
    size_t ends[3];
    fill_log(3, ends);
    /* A second segment whose creation the crash interrupted after 10 header bytes. */
    char path[PATH_MAX];
    seg_path(path, sizeof(path), 1, 2);
    write_file(path, "TRKDLOG\0\1\0", 10);
    uv_loop_t loop;
    log_t *log;
    static waiter_t w;
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = 0;
    CHECK_EQ_INT(append_one(log, &w, 3, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 4);
    CHECK_EQ_INT(nsegs, 2);
    uv_loop_close(&loop);
}

/* ---- Fault injection: the test binary re-runs itself under the LD_PRELOAD shim ---- */

/*
 * Run the test named `body` in a child `unit-tests` under LD_PRELOAD=fault_shim.so (built by
 * `make build/fault_shim.so`; TRACKD_FAULT_SHIM overrides the path) and require it to pass.
 */
static void run_under_shim(const char *body)
{
    const char *shim =
        getenv("TRACKD_FAULT_SHIM") ? getenv("TRACKD_FAULT_SHIM") : "build/fault_shim.so";
    char abs[PATH_MAX];
    if (realpath(shim, abs) == NULL) {
        fprintf(stderr, "  %s not found: build it with `make build/fault_shim.so`\n", shim);
        CHECK(0);
    }
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "",
                 asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        setenv("LD_PRELOAD", abs, 1);
        setenv("TRACKD_FAULT_BODY", "1", 1);
        setenv("TRACKD_UNIT_NESTED", "1", 1);
        setenv("TMPDIR", test_tmpdir(), 1);
        dup2(2, 1); /* the child's TAP lines must not mix with ours */
        execl(test_self_path(), "unit-tests", body, (char *)NULL);
        _exit(127);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

/* In a body: 1 if running under the shim (else the body is skipped: it is run by its wrapper). */
static int under_shim(void)
{
    if (getenv("TRACKD_FAULT_BODY") == NULL) {
        fprintf(stderr, "  (runs only under the fault shim, from its wrapper test)\n");
        return 0;
    }
    CHECK(dlsym(RTLD_DEFAULT, "trackd_fault_shim_loaded") != NULL);
    return 1;
}

/*
 * A fault body's start: 0 if not under the shim (skip), else 1 with the shim's variable `env`
 * set to `file` in the test directory, whose path is left in `path` (PATH_MAX bytes).
 */
static int fault_begin(const char *env, const char *file, char *path)
{
    if (!under_shim())
        return 0;
    snprintf(path, PATH_MAX, "%s/%s", test_tmpdir(), file);
    setenv(env, path, 1);
    return 1;
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    CHECK(fd >= 0);
    close(fd);
}

/*
 * Append records 1..3 while a fault is on: the first is accepted and fails in its callback; the
 * others either do too or, once the writer has reported the failure, are refused at once.
 */
static void append_failing(uv_loop_t *loop, log_t *log, waiter_t *w, int err)
{
    int accepted = 0;
    for (int i = 1; i <= 3; i++) {
        int r = append_one(log, &w[i], i, SEGMENT_EP_TRACK);
        if (r == 0)
            accepted++;
        else
            CHECK_EQ_INT(r, err);
    }
    CHECK(accepted >= 1);
    run_until(loop, &done_count, 1 + accepted, 5000);
    for (int i = 1; i <= 3; i++)
        if (w[i].done)
            CHECK_EQ_INT(w[i].status, err);
}

static void wait_accepting(uv_loop_t *loop, log_t *log, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (!log_can_accept(log, 100)) {
        CHECK(now_ms() < end);
        sleep_loop(loop, 20);
    }
}

TEST_T(log_fault_body_fsync_failure, 30)
{
    char fault[PATH_MAX];
    if (!fault_begin("TRACKD_FAULT_FSYNC_FILE", "fsync-fails", fault))
        return;
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[10];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    CHECK_EQ_INT(w[0].status, 0);

    touch(fault);
    append_failing(&loop, log, w, -EIO);
    /* Refused until a fresh segment is open. */
    CHECK(!log_can_accept(log, 10));
    CHECK_EQ_INT(append_one(log, &w[4], 4, SEGMENT_EP_TRACK), -EIO);
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.fsync_errors, 1);
    CHECK(!st.writable);
    /* Recovery is retried once a second while fsync keeps failing. */
    sleep_loop(&loop, 1500);
    CHECK(!log_can_accept(log, 10));
    unlink(fault);
    wait_accepting(&loop, log, 3000);
    int before = done_count;
    CHECK_EQ_INT(append_one(log, &w[5], 1, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, before + 1, 5000);
    CHECK_EQ_INT(w[5].status, 0);
    close_log(&loop, log);
    /* Segment 1 holds only the acknowledged record; record 1 went to a fresh segment 2. */
    char path[PATH_MAX];
    segment_scan_t sc;
    seg_path(path, sizeof(path), 1, 1);
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.records, 1);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 2);
    CHECK_EQ_INT(nsegs, 2);
    uv_loop_close(&loop);
}

TEST_T(log_fsync_failure_fails_the_batch_and_resumes_on_a_fresh_segment, 40)
{
    run_under_shim("log_fault_body_fsync_failure");
}

TEST_T(log_fault_body_fsync_failing_for_good, 30)
{
    char fault[PATH_MAX];
    if (!fault_begin("TRACKD_FAULT_FSYNC_FILE", "fsync-fails", fault))
        return;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        uv_loop_t loop;
        log_t *log;
        static waiter_t w[2];
        uv_loop_init(&loop);
        log_config_t c = test_config();
        CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
        touch(fault);
        done_count = 0;
        CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, 1, 5000);
        CHECK_EQ_INT(w[0].status, -EIO);
        sleep_loop(&loop, 20000); /* the log exits the process before this ends */
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), LOG_EXIT_FATAL);
    /* The next start recovers: the unacknowledged record is not there, appending works. */
    unlink(fault);
    reopen_and_append(0);
    CHECK_EQ_INT(scan_slot(1, NULL), 1);
}

TEST_T(log_exits_the_process_when_fsync_keeps_failing, 40)
{
    run_under_shim("log_fault_body_fsync_failing_for_good");
}

/* Append one record (number i) and run the loop until its callback; returns its status. */
static int append_wait(uv_loop_t *loop, log_t *log, waiter_t *w, int i)
{
    int before = done_count;
    CHECK_EQ_INT(append_one(log, w, i, SEGMENT_EP_TRACK), 0);
    run_until(loop, &done_count, before + 1, 5000);
    return w->status;
}

/*
 * A write that blocks the loop (the shim sleeps 100 ms in it, as dirty-page throttling would)
 * leaves writing to the writer thread for a second; a second slow one within a minute, for two.
 */
TEST_T(log_fault_body_inline_slow, 30)
{
    char slow[PATH_MAX];
    if (!fault_begin("TRACKD_FAULT_SLOW_FILE", "slow-writes", slow))
        return;
    setenv("TRACKD_FAULT_SLOW_MS", "100", 1);
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[10];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.inline_slow_ns = 40 * 1000000ull; /* the shim's writes take 100 ms; others far less */
    open_write_log_idle(&loop, &log, &c);
    log_stats_t st;
    CHECK_EQ_INT(append_wait(&loop, log, &w[0], 0), 0);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, 1);
    CHECK_EQ_INT(st.inline_slow, 0);

    touch(slow);
    CHECK_EQ_INT(append_wait(&loop, log, &w[1], 1), 0); /* slow, inline: stored all the same */
    unlink(slow);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, 2);
    CHECK_EQ_INT(st.inline_slow, 1);
    CHECK_EQ_INT(append_wait(&loop, log, &w[2], 2), 0); /* the writer thread's */
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, 2);
    CHECK_EQ_INT(st.batches, 3);
    sleep_loop(&loop, 1100);
    CHECK_EQ_INT(append_wait(&loop, log, &w[3], 3), 0); /* a second later: inline again */
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, 3);

    touch(slow);
    CHECK_EQ_INT(append_wait(&loop, log, &w[4], 4), 0); /* slow again: two seconds now */
    unlink(slow);
    sleep_loop(&loop, 1300);
    CHECK_EQ_INT(append_wait(&loop, log, &w[5], 5), 0);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_slow, 2);
    CHECK_EQ_INT(st.inline_batches, 4);
    sleep_loop(&loop, 900);
    CHECK_EQ_INT(append_wait(&loop, log, &w[6], 6), 0);
    log_get_stats(log, &st);
    CHECK_EQ_INT(st.inline_batches, 5);
    CHECK_EQ_INT(st.batches, 7);
    close_log(&loop, log);
    CHECK_EQ_INT(scan_slot(1, NULL), 7);
    uv_loop_close(&loop);
}

TEST_T(log_a_slow_write_on_the_loop_leaves_writes_to_the_writer_thread_for_a_while, 40)
{
    run_under_shim("log_fault_body_inline_slow");
}

TEST_T(log_fault_body_enospc, 30)
{
    char fault[PATH_MAX];
    if (!fault_begin("TRACKD_FAULT_ENOSPC_FILE", "disk-full", fault))
        return;
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[10];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.durability = CONFIG_DURABILITY_WRITE;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    CHECK_EQ_INT(append_one(log, &w[0], 0, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 1, 5000);
    CHECK_EQ_INT(w[0].status, 0);

    touch(fault);
    append_failing(&loop, log, w, -ENOSPC);
    CHECK_EQ_INT(append_one(log, &w[4], 1, SEGMENT_EP_TRACK), -ENOSPC);
    CHECK(!log_can_accept(log, 10));
    /* No partial record on disk. */
    CHECK_EQ_INT(scan_slot(1, NULL), 1);
    char path[PATH_MAX];
    struct stat sb;
    seg_path(path, sizeof(path), 1, 1);
    CHECK_EQ_INT(stat(path, &sb), 0);
    log_stats_t st;
    log_get_stats(log, &st);
    CHECK_EQ_INT(sb.st_size, st.segment_bytes);
    CHECK(st.write_errors >= 1);
    sleep_loop(&loop, 1200);
    CHECK(!log_can_accept(log, 10));
    unlink(fault);
    wait_accepting(&loop, log, 3000);
    int before = done_count;
    CHECK_EQ_INT(append_one(log, &w[5], 1, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, before + 1, 5000);
    CHECK_EQ_INT(w[5].status, 0);
    close_log(&loop, log);
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 2);
    CHECK_EQ_INT(nsegs, 1);
    uv_loop_close(&loop);
}

TEST_T(log_write_error_cuts_the_partial_batch_and_resumes_when_space_is_back, 40)
{
    run_under_shim("log_fault_body_enospc");
}

/*
 * The shim traces every write and fsync with the file it went to; check that for every
 * segment, header write, file fsync and directory fsync all precede its first record write.
 */
TEST_T(log_fault_body_trace, 30)
{
    char trace[PATH_MAX];
    if (!fault_begin("TRACKD_FAULT_TRACE", "trace.txt", trace))
        return;
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[40];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.segment_max_bytes = 300;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    for (int i = 0; i < 40; i++)
        CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
    run_until(&loop, &done_count, 40, 5000);
    close_log(&loop, log);
    uv_loop_close(&loop);
    unsetenv("TRACKD_FAULT_TRACE");
    int nsegs;
    CHECK_EQ_INT(scan_slot(1, &nsegs), 40);
    CHECK(nsegs >= 5);

    char dir[PATH_MAX];
    slot_dir(dir, sizeof(dir), 1);
    FILE *f = fopen(trace, "r");
    CHECK(f != NULL);
    /* Per segment: 1 = header written, 2 = header fsynced, 3 = directory fsynced after it. */
    int state[MAXW] = {0}, records[MAXW] = {0};
    int last_created = 0;
    char op[32], path[PATH_MAX];
    long long off, len;
    while (fscanf(f, "%31s %4095s %lld %lld", op, path, &off, &len) == 4) {
        uint64_t seq;
        const char *base = strrchr(path, '/');
        if (strcmp(path, dir) == 0) {
            if (strcmp(op, "fsync") == 0 && last_created && state[last_created] == 2)
                state[last_created] = 3;
            continue;
        }
        if (base == NULL || segment_parse_name(base + 1, &seq) != 0 || seq >= MAXW)
            continue;
        int s = (int)seq;
        if (strncmp(op, "pwrite", 6) == 0 || strcmp(op, "write") == 0 ||
            strcmp(op, "writev") == 0) {
            if (off == 0 && len == SEGMENT_HEADER_SIZE && state[s] == 0) {
                state[s] = 1;
                last_created = s;
            } else {
                CHECK_EQ_INT(state[s], 3);
                records[s]++;
            }
        } else if (strcmp(op, "fsync") == 0 || strcmp(op, "fdatasync") == 0) {
            if (state[s] == 1)
                state[s] = 2;
        }
    }
    fclose(f);
    for (int s = 1; s <= nsegs; s++) {
        CHECK_EQ_INT(state[s], 3);
        CHECK(records[s] >= 1);
    }
}

TEST_T(log_segment_header_is_durable_before_any_record_in_it, 40)
{
    run_under_shim("log_fault_body_trace");
}

/*
 * Write-behind, traced by the shim: in write mode every writebehind_bytes of records get their
 * writeback started, in ranges that follow each other from the end of the header; fsync mode,
 * whose fdatasyncs write everything anyway, starts none.
 */
static void writebehind_run(config_durability_t mode, int *kicks, long long *covered,
                            long long *data_end)
{
    char trace[PATH_MAX];
    snprintf(trace, sizeof(trace), "%s/trace-%d.txt", test_tmpdir(), (int)mode);
    unlink(trace);
    setenv("TRACKD_FAULT_TRACE", trace, 1);
    uv_loop_t loop;
    log_t *log;
    static waiter_t w[200];
    uv_loop_init(&loop);
    log_config_t c = test_config();
    c.durability = mode;
    c.writebehind_bytes = 1024;
    CHECK_EQ_INT(log_open(&log, &loop, &c), 0);
    done_count = done_order = 0;
    /* Ten batches of about 1.2 KiB each: one append round per loop run. */
    for (int round = 0; round < 10; round++) {
        for (int i = round * 20; i < (round + 1) * 20; i++)
            CHECK_EQ_INT(append_one(log, &w[i], i, SEGMENT_EP_TRACK), 0);
        run_until(&loop, &done_count, (round + 1) * 20, 5000);
    }
    close_log(&loop, log);
    uv_loop_close(&loop);
    unsetenv("TRACKD_FAULT_TRACE");
    CHECK_EQ_INT(scan_slot(1, NULL), 200);

    FILE *f = fopen(trace, "r");
    CHECK(f != NULL);
    char op[32], path[PATH_MAX];
    long long off, len, next = SEGMENT_HEADER_SIZE;
    *kicks = 0;
    *data_end = 0;
    while (fscanf(f, "%31s %4095s %lld %lld", op, path, &off, &len) == 4) {
        if (strcmp(op, "pwritev") == 0 && off + len > *data_end)
            *data_end = off + len;
        if (strcmp(op, "sync_file_range") != 0)
            continue;
        CHECK_EQ_INT(off, next); /* each range starts where the previous one ended */
        CHECK(len >= 1024);
        next = off + len;
        (*kicks)++;
    }
    fclose(f);
    *covered = next;
}

TEST_T(log_fault_body_writebehind, 30)
{
    if (!under_shim())
        return;
    int kicks;
    long long covered, data_end;
    writebehind_run(CONFIG_DURABILITY_WRITE, &kicks, &covered, &data_end);
    CHECK(kicks >= 9);
    CHECK(covered <= data_end && data_end - covered < 1024);
    /* A fresh slot directory for the second run. */
    char dir[PATH_MAX], cmd[PATH_MAX + 16];
    slot_dir(dir, sizeof(dir), 1);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(cmd), 0);
    writebehind_run(CONFIG_DURABILITY_FSYNC, &kicks, &covered, &data_end);
    CHECK_EQ_INT(kicks, 0);
}

TEST_T(log_write_mode_starts_writeback_as_it_goes_so_closing_a_segment_is_short, 40)
{
    run_under_shim("log_fault_body_writebehind");
}

/*
 * Unit tests for logread.c: segments are written directly with segment.h's encoders into
 * test_tmpdir() (no writer involved), then read back through the public reader API.
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trackd/logread.h"
#include "trackd/segment.h"

/* ---- fixtures ---------------------------------------------------------------------------- */

static char *data_dir(void)
{
    static char d[512];
    snprintf(d, sizeof(d), "%s/data", test_tmpdir());
    mkdir(d, 0755);
    return d;
}

static void slot_dir(char *out, size_t len, uint32_t slot)
{
    CHECK(logread_slot_path(out, len, data_dir(), slot) == 0);
    mkdir(out, 0755);
}

static void seg_path(char *out, size_t len, uint32_t slot, uint64_t seq)
{
    char dir[600], name[64];
    slot_dir(dir, sizeof(dir), slot);
    segment_name(name, sizeof(name), seq);
    snprintf(out, len, "%s/%s", dir, name);
}

static void append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, p, n) == (ssize_t)n);
    close(fd);
}

/* Create segment `seq` of `slot` holding only its header. */
static void new_segment(uint32_t slot, uint64_t seq)
{
    char path[700];
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    segment_header_t h = {SEGMENT_VERSION, slot, seq, 1700000000000ull};
    seg_path(path, sizeof(path), slot, seq);
    unlink(path);
    segment_header_encode(hdr, &h);
    append_bytes(path, hdr, sizeof(hdr));
}

/* The payload every fixture record carries: an event named after `id`. */
static int payload_for(char *out, size_t len, int id)
{
    return snprintf(out, len, "{\"event\":\"e%d\",\"properties\":{\"token\":\"tok%d\",\"id\":%d}}",
                    id, id % 2, id);
}

/* Append record `id` received at `time_ms`; returns its offset in the segment. */
static uint64_t add_record(uint32_t slot, uint64_t seq, int id, uint64_t time_ms)
{
    char path[700], payload[256];
    uint8_t hdr[SEGMENT_RECORD_HEADER_SIZE];
    struct stat st;
    int n = payload_for(payload, sizeof(payload), id);
    seg_path(path, sizeof(path), slot, seq);
    CHECK(stat(path, &st) == 0);
    segment_record_encode(hdr, payload, (uint32_t)n, time_ms, SEGMENT_EP_TRACK);
    append_bytes(path, hdr, sizeof(hdr));
    append_bytes(path, payload, (size_t)n);
    return (uint64_t)st.st_size;
}

/* Flip one byte of a segment file. */
static void flip_byte(uint32_t slot, uint64_t seq, uint64_t off)
{
    char path[700];
    uint8_t b;
    seg_path(path, sizeof(path), slot, seq);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, &b, 1, (off_t)off) == 1);
    b ^= 0x5a;
    CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
    close(fd);
}

/* Issues collected by the reader. */
typedef struct {
    int n;
    logread_issue_kind_t kind[16];
    uint32_t slot[16];
    uint64_t seq[16], offset[16];
    char what[16][256];
} issues_t;

static void collect(const logread_issue_t *is, void *arg)
{
    issues_t *c = arg;
    if (c->n == 16)
        return;
    c->kind[c->n] = is->kind;
    c->slot[c->n] = is->slot;
    c->seq[c->n] = is->seq;
    c->offset[c->n] = is->offset;
    snprintf(c->what[c->n], sizeof(c->what[0]), "%s", is->what);
    c->n++;
}

/* The id of a record's payload ("e<id>"), or -1. */
static int rec_id(const logread_record_t *rec)
{
    char buf[256];
    int id;
    snprintf(buf, sizeof(buf), "%.*s", (int)rec->len, rec->payload);
    const char *p = strstr(buf, "\"event\":\"e");
    return p && sscanf(p + 10, "%d", &id) == 1 ? id : -1;
}

/* Read everything with `opts`: ids into `ids` (up to max), positions into `pos`. */
static int read_all(const logread_opts_t *opts, int *ids, logread_pos_t *pos, int max)
{
    logread_t *r;
    logread_record_t rec;
    int n = 0, rc;
    CHECK_EQ_INT(logread_open(&r, data_dir(), opts), 0);
    while ((rc = logread_next(r, &rec)) == 1) {
        CHECK(n < max);
        ids[n] = rec_id(&rec);
        if (pos)
            pos[n] = rec.pos;
        n++;
    }
    CHECK_EQ_INT(rc, 0);
    logread_close(r);
    return n;
}

/* ---- iteration and merge ----------------------------------------------------------------- */

TEST(logread_reads_one_slot_across_segments_in_write_order)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    add_record(1, 1, 2, 110);
    new_segment(1, 2);
    add_record(1, 2, 3, 120);
    new_segment(1, 3); /* empty newest segment, as right after a roll */
    int ids[8];
    logread_opts_t o = {0};
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 3);
    CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == 3);
}

TEST(logread_positions_name_slot_segment_and_record_offset)
{
    new_segment(2, 7);
    uint64_t o1 = add_record(2, 7, 1, 100);
    uint64_t o2 = add_record(2, 7, 2, 100);
    CHECK_EQ_INT(o1, SEGMENT_HEADER_SIZE);
    logread_pos_t pos[4];
    int ids[4];
    logread_opts_t o = {0};
    /* Segments before 7 are gone: a notice, not a failure. */
    issues_t is = {0};
    o.on_issue = collect;
    o.issue_arg = &is;
    CHECK_EQ_INT(read_all(&o, ids, pos, 4), 2);
    CHECK(pos[0].slot == 2 && pos[0].seq == 7 && pos[0].offset == o1);
    CHECK(pos[1].slot == 2 && pos[1].seq == 7 && pos[1].offset == o2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_NOTICE);
    char s[LOGREAD_POS_STRLEN];
    logread_pos_format(s, sizeof(s), &pos[1]);
    char want[64];
    snprintf(want, sizeof(want), "2:7:%" PRIu64, o2);
    CHECK_EQ_STR(s, want);
}

TEST(logread_merges_slots_by_receive_time_then_slot_number)
{
    new_segment(1, 1);
    new_segment(2, 1);
    new_segment(3, 1);
    add_record(1, 1, 10, 100);
    add_record(2, 1, 20, 90);
    add_record(3, 1, 30, 100); /* same time as slot 1: slot 1 first */
    add_record(1, 1, 11, 150);
    add_record(2, 1, 21, 140);
    new_segment(2, 2);
    add_record(2, 2, 22, 200);
    int ids[8];
    logread_opts_t o = {0};
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 6);
    int want[] = {20, 10, 30, 21, 11, 22};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(ids[i], want[i]);
}

TEST(logread_merge_keeps_each_slot_in_write_order_across_a_clock_step)
{
    new_segment(1, 1);
    new_segment(2, 1);
    add_record(1, 1, 1, 100);
    add_record(1, 1, 2, 300);
    add_record(1, 1, 3, 50); /* the wall clock stepped back */
    add_record(1, 1, 4, 310);
    add_record(2, 1, 5, 200);
    int ids[8];
    logread_opts_t o = {0};
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 5);
    int want[] = {1, 5, 2, 3, 4};
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(ids[i], want[i]);
}

TEST(logread_end_slot_stops_one_slot_and_leaves_the_others)
{
    new_segment(1, 1);
    new_segment(2, 1);
    for (int i = 0; i < 4; i++) {
        add_record(1, 1, i, (uint64_t)(100 + 10 * i));
        add_record(2, 1, 10 + i, (uint64_t)(105 + 10 * i));
    }
    logread_opts_t o = {0};
    logread_t *r;
    logread_record_t rec;
    int ids[16], n = 0;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    while (logread_next(r, &rec) == 1) {
        ids[n++] = rec_id(&rec);
        if (rec_id(&rec) == 1)
            logread_end_slot(r, 1);
    }
    logread_close(r);
    int want[] = {0, 10, 1, 11, 12, 13};
    CHECK_EQ_INT(n, 6);
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(ids[i], want[i]);
}

TEST(logread_one_slot_option_reads_that_slot_only)
{
    new_segment(1, 1);
    new_segment(2, 1);
    add_record(1, 1, 1, 100);
    add_record(2, 1, 2, 50);
    int ids[4];
    logread_opts_t o = {.slot = 2};
    CHECK_EQ_INT(read_all(&o, ids, NULL, 4), 1);
    CHECK_EQ_INT(ids[0], 2);
    logread_t *r;
    o.slot = 9;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), -ENOENT);
}

TEST(logread_open_fails_on_a_missing_data_dir)
{
    logread_t *r;
    logread_opts_t o = {0};
    char p[600];
    snprintf(p, sizeof(p), "%s/nope", test_tmpdir());
    CHECK_EQ_INT(logread_open(&r, p, &o), -ENOENT);
}

TEST(logread_list_slots_takes_only_canonical_slot_directories)
{
    char p[700];
    new_segment(3, 1);
    new_segment(12, 1);
    snprintf(p, sizeof(p), "%s/w01", data_dir());
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/wxyz", data_dir());
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/w000", data_dir());
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/trackd.pid", data_dir());
    append_bytes(p, "1", 1);
    uint32_t *v;
    size_t n;
    CHECK_EQ_INT(logread_list_slots(data_dir(), &v, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK(v[0] == 3 && v[1] == 12);
    free(v);
}

/* ---- cursors ----------------------------------------------------------------------------- */

TEST(logread_cursor_parses_formats_and_rejects_bad_input)
{
    logread_cursor_t c = {0};
    CHECK_EQ_INT(logread_cursor_parse(&c, ""), 0);
    CHECK_EQ_INT(c.n, 0);
    CHECK_EQ_INT(logread_cursor_parse(&c, "2:1:40,1:3:4096\n"), 0);
    CHECK_EQ_INT(c.n, 2);
    CHECK(logread_cursor_get(&c, 1)->seq == 3 && logread_cursor_get(&c, 1)->offset == 4096);
    char *s;
    CHECK_EQ_INT(logread_cursor_format(&c, &s), 0);
    CHECK_EQ_STR(s, "1:3:4096,2:1:40");
    free(s);
    logread_cursor_free(&c);
    const char *bad[] = {"1:3",       "1:3:x", "0:1:40",      "1:1:40,1:2:40",
                         "1:1:40,",   "a",     "1:1:40 junk", "1:99999999999999999999:0",
                         "10000:1:40"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(logread_cursor_parse(&c, bad[i]), -EINVAL);
        logread_cursor_free(&c);
    }
    logread_pos_t p;
    CHECK_EQ_INT(logread_pos_parse("4:5:6", &p), 0);
    CHECK(p.slot == 4 && p.seq == 5 && p.offset == 6);
    CHECK_EQ_INT(logread_pos_parse("4:5:6,", &p), -EINVAL);
}

TEST(logread_after_cursor_resumes_strictly_after_each_slot_position)
{
    new_segment(1, 1);
    new_segment(2, 1);
    int id = 0;
    for (int i = 0; i < 6; i++) {
        add_record(1, 1, id++, (uint64_t)(100 + 10 * i));
        add_record(2, 1, id++, (uint64_t)(105 + 10 * i));
        if (i == 2) {
            new_segment(1, 2);
            new_segment(2, 2);
        }
    }
    int all[32], rest[32];
    logread_pos_t pos[32];
    logread_opts_t o = {0};
    int n = read_all(&o, all, pos, 32);
    CHECK_EQ_INT(n, 12);
    /* Checkpoint after every prefix: the per-slot last positions resume exactly there. */
    for (int cut = 1; cut < n; cut++) {
        logread_cursor_t c = {0};
        for (int i = 0; i < cut; i++)
            CHECK_EQ_INT(logread_cursor_set(&c, &pos[i]), 0);
        o.after = &c;
        int m = read_all(&o, rest, NULL, 32);
        CHECK_EQ_INT(m, n - cut);
        for (int i = 0; i < m; i++)
            CHECK_EQ_INT(rest[i], all[cut + i]);
        logread_cursor_free(&c);
    }
}

TEST(logread_after_rejects_a_position_that_is_not_a_record)
{
    new_segment(1, 1);
    uint64_t off = add_record(1, 1, 1, 100);
    add_record(1, 1, 2, 100);
    logread_cursor_t c = {0};
    logread_pos_t p = {1, 1, off + 1};
    CHECK_EQ_INT(logread_cursor_set(&c, &p), 0);
    issues_t is = {0};
    logread_opts_t o = {.after = &c, .on_issue = collect, .issue_arg = &is};
    logread_t *r;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), -EINVAL);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_ERROR);
    /* Beyond the newest segment, and in a slot that does not exist: also refused. */
    c.pos[0] = (logread_pos_t){1, 5, SEGMENT_HEADER_SIZE};
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), -EINVAL);
    c.pos[0] = (logread_pos_t){4, 1, SEGMENT_HEADER_SIZE};
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), -EINVAL);
    logread_cursor_free(&c);
}

TEST(logread_after_a_segment_removed_by_retention_goes_on_with_the_next)
{
    new_segment(1, 2);
    uint64_t off = add_record(1, 2, 1, 100);
    new_segment(1, 3);
    add_record(1, 3, 2, 110);
    char path[700];
    seg_path(path, sizeof(path), 1, 2);
    unlink(path);
    logread_cursor_t c = {0};
    logread_pos_t p = {1, 2, off};
    CHECK_EQ_INT(logread_cursor_set(&c, &p), 0);
    issues_t is = {0};
    logread_opts_t o = {.after = &c, .on_issue = collect, .issue_arg = &is};
    int ids[4];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 4), 1);
    CHECK_EQ_INT(ids[0], 2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_NOTICE);
    logread_cursor_free(&c);
}

/* ---- damage ------------------------------------------------------------------------------ */

TEST(logread_reports_a_bad_crc_in_a_closed_segment_as_damage_with_its_offset)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    uint64_t bad = add_record(1, 1, 2, 110);
    add_record(1, 1, 3, 120);
    new_segment(1, 2);
    add_record(1, 2, 4, 130);
    flip_byte(1, 1, bad + SEGMENT_RECORD_HEADER_SIZE + 3); /* inside the payload */
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    /* The record before the damage and the next segment are still read. */
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 2);
    CHECK(ids[0] == 1 && ids[1] == 4);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_DAMAGE);
    CHECK_EQ_INT(is.seq[0], 1);
    CHECK_EQ_INT(is.offset[0], bad);
    char want[64];
    snprintf(want, sizeof(want), "offset %" PRIu64, bad);
    CHECK(strstr(is.what[0], want) != NULL);
}

TEST(logread_reports_a_torn_tail_of_the_newest_segment_as_torn_not_damage)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    new_segment(1, 2);
    add_record(1, 2, 2, 110);
    char path[700];
    seg_path(path, sizeof(path), 1, 2);
    uint8_t hdr[SEGMENT_RECORD_HEADER_SIZE];
    segment_record_encode(hdr, "{\"event\":\"x\"}", 13, 120, SEGMENT_EP_TRACK);
    append_bytes(path, hdr, sizeof(hdr));
    append_bytes(path, "{\"ev", 4); /* the append never finished */
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_TORN_TAIL);
    CHECK(strstr(is.what[0], "unacknowledged") != NULL);
}

TEST(logread_treats_a_torn_tail_of_a_closed_segment_as_damage)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    char path[700];
    seg_path(path, sizeof(path), 1, 1);
    append_bytes(path, "\x10\0\0\0", 4);
    new_segment(1, 2);
    add_record(1, 2, 2, 110);
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_DAMAGE);
}

TEST(logread_reports_damage_in_the_middle_of_the_newest_segment)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    uint64_t bad = add_record(1, 1, 2, 110);
    add_record(1, 1, 3, 120);
    flip_byte(1, 1, bad + 8); /* the receive time: crc fails, length still right */
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 1);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_DAMAGE);
    CHECK_EQ_INT(is.offset[0], bad);
}

TEST(logread_reports_a_bad_segment_header_as_damage)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    new_segment(1, 2);
    add_record(1, 2, 2, 110);
    flip_byte(1, 1, 2); /* the magic */
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 1);
    CHECK_EQ_INT(ids[0], 2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_DAMAGE);
    CHECK_EQ_INT(is.seq[0], 1);
}

TEST(logread_tells_missing_segments_from_retention_and_repair)
{
    /* Slot 1: 1, 3 (2 missing: a chain break). Slot 2: 4, 5 (1..3 gone: retention). Slot 3: 1,
     * 3 with 2 moved aside by repair. */
    char path[700];
    new_segment(1, 1);
    new_segment(1, 3);
    new_segment(2, 4);
    new_segment(2, 5);
    new_segment(3, 1);
    new_segment(3, 2);
    new_segment(3, 3);
    char aside[800];
    seg_path(path, sizeof(path), 3, 2);
    snprintf(aside, sizeof(aside), "%s%s", path, LOGREAD_DAMAGED_SUFFIX);
    CHECK(rename(path, aside) == 0);
    for (uint32_t slot = 1; slot <= 3; slot++) {
        issues_t is = {0};
        logread_opts_t o = {.slot = slot, .on_issue = collect, .issue_arg = &is};
        int ids[2];
        CHECK_EQ_INT(read_all(&o, ids, NULL, 2), 0);
        CHECK_EQ_INT(is.n, 1);
        CHECK_EQ_INT(is.kind[0], slot == 1 ? LOGREAD_CHAIN : LOGREAD_NOTICE);
        CHECK(strstr(is.what[0], slot == 1 ? "missing" : slot == 2 ? "retention" : "moved aside"));
    }
}

TEST(logread_reports_a_header_naming_another_slot_but_reads_its_records)
{
    char dir[600], from[700], to[700], name[64];
    new_segment(2, 1);
    add_record(2, 1, 7, 100);
    slot_dir(dir, sizeof(dir), 1);
    seg_path(from, sizeof(from), 2, 1);
    segment_name(name, sizeof(name), 1);
    snprintf(to, sizeof(to), "%s/%s", dir, name);
    CHECK(rename(from, to) == 0);
    issues_t is = {0};
    logread_opts_t o = {.slot = 1, .on_issue = collect, .issue_arg = &is};
    int ids[2];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 2), 1);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_CHAIN);
}

/* ---- following --------------------------------------------------------------------------- */

TEST(logread_follow_picks_up_appends_rolls_and_new_slots)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    logread_opts_t o = {.follow = 1};
    logread_t *r;
    logread_record_t rec;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 1);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    add_record(1, 1, 2, 110);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 2);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    /* Half a record: waited for, not reported, then read once complete. */
    char path[700], payload[256];
    uint8_t hdr[SEGMENT_RECORD_HEADER_SIZE];
    int n = payload_for(payload, sizeof(payload), 3);
    segment_record_encode(hdr, payload, (uint32_t)n, 120, SEGMENT_EP_TRACK);
    seg_path(path, sizeof(path), 1, 1);
    append_bytes(path, hdr, sizeof(hdr));
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    append_bytes(path, payload, (size_t)n);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 3);
    /* A roll, then a new slot. */
    new_segment(1, 2);
    add_record(1, 2, 4, 130);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 4);
    CHECK(rec.pos.seq == 2);
    new_segment(5, 1);
    add_record(5, 1, 5, 90);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 5);
    CHECK_EQ_INT(rec.pos.slot, 5);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    logread_counts_t c;
    logread_counts(r, &c);
    CHECK(c.damage == 0 && c.torn_tails == 0 && c.chain == 0 && c.errors == 0);
    logread_close(r);
}

TEST(logread_follow_rereads_a_bad_tail_that_the_writer_cuts_off_and_rewrites)
{
    char path[700];
    new_segment(1, 1);
    uint64_t off = add_record(1, 1, 1, 100);
    uint64_t bad = add_record(1, 1, 2, 110);
    flip_byte(1, 1, bad + SEGMENT_RECORD_HEADER_SIZE + 1);
    logread_opts_t o = {.follow = 1};
    logread_t *r;
    logread_record_t rec;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK(rec.pos.offset == off);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    /* Recovery cuts the bad tail off; new appends land at the same offset. */
    seg_path(path, sizeof(path), 1, 1);
    CHECK(truncate(path, (off_t)bad) == 0);
    CHECK(add_record(1, 1, 3, 120) == bad);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 3);
    logread_counts_t c;
    logread_counts(r, &c);
    CHECK_EQ_INT(c.damage + c.torn_tails, 0);
    logread_close(r);
}

TEST(logread_follow_reads_the_end_of_a_segment_completed_just_before_a_roll)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    logread_opts_t o = {.follow = 1};
    logread_t *r;
    logread_record_t rec;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    /* Written to segment 1 and rolled while the reader was not looking. */
    add_record(1, 1, 2, 110);
    new_segment(1, 2);
    add_record(1, 2, 3, 120);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 2);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 3);
    logread_close(r);
}

/* ---- zero padding (fsync mode's preallocated space) ------------------------------------- */

/* Zero-fill segment `seq` of `slot` up to `size` bytes (the writer's preallocation). */
static void pad_segment(uint32_t slot, uint64_t seq, uint64_t size)
{
    char path[700];
    seg_path(path, sizeof(path), slot, seq);
    CHECK(truncate(path, (off_t)size) == 0);
}

/*
 * Write record `id` at `off` of a zero-padded segment, as the writer does over its zeros; only
 * `upto` bytes of it (the rest stays zero) if not 0. Returns the offset after the whole record.
 */
static uint64_t put_record(uint32_t slot, uint64_t seq, uint64_t off, int id, uint64_t time_ms,
                           size_t upto)
{
    char path[700], buf[300];
    int n =
        payload_for(buf + SEGMENT_RECORD_HEADER_SIZE, sizeof(buf) - SEGMENT_RECORD_HEADER_SIZE, id);
    segment_record_encode((uint8_t *)buf, buf + SEGMENT_RECORD_HEADER_SIZE, (uint32_t)n, time_ms,
                          SEGMENT_EP_TRACK);
    size_t len = SEGMENT_RECORD_HEADER_SIZE + (size_t)n;
    seg_path(path, sizeof(path), slot, seq);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, buf, upto ? upto : len, (off_t)off) == (ssize_t)(upto ? upto : len));
    close(fd);
    return off + len;
}

TEST(logread_follow_reads_records_written_over_zero_padding_and_rolls_only_after_the_cut)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    char path[700];
    struct stat st;
    seg_path(path, sizeof(path), 1, 1);
    CHECK(stat(path, &st) == 0);
    uint64_t end = (uint64_t)st.st_size;
    pad_segment(1, 1, 1u << 20);
    logread_opts_t o = {.follow = 1};
    logread_t *r;
    logread_record_t rec;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 1);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    /* A record written over the zeros is read from the same offset. */
    uint64_t off2 = end;
    end = put_record(1, 1, end, 2, 110, 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 2);
    CHECK_EQ_INT(rec.pos.offset, off2);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    /* Half of one (its header, the payload still zero): waited for, then read whole. */
    uint64_t off3 = end;
    put_record(1, 1, off3, 3, 120, SEGMENT_RECORD_HEADER_SIZE + 5);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    end = put_record(1, 1, off3, 3, 120, 0);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 3);
    /* A roll: the writer writes one more, cuts the zeros off, then creates segment 2. */
    end = put_record(1, 1, end, 4, 130, 0);
    CHECK(truncate(path, (off_t)end) == 0);
    new_segment(1, 2);
    add_record(1, 2, 5, 140);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 4);
    CHECK_EQ_INT(logread_next(r, &rec), 1);
    CHECK_EQ_INT(rec_id(&rec), 5);
    CHECK_EQ_INT(rec.pos.seq, 2);
    CHECK_EQ_INT(logread_next(r, &rec), 0);
    logread_counts_t c;
    logread_counts(r, &c);
    CHECK(c.damage == 0 && c.torn_tails == 0 && c.chain == 0 && c.errors == 0);
    logread_close(r);
}

TEST(logread_reads_zero_padded_segments_to_their_data_end_closed_or_newest)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    uint64_t off2 = add_record(1, 1, 2, 110);
    pad_segment(1, 1, 70000); /* a closed segment whose cut never happened */
    new_segment(1, 2);
    uint64_t off3 = add_record(1, 2, 3, 120);
    pad_segment(1, 2, 3u << 20);
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    logread_pos_t pos[8];
    CHECK_EQ_INT(read_all(&o, ids, pos, 8), 3);
    CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == 3);
    CHECK_EQ_INT(pos[2].offset, off3);
    CHECK_EQ_INT(is.n, 0);
    /* tail -n 1 starts after record 2 (segment 1), whatever the padding. */
    logread_cursor_t cur = {0};
    CHECK_EQ_INT(logread_tail_cursor(data_dir(), 1, 1, NULL, &cur), 0);
    const logread_pos_t *p = logread_cursor_get(&cur, 1);
    CHECK(p != NULL);
    CHECK_EQ_INT(p->seq, 1);
    CHECK_EQ_INT(p->offset, off2);
    logread_cursor_free(&cur);
}

TEST(logread_reports_bytes_after_the_zero_marker_of_the_newest_segment_as_a_torn_tail)
{
    new_segment(1, 1);
    add_record(1, 1, 1, 100);
    add_record(1, 1, 2, 110);
    char path[700];
    seg_path(path, sizeof(path), 1, 1);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    uint64_t end = (uint64_t)st.st_size;
    pad_segment(1, 1, end + 8192);
    put_record(1, 1, end + 4096, 3, 120, 0); /* a page that reached the disk out of order */
    char pl[256];
    uint64_t rec3 = SEGMENT_RECORD_HEADER_SIZE + (uint64_t)payload_for(pl, sizeof(pl), 3);
    issues_t is = {0};
    logread_opts_t o = {.on_issue = collect, .issue_arg = &is};
    int ids[8];
    CHECK_EQ_INT(read_all(&o, ids, NULL, 8), 2);
    CHECK_EQ_INT(is.n, 1);
    CHECK_EQ_INT(is.kind[0], LOGREAD_TORN_TAIL);
    CHECK_EQ_INT(is.offset[0], end);
    char want[64];
    snprintf(want, sizeof(want), "%" PRIu64 " bytes", 4096 + rec3);
    CHECK(strstr(is.what[0], want) != NULL);
}

/* ---- tail, filters, formatting, times ---------------------------------------------------- */

TEST(logread_tail_cursor_places_each_slot_before_its_last_n_records)
{
    new_segment(1, 1);
    for (int i = 0; i < 3; i++)
        add_record(1, 1, i, (uint64_t)(100 + i));
    new_segment(1, 2);
    for (int i = 3; i < 5; i++)
        add_record(1, 2, i, (uint64_t)(100 + i));
    new_segment(2, 1);
    add_record(2, 1, 50, 100);
    logread_cursor_t c = {0};
    CHECK_EQ_INT(logread_tail_cursor(data_dir(), 0, 3, NULL, &c), 0);
    /* Slot 1: after record 1 (segment 1), so 2, 3, 4 remain; slot 2 has fewer: no entry. */
    CHECK_EQ_INT(c.n, 1);
    const logread_pos_t *p = logread_cursor_get(&c, 1);
    CHECK(p != NULL && p->seq == 1);
    int ids[16];
    logread_opts_t o = {.after = &c};
    CHECK_EQ_INT(read_all(&o, ids, NULL, 16), 4);
    CHECK(ids[0] == 50 && ids[1] == 2 && ids[2] == 3 && ids[3] == 4);
    logread_cursor_free(&c);
    /* With a filter: the last 1 record of token tok1 (odd ids) in slot 1 is 3. */
    logread_filter_t f = {.token = "tok1"};
    CHECK_EQ_INT(logread_tail_cursor(data_dir(), 1, 1, &f, &c), 0);
    o.after = &c;
    o.slot = 1;
    int m = read_all(&o, ids, NULL, 16);
    int kept = 0, first = -1;
    for (int i = 0; i < m; i++) {
        if (ids[i] % 2 && first < 0)
            first = ids[i];
        kept += ids[i] % 2;
    }
    CHECK_EQ_INT(kept, 1);
    CHECK_EQ_INT(first, 3);
    logread_cursor_free(&c);
}

TEST(logread_filter_matches_time_event_token_and_endpoint)
{
    const char *ev = "{\"event\":\"Signed up\",\"properties\":{\"token\":\"abc\"}}";
    const char *eng = "{\"$token\":\"abc\",\"$distinct_id\":\"u\",\"$set\":{\"a\":1}}";
    logread_record_t r = {{1, 1, 40}, 1000, SEGMENT_EP_TRACK, (uint32_t)strlen(ev), ev};
    logread_filter_t f = {0};
    CHECK_EQ_INT(logread_filter_match(&f, &r), 1);
    f.since_ms = 1000;
    f.until_ms = 1001;
    CHECK_EQ_INT(logread_filter_match(&f, &r), 1);
    f.until_ms = 1000; /* until is exclusive */
    CHECK_EQ_INT(logread_filter_match(&f, &r), 0);
    f = (logread_filter_t){.event = "Signed up", .token = "abc"};
    CHECK_EQ_INT(logread_filter_match(&f, &r), 1);
    f.event = "Signed";
    CHECK_EQ_INT(logread_filter_match(&f, &r), 0);
    f = (logread_filter_t){.token = "abc", .endpoint = SEGMENT_EP_ENGAGE};
    CHECK_EQ_INT(logread_filter_match(&f, &r), 0);
    logread_record_t e = {{1, 1, 40}, 1000, SEGMENT_EP_ENGAGE, (uint32_t)strlen(eng), eng};
    CHECK_EQ_INT(logread_filter_match(&f, &e), 1);
    f.token = "abd";
    CHECK_EQ_INT(logread_filter_match(&f, &e), 0);
}

TEST(logread_format_line_adds_trackd_metadata_to_the_stored_object)
{
    const char *ev = "{\"event\":\"a\",\"properties\":{\"x\":\"\xc3\xa9\"}}";
    logread_record_t r = {
        {2, 3, 4096}, 1732527000123ull, SEGMENT_EP_TRACK, (uint32_t)strlen(ev), ev};
    char buf[512];
    ssize_t n = logread_format_line(&r, buf, sizeof(buf));
    const char *want = "{\"event\":\"a\",\"properties\":{\"x\":\"\xc3\xa9\"},\"_trackd\":{"
                       "\"endpoint\":\"track\",\"received_ms\":1732527000123,\"slot\":2,"
                       "\"segment\":3,\"offset\":4096,\"pos\":\"2:3:4096\"}}\n";
    CHECK_EQ_INT(n, strlen(want));
    buf[n] = '\0';
    CHECK_EQ_STR(buf, want);
    /* Too small a buffer: the needed length comes back. */
    CHECK_EQ_INT(logread_format_line(&r, buf, 10), strlen(want));
    /* An empty object gets no stray comma. */
    r.payload = "{}";
    r.len = 2;
    n = logread_format_line(&r, buf, sizeof(buf));
    buf[n] = '\0';
    CHECK(strncmp(buf, "{\"_trackd\":{", 12) == 0);
    /* An event that already has "_trackd" gets ours instead, once. */
    const char *dup = "{\"_trackd\":1,\"event\":\"b\"}";
    r.payload = dup;
    r.len = (uint32_t)strlen(dup);
    n = logread_format_line(&r, buf, sizeof(buf));
    CHECK(n > 0 && (size_t)n < sizeof(buf));
    buf[n] = '\0';
    CHECK(strstr(buf, "\"_trackd\":1") == NULL);
    CHECK(strstr(buf, "\"pos\":\"2:3:4096\"") != NULL);
    CHECK(strstr(strstr(buf, "_trackd") + 1, "_trackd") == NULL);
    CHECK(buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1);
    /* Not an object: refused. */
    r.payload = "[1]";
    r.len = 3;
    CHECK_EQ_INT(logread_format_line(&r, buf, sizeof(buf)), -EBADMSG);
}

TEST(logread_parse_time_accepts_milliseconds_and_iso8601)
{
    uint64_t ms;
    CHECK_EQ_INT(logread_parse_time("1795600800000", &ms), 0);
    CHECK(ms == 1795600800000ull);
    CHECK_EQ_INT(logread_parse_time("2026-11-25T10:00:00Z", &ms), 0);
    CHECK(ms == 1795600800000ull);
    CHECK_EQ_INT(logread_parse_time("2026-11-25T11:00:00+01:00", &ms), 0);
    CHECK(ms == 1795600800000ull);
    CHECK_EQ_INT(logread_parse_time("2026-11-25T10:00:00.25Z", &ms), 0);
    CHECK(ms == 1795600800250ull);
    CHECK_EQ_INT(logread_parse_time("2026-11-25T10:00", &ms), 0);
    CHECK(ms == 1795600800000ull);
    CHECK_EQ_INT(logread_parse_time("2026-11-25", &ms), 0);
    CHECK(ms == 1795564800000ull);
    CHECK_EQ_INT(logread_parse_time("2024-02-29T23:59:59Z", &ms), 0);
    CHECK(ms == 1709251199000ull);
    const char *bad[] = {
        "",          "2023-02-29", "2026-13-01",           "2026-11-25T25:00", "2026-11-25T10:00Z!",
        "yesterday", "-5",         "2026-11-25T10:00:00.Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ_INT(logread_parse_time(bad[i], &ms), -EINVAL);
}

TEST_T(logread_streams_a_large_slot_with_bounded_memory, 60)
{
    /* 200k records in 4 segments: read back in order, with a record larger than the buffer. */
    char path[700];
    new_segment(1, 1);
    seg_path(path, sizeof(path), 1, 1);
    int fd = open(path, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    char payload[256], *batch = malloc(1 << 20);
    size_t blen = 0;
    int id = 0;
    for (int s = 1; s <= 4; s++) {
        if (s > 1) {
            CHECK(write(fd, batch, blen) == (ssize_t)blen);
            blen = 0;
            close(fd);
            new_segment(1, (uint64_t)s);
            seg_path(path, sizeof(path), 1, (uint64_t)s);
            fd = open(path, O_WRONLY | O_APPEND);
            CHECK(fd >= 0);
        }
        for (int i = 0; i < 50000; i++, id++) {
            int n = payload_for(payload, sizeof(payload), id);
            if (blen + SEGMENT_RECORD_HEADER_SIZE + (size_t)n > (1 << 20)) {
                CHECK(write(fd, batch, blen) == (ssize_t)blen);
                blen = 0;
            }
            segment_record_encode((uint8_t *)batch + blen, payload, (uint32_t)n, (uint64_t)id,
                                  SEGMENT_EP_TRACK);
            memcpy(batch + blen + SEGMENT_RECORD_HEADER_SIZE, payload, (size_t)n);
            blen += SEGMENT_RECORD_HEADER_SIZE + (size_t)n;
        }
    }
    CHECK(write(fd, batch, blen) == (ssize_t)blen);
    close(fd);
    free(batch);
    /* One 3 MiB record at the end (an object with a long string). */
    size_t big = 3u << 20;
    char *bp = malloc(big);
    memcpy(bp, "{\"event\":\"e999999\",\"s\":\"", 24);
    memset(bp + 24, 'x', big - 26);
    memcpy(bp + big - 2, "\"}", 2);
    uint8_t hdr[SEGMENT_RECORD_HEADER_SIZE];
    segment_record_encode(hdr, bp, (uint32_t)big, 300000, SEGMENT_EP_TRACK);
    append_bytes(path, hdr, sizeof(hdr));
    append_bytes(path, bp, big);
    free(bp);

    logread_opts_t o = {0};
    logread_t *r;
    logread_record_t rec;
    CHECK_EQ_INT(logread_open(&r, data_dir(), &o), 0);
    int expect = 0, rc;
    while ((rc = logread_next(r, &rec)) == 1) {
        if (expect == 200000) {
            CHECK_EQ_INT(rec.len, big);
            expect++;
            continue;
        }
        CHECK_EQ_INT(rec_id(&rec), expect);
        expect++;
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(expect, 200001);
    logread_close(r);
}

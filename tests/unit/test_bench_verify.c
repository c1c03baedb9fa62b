/*
 * Unit tests of `trackbench verify`: finding the insert id in a log line however the record is
 * nested, and a whole verification against a real segment file (read with logread.h) and against
 * a stand-in for `trackctl cat`.
 */
#include "test.h"

#include <errno.h>
#include <sys/stat.h>

#include "trackd/bench_verify.h"
#include "trackd/segment.h"

static int line_id(const char *line, char *id)
{
    return bench_verify_line_id(line, strlen(line), id);
}

TEST(bench_verify_finds_the_insert_id_at_the_top_or_nested)
{
    char id[BENCH_VERIFY_ID_MAX + 1];
    CHECK_EQ_INT(line_id("{\"event\":\"e\",\"properties\":{\"$insert_id\":\"abc-1\"}}", id), 1);
    CHECK_EQ_STR(id, "abc-1");
    CHECK_EQ_INT(line_id("{\"_trackd\":{\"pos\":\"1:1:40\"},\"record\":{\"properties\":"
                         "{\"token\":\"t\",\"$insert_id\":\"n-2\"}}}",
                         id),
                 1);
    CHECK_EQ_STR(id, "n-2");
    /* A record printed as a JSON string inside the line. */
    CHECK_EQ_INT(
        line_id("{\"payload\":\"{\\\"properties\\\":{\\\"$insert_id\\\":\\\"s-3\\\"}}\"}", id), 1);
    CHECK_EQ_STR(id, "s-3");
}

TEST(bench_verify_records_without_an_id_or_not_json_are_told_apart)
{
    char id[BENCH_VERIFY_ID_MAX + 1];
    CHECK_EQ_INT(line_id("{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{\"a\":1}}", id), 0);
    CHECK_EQ_INT(line_id("{\"properties\":{\"$insert_id\":7}}", id), 0);
    CHECK_EQ_INT(line_id("not json", id), -EINVAL);
    CHECK_EQ_INT(line_id("[1,2]", id), -EINVAL);
    /* Deeper than three levels is not searched. */
    CHECK_EQ_INT(
        line_id("{\"a\":{\"b\":{\"c\":{\"d\":{\"properties\":{\"$insert_id\":\"x\"}}}}}}", id), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

/* A slot directory w001 with one segment holding `n` events with the given ids. */
static void write_log(const char *dir, const char *const *ids, size_t n)
{
    char path[512], name[64];
    snprintf(path, sizeof(path), "%s/w001", dir);
    CHECK(mkdir(path, 0755) == 0);
    segment_name(name, sizeof(name), 1);
    snprintf(path, sizeof(path), "%s/w001/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    segment_header_t h = {.version = SEGMENT_VERSION, .slot = 1, .seq = 1, .created_ms = 1000};
    uint8_t hdr[SEGMENT_HEADER_SIZE], rh[SEGMENT_RECORD_HEADER_SIZE];
    segment_header_encode(hdr, &h);
    CHECK(fwrite(hdr, 1, sizeof(hdr), f) == sizeof(hdr));
    for (size_t i = 0; i < n; i++) {
        char payload[256];
        if (ids[i])
            snprintf(payload, sizeof(payload),
                     "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"$insert_id\":\"%s\"}}",
                     ids[i]);
        else
            snprintf(payload, sizeof(payload), "{\"$token\":\"t\",\"$set\":{\"a\":1}}");
        uint32_t len = (uint32_t)strlen(payload);
        segment_record_encode(rh, payload, len, 2000 + i,
                              ids[i] ? SEGMENT_EP_TRACK : SEGMENT_EP_ENGAGE);
        CHECK(fwrite(rh, 1, sizeof(rh), f) == sizeof(rh));
        CHECK(fwrite(payload, 1, len, f) == len);
    }
    CHECK(fclose(f) == 0);
}

TEST(bench_verify_reads_the_log_itself_and_counts_found_missing_duplicated)
{
    static const char *const ids[] = {"a-1", "a-2", "a-2", NULL, "z-9"};
    const char *dir = test_tmpdir();
    char ledger[512];
    write_log(dir, ids, 5);
    snprintf(ledger, sizeof(ledger), "%s/ledger", dir);
    write_file(ledger, "a-1\na-2\na-3\n\na-1\n");

    bench_verify_t v;
    CHECK_EQ_INT(bench_verify_run(ledger, dir, NULL, &v), 0);
    CHECK_EQ_INT(v.acknowledged, 3);
    CHECK_EQ_INT(v.ledger_repeats, 1);
    CHECK_EQ_INT(v.records, 5);
    CHECK_EQ_INT(v.without_id, 1);
    CHECK_EQ_INT(v.found, 2);
    CHECK_EQ_INT(v.missing, 1);
    CHECK_EQ_INT(v.duplicated, 1);
    CHECK_EQ_INT(v.unacknowledged, 1);
    CHECK_EQ_INT(v.log_damage, 0);
    CHECK_EQ_INT(v.nshow_missing, 1);
    CHECK_EQ_STR(v.show_missing[0], "a-3");
    CHECK_EQ_INT(v.nshow_duplicated, 1);
    CHECK_EQ_STR(v.show_duplicated[0], "a-2");
}

TEST(bench_verify_through_a_trackctl_subprocess)
{
    const char *dir = test_tmpdir();
    char ledger[512], ctl[512], log[512], script[1024];
    snprintf(ledger, sizeof(ledger), "%s/ledger", dir);
    snprintf(ctl, sizeof(ctl), "%s/ctl", dir);
    snprintf(log, sizeof(log), "%s/log.ndjson", dir);
    write_file(ledger, "k-1\nk-2\n");
    write_file(log, "{\"properties\":{\"$insert_id\":\"k-1\"},\"_trackd\":{}}\n"
                    "{\"properties\":{\"$insert_id\":\"k-2\"}}\n");
    /* Prints the log only when called as `ctl cat --data-dir DIR`. */
    snprintf(script, sizeof(script),
             "#!/bin/sh\n[ \"$1 $2 $3\" = \"cat --data-dir %s\" ] || exit 3\ncat %s\n", dir, log);
    write_file(ctl, script);
    CHECK(chmod(ctl, 0755) == 0);

    bench_verify_t v;
    CHECK_EQ_INT(bench_verify_run(ledger, dir, ctl, &v), 0);
    CHECK_EQ_INT(v.acknowledged, 2);
    CHECK_EQ_INT(v.found, 2);
    CHECK_EQ_INT(v.missing, 0);

    /* A trackctl that fails is an error, not "nothing found". */
    CHECK_EQ_INT(bench_verify_run(ledger, "/elsewhere", ctl, &v), -EIO);
    CHECK(bench_verify_run("/no/such/ledger", dir, ctl, &v) == -ENOENT);
}

/*
 * Unit tests for event.c: every validation rule of /track, /import, /engage and /groups, the
 * batch limits, the depth guard in front of jansson, the ip and time rewrites, the token
 * allow-list, and the exact bytes of the records produced.
 */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "trackd/event.h"
#include "trackd/segment.h"

/* 2024-11-25T09:30:00Z, the receive time of every test request. */
#define NOW_MS 1732527000000ULL
#define NOW_S 1732527000ULL
#define DAY_S 86400ULL

/* fast_path is left 0: these tests pin jansson's path, the reference; test_event_fast.c checks
 * that the fast path gives the same outcome wherever it is taken. */
static event_opts_t opts(int endpoint)
{
    event_opts_t o = {
        .endpoint = (uint8_t)endpoint,
        .ip = NULL,
        .now_ms = NOW_MS,
        .max_events = 2000,
        .max_event_bytes = 1000000,
        .tokens = NULL,
    };
    return o;
}

static int parse_o(event_batch_t *b, const char *json, const event_opts_t *o)
{
    return event_batch_parse(b, json, strlen(json), o);
}

/* Parse on /track with default options. */
static int parse(event_batch_t *b, const char *json)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    return parse_o(b, json, &o);
}

/* One event on `endpoint`: 1 if it was stored, 0 if refused (b keeps the outcome). */
static int valid_on(event_batch_t *b, int endpoint, const char *json)
{
    event_opts_t o = opts(endpoint);
    CHECK_EQ_INT(parse_o(b, json, &o), 0);
    CHECK_EQ_INT(b->nevents, 1);
    CHECK_EQ_INT(b->nrecords + b->nfailures, 1);
    return (int)b->nrecords;
}

/* Expect the single event of `json` on `endpoint` to be refused for `field`. */
static void expect_invalid(int endpoint, const char *json, const char *field)
{
    event_batch_t b;
    if (valid_on(&b, endpoint, json)) {
        fprintf(stderr, "  accepted: %s\n", json);
        CHECK(0);
    }
    CHECK_EQ_STR(b.failures[0].field, field);
    CHECK_EQ_INT(b.failures[0].index, 0);
    CHECK(b.failures[0].message[0] != '\0');
    CHECK_EQ_STR(b.error, b.failures[0].message);
    event_batch_free(&b);
}

static void expect_valid(int endpoint, const char *json)
{
    event_batch_t b;
    if (!valid_on(&b, endpoint, json)) {
        fprintf(stderr, "  refused: %s: %s\n", json, b.failures[0].message);
        CHECK(0);
    }
    event_batch_free(&b);
}

/* Build `{"event":"e","properties":{"token":"t",<extra>}}`. */
static char *track_with(const char *extra)
{
    size_t n = strlen(extra) + 64;
    char *s = malloc(n);
    CHECK(s != NULL);
    snprintf(s, n, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"%s%s}}", *extra ? "," : "",
             extra);
    return s;
}

/* A batch of `n` copies of a small valid event. */
static char *batch_of_events(size_t n)
{
    const char *ev = "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}";
    size_t elen = strlen(ev);
    char *s = malloc(n * (elen + 1) + 3);
    size_t o = 0;

    CHECK(s != NULL);
    s[o++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[o++] = ',';
        memcpy(s + o, ev, elen);
        o += elen;
    }
    s[o++] = ']';
    s[o] = '\0';
    return s;
}

/* ---- records ---- */

TEST(track_valid_event_becomes_compact_record_with_receive_time_and_endpoint)
{
    event_batch_t b;
    const char *json = "{ \"event\" : \"Signed up\",\n \"properties\": {\"token\": \"tok\", "
                       "\"distinct_id\": \"user-42\", \"plan\": \"pro\", \"n\": [1, 2, {}]} }";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nevents, 1);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_INT(b.nfailures, 0);
    CHECK_EQ_STR(b.error, "");
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"Signed up\",\"properties\":{\"token\":\"tok\",\"distinct_id\":"
                 "\"user-42\",\"plan\":\"pro\",\"n\":[1,2,{}]}}");
    CHECK_EQ_INT(b.records[0].len, strlen((const char *)b.records[0].payload));
    CHECK_EQ_INT(b.records[0].time_ms, NOW_MS);
    CHECK_EQ_INT(b.records[0].endpoint, SEGMENT_EP_TRACK);
    event_batch_free(&b);
    CHECK(b.records == NULL && b.nrecords == 0);
}

TEST(record_keeps_key_order_and_extra_top_level_keys)
{
    event_batch_t b;
    const char *json = "{\"properties\":{\"z\":1,\"token\":\"t\",\"a\":2},\"zz\":true,"
                       "\"event\":\"e\"}";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload, json);
    event_batch_free(&b);
}

TEST(record_keeps_the_text_of_real_numbers)
{
    /* jansson's default 17 digits would write 1732527000.1229999 and 9.9900000000000002. */
    event_batch_t b;
    const char *json = "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732526000.123,"
                       "\"price\":9.99,\"tiny\":1e-7,\"third\":0.3333333333333333,\"big\":1.5e300,"
                       "\"one\":1.0,\"pi\":3.141592653589793}}";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732526000.123,"
                 "\"price\":9.99,\"tiny\":1e-7,\"third\":0.3333333333333333,\"big\":1.5e300,"
                 "\"one\":1.0,\"pi\":3.141592653589793}}");
    event_batch_free(&b);
}

TEST(record_reals_needing_seventeen_digits_still_round_trip)
{
    event_batch_t b;
    const char *json = "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":0.1,"
                       "\"b\":5e-324,\"c\":1.7976931348623157e308,\"d\":0.30000000000000004}}";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    json_t *in = json_loads(json, 0, NULL);
    json_t *out = json_loadb(b.records[0].payload, b.records[0].len, 0, NULL);
    CHECK(in != NULL && out != NULL);
    CHECK(json_equal(in, out));
    CHECK(strstr((const char *)b.records[0].payload, "0.30000000000000004") != NULL);
    json_decref(in);
    json_decref(out);
    event_batch_free(&b);
}

TEST(record_duplicate_keys_keep_the_last_value)
{
    event_batch_t b;

    CHECK_EQ_INT(parse(&b, "{\"event\":\"a\",\"event\":\"b\",\"properties\":{\"token\":\"t\"}}"),
                 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"b\",\"properties\":{\"token\":\"t\"}}");
    event_batch_free(&b);
}

TEST(record_strings_may_hold_escaped_nul)
{
    event_batch_t b;
    const char *json = "{\"event\":\"a\\u0000b\",\"properties\":{\"token\":\"t\"}}";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload, json);
    event_batch_free(&b);
}

TEST(record_keeps_escapes_and_number_spelling_and_drops_only_blanks)
{
    event_batch_t b;
    const char *json = "{ \"event\" : \"caf\\u00e9 \\/ \\\"q\\\" \\\\\" ,\n\t\"properties\" : {\r\n"
                       "  \"token\" : \"t\", \"n\" : [ 1E5 , -0 , 1.50, 2e-3 ], \"s\" : \"a  b\" ,"
                       " \"o\" : { } } }";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"caf\\u00e9 \\/ \\\"q\\\" \\\\\",\"properties\":{\"token\":\"t\","
                 "\"n\":[1E5,-0,1.50,2e-3],\"s\":\"a  b\",\"o\":{}}}");
    event_batch_free(&b);
}

TEST(duplicate_keys_store_the_validated_value_once_with_edits)
{
    /* The text holds two "event"s; the record holds the one that was checked, and the ip. */
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.ip = "192.0.2.1";
    CHECK_EQ_INT(
        parse_o(&b,
                "[{\"event\":\"\",\"event\":\"b\",\"properties\":{\"token\":\"t\","
                "\"time\":1832527000}},{\"event\":\"c\",\"properties\":{\"token\":\"t\"}}]",
                &o),
        0);
    CHECK_EQ_INT(b.nrecords, 2);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"b\",\"properties\":{\"token\":\"t\",\"time\":1732527000,"
                 "\"ip\":\"192.0.2.1\"}}");
    CHECK_EQ_STR((const char *)b.records[1].payload,
                 "{\"event\":\"c\",\"properties\":{\"token\":\"t\",\"ip\":\"192.0.2.1\"}}");
    event_batch_free(&b);
}

TEST(escaped_key_spellings_still_get_their_edits)
{
    /* "properties" and "time" spelled with escapes: the text cannot be spliced, the tree can. */
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.ip = "192.0.2.1";
    CHECK_EQ_INT(parse_o(&b,
                         "[{\"event\":\"e\",\"prop\\u0065rties\":{\"token\":\"t\"}},"
                         "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"\\u0074ime\":"
                         "1832527000000}}]",
                         &o),
                 0);
    CHECK_EQ_INT(b.nrecords, 2);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"192.0.2.1\"}}");
    CHECK_EQ_STR((const char *)b.records[1].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732527000000,"
                 "\"ip\":\"192.0.2.1\"}}");
    event_batch_free(&b);
}

TEST(records_stay_valid_when_the_output_outgrows_the_input)
{
    /* A long client address on many small events: more than the per-event room guessed. */
    enum { N = 300 };
    char ip[101];
    char *s = batch_of_events(N);
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    memset(ip, 'a', 100);
    ip[0] = '"'; /* escaped in the record */
    ip[100] = '\0';
    o.ip = ip;
    CHECK_EQ_INT(parse_o(&b, s, &o), 0);
    CHECK_EQ_INT(b.nrecords, N);
    for (int i = 0; i < N; i++) {
        json_t *j = json_loadb(b.records[i].payload, b.records[i].len, 0, NULL);
        CHECK(j != NULL);
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "properties"), "ip")),
                     ip);
        json_decref(j);
    }
    event_batch_free(&b);
    free(s);
}

/* ---- whole-request errors ---- */

TEST(empty_or_blank_data_is_einval_missing_or_empty)
{
    event_batch_t b;

    CHECK_EQ_INT(parse(&b, ""), -EINVAL);
    CHECK_EQ_STR(b.error, "data, missing or empty");
    CHECK_EQ_INT(parse(&b, " \n\t"), -EINVAL);
    CHECK_EQ_STR(b.error, "data, missing or empty");
    CHECK(b.records == NULL && b.failures == NULL);
}

TEST(empty_array_stores_nothing)
{
    event_batch_t b;

    CHECK_EQ_INT(parse(&b, "[ ]"), 0);
    CHECK_EQ_INT(b.nevents, 0);
    CHECK_EQ_INT(b.nrecords, 0);
    CHECK(b.error[0] != '\0');
    event_batch_free(&b);
}

TEST(invalid_json_or_scalar_top_level_is_einval)
{
    const char *bad[] = {
        "{",    "{\"event\":}",    "\"just a string\"", "42", "null", "{\"a\":1} trailing",
        "[1,]", "{\"a\":\"\xff\"}"};
    event_batch_t b;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(parse(&b, bad[i]), -EINVAL);
        CHECK(strncmp(b.error, "data, ", 6) == 0);
        CHECK(b.records == NULL && b.nrecords == 0 && b.failures == NULL);
    }
}

TEST(depth_bomb_is_refused_before_parsing)
{
    enum { DEPTH = 100000 };
    char *s = malloc(2 * DEPTH + 1);
    event_batch_t b;

    CHECK(s != NULL);
    memset(s, '[', DEPTH);
    memset(s + DEPTH, ']', DEPTH);
    s[2 * DEPTH] = '\0';
    CHECK_EQ_INT(parse(&b, s), -EINVAL);
    CHECK(strstr(b.error, "nesting too deep") != NULL);
    /* Unterminated, and made of objects. */
    s[DEPTH] = '\0';
    CHECK_EQ_INT(parse(&b, s), -EINVAL);
    CHECK(strstr(b.error, "nesting too deep") != NULL);
    for (int i = 0; i < DEPTH / 5; i++)
        memcpy(s + 5 * i, "{\"a\":", 5);
    s[DEPTH] = '\0';
    CHECK_EQ_INT(parse(&b, s), -EINVAL);
    CHECK(strstr(b.error, "nesting too deep") != NULL);
    free(s);
}

TEST(depth_guard_counts_brackets_outside_strings_only)
{
    /* 40 brackets inside a string are text; 32 real levels pass the guard, 33 do not. */
    char s[256];
    event_batch_t b;

    CHECK_EQ_INT(parse(&b, "{\"event\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\","
                           "\"properties\":{\"token\":\"t\"}}"),
                 0);
    CHECK_EQ_INT(b.nrecords, 1);
    event_batch_free(&b);
    memset(s, '[', 32);
    memset(s + 32, ']', 32);
    s[64] = '\0';
    CHECK_EQ_INT(parse(&b, s), 0);
    CHECK_EQ_INT(b.nfailures, 1); /* a non-object element */
    event_batch_free(&b);
    memset(s, '[', 33);
    memset(s + 33, ']', 33);
    s[66] = '\0';
    CHECK_EQ_INT(parse(&b, s), -EINVAL);
}

TEST(batch_of_2000_events_is_accepted_and_2001_is_e2big)
{
    event_batch_t b;
    char *s = batch_of_events(2000);

    CHECK_EQ_INT(parse(&b, s), 0);
    CHECK_EQ_INT(b.nevents, 2000);
    CHECK_EQ_INT(b.nrecords, 2000);
    CHECK_EQ_STR((const char *)b.records[1999].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}");
    event_batch_free(&b);
    free(s);
    s = batch_of_events(2001);
    CHECK_EQ_INT(parse(&b, s), -E2BIG);
    CHECK(strstr(b.error, "2000") != NULL);
    CHECK(b.records == NULL && b.nrecords == 0);
    free(s);
}

TEST(max_events_applies_after_parsing_too)
{
    /* Commas inside strings do not count as elements; jansson's count is the one that decides. */
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.max_events = 2;
    CHECK_EQ_INT(parse_o(&b, "[{\"event\":\",,,,\",\"properties\":{\"token\":\"t\"}},{}]", &o), 0);
    CHECK_EQ_INT(b.nevents, 2);
    event_batch_free(&b);
    CHECK_EQ_INT(parse_o(&b, "[{},{},{}]", &o), -E2BIG);
    o.max_events = 0;
    CHECK_EQ_INT(parse_o(&b, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}", &o), -E2BIG);
}

/* ---- /track rules ---- */

TEST(batch_mixes_valid_and_invalid_events_reported_by_index)
{
    event_batch_t b;
    const char *json =
        "[{\"event\":\"ok1\",\"properties\":{\"token\":\"t\"}},"
        " 42,"
        " {\"event\":\"\",\"properties\":{\"token\":\"t\",\"$insert_id\":\"abc-1\"}},"
        " {\"event\":\"ok2\",\"properties\":{\"token\":\"t\"}},"
        " {\"event\":\"x\",\"properties\":{}}]";

    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nevents, 5);
    CHECK_EQ_INT(b.nrecords, 2);
    CHECK_EQ_INT(b.nfailures, 3);
    CHECK(strstr((const char *)b.records[0].payload, "ok1") != NULL);
    CHECK(strstr((const char *)b.records[1].payload, "ok2") != NULL);
    CHECK_EQ_INT(b.failures[0].index, 1);
    CHECK_EQ_STR(b.failures[0].field, "");
    CHECK_EQ_INT(b.failures[1].index, 2);
    CHECK_EQ_STR(b.failures[1].field, "event");
    CHECK_EQ_STR(b.failures[1].insert_id, "abc-1");
    CHECK_EQ_INT(b.failures[2].index, 4);
    CHECK_EQ_STR(b.failures[2].field, "properties.token");
    CHECK_EQ_STR(b.failures[2].insert_id, "");
    CHECK_EQ_STR(b.error, b.failures[0].message);
    event_batch_free(&b);
    CHECK(b.failures == NULL && b.nfailures == 0);
}

TEST(track_event_name_must_be_a_non_empty_string)
{
    expect_invalid(SEGMENT_EP_TRACK, "{\"properties\":{\"token\":\"t\"}}", "event");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"\",\"properties\":{\"token\":\"t\"}}", "event");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":7,\"properties\":{\"token\":\"t\"}}", "event");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":null,\"properties\":{\"token\":\"t\"}}", "event");
    event_batch_t b;
    valid_on(&b, SEGMENT_EP_TRACK, "{\"event\":\"\",\"properties\":{\"token\":\"t\"}}");
    CHECK_EQ_STR(b.error, "'event' must be a non-empty string");
    event_batch_free(&b);
}

TEST(track_properties_must_be_an_object_holding_a_token)
{
    event_batch_t b;

    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\"}", "properties.token");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":[]}", "properties");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":\"t\"}", "properties");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":{}}", "properties.token");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":{\"token\":\"\"}}",
                   "properties.token");
    expect_invalid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":{\"token\":5}}",
                   "properties.token");
    valid_on(&b, SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":{}}");
    CHECK_EQ_STR(b.error, "'properties.token' is missing");
    event_batch_free(&b);
}

TEST(track_time_in_seconds_or_milliseconds_within_five_days)
{
    char buf[128];
    const char *ok[] = {"\"time\":1732527000", "\"time\":1732526000.5", "\"time\":1732527000000",
                        "\"time\":1732500000000.25", "\"time\":1732100000"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *s = track_with(ok[i]);
        expect_valid(SEGMENT_EP_TRACK, s);
        free(s);
    }
    /* Just over five days old, in seconds and in milliseconds. */
    snprintf(buf, sizeof(buf), "\"time\":%llu", NOW_S - 5 * DAY_S - 1);
    char *s = track_with(buf);
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.time");
    event_batch_t b;
    valid_on(&b, SEGMENT_EP_TRACK, s);
    CHECK(strstr(b.error, "/import") != NULL);
    event_batch_free(&b);
    free(s);
    snprintf(buf, sizeof(buf), "\"time\":%llu", NOW_MS - 5 * DAY_S * 1000 - 1);
    s = track_with(buf);
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.time");
    free(s);
    snprintf(buf, sizeof(buf), "\"time\":%llu", NOW_MS - 5 * DAY_S * 1000);
    s = track_with(buf);
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    const char *bad[] = {"\"time\":\"1732527000\"", "\"time\":null", "\"time\":-1", "\"time\":0",
                         "\"time\":[1]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = track_with(bad[i]);
        expect_invalid(SEGMENT_EP_TRACK, s, "properties.time");
        free(s);
    }
}

/* The payload of the single record of a /track event with `extra` properties. */
static void expect_track_record(const char *extra, const char *want_extra)
{
    event_batch_t b;
    char *in = track_with(extra), *want = track_with(want_extra);

    CHECK_EQ_INT(valid_on(&b, SEGMENT_EP_TRACK, in), 1);
    CHECK_EQ_STR((const char *)b.records[0].payload, want);
    event_batch_free(&b);
    free(in);
    free(want);
}

TEST(track_future_time_is_clamped_to_now_in_the_unit_sent)
{
    expect_track_record("\"time\":1832527000,\"x\":1", "\"time\":1732527000,\"x\":1");
    expect_track_record("\"time\":1732527000.9,\"x\":1", "\"time\":1732527000.0,\"x\":1");
    expect_track_record("\"time\":1732527999.5", "\"time\":1732527000.0");
    expect_track_record("\"time\":1832527000000", "\"time\":1732527000000");
    expect_track_record("\"time\":1732527000001.5", "\"time\":1732527000000.0");
    /* A value of exactly 1e11 is in seconds (far future), above it in milliseconds (1973). */
    expect_track_record("\"time\":100000000000", "\"time\":1732527000");
    expect_invalid(SEGMENT_EP_TRACK,
                   "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":100000000001}}",
                   "properties.time");
    /* Now itself is left alone. */
    expect_track_record("\"time\":1732527000000", "\"time\":1732527000000");
}

TEST(track_insert_id_is_1_to_36_of_alphanumerics_and_dashes)
{
    char *s;
    s = track_with("\"$insert_id\":\"5d958f87542eb5b5\"");
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    s = track_with("\"$insert_id\":\"123e4567-e89b-12d3-a456-426614174000\""); /* 36 */
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    const char *bad[] = {"\"$insert_id\":\"123e4567-e89b-12d3-a456-4266141740001\"", /* 37 */
                         "\"$insert_id\":\"\"",
                         "\"$insert_id\":\"a_b\"",
                         "\"$insert_id\":\"a b\"",
                         "\"$insert_id\":\"\\u00e9\"",
                         "\"$insert_id\":42",
                         "\"$insert_id\":null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = track_with(bad[i]);
        expect_invalid(SEGMENT_EP_TRACK, s, "properties.$insert_id");
        free(s);
    }
}

TEST(failure_carries_the_insert_id_when_usable)
{
    event_batch_t b;

    valid_on(&b, SEGMENT_EP_TRACK,
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":\"x\",\"$insert_id\":"
             "\"123e4567-e89b-12d3-a456-426614174000\"}}");
    CHECK_EQ_STR(b.failures[0].insert_id, "123e4567-e89b-12d3-a456-426614174000");
    CHECK_EQ_STR(b.failures[0].field, "properties.time");
    event_batch_free(&b);
    valid_on(&b, SEGMENT_EP_TRACK,
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"$insert_id\":\"bad id\"}}");
    CHECK_EQ_STR(b.failures[0].insert_id, "");
    event_batch_free(&b);
}

TEST(track_distinct_id_is_a_string_or_a_number)
{
    const char *ok[] = {"\"distinct_id\":\"u\"", "\"distinct_id\":\"\"", "\"distinct_id\":42",
                        "\"distinct_id\":4.5"};
    const char *bad[] = {"\"distinct_id\":true", "\"distinct_id\":null", "\"distinct_id\":{}",
                         "\"distinct_id\":[\"u\"]"};
    for (size_t i = 0; i < 4; i++) {
        char *s = track_with(ok[i]);
        expect_valid(SEGMENT_EP_TRACK, s);
        free(s);
        s = track_with(bad[i]);
        expect_invalid(SEGMENT_EP_TRACK, s, "properties.distinct_id");
        free(s);
    }
}

/* `"key":{"k0":0,...}` with n keys, or `"key":[0,...]` with n elements. */
static char *container(const char *key, size_t n, int array)
{
    char *s = malloc(n * 16 + 64);
    size_t o;

    CHECK(s != NULL);
    o = (size_t)sprintf(s, "\"%s\":%c", key, array ? '[' : '{');
    for (size_t i = 0; i < n; i++) {
        if (array)
            o += (size_t)sprintf(s + o, "%s%zu", i ? "," : "", i);
        else
            o += (size_t)sprintf(s + o, "%s\"k%zu\":%zu", i ? "," : "", i, i);
    }
    sprintf(s + o, "%c", array ? ']' : '}');
    return s;
}

TEST(track_fewer_than_255_properties)
{
    /* token + 253 = 254 properties pass; token + 254 = 255 do not. */
    char *c = container("x", 0, 0);
    char *props = malloc(254 * 16 + 64);
    size_t o = 0;
    CHECK(props != NULL);
    for (int i = 0; i < 253; i++)
        o += (size_t)sprintf(props + o, "%s\"p%d\":%d", i ? "," : "", i, i);
    char *s = track_with(props);
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    sprintf(props + o, ",\"p253\":1");
    s = track_with(props);
    expect_invalid(SEGMENT_EP_TRACK, s, "properties");
    free(s);
    free(props);
    free(c);
}

TEST(track_nested_objects_under_255_keys_and_arrays_under_255_elements)
{
    for (int array = 0; array <= 1; array++) {
        char *c = container("list", 254, array);
        char *s = track_with(c);
        expect_valid(SEGMENT_EP_TRACK, s);
        free(s);
        free(c);
        c = container("list", 255, array);
        s = track_with(c);
        expect_invalid(SEGMENT_EP_TRACK, s, "properties.list");
        free(s);
        free(c);
    }
    /* Deeper down too. */
    char *c = container("inner", 255, 1);
    char *outer = malloc(strlen(c) + 32);
    CHECK(outer != NULL);
    sprintf(outer, "\"o\":{%s}", c);
    char *s = track_with(outer);
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.o");
    free(s);
    free(outer);
    free(c);
}

TEST(track_property_values_nest_at_most_three_levels)
{
    char *s = track_with("\"a\":{\"b\":{\"c\":{\"d\":1}}}");
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    s = track_with("\"a\":{\"b\":{\"c\":{\"d\":{}}}}");
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.a");
    free(s);
    /* Arrays are levels too: a list of objects holding an object is three. */
    s = track_with("\"cart\":[{\"sku\":\"x\",\"attrs\":{\"size\":\"m\"}}]");
    expect_valid(SEGMENT_EP_TRACK, s);
    free(s);
    s = track_with("\"cart\":[{\"attrs\":{\"size\":[\"m\"]}}]");
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.cart");
    free(s);
}

TEST(event_larger_than_max_event_bytes_is_invalid)
{
    const char *ev = "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"pad\":\"0123456789\"}}";
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.max_event_bytes = strlen(ev);
    CHECK_EQ_INT(parse_o(&b, ev, &o), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    event_batch_free(&b);
    o.max_event_bytes = strlen(ev) - 1;
    CHECK_EQ_INT(parse_o(&b, ev, &o), 0);
    CHECK_EQ_INT(b.nrecords, 0);
    CHECK_EQ_INT(b.nfailures, 1);
    CHECK(strstr(b.failures[0].message, "larger") != NULL);
    event_batch_free(&b);
}

TEST(ip_is_added_to_properties_unless_present)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.ip = "203.0.113.9";
    CHECK_EQ_INT(parse_o(&b,
                         "[{\"event\":\"e\",\"properties\":{\"token\":\"t\"}},"
                         "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"1.2.3.4\"}},"
                         "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":null}}]",
                         &o),
                 0);
    CHECK_EQ_INT(b.nrecords, 3);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"203.0.113.9\"}}");
    CHECK_EQ_STR((const char *)b.records[1].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"1.2.3.4\"}}");
    CHECK_EQ_STR((const char *)b.records[2].payload,
                 "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":null}}");
    event_batch_free(&b);
}

/* ---- /import ---- */

TEST(import_requires_time_distinct_id_and_insert_id)
{
    const char *full = "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1600000000,"
                       "\"distinct_id\":\"u\",\"$insert_id\":\"i1\"}}";
    expect_valid(SEGMENT_EP_IMPORT, full);
    expect_invalid(SEGMENT_EP_IMPORT,
                   "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"distinct_id\":\"u\","
                   "\"$insert_id\":\"i1\"}}",
                   "properties.time");
    expect_invalid(SEGMENT_EP_IMPORT,
                   "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1600000000,"
                   "\"$insert_id\":\"i1\"}}",
                   "properties.distinct_id");
    expect_invalid(SEGMENT_EP_IMPORT,
                   "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1600000000,"
                   "\"distinct_id\":\"u\"}}",
                   "properties.$insert_id");
    /* The same event without those is fine on /track. */
    expect_valid(SEGMENT_EP_TRACK, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}");
}

/* An /import event at time `t` (any JSON number text). */
static char *import_at(const char *t)
{
    char *s = malloc(256);
    CHECK(s != NULL);
    snprintf(s, 256,
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":%s,\"distinct_id\":1,"
             "\"$insert_id\":\"x\"}}",
             t);
    return s;
}

TEST(import_accepts_1971_to_one_hour_ahead_without_clamping)
{
    char t[32];
    char *s;

    s = import_at("31536000"); /* 1971-01-01T00:00:00Z */
    expect_valid(SEGMENT_EP_IMPORT, s);
    free(s);
    s = import_at("31535999");
    expect_invalid(SEGMENT_EP_IMPORT, s, "properties.time");
    free(s);
    s = import_at("1000000000"); /* 2001: far older than /track takes */
    expect_valid(SEGMENT_EP_IMPORT, s);
    expect_invalid(SEGMENT_EP_TRACK, s, "properties.time");
    free(s);
    snprintf(t, sizeof(t), "%llu", NOW_MS + 3600 * 1000);
    s = import_at(t);
    event_batch_t b;
    CHECK_EQ_INT(valid_on(&b, SEGMENT_EP_IMPORT, s), 1);
    CHECK(strstr((const char *)b.records[0].payload, t) != NULL); /* not clamped */
    CHECK_EQ_INT(b.records[0].endpoint, SEGMENT_EP_IMPORT);
    event_batch_free(&b);
    free(s);
    snprintf(t, sizeof(t), "%llu", NOW_S + 3601);
    s = import_at(t);
    expect_invalid(SEGMENT_EP_IMPORT, s, "properties.time");
    free(s);
}

/* ---- /engage ---- */

TEST(engage_accepts_each_operation_with_its_value_type)
{
    const char *ok[] = {
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{\"plan\":\"pro\",\"n\":{\"a\":1}}}",
        "{\"$token\":\"t\",\"$distinct_id\":42,\"$set_once\":{\"first\":\"x\"}}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$add\":{\"count\":1,\"score\":-2.5}}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$union\":{\"tags\":[\"a\",\"b\"]}}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$append\":{\"list\":\"x\"}}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$remove\":{\"list\":\"x\"}}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$unset\":[\"a\",\"b\"]}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$delete\":\"\"}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$delete\":null}",
        "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{},\"$ip\":\"1.2.3.4\",\"$time\":"
        "1732527000000,\"$ignore_time\":true,\"$device_id\":\"d\",\"$user_id\":\"u\"}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        expect_valid(SEGMENT_EP_ENGAGE, ok[i]);
}

TEST(engage_requires_token_distinct_id_and_exactly_one_operation)
{
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"$distinct_id\":\"u\",\"$set\":{}}", "$token");
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"$token\":\"\",\"$distinct_id\":\"u\",\"$set\":{}}",
                   "$token");
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"$token\":\"t\",\"$set\":{}}", "$distinct_id");
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"$token\":\"t\",\"$distinct_id\":true,\"$set\":{}}",
                   "$distinct_id");
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"$token\":\"t\",\"$distinct_id\":\"u\"}", "");
    expect_invalid(SEGMENT_EP_ENGAGE,
                   "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{},\"$unset\":[]}", "$unset");
    /* A track event sent to /engage has no operation. */
    expect_invalid(SEGMENT_EP_ENGAGE, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}",
                   "$token");
}

TEST(engage_operation_values_are_checked)
{
    const char *pre = "{\"$token\":\"t\",\"$distinct_id\":\"u\",";
    const struct {
        const char *op, *field;
    } bad[] = {
        {"\"$set\":[]}", "$set"},
        {"\"$set_once\":\"x\"}", "$set_once"},
        {"\"$add\":{\"n\":\"1\"}}", "$add"},
        {"\"$add\":[1]}", "$add"},
        {"\"$union\":{\"tags\":\"a\"}}", "$union"},
        {"\"$append\":1}", "$append"},
        {"\"$remove\":null}", "$remove"},
        {"\"$unset\":\"a\"}", "$unset"},
        {"\"$unset\":[\"a\",1]}", "$unset"},
        {"\"$set\":{\"a\":{\"b\":{\"c\":{\"d\":{}}}}}}", "$set.a"},
        {"\"$set\":{},\"$ip\":4}", "$ip"},
        {"\"$set\":{},\"$time\":\"now\"}", "$time"},
        {"\"$set\":{},\"$ignore_time\":1}", "$ignore_time"},
    };
    char s[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(s, sizeof(s), "%s%s", pre, bad[i].op);
        expect_invalid(SEGMENT_EP_ENGAGE, s, bad[i].field);
    }
}

TEST(engage_ip_is_added_as_dollar_ip_unless_present)
{
    event_opts_t o = opts(SEGMENT_EP_ENGAGE);
    event_batch_t b;

    o.ip = "2001:db8::1";
    CHECK_EQ_INT(parse_o(&b,
                         "[{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{\"a\":1}},"
                         "{\"$ip\":\"9.9.9.9\",\"$token\":\"t\",\"$distinct_id\":\"u\","
                         "\"$delete\":\"\"}]",
                         &o),
                 0);
    CHECK_EQ_INT(b.nrecords, 2);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{\"a\":1},"
                 "\"$ip\":\"2001:db8::1\"}");
    CHECK_EQ_STR((const char *)b.records[1].payload,
                 "{\"$ip\":\"9.9.9.9\",\"$token\":\"t\",\"$distinct_id\":\"u\",\"$delete\":\"\"}");
    CHECK_EQ_INT(b.records[0].endpoint, SEGMENT_EP_ENGAGE);
    event_batch_free(&b);
}

/* ---- /groups ---- */

TEST(groups_accept_their_operations)
{
    const char *ok[] = {
        "{\"$token\":\"t\",\"$group_key\":\"company\",\"$group_id\":\"acme\",\"$set\":{\"a\":1}}",
        "{\"$token\":\"t\",\"$group_key\":\"company\",\"$group_id\":7,\"$set_once\":{\"a\":1}}",
        "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$unset\":[\"a\"]}",
        "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$union\":{\"l\":[1]}}",
        "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$remove\":{\"l\":1}}",
        "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$delete\":\"\"}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        expect_valid(SEGMENT_EP_GROUPS, ok[i]);
}

TEST(groups_require_key_id_and_a_group_operation)
{
    expect_invalid(SEGMENT_EP_GROUPS, "{\"$token\":\"t\",\"$group_id\":\"g\",\"$set\":{}}",
                   "$group_key");
    expect_invalid(SEGMENT_EP_GROUPS,
                   "{\"$token\":\"t\",\"$group_key\":\"\",\"$group_id\":\"g\",\"$set\":{}}",
                   "$group_key");
    expect_invalid(SEGMENT_EP_GROUPS, "{\"$token\":\"t\",\"$group_key\":\"k\",\"$set\":{}}",
                   "$group_id");
    expect_invalid(SEGMENT_EP_GROUPS,
                   "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":[],\"$set\":{}}",
                   "$group_id");
    expect_invalid(SEGMENT_EP_GROUPS,
                   "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$add\":{\"n\":1}}",
                   "$add");
    expect_invalid(SEGMENT_EP_GROUPS,
                   "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\",\"$append\":{}}",
                   "$append");
    expect_invalid(SEGMENT_EP_GROUPS, "{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":\"g\"}",
                   "");
    /* An engage update is not a group update. */
    expect_invalid(SEGMENT_EP_GROUPS, "{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{}}",
                   "$group_key");
}

/* ---- token allow-list (config_list_has from config.c) ---- */

TEST(allow_list_refuses_the_whole_request_for_one_unknown_token)
{
    char *items[] = {"tok-a", "tok-b"};
    config_list_t list = {.items = items, .n = 2};
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.tokens = &list;
    CHECK_EQ_INT(parse_o(&b,
                         "[{\"event\":\"e\",\"properties\":{\"token\":\"tok-a\"}},"
                         "{\"event\":\"e\",\"properties\":{\"token\":\"tok-b\"}}]",
                         &o),
                 0);
    CHECK_EQ_INT(b.nrecords, 2);
    event_batch_free(&b);
    CHECK_EQ_INT(parse_o(&b,
                         "[{\"event\":\"e\",\"properties\":{\"token\":\"tok-a\"}},"
                         "{\"event\":\"\",\"properties\":{}},"
                         "{\"event\":\"e\",\"properties\":{\"token\":\"tok-c\"}}]",
                         &o),
                 -EACCES);
    CHECK(b.records == NULL && b.nrecords == 0 && b.failures == NULL && b.nfailures == 0);
    CHECK(b.error[0] != '\0');
    /* A prefix of an allowed token is not allowed. */
    CHECK_EQ_INT(parse_o(&b, "{\"event\":\"e\",\"properties\":{\"token\":\"tok\"}}", &o), -EACCES);
}

TEST(allow_list_applies_to_engage_and_groups_tokens)
{
    char *items[] = {"tok-a"};
    config_list_t list = {.items = items, .n = 1};
    event_opts_t o = opts(SEGMENT_EP_ENGAGE);
    event_batch_t b;

    o.tokens = &list;
    CHECK_EQ_INT(parse_o(&b, "{\"$token\":\"tok-a\",\"$distinct_id\":\"u\",\"$set\":{}}", &o), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    event_batch_free(&b);
    CHECK_EQ_INT(parse_o(&b, "{\"$token\":\"tok-x\",\"$distinct_id\":\"u\",\"$set\":{}}", &o),
                 -EACCES);
    o.endpoint = SEGMENT_EP_GROUPS;
    CHECK_EQ_INT(parse_o(&b,
                         "{\"$token\":\"tok-x\",\"$group_key\":\"k\",\"$group_id\":\"g\","
                         "\"$set\":{}}",
                         &o),
                 -EACCES);
}

TEST(empty_allow_list_accepts_any_token)
{
    config_list_t list = {.items = NULL, .n = 0};
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.tokens = &list;
    CHECK_EQ_INT(parse_o(&b, "{\"event\":\"e\",\"properties\":{\"token\":\"anything\"}}", &o), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    event_batch_free(&b);
}

TEST(client_address_that_is_not_utf8_is_einval)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;

    o.ip = "10.0.0.\xff";
    CHECK_EQ_INT(parse_o(&b, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}", &o), -EINVAL);
    CHECK(b.records == NULL && b.error[0] != '\0');
}

/* ---- the text fast paths and jansson's arena ---- */

TEST(compact_text_is_stored_byte_for_byte_and_outer_blanks_are_dropped)
{
    event_batch_t b;
    const char *ev = "{\"event\":\"e  e\",\"properties\":{\"token\":\"t\",\"s\":\"a \\\" \\\\ b\","
                     "\"n\":[1.50,{\"x\":\"\\u00e9\"}]}}";
    char json[512];

    snprintf(json, sizeof(json), " \r\n%s\n\t ", ev);
    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload, ev);
    CHECK_EQ_INT(b.records[0].len, strlen(ev));
    event_batch_free(&b);

    /* Blanks between the elements of a batch only: each element is stored as sent. */
    snprintf(json, sizeof(json), "[ %s ,\n%s\t]", ev, ev);
    CHECK_EQ_INT(parse(&b, json), 0);
    CHECK_EQ_INT(b.nrecords, 2);
    CHECK_EQ_STR((const char *)b.records[0].payload, ev);
    CHECK_EQ_STR((const char *)b.records[1].payload, ev);
    event_batch_free(&b);
}

/* Far more nodes per byte of text than a usual event: the arena needs several blocks. */
TEST(batch_whose_tree_outgrows_the_first_arena_block_is_stored_whole)
{
    enum { NEV = 200, NZ = 250 };
    size_t cap = NEV * (NZ * 2 + 80) + 8, o = 0;
    char *json = malloc(cap);
    event_batch_t b;

    CHECK(json != NULL);
    json[o++] = '[';
    for (int e = 0; e < NEV; e++) {
        o += (size_t)snprintf(json + o, cap - o,
                              "%s{\"event\":\"e%d\",\"properties\":{\"token\""
                              ":\"t\",\"z\":[",
                              e ? "," : "", e);
        for (int z = 0; z < NZ; z++)
            o += (size_t)snprintf(json + o, cap - o, z ? ",0" : "0");
        o += (size_t)snprintf(json + o, cap - o, "]}}");
    }
    json[o++] = ']';
    CHECK_EQ_INT(event_batch_parse(&b, json, o,
                                   &(event_opts_t){.endpoint = SEGMENT_EP_TRACK,
                                                   .now_ms = NOW_MS,
                                                   .max_events = 2000,
                                                   .max_event_bytes = 1000000}),
                 0);
    CHECK_EQ_INT(b.nrecords, NEV);
    for (int e = 0; e < NEV; e++) {
        char head[64];
        int n = snprintf(head, sizeof(head), "{\"event\":\"e%d\",", e);
        CHECK(memcmp(b.records[e].payload, head, (size_t)n) == 0);
        CHECK_EQ_INT(b.records[e].len, (size_t)n + 33 + NZ * 2);
    }
    event_batch_free(&b);
    free(json);
}

/* Other jansson users, before, after and during parses on other threads, keep plain malloc. */
static void *jansson_user(void *arg)
{
    for (int i = 0; i < 2000; i++) {
        json_t *v = json_pack("{s:s, s:[i,i], s:{s:f}}", "a", "text", "b", i, i + 1, "c", "d", 1.5);
        CHECK(v != NULL);
        char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        CHECK(s != NULL);
        json_t *w = json_loads(s, 0, NULL);
        CHECK(w != NULL && json_equal(v, w));
        free(s); /* json_dumps memory is jansson's malloc'd string */
        json_decref(w);
        json_decref(v);
    }
    return arg;
}

static void *event_parser(void *arg)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    o.ip = "192.0.2.7";
    for (int i = 0; i < 2000; i++) {
        event_batch_t b;
        CHECK_EQ_INT(parse_o(&b,
                             "[{\"event\":\"e\",\"properties\":{\"token\":\"t\"}},{\"event\""
                             ":\"f\",\"properties\":{\"token\":\"t\",\"k\":[1,{}]}}]",
                             &o),
                     0);
        CHECK_EQ_INT(b.nrecords, 2);
        CHECK_EQ_STR((const char *)b.records[1].payload,
                     "{\"event\":\"f\",\"properties\":{\"token\":\"t\",\"k\":[1,{}],\"ip\":"
                     "\"192.0.2.7\"}}");
        event_batch_free(&b);
    }
    return arg;
}

TEST(jansson_users_outside_a_parse_and_on_other_threads_are_unaffected)
{
    pthread_t t[4];
    /* Made before this thread's parses and freed after them. */
    json_t *before = json_pack("{s:s}", "k", "made before");
    CHECK(before != NULL);
    event_parser(NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pthread_create(&t[i], NULL, i % 2 ? jansson_user : event_parser, NULL), 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pthread_join(t[i], NULL), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(before, "k")), "made before");
    json_decref(before);
}

/*
 * Unit tests for event_fast.c, the allocation-free fast path of event validation. Every input
 * goes through event_batch_parse twice, once with the fast path off (jansson's path, the
 * reference) and once with it on, and the two outcomes must agree in everything: return code,
 * error text, counts, every record's bytes, length, time and endpoint, every failure. Each test
 * also pins which path the second run took: the fast path for the ordinary events the libraries
 * send, jansson's path for each case the fast path leaves to it.
 */
#include "test.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "trackd/event.h"
#include "trackd/segment.h"

/* 2024-11-25T09:30:00Z, the receive time of every test request. */
#define NOW_MS 1732527000000ULL

static event_opts_t opts(int endpoint)
{
    event_opts_t o = {
        .endpoint = (uint8_t)endpoint,
        .ip = NULL,
        .now_ms = NOW_MS,
        .max_events = 2000,
        .max_event_bytes = 1000000,
        .tokens = NULL,
        .fast_path = 1,
    };
    return o;
}

/* The outcome of the fast-path run, kept for tests that look further. */
static int last_rc;
static size_t last_nrecords, last_nfailures;

/*
 * Run json[0..len) both ways under `o` and CHECK that they agree; returns the path the run with
 * the fast path on took (event_path_t).
 */
static int both_ways_n(const char *json, size_t len, const event_opts_t *o)
{
    event_opts_t slow = *o, fast = *o;
    event_batch_t a, b;
    int ra, rb, path;

    slow.fast_path = 0;
    fast.fast_path = 1;
    ra = event_batch_parse(&a, json, len, &slow);
    rb = event_batch_parse(&b, json, len, &fast);
    if (ra != rb || strcmp(a.error, b.error) != 0)
        fprintf(stderr, "  input: %.*s\n  jansson: %d '%s'; fast: %d '%s'\n", (int)len, json, ra,
                a.error, rb, b.error);
    CHECK_EQ_INT(rb, ra);
    CHECK_EQ_STR(b.error, a.error);
    CHECK(a.path != EVENT_PATH_FAST);
    CHECK_EQ_INT(b.nevents, a.nevents);
    CHECK_EQ_INT(b.nrecords, a.nrecords);
    CHECK_EQ_INT(b.nfailures, a.nfailures);
    for (size_t i = 0; i < a.nrecords; i++) {
        const log_record_t *x = &a.records[i], *y = &b.records[i];
        if (x->len != y->len || memcmp(x->payload, y->payload, x->len) != 0)
            fprintf(stderr, "  record %zu: jansson '%.*s'\n            fast    '%.*s'\n", i,
                    (int)x->len, (const char *)x->payload, (int)y->len, (const char *)y->payload);
        CHECK_EQ_INT(y->len, x->len);
        CHECK(memcmp(x->payload, y->payload, x->len) == 0);
        CHECK_EQ_INT(((const char *)y->payload)[y->len], '\0');
        CHECK_EQ_INT(y->time_ms, x->time_ms);
        CHECK_EQ_INT(y->endpoint, x->endpoint);
    }
    for (size_t i = 0; i < a.nfailures; i++) {
        CHECK_EQ_INT(b.failures[i].index, a.failures[i].index);
        CHECK_EQ_STR(b.failures[i].insert_id, a.failures[i].insert_id);
        CHECK_EQ_STR(b.failures[i].field, a.failures[i].field);
        CHECK_EQ_STR(b.failures[i].message, a.failures[i].message);
    }
    last_rc = rb;
    last_nrecords = b.nrecords;
    last_nfailures = b.nfailures;
    path = b.path;
    event_batch_free(&a);
    event_batch_free(&b);
    return path;
}

static int both_ways(const char *json, const event_opts_t *o)
{
    return both_ways_n(json, strlen(json), o);
}

/* Same outcome both ways, and the fast path took it (all events stored). */
static void expect_fast_o(const char *json, const event_opts_t *o)
{
    int path = both_ways(json, o);
    if (path != EVENT_PATH_FAST)
        fprintf(stderr, "  not taken by the fast path: %s\n", json);
    CHECK_EQ_INT(path, EVENT_PATH_FAST);
    CHECK_EQ_INT(last_rc, 0);
    CHECK(last_nrecords > 0);
    CHECK_EQ_INT(last_nfailures, 0);
}

/* Same outcome both ways, and the fast path left it to jansson. */
static void expect_fallback_o(const char *json, const event_opts_t *o)
{
    int path = both_ways(json, o);
    if (path != EVENT_PATH_JANSSON)
        fprintf(stderr, "  taken by the fast path: %s\n", json);
    CHECK_EQ_INT(path, EVENT_PATH_JANSSON);
}

static void expect_fast(const char *json)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    expect_fast_o(json, &o);
}

static void expect_fallback(const char *json)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    expect_fallback_o(json, &o);
}

/* `{"event":"e","properties":{"token":"t",<extra>}}` into buf. */
static const char *track_with(char *buf, size_t size, const char *extra)
{
    snprintf(buf, size, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"%s%s}}", *extra ? "," : "",
             extra);
    return buf;
}

static void expect_fast_props(const char *extra)
{
    char buf[4096];
    expect_fast(track_with(buf, sizeof(buf), extra));
}

static void expect_fallback_props(const char *extra)
{
    char buf[4096];
    expect_fallback(track_with(buf, sizeof(buf), extra));
}

/* What mixpanel-browser sends (one event, properties with time in seconds as a real). */
static const char browser_event[] =
    "{\"event\":\"Viewed page\",\"properties\":{\"$os\":\"Linux\",\"$browser\":\"Chrome\","
    "\"$current_url\":\"https://shop.example.com/products/42?ref=newsletter\","
    "\"$browser_version\":119,\"$screen_height\":1080,\"$screen_width\":1920,"
    "\"mp_lib\":\"web\",\"$lib_version\":\"2.55.1\",\"$insert_id\":\"k3v9x0q1w2e3r4t5\","
    "\"time\":1732526999.123,\"distinct_id\":\"$device:18c0f0a1b2c3d4-0e1f2a3b4c5d6e\","
    "\"$device_id\":\"18c0f0a1b2c3d4-0e1f2a3b4c5d6e\",\"$initial_referrer\":\"$direct\","
    "\"$initial_referring_domain\":\"$direct\",\"token\":\"PROJECT_TOKEN\"}}";

/* What mixpanel-node sends to /track and /import: integer times, ms on /import. */
static const char node_event[] =
    "{\"event\":\"purchase\",\"properties\":{\"time\":1732526990,\"distinct_id\":\"user-42\","
    "\"$insert_id\":\"node-0001\",\"mp_lib\":\"node\",\"$lib_version\":\"0.18.0\","
    "\"price\":9.99,\"items\":[{\"sku\":\"A-1\",\"qty\":2},{\"sku\":\"B-2\",\"qty\":1}],"
    "\"gift\":false,\"coupon\":null,\"token\":\"PROJECT_TOKEN\"}}";

static const char import_event[] =
    "{\"event\":\"signup\",\"properties\":{\"time\":1700000000000,\"distinct_id\":42,"
    "\"$insert_id\":\"123e4567-e89b-12d3-a456-426614174000\",\"token\":\"PROJECT_TOKEN\"}}";

/* ---- the ordinary events take the fast path ---- */

TEST(fast_path_takes_browser_and_node_events_with_identical_records)
{
    event_opts_t o = opts(SEGMENT_EP_IMPORT);

    expect_fast(browser_event);
    expect_fast(node_event);
    expect_fast_o(import_event, &o);
    expect_fast_o(node_event, &o);
}

TEST(fast_path_takes_arrays_of_events_with_and_without_blanks)
{
    char buf[8192];

    snprintf(buf, sizeof(buf), "[%s,%s,%s]", browser_event, node_event, browser_event);
    expect_fast(buf);
    snprintf(buf, sizeof(buf), " [ %s ,\n\t%s\r\n ] \n", node_event, browser_event);
    expect_fast(buf);
    expect_fast("[{\"event\":\"a\",\"properties\":{\"token\":\"t\"}}]");
    /* Blanks inside one event of a batch and not in the others: each is minified alone. */
    expect_fast("[{\"event\":\"a\",\"properties\":{\"token\":\"t\"}},{ \"event\" : \"b\","
                "\"properties\":{\"token\":\"t\", \"s\":\" x \"}},{\"event\":\"c\","
                "\"properties\":{\"token\":\"t\",\"s\":\" y \"}}]");
    expect_fast("{ \"event\" : \"Signed up\" ,\n \"properties\" : { \"token\" : \"tok\" , "
                "\"n\" : [ 1 , 2 , { } , [ ] ] , \"s\" : \" a b \" } }\n");
}

TEST(fast_path_takes_events_without_time_or_insert_id_and_extra_members)
{
    expect_fast("{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}");
    expect_fast("{\"properties\":{\"token\":\"t\"},\"event\":\"e\",\"extra\":{\"a\":[1,{\"b\":"
                "[true,false,null]}]},\"n\":-0.5}");
    expect_fast_props("\"distinct_id\":12345");
    expect_fast_props("\"distinct_id\":-1.5");
    expect_fast_props("\"$insert_id\":\"123456789012345678901234567890abcdef\"");
}

TEST(fast_path_keeps_escapes_and_raw_unicode_as_sent)
{
    expect_fast("{\"event\":\"say \\\"hi\\\"\",\"properties\":{\"token\":\"t\",\"path\":"
                "\"C:\\\\dir\\/x\",\"lines\":\"a\\nb\\tc\\r\\b\\f\"}}");
    expect_fast_props("\"name\":\"Caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80 \xe4\xb8\xad\","
                      "\"k\xc3\xa9y\":\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\xed\x9f\xbf\"");
    expect_fast("{\"event\":\"\xc3\xa9v\xc3\xa9nement\",\"properties\":{\"token\":\"t\"}}");
    expect_fast_props("\"del\":\"\x7f\"");
}

TEST(fast_path_takes_numbers_jansson_reads_exactly)
{
    expect_fast_props("\"a\":0,\"b\":-0,\"c\":123456789012345678,\"d\":-123456789012345678");
    expect_fast_props("\"a\":0.1,\"b\":0.30000000000000004,\"c\":123456789012345678.5,"
                      "\"d\":-0.0000000000000000000001");
}

/* ---- time: same checks, same clamp ---- */

TEST(fast_path_time_in_seconds_and_ms_integer_and_real_match_jansson)
{
    /* Past and present: stored as sent. */
    expect_fast_props("\"time\":1732526000");
    expect_fast_props("\"time\":1732526000.5");
    expect_fast_props("\"time\":1732526000000");
    expect_fast_props("\"time\":1732526000000.25");
    expect_fast_props("\"time\":1732527000");
    expect_fast_props("\"time\":1732527000000");
    /* In the future: clamped to now in the same unit and type. */
    expect_fast_props("\"time\":1732527001");
    expect_fast_props("\"time\":1732527000.5");
    expect_fast_props("\"time\":1832527000");
    expect_fast_props("\"time\":1732527000001");
    expect_fast_props("\"time\":1732527000000.5");
    expect_fast_props("\"time\":99999999999");
    expect_fast_props("\"time\":100000000000");
    expect_fast(" { \"event\" : \"e\" , \"properties\" : { \"time\" : 1832527000.25 , "
                "\"token\" : \"t\" } } ");
}

TEST(fast_path_leaves_time_rule_failures_to_jansson)
{
    event_opts_t imp = opts(SEGMENT_EP_IMPORT);
    char buf[512];

    expect_fallback_props("\"time\":1732000000"); /* more than 5 days old */
    expect_fallback_props("\"time\":0");
    expect_fallback_props("\"time\":-5");
    expect_fallback_props("\"time\":\"1732527000\"");
    expect_fallback_props("\"time\":null");
    expect_fallback_props("\"time\":1.7e9");               /* an exponent */
    expect_fallback_props("\"time\":1234567890123456789"); /* 19 digits */
    snprintf(buf, sizeof(buf),
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":%s,"
             "\"distinct_id\":\"u\",\"$insert_id\":\"i\"}}",
             "31535999");
    expect_fallback_o(buf, &imp); /* before 1971 */
    snprintf(buf, sizeof(buf),
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":%s,"
             "\"distinct_id\":\"u\",\"$insert_id\":\"i\"}}",
             "1732530600001");
    expect_fallback_o(buf, &imp); /* more than an hour ahead */
    snprintf(buf, sizeof(buf),
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":%s,"
             "\"distinct_id\":\"u\",\"$insert_id\":\"i\"}}",
             "1732530600000");
    expect_fast_o(buf, &imp); /* exactly an hour ahead */
    snprintf(buf, sizeof(buf),
             "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":%s,"
             "\"distinct_id\":\"u\",\"$insert_id\":\"i\"}}",
             "31536000.0");
    expect_fast_o(buf, &imp); /* 1971-01-01 exactly */
}

/* ---- the client's ip ---- */

TEST(fast_path_adds_the_ip_like_jansson)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK), imp = opts(SEGMENT_EP_IMPORT);

    o.ip = imp.ip = "203.0.113.9";
    expect_fast_o(browser_event, &o);
    expect_fast_o(node_event, &o);
    expect_fast_o(import_event, &imp);
    expect_fast_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"1.1.1.1\"}}", &o);
    expect_fast_o("{\"event\":\"e\",\"properties\":{\"ip\":null,\"token\":\"t\"}}", &o);
    expect_fast_o(" { \"event\" : \"e\" , \"properties\" : { \"token\" : \"t\" } \n} ", &o);
    expect_fast_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1832527000.5}}", &o);
    expect_fast_o("[{\"event\":\"e\",\"properties\":{\"token\":\"t\"}},"
                  "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"ip\":\"x\"}}]",
                  &o);
    o.ip = "::ffff:192.0.2.1";
    expect_fast_o(browser_event, &o);
    /* An address with something to escape is left to jansson's encoder. */
    o.ip = "bad\"ip";
    expect_fallback_o(browser_event, &o);
    o.ip = "caf\xc3\xa9";
    expect_fallback_o(browser_event, &o);
    o.ip = "\xff";
    expect_fallback_o(browser_event, &o);
}

/* ---- the token allow-list ---- */

TEST(fast_path_allow_list_hit_is_fast_and_miss_is_jansson_s_401)
{
    static char *allowed[] = {"t", "PROJECT_TOKEN"};
    static const config_list_t tokens = {.items = allowed, .n = 2};
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    char buf[4096];

    o.tokens = &tokens;
    expect_fast_o(browser_event, &o);
    expect_fast_o(track_with(buf, sizeof(buf), ""), &o);
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"other\"}}", &o);
    CHECK_EQ_INT(last_rc, -EACCES);
    /* An escaped token is compared decoded: jansson's path decides. */
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"PROJECT\\u005fTOKEN\"}}", &o);
    CHECK_EQ_INT(last_rc, 0);
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"\\/t\"}}", &o);
    CHECK_EQ_INT(last_rc, -EACCES);
    /* A batch with one token off the list refuses the whole request. */
    snprintf(buf, sizeof(buf), "[%s,{\"event\":\"e\",\"properties\":{\"token\":\"x\"}}]",
             browser_event);
    expect_fallback_o(buf, &o);
    CHECK_EQ_INT(last_rc, -EACCES);
    /* Without a list any token goes, escaped or not. */
    o.tokens = NULL;
    expect_fast_o("{\"event\":\"e\",\"properties\":{\"token\":\"\\/t\"}}", &o);
}

/* ---- everything the fast path leaves to jansson ---- */

TEST(fast_path_leaves_invalid_json_to_jansson)
{
    static const char *const bad[] = {
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}} x",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\"},}",
        "[{\"event\":\"e\",\"properties\":{\"token\":\"t\"}},]",
        "[{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}",
        "{\"event\":\"e\" \"properties\":{\"token\":\"t\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":01}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":1.}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":.5}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":-}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":+1}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":1.5.3}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":truex}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":tru}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":NaN}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":\"x\\q\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":\"x\\u12\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":\"tab\there\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":\"nl\nhere\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"a\":\"unterminated}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\",'a':1}}",
        "{event:\"e\",\"properties\":{\"token\":\"t\"}}",
        "\xef\xbb\xbf{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}",
        "{\"event\":\"e\",\"properties\":{\"token\":\"t\"}}\x0b",
        "\"just a string\"",
        "42",
        "[]",
        "[1]",
        "[[]]",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_fallback(bad[i]);
}

TEST(fast_path_leaves_a_raw_nul_byte_to_jansson)
{
    static const char json[] = "{\"event\":\"a\0b\",\"properties\":{\"token\":\"t\"}}";
    event_opts_t o = opts(SEGMENT_EP_TRACK);

    CHECK_EQ_INT(both_ways_n(json, sizeof(json) - 1, &o), EVENT_PATH_JANSSON);
}

TEST(fast_path_leaves_invalid_utf8_to_jansson)
{
    static const char *const bad[] = {
        "\x80",             /* a lone continuation byte */
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong ASCII */
        "\xc3",             /* truncated */
        "\xc3\x28",         /* bad continuation */
        "\xe0\x80\x80",     /* overlong 3 bytes */
        "\xe0\x9f\xbf",     /* overlong 3 bytes, the largest */
        "\xe2\x82",         /* truncated 3 bytes */
        "\xed\xa0\x80",     /* surrogate D800 */
        "\xed\xbf\xbf",     /* surrogate DFFF */
        "\xf0\x80\x80\x80", /* overlong 4 bytes */
        "\xf0\x8f\xbf\xbf", /* overlong 4 bytes, the largest */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* beyond RFC 3629 */
        "\xf8\x88\x80\x80\x80",
        "\xfe",
        "\xff",
    };
    char extra[64];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(extra, sizeof(extra), "\"s\":\"a%sb\"", bad[i]);
        expect_fallback_props(extra);
        snprintf(extra, sizeof(extra), "\"k%s\":1", bad[i]);
        expect_fallback_props(extra);
    }
    /* The smallest and largest of each well-formed form go fast. */
    expect_fast_props("\"s\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xec\xbf\xbf\xed\x80\x80\xee\x80\x80"
                      "\xf0\x90\x80\x80\xf3\xbf\xbf\xbf\xf4\x80\x80\x80\xf4\x8f\xbf\xbf\"");
}

TEST(fast_path_leaves_unicode_escapes_and_escaped_keys_to_jansson)
{
    expect_fallback_props("\"s\":\"caf\\u00e9\"");
    expect_fallback_props("\"s\":\"\\u0000\"");
    expect_fallback_props("\"s\":\"\\ud83d\\ude00\"");
    expect_fallback_props("\"k\\\"ey\":1");
    expect_fallback_props("\"k\\/ey\":1");
    expect_fallback("{\"event\":\"e\",\"prop\\u0065rties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":\"e\",\"properties\":{\"tok\\u0065n\":\"t\"}}");
    expect_fallback("{\"event\":\"\\u0065\",\"properties\":{\"token\":\"t\"}}");
}

TEST(fast_path_leaves_duplicate_keys_at_any_depth_to_jansson)
{
    expect_fallback("{\"event\":\"a\",\"event\":\"b\",\"properties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":\"a\",\"properties\":{\"token\":\"t\"},\"properties\":"
                    "{\"token\":\"u\"}}");
    expect_fallback_props("\"token\":\"u\"");
    expect_fallback_props("\"a\":1,\"b\":2,\"a\":3");
    expect_fallback_props("\"o\":{\"x\":1,\"x\":1}");
    expect_fallback_props("\"o\":[{\"y\":{\"z\":1,\"z\":2}}]");
    expect_fallback("{\"event\":\"a\",\"extra\":{\"q\":{\"r\":1,\"r\":2}},\"properties\":"
                    "{\"token\":\"t\"}}");
    expect_fallback_props("\"\":1,\"\":2");
    /* Same key in sibling or nested objects is not a duplicate. */
    expect_fast_props("\"o\":{\"x\":1},\"p\":{\"x\":2,\"o\":{\"x\":3}},\"x\":4");
    expect_fast_props("\"\":1,\"a\":{\"\":2}");
}

TEST(fast_path_leaves_invalid_events_to_jansson)
{
    event_opts_t imp = opts(SEGMENT_EP_IMPORT);

    expect_fallback("{\"properties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":\"\",\"properties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":1,\"properties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":\"e\"}");
    expect_fallback("{\"event\":\"e\",\"properties\":[]}");
    expect_fallback("{\"event\":\"e\",\"properties\":{}}");
    expect_fallback("{\"event\":\"e\",\"properties\":{\"token\":\"\"}}");
    expect_fallback("{\"event\":\"e\",\"properties\":{\"token\":7}}");
    expect_fallback("{}");
    expect_fallback_props("\"distinct_id\":true");
    expect_fallback_props("\"distinct_id\":null");
    expect_fallback_props("\"distinct_id\":[1]");
    expect_fallback_props("\"$insert_id\":\"\"");
    expect_fallback_props("\"$insert_id\":\"has space\"");
    expect_fallback_props("\"$insert_id\":\"1234567890123456789012345678901234567\"");
    expect_fallback_props("\"$insert_id\":5");
    expect_fallback_props("\"$insert_id\":\"a\\/b\"");
    /* /import's required fields. */
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"distinct_id\":\"u\","
                      "\"$insert_id\":\"i\"}}",
                      &imp);
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732526000,"
                      "\"$insert_id\":\"i\"}}",
                      &imp);
    expect_fallback_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732526000,"
                      "\"distinct_id\":\"u\"}}",
                      &imp);
    expect_fast_o("{\"event\":\"e\",\"properties\":{\"token\":\"t\",\"time\":1732526000,"
                  "\"distinct_id\":\"u\",\"$insert_id\":\"i\"}}",
                  &imp);
}

TEST(fast_path_a_batch_with_one_bad_event_falls_back_with_the_same_answer)
{
    char buf[8192];

    snprintf(buf, sizeof(buf), "[%s,{\"event\":\"\",\"properties\":{\"token\":\"t\"}},%s]",
             browser_event, node_event);
    expect_fallback(buf);
    CHECK_EQ_INT(last_rc, 0);
    CHECK_EQ_INT(last_nrecords, 2);
    CHECK_EQ_INT(last_nfailures, 1);
    snprintf(buf, sizeof(buf), "[%s,%s,7]", browser_event, node_event);
    expect_fallback(buf);
    CHECK_EQ_INT(last_nfailures, 1);
    snprintf(buf, sizeof(buf),
             "[%s,{\"event\":\"e\",\"properties\":{\"token\":\"t\","
             "\"time\":1}}]",
             node_event);
    expect_fallback(buf);
    CHECK_EQ_INT(last_nfailures, 1);
}

TEST(fast_path_respects_max_events_and_max_event_bytes)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    char buf[8192];

    o.max_events = 2;
    snprintf(buf, sizeof(buf), "[%s,%s]", node_event, node_event);
    expect_fast_o(buf, &o);
    snprintf(buf, sizeof(buf), "[%s,%s,%s]", node_event, node_event, node_event);
    CHECK_EQ_INT(both_ways(buf, &o), EVENT_PATH_NONE);
    CHECK_EQ_INT(last_rc, -E2BIG);
    o.max_events = 2000;
    o.max_event_bytes = strlen(node_event);
    expect_fast_o(node_event, &o);
    o.max_event_bytes = strlen(node_event) - 1;
    expect_fallback_o(node_event, &o);
    CHECK_EQ_INT(last_nfailures, 1);
    /* The ip and the clamp count toward the limit. */
    o.ip = "203.0.113.9";
    o.max_event_bytes = strlen(node_event) + 10;
    expect_fallback_o(node_event, &o);
    CHECK_EQ_INT(last_nfailures, 1);
}

/* Build a properties list of `n` members "pK":K into buf. */
static void many_props(char *buf, size_t size, size_t n)
{
    size_t o = 0;

    o += (size_t)snprintf(buf + o, size - o, "{\"event\":\"e\",\"properties\":{\"token\":\"t\"");
    for (size_t k = 1; k < n; k++)
        o += (size_t)snprintf(buf + o, size - o, ",\"p%zu\":%zu", k, k);
    snprintf(buf + o, size - o, "}}");
}

/* A property "v" holding a container of `n` items, an array or an object. */
static void big_container(char *buf, size_t size, size_t n, int object)
{
    size_t o = 0;

    o += (size_t)snprintf(buf + o, size - o,
                          "{\"event\":\"e\",\"properties\":{\"token\":\"t\","
                          "\"v\":%c",
                          object ? '{' : '[');
    for (size_t k = 0; k < n; k++) {
        if (object)
            o += (size_t)snprintf(buf + o, size - o, "%s\"k%zu\":%zu", k ? "," : "", k, k);
        else
            o += (size_t)snprintf(buf + o, size - o, "%s%zu", k ? "," : "", k);
    }
    snprintf(buf + o, size - o, "%c}}", object ? '}' : ']');
}

TEST(fast_path_property_count_and_container_size_limits_match_jansson)
{
    static char buf[65536];

    many_props(buf, sizeof(buf), 254);
    expect_fast(buf);
    many_props(buf, sizeof(buf), 255);
    expect_fallback(buf);
    CHECK_EQ_INT(last_nfailures, 1);
    for (int object = 0; object < 2; object++) {
        big_container(buf, sizeof(buf), 254, object);
        expect_fast(buf);
        big_container(buf, sizeof(buf), 255, object);
        expect_fallback(buf);
        CHECK_EQ_INT(last_nfailures, 1);
    }
    /* Outside properties no such limit: jansson's path would store it too. */
    size_t o = (size_t)snprintf(buf, sizeof(buf), "{\"event\":\"e\",\"x\":[");
    for (size_t k = 0; k < 300; k++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%zu", k ? "," : "", k);
    snprintf(buf + o, sizeof(buf) - o, "],\"properties\":{\"token\":\"t\"}}");
    expect_fast(buf);
}

TEST(fast_path_nesting_limit_of_property_values_matches_jansson)
{
    expect_fast_props("\"v\":{\"a\":{\"b\":{}}}");
    expect_fast_props("\"v\":[[[1,2]],[{\"c\":1}]]");
    expect_fallback_props("\"v\":[[[1,2]],[{\"c\":[]}]]");
    expect_fallback_props("\"v\":{\"a\":{\"b\":{\"c\":{}}}}");
    expect_fallback_props("\"v\":[[[[]]]]");
    expect_fallback_props("\"v\":[1,{\"a\":[{\"deep\":true}]}]");
    CHECK_EQ_INT(last_nfailures, 1);
    /* Deep nesting outside properties: allowed, left to jansson beyond the fast path's depth. */
    expect_fast("{\"event\":\"e\",\"x\":[[[[[[{}]]]]]],\"properties\":{\"token\":\"t\"}}");
    expect_fallback("{\"event\":\"e\",\"x\":[[[[[[[[[[[]]]]]]]]]]],\"properties\":{\"token\":"
                    "\"t\"}}");
    CHECK_EQ_INT(last_nrecords, 1);
}

TEST(fast_path_never_serves_profile_updates_or_when_turned_off)
{
    event_opts_t o = opts(SEGMENT_EP_ENGAGE);

    CHECK_EQ_INT(both_ways("{\"$token\":\"t\",\"$distinct_id\":\"u\",\"$set\":{\"a\":1}}", &o),
                 EVENT_PATH_JANSSON);
    o = opts(SEGMENT_EP_GROUPS);
    CHECK_EQ_INT(
        both_ways("{\"$token\":\"t\",\"$group_key\":\"k\",\"$group_id\":1,\"$set\":{}}", &o),
        EVENT_PATH_JANSSON);
    o = opts(SEGMENT_EP_TRACK);
    o.fast_path = 0;
    event_batch_t b;
    CHECK_EQ_INT(event_batch_parse(&b, browser_event, strlen(browser_event), &o), 0);
    CHECK_EQ_INT(b.path, EVENT_PATH_JANSSON);
    CHECK_EQ_INT(b.nrecords, 1);
    event_batch_free(&b);
    o.fast_path = 1;
    CHECK_EQ_INT(event_batch_parse(&b, browser_event, strlen(browser_event), &o), 0);
    CHECK_EQ_INT(b.path, EVENT_PATH_FAST);
    CHECK_EQ_INT(b.nrecords, 1);
    CHECK_EQ_STR((const char *)b.records[0].payload, browser_event);
    event_batch_free(&b);
}

TEST(fast_path_stores_the_clamped_time_as_the_client_wrote_it)
{
    event_opts_t o = opts(SEGMENT_EP_TRACK);
    event_batch_t b;
    const char *in = "{\"event\":\"e\",\"properties\":{\"time\":1832527000.5,\"token\":\"t\"}}";

    o.ip = "203.0.113.9";
    CHECK_EQ_INT(event_batch_parse(&b, in, strlen(in), &o), 0);
    CHECK_EQ_INT(b.path, EVENT_PATH_FAST);
    CHECK_EQ_STR((const char *)b.records[0].payload,
                 "{\"event\":\"e\",\"properties\":{\"time\":1732527000.0,\"token\":\"t\","
                 "\"ip\":\"203.0.113.9\"}}");
    event_batch_free(&b);
}

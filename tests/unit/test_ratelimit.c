/*
 * Unit tests of ratelimit.c: token buckets refill at their rate up to their burst, a request takes
 * from all its tokens or none, Retry-After is the wait until enough is there, overrides and
 * unlimited tokens, the bounded table, and finding the token of a stored record.
 */
#include "test.h"

#include <errno.h>

#include "trackd/config.h"
#include "trackd/ratelimit.h"

#define SEC 1000000000ULL

static ratelimit_want_t want(const char *token, uint64_t events)
{
    ratelimit_want_t w;
    memset(&w, 0, sizeof(w));
    snprintf(w.token, sizeof(w.token), "%s", token);
    w.len = strlen(w.token);
    w.events = events;
    return w;
}

static int take1(ratelimit_t *rl, const char *token, uint64_t events, uint64_t now, uint64_t *retry)
{
    ratelimit_want_t w = want(token, events);
    return ratelimit_take(rl, &w, 1, now, retry);
}

static void cfg_with(config_t *c, const char *rate, const char *tokens)
{
    char err[256];
    config_defaults(c);
    if (rate)
        CHECK(config_set(c, "rate_limit", rate, err, sizeof(err)) == 0);
    if (tokens)
        CHECK(config_set(c, "rate_limit_token", tokens, err, sizeof(err)) == 0);
}

TEST(ratelimit_off_by_default_lets_everything_through)
{
    config_t c;
    uint64_t retry;
    cfg_with(&c, NULL, NULL);
    ratelimit_t *rl = ratelimit_new(&c);
    CHECK(rl != NULL);
    CHECK(!ratelimit_enabled(rl));
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(take1(rl, "T", 2000, SEC, &retry), 0);
    CHECK_EQ_INT(ratelimit_buckets(rl), 0);
    ratelimit_free(rl);
    config_free(&c);
}

TEST(ratelimit_bucket_allows_the_burst_then_the_rate_and_says_when_to_retry)
{
    config_t c;
    uint64_t retry, t = 10 * SEC;
    cfg_with(&c, "10 20", NULL);
    ratelimit_t *rl = ratelimit_new(&c);
    CHECK(ratelimit_enabled(rl));
    CHECK_EQ_INT(take1(rl, "T", 15, t, &retry), 0); /* 20 -> 5 */
    CHECK_EQ_INT(take1(rl, "T", 5, t, &retry), 0);  /* 5 -> 0 */
    CHECK_EQ_INT(take1(rl, "T", 1, t, &retry), 1);
    CHECK_EQ_INT(retry, 1);
    CHECK_EQ_INT(take1(rl, "T", 20, t, &retry), 1); /* 20 events at 10/s: 2 s away */
    CHECK_EQ_INT(retry, 2);
    /* Another token has its own bucket. */
    CHECK_EQ_INT(take1(rl, "U", 20, t, &retry), 0);
    /* Half a second later 5 events have refilled: 5 pass, a 6th does not. */
    t += SEC / 2;
    CHECK_EQ_INT(take1(rl, "T", 5, t, &retry), 0);
    CHECK_EQ_INT(take1(rl, "T", 1, t, &retry), 1);
    /* Refill stops at the burst, however long the token was idle. */
    t += 3600 * SEC;
    CHECK_EQ_INT(take1(rl, "T", 21, t, &retry), 0); /* bigger than the burst: passes when full */
    CHECK_EQ_INT(take1(rl, "T", 1, t, &retry), 1);  /* ... and leaves the bucket in debt */
    CHECK_EQ_INT(retry, 1);                         /* -1 + 1 needed at 10/s: 0.2 s -> 1 */
    t += SEC / 5;
    CHECK_EQ_INT(take1(rl, "T", 1, t + 1, &retry), 0);
    ratelimit_free(rl);
    config_free(&c);
}

TEST(ratelimit_takes_from_every_token_of_a_request_or_from_none)
{
    config_t c;
    uint64_t retry, t = SEC;
    ratelimit_want_t w[2];
    cfg_with(&c, "10 10", NULL);
    ratelimit_t *rl = ratelimit_new(&c);
    CHECK_EQ_INT(take1(rl, "B", 8, t, &retry), 0); /* B: 2 left */
    w[0] = want("A", 5);
    w[1] = want("B", 5);
    CHECK_EQ_INT(ratelimit_take(rl, w, 2, t, &retry), 1);
    /* A was not charged for the refused request: its 10 are all there. */
    CHECK_EQ_INT(take1(rl, "A", 10, t, &retry), 0);
    ratelimit_free(rl);
    config_free(&c);
}

TEST(ratelimit_overrides_apply_per_token_and_rate_0_is_unlimited)
{
    config_t c;
    uint64_t retry, t = SEC;
    cfg_with(&c, "1 1", "big 1000 1000, free 0");
    ratelimit_t *rl = ratelimit_new(&c);
    CHECK_EQ_INT(take1(rl, "big", 1000, t, &retry), 0);
    CHECK_EQ_INT(take1(rl, "big", 1, t, &retry), 1);
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(take1(rl, "free", 2000, t, &retry), 0);
    CHECK_EQ_INT(take1(rl, "other", 1, t, &retry), 0);
    CHECK_EQ_INT(take1(rl, "other", 1, t, &retry), 1);
    ratelimit_free(rl);
    config_free(&c);

    /* Only overrides: the limiter is on, tokens without one are unlimited. */
    cfg_with(&c, NULL, "small 1 1");
    rl = ratelimit_new(&c);
    CHECK(ratelimit_enabled(rl));
    CHECK_EQ_INT(take1(rl, "small", 1, t, &retry), 0);
    CHECK_EQ_INT(take1(rl, "small", 1, t, &retry), 1);
    CHECK_EQ_INT(take1(rl, "anyone", 100000, t, &retry), 0);
    ratelimit_free(rl);
    config_free(&c);
}

TEST_T(ratelimit_table_stays_bounded_under_a_flood_of_distinct_tokens, 30)
{
    config_t c;
    uint64_t retry, t = SEC;
    char tok[32];
    cfg_with(&c, "1 1", NULL);
    ratelimit_t *rl = ratelimit_new(&c);
    /* Twice the cap, each left empty (not refilled): the table never passes the cap. */
    for (int i = 0; i < 2 * RATELIMIT_MAX_BUCKETS; i++) {
        snprintf(tok, sizeof(tok), "tok-%d", i);
        take1(rl, tok, 1, t, &retry);
        CHECK(ratelimit_buckets(rl) <= RATELIMIT_MAX_BUCKETS);
    }
    CHECK_EQ_INT(ratelimit_buckets(rl), RATELIMIT_MAX_BUCKETS);
    /* Past the cap, new tokens share the overflow bucket: its one event is gone already. */
    CHECK_EQ_INT(take1(rl, "late-a", 1, t, &retry), 1);
    /* Once the buckets have refilled they are dropped, and new tokens get their own again. */
    t += 10 * SEC;
    CHECK_EQ_INT(take1(rl, "late-b", 1, t, &retry), 0);
    CHECK(ratelimit_buckets(rl) < 100);
    ratelimit_free(rl);
    config_free(&c);
}

TEST(ratelimit_token_of_finds_the_project_token_at_the_right_depth)
{
    char tok[RATELIMIT_TOKEN_MAX + 1];
    static const struct {
        const char *json;
        const char *token;
    } cases[] = {
        {"{\"event\":\"e\",\"properties\":{\"token\":\"abc\",\"x\":1}}", "abc"},
        /* A nested "token" or one inside a string is not the project token. */
        {"{\"event\":\"\\\"token\\\":\\\"no\\\"\",\"properties\":{\"a\":{\"token\":\"no\"},"
         "\"l\":[{\"token\":\"no\"}],\"token\":\"yes\"}}",
         "yes"},
        {"{ \"properties\" : { \"distinct_id\" : \"d\" , \"token\" : \"sp\" } }", "sp"},
        /* Escapes are undone, so "\u0061bc" and "abc" share a bucket. */
        {"{\"properties\":{\"token\":\"\\u0061bc\"}}", "abc"},
        {"{\"properties\":{\"token\":\"\\ud83d\\ude00\"}}", "\xf0\x9f\x98\x80"},
        {"{\"$token\":\"eng\",\"$distinct_id\":\"d\",\"$set\":{\"token\":\"no\"}}", "eng"},
        {"{\"$set\":{\"$token\":\"no\"},\"$token\":\"late\"}", "late"},
        {"{\"event\":\"e\",\"properties\":{\"distinct_id\":\"d\"}}", ""},
        {"[1,2]", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = ratelimit_token_of(cases[i].json, strlen(cases[i].json), tok);
        if (n != (int)strlen(cases[i].token) || strcmp(tok, cases[i].token) != 0) {
            fprintf(stderr, "  case %zu: got %d '%s'\n", i, n, tok);
            CHECK(0);
        }
    }
    char big[600];
    int o = snprintf(big, sizeof(big), "{\"properties\":{\"token\":\"");
    memset(big + o, 'x', 300);
    snprintf(big + o + 300, sizeof(big) - (size_t)o - 300, "\"}}");
    CHECK_EQ_INT(ratelimit_token_of(big, strlen(big), tok), -E2BIG);
    CHECK_EQ_STR(tok, "");
}

TEST(ratelimit_wants_groups_records_by_token)
{
    static const char *p[] = {
        "{\"properties\":{\"token\":\"a\"}}",
        "{\"properties\":{\"token\":\"b\"}}",
        "{\"properties\":{\"token\":\"a\"}}",
        "{\"$token\":\"a\"}",
        "{\"properties\":{}}",
    };
    log_record_t recs[5];
    ratelimit_want_t *w;
    size_t n;
    for (size_t i = 0; i < 5; i++) {
        recs[i].payload = p[i];
        recs[i].len = strlen(p[i]);
    }
    CHECK_EQ_INT(ratelimit_wants(recs, 5, &w, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(w[0].token, "a");
    CHECK_EQ_INT(w[0].events, 3);
    CHECK_EQ_STR(w[1].token, "b");
    CHECK_EQ_INT(w[1].events, 1);
    free(w);
}

/*
 * Unit tests of the log-linear histogram: bucket geometry, percentiles against a sorted reference
 * on random data, merge, and the edges (empty, one value, clamping).
 */
#include "test.h"

#include <math.h>
#include <stdint.h>

#include "trackd/hist.h"

#define REF_N 200000

/* A small deterministic generator, so a failure reproduces. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The definition hist.h promises: the value of rank ceil(p/100 * n) in sorted order. */
static uint64_t ref_percentile(const uint64_t *sorted, size_t n, double p)
{
    long double r = ceill((long double)p / 100.0L * (long double)n);
    size_t rank = r < 1.0L ? 1 : (size_t)r;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* hist answer must be >= the reference and at most 1/64 above it (the bucket width bound). */
static void check_close(uint64_t got, uint64_t want)
{
    if (got < want || (double)(got - want) > (double)want / 64.0) {
        fprintf(stderr, "  got %llu, reference %llu\n", (unsigned long long)got,
                (unsigned long long)want);
        CHECK(0);
    }
}

static const double PCTS[] = {0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};

static void check_against_reference(uint64_t *vals, size_t n)
{
    hist_t *h = malloc(sizeof(*h));
    CHECK(h != NULL);
    hist_init(h);
    for (size_t i = 0; i < n; i++)
        hist_record(h, vals[i]);
    qsort(vals, n, sizeof(vals[0]), cmp_u64);
    CHECK_EQ_INT(h->count, n);
    CHECK_EQ_INT(h->min, vals[0]);
    CHECK_EQ_INT(h->max, vals[n - 1]);
    for (size_t i = 0; i < sizeof(PCTS) / sizeof(PCTS[0]); i++)
        check_close(hist_percentile(h, PCTS[i]), ref_percentile(vals, n, PCTS[i]));
    free(h);
}

TEST(hist_bucket_bounds_are_contiguous_and_contain_their_values)
{
    CHECK_EQ_INT(hist_bucket_low(0), 0);
    for (size_t i = 1; i < HIST_BUCKETS; i++) {
        CHECK_EQ_INT(hist_bucket_low(i), hist_bucket_high(i - 1) + 1);
        CHECK(hist_bucket_high(i) >= hist_bucket_low(i));
        /* Width relative to the bucket's smallest value: at most 1/64 past the exact range. */
        if (i >= 128)
            CHECK((double)(hist_bucket_high(i) - hist_bucket_low(i)) <=
                  (double)hist_bucket_low(i) / 64.0);
        CHECK_EQ_INT(hist_index(hist_bucket_low(i)), i);
        CHECK_EQ_INT(hist_index(hist_bucket_high(i)), i);
    }
    CHECK_EQ_INT(hist_bucket_high(HIST_BUCKETS - 1), HIST_VALUE_MAX);
    CHECK_EQ_INT(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
}

TEST(hist_small_values_are_exact)
{
    hist_t h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 100; v++)
        hist_record(&h, v);
    CHECK_EQ_INT(hist_percentile(&h, 50), 50);
    CHECK_EQ_INT(hist_percentile(&h, 90), 90);
    CHECK_EQ_INT(hist_percentile(&h, 99), 99);
    CHECK_EQ_INT(hist_percentile(&h, 99.9), 100);
    CHECK_EQ_INT(hist_percentile(&h, 100), 100);
    CHECK_EQ_INT(hist_percentile(&h, 0), 1);
    CHECK(fabs(hist_mean(&h) - 50.5) < 1e-9);
}

TEST(hist_empty_reports_zero)
{
    hist_t h;
    hist_init(&h);
    CHECK_EQ_INT(hist_percentile(&h, 50), 0);
    CHECK_EQ_INT(hist_percentile(&h, 100), 0);
    CHECK(hist_mean(&h) == 0.0);
    CHECK_EQ_INT(hist_count_le(&h, 1000), 0);
}

TEST(hist_single_value_is_every_percentile)
{
    hist_t h;
    hist_init(&h);
    hist_record(&h, 123456789);
    for (size_t i = 0; i < sizeof(PCTS) / sizeof(PCTS[0]); i++)
        CHECK_EQ_INT(hist_percentile(&h, PCTS[i]), 123456789);
}

TEST(hist_percentiles_match_sorted_reference_on_uniform_data)
{
    uint64_t *v = malloc(REF_N * sizeof(*v));
    CHECK(v != NULL);
    for (size_t i = 0; i < REF_N; i++)
        v[i] = rng() % 50000000; /* up to 50 ms in ns */
    check_against_reference(v, REF_N);
    free(v);
}

TEST(hist_percentiles_match_sorted_reference_on_long_tailed_data)
{
    uint64_t *v = malloc(REF_N * sizeof(*v));
    CHECK(v != NULL);
    for (size_t i = 0; i < REF_N; i++) {
        /* Log-uniform over 10 us .. 10 s: like latencies with a tail, across 20 octaves. */
        double u = (double)(rng() >> 11) / 9007199254740992.0;
        v[i] = (uint64_t)(10000.0 * pow(1e6, u));
    }
    check_against_reference(v, REF_N);
    free(v);
}

TEST(hist_percentiles_match_reference_with_heavy_ties)
{
    uint64_t *v = malloc(REF_N * sizeof(*v));
    CHECK(v != NULL);
    for (size_t i = 0; i < REF_N; i++)
        v[i] = 1000000 * (1 + rng() % 5) + (i % 1000 == 0 ? 900000000 : 0);
    check_against_reference(v, REF_N);
    free(v);
}

TEST(hist_merge_equals_recording_everything_in_one)
{
    hist_t *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    CHECK(a && b && all);
    hist_init(a);
    hist_init(b);
    hist_init(all);
    for (int i = 0; i < 100000; i++) {
        uint64_t x = rng() % 1000000000;
        hist_record(i % 3 ? a : b, x);
        hist_record(all, x);
    }
    hist_t *m = malloc(sizeof(*m));
    CHECK(m != NULL);
    hist_init(m);
    hist_merge(m, a);
    hist_merge(m, b);
    CHECK(memcmp(m, all, sizeof(*m)) == 0);
    for (size_t i = 0; i < sizeof(PCTS) / sizeof(PCTS[0]); i++)
        CHECK_EQ_INT(hist_percentile(m, PCTS[i]), hist_percentile(all, PCTS[i]));
    /* Merging an empty histogram changes nothing, min included. */
    hist_init(b);
    hist_merge(m, b);
    CHECK(memcmp(m, all, sizeof(*m)) == 0);
    free(a);
    free(b);
    free(all);
    free(m);
}

TEST(hist_merge_into_empty_keeps_min_and_max)
{
    hist_t a, b;
    hist_init(&a);
    hist_init(&b);
    hist_record(&b, 700);
    hist_record(&b, 5);
    hist_merge(&a, &b);
    CHECK_EQ_INT(a.min, 5);
    CHECK_EQ_INT(a.max, 700);
    CHECK_EQ_INT(a.count, 2);
}

TEST(hist_values_past_the_range_are_clamped_but_max_is_true)
{
    hist_t h;
    hist_init(&h);
    hist_record(&h, 10);
    hist_record(&h, HIST_VALUE_MAX + 12345);
    CHECK_EQ_INT(h.clamped, 1);
    CHECK_EQ_INT(h.buckets[HIST_BUCKETS - 1], 1);
    CHECK_EQ_INT(hist_percentile(&h, 100), HIST_VALUE_MAX + 12345);
    CHECK_EQ_INT(hist_percentile(&h, 50), 10);
}

TEST(hist_count_le_is_cumulative)
{
    hist_t h;
    hist_init(&h);
    hist_record_n(&h, 50, 3);
    hist_record_n(&h, 5000, 2);
    hist_record_n(&h, 5000000, 1);
    CHECK_EQ_INT(hist_count_le(&h, 49), 0);
    CHECK_EQ_INT(hist_count_le(&h, 50), 3);
    CHECK_EQ_INT(hist_count_le(&h, 4000), 3);
    CHECK_EQ_INT(hist_count_le(&h, 5000), 5);
    CHECK_EQ_INT(hist_count_le(&h, 6000000), 6);
    CHECK_EQ_INT(h.sum, 3 * 50 + 2 * 5000 + 5000000);
}

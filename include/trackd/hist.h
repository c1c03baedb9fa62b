/*
 * A log-linear histogram of non-negative integer values (latencies in ns, sizes in bytes), in the
 * manner of HdrHistogram: values below 2^HIST_SUB_BITS are counted exactly; above, every power of
 * two is split into 2^(HIST_SUB_BITS-1) equal buckets, so a bucket is never wider than 1/64 of the
 * values it holds. The struct is a fixed array: recording is a few shifts and an increment, with
 * no allocation, so it fits a request hot path (trackbench) and per-worker counters (/metrics).
 * Histograms of the same build merge by adding buckets. Not thread-safe: one writer at a time.
 */
#ifndef TRACKD_HIST_H
#define TRACKD_HIST_H

#include <stddef.h>
#include <stdint.h>

/** Bits of exact precision: values < 2^HIST_SUB_BITS are exact, larger ones within 1/64. */
#define HIST_SUB_BITS 7
/** Values up to 2^HIST_MAX_BITS - 1 (about 1100 s in ns) are bucketed; larger ones are clamped. */
#define HIST_MAX_BITS 40
/** Number of buckets that follows from the two constants above. */
#define HIST_BUCKETS                                                                               \
    ((1u << HIST_SUB_BITS) + (HIST_MAX_BITS - HIST_SUB_BITS) * (1u << (HIST_SUB_BITS - 1)))
/** Largest value a bucket can hold exactly; larger values land in the last bucket. */
#define HIST_VALUE_MAX ((UINT64_C(1) << HIST_MAX_BITS) - 1)

/** The histogram. Plain data: may be copied, written to a pipe, zeroed by hist_init(). */
typedef struct {
    uint64_t count;   /* values recorded */
    uint64_t min;     /* smallest value recorded (UINT64_MAX when empty) */
    uint64_t max;     /* largest value recorded, unclamped (0 when empty) */
    uint64_t sum;     /* sum of values (wraps only past 2^64: 584 years of ns) */
    uint64_t clamped; /* values above HIST_VALUE_MAX, counted in the last bucket */
    uint64_t buckets[HIST_BUCKETS];
} hist_t;

/** Empty `h`. */
void hist_init(hist_t *h);

/** Record `value` once. */
void hist_record(hist_t *h, uint64_t value);

/** Record `value` `n` times. */
void hist_record_n(hist_t *h, uint64_t value, uint64_t n);

/** Add every value of `src` to `dst` (both from hist_init). */
void hist_merge(hist_t *dst, const hist_t *src);

/**
 * The value at percentile `p` (0..100): the smallest recorded value v such that at least
 * ceil(p/100 * count) values are <= v, reported as the highest value of v's bucket clamped to
 * [min, max], so never below the true answer and at most 1/64 above it. 0 when empty; p >= 100
 * gives max.
 */
uint64_t hist_percentile(const hist_t *h, double p);

/** Mean of the recorded values (0 when empty). */
double hist_mean(const hist_t *h);

/** Number of recorded values <= `value`, to bucket precision (for cumulative exports). */
uint64_t hist_count_le(const hist_t *h, uint64_t value);

/** Bucket index of `value` (exposed for tests and exporters). */
size_t hist_index(uint64_t value);

/** Smallest and largest value that bucket `index` holds. */
uint64_t hist_bucket_low(size_t index);
uint64_t hist_bucket_high(size_t index);

#endif

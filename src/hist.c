/*
 * Log-linear histogram (see hist.h). The bucket of a value v >= 2^SUB is found from its highest
 * set bit: the shift e = msb - SUB + 1 keeps the top SUB bits of v as a mantissa in
 * [2^(SUB-1), 2^SUB), and each shift owns 2^(SUB-1) consecutive buckets after the exact ones. So
 * the index is monotonic in v, and the relative width of a bucket is at most 2^e / 2^(SUB-1+e).
 */
#include "trackd/hist.h"

#include <math.h>
#include <string.h>

#define HIST_EXACT (UINT64_C(1) << HIST_SUB_BITS)
#define HIST_HALF (UINT64_C(1) << (HIST_SUB_BITS - 1))

void hist_init(hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t hist_index(uint64_t value)
{
    if (value > HIST_VALUE_MAX)
        value = HIST_VALUE_MAX;
    if (value < HIST_EXACT)
        return (size_t)value;
    unsigned msb = 63u - (unsigned)__builtin_clzll(value);
    unsigned e = msb - HIST_SUB_BITS + 1;
    uint64_t m = value >> e;
    return (size_t)(HIST_EXACT + (uint64_t)(e - 1) * HIST_HALF + (m - HIST_HALF));
}

uint64_t hist_bucket_low(size_t index)
{
    if (index < HIST_EXACT)
        return index;
    uint64_t k = index - HIST_EXACT;
    unsigned e = (unsigned)(k / HIST_HALF) + 1;
    uint64_t m = HIST_HALF + k % HIST_HALF;
    return m << e;
}

uint64_t hist_bucket_high(size_t index)
{
    if (index < HIST_EXACT)
        return index;
    uint64_t k = index - HIST_EXACT;
    unsigned e = (unsigned)(k / HIST_HALF) + 1;
    uint64_t m = HIST_HALF + k % HIST_HALF;
    return ((m + 1) << e) - 1;
}

void hist_record_n(hist_t *h, uint64_t value, uint64_t n)
{
    if (n == 0)
        return;
    h->buckets[hist_index(value)] += n;
    h->count += n;
    h->sum += value * n;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    if (value > HIST_VALUE_MAX)
        h->clamped += n;
}

void hist_record(hist_t *h, uint64_t value)
{
    hist_record_n(h, value, 1);
}

void hist_merge(hist_t *dst, const hist_t *src)
{
    if (src->count == 0)
        return;
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    dst->clamped += src->clamped;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    if (p < 0.0)
        p = 0.0;
    /* Rank in 1..count; long double keeps ceil() exact for counts far beyond 2^53. */
    long double r = ceill((long double)p / 100.0L * (long double)h->count);
    uint64_t rank = r < 1.0L ? 1 : (uint64_t)r;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double hist_mean(const hist_t *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

uint64_t hist_count_le(const hist_t *h, uint64_t value)
{
    if (h->count == 0 || value < h->min)
        return 0;
    if (value >= h->max)
        return h->count;
    size_t last = hist_index(value);
    uint64_t n = 0;
    for (size_t i = 0; i <= last; i++)
        n += h->buckets[i];
    return n;
}

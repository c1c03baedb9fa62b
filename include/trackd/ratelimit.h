/*
 * Per-token rate limits (config rate_limit, rate_limit_token): one token bucket per project token
 * and worker, refilled at `rate` events per second up to `burst`. A request takes as many tokens
 * from each of its project tokens' buckets as it holds events for that token, all or none; when
 * a bucket is short, the request is answered 429 with Retry-After set to the seconds until the
 * bucket holds enough. A batch larger than the burst passes once the bucket is full and leaves it
 * in debt, so the long-run rate is the configured one whatever the batch size.
 *
 * Limits are per worker (each worker runs its own loop and its own buckets): with N workers
 * behind a balancer, a token gets up to N times its rate in all. The table of buckets is bounded
 * (RATELIMIT_MAX_BUCKETS): a bucket that has refilled is the same as no bucket and is dropped
 * first; beyond that, tokens share one overflow bucket with the default limit.
 */
#ifndef TRACKD_RATELIMIT_H
#define TRACKD_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "trackd/config.h"
#include "trackd/log.h"

/** Buckets tracked per worker before new tokens share the overflow bucket. */
#define RATELIMIT_MAX_BUCKETS 65536
/** Longest token keyed on its own (after JSON unescaping); longer ones share one bucket. */
#define RATELIMIT_TOKEN_MAX 255

typedef struct ratelimit_s ratelimit_t;

/** What one request asks of one project token's bucket. */
typedef struct {
    char token[RATELIMIT_TOKEN_MAX + 1]; /* NUL-terminated; "" = a token too long to key */
    size_t len;
    uint64_t events;
} ratelimit_want_t;

/** Create the buckets for the limits in `cfg` (borrowed). NULL if out of memory. */
ratelimit_t *ratelimit_new(const config_t *cfg);

/** Free them. */
void ratelimit_free(ratelimit_t *rl);

/** 1 if any limit is configured (otherwise every request passes without a lookup). */
int ratelimit_enabled(const ratelimit_t *rl);

/**
 * Take want[i].events from each bucket at monotonic time `now_ns`, all or none. Returns 0 when
 * taken; 1 when refused, with *retry_after_s (>= 1) the seconds until every bucket would hold
 * enough; -ENOMEM if a bucket could not be created (the request passes: a limiter that is out of
 * memory must not refuse traffic the budget would take).
 */
int ratelimit_take(ratelimit_t *rl, const ratelimit_want_t *want, size_t n, uint64_t now_ns,
                   uint64_t *retry_after_s);

/** Buckets tracked now (for /metrics and tests). */
size_t ratelimit_buckets(const ratelimit_t *rl);

/**
 * The project token of a stored record (`properties.token` of an event, `$token` of a profile or
 * group update), JSON-unescaped into `out` (RATELIMIT_TOKEN_MAX + 1 bytes), so that "\u0061" and
 * "a" share a bucket. Returns its length, 0 if the record has none, or -E2BIG when it is longer
 * than RATELIMIT_TOKEN_MAX (out is then "").
 */
int ratelimit_token_of(const char *json, size_t len, char *out);

/**
 * Group the tokens of `n` records into `*wantp` (malloc'd, *nwant entries, one per distinct
 * token, events counted; free() it). Returns 0 or -ENOMEM. Records without a token are skipped.
 */
int ratelimit_wants(const log_record_t *recs, size_t n, ratelimit_want_t **wantp, size_t *nwant);

#endif

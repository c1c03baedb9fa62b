/*
 * `trackbench verify`: the check behind every "nothing lost" claim. It compares a ledger (the
 * insert ids trackd acknowledged to trackbench, one a line) with what trackd's log holds, read in
 * process with logread.h, or as NDJSON from `trackctl cat --data-dir DIR` in a subprocess. Every
 * acknowledged id must be found; an id found twice means the log stored one event twice.
 */
#ifndef TRACKD_BENCH_VERIFY_H
#define TRACKD_BENCH_VERIFY_H

#include <stddef.h>
#include <stdint.h>

/** How many missing (or duplicated) ids the result lists by name. */
#define BENCH_VERIFY_SHOW 10
/** Longest ledger line taken as an id (the API allows 36 bytes). */
#define BENCH_VERIFY_ID_MAX 64

/** The outcome of a verification. */
typedef struct {
    uint64_t acknowledged;   /* distinct ids in the ledger */
    uint64_t ledger_repeats; /* ledger lines repeating an earlier id (should be 0) */
    uint64_t records;        /* records read from the log */
    uint64_t without_id;     /* records with no properties.$insert_id (profiles, groups) */
    uint64_t found;          /* acknowledged ids present in the log */
    uint64_t missing;        /* acknowledged ids absent from the log */
    uint64_t duplicated;     /* acknowledged ids present more than once */
    uint64_t unacknowledged; /* ids in the log that are not in the ledger (sent, not acked) */
    uint64_t bad_lines;      /* log lines (records) that are not JSON objects */
    uint64_t log_damage;     /* logread only: damaged segments, broken chains, torn tails */
    size_t nshow_missing, nshow_duplicated;
    char show_missing[BENCH_VERIFY_SHOW][BENCH_VERIFY_ID_MAX + 1];
    char show_duplicated[BENCH_VERIFY_SHOW][BENCH_VERIFY_ID_MAX + 1];
} bench_verify_t;

/**
 * Verify `ledger` against the log in `data_dir`: read with logread.h when `trackctl` is NULL,
 * else from what `TRACKCTL cat --data-dir DATA_DIR` prints. Returns 0 with `out` filled (check
 * out->missing), or a negative errno with a message on stderr (unreadable ledger or log,
 * trackctl failed to run or exited non-zero).
 */
int bench_verify_run(const char *ledger, const char *data_dir, const char *trackctl,
                     bench_verify_t *out);

/**
 * The insert id of one NDJSON line of the log: properties.$insert_id of the record, which may be
 * the line itself or nested in it (as an object or as a JSON string) up to three levels deep.
 * Copies it to `id` (BENCH_VERIFY_ID_MAX + 1 bytes) and returns 1; 0 if the record has none;
 * -EINVAL if the line is not a JSON object.
 */
int bench_verify_line_id(const char *line, size_t len, char *id);

#endif

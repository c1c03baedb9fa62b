/*
 * Reading the event log back (trackctl's engine; the server never calls it). A reader iterates
 * the records of a data directory, one slot or all slots merged in receive-time order, from the
 * start or strictly after a cursor of saved positions, and can follow the writers as they append
 * and roll segments. Reads stream through one buffer per slot: memory does not grow with the size
 * of the log. Problems are reported through a callback and reading goes on with the next segment,
 * so one damaged file never hides the rest of the log.
 *
 * Merge order: records are compared by (receive time, slot, segment, offset), taking the next
 * record of each slot in turn, so each slot's records always come out in their write order. Within
 * a slot receive times only go backwards across a wall-clock step; the merged stream is then
 * sorted except around that step, and nothing is lost or repeated.
 */
#ifndef TRACKD_LOGREAD_H
#define TRACKD_LOGREAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** Largest slot number a slot directory name (w001 .. w9999) may carry. */
#define LOGREAD_SLOT_MAX 9999u
/** Room for a formatted position "slot:segment:offset" with its NUL. */
#define LOGREAD_POS_STRLEN 48
/** Initial size of a slot's read buffer; it grows to hold the largest record met. */
#define LOGREAD_BUF_SIZE (1024u * 1024)
/** Suffix `trackctl repair` gives a damaged segment it moves aside ("<seq>.seg.damaged"). */
#define LOGREAD_DAMAGED_SUFFIX ".damaged"
/** Sequence number of the first segment a writer creates in a new slot. */
#define LOGREAD_FIRST_SEQ 1

/** Where a record lives: slot, segment sequence number, byte offset of its header. */
typedef struct {
    uint32_t slot;
    uint64_t seq;
    uint64_t offset;
} logread_pos_t;

/** Parse "slot:segment:offset" (decimal). Returns 0 or -EINVAL. */
int logread_pos_parse(const char *s, logread_pos_t *pos);

/** Format `pos` as "slot:segment:offset" into `out` (LOGREAD_POS_STRLEN bytes suffice). */
void logread_pos_format(char *out, size_t outlen, const logread_pos_t *pos);

/**
 * A cursor: at most one position per slot, the last record already consumed there. Reading after
 * a cursor starts strictly after each listed position, and at the beginning of unlisted slots.
 * Zero-initialise; free with logread_cursor_free().
 */
typedef struct {
    logread_pos_t *pos;
    size_t n, cap;
} logread_cursor_t;

/**
 * Add the positions of a cursor string: "" (none) or "1:3:4096,2:1:40" (one entry per slot,
 * any order). Returns 0, -EINVAL (syntax, slot 0 or listed twice) or -ENOMEM.
 */
int logread_cursor_parse(logread_cursor_t *c, const char *s);

/** Set the position of `pos->slot`, replacing any earlier one. Returns 0 or -ENOMEM. */
int logread_cursor_set(logread_cursor_t *c, const logread_pos_t *pos);

/** The position of `slot`, or NULL if the cursor has none. */
const logread_pos_t *logread_cursor_get(const logread_cursor_t *c, uint32_t slot);

/** Format as a cursor string, slots ascending, into a malloc'd `*out`. Returns 0 or -ENOMEM. */
int logread_cursor_format(const logread_cursor_t *c, char **out);

/** Free what the cursor holds; it is empty (and reusable) afterwards. */
void logread_cursor_free(logread_cursor_t *c);

/** A record as read; `payload` stays valid until the next call on the same reader. */
typedef struct {
    logread_pos_t pos;
    uint64_t time_ms; /* receive time */
    uint8_t endpoint; /* segment_endpoint_t */
    uint32_t len;
    const char *payload; /* the stored event, compact JSON, not NUL-terminated */
} logread_record_t;

/** What kind of problem a reader met. */
typedef enum {
    LOGREAD_DAMAGE = 1,    /* a segment is damaged (record in a closed one, any header, or the
                              middle of the newest): records lost; repair moves it aside */
    LOGREAD_CHAIN = 2,     /* the chain is broken but no file is damaged: segments missing
                              between present ones, a header naming another slot or sequence */
    LOGREAD_TORN_TAIL = 3, /* the last segment of a slot ends in an incomplete or bad record */
    LOGREAD_NOTICE = 4,    /* explained and harmless: retention, a segment moved aside, ... */
    LOGREAD_ERROR = 5,     /* a file could not be read (I/O error, permission) or a bad cursor */
} logread_issue_kind_t;

/** One problem; every pointer is valid only during the callback. */
typedef struct {
    logread_issue_kind_t kind;
    uint32_t slot;
    uint64_t seq;     /* segment concerned; 0 when none */
    uint64_t offset;  /* byte offset in it (damage, torn tail) */
    const char *path; /* file or directory concerned */
    const char *what; /* one sentence, no trailing newline */
} logread_issue_t;

typedef void (*logread_issue_cb)(const logread_issue_t *issue, void *arg);

/** Reader settings. Zero-initialised means: all slots, from the start, no following. */
typedef struct {
    uint32_t slot;                 /* 0 = every slot merged, else this slot alone */
    const logread_cursor_t *after; /* start strictly after these positions (copied); NULL = start */
    int follow;                /* 1: never end; a tail that may still be written is waited for */
    logread_issue_cb on_issue; /* NULL = problems are only counted */
    void *issue_arg;
} logread_opts_t;

typedef struct logread_s logread_t;

/** Counts of problems met so far by a reader (each reported once). */
typedef struct {
    uint64_t damage, chain, torn_tails, notices, errors;
} logread_counts_t;

/**
 * Open a reader on `data_dir`. Every cursor position that applies is checked first: a position
 * that does not start a record is -EINVAL (reported as LOGREAD_ERROR); one whose segment is gone
 * is a notice. Returns 0, -ENOENT if `data_dir` (or the asked slot) does not exist, or another
 * negative errno.
 */
int logread_open(logread_t **rp, const char *data_dir, const logread_opts_t *opts);

/**
 * The next record in merge order: returns 1 and fills `rec`, 0 when there is nothing more (for a
 * following reader: nothing more yet; call again later, new slots and segments are picked up), or
 * a negative errno (-ENOMEM). Damage is reported and skipped, not returned.
 */
int logread_next(logread_t *r, logread_record_t *rec);

/**
 * Stop reading slot `slot`: none of its records are returned any more (`cat --until` ends a slot
 * at its first record past the window). The record last returned stays valid until the next call.
 */
void logread_end_slot(logread_t *r, uint32_t slot);

/** Problems met so far. */
void logread_counts(const logread_t *r, logread_counts_t *counts);

/** Close the reader and free everything it holds. NULL is a no-op. */
void logread_close(logread_t *r);

/** Which records to keep. Zero-initialised (and until_ms 0) keeps every record. */
typedef struct {
    uint64_t since_ms; /* keep time_ms >= since_ms */
    uint64_t until_ms; /* keep time_ms < until_ms; 0 = no upper bound */
    const char *event; /* keep records whose "event" equals this; NULL = any */
    const char *token; /* keep records whose properties.token or $token equals this */
    uint8_t endpoint;  /* keep records of this endpoint; 0 = any */
} logread_filter_t;

/** 1 if `rec` passes `f`, 0 if not (a payload that is not JSON passes only an empty filter). */
int logread_filter_match(const logread_filter_t *f, const logread_record_t *rec);

/**
 * Compute a cursor after which each slot (or `slot` alone, if not 0) has at most its last `n`
 * records passing `f` (NULL = all): the starting point of `tail -n`. Scans only as many segments,
 * from the newest, as it needs. Returns 0 or a negative errno.
 */
int logread_tail_cursor(const char *data_dir, uint32_t slot, size_t n, const logread_filter_t *f,
                        logread_cursor_t *out);

/**
 * Format `rec` as one NDJSON line: the stored event object with a "_trackd" member added
 * (endpoint, received_ms, slot, segment, offset, pos) and a final newline, into `out` (not
 * NUL-terminated). Returns the line's length, which may exceed `outlen` (then nothing useful was
 * written: call again with a larger buffer), or -EBADMSG if the payload is not a JSON object, or
 * -ENOMEM.
 */
ssize_t logread_format_line(const logread_record_t *rec, char *out, size_t outlen);

/**
 * Parse a time for --since/--until: milliseconds since the epoch (digits), or ISO-8601 UTC
 * "2026-11-25", "2026-11-25T10:00", "2026-11-25T10:00:00.250Z" or with an offset "+01:00"
 * (no zone means UTC). Returns 0 or -EINVAL.
 */
int logread_parse_time(const char *s, uint64_t *ms);

/** Slot numbers of `data_dir` (directories w<NNN>), ascending, in a malloc'd array. */
int logread_list_slots(const char *data_dir, uint32_t **slots, size_t *n);

/** Information on one segment file of a slot, for stats. */
typedef struct {
    uint64_t seq;
    uint64_t size; /* bytes on disk */
} logread_segment_info_t;

/** Segment files of slot `slot`, ascending by sequence, in a malloc'd array. */
int logread_list_segments(const char *data_dir, uint32_t slot, logread_segment_info_t **segs,
                          size_t *n);

/** Format the directory of slot `slot` ("<data_dir>/w001") into `out`. Returns 0 or -ENAMETOOLONG.
 */
int logread_slot_path(char *out, size_t outlen, const char *data_dir, uint32_t slot);

#endif

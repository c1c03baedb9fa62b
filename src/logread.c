/*
 * Reading the event log back (logread.h). Three layers, bottom up:
 *
 * - a segment reader walks one segment file through a window buffer filled with pread, decoding
 *   records with segment.h, so a segment is read once, front to back, whatever its size, and a
 *   file that grows while we read (the live segment) is simply read further on the next call;
 * - a slot reader chains the segments of one slot directory, checks the chain (header slot and
 *   sequence, gaps), tells a torn tail of the newest segment (an append that never finished, which
 *   the writer truncates at its next start) from damage in a closed one, and reports both;
 * - the reader merges the slots by (receive time, slot, segment, offset), taking one head record
 *   per slot, so each slot's records keep their write order (what makes per-slot cursors exact).
 *
 * The writer appends (in fsync mode over zeros it filled ahead of the data: a zero record header
 * marks the end of data, and a follower waits there and reads the same offset again) and rolls by
 * creating the next segment after the previous one is complete and cut back to its data end, so a
 * reader never sees a hole in the middle of what it already read; the one race left is "end of
 * segment N seen, then N+1 created": the reader re-reads N once after it sees N+1 before calling
 * what is left in N damage.
 */
#include "trackd/logread.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trackd/segment.h"

#define LOGREAD_PATH_MAX 4096
/* The largest record a valid segment can hold: the window never needs to grow beyond it. */
#define LOGREAD_RECORD_MAX ((size_t)SEGMENT_RECORD_HEADER_SIZE + SEGMENT_MAX_PAYLOAD)
/* A gap larger than this is reported as missing without looking for each moved-aside file. */
#define LOGREAD_GAP_CHECK_MAX 1000
#define LOGREAD_WHAT_MAX 512

/* ---- segment reader ---------------------------------------------------------------------- */

typedef struct {
    int fd; /* -1 when no segment is open */
    uint64_t seq;
    char path[LOGREAD_PATH_MAX];
    uint8_t *buf;
    size_t cap, len; /* window capacity and valid bytes */
    uint64_t base;   /* file offset of buf[0] */
    uint64_t next;   /* file offset of the next record to decode */
    int rechecked;   /* end seen again after a newer segment appeared */
} segr_t;

static void segr_close(segr_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->rechecked = 0;
}

/* Bytes seen past the last whole record: a torn or damaged tail if non-zero at the end. */
static uint64_t segr_pending(const segr_t *s)
{
    return s->base + s->len - s->next;
}

/*
 * Slide the window to start at `next` and read more of the file after what it holds. Returns the
 * number of bytes read, 0 at the end of the file (for now), or a negative errno.
 */
static ssize_t segr_fill(segr_t *s)
{
    size_t rel = (size_t)(s->next - s->base);

    if (rel > 0) {
        memmove(s->buf, s->buf + rel, s->len - rel);
        s->len -= rel;
        s->base = s->next;
    }
    if (s->len == s->cap) {
        /* One record larger than the window: grow it, up to the largest possible record. */
        size_t ncap = s->cap * 2 > LOGREAD_RECORD_MAX ? LOGREAD_RECORD_MAX : s->cap * 2;
        if (ncap <= s->cap)
            return -EBADMSG;
        uint8_t *nb = realloc(s->buf, ncap);
        if (nb == NULL)
            return -ENOMEM;
        s->buf = nb;
        s->cap = ncap;
    }
    for (;;) {
        ssize_t n = pread(s->fd, s->buf + s->len, s->cap - s->len, (off_t)(s->base + s->len));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        s->len += (size_t)n;
        return n;
    }
}

/*
 * Open segment `seq` of directory `dir` and check its header. Returns 0, -ENODATA if the file is
 * shorter than a header, -EBADMSG if the header is invalid, or another negative errno.
 */
static int segr_open(segr_t *s, const char *dir, uint64_t seq, segment_header_t *h)
{
    char name[64];

    segr_close(s);
    if (s->buf == NULL) {
        s->buf = malloc(LOGREAD_BUF_SIZE);
        if (s->buf == NULL)
            return -ENOMEM;
        s->cap = LOGREAD_BUF_SIZE;
    }
    segment_name(name, sizeof(name), seq);
    if ((size_t)snprintf(s->path, sizeof(s->path), "%s/%s", dir, name) >= sizeof(s->path))
        return -ENAMETOOLONG;
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
        return -errno;
    s->seq = seq;
    s->base = s->next = 0;
    s->len = 0;
    while (s->len < SEGMENT_HEADER_SIZE) {
        ssize_t n = segr_fill(s);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ENODATA;
    }
    if (segment_header_decode(s->buf, s->len, h) != 0)
        return -EBADMSG;
    s->next = SEGMENT_HEADER_SIZE;
    return 0;
}

/*
 * 1 if the bytes at `next` start with the end-of-data marker: a zero length field (records are
 * never empty), or fewer bytes than that at the end of the file, all zero.
 */
static int segr_at_marker(const segr_t *s)
{
    size_t avail = (size_t)segr_pending(s);
    const uint8_t *p = s->buf + (s->next - s->base);
    if (avail == 0)
        return 0;
    for (size_t i = 0; i < avail && i < 4; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

/* Just past the last non-zero byte from `next` to the end of the file as it is now. */
static int segr_nonzero_end(const segr_t *s, uint64_t *end)
{
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return -errno;
    return segment_nonzero_end(s->fd, s->next, (uint64_t)st.st_size, end);
}

/* Start decoding at `off` (a cursor position), dropping the window. */
static void segr_seek(segr_t *s, uint64_t off)
{
    s->base = s->next = off;
    s->len = 0;
}

/* Next whole record: 1, 0 at the end of what the file holds now, or a negative errno. */
static int segr_next(segr_t *s, logread_record_t *rec)
{
    for (;;) {
        segment_record_t sr;
        int rc = segment_record_decode(s->buf, s->len, s->next - s->base, &sr);
        if (rc == 1) {
            rec->pos.seq = s->seq;
            rec->pos.offset = s->next;
            rec->time_ms = sr.time_ms;
            rec->endpoint = sr.endpoint;
            rec->len = sr.len;
            rec->payload = sr.payload;
            s->next += SEGMENT_RECORD_HEADER_SIZE + (uint64_t)sr.len;
            return 1;
        }
        if (rc < 0)
            return rc;
        ssize_t n = segr_fill(s);
        if (n <= 0)
            return (int)n;
    }
}

/* ---- reader state ------------------------------------------------------------------------ */

typedef struct {
    uint32_t slot;
    char dir[LOGREAD_PATH_MAX];
    uint64_t *seqs; /* segment files listed, ascending */
    size_t nseqs, seqcap;
    segr_t seg;
    int started;       /* a segment was opened or passed: last_seq is meaningful */
    uint64_t last_seq; /* the segment open now, or the last one passed */
    uint64_t floor;    /* before starting, segments below it are skipped (a cursor) */
    int from_cursor;   /* started from a cursor: segments before it are not our business */
    int gap_checked;
    uint64_t gap_checked_seq;
    int done;
    int has_head;
    logread_record_t head;
} slot_t;

struct logread_s {
    char data_dir[LOGREAD_PATH_MAX];
    logread_opts_t opts;
    logread_cursor_t after;
    slot_t **slots;
    size_t nslots, slotcap;
    slot_t *pending; /* its head was returned last: advance it before picking again */
    logread_counts_t counts;
};

static void report(logread_t *r, logread_issue_kind_t kind, uint32_t slot, uint64_t seq,
                   uint64_t offset, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void report(logread_t *r, logread_issue_kind_t kind, uint32_t slot, uint64_t seq,
                   uint64_t offset, const char *path, const char *fmt, ...)
{
    char what[LOGREAD_WHAT_MAX];
    va_list ap;

    switch (kind) {
    case LOGREAD_DAMAGE:
        r->counts.damage++;
        break;
    case LOGREAD_CHAIN:
        r->counts.chain++;
        break;
    case LOGREAD_TORN_TAIL:
        r->counts.torn_tails++;
        break;
    case LOGREAD_NOTICE:
        r->counts.notices++;
        break;
    case LOGREAD_ERROR:
        r->counts.errors++;
        break;
    }
    if (r->opts.on_issue == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    logread_issue_t is = {kind, slot, seq, offset, path, what};
    r->opts.on_issue(&is, r->opts.issue_arg);
}

/* ---- listing ----------------------------------------------------------------------------- */

int logread_slot_path(char *out, size_t outlen, const char *data_dir, uint32_t slot)
{
    if ((size_t)snprintf(out, outlen, "%s/w%03" PRIu32, data_dir, slot) >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

/* The slot number of a directory entry named like "w001", or 0. */
static uint32_t slot_from_name(const char *name)
{
    char canon[32];
    unsigned long v;

    if (name[0] != 'w' || name[1] < '0' || name[1] > '9' || strlen(name) > 12)
        return 0;
    for (const char *p = name + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    v = strtoul(name + 1, NULL, 10);
    if (v == 0 || v > LOGREAD_SLOT_MAX)
        return 0;
    /* Only the canonical spelling the writer uses, so one slot never has two directories. */
    snprintf(canon, sizeof(canon), "w%03lu", v);
    return strcmp(canon, name) == 0 ? (uint32_t)v : 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int logread_list_slots(const char *data_dir, uint32_t **slots, size_t *n)
{
    uint32_t *v = NULL;
    size_t nv = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir(data_dir);

    *slots = NULL;
    *n = 0;
    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        uint32_t s = slot_from_name(de->d_name);
        if (s == 0)
            continue;
        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        if (nv == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            uint32_t *nvp = realloc(v, ncap * sizeof(*v));
            if (nvp == NULL) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nvp;
            cap = ncap;
        }
        v[nv++] = s;
    }
    closedir(d);
    if (nv > 1)
        qsort(v, nv, sizeof(*v), cmp_u32);
    *slots = v;
    *n = nv;
    return 0;
}

/* List the segment sequence numbers of directory `dir`, ascending, into a malloc'd array. */
static int list_seqs(const char *dir, uint64_t **seqs, size_t *n, size_t *cap)
{
    struct dirent *de;
    size_t nv = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (segment_parse_name(de->d_name, &seq) != 0)
            continue;
        if (nv == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            uint64_t *np = realloc(*seqs, ncap * sizeof(**seqs));
            if (np == NULL) {
                closedir(d);
                return -ENOMEM;
            }
            *seqs = np;
            *cap = ncap;
        }
        (*seqs)[nv++] = seq;
    }
    closedir(d);
    if (nv > 1)
        qsort(*seqs, nv, sizeof(**seqs), cmp_u64);
    *n = nv;
    return 0;
}

int logread_list_segments(const char *data_dir, uint32_t slot, logread_segment_info_t **segs,
                          size_t *n)
{
    char dir[LOGREAD_PATH_MAX], path[LOGREAD_PATH_MAX + 80], name[64];
    uint64_t *seqs = NULL;
    size_t nseqs = 0, cap = 0;
    int rc;

    *segs = NULL;
    *n = 0;
    rc = logread_slot_path(dir, sizeof(dir), data_dir, slot);
    if (rc == 0)
        rc = list_seqs(dir, &seqs, &nseqs, &cap);
    if (rc != 0) {
        free(seqs);
        return rc;
    }
    logread_segment_info_t *v = calloc(nseqs ? nseqs : 1, sizeof(*v));
    if (v == NULL) {
        free(seqs);
        return -ENOMEM;
    }
    size_t nv = 0;
    for (size_t i = 0; i < nseqs; i++) {
        struct stat st;
        segment_name(name, sizeof(name), seqs[i]);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (stat(path, &st) != 0)
            continue; /* deleted by retention since the listing */
        v[nv].seq = seqs[i];
        v[nv].size = (uint64_t)st.st_size;
        nv++;
    }
    free(seqs);
    *segs = v;
    *n = nv;
    return 0;
}

/* ---- slot reader ------------------------------------------------------------------------- */

static int slot_relist(logread_t *r, slot_t *s)
{
    int rc = list_seqs(s->dir, &s->seqs, &s->nseqs, &s->seqcap);
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0) {
        report(r, LOGREAD_ERROR, s->slot, 0, 0, s->dir, "cannot list the slot directory: %s",
               strerror(-rc));
        s->nseqs = 0;
    }
    return 0;
}

/* The first listed segment the slot has not read yet. */
static int slot_next_seq(const slot_t *s, uint64_t *seq)
{
    for (size_t i = 0; i < s->nseqs; i++) {
        if (s->started ? s->seqs[i] > s->last_seq : s->seqs[i] >= s->floor) {
            *seq = s->seqs[i];
            return 1;
        }
    }
    return 0;
}

/* 1 if a segment newer than `seq` exists (looking at the directory again if need be). */
static int slot_has_later(logread_t *r, slot_t *s, uint64_t seq)
{
    for (int pass = 0; pass < 2; pass++) {
        if (s->nseqs > 0 && s->seqs[s->nseqs - 1] > seq)
            return 1;
        if (pass == 0 && slot_relist(r, s) != 0)
            return 0;
    }
    return 0;
}

/* 1 if segment `seq` was moved aside by repair (its ".damaged" file is there). */
static int moved_aside(const slot_t *s, uint64_t seq)
{
    char name[64], path[LOGREAD_PATH_MAX + 80];
    segment_name(name, sizeof(name), seq);
    snprintf(path, sizeof(path), "%s/%s%s", s->dir, name, LOGREAD_DAMAGED_SUFFIX);
    return access(path, F_OK) == 0;
}

/* Before reading segment `seq`: report the segments missing in front of it, once. */
static void slot_check_gap(logread_t *r, slot_t *s, uint64_t seq)
{
    uint64_t from;

    if (s->gap_checked && s->gap_checked_seq == seq)
        return;
    s->gap_checked = 1;
    s->gap_checked_seq = seq;
    if (s->started)
        from = s->last_seq + 1;
    else if (s->from_cursor)
        return;
    else
        from = LOGREAD_FIRST_SEQ;
    if (seq <= from)
        return;
    char range[64];
    if (seq - 1 == from)
        snprintf(range, sizeof(range), "segment %" PRIu64 " is", from);
    else
        snprintf(range, sizeof(range), "segments %" PRIu64 "..%" PRIu64 " are", from, seq - 1);
    uint64_t nmissing = seq - from, aside = 0;
    if (nmissing <= LOGREAD_GAP_CHECK_MAX)
        for (uint64_t q = from; q < seq; q++)
            aside += (uint64_t)moved_aside(s, q);
    if (aside == nmissing)
        report(r, LOGREAD_NOTICE, s->slot, from, 0, s->dir,
               "%s moved aside by repair (kept as *%s)", range, LOGREAD_DAMAGED_SUFFIX);
    else if (!s->started)
        report(r, LOGREAD_NOTICE, s->slot, from, 0, s->dir,
               "%s gone from the start of the slot (retention deletes the oldest first)", range);
    else
        report(r, LOGREAD_CHAIN, s->slot, from, 0, s->dir,
               "%s missing between two present segments", range);
}

/* Mark `seq` as passed without reading it (unreadable, damaged header, gone). */
static void slot_pass(slot_t *s, uint64_t seq)
{
    segr_close(&s->seg);
    s->started = 1;
    s->last_seq = seq;
}

/* Open the next segment of the slot: 1 when one is open, 0 if none (yet), or -ENOMEM. */
static int slot_open_next(logread_t *r, slot_t *s)
{
    for (;;) {
        segment_header_t h;
        uint64_t seq;
        int rc;

        if (!slot_next_seq(s, &seq)) {
            if ((rc = slot_relist(r, s)) != 0)
                return rc;
            if (!slot_next_seq(s, &seq)) {
                if (!r->opts.follow)
                    s->done = 1;
                return 0;
            }
        }
        slot_check_gap(r, s, seq);
        rc = segr_open(&s->seg, s->dir, seq, &h);
        if (rc == -ENOMEM) {
            segr_close(&s->seg);
            return rc;
        }
        if (rc == -ENOENT) {
            report(r, LOGREAD_NOTICE, s->slot, seq, 0, s->seg.path,
                   "segment deleted before it could be read (retention)");
            slot_pass(s, seq);
            continue;
        }
        if (rc == -ENODATA && !slot_has_later(r, s, seq)) {
            /* A segment being created, or one whose creation never finished. */
            uint64_t size = s->seg.len;
            segr_close(&s->seg);
            if (r->opts.follow)
                return 0;
            report(r, LOGREAD_TORN_TAIL, s->slot, seq, 0, s->seg.path,
                   "torn tail: segment header incomplete (%" PRIu64
                   " bytes; unacknowledged, will be truncated at next start)",
                   size);
            s->done = 1;
            return 0;
        }
        if (rc == -ENODATA || rc == -EBADMSG) {
            report(r, LOGREAD_DAMAGE, s->slot, seq, 0, s->seg.path, "%s",
                   rc == -ENODATA ? "segment header incomplete in a closed segment"
                                  : "bad segment header (magic, version or checksum)");
            slot_pass(s, seq);
            continue;
        }
        if (rc < 0) {
            report(r, LOGREAD_ERROR, s->slot, seq, 0, s->seg.path, "cannot read: %s",
                   strerror(-rc));
            slot_pass(s, seq);
            continue;
        }
        /* Valid records in a misplaced file: say so, and read them where they are. */
        if (h.slot != s->slot || h.seq != seq)
            report(r, LOGREAD_CHAIN, s->slot, seq, 0, s->seg.path,
                   "segment header says slot %" PRIu32 " sequence %" PRIu64
                   ", not what its path says",
                   h.slot, h.seq);
        s->started = 1;
        s->last_seq = seq;
        return 1;
    }
}

/* Look past a bad record of the newest segment: whole records behind it mean real damage. */
static uint64_t records_after_bad(int fd)
{
    segment_scan_t sc;
    if (segment_scan_fd(fd, NULL, NULL, &sc) != 0)
        return 0;
    return sc.tail == SEGMENT_TAIL_DAMAGED ? sc.after_bad : 0;
}

/* Next record of the slot: 1, 0 if none (yet), or -ENOMEM. */
static int slot_next(logread_t *r, slot_t *s, logread_record_t *rec)
{
    for (;;) {
        if (s->done)
            return 0;
        if (s->seg.fd < 0) {
            int rc = slot_open_next(r, s);
            if (rc <= 0)
                return rc;
        }
        int rc = segr_next(&s->seg, rec);
        if (rc == 1) {
            s->seg.rechecked = 0;
            rec->pos.slot = s->slot;
            return 1;
        }
        if (rc == -ENOMEM)
            return rc;
        if (rc != 0 && rc != -EBADMSG) {
            report(r, LOGREAD_ERROR, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                   "read error at offset %" PRIu64 ": %s", s->seg.next, strerror(-rc));
            slot_pass(s, s->seg.seq);
            continue;
        }
        uint64_t pending = segr_pending(&s->seg);
        if (pending > 0 && segr_at_marker(&s->seg)) {
            /*
             * The end-of-data marker: zeros the writer filled ahead of its data (fsync mode),
             * which records will be written over. A follower waits here and reads the same
             * offset again later; otherwise it is a clean end if only zeros follow.
             */
            if (r->opts.follow && !slot_has_later(r, s, s->seg.seq)) {
                segr_seek(&s->seg, s->seg.next);
                return 0;
            }
            uint64_t nz;
            int e = segr_nonzero_end(&s->seg, &nz);
            if (e == -ENOMEM)
                return e;
            if (e < 0) {
                report(r, LOGREAD_ERROR, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                       "read error at offset %" PRIu64 ": %s", s->seg.next, strerror(-e));
                slot_pass(s, s->seg.seq);
                continue;
            }
            rc = 0; /* non-zero bytes after the marker: a write cut short, so torn */
            pending = nz > s->seg.next ? nz - s->seg.next : 0;
        }
        if (slot_has_later(r, s, s->seg.seq)) {
            /*
             * The segment is closed; it may have been completed just before the roll, or its
             * tail cut off and rewritten after a failed write: look at the disk once more.
             */
            if (!s->seg.rechecked) {
                s->seg.rechecked = 1;
                segr_seek(&s->seg, s->seg.next);
                continue;
            }
            if (rc == 0 && pending == 0) {
                slot_pass(s, s->seg.seq);
                continue;
            }
            if (rc == 0)
                report(r, LOGREAD_DAMAGE, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                       "closed segment ends inside a record at offset %" PRIu64 " (%" PRIu64
                       " bytes)",
                       s->seg.next, pending);
            else
                report(r, LOGREAD_DAMAGE, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                       "damaged record at offset %" PRIu64
                       " (checksum, length or field); the %" PRIu64 " bytes from there on "
                       "are unreadable",
                       s->seg.next, pending);
            slot_pass(s, s->seg.seq);
            continue;
        }
        if (rc == 0 && pending == 0) {
            if (!r->opts.follow)
                s->done = 1;
            return 0;
        }
        /* The newest segment ends in bytes that are not a whole record. */
        if (r->opts.follow) {
            /*
             * An append in progress, or a tail the writer truncates (and may write again) when
             * it recovers: drop what we have of it, so the next look reads it afresh.
             */
            segr_seek(&s->seg, s->seg.next);
            return 0;
        }
        uint64_t after = rc == -EBADMSG ? records_after_bad(s->seg.fd) : 0;
        uint64_t nz;
        /* Zero padding after the bad bytes never held anything: not counted. */
        if (segr_nonzero_end(&s->seg, &nz) == 0 && nz > s->seg.next)
            pending = nz - s->seg.next;
        if (after > 0)
            report(r, LOGREAD_DAMAGE, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                   "damaged record at offset %" PRIu64 " with %" PRIu64
                   " valid records after it (damage in the middle, not an interrupted append)",
                   s->seg.next, after);
        else
            report(r, LOGREAD_TORN_TAIL, s->slot, s->seg.seq, s->seg.next, s->seg.path,
                   "torn tail at offset %" PRIu64 ", %" PRIu64
                   " bytes (unacknowledged, will be truncated at next start)",
                   s->seg.next, pending);
        s->done = 1;
        return 0;
    }
}

/*
 * Place the slot strictly after cursor position `p`. Returns 0, or -EINVAL when the position
 * cannot belong to this slot's log (reported), or -ENOMEM.
 */
static int slot_apply_cursor(logread_t *r, slot_t *s, const logread_pos_t *p)
{
    char ps[LOGREAD_POS_STRLEN];
    int found = 0, later = 0;
    uint64_t first_later = 0;

    logread_pos_format(ps, sizeof(ps), p);
    for (size_t i = 0; i < s->nseqs; i++) {
        if (s->seqs[i] == p->seq)
            found = 1;
        if (s->seqs[i] > p->seq && !later) {
            later = 1;
            first_later = s->seqs[i];
        }
    }
    s->from_cursor = 1;
    if (!found) {
        if (!later) {
            report(r, LOGREAD_ERROR, s->slot, p->seq, p->offset, s->dir,
                   "position %s is beyond the end of the slot (no segment %" PRIu64
                   " or later): a cursor from another data directory?",
                   ps, p->seq);
            return -EINVAL;
        }
        report(r, LOGREAD_NOTICE, s->slot, p->seq, p->offset, s->dir,
               "segment %" PRIu64 " of position %s is gone (retention or repair); "
               "reading the slot from segment %" PRIu64,
               p->seq, ps, first_later);
        s->floor = p->seq + 1;
        return 0;
    }
    segment_header_t h;
    logread_record_t rec;
    int rc = segr_open(&s->seg, s->dir, p->seq, &h);
    if (rc == -ENOMEM)
        return rc;
    if (rc == 0 && p->offset >= SEGMENT_HEADER_SIZE) {
        segr_seek(&s->seg, p->offset);
        rc = segr_next(&s->seg, &rec);
        if (rc == -ENOMEM)
            return rc;
        if (rc == 1) {
            s->started = 1;
            s->last_seq = p->seq;
            return 0; /* the segment stays open, just after the position's record */
        }
    }
    report(r, LOGREAD_ERROR, s->slot, p->seq, p->offset, s->seg.path,
           "position %s is not the start of a valid record", ps);
    segr_close(&s->seg);
    return -EINVAL;
}

static void slot_free(slot_t *s)
{
    if (s == NULL)
        return;
    segr_close(&s->seg);
    free(s->seg.buf);
    free(s->seqs);
    free(s);
}

/* Add slot `slotno` to the reader, placed per the cursor. */
static int reader_add_slot(logread_t *r, uint32_t slotno)
{
    slot_t *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL)
        return -ENOMEM;
    s->slot = slotno;
    s->seg.fd = -1;
    rc = logread_slot_path(s->dir, sizeof(s->dir), r->data_dir, slotno);
    if (rc == 0)
        rc = slot_relist(r, s);
    if (rc == 0) {
        const logread_pos_t *p = logread_cursor_get(&r->after, slotno);
        if (p != NULL)
            rc = slot_apply_cursor(r, s, p);
    }
    if (rc == 0 && r->nslots == r->slotcap) {
        size_t ncap = r->slotcap ? r->slotcap * 2 : 8;
        slot_t **ns = realloc(r->slots, ncap * sizeof(*ns));
        if (ns == NULL)
            rc = -ENOMEM;
        else {
            r->slots = ns;
            r->slotcap = ncap;
        }
    }
    if (rc != 0) {
        slot_free(s);
        return rc;
    }
    r->slots[r->nslots++] = s;
    return 0;
}

/* Add the slots that appeared since the last look. */
static int reader_scan_slots(logread_t *r)
{
    uint32_t *v;
    size_t n;
    int rc;

    if (r->opts.slot != 0) {
        if (r->nslots > 0)
            return 0;
        char dir[LOGREAD_PATH_MAX];
        struct stat st;
        if (logread_slot_path(dir, sizeof(dir), r->data_dir, r->opts.slot) != 0 ||
            stat(dir, &st) != 0)
            return 0;
        return reader_add_slot(r, r->opts.slot);
    }
    rc = logread_list_slots(r->data_dir, &v, &n);
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0)
        return 0; /* data directory gone for now: keep what we have */
    for (size_t i = 0; i < n && rc == 0; i++) {
        int known = 0;
        for (size_t j = 0; j < r->nslots && !known; j++)
            known = r->slots[j]->slot == v[i];
        if (!known)
            rc = reader_add_slot(r, v[i]);
    }
    free(v);
    return rc;
}

int logread_open(logread_t **rp, const char *data_dir, const logread_opts_t *opts)
{
    struct stat st;
    logread_t *r;
    int rc = 0;

    *rp = NULL;
    if (stat(data_dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->opts = *opts;
    r->opts.after = NULL;
    if (snprintf(r->data_dir, sizeof(r->data_dir), "%s", data_dir) >= (int)sizeof(r->data_dir))
        rc = -ENAMETOOLONG;
    for (size_t i = 0; rc == 0 && opts->after != NULL && i < opts->after->n; i++)
        rc = logread_cursor_set(&r->after, &opts->after->pos[i]);
    if (rc == 0 && opts->slot != 0) {
        char dir[LOGREAD_PATH_MAX];
        rc = logread_slot_path(dir, sizeof(dir), data_dir, opts->slot);
        if (rc == 0 && stat(dir, &st) != 0 && !opts->follow)
            rc = -ENOENT;
    }
    if (rc == 0)
        rc = reader_scan_slots(r);
    /* Every cursor position that applies must name a slot that exists. */
    for (size_t i = 0; rc == 0 && i < r->after.n; i++) {
        const logread_pos_t *p = &r->after.pos[i];
        int known = 0;
        if (opts->slot != 0 && p->slot != opts->slot)
            continue;
        for (size_t j = 0; j < r->nslots && !known; j++)
            known = r->slots[j]->slot == p->slot;
        if (!known) {
            char ps[LOGREAD_POS_STRLEN];
            logread_pos_format(ps, sizeof(ps), p);
            report(r, LOGREAD_ERROR, p->slot, p->seq, p->offset, r->data_dir,
                   "position %s names slot %" PRIu32 ", which has no directory here", ps, p->slot);
            rc = -EINVAL;
        }
    }
    if (rc != 0) {
        logread_close(r);
        return rc;
    }
    *rp = r;
    return 0;
}

/* Merge order: (receive time, slot, segment, offset). */
static int head_before(const slot_t *a, const slot_t *b)
{
    const logread_record_t *x = &a->head, *y = &b->head;
    if (x->time_ms != y->time_ms)
        return x->time_ms < y->time_ms;
    if (x->pos.slot != y->pos.slot)
        return x->pos.slot < y->pos.slot;
    if (x->pos.seq != y->pos.seq)
        return x->pos.seq < y->pos.seq;
    return x->pos.offset < y->pos.offset;
}

/* The slot whose head comes first. A linear scan: there are as many slots as workers. */
static slot_t *pick(const logread_t *r)
{
    slot_t *best = NULL;
    for (size_t i = 0; i < r->nslots; i++) {
        slot_t *s = r->slots[i];
        if (s->has_head && (best == NULL || head_before(s, best)))
            best = s;
    }
    return best;
}

static int fill_head(logread_t *r, slot_t *s)
{
    int rc = slot_next(r, s, &s->head);
    if (rc < 0)
        return rc;
    s->has_head = rc;
    return 0;
}

int logread_next(logread_t *r, logread_record_t *rec)
{
    slot_t *best;
    int rc;

    if (r->pending != NULL) {
        slot_t *s = r->pending;
        r->pending = NULL;
        s->has_head = 0;
        if ((rc = fill_head(r, s)) != 0)
            return rc;
    }
    best = pick(r);
    if (best == NULL) {
        /*
         * Every slot ran dry: look at all of them again (and, when following, for new slots).
         * A slot with nothing now is not polled while others still have records, so catching
         * up costs no system call per record.
         */
        if (r->opts.follow && (rc = reader_scan_slots(r)) != 0)
            return rc;
        for (size_t i = 0; i < r->nslots; i++)
            if (!r->slots[i]->has_head && (rc = fill_head(r, r->slots[i])) != 0)
                return rc;
        best = pick(r);
        if (best == NULL)
            return 0;
    }
    *rec = best->head;
    r->pending = best;
    return 1;
}

void logread_end_slot(logread_t *r, uint32_t slot)
{
    for (size_t i = 0; i < r->nslots; i++) {
        slot_t *s = r->slots[i];
        if (s->slot != slot)
            continue;
        /* A pending slot keeps its buffer (the caller may still hold the payload) until next. */
        s->done = 1;
        if (r->pending != s) {
            s->has_head = 0;
            segr_close(&s->seg);
        }
    }
}

void logread_counts(const logread_t *r, logread_counts_t *counts)
{
    *counts = r->counts;
}

void logread_close(logread_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nslots; i++)
        slot_free(r->slots[i]);
    free(r->slots);
    logread_cursor_free(&r->after);
    free(r);
}

/* ---- tail ------------------------------------------------------------------------------ */

typedef struct {
    const logread_filter_t *f;
    uint32_t slot;
    uint64_t seq;
    uint64_t matches; /* counted so far */
    uint64_t stop_at; /* stop at the match with this index (0-based); UINT64_MAX = count all */
    logread_pos_t found;
} tail_scan_t;

static int tail_scan_cb(const segment_record_t *sr, void *arg)
{
    tail_scan_t *t = arg;
    logread_record_t rec = {
        {t->slot, t->seq, sr->offset}, sr->time_ms, sr->endpoint, sr->len, sr->payload};
    if (t->f != NULL && !logread_filter_match(t->f, &rec))
        return 0;
    if (t->matches++ == t->stop_at) {
        t->found = rec.pos;
        return 1;
    }
    return 0;
}

/* Find the cursor position for the last `n` matching records of one slot (none: no entry). */
static int tail_slot(const char *data_dir, uint32_t slot, size_t n, const logread_filter_t *f,
                     logread_cursor_t *out)
{
    char dir[LOGREAD_PATH_MAX], path[LOGREAD_PATH_MAX + 64], name[64];
    logread_segment_info_t *segs;
    size_t nsegs;
    uint64_t later = 0; /* matching records in the segments after the one being looked at */
    int rc = logread_list_segments(data_dir, slot, &segs, &nsegs);

    if (rc != 0)
        return rc;
    logread_slot_path(dir, sizeof(dir), data_dir, slot);
    for (size_t i = nsegs; i-- > 0;) {
        segment_scan_t sc;
        tail_scan_t t = {f, slot, segs[i].seq, 0, UINT64_MAX, {0, 0, 0}};
        segment_name(name, sizeof(name), segs[i].seq);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        rc = segment_scan_path(path, tail_scan_cb, &t, &sc);
        if (rc == -ENOMEM)
            break;
        rc = 0; /* unreadable segments are reported when they are read */
        if (later + t.matches > n) {
            /* The (n+1)-th last match is in this segment: it is the cursor position. */
            uint64_t idx = later + t.matches - (uint64_t)n - 1;
            tail_scan_t t2 = {f, slot, segs[i].seq, 0, idx, {0, 0, 0}};
            rc = segment_scan_path(path, tail_scan_cb, &t2, &sc);
            if (rc == 1)
                rc = logread_cursor_set(out, &t2.found);
            else if (rc == 0)
                rc = -EAGAIN; /* the segment changed under us: should not happen */
            break;
        }
        later += t.matches;
    }
    free(segs);
    return rc;
}

int logread_tail_cursor(const char *data_dir, uint32_t slot, size_t n, const logread_filter_t *f,
                        logread_cursor_t *out)
{
    uint32_t *slots, one = slot;
    size_t nslots = 1;
    int rc = 0;

    if (slot == 0 && (rc = logread_list_slots(data_dir, &slots, &nslots)) != 0)
        return rc;
    for (size_t i = 0; i < nslots && rc == 0; i++)
        rc = tail_slot(data_dir, slot ? one : slots[i], n, f, out);
    if (slot == 0)
        free(slots);
    return rc;
}

/*
 * The text side of the log reader (logread.h): positions and cursors as operators and consumers
 * write them, record filters, the NDJSON line `trackctl cat` prints for a record, and the times
 * --since/--until accept. Kept apart from logread.c, which walks the files, because none of this
 * touches the disk: it is pure functions over strings and decoded records.
 */
#include "trackd/logread.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "trackd/segment.h"

/* ---- positions and cursors --------------------------------------------------------------- */

/* Parse a decimal number at *s up to a delimiter; advances *s. */
static int parse_u64(const char **s, uint64_t *v)
{
    const char *p = *s;
    uint64_t x = 0;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -EINVAL;
        x = x * 10 + d;
    }
    *s = p;
    *v = x;
    return 0;
}

/* Parse "slot:seq:offset" at *s, stopping at the end or a comma. */
static int parse_pos(const char **s, logread_pos_t *pos)
{
    uint64_t slot, seq, off;

    if (parse_u64(s, &slot) != 0 || slot == 0 || slot > LOGREAD_SLOT_MAX || *(*s)++ != ':')
        return -EINVAL;
    if (parse_u64(s, &seq) != 0 || *(*s)++ != ':')
        return -EINVAL;
    if (parse_u64(s, &off) != 0)
        return -EINVAL;
    pos->slot = (uint32_t)slot;
    pos->seq = seq;
    pos->offset = off;
    return 0;
}

int logread_pos_parse(const char *s, logread_pos_t *pos)
{
    logread_pos_t p;
    if (parse_pos(&s, &p) != 0 || *s != '\0')
        return -EINVAL;
    *pos = p;
    return 0;
}

void logread_pos_format(char *out, size_t outlen, const logread_pos_t *pos)
{
    snprintf(out, outlen, "%" PRIu32 ":%" PRIu64 ":%" PRIu64, pos->slot, pos->seq, pos->offset);
}

int logread_cursor_parse(logread_cursor_t *c, const char *s)
{
    while (*s == ' ')
        s++;
    if (*s == '\0' || *s == '\n')
        return 0;
    for (;;) {
        logread_pos_t p;
        int rc;
        if (parse_pos(&s, &p) != 0 || logread_cursor_get(c, p.slot) != NULL)
            return -EINVAL;
        if ((rc = logread_cursor_set(c, &p)) != 0)
            return rc;
        if (*s == ',') {
            s++;
            continue;
        }
        /* A cursor read from a file may end in a newline. */
        while (*s == '\n' || *s == ' ')
            s++;
        return *s == '\0' ? 0 : -EINVAL;
    }
}

int logread_cursor_set(logread_cursor_t *c, const logread_pos_t *pos)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->pos[i].slot == pos->slot) {
            c->pos[i] = *pos;
            return 0;
        }
    }
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 8;
        logread_pos_t *np = realloc(c->pos, ncap * sizeof(*np));
        if (np == NULL)
            return -ENOMEM;
        c->pos = np;
        c->cap = ncap;
    }
    c->pos[c->n++] = *pos;
    return 0;
}

const logread_pos_t *logread_cursor_get(const logread_cursor_t *c, uint32_t slot)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->pos[i].slot == slot)
            return &c->pos[i];
    return NULL;
}

static int cmp_pos(const void *a, const void *b)
{
    const logread_pos_t *x = a, *y = b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

int logread_cursor_format(const logread_cursor_t *c, char **out)
{
    char *s = malloc(c->n * LOGREAD_POS_STRLEN + 1);
    logread_pos_t *sorted = malloc((c->n ? c->n : 1) * sizeof(*sorted));
    size_t len = 0;

    *out = NULL;
    if (s == NULL || sorted == NULL) {
        free(s);
        free(sorted);
        return -ENOMEM;
    }
    s[0] = '\0';
    if (c->n > 0)
        memcpy(sorted, c->pos, c->n * sizeof(*sorted));
    qsort(sorted, c->n, sizeof(*sorted), cmp_pos);
    for (size_t i = 0; i < c->n; i++) {
        if (i > 0)
            s[len++] = ',';
        logread_pos_format(s + len, LOGREAD_POS_STRLEN, &sorted[i]);
        len += strlen(s + len);
    }
    free(sorted);
    *out = s;
    return 0;
}

void logread_cursor_free(logread_cursor_t *c)
{
    free(c->pos);
    c->pos = NULL;
    c->n = c->cap = 0;
}

/* ---- filters, lines and times ---------------------------------------------------------- */

/* 1 if JSON value `v` is the string `want`. */
static int json_is_str(const json_t *v, const char *want)
{
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

int logread_filter_match(const logread_filter_t *f, const logread_record_t *rec)
{
    int ok = 1;

    if (rec->time_ms < f->since_ms || (f->until_ms != 0 && rec->time_ms >= f->until_ms))
        return 0;
    if (f->endpoint != 0 && rec->endpoint != f->endpoint)
        return 0;
    if (f->event == NULL && f->token == NULL)
        return 1;
    json_t *o = json_loadb(rec->payload, rec->len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    if (f->event != NULL)
        ok = json_is_str(json_object_get(o, "event"), f->event);
    if (ok && f->token != NULL)
        ok = json_is_str(json_object_get(json_object_get(o, "properties"), "token"), f->token) ||
             json_is_str(json_object_get(o, "$token"), f->token);
    json_decref(o);
    return ok;
}

/* Format the "_trackd" member (without braces around the whole event). */
static int format_meta(char *out, size_t outlen, const logread_record_t *rec)
{
    const logread_pos_t *p = &rec->pos;
    return snprintf(out, outlen,
                    "\"_trackd\":{\"endpoint\":\"%s\",\"received_ms\":%" PRIu64 ",\"slot\":%" PRIu32
                    ",\"segment\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"pos\":\"%" PRIu32 ":%" PRIu64
                    ":%" PRIu64 "\"}",
                    segment_endpoint_name(rec->endpoint), rec->time_ms, p->slot, p->seq, p->offset,
                    p->slot, p->seq, p->offset);
}

/*
 * The slow path: parse, replace any "_trackd" the event already has, serialise. Taken only for a
 * payload the fast path cannot splice safely.
 */
static ssize_t format_slow(const logread_record_t *rec, char *out, size_t outlen)
{
    char meta[256];
    ssize_t ret;
    json_t *o = json_loadb(rec->payload, rec->len, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(o)) {
        json_decref(o);
        return -EBADMSG;
    }
    /* Build the metadata object from the same text the fast path writes. */
    int mlen = format_meta(meta, sizeof(meta), rec);
    json_t *m = json_loadb(meta + 10, (size_t)mlen - 10, 0, NULL); /* skip "\"_trackd\":" */
    if (m == NULL || json_object_set_new(o, "_trackd", m) != 0) {
        json_decref(o);
        return -ENOMEM;
    }
    size_t n = json_dumpb(o, out, outlen, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n == 0)
        return -ENOMEM;
    ret = (ssize_t)n + 1;
    if ((size_t)ret <= outlen)
        out[n] = '\n';
    return ret;
}

ssize_t logread_format_line(const logread_record_t *rec, char *out, size_t outlen)
{
    const char *p = rec->payload;
    size_t len = rec->len;
    char meta[256];

    /*
     * The payload is compact JSON the server wrote: splice the metadata in before its closing
     * brace without parsing it. Parse only when that could produce a duplicate key or a line
     * break inside the line.
     */
    if (len < 2 || p[0] != '{' || p[len - 1] != '}' || memchr(p, '\n', len) != NULL ||
        memmem(p, len, "\"_trackd\"", 9) != NULL)
        return format_slow(rec, out, outlen);
    int mlen = format_meta(meta, sizeof(meta), rec);
    int empty = 1;
    for (size_t i = 1; i + 1 < len && empty; i++)
        empty = p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
    size_t need = (len - 1) + (empty ? 0 : 1) + (size_t)mlen + 2;
    if (need <= outlen) {
        char *o = out;
        memcpy(o, p, len - 1);
        o += len - 1;
        if (!empty)
            *o++ = ',';
        memcpy(o, meta, (size_t)mlen);
        o += mlen;
        *o++ = '}';
        *o++ = '\n';
    }
    return (ssize_t)need;
}

/* Parse exactly `n` digits at *s into *v. */
static int digits(const char **s, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*s)[i];
        if (c < '0' || c > '9')
            return -EINVAL;
        x = x * 10 + (c - '0');
    }
    *s += n;
    *v = x;
    return 0;
}

/* Days from 1970-01-01 to the given proleptic Gregorian date (civil calendar arithmetic). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int logread_parse_time(const char *s, uint64_t *ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, tz = 0;
    const char *p = s;

    if (*p >= '0' && *p <= '9' && strspn(p, "0123456789") == strlen(p)) {
        uint64_t v;
        if (parse_u64(&p, &v) != 0)
            return -EINVAL;
        *ms = v;
        return 0;
    }
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return -EINVAL;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
        return -EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || h > 23 || mi > 59)
            return -EINVAL;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec) || sec > 60)
                return -EINVAL;
            if (*p == '.' || *p == ',') {
                int scale = 100, nd = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, nd++) {
                    frac += (*p - '0') * scale;
                    scale /= 10;
                }
                if (nd == 0)
                    return -EINVAL;
            }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, th, tm = 0;
            if (digits(&p, 2, &th) || th > 23)
                return -EINVAL;
            if (*p == ':')
                p++;
            if (*p != '\0' && (digits(&p, 2, &tm) || tm > 59))
                return -EINVAL;
            tz = sign * (th * 60 + tm);
        }
    }
    if (*p != '\0')
        return -EINVAL;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - (int64_t)tz * 60;
    if (t < 0)
        return -EINVAL;
    *ms = (uint64_t)t * 1000 + (uint64_t)frac;
    return 0;
}

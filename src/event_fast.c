/*
 * The fast path of event validation: one strict pass over a /track or /import request's JSON
 * that checks the syntax and every rule of validate_track (event.c) at once, without building a
 * tree and without allocating. jansson stays trackd's JSON decoder: it is the reference, and
 * the fallback. This pass only ever says "every event is valid, store them" or "not certain",
 * and on the second event.c runs jansson's path from scratch, which then gives exactly the
 * answer it always gave. So the set of requests this pass accepts must be a subset of what
 * jansson's path accepts with the same records, and it refuses (falls back on) anything rare or
 * subtle: \u escapes, escapes in keys, duplicate keys, numbers with exponents or long integer
 * parts, deep nesting, any invalid event. Profile updates (/engage, /groups) never come here.
 *
 * The syntax accepted is RFC 8259 JSON as jansson reads it: blanks are space, tab, CR and LF;
 * strings hold no byte below 0x20 and only well-formed UTF-8 (no overlong forms, surrogates or
 * code points above U+10FFFF: jansson's utf8_check_first/utf8_check_full); numbers are
 * -?(0|[1-9][0-9]*)(.[0-9]+)?; the top level is one object or array, followed by blanks only.
 * Numbers are converted as jansson converts them (strtoll for integers, strtod for reals), and
 * only for properties.time, the one number a rule looks at.
 */
#include "event_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/segment.h"

/* Containers open at once, the top-level array included: a valid event needs 6 (array, event,
 * properties, three levels of a property value); other members of an event may nest a little
 * deeper here, and deeper still through jansson's path. */
#define FAST_MAX_DEPTH 10
/* Keys of the objects open at once, remembered to find duplicates; more: jansson's path. */
#define FAST_MAX_KEYS 1024
/* Digits before the point of a number this pass is sure of: an integer below 2^63, which
 * jansson's strtoll takes without ERANGE, and a real far from strtod's overflow. */
#define FAST_MAX_INT_DIGITS 18
/* The longest properties.time converted here (its text is copied to be NUL-terminated). */
#define FAST_MAX_NUMBER 64
/* Words of the per-object bit filter that tells most keys apart without comparing them. */
#define FAST_FILTER_WORDS 4

/* "Not certain": unwinds everything, and event.c runs jansson's path. */
#define FALLBACK 1

/* String bytes: 0 = plain (copied as they are), else what needs a look. */
enum { STR_PLAIN = 0, STR_QUOTE, STR_BACKSLASH, STR_CONTROL, STR_UTF8 };
/* clang-format off */
static const uint8_t str_class[256] = {
#define C4(x) x, x, x, x
#define C16(x) C4(x), C4(x), C4(x), C4(x)
    C16(STR_CONTROL), C16(STR_CONTROL),              /* 0x00-0x1f */
    0, 0, STR_QUOTE, 0, C4(0), C4(0), C4(0),          /* 0x20-0x2f: '"' */
    C16(0), C16(0),                                   /* 0x30-0x4f */
    C4(0), C4(0), C4(0), STR_BACKSLASH, 0, 0, 0,      /* 0x50-0x5f: '\\' */
    C16(0), C16(0),                                   /* 0x60-0x7f */
    C16(STR_UTF8), C16(STR_UTF8), C16(STR_UTF8), C16(STR_UTF8),
    C16(STR_UTF8), C16(STR_UTF8), C16(STR_UTF8), C16(STR_UTF8),
#undef C16
#undef C4
};
/* clang-format on */

/* The escapes kept as sent: \" \\ \/ \b \f \n \r \t (a \u escape goes to jansson). */
static const uint8_t simple_escape[256] = {
    ['"'] = 1, ['\\'] = 1, ['/'] = 1, ['b'] = 1, ['f'] = 1, ['n'] = 1, ['r'] = 1, ['t'] = 1,
};

/* A key of an open object: where its raw text is. */
typedef struct {
    uint32_t off, len;
} fast_key_t;

/* One request's scan. */
typedef struct {
    const unsigned char *s;
    size_t n, i;
    int blanks; /* blanks were skipped since the current event began */
    size_t nkeys;
    fast_key_t keys[FAST_MAX_KEYS];
} fast_t;

/* What one properties object held, for the rules checked after it. */
typedef struct {
    size_t count;
    int token, time, distinct_id, insert_id, ip;
    int time_integer;
    double time_value;
    size_t time_from, time_to;
} fast_props_t;

static int scan_value(fast_t *f, int depth, int level);

static inline void skip_blanks(fast_t *f)
{
    if (f->i < f->n && event__blank[f->s[f->i]]) {
        f->blanks = 1;
        while (f->i < f->n && event__blank[f->s[f->i]])
            f->i++;
    }
}

/*
 * Length of the well-formed UTF-8 sequence of 2 to 4 bytes at p[0..n), or 0 (Unicode's table of
 * well-formed byte sequences, which is what jansson's checks amount to).
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0], lo = 0x80, hi = 0xbf;
    size_t len;

    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0; /* a continuation byte, 0xc0/0xc1 (overlong ASCII), 0xf5+ (above U+10FFFF) */
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* UTF-16 surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (p[k] < 0x80 || p[k] > 0xbf)
            return 0;
    return len;
}

/*
 * 1 if none of the 8 bytes of `w` needs a look (a quote, a backslash, a control byte, a byte of
 * 0x80 or above): the usual bit tricks for "has a byte equal to / less than".
 */
static inline int word_plain(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');

    return ((((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & high) == 0;
}

/* The string at s[i] == '"': moves past it; *escaped says whether it holds a backslash. */
static int scan_string(fast_t *f, int *escaped)
{
    const unsigned char *s = f->s;
    size_t i = f->i + 1, n = f->n, k;

    *escaped = 0;
    for (;;) {
        /* Eight plain bytes at a time (URLs, user agents), then byte by byte to the next. */
        for (uint64_t w; i + 8 <= n && (memcpy(&w, s + i, 8), word_plain(w));)
            i += 8;
        while (i < n && str_class[s[i]] == STR_PLAIN)
            i++;
        if (i >= n)
            return FALLBACK;
        switch (str_class[s[i]]) {
        case STR_QUOTE:
            f->i = i + 1;
            return 0;
        case STR_BACKSLASH:
            if (i + 1 >= n || !simple_escape[s[i + 1]])
                return FALLBACK;
            *escaped = 1;
            i += 2;
            break;
        case STR_UTF8:
            if ((k = utf8_seq(s + i, n - i)) == 0)
                return FALLBACK;
            i += k;
            break;
        default:
            return FALLBACK; /* a control byte */
        }
    }
}

/*
 * The number at s[i]: moves past it; *integer says whether jansson makes it an integer. With
 * `value`, also its value as json_number_value would give it.
 */
static int scan_number(fast_t *f, int *integer, double *value)
{
    const unsigned char *s = f->s;
    size_t i = f->i, n = f->n, start = i, digits;
    int64_t v = 0;

    if (s[i] == '-')
        i++;
    digits = i;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (i - digits < FAST_MAX_INT_DIGITS)
                v = v * 10 + (s[i] - '0');
    } else {
        return FALLBACK;
    }
    if (i - digits > FAST_MAX_INT_DIGITS)
        return FALLBACK;
    *integer = 1;
    if (i < n && s[i] == '.') {
        size_t frac = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == frac)
            return FALLBACK;
        *integer = 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E'))
        return FALLBACK; /* exponents: jansson's strtod may refuse them as overflow */
    /* Whatever follows must end the value; the caller's grammar checks that. */
    f->i = i;
    if (value == NULL)
        return 0;
    if (*integer) {
        *value = (double)(s[start] == '-' ? -v : v);
    } else {
        char buf[FAST_MAX_NUMBER];
        if (i - start >= sizeof(buf))
            return FALLBACK;
        memcpy(buf, s + start, i - start);
        buf[i - start] = '\0';
        /* As jansson's jsonp_strtod, which only swaps '.' for the locale's decimal point:
         * trackd never leaves the C locale, where that is '.' already. */
        *value = strtod(buf, NULL);
    }
    return 0;
}

static int scan_literal(fast_t *f, const char *lit, size_t len)
{
    if (f->n - f->i < len || memcmp(f->s + f->i, lit, len) != 0)
        return FALLBACK;
    f->i += len;
    return 0;
}

static inline unsigned key_hash(const unsigned char *k, size_t len)
{
    uint32_t h = (uint32_t)len;

    if (len > 0)
        h += k[0] * 3u + k[len / 2] * 7u + k[len - 1] * 13u;
    return (h * 2654435761u) >> 24; /* 0..255: one bit of the filter */
}

/*
 * The key s[off..off+len) of the object whose keys start at keys[base]: FALLBACK if the object
 * has it already (jansson's path stores such events from its tree) or the table is full.
 */
static inline int key_add(fast_t *f, size_t base, uint64_t *filter, size_t off, size_t len)
{
    unsigned h = key_hash(f->s + off, len);
    uint64_t bit = (uint64_t)1 << (h & 63);

    if (filter[h >> 6] & bit) {
        for (size_t k = base; k < f->nkeys; k++)
            if (f->keys[k].len == len && memcmp(f->s + f->keys[k].off, f->s + off, len) == 0)
                return FALLBACK;
    }
    filter[h >> 6] |= bit;
    if (f->nkeys == FAST_MAX_KEYS)
        return FALLBACK;
    f->keys[f->nkeys].off = (uint32_t)off;
    f->keys[f->nkeys].len = (uint32_t)len;
    f->nkeys++;
    return 0;
}

/* A key of an object, and the ':' after it: sets its raw span. No escapes in keys here. */
static int scan_key(fast_t *f, size_t *off, size_t *len)
{
    int escaped;

    if (f->i >= f->n || f->s[f->i] != '"')
        return FALLBACK;
    *off = f->i + 1;
    if (scan_string(f, &escaped) || escaped)
        return FALLBACK;
    *len = f->i - 1 - *off;
    skip_blanks(f);
    if (f->i >= f->n || f->s[f->i] != ':')
        return FALLBACK;
    f->i++;
    skip_blanks(f);
    return f->i < f->n ? 0 : FALLBACK;
}

/* After a member or element: 0 at ',' (skipped), 2 at `close` (skipped), else FALLBACK. */
static int next_item(fast_t *f, unsigned char close)
{
    skip_blanks(f);
    if (f->i >= f->n)
        return FALLBACK;
    if (f->s[f->i] == ',') {
        f->i++;
        skip_blanks(f);
        return 0;
    }
    if (f->s[f->i] == close) {
        f->i++;
        return 2;
    }
    return FALLBACK;
}

/*
 * An object or array at s[i]: `depth` counts it; `level` is its nesting level inside a
 * property value (check_value in event.c: more than EVENT_MAX_NESTING levels, or
 * EVENT_MAX_CONTAINER_ITEMS items, make the event invalid), 0 outside properties.
 */
static int scan_container(fast_t *f, int depth, int level)
{
    int object = f->s[f->i] == '{', rc;
    unsigned char close = object ? '}' : ']';
    uint64_t filter[FAST_FILTER_WORDS] = {0};
    size_t base = f->nkeys, items = 0, off, len;

    if (depth > FAST_MAX_DEPTH || level > EVENT_MAX_NESTING)
        return FALLBACK;
    f->i++;
    skip_blanks(f);
    if (f->i < f->n && f->s[f->i] == close) {
        f->i++;
        return 0;
    }
    do {
        if (object && (scan_key(f, &off, &len) || key_add(f, base, filter, off, len)))
            return FALLBACK;
        if (f->i >= f->n || scan_value(f, depth, level ? level + 1 : 0))
            return FALLBACK;
        if (level && ++items >= EVENT_MAX_CONTAINER_ITEMS)
            return FALLBACK;
    } while ((rc = next_item(f, close)) == 0);
    f->nkeys = base;
    return rc == 2 ? 0 : FALLBACK;
}

/* Any value at s[i] (not a blank, i < n); `depth` = containers open around it. */
static int scan_value(fast_t *f, int depth, int level)
{
    int escaped, integer;

    switch (f->s[f->i]) {
    case '"':
        return scan_string(f, &escaped);
    case '{':
    case '[':
        return scan_container(f, depth + 1, level);
    case 't':
        return scan_literal(f, "true", 4);
    case 'f':
        return scan_literal(f, "false", 5);
    case 'n':
        return scan_literal(f, "null", 4);
    default:
        return scan_number(f, &integer, NULL);
    }
}

static int key_is(const fast_t *f, size_t off, size_t len, const char *name, size_t nlen)
{
    return len == nlen && memcmp(f->s + off, name, nlen) == 0;
}

/* A string value at s[i] that is not empty: its raw span and whether it has escapes. */
static int scan_nonempty_string(fast_t *f, size_t *off, size_t *len, int *escaped)
{
    if (f->s[f->i] != '"')
        return FALLBACK;
    *off = f->i + 1;
    if (scan_string(f, escaped))
        return FALLBACK;
    *len = f->i - 1 - *off;
    return *len > 0 ? 0 : FALLBACK;
}

/* The properties object at s[i] == '{' (validate_track's rules on its members). */
static int scan_properties(fast_t *f, int depth, const event_opts_t *opts, fast_props_t *p)
{
    const config_list_t *tokens = opts->tokens;
    uint64_t filter[FAST_FILTER_WORDS] = {0};
    size_t base = f->nkeys, off, len, voff, vlen;
    int rc, escaped;

    if (depth > FAST_MAX_DEPTH)
        return FALLBACK;
    f->i++;
    skip_blanks(f);
    if (f->i < f->n && f->s[f->i] == '}') {
        f->i++;
        return 0;
    }
    do {
        if (scan_key(f, &off, &len) || key_add(f, base, filter, off, len))
            return FALLBACK;
        if (++p->count >= EVENT_MAX_PROPERTIES)
            return FALLBACK;
        /* The keys the rules name: their values are checked here, the others in scan_value. */
        switch (len) {
        case 2:
            p->ip |= key_is(f, off, len, "ip", 2);
            break;
        case 4:
            if (key_is(f, off, len, "time", 4)) {
                unsigned char c = f->s[f->i];
                if (c != '-' && (c < '0' || c > '9'))
                    return FALLBACK;
                p->time = 1;
                p->time_from = f->i;
                if (scan_number(f, &p->time_integer, &p->time_value))
                    return FALLBACK;
                p->time_to = f->i;
                goto next;
            }
            break;
        case 5:
            if (key_is(f, off, len, "token", 5)) {
                if (scan_nonempty_string(f, &voff, &vlen, &escaped))
                    return FALLBACK;
                /* The allow-list compares decoded bytes: an escaped token goes to jansson. */
                if (tokens != NULL && tokens->n > 0 &&
                    (escaped || !config_list_has(tokens, (const char *)f->s + voff, vlen)))
                    return FALLBACK;
                p->token = 1;
                goto next;
            }
            break;
        case 10:
            if (key_is(f, off, len, "$insert_id", 10)) {
                if (scan_nonempty_string(f, &voff, &vlen, &escaped) ||
                    !event__insert_id_ok((const char *)f->s + voff, vlen))
                    return FALLBACK;
                p->insert_id = 1;
                goto next;
            }
            break;
        case 11:
            if (key_is(f, off, len, "distinct_id", 11)) {
                unsigned char c = f->s[f->i];
                if (c != '"' && c != '-' && (c < '0' || c > '9'))
                    return FALLBACK;
                p->distinct_id = 1;
            }
            break;
        }
        if (scan_value(f, depth, 1))
            return FALLBACK;
    next:;
    } while ((rc = next_item(f, '}')) == 0);
    f->nkeys = base;
    return rc == 2 ? 0 : FALLBACK;
}

/* One event object at s[i] == '{' (depth counts it): validate it, fill `edit`. */
static int scan_event(fast_t *f, int depth, const event_opts_t *opts, event_edit_t *edit)
{
    uint64_t filter[FAST_FILTER_WORDS] = {0};
    size_t base = f->nkeys, off, len, voff, vlen;
    fast_props_t p;
    int rc, escaped, has_event = 0, has_props = 0, in_ms;

    memset(&p, 0, sizeof(p));
    f->i++;
    skip_blanks(f);
    do {
        if (scan_key(f, &off, &len) || key_add(f, base, filter, off, len))
            return FALLBACK;
        if (key_is(f, off, len, "event", 5)) {
            if (scan_nonempty_string(f, &voff, &vlen, &escaped))
                return FALLBACK;
            has_event = 1;
        } else if (key_is(f, off, len, "properties", 10)) {
            if (f->s[f->i] != '{' || scan_properties(f, depth + 1, opts, &p))
                return FALLBACK;
            has_props = 1;
            edit->props_end = f->i;
        } else if (scan_value(f, depth, 0)) {
            return FALLBACK;
        }
    } while ((rc = next_item(f, '}')) == 0);
    f->nkeys = base;
    if (rc != 2 || !has_event || !has_props || !p.token)
        return FALLBACK;
    if (opts->endpoint == SEGMENT_EP_IMPORT && (!p.time || !p.distinct_id || !p.insert_id))
        return FALLBACK;
    if (p.time) {
        switch (event__time_rule(opts, p.time_value, &in_ms)) {
        case EVENT_TIME_OK:
            break;
        case EVENT_TIME_CLAMP:
            edit->clamp_time = 1;
            edit->time_in_ms = in_ms;
            edit->time_integer = p.time_integer;
            edit->time_from = p.time_from;
            edit->time_to = p.time_to;
            break;
        default:
            return FALLBACK;
        }
    }
    if (opts->ip != NULL && !p.ip) {
        edit->ip_key = "ip";
        edit->ip_obj_empty = p.count == 0;
    }
    return 0;
}

/* One element of the request: an event object, validated and stored. */
static int fast_event(fast_t *f, int depth, const event_opts_t *opts, event_fast_store_fn store,
                      void *ctx)
{
    event_edit_t edit;
    size_t start = f->i;
    int rc;

    if (f->i >= f->n || f->s[f->i] != '{')
        return FALLBACK;
    memset(&edit, 0, sizeof(edit));
    f->blanks = 0;
    if ((rc = scan_event(f, depth, opts, &edit)) != 0)
        return rc;
    edit.blanks = f->blanks;
    return store(ctx, start, f->i, &edit);
}

int event__fast_track(const char *json, size_t i, size_t len, const event_opts_t *opts,
                      event_fast_store_fn store, void *ctx, size_t *nevents)
{
    fast_t f;
    size_t count = 0;
    int rc;

    if (len > UINT32_MAX || i >= len)
        return FALLBACK;
    f.s = (const unsigned char *)json;
    f.n = len;
    f.i = i;
    f.nkeys = 0;
    f.blanks = 0;
    if (json[i] == '{') {
        if ((rc = fast_event(&f, 1, opts, store, ctx)) != 0)
            return rc;
        count = 1;
    } else if (json[i] == '[') {
        f.i++;
        skip_blanks(&f);
        do {
            if (++count > opts->max_events)
                return FALLBACK;
            if ((rc = fast_event(&f, 2, opts, store, ctx)) != 0)
                return rc;
        } while ((rc = next_item(&f, ']')) == 0);
        if (rc != 2)
            return FALLBACK;
    } else {
        return FALLBACK;
    }
    skip_blanks(&f);
    if (f.i != f.n)
        return FALLBACK;
    *nevents = count;
    return 0;
}

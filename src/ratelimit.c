/*
 * Per-token token buckets (ratelimit.h). The buckets live in an open-addressing hash table keyed
 * by the unescaped token; a bucket records its level at the time it was last touched and is
 * refilled lazily, so an idle token costs nothing but its slot. When the table is full, buckets
 * that have refilled completely are dropped (a full bucket behaves exactly like a new one, so
 * this changes no answer); only if none can be dropped do new tokens share the overflow bucket.
 *
 * The token of a stored record is found with a small JSON walker rather than a second parse: the
 * record is JSON the validator already accepted, so the walker only has to follow strings and
 * nesting to find the key at the right depth, and unescape the value.
 */
#include "trackd/ratelimit.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/** Initial number of slots of the table (a power of two). */
#define RATELIMIT_INITIAL_SLOTS 64
/** A full table is swept for refilled buckets at most this often (a sweep is O(table)). */
#define RATELIMIT_SWEEP_NS 1000000000ULL

typedef struct {
    char *token; /* NULL: empty slot */
    size_t len;
    double level;   /* events available at `at_ns` (negative: debt of a big batch) */
    uint64_t at_ns; /* when `level` was computed */
    uint64_t rate;  /* events per second (from the config) */
    uint64_t burst;
} rl_bucket_t;

struct ratelimit_s {
    const config_t *cfg;
    rl_bucket_t *slots;
    size_t nslots, used;
    rl_bucket_t overflow; /* shared by tokens that find no slot; token NULL */
    uint64_t swept_ns;    /* last sweep of a full table */
    int enabled;
};

ratelimit_t *ratelimit_new(const config_t *cfg)
{
    ratelimit_t *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return NULL;
    rl->cfg = cfg;
    rl->enabled = cfg->rate_limit.rate > 0;
    for (size_t i = 0; i < cfg->nrate_limit_tokens; i++)
        if (cfg->rate_limit_tokens[i].rate > 0)
            rl->enabled = 1;
    rl->overflow.rate = cfg->rate_limit.rate;
    rl->overflow.burst = cfg->rate_limit.burst;
    rl->overflow.level = (double)cfg->rate_limit.burst;
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->nslots; i++)
        free(rl->slots[i].token);
    free(rl->slots);
    free(rl);
}

int ratelimit_enabled(const ratelimit_t *rl)
{
    return rl->enabled;
}

size_t ratelimit_buckets(const ratelimit_t *rl)
{
    return rl->used;
}

/* FNV-1a: tokens are short and not chosen to collide with each other's buckets for long. */
static uint64_t rl_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The bucket's level now, without taking anything. */
static double rl_level(const rl_bucket_t *b, uint64_t now_ns)
{
    double level = b->level;
    if (now_ns > b->at_ns)
        level += (double)(now_ns - b->at_ns) * (double)b->rate / 1e9;
    return level > (double)b->burst ? (double)b->burst : level;
}

/* Place `b` (its token owned by it) into a table of `nslots` slots. */
static void rl_place(rl_bucket_t *slots, size_t nslots, const rl_bucket_t *b)
{
    size_t i = (size_t)rl_hash(b->token, b->len) & (nslots - 1);
    while (slots[i].token)
        i = (i + 1) & (nslots - 1);
    slots[i] = *b;
}

/*
 * Rebuild the table into `nslots` slots, dropping buckets that are full at `now_ns` (they are
 * indistinguishable from new ones). Returns 0 or -ENOMEM (the old table is kept).
 */
static int rl_rebuild(ratelimit_t *rl, size_t nslots, uint64_t now_ns)
{
    rl_bucket_t *ns = calloc(nslots, sizeof(*ns));
    size_t used = 0;

    if (ns == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < rl->nslots; i++) {
        rl_bucket_t *b = &rl->slots[i];
        if (b->token == NULL)
            continue;
        if (rl_level(b, now_ns) >= (double)b->burst) {
            free(b->token);
            continue;
        }
        rl_place(ns, nslots, b);
        used++;
    }
    free(rl->slots);
    rl->slots = ns;
    rl->nslots = nslots;
    rl->used = used;
    return 0;
}

/* The bucket of `token`, created full if new; the overflow bucket if the table cannot take it. */
static rl_bucket_t *rl_bucket(ratelimit_t *rl, const char *token, size_t len, uint64_t now_ns,
                              int *err)
{
    const config_rate_t *lim = config_rate_for(rl->cfg, token, len);
    rl_bucket_t nb;
    size_t i;

    *err = 0;
    if (rl->nslots) {
        i = (size_t)rl_hash(token, len) & (rl->nslots - 1);
        for (; rl->slots[i].token; i = (i + 1) & (rl->nslots - 1)) {
            rl_bucket_t *b = &rl->slots[i];
            if (b->len == len && memcmp(b->token, token, len) == 0)
                return b;
        }
    }
    /* Keep the load factor under 1/2; past the cap, drop refilled buckets first. */
    if (rl->used + 1 > rl->nslots / 2) {
        size_t want = rl->nslots ? rl->nslots : RATELIMIT_INITIAL_SLOTS;
        int full = want >= 2 * (size_t)RATELIMIT_MAX_BUCKETS;
        if (rl->used + 1 > want / 2 && !full)
            want *= 2;
        /* A full table is swept once a second at most, so a flood of new tokens stays O(1). */
        if (full && rl->swept_ns && now_ns - rl->swept_ns < RATELIMIT_SWEEP_NS)
            return &rl->overflow;
        if ((*err = rl_rebuild(rl, want, now_ns)) != 0)
            return NULL;
        if (full)
            rl->swept_ns = now_ns ? now_ns : 1;
        if (rl->used + 1 > rl->nslots / 2)
            return &rl->overflow;
    }
    nb.token = malloc(len + 1);
    if (nb.token == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(nb.token, token, len);
    nb.token[len] = '\0';
    nb.len = len;
    nb.rate = lim->rate;
    nb.burst = lim->burst;
    nb.level = (double)lim->burst;
    nb.at_ns = now_ns;
    rl_place(rl->slots, rl->nslots, &nb);
    rl->used++;
    /* Find it again: rl_place copied it into its slot. */
    i = (size_t)rl_hash(token, len) & (rl->nslots - 1);
    while (rl->slots[i].token != nb.token)
        i = (i + 1) & (rl->nslots - 1);
    return &rl->slots[i];
}

int ratelimit_take(ratelimit_t *rl, const ratelimit_want_t *want, size_t n, uint64_t now_ns,
                   uint64_t *retry_after_s)
{
    rl_bucket_t *small[8], **b = small;
    double wait_s = 0;
    int err = 0, refused = 0;

    *retry_after_s = 0;
    if (!rl->enabled || n == 0)
        return 0;
    if (n > sizeof(small) / sizeof(small[0])) {
        b = malloc(n * sizeof(*b));
        if (b == NULL)
            return -ENOMEM;
    }
    /* First pass: find every bucket and see whether all of them hold enough. */
    for (size_t i = 0; i < n; i++) {
        b[i] = rl_bucket(rl, want[i].token, want[i].len, now_ns, &err);
        if (b[i] == NULL)
            goto out;
        if (b[i]->rate == 0)
            continue; /* unlimited token */
        double level = rl_level(b[i], now_ns);
        double need = (double)(want[i].events < b[i]->burst ? want[i].events : b[i]->burst);
        if (level < need) {
            double s = (need - level) / (double)b[i]->rate;
            if (s > wait_s)
                wait_s = s;
            refused = 1;
        }
    }
    if (refused) {
        double secs = ceil(wait_s);
        *retry_after_s = secs < 1 ? 1 : (uint64_t)secs;
        goto out;
    }
    /* Second pass: take from all of them (two wants may share the overflow bucket). */
    for (size_t i = 0; i < n; i++) {
        if (b[i]->rate == 0)
            continue;
        b[i]->level = rl_level(b[i], now_ns) - (double)want[i].events;
        b[i]->at_ns = now_ns;
    }
out:
    if (b != small)
        free(b);
    return err ? err : refused;
}

/* ---- finding the token in a stored record --------------------------------------------- */

static size_t rl_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static int rl_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int rl_hex4(const char *s, size_t i, size_t n, unsigned *out)
{
    unsigned v = 0;
    if (i + 4 > n)
        return -1;
    for (size_t k = 0; k < 4; k++) {
        int h = rl_hex(s[i + k]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Append code point `cp` as UTF-8; returns the new length, or cap + 1 when it does not fit. */
static size_t rl_utf8(char *out, size_t o, size_t cap, unsigned cp)
{
    unsigned char b[4];
    size_t k;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    if (o + k > cap)
        return cap + 1;
    memcpy(out + o, b, k);
    return o + k;
}

/*
 * The string starting at s[i] == '"': returns the index past its closing quote (n if it does not
 * close). With `out`, its unescaped value goes there (up to `cap` bytes; *olen = cap + 1 if it
 * did not fit).
 */
static size_t rl_string(const char *s, size_t i, size_t n, char *out, size_t cap, size_t *olen)
{
    size_t o = 0;

    for (i++; i < n && s[i] != '"'; i++) {
        unsigned cp = (unsigned char)s[i];
        if (s[i] == '\\' && i + 1 < n) {
            i++;
            switch (s[i]) {
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u':
                if (rl_hex4(s, i + 1, n, &cp) != 0)
                    break;
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n && s[i + 1] == '\\' &&
                    s[i + 2] == 'u') {
                    unsigned lo;
                    if (rl_hex4(s, i + 3, n, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                break;
            default:
                cp = (unsigned char)s[i]; /* \" \\ \/ */
                break;
            }
            if (out && o <= cap)
                o = rl_utf8(out, o, cap, cp);
            continue;
        }
        if (out && o <= cap) {
            if (o < cap)
                out[o] = s[i];
            o++;
        }
    }
    if (olen)
        *olen = o;
    return i < n ? i + 1 : n;
}

/* Index past the value starting at s[i] (valid JSON: strings, containers, scalars). */
static size_t rl_skip(const char *s, size_t i, size_t n)
{
    int depth = 0;

    do {
        i = rl_ws(s, i, n);
        if (i >= n)
            return n;
        if (s[i] == '"') {
            i = rl_string(s, i, n, NULL, 0, NULL);
        } else if (s[i] == '{' || s[i] == '[') {
            depth++;
            i++;
        } else if (s[i] == '}' || s[i] == ']') {
            depth--;
            i++;
        } else if (s[i] == ',' || s[i] == ':') {
            i++;
        } else {
            while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
                   s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
                i++;
        }
    } while (depth > 0 && i < n);
    return i;
}

/* Is the key string at s[i] exactly `key`? (Keys with escapes never match: tokens don't need.) */
static int rl_key_is(const char *s, size_t i, size_t n, const char *key)
{
    size_t k = strlen(key);
    return i + k + 2 <= n && s[i] == '"' && memcmp(s + i + 1, key, k) == 0 && s[i + k + 1] == '"';
}

/*
 * Walk the object at s[i]; for the key `key`, decode its string value into out. `nested` names
 * an object member to walk into with key `nested_key`. Returns the token length, 0, or -E2BIG.
 */
static int rl_find(const char *s, size_t i, size_t n, const char *key, const char *nested,
                   const char *nested_key, char *out)
{
    i = rl_ws(s, i, n);
    if (i >= n || s[i] != '{')
        return 0;
    i++;
    for (;;) {
        i = rl_ws(s, i, n);
        if (i >= n || s[i] != '"')
            return 0;
        size_t kstart = i;
        i = rl_string(s, i, n, NULL, 0, NULL);
        i = rl_ws(s, i, n);
        if (i >= n || s[i] != ':')
            return 0;
        i = rl_ws(s, i + 1, n);
        if (key && rl_key_is(s, kstart, n, key) && i < n && s[i] == '"') {
            size_t olen;
            rl_string(s, i, n, out, RATELIMIT_TOKEN_MAX, &olen);
            if (olen > RATELIMIT_TOKEN_MAX) {
                out[0] = '\0';
                return -E2BIG;
            }
            out[olen] = '\0';
            return (int)olen;
        }
        if (nested && rl_key_is(s, kstart, n, nested) && i < n && s[i] == '{') {
            int r = rl_find(s, i, n, nested_key, NULL, NULL, out);
            if (r != 0)
                return r;
        }
        i = rl_ws(s, rl_skip(s, i, n), n);
        if (i >= n || s[i] != ',')
            return 0;
        i++;
    }
}

int ratelimit_token_of(const char *json, size_t len, char *out)
{
    out[0] = '\0';
    return rl_find(json, 0, len, "$token", "properties", "token", out);
}

int ratelimit_wants(const log_record_t *recs, size_t n, ratelimit_want_t **wantp, size_t *nwant)
{
    ratelimit_want_t *w = NULL;
    size_t nw = 0, cap = 0;
    char tok[RATELIMIT_TOKEN_MAX + 1];

    *wantp = NULL;
    *nwant = 0;
    for (size_t i = 0; i < n; i++) {
        int r = ratelimit_token_of(recs[i].payload, recs[i].len, tok);
        size_t len, k;
        if (r == 0)
            continue;
        len = r < 0 ? 0 : (size_t)r; /* too long: all such tokens share the "" bucket */
        for (k = 0; k < nw; k++)
            if (w[k].len == len && memcmp(w[k].token, tok, len) == 0)
                break;
        if (k == nw) {
            if (nw == cap) {
                size_t ncap = cap ? cap * 2 : 1;
                ratelimit_want_t *nb = realloc(w, ncap * sizeof(*nb));
                if (nb == NULL) {
                    free(w);
                    return -ENOMEM;
                }
                w = nb;
                cap = ncap;
            }
            memcpy(w[nw].token, tok, len);
            w[nw].token[len] = '\0';
            w[nw].len = len;
            w[nw].events = 0;
            nw++;
        }
        w[k].events++;
    }
    *wantp = w;
    *nwant = nw;
    return 0;
}

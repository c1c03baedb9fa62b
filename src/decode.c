/*
 * Wire decoders: query strings and form bodies, percent-encoding, lenient base64, gzip bodies and
 * the `data` value (JSON or base64 JSON). Every event goes through these on the request path, so
 * the loops are table-driven and work in place where they can. Everything here treats its input
 * as hostile: bounds are explicit and no output ever grows past what the caller allowed.
 */
#include "trackd/decode.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* Table legend: XX is a byte that is not allowed; SK is skipped (CR, LF); PD is '=' padding. */
#define XX 0xFF
#define SK 0x40
#define PD 0x41

/* Hex digit values; XX elsewhere. */
/* clang-format off */
static const uint8_t hex_val[256] = {
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  XX, XX, XX, XX, XX, XX,
    XX, 10, 11, 12, 13, 14, 15, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, 10, 11, 12, 13, 14, 15, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,
};
/* clang-format on */

/*
 * Base64 sextet values (standard alphabet). A ' ' decodes as '+': an unescaped '+' in a form
 * body has already been turned into a space by the form decoder, and clients that do not escape
 * their base64 are common (API.md). The tables are generated from one definition of the alphabet.
 */
#define B64_SEXTET(c)                                                                              \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                                        \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                                                   \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                                                   \
     : (c) == '+' || (c) == ' ' ? 62                                                               \
     : (c) == '/'               ? 63                                                               \
                                : -1)
#define TABLE4(m, c) m(c), m((c) + 1), m((c) + 2), m((c) + 3)
#define TABLE16(m, c) TABLE4(m, c), TABLE4(m, (c) + 4), TABLE4(m, (c) + 8), TABLE4(m, (c) + 12)
#define TABLE64(m, c)                                                                              \
    TABLE16(m, c), TABLE16(m, (c) + 16), TABLE16(m, (c) + 32), TABLE16(m, (c) + 48)
#define TABLE256(m)                                                                                \
    {                                                                                              \
        TABLE64(m, 0), TABLE64(m, 64), TABLE64(m, 128), TABLE64(m, 192)                            \
    }

/* Values below 64, or XX, SK, PD: the byte-at-a-time decoder's table. */
#define B64_VAL(c)                                                                                 \
    ((uint8_t)((c) == '\r' || (c) == '\n' ? SK                                                     \
               : (c) == '='               ? PD                                                     \
               : B64_SEXTET(c) < 0        ? XX                                                     \
                                          : B64_SEXTET(c)))
static const uint8_t b64_val[256] = TABLE256(B64_VAL);

/*
 * The whole-quad decoder's tables: the sextet already shifted to its place in the quad's 24 bits,
 * or B64_BAD for anything else (padding, CR/LF too: the byte-at-a-time decoder takes over).
 */
#define B64_BAD 0x01000000u
#define B64_SHIFTED(c, s) (B64_SEXTET(c) < 0 ? B64_BAD : (uint32_t)B64_SEXTET(c) << (s))
#define B64_Q0(c) B64_SHIFTED(c, 18)
#define B64_Q1(c) B64_SHIFTED(c, 12)
#define B64_Q2(c) B64_SHIFTED(c, 6)
#define B64_Q3(c) B64_SHIFTED(c, 0)
static const uint32_t b64_q0[256] = TABLE256(B64_Q0), b64_q1[256] = TABLE256(B64_Q1),
                      b64_q2[256] = TABLE256(B64_Q2), b64_q3[256] = TABLE256(B64_Q3);

/* The 24 bits of the quad at p, or a value with B64_BAD set. */
static inline uint32_t b64_quad(const unsigned char *p)
{
    return b64_q0[p[0]] | b64_q1[p[1]] | b64_q2[p[2]] | b64_q3[p[3]];
}

/* Inflated bodies start this small at least, and grow by doubling up to the cap. */
#define GUNZIP_MIN_ALLOC 4096
/* Deflate cannot expand data by more than about 1032:1, so a larger gzip ISIZE is a lie. */
#define GUNZIP_MAX_RATIO 1032

/* Offset of the first byte of s[0..len) that percent-decoding changes ('%', or '+' if it means a
 * space), or len. memchr scans a word or a vector at a time; base64 values are long runs of
 * plain bytes between escapes. */
static size_t percent_next(const char *s, size_t len, int plus_space)
{
    const char *pct = memchr(s, '%', len);
    size_t n = pct ? (size_t)(pct - s) : len;
    const char *plus = plus_space ? memchr(s, '+', n) : NULL;
    return plus ? (size_t)(plus - s) : n;
}

ssize_t decode_percent(char *s, size_t len, int plus_space)
{
    /* Most values hold nothing to decode: find the first byte that needs work, in place. */
    size_t i = percent_next(s, len, plus_space), o = i;

    while (i < len) {
        if (s[i] == '%') {
            uint8_t hi, lo;
            if (len - i < 3)
                return -EINVAL;
            hi = hex_val[(unsigned char)s[i + 1]];
            lo = hex_val[(unsigned char)s[i + 2]];
            if (hi == XX || lo == XX)
                return -EINVAL;
            s[o++] = (char)(hi << 4 | lo);
            i += 3;
        } else {
            s[o++] = ' ';
            i++;
        }
        /* Move the plain run up to the next escape down over the bytes the decoding freed. */
        size_t run = percent_next(s + i, len - i, plus_space);
        memmove(s + o, s + i, run);
        o += run;
        i += run;
    }
    return (ssize_t)o;
}

int decode_form(char *buf, size_t len, decode_pair_t *pairs, size_t max, size_t *npairs)
{
    size_t n = 0, pos = 0;

    *npairs = 0;
    while (pos < len) {
        char *seg = buf + pos;
        char *amp = memchr(seg, '&', len - pos);
        size_t seg_len = amp ? (size_t)(amp - seg) : len - pos;
        char *eq;
        ssize_t kl, vl;

        pos += seg_len + 1;
        if (seg_len == 0)
            continue; /* "a=1&&b=2", a leading or trailing '&' */
        if (n == max)
            return -E2BIG;
        eq = memchr(seg, '=', seg_len);
        kl = decode_percent(seg, eq ? (size_t)(eq - seg) : seg_len, 1);
        if (kl < 0)
            return (int)kl;
        /* The terminator lands at or before the '=' / '&' / buf[len] the decoding shrank into. */
        seg[kl] = '\0';
        pairs[n].key = seg;
        pairs[n].key_len = (size_t)kl;
        if (eq) {
            char *val = eq + 1;
            vl = decode_percent(val, (size_t)(seg + seg_len - val), 1);
            if (vl < 0)
                return (int)vl;
            val[vl] = '\0';
            pairs[n].val = val;
            pairs[n].val_len = (size_t)vl;
        } else {
            /* A bare key ("?verbose") has an empty value: the key's own terminator. */
            pairs[n].val = seg + kl;
            pairs[n].val_len = 0;
        }
        n++;
    }
    *npairs = n;
    return 0;
}

const decode_pair_t *decode_form_get(const decode_pair_t *pairs, size_t n, const char *key)
{
    size_t klen = strlen(key);

    for (size_t i = 0; i < n; i++)
        if (pairs[i].key_len == klen && memcmp(pairs[i].key, key, klen) == 0)
            return &pairs[i];
    return NULL;
}

int decode_base64(const char *in, size_t len, char *out, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *)in;
    unsigned char *q = (unsigned char *)out;
    uint32_t acc = 0;
    size_t i = 0, o = 0;
    int n = 0; /* sextets in acc */

    *outlen = 0;
    while (i < len) {
        if (n == 0) {
            /*
             * Fast path: whole quads of plain alphabet characters, two at a time with one 8-byte
             * store (its last two bytes are overwritten next: at most len/4*3+2 bytes written).
             */
            while (len - i >= 8) {
                uint32_t x = b64_quad(p + i), y = b64_quad(p + i + 4);
                if ((x | y) & B64_BAD)
                    break;
                uint64_t w = htobe64((uint64_t)x << 40 | (uint64_t)y << 16);
                memcpy(q + o, &w, 8);
                o += 6;
                i += 8;
            }
            while (len - i >= 4) {
                uint32_t x = b64_quad(p + i);
                if (x & B64_BAD)
                    break;
                q[o] = (unsigned char)(x >> 16);
                q[o + 1] = (unsigned char)(x >> 8);
                q[o + 2] = (unsigned char)x;
                o += 3;
                i += 4;
            }
            if (i == len)
                break;
        }
        uint8_t v = b64_val[p[i++]];
        if (v < 64) {
            acc = acc << 6 | v;
            if (++n == 4) {
                q[o] = (unsigned char)(acc >> 16);
                q[o + 1] = (unsigned char)(acc >> 8);
                q[o + 2] = (unsigned char)acc;
                o += 3;
                n = 0;
                acc = 0;
            }
        } else if (v == SK) {
            continue;
        } else if (v == PD) {
            /* Padding, when sent, must complete the last quad and end the input. */
            int pad = 1;
            for (; i < len; i++) {
                uint8_t w = b64_val[p[i]];
                if (w == PD)
                    pad++;
                else if (w != SK)
                    return -EINVAL;
            }
            if (n < 2 || n + pad != 4)
                return -EINVAL;
            break;
        } else {
            return -EINVAL;
        }
    }
    /* A lone trailing sextet cannot hold a byte; two or three hold one or two. */
    if (n == 1)
        return -EINVAL;
    if (n == 2) {
        q[o++] = (unsigned char)(acc >> 4);
    } else if (n == 3) {
        q[o++] = (unsigned char)(acc >> 10);
        q[o++] = (unsigned char)(acc >> 2);
    }
    *outlen = o;
    return 0;
}

/* First allocation for an inflated body: the gzip trailer's size when plausible, else a guess. */
static size_t gunzip_first_size(const unsigned char *in, size_t len, size_t max_out)
{
    size_t want = len * 4;

    if (len >= 18 && in[0] == 0x1f && in[1] == 0x8b) {
        /* ISIZE: the uncompressed size mod 2^32, little-endian, in the last 4 bytes. */
        size_t isize = (size_t)in[len - 4] | (size_t)in[len - 3] << 8 | (size_t)in[len - 2] << 16 |
                       (size_t)in[len - 1] << 24;
        if (isize <= len * GUNZIP_MAX_RATIO)
            want = isize;
    }
    if (want < GUNZIP_MIN_ALLOC)
        want = GUNZIP_MIN_ALLOC;
    return want < max_out ? want : max_out;
}

int decode_gunzip(const void *in, size_t len, size_t max_out, char **out, size_t *outlen)
{
    z_stream zs;
    char *buf = NULL;
    size_t cap, used = 0;
    int rc, zrc;

    *out = NULL;
    *outlen = 0;
    if (len == 0 || len > UINT_MAX)
        return -EINVAL;
    memset(&zs, 0, sizeof(zs));
    /* 15 + 32: a 32 KiB window, and detect a gzip or a zlib header by itself. */
    zrc = inflateInit2(&zs, 15 + 32);
    if (zrc != Z_OK)
        return zrc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
    cap = gunzip_first_size(in, len, max_out);
    /* One more byte than the output may hold, for the NUL and to see an overflow coming. */
    buf = malloc(cap + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    for (;;) {
        if (used == cap + 1) {
            /* Full, and the cap not reached yet: the body is larger than the guess. */
            size_t ncap;
            char *nbuf;
            if (cap >= max_out) {
                rc = -E2BIG;
                goto done;
            }
            ncap = cap > max_out / 2 ? max_out : cap * 2;
            nbuf = realloc(buf, ncap + 1);
            if (nbuf == NULL) {
                rc = -ENOMEM;
                goto done;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t room = cap + 1 - used;
        zs.next_out = (Bytef *)buf + used;
        zs.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        uInt before = zs.avail_out;
        zrc = inflate(&zs, Z_NO_FLUSH);
        used += before - zs.avail_out;
        if (used > max_out) {
            rc = -E2BIG;
            goto done;
        }
        if (zrc == Z_STREAM_END) {
            if (zs.avail_in == 0)
                break;
            /* Concatenated gzip members are one gzip file (RFC 1952, 2.2). */
            if (inflateReset(&zs) != Z_OK) {
                rc = -EINVAL;
                goto done;
            }
            continue;
        }
        if (zrc == Z_OK)
            continue;
        if (zrc == Z_BUF_ERROR && zs.avail_out == 0)
            continue; /* no room: grow above */
        /* Z_BUF_ERROR with room left means the input ended early: a truncated body. */
        rc = zrc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
        goto done;
    }
    buf[used] = '\0';
    *out = buf;
    *outlen = used;
    buf = NULL;
    rc = 0;
done:
    inflateEnd(&zs);
    free(buf);
    return rc;
}

/*
 * Some clients encode a UTF-16 string to "UTF-8" one code unit at a time (mixpanel-browser's
 * base64 path does), so a character outside the BMP arrives as two 3-byte surrogate encodings
 * (CESU-8) instead of one 4-byte sequence. That is not valid UTF-8 and jansson refuses it, which
 * would lose the whole batch: rewrite each such pair in place as the real character, and a lone
 * surrogate as U+FFFD (same length). Returns the new length, never more than `n`.
 */
static size_t decode_fix_surrogates(char *buf, size_t n)
{
    unsigned char *s = (unsigned char *)buf;
    unsigned char *p = memchr(s, 0xED, n);
    size_t r, w;

    if (p == NULL)
        return n;
    r = w = (size_t)(p - s);
    while (r < n) {
        if (s[r] != 0xED || r + 2 >= n || s[r + 1] < 0xA0 || s[r + 1] > 0xBF ||
            (s[r + 2] & 0xC0) != 0x80) {
            s[w++] = s[r++];
            continue;
        }
        unsigned hi = 0xD000u | ((s[r + 1] & 0x3Fu) << 6) | (s[r + 2] & 0x3Fu);
        if (hi <= 0xDBFF && r + 5 < n && s[r + 3] == 0xED && s[r + 4] >= 0xB0 && s[r + 4] <= 0xBF &&
            (s[r + 5] & 0xC0) == 0x80) {
            unsigned lo = 0xD000u | ((s[r + 4] & 0x3Fu) << 6) | (s[r + 5] & 0x3Fu);
            unsigned cp = 0x10000u + ((hi - 0xD800u) << 10) + (lo - 0xDC00u);
            s[w++] = (unsigned char)(0xF0 | (cp >> 18));
            s[w++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            s[w++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            s[w++] = (unsigned char)(0x80 | (cp & 0x3F));
            r += 6;
        } else {
            s[w++] = 0xEF; /* U+FFFD REPLACEMENT CHARACTER */
            s[w++] = 0xBF;
            s[w++] = 0xBD;
            r += 3;
        }
    }
    return w;
}

int decode_payload(const char *val, size_t len, const char **json, size_t *json_len, char **owned)
{
    size_t i = 0, n;
    char *buf;
    int rc;

    *json = NULL;
    *json_len = 0;
    *owned = NULL;
    while (i < len && (val[i] == ' ' || val[i] == '\t' || val[i] == '\r' || val[i] == '\n'))
        i++;
    if (i == len)
        return -EINVAL;
    if (val[i] == '{' || val[i] == '[') {
        *json = val + i;
        *json_len = len - i;
        return 0;
    }
    buf = malloc(len / 4 * 3 + 4);
    if (buf == NULL)
        return -ENOMEM;
    rc = decode_base64(val, len, buf, &n);
    if (rc < 0 || n == 0) {
        free(buf);
        return -EINVAL;
    }
    n = decode_fix_surrogates(buf, n);
    buf[n] = '\0';
    *json = buf;
    *json_len = n;
    *owned = buf;
    return 0;
}

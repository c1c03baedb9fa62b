/*
 * Decoders for what arrives on the wire: query strings and form bodies, percent-encoding, base64,
 * gzip bodies, and the `data` value that holds either JSON or base64 JSON (../shared/API.md,
 * "Where the payload arrives"). Pure functions with explicit bounds: the fuzz targets call these.
 */
#ifndef TRACKD_DECODE_H
#define TRACKD_DECODE_H

#include <stddef.h>
#include <sys/types.h>

/** One key=value pair of a query string or form body; both point into the decoded buffer. */
typedef struct {
    char *key;
    size_t key_len;
    char *val;
    size_t val_len;
} decode_pair_t;

/**
 * Split `buf[0..len)` at '&' and '=' and percent-decode keys and values in place ('+' becomes
 * ' '); each key and value is NUL-terminated in place (so `buf` needs len+1 bytes). Returns 0,
 * -EINVAL on a malformed %XX escape, or -E2BIG if there are more than `max` pairs.
 */
int decode_form(char *buf, size_t len, decode_pair_t *pairs, size_t max, size_t *npairs);

/** The value of the first pair named `key`, or NULL. */
const decode_pair_t *decode_form_get(const decode_pair_t *pairs, size_t n, const char *key);

/** Percent-decode `s[0..len)` in place ('+' to ' ' if plus_space). Returns the new length or
 * -EINVAL. */
ssize_t decode_percent(char *s, size_t len, int plus_space);

/**
 * Base64 (standard alphabet) as clients send it: padding optional, a ' ' is a '+' that lost its
 * escape, CR/LF ignored. Writes at most len/4*3+3 bytes to `out`. Returns 0 or -EINVAL.
 */
int decode_base64(const char *in, size_t len, char *out, size_t *outlen);

/**
 * Inflate a gzip (or zlib) body into a new buffer of at most `max_out` bytes (NUL-terminated,
 * free() it). Returns 0, -E2BIG when the output would exceed `max_out` (a gzip bomb: 413, and no
 * more than max_out + 1 bytes were ever allocated), -EINVAL for corrupt input, -ENOMEM.
 */
int decode_gunzip(const void *in, size_t len, size_t max_out, char **out, size_t *outlen);

/**
 * Turn a `data` value into JSON text: if it starts (after blanks) with '{' or '[' it is JSON
 * already (*json points into `val`, *owned = NULL); otherwise it is base64, decoded into a new
 * buffer returned in *owned (free() it); surrogate pairs encoded one half at a time (CESU-8, as
 * mixpanel-browser's base64 path sends them) become the real UTF-8 character, a lone half U+FFFD.
 * Returns 0, -EINVAL or -ENOMEM (with nothing allocated).
 */
int decode_payload(const char *val, size_t len, const char **json, size_t *json_len, char **owned);

#endif

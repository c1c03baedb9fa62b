/*
 * libFuzzer target for the query-string and form decoders (decode_form, decode_form_get,
 * decode_percent). Each input is decoded by trackd and by a deliberately naive reference written
 * here, and the two must agree byte for byte: pairs, lengths, terminators and errors.
 *
 * fuzz-sources: src/decode.c
 * fuzz-dict: http.dict
 * fuzz-max-len: 4096
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/decode.h"

#define FUZZ_MAX_PAIRS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ref_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reference percent-decoder into a separate buffer: the output length or -EINVAL. */
static long ref_percent(const char *in, size_t len, int plus, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            if (i + 2 >= len)
                return -EINVAL;
            int hi = ref_hex((unsigned char)in[i + 1]), lo = ref_hex((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (in[i] == '+' && plus) {
            out[o++] = ' ';
        } else {
            out[o++] = in[i];
        }
    }
    return (long)o;
}

static void check_percent(const uint8_t *data, size_t size, int plus)
{
    char *s = malloc(size + 1), *ref = malloc(size + 1);

    if (s == NULL || ref == NULL)
        abort();
    memcpy(s, data, size);
    ssize_t n = decode_percent(s, size, plus);
    long r = ref_percent((const char *)data, size, plus, ref);
    if (n != r)
        abort();
    if (n >= 0 && memcmp(s, ref, (size_t)n) != 0)
        abort();
    free(s);
    free(ref);
}

/* Compare decode_form's pairs with the reference split of the original bytes. */
static void check_form(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), *tmp = malloc(size + 1);
    decode_pair_t pairs[FUZZ_MAX_PAIRS];
    size_t n = 0, pos = 0, k = 0;
    int want = 0;

    if (buf == NULL || tmp == NULL)
        abort();
    memcpy(buf, data, size);
    buf[size] = 'X'; /* the byte past the input may be overwritten by a terminator only */
    int rc = decode_form(buf, size, pairs, FUZZ_MAX_PAIRS, &n);

    const char *in = (const char *)data;
    while (pos < size && want == 0) {
        const char *amp = memchr(in + pos, '&', size - pos);
        size_t seg = amp ? (size_t)(amp - (in + pos)) : size - pos;
        const char *s = in + pos;
        pos += seg + 1;
        if (seg == 0)
            continue;
        if (k == FUZZ_MAX_PAIRS) {
            want = -E2BIG;
            break;
        }
        const char *eq = memchr(s, '=', seg);
        size_t klen = eq ? (size_t)(eq - s) : seg;
        long kl = ref_percent(s, klen, 1, tmp);
        if (kl < 0) {
            want = -EINVAL;
            break;
        }
        if (rc == 0 &&
            (k >= n || pairs[k].key_len != (size_t)kl || memcmp(pairs[k].key, tmp, (size_t)kl)))
            abort();
        long vl = eq ? ref_percent(eq + 1, seg - klen - 1, 1, tmp) : 0;
        if (vl < 0) {
            want = -EINVAL;
            break;
        }
        if (rc == 0 && (pairs[k].val_len != (size_t)vl || memcmp(pairs[k].val, tmp, (size_t)vl)))
            abort();
        k++;
    }
    if (rc != want)
        abort();
    if (rc == 0) {
        if (n != k)
            abort();
        for (size_t i = 0; i < n; i++) {
            /* Inside the buffer, NUL-terminated in place. */
            if (pairs[i].key < buf || pairs[i].key + pairs[i].key_len > buf + size ||
                pairs[i].val < buf || pairs[i].val + pairs[i].val_len > buf + size)
                abort();
            if (pairs[i].key[pairs[i].key_len] != '\0' || pairs[i].val[pairs[i].val_len] != '\0')
                abort();
            /* The lookup finds the first pair with this key. */
            if (strlen(pairs[i].key) == pairs[i].key_len) {
                const decode_pair_t *p = decode_form_get(pairs, n, pairs[i].key);
                if (p == NULL || p > &pairs[i] || strcmp(p->key, pairs[i].key) != 0)
                    abort();
            }
        }
    }
    free(buf);
    free(tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_form(data, size);
    check_percent(data, size, 0);
    check_percent(data, size, 1);
    return 0;
}

/*
 * libFuzzer target for decode_base64. Two properties on every input:
 *  - as base64 text: decoding stays within the documented bound (the output buffer is exactly
 *    len/4*3+3 bytes, so ASan sees any overrun), and what decodes re-encodes and decodes the same;
 *  - as raw bytes: encoding them with the plain encoder below, then mangling the text the ways
 *    clients do (no padding, '+' sent as ' ', CR/LF line breaks), decodes back to the bytes.
 *
 * fuzz-sources: src/decode.c
 * fuzz-dict: json.dict
 * fuzz-max-len: 4096
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; `out` needs 4*ceil(len/3) bytes. */
static size_t encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = i + 1 < len ? alpha[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? alpha[v & 63] : '=';
    }
    return o;
}

static void check_decode(const uint8_t *data, size_t size)
{
    char *out = malloc(size / 4 * 3 + 3);
    size_t n;

    if (out == NULL)
        abort();
    if (decode_base64((const char *)data, size, out, &n) == 0) {
        if (n > size / 4 * 3 + 3)
            abort();
        char *enc = malloc(n / 3 * 4 + 4);
        char *again = malloc(n / 3 * 4 + 4);
        size_t m;
        if (enc == NULL || again == NULL)
            abort();
        size_t elen = encode((const uint8_t *)out, n, enc);
        if (decode_base64(enc, elen, again, &m) != 0 || m != n || memcmp(again, out, n) != 0)
            abort();
        free(enc);
        free(again);
    }
    free(out);
}

static void check_round_trip(const uint8_t *data, size_t size)
{
    /* The first byte picks the mangling, the rest is the payload. */
    unsigned flags = size ? data[0] : 0;
    const uint8_t *raw = size ? data + 1 : data;
    size_t rlen = size ? size - 1 : 0;
    size_t elen, o = 0, m;
    char *enc = malloc(rlen / 3 * 4 + 4);
    char *text = malloc((rlen / 3 * 4 + 4) * 3 + 2);
    char *out = malloc(rlen + 3);

    if (enc == NULL || text == NULL || out == NULL)
        abort();
    elen = encode(raw, rlen, enc);
    if (flags & 1)
        while (elen > 0 && enc[elen - 1] == '=')
            elen--;
    for (size_t i = 0; i < elen; i++) {
        text[o++] = (flags & 2) && enc[i] == '+' ? ' ' : enc[i];
        if ((flags & 4) && i % 76 == 75) {
            text[o++] = '\r';
            text[o++] = '\n';
        }
    }
    if (flags & 8)
        text[o++] = '\n';
    if (decode_base64(text, o, out, &m) != 0 || m != rlen || memcmp(out, raw, rlen) != 0)
        abort();
    free(enc);
    free(text);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_round_trip(data, size);
    return 0;
}

/*
 * libFuzzer target for decode_gunzip. Every input is inflated as a body under a small cap
 * (success means a NUL-terminated output within the cap; failure leaves nothing allocated), and
 * is also gzip- or zlib-compressed here and inflated back: equal to the input when it fits the
 * cap, -E2BIG when it does not, and -EINVAL for any truncation of the compressed form.
 *
 * fuzz-sources: src/decode.c
 * fuzz-dict: gzip.dict
 * fuzz-max-len: 65536
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "trackd/decode.h"

/* Small enough that fuzz inputs (and the bombs the fuzzer builds) cross it. */
#define FUZZ_CAP (32u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inflate(const uint8_t *data, size_t size)
{
    char *out = (char *)1;
    size_t n = 1;
    int rc = decode_gunzip(data, size, FUZZ_CAP, &out, &n);

    if (rc == 0) {
        if (out == NULL || n > FUZZ_CAP || out[n] != '\0')
            abort();
        free(out);
    } else if ((rc != -EINVAL && rc != -E2BIG && rc != -ENOMEM) || out != NULL || n != 0) {
        abort();
    }
}

static void check_round_trip(const uint8_t *data, size_t size)
{
    int gzip = size > 0 && (data[0] & 1);
    z_stream zs;
    uLong cap;
    unsigned char *z;
    char *out;
    size_t n;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, gzip ? 31 : 15, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    cap = deflateBound(&zs, size);
    z = malloc(cap);
    if (z == NULL)
        abort();
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)size;
    zs.next_out = z;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        abort();
    size_t zlen = zs.total_out;
    deflateEnd(&zs);

    int rc = decode_gunzip(z, zlen, FUZZ_CAP, &out, &n);
    if (size <= FUZZ_CAP) {
        if (rc != 0 || n != size || memcmp(out, data, size) != 0)
            abort();
        free(out);
    } else if (rc != -E2BIG) {
        abort();
    }
    /* Cut somewhere decided by the input: corrupt, unless the cap is met first. */
    size_t cut = size ? (data[size - 1] * 257u + size) % zlen : zlen / 2;
    rc = decode_gunzip(z, cut, FUZZ_CAP, &out, &n);
    if (rc != -EINVAL && !(rc == -E2BIG && size > FUZZ_CAP))
        abort();
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_inflate(data, size);
    check_round_trip(data, size);
    return 0;
}

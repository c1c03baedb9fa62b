/*
 * Unit tests for decode.c: form splitting and percent-decoding, lenient base64, gzip bodies with
 * their cap, and the JSON-or-base64 rule for `data` values.
 */
#include "test.h"

#include <errno.h>
#include <stdint.h>

#include <zlib.h>

#include "trackd/decode.h"

/* A plain base64 encoder (with padding) to build inputs and check round trips. */
static size_t b64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* Decode a C string; returns the status, the output NUL-terminated in `out`. */
static int b64(const char *in, char *out, size_t *outlen)
{
    int rc = decode_base64(in, strlen(in), out, outlen);
    if (rc == 0)
        out[*outlen] = '\0';
    return rc;
}

/* Compress `len` bytes with zlib: windowBits 31 for gzip, 15 for a zlib wrapper. */
static unsigned char *deflate_buf(const void *in, size_t len, int window_bits, size_t *outlen)
{
    z_stream zs;
    size_t cap;
    unsigned char *out;

    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    cap = deflateBound(&zs, len);
    out = malloc(cap);
    CHECK(out != NULL);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    *outlen = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* ---- forms and percent-decoding ---- */

TEST(form_splits_pairs_and_decodes_percent_and_plus)
{
    char buf[] = "data=%7B%22a%22%3A1%7D&verbose=1&name=a+b%2Bc";
    decode_pair_t p[8];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 8, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(p[0].key, "data");
    CHECK_EQ_STR(p[0].val, "{\"a\":1}");
    CHECK_EQ_INT(p[0].val_len, 7);
    CHECK_EQ_STR(p[1].key, "verbose");
    CHECK_EQ_STR(p[1].val, "1");
    CHECK_EQ_STR(p[2].val, "a b+c");
    CHECK_EQ_INT(p[2].val_len, 5);
}

TEST(form_key_without_equals_has_empty_value)
{
    char buf[] = "verbose&ip=1&img";
    decode_pair_t p[8];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 8, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(p[0].key, "verbose");
    CHECK_EQ_STR(p[0].val, "");
    CHECK_EQ_INT(p[0].val_len, 0);
    CHECK_EQ_STR(p[1].key, "ip");
    CHECK_EQ_STR(p[1].val, "1");
    CHECK_EQ_STR(p[2].key, "img");
    CHECK_EQ_INT(p[2].val_len, 0);
}

TEST(form_empty_values_and_empty_keys_are_pairs)
{
    char buf[] = "a=&=x&b=";
    decode_pair_t p[8];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 8, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(p[0].key, "a");
    CHECK_EQ_STR(p[0].val, "");
    CHECK_EQ_STR(p[1].key, "");
    CHECK_EQ_STR(p[1].val, "x");
    CHECK_EQ_STR(p[2].key, "b");
    CHECK_EQ_STR(p[2].val, "");
}

TEST(form_skips_empty_segments)
{
    char buf[] = "&&a=1&&&b=2&";
    decode_pair_t p[8];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 8, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(p[0].key, "a");
    CHECK_EQ_STR(p[1].val, "2");

    char empty[] = "";
    CHECK_EQ_INT(decode_form(empty, 0, p, 8, &n), 0);
    CHECK_EQ_INT(n, 0);
}

TEST(form_value_keeps_later_equals_signs)
{
    /* Unescaped base64 padding: only the first '=' splits. */
    char buf[] = "data=eyJhIjoxfQ==&x=a=b";
    decode_pair_t p[4];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 4, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(p[0].val, "eyJhIjoxfQ==");
    CHECK_EQ_STR(p[1].val, "a=b");
}

TEST(form_malformed_escapes_are_einval)
{
    const char *bad[] = {"a=%zz", "a=%", "a=%4", "a=1&b=%g0", "%x=1", "a=%%41"};
    decode_pair_t p[4];
    size_t n;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%s", bad[i]);
        CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 4, &n), -EINVAL);
    }
}

TEST(form_more_pairs_than_max_is_e2big)
{
    enum { N = 1000 };
    char *buf = malloc(N * 8 + 1);
    decode_pair_t *p = malloc(N * sizeof(*p));
    size_t len = 0, n;

    CHECK(buf != NULL && p != NULL);
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(buf + len, "%sk%d=%d", i ? "&" : "", i % 100, i % 10);
    char *copy = strdup(buf);
    CHECK(copy != NULL);
    CHECK_EQ_INT(decode_form(buf, len, p, N, &n), 0);
    CHECK_EQ_INT(n, N);
    CHECK_EQ_STR(p[N - 1].key, "k99");
    CHECK_EQ_STR(p[N - 1].val, "9");
    CHECK_EQ_INT(decode_form(copy, len, p, N - 1, &n), -E2BIG);
    free(copy);
    free(buf);
    free(p);
}

TEST(form_get_returns_first_match_or_null)
{
    char buf[] = "ip=1&data=x&ip=0";
    decode_pair_t p[4];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 4, &n), 0);
    CHECK_EQ_STR(decode_form_get(p, n, "ip")->val, "1");
    CHECK_EQ_STR(decode_form_get(p, n, "data")->val, "x");
    CHECK(decode_form_get(p, n, "verbose") == NULL);
    CHECK(decode_form_get(p, n, "i") == NULL);
}

TEST(form_percent_encoded_nul_is_kept_with_its_length)
{
    char buf[] = "k=a%00b";
    decode_pair_t p[2];
    size_t n;

    CHECK_EQ_INT(decode_form(buf, strlen(buf), p, 2, &n), 0);
    CHECK_EQ_INT(p[0].val_len, 3);
    CHECK(memcmp(p[0].val, "a\0b", 4) == 0);
}

TEST(percent_decoding_keeps_plus_unless_asked)
{
    char a[] = "a+b%2b%2F%41";
    char b[] = "a+b%2b%2F%41";

    CHECK_EQ_INT(decode_percent(a, strlen(a), 0), 6);
    CHECK(memcmp(a, "a+b+/A", 6) == 0);
    CHECK_EQ_INT(decode_percent(b, strlen(b), 1), 6);
    CHECK(memcmp(b, "a b+/A", 6) == 0);
}

TEST(percent_decoding_stays_within_len)
{
    /* A '%' whose digits lie beyond len is truncated, even if the bytes after len are hex. */
    char s[] = "ab%41";
    CHECK_EQ_INT(decode_percent(s, 4, 0), -EINVAL);
    CHECK_EQ_INT(decode_percent(s, 2, 0), 2);
    char t[] = "plain";
    CHECK_EQ_INT(decode_percent(t, 5, 1), 5);
    CHECK_EQ_STR(t, "plain");
}

/* ---- base64 ---- */

TEST(base64_rfc4648_vectors_with_and_without_padding)
{
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const nopad[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    static const char *const dec[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    char out[16];
    size_t n;

    for (int i = 0; i < 7; i++) {
        CHECK_EQ_INT(b64(enc[i], out, &n), 0);
        CHECK_EQ_STR(out, dec[i]);
        CHECK_EQ_INT(b64(nopad[i], out, &n), 0);
        CHECK_EQ_STR(out, dec[i]);
    }
}

TEST(base64_space_decodes_as_plus)
{
    /* 0xfb 0xef 0xbe encodes as "++++"; a form decoder turns unescaped '+' into ' '. */
    char out[8];
    size_t n;

    CHECK_EQ_INT(b64("++++", out, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(out, "\xfb\xef\xbe", 3) == 0);
    CHECK_EQ_INT(b64("    ", out, &n), 0);
    CHECK(memcmp(out, "\xfb\xef\xbe", 3) == 0);
    CHECK_EQ_INT(b64("+ + ", out, &n), 0);
    CHECK(memcmp(out, "\xfb\xef\xbe", 3) == 0);
}

TEST(base64_ignores_cr_and_lf_anywhere)
{
    char out[16];
    size_t n;

    CHECK_EQ_INT(b64("Zm9v\r\nYmFy\r\n", out, &n), 0);
    CHECK_EQ_STR(out, "foobar");
    CHECK_EQ_INT(b64("Z\nm\n9\nvYg=\r\n=\n", out, &n), 0);
    CHECK_EQ_STR(out, "foob");
    CHECK_EQ_INT(b64("\r\n", out, &n), 0);
    CHECK_EQ_INT(n, 0);
}

TEST(base64_invalid_characters_are_einval)
{
    const char *bad[] = {"Zm9v*mFy", "Zm9v-mFy", "Zm9v_mFy", "Zm9v\tYmFy", "Zm9v\x80", "Zm9v\0Zg"};
    char out[16];
    size_t n;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ_INT(decode_base64(bad[i], i == 5 ? 7 : strlen(bad[i]), out, &n), -EINVAL);
}

TEST(base64_bad_padding_is_einval)
{
    const char *bad[] = {
        "Zg=", "Zg===", "Zm8==", "=", "Zm9v=", "Zg==Zg==", "Zg==x", "Z===", "Zm9vY"};
    char out[16];
    size_t n;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = b64(bad[i], out, &n);
        if (rc != -EINVAL)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, -EINVAL);
    }
}

TEST(base64_round_trips_every_length_and_byte)
{
    unsigned char in[300];
    char enc[512], dec[512];
    size_t n;
    uint32_t x = 12345;

    for (size_t len = 0; len < sizeof(in); len++) {
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (unsigned char)(x >> 16);
        }
        size_t elen = b64_encode(in, len, enc);
        /* Poison the output past the documented bound. */
        memset(dec, 0x5a, sizeof(dec));
        CHECK_EQ_INT(decode_base64(enc, elen, dec, &n), 0);
        CHECK_EQ_INT(n, len);
        CHECK(memcmp(dec, in, len) == 0);
        CHECK((unsigned char)dec[elen / 4 * 3 + 3] == 0x5a);
        /* Unpadded and with '+' turned into ' ' it decodes the same. */
        while (elen > 0 && enc[elen - 1] == '=')
            elen--;
        for (size_t i = 0; i < elen; i++)
            if (enc[i] == '+')
                enc[i] = ' ';
        CHECK_EQ_INT(decode_base64(enc, elen, dec, &n), 0);
        CHECK_EQ_INT(n, len);
        CHECK(memcmp(dec, in, len) == 0);
    }
}

TEST(base64_escaped_and_unescaped_form_values_decode_alike)
{
    /* {"event":"a>b?"} encodes with '+' and '/' that a form may or may not escape. */
    const char *json = "{\"event\":\"a>>>b???\"}";
    char enc[64], esc[128], raw[128], out[64];
    decode_pair_t p[2];
    size_t n, np, e = 0;
    size_t elen = b64_encode((const unsigned char *)json, strlen(json), enc);

    CHECK(strchr(enc, '+') != NULL && strchr(enc, '/') != NULL);
    e = (size_t)sprintf(esc, "data=");
    for (size_t i = 0; i < elen; i++)
        e += (size_t)(strchr("+/=", enc[i]) ? sprintf(esc + e, "%%%02X", enc[i])
                                            : sprintf(esc + e, "%c", enc[i]));
    snprintf(raw, sizeof(raw), "data=%s", enc);

    CHECK_EQ_INT(decode_form(esc, e, p, 2, &np), 0);
    CHECK_EQ_INT(decode_base64(p[0].val, p[0].val_len, out, &n), 0);
    CHECK(n == strlen(json) && memcmp(out, json, n) == 0);
    CHECK_EQ_INT(decode_form(raw, strlen(raw), p, 2, &np), 0);
    CHECK(strchr(p[0].val, ' ') != NULL); /* the '+' became a space */
    CHECK_EQ_INT(decode_base64(p[0].val, p[0].val_len, out, &n), 0);
    CHECK(n == strlen(json) && memcmp(out, json, n) == 0);
}

/* ---- gzip ---- */

TEST(gunzip_inflates_gzip_and_zlib_bodies)
{
    const char *text = "data=eyJldmVudCI6ICJ0ZXN0In0%3D&verbose=1 repeated repeated repeated";
    size_t zlen, n;
    char *out;

    unsigned char *gz = deflate_buf(text, strlen(text), 31, &zlen);
    CHECK(gz[0] == 0x1f && gz[1] == 0x8b);
    CHECK_EQ_INT(decode_gunzip(gz, zlen, 1 << 20, &out, &n), 0);
    CHECK_EQ_INT(n, strlen(text));
    CHECK_EQ_STR(out, text);
    free(out);
    free(gz);

    unsigned char *zl = deflate_buf(text, strlen(text), 15, &zlen);
    CHECK(zl[0] == 0x78);
    CHECK_EQ_INT(decode_gunzip(zl, zlen, 1 << 20, &out, &n), 0);
    CHECK_EQ_STR(out, text);
    free(out);
    free(zl);
}

TEST(gunzip_output_of_exactly_the_cap_fits_one_more_byte_does_not)
{
    enum { N = 100000 };
    char *text = malloc(N);
    size_t zlen, n;
    char *out = NULL;

    CHECK(text != NULL);
    for (int i = 0; i < N; i++)
        text[i] = (char)('a' + (i * 7 + i / 13) % 26);
    unsigned char *gz = deflate_buf(text, N, 31, &zlen);
    CHECK_EQ_INT(decode_gunzip(gz, zlen, N, &out, &n), 0);
    CHECK_EQ_INT(n, N);
    CHECK(memcmp(out, text, N) == 0 && out[N] == '\0');
    free(out);
    CHECK_EQ_INT(decode_gunzip(gz, zlen, N - 1, &out, &n), -E2BIG);
    CHECK(out == NULL);
    free(gz);
    free(text);
}

TEST(gunzip_corrupt_or_truncated_input_is_einval)
{
    const char *text = "some event text some event text some event text";
    size_t zlen, n;
    char *out;
    unsigned char *gz = deflate_buf(text, strlen(text), 31, &zlen);

    /* Truncated anywhere: inside the header, the data or the trailer. */
    for (size_t cut = 1; cut < zlen; cut++) {
        CHECK_EQ_INT(decode_gunzip(gz, cut, 1 << 20, &out, &n), -EINVAL);
        CHECK(out == NULL);
    }
    /* A flipped bit in the CRC trailer, or a damaged header. */
    gz[zlen - 6] ^= 1;
    CHECK_EQ_INT(decode_gunzip(gz, zlen, 1 << 20, &out, &n), -EINVAL);
    gz[zlen - 6] ^= 1;
    gz[2] = 7; /* compression method other than deflate */
    CHECK_EQ_INT(decode_gunzip(gz, zlen, 1 << 20, &out, &n), -EINVAL);
    free(gz);

    CHECK_EQ_INT(decode_gunzip("not compressed at all", 21, 1 << 20, &out, &n), -EINVAL);
    CHECK_EQ_INT(decode_gunzip("", 0, 1 << 20, &out, &n), -EINVAL);
}

TEST(gunzip_concatenated_members_are_one_body)
{
    size_t l1, l2, n;
    char *out;
    unsigned char *a = deflate_buf("first,", 6, 31, &l1);
    unsigned char *b = deflate_buf("second", 6, 31, &l2);
    unsigned char *both = malloc(l1 + l2);

    CHECK(both != NULL);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    CHECK_EQ_INT(decode_gunzip(both, l1 + l2, 1 << 20, &out, &n), 0);
    CHECK_EQ_STR(out, "first,second");
    free(out);
    /* Garbage after a member is corrupt input, not ignored. */
    memset(both + l1, 'x', l2);
    CHECK_EQ_INT(decode_gunzip(both, l1 + l2, 1 << 20, &out, &n), -EINVAL);
    free(both);
    free(a);
    free(b);
}

TEST(gunzip_grows_past_a_small_size_trailer)
{
    /* The size trailer read is the last member's: a large first member must still fit. */
    enum { N = 300000 };
    char *text = malloc(N + 2);
    size_t l1, l2, n;
    char *out;

    CHECK(text != NULL);
    for (int i = 0; i < N; i++)
        text[i] = (char)('a' + (i * 31 + i / 7) % 26);
    unsigned char *a = deflate_buf(text, N, 31, &l1);
    unsigned char *b = deflate_buf("z", 1, 31, &l2);
    unsigned char *both = malloc(l1 + l2);
    CHECK(both != NULL);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    CHECK_EQ_INT(decode_gunzip(both, l1 + l2, 1 << 20, &out, &n), 0);
    CHECK_EQ_INT(n, N + 1);
    CHECK(memcmp(out, text, N) == 0 && out[N] == 'z' && out[N + 1] == '\0');
    free(out);
    free(both);
    free(a);
    free(b);
    free(text);
}

/* Peak resident memory of this process, in KiB (VmHWM). */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    CHECK(f != NULL);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/*
 * A gzip file of `chunks` MiB of zeros, built cheaply: one MiB of zeros deflated once as a
 * self-contained, byte-aligned piece (Z_FULL_FLUSH), repeated, then a final empty block and the
 * trailer for the whole length.
 */
static unsigned char *zero_gzip(size_t chunks, size_t *outlen)
{
    enum { CHUNK = 1 << 20 };
    static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    static const unsigned char final_block[2] = {0x03, 0x00}; /* fixed Huffman, last, empty */
    unsigned char *zeros = calloc(1, CHUNK), piece[8192], *gz;
    z_stream zs;
    size_t plen, o = 0;
    uLong crc1, crc = 0;

    CHECK(zeros != NULL);
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = zeros;
    zs.avail_in = CHUNK;
    zs.next_out = piece;
    zs.avail_out = sizeof(piece);
    CHECK(deflate(&zs, Z_FULL_FLUSH) == Z_OK && zs.avail_in == 0 && zs.avail_out > 0);
    plen = sizeof(piece) - zs.avail_out;
    deflateEnd(&zs);
    crc1 = crc32(0, zeros, CHUNK);
    free(zeros);

    gz = malloc(sizeof(header) + chunks * plen + sizeof(final_block) + 8);
    CHECK(gz != NULL);
    memcpy(gz, header, sizeof(header));
    o = sizeof(header);
    for (size_t i = 0; i < chunks; i++) {
        memcpy(gz + o, piece, plen);
        o += plen;
        crc = crc32_combine(crc, crc1, CHUNK);
    }
    memcpy(gz + o, final_block, sizeof(final_block));
    o += sizeof(final_block);
    uint64_t total = (uint64_t)chunks * CHUNK;
    for (int i = 0; i < 4; i++)
        gz[o + (size_t)i] = (unsigned char)(crc >> (8 * i));
    for (int i = 0; i < 4; i++)
        gz[o + 4 + (size_t)i] = (unsigned char)(total >> (8 * i));
    *outlen = o + 8;
    return gz;
}

TEST(gunzip_zero_gzip_builder_makes_valid_gzip)
{
    /* The bomb below is only meaningful if its construction is a real gzip file. */
    size_t glen, n;
    char *out;
    unsigned char *gz = zero_gzip(3, &glen);

    CHECK_EQ_INT(decode_gunzip(gz, glen, 4u << 20, &out, &n), 0);
    CHECK_EQ_INT(n, 3u << 20);
    for (size_t i = 0; i < n; i++)
        CHECK(out[i] == 0);
    free(out);
    free(gz);
}

TEST(gunzip_bomb_of_one_gigabyte_stops_at_the_cap)
{
    const size_t cap = 8u << 20;
    size_t glen, n;
    char *out = NULL;
    unsigned char *gz = zero_gzip(1024, &glen); /* 1 GiB of zeros in about 1 MiB */

    CHECK(glen < (2u << 20));
    long before = peak_rss_kib();
    CHECK_EQ_INT(decode_gunzip(gz, glen, cap, &out, &n), -E2BIG);
    CHECK(out == NULL);
    long after = peak_rss_kib();
    /* The output buffer never grew past the cap (plus allocator and zlib slack). */
    if (after - before > (long)(cap >> 10) + 16 * 1024)
        fprintf(stderr, "  peak RSS grew by %ld KiB\n", after - before);
    CHECK(after - before <= (long)(cap >> 10) + 16 * 1024);
    free(gz);
}

/* ---- data values ---- */

TEST(payload_json_is_detected_after_blanks)
{
    const char *json;
    size_t n;
    char *owned;

    CHECK_EQ_INT(decode_payload("{\"a\":1}", 7, &json, &n, &owned), 0);
    CHECK(owned == NULL);
    CHECK(n == 7 && memcmp(json, "{\"a\":1}", 7) == 0);
    CHECK_EQ_INT(decode_payload(" \r\n\t[1]", 7, &json, &n, &owned), 0);
    CHECK(owned == NULL);
    CHECK(n == 3 && memcmp(json, "[1]", 3) == 0);
}

TEST(payload_other_values_are_base64_json)
{
    const char *json;
    size_t n;
    char *owned;

    /* {"event":"x"} with and without padding, and '+' sent as ' '. */
    CHECK_EQ_INT(decode_payload("eyJldmVudCI6IngifQ==", 20, &json, &n, &owned), 0);
    CHECK(owned != NULL && json == owned);
    CHECK(n == 13 && memcmp(json, "{\"event\":\"x\"}", 13) == 0 && json[n] == '\0');
    free(owned);
    CHECK_EQ_INT(decode_payload("eyJldmVudCI6IngifQ", 18, &json, &n, &owned), 0);
    CHECK(n == 13 && memcmp(json, "{\"event\":\"x\"}", 13) == 0);
    free(owned);
    /* [">>>"] is WyI+Pj4iXQ== */
    CHECK_EQ_INT(decode_payload("WyI Pj4iXQ", 10, &json, &n, &owned), 0);
    CHECK(n == 7 && memcmp(json, "[\">>>\"]", 7) == 0);
    free(owned);
}

TEST(payload_empty_or_invalid_is_einval_with_nothing_allocated)
{
    const char *json;
    size_t n;
    char *owned;

    CHECK_EQ_INT(decode_payload("", 0, &json, &n, &owned), -EINVAL);
    CHECK(owned == NULL && json == NULL);
    CHECK_EQ_INT(decode_payload("  \n", 3, &json, &n, &owned), -EINVAL);
    CHECK(owned == NULL);
    CHECK_EQ_INT(decode_payload("not*base64", 10, &json, &n, &owned), -EINVAL);
    CHECK(owned == NULL && json == NULL);
    CHECK_EQ_INT(decode_payload("====", 4, &json, &n, &owned), -EINVAL);
    CHECK(owned == NULL);
}

/* mixpanel-browser's base64 path encodes U+1F680 as two 3-byte surrogate halves (CESU-8). */
TEST(payload_base64_surrogate_halves_become_the_real_character)
{
    const char *json, *in = "eyJ0IjoiYSDtoL3tuoAgYiJ9"; /* {"t":"a \xED\xA0\xBD\xED\xBA\x80 b"} */
    size_t n;
    char *owned;

    CHECK_EQ_INT(decode_payload(in, strlen(in), &json, &n, &owned), 0);
    CHECK(owned != NULL);
    CHECK_EQ_STR(json, "{\"t\":\"a \xF0\x9F\x9A\x80 b\"}");
    CHECK_EQ_INT(n, strlen(json));
    free(owned);
}

TEST(payload_base64_lone_surrogate_half_becomes_replacement_character)
{
    const char *json, *in = "eyJ0Ijoi7aC9In0="; /* {"t":"\xED\xA0\xBD"} */
    size_t n;
    char *owned;

    CHECK_EQ_INT(decode_payload(in, strlen(in), &json, &n, &owned), 0);
    CHECK_EQ_STR(json, "{\"t\":\"\xEF\xBF\xBD\"}");
    free(owned);
}

/*
 * Tests of the segment format (segment.c): CRC32C vectors, header and record round trips, file
 * names, and how decoding and scanning treat torn and damaged bytes.
 */
#include "test.h"

#include "trackd/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

TEST(segment_crc32c_matches_known_vectors)
{
    CHECK_EQ_INT(segment_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(segment_crc32c(0, "", 0), 0);
    uint8_t zeros[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof(ones));
    /* RFC 3720 (iSCSI) test vectors. */
    CHECK_EQ_INT(segment_crc32c(0, zeros, 32), 0x8A9136AAu);
    CHECK_EQ_INT(segment_crc32c(0, ones, 32), 0x62A8AB43u);
    uint8_t inc[32];
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    CHECK_EQ_INT(segment_crc32c(0, inc, 32), 0x46DD794Eu);
}

TEST(segment_crc32c_continues_across_calls_at_any_split)
{
    const char *s = "The quick brown fox jumps over the lazy dog, then again and again.";
    size_t n = strlen(s);
    uint32_t whole = segment_crc32c(0, s, n);
    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t c = segment_crc32c(0, s, cut);
        CHECK_EQ_INT(segment_crc32c(c, s + cut, n - cut), whole);
    }
    /* The same bytes at every alignment (unaligned starts take the byte-at-a-time path). */
    char buf[128];
    for (size_t start = 0; start < 9; start++) {
        memcpy(buf + start, s, n);
        CHECK_EQ_INT(segment_crc32c(0, buf + start, n), whole);
    }
}

TEST(segment_header_round_trips_and_rejects_damage)
{
    segment_header_t h = {
        .version = SEGMENT_VERSION, .slot = 7, .seq = 42, .created_ms = 1700000000123ull};
    segment_header_t g;
    uint8_t buf[SEGMENT_HEADER_SIZE];
    segment_header_encode(buf, &h);
    CHECK(memcmp(buf, "TRKDLOG\0", 8) == 0);
    CHECK_EQ_INT(segment_header_decode(buf, sizeof(buf), &g), 0);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(g.slot, 7);
    CHECK_EQ_INT(g.seq, 42);
    CHECK_EQ_INT(g.created_ms, 1700000000123ull);
    CHECK_EQ_INT(segment_header_decode(buf, sizeof(buf) - 1, &g), -EINVAL);
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 0x10;
        CHECK_EQ_INT(segment_header_decode(buf, sizeof(buf), &g), -EINVAL);
        buf[i] ^= 0x10;
    }
    /* A crc-valid header of another version is refused too. */
    h.version = 2;
    segment_header_encode(buf, &h);
    CHECK_EQ_INT(segment_header_decode(buf, sizeof(buf), &g), -EINVAL);
}

TEST(segment_record_round_trips_with_its_fields)
{
    uint8_t buf[64];
    const char *p = "{\"event\":\"x\"}";
    uint32_t n = (uint32_t)strlen(p);
    segment_record_encode(buf + 4, p, n, 1234567890123ull, SEGMENT_EP_ENGAGE);
    memcpy(buf + 4 + SEGMENT_RECORD_HEADER_SIZE, p, n);
    segment_record_t rec;
    CHECK_EQ_INT(segment_record_decode(buf, 4 + SEGMENT_RECORD_HEADER_SIZE + n, 4, &rec), 1);
    CHECK_EQ_INT(rec.offset, 4);
    CHECK_EQ_INT(rec.len, n);
    CHECK_EQ_INT(rec.time_ms, 1234567890123ull);
    CHECK_EQ_INT(rec.endpoint, SEGMENT_EP_ENGAGE);
    CHECK(memcmp(rec.payload, p, n) == 0);
    CHECK(rec.payload == (const char *)buf + 4 + SEGMENT_RECORD_HEADER_SIZE);
    CHECK_EQ_STR(segment_endpoint_name(rec.endpoint), "engage");
    CHECK_EQ_STR(segment_endpoint_name(0), "unknown");
}

TEST(segment_record_decode_reports_torn_for_every_short_length)
{
    uint8_t buf[64];
    const char *p = "hello, world";
    uint32_t n = (uint32_t)strlen(p);
    segment_record_encode(buf, p, n, 5, SEGMENT_EP_TRACK);
    memcpy(buf + SEGMENT_RECORD_HEADER_SIZE, p, n);
    segment_record_t rec;
    for (size_t len = 0; len < SEGMENT_RECORD_HEADER_SIZE + n; len++)
        CHECK_EQ_INT(segment_record_decode(buf, len, 0, &rec), 0);
    CHECK_EQ_INT(segment_record_decode(buf, SEGMENT_RECORD_HEADER_SIZE + n, 0, &rec), 1);
}

TEST(segment_record_decode_reports_damage_for_any_flipped_bit)
{
    uint8_t buf[64];
    const char *p = "hello, world";
    uint32_t n = (uint32_t)strlen(p);
    segment_record_encode(buf, p, n, 5, SEGMENT_EP_TRACK);
    memcpy(buf + SEGMENT_RECORD_HEADER_SIZE, p, n);
    size_t total = SEGMENT_RECORD_HEADER_SIZE + n;
    segment_record_t rec;
    /* Bits of the length field may make the record look torn (longer) instead: skip them. */
    for (size_t i = 4; i < total; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            CHECK_EQ_INT(segment_record_decode(buf, total, 0, &rec), -EBADMSG);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* A shorter length breaks the crc; an impossible one is damage even if the file ends. */
    buf[0] ^= 4; /* 12 -> 8 */
    CHECK_EQ_INT(segment_record_decode(buf, total, 0, &rec), -EBADMSG);
    buf[0] ^= 4;
    buf[3] = 0x7f;
    CHECK_EQ_INT(segment_record_decode(buf, total, 0, &rec), -EBADMSG);
}

TEST(segment_record_decode_refuses_bad_endpoint_even_with_valid_crc)
{
    uint8_t buf[32];
    segment_record_encode(buf, "x", 1, 1, 9);
    buf[SEGMENT_RECORD_HEADER_SIZE] = 'x';
    segment_record_t rec;
    CHECK_EQ_INT(segment_record_decode(buf, SEGMENT_RECORD_HEADER_SIZE + 1, 0, &rec), -EBADMSG);
}

TEST(segment_names_sort_in_sequence_order_and_parse_back)
{
    uint64_t seqs[] = {0, 1, 9, 10, 99, 100, 12345678901ull, UINT64_MAX};
    char prev[SEGMENT_NAME_SIZE] = "", name[SEGMENT_NAME_SIZE];
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        segment_name(name, sizeof(name), seqs[i]);
        CHECK_EQ_INT(strlen(name), SEGMENT_NAME_SIZE - 1);
        CHECK(strcmp(prev, name) < 0);
        uint64_t back = 0;
        CHECK_EQ_INT(segment_parse_name(name, &back), 0);
        CHECK(back == seqs[i]);
        memcpy(prev, name, sizeof(prev));
    }
    segment_name(name, sizeof(name), 42);
    CHECK_EQ_STR(name, "00000000000000000042.seg");
    uint64_t s;
    CHECK_EQ_INT(segment_parse_name("0000000000000000042.seg", &s), -EINVAL);
    CHECK_EQ_INT(segment_parse_name("00000000000000000042.seg.damaged-60", &s), -EINVAL);
    CHECK_EQ_INT(segment_parse_name("0000000000000000004x.seg", &s), -EINVAL);
    CHECK_EQ_INT(segment_parse_name("99999999999999999999.seg", &s), -EINVAL);
    CHECK_EQ_INT(segment_parse_name("lock", &s), -EINVAL);
}

/* Write a segment of `n` records "rec-<i>" to `path`; returns the file size. */
static size_t write_segment(const char *path, int n, size_t *ends)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    segment_header_t h = {.version = SEGMENT_VERSION, .slot = 1, .seq = 3, .created_ms = 99};
    segment_header_encode(hdr, &h);
    CHECK(write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr));
    size_t off = sizeof(hdr);
    for (int i = 0; i < n; i++) {
        char p[32];
        uint8_t rh[SEGMENT_RECORD_HEADER_SIZE];
        uint32_t len = (uint32_t)snprintf(p, sizeof(p), "rec-%d", i);
        segment_record_encode(rh, p, len, 1000 + (uint64_t)i, SEGMENT_EP_TRACK);
        CHECK(write(fd, rh, sizeof(rh)) == (ssize_t)sizeof(rh));
        CHECK(write(fd, p, len) == (ssize_t)len);
        off += sizeof(rh) + len;
        if (ends)
            ends[i] = off;
    }
    close(fd);
    return off;
}

typedef struct {
    int n;
    char last[32];
} collect_t;

static int collect_cb(const segment_record_t *rec, void *arg)
{
    collect_t *c = arg;
    char want[32];
    snprintf(want, sizeof(want), "rec-%d", c->n);
    CHECK(rec->len == strlen(want) && memcmp(rec->payload, want, rec->len) == 0);
    CHECK_EQ_INT(rec->time_ms, 1000 + c->n);
    c->n++;
    return 0;
}

TEST(segment_scan_reads_every_record_of_a_clean_segment)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    size_t size = write_segment(path, 1000, NULL);
    collect_t c = {0};
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, collect_cb, &c, &sc), 0);
    CHECK_EQ_INT(c.n, 1000);
    CHECK(sc.header_ok);
    CHECK_EQ_INT(sc.header.seq, 3);
    CHECK_EQ_INT(sc.records, 1000);
    CHECK_EQ_INT(sc.end, size);
    CHECK_EQ_INT(sc.file_size, size);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
    CHECK_EQ_INT(sc.first_time_ms, 1000);
    CHECK_EQ_INT(sc.last_time_ms, 1999);
}

TEST(segment_scan_finds_a_torn_tail_at_every_cut)
{
    char path[512];
    size_t ends[3];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    size_t size = write_segment(path, 3, ends);
    for (size_t cut = 0; cut < size; cut++) {
        write_segment(path, 3, NULL);
        CHECK(truncate(path, (off_t)cut) == 0);
        segment_scan_t sc;
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        if (cut < SEGMENT_HEADER_SIZE) {
            CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_TORN);
            CHECK(!sc.header_ok);
            continue;
        }
        int whole = 0;
        size_t end = SEGMENT_HEADER_SIZE;
        while (whole < 3 && ends[whole] <= cut)
            end = ends[whole++];
        /* A cut on a record boundary leaves a clean, shorter segment. */
        CHECK_EQ_INT(sc.tail, cut == end ? SEGMENT_TAIL_CLEAN : SEGMENT_TAIL_TORN);
        CHECK_EQ_INT(sc.records, whole);
        CHECK_EQ_INT(sc.end, end);
        if (cut != end)
            CHECK_EQ_INT(sc.bad_offset, end);
    }
}

TEST(segment_scan_reports_damage_with_offset_and_records_behind_it)
{
    char path[512];
    size_t ends[5];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    write_segment(path, 5, ends);
    /* Flip a payload byte of record 2 (it starts at ends[1]). */
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t b;
    off_t at = (off_t)ends[1] + SEGMENT_RECORD_HEADER_SIZE + 1;
    CHECK(pread(fd, &b, 1, at) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, at) == 1);
    close(fd);
    collect_t c = {0};
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, collect_cb, &c, &sc), 0);
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_DAMAGED);
    CHECK_EQ_INT(sc.bad_offset, ends[1]);
    CHECK_EQ_INT(sc.end, ends[1]);
    CHECK_EQ_INT(sc.after_bad, 2);
}

TEST(segment_scan_reports_a_damaged_header)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    write_segment(path, 2, NULL);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, "X", 1, 0) == 1);
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_fd(fd, NULL, NULL, &sc), 0);
    close(fd);
    CHECK(!sc.header_ok);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_DAMAGED);
    CHECK_EQ_INT(sc.bad_offset, 0);
    CHECK_EQ_INT(sc.records, 0);
}

static int stop_cb(const segment_record_t *rec, void *arg)
{
    int *n = arg;
    return ++*n == 3 ? 77 : 0;
}

TEST(segment_scan_stops_when_the_callback_says_so)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    write_segment(path, 10, NULL);
    int n = 0;
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, stop_cb, &n, &sc), 77);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(segment_scan_path("/nonexistent/x.seg", NULL, NULL, &sc), -ENOENT);
}

TEST(segment_scan_handles_records_larger_than_its_read_chunk)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/big.seg", test_tmpdir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    segment_header_t h = {.version = SEGMENT_VERSION, .slot = 1, .seq = 1, .created_ms = 1};
    segment_header_encode(hdr, &h);
    CHECK(write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr));
    size_t sizes[] = {3u << 20, 10, SEGMENT_MAX_PAYLOAD};
    char *p = malloc(SEGMENT_MAX_PAYLOAD);
    CHECK(p != NULL);
    for (size_t i = 0; i < 3; i++) {
        memset(p, 'a' + (int)i, sizes[i]);
        uint8_t rh[SEGMENT_RECORD_HEADER_SIZE];
        segment_record_encode(rh, p, (uint32_t)sizes[i], i, SEGMENT_EP_IMPORT);
        CHECK(write(fd, rh, sizeof(rh)) == (ssize_t)sizeof(rh));
        CHECK(write(fd, p, sizes[i]) == (ssize_t)sizes[i]);
    }
    free(p);
    close(fd);
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.records, 3);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
}

/* Put `n` bytes of `byte` at `off` of the file (extending it with zeros if need be). */
static void put_bytes(const char *path, uint64_t off, int byte, size_t n)
{
    uint8_t buf[4096];
    CHECK(n <= sizeof(buf));
    memset(buf, byte, n);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n);
    close(fd);
}

TEST(segment_scan_ends_cleanly_at_zero_padding_of_any_length)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    static const size_t pads[] = {1, 3, 4, 19, 20, 21, 4096, 3u << 20};
    for (size_t k = 0; k < sizeof(pads) / sizeof(pads[0]); k++) {
        size_t size = write_segment(path, 10, NULL);
        CHECK(truncate(path, (off_t)(size + pads[k])) == 0);
        collect_t c = {0};
        segment_scan_t sc;
        CHECK_EQ_INT(segment_scan_path(path, collect_cb, &c, &sc), 0);
        CHECK_EQ_INT(c.n, 10);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
        CHECK_EQ_INT(sc.records, 10);
        CHECK_EQ_INT(sc.end, size);
        CHECK_EQ_INT(sc.nonzero_end, size);
        CHECK_EQ_INT(sc.file_size, size + pads[k]);
    }
    /* A segment with no record yet, all zeros after its header. */
    write_segment(path, 0, NULL);
    CHECK(truncate(path, 1u << 20) == 0);
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_CLEAN);
    CHECK_EQ_INT(sc.end, SEGMENT_HEADER_SIZE);
    CHECK_EQ_INT(sc.records, 0);
}

TEST(segment_scan_calls_bytes_after_the_zero_marker_a_torn_tail)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    /* A non-zero byte anywhere after the marker: right after it, far after it, the last one. */
    static const size_t at[] = {0, 4, 19, 20, 5000, 65535, 65536, 200000 - 1};
    for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
        size_t size = write_segment(path, 5, NULL);
        CHECK(truncate(path, (off_t)(size + 200000)) == 0);
        put_bytes(path, size + at[k], 'x', 1);
        segment_scan_t sc;
        CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
        CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_TORN);
        CHECK_EQ_INT(sc.records, 5);
        CHECK_EQ_INT(sc.end, size);
        CHECK_EQ_INT(sc.bad_offset, size);
        CHECK_EQ_INT(sc.nonzero_end, size + at[k] + 1);
        CHECK_EQ_INT(sc.after_bad, 0);
    }
}

TEST(segment_scan_calls_a_bad_record_followed_by_zeros_torn_and_damage_before_records_damaged)
{
    char path[512];
    size_t ends[5];
    snprintf(path, sizeof(path), "%s/a.seg", test_tmpdir());
    /* The last record's payload half zero (its page never reached the disk), then zeros. */
    size_t size = write_segment(path, 5, ends);
    CHECK(truncate(path, (off_t)(size + 8192)) == 0);
    put_bytes(path, ends[3] + SEGMENT_RECORD_HEADER_SIZE + 2, 0, 3);
    segment_scan_t sc;
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_TORN);
    CHECK_EQ_INT(sc.end, ends[3]);
    CHECK_EQ_INT(sc.records, 4);
    CHECK_EQ_INT(sc.nonzero_end, ends[3] + SEGMENT_RECORD_HEADER_SIZE + 2);
    /* Damage with a whole record behind it stays damage, zeros at the end or not. */
    write_segment(path, 5, ends);
    CHECK(truncate(path, (off_t)(size + 8192)) == 0);
    put_bytes(path, ends[2] + SEGMENT_RECORD_HEADER_SIZE + 1, 'Z', 1);
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_DAMAGED);
    CHECK_EQ_INT(sc.end, ends[2]);
    CHECK_EQ_INT(sc.after_bad, 1);
    CHECK_EQ_INT(sc.nonzero_end, size);
    /* Without zeros at the end, a bad last record is damage, as always. */
    write_segment(path, 5, ends);
    put_bytes(path, ends[3] + SEGMENT_RECORD_HEADER_SIZE + 1, 'Z', 1);
    CHECK_EQ_INT(segment_scan_path(path, NULL, NULL, &sc), 0);
    CHECK_EQ_INT(sc.tail, SEGMENT_TAIL_DAMAGED);
    CHECK_EQ_INT(sc.nonzero_end, size);
}

TEST(segment_nonzero_end_finds_the_last_non_zero_byte_across_read_chunks)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/z.bin", test_tmpdir());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 1u << 20) == 0);
    uint64_t end;
    CHECK_EQ_INT(segment_nonzero_end(fd, 0, 1u << 20, &end), 0);
    CHECK_EQ_INT(end, 0);
    CHECK_EQ_INT(segment_nonzero_end(fd, 100, 1u << 20, &end), 0);
    CHECK_EQ_INT(end, 100);
    static const uint64_t at[] = {0, 1, 65535, 65536, 65537, (1u << 20) - 1};
    for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
        CHECK(pwrite(fd, "\x01", 1, (off_t)at[k]) == 1);
        CHECK_EQ_INT(segment_nonzero_end(fd, 0, 1u << 20, &end), 0);
        CHECK_EQ_INT(end, at[k] + 1);
        /* Bytes before `from` do not count. */
        CHECK_EQ_INT(segment_nonzero_end(fd, at[k] + 1, 1u << 20, &end), 0);
        CHECK_EQ_INT(end, at[k] + 1);
    }
    /* A size past the end of the file reads what there is. */
    CHECK_EQ_INT(segment_nonzero_end(fd, 0, 4u << 20, &end), 0);
    CHECK_EQ_INT(end, 1u << 20);
    close(fd);
}

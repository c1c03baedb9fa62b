/*
 * The segment format (segment.h, docs/log-format.md): CRC32C, encoding and decoding of segment
 * and record headers, segment file names, and the scanner that both the writer's start-up
 * recovery (log.c) and the reader (logread.c, trackctl) use to walk a segment and find where its
 * valid records end. Nothing here keeps state besides the CRC tables, so every function is safe
 * to call from any thread.
 */
#include "trackd/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

/* Reflected CRC32C (Castagnoli) polynomial. */
#define CRC32C_POLY 0x82F63B78u
/* The scanner reads this much per pread; grown only to fit one larger record. */
#define SCAN_CHUNK (1u << 20)
#define SCAN_PROBE_MAX 1000000      /* records followed past a damaged one, to bound the work */
#define ZERO_READ_CHUNK (64u << 10) /* segment_nonzero_end's read size */
/* Bytes of a record's length field: all zero at a record boundary marks the end of data. */
#define LENGTH_FIELD_SIZE 4

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ ((c & 1) ? CRC32C_POLY : 0);
        crc_table[0][i] = c;
    }
    /* Slicing-by-8: table k advances a byte through k further zero bytes. */
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
#if defined(__x86_64__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi =
            (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
            crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
            crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
/* The SSE4.2 crc32 instruction computes exactly CRC32C; about ten times the table's speed. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw_x86(uint32_t c, const uint8_t *p,
                                                             size_t len)
{
    uint64_t c64 = c;
    while (len && ((uintptr_t)p & 7)) {
        c64 = _mm_crc32_u8((uint32_t)c64, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        len -= 8;
    }
    while (len--)
        c64 = _mm_crc32_u8((uint32_t)c64, *p++);
    return (uint32_t)c64;
}
#endif

uint32_t segment_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc_hw_x86(c, buf, len);
#endif
    return ~crc_sw(c, buf, len);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

void segment_header_encode(uint8_t *out, const segment_header_t *h)
{
    memset(out, 0, SEGMENT_HEADER_SIZE);
    memcpy(out, SEGMENT_MAGIC, sizeof(SEGMENT_MAGIC)); /* 7 letters and the NUL: 8 bytes */
    put_u32(out + 8, h->version);
    put_u32(out + 12, h->slot);
    put_u64(out + 16, h->seq);
    put_u64(out + 24, h->created_ms);
    put_u32(out + 36, segment_crc32c(0, out, 36));
}

int segment_header_decode(const uint8_t *in, size_t len, segment_header_t *h)
{
    if (len < SEGMENT_HEADER_SIZE)
        return -EINVAL;
    if (get_u32(in + 36) != segment_crc32c(0, in, 36))
        return -EINVAL;
    if (memcmp(in, SEGMENT_MAGIC, sizeof(SEGMENT_MAGIC)) != 0)
        return -EINVAL;
    if (get_u32(in + 8) != SEGMENT_VERSION)
        return -EINVAL;
    h->version = get_u32(in + 8);
    h->slot = get_u32(in + 12);
    h->seq = get_u64(in + 16);
    h->created_ms = get_u64(in + 24);
    return 0;
}

/* The record crc skips its own field: length first, then time, endpoint, reserved, payload. */
static uint32_t record_crc(const uint8_t *hdr, const void *payload, uint32_t len)
{
    uint32_t c = segment_crc32c(0, hdr, 4);
    c = segment_crc32c(c, hdr + 8, SEGMENT_RECORD_HEADER_SIZE - 8);
    return segment_crc32c(c, payload, len);
}

void segment_record_encode(uint8_t *out, const void *payload, uint32_t len, uint64_t time_ms,
                           uint8_t endpoint)
{
    put_u32(out, len);
    put_u64(out + 8, time_ms);
    out[16] = endpoint;
    out[17] = out[18] = out[19] = 0;
    put_u32(out + 4, record_crc(out, payload, len));
}

static int endpoint_valid(uint8_t ep)
{
    return ep >= SEGMENT_EP_TRACK && ep <= SEGMENT_EP_IMPORT;
}

int segment_record_decode(const uint8_t *buf, size_t len, uint64_t off, segment_record_t *rec)
{
    if (off > len || len - off < SEGMENT_RECORD_HEADER_SIZE)
        return 0;
    const uint8_t *p = buf + off;
    uint32_t plen = get_u32(p);
    /* An impossible length is damage even when the file ends before it would. */
    if (plen > SEGMENT_MAX_PAYLOAD)
        return -EBADMSG;
    if (len - off - SEGMENT_RECORD_HEADER_SIZE < plen)
        return 0;
    const uint8_t *payload = p + SEGMENT_RECORD_HEADER_SIZE;
    if (get_u32(p + 4) != record_crc(p, payload, plen))
        return -EBADMSG;
    /* A crc-valid record with a field this version never writes is not ours to interpret. */
    if (!endpoint_valid(p[16]) || p[17] || p[18] || p[19])
        return -EBADMSG;
    rec->offset = off;
    rec->len = plen;
    rec->time_ms = get_u64(p + 8);
    rec->endpoint = p[16];
    rec->payload = (const char *)payload;
    return 1;
}

void segment_name(char *out, size_t outlen, uint64_t seq)
{
    snprintf(out, outlen, "%020" PRIu64 ".seg", seq);
}

int segment_parse_name(const char *name, uint64_t *seq)
{
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -EINVAL;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    if (strcmp(name + 20, ".seg") != 0)
        return -EINVAL;
    *seq = v;
    return 0;
}

const char *segment_endpoint_name(uint8_t endpoint)
{
    switch (endpoint) {
    case SEGMENT_EP_TRACK:
        return "track";
    case SEGMENT_EP_ENGAGE:
        return "engage";
    case SEGMENT_EP_GROUPS:
        return "groups";
    case SEGMENT_EP_IMPORT:
        return "import";
    default:
        return "unknown";
    }
}

const char *segment_tail_name(segment_tail_t tail)
{
    switch (tail) {
    case SEGMENT_TAIL_CLEAN:
        return "clean";
    case SEGMENT_TAIL_TORN:
        return "torn";
    case SEGMENT_TAIL_DAMAGED:
        return "damaged";
    default:
        return "unknown";
    }
}

static int all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

int segment_nonzero_end(int fd, uint64_t from, uint64_t size, uint64_t *end)
{
    *end = from;
    if (size <= from)
        return 0;
    uint8_t *buf = malloc(ZERO_READ_CHUNK);
    if (buf == NULL)
        return -ENOMEM;
    int ret = 0;
    uint64_t hi = size; /* [hi, size) is known to be zero (or past the end of the file) */
    while (hi > from) {
        size_t want = hi - from < ZERO_READ_CHUNK ? (size_t)(hi - from) : ZERO_READ_CHUNK;
        uint64_t lo = hi - want;
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(fd, buf + got, want - got, (off_t)(lo + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                ret = -errno;
                goto done;
            }
            if (n == 0)
                break; /* the file shrank: what is missing reads as nothing */
            got += (size_t)n;
        }
        if (!all_zero(buf, got)) {
            size_t i = got;
            while (buf[i - 1] == 0)
                i--;
            *end = lo + i;
            goto done;
        }
        hi = lo;
    }
done:
    free(buf);
    return ret;
}

/* A window [base, base+len) of the file, read with pread. */
typedef struct {
    int fd;
    uint64_t size; /* the file size at the start: a live segment is scanned as of then */
    uint8_t *p;
    size_t cap;
    uint64_t base;
    size_t len;
} scan_buf_t;

/*
 * Make the window hold [off, off+need) or, if the file ends first, everything up to its end.
 * Bytes already read are kept, so the scanner reads each byte of the file once.
 */
static int scan_fill(scan_buf_t *b, uint64_t off, size_t need)
{
    if (off >= b->base && off + need <= b->base + b->len)
        return 0;
    if (need > b->cap) {
        uint8_t *np = realloc(b->p, need);
        if (np == NULL)
            return -ENOMEM;
        b->p = np;
        b->cap = need;
    }
    size_t keep = 0;
    if (off >= b->base && off < b->base + b->len) {
        keep = (size_t)(b->base + b->len - off);
        memmove(b->p, b->p + (off - b->base), keep);
    }
    b->base = off;
    b->len = keep;
    while (b->len < b->cap && b->base + b->len < b->size) {
        size_t want = b->cap - b->len;
        if (want > b->size - (b->base + b->len))
            want = (size_t)(b->size - (b->base + b->len));
        ssize_t n = pread(b->fd, b->p + b->len, want, (off_t)(b->base + b->len));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break; /* the file shrank under us: what is there is all there is */
        b->len += (size_t)n;
    }
    return 0;
}

/* Bytes of the window available from `off` on. */
static size_t scan_avail(const scan_buf_t *b, uint64_t off)
{
    return (size_t)(b->base + b->len - off);
}

/* Decode the record at absolute offset `off`: 1, 0 (torn) or -EBADMSG, as segment_record_decode. */
static int scan_record(scan_buf_t *b, uint64_t off, segment_record_t *rec, int *err)
{
    *err = scan_fill(b, off, SEGMENT_RECORD_HEADER_SIZE);
    if (*err)
        return 0;
    if (scan_avail(b, off) < SEGMENT_RECORD_HEADER_SIZE)
        return 0;
    uint32_t plen = get_u32(b->p + (off - b->base));
    if (plen <= SEGMENT_MAX_PAYLOAD) {
        *err = scan_fill(b, off, SEGMENT_RECORD_HEADER_SIZE + (size_t)plen);
        if (*err)
            return 0;
    }
    int r = segment_record_decode(b->p, b->len, off - b->base, rec);
    if (r == 1)
        rec->offset = off;
    return r;
}

int segment_scan_fd(int fd, int (*cb)(const segment_record_t *rec, void *arg), void *arg,
                    segment_scan_t *out)
{
    struct stat st;
    scan_buf_t b = {.fd = fd};
    segment_record_t rec;
    int ret = 0, err = 0;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &st) < 0)
        return -errno;
    b.size = (uint64_t)st.st_size;
    out->file_size = b.size;
    b.cap = SCAN_CHUNK;
    b.p = malloc(b.cap);
    if (b.p == NULL)
        return -ENOMEM;

    ret = scan_fill(&b, 0, SEGMENT_HEADER_SIZE);
    if (ret)
        goto done;
    out->nonzero_end = b.size; /* for a bad header: nothing in the file can be trusted */
    if (b.len < SEGMENT_HEADER_SIZE) {
        out->tail = SEGMENT_TAIL_TORN;
        goto done;
    }
    if (segment_header_decode(b.p, b.len, &out->header) != 0) {
        out->tail = SEGMENT_TAIL_DAMAGED;
        goto done;
    }
    out->header_ok = 1;
    uint64_t off = SEGMENT_HEADER_SIZE;
    out->end = off;
    while (off < b.size) {
        int r = scan_record(&b, off, &rec, &err);
        if (err) {
            ret = err;
            goto done;
        }
        if (r <= 0) {
            out->tail = r == 0 ? SEGMENT_TAIL_TORN : SEGMENT_TAIL_DAMAGED;
            out->bad_offset = off;
            break;
        }
        out->records++;
        if (out->records == 1)
            out->first_time_ms = rec.time_ms;
        out->last_time_ms = rec.time_ms;
        if (cb) {
            ret = cb(&rec, arg);
            if (ret)
                goto done;
        }
        off += SEGMENT_RECORD_HEADER_SIZE + (uint64_t)rec.len;
        out->end = off;
    }
    out->nonzero_end = off;
    if (out->tail == SEGMENT_TAIL_CLEAN)
        goto done;
    /*
     * Where the data ends, the rest of the file is zero padding (a clean end), or the non-zero
     * bytes up to nonzero_end are what a bad tail holds.
     */
    ret = segment_nonzero_end(fd, off, b.size, &out->nonzero_end);
    if (ret)
        goto done;
    size_t avail = scan_avail(&b, off);
    size_t field = avail < LENGTH_FIELD_SIZE ? avail : LENGTH_FIELD_SIZE;
    if (all_zero(b.p + (off - b.base), field)) {
        /* The end-of-data marker: clean if only zeros follow, else a write cut short. */
        out->tail = out->nonzero_end == off ? SEGMENT_TAIL_CLEAN : SEGMENT_TAIL_TORN;
        out->bad_offset = out->tail == SEGMENT_TAIL_CLEAN ? 0 : off;
        goto done;
    }
    /*
     * Damage with whole valid records behind it (found by trusting the damaged record's length
     * field) is corruption of data once written whole, not an interrupted append: say so.
     */
    if (out->tail == SEGMENT_TAIL_DAMAGED && avail >= SEGMENT_RECORD_HEADER_SIZE) {
        uint32_t plen = get_u32(b.p + (off - b.base));
        if (plen <= SEGMENT_MAX_PAYLOAD) {
            uint64_t probe = off + SEGMENT_RECORD_HEADER_SIZE + plen;
            while (probe < b.size && out->after_bad < SCAN_PROBE_MAX) {
                if (scan_record(&b, probe, &rec, &err) != 1)
                    break;
                out->after_bad++;
                probe += SEGMENT_RECORD_HEADER_SIZE + (uint64_t)rec.len;
            }
            if (err) {
                ret = err;
                goto done;
            }
        }
    }
    /*
     * A bad record with nothing valid behind it, in a file that ends in zeros: a write into
     * zero-filled space that did not complete (some of its pages never reached the disk).
     */
    if (out->tail == SEGMENT_TAIL_DAMAGED && out->after_bad == 0 && out->nonzero_end < b.size)
        out->tail = SEGMENT_TAIL_TORN;
done:
    free(b.p);
    return ret;
}

int segment_scan_path(const char *path, int (*cb)(const segment_record_t *rec, void *arg),
                      void *arg, segment_scan_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(out, 0, sizeof(*out));
        return -errno;
    }
    int ret = segment_scan_fd(fd, cb, arg, out);
    close(fd);
    return ret;
}

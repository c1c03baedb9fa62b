/*
 * On-disk format of the event log (docs/log-format.md is the prose version). A worker writes to
 * its own slot directory <data_dir>/w<NNN>/; each holds segments named <SEQ:020>.seg, which sort
 * in write order. All integers are little-endian.
 *
 * Segment header, 40 bytes:
 *   0  magic "TRKDLOG\0"   8  u32 version (1)   12 u32 slot
 *   16 u64 sequence        24 u64 created_ms    32 u32 reserved (0)   36 u32 crc32c(bytes 0..35)
 * Record, 20-byte header + payload:
 *   0  u32 payload length  4  u32 crc32c of (bytes 0..3, then bytes 8 .. end of payload)
 *   8  u64 receive time ms 16 u8 endpoint (segment_endpoint_t)   17 u8[3] reserved (0)
 *   20 payload: the stored event as compact JSON (UTF-8, no newline)
 * End of data: the end of the file, or a record boundary from which every byte to the end of the
 * file is zero (space the writer zero-filled ahead of its data in fsync mode). Records are never
 * empty, so a zero length field is never a record: zeros there with a non-zero byte anywhere
 * after them are a torn tail (part of a write that never completed).
 */
#ifndef TRACKD_SEGMENT_H
#define TRACKD_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#define SEGMENT_MAGIC "TRKDLOG"
#define SEGMENT_VERSION 1
#define SEGMENT_HEADER_SIZE 40
#define SEGMENT_RECORD_HEADER_SIZE 20
/** Bytes needed for a segment file name, with its NUL ("<20 digits>.seg"). */
#define SEGMENT_NAME_SIZE 25
/** Largest payload a record may hold; a larger length field is damage. */
#define SEGMENT_MAX_PAYLOAD (16u * 1024 * 1024)

/** Which API endpoint a record came in on. */
typedef enum {
    SEGMENT_EP_TRACK = 1,
    SEGMENT_EP_ENGAGE = 2,
    SEGMENT_EP_GROUPS = 3,
    SEGMENT_EP_IMPORT = 4,
} segment_endpoint_t;

/** Decoded segment header. */
typedef struct {
    uint32_t version;
    uint32_t slot;
    uint64_t seq;
    uint64_t created_ms;
} segment_header_t;

/** A record as read back; `payload` points into the caller's buffer. */
typedef struct {
    uint64_t offset; /* byte offset of the record header in its segment */
    uint32_t len;
    uint64_t time_ms;
    uint8_t endpoint;
    const char *payload;
} segment_record_t;

/** CRC32C (Castagnoli), continuing from `crc` (start with 0). */
uint32_t segment_crc32c(uint32_t crc, const void *buf, size_t len);

/** Encode a segment header into `out` (SEGMENT_HEADER_SIZE bytes). */
void segment_header_encode(uint8_t *out, const segment_header_t *h);

/** Decode and check a header. Returns 0 or -EINVAL (bad magic, version or crc). */
int segment_header_decode(const uint8_t *in, size_t len, segment_header_t *h);

/** Encode a record header for `payload` into `out` (SEGMENT_RECORD_HEADER_SIZE bytes). */
void segment_record_encode(uint8_t *out, const void *payload, uint32_t len, uint64_t time_ms,
                           uint8_t endpoint);

/**
 * Decode the record at `buf[off..len)`. Returns 1 and fills `rec` for a whole valid record,
 * 0 if the bytes end before the record does (a torn tail), or -EBADMSG if the record is damaged
 * (bad crc, impossible length, bad endpoint).
 */
int segment_record_decode(const uint8_t *buf, size_t len, uint64_t off, segment_record_t *rec);

/** Format the file name of segment `seq` ("00000000000000000042.seg") into `out`. */
void segment_name(char *out, size_t outlen, uint64_t seq);

/** Parse a segment file name; returns 0 and the sequence, or -EINVAL if it is not one. */
int segment_parse_name(const char *name, uint64_t *seq);

/** Name of the endpoint ("track", ...) or "unknown". */
const char *segment_endpoint_name(uint8_t endpoint);

/** How a scanned segment ends. */
typedef enum {
    SEGMENT_TAIL_CLEAN = 0,   /* the last valid record ends at the end of the file, or only
                                 zero padding follows it */
    SEGMENT_TAIL_TORN = 1,    /* the file ends inside a header or record (an interrupted append) */
    SEGMENT_TAIL_DAMAGED = 2, /* a header or record fails its checks (crc, length, endpoint) */
} segment_tail_t;

/** What segment_scan_fd() found in one segment file. */
typedef struct {
    segment_header_t header; /* valid only if header_ok */
    int header_ok;           /* 0: header torn (file < SEGMENT_HEADER_SIZE) or damaged */
    uint64_t records;        /* whole valid records, from the header up to `end` */
    uint64_t end;            /* end of data: offset just past the last valid record
                                (SEGMENT_HEADER_SIZE if none; 0 if the header is not ok) */
    uint64_t file_size;      /* size of the file when the scan started */
    uint64_t nonzero_end;    /* just past the last non-zero byte at or after `end` (== end when
                                all of it is zero padding): a bad tail loses [end, nonzero_end) */
    segment_tail_t tail;     /* CLEAN, or why the bytes from `bad_offset` on are not records; a
                                bad record with only zeros after it (and the file ending in
                                zeros) is TORN: a write into zero-filled space cut short */
    uint64_t bad_offset;     /* == end when tail != CLEAN (0 for a bad header) */
    uint64_t after_bad;      /* whole valid records found after a damaged one by following its
                                length field: non-zero means damage in the middle, not a tail */
    uint64_t first_time_ms;  /* receive time of the first and last valid record (0 if none) */
    uint64_t last_time_ms;
} segment_scan_t;

/**
 * Read the segment open on `fd` from offset 0 with pread (the file offset is not used or
 * changed), check its header and every record in order, and call `cb` (if not NULL) for each
 * valid record; `rec->payload` is valid only during the call. Scanning stops at the first
 * record that is torn or damaged; `out` says where and why. A non-zero return from `cb` stops
 * the scan and is returned. Returns 0 (also for a torn or damaged file: see out->tail), a
 * non-zero value from cb, or a negative errno for an I/O error or -ENOMEM.
 */
int segment_scan_fd(int fd, int (*cb)(const segment_record_t *rec, void *arg), void *arg,
                    segment_scan_t *out);

/** segment_scan_fd() on the file at `path`, opened read-only. -errno if it cannot be opened. */
int segment_scan_path(const char *path, int (*cb)(const segment_record_t *rec, void *arg),
                      void *arg, segment_scan_t *out);

/**
 * Find where the non-zero bytes of the file open on `fd` end in [from, size): sets `*end` just
 * past the last non-zero byte, or to `from` if every byte there is zero (or the file is shorter).
 * Reads backwards from `size` with pread. Returns 0, or a negative errno (-ENOMEM).
 */
int segment_nonzero_end(int fd, uint64_t from, uint64_t size, uint64_t *end);

/** Name of a tail state ("clean", "torn", "damaged"). */
const char *segment_tail_name(segment_tail_t tail);

#endif

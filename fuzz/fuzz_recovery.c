/*
 * libFuzzer target for everything that reads segment files back: the scanner
 * (segment_scan_fd), the reader trackctl uses (logread_open / logread_next /
 * logread_format_line / logread_filter_match), and start-up recovery (log_open on a slot whose
 * files are the fuzzer's bytes, then log_close). A segment file is untrusted input after a crash,
 * a bad disk or an operator's copy: none of these may crash, leak, hang or read out of bounds.
 *
 * Input: byte 0 = flags, then (nseg - 1) little-endian u16 split points, then the bytes that are
 * cut into nseg segment files 1..nseg of slot w001:
 *   flags & 3       nseg - 1 (1 to 3 segments; 3 means 1)
 *   flags & 0x04    give every segment a valid header (slot 1, its sequence), so the fuzzer's
 *                   bytes are records from the first one on
 *   flags & 0x08    fix the crc of every record whose length fits, so the fuzzer reaches the
 *                   payloads (JSON formatting, filters) and the record framing past the crc
 *   flags & 0x10    run start-up recovery (log_open + log_close) after reading
 *   flags & 0x20    number the segments 1, 3, 5 (a gap: the reader's chain checks)
 *   flags & 0x40    append FUZZ_ZERO_PAD zero bytes to every segment (fsync mode's zero-filled
 *                   space ahead of the data, or what a crash leaves of it)
 * Checked: the scanner's end of data is where only zeros follow (or the end of the file) for a
 * clean segment; after a recovery that succeeded, every segment of the slot scans clean (a torn
 * or damaged tail was cut, never left for the writer to append after) and the newest one ends at
 * its data (its zero padding was cut too).
 */
/* clang-format off */
/*
 * fuzz-max-len: 65536
 */
/* clang-format on */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "trackd/config.h"
#include "trackd/log.h"
#include "trackd/logread.h"
#include "trackd/msg.h"
#include "trackd/segment.h"

#define FUZZ_ZERO_PAD 4096 /* flags & 0x40: zeros appended to every segment */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_base[256];
static unsigned fuzz_iter;

static void fuzz_cleanup(void)
{
    rmdir(fuzz_base);
}

static void fuzz_setup(void)
{
    /* tmpfs when there is one: recovery fsyncs, and the disk would make every run slow. */
    const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_base, sizeof(fuzz_base), "%s/fuzz-recovery-XXXXXX", root);
    if (mkdtemp(fuzz_base) == NULL)
        abort();
    atexit(fuzz_cleanup);
    msg_set_level(CONFIG_LOG_ERROR); /* recovery explains what it cuts: only errors, please */
}

/* Remove the files of `dir` (one level of subdirectories) and the directory itself. */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (de->d_type == DT_DIR)
            rm_tree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Rewrite the crc of every whole record from `off` on (the record format of segment.h). */
static void fix_crcs(uint8_t *buf, size_t len, size_t off)
{
    while (off + SEGMENT_RECORD_HEADER_SIZE <= len) {
        uint8_t *p = buf + off;
        uint32_t plen = get_u32(p);
        if (plen > SEGMENT_MAX_PAYLOAD || plen > len - off - SEGMENT_RECORD_HEADER_SIZE)
            return;
        uint32_t c = segment_crc32c(0, p, 4);
        c = segment_crc32c(c, p + 8, SEGMENT_RECORD_HEADER_SIZE - 8);
        c = segment_crc32c(c, p + SEGMENT_RECORD_HEADER_SIZE, plen);
        put_u32(p + 4, c);
        off += SEGMENT_RECORD_HEADER_SIZE + plen;
    }
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        abort();
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0)
            abort();
        buf += n;
        len -= (size_t)n;
    }
    close(fd);
}

static int count_record(const segment_record_t *rec, void *arg)
{
    (void)rec;
    (*(uint64_t *)arg)++;
    return 0;
}

/* trackctl's path: every record merged, formatted as NDJSON, filtered. */
static void read_all(const char *dir)
{
    logread_t *r;
    logread_opts_t opts;
    logread_record_t rec;
    logread_filter_t f = {.event = "e", .token = "T", .endpoint = SEGMENT_EP_TRACK};
    static char line[1 << 17];
    int rc;

    memset(&opts, 0, sizeof(opts));
    if (logread_open(&r, dir, &opts) != 0)
        return;
    while ((rc = logread_next(r, &rec)) == 1) {
        if (rec.len > 0 && rec.payload == NULL)
            abort();
        logread_format_line(&rec, line, sizeof(line));
        logread_filter_match(&f, &rec);
    }
    if (rc < 0 && rc != -ENOMEM)
        abort();
    logread_close(r);
}

static void on_log_closed(void *arg)
{
    *(int *)arg = 1;
}

/* Start-up recovery on the slot, then a clean stop; every segment must then scan clean. */
static void recover(const char *dir, const char *slotdir)
{
    uv_loop_t loop;
    log_t *log = NULL;
    log_config_t lc;
    config_t cfg;
    int closed = 0;

    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s", dir);
    cfg.durability = CONFIG_DURABILITY_WRITE;
    log_config_from(&lc, &cfg, 1);
    if (uv_loop_init(&loop) != 0)
        abort();
    if (log_open(&log, &loop, &lc) == 0) {
        log_close(log, on_log_closed, &closed);
        uv_run(&loop, UV_RUN_DEFAULT);
        if (!closed)
            abort();
        DIR *d = opendir(slotdir);
        struct dirent *de;
        char path[512];
        uint64_t newest = 0, newest_end = 0, newest_size = 0;
        while (d && (de = readdir(d)) != NULL) {
            uint64_t seq;
            segment_scan_t sc;
            if (segment_parse_name(de->d_name, &seq) != 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", slotdir, de->d_name);
            if (segment_scan_path(path, NULL, NULL, &sc) != 0)
                continue;
            if (!sc.header_ok || sc.tail != SEGMENT_TAIL_CLEAN) {
                fprintf(stderr, "recovery left %s %s at %llu\n", path, segment_tail_name(sc.tail),
                        (unsigned long long)sc.bad_offset);
                abort();
            }
            if (seq >= newest) {
                newest = seq;
                newest_end = sc.end;
                newest_size = sc.file_size;
            }
        }
        if (d)
            closedir(d);
        if (newest_end != newest_size) {
            fprintf(stderr, "recovery left zero padding in the newest segment\n");
            abort();
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        abort();
    config_free(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[300], slotdir[320], path[400];
    size_t nseg, cut[4], off;
    uint8_t flags;

    if (fuzz_base[0] == '\0')
        fuzz_setup();
    if (size < 1)
        return 0;
    flags = data[0];
    nseg = 1 + (flags & 3) % 3;
    if (size < 1 + 2 * (nseg - 1))
        return 0;
    off = 1 + 2 * (nseg - 1);
    size_t body = size - off;
    /* Split points, sorted, within the body. */
    cut[0] = 0;
    for (size_t i = 1; i < nseg; i++) {
        size_t c = (size_t)(data[1 + 2 * (i - 1)] | data[2 + 2 * (i - 1)] << 8);
        cut[i] = body ? c % (body + 1) : 0;
        if (cut[i] < cut[i - 1])
            cut[i] = cut[i - 1];
    }
    cut[nseg] = body;

    snprintf(dir, sizeof(dir), "%s/%u", fuzz_base, fuzz_iter++);
    snprintf(slotdir, sizeof(slotdir), "%s/w001", dir);
    if (mkdir(dir, 0750) != 0 || mkdir(slotdir, 0750) != 0)
        abort();
    for (size_t i = 0; i < nseg; i++) {
        size_t clen = cut[i + 1] - cut[i], hlen = flags & 0x04 ? SEGMENT_HEADER_SIZE : 0;
        uint8_t *buf = malloc(hlen + clen + 1);
        uint64_t seq = flags & 0x20 ? 2 * i + 1 : i + 1;
        if (buf == NULL)
            abort();
        if (hlen) {
            segment_header_t h = {.version = SEGMENT_VERSION,
                                  .slot = 1,
                                  .seq = seq,
                                  .created_ms = 1700000000000ULL + i};
            segment_header_encode(buf, &h);
        }
        memcpy(buf + hlen, data + off + cut[i], clen);
        if (flags & 0x08)
            fix_crcs(buf, hlen + clen, SEGMENT_HEADER_SIZE);
        segment_name(path, sizeof(path), seq);
        char full[800];
        snprintf(full, sizeof(full), "%s/%s", slotdir, path);
        write_file(full, buf, hlen + clen);
        if ((flags & 0x40) && truncate(full, (off_t)(hlen + clen + FUZZ_ZERO_PAD)) != 0)
            abort();

        /* The scanner alone, on a descriptor. */
        int fd = open(full, O_RDONLY | O_CLOEXEC);
        segment_scan_t sc;
        uint64_t n = 0;
        if (fd < 0)
            abort();
        if (segment_scan_fd(fd, count_record, &n, &sc) == 0) {
            if (n != sc.records || sc.end > sc.file_size || sc.nonzero_end > sc.file_size ||
                (sc.header_ok && sc.nonzero_end < sc.end) ||
                (sc.tail == SEGMENT_TAIL_CLEAN && sc.header_ok && sc.nonzero_end != sc.end))
                abort();
        }
        close(fd);
        free(buf);
    }
    read_all(dir);
    if (flags & 0x10)
        recover(dir, slotdir);
    rm_tree(dir);
    return 0;
}

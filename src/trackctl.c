/*
 * trackctl: the operator's tool for trackd's event log (docs/trackctl.md). It reads the data
 * directory directly, never talking to a running server: `cat` and `tail` print records as NDJSON,
 * `verify` checks every checksum and the segment chain, `stats` counts, and `repair` moves a
 * damaged segment aside so trackd can start again. Everything but `repair` only reads; `repair`
 * takes the slot's writer lock first, so it never races a running writer.
 *
 * Exit status: 0 ok, 1 damage found or an error, 2 usage. A closed stdout (`| head`) ends the
 * command quietly with status 0, like a tool killed by SIGPIPE would in a shell pipeline.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "trackd/logread.h"
#include "trackd/segment.h"

#define CTL_OUT_BUF (256u * 1024) /* stdout is written in chunks of this size */
#define CTL_DEFAULT_DATA_DIR "./data"
#define CTL_DEFAULT_TAIL 10
#define CTL_DEFAULT_INTERVAL_MS 200 /* tail -f polls this often */
#define CTL_INTERVAL_MAX_MS 60000
#define CTL_LOCK_NAME "lock" /* the file a live writer holds with flock (log.c) */
#define CTL_ASIDE_TRIES 100  /* .damaged, .damaged.1, ... before giving up */

enum { EXIT_OK = 0, EXIT_DAMAGE = 1, EXIT_USAGE = 2 };

/* ---- output ------------------------------------------------------------------------------ */

/* Buffered stdout with write(2), so a write error is seen with its errno. */
static struct {
    char *buf;
    size_t len, cap;
    int closed; /* the reader went away (EPIPE): stop quietly */
    int error;  /* another write error (errno) */
} out;

static volatile sig_atomic_t stop_requested;

/* From out_write() and out_record(): the output is gone (closed pipe or write error): stop. */
#define OUT_STOP 1

static int out_write(const char *p, size_t n)
{
    while (n > 0 && !out.closed && !out.error) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (errno == EPIPE)
                out.closed = 1;
            else
                out.error = errno;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    return out.closed || out.error ? OUT_STOP : 0;
}

static int out_flush(void)
{
    int rc = out_write(out.buf, out.len);
    out.len = 0;
    return rc;
}

/* Append one record's NDJSON line. Returns 0, OUT_STOP, or -ENOMEM / -EBADMSG. */
static int out_record(const logread_record_t *rec)
{
    ssize_t need = logread_format_line(rec, out.buf + out.len, out.cap - out.len);
    if (need < 0)
        return (int)need;
    if ((size_t)need <= out.cap - out.len) {
        out.len += (size_t)need;
        return 0;
    }
    if (out_flush() != 0)
        return OUT_STOP;
    if ((size_t)need <= out.cap) {
        out.len = (size_t)logread_format_line(rec, out.buf, out.cap);
        return 0;
    }
    /* A record larger than the buffer: format it on its own. */
    char *big = malloc((size_t)need);
    if (big == NULL)
        return -ENOMEM;
    logread_format_line(rec, big, (size_t)need);
    int rc = out_write(big, (size_t)need);
    free(big);
    return rc;
}

static void out_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void out_printf(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    if (out.len + (size_t)n > out.cap)
        out_flush();
    memcpy(out.buf + out.len, line, (size_t)n);
    out.len += (size_t)n;
}

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void errorf(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "trackctl: %s\n", line);
}

/* Final status given the output state: a closed pipe is success, other write errors are not. */
static int out_finish(int status)
{
    out_flush();
    if (out.error) {
        errorf("write error on standard output: %s", strerror(out.error));
        return EXIT_DAMAGE;
    }
    return out.closed ? EXIT_OK : status;
}

/* ---- options ----------------------------------------------------------------------------- */

typedef struct {
    const char *data_dir;
    uint32_t slot;
    logread_filter_t filter;
    logread_cursor_t after;
    int has_after;
    const char *save_cursor;
    size_t lines;
    int follow;
    int interval_ms;
    int strict, json, yes, quiet;
} ctl_opts_t;

static const char *const usage_main =
    "usage: trackctl COMMAND [OPTIONS]\n"
    "\n"
    "Read, check and repair trackd's event log (the data directory), without the server.\n"
    "\n"
    "commands:\n"
    "  cat      print every stored record as NDJSON, all slots merged in receive-time order\n"
    "  tail     print the last records (-n), or follow new ones (-f) like tail -F\n"
    "  verify   check every checksum and the segment chain; counts per slot\n"
    "  stats    records, bytes, segments and time range per slot and in total\n"
    "  repair   move damaged segments aside (<name>.damaged) so trackd can start\n"
    "  help     this text, or `trackctl help COMMAND`\n"
    "\n"
    "Every command takes --data-dir DIR (default ./data) and --worker N (alias --slot N) to\n"
    "look at one writer slot (directory wNNN) only.\n"
    "\n"
    "exit status: 0 ok, 1 damage found or an error, 2 usage error.\n";

static const char *const usage_filters =
    "  --since TIME       only records received at or after TIME\n"
    "  --until TIME       only records received before TIME\n"
    "                     TIME: milliseconds since the epoch, or ISO-8601 such as\n"
    "                     2026-11-25, 2026-11-25T10:00:00Z, 2026-11-25T11:00:00.5+01:00 (no zone: "
    "UTC)\n"
    "  --event NAME       only events named NAME\n"
    "  --token TOKEN      only records whose properties.token (or $token) is TOKEN\n"
    "  --endpoint NAME    only records received on track, engage, groups or import\n"
    "  --after CURSOR     start strictly after a cursor: \"slot:segment:offset\" positions,\n"
    "                     comma-separated, at most one per slot (\"1:3:4096,2:1:40\"); slots\n"
    "                     not listed are read from their start; \"\" reads everything\n"
    "  -q, --quiet        do not print notes (retention gaps, torn tails) on stderr\n";

static const char *const usage_cat =
    "usage: trackctl cat [--data-dir DIR] [--worker N] [FILTERS] [--after CURSOR]\n"
    "                    [--save-cursor FILE]\n"
    "\n"
    "Print every stored record as one JSON object per line: the stored event plus\n"
    "\"_trackd\": {\"endpoint\",\"received_ms\",\"slot\",\"segment\",\"offset\",\"pos\"}.\n"
    "Slots are merged by (received_ms, slot, segment, offset); each slot's records keep their\n"
    "write order.\n"
    "\n";

static const char *const usage_cat_tail =
    "  --save-cursor FILE once all output is written, write the cursor to resume from (each\n"
    "                     slot's last record read, printed or filtered out) to FILE; give it\n"
    "                     back with --after \"$(cat FILE)\"\n"
    "\n"
    "With --until, cat reads each slot up to its first record received at or after TIME, so\n"
    "that consecutive windows (--after the saved cursor, --until the next TIME) neither skip nor\n"
    "repeat a record even across a clock step.\n";

static const char *const usage_tail =
    "usage: trackctl tail [--data-dir DIR] [--worker N] [-n N] [-f [--interval MS]] [FILTERS]\n"
    "\n"
    "Print the last N records (default 10) in receive-time order and exit; with -f keep\n"
    "printing new records as the writers append them, across segment rolls and slots that\n"
    "appear later, until interrupted. With --after, print everything after the cursor\n"
    "instead of the last N.\n"
    "\n"
    "  -n, --lines N      how many records (default 10)\n"
    "  -f, --follow       follow new records\n"
    "  --interval MS      how often -f looks for new records (default 200)\n";

static const char *const usage_verify =
    "usage: trackctl verify [--data-dir DIR] [--worker N] [--strict]\n"
    "\n"
    "Check every segment: header, slot and sequence, every record checksum, and the chain\n"
    "(no segment missing between two present ones; segments gone at the start are retention\n"
    "and only noted). Prints what it finds and counts per slot. A torn tail of a slot's newest\n"
    "segment is an append that was never acknowledged, which trackd truncates at its next\n"
    "start: reported, but not damage unless --strict. Exit status 1 names damage by file and\n"
    "offset.\n"
    "\n"
    "  --strict           count a torn tail as damage\n";

static const char *const usage_stats =
    "usage: trackctl stats [--data-dir DIR] [--worker N] [--json]\n"
    "\n"
    "Records, payload bytes, segments, bytes on disk and the receive-time range, per slot\n"
    "and in total.\n"
    "\n"
    "  --json             one JSON object instead of a table\n";

static const char *const usage_repair =
    "usage: trackctl repair [--data-dir DIR] [--worker N] [--yes]\n"
    "\n"
    "Find damaged segments (what verify calls damage) and move each aside, renaming it to\n"
    "<name>.damaged: kept, never deleted, but no longer read, so trackd can start. Without\n"
    "--yes, only print what would be done. A slot whose lock is held by a running trackd is\n"
    "left alone (stop trackd first). A torn tail is left to trackd, which truncates it.\n"
    "\n"
    "  --yes              do it\n";

static void print_usage(const char *cmd)
{
    if (cmd == NULL) {
        fputs(usage_main, stdout);
    } else if (strcmp(cmd, "cat") == 0) {
        fputs(usage_cat, stdout);
        fputs(usage_filters, stdout);
        fputs(usage_cat_tail, stdout);
    } else if (strcmp(cmd, "tail") == 0) {
        fputs(usage_tail, stdout);
        fputs(usage_filters, stdout);
    } else if (strcmp(cmd, "verify") == 0) {
        fputs(usage_verify, stdout);
    } else if (strcmp(cmd, "stats") == 0) {
        fputs(usage_stats, stdout);
    } else if (strcmp(cmd, "repair") == 0) {
        fputs(usage_repair, stdout);
    }
}

enum {
    OPT_DATA_DIR = 256,
    OPT_WORKER,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_EVENT,
    OPT_TOKEN,
    OPT_ENDPOINT,
    OPT_AFTER,
    OPT_SAVE_CURSOR,
    OPT_INTERVAL,
    OPT_STRICT,
    OPT_JSON,
    OPT_YES,
    OPT_HELP,
};

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "trackctl %s: %s\ntry `trackctl %s --help`\n", cmd, line, cmd);
    return EXIT_USAGE;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-' || x > max)
        return -EINVAL;
    *v = x;
    return 0;
}

/*
 * Parse the options of `cmd`. Which ones apply is decided per command; getopt_long sees them all
 * so that an option of another command gets a precise message. Returns -1 to go on, or an exit
 * status (help printed, usage error).
 */
static int parse_opts(const char *cmd, int argc, char **argv, ctl_opts_t *o)
{
    static const struct option longopts[] = {
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"worker", required_argument, NULL, OPT_WORKER},
        {"slot", required_argument, NULL, OPT_WORKER},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"event", required_argument, NULL, OPT_EVENT},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"endpoint", required_argument, NULL, OPT_ENDPOINT},
        {"after", required_argument, NULL, OPT_AFTER},
        {"save-cursor", required_argument, NULL, OPT_SAVE_CURSOR},
        {"lines", required_argument, NULL, 'n'},
        {"follow", no_argument, NULL, 'f'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"strict", no_argument, NULL, OPT_STRICT},
        {"json", no_argument, NULL, OPT_JSON},
        {"yes", no_argument, NULL, OPT_YES},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int is_cat = strcmp(cmd, "cat") == 0, is_tail = strcmp(cmd, "tail") == 0;
    int reads = is_cat || is_tail;
    uint64_t v;
    int c;

    o->data_dir = CTL_DEFAULT_DATA_DIR;
    o->lines = CTL_DEFAULT_TAIL;
    o->interval_ms = CTL_DEFAULT_INTERVAL_MS;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+:n:fqh", longopts, NULL)) != -1) {
        const char *name = optind > 1 && optind - 1 < argc ? argv[optind - 1] : "?";
        int ok = 1;
        switch (c) {
        case OPT_DATA_DIR:
            o->data_dir = optarg;
            break;
        case OPT_WORKER:
            if (parse_uint(optarg, LOGREAD_SLOT_MAX, &v) != 0 || v == 0)
                return usage_error(cmd, "--worker wants a slot number 1..%u, not \"%s\"",
                                   LOGREAD_SLOT_MAX, optarg);
            o->slot = (uint32_t)v;
            break;
        case OPT_SINCE:
        case OPT_UNTIL:
            ok = reads;
            if (ok && logread_parse_time(optarg, c == OPT_SINCE ? &o->filter.since_ms
                                                                : &o->filter.until_ms) != 0)
                return usage_error(cmd, "%s: not a time (ms since the epoch or ISO-8601): \"%s\"",
                                   c == OPT_SINCE ? "--since" : "--until", optarg);
            break;
        case OPT_EVENT:
            ok = reads;
            o->filter.event = optarg;
            break;
        case OPT_TOKEN:
            ok = reads;
            o->filter.token = optarg;
            break;
        case OPT_ENDPOINT:
            ok = reads;
            for (uint8_t e = SEGMENT_EP_TRACK; e <= SEGMENT_EP_IMPORT; e++)
                if (strcmp(optarg, segment_endpoint_name(e)) == 0)
                    o->filter.endpoint = e;
            if (ok && o->filter.endpoint == 0)
                return usage_error(cmd, "--endpoint wants track, engage, groups or import");
            break;
        case OPT_AFTER:
            ok = reads;
            logread_cursor_free(&o->after);
            if (ok && logread_cursor_parse(&o->after, optarg) != 0)
                return usage_error(cmd,
                                   "--after wants \"slot:segment:offset[,slot:segment:offset...]\""
                                   " with one position per slot, not \"%s\"",
                                   optarg);
            o->has_after = 1;
            break;
        case OPT_SAVE_CURSOR:
            ok = is_cat;
            o->save_cursor = optarg;
            break;
        case 'n':
            ok = is_tail;
            if (ok && parse_uint(optarg, SIZE_MAX / 2, &v) != 0)
                return usage_error(cmd, "-n wants a number of records, not \"%s\"", optarg);
            o->lines = (size_t)v;
            break;
        case 'f':
            ok = is_tail;
            o->follow = 1;
            break;
        case OPT_INTERVAL:
            ok = is_tail;
            if (ok && (parse_uint(optarg, CTL_INTERVAL_MAX_MS, &v) != 0 || v == 0))
                return usage_error(cmd, "--interval wants milliseconds 1..%d", CTL_INTERVAL_MAX_MS);
            o->interval_ms = (int)v;
            break;
        case OPT_STRICT:
            ok = strcmp(cmd, "verify") == 0;
            o->strict = 1;
            break;
        case OPT_JSON:
            ok = strcmp(cmd, "stats") == 0;
            o->json = 1;
            break;
        case OPT_YES:
            ok = strcmp(cmd, "repair") == 0;
            o->yes = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'h':
        case OPT_HELP:
            print_usage(cmd);
            return EXIT_OK;
        case ':':
            return usage_error(cmd, "%s needs a value", name);
        default:
            return usage_error(cmd, "unknown option %s", name);
        }
        if (!ok)
            return usage_error(cmd, "%s does not apply to %s", name, cmd);
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
    if (o->filter.until_ms != 0 && o->filter.until_ms <= o->filter.since_ms)
        return usage_error(cmd, "--until must be later than --since");
    return -1;
}

/* ---- problem reports --------------------------------------------------------------------- */

typedef struct {
    int quiet;         /* drop notices and torn tails */
    FILE *to;          /* stderr for cat/tail, stdout for verify and repair, NULL: print nothing */
    int prefix;        /* "trackctl: " in front (on stderr) */
    int collect;       /* repair: gather the damaged segments' sequence numbers */
    uint64_t *damaged; /* ... here, each once */
    size_t ndamaged, damaged_cap;
    int oom; /* gathering ran out of memory */
} ctl_report_t;

static const char *issue_label(logread_issue_kind_t kind)
{
    switch (kind) {
    case LOGREAD_DAMAGE:
        return "DAMAGE";
    case LOGREAD_CHAIN:
        return "CHAIN";
    case LOGREAD_TORN_TAIL:
        return "torn tail";
    case LOGREAD_NOTICE:
        return "note";
    case LOGREAD_ERROR:
        return "ERROR";
    }
    return "?";
}

static void on_issue(const logread_issue_t *is, void *arg)
{
    ctl_report_t *rep = arg;
    if (rep->collect && is->kind == LOGREAD_DAMAGE) {
        int seen = 0;
        for (size_t i = 0; i < rep->ndamaged && !seen; i++)
            seen = rep->damaged[i] == is->seq;
        if (!seen && rep->ndamaged == rep->damaged_cap) {
            size_t ncap = rep->damaged_cap ? rep->damaged_cap * 2 : 16;
            uint64_t *nd = realloc(rep->damaged, ncap * sizeof(*nd));
            if (nd == NULL) {
                rep->oom = 1;
            } else {
                rep->damaged = nd;
                rep->damaged_cap = ncap;
            }
        }
        if (!seen && rep->ndamaged < rep->damaged_cap)
            rep->damaged[rep->ndamaged++] = is->seq;
    }
    if (rep->to == NULL ||
        (rep->quiet && (is->kind == LOGREAD_NOTICE || is->kind == LOGREAD_TORN_TAIL)))
        return;
    if (rep->to == stdout) {
        out_printf("%s: %s: %s\n", issue_label(is->kind), is->path, is->what);
    } else {
        fflush(NULL);
        fprintf(rep->to, "%s%s: %s: %s\n", rep->prefix ? "trackctl: " : "", issue_label(is->kind),
                is->path, is->what);
    }
}

/* Damage as far as the exit status goes. */
static int counts_bad(const logread_counts_t *c, int strict)
{
    return c->damage || c->chain || c->errors || (strict && c->torn_tails);
}

static int open_error(const char *data_dir, uint32_t slot, int rc)
{
    if (rc == -ENOENT && slot != 0)
        errorf("%s: no slot directory w%03" PRIu32, data_dir, slot);
    else if (rc != -EINVAL) /* a bad cursor was reported by the reader */
        errorf("%s: %s", data_dir, strerror(-rc));
    return EXIT_DAMAGE;
}

/* ---- cat and tail ------------------------------------------------------------------------ */

/* Write `c` to `path` atomically: temporary file, fsync, rename. */
static int save_cursor_file(const char *path, const logread_cursor_t *c)
{
    char tmp[PATH_MAX], *s;
    int rc = logread_cursor_format(c, &s);
    if (rc != 0)
        return rc;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
        free(s);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(s);
        return -errno;
    }
    size_t len = strlen(s);
    s[len] = '\n';
    rc = write(fd, s, len + 1) == (ssize_t)(len + 1) && fsync(fd) == 0 ? 0 : -(errno ? errno : EIO);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    free(s);
    return rc;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: the caller checks stop_requested */
}

static int cmd_cat(ctl_opts_t *o)
{
    ctl_report_t rep = {.quiet = o->quiet, .to = stderr, .prefix = 1};
    logread_opts_t ro = {o->slot, o->has_after ? &o->after : NULL, 0, on_issue, &rep};
    logread_cursor_t cur = {0};
    logread_counts_t counts;
    logread_record_t rec;
    logread_t *r;
    int rc, status = EXIT_OK;

    if ((rc = logread_open(&r, o->data_dir, &ro)) != 0)
        return open_error(o->data_dir, o->slot, rc);
    for (size_t i = 0; i < o->after.n; i++)
        if ((rc = logread_cursor_set(&cur, &o->after.pos[i])) != 0)
            goto done;
    while ((rc = logread_next(r, &rec)) == 1) {
        /*
         * --until ends each slot at its first record past the window, rather than filtering
         * records one by one: after a clock step back a slot may hold earlier times further on,
         * and they belong to the next window, which starts from this slot's cursor.
         */
        if (o->filter.until_ms != 0 && rec.time_ms >= o->filter.until_ms) {
            logread_end_slot(r, rec.pos.slot);
            continue;
        }
        int match = logread_filter_match(&o->filter, &rec);
        if (o->save_cursor != NULL && (rc = logread_cursor_set(&cur, &rec.pos)) != 0)
            break;
        if (!match)
            continue;
        rc = out_record(&rec);
        if (rc == -EBADMSG) {
            char ps[LOGREAD_POS_STRLEN];
            logread_pos_format(ps, sizeof(ps), &rec.pos);
            errorf("record %s is not a JSON object; skipped", ps);
            status = EXIT_DAMAGE;
            rc = 0;
        }
        if (rc != 0)
            break;
    }
done:
    if (rc < 0) {
        errorf("%s", strerror(-rc));
        status = EXIT_DAMAGE;
    }
    logread_counts(r, &counts);
    if (counts_bad(&counts, 0))
        status = EXIT_DAMAGE;
    out_flush();
    if (o->save_cursor != NULL && !out.closed && !out.error && rc == 0) {
        if ((rc = save_cursor_file(o->save_cursor, &cur)) != 0) {
            errorf("cannot write cursor %s: %s", o->save_cursor, strerror(-rc));
            status = EXIT_DAMAGE;
        }
    }
    logread_cursor_free(&cur);
    logread_close(r);
    return out_finish(status);
}

/* Count the records `tail` would consider from cursor `c`, to know how many to skip. */
static int count_matching(const ctl_opts_t *o, const logread_cursor_t *c, uint64_t *n)
{
    logread_opts_t ro = {o->slot, c, 0, NULL, NULL};
    logread_record_t rec;
    logread_t *r;
    int rc = logread_open(&r, o->data_dir, &ro);

    *n = 0;
    if (rc != 0)
        return rc;
    while ((rc = logread_next(r, &rec)) == 1)
        *n += (uint64_t)logread_filter_match(&o->filter, &rec);
    logread_close(r);
    return rc;
}

static int cmd_tail(ctl_opts_t *o)
{
    ctl_report_t rep = {.quiet = o->quiet, .to = stderr, .prefix = 1};
    logread_cursor_t start = {0};
    logread_counts_t counts;
    logread_record_t rec;
    logread_t *r = NULL;
    uint64_t total = 0, skip = 0, left = UINT64_MAX;
    int rc, status = EXIT_OK;

    if (o->has_after) {
        for (size_t i = 0; i < o->after.n; i++)
            if ((rc = logread_cursor_set(&start, &o->after.pos[i])) != 0)
                goto fail;
    } else {
        /*
         * The last N: place each slot before its own last N matching records, then count what
         * the merge from there yields and skip all but the last N of it.
         */
        if ((rc = logread_tail_cursor(o->data_dir, o->slot, o->lines, &o->filter, &start)) != 0 &&
            !(rc == -ENOENT && o->follow))
            goto fail;
        if (rc == 0 && (rc = count_matching(o, &start, &total)) != 0)
            goto fail;
        skip = total > o->lines ? total - o->lines : 0;
        if (!o->follow)
            left = total - skip;
    }
    logread_opts_t ro = {o->slot, &start, o->follow, on_issue, &rep};
    if ((rc = logread_open(&r, o->data_dir, &ro)) != 0)
        goto fail;
    if (o->follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop_signal; /* no SA_RESTART: the poll sleep ends at once */
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    while (!stop_requested && left > 0) {
        rc = logread_next(r, &rec);
        if (rc < 0)
            break;
        if (rc == 0) {
            if (!o->follow || out_flush() != 0)
                break;
            sleep_ms(o->interval_ms);
            continue;
        }
        if (!logread_filter_match(&o->filter, &rec))
            continue;
        if (skip > 0) {
            skip--;
            continue;
        }
        left--;
        rc = out_record(&rec);
        if (rc == -EBADMSG) {
            char ps[LOGREAD_POS_STRLEN];
            logread_pos_format(ps, sizeof(ps), &rec.pos);
            errorf("record %s is not a JSON object; skipped", ps);
            status = EXIT_DAMAGE;
            rc = 0;
        }
        if (rc != 0)
            break;
    }
    if (rc < 0) {
        errorf("%s", strerror(-rc));
        status = EXIT_DAMAGE;
    }
    logread_counts(r, &counts);
    if (counts_bad(&counts, 0))
        status = EXIT_DAMAGE;
    logread_close(r);
    logread_cursor_free(&start);
    return out_finish(status);
fail:
    logread_cursor_free(&start);
    return open_error(o->data_dir, o->slot, rc);
}

/* ---- verify and stats -------------------------------------------------------------------- */

typedef struct {
    uint32_t slot;
    uint64_t segments, data_bytes, records, payload_bytes; /* data_bytes: no zero padding */
    uint64_t first_ms, last_ms; /* min and max receive time; valid if records > 0 */
    logread_counts_t counts;
} slot_stats_t;

/*
 * Bytes of a segment up to the end of its data: the file size less the zero padding at its end
 * (the space fsync mode zero-fills ahead of the data). Records end in their payload's closing
 * brace, so the last non-zero byte is the end of the last record (or of a torn one).
 */
static uint64_t segment_data_bytes(const char *data_dir, uint32_t slot,
                                   const logread_segment_info_t *seg)
{
    char dir[PATH_MAX], path[PATH_MAX + SEGMENT_NAME_SIZE + 1], name[SEGMENT_NAME_SIZE];
    uint64_t end = seg->size;
    if (seg->size <= SEGMENT_HEADER_SIZE || logread_slot_path(dir, sizeof(dir), data_dir, slot))
        return seg->size;
    segment_name(name, sizeof(name), seg->seq);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return seg->size;
    if (segment_nonzero_end(fd, SEGMENT_HEADER_SIZE, seg->size, &end) != 0)
        end = seg->size;
    close(fd);
    return end;
}

/* Read one slot (or all, merged, if slot is 0) to the end, counting. */
static int scan_slot(const ctl_opts_t *o, uint32_t slot, ctl_report_t *rep, slot_stats_t *st)
{
    logread_opts_t ro = {slot, NULL, 0, rep ? on_issue : NULL, rep};
    logread_segment_info_t *segs;
    logread_record_t rec;
    logread_t *r;
    size_t n;
    int rc;

    memset(st, 0, sizeof(*st));
    st->slot = slot;
    if ((rc = logread_list_segments(o->data_dir, slot, &segs, &n)) != 0)
        return rc;
    st->segments = n;
    for (size_t i = 0; i < n; i++)
        st->data_bytes += segment_data_bytes(o->data_dir, slot, &segs[i]);
    free(segs);
    if ((rc = logread_open(&r, o->data_dir, &ro)) != 0)
        return rc;
    while ((rc = logread_next(r, &rec)) == 1) {
        if (st->records == 0 || rec.time_ms < st->first_ms)
            st->first_ms = rec.time_ms;
        if (st->records == 0 || rec.time_ms > st->last_ms)
            st->last_ms = rec.time_ms;
        st->records++;
        st->payload_bytes += rec.len;
    }
    logread_counts(r, &st->counts);
    logread_close(r);
    return rc;
}

static void add_stats(slot_stats_t *total, const slot_stats_t *s)
{
    if (s->records > 0) {
        if (total->records == 0 || s->first_ms < total->first_ms)
            total->first_ms = s->first_ms;
        if (total->records == 0 || s->last_ms > total->last_ms)
            total->last_ms = s->last_ms;
    }
    total->segments += s->segments;
    total->data_bytes += s->data_bytes;
    total->records += s->records;
    total->payload_bytes += s->payload_bytes;
    total->counts.damage += s->counts.damage;
    total->counts.chain += s->counts.chain;
    total->counts.torn_tails += s->counts.torn_tails;
    total->counts.notices += s->counts.notices;
    total->counts.errors += s->counts.errors;
}

/* The slots a command looks at: --worker, or every slot directory. */
static int command_slots(const ctl_opts_t *o, uint32_t **slots, size_t *n)
{
    struct stat st;
    if (stat(o->data_dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (o->slot == 0)
        return logread_list_slots(o->data_dir, slots, n);
    char dir[PATH_MAX];
    int rc = logread_slot_path(dir, sizeof(dir), o->data_dir, o->slot);
    if (rc != 0)
        return rc;
    if (stat(dir, &st) != 0)
        return -ENOENT;
    *slots = malloc(sizeof(**slots));
    if (*slots == NULL)
        return -ENOMEM;
    (*slots)[0] = o->slot;
    *n = 1;
    return 0;
}

static int cmd_verify(ctl_opts_t *o)
{
    ctl_report_t rep = {.to = stdout};
    slot_stats_t total = {0}, st;
    uint32_t *slots;
    size_t n;
    int rc, bad = 0;

    if ((rc = command_slots(o, &slots, &n)) != 0)
        return open_error(o->data_dir, o->slot, rc);
    for (size_t i = 0; i < n; i++) {
        if ((rc = scan_slot(o, slots[i], &rep, &st)) != 0) {
            out_printf("ERROR: w%03" PRIu32 ": %s\n", slots[i], strerror(-rc));
            bad = 1;
            continue;
        }
        int slot_bad = counts_bad(&st.counts, o->strict);
        bad |= slot_bad;
        out_printf("w%03" PRIu32 ": %s: segments %" PRIu64 ", records %" PRIu64 ", bytes %" PRIu64
                   "%s\n",
                   slots[i], slot_bad ? "DAMAGED" : "ok", st.segments, st.records, st.data_bytes,
                   st.counts.torn_tails ? " (torn tail)" : "");
        add_stats(&total, &st);
    }
    free(slots);
    out_printf("total: slots %zu, segments %" PRIu64 ", records %" PRIu64 ", bytes %" PRIu64
               "; damaged %" PRIu64 ", chain breaks %" PRIu64 ", torn tails %" PRIu64
               ", read errors %" PRIu64 "\n",
               n, total.segments, total.records, total.data_bytes, total.counts.damage,
               total.counts.chain, total.counts.torn_tails, total.counts.errors);
    if (bad)
        out_printf("verify: DAMAGE FOUND%s\n",
                   total.counts.damage ? " (`trackctl repair` moves damaged segments aside)" : "");
    else
        out_printf("verify: ok\n");
    return out_finish(bad ? EXIT_DAMAGE : EXIT_OK);
}

/* ISO-8601 UTC with milliseconds. */
static void fmt_time(char *buf, size_t len, uint64_t ms)
{
    struct tm tm;
    time_t t = (time_t)(ms / 1000);
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void print_stats_json(const slot_stats_t *s, int is_total)
{
    if (is_total)
        out_printf("\"total\":{");
    else
        out_printf("{\"slot\":%" PRIu32 ",", s->slot);
    out_printf("\"segments\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"records\":%" PRIu64
               ",\"payload_bytes\":%" PRIu64 ",",
               s->segments, s->data_bytes, s->records, s->payload_bytes);
    if (s->records > 0) {
        char a[80], b[80];
        fmt_time(a, sizeof(a), s->first_ms);
        fmt_time(b, sizeof(b), s->last_ms);
        out_printf("\"first_received_ms\":%" PRIu64 ",\"last_received_ms\":%" PRIu64
                   ",\"first_received\":\"%s\",\"last_received\":\"%s\",",
                   s->first_ms, s->last_ms, a, b);
    } else {
        out_printf("\"first_received_ms\":null,\"last_received_ms\":null,"
                   "\"first_received\":null,\"last_received\":null,");
    }
    out_printf("\"damaged\":%" PRIu64 ",\"torn_tails\":%" PRIu64 "}", s->counts.damage,
               s->counts.torn_tails);
}

static void print_stats_row(const char *name, const slot_stats_t *s)
{
    char a[80] = "-", b[80] = "-";
    if (s->records > 0) {
        fmt_time(a, sizeof(a), s->first_ms);
        fmt_time(b, sizeof(b), s->last_ms);
    }
    out_printf("%-6s %9" PRIu64 " %12" PRIu64 " %14" PRIu64 " %14" PRIu64 "  %-24s  %s\n", name,
               s->segments, s->records, s->payload_bytes, s->data_bytes, a, b);
}

static int cmd_stats(ctl_opts_t *o)
{
    ctl_report_t rep = {.quiet = 1, .to = stderr, .prefix = 1};
    slot_stats_t total = {0}, st;
    uint32_t *slots;
    size_t n;
    int rc, bad = 0;

    if ((rc = command_slots(o, &slots, &n)) != 0)
        return open_error(o->data_dir, o->slot, rc);
    if (o->json)
        out_printf("{\"slots\":[");
    else
        out_printf("%-6s %9s %12s %14s %14s  %-24s  %s\n", "slot", "segments", "records",
                   "payload_bytes", "bytes", "first_received", "last_received");
    for (size_t i = 0; i < n; i++) {
        if ((rc = scan_slot(o, slots[i], &rep, &st)) != 0) {
            errorf("w%03" PRIu32 ": %s", slots[i], strerror(-rc));
            bad = 1;
            continue;
        }
        bad |= counts_bad(&st.counts, 0);
        add_stats(&total, &st);
        if (o->json) {
            if (i > 0)
                out_printf(",");
            print_stats_json(&st, 0);
        } else {
            char name[16];
            snprintf(name, sizeof(name), "w%03" PRIu32, slots[i]);
            print_stats_row(name, &st);
        }
    }
    free(slots);
    if (o->json) {
        out_printf("],");
        print_stats_json(&total, 1);
        out_printf("}\n");
    } else {
        print_stats_row("total", &total);
    }
    if (bad)
        errorf("damage found: see `trackctl verify`");
    return out_finish(bad ? EXIT_DAMAGE : EXIT_OK);
}

/* ---- repair ------------------------------------------------------------------------------ */

/* Rename `dir/name` to the first free "name.damaged[.N]"; the new name in `aside`. */
static int move_aside(const char *dir, const char *name, char *aside, size_t asidelen)
{
    char from[PATH_MAX], to[PATH_MAX];
    if ((size_t)snprintf(from, sizeof(from), "%s/%s", dir, name) >= sizeof(from))
        return -ENAMETOOLONG;
    for (int i = 0; i < CTL_ASIDE_TRIES; i++) {
        int n = i == 0 ? snprintf(aside, asidelen, "%s%s", name, LOGREAD_DAMAGED_SUFFIX)
                       : snprintf(aside, asidelen, "%s%s.%d", name, LOGREAD_DAMAGED_SUFFIX, i);
        if ((size_t)n >= asidelen ||
            (size_t)snprintf(to, sizeof(to), "%s/%s", dir, aside) >= sizeof(to))
            return -ENAMETOOLONG;
        /* Never replace an earlier .damaged file: they are kept, whatever happens. */
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/*
 * 1 if some process holds a flock on `path`, 0 if not, or a negative errno. Read from /proc/locks
 * so that a dry run never takes the lock itself: a writer starting at that moment would find its
 * slot busy and move to another one.
 */
static int lock_held(const char *path)
{
    char line[256];
    struct stat st;
    int held = 0;

    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL)
        return -errno;
    while (!held && fgets(line, sizeof(line), f) != NULL) {
        unsigned maj, min;
        unsigned long ino;
        /* "1: FLOCK  ADVISORY  WRITE 1234 08:02:131090 0 EOF"; waiters ("1: -> ...") differ. */
        if (strstr(line, " FLOCK ") == NULL || strstr(line, "->") != NULL)
            continue;
        if (sscanf(line, "%*d: %*s %*s %*s %*d %x:%x:%lu", &maj, &min, &ino) == 3)
            held = maj == major(st.st_dev) && min == minor(st.st_dev) && ino == st.st_ino;
    }
    fclose(f);
    return held;
}

/*
 * Take the slot's writer lock without waiting. Returns the lock fd, -EWOULDBLOCK if a running
 * writer holds it, or another negative errno. A missing lock file is created, owned like the
 * directory, so a writer running as another user can still open it.
 */
static int lock_slot(const char *path, const char *dir)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0640);
        if (fd >= 0 && stat(dir, &st) == 0 && fchown(fd, st.st_uid, st.st_gid) != 0) {
            /* Not root: the file is ours, as the directory must be for us to create it. */
        }
    }
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* Repair one slot. Returns 0 if nothing is left to do there, 1 if damage remains. */
static int repair_slot(const ctl_opts_t *o, uint32_t slot)
{
    ctl_report_t rep = {.to = stdout, .collect = 1};
    char dir[PATH_MAX], lock[PATH_MAX + 16], name[64], aside[128];
    slot_stats_t st;
    int rc, lockfd = -1, left = 0;

    logread_slot_path(dir, sizeof(dir), o->data_dir, slot);
    snprintf(lock, sizeof(lock), "%s/%s", dir, CTL_LOCK_NAME);
    if ((rc = scan_slot(o, slot, &rep, &st)) != 0 || rep.oom) {
        out_printf("ERROR: %s: %s\n", dir, strerror(rc ? -rc : ENOMEM));
        free(rep.damaged);
        return 1;
    }
    if (st.counts.torn_tails)
        out_printf("w%03" PRIu32 ": torn tail left alone: trackd truncates it at its next start\n",
                   slot);
    if (st.counts.chain || st.counts.errors) {
        out_printf("w%03" PRIu32 ": chain breaks or read errors above are nothing repair can "
                   "fix by moving files; look at them by hand\n",
                   slot);
        left = 1;
    }
    if (rep.ndamaged == 0) {
        if (!left && !st.counts.torn_tails)
            out_printf("w%03" PRIu32 ": ok, nothing to repair\n", slot);
        free(rep.damaged);
        return left;
    }
    if (o->yes)
        rc = lock_slot(lock, dir);
    else
        rc = lock_held(lock) == 1 ? -EWOULDBLOCK : 0;
    if (rc == -EWOULDBLOCK) {
        out_printf("w%03" PRIu32 ": REFUSED: a running trackd holds %s; stop it, then run "
                   "repair again (nothing was changed in this slot)\n",
                   slot, lock);
        free(rep.damaged);
        return 1;
    }
    if (rc < 0) {
        out_printf("w%03" PRIu32 ": cannot lock %s: %s\n", slot, lock, strerror(-rc));
        free(rep.damaged);
        return 1;
    }
    if (o->yes) {
        /* Look again under the lock: only what is damaged now is moved. */
        ctl_report_t silent = {.collect = 1};
        lockfd = rc;
        if ((rc = scan_slot(o, slot, &silent, &st)) != 0 || silent.oom) {
            out_printf("ERROR: %s: %s\n", dir, strerror(rc ? -rc : ENOMEM));
            left = 1;
            silent.ndamaged = 0;
        }
        free(rep.damaged);
        rep = silent;
    }
    for (size_t i = 0; i < rep.ndamaged; i++) {
        segment_name(name, sizeof(name), rep.damaged[i]);
        if (!o->yes) {
            out_printf("would move %s/%s to %s/%s%s\n", dir, name, dir, name,
                       LOGREAD_DAMAGED_SUFFIX);
            left = 1;
            continue;
        }
        if ((rc = move_aside(dir, name, aside, sizeof(aside))) != 0) {
            out_printf("ERROR: cannot move %s/%s aside: %s\n", dir, name, strerror(-rc));
            left = 1;
            continue;
        }
        out_printf("moved %s/%s to %s/%s\n", dir, name, dir, aside);
    }
    if (o->yes && rep.ndamaged > 0 && (rc = fsync_dir(dir)) != 0) {
        out_printf("ERROR: fsync %s: %s\n", dir, strerror(-rc));
        left = 1;
    }
    if (lockfd >= 0)
        close(lockfd);
    free(rep.damaged);
    return left;
}

static int cmd_repair(ctl_opts_t *o)
{
    uint32_t *slots;
    size_t n;
    int rc, left = 0;

    if ((rc = command_slots(o, &slots, &n)) != 0)
        return open_error(o->data_dir, o->slot, rc);
    for (size_t i = 0; i < n; i++)
        left |= repair_slot(o, slots[i]);
    free(slots);
    if (left && !o->yes)
        out_printf("repair: dry run, nothing changed; run `trackctl repair --yes` to do it\n");
    else if (left)
        out_printf("repair: damage remains (see above)\n");
    else
        out_printf("repair: ok\n");
    return out_finish(left ? EXIT_DAMAGE : EXIT_OK);
}

/* ---- main -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(ctl_opts_t *o);
    } cmds[] = {
        {"cat", cmd_cat},     {"tail", cmd_tail},     {"verify", cmd_verify},
        {"stats", cmd_stats}, {"repair", cmd_repair},
    };
    ctl_opts_t o;
    int status;

    /* A reader that goes away is a normal end (EPIPE from write), not a signal death. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        const char *topic = argc > 2 ? argv[2] : NULL;
        for (size_t i = 0; topic != NULL && i < sizeof(cmds) / sizeof(cmds[0]); i++)
            if (strcmp(topic, cmds[i].name) == 0) {
                print_usage(topic);
                return EXIT_OK;
            }
        if (topic != NULL) {
            fprintf(stderr, "trackctl: no command \"%s\"\n", topic);
            return EXIT_USAGE;
        }
        print_usage(NULL);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmd, cmds[i].name) != 0)
            continue;
        memset(&o, 0, sizeof(o));
        status = parse_opts(cmd, argc - 1, argv + 1, &o);
        if (status < 0) {
            out.cap = CTL_OUT_BUF;
            out.buf = malloc(out.cap);
            if (out.buf == NULL) {
                errorf("out of memory");
                status = EXIT_DAMAGE;
            } else {
                status = cmds[i].fn(&o);
            }
            free(out.buf);
        }
        logread_cursor_free(&o.after);
        return status;
    }
    fprintf(stderr, "trackctl: unknown command \"%s\"\n%s", cmd, usage_main);
    return EXIT_USAGE;
}

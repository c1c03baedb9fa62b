/*
 * trackbench: trackd's own load-test harness (docs/trackbench.md). This file is the command
 * line: it parses options, raises the open-file limit, and runs the load (bench_client.c) in
 * this process or, with --procs N, in N forked processes, each with its own libuv loop, that
 * stream their per-second and final counters back through a pipe to be merged and reported
 * (bench_report.c). `trackbench verify` checks a ledger against trackd's log (bench_verify.c).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "trackd/bench_client.h"
#include "trackd/bench_report.h"
#include "trackd/bench_verify.h"

#define TB_MAX_PROCS 64
#define TB_DEFAULT_TARGET "http://127.0.0.1:8000"
#define TB_DEFAULT_CONNECTIONS 50
#define TB_DEFAULT_DURATION_S 10.0
#define TB_DEFAULT_TIMEOUT_MS 5000
#define TB_DEFAULT_BATCH 50
#define TB_DEFAULT_EVENT_BYTES 300
#define TB_DEFAULT_TOKEN "trackbench"
/* Loopback source addresses connections are spread over (see bench_client.c, bind_source). */
#define TB_DEFAULT_SOURCE_ADDRS 16
#define TB_MAX_SOURCE_ADDRS 254
/* Per-second records are kept for this many seconds while waiting for every process's. */
#define TB_TICK_RING 8

enum { MSG_PROGRESS = 1, MSG_FINAL = 2 };

/* What a child process sends its parent: fixed size, so a read knows where a message ends. */
typedef struct {
    uint32_t type;
    uint32_t tick;
    int32_t rc;
    bench_stats_t stats;
} tb_msg_t;

static volatile sig_atomic_t tb_signals;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: trackbench [options]          load trackd and report\n"
            "       trackbench verify --ledger FILE --data-dir DIR [--trackctl PATH] [--json]\n"
            "                                       check every acknowledged id is in the log\n"
            "\n"
            "Load:\n"
            "  --target URL          http://HOST:PORT[/PREFIX], repeatable, round-robin "
            "(" TB_DEFAULT_TARGET ")\n"
            "  -c, --connections N   concurrent connections in all, up to 20000 per process (%d)\n"
            "  --procs N             processes sharing the load, each with its own loop (1)\n"
            "  --rate R              open loop: R requests/s in all, latency from the intended\n"
            "                        send time; without it, closed loop\n"
            "  -d, --duration S      measured seconds (%g; 0 with --requests: until done)\n"
            "  -n, --requests N      stop after N requests in all (warmup included)\n"
            "  --warmup S            seconds of load before measuring (0)\n"
            "  --timeout-ms MS       per connect and per request, counted as errors (%d)\n"
            "  --no-keepalive        a new connection for every request\n"
            "  --ramp FROM:TO:S      connections grow from FROM to TO over S seconds\n"
            "  --source-addrs N      to a 127.x target, connect from 127.0.0.1..N in turn (%d)\n"
            "Payload:\n"
            "  --mix LIST            endpoint weights, e.g. track=90,engage=10 (track, engage,\n"
            "                        groups, import) (track=1)\n"
            "  --shape LIST          payload shape weights: get, form-b64, form-b64-raw,\n"
            "                        form-json, json, gzip, beacon (form-b64=1)\n"
            "  --batch N             events per request, 1..%d (%d)\n"
            "  --event-bytes N       approximate bytes of one event's JSON (%d)\n"
            "  --token T             project token (" TB_DEFAULT_TOKEN ")\n"
            "  --import-secret S     API secret for /import (Basic auth)\n"
            "  --query Q             extra query flags for every request, e.g. verbose=1\n"
            "Output:\n"
            "  --ledger FILE         write the $insert_id of every acknowledged event to FILE\n"
            "  --json                one JSON object with everything on stdout\n"
            "  -q, --quiet           no progress line each second on stderr\n"
            "  -h, --help\n",
            TB_DEFAULT_CONNECTIONS, TB_DEFAULT_DURATION_S, TB_DEFAULT_TIMEOUT_MS,
            TB_DEFAULT_SOURCE_ADDRS, BENCH_MAX_BATCH, TB_DEFAULT_BATCH, TB_DEFAULT_EVENT_BYTES);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e9)
        return -EINVAL;
    *out = v;
    return 0;
}

/* "track=90,engage=10" or "track,engage" into weights[], by a name parser. */
static int parse_weights(const char *s, unsigned *w, int n, int (*parse)(const char *, size_t))
{
    memset(w, 0, (size_t)n * sizeof(*w));
    while (*s) {
        size_t len = strcspn(s, ",");
        size_t nlen = strcspn(s, "=,");
        int idx = parse(s, nlen);
        if (idx < 0)
            return -EINVAL;
        uint64_t v = 1;
        if (nlen < len) {
            char num[16];
            if (len - nlen - 1 == 0 || len - nlen - 1 >= sizeof(num))
                return -EINVAL;
            memcpy(num, s + nlen + 1, len - nlen - 1);
            num[len - nlen - 1] = '\0';
            if (parse_u64(num, 1000000, &v) != 0)
                return -EINVAL;
        }
        w[idx] += (unsigned)v;
        s += len;
        if (*s == ',')
            s++;
    }
    for (int i = 0; i < n; i++)
        if (w[i])
            return 0;
    return -EINVAL;
}

/* "http://HOST:PORT[/PREFIX]": fill the target and resolve HOST now, once. */
static int parse_target(const char *url, bench_target_t *t)
{
    char host[256], port[16] = "80";
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0) {
        fprintf(stderr, "trackbench: %s: only http:// targets\n", url);
        return -EINVAL;
    }
    p += 7;
    size_t hl;
    const char *after;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close == NULL)
            return -EINVAL;
        hl = (size_t)(close - p - 1);
        if (hl == 0 || hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, p + 1, hl);
        after = close + 1;
    } else {
        hl = strcspn(p, ":/");
        if (hl == 0 || hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, p, hl);
        after = p + hl;
    }
    host[hl] = '\0';
    if (*after == ':') {
        size_t pl = strcspn(after + 1, "/");
        if (pl == 0 || pl >= sizeof(port))
            return -EINVAL;
        memcpy(port, after + 1, pl);
        port[pl] = '\0';
        after += 1 + pl;
    }
    snprintf(t->url, sizeof(t->url), "%s", url);
    snprintf(t->hostport, sizeof(t->hostport), "%.*s", (int)(after - p), p);
    snprintf(t->prefix, sizeof(t->prefix), "%s", after);
    size_t pl = strlen(t->prefix);
    while (pl > 0 && t->prefix[pl - 1] == '/')
        t->prefix[--pl] = '\0';

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "trackbench: %s: %s\n", url, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int parse_ramp(const char *s, bench_opts_t *o)
{
    unsigned long long from, to;
    double secs;
    int used = 0;
    if (sscanf(s, "%llu:%llu:%lf%n", &from, &to, &secs, &used) != 3 || s[used] != '\0' ||
        from > to || to == 0 || !(secs > 0) || secs > 1e6)
        return -EINVAL;
    o->ramp_from = (size_t)from;
    o->ramp_to = (size_t)to;
    o->ramp_s = secs;
    o->connections = (size_t)to;
    return 0;
}

static int bad(const char *opt, const char *val)
{
    fprintf(stderr, "trackbench: bad value for %s: '%s'\n", opt, val);
    return -EINVAL;
}

/* Fill `o` from argv. Returns 0, 1 for --help, or -EINVAL (message printed). */
static int parse_args(int argc, char **argv, bench_opts_t *o, int *json, int *quiet)
{
    enum {
        O_TARGET = 256,
        O_PROCS,
        O_RATE,
        O_WARMUP,
        O_TIMEOUT,
        O_NOKA,
        O_MIX,
        O_SHAPE,
        O_BATCH,
        O_EVBYTES,
        O_TOKEN,
        O_SECRET,
        O_QUERY,
        O_LEDGER,
        O_RAMP,
        O_JSON,
        O_SRC,
    };
    static const struct option longopts[] = {
        {"target", required_argument, NULL, O_TARGET},
        {"connections", required_argument, NULL, 'c'},
        {"procs", required_argument, NULL, O_PROCS},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"no-keepalive", no_argument, NULL, O_NOKA},
        {"mix", required_argument, NULL, O_MIX},
        {"shape", required_argument, NULL, O_SHAPE},
        {"batch", required_argument, NULL, O_BATCH},
        {"event-bytes", required_argument, NULL, O_EVBYTES},
        {"token", required_argument, NULL, O_TOKEN},
        {"import-secret", required_argument, NULL, O_SECRET},
        {"query", required_argument, NULL, O_QUERY},
        {"ledger", required_argument, NULL, O_LEDGER},
        {"ramp", required_argument, NULL, O_RAMP},
        {"source-addrs", required_argument, NULL, O_SRC},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int duration_set = 0, conns_set = 0, opt;
    uint64_t v;

    memset(o, 0, sizeof(*o));
    o->connections = TB_DEFAULT_CONNECTIONS;
    o->procs = 1;
    o->duration_s = TB_DEFAULT_DURATION_S;
    o->timeout_ms = TB_DEFAULT_TIMEOUT_MS;
    o->keepalive = 1;
    o->mix[BENCH_EP_TRACK] = 1;
    o->shapes[BENCH_SHAPE_FORM_B64] = 1;
    o->batch = TB_DEFAULT_BATCH;
    o->event_bytes = TB_DEFAULT_EVENT_BYTES;
    snprintf(o->token, sizeof(o->token), "%s", TB_DEFAULT_TOKEN);
    o->source_addrs = TB_DEFAULT_SOURCE_ADDRS;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:d:n:qh", longopts, NULL)) != -1) {
        switch (opt) {
        case O_TARGET:
            if (o->ntargets == BENCH_MAX_TARGETS)
                return bad("--target", "(too many)");
            if (parse_target(optarg, &o->targets[o->ntargets]) != 0)
                return bad("--target", optarg);
            o->ntargets++;
            break;
        case 'c':
            if (parse_u64(optarg, 1000000, &v) != 0 || v == 0)
                return bad("--connections", optarg);
            o->connections = (size_t)v;
            conns_set = 1;
            break;
        case O_PROCS:
            if (parse_u64(optarg, TB_MAX_PROCS, &v) != 0 || v == 0)
                return bad("--procs", optarg);
            o->procs = (int)v;
            break;
        case O_RATE:
            if (parse_double(optarg, &o->rate) != 0 || o->rate <= 0)
                return bad("--rate", optarg);
            break;
        case 'd':
            if (parse_double(optarg, &o->duration_s) != 0)
                return bad("--duration", optarg);
            duration_set = 1;
            break;
        case 'n':
            if (parse_u64(optarg, UINT64_MAX / 2, &o->requests) != 0 || o->requests == 0)
                return bad("--requests", optarg);
            break;
        case O_WARMUP:
            if (parse_double(optarg, &o->warmup_s) != 0)
                return bad("--warmup", optarg);
            break;
        case O_TIMEOUT:
            if (parse_u64(optarg, 3600000, &v) != 0 || v == 0)
                return bad("--timeout-ms", optarg);
            o->timeout_ms = (int)v;
            break;
        case O_NOKA:
            o->keepalive = 0;
            break;
        case O_MIX:
            if (parse_weights(optarg, o->mix, BENCH_EP_COUNT, bench_endpoint_parse) != 0)
                return bad("--mix", optarg);
            break;
        case O_SHAPE:
            if (parse_weights(optarg, o->shapes, BENCH_SHAPE_COUNT, bench_shape_parse) != 0)
                return bad("--shape", optarg);
            break;
        case O_BATCH:
            if (parse_u64(optarg, BENCH_MAX_BATCH, &v) != 0 || v == 0)
                return bad("--batch", optarg);
            o->batch = (size_t)v;
            break;
        case O_EVBYTES:
            if (parse_u64(optarg, BENCH_MAX_EVENT_BYTES, &v) != 0)
                return bad("--event-bytes", optarg);
            o->event_bytes = (size_t)v;
            break;
        case O_TOKEN:
            if (strlen(optarg) >= sizeof(o->token))
                return bad("--token", optarg);
            snprintf(o->token, sizeof(o->token), "%s", optarg);
            break;
        case O_SECRET:
            if (strlen(optarg) >= sizeof(o->import_secret))
                return bad("--import-secret", "(too long)");
            snprintf(o->import_secret, sizeof(o->import_secret), "%s", optarg);
            break;
        case O_QUERY:
            if (strlen(optarg) >= sizeof(o->query) || strpbrk(optarg, " \r\n"))
                return bad("--query", optarg);
            snprintf(o->query, sizeof(o->query), "%s", optarg[0] == '?' ? optarg + 1 : optarg);
            break;
        case O_LEDGER:
            if (strlen(optarg) >= sizeof(o->ledger) || optarg[0] == '\0')
                return bad("--ledger", optarg);
            snprintf(o->ledger, sizeof(o->ledger), "%s", optarg);
            break;
        case O_RAMP:
            if (parse_ramp(optarg, o) != 0)
                return bad("--ramp", optarg);
            break;
        case O_SRC:
            if (parse_u64(optarg, TB_MAX_SOURCE_ADDRS, &v) != 0 || v == 0)
                return bad("--source-addrs", optarg);
            o->source_addrs = (unsigned)v;
            break;
        case O_JSON:
            *json = 1;
            break;
        case 'q':
            *quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "trackbench: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if (o->ntargets == 0 && parse_target(TB_DEFAULT_TARGET, &o->targets[o->ntargets++]) != 0)
        return -EINVAL;
    if (o->requests && !duration_set)
        o->duration_s = 0;
    if (o->duration_s <= 0 && o->requests == 0)
        return bad("--duration", "0 (give --requests, or a duration)");
    if (o->ramp_s > 0 && conns_set && o->connections != o->ramp_to)
        return bad("--connections", "(with --ramp, the connections are TO)");
    if (o->connections < (size_t)o->procs)
        return bad("--procs", "(more processes than connections)");
    o->progress = !*quiet;
    return 0;
}

/* The soft limit on open files goes up to the hard one: 20,000 connections need as many fds. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void print_progress(const bench_stats_t *s, unsigned tick, void *arg)
{
    bench_report_progress(stderr, s, tick);
}

/* Child side: send each second's counters to the parent. */
static void send_progress(const bench_stats_t *s, unsigned tick, void *arg)
{
    int fd = *(int *)arg;
    static tb_msg_t m; /* large; one per process */
    m.type = MSG_PROGRESS;
    m.tick = tick;
    m.rc = 0;
    m.stats = *s;
    const char *p = (const char *)&m;
    size_t off = 0;
    while (off < sizeof(m)) {
        ssize_t n = write(fd, p + off, sizeof(m) - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* parent gone: the final message will fail too, and the child exits */
        off += (size_t)n;
    }
}

static void on_parent_signal(int sig)
{
    tb_signals++;
}

/* Read exactly one message from `fd` (blocking). 1 = got one, 0 = EOF, <0 = error. */
static int read_msg(int fd, tb_msg_t *m)
{
    char *p = (char *)m;
    size_t off = 0;
    while (off < sizeof(*m)) {
        ssize_t n = read(fd, p + off, sizeof(*m) - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return off == 0 ? 0 : -EPIPE;
        off += (size_t)n;
    }
    return 1;
}

typedef struct {
    unsigned tick;
    int seen;
    bench_stats_t stats;
} tb_tick_t;

/* Fork o->procs children, merge what they report into `total`. Returns 0 or -errno. */
static int run_procs(const bench_opts_t *o, bench_stats_t *total)
{
    int nprocs = 0, rc = 0, live = 0;
    pid_t pids[TB_MAX_PROCS];
    struct pollfd pfd[TB_MAX_PROCS];
    int done[TB_MAX_PROCS] = {0};
    tb_tick_t *ring = calloc(TB_TICK_RING, sizeof(*ring));
    tb_msg_t *m = malloc(sizeof(*m));
    if (ring == NULL || m == NULL) {
        free(ring);
        free(m);
        return -ENOMEM;
    }

    /* Children leave the terminal's process group: ^C reaches the parent, which forwards it. */
    struct sigaction sa = {.sa_handler = on_parent_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fflush(NULL);
    for (int i = 0; i < o->procs; i++) {
        int fds[2];
        if (pipe(fds) != 0) {
            rc = -errno;
            break;
        }
        pid_t pid = fork();
        if (pid < 0) {
            rc = -errno;
            close(fds[0]);
            close(fds[1]);
            break;
        }
        if (pid == 0) {
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            for (int j = 0; j < i; j++)
                close(pfd[j].fd);
            close(fds[0]);
            int wfd = fds[1];
            bench_stats_init(&m->stats);
            int crc = bench_run(o, i, send_progress, &wfd, &m->stats);
            m->type = MSG_FINAL;
            m->tick = 0;
            m->rc = crc;
            const char *p = (const char *)m;
            size_t off = 0;
            while (off < sizeof(*m)) {
                ssize_t n = write(wfd, p + off, sizeof(*m) - off);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    _exit(1);
                off += (size_t)n;
            }
            _exit(crc ? 1 : 0);
        }
        close(fds[1]);
        pids[i] = pid;
        pfd[i].fd = fds[0];
        pfd[i].events = POLLIN;
        live++;
        nprocs++;
    }
    if (rc != 0)
        for (int i = 0; i < nprocs; i++)
            kill(pids[i], SIGTERM);

    int forwarded = 0;
    while (live > 0) {
        if (tb_signals > forwarded) {
            for (int i = 0; i < nprocs; i++)
                if (!done[i])
                    kill(pids[i], SIGINT);
            forwarded = tb_signals;
        }
        int n = poll(pfd, (nfds_t)nprocs, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        for (int i = 0; i < nprocs; i++) {
            if (done[i] || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int r = read_msg(pfd[i].fd, m);
            if (r <= 0) {
                fprintf(stderr, "trackbench: process %d ended without a report\n", i);
                rc = rc ? rc : -EPIPE;
                done[i] = 1;
                close(pfd[i].fd);
                pfd[i].fd = -1;
                live--;
                continue;
            }
            if (m->type == MSG_FINAL) {
                if (m->rc != 0 && rc == 0)
                    rc = m->rc;
                bench_stats_merge(total, &m->stats);
                done[i] = 1;
                close(pfd[i].fd);
                pfd[i].fd = -1;
                live--;
                continue;
            }
            tb_tick_t *t = &ring[m->tick % TB_TICK_RING];
            if (t->tick != m->tick) {
                if (t->seen)
                    bench_report_progress(stderr, &t->stats, t->tick);
                t->tick = m->tick;
                t->seen = 0;
                bench_stats_init(&t->stats);
            }
            bench_stats_merge(&t->stats, &m->stats);
            /* Each process measured its own second; the rate is per second of any of them. */
            if (++t->seen == o->procs) {
                bench_report_progress(stderr, &t->stats, t->tick);
                t->seen = 0;
                t->tick = 0;
            }
        }
    }
    for (int i = 0; i < nprocs; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    free(ring);
    free(m);
    return rc;
}

static int main_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ledger", required_argument, NULL, 'l'},   {"data-dir", required_argument, NULL, 'D'},
        {"trackctl", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *ledger = NULL, *dir = NULL, *trackctl = NULL;
    int json = 0, opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            ledger = optarg;
            break;
        case 'D':
            dir = optarg;
            break;
        case 't':
            trackctl = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (ledger == NULL || dir == NULL || optind < argc) {
        fprintf(stderr, "trackbench verify: --ledger FILE and --data-dir DIR are required\n");
        return 2;
    }
    bench_verify_t *v = malloc(sizeof(*v));
    if (v == NULL)
        return 2;
    int rc = bench_verify_run(ledger, dir, trackctl, v);
    if (rc != 0) {
        free(v);
        return 2;
    }
    if (json) {
        json_t *miss = json_array(), *dup = json_array();
        for (size_t i = 0; miss && i < v->nshow_missing; i++)
            json_array_append_new(miss, json_string(v->show_missing[i]));
        for (size_t i = 0; dup && i < v->nshow_duplicated; i++)
            json_array_append_new(dup, json_string(v->show_duplicated[i]));
        json_t *o = json_pack(
            "{ss ss sI sI sI sI sI sI sI sI sI sI so so sb}", "ledger", ledger, "data_dir", dir,
            "acknowledged", (json_int_t)v->acknowledged, "found", (json_int_t)v->found, "missing",
            (json_int_t)v->missing, "duplicated", (json_int_t)v->duplicated, "unacknowledged",
            (json_int_t)v->unacknowledged, "records", (json_int_t)v->records, "without_id",
            (json_int_t)v->without_id, "bad_lines", (json_int_t)v->bad_lines, "ledger_repeats",
            (json_int_t)v->ledger_repeats, "log_damage", (json_int_t)v->log_damage, "first_missing",
            miss, "first_duplicated", dup, "ok", v->missing == 0);
        if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT) != 0) {
            json_decref(o);
            free(v);
            return 2;
        }
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("acknowledged   %" PRIu64 "\n"
               "found          %" PRIu64 "\n"
               "missing        %" PRIu64 "\n"
               "duplicated     %" PRIu64 "\n"
               "unacknowledged %" PRIu64 " (in the log, never acknowledged: in flight or failed)\n"
               "records        %" PRIu64 " (%" PRIu64 " without $insert_id, %" PRIu64
               " unreadable)\n",
               v->acknowledged, v->found, v->missing, v->duplicated, v->unacknowledged, v->records,
               v->without_id, v->bad_lines);
        if (v->log_damage)
            printf("log damage     %" PRIu64 " (damaged segments, broken chain, torn tails)\n",
                   v->log_damage);
        if (v->ledger_repeats)
            printf("ledger repeats %" PRIu64 " (the ledger lists some ids twice)\n",
                   v->ledger_repeats);
        for (size_t i = 0; i < v->nshow_missing; i++)
            printf("missing: %s\n", v->show_missing[i]);
        for (size_t i = 0; i < v->nshow_duplicated; i++)
            printf("duplicated: %s\n", v->show_duplicated[i]);
        printf("%s\n", v->missing ? "FAIL: acknowledged events are missing from the log"
                                  : "OK: every acknowledged event is in the log");
    }
    fflush(stdout);
    rc = v->missing ? 1 : 0;
    free(v);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "verify") == 0)
        return main_verify(argc - 1, argv + 1);

    bench_opts_t *o = malloc(sizeof(*o));
    bench_stats_t *total = malloc(sizeof(*total));
    int json = 0, quiet = 0, rc = 2;
    if (o == NULL || total == NULL) {
        fprintf(stderr, "trackbench: out of memory\n");
        goto out;
    }
    int pr = parse_args(argc, argv, o, &json, &quiet);
    if (pr != 0) {
        rc = pr > 0 ? 0 : 2;
        goto out;
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    if (o->ledger[0]) {
        /* Start empty: every process appends whole lines to it. */
        FILE *f = fopen(o->ledger, "w");
        if (f == NULL) {
            fprintf(stderr, "trackbench: %s: %s\n", o->ledger, strerror(errno));
            goto out;
        }
        fclose(f);
    }

    bench_stats_init(total);
    int err;
    if (o->procs == 1) {
        err = bench_run(o, 0, print_progress, NULL, total);
    } else {
        err = run_procs(o, total);
    }
    if (err != 0 && total->procs == 0) {
        rc = 1;
        goto out;
    }
    if (json) {
        json_t *j = bench_report_json(o, total, argc, argv);
        if (j == NULL || json_dumpf(j, stdout, JSON_COMPACT) != 0) {
            fprintf(stderr, "trackbench: cannot write the JSON report\n");
            json_decref(j);
            rc = 1;
            goto out;
        }
        fputc('\n', stdout);
        json_decref(j);
    } else {
        bench_report_text(stdout, o, total);
    }
    fflush(stdout);
    rc = err != 0 ? 1 : 0;
out:
    free(o);
    free(total);
    return rc;
}

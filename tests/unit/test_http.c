/*
 * The HTTP layer, driven from outside: a real worker (worker_run, its log in test_tmpdir()) runs
 * in a forked child on a loopback socket, and the tests talk raw HTTP to it over real sockets.
 * The worker must exit 0 after SIGTERM, so a crash or a sanitizer report in it fails the test.
 * The parser alone (http_parser_feed) is also driven directly for the byte-level cases.
 */
#include "test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "trackd/config.h"
#include "trackd/http.h"
#include "trackd/msg.h"
#include "trackd/segment.h"
#include "trackd/worker.h"

static config_t cfg;
static pid_t worker_pid = -1;
static int worker_port;

/* Defaults with the log in the test's directory and short timeouts. */
static void test_config(void)
{
    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof(cfg.data_dir), "%s", test_tmpdir());
    cfg.durability = CONFIG_DURABILITY_WRITE;
    cfg.log_level = CONFIG_LOG_WARN;
    cfg.header_timeout_ms = 2000;
    cfg.body_timeout_ms = 2000;
}

static void start_worker(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, pfd[2];
    char byte;

    CHECK(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(fd, 128) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &slen) == 0);
    worker_port = ntohs(sa.sin_port);
    CHECK(pipe(pfd) == 0);
    fflush(NULL);
    worker_pid = fork();
    CHECK(worker_pid >= 0);
    if (worker_pid == 0) {
        close(pfd[0]);
        msg_set_level(cfg.log_level);
        int rc = worker_run(&cfg, 1, &fd, 1, pfd[1]);
        _exit(rc);
    }
    close(fd);
    close(pfd[1]);
    CHECK(read(pfd[0], &byte, 1) == 1);
    close(pfd[0]);
}

/* SIGTERM the worker and require a clean exit (0, no sanitizer abort). */
static void stop_worker(void)
{
    int status = 0;

    CHECK(worker_pid > 0);
    kill(worker_pid, SIGTERM);
    CHECK(waitpid(worker_pid, &status, 0) == worker_pid);
    worker_pid = -1;
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

static int conn_open(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    CHECK(fd >= 0);
    sa.sin_port = htons((uint16_t)worker_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        CHECK(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

typedef struct {
    int status;
    char head[4096];
    char body[65536];
    size_t body_len;
} resp_t;

/* Per-connection read buffer, so pipelined answers read in one recv are not lost. */
static char rbuf[1 << 17];
static size_t rlen;
static int rfd = -1;

static int fill(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, timeout_ms) <= 0)
        return -ETIMEDOUT;
    n = recv(fd, rbuf + rlen, sizeof(rbuf) - rlen, 0);
    if (n <= 0)
        return n == 0 ? -EPIPE : -errno;
    rlen += (size_t)n;
    return 0;
}

/* Read one answer (Content-Length framed). Returns 0, or -EPIPE if the server closed first. */
static int read_resp(int fd, resp_t *r)
{
    char *end;
    size_t hlen, clen = 0;
    int err;

    if (rfd != fd) {
        rfd = fd;
        rlen = 0;
    }
    memset(r, 0, sizeof(*r));
    while ((end = memmem(rbuf, rlen, "\r\n\r\n", 4)) == NULL)
        if ((err = fill(fd, 5000)) != 0)
            return err;
    hlen = (size_t)(end - rbuf) + 4;
    CHECK(hlen < sizeof(r->head));
    memcpy(r->head, rbuf, hlen);
    r->head[hlen] = '\0';
    CHECK(sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1);
    char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl)
        clen = strtoul(cl + 18, NULL, 10);
    if (r->status == 100)
        clen = 0;
    while (rlen < hlen + clen)
        if ((err = fill(fd, 5000)) != 0)
            return err;
    CHECK(clen < sizeof(r->body));
    memcpy(r->body, rbuf + hlen, clen);
    r->body[clen] = '\0';
    r->body_len = clen;
    memmove(rbuf, rbuf + hlen + clen, rlen - hlen - clen);
    rlen -= hlen + clen;
    return 0;
}

/* 1 if the server closes the connection (EOF or reset) within the timeout. */
static int closed_by_server(int fd)
{
    char b[4096];
    struct pollfd p = {.fd = fd, .events = POLLIN};

    for (;;) {
        if (poll(&p, 1, 5000) <= 0)
            return 0;
        ssize_t n = recv(fd, b, sizeof(b), 0);
        if (n <= 0)
            return 1;
    }
}

static int has_header(const resp_t *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* One request on a fresh connection; returns the answer's status. */
static int request(const char *raw, resp_t *r)
{
    int fd = conn_open();
    send_str(fd, raw);
    CHECK(read_resp(fd, r) == 0);
    close(fd);
    return r->status;
}

static size_t b64(const char *in, size_t len, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < len ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? t[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* A valid event, base64, URL-safe enough for a query (no '+' or '/' escaping needed: %2B). */
static void event_b64(const char *name, char *out)
{
    char json[512], raw[1024];
    size_t n = (size_t)snprintf(json, sizeof(json),
                                "{\"event\":\"%s\",\"properties\":{\"token\":\"T\","
                                "\"distinct_id\":\"u1\",\"time\":%ld}}",
                                name, (long)time(NULL));
    size_t bl = b64(json, n, raw), o = 0;
    for (size_t i = 0; i < bl; i++) {
        if (raw[i] == '+' || raw[i] == '/' || raw[i] == '=') {
            o += (size_t)sprintf(out + o, "%%%02X", raw[i]);
        } else {
            out[o++] = raw[i];
        }
    }
    out[o] = '\0';
}

/* Count the records stored in the worker's slot (after it stopped), and how many name `ev`. */
static size_t stored(const char *ev)
{
    char dir[4096], path[8192];
    size_t count = 0;
    DIR *d;
    struct dirent *de;

    snprintf(dir, sizeof(dir), "%s/w001", test_tmpdir());
    d = opendir(dir);
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (segment_parse_name(de->d_name, &seq) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL);
        static uint8_t buf[1 << 22];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        uint64_t off = SEGMENT_HEADER_SIZE;
        segment_record_t rec;
        while (segment_record_decode(buf, len, off, &rec) == 1) {
            if (ev == NULL || memmem(rec.payload, rec.len, ev, strlen(ev)))
                count++;
            off += SEGMENT_RECORD_HEADER_SIZE + rec.len;
        }
    }
    closedir(d);
    return count;
}

TEST(http_get_track_answers_1_after_the_event_is_stored)
{
    char ev[1024], req[2048];
    resp_t r;

    test_config();
    start_worker();
    event_b64("getone", ev);
    snprintf(req, sizeof(req), "GET /track?data=%s HTTP/1.1\r\nHost: x\r\n\r\n", ev);
    CHECK_EQ_INT(request(req, &r), 200);
    CHECK_EQ_STR(r.body, "1");
    CHECK(has_header(&r, "Cache-Control: no-cache, no-store"));
    CHECK(has_header(&r, "\r\nDate: "));
    stop_worker();
    CHECK_EQ_INT(stored("getone"), 1);
}

TEST(http_healthz_answers_200_and_unknown_path_404_and_wrong_method_405)
{
    resp_t r;

    test_config();
    start_worker();
    CHECK_EQ_INT(request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK_EQ_STR(r.body, "ok");
    CHECK_EQ_INT(request("GET /nothing?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    CHECK(strstr(r.body, "\"error\":\"not found\"") != NULL);
    CHECK_EQ_INT(request("DELETE /track HTTP/1.1\r\nHost: x\r\n\r\n", &r), 405);
    CHECK(has_header(&r, "Allow: GET, POST, OPTIONS"));
    stop_worker();
}

/* Three pipelined requests with different answers, cut in two at every byte. */
TEST_T(http_pipelined_requests_split_at_every_byte_answer_in_order, 120)
{
    char ev[1024], all[8192];
    size_t len;

    test_config();
    start_worker();
    event_b64("piped", ev);
    len = (size_t)snprintf(all, sizeof(all),
                           "GET /track?verbose=1&data=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                           "POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n"
                           "data=%s"
                           "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                           ev, strlen(ev) + 5, ev);
    for (size_t cut = 0; cut <= len; cut++) {
        int fd = conn_open();
        resp_t r;
        send_all(fd, all, cut);
        if (cut % 7 == 0)
            usleep(2000); /* let the first part arrive alone */
        send_all(fd, all + cut, len - cut);
        CHECK(read_resp(fd, &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(r.body, "{\"status\":1,\"error\":null}");
        CHECK(read_resp(fd, &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(r.body, "1");
        CHECK(read_resp(fd, &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(r.body, "ok");
        close(fd);
    }
    stop_worker();
    CHECK_EQ_INT(stored("piped"), 2 * (len + 1));
}

TEST(http_keep_alive_connection_serves_many_requests)
{
    char ev[1024], req[2048];
    int fd;

    test_config();
    start_worker();
    event_b64("kept", ev);
    snprintf(req, sizeof(req), "GET /track/?data=%s HTTP/1.1\r\nHost: x\r\n\r\n", ev);
    fd = conn_open();
    for (int i = 0; i < 200; i++) {
        resp_t r;
        send_str(fd, req);
        CHECK(read_resp(fd, &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(!has_header(&r, "Connection: close"));
    }
    close(fd);
    stop_worker();
    CHECK_EQ_INT(stored("kept"), 200);
}

TEST(http_10_without_keep_alive_closes_after_the_answer)
{
    resp_t r;
    int fd;

    test_config();
    start_worker();
    fd = conn_open();
    send_str(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(has_header(&r, "Connection: close"));
    CHECK(closed_by_server(fd));
    close(fd);
    fd = conn_open();
    send_str(fd, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(read_resp(fd, &r) == 0);
    CHECK(has_header(&r, "Connection: keep-alive"));
    send_str(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    close(fd);
    stop_worker();
}

TEST(http_uri_too_long_is_414_and_closes)
{
    static char req[20000];
    resp_t r;
    int fd;

    test_config();
    cfg.max_url_bytes = 1024;
    start_worker();
    int n = sprintf(req, "GET /track?verbose=1&data=");
    memset(req + n, 'A', 2000);
    strcpy(req + n + 2000, " HTTP/1.1\r\nHost: x\r\n\r\n");
    fd = conn_open();
    send_str(fd, req);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 414);
    CHECK(strstr(r.body, "\"status\":0") != NULL); /* verbose was seen before the cut */
    CHECK(has_header(&r, "Connection: close"));
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_too_many_or_too_large_headers_are_431)
{
    static char req[40000];
    resp_t r;
    size_t n;

    test_config();
    cfg.max_headers = 10;
    cfg.max_header_bytes = 2048;
    start_worker();
    n = (size_t)sprintf(req, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 11; i++)
        n += (size_t)sprintf(req + n, "X-H%d: v\r\n", i);
    strcpy(req + n, "\r\n");
    CHECK_EQ_INT(request(req, &r), 431);
    n = (size_t)sprintf(req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'b', 3000);
    strcpy(req + n + 3000, "\r\n\r\n");
    CHECK_EQ_INT(request(req, &r), 431);
    /* Many short header lines that are each fine but too much together. */
    n = (size_t)sprintf(req, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 9; i++) {
        n += (size_t)sprintf(req + n, "X-%d: ", i);
        memset(req + n, 'c', 300);
        n += 300;
        n += (size_t)sprintf(req + n, "\r\n");
    }
    strcpy(req + n, "\r\n");
    CHECK_EQ_INT(request(req, &r), 431);
    stop_worker();
}

TEST(http_content_length_over_max_body_is_413_before_the_body_is_sent)
{
    resp_t r;
    int fd;
    char req[256];

    test_config();
    cfg.max_body_bytes = 4096;
    start_worker();
    fd = conn_open();
    snprintf(req, sizeof(req),
             "POST /track?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    send_str(fd, req);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(strstr(r.body, "request exceeds max limit of 4096 bytes") != NULL);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_chunked_body_over_max_body_is_413)
{
    resp_t r;
    int fd;
    static char chunk[8192];

    test_config();
    cfg.max_body_bytes = 4096;
    start_worker();
    fd = conn_open();
    send_str(fd, "POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        int n = sprintf(chunk, "800\r\n");
        memset(chunk + n, 'd', 0x800);
        strcpy(chunk + n + 0x800, "\r\n");
        send(fd, chunk, strlen(chunk), MSG_NOSIGNAL);
    }
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_gzip_bomb_is_413)
{
    static char zero[1 << 20], gz[1 << 16], req[1 << 17];
    z_stream zs;
    resp_t r;
    int fd;

    test_config();
    cfg.max_decoded_bytes = 64 * 1024;
    start_worker();
    memcpy(zero, "data=", 5);
    memset(zero + 5, 'A', sizeof(zero) - 5);
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = (Bytef *)zero;
    zs.avail_in = sizeof(zero);
    zs.next_out = (Bytef *)gz;
    zs.avail_out = sizeof(gz);
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    size_t gzlen = zs.total_out;
    deflateEnd(&zs);
    int n = sprintf(req,
                    "POST /track?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    gzlen);
    memcpy(req + n, gz, gzlen);
    fd = conn_open();
    send_all(fd, req, (size_t)n + gzlen);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(strstr(r.body, "65536") != NULL);
    close(fd);
    stop_worker();
}

/* Request smuggling shapes: each is refused with 400 and the connection is closed. */
TEST(http_ambiguous_body_length_is_400_and_closes)
{
    static const char *const cases[] = {
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: "
        "chunked\r\n\r\n0\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: "
        "4\r\n\r\n0\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd",
        "POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nabcd",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\001b\r\n\r\n",
        "GET /he\001lthz HTTP/1.1\r\nHost: x\r\n\r\n",
    };

    test_config();
    start_worker();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        resp_t r;
        int fd = conn_open();
        send_str(fd, cases[i]);
        send_str(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        if (read_resp(fd, &r) != 0 || r.status != 400) {
            fprintf(stderr, "  case %zu: status %d\n", i, r.status);
            CHECK(0);
        }
        CHECK(has_header(&r, "Connection: close"));
        CHECK(closed_by_server(fd)); /* the smuggled second request is never answered */
        close(fd);
    }
    stop_worker();
}

TEST(http_slow_head_is_408_and_closes)
{
    resp_t r;
    int fd;

    test_config();
    cfg.header_timeout_ms = 300;
    start_worker();
    fd = conn_open();
    send_str(fd, "GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n");
    /* Keep trickling header bytes: the head as a whole must still time out. */
    for (int i = 0; i < 3; i++) {
        usleep(150 * 1000);
        send(fd, "X-A: b\r\n", 8, MSG_NOSIGNAL);
    }
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 408);
    CHECK(strstr(r.body, "timed out") != NULL);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_slow_body_is_408_and_closes)
{
    resp_t r;
    int fd;

    test_config();
    cfg.body_timeout_ms = 300;
    start_worker();
    fd = conn_open();
    send_str(fd, "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ndata=");
    usleep(150 * 1000);
    send_str(fd, "abc"); /* gaps under the timeout are fine */
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 408);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

TEST(http_body_trickled_inside_every_gap_still_ends_at_the_whole_body_deadline)
{
    resp_t r;
    uint64_t t0;
    int fd;

    test_config();
    cfg.body_timeout_ms = 1000;
    start_worker();
    fd = conn_open();
    /* 100 bytes at one byte per 300 ms would take 30 s: each gap is fine, the total is not
     * (30 bytes are sent in 9 s at most: the answer must come long before). */
    send_str(fd, "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
    t0 = mono_ms();
    for (int i = 0; i < 30; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 300) == 1)
            break;
        if (send(fd, "d", 1, MSG_NOSIGNAL) != 1)
            break;
    }
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 408);
    /* Twice body_timeout_ms + 100 bytes at HTTP_BODY_MIN_RATE: just over two seconds. */
    CHECK(mono_ms() - t0 >= 1900 && mono_ms() - t0 < 3500);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_idle_keep_alive_connection_is_closed_after_its_timeout)
{
    resp_t r;
    int fd;

    test_config();
    cfg.keepalive_timeout_ms = 200;
    start_worker();
    fd = conn_open();
    send_str(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(read_resp(fd, &r) == 0);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_expect_100_continue_only_when_the_head_passes)
{
    char ev[1024], req[2048];
    resp_t r;
    int fd;

    test_config();
    start_worker();
    event_b64("continued", ev);
    fd = conn_open();
    snprintf(req, sizeof(req),
             "POST /track HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: "
             "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n",
             strlen(ev) + 5);
    send_str(fd, req);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 100);
    send_str(fd, "data=");
    send_str(fd, ev);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body, "1");
    close(fd);

    /* Refused at the head: the final status comes at once, no 100, and the connection closes. */
    fd = conn_open();
    send_str(fd, "POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 "Content-Length: 10\r\n\r\n");
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_client_gone_while_handler_waits_on_the_log_is_harmless)
{
    char ev[1024], req[2048];
    resp_t r;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    test_config();
    cfg.durability = CONFIG_DURABILITY_FSYNC; /* a slower log: handlers wait longer */
    start_worker();
    event_b64("abandoned", ev);
    snprintf(req, sizeof(req), "GET /track?data=%s HTTP/1.1\r\nHost: x\r\n\r\n", ev);
    for (int i = 0; i < 50; i++) {
        int fd = conn_open();
        send_str(fd, req);
        if (i % 2) /* half reset, half plain close */
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    /* The worker still serves, and the abandoned events were stored all the same. */
    CHECK_EQ_INT(request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    snprintf(req, sizeof(req), "GET /track?data=%s HTTP/1.1\r\nHost: x\r\n\r\n", ev);
    CHECK_EQ_INT(request(req, &r), 200);
    stop_worker();
    CHECK(stored("abandoned") >= 1);
}

TEST(http_connections_beyond_max_connections_get_503)
{
    resp_t r;
    int a, b, c;

    test_config();
    cfg.max_connections = 2;
    start_worker();
    a = conn_open();
    b = conn_open();
    send_str(a, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(read_resp(a, &r) == 0);
    send_str(b, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(read_resp(b, &r) == 0);
    c = conn_open();
    CHECK(read_resp(c, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(has_header(&r, "Retry-After: "));
    close(c);
    close(a);
    close(b);
    stop_worker();
}

TEST(http_graceful_stop_answers_the_request_in_flight_and_exits_0)
{
    char ev[1024], req[2048];
    resp_t r;
    int idle, busy;

    test_config();
    cfg.durability = CONFIG_DURABILITY_FSYNC;
    start_worker();
    event_b64("inflight", ev);
    idle = conn_open();
    send_str(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(read_resp(idle, &r) == 0);
    busy = conn_open();
    snprintf(req, sizeof(req), "GET /track?data=%s HTTP/1.1\r\nHost: x\r\n\r\n", ev);
    send_str(busy, req);
    usleep(1000);
    kill(worker_pid, SIGTERM);
    CHECK(read_resp(busy, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(closed_by_server(idle));
    stop_worker();
    CHECK_EQ_INT(stored("inflight"), 1);
    close(idle);
    close(busy);
}

TEST(http_full_log_queue_sheds_with_503_and_retry_after_before_the_body)
{
    char req[512];
    resp_t r;
    int fd;

    test_config();
    cfg.queue_max_bytes = 100;
    cfg.retry_after_s = 7;
    start_worker();
    fd = conn_open();
    snprintf(req, sizeof(req), "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    send_str(fd, req);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(has_header(&r, "Retry-After: 7"));
    CHECK(closed_by_server(fd));
    close(fd);
    stop_worker();
}

TEST(http_memory_budget_refuses_new_requests_with_503_and_recovers)
{
    enum { NCONN = 60 };
    int fds[NCONN], refused = 0, held = 0;
    resp_t r;

    test_config();
    cfg.memory_budget_bytes = 64 * 1024; /* about 23 requests in progress */
    cfg.retry_after_s = 4;
    start_worker();
    /* Heads that never end: each holds a request, charged to the budget at its first byte. */
    for (int i = 0; i < NCONN; i++) {
        fds[i] = conn_open();
        send_str(fds[i], "POST /track HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    }
    usleep(300 * 1000); /* well inside header_timeout_ms (2 s) */
    for (int i = 0; i < NCONN; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 1) {
            CHECK(read_resp(fds[i], &r) == 0);
            CHECK_EQ_INT(r.status, 503);
            CHECK(has_header(&r, "Retry-After: 4\r\n"));
            CHECK(closed_by_server(fds[i]));
            refused++;
        } else {
            held++;
        }
    }
    CHECK(held >= 15 && held <= 30);
    CHECK_EQ_INT(refused, NCONN - held);
    /* While the budget is full, even a small complete request is refused ... */
    CHECK_EQ_INT(request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 503);
    /* ... and once the slow clients are gone, it is served again. */
    for (int i = 0; i < NCONN; i++)
        close(fds[i]);
    usleep(200 * 1000);
    CHECK_EQ_INT(request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK_EQ_INT(request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK(strstr(r.body, "trackd_request_memory_refused_total{worker=\"1\"} ") != NULL);
    CHECK(strstr(r.body, "trackd_request_memory_refused_total{worker=\"1\"} 0\n") == NULL);
    stop_worker();
}

TEST(http_body_the_memory_budget_cannot_hold_is_503_before_it_is_sent)
{
    char req[512];
    resp_t r;
    int fd;

    test_config();
    cfg.memory_budget_bytes = 256 * 1024;
    start_worker();
    fd = conn_open();
    /* Under max_body_bytes (2 MiB), so not 413; over the budget, so not read at all. */
    snprintf(req, sizeof(req),
             "POST /track?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
    send_str(fd, req);
    CHECK(read_resp(fd, &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(has_header(&r, "Retry-After: 1\r\n"));
    CHECK(strstr(r.body, "server busy") != NULL);
    CHECK(closed_by_server(fd));
    close(fd);
    /* A body that fits is read and stored. */
    char ev[1024], body[1200], raw[2048];
    event_b64("fits", ev);
    int n = snprintf(body, sizeof(body), "data=%s", ev);
    snprintf(raw, sizeof(raw), "POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", n,
             body);
    CHECK_EQ_INT(request(raw, &r), 200);
    stop_worker();
    CHECK_EQ_INT(stored("fits"), 1);
}

TEST(http_readyz_is_200_when_the_worker_can_take_events_and_503_with_the_reason_when_not)
{
    resp_t r;

    test_config();
    start_worker();
    CHECK_EQ_INT(request("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK_EQ_STR(r.body, "ready");
    CHECK_EQ_INT(request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK(strstr(r.body, "trackd_ready{worker=\"1\"} 1\n") != NULL);
    CHECK(strstr(r.body, "trackd_worker_info{worker=\"1\",slot=\"1\"} 1\n") != NULL);
    stop_worker();

    /* A disk low-water mark no disk can meet: not ready, and it says why. */
    test_config();
    cfg.disk_low_water_bytes = UINT64_MAX;
    start_worker();
    CHECK_EQ_INT(request("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 503);
    CHECK(strncmp(r.body, "not ready: disk free ", 21) == 0);
    CHECK(has_header(&r, "Retry-After: 1\r\n"));
    /* Liveness is not readiness: /healthz stays 200. */
    CHECK_EQ_INT(request("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    stop_worker();
}

TEST(http_idle_connection_takes_less_than_1_kib)
{
    /* The whole per-connection state while idle: no read buffer, no request, no coroutine. */
    CHECK(http_conn_idle_bytes() < 1024);
}

/* ---- the parser alone ---------------------------------------------------------------- */

static void parser_config(void)
{
    config_defaults(&cfg);
    cfg.max_url_bytes = 256;
    cfg.max_header_bytes = 1024;
    cfg.max_headers = 8;
    cfg.max_body_bytes = 1024;
}

/* Feed `in` in pieces of `step` bytes; record what came out as a compact trace. */
static void parse_trace(const char *in, size_t len, size_t step, char *trace, size_t tlen)
{
    http_env_t env;
    http_parser_t p;
    size_t t = 0, off = 0;

    trace[0] = '\0';
    http_env_init(&env, &cfg);
    http_parser_init(&p, &env);
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        const char *d = in + off;
        size_t l = n, used;
        off += n;
        for (;;) {
            http_event_t ev = http_parser_feed(&p, d, l, &used);
            d += used;
            l -= used;
            if (ev == HTTP_EV_MORE)
                break;
            if (ev == HTTP_EV_HEAD) {
                http_request_t *r = http_parser_req(&p);
                t += (size_t)snprintf(trace + t, tlen - t, "H%.*s;", (int)r->path.len, r->path.p);
            } else if (ev == HTTP_EV_REQUEST) {
                http_request_t *r = http_parser_take(&p);
                t += (size_t)snprintf(trace + t, tlen - t, "R%zu:%.*s;", r->body_len,
                                      (int)r->body_len, r->body_len ? r->body : "");
                http_request_free(&env, r);
            } else {
                t += (size_t)snprintf(trace + t, tlen - t, "E%d;", p.error_status);
                off = len;
                break;
            }
        }
    }
    http_parser_free(&p);
    http_env_free(&env);
}

TEST(http_parser_gives_the_same_requests_whatever_the_read_boundaries)
{
    static const char in[] =
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
        "chunked\r\n\r\n2\r\nxy\r\n1;e=1\r\nz\r\n0"
        "\r\nTrailer: t\r\n\r\n"
        "GET /c?q=1 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
        "\r\n";
    char want[512], got[512];

    parser_config();
    parse_trace(in, sizeof(in) - 1, sizeof(in), want, sizeof(want));
    CHECK_EQ_STR(want, "H/a;R3:abc;H/b;R3:xyz;H/c;R0:;");
    for (size_t step = 1; step < sizeof(in); step++) {
        parse_trace(in, sizeof(in) - 1, step, got, sizeof(got));
        CHECK_EQ_STR(got, want);
    }
}

TEST(http_parser_joins_repeated_list_headers)
{
    http_env_t env;
    http_parser_t p;
    static const char in[] = "GET /c HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n"
                             "Origin: o\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n";
    size_t used;

    parser_config();
    http_env_init(&env, &cfg);
    http_parser_init(&p, &env);
    CHECK_EQ_INT(http_parser_feed(&p, in, sizeof(in) - 1, &used), HTTP_EV_HEAD);
    http_request_t *r = http_parser_req(&p);
    CHECK_EQ_STR(r->headers[HTTP_H_X_FORWARDED_FOR].p, "1.1.1.1, 2.2.2.2");
    CHECK_EQ_INT(r->hcount[HTTP_H_X_FORWARDED_FOR], 2);
    CHECK_EQ_STR(r->headers[HTTP_H_ORIGIN].p, "o");
    CHECK_EQ_STR(r->headers[HTTP_H_HOST].p, "h");
    http_parser_free(&p);
    http_env_free(&env);
}

TEST(http_parser_limits_map_to_their_statuses)
{
    char big[4096], got[256];
    size_t n;

    parser_config();
    n = (size_t)sprintf(big, "GET /");
    memset(big + n, 'u', 300);
    n += 300;
    n += (size_t)sprintf(big + n, " HTTP/1.1\r\nHost: h\r\n\r\n");
    parse_trace(big, n, n, got, sizeof(got));
    CHECK_EQ_STR(got, "E414;");
    n = (size_t)sprintf(big, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n");
    parse_trace(big, n, n, got, sizeof(got));
    CHECK_EQ_STR(got, "E413;");
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n");
    parse_trace(big, n, n, got, sizeof(got));
    CHECK_EQ_STR(got, "E417;");
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                             "Connection: upgrade\r\n\r\n");
    parse_trace(big, n, n, got, sizeof(got));
    CHECK(strncmp(got, "H/;R0:;", 7) == 0); /* answered, then the connection ends */
}

/*
 * libFuzzer target for the HTTP layer and the API behind it, without sockets: the input is cut
 * into reads and fed to http_parser_feed() as a connection would feed it (pipelined requests, heads
 * and bodies split anywhere), and every request goes through track_head / track_prepare /
 * track_finish exactly as the server's coroutine handler runs them, up to the formatted answer.
 * Only the log is absent: an append is taken as successful.
 *
 * Input: byte 0 = n (mod 9) read sizes that follow (each 1..256, used in turn; n = 0: one read),
 * then the bytes of the connection. Checked on every input: no crash or leak, every answer has a
 * known status and formats, answer headers are well-formed lines (nothing from the request
 * can smuggle a CR or LF into them), and the memory budget is back to zero at the end. The build
 * lines below are one per key (scripts/fuzz.sh; globs keep up with modules split into several
 * files).
 */
/* clang-format off */
/*
 * fuzz-sources: src/http*.c src/track.c src/track_answer.c src/metrics.c src/ratelimit.c src/hist.c src/decode.c src/event.c src/event_fast.c src/config.c src/msg.c src/log*.c src/segment.c src/coro*.c src/coro_switch.S llhttp
 * fuzz-dict: http.dict
 * fuzz-max-len: 16384
 */
/* clang-format on */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/config.h"
#include "trackd/http.h"
#include "trackd/track.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static config_t fuzz_cfg;
static int fuzz_ready;

static void fuzz_setup(void)
{
    char err[128];

    config_defaults(&fuzz_cfg);
    /* Small limits so the fuzzer reaches every one of them. */
    fuzz_cfg.max_url_bytes = 512;
    fuzz_cfg.max_header_bytes = 2048;
    fuzz_cfg.max_headers = 16;
    fuzz_cfg.max_body_bytes = 8192;
    fuzz_cfg.max_decoded_bytes = 32768;
    fuzz_cfg.max_events_per_request = 20;
    config_set(&fuzz_cfg, "import_secret", "s3cret", err, sizeof(err));
    config_set(&fuzz_cfg, "redirect_host", "ok.example", err, sizeof(err));
    config_set(&fuzz_cfg, "trusted_proxy", "10.0.0.0/8", err, sizeof(err));
    /* A small budget and a rate limit, so shedding and 429 are reached too. */
    fuzz_cfg.memory_budget_bytes = 64 * 1024;
    config_set(&fuzz_cfg, "rate_limit", "50 100", err, sizeof(err));
    fuzz_ready = 1;
}

static void fuzz_check_answer(const track_answer_t *a)
{
    static char head[8192];
    const http_response_t *r = &a->resp;
    int n;

    if (r->status < 100 || r->status > 599 || strcmp(http_status_text(r->status), "Unknown") == 0)
        abort();
    n = http_format_head(head, sizeof(head), r, 1, 0);
    if (n <= 0)
        abort();
    /* Every CR ends a line, every LF follows a CR, no NUL: nothing was reflected raw. */
    for (int i = 0; i < n; i++) {
        if (head[i] == '\0')
            abort();
        if (head[i] == '\r' && (i + 1 >= n || head[i + 1] != '\n'))
            abort();
        if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r'))
            abort();
    }
    if (r->body_len && r->body == NULL)
        abort();
}

/* One complete request, as the coroutine handler runs it. */
static void fuzz_handle(track_t *t, http_request_t *req, const struct sockaddr *peer)
{
    track_work_t w;
    track_answer_t a;

    if (track_prepare(t, req, peer, &w, &a) == 0) {
        if (w.batch.nrecords == 0)
            abort(); /* prepare asks for a log append only when there is something to store */
        track_finish(t, req, &w, 0, &a);
    }
    fuzz_check_answer(&a);
    track_answer_free(&a);
    track_work_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_env_t env;
    http_parser_t p;
    track_t *t;
    struct sockaddr_in peer = {.sin_family = AF_INET};
    size_t nsizes, off, turn = 0;
    const uint8_t *sizes;
    int early = 0, done = 0;

    if (!fuzz_ready)
        fuzz_setup();
    if (size < 1)
        return 0;
    nsizes = data[0] % 9;
    if (size < 1 + nsizes)
        return 0;
    sizes = data + 1;
    off = 1 + nsizes;
    inet_pton(AF_INET, "10.0.0.1", &peer.sin_addr);

    t = track_new(&fuzz_cfg, NULL);
    if (t == NULL)
        return 0;
    http_env_init(&env, &fuzz_cfg);
    http_parser_init(&p, &env);
    while (off < size && !done) {
        size_t n = nsizes ? (size_t)sizes[turn++ % nsizes] + 1 : size - off;
        if (n > size - off)
            n = size - off;
        const char *d = (const char *)data + off;
        size_t len = n, used;
        off += n;
        for (;;) {
            http_event_t ev = http_parser_feed(&p, d, len, &used);
            if (used > len)
                abort();
            d += used;
            len -= used;
            if (ev == HTTP_EV_MORE)
                break;
            if (ev == HTTP_EV_ERROR) {
                if (p.error_status < 400 || p.error_reason == NULL)
                    abort();
                done = 1;
                break;
            }
            if (ev == HTTP_EV_HEAD) {
                http_request_t *req = http_parser_req(&p);
                track_answer_t a;
                early = 0;
                if (track_head(t, req, (struct sockaddr *)&peer, &a)) {
                    fuzz_check_answer(&a);
                    track_answer_free(&a);
                    early = 1;
                    if (req->chunked || req->content_length > 0) {
                        done = 1; /* the server closes rather than read a refused body */
                        break;
                    }
                    http_parser_discard_body(&p);
                }
                continue;
            }
            /* HTTP_EV_REQUEST */
            http_request_t *req = http_parser_take(&p);
            if (req == NULL)
                abort();
            int keep = req->keep_alive;
            if (!early)
                fuzz_handle(t, req, (struct sockaddr *)&peer);
            http_request_free(&env, req);
            early = 0;
            if (!keep) {
                done = 1;
                break;
            }
        }
    }
    http_parser_free(&p);
    /* Every byte charged to the memory budget was given back with its request. */
    if (env.mem_used != 0)
        abort();
    http_env_free(&env);
    track_free(t);
    return 0;
}

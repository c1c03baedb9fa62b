/*
 * Cost of turning a `data` value into log records: decode_payload (base64, as the browser and
 * Node libraries send it) followed by event_batch_parse, for a realistic ~300-byte /track event,
 * one per request and in batches of 50 (what the clients send). Also times the two steps apart,
 * the same event sent as plain JSON, and, as the floor under all of it, jansson parsing and
 * freeing the event with nothing else. Each figure is the best of BENCH_RUNS runs.
 *
 *   event_bench [ITERATIONS]   (default 200000 single-event requests; batches run a fiftieth)
 */
#include "trackd/decode.h"
#include "trackd/event.h"
#include "trackd/segment.h"

#include <jansson.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_RUNS 5
#define BENCH_ITERATIONS_DEFAULT 200000L
#define BENCH_BATCH 50

/* A page view as mixpanel-browser sends it, with a few of its default properties: 300 bytes. */
static const char bench_event[] =
    "{\"event\":\"Page View\",\"properties\":{\"$os\":\"Mac OS X\",\"$browser\":\"Chrome\","
    "\"$current_url\":\"https://example.com/pricing\",\"$browser_version\":131,\"mp_lib\":"
    "\"web\",\"$lib_version\":\"2.55.1\",\"$insert_id\":\"k3l9x0a1b2c3d4e5\",\"time\":"
    "1732526999.123,\"distinct_id\":\"$device:1935a6b5c1e4f2\",\"token\":\"PROJECT_TOKEN\"}}";

#ifndef BENCH_CLOCK
/* CPU time of this thread: on a shared machine, wall time mostly measures the neighbours. */
#define BENCH_CLOCK CLOCK_THREAD_CPUTIME_ID
#endif

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(BENCH_CLOCK, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char *b64_encode(const char *in, size_t len)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(len / 3 * 4 + 5);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = i + 1 < len ? alpha[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? alpha[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

enum { STEP_DECODE = 1, STEP_PARSE = 2, STEP_BOTH = 3 };

/*
 * ns per event for `n` requests of `value`, each holding `events` events, through the fast path
 * (`fast`, which must then be the path taken) or jansson's; < 0 on failure.
 */
static double run(const char *value, size_t len, size_t events, long n, int steps, int fast)
{
    event_opts_t o = {
        .fast_path = (uint8_t)fast,
        .endpoint = SEGMENT_EP_TRACK,
        .ip = "203.0.113.9",
        .now_ms = 1732527000000ULL,
        .max_events = 2000,
        .max_event_bytes = 1000000,
        .tokens = NULL,
    };
    const char *json = value;
    size_t json_len = len;
    char *owned = NULL;
    char *pre = NULL;
    event_batch_t b;
    double t0, best = -1;

    if (!(steps & STEP_DECODE)) {
        /* Time the parse alone on text decoded once up front. */
        if (decode_payload(value, len, &json, &json_len, &pre) != 0)
            return -1;
    }
    for (int r = 0; r < BENCH_RUNS; r++) {
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (steps & STEP_DECODE) {
                if (decode_payload(value, len, &json, &json_len, &owned) != 0)
                    return -1;
            }
            if (steps & STEP_PARSE) {
                if (event_batch_parse(&b, json, json_len, &o) != 0 || b.nrecords != events ||
                    b.path != (fast ? EVENT_PATH_FAST : EVENT_PATH_JANSSON))
                    return -1;
                event_batch_free(&b);
            }
            free(owned);
            owned = NULL;
        }
        double ns = (now_ns() - t0) / (double)n / (double)events;
        if (best < 0 || ns < best)
            best = ns;
    }
    free(pre);
    return best;
}

/* ns per event for jansson alone: json_loadb and json_decref of the same text. */
static double run_jansson(const char *json, size_t len, long n)
{
    double t0, best = -1;

    for (int r = 0; r < BENCH_RUNS; r++) {
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            json_t *j = json_loadb(json, len, 0, NULL);
            if (j == NULL)
                return -1;
            json_decref(j);
        }
        double ns = (now_ns() - t0) / (double)n;
        if (best < 0 || ns < best)
            best = ns;
    }
    return best;
}

static void report(const char *what, double ns_per_event)
{
    if (ns_per_event < 0) {
        printf("%-52s FAILED\n", what);
        return;
    }
    printf("%-52s %8.0f ns/event %10.0f events/s\n", what, ns_per_event, 1e9 / ns_per_event);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : BENCH_ITERATIONS_DEFAULT;
    size_t elen = strlen(bench_event);
    char *batch = malloc((elen + 1) * BENCH_BATCH + 2);
    char *b64_one, *b64_batch;
    size_t o = 0;

    if (n <= 0 || batch == NULL)
        return 2;
    batch[o++] = '[';
    for (int i = 0; i < BENCH_BATCH; i++) {
        if (i)
            batch[o++] = ',';
        memcpy(batch + o, bench_event, elen);
        o += elen;
    }
    batch[o++] = ']';
    batch[o] = '\0';
    b64_one = b64_encode(bench_event, elen);
    b64_batch = b64_encode(batch, o);
    if (b64_one == NULL || b64_batch == NULL)
        return 2;

    printf("event: %zu bytes of JSON, %zu of base64; batch of %d: %zu bytes of base64\n", elen,
           strlen(b64_one), BENCH_BATCH, strlen(b64_batch));
    for (int fast = 1; fast >= 0; fast--) {
        const char *p = fast ? "fast path" : "jansson path";
        char what[64];
        snprintf(what, sizeof(what), "1 event, base64: decode + parse, %s", p);
        report(what, run(b64_one, strlen(b64_one), 1, n, STEP_BOTH, fast));
        snprintf(what, sizeof(what), "1 event, base64: parse only, %s", p);
        report(what, run(b64_one, strlen(b64_one), 1, n, STEP_PARSE, fast));
        snprintf(what, sizeof(what), "1 event, JSON: parse, %s", p);
        report(what, run(bench_event, elen, 1, n, STEP_BOTH, fast));
        snprintf(what, sizeof(what), "batch of 50, base64: decode + parse, %s", p);
        report(what,
               run(b64_batch, strlen(b64_batch), BENCH_BATCH, n / BENCH_BATCH, STEP_BOTH, fast));
    }
    report("1 event, base64: decode only", run(b64_one, strlen(b64_one), 1, n, STEP_DECODE, 1));
    report("reference: jansson json_loadb + json_decref", run_jansson(bench_event, elen, n));
    free(b64_one);
    free(b64_batch);
    free(batch);
    return 0;
}

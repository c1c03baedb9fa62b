/*
 * libFuzzer target for the request path from a `data` value to log records: decode_payload
 * (JSON or base64), then event_batch_parse on every endpoint. The first input byte picks the
 * endpoint and options (client ip, token allow-list, small limits, the fast path); the rest is
 * the value.
 * Checked on every input: the outcome is one of the documented ones, a refused request holds
 * nothing, every record is a JSON object within the size limit, and each record equals the event
 * it came from (as parsed independently here) apart from the ip and time rewrites.
 *
 * fuzz-sources: src/decode.c src/event.c src/event_fast.c src/config.c src/msg.c
 * fuzz-dict: json.dict
 * fuzz-max-len: 16384
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "trackd/decode.h"
#include "trackd/event.h"
#include "trackd/segment.h"

#define FUZZ_NOW_MS 1732527000000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The edits event_batch_parse may make: the client's ip added, a future time clamped to now. */
static void check_edits(const json_t *got, const json_t *want, const event_opts_t *o)
{
    int track = o->endpoint == SEGMENT_EP_TRACK || o->endpoint == SEGMENT_EP_IMPORT;
    const json_t *gp = track ? json_object_get(got, "properties") : got;
    const json_t *wp = track ? json_object_get(want, "properties") : want;
    const char *key = track ? "ip" : "$ip";
    const json_t *gi = json_object_get(gp, key), *wi = json_object_get(wp, key);

    if (wi != NULL ? !json_equal(gi, wi)
                   : (o->ip == NULL ? gi != NULL
                                    : !json_is_string(gi) || strcmp(json_string_value(gi), o->ip)))
        abort();
    if (!track)
        return;
    const json_t *gt = json_object_get(gp, "time"), *wt = json_object_get(wp, "time");
    if ((gt == NULL) != (wt == NULL))
        abort();
    if (gt != NULL && !json_equal(gt, wt)) {
        double v = json_number_value(gt), now = (double)o->now_ms;
        if (o->endpoint != SEGMENT_EP_TRACK || json_number_value(wt) <= v ||
            (v != now && v != (double)(o->now_ms / 1000) && v != now / 1000.0))
            abort();
    }
}

/* Remove what event_batch_parse may rewrite, so the rest can be compared exactly. */
static void strip_rewrites(json_t *ev)
{
    json_t *props = json_object_get(ev, "properties");

    json_object_del(ev, "$ip");
    if (json_is_object(props)) {
        json_object_del(props, "ip");
        json_object_del(props, "time");
    }
}

static void check_records(const event_batch_t *b, const char *json, size_t len,
                          const event_opts_t *o)
{
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, NULL);
    size_t f = 0, r = 0;

    if (root == NULL)
        abort(); /* event_batch_parse accepted what jansson refuses */
    for (size_t i = 0; i < b->nevents; i++) {
        if (f < b->nfailures && b->failures[f].index == i) {
            f++;
            continue;
        }
        if (r >= b->nrecords)
            abort();
        const log_record_t *rec = &b->records[r++];
        if (rec->len > o->max_event_bytes || rec->time_ms != o->now_ms ||
            rec->endpoint != o->endpoint || ((const char *)rec->payload)[rec->len] != '\0')
            abort();
        json_t *got = json_loadb(rec->payload, rec->len, JSON_ALLOW_NUL, NULL);
        json_t *want = json_deep_copy(json_is_array(root) ? json_array_get(root, i) : root);
        if (got == NULL || want == NULL || !json_is_object(got))
            abort();
        check_edits(got, want, o);
        strip_rewrites(got);
        strip_rewrites(want);
        if (!json_equal(got, want))
            abort();
        json_decref(got);
        json_decref(want);
    }
    if (f != b->nfailures || r != b->nrecords)
        abort();
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *allowed[] = {"t", "tok", "PROJECT_TOKEN"};
    static const config_list_t tokens = {.items = allowed, .n = 3};
    event_opts_t o;
    event_batch_t b;
    const char *json;
    size_t json_len;
    char *owned;

    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    o.endpoint = (uint8_t)(SEGMENT_EP_TRACK + (sel & 3));
    o.ip = (sel & 4) ? "198.51.100.7" : NULL;
    o.now_ms = FUZZ_NOW_MS;
    o.max_events = (sel & 16) ? 3 : 2000;
    o.max_event_bytes = (sel & 32) ? 120 : 1000000;
    o.tokens = (sel & 8) ? &tokens : NULL;
    o.fast_path = (sel & 64) != 0;

    int rc = decode_payload((const char *)data + 1, size - 1, &json, &json_len, &owned);
    if (rc != 0) {
        if (rc != -EINVAL || owned != NULL)
            abort();
        return 0;
    }
    rc = event_batch_parse(&b, json, json_len, &o);
    if (rc == 0) {
        if (b.nrecords + b.nfailures != b.nevents || b.nevents > o.max_events)
            abort();
        for (size_t i = 0; i < b.nfailures; i++)
            if (b.failures[i].index >= b.nevents ||
                (i > 0 && b.failures[i].index <= b.failures[i - 1].index) ||
                b.failures[i].message[0] == '\0')
                abort();
        if (b.nfailures > 0 && strcmp(b.error, b.failures[0].message) != 0)
            abort();
        check_records(&b, json, json_len, &o);
        event_batch_free(&b);
    } else {
        if (rc != -EINVAL && rc != -E2BIG && rc != -EACCES)
            abort();
        if (b.records != NULL || b.failures != NULL || b.nrecords || b.nfailures ||
            b.error[0] == '\0')
            abort();
        if (rc == -EACCES && o.tokens == NULL)
            abort();
    }
    free(owned);
    return 0;
}

/*
 * Differential libFuzzer target for the fast path of event validation (src/event_fast.c):
 * every input goes through event_batch_parse twice, with jansson's path only (the reference) and
 * with the fast path first, and any difference in the outcome aborts: return code, error text,
 * counts, each record's bytes, length, time and endpoint, each failure. The first input byte
 * picks the options (endpoint /track or /import, a client ip or an odd one, the token
 * allow-list, small limits); the rest is the JSON text, as decode_payload would hand it over.
 *
 * fuzz-sources: src/event.c src/event_fast.c src/config.c src/msg.c
 * fuzz-dict: json.dict
 * fuzz-max-len: 16384
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trackd/event.h"
#include "trackd/segment.h"

#define FUZZ_NOW_MS 1732527000000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const event_batch_t *a, int ra, const event_batch_t *b, int rb)
{
    if (ra != rb || strcmp(a->error, b->error) != 0 || a->path == EVENT_PATH_FAST ||
        a->nevents != b->nevents || a->nrecords != b->nrecords || a->nfailures != b->nfailures)
        abort();
    for (size_t i = 0; i < a->nrecords; i++) {
        const log_record_t *x = &a->records[i], *y = &b->records[i];
        if (x->len != y->len || memcmp(x->payload, y->payload, x->len) != 0 ||
            ((const char *)y->payload)[y->len] != '\0' || x->time_ms != y->time_ms ||
            x->endpoint != y->endpoint)
            abort();
    }
    for (size_t i = 0; i < a->nfailures; i++) {
        const event_failure_t *x = &a->failures[i], *y = &b->failures[i];
        if (x->index != y->index || strcmp(x->insert_id, y->insert_id) != 0 ||
            strcmp(x->field, y->field) != 0 || strcmp(x->message, y->message) != 0)
            abort();
    }
    /* The fast path only ever answers "all valid". */
    if (b->path == EVENT_PATH_FAST && (rb != 0 || b->nfailures != 0 || b->nrecords == 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *allowed[] = {"t", "tok", "PROJECT_TOKEN"};
    static const config_list_t tokens = {.items = allowed, .n = 3};
    static const char *const ips[] = {NULL, "198.51.100.7", "2001:db8::1", "odd\"ip\\"};
    event_opts_t slow, fast;
    event_batch_t a, b;
    int ra, rb;

    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    slow.endpoint = (uint8_t)((sel & 1) ? SEGMENT_EP_IMPORT : SEGMENT_EP_TRACK);
    slow.ip = ips[(sel >> 1) & 3];
    slow.now_ms = FUZZ_NOW_MS;
    slow.tokens = (sel & 8) ? &tokens : NULL;
    slow.max_events = (sel & 16) ? 3 : 2000;
    slow.max_event_bytes = (sel & 32) ? 120 : 1000000;
    slow.fast_path = 0;
    fast = slow;
    fast.fast_path = 1;

    ra = event_batch_parse(&a, (const char *)data + 1, size - 1, &slow);
    rb = event_batch_parse(&b, (const char *)data + 1, size - 1, &fast);
    same(&a, ra, &b, rb);
    if (ra == 0) {
        event_batch_free(&a);
        event_batch_free(&b);
    }
    return 0;
}

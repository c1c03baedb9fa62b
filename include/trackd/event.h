/*
 * Event validation: from decoded JSON text to the records the log stores, following
 * ../shared/API.md ("The event", "Profiles and groups", limits). Valid events of a batch become
 * records; invalid ones are reported by index with a reason, and never stored.
 */
#ifndef TRACKD_EVENT_H
#define TRACKD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "trackd/config.h"
#include "trackd/log.h"

/** What the request asked for, and the limits that apply. */
typedef struct {
    uint8_t endpoint;            /* segment_endpoint_t */
    const char *ip;              /* add as properties.ip / $ip unless present; NULL = don't */
    uint64_t now_ms;             /* receive time: future event times are clamped to it */
    size_t max_events;           /* more -> status -E2BIG (413) */
    size_t max_event_bytes;      /* one event's JSON */
    const config_list_t *tokens; /* allow-list; NULL or empty = any */
    uint8_t fast_path;           /* 1: try the allocation-free scanner first (/track and
                                    /import; config json_fast_path); 0: jansson only */
} event_opts_t;

/** Which decoder produced a batch's outcome (event_batch_t.path). */
typedef enum {
    EVENT_PATH_NONE = 0, /* refused before any JSON was decoded (empty data, bad endpoint) */
    EVENT_PATH_FAST,     /* the fast path: every event valid, no tree built */
    EVENT_PATH_JANSSON,  /* jansson's tree: the reference, and the fallback for everything else */
} event_path_t;

/** Why one event of a batch was refused (the /import and strict=1 `failed_records` entry). */
typedef struct {
    size_t index;
    char insert_id[40]; /* its $insert_id if it had a usable one, else "" */
    char field[48];     /* e.g. "properties.time" */
    char message[160];
} event_failure_t;

/** The outcome of validating one request's `data`. */
typedef struct {
    log_record_t *records; /* valid events, compact JSON payloads owned by the batch */
    size_t nrecords;
    event_failure_t *failures;
    size_t nfailures;
    size_t nevents;  /* events seen (valid + invalid) */
    char error[200]; /* reason for verbose mode when nothing or not all was valid */
    uint8_t path;    /* event_path_t */
} event_batch_t;

/**
 * Parse and validate `json[0..len)` (one event object or an array of them). With
 * opts->fast_path, a /track or /import request goes through a strict allocation-free scanner
 * first; anything it is not certain about (any invalid event included) goes through jansson's
 * path, the reference, so the outcome and the stored bytes are the same either way. Returns 0
 * (check nrecords/nfailures), -EINVAL when it is not JSON or not an object/array (400), -E2BIG for
 * too many events (413), -EACCES when any event's token is not on the allow-list (401, nothing
 * stored), -ENOMEM. On error `b->error` says why and the batch holds nothing to free.
 * event.c installs jansson allocation hooks (json_set_alloc_funcs) before main(): plain
 * malloc/free except inside this function on the calling thread. Install no others.
 */
int event_batch_parse(event_batch_t *b, const char *json, size_t len, const event_opts_t *opts);

/** Free what the batch owns. */
void event_batch_free(event_batch_t *b);

#endif

/*
 * Private to the event module: event.c (the batch, jansson's path, storing records) and
 * event_fast.c (the allocation-free scanner that validates ordinary /track and /import requests
 * without building a tree). Both apply the same rules; what they share lives here, so a rule
 * changed in one place changes for both. The public interface is include/trackd/event.h. Shared
 * functions carry the event__ prefix.
 */
#ifndef TRACKD_EVENT_INTERNAL_H
#define TRACKD_EVENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "trackd/event.h"

/* Deeper JSON is refused as a whole (400) before jansson runs; valid events need 6 levels. */
#define EVENT_MAX_JSON_DEPTH 32
/* properties, and the object of an engage/groups operation: fewer keys than this. */
#define EVENT_MAX_PROPERTIES 255
/* A nested object: fewer keys than this; an array: fewer elements than this. */
#define EVENT_MAX_CONTAINER_ITEMS 255
/* Objects and arrays nested in one property value, the value itself counting as 1. */
#define EVENT_MAX_NESTING 3
/* $insert_id: 1 to 36 bytes of [A-Za-z0-9-]. */
#define EVENT_INSERT_ID_MAX 36

/* What validation found must change in an event before it is stored. */
typedef struct {
    const char *ip_key; /* add the client's ip under this key ("ip" in properties, "$ip" in a
                           profile update) unless NULL */
    int ip_obj_empty;   /* the object that gets it has no members (no comma before it) */
    int clamp_time;     /* properties.time is in the future: store now in its place */
    int time_in_ms;     /* the client sent it in milliseconds (else seconds) */
    int time_integer;   /* ... as a JSON integer (else a real) */
    /* jansson's path: the nodes store_tree edits (NULL on the fast path). */
    json_t *ip_obj;
    json_t *time;
    /* The fast path knows where things are in the text; 0 = find them (find_member). */
    size_t props_end;          /* just past the '}' of properties */
    size_t time_from, time_to; /* the value of properties.time */
    int blanks;                /* fast path: the event's text has blanks between its tokens */
} event_edit_t;

/** The outcome of the time rules for properties.time = `v` (see event__time_rule). */
typedef enum {
    EVENT_TIME_OK = 0,
    EVENT_TIME_CLAMP,     /* /track, in the future: stored as now */
    EVENT_TIME_TOO_OLD,   /* /track, more than 5 days old */
    EVENT_TIME_TOO_EARLY, /* /import, before 1971 */
    EVENT_TIME_TOO_LATE,  /* /import, more than an hour ahead */
} event_time_rule_t;

/** Apply the endpoint's time rules to `v` (seconds, or ms above 1e11); sets *in_ms. */
event_time_rule_t event__time_rule(const event_opts_t *opts, double v, int *in_ms);

/** 1 if s[0..n) is a usable $insert_id: 1 to 36 bytes of [A-Za-z0-9-]. */
int event__insert_id_ok(const char *s, size_t n);

/** 1 for the bytes JSON allows between tokens (space, tab, LF, CR), else 0. */
extern const uint8_t event__blank[256];

/**
 * Called by the fast path for each valid event s[start..end) in order, with its edits. Returns 0
 * when stored, 1 to fall back to jansson's path, or a negative errno (ends the request).
 */
typedef int (*event_fast_store_fn)(void *ctx, size_t start, size_t end, const event_edit_t *edit);

/**
 * The fast path for /track and /import: validate json[i..len) (i at its first non-blank byte)
 * in one pass, without allocating, and hand each event to `store`. Returns 0 when every event
 * was valid and stored (*nevents says how many), 1 when anything is not certain (invalid JSON,
 * an invalid event, a case it leaves to jansson: the caller then runs jansson's path from
 * scratch), or a negative errno from `store`.
 */
int event__fast_track(const char *json, size_t i, size_t len, const event_opts_t *opts,
                      event_fast_store_fn store, void *ctx, size_t *nevents);

#endif

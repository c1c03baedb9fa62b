/*
 * Event validation at the trust boundary: decoded `data` JSON in, log records out. A request's
 * events are parsed once with jansson, checked against the rules of their endpoint (API.md, "The
 * event", "Profiles and groups", limits). A valid event is stored as the text the client sent,
 * with the blanks between tokens removed and only two possible edits spliced in: the client's ip
 * and a future time clamped to now. Copying the text is several times cheaper than serializing
 * jansson's tree, and keeps numbers and escapes exactly as sent. All records of a request go
 * into one buffer owned by the batch.
 *
 * Handlers run on small coroutine stacks and jansson recurses once per nesting level, so the text
 * is scanned for depth before jansson sees it. The scan also counts the elements of a top-level
 * array, so an oversized batch is refused before anything is allocated for it.
 *
 * jansson allocates a node, a hashtable slot and a copy of every key and string: some forty
 * malloc/free pairs for one event, and a tree walk to free them. During a parse its allocations
 * come from an arena of a few large blocks instead, released whole at the end, without freeing
 * the tree node by node (see "jansson's memory" below).
 *
 * With opts->fast_path, /track and /import requests go through event_fast.c first: one pass
 * that checks syntax and rules together without a tree or an allocation, and hands each valid
 * event to the same store_text as jansson's path. It either stores every event of the request
 * or leaves the whole request to jansson's path, which stays the reference for every answer.
 */
#include "trackd/event.h"

#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>

#include "event_internal.h"
#include "trackd/segment.h"

/* A `time` above this is in milliseconds, else in seconds (year 5138 in seconds). */
#define EVENT_TIME_MS_THRESHOLD 1e11
/* /track accepts events this old; older ones belong to /import. */
#define EVENT_TRACK_MAX_AGE_MS (5.0 * 86400 * 1000)
/* /import accepts times from 1971-01-01T00:00:00Z ... */
#define EVENT_IMPORT_MIN_MS (365.0 * 86400 * 1000)
/* ... to this far ahead of the receive time. */
#define EVENT_IMPORT_MAX_AHEAD_MS (3600.0 * 1000)
/* Room per event for the edits (ip, time) on top of the request's text. */
#define EVENT_EDIT_SLACK 64
/* The client's address as a JSON string; a longer one (never from the HTTP layer) takes the
 * slower path through jansson's serializer. */
#define EVENT_IP_JSON_MAX 128
/* Initial number of failure entries; grows by doubling. */
#define EVENT_FAILURES_INITIAL 8
/* First arena block of a parse: this many bytes per byte of JSON (jansson's tree of a typical
 * event takes about 8), within these bounds; later blocks double. */
#define EVENT_ARENA_PER_BYTE 12
#define EVENT_ARENA_MIN ((size_t)8 << 10)
#define EVENT_ARENA_FIRST_MAX ((size_t)1 << 20)

/* What a value of an engage/groups operation must be. */
typedef enum {
    EVENT_OP_OBJECT,      /* an object of properties */
    EVENT_OP_NUMBERS,     /* an object whose values are numbers ($add) */
    EVENT_OP_LISTS,       /* an object whose values are arrays ($union) */
    EVENT_OP_STRING_LIST, /* an array of property names ($unset) */
    EVENT_OP_ANY,         /* anything ($delete) */
} event_op_kind_t;

static const struct {
    const char *name;
    size_t len;
    uint8_t kind;   /* event_op_kind_t */
    uint8_t groups; /* also valid on /groups */
} event_ops[] = {
    {"$set", 4, EVENT_OP_OBJECT, 1},        {"$set_once", 9, EVENT_OP_OBJECT, 1},
    {"$add", 4, EVENT_OP_NUMBERS, 0},       {"$union", 6, EVENT_OP_LISTS, 1},
    {"$append", 7, EVENT_OP_OBJECT, 0},     {"$remove", 7, EVENT_OP_OBJECT, 1},
    {"$unset", 6, EVENT_OP_STRING_LIST, 1}, {"$delete", 7, EVENT_OP_ANY, 1},
};
#define EVENT_NOPS (sizeof(event_ops) / sizeof(event_ops[0]))

/* Bytes the depth scan must look at; everything else is skipped with one table load. */
enum { SCAN_QUOTE = 1, SCAN_BACKSLASH, SCAN_OPEN, SCAN_CLOSE, SCAN_COMMA, SCAN_BLANK };
static const uint8_t scan_class[256] = {
    ['"'] = SCAN_QUOTE,  ['\\'] = SCAN_BACKSLASH, ['{'] = SCAN_OPEN,   ['['] = SCAN_OPEN,
    ['}'] = SCAN_CLOSE,  [']'] = SCAN_CLOSE,      [','] = SCAN_COMMA,  [' '] = SCAN_BLANK,
    ['\t'] = SCAN_BLANK, ['\n'] = SCAN_BLANK,     ['\r'] = SCAN_BLANK,
};

/* Bytes that end a number or literal in JSON text; blanks between tokens. */
static const uint8_t scalar_end[256] = {
    [','] = 1, [']'] = 1, ['}'] = 1, [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
};
const uint8_t event__blank[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* $insert_id characters. */
static const uint8_t insert_id_ok[256] = {
    ['-'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,
    ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,
    ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* One request's validation in progress. */
typedef struct {
    event_batch_t *b;
    const event_opts_t *opts;
    const char *text; /* the request's JSON */
    int from_tree;    /* store jansson's serialization, not the text (duplicate keys, odd ip) */
    json_t *ip;       /* the client's address as a JSON string */
    char ip_json[EVENT_IP_JSON_MAX]; /* the same as JSON text, for the text path */
    size_t ip_json_len;
    int blanks;       /* the text has blanks between tokens inside its containers */
    char *block;      /* records[nslots], then the payloads back to back, NUL-terminated */
    size_t nslots;    /* records the block has room for */
    size_t used, cap; /* payload bytes used / available after the records */
    size_t failures_cap;
} event_ctx_t;

/*
 * jansson's memory. json_set_alloc_funcs() is process-wide, and other code (trackctl, the log
 * reader, benchmarks, any thread) uses jansson too, so the hooks installed here fall back to
 * malloc/free unless the calling thread is inside event_batch_parse: only that thread's
 * allocations come from its arena, and a free of a pointer outside the arena goes to free().
 * Nothing jansson allocates during a parse outlives it (records and failures are copied out into
 * malloc'd memory), so the arena is released whole at the end and the tree is never walked to
 * be freed. Frees inside the arena are no-ops, except that the most recent allocation is given
 * back (jansson's string buffers grow by allocate-copy-free).
 */
typedef struct event_arena_block_s {
    struct event_arena_block_s *prev;
    size_t size, used;
    alignas(max_align_t) unsigned char data[];
} event_arena_block_t;

typedef struct {
    event_arena_block_t *block; /* current block; older ones through prev */
    unsigned char *last;        /* the most recent allocation */
} event_arena_t;

static _Thread_local event_arena_t *event_arena;

static int arena_add_block(event_arena_t *a, size_t min)
{
    size_t size = a->block ? a->block->size * 2 : EVENT_ARENA_MIN;
    event_arena_block_t *blk;

    if (size < min)
        size = min;
    if (size > SIZE_MAX - sizeof(*blk) || (blk = malloc(sizeof(*blk) + size)) == NULL)
        return -ENOMEM;
    blk->prev = a->block;
    blk->size = size;
    blk->used = 0;
    a->block = blk;
    return 0;
}

static void *event_json_malloc(size_t size)
{
    event_arena_t *a = event_arena;
    size_t need;

    if (a == NULL)
        return malloc(size);
    need = (size + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    if (need < size)
        return NULL;
    if (a->block->size - a->block->used < need && arena_add_block(a, need) < 0)
        return NULL;
    a->last = a->block->data + a->block->used;
    a->block->used += need;
    return a->last;
}

static void event_json_free(void *p)
{
    event_arena_t *a = event_arena;

    if (p == NULL)
        return;
    if (a != NULL) {
        for (event_arena_block_t *blk = a->block; blk; blk = blk->prev) {
            uintptr_t start = (uintptr_t)blk->data, at = (uintptr_t)p;
            if (at >= start && at < start + blk->size) {
                if (p == a->last && blk == a->block) {
                    blk->used = (size_t)(a->last - blk->data);
                    a->last = NULL;
                }
                return;
            }
        }
    }
    free(p);
}

/*
 * Installed before main(), while the process has one thread: no other thread can be inside
 * jansson while its two allocator pointers change. Outside a parse they are malloc and free.
 */
__attribute__((constructor)) static void arena_install(void)
{
    json_set_alloc_funcs(event_json_malloc, event_json_free);
}

/* Route this thread's jansson allocations to a fresh arena sized for `len` bytes of text. */
static int arena_begin(event_arena_t *a, size_t len)
{
    size_t first = len < EVENT_ARENA_FIRST_MAX / EVENT_ARENA_PER_BYTE ? len * EVENT_ARENA_PER_BYTE
                                                                      : EVENT_ARENA_FIRST_MAX;

    a->block = NULL;
    a->last = NULL;
    if (arena_add_block(a, first) < 0)
        return -ENOMEM;
    event_arena = a;
    return 0;
}

/* Back to malloc/free, and release everything jansson allocated since arena_begin. */
static void arena_end(event_arena_t *a)
{
    event_arena = NULL;
    while (a->block) {
        event_arena_block_t *prev = a->block->prev;
        free(a->block);
        a->block = prev;
    }
}

/* Why an event is invalid: fills `f` and returns 1 (the "invalid" outcome of the validators). */
__attribute__((format(printf, 3, 4))) static int event_fail(event_failure_t *f, const char *field,
                                                            const char *fmt, ...)
{
    va_list ap;

    snprintf(f->field, sizeof(f->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof(f->message), fmt, ap);
    va_end(ap);
    return 1;
}

/*
 * Depth of `s` outside strings, the number of commas directly inside a top-level array, and
 * whether any blank lies between tokens inside a container (compact text, what the libraries
 * send, is then copied into records as it is). It only has to agree with jansson on valid JSON:
 * on invalid text jansson stops at the first error, and the depth up to there is no more than
 * what this scan saw.
 */
static int event_scan(const char *s, size_t len, size_t *commas, int *blanks)
{
    size_t depth = 0, n = 0;
    int in_string = 0, b = 0;

    for (size_t i = 0; i < len; i++) {
        uint8_t c = scan_class[(unsigned char)s[i]];
        if (c == 0)
            continue;
        if (in_string) {
            if (c == SCAN_BACKSLASH)
                i++;
            else if (c == SCAN_QUOTE)
                in_string = 0;
            continue;
        }
        switch (c) {
        case SCAN_QUOTE:
            in_string = 1;
            break;
        case SCAN_OPEN:
            if (++depth > EVENT_MAX_JSON_DEPTH)
                return -EINVAL;
            break;
        case SCAN_CLOSE:
            if (depth > 0)
                depth--;
            break;
        case SCAN_COMMA:
            n += depth == 1;
            break;
        case SCAN_BLANK:
            b |= depth > 0;
            break;
        }
    }
    *commas = n;
    *blanks = b;
    return 0;
}

static int is_nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0;
}

int event__insert_id_ok(const char *s, size_t n)
{
    if (n == 0 || n > EVENT_INSERT_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!insert_id_ok[(unsigned char)s[i]])
            return 0;
    return 1;
}

/* A usable $insert_id: a string, 1 to 36 bytes of [A-Za-z0-9-]. */
static int insert_id_valid(const json_t *v)
{
    return json_is_string(v) && event__insert_id_ok(json_string_value(v), json_string_length(v));
}

/* Nesting and size limits of one property value (`level` = containers above it, plus one). */
static int check_value(const json_t *v, int level, const char *where, const char *key,
                       event_failure_t *f)
{
    char field[sizeof(f->field)];

    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    snprintf(field, sizeof(field), "%s.%s", where, key);
    if (level > EVENT_MAX_NESTING)
        return event_fail(f, field, "'%s' is nested more than %d levels deep", field,
                          EVENT_MAX_NESTING);
    if (json_is_object(v)) {
        if (json_object_size(v) >= EVENT_MAX_CONTAINER_ITEMS)
            return event_fail(f, field, "'%s' has more than %d keys", field,
                              EVENT_MAX_CONTAINER_ITEMS - 1);
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it))
            if (check_value(json_object_iter_value(it), level + 1, where, key, f))
                return 1;
    } else {
        if (json_array_size(v) >= EVENT_MAX_CONTAINER_ITEMS)
            return event_fail(f, field, "'%s' has more than %d elements", field,
                              EVENT_MAX_CONTAINER_ITEMS - 1);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (check_value(json_array_get(v, i), level + 1, where, key, f))
                return 1;
    }
    return 0;
}

/* The limits of a properties object (or an operation's object): key count, then each value. */
static int check_properties(const json_t *props, const char *where, event_failure_t *f)
{
    if (json_object_size(props) >= EVENT_MAX_PROPERTIES)
        return event_fail(f, where, "'%s' has more than %d properties", where,
                          EVENT_MAX_PROPERTIES - 1);
    for (void *it = json_object_iter((json_t *)props); it;
         it = json_object_iter_next((json_t *)props, it))
        if (check_value(json_object_iter_value(it), 1, where, json_object_iter_key(it), f))
            return 1;
    return 0;
}

/* Check the token against the allow-list: -EACCES refuses the whole request. */
static int check_token(event_ctx_t *cx, const json_t *tok)
{
    const config_list_t *list = cx->opts->tokens;

    if (list == NULL || list->n == 0)
        return 0;
    if (config_list_has(list, json_string_value(tok), json_string_length(tok)))
        return 0;
    return -EACCES;
}

/* The client's address goes in as `key` unless the object has that key already (any value). */
static int want_ip(event_ctx_t *cx, json_t *obj, const char *key, event_edit_t *edit)
{
    if (cx->opts->ip != NULL && json_object_get(obj, key) == NULL) {
        edit->ip_obj = obj;
        edit->ip_key = key;
        edit->ip_obj_empty = json_object_size(obj) == 0;
    }
    return 0;
}

event_time_rule_t event__time_rule(const event_opts_t *opts, double v, int *in_ms)
{
    double now = (double)opts->now_ms, ms;

    *in_ms = v > EVENT_TIME_MS_THRESHOLD;
    ms = *in_ms ? v : v * 1000.0;
    if (opts->endpoint == SEGMENT_EP_IMPORT) {
        if (ms < EVENT_IMPORT_MIN_MS)
            return EVENT_TIME_TOO_EARLY;
        if (ms > now + EVENT_IMPORT_MAX_AHEAD_MS)
            return EVENT_TIME_TOO_LATE;
        return EVENT_TIME_OK;
    }
    if (ms < now - EVENT_TRACK_MAX_AGE_MS)
        return EVENT_TIME_TOO_OLD;
    return ms > now ? EVENT_TIME_CLAMP : EVENT_TIME_OK;
}

/* properties.time: the range of the endpoint; on /track a future time becomes now. */
static int check_time(event_ctx_t *cx, json_t *t, event_failure_t *f, event_edit_t *edit)
{
    int in_ms;

    if (!json_is_number(t))
        return event_fail(f, "properties.time", "'properties.time' must be a number");
    switch (event__time_rule(cx->opts, json_number_value(t), &in_ms)) {
    case EVENT_TIME_TOO_EARLY:
        return event_fail(f, "properties.time", "'properties.time' is before 1971-01-01");
    case EVENT_TIME_TOO_LATE:
        return event_fail(f, "properties.time",
                          "'properties.time' is more than 1 hour in the future");
    case EVENT_TIME_TOO_OLD:
        return event_fail(f, "properties.time",
                          "'properties.time' is more than 5 days old; send older events to "
                          "/import");
    case EVENT_TIME_CLAMP:
        /* Clamped to now when stored, in the unit and JSON type the client used. */
        edit->clamp_time = 1;
        edit->time = t;
        edit->time_in_ms = in_ms;
        edit->time_integer = json_is_integer(t);
        break;
    case EVENT_TIME_OK:
        break;
    }
    return 0;
}

/* An event for /track or /import. */
static int validate_track(event_ctx_t *cx, json_t *ev, event_failure_t *f, event_edit_t *edit)
{
    int import = cx->opts->endpoint == SEGMENT_EP_IMPORT;
    json_t *props, *tok, *t, *did, *iid;
    int rc;

    props = json_object_get(ev, "properties");
    iid = json_is_object(props) ? json_object_get(props, "$insert_id") : NULL;
    if (iid != NULL && insert_id_valid(iid))
        memcpy(f->insert_id, json_string_value(iid), json_string_length(iid) + 1);
    if (!is_nonempty_string(json_object_get(ev, "event")))
        return event_fail(f, "event", "'event' must be a non-empty string");
    if (props == NULL)
        return event_fail(f, "properties.token", "'properties.token' is missing");
    if (!json_is_object(props))
        return event_fail(f, "properties", "'properties' must be an object");
    tok = json_object_get(props, "token");
    if (tok == NULL)
        return event_fail(f, "properties.token", "'properties.token' is missing");
    if (!is_nonempty_string(tok))
        return event_fail(f, "properties.token", "'properties.token' must be a non-empty string");
    if ((rc = check_token(cx, tok)) < 0)
        return rc;
    t = json_object_get(props, "time");
    if (t == NULL && import)
        return event_fail(f, "properties.time", "'properties.time' is missing");
    if (t != NULL && (rc = check_time(cx, t, f, edit)) != 0)
        return rc;
    did = json_object_get(props, "distinct_id");
    if (did == NULL && import)
        return event_fail(f, "properties.distinct_id", "'properties.distinct_id' is missing");
    if (did != NULL && !json_is_string(did) && !json_is_number(did))
        return event_fail(f, "properties.distinct_id",
                          "'properties.distinct_id' must be a string or a number");
    if (iid == NULL && import)
        return event_fail(f, "properties.$insert_id", "'properties.$insert_id' is missing");
    if (iid != NULL && !insert_id_valid(iid))
        return event_fail(f, "properties.$insert_id",
                          "'properties.$insert_id' must be 1 to 36 characters of [A-Za-z0-9-]");
    if (check_properties(props, "properties", f))
        return 1;
    return want_ip(cx, props, "ip", edit);
}

/* The value of an engage/groups operation. */
static int check_op(const json_t *v, const char *name, int kind, event_failure_t *f)
{
    switch (kind) {
    case EVENT_OP_ANY:
        return 0;
    case EVENT_OP_STRING_LIST:
        if (!json_is_array(v))
            return event_fail(f, name, "'%s' must be an array of property names", name);
        if (json_array_size(v) >= EVENT_MAX_CONTAINER_ITEMS)
            return event_fail(f, name, "'%s' has more than %d elements", name,
                              EVENT_MAX_CONTAINER_ITEMS - 1);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_string(json_array_get(v, i)))
                return event_fail(f, name, "'%s' must be an array of property names", name);
        return 0;
    default:
        break;
    }
    if (!json_is_object(v))
        return event_fail(f, name, "'%s' must be an object", name);
    for (void *it = json_object_iter((json_t *)v); it;
         it = json_object_iter_next((json_t *)v, it)) {
        const char *key = json_object_iter_key(it);
        const json_t *item = json_object_iter_value(it);
        if (kind == EVENT_OP_NUMBERS && !json_is_number(item))
            return event_fail(f, name, "'%s.%s' must be a number", name, key);
        if (kind == EVENT_OP_LISTS && !json_is_array(item))
            return event_fail(f, name, "'%s.%s' must be an array", name, key);
    }
    return check_properties(v, name, f);
}

/* A profile update (/engage) or a group update (/groups). */
static int validate_profile(event_ctx_t *cx, json_t *ev, event_failure_t *f, event_edit_t *edit)
{
    int groups = cx->opts->endpoint == SEGMENT_EP_GROUPS;
    const char *op = NULL;
    int op_kind = 0;
    json_t *tok, *id, *v, *op_val = NULL;
    int rc;

    tok = json_object_get(ev, "$token");
    if (tok == NULL)
        return event_fail(f, "$token", "'$token' is missing");
    if (!is_nonempty_string(tok))
        return event_fail(f, "$token", "'$token' must be a non-empty string");
    if ((rc = check_token(cx, tok)) < 0)
        return rc;
    if (groups) {
        if (!is_nonempty_string(json_object_get(ev, "$group_key")))
            return event_fail(f, "$group_key", "'$group_key' must be a non-empty string");
        id = json_object_get(ev, "$group_id");
        if (id == NULL)
            return event_fail(f, "$group_id", "'$group_id' is missing");
        if (!json_is_string(id) && !json_is_number(id))
            return event_fail(f, "$group_id", "'$group_id' must be a string or a number");
    } else {
        id = json_object_get(ev, "$distinct_id");
        if (id == NULL)
            return event_fail(f, "$distinct_id", "'$distinct_id' is missing");
        if (!json_is_string(id) && !json_is_number(id))
            return event_fail(f, "$distinct_id", "'$distinct_id' must be a string or a number");
    }
    /* Exactly one operation; other keys ($device_id, $user_id, ...) pass through untouched. */
    for (void *it = json_object_iter(ev); it; it = json_object_iter_next(ev, it)) {
        const char *key = json_object_iter_key(it);
        size_t key_len = json_object_iter_key_len(it);
        if (key[0] != '$')
            continue;
        for (size_t i = 0; i < EVENT_NOPS; i++) {
            if (key_len != event_ops[i].len || memcmp(key, event_ops[i].name, key_len) != 0)
                continue;
            if (groups && !event_ops[i].groups)
                return event_fail(f, key, "'%s' is not supported on /groups", key);
            if (op != NULL)
                return event_fail(f, key, "more than one operation ('%s' and '%s')", op, key);
            op = event_ops[i].name;
            op_kind = event_ops[i].kind;
            op_val = json_object_iter_value(it);
            break;
        }
    }
    if (op == NULL)
        return event_fail(f, "", "missing operation: one of %s required",
                          groups ? "$set, $set_once, $unset, $union, $remove, $delete"
                                 : "$set, $set_once, $add, $union, $append, $remove, $unset, "
                                   "$delete");
    if (check_op(op_val, op, op_kind, f))
        return 1;
    v = json_object_get(ev, "$ip");
    if (v != NULL && !json_is_string(v))
        return event_fail(f, "$ip", "'$ip' must be a string");
    v = json_object_get(ev, "$time");
    if (v != NULL && !json_is_number(v))
        return event_fail(f, "$time", "'$time' must be a number");
    v = json_object_get(ev, "$ignore_time");
    if (v != NULL && !json_is_boolean(v))
        return event_fail(f, "$ignore_time", "'$ignore_time' must be true or false");
    return want_ip(cx, ev, "$ip", edit);
}

/* Index just past the string that starts at s[i] == '"' (the text is valid JSON). */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    size_t j = i + 1;

    for (;;) {
        const char *q = memchr(s + j, '"', n - j);
        size_t k, backslashes = 0;
        if (q == NULL)
            return n;
        k = (size_t)(q - s);
        /* Escaped if an odd number of backslashes precede it; the opening quote stops the walk. */
        while (s[k - 1 - backslashes] == '\\')
            backslashes++;
        if (backslashes % 2 == 0)
            return k + 1;
        j = k + 1;
    }
}

static size_t skip_blank(const char *s, size_t i, size_t n)
{
    while (i < n && event__blank[(unsigned char)s[i]])
        i++;
    return i;
}

/* Index just past the value that starts at s[i]. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    size_t depth = 0;

    if (s[i] == '"')
        return skip_string(s, i, n);
    if (s[i] != '{' && s[i] != '[') {
        while (i < n && !scalar_end[(unsigned char)s[i]])
            i++;
        return i;
    }
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, i, n);
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return i + 1;
        i++;
    }
    return n;
}

/*
 * In the object at s[i] == '{', the value of the member whose key is written `key` with no
 * escapes. Returns 1 with its span, 0 if there is none, -1 if there is none but some key holds
 * an escape (it may be `key` spelled differently: the caller cannot tell where it is).
 */
static int find_member(const char *s, size_t i, size_t n, const char *key, size_t *vs, size_t *ve)
{
    size_t klen = strlen(key);
    int escaped = 0;

    i = skip_blank(s, i + 1, n);
    while (i < n && s[i] == '"') {
        size_t kend = skip_string(s, i, n);
        int match = kend - i - 2 == klen && memcmp(s + i + 1, key, klen) == 0;
        escaped |= memchr(s + i + 1, '\\', kend - i - 2) != NULL;
        i = skip_blank(s, kend, n);  /* at ':' */
        i = skip_blank(s, i + 1, n); /* at the value */
        *vs = i;
        *ve = i = skip_value(s, i, n);
        if (match)
            return 1;
        i = skip_blank(s, i, n);
        if (i < n && s[i] == ',')
            i = skip_blank(s, i + 1, n);
    }
    return escaped ? -1 : 0;
}

/*
 * Copy s[from..to) without the blanks between tokens; both ends lie outside strings. `blanks` 0
 * says there are none (a plain copy then).
 */
static size_t minify(char *out, const char *s, size_t from, size_t to, int blanks)
{
    size_t o = 0, i = from;

    if (!blanks) {
        memcpy(out, s + from, to - from);
        return to - from;
    }
    while (i < to) {
        if (s[i] == '"') {
            size_t e = skip_string(s, i, to);
            memcpy(out + o, s + i, e - i);
            o += e - i;
            i = e;
        } else {
            out[o] = s[i];
            o += !event__blank[(unsigned char)s[i]];
            i++;
        }
    }
    return o;
}

/* Now, as the client would have written the clamped time: same unit, integer or real. */
static size_t format_now(char *buf, size_t size, uint64_t now_ms, int in_ms, int integer)
{
    unsigned long long sec = now_ms / 1000, frac = now_ms % 1000;
    int n;

    if (in_ms)
        n = snprintf(buf, size, integer ? "%llu" : "%llu.0", (unsigned long long)now_ms);
    else if (integer)
        n = snprintf(buf, size, "%llu", sec);
    else if (frac == 0)
        n = snprintf(buf, size, "%llu.0", sec);
    else {
        n = snprintf(buf, size, "%llu.%03llu", sec, frac);
        while (buf[n - 1] == '0')
            n--;
    }
    return (size_t)n;
}

/* Make room for `need` more payload bytes in the block. */
static int block_reserve(event_ctx_t *cx, size_t need)
{
    size_t hdr = cx->nslots * sizeof(log_record_t), ncap;
    char *nb;

    if (cx->cap - cx->used >= need)
        return 0;
    ncap = cx->cap * 2 > cx->used + need ? cx->cap * 2 : cx->used + need;
    nb = realloc(cx->block, hdr + ncap);
    if (nb == NULL)
        return -ENOMEM;
    cx->block = nb;
    cx->cap = ncap;
    return 0;
}

/* One text edit: replace [from, to) with rep[0..len). */
typedef struct {
    size_t from, to;
    const char *rep;
    size_t len;
} text_edit_t;

/*
 * The event s[start..end) as a payload: minified, with the edits spliced in. Returns its length,
 * 0 when the text cannot say where an edit goes (the caller serializes the tree instead), or
 * -ENOMEM.
 */
static ssize_t store_text(event_ctx_t *cx, size_t start, size_t end, const event_edit_t *edit)
{
    const char *s = cx->text;
    char ip_member[EVENT_IP_JSON_MAX + 16], now[32];
    text_edit_t ed[2];
    size_t ned = 0, ps = start, pe = end, vs, ve;
    int rc;

    if (edit->props_end != 0) {
        pe = edit->props_end; /* the fast path says where (and where time is) */
    } else if (edit->clamp_time || (edit->ip_key != NULL && strcmp(edit->ip_key, "ip") == 0)) {
        /* The edits go into properties: find it (and time in it). */
        if (find_member(s, start, end, "properties", &ps, &pe) != 1)
            return 0;
    }
    if (edit->clamp_time) {
        if (edit->time_to != 0) {
            vs = edit->time_from;
            ve = edit->time_to;
        } else if (find_member(s, ps, pe, "time", &vs, &ve) != 1) {
            return 0;
        }
        ed[ned].from = vs;
        ed[ned].to = ve;
        ed[ned].rep = now;
        ed[ned++].len =
            format_now(now, sizeof(now), cx->opts->now_ms, edit->time_in_ms, edit->time_integer);
    }
    if (edit->ip_key != NULL) {
        /* Before the closing brace of properties (or of the profile update): ,"ip":"1.2.3.4" */
        size_t n = 0, klen = strlen(edit->ip_key);
        if (!edit->ip_obj_empty)
            ip_member[n++] = ',';
        ip_member[n++] = '"';
        memcpy(ip_member + n, edit->ip_key, klen);
        n += klen;
        ip_member[n++] = '"';
        ip_member[n++] = ':';
        memcpy(ip_member + n, cx->ip_json, cx->ip_json_len);
        ed[ned].from = ed[ned].to = pe - 1;
        ed[ned].rep = ip_member;
        ed[ned++].len = n + cx->ip_json_len;
    }
    if ((rc = block_reserve(cx, end - start + sizeof(ip_member) + sizeof(now) + 1)) < 0)
        return rc;
    char *out = cx->block + cx->nslots * sizeof(log_record_t) + cx->used;
    size_t o = 0, pos = start;
    for (size_t i = 0; i < ned; i++) {
        o += minify(out + o, s, pos, ed[i].from, cx->blanks);
        memcpy(out + o, ed[i].rep, ed[i].len);
        o += ed[i].len;
        pos = ed[i].to;
    }
    o += minify(out + o, s, pos, end, cx->blanks);
    return (ssize_t)o;
}

/* The event as jansson serializes it, after applying the edits to the tree. */
static ssize_t store_tree(event_ctx_t *cx, json_t *ev, const event_edit_t *edit)
{
    size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER, n;
    uint64_t now_ms = cx->opts->now_ms;
    json_t *t = edit->clamp_time ? edit->time : NULL;
    int rc;

    if (t != NULL && json_is_integer(t))
        json_integer_set(t, (json_int_t)(edit->time_in_ms ? now_ms : now_ms / 1000));
    else if (t != NULL)
        json_real_set(t, edit->time_in_ms ? (double)now_ms : (double)now_ms / 1000.0);
    if (edit->ip_obj != NULL && json_object_set_nocheck(edit->ip_obj, edit->ip_key, cx->ip) != 0)
        return -ENOMEM;
    n = json_dumpb(ev, NULL, 0, flags);
    if (n == 0)
        return -ENOMEM; /* a parsed tree always serializes; only an allocation can fail */
    if ((rc = block_reserve(cx, n + 1)) < 0)
        return rc;
    if (json_dumpb(ev, cx->block + cx->nslots * sizeof(log_record_t) + cx->used, n, flags) != n)
        return -ENOMEM;
    return (ssize_t)n;
}

/* Append the record whose `n` payload bytes store_text/store_tree just wrote. */
static void record_add(event_ctx_t *cx, size_t n)
{
    cx->block[cx->nslots * sizeof(log_record_t) + cx->used + n] = '\0';
    /* Payload pointers are set once the block stops moving; the length is enough until then. */
    log_record_t *r = (log_record_t *)(void *)cx->block + cx->b->nrecords++;
    r->payload = NULL;
    r->len = n;
    r->time_ms = cx->opts->now_ms;
    r->endpoint = cx->opts->endpoint;
    cx->used += n + 1;
}

/* Store a valid event (text s[start..end)) after the payloads already in the block. */
static int event_store(event_ctx_t *cx, json_t *ev, size_t start, size_t end,
                       const event_edit_t *edit, event_failure_t *f)
{
    ssize_t n = 0;

    if (!cx->from_tree)
        n = store_text(cx, start, end, edit);
    if (n == 0)
        n = store_tree(cx, ev, edit);
    if (n < 0)
        return (int)n;
    if ((size_t)n > cx->opts->max_event_bytes)
        return event_fail(f, "", "event is larger than %zu bytes", cx->opts->max_event_bytes);
    record_add(cx, (size_t)n);
    return 0;
}

/* The fast path's store step (event_fast_store_fn): the text path of event_store. */
static int fast_store(void *ctx, size_t start, size_t end, const event_edit_t *edit)
{
    event_ctx_t *cx = ctx;
    ssize_t n;

    if (cx->b->nrecords == cx->nslots)
        return 1;
    cx->blanks = edit->blanks; /* exact for this event's text (event_scan may not have run) */
    n = store_text(cx, start, end, edit);
    if (n < 0)
        return (int)n;
    if (n == 0 || (size_t)n > cx->opts->max_event_bytes)
        return 1; /* jansson's path says why it is too large */
    record_add(cx, (size_t)n);
    return 0;
}

static int add_failure(event_ctx_t *cx, const event_failure_t *f)
{
    event_batch_t *b = cx->b;

    if (b->nfailures == cx->failures_cap) {
        size_t ncap = cx->failures_cap ? cx->failures_cap * 2 : EVENT_FAILURES_INITIAL;
        event_failure_t *nf = realloc(b->failures, ncap * sizeof(*nf));
        if (nf == NULL)
            return -ENOMEM;
        b->failures = nf;
        cx->failures_cap = ncap;
    }
    if (b->nfailures == 0)
        snprintf(b->error, sizeof(b->error), "%s", f->message);
    b->failures[b->nfailures++] = *f;
    return 0;
}

/* Validate and store one event; invalid ones are recorded as failures. */
static int event_one(event_ctx_t *cx, json_t *ev, size_t index, size_t start, size_t end)
{
    event_edit_t edit = {0};
    event_failure_t f;
    int rc;

    f.index = index;
    f.insert_id[0] = f.field[0] = f.message[0] = '\0';
    if (!json_is_object(ev))
        rc = event_fail(&f, "", "event %zu is not a JSON object", index);
    else if (cx->opts->endpoint == SEGMENT_EP_TRACK || cx->opts->endpoint == SEGMENT_EP_IMPORT)
        rc = validate_track(cx, ev, &f, &edit);
    else
        rc = validate_profile(cx, ev, &f, &edit);
    if (rc == 0)
        rc = event_store(cx, ev, start, end, &edit, &f);
    if (rc == 1)
        rc = add_failure(cx, &f);
    return rc;
}

/* Point the records at their payloads, now that the block has stopped moving. */
static void batch_finish(event_ctx_t *cx)
{
    event_batch_t *b = cx->b;

    if (b->nrecords == 0) {
        free(cx->block);
        b->records = NULL;
    } else {
        char *p = cx->block + cx->nslots * sizeof(log_record_t);
        for (size_t i = 0; i < b->nrecords; i++) {
            b->records[i].payload = p;
            p += b->records[i].len + 1;
        }
    }
}

static void batch_reset(event_batch_t *b)
{
    free(b->records);
    free(b->failures);
    b->records = NULL;
    b->failures = NULL;
    b->nrecords = b->nfailures = b->nevents = 0;
}

/*
 * Parse json[0..len) (its first non-blank byte at `i`) and build the batch. Runs inside the
 * arena: nothing jansson allocates here is freed one by one.
 */
static int batch_from_json(event_ctx_t *cx, const char *json, size_t i, size_t len)
{
    event_batch_t *b = cx->b;
    const event_opts_t *opts = cx->opts;
    json_error_t jerr;
    json_t *root;
    size_t nevents, pos;
    int rc;

    /* NUL in strings is allowed; lengths are used throughout. Duplicate keys are not refused (the
     * last one wins, as in JSON.parse) rather than losing a whole batch for one event; but the
     * text of such a request is not what was validated, so its events are stored as jansson
     * serializes them, each key once. */
    root = json_loadb(json, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && json_error_code(&jerr) == json_error_duplicate_key) {
        cx->from_tree = 1;
        root = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    }
    if (root == NULL && json_error_code(&jerr) == json_error_out_of_memory)
        return -ENOMEM;
    if (root == NULL) {
        snprintf(b->error, sizeof(b->error), "data, invalid JSON: %s", jerr.text);
        return -EINVAL;
    }
    nevents = json_is_array(root) ? json_array_size(root) : 1;
    if (nevents > opts->max_events)
        return -E2BIG;
    if (nevents == 0) {
        snprintf(b->error, sizeof(b->error), "data, missing or empty");
        return 0;
    }
    if (opts->ip != NULL) {
        /* The ip as JSON text once per request; an odd one goes the tree way. */
        if ((cx->ip = json_string(opts->ip)) == NULL) {
            /* Bad UTF-8, or no memory: only the unchecked variant can tell them apart. */
            if (json_string_nocheck(opts->ip) == NULL)
                return -ENOMEM;
            snprintf(b->error, sizeof(b->error), "client address is not valid UTF-8");
            return -EINVAL;
        }
        cx->ip_json_len = json_dumpb(cx->ip, cx->ip_json, sizeof(cx->ip_json), JSON_ENCODE_ANY);
        if (cx->ip_json_len == 0 || cx->ip_json_len > sizeof(cx->ip_json))
            cx->from_tree = 1;
    }
    cx->nslots = nevents;
    cx->cap = len + EVENT_EDIT_SLACK * nevents;
    cx->block = malloc(nevents * sizeof(log_record_t) + cx->cap);
    if (cx->block == NULL)
        return -ENOMEM;
    b->records = (log_record_t *)(void *)cx->block;
    b->nevents = nevents;
    if (!json_is_array(root)) {
        /* One object: jansson accepted the text as one value, so it spans all but the blanks. */
        while (event__blank[(unsigned char)json[len - 1]])
            len--;
        rc = event_one(cx, root, 0, i, len);
        b->records = (log_record_t *)(void *)cx->block;
        if (rc < 0)
            return rc;
    }
    /* An array: walk the text alongside the tree; each event's span is its record's source. */
    for (pos = i + 1, i = 0; json_is_array(root) && i < nevents; i++) {
        size_t start = skip_blank(json, pos, len), end = skip_value(json, start, len);
        pos = skip_blank(json, end, len) + 1; /* past the ',' */
        rc = event_one(cx, json_array_get(root, i), i, start, end);
        b->records = (log_record_t *)(void *)cx->block;
        if (rc < 0)
            return rc;
    }
    batch_finish(cx);
    return 0;
}

/*
 * The client's address as JSON text without jansson, when it is plain printable ASCII with
 * nothing to escape (what the HTTP layer gives): jansson's encoder writes such a string as
 * it is, between quotes. 0 if it is anything else (jansson's path handles it).
 */
static int ip_json_plain(event_ctx_t *cx, const char *ip)
{
    size_t n = strlen(ip);

    if (n + 2 > sizeof(cx->ip_json))
        return 0;
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)ip[k] < 0x20 || (unsigned char)ip[k] > 0x7e || ip[k] == '"' ||
            ip[k] == '\\')
            return 0;
    cx->ip_json[0] = '"';
    memcpy(cx->ip_json + 1, ip, n);
    cx->ip_json[n + 1] = '"';
    cx->ip_json_len = n + 2;
    return 1;
}

/*
 * The fast path (event_fast.c): no arena, no tree. `commas` is event_scan's count for an array
 * (a single object needs no scan). Returns 0 with the batch built, 1 to fall back (the batch and
 * the context are then as they were), or -ENOMEM.
 */
static int batch_fast(event_ctx_t *cx, const char *json, size_t i, size_t len, size_t commas)
{
    event_batch_t *b = cx->b;
    size_t nevents = 0;
    int rc, blanks = cx->blanks;

    if (cx->opts->ip != NULL && !ip_json_plain(cx, cx->opts->ip))
        return 1;
    /* Valid JSON has commas + 1 elements in a non-empty top-level array; fewer is not ours. */
    cx->nslots = json[i] == '[' ? commas + 1 : 1;
    cx->cap = len + EVENT_EDIT_SLACK * cx->nslots;
    cx->used = 0;
    cx->block = malloc(cx->nslots * sizeof(log_record_t) + cx->cap);
    if (cx->block == NULL)
        return -ENOMEM;
    rc = event__fast_track(json, i, len, cx->opts, fast_store, cx, &nevents);
    if (rc == 0 && nevents == b->nrecords) {
        b->records = (log_record_t *)(void *)cx->block;
        b->nevents = nevents;
        b->path = EVENT_PATH_FAST;
        batch_finish(cx);
        return 0;
    }
    free(cx->block);
    cx->block = NULL;
    cx->nslots = cx->used = cx->cap = 0;
    cx->ip_json_len = 0;
    cx->blanks = blanks;
    b->nrecords = 0;
    return rc < 0 ? rc : 1;
}

int event_batch_parse(event_batch_t *b, const char *json, size_t len, const event_opts_t *opts)
{
    event_ctx_t cx = {.b = b, .opts = opts, .text = json};
    event_arena_t arena;
    size_t commas, i = 0;
    int rc, fast;

    memset(b, 0, sizeof(*b));
    while (i < len && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n'))
        i++;
    if (i == len) {
        snprintf(b->error, sizeof(b->error), "data, missing or empty");
        return -EINVAL;
    }
    if (opts->endpoint < SEGMENT_EP_TRACK || opts->endpoint > SEGMENT_EP_IMPORT) {
        snprintf(b->error, sizeof(b->error), "unknown endpoint");
        return -EINVAL;
    }
    fast = opts->fast_path &&
           (opts->endpoint == SEGMENT_EP_TRACK || opts->endpoint == SEGMENT_EP_IMPORT);
    /* One event (a GET /track): the fast path checks depth itself, event_scan is not needed. */
    if (fast && json[i] == '{') {
        if ((rc = batch_fast(&cx, json, i, len, 0)) <= 0)
            goto out;
        fast = 0;
    }
    if (event_scan(json, len, &commas, &cx.blanks) < 0) {
        snprintf(b->error, sizeof(b->error), "data, nesting too deep (more than %d levels)",
                 EVENT_MAX_JSON_DEPTH);
        return -EINVAL;
    }
    if (json[i] == '[' && commas + 1 > opts->max_events) {
        rc = -E2BIG;
    } else {
        rc = 1;
        if (fast)
            rc = batch_fast(&cx, json, i, len, commas);
        if (rc == 1) {
            /* jansson's path: the reference, for everything the fast path left to it. */
            b->path = EVENT_PATH_JANSSON;
            if ((rc = arena_begin(&arena, len)) == 0) {
                rc = batch_from_json(&cx, json, i, len);
                arena_end(&arena);
            }
        }
    }
out:
    if (rc == 0)
        return 0;
    batch_reset(b);
    if (rc == -EINVAL)
        return rc; /* with its message */
    if (rc == -E2BIG)
        snprintf(b->error, sizeof(b->error), "data, more than %zu events", opts->max_events);
    else if (rc == -EACCES)
        snprintf(b->error, sizeof(b->error), "Invalid credentials: token not allowed");
    else
        snprintf(b->error, sizeof(b->error), "out of memory");
    return rc;
}

void event_batch_free(event_batch_t *b)
{
    batch_reset(b);
}

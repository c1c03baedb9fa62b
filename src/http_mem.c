/*
 * The memory budget of a loop's request buffers (http.h, config memory_budget_bytes): every
 * request buffer is charged to its loop's http_env_t before it is allocated and given back when
 * it is freed, so the bytes held for requests in flight never pass the budget, however many
 * connections there are and however slowly they send. A charge that would pass it is refused
 * (the caller answers 503, or pauses a read); bytes that exist already (a read that must be
 * kept) are charged anyway, so new requests are refused until the total drops. Each request
 * remembers what it was charged (`mem`, `mem_body`), so freeing it gives back exactly that.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "trackd/http.h"
#include "http_internal.h"

int http_env_charge(http_env_t *env, size_t bytes, int force)
{
    if (!force && (env->mem_used > env->mem_budget || bytes > env->mem_budget - env->mem_used)) {
        env->mem_refused++;
        return -ENOBUFS;
    }
    env->mem_used += bytes;
    if (env->mem_used > env->mem_peak)
        env->mem_peak = env->mem_used;
    return 0;
}

void http_env_release(http_env_t *env, size_t bytes)
{
    env->mem_used = bytes > env->mem_used ? 0 : env->mem_used - bytes;
}

size_t http_env_room(const http_env_t *env)
{
    return env->mem_used >= env->mem_budget ? 0 : env->mem_budget - env->mem_used;
}

int http_env_over_high_water(const http_env_t *env)
{
    if (env->mem_budget == SIZE_MAX)
        return 0;
    return env->mem_used >= env->mem_budget / 100 * HTTP_MEM_HIGH_WATER_PCT;
}

/* Charge `bytes` to the request's env and remember them on the request. */
int http__req_charge(http_request_t *r, size_t bytes, int force)
{
    int err;

    if (r->env == NULL || bytes == 0)
        return 0;
    if ((err = http_env_charge(r->env, bytes, force)) != 0)
        return err;
    r->mem += bytes;
    return 0;
}

int http_request_charge(http_request_t *req, size_t bytes, int force)
{
    return http__req_charge(req, bytes, force);
}

void http_request_release(http_request_t *req, size_t bytes)
{
    if (bytes > req->mem - req->mem_body)
        bytes = req->mem - req->mem_body; /* never the body's share: drop_body gives that back */
    req->mem -= bytes;
    if (req->env)
        http_env_release(req->env, bytes);
}

http_env_t *http_request_env(const http_request_t *req)
{
    return req->env;
}

/* Make sure `cap` bytes of body are charged (reserved or allocated). */
int http__body_charge(http_request_t *r, size_t cap)
{
    int err;

    if (cap <= r->mem_body)
        return 0;
    if ((err = http__req_charge(r, cap - r->mem_body, 0)) != 0)
        return err;
    r->mem_body = cap;
    return 0;
}

int http_request_reserve_body(http_request_t *req)
{
    if (!req->has_length || req->content_length == 0)
        return 0;
    return http__body_charge(req, (size_t)req->content_length + 1);
}

void http_request_drop_body(http_request_t *req)
{
    free(req->body);
    req->body = NULL;
    req->body_cap = 0;
    req->body_len = 0;
    if (req->env)
        http_env_release(req->env, req->mem_body);
    req->mem -= req->mem_body;
    req->mem_body = 0;
}

/*
 * Listening sockets, owned by the master (master.c): bound once, inherited by every worker
 * across fork(), reused (dup) by a reload whose addresses did not change, and handed to a new
 * binary across an upgrade through the environment ("fd:addr;fd:addr"). Sockets are matched by
 * their address as written in the config ("127.0.0.1:8001", "[::1]:8000", ":8000").
 */
#ifndef TRACKD_LISTENER_H
#define TRACKD_LISTENER_H

#include <stddef.h>

#include "trackd/config.h"

/** Backlog of every listening socket; the kernel caps it at net.core.somaxconn. */
#define LISTENER_BACKLOG 4096
#define LISTENER_ADDR_MAX 300

/** One listening socket. */
typedef struct {
    char addr[LISTENER_ADDR_MAX]; /* "HOST:PORT" as configured */
    int fd;                       /* -1 once closed or taken */
    int index;                    /* 0: shared by every worker; i: worker i's own port */
} listener_t;

/** The sockets of one configuration (or handed over by an old master). */
typedef struct {
    listener_t *items;
    size_t n;
} listener_set_t;

/**
 * Check that `cfg` (finished) gives something to listen on and that worker_listen's ports
 * stay within 65535. Returns 0 or -EINVAL with a message in `err`.
 */
int listener_check_config(const config_t *cfg, char *err, size_t errlen);

/**
 * Fill `set` with the sockets `cfg` asks for: `listen` (index 0) then one per worker on
 * worker_listen's PORT+i-1. An address found in `reuse` is dup()ed from it; one found in
 * `inherited` is taken over (its fd there becomes -1); any other is bound anew (non-blocking,
 * close-on-exec, SO_REUSEADDR, backlog LISTENER_BACKLOG). An empty host binds every interface:
 * one dual-stack IPv6 socket, or IPv4 where IPv6 is unavailable; a name binds the first of its
 * addresses that works. Returns 0, or a negative errno with a message in `err` (nothing open).
 */
int listener_set_open(listener_set_t *set, const config_t *cfg, const listener_set_t *reuse,
                      listener_set_t *inherited, char *err, size_t errlen);

/** Close every socket still open in `set` and free it; `set` is left empty. */
void listener_set_close(listener_set_t *set);

/**
 * Parse a hand-over string "fd:addr;fd:addr..." into `set` (the sockets are not checked here;
 * listener_set_open checks one before taking it). Returns 0 or -ENOMEM / -EINVAL.
 */
int listener_set_parse(listener_set_t *set, const char *s);

/** Format `set` as "fd:addr;fd:addr..." into a malloc'ed string (NULL on ENOMEM). */
char *listener_set_format(const listener_set_t *set);

#endif

/*
 * Listening sockets for the master. Each address is bound once and then only shared: workers
 * inherit the descriptor across fork(), a reload dup()s it, an upgrade passes it to the new
 * binary. So the socket, and the connections queued in its backlog, outlive any worker, and no
 * two sockets ever listen on one address.
 */
#include "trackd/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trackd/msg.h"

int listener_check_config(const config_t *cfg, char *err, size_t errlen)
{
    char host[256];
    int port;

    if (cfg->listen[0] == '\0' && cfg->worker_listen[0] == '\0') {
        snprintf(err, errlen, "nothing to listen on: listen and worker_listen are both empty");
        return -EINVAL;
    }
    if (cfg->listen[0] != '\0' && config_parse_hostport(cfg->listen, host, sizeof(host), &port)) {
        snprintf(err, errlen, "bad listen '%s'", cfg->listen);
        return -EINVAL;
    }
    if (cfg->worker_listen[0] != '\0') {
        if (config_parse_hostport(cfg->worker_listen, host, sizeof(host), &port) < 0) {
            snprintf(err, errlen, "bad worker_listen '%s'", cfg->worker_listen);
            return -EINVAL;
        }
        if (port + cfg->workers - 1 > 65535) {
            snprintf(err, errlen, "worker_listen %s with %d workers needs ports up to %d (> 65535)",
                     cfg->worker_listen, cfg->workers, port + cfg->workers - 1);
            return -EINVAL;
        }
    }
    return 0;
}

static int listener_bind(int family, const struct sockaddr *sa, socklen_t salen, int dual)
{
    int fd, one = 1, zero = 0, rc;

    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* SO_REUSEADDR: bind even while connections of a previous run linger in TIME_WAIT.
     * Deliberately not SO_REUSEPORT: each address is bound once and then shared (see above), so
     * nothing needs a second socket on a port, and with SO_REUSEPORT a stray or second trackd
     * would bind the same port without an error and silently take a share of its connections. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (dual && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
        bind(fd, sa, salen) < 0 || listen(fd, LISTENER_BACKLOG) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* A new listening socket on HOST:PORT ("" = every interface). Returns the fd or -errno. */
static int listener_bind_hostport(const char *host, int port)
{
    struct addrinfo hints, *res, *ai;
    char portstr[16];
    int fd = -EADDRNOTAVAIL, rc;

    if (host[0] == '\0') {
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)port),
                                  .sin6_addr = IN6ADDR_ANY_INIT};
        struct sockaddr_in s4 = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY)};
        fd = listener_bind(AF_INET6, (struct sockaddr *)&s6, sizeof(s6), 1);
        if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL)
            fd = listener_bind(AF_INET, (struct sockaddr *)&s4, sizeof(s4), 0);
        return fd;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    if ((rc = getaddrinfo(host, portstr, &hints, &res)) != 0)
        return rc == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = listener_bind(ai->ai_family, ai->ai_addr, ai->ai_addrlen, 0);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

/* Take the socket for `addr` over from `inherited`, if it holds a listening one. */
static int listener_take(listener_set_t *inherited, const char *addr)
{
    for (size_t i = 0; inherited && i < inherited->n; i++) {
        listener_t *l = &inherited->items[i];
        int on = 0, fd;
        socklen_t len = sizeof(on);

        if (l->fd < 0 || strcmp(l->addr, addr) != 0)
            continue;
        fd = l->fd;
        l->fd = -1;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on) {
            msg_warn("inherited fd %d for %s is not a listening socket; binding anew", fd, addr);
            close(fd);
            return -1;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        msg_info("listening on %s (socket inherited from the old master)", addr);
        return fd;
    }
    return -1;
}

static int listener_get(const listener_set_t *reuse, listener_set_t *inherited, const char *addr,
                        const char *host, int port)
{
    int fd;

    for (size_t i = 0; reuse && i < reuse->n; i++)
        if (reuse->items[i].fd >= 0 && strcmp(reuse->items[i].addr, addr) == 0) {
            fd = fcntl(reuse->items[i].fd, F_DUPFD_CLOEXEC, 3);
            return fd < 0 ? -errno : fd;
        }
    if ((fd = listener_take(inherited, addr)) >= 0)
        return fd;
    fd = listener_bind_hostport(host, port);
    if (fd >= 0)
        msg_info("listening on %s", addr);
    return fd;
}

int listener_set_open(listener_set_t *set, const config_t *cfg, const listener_set_t *reuse,
                      listener_set_t *inherited, char *err, size_t errlen)
{
    listener_set_t s = {NULL, 0};
    char host[256];
    size_t want;
    int port, rc;

    if ((rc = listener_check_config(cfg, err, errlen)) < 0)
        return rc;
    want = (cfg->listen[0] ? 1 : 0) + (cfg->worker_listen[0] ? (size_t)cfg->workers : 0);
    s.items = calloc(want, sizeof(*s.items));
    if (s.items == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < want; i++) {
        listener_t *l = &s.items[i];
        if (i == 0 && cfg->listen[0]) {
            config_parse_hostport(cfg->listen, host, sizeof(host), &port);
            snprintf(l->addr, sizeof(l->addr), "%s", cfg->listen);
            l->index = 0;
        } else {
            config_parse_hostport(cfg->worker_listen, host, sizeof(host), &port);
            l->index = (int)i + (cfg->listen[0] ? 0 : 1);
            port += l->index - 1;
            snprintf(l->addr, sizeof(l->addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        }
        l->fd = listener_get(reuse, inherited, l->addr, host, port);
        if (l->fd < 0) {
            rc = l->fd;
            snprintf(err, errlen, "cannot listen on %s: %s", l->addr, strerror(-rc));
            s.n = i;
            listener_set_close(&s);
            return rc;
        }
        s.n = i + 1;
    }
    *set = s;
    return 0;
}

void listener_set_close(listener_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i].fd >= 0)
            close(set->items[i].fd);
    free(set->items);
    set->items = NULL;
    set->n = 0;
}

int listener_set_parse(listener_set_t *set, const char *s)
{
    const char *p = s;

    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', n);
        char *num_end;
        long fd = strtol(p, &num_end, 10);
        listener_t *items;

        if (colon == NULL || num_end != colon || fd < 0 || fd > INT32_MAX ||
            (size_t)(p + n - colon - 1) >= LISTENER_ADDR_MAX)
            return -EINVAL;
        items = realloc(set->items, (set->n + 1) * sizeof(*items));
        if (items == NULL)
            return -ENOMEM;
        set->items = items;
        items[set->n] = (listener_t){.fd = (int)fd, .index = 0};
        snprintf(items[set->n].addr, LISTENER_ADDR_MAX, "%.*s", (int)(p + n - colon - 1),
                 colon + 1);
        set->n++;
        p = end ? end + 1 : p + n;
    }
    return 0;
}

char *listener_set_format(const listener_set_t *set)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    if (f == NULL)
        return NULL;
    for (size_t i = 0; i < set->n; i++)
        fprintf(f, "%s%d:%s", i ? ";" : "", set->items[i].fd, set->items[i].addr);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

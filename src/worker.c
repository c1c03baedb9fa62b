/*
 * A worker process: one libuv loop that owns the log of its slot (log.h), the API state
 * (track.h) and the HTTP server (http.h) on the listening sockets inherited from the master.
 *
 * Stopping is graceful and ordered so that nothing acknowledged is lost and nothing in flight is
 * cut: SIGTERM/SIGINT (or the master's death) closes the listeners, lets the server finish the
 * requests it has (idle connections after a short grace), then closes the log, which makes
 * everything queued durable and runs the last callbacks; the loop then runs out of handles and the
 * worker exits 0. The master enforces shutdown_timeout_ms from outside.
 */
#include "trackd/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <uv.h>

#include "trackd/http.h"
#include "trackd/log.h"
#include "trackd/msg.h"
#include "trackd/track.h"

/** How often the worker checks that its master is still there (a fallback to PDEATHSIG). */
#define WORKER_PARENT_CHECK_MS 1000
/** Period of the timer whose lateness measures event-loop lag (track_note_loop_lag). */
#define WORKER_LAG_TICK_MS 50

typedef struct {
    uv_loop_t loop;
    const config_t *cfg;
    int index;
    log_t *log;
    track_t *track;
    http_server_t *http;
    uv_tcp_t *listeners;
    size_t nlisteners;
    uv_signal_t sigterm, sigint;
    uv_timer_t parent_timer;
    uv_timer_t lag_timer;
    uint64_t lag_due_ns; /* when the lag timer should fire next (uv_hrtime) */
    pid_t ppid;
    int stopping;
    int exit_code;
} worker_t;

static void worker_on_connection(uv_stream_t *listener, int status)
{
    worker_t *w = listener->data;
    int err;

    if (status < 0) {
        msg_warn("accept: %s", uv_strerror(status));
        return;
    }
    err = http_server_accept(w->http, listener);
    if (err && err != UV_EAGAIN)
        msg_warn("accept: %s", uv_strerror(err));
}

static void worker_on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void worker_on_log_closed(void *arg)
{
    worker_t *w = arg;

    w->log = NULL;
    /* Last handles: once they are closed the loop has nothing left and uv_run returns. */
    uv_close((uv_handle_t *)&w->sigterm, worker_on_handle_closed);
    uv_close((uv_handle_t *)&w->sigint, worker_on_handle_closed);
    uv_close((uv_handle_t *)&w->parent_timer, worker_on_handle_closed);
    uv_close((uv_handle_t *)&w->lag_timer, worker_on_handle_closed);
}

static void worker_on_http_stopped(void *arg)
{
    worker_t *w = arg;

    track_set_server(w->track, NULL);
    log_close(w->log, worker_on_log_closed, w);
}

static void worker_stop(worker_t *w, const char *why)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    msg_info("stopping (%s)", why);
    for (size_t i = 0; i < w->nlisteners; i++)
        uv_close((uv_handle_t *)&w->listeners[i], worker_on_handle_closed);
    uv_timer_stop(&w->parent_timer);
    uv_timer_stop(&w->lag_timer);
    http_server_stop(w->http, worker_on_http_stopped, w);
}

static void worker_on_signal(uv_signal_t *sig, int signum)
{
    worker_stop(sig->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/*
 * The loop's lag: how much later than due this timer runs. A loop that spends long stretches in
 * callbacks fires it late: every request waiting to be read waits that long too (/metrics).
 */
static void worker_on_lag_timer(uv_timer_t *t)
{
    worker_t *w = t->data;
    uint64_t now = uv_hrtime();

    track_note_loop_lag(w->track, now > w->lag_due_ns ? now - w->lag_due_ns : 0);
    w->lag_due_ns = now + (uint64_t)WORKER_LAG_TICK_MS * 1000000;
}

/* Once a second: is the master still there; and the handler stacks the last second needed. */
static void worker_on_parent_timer(uv_timer_t *t)
{
    worker_t *w = t->data;

    http_server_trim(w->http);
    if (getppid() != w->ppid)
        worker_stop(w, "master gone");
}

int worker_run(const config_t *cfg, int index, const int *listen_fds, size_t nfds, int ready_fd)
{
    worker_t w;
    log_config_t lc;
    char role[32];
    int err;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.index = index;
    w.exit_code = 1;
    w.ppid = getppid();
    /* Die with the master: a SIGTERM when it goes, so the stop stays graceful. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    snprintf(role, sizeof(role), "worker %d", index);
    msg_set_role(role);
    signal(SIGPIPE, SIG_IGN);

    if ((err = uv_loop_init(&w.loop)) != 0) {
        msg_error("uv_loop_init: %s", uv_strerror(err));
        return 1;
    }
    log_config_from(&lc, cfg, index);
    if ((err = log_open(&w.log, &w.loop, &lc)) != 0) {
        msg_error("cannot open the event log in %s: %s", cfg->data_dir, strerror(-err));
        goto out_loop;
    }
    w.track = track_new(cfg, w.log);
    if (w.track) {
        http_handler_t h = track_handler(w.track);
        w.http = http_server_new(&w.loop, cfg, &h);
    }
    w.listeners = calloc(nfds ? nfds : 1, sizeof(*w.listeners));
    if (w.track == NULL || w.http == NULL || w.listeners == NULL) {
        msg_error("out of memory starting the worker");
        goto out_log;
    }
    track_set_server(w.track, w.http);
    track_set_worker(w.track, index);
    for (size_t i = 0; i < nfds; i++) {
        uv_tcp_init(&w.loop, &w.listeners[i]);
        w.listeners[i].data = &w;
        w.nlisteners++;
        err = uv_tcp_open(&w.listeners[i], listen_fds[i]);
        if (err == 0)
            err = uv_listen((uv_stream_t *)&w.listeners[i], SOMAXCONN, worker_on_connection);
        if (err) {
            msg_error("listening socket %d: %s", listen_fds[i], uv_strerror(err));
            goto out_listeners;
        }
    }
    uv_signal_init(&w.loop, &w.sigterm);
    uv_signal_init(&w.loop, &w.sigint);
    w.sigterm.data = w.sigint.data = &w;
    uv_signal_start(&w.sigterm, worker_on_signal, SIGTERM);
    uv_signal_start(&w.sigint, worker_on_signal, SIGINT);
    uv_timer_init(&w.loop, &w.parent_timer);
    w.parent_timer.data = &w;
    uv_timer_start(&w.parent_timer, worker_on_parent_timer, WORKER_PARENT_CHECK_MS,
                   WORKER_PARENT_CHECK_MS);
    uv_timer_init(&w.loop, &w.lag_timer);
    w.lag_timer.data = &w;
    w.lag_due_ns = uv_hrtime() + (uint64_t)WORKER_LAG_TICK_MS * 1000000;
    uv_timer_start(&w.lag_timer, worker_on_lag_timer, WORKER_LAG_TICK_MS, WORKER_LAG_TICK_MS);
    if (getppid() != w.ppid)
        worker_stop(&w, "master gone");

    if (ready_fd >= 0) {
        char one = 'R';
        ssize_t n;
        do
            n = write(ready_fd, &one, 1);
        while (n < 0 && errno == EINTR);
        close(ready_fd);
    }
    msg_debug("accepting on %zu socket(s)", nfds);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    w.exit_code = 0;
    http_server_free(w.http);
    track_free(w.track);
    free(w.listeners);
    goto out_loop;

out_listeners:
    for (size_t i = 0; i < w.nlisteners; i++)
        uv_close((uv_handle_t *)&w.listeners[i], worker_on_handle_closed);
out_log:
    if (w.log)
        log_close(w.log, NULL, NULL);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    http_server_free(w.http);
    track_free(w.track);
    free(w.listeners);
out_loop:
    if (uv_loop_close(&w.loop) != 0)
        msg_warn("event loop closed with handles still open");
    if (ready_fd >= 0 && w.exit_code != 0)
        close(ready_fd);
    return w.exit_code;
}

/*
 * The master: owns the listening sockets, forks the workers and keeps them running.
 *
 * Sockets are opened here, once, and inherited by every worker, so a worker that dies or is
 * replaced never takes a listening socket (and the connections queued on it) with it. A
 * "generation" is one config plus the sockets opened for it; a reload builds a new generation
 * (reusing, by dup(), every socket whose address did not change) and replaces workers one at a
 * time, each new one only after it said it accepts.
 *
 * The loop is poll(2) on a signalfd, the workers' readiness pipes and the upgrade pipe, with a
 * timeout computed from the nearest deadline: a SIGCHLD wakes it at once, so a dead worker is
 * replaced within a fork's time. libuv is deliberately not used in this process: its signal
 * handlers and loop state would be inherited by every forked worker (which runs its own libuv
 * loop) and would deliver the worker's signals to the master's loop.
 */
#include "trackd/master.h"

#include <libutil.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "trackd/listener.h"
#include "trackd/msg.h"
#include "trackd/worker.h"

/* A new worker must accept within this (log recovery included), at start-up and on reload. */
#define MASTER_READY_TIMEOUT_MS 30000
/* A new binary started by SIGUSR2 must have all its workers ready within this. */
#define MASTER_UPGRADE_TIMEOUT_MS 30000
/* Restart times remembered for the intensity check (restart_intensity is at most 1000). */
#define MASTER_RESTART_HISTORY 1024

typedef struct master_gen_s master_gen_t;
struct master_gen_s {
    config_t cfg;
    listener_set_t ls;
    unsigned id;
    master_gen_t *next;
};

typedef enum {
    CHILD_ACTIVE,   /* the worker serving index i (restarted if it dies) */
    CHILD_STARTING, /* a reload's replacement for index i, not yet ready */
    CHILD_RETIRING, /* told to stop (replaced, or shutting down); its exit is expected */
} master_role_t;

typedef struct {
    pid_t pid;
    int index;
    master_role_t role;
    master_gen_t *gen;
    int ready_fd; /* read end of the readiness pipe; -1 once the byte or EOF came */
    int ready;
    int term_sent;
    uint64_t started_ms;
} master_child_t;

typedef enum { MASTER_STARTING, MASTER_RUNNING, MASTER_STOPPING } master_state_t;

typedef enum {
    UPGRADE_NONE,
    UPGRADE_WAITING,   /* new master started, not ready yet */
    UPGRADE_CONFIRMED, /* it serves: we are on our way out */
    UPGRADE_ABANDONED, /* it failed or timed out; we keep serving and reap it when it exits */
} master_upgrade_t;

typedef struct {
    int argc;
    char **argv;
    char exe[PATH_MAX]; /* the binary's path, resolved at start: SIGUSR2 runs what is there now */
    pid_t pid;
    sigset_t oldmask;
    int sfd;
    struct pidfh *pfh;
    char pidpath[sizeof(((config_t *)0)->pidfile)];
    char oldbin[sizeof(((config_t *)0)->pidfile) + 8];

    master_gen_t *gens; /* every generation still referenced */
    master_gen_t *cur;  /* what new and restarted workers run */
    master_gen_t *prev; /* during a reload: what to roll back to */
    unsigned next_gen_id;
    listener_set_t inherited; /* sockets handed over by an old master (SIGUSR2) */
    int notify_fd;            /* TRACKD_UPGRADE_FD: tell the old master we are ready */

    master_child_t *kids;
    size_t nkids, capkids;

    master_state_t state;
    uint64_t start_deadline;
    int rolling, rollback;
    uint64_t roll_deadline;
    uint64_t stop_deadline;
    int exit_code;
    int unclean;

    int pending_reload, pending_upgrade; /* SIGHUP / SIGUSR2 not acted on yet */

    uint64_t restarts[MASTER_RESTART_HISTORY];
    size_t nrestarts;

    pid_t up_pid;        /* new master started by SIGUSR2, until reaped */
    master_upgrade_t up; /* where that upgrade stands */
    int up_fd;           /* its readiness pipe */
    uint64_t up_deadline;
} master_t;

/* "trackd: master [127.0.0.1:8000]": long enough, too, that libbsd need not pad the title. */
static void master_title(const config_t *cfg, const char *suffix)
{
    setproctitle("master [%s]%s", cfg->listen[0] ? cfg->listen : cfg->worker_listen, suffix);
}

static uint64_t master_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "exited with status 3" / "killed by signal 9 (KILL)". */
static void master_describe(int status, char *out, size_t len)
{
    if (WIFEXITED(status)) {
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(out, len, "killed by signal %d (SIG%s)%s", WTERMSIG(status), abbrev ? abbrev : "?",
                 WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(out, len, "stopped with wait status 0x%x", (unsigned)status);
    }
}

/* ---- generations ------------------------------------------------------------------------ */

static void master_gen_free(master_gen_t *g)
{
    listener_set_close(&g->ls);
    config_free(&g->cfg);
    free(g);
}

/*
 * Build a generation for `cfg`: open (or reuse) its sockets. On success the generation owns
 * what `cfg` owned; on failure `cfg` is untouched and a message is in `err`.
 */
static int master_gen_new(master_t *m, const config_t *cfg, master_gen_t **out, char *err,
                          size_t errlen)
{
    master_gen_t *g = calloc(1, sizeof(*g));
    int rc;

    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rc = listener_set_open(&g->ls, cfg, m->cur ? &m->cur->ls : NULL, &m->inherited, err, errlen);
    if (rc < 0) {
        free(g);
        return rc;
    }
    g->cfg = *cfg;
    g->id = ++m->next_gen_id;
    g->next = m->gens;
    m->gens = g;
    *out = g;
    return 0;
}

/* Free generations that are neither current nor a rollback target and run no worker. */
static void master_gen_sweep(master_t *m)
{
    master_gen_t **pp = &m->gens;

    while (*pp) {
        master_gen_t *g = *pp;
        int used = g == m->cur || g == m->prev;
        for (size_t i = 0; i < m->nkids && !used; i++)
            used = m->kids[i].gen == g;
        if (used) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        master_gen_free(g);
    }
}

/* ---- workers ---------------------------------------------------------------------------- */

static master_child_t *master_find_pid(master_t *m, pid_t pid)
{
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].pid == pid)
            return &m->kids[i];
    return NULL;
}

static master_child_t *master_find_role(master_t *m, int index, master_role_t role)
{
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].index == index && m->kids[i].role == role)
            return &m->kids[i];
    return NULL;
}

/* In the forked child: drop what is the master's, then become worker `index`. */
static void master_child_main(master_t *m, int index, master_gen_t *g, int ready_fd)
    __attribute__((noreturn));

static void master_child_main(master_t *m, int index, master_gen_t *g, int ready_fd)
{
    int fds[2], nfds = 0, rc;
    const char *title = NULL;
    char role[32];

    /* The worker ends with the master rather than serve unsupervised; the check after prctl
     * covers a master that died before it. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != m->pid)
        _exit(MASTER_EXIT_FAILURE);
    close(m->sfd);
    if (m->pfh)
        close(pidfile_fileno(m->pfh));
    if (m->up_fd >= 0)
        close(m->up_fd);
    if (m->notify_fd >= 0)
        close(m->notify_fd);
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].ready_fd >= 0)
            close(m->kids[i].ready_fd);
    listener_set_close(&m->inherited);
    for (master_gen_t *o = m->gens; o; o = o->next)
        for (size_t i = 0; i < o->ls.n; i++) {
            const listener_t *l = &o->ls.items[i];
            if (o == g && (l->index == 0 || l->index == index)) {
                fds[nfds++] = l->fd;
                if (title == NULL || l->index == index)
                    title = l->addr;
            } else {
                close(l->fd);
            }
        }
    /* SIGPIPE stays ignored, as a server wants. HUP and USR2 are the master's business: a
     * worker ignores them (a `kill -HUP` of the whole process group must not kill workers). */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
    snprintf(role, sizeof(role), "worker %d", index);
    msg_set_role(role);
    setproctitle("worker %d [%s]", index, title ? title : "");
    rc = worker_run(&g->cfg, index, fds, (size_t)nfds, ready_fd);
    /* exit(), not _exit(): the leak checker of a sanitized build runs at exit. */
    exit(rc);
}

static int master_spawn(master_t *m, int index, master_gen_t *g, master_role_t role)
{
    int p[2];
    pid_t pid;

    if (m->nkids == m->capkids) {
        size_t cap = m->capkids ? m->capkids * 2 : 16;
        master_child_t *k = realloc(m->kids, cap * sizeof(*k));
        if (k == NULL)
            return -ENOMEM;
        m->kids = k;
        m->capkids = cap;
    }
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(p[0]);
        close(p[1]);
        return rc;
    }
    if (pid == 0) {
        close(p[0]);
        master_child_main(m, index, g, p[1]);
    }
    close(p[1]);
    m->kids[m->nkids++] = (master_child_t){.pid = pid,
                                           .index = index,
                                           .role = role,
                                           .gen = g,
                                           .ready_fd = p[0],
                                           .started_ms = master_now_ms()};
    msg_debug("worker %d started (pid %d)", index, (int)pid);
    return 0;
}

/*
 * Signal a worker. SIGTERM is sent once, and only to a worker that said it is ready: before
 * that it has no handler yet and SIGTERM would kill it outright; a worker still starting gets
 * it with its ready byte (or never, if it dies first or the stop deadline SIGKILLs it).
 */
static void master_term(master_child_t *k, int sig)
{
    if (sig == SIGTERM) {
        if (k->term_sent)
            return;
        k->term_sent = 1;
        if (!k->ready)
            return;
    }
    kill(k->pid, sig);
}

static void master_remove(master_t *m, master_child_t *k)
{
    if (k->ready_fd >= 0)
        close(k->ready_fd);
    *k = m->kids[--m->nkids];
}

/* ---- stopping ------------------------------------------------------------------------- */

static void master_upgrade_abandon(master_t *m, const char *why);

static void master_stop(master_t *m, int code, const char *why)
{
    if (m->state == MASTER_STOPPING)
        return;
    if (code > m->exit_code)
        m->exit_code = code;
    m->state = MASTER_STOPPING;
    m->rolling = 0;
    if (m->up == UPGRADE_WAITING) {
        kill(m->up_pid, SIGTERM);
        master_upgrade_abandon(m, "this master is stopping");
    }
    msg_info("stopping %zu worker(s) (%s; up to %d ms to finish)", m->nkids, why,
             m->cur->cfg.shutdown_timeout_ms);
    master_title(&m->cur->cfg, " (stopping)");
    m->stop_deadline = master_now_ms() + (uint64_t)m->cur->cfg.shutdown_timeout_ms;
    for (size_t i = 0; i < m->nkids; i++) {
        m->kids[i].role = CHILD_RETIRING;
        master_term(&m->kids[i], SIGTERM);
    }
}

static void master_stop_timeout(master_t *m)
{
    for (size_t i = 0; i < m->nkids; i++) {
        msg_warn("worker %d (pid %d) still running %d ms after SIGTERM: killing it",
                 m->kids[i].index, (int)m->kids[i].pid, m->cur->cfg.shutdown_timeout_ms);
        master_term(&m->kids[i], SIGKILL);
        m->unclean = 1;
    }
    if (m->up_pid > 0 && m->up != UPGRADE_CONFIRMED)
        kill(m->up_pid, SIGKILL);
    m->stop_deadline = 0;
}

/* mkdir -p; only the last error matters. */
static int master_mkdirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    return 0;
}

/* ---- reload (SIGHUP): rolling replacement ------------------------------------------------ */

static void master_roll_fail(master_t *m, int index, master_child_t *k, const char *why);

/* Advance the rolling restart: start the next replacement, or finish. */
static void master_roll_step(master_t *m)
{
    int rc;

    if (!m->rolling || m->state == MASTER_STOPPING)
        return;
    for (int i = 1; i <= m->cur->cfg.workers; i++) {
        master_child_t *active;
        if (master_find_role(m, i, CHILD_STARTING))
            return; /* wait for it */
        active = master_find_role(m, i, CHILD_ACTIVE);
        if (active && active->gen == m->cur)
            continue;
        if ((rc = master_spawn(m, i, m->cur, CHILD_STARTING)) < 0) {
            char why[256];
            snprintf(why, sizeof(why), "could not be started: %s", strerror(-rc));
            master_roll_fail(m, i, NULL, why);
            return;
        }
        m->roll_deadline = master_now_ms() + MASTER_READY_TIMEOUT_MS;
        return;
    }
    /* Every index runs the new generation: retire workers beyond the new count. */
    for (size_t j = 0; j < m->nkids; j++) {
        master_child_t *k = &m->kids[j];
        if (k->role == CHILD_ACTIVE && k->index > m->cur->cfg.workers) {
            k->role = CHILD_RETIRING;
            master_term(k, SIGTERM);
        }
    }
    m->rolling = 0;
    m->roll_deadline = 0;
    m->prev = NULL;
    master_title(&m->cur->cfg, "");
    msg_info("%s: %d worker(s) now run generation %u",
             m->rollback ? "rollback done" : "reload done", m->cur->cfg.workers, m->cur->id);
    master_gen_sweep(m);
}

/*
 * The replacement for worker `index` failed (`k`: it is still running and gets killed): go back
 * to the previous generation, replacing again the workers already switched.
 */
static void master_roll_fail(master_t *m, int index, master_child_t *k, const char *why)
{
    if (k) {
        k->role = CHILD_RETIRING;
        master_term(k, SIGKILL);
    }
    m->roll_deadline = 0;
    if (m->rollback || m->prev == NULL) {
        msg_error("rollback: new worker %d %s; workers keep running as they are", index, why);
        m->rolling = 0;
        m->prev = NULL;
        master_gen_sweep(m);
        return;
    }
    msg_error("reload failed: new worker %d %s; rolling back to the previous configuration", index,
              why);
    master_gen_t *failed = m->cur;
    m->cur = m->prev;
    m->prev = failed;
    m->rollback = 1;
    msg_set_level(m->cur->cfg.log_level);
    master_roll_step(m);
}

static void master_reload(master_t *m)
{
    config_t cfg;
    char err[1024];
    master_gen_t *g;
    int rc;

    msg_info("SIGHUP: reloading the configuration");
    config_defaults(&cfg);
    rc = config_from_args(&cfg, m->argc, m->argv, err, sizeof(err));
    if (rc == 0) {
        config_finish(&cfg);
        if (strcmp(cfg.pidfile, m->pidpath) != 0) {
            msg_warn("reload: pidfile cannot change while running; keeping %s", m->pidpath);
            snprintf(cfg.pidfile, sizeof(cfg.pidfile), "%s", m->pidpath);
        }
        if ((rc = master_mkdirs(cfg.data_dir)) < 0)
            msg_warn("cannot create data_dir %s: %s", cfg.data_dir, strerror(-rc));
        rc = master_gen_new(m, &cfg, &g, err, sizeof(err));
    }
    if (rc != 0) {
        msg_error("reload failed: %s; keeping the running configuration",
                  rc == 1 ? "--help or --version on the command line" : err);
        config_free(&cfg);
        return;
    }
    m->prev = m->cur;
    m->cur = g;
    m->rolling = 1;
    m->rollback = 0;
    msg_set_level(g->cfg.log_level);
    master_roll_step(m);
}

/* ---- binary upgrade (SIGUSR2) ---------------------------------------------------------- */

static void master_upgrade_abandon(master_t *m, const char *why)
{
    if (m->up != UPGRADE_WAITING)
        return;
    m->up = UPGRADE_ABANDONED;
    if (m->up_fd >= 0) {
        close(m->up_fd);
        m->up_fd = -1;
    }
    m->up_deadline = 0;
    /* The pidfile first, so that once the message is out the pidfile names us again. */
    if (rename(m->oldbin, m->pidpath) < 0)
        msg_error("cannot rename %s back to %s: %s", m->oldbin, m->pidpath, strerror(errno));
    msg_error("upgrade failed: %s%s", why,
              m->state == MASTER_STOPPING ? "" : "; this master keeps serving");
    /* The new master is left to exit; its pid is still reaped. */
}

static void master_upgrade(master_t *m)
{
    char *env;
    int p[2];
    pid_t pid;

    env = listener_set_format(&m->cur->ls);
    if (env == NULL) {
        msg_error("upgrade: out of memory");
        return;
    }
    if (rename(m->pidpath, m->oldbin) < 0) {
        msg_error("upgrade: cannot rename %s to %s: %s", m->pidpath, m->oldbin, strerror(errno));
        free(env);
        return;
    }
    if (pipe2(p, O_CLOEXEC) < 0) {
        msg_error("upgrade: pipe: %s", strerror(errno));
        rename(m->oldbin, m->pidpath);
        free(env);
        return;
    }
    if ((pid = fork()) < 0) {
        msg_error("upgrade: cannot start %s: %s", m->exe, strerror(errno));
        close(p[0]);
        close(p[1]);
        rename(m->oldbin, m->pidpath);
        free(env);
        return;
    }
    if (pid == 0) {
        char fdstr[16];
        close(p[0]);
        for (size_t i = 0; i < m->cur->ls.n; i++)
            fcntl(m->cur->ls.items[i].fd, F_SETFD, 0);
        fcntl(p[1], F_SETFD, 0);
        snprintf(fdstr, sizeof(fdstr), "%d", p[1]);
        setenv(MASTER_ENV_INHERIT_FDS, env, 1);
        setenv(MASTER_ENV_UPGRADE_FD, fdstr, 1);
        sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
        execv(m->exe, m->argv);
        msg_error("upgrade: cannot execute %s: %s", m->exe, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    free(env);
    m->up_pid = pid;
    m->up_fd = p[0];
    m->up = UPGRADE_WAITING;
    m->up_deadline = master_now_ms() + MASTER_UPGRADE_TIMEOUT_MS;
    msg_info("SIGUSR2: started %s as pid %d; pidfile moved to %s until it is ready", m->exe,
             (int)pid, m->oldbin);
}

static void master_upgrade_readable(master_t *m)
{
    char c;
    ssize_t n = read(m->up_fd, &c, 1);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    close(m->up_fd);
    m->up_fd = -1;
    if (n == 1) {
        m->up = UPGRADE_CONFIRMED;
        m->up_deadline = 0;
        msg_info("upgrade: new master (pid %d) is serving; draining this one", (int)m->up_pid);
        master_stop(m, MASTER_EXIT_OK, "replaced by a new binary");
    }
    /* EOF without the byte: the new master is exiting; its exit status says why (or the
     * deadline fires if it lingers). */
}

/* Pick up the hand-over from an old master: listening sockets and the readiness pipe. */
static void master_read_inheritance(master_t *m)
{
    const char *inh = getenv(MASTER_ENV_INHERIT_FDS), *up = getenv(MASTER_ENV_UPGRADE_FD);

    if (up) {
        m->notify_fd = atoi(up);
        if (m->notify_fd < 3 || fcntl(m->notify_fd, F_SETFD, FD_CLOEXEC) < 0)
            m->notify_fd = -1;
    }
    if (inh && listener_set_parse(&m->inherited, inh) < 0) {
        msg_warn("ignoring a bad %s: %s", MASTER_ENV_INHERIT_FDS, inh);
        listener_set_close(&m->inherited);
    }
    /* Our own children, and any later upgrade, must not see these. */
    unsetenv(MASTER_ENV_INHERIT_FDS);
    unsetenv(MASTER_ENV_UPGRADE_FD);
}

/* ---- supervision ------------------------------------------------------------------------ */

static void master_restart(master_t *m, int index, int status)
{
    uint64_t now = master_now_ms(), window = (uint64_t)m->cur->cfg.restart_period_s * 1000;
    size_t recent = 0, n;
    char how[96];
    int rc;

    m->restarts[m->nrestarts++ % MASTER_RESTART_HISTORY] = now;
    n = m->nrestarts < MASTER_RESTART_HISTORY ? m->nrestarts : MASTER_RESTART_HISTORY;
    for (size_t i = 0; i < n; i++)
        if (now - m->restarts[i] <= window)
            recent++;
    master_describe(status, how, sizeof(how));
    if (recent > (size_t)m->cur->cfg.restart_intensity) {
        msg_error("worker %d %s: %zu restarts within %d s exceed restart_intensity %d; "
                  "giving up: stopping all workers",
                  index, how, recent, m->cur->cfg.restart_period_s, m->cur->cfg.restart_intensity);
        master_stop(m, MASTER_EXIT_FAILURE, "restart intensity exceeded");
        return;
    }
    if (master_find_role(m, index, CHILD_STARTING)) {
        msg_warn("worker %d %s; its replacement is already starting", index, how);
        return;
    }
    if ((rc = master_spawn(m, index, m->cur, CHILD_ACTIVE)) < 0) {
        msg_error("worker %d %s and cannot be restarted: %s", index, how, strerror(-rc));
        master_stop(m, MASTER_EXIT_FAILURE, "cannot fork");
        return;
    }
    msg_warn("worker %d %s; restarted as pid %d (%zu restart(s) in the last %d s)", index, how,
             (int)m->kids[m->nkids - 1].pid, recent, m->cur->cfg.restart_period_s);
}

static void master_child_exited(master_t *m, pid_t pid, int status)
{
    master_child_t *k = master_find_pid(m, pid);
    char how[96];
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

    master_describe(status, how, sizeof(how));
    if (k == NULL) {
        if (pid == m->up_pid) {
            if (m->up == UPGRADE_WAITING) {
                char why[256];
                snprintf(why, sizeof(why), "the new master (pid %d) %s before it was ready",
                         (int)pid, how);
                master_upgrade_abandon(m, why);
            } else if (m->up == UPGRADE_CONFIRMED) {
                msg_error("the new master (pid %d) %s after taking over", (int)pid, how);
            }
            m->up_pid = 0;
            if (m->up != UPGRADE_CONFIRMED)
                m->up = UPGRADE_NONE;
        }
        return;
    }
    master_child_t dead = *k;
    master_remove(m, k);
    if (m->state == MASTER_STOPPING) {
        if (!clean)
            m->unclean = 1;
        if (clean)
            msg_debug("worker %d (pid %d) stopped", dead.index, (int)pid);
        else
            msg_warn("worker %d (pid %d) %s while stopping", dead.index, (int)pid, how);
    } else if (dead.role == CHILD_RETIRING) {
        if (clean)
            msg_debug("old worker %d (pid %d) finished draining", dead.index, (int)pid);
        else
            msg_warn("old worker %d (pid %d) %s while draining", dead.index, (int)pid, how);
    } else if (dead.role == CHILD_STARTING) {
        char why[256];
        snprintf(why, sizeof(why), "(pid %d) %s before it was ready", (int)pid, how);
        master_roll_fail(m, dead.index, NULL, why);
    } else {
        master_restart(m, dead.index, status);
    }
    master_gen_sweep(m);
}

static void master_reap(master_t *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        master_child_exited(m, pid, status);
}

/* Every active worker is ready: announce it, and tell an old master it may go. */
static void master_check_started(master_t *m)
{
    size_t ready = 0;

    if (m->state != MASTER_STARTING)
        return;
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].role == CHILD_ACTIVE && m->kids[i].ready)
            ready++;
    if (ready < (size_t)m->cur->cfg.workers)
        return;
    m->state = MASTER_RUNNING;
    m->start_deadline = 0;
    msg_info("ready: %d worker(s) serving (master pid %d)", m->cur->cfg.workers, (int)m->pid);
    if (m->notify_fd >= 0) {
        char c = 1;
        if (write(m->notify_fd, &c, 1) != 1)
            msg_warn("could not tell the old master we are ready: %s", strerror(errno));
        close(m->notify_fd);
        m->notify_fd = -1;
    }
    listener_set_close(&m->inherited);
}

static void master_child_readable(master_t *m, pid_t pid)
{
    master_child_t *k = master_find_pid(m, pid);
    char c;
    ssize_t n;

    if (k == NULL || k->ready_fd < 0)
        return;
    n = read(k->ready_fd, &c, 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    close(k->ready_fd);
    k->ready_fd = -1;
    if (n != 1)
        return; /* closed without a byte: it is dying, SIGCHLD follows */
    k->ready = 1;
    if (k->term_sent)
        kill(k->pid, SIGTERM); /* asked to stop while it was starting */
    msg_debug("worker %d (pid %d) ready after %llu ms", k->index, (int)pid,
              (unsigned long long)(master_now_ms() - k->started_ms));
    if (k->role == CHILD_STARTING) {
        master_child_t *old = master_find_role(m, k->index, CHILD_ACTIVE);
        k->role = CHILD_ACTIVE;
        if (old) {
            msg_info("%s: worker %d replaced (pid %d -> %d); the old one drains",
                     m->rollback ? "rollback" : "reload", old->index, (int)old->pid, (int)pid);
            old->role = CHILD_RETIRING;
            master_term(old, SIGTERM);
        }
        m->roll_deadline = 0;
        master_roll_step(m);
    }
    master_check_started(m);
}

/* Neither starting, reloading nor upgrading: a reload or upgrade may begin. */
static int master_idle(const master_t *m)
{
    return m->state == MASTER_RUNNING && !m->rolling && m->up_pid == 0;
}

static void master_signal(master_t *m, const struct signalfd_siginfo *si)
{
    switch (si->ssi_signo) {
    case SIGCHLD:
        master_reap(m);
        break;
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
        if (m->state == MASTER_STOPPING)
            msg_info("SIG%s: already stopping", sigabbrev_np((int)si->ssi_signo));
        else
            master_stop(m, MASTER_EXIT_OK,
                        si->ssi_signo == SIGINT    ? "SIGINT"
                        : si->ssi_signo == SIGTERM ? "SIGTERM"
                                                   : "SIGQUIT");
        break;
    case SIGHUP:
    case SIGUSR2:
        if (m->state == MASTER_STOPPING) {
            msg_info("SIG%s ignored: stopping", sigabbrev_np((int)si->ssi_signo));
            break;
        }
        if (si->ssi_signo == SIGHUP)
            m->pending_reload = 1;
        else
            m->pending_upgrade = 1;
        if (!master_idle(m))
            msg_info("SIG%s: deferred until the current %s finishes",
                     sigabbrev_np((int)si->ssi_signo),
                     m->state == MASTER_STARTING ? "start-up"
                     : m->rolling                ? "reload"
                                                 : "upgrade");
        break;
    }
}

/*
 * Run a reload or upgrade asked for by a signal once nothing else is in progress: one of each
 * at a time, and a signal that arrives meanwhile is remembered, never dropped.
 */
static void master_run_pending(master_t *m)
{
    if (m->state == MASTER_STOPPING) {
        m->pending_reload = m->pending_upgrade = 0;
        return;
    }
    if (m->pending_reload && master_idle(m)) {
        m->pending_reload = 0;
        master_reload(m);
    }
    if (m->pending_upgrade && master_idle(m)) {
        m->pending_upgrade = 0;
        master_upgrade(m);
    }
}

static void master_deadlines(master_t *m)
{
    uint64_t now = master_now_ms();

    if (m->state == MASTER_STARTING && m->start_deadline && now >= m->start_deadline) {
        msg_error("workers not ready %d ms after start; giving up", MASTER_READY_TIMEOUT_MS);
        master_stop(m, MASTER_EXIT_FAILURE, "start-up timed out");
    }
    if (m->rolling && m->roll_deadline && now >= m->roll_deadline) {
        for (size_t i = 0; i < m->nkids; i++)
            if (m->kids[i].role == CHILD_STARTING) {
                char why[160];
                snprintf(why, sizeof(why), "(pid %d) not ready after %d ms", (int)m->kids[i].pid,
                         MASTER_READY_TIMEOUT_MS);
                master_roll_fail(m, m->kids[i].index, &m->kids[i], why);
                break;
            }
        m->roll_deadline = 0;
    }
    if (m->up == UPGRADE_WAITING && m->up_deadline && now >= m->up_deadline) {
        char why[160];
        snprintf(why, sizeof(why), "the new master (pid %d) was not ready after %d ms",
                 (int)m->up_pid, MASTER_UPGRADE_TIMEOUT_MS);
        kill(m->up_pid, SIGTERM);
        master_upgrade_abandon(m, why);
    }
    if (m->state == MASTER_STOPPING && m->stop_deadline && now >= m->stop_deadline)
        master_stop_timeout(m);
}

static int master_poll_timeout(const master_t *m)
{
    uint64_t now = master_now_ms(), next = UINT64_MAX;
    uint64_t d[4] = {m->state == MASTER_STARTING ? m->start_deadline : 0,
                     m->rolling ? m->roll_deadline : 0, m->up_deadline,
                     m->state == MASTER_STOPPING ? m->stop_deadline : 0};

    for (int i = 0; i < 4; i++)
        if (d[i] && d[i] < next)
            next = d[i];
    if (next == UINT64_MAX)
        return -1;
    return next <= now ? 0 : (int)(next - now > INT_MAX ? INT_MAX : next - now);
}

static int master_loop(master_t *m)
{
    struct pollfd *pfd = NULL;
    pid_t *owner = NULL;
    size_t cap = 0;

    while (!(m->state == MASTER_STOPPING && m->nkids == 0 &&
             (m->up_pid == 0 || m->up == UPGRADE_CONFIRMED))) {
        size_t n = 0;
        if (cap < m->nkids + 2) {
            size_t ncap = m->nkids + 16;
            struct pollfd *np = realloc(pfd, ncap * sizeof(*np));
            pid_t *no = np ? realloc(owner, ncap * sizeof(*no)) : NULL;
            if (np)
                pfd = np;
            if (no == NULL) {
                msg_error("out of memory in the master loop");
                master_stop(m, MASTER_EXIT_FAILURE, "out of memory");
                break;
            }
            owner = no;
            cap = ncap;
        }
        pfd[n++] = (struct pollfd){.fd = m->sfd, .events = POLLIN};
        if (m->up_fd >= 0) {
            owner[n] = -1;
            pfd[n++] = (struct pollfd){.fd = m->up_fd, .events = POLLIN};
        }
        for (size_t i = 0; i < m->nkids; i++)
            if (m->kids[i].ready_fd >= 0) {
                owner[n] = m->kids[i].pid;
                pfd[n++] = (struct pollfd){.fd = m->kids[i].ready_fd, .events = POLLIN};
            }
        if (poll(pfd, (nfds_t)n, master_poll_timeout(m)) < 0 && errno != EINTR) {
            msg_error("poll: %s", strerror(errno));
            master_stop(m, MASTER_EXIT_FAILURE, "poll failed");
            break;
        }
        /* Readiness first: a byte and the EOF of an exiting worker may both be pending. */
        for (size_t i = 1; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            if (owner[i] == -1) {
                if (m->up_fd >= 0)
                    master_upgrade_readable(m);
            } else {
                master_child_readable(m, owner[i]);
            }
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(m->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                master_signal(m, &si);
        }
        master_deadlines(m);
        master_run_pending(m);
    }
    free(pfd);
    free(owner);
    return m->exit_code ? m->exit_code : m->unclean ? MASTER_EXIT_FAILURE : MASTER_EXIT_OK;
}

/* ---- start-up -------------------------------------------------------------------------- */

static void master_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            msg_debug("RLIMIT_NOFILE raised from %llu to %llu", (unsigned long long)old,
                      (unsigned long long)rl.rlim_max);
        else
            msg_warn("cannot raise RLIMIT_NOFILE to %llu: %s", (unsigned long long)rl.rlim_max,
                     strerror(errno));
    }
}

static int master_open_pidfile(master_t *m)
{
    pid_t other = 0;

    m->pfh = pidfile_open(m->pidpath, 0644, &other);
    if (m->pfh == NULL) {
        if (errno == EEXIST)
            msg_error("another trackd is already running with pidfile %s (pid %d); not starting",
                      m->pidpath, (int)other);
        else
            msg_error("cannot open pidfile %s: %s", m->pidpath, strerror(errno));
        return -1;
    }
    fcntl(pidfile_fileno(m->pfh), F_SETFD, FD_CLOEXEC);
    if (pidfile_write(m->pfh) < 0) {
        msg_error("cannot write pidfile %s: %s", m->pidpath, strerror(errno));
        pidfile_remove(m->pfh);
        m->pfh = NULL;
        return -1;
    }
    return 0;
}

static int master_block_signals(master_t *m)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2);
    if (sigprocmask(SIG_BLOCK, &set, &m->oldmask) < 0)
        return -errno;
    /* An ignored signal is discarded before it can reach the signalfd (and an ignored SIGCHLD
     * reaps children by itself); a shell starts background jobs with SIGINT and SIGQUIT
     * ignored. Blocked first, so nothing arrives while the default action is in place. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&set, sig) == 1)
            signal(sig, SIG_DFL);
    m->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sfd < 0)
        return -errno;
    /* A write to a closed pipe or socket must be an error, not death. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int master_run(config_t *cfg, int argc, char **argv)
{
    master_t m;
    char err[1024];
    ssize_t n;
    int rc = MASTER_EXIT_FAILURE, r;

    memset(&m, 0, sizeof(m));
    m.argc = argc;
    m.argv = argv;
    m.pid = getpid();
    m.sfd = -1;
    m.up_fd = -1;
    m.notify_fd = -1;
    msg_set_role("master");
    msg_set_level(cfg->log_level);
    master_title(cfg, "");

    n = readlink("/proc/self/exe", m.exe, sizeof(m.exe) - 1);
    if (n < 0) {
        snprintf(m.exe, sizeof(m.exe), "%s", argv[0]);
    } else {
        m.exe[n] = '\0';
    }
    master_read_inheritance(&m);
    master_raise_nofile();
    if ((r = master_block_signals(&m)) < 0) {
        msg_error("cannot set up signal handling: %s", strerror(-r));
        goto out;
    }
    if ((r = listener_check_config(cfg, err, sizeof(err))) < 0) {
        msg_error("%s", err);
        rc = MASTER_EXIT_CONFIG;
        goto out;
    }
    snprintf(m.pidpath, sizeof(m.pidpath), "%s", cfg->pidfile);
    snprintf(m.oldbin, sizeof(m.oldbin), "%s.oldbin", cfg->pidfile);
    /* The log lives in data_dir, and so does the default pidfile: create it if missing. A
     * failure here is the workers' to report, unless the pidfile needs the directory. */
    if ((r = master_mkdirs(cfg->data_dir)) < 0)
        msg_warn("cannot create data_dir %s: %s", cfg->data_dir, strerror(-r));
    if (master_open_pidfile(&m) < 0)
        goto out;
    if (master_gen_new(&m, cfg, &m.cur, err, sizeof(err)) < 0) {
        msg_error("%s", err);
        goto out;
    }
    memset(cfg, 0, sizeof(*cfg)); /* the generation owns its lists now */
    for (size_t i = 0; i < m.inherited.n; i++)
        if (m.inherited.items[i].fd >= 0)
            msg_info("inherited socket %s is no longer configured; closing it",
                     m.inherited.items[i].addr);
    listener_set_close(&m.inherited);
    msg_info("starting %d worker(s) (pid %d, listen %s, worker_listen %s, data_dir %s)",
             m.cur->cfg.workers, (int)m.pid, m.cur->cfg.listen[0] ? m.cur->cfg.listen : "off",
             m.cur->cfg.worker_listen[0] ? m.cur->cfg.worker_listen : "off", m.cur->cfg.data_dir);
    m.state = MASTER_STARTING;
    m.start_deadline = master_now_ms() + MASTER_READY_TIMEOUT_MS;
    for (int i = 1; i <= m.cur->cfg.workers; i++) {
        if ((r = master_spawn(&m, i, m.cur, CHILD_ACTIVE)) < 0) {
            msg_error("cannot start worker %d: %s", i, strerror(-r));
            master_stop(&m, MASTER_EXIT_FAILURE, "fork failed");
            break;
        }
    }
    rc = master_loop(&m);
    if (rc == MASTER_EXIT_OK)
        msg_info("stopped");
    else
        msg_error("stopped with exit status %d", rc);
out:
    listener_set_close(&m.inherited);
    if (m.pfh) {
        if (m.up == UPGRADE_CONFIRMED) {
            /* Our pidfile is now the .oldbin one; the pidfile path belongs to the new master. */
            unlink(m.oldbin);
            pidfile_close(m.pfh);
        } else {
            pidfile_remove(m.pfh);
        }
    }
    m.cur = m.prev = NULL;
    m.nkids = 0;
    master_gen_sweep(&m);
    free(m.kids);
    if (m.sfd >= 0)
        close(m.sfd);
    if (m.notify_fd >= 0)
        close(m.notify_fd);
    if (m.up_fd >= 0)
        close(m.up_fd);
    return rc;
}

/*
 * The master process: opens the listening sockets, forks one worker per core (worker.h) and
 * supervises them as an Erlang/OTP one-for-one supervisor would: a worker that dies is restarted
 * at once, and too many restarts in a short period stop everything instead of looping. It also
 * owns the pidfile and the operator's signals: TERM/INT/QUIT stop gracefully, HUP reloads the
 * config file with a rolling restart, USR2 upgrades the binary in place (nginx-style) without
 * closing the listening sockets.
 */
#ifndef TRACKD_MASTER_H
#define TRACKD_MASTER_H

#include <stddef.h>

#include "trackd/config.h"

/** Process exit statuses of trackd. */
#define MASTER_EXIT_OK 0      /* stopped cleanly (or --help, --version, -t succeeded) */
#define MASTER_EXIT_FAILURE 1 /* could not start, workers crash-looped, or unclean stop */
#define MASTER_EXIT_CONFIG 2  /* bad command line or config file */

/** Environment of a new master started by SIGUSR2: listening sockets to reuse, "fd:addr;...". */
#define MASTER_ENV_INHERIT_FDS "TRACKD_INHERIT_FDS"
/** ... and the pipe on which it writes one byte to the old master once its workers are ready. */
#define MASTER_ENV_UPGRADE_FD "TRACKD_UPGRADE_FD"

/**
 * Run the master until it stops; returns the process exit status. `cfg` is the finished config
 * built from `argv`; the master moves its lists out (the caller's config_free stays correct and
 * frees what was not taken). `argv` (NULL-terminated, a copy made before setproctitle_init) must
 * stay valid: SIGHUP parses it again (so the command line still overrides the re-read file) and
 * SIGUSR2 executes the binary with it.
 */
int master_run(config_t *cfg, int argc, char **argv);

#endif

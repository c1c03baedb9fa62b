/*
 * A worker process: one libuv loop serving HTTP on the listening sockets it inherited from the
 * master, with its own log (log.h). Started by the master (master.c) after fork().
 */
#ifndef TRACKD_WORKER_H
#define TRACKD_WORKER_H

#include <stddef.h>

#include "trackd/config.h"

/**
 * Run worker `index` (1-based) until it is told to stop (SIGTERM/SIGINT: stop accepting, finish
 * requests in flight, make the log durable, exit) or its parent dies. `listen_fds` are listening
 * sockets already bound and listening. Once it accepts, it writes one byte to `ready_fd` (if >= 0)
 * and closes it. Returns the process exit code.
 */
int worker_run(const config_t *cfg, int index, const int *listen_fds, size_t nfds, int ready_fd);

#endif

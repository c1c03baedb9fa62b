/*
 * Operator messages: one line per event worth an operator's attention, on stderr, with a level and
 * the process's role ("master", "worker 2"), so journald and `2>&1 | grep` both work. Not to be
 * confused with log.h, the event log.
 */
#ifndef TRACKD_MSG_H
#define TRACKD_MSG_H

#include "trackd/config.h"

/** Set the least severe level printed (default CONFIG_LOG_INFO). */
void msg_set_level(config_log_level_t level);

/** Set the role shown on every line ("master", "worker 1"); copied. */
void msg_set_role(const char *role);

/** Print one line at `level` if enabled. printf-style; a trailing newline is added. */
void msg(config_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define msg_error(...) msg(CONFIG_LOG_ERROR, __VA_ARGS__)
#define msg_warn(...) msg(CONFIG_LOG_WARN, __VA_ARGS__)
#define msg_info(...) msg(CONFIG_LOG_INFO, __VA_ARGS__)
#define msg_debug(...) msg(CONFIG_LOG_DEBUG, __VA_ARGS__)

#endif

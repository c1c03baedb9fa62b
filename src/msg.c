/*
 * Operator messages on stderr. Each line is written with a single write(2) so lines from the
 * master and its workers, which share stderr, never interleave mid-line.
 */
#include "trackd/msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSG_LINE_MAX 1024

static config_log_level_t msg_level = CONFIG_LOG_INFO;
static char msg_role[32] = "trackd";

static const char *const msg_level_names[] = {"error", "warn", "info", "debug"};

void msg_set_level(config_log_level_t level)
{
    msg_level = level;
}

void msg_set_role(const char *role)
{
    snprintf(msg_role, sizeof(msg_role), "%s", role);
}

void msg(config_log_level_t level, const char *fmt, ...)
{
    char line[MSG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level > msg_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, msg_level_names[level], msg_role);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > MSG_LINE_MAX - 2)
        n = MSG_LINE_MAX - 2;
    line[n++] = '\n';
    /* One write per line; nothing useful to do if stderr is gone. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}

/*
 * trackbench's output: the per-second progress line on stderr, the final report as text, and the
 * same report as one JSON object (--json) that scripts and the black-box tests read.
 */
#ifndef TRACKD_BENCH_REPORT_H
#define TRACKD_BENCH_REPORT_H

#include <stdio.h>

#include <jansson.h>

#include "trackd/bench_client.h"

/** One line for one second of the run (`s` holds that second's counters). */
void bench_report_progress(FILE *out, const bench_stats_t *s, unsigned tick);

/** The final report, for people. */
void bench_report_text(FILE *out, const bench_opts_t *o, const bench_stats_t *s);

/**
 * The final report as a new JSON object: the command line, the options, and every counter of
 * `s`. NULL if out of memory. The caller owns the reference.
 */
json_t *bench_report_json(const bench_opts_t *o, const bench_stats_t *s, int argc, char **argv);

/** Errors of every kind: connect, timeout, read, write, parse, and non-2xx statuses. */
uint64_t bench_report_errors(const bench_stats_t *s);

#endif

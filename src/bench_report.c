/*
 * trackbench's reports (see bench_report.h). Rates are over the measured time, which runs from
 * the end of the warmup to the last answer, so every request counted also counts in the rate.
 * Latencies are kept in ns and shown in ms.
 */
#include "trackd/bench_report.h"

#include <inttypes.h>
#include <string.h>

static const double REPORT_PCTS[] = {50, 90, 99, 99.9};
static const char *const REPORT_PCT_NAMES[] = {"p50", "p90", "p99", "p99.9"};
#define REPORT_NPCTS (sizeof(REPORT_PCTS) / sizeof(REPORT_PCTS[0]))

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double per_s(uint64_t n, uint64_t ns)
{
    return ns ? (double)n * 1e9 / (double)ns : 0.0;
}

uint64_t bench_report_errors(const bench_stats_t *s)
{
    uint64_t n = s->err_connect + s->err_timeout + s->err_read + s->err_write + s->err_parse;
    for (size_t i = 0; i < BENCH_STATUS_MAX; i++)
        if (i < 200 || i >= 300)
            n += s->status[i];
    return n;
}

/* "1.2 MB" style, for byte counts. */
static void human_bytes(char *out, size_t len, double v)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* "503: 12, 429: 3" for the statuses outside 2xx (or all of them with all=1). */
static void status_list(char *out, size_t len, const bench_stats_t *s, int all)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < BENCH_STATUS_MAX && o + 32 < len; i++) {
        if (s->status[i] == 0 || (!all && i >= 200 && i < 300))
            continue;
        o += (size_t)snprintf(out + o, len - o, "%s%zu: %" PRIu64, o ? ", " : "", i, s->status[i]);
    }
}

void bench_report_progress(FILE *out, const bench_stats_t *s, unsigned tick)
{
    char st[256];
    status_list(st, sizeof(st), s, 0);
    fprintf(out,
            "[%4us] %6" PRIu64 " conns %9.0f req/s %10.0f ev/s  p50 %7.2f ms  p99 %7.2f ms  "
            "errors %" PRIu64 "%s%s%s\n",
            tick, s->conns_open, per_s(s->completed, s->elapsed_ns),
            per_s(s->events_ok, s->elapsed_ns), ms(hist_percentile(&s->latency, 50)),
            ms(hist_percentile(&s->latency, 99)), bench_report_errors(s), *st ? " (" : "", st,
            *st ? ")" : "");
    fflush(out);
}

void bench_report_text(FILE *out, const bench_opts_t *o, const bench_stats_t *s)
{
    char a[64], bb[64], st[1024];
    const hist_t *h = &s->latency;
    double secs = (double)s->elapsed_ns / 1e9;

    fprintf(out, "trackbench: %s, %zu connections, %" PRIu64 " process%s, %.2f s measured",
            o->rate > 0 ? "open loop" : "closed loop", o->connections, s->procs,
            s->procs == 1 ? "" : "es", secs);
    if (o->rate > 0)
        fprintf(out, ", target %.0f req/s", o->rate);
    fprintf(out, "%s\n", o->keepalive ? "" : ", new connection per request");
    for (size_t i = 0; i < o->ntargets; i++)
        fprintf(out, "  target      %s\n", o->targets[i].url);
    fprintf(out,
            "  requests    %" PRIu64 " completed (%.1f/s), %" PRIu64 " ok, %" PRIu64
            " 2xx not ok, %" PRIu64 " sent\n",
            s->completed, per_s(s->completed, s->elapsed_ns), s->ok, s->rejected_2xx, s->sent);
    if (s->unsent)
        fprintf(out, "  unsent      %" PRIu64 " due requests found no free connection\n",
                s->unsent);
    fprintf(out, "  events      %" PRIu64 " ok (%.1f/s), %" PRIu64 " sent, batch %zu, ~%zu bytes\n",
            s->events_ok, per_s(s->events_ok, s->elapsed_ns), s->events_sent, o->batch,
            o->event_bytes);
    human_bytes(a, sizeof(a), per_s(s->bytes_sent, s->elapsed_ns));
    human_bytes(bb, sizeof(bb), per_s(s->bytes_recv, s->elapsed_ns));
    fprintf(out, "  bytes       sent %" PRIu64 " (%s/s), received %" PRIu64 " (%s/s)\n",
            s->bytes_sent, a, s->bytes_recv, bb);
    fprintf(out, "  latency    ");
    for (size_t i = 0; i < REPORT_NPCTS; i++)
        fprintf(out, " %s %.3f ms ", REPORT_PCT_NAMES[i], ms(hist_percentile(h, REPORT_PCTS[i])));
    fprintf(out, " max %.3f ms  (mean %.3f ms, %s)\n", ms(h->count ? h->max : 0),
            hist_mean(h) / 1e6, o->rate > 0 ? "from intended send time" : "from send time");
    status_list(st, sizeof(st), s, 0);
    fprintf(out,
            "  errors      %" PRIu64 ": connect %" PRIu64 ", timeout %" PRIu64 ", read %" PRIu64
            ", write %" PRIu64 ", parse %" PRIu64 "%s%s\n",
            bench_report_errors(s), s->err_connect, s->err_timeout, s->err_read, s->err_write,
            s->err_parse, *st ? ", status " : "", st);
    status_list(st, sizeof(st), s, 1);
    fprintf(out, "  status      %s\n", *st ? st : "(no responses)");
    if (s->retry_after_n)
        fprintf(out, "  retry-after %" PRIu64 " seen, %" PRIu64 "..%" PRIu64 " s (mean %.2f s)\n",
                s->retry_after_n, s->retry_after_min, s->retry_after_max,
                (double)s->retry_after_sum / (double)s->retry_after_n);
    if (s->unsolicited)
        fprintf(out, "  unsolicited %" PRIu64 " responses with no request outstanding\n",
                s->unsolicited);
    fprintf(out, "  connections %" PRIu64 " established; harness CPU %.0f%% of one core\n",
            s->connects, secs > 0 ? 100.0 * (double)s->cpu_ns / (double)s->elapsed_ns : 0.0);
    if (o->ledger[0])
        fprintf(out, "  ledger      %" PRIu64 " acknowledged ids appended to %s\n", s->ledgered,
                o->ledger);
}

static json_t *weights_json(const unsigned *w, int n, const char *(*name)(int))
{
    json_t *obj = json_object();
    for (int i = 0; obj && i < n; i++)
        if (w[i])
            json_object_set_new(obj, name(i), json_integer(w[i]));
    return obj;
}

static const char *ep_name(int i)
{
    return bench_endpoint_name((bench_endpoint_t)i);
}

static const char *shape_name(int i)
{
    return bench_shape_name((bench_shape_t)i);
}

static json_t *options_json(const bench_opts_t *o)
{
    json_t *targets = json_array();
    for (size_t i = 0; targets && i < o->ntargets; i++)
        json_array_append_new(targets, json_string(o->targets[i].url));
    json_t *ramp = o->ramp_s > 0 ? json_pack("{sI sI sf}", "from", (json_int_t)o->ramp_from, "to",
                                             (json_int_t)o->ramp_to, "seconds", o->ramp_s)
                                 : json_null();
    return json_pack(
        "{so sI si ss sf sf sf sI si sb so so sI sI ss ss* so si}", "targets", targets,
        "connections", (json_int_t)o->connections, "procs", o->procs, "mode",
        o->rate > 0 ? "open" : "closed", "rate", o->rate, "duration_s", o->duration_s, "warmup_s",
        o->warmup_s, "requests", (json_int_t)o->requests, "timeout_ms", o->timeout_ms, "keepalive",
        o->keepalive, "mix", weights_json(o->mix, BENCH_EP_COUNT, ep_name), "shapes",
        weights_json(o->shapes, BENCH_SHAPE_COUNT, shape_name), "batch", (json_int_t)o->batch,
        "event_bytes", (json_int_t)o->event_bytes, "query", o->query, "ledger",
        o->ledger[0] ? o->ledger : NULL, "ramp", ramp, "source_addrs", (int)o->source_addrs);
}

#define JI(v) ((json_int_t)(v))

json_t *bench_report_json(const bench_opts_t *o, const bench_stats_t *s, int argc, char **argv)
{
    const hist_t *h = &s->latency;
    uint64_t ns = s->elapsed_ns;
    json_t *cmd = json_array();
    for (int i = 0; cmd && i < argc; i++)
        json_array_append_new(cmd, json_string(argv[i]));

    json_t *lat =
        json_pack("{sI sf sf sf}", "count", JI(h->count), "min", h->count ? ms(h->min) : 0.0,
                  "mean", hist_mean(h) / 1e6, "max", ms(h->count ? h->max : 0));
    for (size_t i = 0; lat && i < REPORT_NPCTS; i++)
        json_object_set_new(lat, REPORT_PCT_NAMES[i],
                            json_real(ms(hist_percentile(h, REPORT_PCTS[i]))));

    json_t *status = json_object(), *err_status = json_object();
    for (size_t i = 0; status && err_status && i < BENCH_STATUS_MAX; i++) {
        if (s->status[i] == 0)
            continue;
        char k[8];
        snprintf(k, sizeof(k), "%zu", i);
        json_object_set_new(status, k, json_integer(JI(s->status[i])));
        if (i < 200 || i >= 300)
            json_object_set_new(err_status, k, json_integer(JI(s->status[i])));
    }
    json_t *retry = s->retry_after_n
                        ? json_pack("{sI sI sI sf}", "count", JI(s->retry_after_n), "min_s",
                                    JI(s->retry_after_min), "max_s", JI(s->retry_after_max),
                                    "mean_s", (double)s->retry_after_sum / (double)s->retry_after_n)
                        : json_pack("{sI}", "count", JI(0));

    return json_pack(
        "{so so sf si s{sI sI sI sI sI sI sI} s{sI sI} s{sI sI} s{sf sf sf sf sf} so so"
        " s{sI sI sI sI sI sI so} so s{sI} s{ss* sI} s{sf sf}}",
        "command", cmd, "options", options_json(o), "elapsed_s", (double)ns / 1e9, "procs",
        (int)s->procs, "requests", "issued", JI(s->issued), "sent", JI(s->sent), "completed",
        JI(s->completed), "ok", JI(s->ok), "rejected_2xx", JI(s->rejected_2xx), "unsent",
        JI(s->unsent), "unsolicited", JI(s->unsolicited), "events", "sent", JI(s->events_sent),
        "ok", JI(s->events_ok), "bytes", "sent", JI(s->bytes_sent), "received", JI(s->bytes_recv),
        "rates", "requests_per_s", per_s(s->completed, ns), "ok_per_s", per_s(s->ok, ns),
        "events_per_s", per_s(s->events_ok, ns), "bytes_sent_per_s", per_s(s->bytes_sent, ns),
        "bytes_received_per_s", per_s(s->bytes_recv, ns), "latency_ms", lat, "status", status,
        "errors", "total", JI(bench_report_errors(s)), "connect", JI(s->err_connect), "timeout",
        JI(s->err_timeout), "read", JI(s->err_read), "write", JI(s->err_write), "parse",
        JI(s->err_parse), "status", err_status, "retry_after", retry, "connections", "established",
        JI(s->connects), "ledger", "file", o->ledger[0] ? o->ledger : NULL, "ids", JI(s->ledgered),
        "cpu", "seconds", (double)s->cpu_ns / 1e9, "percent_of_one_core",
        ns ? 100.0 * (double)s->cpu_ns / (double)ns : 0.0);
}

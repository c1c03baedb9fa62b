/*
 * Unit tests of config.c: defaults, every kind of value and suffix, the config file (comments,
 * quotes, lists, errors that name the line), the command line over the file, trusted-proxy
 * matching for IPv4, IPv6 and v4-mapped addresses, and the HOST:PORT parser.
 */
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <unistd.h>

#include "trackd/config.h"

/* Every config-file name; --help must document each one. */
static const char *const all_names[] = {
    "listen",
    "worker_listen",
    "workers",
    "data_dir",
    "pidfile",
    "log_level",
    "shutdown_timeout_ms",
    "restart_intensity",
    "restart_period_s",
    "durability",
    "segment_max_bytes",
    "segment_max_age_s",
    "retention_max_bytes",
    "retention_max_age_s",
    "queue_max_bytes",
    "flush_interval_ms",
    "max_connections",
    "max_url_bytes",
    "max_header_bytes",
    "max_headers",
    "max_body_bytes",
    "max_decoded_bytes",
    "header_timeout_ms",
    "body_timeout_ms",
    "keepalive_timeout_ms",
    "write_timeout_ms",
    "retry_after_s",
    "max_events_per_request",
    "max_event_bytes",
    "token",
    "import_secret",
    "redirect_host",
    "trusted_proxy",
    "cors_max_age_s",
    "queue_high_water",
    "disk_low_water_bytes",
    "memory_budget_bytes",
    "rate_limit",
    "rate_limit_token",
    "json_fast_path",
};

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), name);
    f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
    return path;
}

static int set(config_t *cfg, const char *k, const char *v)
{
    char err[512];
    int rc = config_set(cfg, k, v, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "  config_set(%s, %s): %s\n", k, v, err);
    return rc;
}

static struct sockaddr_storage sa(const char *addr)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        CHECK(inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        CHECK(inet_pton(AF_INET, addr, &s4->sin_addr) == 1);
    }
    return ss;
}

static int trusted(const config_t *cfg, const char *addr)
{
    struct sockaddr_storage ss = sa(addr);
    return config_is_trusted_proxy(cfg, (struct sockaddr *)&ss);
}

TEST(config_defaults_are_the_documented_values)
{
    config_t c;
    config_defaults(&c);
    CHECK_EQ_STR(c.listen, "127.0.0.1:8000");
    CHECK_EQ_STR(c.worker_listen, "");
    CHECK_EQ_STR(c.data_dir, "./data");
    CHECK_EQ_STR(c.pidfile, "");
    CHECK_EQ_INT(c.log_level, CONFIG_LOG_INFO);
    CHECK_EQ_INT(c.shutdown_timeout_ms, 10000);
    CHECK_EQ_INT(c.restart_intensity, 10);
    CHECK_EQ_INT(c.restart_period_s, 5);
    CHECK_EQ_INT(c.durability, CONFIG_DURABILITY_FSYNC);
    CHECK_EQ_INT(c.segment_max_bytes, 128 << 20);
    CHECK_EQ_INT(c.segment_max_age_s, 3600);
    CHECK_EQ_INT(c.retention_max_bytes, 0);
    CHECK_EQ_INT(c.retention_max_age_s, 0);
    CHECK_EQ_INT(c.queue_max_bytes, 64 << 20);
    CHECK_EQ_INT(c.flush_interval_ms, 100);
    CHECK_EQ_INT(c.max_connections, 10000);
    CHECK_EQ_INT(c.max_url_bytes, 8192);
    CHECK_EQ_INT(c.max_header_bytes, 16384);
    CHECK_EQ_INT(c.max_headers, 64);
    CHECK_EQ_INT(c.max_body_bytes, 2097152);
    CHECK_EQ_INT(c.max_decoded_bytes, 8 << 20);
    CHECK_EQ_INT(c.header_timeout_ms, 10000);
    CHECK_EQ_INT(c.body_timeout_ms, 10000);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 60000);
    CHECK_EQ_INT(c.write_timeout_ms, 30000);
    CHECK_EQ_INT(c.retry_after_s, 1);
    CHECK_EQ_INT(c.max_events_per_request, 2000);
    CHECK_EQ_INT(c.max_event_bytes, 1000000);
    CHECK_EQ_INT(c.tokens.n, 0);
    CHECK_EQ_INT(c.import_secrets.n, 0);
    CHECK_EQ_INT(c.redirect_hosts.n, 0);
    CHECK_EQ_INT(c.ntrusted_proxies, 0);
    CHECK_EQ_INT(c.cors_max_age_s, 86400);
    CHECK_EQ_INT(c.queue_high_water, 0);
    CHECK_EQ_INT(config_queue_high_water(&c), 32 << 20);
    CHECK_EQ_INT(c.disk_low_water_bytes, 256 << 20);
    CHECK_EQ_INT(c.memory_budget_bytes, 64 << 20);
    CHECK_EQ_INT(c.rate_limit.rate, 0);
    CHECK_EQ_INT(c.nrate_limit_tokens, 0);
    CHECK_EQ_INT(c.json_fast_path, 1);
}

TEST(config_queue_high_water_defaults_to_half_the_queue_and_never_exceeds_it)
{
    config_t c;
    config_defaults(&c);
    CHECK(set(&c, "queue_max_bytes", "1m") == 0);
    CHECK_EQ_INT(config_queue_high_water(&c), 512 << 10);
    CHECK(set(&c, "queue_high_water", "900k") == 0);
    CHECK_EQ_INT(config_queue_high_water(&c), 900 << 10);
    CHECK(set(&c, "queue_high_water", "2m") == 0); /* above the queue itself: half of it */
    CHECK_EQ_INT(config_queue_high_water(&c), 512 << 10);
}

TEST(config_rate_limits_parse_rate_and_burst_and_per_token_overrides)
{
    config_t c;
    char err[256];
    const config_rate_t *r;

    config_defaults(&c);
    CHECK(set(&c, "rate_limit", "100") == 0);
    CHECK_EQ_INT(c.rate_limit.rate, 100);
    CHECK_EQ_INT(c.rate_limit.burst, 100); /* BURST defaults to RATE */
    CHECK(set(&c, "rate_limit", " 50   400 ") == 0);
    CHECK_EQ_INT(c.rate_limit.rate, 50);
    CHECK_EQ_INT(c.rate_limit.burst, 400);
    CHECK(set(&c, "rate_limit_token", "big 1000 5000, free 0") == 0);
    CHECK(set(&c, "rate_limit_token", "small 2") == 0);
    CHECK_EQ_INT(c.nrate_limit_tokens, 3);
    r = config_rate_for(&c, "big", 3);
    CHECK(r->token != NULL && r->rate == 1000 && r->burst == 5000);
    CHECK_EQ_INT(config_rate_for(&c, "free", 4)->rate, 0);
    CHECK_EQ_INT(config_rate_for(&c, "small", 5)->burst, 2);
    r = config_rate_for(&c, "other", 5);
    CHECK(r == &c.rate_limit);
    CHECK(set(&c, "rate_limit_token", "big 7") == 0); /* named again: replaced, not added */
    CHECK_EQ_INT(c.nrate_limit_tokens, 3);
    CHECK_EQ_INT(config_rate_for(&c, "big", 3)->rate, 7);
    static const char *const bad_rates[] = {"",     "x",        "10 y",      "-1",
                                            "10 0", "10 20 30", "1000000000"};
    for (size_t i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++) {
        err[0] = '\0';
        CHECK(config_set(&c, "rate_limit", bad_rates[i], err, sizeof(err)) == -EINVAL);
        CHECK(strstr(err, "rate_limit") != NULL);
    }
    static const char *const bad_tokens[] = {"tok", "tok x", "tok 5 0", " 5"};
    for (size_t i = 0; i < sizeof(bad_tokens) / sizeof(bad_tokens[0]); i++)
        CHECK(config_set(&c, "rate_limit_token", bad_tokens[i], err, sizeof(err)) == -EINVAL);
    CHECK_EQ_INT(c.rate_limit.rate, 50);         /* a refused value changes nothing */
    CHECK(set(&c, "rate_limit_token", "") == 0); /* "" empties the list */
    CHECK_EQ_INT(c.nrate_limit_tokens, 0);
    CHECK(set(&c, "rate_limit_token", "again 3") == 0);
    config_free(&c);
    CHECK_EQ_INT(c.nrate_limit_tokens, 0);
}

TEST(config_finish_puts_pidfile_under_data_dir_and_counts_cores)
{
    config_t c;
    config_defaults(&c);
    CHECK(set(&c, "data_dir", "/var/lib/trackd/") == 0);
    config_finish(&c);
    CHECK_EQ_STR(c.pidfile, "/var/lib/trackd/trackd.pid");
    CHECK_EQ_INT(c.workers, sysconf(_SC_NPROCESSORS_ONLN));

    config_defaults(&c);
    CHECK(set(&c, "pidfile", "/run/t.pid") == 0);
    CHECK(set(&c, "workers", "3") == 0);
    config_finish(&c);
    CHECK_EQ_STR(c.pidfile, "/run/t.pid");
    CHECK_EQ_INT(c.workers, 3);
    CHECK(set(&c, "workers", "auto") == 0);
    CHECK_EQ_INT(c.workers, 0);
}

TEST(config_set_parses_every_kind_of_value)
{
    config_t c;
    config_defaults(&c);
    CHECK(set(&c, "listen", "[::1]:9000") == 0);
    CHECK_EQ_STR(c.listen, "[::1]:9000");
    CHECK(set(&c, "listen", "") == 0);
    CHECK_EQ_STR(c.listen, "");
    CHECK(set(&c, "worker_listen", "127.0.0.1:8001") == 0);
    CHECK_EQ_STR(c.worker_listen, "127.0.0.1:8001");
    CHECK(set(&c, "data_dir", "/srv/trackd") == 0);
    CHECK_EQ_STR(c.data_dir, "/srv/trackd");
    CHECK(set(&c, "log_level", "debug") == 0);
    CHECK_EQ_INT(c.log_level, CONFIG_LOG_DEBUG);
    CHECK(set(&c, "log_level", "error") == 0);
    CHECK_EQ_INT(c.log_level, CONFIG_LOG_ERROR);
    CHECK(set(&c, "durability", "write") == 0);
    CHECK_EQ_INT(c.durability, CONFIG_DURABILITY_WRITE);
    CHECK(set(&c, "durability", "none") == 0);
    CHECK_EQ_INT(c.durability, CONFIG_DURABILITY_NONE);
    CHECK(set(&c, "restart_intensity", "0") == 0);
    CHECK_EQ_INT(c.restart_intensity, 0);
    CHECK(set(&c, "max_headers", "100") == 0);
    CHECK_EQ_INT(c.max_headers, 100);
    CHECK(set(&c, "max_body_bytes", "3m") == 0);
    CHECK_EQ_INT(c.max_body_bytes, 3 << 20);
    CHECK(set(&c, "retention_max_bytes", "20g") == 0);
    CHECK_EQ_INT(c.retention_max_bytes, 20LL << 30);
    CHECK(set(&c, "header_timeout_ms", "2s") == 0);
    CHECK_EQ_INT(c.header_timeout_ms, 2000);
    CHECK(set(&c, "segment_max_age_s", "2h") == 0);
    CHECK_EQ_INT(c.segment_max_age_s, 7200);
    CHECK(set(&c, "retry_after_s", "7") == 0);
    CHECK_EQ_INT(c.retry_after_s, 7);
    config_free(&c);
}

TEST(config_sizes_take_kilo_mega_giga_suffixes_in_powers_of_1024)
{
    static const struct {
        const char *in;
        long long want;
    } cases[] = {
        {"4096", 4096},     {"64k", 65536},     {"64K", 65536},  {"64kb", 65536},
        {"64KiB", 65536},   {"2m", 2097152},    {"2M", 2097152}, {"2MB", 2097152},
        {"1g", 1073741824}, {"1G", 1073741824}, {"5000b", 5000},
    };
    config_t c;
    config_defaults(&c);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(set(&c, "max_body_bytes", cases[i].in) == 0);
        CHECK_EQ_INT(c.max_body_bytes, cases[i].want);
    }
    CHECK(set(&c, "segment_max_bytes", "3g") == 0);
    CHECK_EQ_INT(c.segment_max_bytes, 3LL << 30);
}

TEST(config_durations_take_suffixes_and_default_to_the_unit_in_the_name)
{
    config_t c;
    config_defaults(&c);
    CHECK(set(&c, "keepalive_timeout_ms", "1500") == 0);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 1500);
    CHECK(set(&c, "keepalive_timeout_ms", "250ms") == 0);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 250);
    CHECK(set(&c, "keepalive_timeout_ms", "3s") == 0);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 3000);
    CHECK(set(&c, "keepalive_timeout_ms", "2m") == 0);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 120000);
    CHECK(set(&c, "keepalive_timeout_ms", "1h") == 0);
    CHECK_EQ_INT(c.keepalive_timeout_ms, 3600000);
    CHECK(set(&c, "restart_period_s", "30") == 0);
    CHECK_EQ_INT(c.restart_period_s, 30);
    CHECK(set(&c, "restart_period_s", "2m") == 0);
    CHECK_EQ_INT(c.restart_period_s, 120);
    CHECK(set(&c, "restart_period_s", "3000ms") == 0);
    CHECK_EQ_INT(c.restart_period_s, 3);
    /* A seconds option cannot hold a fraction of a second. */
    CHECK(config_set(&c, "restart_period_s", "1500ms", NULL, 0) == -EINVAL);
    CHECK_EQ_INT(c.restart_period_s, 3);
}

TEST(config_rejects_bad_values_and_says_which)
{
    config_t c;
    char err[512];
    config_defaults(&c);
    CHECK(config_set(&c, "max_body_bytes", "x", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "bad size 'x'") != NULL);
    CHECK(strstr(err, "max_body_bytes") != NULL);
    CHECK(config_set(&c, "max_body_bytes", "2q", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "max_body_bytes", "-1", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "max_body_bytes", "", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "max_body_bytes", "99999999999999999999999", err, sizeof(err)) < 0);
    CHECK(config_set(&c, "max_body_bytes", "1", err, sizeof(err)) == -ERANGE);
    CHECK(strstr(err, "out of range") != NULL);
    CHECK(config_set(&c, "header_timeout_ms", "10 s", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "bad duration '10 s'") != NULL);
    CHECK(config_set(&c, "header_timeout_ms", "5d", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "header_timeout_ms", "0", err, sizeof(err)) == -ERANGE);
    CHECK(config_set(&c, "workers", "0", err, sizeof(err)) == -ERANGE);
    /* An int option never takes a value that would wrap. */
    CHECK(config_set(&c, "restart_period_s", "3000000000", err, sizeof(err)) == -ERANGE);
    CHECK(config_set(&c, "shutdown_timeout_ms", "3000000000", err, sizeof(err)) == -ERANGE);
    CHECK(config_set(&c, "restart_intensity", "2147483648", err, sizeof(err)) == -ERANGE);
    CHECK(config_set(&c, "workers", "two", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "bad number 'two'") != NULL);
    CHECK(config_set(&c, "durability", "fsnyc", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "fsnyc") != NULL);
    CHECK(config_set(&c, "log_level", "loud", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "listen", "8000", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "bad address '8000'") != NULL);
    CHECK(config_set(&c, "listen", "::1:8000", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "listen", "127.0.0.1:70000", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "data_dir", "", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "trusted_proxy", "10.0.0.0/33", err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "10.0.0.0/33") != NULL);
    CHECK(config_set(&c, "trusted_proxy", "nginx", err, sizeof(err)) == -EINVAL);
    CHECK(config_set(&c, "lisen", "x", err, sizeof(err)) == -EINVAL);
    CHECK_EQ_STR(err, "unknown option 'lisen'");
    /* Nothing was changed by the failed calls. */
    CHECK_EQ_INT(c.max_body_bytes, 2097152);
    CHECK_EQ_INT(c.workers, 0);
    CHECK_EQ_INT(c.restart_period_s, 5);
    CHECK_EQ_STR(c.listen, "127.0.0.1:8000");
    CHECK_EQ_INT(c.ntrusted_proxies, 0);
}

TEST(config_lists_accumulate_split_on_commas_and_empty_value_clears)
{
    config_t c;
    config_defaults(&c);
    CHECK(set(&c, "token", "abc") == 0);
    CHECK(set(&c, "token", "def, ghi ,") == 0);
    CHECK_EQ_INT(c.tokens.n, 3);
    CHECK_EQ_STR(c.tokens.items[0], "abc");
    CHECK_EQ_STR(c.tokens.items[1], "def");
    CHECK_EQ_STR(c.tokens.items[2], "ghi");
    CHECK(config_list_has(&c.tokens, "def", 3));
    CHECK(config_list_has(&c.tokens, "ghixx", 3)); /* only `len` bytes count */
    CHECK(!config_list_has(&c.tokens, "de", 2));
    CHECK(!config_list_has(&c.tokens, "abcd", 4));
    CHECK(set(&c, "import_secret", "s1") == 0);
    CHECK(set(&c, "redirect_host", "example.com,www.example.com") == 0);
    CHECK_EQ_INT(c.import_secrets.n, 1);
    CHECK_EQ_INT(c.redirect_hosts.n, 2);
    CHECK(set(&c, "token", "") == 0);
    CHECK_EQ_INT(c.tokens.n, 0);
    CHECK(!config_list_has(&c.tokens, "abc", 3));
    config_free(&c);
    CHECK_EQ_INT(c.import_secrets.n, 0);
}

TEST(config_trusted_proxies_match_ipv4_ipv6_and_v4_mapped_peers)
{
    config_t c;
    config_defaults(&c);
    CHECK(!trusted(&c, "127.0.0.1")); /* none configured: nobody is trusted */
    CHECK(set(&c, "trusted_proxy", "127.0.0.1/32, ::1") == 0);
    CHECK(set(&c, "trusted_proxy", "10.1.0.0/16") == 0);
    CHECK(set(&c, "trusted_proxy", "2001:db8::/32") == 0);
    CHECK(set(&c, "trusted_proxy", "192.168.1.7/25") == 0); /* host bits ignored */
    CHECK_EQ_INT(c.ntrusted_proxies, 5);
    CHECK(trusted(&c, "127.0.0.1"));
    CHECK(!trusted(&c, "127.0.0.2"));
    CHECK(trusted(&c, "::1"));
    CHECK(!trusted(&c, "::2"));
    CHECK(trusted(&c, "10.1.255.3"));
    CHECK(!trusted(&c, "10.2.0.1"));
    CHECK(trusted(&c, "2001:db8:1234::9"));
    CHECK(!trusted(&c, "2001:db9::1"));
    CHECK(trusted(&c, "192.168.1.100"));
    CHECK(!trusted(&c, "192.168.1.200"));
    /* A dual-stack socket reports IPv4 peers as v4-mapped IPv6 addresses. */
    CHECK(trusted(&c, "::ffff:127.0.0.1"));
    CHECK(trusted(&c, "::ffff:10.1.2.3"));
    CHECK(!trusted(&c, "::ffff:10.2.2.3"));
    config_free(&c);

    config_defaults(&c);
    /* A v4-mapped network is the IPv4 network it stands for. */
    CHECK(set(&c, "trusted_proxy", "::ffff:172.16.0.0/108") == 0);
    CHECK(trusted(&c, "172.16.5.5"));
    CHECK(trusted(&c, "::ffff:172.31.0.1"));
    CHECK(!trusted(&c, "172.32.0.1"));
    CHECK(set(&c, "trusted_proxy", "0.0.0.0/0") == 0);
    CHECK(trusted(&c, "8.8.8.8"));
    CHECK(!trusted(&c, "2001:db8::1"));
    config_free(&c);
}

TEST(config_parse_hostport_accepts_v4_v6_names_and_bare_port)
{
    char host[64];
    int port = 0;
    CHECK(config_parse_hostport("127.0.0.1:8000", host, sizeof(host), &port) == 0);
    CHECK_EQ_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 8000);
    CHECK(config_parse_hostport("[::1]:8001", host, sizeof(host), &port) == 0);
    CHECK_EQ_STR(host, "::1");
    CHECK_EQ_INT(port, 8001);
    CHECK(config_parse_hostport(":8002", host, sizeof(host), &port) == 0);
    CHECK_EQ_STR(host, "");
    CHECK_EQ_INT(port, 8002);
    CHECK(config_parse_hostport("localhost:65535", host, sizeof(host), &port) == 0);
    CHECK_EQ_STR(host, "localhost");
    CHECK_EQ_INT(port, 65535);
    CHECK(config_parse_hostport("localhost", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("localhost:", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("localhost:0", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("localhost:http", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("::1:8000", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("[::1:8000", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("[nothost]:8000", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("a b:80", host, sizeof(host), &port) == -EINVAL);
    CHECK(config_parse_hostport("averyveryverylonghostname.example:80", host, 8, &port) == -EINVAL);
}

TEST(config_file_reads_options_comments_quotes_and_lists)
{
    const char *path = write_file("trackd.conf", "# trackd test config\n"
                                                 "\n"
                                                 "listen 127.0.0.1:9100\n"
                                                 "  workers   3   # inline comment\n"
                                                 "data_dir \"/tmp/with space/#x\"\n"
                                                 "worker_listen \"\"\n"
                                                 "token abc\n"
                                                 "token def,ghi\n"
                                                 "token a#b\n"
                                                 "trusted_proxy 127.0.0.1/32, ::1\n"
                                                 "max_body_bytes 1m\n"
                                                 "durability write\n"
                                                 "\tmax_headers\t80\n");
    config_t c;
    char err[512] = "";
    config_defaults(&c);
    CHECK_EQ_INT(config_load_file(&c, path, err, sizeof(err)), 0);
    CHECK_EQ_STR(c.listen, "127.0.0.1:9100");
    CHECK_EQ_INT(c.workers, 3);
    CHECK_EQ_STR(c.data_dir, "/tmp/with space/#x");
    CHECK_EQ_STR(c.worker_listen, "");
    CHECK_EQ_INT(c.tokens.n, 4);
    CHECK_EQ_STR(c.tokens.items[3], "a#b");
    CHECK_EQ_INT(c.ntrusted_proxies, 2);
    CHECK_EQ_INT(c.max_body_bytes, 1 << 20);
    CHECK_EQ_INT(c.durability, CONFIG_DURABILITY_WRITE);
    CHECK_EQ_INT(c.max_headers, 80);
    config_free(&c);
}

static void check_file_error(const char *text, const char *want)
{
    const char *path = write_file("bad.conf", text);
    config_t c;
    char err[512] = "", expect[600];
    config_defaults(&c);
    CHECK(config_load_file(&c, path, err, sizeof(err)) < 0);
    snprintf(expect, sizeof(expect), "%s:%s", path, want);
    if (strstr(err, expect) == NULL) {
        fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, expect);
        CHECK(0);
    }
    config_free(&c);
}

TEST(config_file_errors_name_the_file_and_line)
{
    check_file_error("# a\n\n\n\n\n\n\n\n\n\nlisten 127.0.0.1:1\nlisen 127.0.0.1:2\n",
                     "12: unknown option 'lisen'");
    check_file_error("workers 2\n\nmax_body_bytes x\n", "3: bad size 'x'");
    check_file_error("listen\n", "1: needs a value");
    check_file_error("listen # nothing\n", "1: needs a value");
    check_file_error("data_dir \"/tmp/x\n", "1: unterminated quote");
    check_file_error("token \"a\" b\n", "1: text after the closing quote");
    check_file_error("durability\tsometimes\n", "1: bad durability 'sometimes'");
    check_file_error("workers 1\nworkers 100000\n",
                     "2: number '100000' for workers is out of range");

    config_t c;
    char err[512];
    char missing[512];
    snprintf(missing, sizeof(missing), "%s/nope.conf", test_tmpdir());
    config_defaults(&c);
    CHECK(config_load_file(&c, missing, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, missing) != NULL);
}

static int from_args(config_t *c, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, errlen);
    argv[argc++] = "trackd";
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return config_from_args(c, argc, argv, err, errlen);
}

TEST(config_command_line_overrides_the_file_wherever_config_appears)
{
    const char *path = write_file("t.conf", "listen 127.0.0.1:9100\n"
                                            "workers 3\n"
                                            "durability write\n"
                                            "token fromfile1\n"
                                            "token fromfile2\n"
                                            "max_body_bytes 1m\n");
    char p[512], err[512] = "";
    config_t c;
    snprintf(p, sizeof(p), "%s", path);
    config_defaults(&c);
    /* --config comes last, yet the file is read first and the other options win. */
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "--workers", "2", "--durability=none",
                           "--max-body-bytes", "3m", "--token", "cli1", "--token=cli2,cli3",
                           "--config", p, (char *)NULL),
                 0);
    CHECK_EQ_STR(c.listen, "127.0.0.1:9100");
    CHECK_EQ_INT(c.workers, 2);
    CHECK_EQ_INT(c.durability, CONFIG_DURABILITY_NONE);
    CHECK_EQ_INT(c.max_body_bytes, 3 << 20);
    /* A list on the command line replaces the file's list. */
    CHECK_EQ_INT(c.tokens.n, 3);
    CHECK_EQ_STR(c.tokens.items[0], "cli1");
    CHECK_EQ_STR(c.tokens.items[2], "cli3");
    config_free(&c);

    config_defaults(&c);
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "-c", p, "-t", "--max_headers", "99",
                           "--trusted-proxy", "10.0.0.0/8", (char *)NULL),
                 0);
    CHECK_EQ_INT(c.workers, 3);
    CHECK_EQ_INT(c.tokens.n, 2);
    CHECK_EQ_INT(c.max_headers, 99);
    CHECK(trusted(&c, "10.9.9.9"));
    config_free(&c);
}

TEST(config_command_line_errors_name_the_option)
{
    config_t c;
    char err[512] = "";
    config_defaults(&c);
    CHECK(from_args(&c, err, sizeof(err), "--lisen", "x", (char *)NULL) == -EINVAL);
    CHECK(strstr(err, "unknown option '--lisen'") != NULL);
    CHECK(from_args(&c, err, sizeof(err), "--lisen", (char *)NULL) == -EINVAL);
    CHECK(strstr(err, "unknown option '--lisen'") != NULL);
    CHECK(from_args(&c, err, sizeof(err), "--workers", (char *)NULL) == -EINVAL);
    CHECK(strstr(err, "'--workers' needs a value") != NULL);
    CHECK(from_args(&c, err, sizeof(err), "--max-body-bytes", "lots", (char *)NULL) == -EINVAL);
    CHECK(strstr(err, "--max-body-bytes: bad size 'lots'") != NULL);
    CHECK(from_args(&c, err, sizeof(err), "stray", (char *)NULL) == -EINVAL);
    CHECK(strstr(err, "unexpected argument 'stray'") != NULL);
    CHECK(from_args(&c, err, sizeof(err), "--config", "/nonexistent/trackd.conf", (char *)NULL) ==
          -ENOENT);
    CHECK(strstr(err, "/nonexistent/trackd.conf") != NULL);
    /* A value may start with '-' (it is taken as the option's value, not as an option). */
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "--token", "-t", (char *)NULL), 0);
    CHECK_EQ_STR(c.tokens.items[0], "-t");
    config_free(&c);
}

TEST(config_json_fast_path_is_on_or_off_from_file_and_command_line)
{
    config_t c;
    char err[256];

    config_defaults(&c);
    CHECK_EQ_INT(config_set(&c, "json_fast_path", "off", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.json_fast_path, 0);
    CHECK_EQ_INT(config_set(&c, "json_fast_path", "on", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.json_fast_path, 1);
    CHECK_EQ_INT(config_set(&c, "json_fast_path", "yes", err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "json_fast_path") != NULL && strstr(err, "on or off") != NULL);
    CHECK_EQ_INT(c.json_fast_path, 1);
    CHECK_EQ_INT(config_set(&c, "json_fast_path", "", err, sizeof(err)), -EINVAL);
    const char *path = write_file("fast.conf", "json_fast_path off\n");
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "-c", path, (char *)NULL), 0);
    CHECK_EQ_INT(c.json_fast_path, 0);
    CHECK_EQ_INT(
        from_args(&c, err, sizeof(err), "-c", path, "--json-fast-path", "on", (char *)NULL), 0);
    CHECK_EQ_INT(c.json_fast_path, 1);
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "--json-fast-path=off", (char *)NULL), 0);
    CHECK_EQ_INT(c.json_fast_path, 0);
    config_free(&c);
}

TEST(config_help_and_version_return_1_and_help_lists_every_option)
{
    config_t c;
    char err[256], path[512], *text;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/help.txt", test_tmpdir());
    CHECK(freopen(path, "w", stdout) != NULL);
    config_defaults(&c);
    /* --help wins even over a bad option before it. */
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "--bogus", "--help", (char *)NULL), 1);
    CHECK_EQ_INT(from_args(&c, err, sizeof(err), "--version", (char *)NULL), 1);
    fflush(stdout);
    f = fopen(path, "r");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    text = calloc(1, (size_t)n + 1);
    CHECK(text != NULL);
    CHECK(fread(text, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    for (size_t i = 0; i < sizeof(all_names) / sizeof(all_names[0]); i++) {
        char flag[80], bracket[80];
        size_t j = 0;
        for (const char *s = all_names[i]; *s; s++)
            flag[j++] = *s == '_' ? '-' : *s;
        flag[j] = '\0';
        snprintf(bracket, sizeof(bracket), "[%s]", all_names[i]);
        char dashed[90];
        snprintf(dashed, sizeof(dashed), "--%s ", flag);
        if (strstr(text, dashed) == NULL || strstr(text, bracket) == NULL) {
            fprintf(stderr, "  --help lacks %s\n", all_names[i]);
            CHECK(0);
        }
        /* ... and config_set knows the same name. */
        char e[256] = "";
        int r = config_set(&c, all_names[i], "\x01", e, sizeof(e));
        CHECK(r == 0 || strstr(e, "unknown option") == NULL);
    }
    CHECK(strstr(text, "(default: 2m)") != NULL);  /* max_body_bytes */
    CHECK(strstr(text, "(default: 10s)") != NULL); /* shutdown_timeout_ms */
    CHECK(strstr(text, "--json-fast-path on|off  [json_fast_path]  (default: on)") != NULL);
    CHECK(strstr(text, "trackd 1.") != NULL);
    free(text);
    config_free(&c);
}

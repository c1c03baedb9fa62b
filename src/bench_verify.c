/*
 * `trackbench verify` (see bench_verify.h). The ledger may hold tens of millions of ids, so the
 * set keeps only a 64-bit hash of each id and a count (12 bytes a slot); the few ids shown by
 * name are found again by a second pass over the ledger. Two distinct ids share a hash with
 * probability about n^2 / 2^65: 3e-6 for ten million ids.
 */
#include "trackd/bench_verify.h"

#include "trackd/logread.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* How deep inside a log line the record may be nested. */
#define VERIFY_NEST_DEPTH 3
#define VERIFY_MIN_CAP 1024

typedef struct {
    uint64_t *keys; /* 0 = empty slot */
    uint32_t *counts;
    size_t cap, n;
} idset_t;

static uint64_t id_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a splitmix64 finaliser to spread it */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h ? h : 1;
}

static size_t idset_slot(const idset_t *s, uint64_t key)
{
    size_t i = (size_t)key & (s->cap - 1);
    while (s->keys[i] != 0 && s->keys[i] != key)
        i = (i + 1) & (s->cap - 1);
    return i;
}

static int idset_resize(idset_t *s, size_t cap)
{
    idset_t ns = {calloc(cap, sizeof(uint64_t)), calloc(cap, sizeof(uint32_t)), cap, s->n};
    if (ns.keys == NULL || ns.counts == NULL) {
        free(ns.keys);
        free(ns.counts);
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (s->keys[i] == 0)
            continue;
        size_t j = idset_slot(&ns, s->keys[i]);
        ns.keys[j] = s->keys[i];
        ns.counts[j] = s->counts[i];
    }
    free(s->keys);
    free(s->counts);
    *s = ns;
    return 0;
}

/* Add `key`; *existed tells whether it was there already. */
static int idset_add(idset_t *s, uint64_t key, int *existed)
{
    if ((s->n + 1) * 10 > s->cap * 7) {
        int rc = idset_resize(s, s->cap ? s->cap * 2 : VERIFY_MIN_CAP);
        if (rc != 0)
            return rc;
    }
    size_t i = idset_slot(s, key);
    *existed = s->keys[i] != 0;
    if (!*existed) {
        s->keys[i] = key;
        s->n++;
    }
    return 0;
}

static uint32_t *idset_count(idset_t *s, uint64_t key)
{
    if (s->cap == 0)
        return NULL;
    size_t i = idset_slot(s, key);
    return s->keys[i] ? &s->counts[i] : NULL;
}

static void idset_free(idset_t *s)
{
    free(s->keys);
    free(s->counts);
}

/* Strip the line end and blanks; returns the length left. */
static size_t trim(char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
        n--;
    line[n] = '\0';
    return n;
}

static int find_id(json_t *v, int depth, char *id)
{
    if (!json_is_object(v))
        return 0;
    json_t *props = json_object_get(v, "properties");
    json_t *iid = json_is_object(props) ? json_object_get(props, "$insert_id") : NULL;
    if (json_is_string(iid)) {
        snprintf(id, BENCH_VERIFY_ID_MAX + 1, "%s", json_string_value(iid));
        return 1;
    }
    if (depth == 0)
        return 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        int r = 0;
        if (json_is_object(val)) {
            r = find_id(val, depth - 1, id);
        } else if (json_is_string(val) && json_string_length(val) > 0 &&
                   json_string_value(val)[0] == '{') {
            /* A record printed as a JSON string inside the line. */
            json_t *inner = json_loadb(json_string_value(val), json_string_length(val), 0, NULL);
            if (inner) {
                r = find_id(inner, depth - 1, id);
                json_decref(inner);
            }
        }
        if (r)
            return r;
    }
    return 0;
}

int bench_verify_line_id(const char *line, size_t len, char *id)
{
    json_t *root = json_loadb(line, len, 0, NULL);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return -EINVAL;
    }
    int r = find_id(root, VERIFY_NEST_DEPTH, id);
    json_decref(root);
    return r;
}

static int read_ledger(const char *path, idset_t *set, bench_verify_t *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        fprintf(stderr, "trackbench verify: %s: %s\n", path, strerror(e));
        return -e;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        size_t len = trim(line, (size_t)n);
        if (len == 0)
            continue;
        int existed;
        if ((rc = idset_add(set, id_hash(line, len), &existed)) != 0)
            break;
        if (existed)
            out->ledger_repeats++;
        else
            out->acknowledged++;
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    free(line);
    fclose(f);
    return rc;
}

/* Second pass: name the first few missing and duplicated ids, in ledger order. */
static void show_ids(const char *path, idset_t *set, bench_verify_t *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0 &&
           (out->nshow_missing < BENCH_VERIFY_SHOW || out->nshow_duplicated < BENCH_VERIFY_SHOW)) {
        size_t len = trim(line, (size_t)n);
        if (len == 0)
            continue;
        uint32_t *cnt = idset_count(set, id_hash(line, len));
        if (cnt == NULL)
            continue;
        if (*cnt == 0 && out->nshow_missing < BENCH_VERIFY_SHOW &&
            out->nshow_missing < out->missing)
            snprintf(out->show_missing[out->nshow_missing++], BENCH_VERIFY_ID_MAX + 1, "%s", line);
        else if (*cnt > 1 && out->nshow_duplicated < BENCH_VERIFY_SHOW)
            snprintf(out->show_duplicated[out->nshow_duplicated++], BENCH_VERIFY_ID_MAX + 1, "%s",
                     line);
        if (*cnt == 0 || *cnt > 1)
            *cnt = 1; /* a repeated ledger line is named once */
    }
    free(line);
    fclose(f);
}

/* Count one record (a JSON object as text) of the log. */
static void count_record(const char *rec, size_t len, idset_t *set, bench_verify_t *out)
{
    char id[BENCH_VERIFY_ID_MAX + 1];
    out->records++;
    int r = bench_verify_line_id(rec, len, id);
    if (r < 0) {
        out->bad_lines++;
        return;
    }
    if (r == 0) {
        out->without_id++;
        return;
    }
    uint32_t *cnt = idset_count(set, id_hash(id, strlen(id)));
    if (cnt == NULL)
        out->unacknowledged++;
    else if (++*cnt == 1)
        out->found++;
    else if (*cnt == 2)
        out->duplicated++;
}

static void on_log_issue(const logread_issue_t *issue, void *arg)
{
    if (issue->kind != LOGREAD_NOTICE)
        fprintf(stderr, "trackbench verify: log: %s%s%s\n", issue->path ? issue->path : "",
                issue->path ? ": " : "", issue->what);
}

/* Read the log in process, every slot merged. */
static int read_log_direct(const char *data_dir, idset_t *set, bench_verify_t *out)
{
    logread_opts_t opts = {.on_issue = on_log_issue};
    logread_t *r;
    logread_record_t rec;
    int rc = logread_open(&r, data_dir, &opts);
    if (rc != 0) {
        fprintf(stderr, "trackbench verify: %s: %s\n", data_dir, strerror(-rc));
        return rc;
    }
    while ((rc = logread_next(r, &rec)) == 1)
        count_record(rec.payload, rec.len, set, out);
    logread_counts_t c;
    logread_counts(r, &c);
    out->log_damage = c.damage + c.chain + c.torn_tails;
    logread_close(r);
    if (rc < 0) {
        fprintf(stderr, "trackbench verify: reading %s: %s\n", data_dir, strerror(-rc));
        return rc;
    }
    if (c.errors) {
        fprintf(stderr, "trackbench verify: %" PRIu64 " read errors in %s\n", c.errors, data_dir);
        return -EIO;
    }
    return 0;
}

/* Read the log from `trackctl cat` and count each id. */
static int read_log(const char *data_dir, const char *trackctl, idset_t *set, bench_verify_t *out)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp(trackctl, trackctl, "cat", "--data-dir", data_dir, (char *)NULL);
        fprintf(stderr, "trackbench verify: cannot run %s: %s\n", trackctl, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    if (f == NULL) {
        int e = errno;
        close(fds[0]);
        waitpid(pid, NULL, 0);
        return -e;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        size_t len = trim(line, (size_t)n);
        if (len > 0)
            count_record(line, len, set, out);
    }
    free(line);
    fclose(f);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "trackbench verify: %s cat --data-dir %s failed (%s %d)\n", trackctl,
                data_dir, WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -EIO;
    }
    return 0;
}

int bench_verify_run(const char *ledger, const char *data_dir, const char *trackctl,
                     bench_verify_t *out)
{
    idset_t set = {0};
    memset(out, 0, sizeof(*out));
    int rc = read_ledger(ledger, &set, out);
    if (rc == 0)
        rc = trackctl ? read_log(data_dir, trackctl, &set, out)
                      : read_log_direct(data_dir, &set, out);
    if (rc == 0) {
        out->missing = out->acknowledged - out->found;
        if (out->missing || out->duplicated)
            show_ids(ledger, &set, out);
    }
    idset_free(&set);
    return rc;
}

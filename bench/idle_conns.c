/*
 * Hold many idle keep-alive connections open, each after one complete request, to measure what
 * an idle connection costs a server. Usage: idle_conns HOST PORT COUNT PATH
 * Prints "ready N" once every connection got its response, then waits for SIGTERM/SIGINT.
 * Plain blocking sockets: the point is the server's memory, not the client's speed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int one_request(int fd, const char *req, size_t len)
{
    char buf[4096];
    size_t got = 0;

    if (write(fd, req, len) != (ssize_t)len)
        return -1;
    /* Read until the end of a response with a Content-Length body (small answers only). */
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "content-length:");
        if (end && cl && got >= (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10))
            return 0;
        if (got == sizeof(buf) - 1)
            return -1;
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    struct rlimit rl;
    char req[2048];
    sigset_t set;
    int sig, count, *fds;

    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT COUNT PATH\n", argv[0]);
        return 2;
    }
    count = atoi(argv[3]);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[4], argv[1]);
    fds = calloc((size_t)count, sizeof(int));
    if (fds == NULL)
        return 1;
    for (int i = 0; i < count; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            one_request(fds[i], req, (size_t)len) < 0) {
            fprintf(stderr, "connection %d failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("ready %d\n", count);
    fflush(stdout);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigwait(&set, &sig);
    return 0;
}

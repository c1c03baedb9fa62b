/*
 * trackd's entry point: build the configuration (defaults, then --config FILE, then the other
 * options), then hand over to the master (master.c), which forks and supervises the workers.
 * `-t` stops after the checks, so an operator can validate a config before a reload.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* setproctitle_init, from libbsd's overlay */

#include "trackd/config.h"
#include "trackd/listener.h"
#include "trackd/master.h"

/* Is -t / --test-config among the options? Values of options are skipped, not taken for it. */
static int main_test_only(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-t") == 0 || strcmp(a, "--test-config") == 0)
            return 1;
        if (strcmp(a, "-c") == 0 || (strncmp(a, "--", 2) == 0 && strchr(a, '=') == NULL &&
                                     strcmp(a, "--help") != 0 && strcmp(a, "--version") != 0))
            i++;
    }
    return 0;
}

/* A private copy of argv: setproctitle() reuses the memory of the original strings. */
static char **main_copy_args(int argc, char **argv)
{
    char **copy = calloc((size_t)argc + 1, sizeof(*copy));

    if (copy == NULL)
        return NULL;
    for (int i = 0; i < argc; i++) {
        copy[i] = strdup(argv[i]);
        if (copy[i] == NULL) {
            while (i-- > 0)
                free(copy[i]);
            free(copy);
            return NULL;
        }
    }
    return copy;
}

int main(int argc, char **argv, char **envp)
{
    char **args = main_copy_args(argc, argv);
    char err[1024];
    config_t cfg;
    int rc;

    if (args == NULL) {
        fprintf(stderr, "trackd: out of memory\n");
        return MASTER_EXIT_FAILURE;
    }
    setproctitle_init(argc, argv, envp);
    config_defaults(&cfg);
    rc = config_from_args(&cfg, argc, args, err, sizeof(err));
    if (rc == 0) {
        config_finish(&cfg);
        rc = listener_check_config(&cfg, err, sizeof(err));
    }
    if (rc < 0) {
        fprintf(stderr, "trackd: %s\n", err);
        rc = MASTER_EXIT_CONFIG;
    } else if (rc == 1) {
        rc = MASTER_EXIT_OK; /* --help or --version */
    } else if (main_test_only(argc, args)) {
        printf("trackd: configuration OK (%d workers, listen %s, worker_listen %s, data_dir %s)\n",
               cfg.workers, cfg.listen[0] ? cfg.listen : "off",
               cfg.worker_listen[0] ? cfg.worker_listen : "off", cfg.data_dir);
        rc = MASTER_EXIT_OK;
    } else {
        rc = master_run(&cfg, argc, args);
    }
    config_free(&cfg);
    for (int i = 0; i < argc; i++)
        free(args[i]);
    free(args);
    return rc;
}

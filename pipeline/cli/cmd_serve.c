/*
 * cmd_serve.c - `passmill serve -c CONFIG`: Apple's pass web service and
 * the ticket downloads (pipeline/service/, docs/web-service.md) until
 * SIGTERM or SIGINT, then a clean stop: requests in flight finish, every
 * thread is joined, the registry is closed.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/config.h"
#include "core/secret.h"
#include "push/pusher.h"
#include "registry/registry.h"
#include "service/link.h"
#include "service/service.h"
#include "stores/store.h"
#include "wallet/identity.h"

/* /metrics lines of this process's push sender (docs/push.md). */
static void push_metrics(void *arg, pm_buf *out)
{
    pm_push_counts c;
    pm_pusher_counts(arg, &c);
    char text[768];
    int n = snprintf(text, sizeof text,
                     "# HELP passmill_pushes_total Pushes this process's sender settled, by result.\n"
                     "# TYPE passmill_pushes_total counter\n"
                     "passmill_pushes_total{result=\"sent\"} %llu\n"
                     "passmill_pushes_total{result=\"failed\"} %llu\n"
                     "passmill_pushes_total{result=\"retried\"} %llu\n"
                     "passmill_pushes_total{result=\"gone\"} %llu\n",
                     (unsigned long long)c.sent, (unsigned long long)c.failed,
                     (unsigned long long)c.retried, (unsigned long long)c.gone);
    if (n > 0 && (size_t)n < sizeof text)
        pm_buf_append(out, text, (size_t)n);
}

static int usage(FILE *out)
{
    fprintf(out, "usage: passmill serve -c CONFIG [-X key=value ...]\n\n"
                 "Serves over HTTP (put TLS in front, docs/web-service.md):\n"
                 "  Apple's pass web service v1 under /v1/ (register, unregister, updated\n"
                 "  serials, latest pass, log), the ticket downloads /tickets/ID/pkpass and\n"
                 "  /tickets/ID/qr behind signed links (`passmill link`), /healthz and /metrics.\n"
                 "Keys: service.listen, service.threads, service.timeout_s,\n"
                 "service.max_connections, service.link_secret_file; the registry, the store and\n"
                 "the signer (its pass type id) as for `passmill run`.  With push.enabled = true\n"
                 "it also sends the registry's queued pushes to APNs on a thread of its own\n"
                 "(docs/push.md), as several serve processes may: they share the outbox.\n"
                 "Stops on SIGTERM/SIGINT.\n\n"
                 "options:\n"
                 "  -c, --config FILE   configuration file\n"
                 "  -X key=value        set one configuration key (repeatable)\n"
                 "  -h, --help          this help\n"
                 "\nexit status: 0 stopped by a signal, 2 usage or configuration error,\n"
                 "3 the registry, the store or the socket failed.\n");
    return PM_EXIT_OK;
}

static int fail(const pm_error *err)
{
    fprintf(stderr, "passmill serve: %s\n", err->message);
    return err->code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    pm_error err;
    pm_config *cfg = pm_config_create();
    if (!cfg) {
        fprintf(stderr, "passmill serve: out of memory\n");
        return PM_EXIT_FAILURE;
    }
    /* -X pairs apply after the file: collect them first. */
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    size_t n_over = 0;
    int opt, rc = PM_EXIT_USAGE;
    optind = 1;
    while (overrides && (opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'X': overrides[n_over++] = optarg; break;
        case 'h': rc = usage(stdout); goto out;
        default: fprintf(stderr, "passmill serve: see `passmill serve --help`\n"); goto out;
        }
    }
    if (!overrides || optind != argc) {
        fprintf(stderr, "passmill serve: %s\n", overrides ? "expected no argument (see --help)" : "out of memory");
        goto out;
    }
    if (config_path && pm_config_load_file(cfg, config_path, &err) != 0) {
        rc = fail(&err);
        goto out;
    }
    for (size_t i = 0; i < n_over; i++)
        if (pm_config_set_pair(cfg, overrides[i], &err) != 0) {
            rc = fail(&err);
            goto out;
        }

    pm_registry *registry = NULL;
    pm_store *store = NULL;
    pm_identity *id = NULL;
    pm_service *svc = NULL;
    pm_pusher *pusher = NULL;
    char *link_key = NULL;
    if (pm_registry_open(cfg, &registry, &err) != 0) {
        rc = fail(&err);
        goto close;
    }
    if (!registry) {
        fprintf(stderr, "passmill serve: no registry: set registry.path or registry.url\n");
        goto close;
    }
    if (pm_store_open(cfg, &store, &err) != 0 || pm_identity_load(cfg, &id, &err) != 0) {
        rc = fail(&err);
        goto close;
    }
    if (*cfg->service_link_secret_file) {
        link_key = pm_secret_read_file(cfg->service_link_secret_file, "service.link_secret_file", &err);
        if (!link_key) {
            rc = fail(&err);
            goto close;
        }
        if (strlen(link_key) < PM_LINK_KEY_MIN) {
            fprintf(stderr, "passmill serve: service.link_secret_file: the key is shorter than %d bytes\n",
                    PM_LINK_KEY_MIN);
            goto close;
        }
    }
    /* Block the stop signals before MHD starts its threads, which inherit
     * the mask: only sigwait() below takes them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    /* The pusher has its own registry handle and thread; it starts after the
     * mask above, so the stop signals reach only sigwait(). */
    if (cfg->push_enabled &&
        (pm_pusher_create(cfg, &pusher, &err) != 0 || pm_pusher_start(pusher, &err) != 0)) {
        rc = fail(&err);
        goto close;
    }
    pm_service_deps deps = {
        .cfg = cfg, .registry = registry, .store = store, .pass_type_id = id->pass_type_id,
        .link_key = (const uint8_t *)link_key, .link_key_len = link_key ? strlen(link_key) : 0,
        .metrics_fn = pusher ? push_metrics : NULL, .metrics_arg = pusher,
    };
    if (pm_service_start(&deps, &svc, &err) != 0) {
        rc = fail(&err);
        goto close;
    }
    pm_secret_free(link_key);  /* the service keeps its own copy */
    link_key = NULL;
    fprintf(stderr, "passmill serve: listening on port %u (%s registry, %s store, pass type %s%s%s)\n",
            (unsigned)pm_service_port(svc), registry->ops->name, store->ops->name, id->pass_type_id,
            deps.link_key_len ? ", ticket links on" : ", ticket links off",
            pusher ? ", pushes on" : "");
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "passmill serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    pm_service_stop(svc);
    rc = PM_EXIT_OK;
close:
    pm_pusher_destroy(pusher); /* stops its thread after the round in flight */
    pm_secret_free(link_key);
    pm_identity_destroy(id);
    pm_store_close(store);
    pm_registry_close(registry);
out:
    free(overrides);
    pm_config_destroy(cfg);
    return rc;
}

/* cmd_push.c - `passmill push`: send the registry's queued pushes once. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli/commands.h"
#include "core/config.h"
#include "push/pusher.h"
#include "registry/registry.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: passmill push [-c CONFIG] [-X key=value ...]\n"
            "\n"
            "Sends the pushes the registry's outbox holds (one per registered device of\n"
            "every changed pass, queued by `run` in the same transaction as the change) to\n"
            "APNs at push.apns_url over HTTP/2, authenticated with the pass type ID\n"
            "certificate and key that sign the passes (sign.*), topic = the pass type\n"
            "identifier, an empty JSON payload.  It drains once: rounds of push.batch\n"
            "concurrent pushes until nothing is due (the outbox is empty, or holds only\n"
            "failed pushes and pushes waiting for their retry), then prints\n"
            "  sent=N failed=F retried=R gone=G\n"
            "and the outbox left: \"outbox: waiting=W failed=F\" on stderr.  200 deletes the\n"
            "push; 410 deletes it with the device's registrations for that pass type (and\n"
            "the device when none is left); 429, 5xx and transport errors are retried after\n"
            "push.backoff_initial doubling up to push.backoff_max (or Retry-After); other\n"
            "answers mark the push failed with APNs' reason.  A push claimed by a sender\n"
            "that died is due again after push.lease seconds (at-least-once).\n"
            "`run` (and `serve`) send continuously with push.enabled = true.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   configuration file (key = value lines)\n"
            "  -X key=value        set one configuration key (after the file; repeatable)\n"
            "  -h, --help          this help\n"
            "\n"
            "exit status: 0 nothing failed in this drain, 1 some pushes were marked failed,\n"
            "2 usage or configuration error, 3 the registry or the identity could not be\n"
            "used.  See docs/push.md.\n");
}

int cmd_push(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    size_t n_overrides = 0;
    if (!overrides)
        return PM_EXIT_FAILURE;
    int opt, status = PM_EXIT_USAGE;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'X': overrides[n_overrides++] = optarg; break;
        case 'h': usage(stdout); free(overrides); return PM_EXIT_OK;
        default: fprintf(stderr, "passmill push: see `passmill push --help`\n"); free(overrides); return PM_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "passmill push: unexpected argument '%s' (see --help)\n", argv[optind]);
        free(overrides);
        return PM_EXIT_USAGE;
    }
    pm_error err;
    pm_error_clear(&err);
    pm_config *cfg = pm_config_create();
    pm_pusher *p = NULL;
    if (!cfg) {
        free(overrides);
        return PM_EXIT_FAILURE;
    }
    if (config_path && pm_config_load_file(cfg, config_path, &err) != 0)
        goto fail;
    for (size_t i = 0; i < n_overrides; i++)
        if (pm_config_set_pair(cfg, overrides[i], &err) != 0)
            goto fail;
    if (pm_pusher_create(cfg, &p, &err) != 0)
        goto fail;
    int rc = pm_pusher_drain(p, &err);
    pm_push_counts c;
    pm_pusher_counts(p, &c);
    printf("sent=%llu failed=%llu retried=%llu gone=%llu\n", (unsigned long long)c.sent,
           (unsigned long long)c.failed, (unsigned long long)c.retried, (unsigned long long)c.gone);
    fflush(stdout);
    if (rc != 0) {
        fprintf(stderr, "passmill push: %s\n", err.message);
        status = PM_EXIT_FAILURE;
        goto out;
    }
    status = c.failed ? PM_EXIT_REJECTS : PM_EXIT_OK;
    pm_push_status st;
    pm_error serr;
    /* The pusher's own registry handle: the outbox it leaves. */
    pm_registry *reg = NULL;
    if (pm_registry_open(cfg, &reg, &serr) == 0 && reg &&
        reg->ops->push_status(reg, (int64_t)time(NULL), &st, &serr) == 0)
        fprintf(stderr, "passmill push: outbox: waiting=%llu failed=%llu\n",
                (unsigned long long)(st.due + st.waiting), (unsigned long long)st.failed);
    pm_registry_close(reg);
    goto out;
fail:
    fprintf(stderr, "passmill push: %s\n", err.message);
    status = err.code == PM_ERR_CONFIG || err.code == PM_ERR_FORMAT ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
out:
    pm_pusher_destroy(p);
    pm_config_destroy(cfg);
    free(overrides);
    return status;
}

/* cmd_run.c - `passmill run`: configuration in, pipeline run, summary out. */
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/engine_run.h"
#include "cli/stop_signals.h"
#include "core/config.h"
#include "engine/context.h"
#include "engine/engine.h"
#include "outcomes/outcome.h"
#include "push/pusher.h"
#include "registry/registry.h"
#include "sources/source.h"
#include "stores/store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: passmill run [-c CONFIG] [-X key=value ...] [--now RFC3339] [--workers N]\n"
            "                    [--exit-on-eof]\n"
            "\n"
            "Reads pass requests from the configured source (a JSON Lines or Avro file, or\n"
            "Kafka), validates each, renders its barcode and QR image, builds and signs the\n"
            "pass, and writes passes/<serial>.pkpass and qr/<serial>.png to the store.\n"
            "Every record ends as one pass, one unchanged (the registry already holds that\n"
            "exact pass: nothing is rebuilt) or one reject; with a registry (registry.path or\n"
            "registry.url) each is recorded there before it counts.  Prints progress on\n"
            "stderr every engine.progress_ms (a bar on a terminal, plain lines otherwise;\n"
            "for a file with percent done and ETA, the total estimated from the bytes read)\n"
            "and one line on stdout at the end:\n"
            "  in=N passes=P unchanged=U rejects=R   (plus failed=F when records failed)\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   configuration file (key = value lines)\n"
            "  -X key=value        set one configuration key (after the file; repeatable)\n"
            "      --now TIME      fixed clock (same as -X engine.now=TIME): byte-identical output\n"
            "      --workers N     same as -X engine.workers=N\n"
            "      --exit-on-eof   Kafka: stop when every partition is drained\n"
            "  -h, --help          this help\n"
            "\n"
            "Relative paths in CONFIG are relative to CONFIG's folder; relative paths\n"
            "given with -X (and defaults) are relative to the working directory.\n"
            "\n"
            "exit status: 0 all records passed, 1 some were rejected, 2 usage or\n"
            "configuration error (a bad key or value, or a file or folder it names that\n"
            "cannot be opened; nothing was read), 3 records failed or the run could not\n"
            "complete.\n"
            "SIGINT/SIGTERM stop reading, finish in-flight records and exit; a second\n"
            "signal exits at once.\n"
            "\n"
            "configuration keys:\n");
    pm_config_print_keys(out);
}

int cmd_run(int argc, char **argv)
{
    enum { OPT_NOW = 256, OPT_WORKERS, OPT_EOF };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"now", required_argument, NULL, OPT_NOW},
        {"workers", required_argument, NULL, OPT_WORKERS}, {"exit-on-eof", no_argument, NULL, OPT_EOF},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    size_t n_overrides = 0;
    if (!overrides)
        return PM_EXIT_FAILURE;
    char *extra[3] = {NULL, NULL, NULL};
    int opt, status = PM_EXIT_USAGE;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'X': overrides[n_overrides++] = optarg; break;
        case OPT_NOW: free(extra[0]); extra[0] = NULL; if (asprintf(&extra[0], "engine.now=%s", optarg) < 0) extra[0] = NULL; break;
        case OPT_WORKERS: free(extra[1]); extra[1] = NULL; if (asprintf(&extra[1], "engine.workers=%s", optarg) < 0) extra[1] = NULL; break;
        case OPT_EOF: free(extra[2]); extra[2] = strdup("kafka.exit_on_eof=true"); break;
        case 'h': usage(stdout); status = PM_EXIT_OK; goto out_args;
        default: fprintf(stderr, "passmill run: see `passmill run --help`\n"); goto out_args;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "passmill run: unexpected argument '%s' (see --help)\n", argv[optind]);
        goto out_args;
    }

    pm_error err;
    pm_error_clear(&err);
    pm_config *cfg = pm_config_create();
    pm_context *ctx = NULL;
    pm_source *source = NULL;
    pm_store *store = NULL;
    pm_outcome *outcomes[2] = {NULL, NULL};
    size_t n_outcomes = 0;
    pm_registry *registry = NULL;
    pm_pusher *pusher = NULL;
    char run_id[PM_RUN_ID_LEN + 1];
    bool run_begun = false;
    pm_registry_run_id(run_id);
    if (!cfg) {
        fprintf(stderr, "passmill run: out of memory\n");
        status = PM_EXIT_FAILURE;
        goto out_args;
    }
    if (config_path && pm_config_load_file(cfg, config_path, &err) != 0)
        goto config_error;
    for (size_t i = 0; i < n_overrides; i++)
        if (pm_config_set_pair(cfg, overrides[i], &err) != 0)
            goto config_error;
    for (size_t i = 0; i < 3; i++)
        if (extra[i] && pm_config_set_pair(cfg, extra[i], &err) != 0)
            goto config_error;

    if (pm_context_create(cfg, &ctx, &err) != 0)
        goto config_error;
    if (pm_registry_open(cfg, &registry, &err) != 0)
        goto config_error;
    ctx->registry = registry;
    if (pm_store_open(cfg, &store, &err) != 0)
        goto runtime_error;
    if (pm_outcome_files_open(cfg->ledger_path, cfg->rejects_path, &outcomes[n_outcomes], &err) != 0)
        goto runtime_error;
    n_outcomes++;
    if (strcmp(cfg->input_type, "kafka") == 0) {
        if (pm_outcome_kafka_open(cfg, &outcomes[n_outcomes], &err) != 0)
            goto runtime_error;
        n_outcomes++;
    }
    if (pm_source_open(cfg, &source, &err) != 0)
        goto runtime_error;
    /* push.enabled: the run's pushes leave while it runs, on the pusher's
     * own thread and registry handle (docs/push.md). */
    if (cfg->push_enabled &&
        (pm_pusher_create(cfg, &pusher, &err) != 0 || pm_pusher_start(pusher, &err) != 0))
        goto config_error;

    if (registry) {
        if (registry->ops->begin_run(registry, run_id, "run", &err) != 0)
            goto runtime_error;
        run_begun = true;
        fprintf(stderr, "passmill: run %s\n", run_id);
    }
    cli_progress po;
    cli_progress_init(&po);
    pm_engine_opts opts = cli_engine_opts(cfg, run_id, &po);
    cli_stop_signals_install(source);

    pm_run_stats stats;
    int rc = pm_engine_run(ctx, source, store, outcomes, n_outcomes, &opts, &stats, &err);
    cli_print_summary(&stats);
    rc = cli_end_run(run_begun ? registry : NULL, run_id, &stats, rc, &err);
    if (pusher) {
        /* What the run queued last goes out before the exit. */
        pm_pusher_stop(pusher);
        pm_error perr;
        if (pm_pusher_drain(pusher, &perr) != 0)
            fprintf(stderr, "passmill run: push: %s\n", perr.message);
        pm_push_counts pc;
        pm_pusher_counts(pusher, &pc);
        fprintf(stderr, "passmill: pushes sent=%llu failed=%llu retried=%llu gone=%llu\n",
                (unsigned long long)pc.sent, (unsigned long long)pc.failed,
                (unsigned long long)pc.retried, (unsigned long long)pc.gone);
    }
    fprintf(stderr, "passmill: %.2fs, %.0f passes/s with %u workers\n", stats.seconds,
            stats.seconds > 0 ? (double)stats.passes / stats.seconds : 0.0, opts.workers);
    status = cli_run_exit_status("run", rc, &err, &stats);
    cli_stop_signals_clear();
    goto out;

config_error:
    fprintf(stderr, "passmill run: %s\n", err.message);
    status = err.code == PM_ERR_CONFIG || err.code == PM_ERR_FORMAT ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    goto out;
runtime_error:
    /* Opening the store, outcomes or source: a path or value the
     * configuration names that does not work is still its error. */
    fprintf(stderr, "passmill run: %s\n", err.message);
    status = err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
out:
    pm_pusher_destroy(pusher);
    pm_source_close(source); /* a Kafka source commits what is durable here */
    for (size_t i = 0; i < n_outcomes; i++)
        pm_outcome_close(outcomes[i]);
    pm_store_close(store);
    pm_context_destroy(ctx);
    pm_registry_close(registry); /* after the context: its stages' readers are closed */
    pm_config_destroy(cfg);
out_args:
    for (size_t i = 0; i < 3; i++)
        free(extra[i]);
    free(overrides);
    return status;
}

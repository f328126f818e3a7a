/*
 * cmd_lifecycle.c - `passmill void|expire|redeem|activate|reissue|templates`:
 * the registry as the source of a run (docs/lifecycle.md).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/engine_run.h"
#include "cli/stop_signals.h"
#include "core/config.h"
#include "engine/context.h"
#include "engine/engine.h"
#include "outcomes/outcome.h"
#include "registry/registry.h"
#include "sources/source_registry.h"
#include "stores/store.h"
#include "wallet/template.h"

static void usage_status(FILE *out, const char *cmd, const char *action)
{
    const char *status = pm_lifecycle_status(action);
    fprintf(out,
            "usage: passmill %s -c CONFIG (--event ID | --group G | --serial S ...)\n"
            "                 [--message TEXT] [--dry-run] [-X key=value ...] [--now RFC3339]\n"
            "                 [--workers N]\n"
            "\n"
            "Sets every selected pass of the registry to %s and re-issues it: each goes\n"
            "through the same stages as `passmill run` (the registry is the source, one\n"
            "request per pass by serial alone: {\"serial_number\":...,\"action\":\"%s\"}),\n"
            "is rendered and signed again and replaces passes/<serial>.pkpass.\n"
            "%s"
            "A pass already %s (same content) is `unchanged`: running the command again,\n"
            "after a crash or kill -9 too, finishes what is left and changes nothing else.\n"
            "Progress on stderr (total counted first, percent, rate); at the end one line\n"
            "  in=N passes=P unchanged=U rejects=R   (plus failed=F when records failed)\n"
            "\n"
            "selection (at least one; --event and --group together select both):\n"
            "      --event ID      the passes of event.event_id ID\n"
            "      --group G       the passes in pass group G (pass_group_ids)\n"
            "      --serial S      this pass (repeatable); a serial the registry lacks is\n"
            "                      rejected (serial.unknown)\n"
            "options:\n"
            "  -c, --config FILE   configuration file (needs registry.path or registry.url)\n"
            "      --message TEXT  what the holder's device shows for the change (Apple's\n"
            "                      changeMessage on the pass's status field); '%%@' in it\n"
            "                      becomes the new status, without one ' %%@' is appended;\n"
            "                      without --message an earlier message is cleared\n"
            "      --dry-run       print each pass that would change (serial: old -> new)\n"
            "                      and their count; write nothing\n"
            "  -X key=value        set one configuration key (repeatable)\n"
            "      --now TIME      fixed clock (engine.now)\n"
            "      --workers N     same as -X engine.workers=N\n"
            "  -h, --help          this help\n"
            "\n"
            "exit status: 0 done, 1 some passes were rejected, 2 usage or configuration\n"
            "error, 3 passes failed or the run could not complete.\n",
            cmd, status, action,
            strcmp(action, "ACTIVATE") == 0
                ? "An active pass has its barcode and QR image back and no \"voided\"; an\n"
                  "expiry in the past (from `passmill expire`) is cleared.\n"
                : "Unless its template keeps it (template.json \"inactive_barcode\": \"keep\"),\n"
                  "the pass loses its barcode and qr/<serial>.png is removed from the store.\n",
            status);
}

static void usage_reissue(FILE *out)
{
    fprintf(out,
            "usage: passmill reissue -c CONFIG [--template T] [--event E] [--group G]\n"
            "                        [-X key=value ...] [--now RFC3339] [--workers N]\n"
            "\n"
            "Re-renders every selected pass (all passes without a selection) from its\n"
            "stored record with its template as it is now, keeping its status.\n"
            "Incremental: a pass whose content hash (stored record, status, template\n"
            "version, signer certificate) is what the registry holds is skipped without\n"
            "being parsed, rendered or signed, and counted as unchanged.\n"
            "Progress on stderr; at the end one line\n"
            "  in=N passes=P unchanged=U rejects=R   (plus failed=F when records failed)\n"
            "(in counts every selected pass, skipped ones included; a skipped pass has no\n"
            "results row in the registry, the run's counts include it).\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   configuration file (needs registry.path or registry.url)\n"
            "      --template T    only passes of template T\n"
            "      --event E       only passes of event E\n"
            "      --group G       only passes in pass group G\n"
            "  -X key=value        set one configuration key (repeatable)\n"
            "      --now TIME      fixed clock (engine.now)\n"
            "      --workers N     same as -X engine.workers=N\n"
            "  -h, --help          this help\n"
            "\n"
            "exit status: 0 done, 1 some passes were rejected, 2 usage or configuration\n"
            "error, 3 passes failed or the run could not complete.\n");
}

/* Progress: the engine's counts plus the rows the scan skipped; the
 * source's position is rows of the counted total. */
static void adjust_progress(void *arg, pm_progress *p)
{
    pm_source *source = arg;
    uint64_t skipped = pm_source_registry_skipped(source);
    p->in += skipped;
    p->unchanged += skipped;
    p->bytes_total = pm_source_registry_total(source);
    if (!p->bytes_total)
        p->bytes_total = 1, p->bytes_done = 1;
}

typedef struct lc_args {
    const char *cmd, *action; /* action NULL: reissue */
    const char *config_path, *message;
    pm_registry_selection sel;
    const char **serials;
    size_t n_serials;
    char **overrides;
    size_t n_overrides;
    char *now, *workers;
    bool dry_run;
} lc_args;

static int parse_args(int argc, char **argv, lc_args *a)
{
    enum { OPT_NOW = 256, OPT_WORKERS, OPT_EVENT, OPT_GROUP, OPT_SERIAL, OPT_TEMPLATE, OPT_MESSAGE,
           OPT_DRY };
    static const struct option status_opts[] = {
        {"config", required_argument, NULL, 'c'}, {"now", required_argument, NULL, OPT_NOW},
        {"workers", required_argument, NULL, OPT_WORKERS}, {"event", required_argument, NULL, OPT_EVENT},
        {"group", required_argument, NULL, OPT_GROUP}, {"serial", required_argument, NULL, OPT_SERIAL},
        {"message", required_argument, NULL, OPT_MESSAGE}, {"dry-run", no_argument, NULL, OPT_DRY},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    static const struct option reissue_opts[] = {
        {"config", required_argument, NULL, 'c'}, {"now", required_argument, NULL, OPT_NOW},
        {"workers", required_argument, NULL, OPT_WORKERS}, {"event", required_argument, NULL, OPT_EVENT},
        {"group", required_argument, NULL, OPT_GROUP}, {"template", required_argument, NULL, OPT_TEMPLATE},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:X:h", a->action ? status_opts : reissue_opts, NULL)) != -1) {
        switch (opt) {
        case 'c': a->config_path = optarg; break;
        case 'X': a->overrides[a->n_overrides++] = optarg; break;
        case OPT_NOW: free(a->now); if (asprintf(&a->now, "engine.now=%s", optarg) < 0) a->now = NULL; break;
        case OPT_WORKERS: free(a->workers); if (asprintf(&a->workers, "engine.workers=%s", optarg) < 0) a->workers = NULL; break;
        case OPT_EVENT: a->sel.event_id = optarg; break;
        case OPT_GROUP: a->sel.group_id = optarg; break;
        case OPT_TEMPLATE: a->sel.template_id = optarg; break;
        case OPT_SERIAL: a->serials[a->n_serials++] = optarg; break;
        case OPT_MESSAGE: a->message = optarg; break;
        case OPT_DRY: a->dry_run = true; break;
        case 'h':
            if (a->action)
                usage_status(stdout, a->cmd, a->action);
            else
                usage_reissue(stdout);
            return 1;
        default: fprintf(stderr, "passmill %s: see `passmill %s --help`\n", a->cmd, a->cmd); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "passmill %s: unexpected argument '%s' (see --help)\n", a->cmd, argv[optind]);
        return -1;
    }
    if (a->action && !a->n_serials && !a->sel.event_id && !a->sel.group_id) {
        fprintf(stderr, "passmill %s: choose the passes: --event ID, --group G or --serial S\n", a->cmd);
        return -1;
    }
    if (a->n_serials && (a->sel.event_id || a->sel.group_id)) {
        fprintf(stderr, "passmill %s: --serial selects passes by itself: not with --event or --group\n",
                a->cmd);
        return -1;
    }
    return 0;
}

/* --dry-run: what would change, nothing written. */
static int dry_run(pm_source *source, const char *action, pm_error *err)
{
    const char *to = pm_lifecycle_status(action);
    pm_job job;
    pm_job_init(&job);
    uint64_t n = 0, would = 0, unknown = 0;
    int rc;
    while ((rc = source->ops->next(source, &job, err)) == 1) {
        const char *serial, *from;
        pm_source_registry_last(source, &serial, &from);
        n++;
        if (!from[0]) {
            printf("%s: not in the registry (would be rejected: serial.unknown)\n", serial);
            unknown++;
        } else if (strcmp(from, to) != 0) {
            printf("%s: %s -> %s\n", serial, from, to);
            would++;
        }
        pm_job_reset(&job);
    }
    pm_job_free(&job);
    if (rc < 0)
        return -1;
    printf("dry run: %llu of %llu selected passes would change to %s, %llu already %s%s",
           (unsigned long long)would, (unsigned long long)n, to,
           (unsigned long long)(n - would - unknown), to, unknown ? "" : "\n");
    if (unknown)
        printf(", %llu not in the registry\n", (unsigned long long)unknown);
    return 0;
}

static int run_lifecycle(int argc, char **argv, const char *cmd, const char *action)
{
    lc_args a = {.cmd = cmd, .action = action};
    a.overrides = calloc((size_t)argc + 1, sizeof *a.overrides);
    a.serials = calloc((size_t)argc + 1, sizeof *a.serials);
    int status = PM_EXIT_USAGE;
    if (!a.overrides || !a.serials) {
        status = PM_EXIT_FAILURE;
        goto out_args;
    }
    int prc = parse_args(argc, argv, &a);
    if (prc != 0) {
        status = prc > 0 ? PM_EXIT_OK : PM_EXIT_USAGE;
        goto out_args;
    }

    pm_error err;
    pm_error_clear(&err);
    pm_config *cfg = pm_config_create();
    pm_context *ctx = NULL;
    pm_source *source = NULL;
    pm_store *store = NULL;
    pm_outcome *outcomes[1] = {NULL};
    size_t n_outcomes = 0;
    pm_registry *registry = NULL;
    char run_id[PM_RUN_ID_LEN + 1];
    pm_registry_run_id(run_id);
    if (!cfg) {
        status = PM_EXIT_FAILURE;
        goto out_args;
    }
    if (a.config_path && pm_config_load_file(cfg, a.config_path, &err) != 0)
        goto config_error;
    for (size_t i = 0; i < a.n_overrides; i++)
        if (pm_config_set_pair(cfg, a.overrides[i], &err) != 0)
            goto config_error;
    if ((a.now && pm_config_set_pair(cfg, a.now, &err) != 0) ||
        (a.workers && pm_config_set_pair(cfg, a.workers, &err) != 0))
        goto config_error;
    if (pm_registry_open(cfg, &registry, &err) != 0)
        goto config_error;
    if (!registry) {
        pm_error_set(&err, PM_ERR_CONFIG, "no registry: set registry.path or registry.url "
                     "(the passes to change are taken from it)");
        goto config_error;
    }
    /* The dry run of a status change needs no templates, signer or store. */
    if (!a.dry_run) {
        if (pm_context_create(cfg, &ctx, &err) != 0)
            goto config_error;
        ctx->registry = registry;
    }
    pm_source_registry_opts so = {
        .action = action, .sel = a.sel, .serials = a.serials, .n_serials = a.n_serials,
        .message = a.message, .ctx = ctx,
        .now = ctx ? pm_context_now(ctx) : (int64_t)time(NULL),
    };
    if (pm_source_registry_open(registry, &so, &source, &err) != 0)
        goto runtime_error;
    if (a.dry_run) {
        status = dry_run(source, action, &err) == 0 ? PM_EXIT_OK : PM_EXIT_FAILURE;
        if (status != PM_EXIT_OK)
            fprintf(stderr, "passmill %s: %s\n", cmd, err.message);
        goto out;
    }
    if (pm_store_open(cfg, &store, &err) != 0)
        goto runtime_error;
    if (pm_outcome_files_open(cfg->ledger_path, cfg->rejects_path, &outcomes[n_outcomes], &err) != 0)
        goto runtime_error;
    n_outcomes++;
    if (registry->ops->begin_run(registry, run_id, cmd, &err) != 0)
        goto runtime_error;
    fprintf(stderr, "passmill: %s run %s: %llu passes selected\n", cmd, run_id,
            (unsigned long long)pm_source_registry_total(source));

    cli_progress po;
    cli_progress_init(&po);
    po.adjust = adjust_progress;
    po.adjust_arg = source;
    pm_engine_opts opts = cli_engine_opts(cfg, run_id, &po);
    cli_stop_signals_install(source);

    pm_run_stats stats;
    int rc = pm_engine_run(ctx, source, store, outcomes, n_outcomes, &opts, &stats, &err);
    uint64_t skipped = pm_source_registry_skipped(source);
    stats.in += skipped;
    stats.unchanged += skipped;
    cli_print_summary(&stats);
    rc = cli_end_run(registry, run_id, &stats, rc, &err);
    fprintf(stderr, "passmill: %.2fs, %.0f passes/s, %.0f rows/s with %u workers\n", stats.seconds,
            stats.seconds > 0 ? (double)stats.passes / stats.seconds : 0.0,
            stats.seconds > 0 ? (double)stats.in / stats.seconds : 0.0, opts.workers);
    status = cli_run_exit_status(cmd, rc, &err, &stats);
    cli_stop_signals_clear();
    goto out;

config_error:
    fprintf(stderr, "passmill %s: %s\n", cmd, err.message);
    status = err.code == PM_ERR_CONFIG || err.code == PM_ERR_FORMAT ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    goto out;
runtime_error:
    fprintf(stderr, "passmill %s: %s\n", cmd, err.message);
    status = err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
out:
    pm_source_close(source);
    for (size_t i = 0; i < n_outcomes; i++)
        pm_outcome_close(outcomes[i]);
    pm_store_close(store);
    pm_context_destroy(ctx);
    pm_registry_close(registry);
    pm_config_destroy(cfg);
out_args:
    free(a.now);
    free(a.workers);
    free(a.overrides);
    free(a.serials);
    return status;
}

int cmd_void(int argc, char **argv) { return run_lifecycle(argc, argv, "void", "VOID"); }
int cmd_expire(int argc, char **argv) { return run_lifecycle(argc, argv, "expire", "EXPIRE"); }
int cmd_redeem(int argc, char **argv) { return run_lifecycle(argc, argv, "redeem", "REDEEM"); }
int cmd_activate(int argc, char **argv) { return run_lifecycle(argc, argv, "activate", "ACTIVATE"); }
int cmd_reissue(int argc, char **argv) { return run_lifecycle(argc, argv, "reissue", NULL); }

/* ---- passmill templates ---- */

typedef struct templates_out {
    const pm_template_set *set; /* NULL: the template folder could not be loaded */
} templates_out;

static int print_template_row(void *arg, json_t *row)
{
    const templates_out *to = arg;
    const char *id = json_string_value(json_object_get(row, "template_id"));
    const char *version = json_string_value(json_object_get(row, "template_version"));
    const pm_template *t = to->set && id ? pm_template_set_find(to->set, id) : NULL;
    const char *note = !to->set ? "" : !t ? "  (template not in the folder)"
                     : strcmp(t->version, version) == 0 ? "  (current)" : "  (older: reissue)";
    printf("%-24s %-16s %10lld%s\n", id, version,
           (long long)json_integer_value(json_object_get(row, "passes")), note);
    return 0;
}

int cmd_templates(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    size_t n_overrides = 0;
    int opt;
    optind = 1;
    if (!overrides)
        return PM_EXIT_FAILURE;
    while ((opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'X': overrides[n_overrides++] = optarg; break;
        case 'h':
            printf("usage: passmill templates -c CONFIG [-X key=value ...]\n"
                   "\n"
                   "One line per template id and template version the registry's passes use:\n"
                   "  TEMPLATE_ID  VERSION  PASSES  (current | older: reissue | template not in\n"
                   "  the folder)\n"
                   "A version is the first 16 hex digits of the SHA-256 of the template folder;\n"
                   "\"current\" is the version of the folder as it is now (template.dir).  Passes\n"
                   "of an older version are re-rendered by `passmill reissue`.\n"
                   "exit status: 0 listed, 2 usage or configuration error, 3 registry error.\n");
            free(overrides);
            return PM_EXIT_OK;
        default:
            fprintf(stderr, "passmill templates: see `passmill templates --help`\n");
            free(overrides);
            return PM_EXIT_USAGE;
        }
    }
    pm_error err;
    pm_error_clear(&err);
    pm_config *cfg = pm_config_create();
    pm_registry *registry = NULL;
    pm_template_set *set = NULL;
    int status = PM_EXIT_USAGE;
    if (!cfg || (config_path && pm_config_load_file(cfg, config_path, &err) != 0))
        goto out;
    for (size_t i = 0; i < n_overrides; i++)
        if (pm_config_set_pair(cfg, overrides[i], &err) != 0)
            goto out;
    if (pm_registry_open(cfg, &registry, &err) != 0)
        goto out;
    if (!registry) {
        pm_error_set(&err, PM_ERR_CONFIG, "no registry: set registry.path or registry.url");
        goto out;
    }
    pm_error terr;
    if (pm_template_set_load(cfg->template_dir, &set, &terr) != 0) {
        fprintf(stderr, "passmill templates: %s (versions listed without comparison)\n", terr.message);
        set = NULL;
    }
    templates_out to = {set};
    printf("%-24s %-16s %10s\n", "TEMPLATE", "VERSION", "PASSES");
    status = registry->ops->template_versions(registry, print_template_row, &to, &err) == 0
                 ? PM_EXIT_OK : PM_EXIT_FAILURE;
out:
    if (status != PM_EXIT_OK)
        fprintf(stderr, "passmill templates: %s\n", err.message[0] ? err.message : "out of memory");
    pm_template_set_destroy(set);
    pm_registry_close(registry);
    pm_config_destroy(cfg);
    free(overrides);
    return status;
}

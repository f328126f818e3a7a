/* engine_run.c - see engine_run.h. */
#include "cli/engine_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli/commands.h"

static unsigned terminal_columns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col - 1; /* the last column would wrap on some terminals */
    const char *c = getenv("COLUMNS");
    long n = c ? strtol(c, NULL, 10) : 0;
    return n >= 20 && n < 1000 ? (unsigned)n - 1 : 79;
}

void cli_progress_init(cli_progress *po)
{
    memset(po, 0, sizeof *po);
    /* A bar needs "\r" and "\033[K": a terminal that is not TERM=dumb. */
    const char *term = getenv("TERM");
    po->tty = isatty(STDERR_FILENO) == 1 && !(term && strcmp(term, "dumb") == 0);
    if (po->tty)
        po->columns = terminal_columns();
}

void cli_progress_print(void *arg, const pm_progress *p)
{
    const cli_progress *po = arg;
    pm_progress q = *p;
    if (po->adjust)
        po->adjust(po->adjust_arg, &q);
    char line[512];
    if (po->tty) {
        pm_progress_format_bar(&q, po->columns, line, sizeof line);
        fprintf(stderr, "\r%s\033[K%s", line, q.final ? "\n" : "");
    } else if (!q.final) {
        pm_progress_format_line(&q, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

pm_engine_opts cli_engine_opts(const pm_config *cfg, const char *run_id, cli_progress *po)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pm_engine_opts opts = {
        .workers = cfg->workers ? (unsigned)cfg->workers : cpus > 0 ? (unsigned)cpus : 1,
        .queue_size = cfg->queue_size ? (unsigned)cfg->queue_size : 1,
        .progress_ms = (unsigned)cfg->progress_ms,
        .run_id = run_id,
        .on_progress = cli_progress_print,
        .progress_arg = po,
    };
    return opts;
}

void cli_print_summary(const pm_run_stats *stats)
{
    printf("in=%llu passes=%llu unchanged=%llu rejects=%llu", (unsigned long long)stats->in,
           (unsigned long long)stats->passes, (unsigned long long)stats->unchanged,
           (unsigned long long)stats->rejects);
    if (stats->failed)
        printf(" failed=%llu", (unsigned long long)stats->failed);
    printf("\n");
    fflush(stdout);
}

int cli_end_run(pm_registry *registry, const char *run_id, const pm_run_stats *stats, int rc,
                pm_error *err)
{
    if (!registry)
        return rc;
    const uint64_t counts[PM_OUTCOME_COUNT] = {
        [PM_OUTCOME_PASS] = stats->passes, [PM_OUTCOME_UNCHANGED] = stats->unchanged,
        [PM_OUTCOME_REJECT] = stats->rejects, [PM_OUTCOME_FAILED] = stats->failed,
    };
    pm_error rerr;
    if (registry->ops->end_run(registry, run_id, counts, &rerr) != 0 && rc == 0) {
        *err = rerr;
        return -1;
    }
    return rc;
}

int cli_run_exit_status(const char *cmd, int rc, const pm_error *err, const pm_run_stats *stats)
{
    if (rc == 0)
        return stats->rejects ? PM_EXIT_REJECTS : PM_EXIT_OK;
    fprintf(stderr, "passmill %s: %s\n", cmd, err->message);
    /* The stages are created as the engine starts: a configuration error
     * there (kafka.schema_ids, ...) comes before any record. */
    return err->code == PM_ERR_CONFIG && stats->in == 0 ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
}

/*
 * engine_run.h - what the commands that run the engine share (`run` and the
 * lifecycle commands void|expire|redeem|activate|reissue): the progress
 * display, the engine's options from the configuration, the summary line,
 * the registry's end of the run and the exit status.  Each command keeps
 * its own flow (what it opens, what it prints besides); these are the
 * pieces whose behaviour must not differ between them.
 */
#ifndef PM_CLI_ENGINE_RUN_H
#define PM_CLI_ENGINE_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"
#include "engine/engine.h"
#include "registry/registry.h"

/*
 * Progress on stderr: a bar rewritten in place on a terminal (not
 * TERM=dumb), plain lines otherwise (logs, pipes).  The final report
 * completes the bar; plain output needs none (the summary follows).
 */
typedef struct cli_progress {
    bool tty;
    unsigned columns;
    /* Optional: changes a report before it is shown (the lifecycle
     * commands add the rows their scan skipped); arg is adjust_arg. */
    void (*adjust)(void *arg, pm_progress *p);
    void *adjust_arg;
} cli_progress;

/* Whether stderr is a terminal, and its width. */
void cli_progress_init(cli_progress *po);
/* pm_engine_opts.on_progress; arg is a cli_progress. */
void cli_progress_print(void *arg, const pm_progress *p);

/* engine.workers (0: the online CPUs), engine.queue_size, engine.progress_ms;
 * progress shown through po (borrowed for the run). */
pm_engine_opts cli_engine_opts(const pm_config *cfg, const char *run_id, cli_progress *po);

/* stdout: `in=N passes=P unchanged=U rejects=R` (and ` failed=F` when not 0). */
void cli_print_summary(const pm_run_stats *stats);

/*
 * The run's counts into its runs row (registry NULL: nothing to do).
 * Returns rc, or -1 with *err set when the run itself succeeded (rc == 0)
 * but the row could not be written.
 */
int cli_end_run(pm_registry *registry, const char *run_id, const pm_run_stats *stats, int rc,
                pm_error *err);

/*
 * The exit status of a finished engine run: PM_EXIT_OK, PM_EXIT_REJECTS
 * when records were rejected, PM_EXIT_USAGE for a configuration error
 * before any record (stages are created as the engine starts), else
 * PM_EXIT_FAILURE.  Prints err as "passmill CMD: message" when rc != 0.
 */
int cli_run_exit_status(const char *cmd, int rc, const pm_error *err, const pm_run_stats *stats);

#endif

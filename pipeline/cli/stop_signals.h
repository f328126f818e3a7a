/*
 * stop_signals.h - SIGINT/SIGTERM during a run: the first asks the source to
 * stop (the engine finishes the records in flight, then the run ends with
 * its summary), a second exits at once (status 130).  Shared by the
 * commands that run the engine (run, and the lifecycle commands).
 *
 * The one piece of process-wide mutable state the CLI keeps: a signal
 * handler can reach nothing else.
 */
#ifndef PM_CLI_STOP_SIGNALS_H
#define PM_CLI_STOP_SIGNALS_H

#include "sources/source.h"

/* Install the handlers for source (borrowed until cli_stop_signals_clear). */
void cli_stop_signals_install(pm_source *source);
/* The run is over: a signal from now on exits at once. */
void cli_stop_signals_clear(void);

#endif

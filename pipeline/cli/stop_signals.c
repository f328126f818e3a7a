#include "cli/stop_signals.h"

#include <signal.h>
#include <unistd.h>

static pm_source *volatile running_source;
static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    if (signals_seen++ || !running_source) {
        static const char msg[] = "passmill: second signal, exiting now\n";
        ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)n;
        _exit(130);
    }
    static const char msg[] = "passmill: stopping: finishing in-flight records (signal again to exit now)\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
    running_source->ops->stop(running_source); /* async-signal-safe (source.h) */
}

void cli_stop_signals_install(pm_source *source)
{
    running_source = source;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_stop_signals_clear(void)
{
    running_source = NULL;
}

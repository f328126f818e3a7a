/* main.c - `passmill COMMAND ...`: dispatch to the subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "run the pipeline: records in, signed passes + QR images out"},
    {"sample", cmd_sample, "write realistic sample pass requests (JSON Lines or Avro)"},
    {"identity", cmd_identity, "create a development signing identity (CA, WWDR, signer)"},
    {"verify", cmd_verify, "check .pkpass files against every rule Wallet applies"},
    {"show", cmd_show, "print one pass as the registry holds it (JSON)"},
    {"stats", cmd_stats, "count the registry's passes by status"},
    {"export", cmd_export, "stream the registry's results and rejects as JSON Lines"},
    {"url", cmd_url, "print a fresh download URL of a pass and its QR image"},
    {"serve", cmd_serve, "serve Apple's pass web service and the ticket downloads over HTTP"},
    {"link", cmd_link, "print signed, expiring download links of a ticket (for serve)"},
    {"get", cmd_get, "write one stored .pkpass to stdout or a file (either store layout)"},
    {"void", cmd_void, "void the registry's passes of an event, a pass group or serials"},
    {"expire", cmd_expire, "expire the registry's passes of an event, a pass group or serials"},
    {"redeem", cmd_redeem, "mark the registry's passes of an event, a group or serials redeemed"},
    {"activate", cmd_activate, "make voided/expired/redeemed passes active again"},
    {"reissue", cmd_reissue, "re-render changed passes from the registry (template, signer)"},
    {"templates", cmd_templates, "list template versions in use and their pass counts"},
    {"push", cmd_push, "send the registry's queued pushes to APNs once"},
    {"devbroker", cmd_devbroker, "run a local Kafka-protocol broker for demos and tests"},
    {"produce", cmd_produce, "load records into a Kafka topic"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: passmill COMMAND [ARGS...]\n\n"
                 "passmill mass-produces signed Apple Wallet event tickets (.pkpass) and QR images.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`passmill COMMAND --help` describes each command.\n"
                 "exit status: 0 ok, 1 rejects/verification failures, 2 usage or configuration error,\n"
                 "3 runtime failure.\n");
}

int main(int argc, char **argv)
{
    /*
     * Pin the local time zone before any thread starts.  libzip converts
     * entry times with mktime(), and with TZ unset glibc re-checks
     * /etc/localtime on every call (measured ~20 us per pass) from every
     * worker at once.  The zone stays the same; it is just read once.
     */
    if (!getenv("TZ"))
        setenv("TZ", ":/etc/localtime", 1);
    tzset();
    if (argc < 2) {
        usage(stderr);
        return PM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return PM_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("passmill 0.1.0\n");
        return PM_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "passmill: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return PM_EXIT_USAGE;
}

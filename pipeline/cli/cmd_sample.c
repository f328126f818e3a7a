/*
 * cmd_sample.c - `passmill sample`: write sample pass requests to stdout.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/error.h"
#include "record/sample.h"

static void sample_usage(FILE *out)
{
    fprintf(out,
            "usage: passmill sample --count N [--seed S] [--format jsonl|avro]\n\n"
            "Write N realistic, valid pass requests for a stadium on-sale (\"Summer Stadium\n"
            "Tour 2027\", template_id \"stadium\") to standard output.  The same seed and\n"
            "count always give the same bytes.\n\n"
            "options:\n"
            "  -n, --count N      number of records (required, 0 or more)\n"
            "  -s, --seed S       random seed (default 1)\n"
            "  -f, --format F     jsonl: one JSON object per line (default);\n"
            "                     avro: an Avro Object Container File with the pass request\n"
            "                     schema (refused when standard output is a terminal)\n"
            "  -h, --help         show this help\n\n"
            "exit status: 0 ok, 2 usage error, 3 write failure.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int cmd_sample(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t count = 0, seed = 1;
    int have_count = 0;
    const char *format = "jsonl";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:s:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (parse_u64(optarg, &count) != 0) {
                fprintf(stderr, "passmill sample: --count expects a whole number, found '%s'\n",
                        optarg);
                return PM_EXIT_USAGE;
            }
            have_count = 1;
            break;
        case 's':
            if (parse_u64(optarg, &seed) != 0) {
                fprintf(stderr, "passmill sample: --seed expects a whole number, found '%s'\n",
                        optarg);
                return PM_EXIT_USAGE;
            }
            break;
        case 'f':
            format = optarg;
            break;
        case 'h':
            sample_usage(stdout);
            return PM_EXIT_OK;
        default:
            sample_usage(stderr);
            return PM_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "passmill sample: unexpected argument '%s'\n", argv[optind]);
        sample_usage(stderr);
        return PM_EXIT_USAGE;
    }
    if (!have_count) {
        fprintf(stderr, "passmill sample: --count is required\n");
        sample_usage(stderr);
        return PM_EXIT_USAGE;
    }
    if (strcmp(format, "jsonl") != 0 && strcmp(format, "avro") != 0) {
        fprintf(stderr, "passmill sample: --format must be jsonl or avro, found '%s'\n", format);
        return PM_EXIT_USAGE;
    }
    if (strcmp(format, "avro") == 0 && isatty(STDOUT_FILENO)) {
        fprintf(stderr, "passmill sample: refusing to write binary Avro to a terminal; "
                        "redirect standard output to a file or pipe\n");
        return PM_EXIT_USAGE;
    }
    pm_error err;
    pm_error_clear(&err);
    if (pm_sample_write(stdout, count, seed, format, &err) != 0) {
        /* Library messages start "sample: " already. */
        const char *msg = err.message;
        if (strncmp(msg, "sample: ", 8) == 0)
            msg += 8;
        fprintf(stderr, "passmill sample: %s\n", msg);
        return err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    }
    return PM_EXIT_OK;
}

/*
 * cmd_verify.c - `passmill verify [--ca FILE] [--quiet] FILE.pkpass...`.
 *
 * One line per file: "OK path", or "FAIL path: rule: message" per failed
 * rule.  The rule ids are documented in docs/verify.md.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/error.h"
#include "wallet/verify.h"

static void verify_usage(FILE *out)
{
    fprintf(out,
            "usage: passmill verify [--ca FILE] [--quiet] FILE.pkpass...\n\n"
            "Check each .pkpass against the rules Apple Wallet applies: the zip, the\n"
            "required files, manifest.json hashes, pass.json keys and formats, and the\n"
            "signature (detached CMS over manifest.json, signer and WWDR certificates,\n"
            "signing time, pass type and team ids).  docs/verify.md lists every rule.\n\n"
            "Prints \"OK FILE\", or \"FAIL FILE: RULE: MESSAGE\" for each failed rule.\n"
            "Without --ca the certificate chain is not checked (a note says so).\n\n"
            "options:\n"
            "  --ca FILE     PEM root certificate(s) the signer must chain to (Apple's root,\n"
            "                or ca.pem of `passmill identity create`)\n"
            "  -q, --quiet   print only failures (and nothing for files that pass)\n"
            "  -h, --help    show this help\n\n"
            "exit status: 0 every file passed, 1 some file failed a rule, 2 usage error or\n"
            "unreadable CA file, 3 a file could not be read.\n");
}

static void print_report(const char *path, const pm_verify_report *r, int quiet)
{
    if (r->failed == 0) {
        if (!quiet) {
            printf("OK %s\n", path);
            for (int i = 0; i < r->nskipped; i++)
                printf("  note: %s: %s\n", r->skipped[i].rule, r->skipped[i].message);
        }
        return;
    }
    for (int i = 0; i < r->nfailures; i++)
        printf("FAIL %s: %s: %s\n", path, r->failures[i].rule, r->failures[i].message);
    if (r->failed > r->nfailures)
        printf("FAIL %s: (%d more failures not shown)\n", path, r->failed - r->nfailures);
}

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ca", required_argument, NULL, 'c'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *ca = NULL;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ca = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': verify_usage(stdout); return PM_EXIT_OK;
        default: verify_usage(stderr); return PM_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "passmill verify: expected at least one .pkpass file\n\n");
        verify_usage(stderr);
        return PM_EXIT_USAGE;
    }
    int status = PM_EXIT_OK;
    static pm_verify_report report; /* ~15 KiB: keep it off the stack */
    for (int i = optind; i < argc; i++) {
        int rc = pm_verify_file(argv[i], ca, &report);
        if (rc < 0) {
            if (report.error.code == PM_ERR_IO) {
                printf("FAIL %s: %s\n", argv[i], report.error.message);
                status = PM_EXIT_FAILURE;
                continue;
            }
            fprintf(stderr, "passmill verify: %s\n", report.error.message);
            return report.error.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
        }
        print_report(argv[i], &report, quiet);
        if (rc == 1 && status == PM_EXIT_OK)
            status = PM_EXIT_REJECTS;
    }
    fflush(stdout);
    return status;
}

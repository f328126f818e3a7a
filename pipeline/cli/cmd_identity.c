/*
 * cmd_identity.c - `passmill identity create DIR`: a development signing
 * identity shaped like Apple's (root CA, WWDR-like intermediate, pass-type
 * signer).  Prints file names and certificate subjects, never key material.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli/commands.h"
#include "core/error.h"
#include "wallet/identity.h"

/* Match the example template config/templates/stadium. */
#define DEFAULT_PASS_TYPE_ID "pass.dev.passmill.stadium"
#define DEFAULT_TEAM_ID "PMDEVTEAM1"

static void identity_usage(FILE *out)
{
    fprintf(out,
            "usage: passmill identity create DIR [--pass-type-id ID] [--team-id ID]\n\n"
            "Create a development signing identity in DIR (created mode 0700 if missing):\n"
            "  ca.pem, ca.key          root CA \"passmill Development Root CA\" (10 years)\n"
            "  wwdr.pem, wwdr.key      intermediate \"passmill Development Worldwide Developer\n"
            "                          Relations\" (10 years); wwdr.pem is the sign.chain file\n"
            "  signer.pem, signer.key  pass type certificate, subject UID=<pass type id>,\n"
            "                          CN=Pass Type ID: <pass type id>, OU=<team id> (2 years)\n"
            "Keys are RSA-2048, unencrypted PEM, written mode 0600.  An existing identity in\n"
            "DIR is never overwritten.  Passes signed with it open in passmill verify --ca\n"
            "DIR/ca.pem, not on a real device (Wallet trusts only Apple's root).\n\n"
            "Use it with: sign.cert = DIR/signer.pem, sign.key = DIR/signer.key,\n"
            "sign.chain = DIR/wwdr.pem.\n\n"
            "options:\n"
            "  --pass-type-id ID   pass type identifier (default " DEFAULT_PASS_TYPE_ID ")\n"
            "  --team-id ID        team identifier (default " DEFAULT_TEAM_ID ")\n"
            "  -h, --help          show this help\n\n"
            "exit status: 0 created, 2 usage error or DIR already holds an identity,\n"
            "3 key generation or write failure.\n");
}

static void print_subject(const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!x)
        return;
    char subject[512];
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    printf("  %-11s %s\n", file, subject);
    X509_free(x);
}

int cmd_identity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pass-type-id", required_argument, NULL, 'p'},
        {"team-id", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *type_id = DEFAULT_PASS_TYPE_ID, *team_id = DEFAULT_TEAM_ID;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': type_id = optarg; break;
        case 't': team_id = optarg; break;
        case 'h': identity_usage(stdout); return PM_EXIT_OK;
        default: identity_usage(stderr); return PM_EXIT_USAGE;
        }
    }
    if (argc - optind != 2 || strcmp(argv[optind], "create") != 0) {
        fprintf(stderr, "passmill identity: expected `create DIR`\n\n");
        identity_usage(stderr);
        return PM_EXIT_USAGE;
    }
    const char *dir = argv[optind + 1];
    pm_error err;
    pm_error_clear(&err);
    if (pm_identity_create_dev(dir, type_id, team_id, &err) != 0) {
        fprintf(stderr, "passmill identity: %s\n", err.message);
        return err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    }
    printf("created a development identity in %s:\n", dir);
    print_subject(dir, "ca.pem");
    print_subject(dir, "wwdr.pem");
    print_subject(dir, "signer.pem");
    printf("  keys: ca.key wwdr.key signer.key (mode 0600)\n");
    /* Absolute: a config file's paths are relative to its own folder, not to
     * where this command ran. */
    char *abs = realpath(dir, NULL);
    const char *d = abs ? abs : dir;
    printf("config: sign.cert = %s/signer.pem\n", d);
    printf("        sign.key = %s/signer.key\n", d);
    printf("        sign.chain = %s/wwdr.pem\n", d);
    printf("verify: passmill verify --ca %s/ca.pem FILE.pkpass\n", dir);
    free(abs);
    return PM_EXIT_OK;
}

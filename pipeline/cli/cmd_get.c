/*
 * cmd_get.c - `passmill get`: one pass's .pkpass out of the store, in
 * either store layout (stores/pass_read.h).  With a registry configured,
 * the bytes are checked against its pkpass_sha256 before they count.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cli/commands.h"
#include "core/config.h"
#include "registry/registry.h"
#include "stores/pass_read.h"
#include "stores/store.h"

static int get_usage(FILE *out)
{
    fprintf(out, "usage: passmill get -c CONFIG [-X key=value ...] [-o FILE] SERIAL\n\n"
                 "Writes one pass's .pkpass to stdout (or FILE), read from the store in either\n"
                 "store.layout (split: assembled from the template prefix and the pass's own\n"
                 "bytes).  With a registry configured, the bytes must have the registry's\n"
                 "sha256; FILE is then written only when they do.\n\noptions:\n"
                 "  -c, --config FILE   configuration file (store.*, registry.*)\n"
                 "  -X key=value        set one configuration key (repeatable)\n"
                 "  -o, --output FILE   write to FILE (via a temporary file) instead of stdout\n"
                 "  -h, --help          this help\n"
                 "\nexit status: 0 ok, 1 no such pass or bytes that do not match the registry,\n"
                 "2 usage or configuration error, 3 store, registry or output error.\n");
    return PM_EXIT_OK;
}

static int write_out(const char *path, const pm_buf *b)
{
    if (!path)
        return fwrite(b->data, 1, b->len, stdout) == b->len && fflush(stdout) == 0 ? 0 : -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return -1;
    int bad = fwrite(b->data, 1, b->len, f) != b->len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

int cmd_get(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    pm_config *cfg = pm_config_create();
    pm_store *store = NULL;
    pm_registry *reg = NULL;
    json_t *row = NULL;
    pm_buf b;
    pm_buf_init(&b);
    pm_error err;
    const char *output = NULL;
    int rc = PM_EXIT_USAGE, opt;
    if (!cfg) {
        fprintf(stderr, "passmill get: out of memory\n");
        return PM_EXIT_FAILURE;
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:X:o:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            if (pm_config_load_file(cfg, optarg, &err) != 0)
                goto config_error;
            break;
        case 'X':
            if (pm_config_set_pair(cfg, optarg, &err) != 0)
                goto config_error;
            break;
        case 'o': output = optarg; break;
        case 'h': rc = get_usage(stdout); goto done;
        default: fprintf(stderr, "passmill get: see `passmill get --help`\n"); goto done;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "passmill get: expected one SERIAL (see --help)\n");
        goto done;
    }
    const char *serial = argv[optind];
    if (pm_store_open(cfg, &store, &err) != 0 || pm_registry_open(cfg, &reg, &err) != 0)
        goto config_error;
    if (reg) {
        row = reg->ops->show(reg, serial, &err);
        if (!row) {
            if (err.code == PM_OK)
                fprintf(stderr, "passmill get: no pass with serial '%s' in the registry\n", serial);
            else
                fprintf(stderr, "passmill get: %s\n", err.message);
            rc = err.code == PM_OK ? PM_EXIT_REJECTS : PM_EXIT_FAILURE;
            goto done;
        }
    }
    if (pm_pass_read(store, serial, &b, &err) != 0) {
        fprintf(stderr, "passmill get: %s\n", err.message);
        rc = row ? PM_EXIT_FAILURE : PM_EXIT_REJECTS; /* registered but unreadable: a store fault */
        goto done;
    }
    const char *want = row ? json_string_value(json_object_get(row, "sha256")) : NULL;
    if (want) {
        uint8_t md[32];
        char hex[65];
        unsigned len = 0;
        if (!EVP_Digest(b.data, b.len, md, &len, EVP_sha256(), NULL) || len != 32) {
            fprintf(stderr, "passmill get: SHA-256 failed\n");
            rc = PM_EXIT_FAILURE;
            goto done;
        }
        pm_hex_encode(md, 32, hex);
        if (strcmp(hex, want) != 0) {
            fprintf(stderr, "passmill get: %s: stored bytes have sha256 %s, the registry says %s\n",
                    serial, hex, want);
            rc = PM_EXIT_REJECTS;
            goto done;
        }
    }
    if (write_out(output, &b) != 0) {
        fprintf(stderr, "passmill get: writing %s: %s\n", output ? output : "stdout",
                strerror(errno));
        rc = PM_EXIT_FAILURE;
        goto done;
    }
    rc = PM_EXIT_OK;
    goto done;
config_error:
    fprintf(stderr, "passmill get: %s\n", err.message);
    rc = err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
done:
    json_decref(row);
    pm_buf_free(&b);
    pm_registry_close(reg);
    pm_store_close(store);
    pm_config_destroy(cfg);
    return rc;
}

/*
 * cmd_registry.c - the registry's queries: `passmill show`, `stats`,
 * `export` and `url`.  Each reads the configuration like `run` (-c FILE,
 * -X key=value) and opens the registry it names.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "core/config.h"
#include "core/rfc3339.h"
#include "core/secret.h"
#include "registry/registry.h"
#include "service/link.h"
#include "stores/store.h"

/* Options every registry command takes; the command's own are parsed after. */
typedef struct registry_cli {
    pm_config *cfg;
    pm_registry *registry;
} registry_cli;

static int load_config(const char *cmd, const char *config_path, char **overrides, size_t n,
                       registry_cli *cli)
{
    pm_error err;
    cli->registry = NULL;
    cli->cfg = pm_config_create();
    if (!cli->cfg) {
        fprintf(stderr, "passmill %s: out of memory\n", cmd);
        return PM_EXIT_FAILURE;
    }
    if (config_path && pm_config_load_file(cli->cfg, config_path, &err) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (pm_config_set_pair(cli->cfg, overrides[i], &err) != 0)
            goto fail;
    return PM_EXIT_OK;
fail:
    fprintf(stderr, "passmill %s: %s\n", cmd, err.message);
    return PM_EXIT_USAGE;
}

static int open_registry(const char *cmd, registry_cli *cli)
{
    pm_error err;
    if (pm_registry_open(cli->cfg, &cli->registry, &err) != 0) {
        fprintf(stderr, "passmill %s: %s\n", cmd, err.message);
        return err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
    }
    if (!cli->registry) {
        fprintf(stderr, "passmill %s: no registry: set registry.path or registry.url\n", cmd);
        return PM_EXIT_USAGE;
    }
    return PM_EXIT_OK;
}

static void cli_free(registry_cli *cli)
{
    pm_registry_close(cli->registry);
    pm_config_destroy(cli->cfg);
}

/*
 * Parse "-c FILE", "-X k=v", "-h" and the command's own long options.
 * Returns -1 to go on, else an exit status.  *overrides is malloc'd.
 */
typedef struct parsed {
    const char *config_path;
    char **overrides;
    size_t n_overrides;
} parsed;

static void print_common_options(FILE *out)
{
    fprintf(out, "  -c, --config FILE   configuration file (registry.path or registry.url)\n"
                 "  -X key=value        set one configuration key (repeatable)\n"
                 "  -h, --help          this help\n");
}

static int show_usage(FILE *out)
{
    fprintf(out, "usage: passmill show -c CONFIG [-X key=value ...] SERIAL\n\n"
                 "Prints the registry's row of one pass as JSON (like Skycore's getpassdata):\n"
                 "status, the stored request record, template id and version, content hash,\n"
                 "the .pkpass sha256, object keys, pass groups, update tag, created/updated\n"
                 "times, and the run and origin of its last change.  The authenticationToken\n"
                 "is never printed.\n\noptions:\n");
    print_common_options(out);
    fprintf(out, "\nexit status: 0 found, 1 no such pass, 2 usage or configuration error,\n"
                 "3 the registry could not be read.\n");
    return PM_EXIT_OK;
}

static int stats_usage(FILE *out)
{
    fprintf(out, "usage: passmill stats -c CONFIG [-X key=value ...] [--event ID] [--group ID]\n\n"
                 "Counts the registry's passes by status (active, voided, expired, redeemed)\n"
                 "and its rejects, for every pass or those of one event or pass group.\n"
                 "Prints one line: active=A voided=V expired=E redeemed=R total=T rejects=J\n\n"
                 "options:\n"
                 "      --event ID      only passes whose event.event_id is ID\n"
                 "      --group ID      only passes in pass group ID\n");
    print_common_options(out);
    fprintf(out, "\nexit status: 0 ok, 2 usage or configuration error, 3 registry error.\n");
    return PM_EXIT_OK;
}

static int export_usage(FILE *out)
{
    fprintf(out, "usage: passmill export -c CONFIG [-X key=value ...] [--run ID] [--since TIME]\n\n"
                 "Streams the registry's results, then its rejects and failures, as JSON Lines on\n"
                 "stdout, oldest first: the feed the results ledger and the rejects file gave.\n"
                 "Every line carries its run_id and its outcome (pass, unchanged, reject,\n"
                 "failed).  Rejects carry code, field, reason and the original record.\n\n"
                 "options:\n"
                 "      --run ID        only that run (`passmill run` prints its id on stderr)\n"
                 "      --since TIME    only rows at or after TIME (RFC 3339)\n");
    print_common_options(out);
    fprintf(out, "\nexit status: 0 ok, 2 usage or configuration error, 3 registry or output error.\n");
    return PM_EXIT_OK;
}

static int url_usage(FILE *out)
{
    fprintf(out, "usage: passmill url -c CONFIG [-X key=value ...] [--expires DURATION] SERIAL\n\n"
                 "Prints where a pass can be fetched: a fresh presigned GET URL for the S3 store,\n"
                 "or the file:// URL of the local store, for the .pkpass then the QR image.\n\n"
                 "options:\n"
                 "      --expires D     S3 URL lifetime: seconds, or Ns, Nm, Nh, Nd (max 7d;\n"
                 "                      default s3.presign_expiry)\n");
    print_common_options(out);
    fprintf(out, "\nexit status: 0 ok, 1 no such pass, 2 usage or configuration error,\n"
                 "3 registry or store error.\n");
    return PM_EXIT_OK;
}

enum { OPT_EVENT = 256, OPT_GROUP, OPT_RUN, OPT_SINCE, OPT_EXPIRES };

typedef struct cmd_opts {
    const char *event, *group, *run, *since, *expires;
} cmd_opts;

static int parse(const char *cmd, int argc, char **argv, int (*usage)(FILE *), parsed *p,
                 cmd_opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {"event", required_argument, NULL, OPT_EVENT}, {"group", required_argument, NULL, OPT_GROUP},
        {"run", required_argument, NULL, OPT_RUN}, {"since", required_argument, NULL, OPT_SINCE},
        {"expires", required_argument, NULL, OPT_EXPIRES}, {NULL, 0, NULL, 0},
    };
    memset(p, 0, sizeof *p);
    memset(o, 0, sizeof *o);
    p->overrides = calloc((size_t)argc + 1, sizeof *p->overrides);
    if (!p->overrides)
        return PM_EXIT_FAILURE;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
        const char **slot = NULL;
        switch (opt) {
        case 'c': p->config_path = optarg; break;
        case 'X': p->overrides[p->n_overrides++] = optarg; break;
        case 'h': return usage(stdout);
        case OPT_EVENT: slot = &o->event; break;
        case OPT_GROUP: slot = &o->group; break;
        case OPT_RUN: slot = &o->run; break;
        case OPT_SINCE: slot = &o->since; break;
        case OPT_EXPIRES: slot = &o->expires; break;
        default:
            fprintf(stderr, "passmill %s: see `passmill %s --help`\n", cmd, cmd);
            return PM_EXIT_USAGE;
        }
        /* Options a command does not list are refused by the caller. */
        if (slot)
            *slot = optarg;
    }
    return -1;
}

/* The command allows only the options in `allowed` (a bitmask of OPT_* - 256). */
static bool only(const char *cmd, const cmd_opts *o, unsigned allowed)
{
    const char *vals[] = {o->event, o->group, o->run, o->since, o->expires};
    const char *names[] = {"--event", "--group", "--run", "--since", "--expires"};
    for (unsigned i = 0; i < 5; i++)
        if (vals[i] && !(allowed & (1u << i))) {
            fprintf(stderr, "passmill %s: %s is not an option of this command (see --help)\n",
                    cmd, names[i]);
            return false;
        }
    return true;
}

#define ALLOW(opt) (1u << ((opt) - OPT_EVENT))

/* Common start: options, config, registry.  Returns -1 to go on. */
static int start(const char *cmd, int argc, char **argv, int (*usage)(FILE *), unsigned allowed,
                 int positional, parsed *p, cmd_opts *o, registry_cli *cli)
{
    cli->cfg = NULL;
    cli->registry = NULL;
    int rc = parse(cmd, argc, argv, usage, p, o);
    if (rc >= 0)
        return rc;
    if (!only(cmd, o, allowed))
        return PM_EXIT_USAGE;
    if (argc - optind != positional) {
        fprintf(stderr, "passmill %s: expected %s (see --help)\n", cmd,
                positional ? "one SERIAL" : "no argument");
        return PM_EXIT_USAGE;
    }
    if ((rc = load_config(cmd, p->config_path, p->overrides, p->n_overrides, cli)) != PM_EXIT_OK)
        return rc;
    if ((rc = open_registry(cmd, cli)) != PM_EXIT_OK)
        return rc;
    return -1;
}

int cmd_show(int argc, char **argv)
{
    parsed p;
    cmd_opts o;
    registry_cli cli;
    int rc = start("show", argc, argv, show_usage, 0, 1, &p, &o, &cli);
    if (rc < 0) {
        pm_error err;
        json_t *row = cli.registry->ops->show(cli.registry, argv[optind], &err);
        if (row) {
            char *text = json_dumps(row, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            printf("%s\n", text ? text : "");
            free(text);
            json_decref(row);
            rc = PM_EXIT_OK;
        } else if (err.code == PM_OK) {
            fprintf(stderr, "passmill show: no pass with serial '%s' in the registry\n", argv[optind]);
            rc = PM_EXIT_REJECTS;
        } else {
            fprintf(stderr, "passmill show: %s\n", err.message);
            rc = PM_EXIT_FAILURE;
        }
    }
    cli_free(&cli);
    free(p.overrides);
    return rc;
}

int cmd_stats(int argc, char **argv)
{
    parsed p;
    cmd_opts o;
    registry_cli cli;
    int rc = start("stats", argc, argv, stats_usage, ALLOW(OPT_EVENT) | ALLOW(OPT_GROUP), 0, &p, &o, &cli);
    if (rc < 0) {
        pm_error err;
        pm_registry_filter f = {.event_id = o.event, .group_id = o.group};
        pm_registry_stats st;
        if (cli.registry->ops->stats(cli.registry, &f, &st, &err) != 0) {
            fprintf(stderr, "passmill stats: %s\n", err.message);
            rc = PM_EXIT_FAILURE;
        } else {
            printf("active=%llu voided=%llu expired=%llu redeemed=%llu total=%llu rejects=%llu\n",
                   (unsigned long long)st.active, (unsigned long long)st.voided,
                   (unsigned long long)st.expired, (unsigned long long)st.redeemed,
                   (unsigned long long)(st.active + st.voided + st.expired + st.redeemed),
                   (unsigned long long)st.rejects);
            rc = PM_EXIT_OK;
        }
    }
    cli_free(&cli);
    free(p.overrides);
    return rc;
}

static int print_row(void *arg, json_t *row)
{
    (void)arg;
    return json_dumpf(row, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 || putchar('\n') == EOF;
}

int cmd_export(int argc, char **argv)
{
    parsed p;
    cmd_opts o;
    registry_cli cli;
    int rc = start("export", argc, argv, export_usage, ALLOW(OPT_RUN) | ALLOW(OPT_SINCE), 0, &p, &o, &cli);
    if (rc < 0) {
        pm_error err;
        pm_registry_filter f = {.run_id = o.run};
        if (o.since && pm_rfc3339_parse(o.since, &f.since) != 0) {
            fprintf(stderr, "passmill export: --since: expected an RFC 3339 time such as "
                            "2026-12-01T00:00:00Z, got '%s'\n", o.since);
            rc = PM_EXIT_USAGE;
        } else if (cli.registry->ops->export_rows(cli.registry, &f, print_row, NULL, &err) != 0) {
            fprintf(stderr, "passmill export: %s\n", err.message);
            rc = PM_EXIT_FAILURE;
        } else if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "passmill export: cannot write the output\n");
            rc = PM_EXIT_FAILURE;
        } else {
            rc = PM_EXIT_OK;
        }
    }
    cli_free(&cli);
    free(p.overrides);
    return rc;
}

/* "3600", "90s", "15m", "12h", "7d" -> seconds; -1 when malformed. */
static long long parse_duration(const char *s)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n <= 0)
        return -1;
    long long mul = 1;
    if (*end == 's') mul = 1, end++;
    else if (*end == 'm') mul = 60, end++;
    else if (*end == 'h') mul = 3600, end++;
    else if (*end == 'd') mul = 86400, end++;
    if (*end || n > 7LL * 86400 / mul)
        return -1;
    return n * mul;
}

int cmd_url(int argc, char **argv)
{
    parsed p;
    cmd_opts o;
    registry_cli cli;
    pm_store *store = NULL;
    int rc = start("url", argc, argv, url_usage, ALLOW(OPT_EXPIRES), 1, &p, &o, &cli);
    if (rc < 0) {
        pm_error err;
        const char *serial = argv[optind];
        long long expires = o.expires ? parse_duration(o.expires) : 0;
        char value[32];
        json_t *row = NULL;
        if (expires < 0) {
            fprintf(stderr, "passmill url: --expires: expected 1s..7d such as 3600, 15m, 12h or 7d, "
                            "got '%s'\n", o.expires);
            rc = PM_EXIT_USAGE;
            goto done;
        }
        if (expires) {
            snprintf(value, sizeof value, "%lld", expires);
            if (pm_config_set(cli.cfg, "s3.presign_expiry", value, &err) != 0) {
                fprintf(stderr, "passmill url: %s\n", err.message);
                rc = PM_EXIT_USAGE;
                goto done;
            }
        }
        row = cli.registry->ops->show(cli.registry, serial, &err);
        if (!row) {
            if (err.code == PM_OK)
                fprintf(stderr, "passmill url: no pass with serial '%s' in the registry\n", serial);
            else
                fprintf(stderr, "passmill url: %s\n", err.message);
            rc = err.code == PM_OK ? PM_EXIT_REJECTS : PM_EXIT_FAILURE;
            goto done;
        }
        if (pm_store_open(cli.cfg, &store, &err) != 0) {
            fprintf(stderr, "passmill url: %s\n", err.message);
            rc = err.code == PM_ERR_CONFIG ? PM_EXIT_USAGE : PM_EXIT_FAILURE;
            goto done;
        }
        json_t *keys = json_object_get(row, "keys");
        const char *which[] = {"pkpass", "qr"};
        rc = PM_EXIT_OK;
        for (size_t i = 0; i < 2; i++) {
            const char *key = json_string_value(json_object_get(keys, which[i]));
            char *url = key ? pm_store_url(store, key, (int64_t)time(NULL)) : NULL;
            if (!url) {
                fprintf(stderr, "passmill url: the %s store cannot make a URL for '%s'\n",
                        store->ops->name, key ? key : "?");
                rc = PM_EXIT_FAILURE;
                break;
            }
            printf("%s\n", url);
            free(url);
        }
    done:
        json_decref(row);
    }
    pm_store_close(store);
    cli_free(&cli);
    free(p.overrides);
    return rc;
}

static int link_usage(FILE *out)
{
    fprintf(out, "usage: passmill link -c CONFIG [-X key=value ...] [--expires DURATION] SERIAL\n\n"
                 "Prints signed, expiring links to a ticket on `passmill serve`, the .pkpass then\n"
                 "the QR image: service.url + /tickets/SERIAL/pkpass?expires=E&sig=S (and /qr).\n"
                 "They open without a login (an e-mail link) until they expire; the signature is\n"
                 "an HMAC-SHA256 under the key in service.link_secret_file (docs/web-service.md).\n\n"
                 "options:\n"
                 "      --expires D     lifetime: seconds, or Ns, Nm, Nh, Nd (max 7d;\n"
                 "                      default service.link_expiry_s)\n");
    print_common_options(out);
    fprintf(out, "\nexit status: 0 ok, 1 no such pass, 2 usage or configuration error,\n"
                 "3 registry error.\n");
    return PM_EXIT_OK;
}

int cmd_link(int argc, char **argv)
{
    parsed p;
    cmd_opts o;
    registry_cli cli;
    char *key = NULL;
    int rc = start("link", argc, argv, link_usage, ALLOW(OPT_EXPIRES), 1, &p, &o, &cli);
    if (rc < 0) {
        pm_error err;
        const char *serial = argv[optind];
        long long expires = o.expires ? parse_duration(o.expires) : cli.cfg->service_link_expiry_s;
        const char *base = cli.cfg->service_url;
        size_t base_len = strlen(base);
        while (base_len && base[base_len - 1] == '/')
            base_len--;
        json_t *row = NULL;
        if (expires <= 0) {
            fprintf(stderr, "passmill link: --expires: expected 1s..7d such as 3600, 15m, 12h or 7d, "
                            "got '%s'\n", o.expires ? o.expires : "");
            rc = PM_EXIT_USAGE;
            goto done;
        }
        if (!base_len) {
            fprintf(stderr, "passmill link: service.url is not set (the public base URL of serve)\n");
            rc = PM_EXIT_USAGE;
            goto done;
        }
        if (!*cli.cfg->service_link_secret_file) {
            fprintf(stderr, "passmill link: service.link_secret_file is not set\n");
            rc = PM_EXIT_USAGE;
            goto done;
        }
        key = pm_secret_read_file(cli.cfg->service_link_secret_file, "service.link_secret_file", &err);
        if (!key || strlen(key) < PM_LINK_KEY_MIN) {
            fprintf(stderr, "passmill link: %s\n", key ? "service.link_secret_file: the key is "
                            "shorter than 32 bytes" : err.message);
            rc = PM_EXIT_USAGE;
            goto done;
        }
        row = cli.registry->ops->show(cli.registry, serial, &err);
        if (!row) {
            if (err.code == PM_OK)
                fprintf(stderr, "passmill link: no pass with serial '%s' in the registry\n", serial);
            else
                fprintf(stderr, "passmill link: %s\n", err.message);
            rc = err.code == PM_OK ? PM_EXIT_REJECTS : PM_EXIT_FAILURE;
            goto done;
        }
        int64_t until = (int64_t)time(NULL) + expires;
        const char *what[] = {"pkpass", "qr"};
        rc = PM_EXIT_OK;
        for (size_t i = 0; i < 2; i++) {
            char path[256], sig[PM_LINK_SIG_HEX + 1];
            snprintf(path, sizeof path, "/tickets/%s/%s", serial, what[i]);
            if (pm_link_sign((const uint8_t *)key, strlen(key), path, until, sig, &err) != 0) {
                fprintf(stderr, "passmill link: %s\n", err.message);
                rc = PM_EXIT_FAILURE;
                break;
            }
            printf("%.*s%s?expires=%lld&sig=%s\n", (int)base_len, base, path, (long long)until, sig);
        }
    done:
        json_decref(row);
    }
    pm_secret_free(key);
    cli_free(&cli);
    free(p.overrides);
    return rc;
}

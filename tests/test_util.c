#include "test_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *pmt_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/pm-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

void pmt_rmrf(const char *path)
{
    if (path && *path && strcmp(path, "/") != 0)
        pmt_sh("rm -rf '%s'", path);
}

static char *vfmt(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

int pmt_sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = vfmt(fmt, ap);
    va_end(ap);
    if (!cmd)
        return -1;
    int rc = system(cmd);
    free(cmd);
    if (rc == -1 || !WIFEXITED(rc))
        return -1;
    return WEXITSTATUS(rc);
}

char *pmt_sh_out(int *status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = vfmt(fmt, ap);
    va_end(ap);
    if (!cmd)
        return NULL;
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return NULL;
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while (out && (n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *bigger = realloc(out, cap * 2);
            if (!bigger) {
                free(out);
                out = NULL;
                break;
            }
            out = bigger;
            cap *= 2;
        }
    }
    int rc = pclose(p);
    if (status)
        *status = (rc != -1 && WIFEXITED(rc)) ? WEXITSTATUS(rc) : -1;
    if (out)
        out[len] = '\0';
    return out;
}

int pmt_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

char *pmt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

const char *pmt_src(const char *rel)
{
    static _Thread_local char path[1024];
    snprintf(path, sizeof path, "%s/%s", PM_SOURCE_DIR, rel);
    return path;
}

const char *pmt_passmill(void)
{
    const char *b = getenv("PASSMILL_BIN");
    return b && *b ? b : PM_BINARY_DIR "/passmill";
}

/* ---- PostgreSQL ---- */

int pmt_dev_server_start(const char *script, const char *dir_var, const char *dir, const char *who)
{
    int status = -1;
    char *out = pmt_sh_out(&status, "%s='%s' '%s' start", dir_var, dir, pmt_src(script));
    if (!out || status != 0) {
        fprintf(stderr, "%s: %s start failed (status %d)\n", who, script, status);
        free(out);
        pmt_dev_server_stop(script, dir_var, dir); /* whatever it started must not outlive the tests */
        return -1;
    }
    /* "export NAME=VALUE" lines (the values have no quotes or spaces). */
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "export ", 7) != 0)
            continue;
        char *eq = strchr(line + 7, '=');
        if (!eq)
            continue;
        *eq = '\0';
        setenv(line + 7, eq + 1, 1);
    }
    free(out);
    return 0;
}

void pmt_dev_server_stop(const char *script, const char *dir_var, const char *dir)
{
    pmt_sh("%s='%s' '%s' stop", dir_var, dir, pmt_src(script));
}

/* The server this test process started (the report hooks run once per process). */
static char pg_started_dir[256];

int pmt_pg_start(const char *who)
{
    const char *url = getenv("PASSMILL_REGISTRY_URL");
    if (url && *url)
        return 0;
    char dir[sizeof pg_started_dir];
    snprintf(dir, sizeof dir, "/tmp/passmill-pg-%s-%d", who, (int)getpid());
    if (pmt_dev_server_start("ops/pg-dev", "PASSMILL_PG_DIR", dir, who) != 0)
        return -1;
    snprintf(pg_started_dir, sizeof pg_started_dir, "%s", dir);
    return 1;
}

void pmt_pg_stop(void)
{
    if (pg_started_dir[0])
        pmt_dev_server_stop("ops/pg-dev", "PASSMILL_PG_DIR", pg_started_dir);
    pg_started_dir[0] = '\0';
}

char *pmt_pg_password(void)
{
    const char *env = getenv("PASSMILL_REGISTRY_PASSWORD");
    if (env && *env)
        return strdup(env);
    const char *file = getenv("PASSMILL_REGISTRY_PASSWORD_FILE");
    if (!file || !*file)
        return strdup("");
    char *text = pmt_read_file(file, NULL);
    if (text)
        text[strcspn(text, "\r\n")] = '\0';
    return text;
}

int pmt_pg_schema_url(char *out, size_t size, const char *schema)
{
    const char *url = getenv("PASSMILL_REGISTRY_URL");
    if (!url || !*url)
        return -1;
    int n = snprintf(out, size, "%s%soptions=-csearch_path%%3D%s", url, strchr(url, '?') ? "&" : "?", schema);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

int pmt_registry_check(char **output, const char *registry, const char *store, const char *args)
{
    /* The password is put in PGPASSWORD by the shell from the environment
     * or the file, so it is never in any process's argv. */
    int status = -1;
    char *out = pmt_sh_out(&status,
                           "PGPASSWORD=\"${PASSMILL_REGISTRY_PASSWORD:-}\"; "
                           "if [ -z \"$PGPASSWORD\" ] && [ -n \"${PASSMILL_REGISTRY_PASSWORD_FILE:-}\" ]; then "
                           "PGPASSWORD=$(head -n1 \"$PASSMILL_REGISTRY_PASSWORD_FILE\"); fi; export PGPASSWORD; "
                           "python3 '%s' '%s' '%s' %s 2>&1",
                           pmt_src("tests/registry_check.py"), registry, store, args ? args : "");
    if (output)
        *output = out ? out : strdup("");
    else
        free(out);
    return status;
}

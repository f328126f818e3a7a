/*
 * secret.c - a secret from a file (see secret.h).
 */
#include "core/secret.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

char *pm_secret_read_file(const char *path, const char *key, pm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        pm_error_set(err, PM_ERR_CONFIG, "%s: cannot open '%s': %s", key, path, strerror(errno));
        return NULL;
    }
    /* Unbuffered: no copy of the secret left in a stdio buffer. */
    setvbuf(f, NULL, _IONBF, 0);
    char *buf = malloc(PM_SECRET_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, PM_SECRET_MAX_BYTES + 1, f) : 0;
    bool bad = buf && ferror(f);
    fclose(f);
    if (!buf) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (bad || n == 0 || n > PM_SECRET_MAX_BYTES) {
        pm_error_set(err, PM_ERR_CONFIG, "%s: '%s' %s", key, path,
                     bad ? "cannot be read" : n == 0 ? "is empty" : "is larger than 64 KiB");
        OPENSSL_clear_free(buf, PM_SECRET_MAX_BYTES + 1);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

void pm_secret_free(char *secret)
{
    if (secret)
        OPENSSL_clear_free(secret, PM_SECRET_MAX_BYTES + 1);
}

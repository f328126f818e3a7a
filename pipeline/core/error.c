#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

void pm_error_clear(pm_error *err)
{
    err->code = PM_OK;
    err->reason[0] = err->field[0] = err->message[0] = '\0';
}

int pm_error_set(pm_error *err, pm_code code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->reason[0] = err->field[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int pm_reject(pm_error *err, const char *reason, const char *field,
              const char *fmt, ...)
{
    va_list ap;
    err->code = PM_ERR_REJECT;
    snprintf(err->reason, sizeof err->reason, "%s", reason);
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

void pm_error_prefix(pm_error *err, const char *fmt, ...)
{
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* Truncation is acceptable: the message is for humans. */
    size_t n = strlen(prefix);
    if (n > sizeof err->message - 3)
        n = sizeof err->message - 3;
    memcpy(err->message, prefix, n);
    err->message[n] = ':';
    err->message[n + 1] = ' ';
    size_t room = sizeof err->message - n - 3, olen = strlen(old);
    if (olen > room)
        olen = room;
    memcpy(err->message + n + 2, old, olen);
    err->message[n + 2 + olen] = '\0';
}

void pm_error_add_openssl(pm_error *err)
{
    unsigned long e;
    size_t len = strlen(err->message);
    while ((e = ERR_get_error()) != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (len + 3 < sizeof err->message) {
            int n = snprintf(err->message + len, sizeof err->message - len,
                             " [%s]", buf);
            if (n > 0)
                len += (size_t)n;
        }
    }
    if (len >= sizeof err->message)
        err->message[sizeof err->message - 1] = '\0';
}

const char *pm_code_name(pm_code code)
{
    switch (code) {
    case PM_OK: return "ok";
    case PM_ERR_REJECT: return "reject";
    case PM_ERR_CONFIG: return "config";
    case PM_ERR_IO: return "io";
    case PM_ERR_CRYPTO: return "crypto";
    case PM_ERR_FORMAT: return "format";
    case PM_ERR_STORE: return "store";
    case PM_ERR_NOMEM: return "nomem";
    case PM_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

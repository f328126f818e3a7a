#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "core/utf8.h"

size_t pm_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    /* Walk back over at most three continuation bytes to the lead byte of
     * the last character; cut before it if that character needs more bytes
     * than the first max hold. */
    const unsigned char *u = (const unsigned char *)s;
    size_t i = max, back = 0;
    while (i > 0 && back < 3 && (u[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return max;
    unsigned char lead = u[i - 1];
    size_t need = lead >= 0xF0 && lead <= 0xF7 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead >= 0xF8)
        need = 1;
    return need > back + 1 ? i - 1 : max;
}

/* Drop a character left incomplete at the end of s[0..len): snprintf cut
 * it, or a caller's buffer did.  The bytes kept tell whether the last
 * character is whole, so the byte after the cut is not needed. */
static size_t whole(const char *s, size_t len)
{
    return len ? pm_utf8_cut(s, len + 1, len) : 0;
}

/* Whole characters only: a character cut at the end is dropped, any other
 * byte that is not UTF-8 (raw Avro bytes in a map key) becomes '?'. */
static void fit(char *buf)
{
    unsigned char *u = (unsigned char *)buf;
    size_t len = whole(buf, strlen(buf));
    buf[len] = '\0';
    for (size_t i = 0; i < len;) {
        size_t n = pm_utf8_next(u + i, len - i, NULL);
        if (n == 0) {
            u[i++] = '?';
            continue;
        }
        i += n;
    }
}

/* Copy src into dst[cap], cut at a character boundary. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    n = whole(src, n < cap - 1 ? n : cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    fit(dst);
}

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
    fit(err->message);
    return -1;
}

int pm_reject(pm_error *err, const char *reason, const char *field,
              const char *fmt, ...)
{
    va_list ap;
    err->code = PM_ERR_REJECT;
    copy_cut(err->reason, sizeof err->reason, reason);
    copy_cut(err->field, sizeof err->field, field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    fit(err->message);
    return -1;
}

void pm_error_prefix(pm_error *err, const char *fmt, ...)
{
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    fit(prefix);
    memcpy(old, err->message, sizeof old);
    /* Cutting is acceptable (the message is for humans), but never inside
     * a character. */
    size_t n = pm_utf8_cut(prefix, strlen(prefix), sizeof err->message - 3);
    memcpy(err->message, prefix, n);
    err->message[n] = ':';
    err->message[n + 1] = ' ';
    size_t room = sizeof err->message - n - 3;
    size_t olen = pm_utf8_cut(old, strlen(old), room);
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
    fit(err->message);
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

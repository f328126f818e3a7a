#include "core/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

void pm_buf_init(pm_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void pm_buf_free(pm_buf *b)
{
    free(b->data);
    pm_buf_init(b);
}

int pm_buf_reserve(pm_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* +1 keeps room for pm_buf_cstr */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int pm_buf_append(pm_buf *b, const void *data, size_t len)
{
    if (pm_buf_reserve(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int pm_buf_append_str(pm_buf *b, const char *s)
{
    return pm_buf_append(b, s, strlen(s));
}

int pm_buf_printf(pm_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || pm_buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

const char *pm_buf_cstr(pm_buf *b)
{
    if (pm_buf_reserve(b, 0) != 0)
        return NULL;
    b->data[b->len] = '\0';
    return (const char *)b->data;
}

int pm_buf_read_file(pm_buf *b, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    pm_buf_reset(b);
    /* Sized from fstat and read straight into the buffer: one copy, no
     * regrowth (serve reads a .pkpass per request this way). */
    struct stat st;
    size_t want = fstat(fd, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size : 65536;
    /* want + 1: room for the read that sees the end of the file. */
    if (pm_buf_reserve(b, want + 1) != 0)
        goto nomem;
    for (;;) {
        if (b->cap - b->len <= 1 && pm_buf_reserve(b, 65536) != 0)
            goto nomem;  /* a file larger than fstat said, or a pipe */
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        b->len += (size_t)n;
    }
    close(fd);
    return 0;
nomem:
    close(fd);
    errno = ENOMEM;
    return -1;
}

void pm_hex_encode(const uint8_t *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * len] = '\0';
}

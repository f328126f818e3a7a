/*
 * buf.h - a growable byte buffer, reused across records.
 *
 * A pm_buf owns its memory.  pm_buf_reset() keeps the capacity so a worker
 * reuses one buffer for every pass instead of allocating per record.
 */
#ifndef PM_BUF_H
#define PM_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct pm_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pm_buf;

#define PM_BUF_INIT {NULL, 0, 0}

void pm_buf_init(pm_buf *b);
void pm_buf_free(pm_buf *b);                 /* frees memory, back to empty */
static inline void pm_buf_reset(pm_buf *b) { b->len = 0; }
int pm_buf_reserve(pm_buf *b, size_t extra);  /* 0, or -1 when out of memory */
int pm_buf_append(pm_buf *b, const void *data, size_t len);
int pm_buf_append_str(pm_buf *b, const char *s);
int pm_buf_printf(pm_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* NUL-terminate without counting the NUL in len; returns data as char*. */
const char *pm_buf_cstr(pm_buf *b);

/* Lowercase hex of data[0..len) into out, NUL-terminated (out: 2*len+1 bytes). */
void pm_hex_encode(const uint8_t *data, size_t len, char *out);

/* Read a whole file into b (replacing its contents). 0 or -1 with errno. */
int pm_buf_read_file(pm_buf *b, const char *path);

#endif

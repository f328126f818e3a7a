/*
 * error.h - the one error type of passmill.
 *
 * Every fallible function returns an int (0 on success, -1 on failure) and
 * fills a caller-owned pm_error.  Nothing in library code calls exit().
 *
 * Two kinds of failure share the type:
 *   - PM_ERR_REJECT: the *record* is bad.  `reason` is a stable, documented
 *     machine code (e.g. "serial.format"), `field` the dotted field path
 *     (e.g. "attendee.face_value.currency"), `message` says what was expected.
 *     A reject ends that record only; the pipeline keeps going.
 *   - every other code: the *system* failed (I/O, crypto, config, memory).
 *     For a record it means "not processed", never "processed wrongly".
 */
#ifndef PM_ERROR_H
#define PM_ERROR_H

#include <stddef.h>

typedef enum pm_code {
    PM_OK = 0,
    PM_ERR_REJECT,   /* the record is invalid: reason/field/message say why */
    PM_ERR_CONFIG,   /* bad configuration or command line */
    PM_ERR_IO,       /* file or network I/O failed */
    PM_ERR_CRYPTO,   /* OpenSSL failed (key, certificate, signature) */
    PM_ERR_FORMAT,   /* an input file/container (not a record) is malformed */
    PM_ERR_STORE,    /* the object store refused or failed a write */
    PM_ERR_NOMEM,
    PM_ERR_INTERNAL
} pm_code;

/*
 * The strings are always valid UTF-8: a field path or message longer than
 * its buffer is cut at a character boundary, never inside a character, and
 * a byte that is not UTF-8 (raw Avro bytes in a map key) becomes '?', so a
 * reject line can always carry them as JSON strings.
 */
typedef struct pm_error {
    pm_code code;
    char reason[48];   /* stable machine code for rejects, "" otherwise */
    char field[128];   /* dotted field path for rejects, "" otherwise */
    char message[512]; /* human readable; never contains secrets */
} pm_error;

/* Reset to PM_OK with empty strings. */
void pm_error_clear(pm_error *err);

/* Set a system error. Always returns -1 so callers can `return pm_error_set(...)`. */
int pm_error_set(pm_error *err, pm_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set a record reject with a stable reason code and field path. Returns -1. */
int pm_reject(pm_error *err, const char *reason, const char *field,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Prefix the current message with more context ("loading template 'x': ..."). */
void pm_error_prefix(pm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Append the OpenSSL error queue (and clear it) to err->message. */
void pm_error_add_openssl(pm_error *err);

/*
 * The length of the longest prefix of s[0..len) of at most max bytes that
 * does not end inside a UTF-8 sequence: a cut there keeps every character
 * whole.  Bytes that are not UTF-8 count as one character each.
 */
size_t pm_utf8_cut(const char *s, size_t len, size_t max);

/* A short lowercase name for a code: "reject", "io", ... */
const char *pm_code_name(pm_code code);

#endif

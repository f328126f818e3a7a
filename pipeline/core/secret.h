/*
 * secret.h - reading a secret (a password, a key passphrase) from a file.
 *
 * Secrets are never configuration values or arguments: the configuration
 * names an environment variable or a file.  This is the file half, shared
 * so that every secret file is read the same way: at most 64 KiB, trailing
 * newlines dropped, an empty or unreadable file an error naming the key and
 * the path (never the content), and the buffer wiped when freed.
 */
#ifndef PM_SECRET_H
#define PM_SECRET_H

#include "core/error.h"

/* The largest secret file read (a PEM key with its chain fits easily). */
#define PM_SECRET_MAX_BYTES (64u << 10)

/*
 * The content of path without trailing CR/LF, NUL-terminated, in a new
 * buffer the caller frees with pm_secret_free().  NULL with err
 * (PM_ERR_CONFIG, messages "KEY: ...") when the file cannot be opened or
 * read, is empty, or is larger than PM_SECRET_MAX_BYTES.
 */
char *pm_secret_read_file(const char *path, const char *key, pm_error *err);

/* Wipe and free a secret from pm_secret_read_file(); NULL is fine. */
void pm_secret_free(char *secret);

#endif

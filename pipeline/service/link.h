/*
 * link.h - signed, expiring ticket links (`passmill link`, /tickets/...).
 *
 * A link is PATH?expires=UNIX&sig=HEX where HEX is the lowercase hex
 * HMAC-SHA256, under the key in service.link_secret_file, of
 * "PATH\nUNIX".  PATH is /tickets/SERIAL/pkpass or /tickets/SERIAL/qr, so
 * a link opens exactly one object of one ticket until it expires, without a
 * login (an e-mail link).
 */
#ifndef PM_SERVICE_LINK_H
#define PM_SERVICE_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* The shortest key accepted: 256 bits, as for barcode.secret_file. */
#define PM_LINK_KEY_MIN 32
#define PM_LINK_SIG_HEX 64

/* sig = hex HMAC of path and expires; 0, or -1 + err on a crypto failure. */
int pm_link_sign(const uint8_t *key, size_t key_len, const char *path, int64_t expires,
                 char sig[PM_LINK_SIG_HEX + 1], pm_error *err);

/* Does sig (any case) sign path until expires, and is now before expires?
 * Compared in constant time. */
bool pm_link_valid(const uint8_t *key, size_t key_len, const char *path, const char *expires,
                   const char *sig, int64_t now);

#endif

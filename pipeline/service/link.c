/*
 * link.c - signed, expiring ticket links (see link.h).
 */
#include "service/link.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/buf.h"

int pm_link_sign(const uint8_t *key, size_t key_len, const char *path, int64_t expires,
                 char sig[PM_LINK_SIG_HEX + 1], pm_error *err)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s\n%lld", path, (long long)expires);
    if (n < 0 || (size_t)n >= sizeof msg)
        return pm_error_set(err, PM_ERR_INTERNAL, "link: path too long");
    uint8_t mac[32];
    unsigned mac_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, (size_t)n, mac, &mac_len) ||
        mac_len != sizeof mac)
        return pm_error_set(err, PM_ERR_CRYPTO, "link: HMAC-SHA256 failed");
    pm_hex_encode(mac, sizeof mac, sig);
    sig[PM_LINK_SIG_HEX] = '\0';
    return 0;
}

bool pm_link_valid(const uint8_t *key, size_t key_len, const char *path, const char *expires,
                   const char *sig, int64_t now)
{
    if (!key || !path || !expires || !sig || strlen(sig) != PM_LINK_SIG_HEX)
        return false;
    /* Digits only: "+5", " 5" or "5x" would sign the same number differently. */
    size_t n = strlen(expires);
    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)expires[i]))
            return false;
    int64_t exp = strtoll(expires, NULL, 10);
    char want[PM_LINK_SIG_HEX + 1], got[PM_LINK_SIG_HEX + 1];
    pm_error err;
    if (pm_link_sign(key, key_len, path, exp, want, &err) != 0)
        return false;
    for (size_t i = 0; i < PM_LINK_SIG_HEX; i++)
        got[i] = (char)tolower((unsigned char)sig[i]);
    bool same = CRYPTO_memcmp(want, got, PM_LINK_SIG_HEX) == 0;
    return same && now < exp;
}

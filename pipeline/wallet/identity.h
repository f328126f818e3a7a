/*
 * identity.h - the pass signing identity: key, signer certificate, chain.
 *
 * Loaded once per process (pm_identity_load) and shared read-only by all
 * sign-stage workers.  Passphrases come from an environment variable or a
 * file named in the config, never from argv.
 *
 * pm_identity_create_dev() makes a development identity in a folder, shaped
 * like Apple's: a root CA (ca.pem, ca.key), a WWDR-like intermediate
 * (wwdr.pem, wwdr.key) and a pass-type signer certificate (signer.pem,
 * signer.key) whose subject carries UID=<pass type id>, OU=<team id>,
 * CN="Pass Type ID: <pass type id>".  Keys are written mode 0600.
 */
#ifndef PM_IDENTITY_H
#define PM_IDENTITY_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/config.h"
#include "core/error.h"

typedef struct pm_identity {
    EVP_PKEY *key;
    X509 *cert;
    STACK_OF(X509) *chain;   /* intermediates to embed (WWDR) */
    char *pass_type_id;      /* from the certificate subject UID */
    char *team_id;           /* from the certificate subject OU */
    uint8_t cert_sha256[32]; /* SHA-256 of the signer certificate (DER), for content hashes */
} pm_identity;

/*
 * Load the signing identity cfg names and check it: the key matches the
 * certificate, the subject has UID (pass type id) and OU (team id), a WWDR
 * intermediate is given, and the certificate is valid now (else
 * PM_ERR_CONFIG naming its validity dates).
 */
int pm_identity_load(const pm_config *cfg, pm_identity **out, pm_error *err);
void pm_identity_destroy(pm_identity *id);

int pm_identity_create_dev(const char *dir, const char *pass_type_id,
                           const char *team_id, pm_error *err);

#endif

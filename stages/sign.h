/*
 * sign.h - the detached CMS signature over manifest.json (stage "sign").
 *
 * Output is DER CMS SignedData (RFC 5652) as Apple Wallet expects: detached
 * (no embedded content), SHA-256 digest, RSA PKCS#1 v1.5 (deterministic),
 * the signer certificate and the WWDR intermediate(s) embedded, and signed
 * attributes contentType, signingTime and messageDigest.  signingTime is the
 * caller's clock (job->now), never the wall clock, so a fixed clock gives
 * byte-identical signatures.
 *
 * Two implementations, one output:
 *   - pm_sign_manifest(): the reference, built with OpenSSL's CMS API for
 *     every call.  Simple, but each call fetches algorithms and builds and
 *     encodes the whole structure (5-10% of an RSA-2048 signature's cost, more
 *     under thread contention).
 *   - pm_signer / pm_signer_scratch: the hot path.  pm_signer_create() builds
 *     one signature with the CMS API and records where, in its DER, the
 *     signing time, the message digest and the RSA signature sit.  Their
 *     lengths are fixed (UTCTime, SHA-256, modulus size), so a new signature
 *     is that template with three patches: two SHA-256 and one RSA operation
 *     per pass, with algorithms fetched once per worker and no allocation.
 *     pm_signer_create() proves the patching against the CMS API on a second
 *     input; if the output differs in any byte (or the key is not RSA, or
 *     the time needs GeneralizedTime, i.e. year >= 2050) the CMS API is used.
 */
#ifndef PM_SIGN_H
#define PM_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"
#include "wallet/identity.h"

/*
 * Sign manifest[0..len) with the CMS API; DER into out (replaced).
 * signing_time is unix seconds.  Safe to call from several threads.
 */
int pm_sign_manifest(const pm_identity *id, const uint8_t *manifest, size_t len,
                     int64_t signing_time, pm_buf *out, pm_error *err);

/* Process-wide, read-only after creation; borrows id (must outlive it). */
typedef struct pm_signer pm_signer;
/* Per worker thread: its own key copy, digest and RSA contexts, buffers. */
typedef struct pm_signer_scratch pm_signer_scratch;

int pm_signer_create(const pm_identity *id, pm_signer **out, pm_error *err);
void pm_signer_destroy(pm_signer *s);
/* true when the template fast path is in use (false: CMS API every call). */
bool pm_signer_fast(const pm_signer *s);

int pm_signer_scratch_create(const pm_signer *s, pm_signer_scratch **out, pm_error *err);
void pm_signer_scratch_destroy(pm_signer_scratch *sc);

/*
 * Sign with one worker's scratch; DER into out (replaced, capacity kept).
 * Fails with PM_ERR_CRYPTO when signing_time lies outside the signer
 * certificate's validity: Wallet would refuse such a pass.
 */
int pm_signer_sign(pm_signer_scratch *sc, const uint8_t *manifest, size_t len,
                   int64_t signing_time, pm_buf *out, pm_error *err);

#endif

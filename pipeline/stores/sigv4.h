/*
 * sigv4.h - AWS Signature Version 4 (the S3 flavour) and AWS credentials.
 *
 * pm_sigv4 holds one set of credentials, the region and service of the
 * credential scope, and the OpenSSL algorithms (fetched once).  It is
 * immutable after pm_sigv4_create(), so any number of threads may sign with
 * it at once, each with its own pm_sigv4_scratch (reused buffers, an HMAC
 * context and the signing key derived for the current day).
 *
 * The S3 rules: the canonical URI is the path URI-encoded once (unreserved
 * characters A-Za-z0-9-._~ kept, '/' kept, every other byte %XX in uppercase
 * hex) and never normalised; query names and values are encoded the same way
 * (with '/' encoded too) and sorted by name, then value; header names are
 * lowercased and sorted, values trimmed with inner runs of spaces collapsed.
 *
 * The secret never leaves this module: it is only an HMAC key, wiped with
 * OPENSSL_cleanse on destroy, and no message here ever contains it.
 */
#ifndef PM_SIGV4_H
#define PM_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "core/buf.h"
#include "core/error.h"

/* SHA-256 of the empty string, the payload hash of a request without body. */
#define PM_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define PM_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* Most query parameters / headers one request may sign. */
#define PM_SIGV4_MAX_PAIRS 16

typedef struct pm_sigv4 pm_sigv4;

/* Credentials as loaded; all malloc'd, session_token may be NULL.
 * pm_sigv4_creds_clear() wipes and frees them. */
typedef struct pm_sigv4_creds {
    char *access_key_id;
    char *secret_access_key;
    char *session_token;
} pm_sigv4_creds;

/* Load credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN when AWS_ACCESS_KEY_ID is set, else the ini-style
 * credentials file ([profile] or [profile name] sections with
 * aws_access_key_id, aws_secret_access_key, aws_session_token).  `file` NULL
 * or "" means $AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials.
 * Errors (PM_ERR_CONFIG) name the variable, file and profile, never a value. */
int pm_sigv4_creds_load(pm_sigv4_creds *c, const char *file, const char *profile, pm_error *err);
void pm_sigv4_creds_clear(pm_sigv4_creds *c);

/* A signer for the scope region/service (e.g. "us-east-1", "s3"). Copies
 * everything it is given; session_token may be NULL. */
int pm_sigv4_create(pm_sigv4 **out, const pm_sigv4_creds *creds, const char *region,
                    const char *service, pm_error *err);
void pm_sigv4_destroy(pm_sigv4 *s);
const char *pm_sigv4_access_key_id(const pm_sigv4 *s);
const char *pm_sigv4_session_token(const pm_sigv4 *s);  /* NULL if none */

/* Per-thread signing state.  Init cannot fail; free releases everything. */
typedef struct pm_sigv4_scratch {
    pm_buf creq;          /* canonical request */
    pm_buf sts;           /* string to sign */
    pm_buf work;          /* encoded names and values */
    pm_buf signed_headers;
    EVP_MAC_CTX *mac;     /* created on first use */
    char key_date[9];     /* YYYYMMDD the key below was derived for */
    uint8_t key[32];      /* the day's signing key */
} pm_sigv4_scratch;

void pm_sigv4_scratch_init(pm_sigv4_scratch *sc);
void pm_sigv4_scratch_free(pm_sigv4_scratch *sc);

typedef struct pm_sigv4_pair {
    const char *name;
    const char *value;
} pm_sigv4_pair;

/* A request to sign.  path and query are raw (not yet encoded); header names
 * in any case.  Every header given is signed and must be sent as given. */
typedef struct pm_sigv4_request {
    const char *method;              /* "GET", "PUT", ... */
    const char *path;                /* raw path starting with '/' */
    const pm_sigv4_pair *query;      /* raw parameters, any order */
    size_t n_query;
    const pm_sigv4_pair *headers;    /* must include host and x-amz-date */
    size_t n_headers;
    const char *payload_hash;        /* hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
} pm_sigv4_request;

/* "YYYYMMDDTHHMMSSZ" for unix seconds; false outside years 1970..9999. */
bool pm_sigv4_amz_date(int64_t unix_secs, char out[17]);

/* Append s[0..len) URI-encoded (see above) to out. 0, or -1 out of memory. */
int pm_sigv4_uri_encode(pm_buf *out, const char *s, size_t len, bool keep_slash);

/* Hex SHA-256 of data. 0 or -1 (PM_ERR_CRYPTO). */
int pm_sigv4_sha256_hex(const pm_sigv4 *s, const void *data, size_t len, char out[65],
                        pm_error *err);

/* Build the canonical request of r into sc->creq (and the ';'-joined signed
 * header names into sc->signed_headers).  Exposed for tests. */
int pm_sigv4_canonical_request(pm_sigv4_scratch *sc, const pm_sigv4_request *r, pm_error *err);

/* Sign r at amz_date: fills sig_hex (64 hex digits + NUL), leaves the string
 * to sign in sc->sts, and appends the Authorization header *value*
 * ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...") to
 * auth when auth is not NULL. */
int pm_sigv4_sign(const pm_sigv4 *s, pm_sigv4_scratch *sc, const pm_sigv4_request *r,
                  const char *amz_date, char sig_hex[65], pm_buf *auth, pm_error *err);

/* Query-string signing (presigned URL) of `method path` on `host` with only
 * host signed and an UNSIGNED-PAYLOAD: appends the complete, sorted, encoded
 * query string including X-Amz-Signature (and X-Amz-Security-Token when the
 * credentials have one) to out. */
int pm_sigv4_presign_query(const pm_sigv4 *s, pm_sigv4_scratch *sc, const char *method,
                           const char *path, const char *host, const char *amz_date,
                           int64_t expires, pm_buf *out, pm_error *err);

#endif

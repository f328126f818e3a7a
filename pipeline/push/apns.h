/*
 * apns.h - an APNs provider client for Wallet pass pushes (docs/push.md).
 *
 * HTTP/2 over TLS with libcurl's multi interface: every push of a batch is
 * its own stream, multiplexed on at most `connections` connections to the
 * APNs host (CURLMOPT_MAX_HOST_CONNECTIONS) with up to `streams` streams
 * each.  The TLS client certificate is the pass type ID certificate that
 * signs the passes (Wallet's certificate-based APNs authentication); the key
 * is handed to OpenSSL in memory (CURLOPT_SSL_CTX_FUNCTION), so no
 * passphrase or key file name reaches curl.  Each request is
 * POST /3/device/<push token> with apns-topic = the pass type identifier
 * and the empty JSON payload Wallet asks for.
 *
 * One pm_apns belongs to one thread.
 */
#ifndef PM_APNS_H
#define PM_APNS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/error.h"
#include "registry/registry.h"

typedef struct pm_apns pm_apns;

typedef struct pm_apns_options {
    const char *url;              /* "https://api.push.apple.com:443" */
    const char *ca_file;          /* extra CA bundle ("" = the system's); never no verification */
    X509 *cert;                   /* borrowed, must outlive the pm_apns */
    EVP_PKEY *key;
    STACK_OF(X509) *chain;        /* intermediates sent with the certificate; may be NULL */
    long connections;             /* per host; >= 1 */
    long streams;                 /* concurrent streams per connection; >= 1 */
    long timeout_ms;              /* per request */
    int64_t backoff_initial;      /* seconds: retry n waits initial * 2^(n-1) ... */
    int64_t backoff_max;          /* ... at most this (unless Retry-After says more) */
} pm_apns_options;

int pm_apns_create(const pm_apns_options *o, pm_apns **out, pm_error *err);
void pm_apns_destroy(pm_apns *a);

/*
 * Send n pushes concurrently and fill res[i] for items[i]: 200 SENT; 410
 * GONE; 429, 5xx and transport errors RETRY (at now + Retry-After when
 * given, else the backoff for items[i].attempts); other statuses FAILED
 * with APNs' reason.  Returns -1 only when it could not try at all.
 */
int pm_apns_send(pm_apns *a, const pm_push_item *items, pm_push_result *res, size_t n, int64_t now,
                 pm_error *err);

/* The retry time for attempt n (>= 1) failing at now, before jitter: exposed for tests. */
int64_t pm_apns_backoff(const pm_apns_options *o, int attempts, int64_t now);

#endif

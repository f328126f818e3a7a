/*
 * sign.c - stage "sign": detached CMS signature over manifest.json.
 *
 * See sign.h for the two implementations (CMS API reference, template fast
 * path) and why the fast path is provably the same bytes.
 */
#include "stages/sign.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "stages/stage.h"

#define SHA256_LEN 32
#define UTCTIME_LEN 13 /* YYMMDDHHMMSSZ */

/* ------------------------------------------------------------------ */
/* Reference: the CMS API                                              */
/* ------------------------------------------------------------------ */

static int crypto_fail(pm_error *err, const char *what)
{
    pm_error_set(err, PM_ERR_CRYPTO, "%s", what);
    pm_error_add_openssl(err);
    return -1;
}

/* chain must not contain cert itself (CMS refuses duplicate certificates). */
static int cms_sign(EVP_PKEY *key, X509 *cert, STACK_OF(X509) *chain,
                    const uint8_t *manifest, size_t len, int64_t signing_time,
                    pm_buf *out, pm_error *err)
{
    if (len > INT_MAX)
        return pm_error_set(err, PM_ERR_INTERNAL, "manifest.json is too large to sign (%zu bytes)", len);
    /* No S/MIME capabilities: Wallet ignores them; they only add bytes. */
    const unsigned flags = CMS_PARTIAL | CMS_DETACHED | CMS_BINARY | CMS_NOSMIMECAP;
    int rc = -1;
    BIO *bio = NULL;
    ASN1_TIME *when = NULL;
    CMS_ContentInfo *cms = CMS_sign_ex(NULL, NULL, chain, NULL, flags, NULL, NULL);
    CMS_SignerInfo *si = cms ? CMS_add1_signer(cms, cert, key, EVP_sha256(), flags) : NULL;
    if (!si) {
        crypto_fail(err, "building the CMS signature failed");
        goto done;
    }
    /* Our clock, not the wall clock: OpenSSL only adds one when absent. */
    when = ASN1_TIME_set(NULL, (time_t)signing_time);
    if (!when || !CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, when->type, when, -1)) {
        crypto_fail(err, "setting the CMS signingTime failed");
        goto done;
    }
    bio = CMS_dataInit(cms, NULL);
    if (!bio || BIO_write(bio, manifest, (int)len) != (int)len || BIO_flush(bio) != 1 ||
        !CMS_dataFinal(cms, bio)) {
        crypto_fail(err, "signing manifest.json failed");
        goto done;
    }
    int n = i2d_CMS_ContentInfo(cms, NULL);
    pm_buf_reset(out);
    if (n <= 0 || pm_buf_reserve(out, (size_t)n) != 0) {
        crypto_fail(err, "encoding the CMS signature failed");
        goto done;
    }
    uint8_t *p = out->data;
    if (i2d_CMS_ContentInfo(cms, &p) != n) {
        crypto_fail(err, "encoding the CMS signature failed");
        goto done;
    }
    out->len = (size_t)n;
    rc = 0;
done:
    ASN1_TIME_free(when);
    BIO_free_all(bio);
    CMS_ContentInfo_free(cms);
    return rc;
}

/* id->chain minus the signer certificate (a PKCS#12 may carry it twice). */
static STACK_OF(X509) *chain_without_signer(const pm_identity *id)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (int i = 0; chain && i < sk_X509_num(id->chain); i++) {
        X509 *c = sk_X509_value(id->chain, i);
        if (X509_cmp(c, id->cert) == 0)
            continue;
        if (!X509_up_ref(c) || !sk_X509_push(chain, c)) {
            sk_X509_pop_free(chain, X509_free);
            return NULL;
        }
    }
    return chain;
}

int pm_sign_manifest(const pm_identity *id, const uint8_t *manifest, size_t len,
                     int64_t signing_time, pm_buf *out, pm_error *err)
{
    STACK_OF(X509) *chain = chain_without_signer(id);
    if (!chain)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    int rc = cms_sign(id->key, id->cert, chain, manifest, len, signing_time, out, err);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The template                                                        */
/* ------------------------------------------------------------------ */

struct pm_signer {
    const pm_identity *id;
    STACK_OF(X509) *chain;       /* owned; id->chain without the signer */
    int64_t not_before, not_after; /* signer certificate validity */
    bool fast;
    pm_buf tmpl;                 /* a complete signature to patch */
    size_t attrs_off, attrs_len; /* the [0] IMPLICIT signedAttrs TLV */
    size_t time_off;             /* UTCTime content (13 bytes) */
    size_t digest_off;           /* messageDigest content (32 bytes) */
    size_t sig_off, sig_len;     /* signature OCTET STRING content */
};

struct pm_signer_scratch {
    const pm_signer *s;
    EVP_PKEY *key;        /* this worker's copy: own RSA blinding, no shared lock */
    EVP_MD *md;           /* SHA-256, fetched once */
    EVP_MD_CTX *mdctx;
    EVP_PKEY_CTX *pctx;   /* initialised once: RSA PKCS#1 v1.5 over a SHA-256 DigestInfo */
    uint8_t *attrs;       /* signed attributes re-tagged as SET, as they are hashed */
};

/* One DER TLV at b[off..end): single-byte tag, definite length. */
static int der_tlv(const uint8_t *b, size_t end, size_t off, uint8_t *tag,
                   size_t *hdr, size_t *clen)
{
    if (off + 2 > end)
        return -1;
    *tag = b[off];
    size_t h = 2, n = b[off + 1];
    if (n & 0x80) {
        size_t k = n & 0x7f;
        if (k == 0 || k > 4 || off + 2 + k > end)
            return -1;
        n = 0;
        for (size_t i = 0; i < k; i++)
            n = (n << 8) | b[off + 2 + i];
        h += k;
    }
    if (n > end - off - h)
        return -1;
    *hdr = h;
    *clen = n;
    return 0;
}

/* Step into (enter=1) or over (enter=0) a TLV that must have tag `want`. */
static int der_step(const uint8_t *b, size_t end, size_t *off, uint8_t want, int enter,
                    size_t *inner_end)
{
    uint8_t tag;
    size_t hdr, clen;
    if (der_tlv(b, end, *off, &tag, &hdr, &clen) != 0 || tag != want)
        return -1;
    if (inner_end)
        *inner_end = *off + hdr + clen;
    *off += enter ? hdr : hdr + clen;
    return 0;
}

static int der_peek(const uint8_t *b, size_t end, size_t off)
{
    return off < end ? b[off] : -1;
}

/* Locate signedAttrs and the signature in a DER ContentInfo(SignedData). */
static int locate_signer_info(pm_signer *s)
{
    const uint8_t *b = s->tmpl.data;
    size_t end = s->tmpl.len, off = 0, e;
    if (der_step(b, end, &off, 0x30, 1, &end) || der_step(b, end, &off, 0x06, 0, NULL) ||
        der_step(b, end, &off, 0xA0, 1, &end) || der_step(b, end, &off, 0x30, 1, &end) ||
        der_step(b, end, &off, 0x02, 0, NULL) || der_step(b, end, &off, 0x31, 0, NULL) ||
        der_step(b, end, &off, 0x30, 0, NULL))
        return -1;
    if (der_peek(b, end, off) == 0xA0 && der_step(b, end, &off, 0xA0, 0, NULL))
        return -1;
    if (der_peek(b, end, off) == 0xA1 && der_step(b, end, &off, 0xA1, 0, NULL))
        return -1;
    if (der_step(b, end, &off, 0x31, 1, &end) || der_step(b, end, &off, 0x30, 1, &e) ||
        e != end) /* exactly one SignerInfo */
        return -1;
    end = e;
    if (der_step(b, end, &off, 0x02, 0, NULL))
        return -1;
    int sid = der_peek(b, end, off);
    if ((sid != 0x30 && sid != 0x80) || der_step(b, end, &off, (uint8_t)sid, 0, NULL) ||
        der_step(b, end, &off, 0x30, 0, NULL))
        return -1;
    s->attrs_off = off;
    if (der_step(b, end, &off, 0xA0, 0, &e))
        return -1;
    s->attrs_len = e - s->attrs_off;
    if (der_step(b, end, &off, 0x30, 0, NULL))
        return -1;
    if (der_step(b, end, &off, 0x04, 1, &e))
        return -1;
    s->sig_off = off;
    s->sig_len = e - off;
    return e == end ? 0 : -1; /* no unsigned attributes expected */
}

/* Offset of the only occurrence of pat in b[from..from+n), or SIZE_MAX. */
static size_t find_unique(const uint8_t *b, size_t from, size_t n, const void *pat, size_t plen)
{
    size_t found = SIZE_MAX;
    for (size_t i = from; i + plen <= from + n; i++) {
        if (memcmp(b + i, pat, plen) == 0) {
            if (found != SIZE_MAX)
                return SIZE_MAX;
            found = i;
        }
    }
    return found;
}

/* YYMMDDHHMMSSZ for t, when the DER time is a UTCTime (1950..2049). */
static bool utctime(int64_t t, char out[UTCTIME_LEN + 1])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || tm.tm_year < 50 || tm.tm_year >= 150)
        return false;
    char buf[64]; /* roomy: the compiler cannot see that every field has two digits */
    int n = snprintf(buf, sizeof buf, "%02d%02d%02d%02d%02d%02dZ", tm.tm_year % 100,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n != UTCTIME_LEN)
        return false;
    memcpy(out, buf, UTCTIME_LEN + 1);
    return true;
}

/* Build the template from one CMS API signature and find its variable parts. */
static int build_template(pm_signer *s)
{
    static const char probe[] = "{\"pass.json\":\"passmill signature template\"}";
    const int64_t t0 = 2000000000; /* 2033-05-18T03:33:20Z, a UTCTime */
    pm_error err;
    char utc[UTCTIME_LEN + 1];
    uint8_t digest[SHA256_LEN];
    unsigned dlen = 0;
    if (!EVP_PKEY_is_a(s->id->key, "RSA") || !utctime(t0, utc) ||
        cms_sign(s->id->key, s->id->cert, s->chain, (const uint8_t *)probe, strlen(probe), t0,
                 &s->tmpl, &err) != 0 ||
        !EVP_Digest(probe, strlen(probe), digest, &dlen, EVP_sha256(), NULL) ||
        locate_signer_info(s) != 0 || s->sig_len != (size_t)EVP_PKEY_get_size(s->id->key))
        return -1;
    uint8_t time_tlv[2 + UTCTIME_LEN] = {V_ASN1_UTCTIME, UTCTIME_LEN};
    memcpy(time_tlv + 2, utc, UTCTIME_LEN);
    uint8_t digest_tlv[2 + SHA256_LEN] = {V_ASN1_OCTET_STRING, SHA256_LEN};
    memcpy(digest_tlv + 2, digest, SHA256_LEN);
    size_t t = find_unique(s->tmpl.data, s->attrs_off, s->attrs_len, time_tlv, sizeof time_tlv);
    size_t d = find_unique(s->tmpl.data, s->attrs_off, s->attrs_len, digest_tlv, sizeof digest_tlv);
    if (t == SIZE_MAX || d == SIZE_MAX)
        return -1;
    s->time_off = t + 2;
    s->digest_off = d + 2;
    return 0;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!ASN1_TIME_to_tm(t, &tm))
        return -1;
    return (int64_t)timegm(&tm);
}

static int fast_sign(pm_signer_scratch *sc, const uint8_t *manifest, size_t len,
                     int64_t signing_time, pm_buf *out, pm_error *err);

/* The template must reproduce the CMS API's bytes exactly, or it is not used. */
static bool template_proven(pm_signer *s, pm_error *err)
{
    static const char probe[] = "{\"icon.png\":\"0123456789abcdef0123456789abcdef01234567\"}\n";
    const int64_t t1 = 1790000000; /* 2026-09-21, another UTCTime */
    pm_buf ref = PM_BUF_INIT, fast = PM_BUF_INIT;
    pm_signer_scratch *sc = NULL;
    s->fast = true;
    bool same = pm_signer_scratch_create(s, &sc, err) == 0 &&
                cms_sign(s->id->key, s->id->cert, s->chain, (const uint8_t *)probe,
                         strlen(probe), t1, &ref, err) == 0 &&
                fast_sign(sc, (const uint8_t *)probe, strlen(probe), t1, &fast, err) == 0 &&
                ref.len == fast.len && memcmp(ref.data, fast.data, ref.len) == 0;
    s->fast = false;
    pm_signer_scratch_destroy(sc);
    pm_buf_free(&ref);
    pm_buf_free(&fast);
    ERR_clear_error();
    return same;
}

int pm_signer_create(const pm_identity *id, pm_signer **out, pm_error *err)
{
    *out = NULL;
    if (!id || !id->key || !id->cert)
        return pm_error_set(err, PM_ERR_CONFIG, "sign: no signing identity loaded");
    pm_signer *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->id = id;
    pm_buf_init(&s->tmpl);
    s->chain = chain_without_signer(id);
    if (!s->chain) {
        pm_signer_destroy(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    s->not_before = asn1_time_unix(X509_get0_notBefore(id->cert));
    s->not_after = asn1_time_unix(X509_get0_notAfter(id->cert));
    if (s->not_before < 0 || s->not_after < 0) {
        pm_signer_destroy(s);
        return pm_error_set(err, PM_ERR_CRYPTO, "sign: the signer certificate's validity is unreadable");
    }
    /* The fast path is an optimisation: failing to set it up is not an error. */
    pm_error ignored;
    bool fast = build_template(s) == 0 && template_proven(s, &ignored);
    ERR_clear_error();
    s->fast = fast;
    *out = s;
    return 0;
}

void pm_signer_destroy(pm_signer *s)
{
    if (!s)
        return;
    sk_X509_pop_free(s->chain, X509_free);
    pm_buf_free(&s->tmpl);
    free(s);
}

bool pm_signer_fast(const pm_signer *s)
{
    return s->fast;
}

int pm_signer_scratch_create(const pm_signer *s, pm_signer_scratch **out, pm_error *err)
{
    *out = NULL;
    pm_signer_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    sc->s = s;
    if (!s->fast) {
        *out = sc;
        return 0;
    }
    /* A private copy of the key: RSA blinding state is then per worker. */
    sc->key = EVP_PKEY_dup(s->id->key);
    if (!sc->key && EVP_PKEY_up_ref(s->id->key))
        sc->key = s->id->key;
    sc->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    sc->mdctx = EVP_MD_CTX_new();
    sc->pctx = sc->key ? EVP_PKEY_CTX_new_from_pkey(NULL, sc->key, NULL) : NULL;
    sc->attrs = malloc(s->attrs_len);
    if (!sc->md || !sc->mdctx || !sc->pctx || !sc->attrs ||
        EVP_PKEY_sign_init(sc->pctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(sc->pctx, RSA_PKCS1_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_signature_md(sc->pctx, sc->md) <= 0) {
        pm_signer_scratch_destroy(sc);
        return crypto_fail(err, "sign: setting up a worker's signing context failed");
    }
    memcpy(sc->attrs, s->tmpl.data + s->attrs_off, s->attrs_len);
    sc->attrs[0] = 0x31; /* signedAttrs are hashed as a SET, not as [0] IMPLICIT */
    *out = sc;
    return 0;
}

void pm_signer_scratch_destroy(pm_signer_scratch *sc)
{
    if (!sc)
        return;
    EVP_PKEY_CTX_free(sc->pctx);
    EVP_MD_CTX_free(sc->mdctx);
    EVP_MD_free(sc->md);
    EVP_PKEY_free(sc->key);
    free(sc->attrs);
    free(sc);
}

static int sha256(pm_signer_scratch *sc, const void *data, size_t len, uint8_t out[SHA256_LEN])
{
    unsigned n = 0;
    return EVP_DigestInit_ex(sc->mdctx, sc->md, NULL) && EVP_DigestUpdate(sc->mdctx, data, len) &&
           EVP_DigestFinal_ex(sc->mdctx, out, &n) && n == SHA256_LEN;
}

/* The template with signing time, message digest and signature patched in. */
static int fast_sign(pm_signer_scratch *sc, const uint8_t *manifest, size_t len,
                     int64_t signing_time, pm_buf *out, pm_error *err)
{
    const pm_signer *s = sc->s;
    char utc[UTCTIME_LEN + 1];
    if (!utctime(signing_time, utc))
        return cms_sign(s->id->key, s->id->cert, s->chain, manifest, len, signing_time, out, err);
    uint8_t *attrs = sc->attrs;
    uint8_t attrs_hash[SHA256_LEN];
    memcpy(attrs + (s->time_off - s->attrs_off), utc, UTCTIME_LEN);
    if (!sha256(sc, manifest, len, attrs + (s->digest_off - s->attrs_off)) ||
        !sha256(sc, attrs, s->attrs_len, attrs_hash))
        return crypto_fail(err, "sign: SHA-256 failed");
    pm_buf_reset(out);
    if (pm_buf_reserve(out, s->tmpl.len) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    uint8_t *o = out->data;
    memcpy(o, s->tmpl.data, s->tmpl.len);
    memcpy(o + s->time_off, utc, UTCTIME_LEN);
    memcpy(o + s->digest_off, attrs + (s->digest_off - s->attrs_off), SHA256_LEN);
    size_t siglen = s->sig_len;
    if (EVP_PKEY_sign(sc->pctx, o + s->sig_off, &siglen, attrs_hash, SHA256_LEN) <= 0 ||
        siglen != s->sig_len)
        return crypto_fail(err, "sign: RSA signature failed");
    out->len = s->tmpl.len;
    return 0;
}

int pm_signer_sign(pm_signer_scratch *sc, const uint8_t *manifest, size_t len,
                   int64_t signing_time, pm_buf *out, pm_error *err)
{
    const pm_signer *s = sc->s;
    if (signing_time < s->not_before || signing_time > s->not_after) {
        char when[32], nb[32], na[32];
        time_t t = (time_t)signing_time, b = (time_t)s->not_before, a = (time_t)s->not_after;
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        strftime(nb, sizeof nb, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&b, &tm));
        strftime(na, sizeof na, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&a, &tm));
        return pm_error_set(err, PM_ERR_CRYPTO,
                            "sign: signing time %s is outside the signer certificate's validity "
                            "(%s to %s): Wallet would refuse the pass", when, nb, na);
    }
    if (s->fast)
        return fast_sign(sc, manifest, len, signing_time, out, err);
    return cms_sign(s->id->key, s->id->cert, s->chain, manifest, len, signing_time, out, err);
}

/* ------------------------------------------------------------------ */
/* The stage                                                           */
/* ------------------------------------------------------------------ */

static int stage_create(const pm_context *ctx, void **state, pm_error *err)
{
    if (!ctx->identity)
        return pm_error_set(err, PM_ERR_CONFIG, "sign: no signing identity loaded");
    return pm_signer_create(ctx->identity, (pm_signer **)state, err);
}

static void stage_destroy(void *state)
{
    pm_signer_destroy(state);
}

static int stage_worker_create(void *state, void **scratch, pm_error *err)
{
    return pm_signer_scratch_create(state, (pm_signer_scratch **)scratch, err);
}

static void stage_worker_destroy(void *scratch)
{
    pm_signer_scratch_destroy(scratch);
}

static int stage_process(void *state, void *scratch, pm_job *job)
{
    (void)state;
    if (job->manifest_json.len == 0)
        return pm_error_set(&job->err, PM_ERR_INTERNAL, "sign: manifest.json is empty");
    if (pm_signer_sign(scratch, job->manifest_json.data, job->manifest_json.len, job->now,
                       &job->signature, &job->err) != 0) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

const pm_stage pm_stage_sign = {
    .name = "sign",
    .create = stage_create,
    .destroy = stage_destroy,
    .worker_create = stage_worker_create,
    .worker_destroy = stage_worker_destroy,
    .process = stage_process,
};

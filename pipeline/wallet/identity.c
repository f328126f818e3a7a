/*
 * identity.c - load the pass signing identity; create a development one.
 *
 * Loading accepts either a PKCS#12 file (sign.p12) or PEM files (sign.cert,
 * sign.key, sign.chain).  The passphrase, if any, comes from the environment
 * variable named by sign.passphrase_env or the first line of
 * sign.passphrase_file; it is wiped after use and never printed.
 *
 * The development identity mirrors Apple's hierarchy so the rest of the
 * pipeline (and `passmill verify --ca ca.pem`) exercises exactly the code a
 * production identity does.
 */
#include "wallet/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#define DAY_SECONDS 86400L

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

typedef struct passphrase {
    char text[1024];
    int present;
} passphrase;

/* The passphrase from the env var or file named in the config, if any. */
static int passphrase_get(const pm_config *cfg, passphrase *pw, pm_error *err)
{
    pw->present = 0;
    pw->text[0] = '\0';
    if (cfg->sign_passphrase_env && cfg->sign_passphrase_env[0]) {
        const char *v = getenv(cfg->sign_passphrase_env);
        if (!v)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "sign.passphrase_env names the environment variable %s, which is not set",
                                cfg->sign_passphrase_env);
        size_t n = strlen(v);
        if (n >= sizeof pw->text)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "the passphrase in %s is longer than %zu bytes",
                                cfg->sign_passphrase_env, sizeof pw->text - 1);
        memcpy(pw->text, v, n + 1);
        pw->present = 1;
        return 0;
    }
    if (cfg->sign_passphrase_file && cfg->sign_passphrase_file[0]) {
        FILE *f = fopen(cfg->sign_passphrase_file, "rb");
        if (!f)
            return pm_error_set(err, PM_ERR_CONFIG, "sign.passphrase_file '%s': %s",
                                cfg->sign_passphrase_file, strerror(errno));
        int ok = fgets(pw->text, sizeof pw->text, f) != NULL;
        fclose(f);
        if (!ok)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "sign.passphrase_file '%s' is empty: expected the passphrase on its first line",
                                cfg->sign_passphrase_file);
        pw->text[strcspn(pw->text, "\r\n")] = '\0';
        pw->present = 1;
    }
    return 0;
}

/* PEM password callback: hands out the configured passphrase or refuses. */
static int pem_pass_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    const passphrase *pw = u;
    if (!pw || !pw->present)
        return -1;
    size_t n = strlen(pw->text);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pw->text, n);
    return (int)n;
}

/* A PM_ERR_CRYPTO error naming path, with OpenSSL's reasons appended. */
static int crypto_error(pm_error *err, const char *what, const char *path, const char *expected)
{
    pm_error_set(err, PM_ERR_CRYPTO, "%s '%s': %s", what, path, expected);
    pm_error_add_openssl(err);
    return -1;
}

static int load_chain_pem(const char *path, STACK_OF(X509) *chain, pm_error *err)
{
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) {
        ERR_clear_error();
        return pm_error_set(err, PM_ERR_CONFIG, "sign.chain '%s': %s", path, strerror(errno));
    }
    int n = 0;
    X509 *c;
    while ((c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(chain, c)) {
            X509_free(c);
            BIO_free(bio);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
        n++;
    }
    BIO_free(bio);
    /* The loop ends on "no start line" at EOF: expected, not an error. */
    ERR_clear_error();
    if (n == 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "sign.chain '%s': expected PEM certificate(s) (-----BEGIN CERTIFICATE-----), found none",
                            path);
    return 0;
}

static int load_pem(const pm_config *cfg, const passphrase *pw, pm_identity *id, pm_error *err)
{
    if (!cfg->sign_cert[0] || !cfg->sign_key[0])
        return pm_error_set(err, PM_ERR_CONFIG,
                            "no signing identity: set sign.p12, or sign.cert and sign.key "
                            "(`passmill identity create DIR` makes a development one)");
    BIO *bio = BIO_new_file(cfg->sign_cert, "r");
    if (!bio) {
        ERR_clear_error();
        return pm_error_set(err, PM_ERR_CONFIG, "sign.cert '%s': %s", cfg->sign_cert, strerror(errno));
    }
    id->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!id->cert)
        return crypto_error(err, "sign.cert", cfg->sign_cert,
                            "expected a PEM certificate (-----BEGIN CERTIFICATE-----)");

    bio = BIO_new_file(cfg->sign_key, "r");
    if (!bio) {
        ERR_clear_error();
        return pm_error_set(err, PM_ERR_CONFIG, "sign.key '%s': %s", cfg->sign_key, strerror(errno));
    }
    id->key = PEM_read_bio_PrivateKey(bio, NULL, pem_pass_cb, (void *)pw);
    BIO_free(bio);
    if (!id->key) {
        if (!pw->present)
            return crypto_error(err, "sign.key", cfg->sign_key,
                                "cannot read the private key; if it is encrypted, "
                                "set sign.passphrase_env or sign.passphrase_file");
        return crypto_error(err, "sign.key", cfg->sign_key,
                            "cannot read the private key: expected a PEM key "
                            "that the configured passphrase decrypts (wrong passphrase?)");
    }
    if (cfg->sign_chain[0])
        return load_chain_pem(cfg->sign_chain, id->chain, err);
    return 0;
}

/* A copy of x made in the current default library context (via DER). */
static X509 *x509_reencode(X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    const unsigned char *p = der;
    X509 *copy = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    return copy;
}

/*
 * PKCS#12 files exported by macOS Keychain use RC2/3DES, which OpenSSL 3
 * only has in the "legacy" provider.  Retry in a private library context
 * with that provider (made the default for this thread only), then move the
 * key and certificates to the default context by re-encoding them: objects
 * made in the private context must not outlive it.
 */
static int p12_parse_legacy(PKCS12 *p12, const char *pass, EVP_PKEY **key,
                            X509 **cert, STACK_OF(X509) **ca)
{
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    if (!lib)
        return 0;
    OSSL_PROVIDER *legacy = OSSL_PROVIDER_load(lib, "legacy");
    OSSL_PROVIDER *deflt = OSSL_PROVIDER_load(lib, "default");
    EVP_PKEY *k = NULL;
    X509 *c = NULL;
    STACK_OF(X509) *chain = NULL;
    unsigned char *der = NULL;
    int derlen = 0, ok = 0;
    if (legacy && deflt) {
        OSSL_LIB_CTX *prev = OSSL_LIB_CTX_set0_default(lib);
        ok = PKCS12_parse(p12, pass, &k, &c, &chain) && k && c;
        if (ok)
            derlen = i2d_PrivateKey(k, &der);
        OSSL_LIB_CTX_set0_default(prev);
    }
    if (ok && derlen > 0) {
        const unsigned char *p = der;
        *key = d2i_AutoPrivateKey(NULL, &p, derlen);
        *cert = x509_reencode(c);
        *ca = sk_X509_new_null();
        ok = *key && *cert && *ca;
        for (int i = 0; ok && i < sk_X509_num(chain); i++) {
            X509 *copy = x509_reencode(sk_X509_value(chain, i));
            if (!copy || !sk_X509_push(*ca, copy)) {
                X509_free(copy);
                ok = 0;
            }
        }
    } else {
        ok = 0;
    }
    if (der)
        OPENSSL_clear_free(der, (size_t)derlen);
    EVP_PKEY_free(k);
    X509_free(c);
    sk_X509_pop_free(chain, X509_free);
    OSSL_PROVIDER_unload(legacy);
    OSSL_PROVIDER_unload(deflt);
    OSSL_LIB_CTX_free(lib);
    return ok;
}

static int load_p12(const pm_config *cfg, const passphrase *pw, pm_identity *id, pm_error *err)
{
    BIO *bio = BIO_new_file(cfg->sign_p12, "rb");
    if (!bio) {
        ERR_clear_error();
        return pm_error_set(err, PM_ERR_CONFIG, "sign.p12 '%s': %s", cfg->sign_p12, strerror(errno));
    }
    PKCS12 *p12 = d2i_PKCS12_bio(bio, NULL);
    BIO_free(bio);
    if (!p12)
        return crypto_error(err, "sign.p12", cfg->sign_p12,
                            "expected a DER PKCS#12 file (.p12/.pfx)");
    const char *pass = pw->present ? pw->text : NULL;
    /* Check the MAC first: it tells a wrong passphrase from a damaged file. */
    if (PKCS12_mac_present(p12) && !PKCS12_verify_mac(p12, pass, -1) &&
        !(pass == NULL && (PKCS12_verify_mac(p12, "", 0) || PKCS12_verify_mac(p12, NULL, 0)))) {
        PKCS12_free(p12);
        ERR_clear_error();
        if (!pw->present)
            return pm_error_set(err, PM_ERR_CRYPTO,
                                "sign.p12 '%s' is protected by a passphrase: set sign.passphrase_env or sign.passphrase_file",
                                cfg->sign_p12);
        return pm_error_set(err, PM_ERR_CRYPTO,
                            "sign.p12 '%s': wrong passphrase (the PKCS#12 integrity check failed)",
                            cfg->sign_p12);
    }
    STACK_OF(X509) *ca = NULL;
    int ok = PKCS12_parse(p12, pass, &id->key, &id->cert, &ca);
    if (!ok) {
        ERR_clear_error();
        ok = p12_parse_legacy(p12, pass, &id->key, &id->cert, &ca);
    }
    PKCS12_free(p12);
    if (!ok || !id->key || !id->cert) {
        sk_X509_pop_free(ca, X509_free);
        return crypto_error(err, "sign.p12", cfg->sign_p12,
                            "expected a private key and its certificate inside");
    }
    while (ca && sk_X509_num(ca) > 0) {
        X509 *c = sk_X509_shift(ca);
        if (!sk_X509_push(id->chain, c)) {
            X509_free(c);
            sk_X509_pop_free(ca, X509_free);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
    }
    sk_X509_free(ca);
    if (cfg->sign_chain[0])
        return load_chain_pem(cfg->sign_chain, id->chain, err);
    return 0;
}

/* The first subject entry with nid as a malloc'd UTF-8 string, or NULL. */
static char *subject_entry(X509 *cert, int nid)
{
    X509_NAME *name = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    if (i < 0)
        return NULL;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n <= 0)
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (out) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_free(utf8);
    return out;
}

/* "2026-12-01 21:45:00 UTC" for an ASN1_TIME. */
static void asn1_time_text(const ASN1_TIME *t, char *out, size_t outlen)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) == 1)
        strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(out, outlen, "(unreadable time)");
}

/*
 * A signer outside its validity would fail every record one by one; refuse
 * it at start instead.  Checked against the real clock (Wallet checks the
 * signature when the pass is added), not a fixed --now.
 */
static int check_validity(X509 *cert, const char *certsrc, pm_error *err)
{
    const ASN1_TIME *nb = X509_get0_notBefore(cert), *na = X509_get0_notAfter(cert);
    char from[40], until[40];
    asn1_time_text(nb, from, sizeof from);
    asn1_time_text(na, until, sizeof until);
    if (X509_cmp_current_time(nb) > 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "certificate '%s' is not valid yet: valid from %s until %s",
                            certsrc, from, until);
    if (X509_cmp_current_time(na) < 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "certificate '%s' has expired: valid from %s until %s", certsrc,
                            from, until);
    return 0;
}

static int check_identity(const pm_config *cfg, pm_identity *id, pm_error *err)
{
    const char *certsrc = cfg->sign_p12[0] ? cfg->sign_p12 : cfg->sign_cert;
    const char *keysrc = cfg->sign_p12[0] ? cfg->sign_p12 : cfg->sign_key;
    if (X509_check_private_key(id->cert, id->key) != 1) {
        ERR_clear_error();
        return pm_error_set(err, PM_ERR_CRYPTO,
                            "the private key in '%s' does not belong to the certificate in '%s'",
                            keysrc, certsrc);
    }
    id->pass_type_id = subject_entry(id->cert, NID_userId);
    id->team_id = subject_entry(id->cert, NID_organizationalUnitName);
    if (!id->pass_type_id || !id->pass_type_id[0])
        return pm_error_set(err, PM_ERR_CONFIG,
                            "certificate '%s': expected a pass type certificate whose subject has "
                            "UID=<pass type id>, found no UID", certsrc);
    if (!id->team_id || !id->team_id[0])
        return pm_error_set(err, PM_ERR_CONFIG,
                            "certificate '%s': expected a pass type certificate whose subject has "
                            "OU=<team id>, found no OU", certsrc);
    if (sk_X509_num(id->chain) == 0)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "no intermediate certificate: set sign.chain to the WWDR certificate "
                            "(Wallet refuses passes whose signature lacks it)");
    if (check_validity(id->cert, certsrc, err) != 0)
        return -1;
    unsigned int mdlen = 0;
    if (X509_digest(id->cert, EVP_sha256(), id->cert_sha256, &mdlen) != 1 || mdlen != 32)
        return crypto_error(err, "sign.cert", certsrc, "cannot hash the certificate");
    return 0;
}

int pm_identity_load(const pm_config *cfg, pm_identity **out, pm_error *err)
{
    *out = NULL;
    pm_identity *id = calloc(1, sizeof *id);
    if (!id || !(id->chain = sk_X509_new_null())) {
        free(id);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    passphrase pw;
    int rc = passphrase_get(cfg, &pw, err);
    if (rc == 0)
        rc = cfg->sign_p12[0] ? load_p12(cfg, &pw, id, err) : load_pem(cfg, &pw, id, err);
    OPENSSL_cleanse(&pw, sizeof pw);
    if (rc == 0)
        rc = check_identity(cfg, id, err);
    if (rc != 0) {
        pm_identity_destroy(id);
        return -1;
    }
    *out = id;
    return 0;
}

void pm_identity_destroy(pm_identity *id)
{
    if (!id)
        return;
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
    sk_X509_pop_free(id->chain, X509_free);
    free(id->pass_type_id);
    free(id->team_id);
    free(id);
}

/* ------------------------------------------------------------------ */
/* Development identity                                                */
/* ------------------------------------------------------------------ */

static const char *const dev_files[] = {
    "ca.pem", "ca.key", "wwdr.pem", "wwdr.key", "signer.pem", "signer.key",
};
#define DEV_FILES (sizeof dev_files / sizeof dev_files[0])

typedef struct cert_spec {
    X509_NAME *subject;
    EVP_PKEY *pubkey;
    X509 *issuer;            /* NULL: self-signed */
    EVP_PKEY *issuer_key;
    long days;
    const char *const *exts; /* "name=value" as in openssl.cnf, NULL-terminated */
} cert_spec;

/* A positive random 127-bit serial (RFC 5280: at most 20 octets, positive). */
static int set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return 0;
    raw[0] &= 0x7f;
    raw[0] |= 0x01; /* never zero, never shorter than it looks */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static int add_ext(X509 *x, X509 *issuer, const char *spec)
{
    char name[64];
    const char *eq = strchr(spec, '=');
    if (!eq || (size_t)(eq - spec) >= sizeof name)
        return 0;
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &v3, name, eq + 1);
    int ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* Issue one certificate; validity starts a day ago (clock skew). */
static X509 *issue(const cert_spec *s)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    time_t now = time(NULL);
    int ok = X509_set_version(x, 2) && set_random_serial(x) &&
             X509_set_subject_name(x, s->subject) &&
             X509_set_issuer_name(x, s->issuer ? X509_get_subject_name(s->issuer) : s->subject) &&
             X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, &now) &&
             X509_time_adj_ex(X509_getm_notAfter(x), (int)s->days, 0, &now) &&
             X509_set_pubkey(x, s->pubkey);
    X509 *issuer = s->issuer ? s->issuer : x;
    for (size_t i = 0; ok && s->exts[i]; i++)
        ok = add_ext(x, issuer, s->exts[i]);
    if (ok)
        ok = X509_sign(x, s->issuer_key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static X509_NAME *make_name(const char *const *pairs)
{
    X509_NAME *n = X509_NAME_new();
    for (size_t i = 0; n && pairs[i]; i += 2) {
        if (!X509_NAME_add_entry_by_txt(n, pairs[i], MBSTRING_UTF8,
                                        (const unsigned char *)pairs[i + 1], -1, -1, 0)) {
            X509_NAME_free(n);
            return NULL;
        }
    }
    return n;
}

/* Create path exclusively with mode (never replacing anything) and write. */
static int write_new_file(const char *dir, const char *file, mode_t mode,
                          EVP_PKEY *key, X509 *cert, pm_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return pm_error_set(err, PM_ERR_IO, "creating '%s': %s", path, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return pm_error_set(err, PM_ERR_IO, "creating '%s': %s", path, strerror(errno));
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        unlink(path); /* this call created it */
        pm_error_set(err, PM_ERR_IO, "writing '%s' failed", path);
        pm_error_add_openssl(err);
        return -1;
    }
    return 0;
}

static int prepare_dir(const char *dir, pm_error *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return pm_error_set(err, PM_ERR_IO, "creating folder '%s': %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return pm_error_set(err, PM_ERR_IO, "'%s' is not a folder", dir);
    for (size_t i = 0; i < DEV_FILES; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, dev_files[i]);
        if (lstat(path, &st) == 0)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "'%s' already exists: refusing to overwrite an existing identity "
                                "(choose an empty folder)", path);
    }
    return 0;
}

typedef struct dev_material {
    EVP_PKEY *ca_key, *wwdr_key, *signer_key;
    X509 *ca, *wwdr, *signer;
} dev_material;

static void dev_material_free(dev_material *m)
{
    EVP_PKEY_free(m->ca_key);
    EVP_PKEY_free(m->wwdr_key);
    EVP_PKEY_free(m->signer_key);
    X509_free(m->ca);
    X509_free(m->wwdr);
    X509_free(m->signer);
}

static int make_dev_material(dev_material *m, const char *pass_type_id, const char *team_id)
{
    static const char *const ca_exts[] = {
        "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier=hash", NULL};
    static const char *const wwdr_exts[] = {
        "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign",
        "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid:always", NULL};
    static const char *const signer_exts[] = {
        "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=clientAuth,emailProtection",
        "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid:always", NULL};
    char cn[512];
    snprintf(cn, sizeof cn, "Pass Type ID: %s", pass_type_id);
    const char *ca_dn[] = {"CN", "passmill Development Root CA",
                           "O", "passmill Development", "C", "US", NULL};
    const char *wwdr_dn[] = {"CN", "passmill Development Worldwide Developer Relations",
                             "OU", "G4", "O", "passmill Development", "C", "US", NULL};
    const char *signer_dn[] = {"UID", pass_type_id, "CN", cn, "OU", team_id,
                               "O", "passmill Development", "C", "US", NULL};

    m->ca_key = EVP_RSA_gen(2048);
    m->wwdr_key = EVP_RSA_gen(2048);
    m->signer_key = EVP_RSA_gen(2048);
    if (!m->ca_key || !m->wwdr_key || !m->signer_key)
        return 0;
    X509_NAME *n = make_name(ca_dn);
    cert_spec s = {n, m->ca_key, NULL, m->ca_key, 3650, ca_exts};
    m->ca = n ? issue(&s) : NULL;
    X509_NAME_free(n);
    n = make_name(wwdr_dn);
    s = (cert_spec){n, m->wwdr_key, m->ca, m->ca_key, 3650, wwdr_exts};
    m->wwdr = n && m->ca ? issue(&s) : NULL;
    X509_NAME_free(n);
    n = make_name(signer_dn);
    s = (cert_spec){n, m->signer_key, m->wwdr, m->wwdr_key, 730, signer_exts};
    m->signer = n && m->wwdr ? issue(&s) : NULL;
    X509_NAME_free(n);
    return m->signer != NULL;
}

int pm_identity_create_dev(const char *dir, const char *pass_type_id,
                           const char *team_id, pm_error *err)
{
    if (!pass_type_id || !pass_type_id[0] || strlen(pass_type_id) > 255)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "pass type id: expected a non-empty reverse-DNS id like pass.com.example.tickets");
    if (!team_id || !team_id[0] || strlen(team_id) > 64)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "team id: expected a non-empty id like ABCDE12345");
    if (prepare_dir(dir, err) != 0)
        return -1;
    dev_material m = {0};
    if (!make_dev_material(&m, pass_type_id, team_id)) {
        dev_material_free(&m);
        pm_error_set(err, PM_ERR_CRYPTO, "generating the development identity failed");
        pm_error_add_openssl(err);
        return -1;
    }
    EVP_PKEY *keys[DEV_FILES] = {NULL, m.ca_key, NULL, m.wwdr_key, NULL, m.signer_key};
    X509 *certs[DEV_FILES] = {m.ca, NULL, m.wwdr, NULL, m.signer, NULL};
    size_t written = 0;
    int rc = 0;
    for (; written < DEV_FILES && rc == 0; written++)
        rc = write_new_file(dir, dev_files[written], keys[written] ? 0600 : 0644,
                            keys[written], certs[written], err);
    if (rc != 0) {
        /* Leave no half identity behind: remove what this call created. */
        for (size_t i = 0; i + 1 < written; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, dev_files[i]);
            unlink(path);
        }
    }
    dev_material_free(&m);
    return rc;
}

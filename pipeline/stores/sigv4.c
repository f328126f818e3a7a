/* sigv4.c - AWS Signature Version 4 signing and credential loading. */
#include "stores/sigv4.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

struct pm_sigv4 {
    char *access_key_id;
    char *session_token;
    char *region;
    char *service;
    char *k_secret;      /* "AWS4" + secret: the first HMAC key of the derivation */
    size_t k_secret_len;
    EVP_MD *sha256;
    EVP_MAC *hmac;
};

/* ---- credentials ------------------------------------------------------- */

static char *dup_nonempty(const char *s)
{
    return (s && *s) ? strdup(s) : NULL;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void pm_sigv4_creds_clear(pm_sigv4_creds *c)
{
    free(c->access_key_id);
    free_secret(c->secret_access_key);
    free_secret(c->session_token);
    c->access_key_id = c->secret_access_key = c->session_token = NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Does the section header line "[...]" name `profile`?  Both the credentials
 * file form "[name]" and the config file form "[profile name]" count. */
static bool section_is(char *line, const char *profile)
{
    size_t n = strlen(line);
    if (n < 2 || line[0] != '[' || line[n - 1] != ']')
        return false;
    line[n - 1] = '\0';
    char *name = trim(line + 1);
    if (strncmp(name, "profile", 7) == 0 && (name[7] == ' ' || name[7] == '\t'))
        name = trim(name + 8);
    return strcmp(name, profile) == 0;
}

static int parse_credentials_file(pm_sigv4_creds *c, const char *path, const char *profile,
                                  pm_error *err)
{
    pm_buf text = PM_BUF_INIT;
    if (pm_buf_read_file(&text, path) != 0) {
        pm_buf_free(&text);
        return pm_error_set(err, PM_ERR_CONFIG, "cannot read S3 credentials file '%s'", path);
    }
    char *p = (char *)pm_buf_cstr(&text);
    bool in_profile = false, seen_profile = false;
    int rc = 0;
    while (p && *p && rc == 0) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        char *line = trim(p);
        p = nl ? nl + 1 : NULL;
        if (*line == '\0' || *line == '#' || *line == ';')
            continue;
        if (*line == '[') {
            in_profile = section_is(line, profile);
            seen_profile |= in_profile;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!in_profile || !eq)
            continue;
        *eq = '\0';
        char *key = trim(line), *value = trim(eq + 1);
        char **slot = NULL;
        if (strcasecmp(key, "aws_access_key_id") == 0)
            slot = &c->access_key_id;
        else if (strcasecmp(key, "aws_secret_access_key") == 0)
            slot = &c->secret_access_key;
        else if (strcasecmp(key, "aws_session_token") == 0)
            slot = &c->session_token;
        if (slot && *value) {
            free_secret(*slot);
            if (!(*slot = strdup(value)))
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
    }
    OPENSSL_cleanse(text.data, text.cap);
    pm_buf_free(&text);
    if (rc != 0)
        return rc;
    if (!seen_profile)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "S3 credentials file '%s' has no profile [%s]", path, profile);
    if (!c->access_key_id || !c->secret_access_key)
        return pm_error_set(err, PM_ERR_CONFIG,
                            "S3 credentials file '%s', profile [%s]: needs both "
                            "aws_access_key_id and aws_secret_access_key",
                            path, profile);
    return 0;
}

int pm_sigv4_creds_load(pm_sigv4_creds *c, const char *file, const char *profile, pm_error *err)
{
    memset(c, 0, sizeof *c);
    const char *id = getenv("AWS_ACCESS_KEY_ID");
    if (id && *id) {
        const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
        if (!secret || !*secret)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
        c->access_key_id = strdup(id);
        c->secret_access_key = strdup(secret);
        c->session_token = dup_nonempty(getenv("AWS_SESSION_TOKEN"));
        if (!c->access_key_id || !c->secret_access_key) {
            pm_sigv4_creds_clear(c);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
        return 0;
    }

    char path[4096];
    bool explicit_file = file && *file;
    const char *env_file = getenv("AWS_SHARED_CREDENTIALS_FILE");
    const char *home = getenv("HOME");
    if (explicit_file)
        snprintf(path, sizeof path, "%s", file);
    else if (env_file && *env_file)
        snprintf(path, sizeof path, "%s", env_file);
    else if (home && *home)
        snprintf(path, sizeof path, "%s/.aws/credentials", home);
    else
        path[0] = '\0';
    if (!explicit_file && (path[0] == '\0' || access(path, R_OK) != 0))
        return pm_error_set(err, PM_ERR_CONFIG,
                            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            "or s3.credentials_file (default ~/.aws/credentials, not found)");
    if (parse_credentials_file(c, path, profile && *profile ? profile : "default", err) != 0) {
        pm_sigv4_creds_clear(c);
        return -1;
    }
    return 0;
}

/* ---- the signer -------------------------------------------------------- */

int pm_sigv4_create(pm_sigv4 **out, const pm_sigv4_creds *creds, const char *region,
                    const char *service, pm_error *err)
{
    *out = NULL;
    if (!creds->access_key_id || !*creds->access_key_id || !creds->secret_access_key ||
        !*creds->secret_access_key)
        return pm_error_set(err, PM_ERR_CONFIG, "SigV4: empty access key id or secret");
    pm_sigv4 *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    size_t slen = strlen(creds->secret_access_key);
    s->k_secret_len = 4 + slen;
    s->k_secret = malloc(s->k_secret_len + 1);
    s->access_key_id = strdup(creds->access_key_id);
    s->session_token = dup_nonempty(creds->session_token);
    s->region = strdup(region);
    s->service = strdup(service);
    if (!s->k_secret || !s->access_key_id || !s->region || !s->service ||
        (creds->session_token && *creds->session_token && !s->session_token)) {
        pm_sigv4_destroy(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    memcpy(s->k_secret, "AWS4", 4);
    memcpy(s->k_secret + 4, creds->secret_access_key, slen + 1);
    s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    s->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!s->sha256 || !s->hmac) {
        pm_sigv4_destroy(s);
        pm_error_set(err, PM_ERR_CRYPTO, "SigV4: cannot fetch SHA256/HMAC");
        pm_error_add_openssl(err);
        return -1;
    }
    *out = s;
    return 0;
}

void pm_sigv4_destroy(pm_sigv4 *s)
{
    if (!s)
        return;
    if (s->k_secret) {
        OPENSSL_cleanse(s->k_secret, s->k_secret_len);
        free(s->k_secret);
    }
    free_secret(s->session_token);
    free(s->access_key_id);
    free(s->region);
    free(s->service);
    EVP_MD_free(s->sha256);
    EVP_MAC_free(s->hmac);
    free(s);
}

const char *pm_sigv4_access_key_id(const pm_sigv4 *s) { return s->access_key_id; }
const char *pm_sigv4_session_token(const pm_sigv4 *s) { return s->session_token; }

void pm_sigv4_scratch_init(pm_sigv4_scratch *sc)
{
    memset(sc, 0, sizeof *sc);
}

void pm_sigv4_scratch_free(pm_sigv4_scratch *sc)
{
    pm_buf_free(&sc->creq);
    pm_buf_free(&sc->sts);
    pm_buf_free(&sc->work);
    pm_buf_free(&sc->signed_headers);
    EVP_MAC_CTX_free(sc->mac);
    OPENSSL_cleanse(sc->key, sizeof sc->key);
    memset(sc, 0, sizeof *sc);
}

/* ---- encoding ---------------------------------------------------------- */

bool pm_sigv4_amz_date(int64_t unix_secs, char out[17])
{
    /* 253402300799 = 9999-12-31T23:59:59Z */
    if (unix_secs < 0 || unix_secs > 253402300799LL)
        return false;
    time_t t = (time_t)unix_secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return false;
    return strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) == 16;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

int pm_sigv4_uri_encode(pm_buf *out, const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    if (pm_buf_reserve(out, len * 3) != 0)
        return -1;
    uint8_t *d = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *d++ = c;
        } else {
            *d++ = '%';
            *d++ = (uint8_t)hex[c >> 4];
            *d++ = (uint8_t)hex[c & 15];
        }
    }
    out->len = (size_t)(d - out->data);
    return 0;
}

int pm_sigv4_sha256_hex(const pm_sigv4 *s, const void *data, size_t len, char out[65],
                        pm_error *err)
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, s->sha256, NULL) || mdlen != 32) {
        pm_error_set(err, PM_ERR_CRYPTO, "SigV4: SHA-256 failed");
        pm_error_add_openssl(err);
        return -1;
    }
    pm_hex_encode(md, 32, out);
    return 0;
}

static int hmac(const pm_sigv4 *s, pm_sigv4_scratch *sc, const void *key, size_t keylen,
                const void *data, size_t len, uint8_t out[32], pm_error *err)
{
    if (!sc->mac && !(sc->mac = EVP_MAC_CTX_new(s->hmac)))
        goto fail;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outlen = 0;
    if (!EVP_MAC_init(sc->mac, key, keylen, params) || !EVP_MAC_update(sc->mac, data, len) ||
        !EVP_MAC_final(sc->mac, out, &outlen, 32) || outlen != 32)
        goto fail;
    return 0;
fail:
    pm_error_set(err, PM_ERR_CRYPTO, "SigV4: HMAC-SHA256 failed");
    pm_error_add_openssl(err);
    return -1;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request"),
 * derived once per day per scratch. */
static int signing_key(const pm_sigv4 *s, pm_sigv4_scratch *sc, const char *date8, pm_error *err)
{
    if (memcmp(sc->key_date, date8, 8) == 0 && sc->key_date[8] == '\0')
        return 0;
    uint8_t k[32];
    if (hmac(s, sc, s->k_secret, s->k_secret_len, date8, 8, k, err) != 0 ||
        hmac(s, sc, k, 32, s->region, strlen(s->region), k, err) != 0 ||
        hmac(s, sc, k, 32, s->service, strlen(s->service), k, err) != 0 ||
        hmac(s, sc, k, 32, "aws4_request", 12, sc->key, err) != 0) {
        OPENSSL_cleanse(k, sizeof k);
        sc->key_date[0] = '\0';
        return -1;
    }
    OPENSSL_cleanse(k, sizeof k);
    memcpy(sc->key_date, date8, 8);
    sc->key_date[8] = '\0';
    return 0;
}

/* ---- canonical request ------------------------------------------------- */

/* Offsets into sc->work of one encoded name/value pair. */
typedef struct span_pair {
    size_t name, name_len, value, value_len;
} span_pair;

static int cmp_span(const pm_buf *w, size_t a, size_t alen, size_t b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(w->data + a, w->data + b, n);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static void sort_pairs(const pm_buf *w, span_pair *p, size_t n)
{
    /* insertion sort: a request has a handful of pairs */
    for (size_t i = 1; i < n; i++) {
        span_pair x = p[i];
        size_t j = i;
        while (j > 0) {
            int c = cmp_span(w, p[j - 1].name, p[j - 1].name_len, x.name, x.name_len);
            if (c == 0)
                c = cmp_span(w, p[j - 1].value, p[j - 1].value_len, x.value, x.value_len);
            if (c <= 0)
                break;
            p[j] = p[j - 1];
            j--;
        }
        p[j] = x;
    }
}

/* Append a header value trimmed, inner runs of whitespace collapsed to one space. */
static int append_header_value(pm_buf *w, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (pm_buf_reserve(w, n) != 0)
        return -1;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            space = true;
            continue;
        }
        if (space)
            w->data[w->len++] = ' ';
        space = false;
        w->data[w->len++] = (uint8_t)v[i];
    }
    return 0;
}

static int append_span(pm_buf *out, const pm_buf *w, size_t off, size_t len)
{
    return pm_buf_append(out, w->data + off, len);
}

int pm_sigv4_canonical_request(pm_sigv4_scratch *sc, const pm_sigv4_request *r, pm_error *err)
{
    if (r->n_query > PM_SIGV4_MAX_PAIRS || r->n_headers > PM_SIGV4_MAX_PAIRS)
        return pm_error_set(err, PM_ERR_INTERNAL, "SigV4: more than %d query parameters or headers",
                            PM_SIGV4_MAX_PAIRS);
    if (!r->path || r->path[0] != '/')
        return pm_error_set(err, PM_ERR_INTERNAL, "SigV4: path must start with '/'");
    pm_buf *w = &sc->work, *c = &sc->creq;
    pm_buf_reset(w);
    pm_buf_reset(c);
    pm_buf_reset(&sc->signed_headers);
    span_pair q[PM_SIGV4_MAX_PAIRS], h[PM_SIGV4_MAX_PAIRS];
    int oom = 0;

    for (size_t i = 0; i < r->n_query; i++) {
        const char *v = r->query[i].value ? r->query[i].value : "";
        q[i].name = w->len;
        oom |= pm_sigv4_uri_encode(w, r->query[i].name, strlen(r->query[i].name), false);
        q[i].name_len = w->len - q[i].name;
        q[i].value = w->len;
        oom |= pm_sigv4_uri_encode(w, v, strlen(v), false);
        q[i].value_len = w->len - q[i].value;
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *n = r->headers[i].name;
        size_t nlen = strlen(n);
        h[i].name = w->len;
        oom |= pm_buf_reserve(w, nlen);
        if (!oom)
            for (size_t k = 0; k < nlen; k++)
                w->data[w->len++] = (uint8_t)tolower((unsigned char)n[k]);
        h[i].name_len = w->len - h[i].name;
        h[i].value = w->len;
        oom |= append_header_value(w, r->headers[i].value ? r->headers[i].value : "");
        h[i].value_len = w->len - h[i].value;
    }
    if (oom)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    sort_pairs(w, q, r->n_query);
    sort_pairs(w, h, r->n_headers);

    oom |= pm_buf_append_str(c, r->method);
    oom |= pm_buf_append(c, "\n", 1);
    oom |= pm_sigv4_uri_encode(c, r->path, strlen(r->path), true);
    oom |= pm_buf_append(c, "\n", 1);
    for (size_t i = 0; i < r->n_query; i++) {
        if (i)
            oom |= pm_buf_append(c, "&", 1);
        oom |= append_span(c, w, q[i].name, q[i].name_len);
        oom |= pm_buf_append(c, "=", 1);
        oom |= append_span(c, w, q[i].value, q[i].value_len);
    }
    oom |= pm_buf_append(c, "\n", 1);
    /* Repeated header names are one canonical header with comma-joined values. */
    for (size_t i = 0; i < r->n_headers; i++) {
        bool same = i > 0 && cmp_span(w, h[i - 1].name, h[i - 1].name_len, h[i].name,
                                      h[i].name_len) == 0;
        if (same) {
            c->len--; /* drop the previous line's '\n' */
            oom |= pm_buf_append(c, ",", 1);
        } else {
            if (i)
                oom |= pm_buf_append(&sc->signed_headers, ";", 1);
            oom |= append_span(&sc->signed_headers, w, h[i].name, h[i].name_len);
            oom |= append_span(c, w, h[i].name, h[i].name_len);
            oom |= pm_buf_append(c, ":", 1);
        }
        oom |= append_span(c, w, h[i].value, h[i].value_len);
        oom |= pm_buf_append(c, "\n", 1);
    }
    oom |= pm_buf_append(c, "\n", 1);
    oom |= append_span(c, &sc->signed_headers, 0, sc->signed_headers.len);
    oom |= pm_buf_append(c, "\n", 1);
    oom |= pm_buf_append_str(c, r->payload_hash);
    if (oom)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    pm_buf_cstr(c);
    pm_buf_cstr(&sc->signed_headers);
    return 0;
}

/* ---- signing ----------------------------------------------------------- */

static int append_scope(pm_buf *b, const pm_sigv4 *s, const char *amz_date)
{
    return pm_buf_printf(b, "%.8s/%s/%s/aws4_request", amz_date, s->region, s->service);
}

/* String to sign from sc->creq into sc->sts, then the signature. */
static int signature(const pm_sigv4 *s, pm_sigv4_scratch *sc, const char *amz_date,
                     char sig_hex[65], pm_error *err)
{
    if (strlen(amz_date) != 16 || amz_date[8] != 'T' || amz_date[15] != 'Z')
        return pm_error_set(err, PM_ERR_INTERNAL, "SigV4: bad x-amz-date '%s'", amz_date);
    char creq_hash[65];
    if (pm_sigv4_sha256_hex(s, sc->creq.data, sc->creq.len, creq_hash, err) != 0)
        return -1;
    pm_buf *t = &sc->sts;
    pm_buf_reset(t);
    int oom = pm_buf_printf(t, "AWS4-HMAC-SHA256\n%s\n", amz_date);
    oom |= append_scope(t, s, amz_date);
    oom |= pm_buf_printf(t, "\n%s", creq_hash);
    if (oom)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    pm_buf_cstr(t);
    uint8_t mac[32];
    if (signing_key(s, sc, amz_date, err) != 0 ||
        hmac(s, sc, sc->key, sizeof sc->key, t->data, t->len, mac, err) != 0)
        return -1;
    pm_hex_encode(mac, 32, sig_hex);
    return 0;
}

int pm_sigv4_sign(const pm_sigv4 *s, pm_sigv4_scratch *sc, const pm_sigv4_request *r,
                  const char *amz_date, char sig_hex[65], pm_buf *auth, pm_error *err)
{
    if (pm_sigv4_canonical_request(sc, r, err) != 0 || signature(s, sc, amz_date, sig_hex, err) != 0)
        return -1;
    if (!auth)
        return 0;
    int oom = pm_buf_printf(auth, "AWS4-HMAC-SHA256 Credential=%s/", s->access_key_id);
    oom |= append_scope(auth, s, amz_date);
    oom |= pm_buf_printf(auth, ", SignedHeaders=%s, Signature=%s",
                         (const char *)sc->signed_headers.data, sig_hex);
    if (oom)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    return 0;
}

int pm_sigv4_presign_query(const pm_sigv4 *s, pm_sigv4_scratch *sc, const char *method,
                           const char *path, const char *host, const char *amz_date,
                           int64_t expires, pm_buf *out, pm_error *err)
{
    char credential[512], expires_s[24];
    int n = snprintf(credential, sizeof credential, "%s/%.8s/%s/%s/aws4_request",
                     s->access_key_id, amz_date, s->region, s->service);
    if (n < 0 || (size_t)n >= sizeof credential)
        return pm_error_set(err, PM_ERR_CONFIG, "SigV4: access key id too long");
    snprintf(expires_s, sizeof expires_s, "%lld", (long long)expires);
    pm_sigv4_pair q[6] = {
        {"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
        {"X-Amz-Credential", credential},
        {"X-Amz-Date", amz_date},
        {"X-Amz-Expires", expires_s},
        {"X-Amz-SignedHeaders", "host"},
        {"X-Amz-Security-Token", s->session_token},
    };
    pm_sigv4_pair h[1] = {{"host", host}};
    pm_sigv4_request r = {
        .method = method, .path = path, .query = q, .n_query = s->session_token ? 6 : 5,
        .headers = h, .n_headers = 1, .payload_hash = PM_SIGV4_UNSIGNED_PAYLOAD,
    };
    char sig[65];
    if (pm_sigv4_sign(s, sc, &r, amz_date, sig, NULL, err) != 0)
        return -1;
    /* The canonical query line of the canonical request is exactly the query
     * string to send (sorted, encoded); reuse it and append the signature. */
    const char *cq = strchr((const char *)sc->creq.data, '\n');
    cq = cq ? strchr(cq + 1, '\n') : NULL;
    const char *end = cq ? strchr(cq + 1, '\n') : NULL;
    if (!end)
        return pm_error_set(err, PM_ERR_INTERNAL, "SigV4: malformed canonical request");
    cq++;
    if (pm_buf_append(out, cq, (size_t)(end - cq)) != 0 ||
        pm_buf_printf(out, "&X-Amz-Signature=%s", sig) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    return 0;
}

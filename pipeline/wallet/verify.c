/*
 * verify.c - the rules Apple Wallet applies to a .pkpass, one id each.
 *
 * Order: the archive, the required files, the manifest (hashes, unlisted and
 * missing files), pass.json, then the signature.  docs/verify.md is the
 * user-facing list; keep it in step with the rule ids used here.
 */
#include "wallet/verify.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <zip.h>

#include "core/buf.h"
#include "wallet/pass_format.h"
#include "core/rfc3339.h"

/* Wallet passes are small; anything this big is not one (and not a zip bomb). */
#define MAX_ENTRY_BYTES (64u << 20)

typedef struct entry {
    char *name;
    uint8_t *data;
    size_t len;
    bool listed; /* named in manifest.json */
} entry;

typedef struct pkpass {
    entry *entries;
    size_t n;
    const entry *pass_json, *manifest_json, *signature;
    json_t *manifest; /* owned */
    json_t *pass;     /* owned */
} pkpass;

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

static void vissue(pm_verify_issue *is, const char *rule, const char *fmt, va_list ap)
{
    snprintf(is->rule, sizeof is->rule, "%s", rule);
    vsnprintf(is->message, sizeof is->message, fmt, ap);
}

__attribute__((format(printf, 3, 4)))
static void fail(pm_verify_report *r, const char *rule, const char *fmt, ...)
{
    r->failed++;
    if (r->nfailures >= PM_VERIFY_MAX_ISSUES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vissue(&r->failures[r->nfailures++], rule, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4)))
static void skip(pm_verify_report *r, const char *rule, const char *fmt, ...)
{
    if (r->nskipped >= PM_VERIFY_MAX_SKIPS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vissue(&r->skipped[r->nskipped++], rule, fmt, ap);
    va_end(ap);
}

static void rule_ok(pm_verify_report *r)
{
    r->passed++;
}

/* OpenSSL's error queue as "reason (detail); reason", then cleared. */
static const char *openssl_reasons(char *buf, size_t n)
{
    size_t len = 0;
    unsigned long e;
    const char *data;
    int flags;
    buf[0] = '\0';
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        const char *reason = ERR_reason_error_string(e);
        int w = snprintf(buf + len, n - len, "%s%s%s%s%s", len ? "; " : "",
                         reason ? reason : "unknown error",
                         (flags & ERR_TXT_STRING) && data && *data ? " (" : "",
                         (flags & ERR_TXT_STRING) && data ? data : "",
                         (flags & ERR_TXT_STRING) && data && *data ? ")" : "");
        if (w < 0 || (size_t)w >= n - len) {
            ERR_clear_error();
            break;
        }
        len += (size_t)w;
    }
    return buf[0] ? buf : "no detail from OpenSSL";
}

/* ------------------------------------------------------------------ */
/* The archive                                                         */
/* ------------------------------------------------------------------ */

static void pkpass_free(pkpass *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->entries[i].name);
        free(p->entries[i].data);
    }
    free(p->entries);
    json_decref(p->manifest);
    json_decref(p->pass);
}

static const entry *find_entry(const pkpass *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->entries[i].name, name) == 0)
            return &p->entries[i];
    return NULL;
}

static int read_entry(zip_t *z, zip_uint64_t i, entry *e, pm_verify_report *r)
{
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z, i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
        !(st.valid & ZIP_STAT_SIZE)) {
        fail(r, "zip.readable", "entry %llu: %s", (unsigned long long)i, zip_strerror(z));
        return -1;
    }
    if (st.size > MAX_ENTRY_BYTES) {
        fail(r, "zip.readable", "%s: %llu bytes uncompressed, more than a pass can hold (%u)",
             st.name, (unsigned long long)st.size, MAX_ENTRY_BYTES);
        return -1;
    }
    e->name = strdup(st.name);
    e->len = (size_t)st.size;
    e->data = malloc(e->len ? e->len : 1);
    if (!e->name || !e->data)
        return -2;
    zip_file_t *f = zip_fopen_index(z, i, 0);
    zip_int64_t got = f ? zip_fread(f, e->data, e->len) : -1;
    uint8_t past_end;
    /* libzip checks the CRC when a read reaches the end: read once more. */
    if (got == (zip_int64_t)e->len && zip_fread(f, &past_end, 1) != 0)
        got = -1;
    if (!f || got != (zip_int64_t)e->len) {
        /* zip_fread detects bad CRCs and truncated data. */
        fail(r, "zip.readable", "%s: cannot be extracted: %s", st.name,
             f ? zip_file_strerror(f) : zip_strerror(z));
        if (f)
            zip_fclose(f);
        return -1;
    }
    if (zip_fclose(f) != 0) {
        fail(r, "zip.readable", "%s: cannot be extracted: CRC or data error", st.name);
        return -1;
    }
    return 0;
}

/* 0: archive read; -1: zip.readable failed (reported); -2: out of memory. */
static int read_zip(const uint8_t *data, size_t len, pkpass *p, pm_verify_report *r)
{
    /* libzip opens 0 bytes as an empty archive; Wallet sees no zip at all. */
    if (len < 22) {
        fail(r, "zip.readable", "not a zip archive: %zu bytes, shorter than a zip's end record", len);
        return -1;
    }
    zip_error_t zerr;
    zip_error_init(&zerr);
    zip_source_t *src = zip_source_buffer_create(data, len, 0, &zerr);
    zip_t *z = src ? zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &zerr) : NULL;
    if (!z) {
        fail(r, "zip.readable", "not a readable zip archive: %s", zip_error_strerror(&zerr));
        zip_error_fini(&zerr);
        zip_source_free(src);
        return -1;
    }
    zip_error_fini(&zerr);
    zip_int64_t n = zip_get_num_entries(z, 0);
    int rc = 0;
    p->entries = calloc(n > 0 ? (size_t)n : 1, sizeof *p->entries);
    if (!p->entries)
        rc = -2;
    for (zip_int64_t i = 0; rc == 0 && i < n; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        if (name && name[0] && name[strlen(name) - 1] == '/')
            continue; /* folder entries carry no data */
        entry *e = &p->entries[p->n];
        rc = read_entry(z, (zip_uint64_t)i, e, r);
        p->n++;
        if (rc == 0 && find_entry(p, e->name) != e) {
            fail(r, "zip.readable", "%s: the archive holds this name twice", e->name);
            rc = -1;
        }
    }
    zip_discard(z); /* also frees src */
    if (rc == 0)
        rule_ok(r);
    return rc;
}

static void check_files(pkpass *p, pm_verify_report *r)
{
    static const struct { const char *rule, *name, *why; } req[] = {
        {"file.pass_json", "pass.json", "the pass itself"},
        {"file.manifest_json", "manifest.json", "the SHA-1 of every file"},
        {"file.signature", "signature", "the signature over manifest.json"},
        {"file.icon", "icon.png", "the icon shown on the lock screen and in notifications"},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        if (find_entry(p, req[i].name))
            rule_ok(r);
        else
            fail(r, req[i].rule, "%s is missing (expected at the top level of the archive: %s)",
                 req[i].name, req[i].why);
    }
    p->pass_json = find_entry(p, "pass.json");
    p->manifest_json = find_entry(p, "manifest.json");
    p->signature = find_entry(p, "signature");
}

/* ------------------------------------------------------------------ */
/* manifest.json                                                       */
/* ------------------------------------------------------------------ */

static void sha1_hex(const uint8_t *data, size_t len, char out[41])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    out[0] = '\0';
    if (!EVP_Digest(data, len, md, &n, EVP_sha1(), NULL))
        return;
    pm_hex_encode(md, n < 20 ? n : 20, out);
}

static bool is_sha1_hex(const char *s)
{
    if (strlen(s) != 40)
        return false;
    for (size_t i = 0; i < 40; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool is_unsigned_file(const char *name)
{
    return strcmp(name, "manifest.json") == 0 || strcmp(name, "signature") == 0;
}

static void check_manifest(pkpass *p, pm_verify_report *r)
{
    if (!p->manifest_json)
        return;
    json_error_t jerr;
    p->manifest = json_loadb((const char *)p->manifest_json->data, p->manifest_json->len,
                             JSON_REJECT_DUPLICATES, &jerr);
    if (!p->manifest || !json_is_object(p->manifest)) {
        fail(r, "manifest.parse", "manifest.json: expected a JSON object of file name -> SHA-1, %s%s",
             p->manifest ? "found another JSON type" : "found invalid JSON: ",
             p->manifest ? "" : jerr.text);
        json_decref(p->manifest);
        p->manifest = NULL;
        return;
    }
    rule_ok(r);
    for (size_t i = 0; i < p->n; i++) {
        entry *e = &p->entries[i];
        if (is_unsigned_file(e->name))
            continue;
        json_t *v = json_object_get(p->manifest, e->name);
        if (!v) {
            fail(r, "manifest.unlisted", "%s is in the archive but not in manifest.json", e->name);
            continue;
        }
        e->listed = true;
        rule_ok(r);
        char actual[41];
        sha1_hex(e->data, e->len, actual);
        if (!json_is_string(v) || !is_sha1_hex(json_string_value(v)))
            fail(r, "manifest.hash", "%s: manifest.json should give its SHA-1 as 40 hex digits, found %s",
                 e->name, json_is_string(v) ? json_string_value(v) : "a non-string");
        else if (strcasecmp(json_string_value(v), actual) != 0)
            fail(r, "manifest.hash", "%s: manifest.json says SHA-1 %s, the file's is %s "
                 "(the file changed after the manifest was made)", e->name, json_string_value(v), actual);
        else
            rule_ok(r);
    }
    const char *name;
    json_t *v;
    json_object_foreach(p->manifest, name, v) {
        if (is_unsigned_file(name))
            continue;
        if (find_entry(p, name))
            rule_ok(r);
        else
            fail(r, "manifest.missing", "manifest.json lists %s, which is not in the archive", name);
    }
}

/* ------------------------------------------------------------------ */
/* pass.json                                                           */
/* ------------------------------------------------------------------ */

static const char *const styles[] = {"boardingPass", "coupon", "eventTicket", "generic", "storeCard"};

static void check_string_key(json_t *pass, const char *key, pm_verify_report *r)
{
    char rule[40];
    snprintf(rule, sizeof rule, "pass.%s", key);
    json_t *v = json_object_get(pass, key);
    if (json_is_string(v) && json_string_length(v) > 0)
        rule_ok(r);
    else
        fail(r, rule, "pass.json: %s must be a non-empty string, found %s", key,
             !v ? "nothing" : json_is_string(v) ? "an empty string" : "another JSON type");
}

static void check_style(json_t *pass, pm_verify_report *r)
{
    char found[128] = "";
    int n = 0;
    for (size_t i = 0; i < sizeof styles / sizeof styles[0]; i++) {
        if (json_object_get(pass, styles[i])) {
            n++;
            snprintf(found + strlen(found), sizeof found - strlen(found), "%s%s", n > 1 ? ", " : "",
                     styles[i]);
        }
    }
    if (n != 1)
        fail(r, "pass.style", "pass.json: expected exactly one of boardingPass, coupon, eventTicket, "
             "generic, storeCard; found %s", n ? found : "none");
    else if (!json_is_object(json_object_get(pass, found)))
        fail(r, "pass.style", "pass.json: %s must be an object of field lists", found);
    else
        rule_ok(r);
}

static bool barcode_format_ok(const char *f)
{
    static const char *const ok[] = {"PKBarcodeFormatQR", "PKBarcodeFormatPDF417",
                                     "PKBarcodeFormatAztec", "PKBarcodeFormatCode128"};
    for (size_t i = 0; f && i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(f, ok[i]) == 0)
            return true;
    return false;
}

static void check_one_barcode(json_t *b, const char *path, pm_verify_report *r)
{
    if (!json_is_object(b)) {
        fail(r, "pass.barcodes", "pass.json: %s must be an object", path);
        return;
    }
    const char *format = json_string_value(json_object_get(b, "format"));
    bool ok = true;
    if (!barcode_format_ok(format)) {
        fail(r, "pass.barcodes", "pass.json: %s.format must be PKBarcodeFormatQR, PKBarcodeFormatPDF417, "
             "PKBarcodeFormatAztec or PKBarcodeFormatCode128, found %s", path, format ? format : "none");
        ok = false;
    }
    if (!json_is_string(json_object_get(b, "message"))) {
        fail(r, "pass.barcodes", "pass.json: %s.message must be a string", path);
        ok = false;
    }
    json_t *enc = json_object_get(b, "messageEncoding");
    if (!json_is_string(enc) || json_string_length(enc) == 0) {
        fail(r, "pass.barcodes", "pass.json: %s.messageEncoding must be an IANA charset name such as "
             "iso-8859-1", path);
        ok = false;
    }
    if (ok)
        rule_ok(r);
}

static void check_barcodes(json_t *pass, pm_verify_report *r)
{
    json_t *list = json_object_get(pass, "barcodes");
    if (list && !json_is_array(list)) {
        fail(r, "pass.barcodes", "pass.json: barcodes must be an array of barcode objects");
    } else if (list) {
        size_t i;
        json_t *b;
        json_array_foreach(list, i, b) {
            char path[32];
            snprintf(path, sizeof path, "barcodes[%zu]", i);
            check_one_barcode(b, path, r);
        }
    }
    json_t *legacy = json_object_get(pass, "barcode");
    if (legacy)
        check_one_barcode(legacy, "barcode", r);
}

static void check_colors(json_t *pass, pm_verify_report *r)
{
    static const char *const keys[] = {"backgroundColor", "foregroundColor", "labelColor"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(pass, keys[i]);
        if (!v)
            continue;
        if (json_is_string(v) && pm_pass_color_valid(json_string_value(v)))
            rule_ok(r);
        else
            fail(r, "pass.colors", "pass.json: %s must be rgb(r, g, b) with each value 0-255, found %s",
                 keys[i], json_is_string(v) ? json_string_value(v) : "a non-string");
    }
}

/* W3C date-time: RFC 3339, or the same without seconds (2027-06-12T18:00Z). */
static bool w3c_datetime_ok(const char *s)
{
    int64_t t;
    if (pm_rfc3339_parse(s, &t) == 0)
        return true;
    size_t n = strlen(s);
    if ((n == 17 || n == 22) && s[10] == 'T' && s[13] == ':' &&
        (s[16] == 'Z' || s[16] == '+' || s[16] == '-')) {
        char with_seconds[32];
        snprintf(with_seconds, sizeof with_seconds, "%.16s:00%s", s, s + 16);
        return pm_rfc3339_parse(with_seconds, &t) == 0;
    }
    return false;
}

static void check_date(json_t *v, const char *path, pm_verify_report *r)
{
    if (json_is_string(v) && w3c_datetime_ok(json_string_value(v)))
        rule_ok(r);
    else
        fail(r, "pass.dates", "pass.json: %s must be a W3C date with time and zone such as "
             "2027-06-12T18:00:00Z or 2027-06-12T20:00+02:00, found %s", path,
             json_is_string(v) ? json_string_value(v) : "a non-string");
}

static void check_dates(json_t *pass, pm_verify_report *r)
{
    static const char *const keys[] = {"relevantDate", "expirationDate"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(pass, keys[i]);
        if (v)
            check_date(v, keys[i], r);
    }
    json_t *list = json_object_get(pass, "relevantDates"); /* iOS 18 */
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d) {
        static const char *const sub[] = {"date", "startDate", "endDate"};
        for (size_t k = 0; k < 3; k++) {
            json_t *v = json_object_get(d, sub[k]);
            if (v) {
                char path[64];
                snprintf(path, sizeof path, "relevantDates[%zu].%s", i, sub[k]);
                check_date(v, path, r);
            }
        }
    }
}

static void check_web_service(json_t *pass, pm_verify_report *r)
{
    json_t *url = json_object_get(pass, "webServiceURL");
    if (!url)
        return;
    json_t *token = json_object_get(pass, "authenticationToken");
    const char *u = json_string_value(url);
    if (!u || strncmp(u, "https://", 8) != 0)
        fail(r, "pass.webService", "pass.json: webServiceURL must be an https:// URL "
             "(plain http only works with the developer setting \"Allow HTTP Services\"), found %s",
             u ? u : "a non-string");
    else if (!json_is_string(token) || json_string_length(token) < 16)
        fail(r, "pass.webService", "pass.json: webServiceURL needs an authenticationToken of at least "
             "16 characters, found %s", json_is_string(token) ? "a shorter one" : "none");
    else
        rule_ok(r);
}

/* Each field dictionary needs key and value; keys are unique in the whole pass. */
static void check_fields(json_t *pass, pm_verify_report *r)
{
    static const char *const lists[] = {"headerFields", "primaryFields", "secondaryFields",
                                        "auxiliaryFields", "backFields"};
    json_t *style = NULL;
    for (size_t i = 0; i < sizeof styles / sizeof styles[0] && !style; i++)
        style = json_object_get(pass, styles[i]);
    if (!json_is_object(style))
        return; /* pass.style says why */
    json_t *seen = json_object();
    bool ok = true;
    for (size_t l = 0; seen && l < sizeof lists / sizeof lists[0]; l++) {
        json_t *arr = json_object_get(style, lists[l]);
        if (!arr)
            continue;
        if (!json_is_array(arr)) {
            fail(r, "pass.fields", "pass.json: %s must be an array of field dictionaries", lists[l]);
            ok = false;
            continue;
        }
        size_t i;
        json_t *f;
        json_array_foreach(arr, i, f) {
            const char *key = json_string_value(json_object_get(f, "key"));
            json_t *value = json_object_get(f, "value");
            if (!key || !*key || !value || !(json_is_string(value) || json_is_number(value))) {
                fail(r, "pass.fields", "pass.json: %s[%zu] needs a non-empty string key and a string "
                     "or number value", lists[l], i);
                ok = false;
            } else if (json_object_get(seen, key)) {
                fail(r, "pass.fields", "pass.json: field key \"%s\" (%s[%zu]) is used twice; keys must be "
                     "unique within the pass", key, lists[l], i);
                ok = false;
            } else {
                json_object_set_new(seen, key, json_true());
            }
        }
    }
    json_decref(seen);
    if (ok)
        rule_ok(r);
}

static void check_pass_tree(json_t *pass, pm_verify_report *r);

static void check_pass(pkpass *p, pm_verify_report *r)
{
    if (!p->pass_json)
        return;
    json_error_t jerr;
    p->pass = json_loadb((const char *)p->pass_json->data, p->pass_json->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!p->pass || !json_is_object(p->pass)) {
        fail(r, "pass.parse", "pass.json: expected a JSON object, %s%s",
             p->pass ? "found another JSON type" : "found invalid JSON: ", p->pass ? "" : jerr.text);
        json_decref(p->pass);
        p->pass = NULL;
        return;
    }
    rule_ok(r);
    check_pass_tree(p->pass, r);
}

/* The pass.json rules on a parsed tree (shared with pm_verify_pass_json). */
static void check_pass_tree(json_t *pass, pm_verify_report *r)
{
    json_t *fv = json_object_get(pass, "formatVersion");
    if (json_is_integer(fv) && json_integer_value(fv) == 1)
        rule_ok(r);
    else if (json_is_integer(fv))
        fail(r, "pass.formatVersion", "pass.json: formatVersion must be 1, found %lld",
             (long long)json_integer_value(fv));
    else
        fail(r, "pass.formatVersion", "pass.json: formatVersion must be the number 1, found %s",
             fv ? "another JSON type" : "nothing");
    static const char *const required[] = {"passTypeIdentifier", "teamIdentifier", "serialNumber",
                                           "organizationName", "description"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        check_string_key(pass, required[i], r);
    check_style(pass, r);
    check_fields(pass, r);
    check_barcodes(pass, r);
    check_colors(pass, r);
    check_dates(pass, r);
    check_web_service(pass, r);
}

/* ------------------------------------------------------------------ */
/* signature                                                           */
/* ------------------------------------------------------------------ */

static char *subject_entry(X509 *cert, int nid)
{
    X509_NAME *name = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    if (i < 0)
        return NULL;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n < 0)
        return NULL;
    char *out = strndup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return out;
}

static void fmt_time(const ASN1_TIME *t, char out[32])
{
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm))
        strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(out, 32, "(unreadable time)");
}

static void check_chain(CMS_ContentInfo *cms, X509 *signer, X509_STORE *store, pm_verify_report *r)
{
    if (!store) {
        skip(r, "signature.chain", "not checked: no CA given (--ca FILE), so the signature is only "
             "known to be self-consistent, not to come from a trusted issuer");
        return;
    }
    STACK_OF(X509) *certs = CMS_get1_certs(cms);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!ctx || !X509_STORE_CTX_init(ctx, store, signer, certs)) {
        char why[256];
        fail(r, "signature.chain", "cannot set up chain verification: %s", openssl_reasons(why, sizeof why));
    } else {
        /* Apple's pass certificates are not S/MIME certificates: any purpose. */
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_ANY);
        if (X509_verify_cert(ctx) == 1) {
            rule_ok(r);
        } else {
            int e = X509_STORE_CTX_get_error(ctx);
            X509 *at = X509_STORE_CTX_get_current_cert(ctx);
            char subject[160] = "?";
            if (at)
                X509_NAME_oneline(X509_get_subject_name(at), subject, sizeof subject);
            fail(r, "signature.chain", "the signer certificate does not chain to the given CA: %s "
                 "(at depth %d, %s)", X509_verify_cert_error_string(e),
                 X509_STORE_CTX_get_error_depth(ctx), subject);
        }
    }
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(certs, X509_free);
}

static void check_signer_ids(const pkpass *p, X509 *signer, pm_verify_report *r)
{
    const char *type = p->pass ? json_string_value(json_object_get(p->pass, "passTypeIdentifier")) : NULL;
    const char *team = p->pass ? json_string_value(json_object_get(p->pass, "teamIdentifier")) : NULL;
    char *uid = subject_entry(signer, NID_userId);
    char *ou = subject_entry(signer, NID_organizationalUnitName);
    if (type) {
        if (uid && strcmp(uid, type) == 0)
            rule_ok(r);
        else
            fail(r, "signature.signer_type_id", "pass.json passTypeIdentifier is %s but the signer "
                 "certificate is for %s%s", type, uid ? "UID=" : "", uid ? uid : "no pass type (no UID)");
    }
    if (team) {
        if (ou && strcmp(ou, team) == 0)
            rule_ok(r);
        else
            fail(r, "signature.signer_team_id", "pass.json teamIdentifier is %s but the signer "
                 "certificate's team is %s%s", team, ou ? "OU=" : "", ou ? ou : "missing (no OU)");
    }
    free(uid);
    free(ou);
}

static void check_wwdr(CMS_ContentInfo *cms, X509 *signer, pm_verify_report *r)
{
    STACK_OF(X509) *certs = CMS_get1_certs(cms);
    bool found = false;
    for (int i = 0; !found && i < sk_X509_num(certs); i++) {
        X509 *c = sk_X509_value(certs, i);
        found = X509_cmp(c, signer) != 0 && X509_check_ca(c) > 0 &&
                X509_check_issued(c, signer) == X509_V_OK;
    }
    sk_X509_pop_free(certs, X509_free);
    if (found)
        rule_ok(r);
    else
        fail(r, "signature.wwdr", "the signature does not include the intermediate certificate that "
             "issued the signer certificate (Apple WWDR); set sign.chain");
}

static void check_signing_time(CMS_SignerInfo *si, X509 *signer, pm_verify_report *r)
{
    int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
    ASN1_TYPE *t = idx >= 0 ? X509_ATTRIBUTE_get0_type(CMS_signed_get_attr(si, idx), 0) : NULL;
    if (!t || (t->type != V_ASN1_UTCTIME && t->type != V_ASN1_GENERALIZEDTIME)) {
        fail(r, "signature.signing_time", "the signature has no signingTime attribute");
        return;
    }
    const ASN1_TIME *when = (const ASN1_TIME *)t->value.asn1_string;
    const ASN1_TIME *nb = X509_get0_notBefore(signer), *na = X509_get0_notAfter(signer);
    char w[32], b[32], a[32];
    fmt_time(when, w);
    fmt_time(nb, b);
    fmt_time(na, a);
    int before = ASN1_TIME_compare(when, nb), after = ASN1_TIME_compare(when, na);
    if (before == -2 || after == -2)
        fail(r, "signature.signing_time", "signingTime %s cannot be compared with the certificate's validity", w);
    else if (before < 0)
        fail(r, "signature.signing_time", "signed at %s, before the signer certificate is valid (from %s)", w, b);
    else if (after > 0)
        fail(r, "signature.signing_time", "signed at %s, after the signer certificate expired (%s)", w, a);
    else
        rule_ok(r);
}

static void check_signature(pkpass *p, X509_STORE *store, pm_verify_report *r)
{
    if (!p->signature)
        return;
    char why[320];
    const unsigned char *der = p->signature->data;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &der, (long)p->signature->len);
    if (!cms || OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
        fail(r, "signature.parse", "signature: expected DER PKCS#7/CMS SignedData, found %s",
             cms ? "another CMS type" : openssl_reasons(why, sizeof why));
        CMS_ContentInfo_free(cms);
        ERR_clear_error();
        return;
    }
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
    if (sk_CMS_SignerInfo_num(sis) < 1) {
        fail(r, "signature.parse", "signature: the SignedData has no signer");
        CMS_ContentInfo_free(cms);
        return;
    }
    rule_ok(r);
    if (CMS_is_detached(cms) == 1) {
        rule_ok(r);
    } else {
        fail(r, "signature.detached", "signature: the signed content is embedded; Wallet expects a "
             "detached signature over manifest.json");
        CMS_set_detached(cms, 1); /* still check it over the real manifest */
    }
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, 0);
    X509 *signer = NULL;
    CMS_set1_signers_certs(cms, NULL, 0);
    CMS_SignerInfo_get0_algs(si, NULL, &signer, NULL, NULL);
    ERR_clear_error();
    if (!signer) {
        fail(r, "signature.digest", "signature: the signer certificate is not included");
        CMS_ContentInfo_free(cms);
        return;
    }
    if (p->manifest_json) {
        BIO *content = BIO_new_mem_buf(p->manifest_json->data, (int)p->manifest_json->len);
        if (content && CMS_verify(cms, NULL, NULL, content, NULL,
                                  CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) == 1) {
            rule_ok(r);
        } else {
            /* CMS reports a message digest mismatch as a content verify error. */
            bool content_changed = ERR_GET_LIB(ERR_peek_last_error()) == ERR_LIB_CMS &&
                                   ERR_GET_REASON(ERR_peek_last_error()) == CMS_R_CONTENT_VERIFY_ERROR;
            fail(r, "signature.digest", "the signature does not verify over manifest.json: %s (%s)",
                 content_changed ? "manifest.json differs from what was signed (changed after signing, "
                                   "or the signature belongs to another pass)"
                                 : "the signature value is invalid (damaged, or made with another key)",
                 openssl_reasons(why, sizeof why));
        }
        BIO_free(content);
    }
    check_chain(cms, signer, store, r);
    check_signer_ids(p, signer, r);
    check_wwdr(cms, signer, r);
    check_signing_time(si, signer, r);
    ERR_clear_error();
    CMS_ContentInfo_free(cms);
}

/* ------------------------------------------------------------------ */
/* Entry points                                                        */
/* ------------------------------------------------------------------ */

static X509_STORE *load_ca(const char *path, pm_error *err)
{
    X509_STORE *store = X509_STORE_new();
    if (!store) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (X509_STORE_load_file(store, path) != 1) {
        pm_error_set(err, PM_ERR_CONFIG, "CA file '%s': expected PEM certificate(s) of the trusted root", path);
        pm_error_add_openssl(err);
        X509_STORE_free(store);
        return NULL;
    }
    return store;
}

int pm_verify_pkpass(const uint8_t *data, size_t len, const char *ca_path_or_NULL,
                     pm_verify_report *report)
{
    memset(report, 0, sizeof *report);
    pm_error_clear(&report->error);
    X509_STORE *store = NULL;
    if (ca_path_or_NULL && !(store = load_ca(ca_path_or_NULL, &report->error)))
        return -1;
    pkpass p = {0};
    int rc = read_zip(data, len, &p, report);
    if (rc == 0) {
        check_files(&p, report);
        check_manifest(&p, report);
        check_pass(&p, report);
        check_signature(&p, store, report);
    }
    pkpass_free(&p);
    X509_STORE_free(store);
    if (rc == -2)
        return pm_error_set(&report->error, PM_ERR_NOMEM, "out of memory");
    return report->failed ? 1 : 0;
}

int pm_verify_pass_json(json_t *pass, pm_verify_report *report)
{
    /* Only the counts: the issue arrays are read up to them (this runs once per pass). */
    report->passed = report->failed = report->nfailures = report->nskipped = 0;
    pm_error_clear(&report->error);
    if (!json_is_object(pass)) {
        fail(report, "pass.parse", "pass.json: expected a JSON object");
        return 1;
    }
    check_pass_tree(pass, report);
    return report->failed ? 1 : 0;
}

int pm_verify_file(const char *path, const char *ca_path_or_NULL, pm_verify_report *report)
{
    pm_buf b = PM_BUF_INIT;
    if (pm_buf_read_file(&b, path) != 0) {
        memset(report, 0, sizeof *report);
        pm_error_set(&report->error, PM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        pm_buf_free(&b);
        return -1;
    }
    int rc = pm_verify_pkpass(b.data, b.len, ca_path_or_NULL, report);
    pm_buf_free(&b);
    return rc;
}

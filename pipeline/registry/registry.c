/*
 * registry.c - what both registry backends share: opening by
 * configuration, run ids, authentication tokens and content hashes.
 */
#include "registry/registry.h"
#include "registry/registry_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/buf.h"
#include "core/secret.h"
#include "core/rfc3339.h"
#include "record/canonical.h"

/*
 * The PostgreSQL password: the environment variable registry.password_env,
 * else the first line of registry.password_file, else none (libpq may still
 * find one in ~/.pgpass).  Never a config value, never argv.
 */
static int registry_password(const pm_config *cfg, char *out, size_t cap, pm_error *err)
{
    out[0] = '\0';
    const char *env = cfg->registry_password_env[0] ? getenv(cfg->registry_password_env) : NULL;
    if (env && *env) {
        if (strlen(env) >= cap)
            return pm_error_set(err, PM_ERR_CONFIG, "the registry password in $%s is too long",
                                cfg->registry_password_env);
        snprintf(out, cap, "%s", env);
        return 0;
    }
    if (!cfg->registry_password_file[0])
        return 0;
    char *secret = pm_secret_read_file(cfg->registry_password_file, "registry.password_file", err);
    if (!secret)
        return -1;
    secret[strcspn(secret, "\r\n")] = '\0'; /* the first line */
    int rc = 0;
    if (strlen(secret) >= cap)
        rc = pm_error_set(err, PM_ERR_CONFIG, "registry.password_file '%s': the password is too long",
                          cfg->registry_password_file);
    else
        snprintf(out, cap, "%s", secret);
    pm_secret_free(secret);
    return rc;
}

int pm_registry_open(const pm_config *cfg, pm_registry **out, pm_error *err)
{
    *out = NULL;
    if (cfg->registry_url[0] && cfg->registry_path[0])
        return pm_error_set(err, PM_ERR_CONFIG,
                            "registry.url and registry.path are both set: choose one registry");
    if (cfg->registry_url[0]) {
        char password[1024];
        if (registry_password(cfg, password, sizeof password, err) != 0)
            return -1;
        int rc = pm_registry_pg_open(cfg->registry_url, password, out, err);
        OPENSSL_cleanse(password, sizeof password);
        return rc;
    }
    if (cfg->registry_path[0])
        return pm_registry_sqlite_open(cfg->registry_path, out, err);
    return 0;
}

void pm_registry_close(pm_registry *r)
{
    if (r)
        r->ops->close(r);
}

void pm_registry_run_id(char out[PM_RUN_ID_LEN + 1])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    unsigned char rnd[4] = {0};
    if (RAND_bytes(rnd, sizeof rnd) != 1) /* still unique enough with the time */
        memset(rnd, 0, sizeof rnd);
    char hex[9];
    pm_hex_encode(rnd, sizeof rnd, hex);
    char stamp[17];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, PM_RUN_ID_LEN + 1, "%s-%s", stamp, hex);
}

/*
 * Where the hashed part of the canonical text starts, and its first byte
 * replaced: the text without the action member.  With sorted keys "action"
 * comes first ({"action":"ISSUE","attendee":...}), so dropping it is
 * skipping a prefix; its value is an enum symbol (no escapes).
 */
static size_t after_action(const char *text, size_t len)
{
    static const char key[] = "{\"action\":\"";
    size_t k = sizeof key - 1;
    if (len < k || memcmp(text, key, k) != 0)
        return 0;
    const char *end = memchr(text + k, '"', len - k);
    if (!end || (size_t)(end - text) + 1 >= len)
        return 0;
    size_t at = (size_t)(end - text) + 1; /* ',' before the next member, or '}' */
    return text[at] == ',' ? at : 0;
}

/*
 * Record fields added after passes were first stored: at their null default
 * they are left out of the canonical record, so a pass issued before the
 * field existed keeps its content hash (its ISSUE sent again is still
 * `unchanged`, not serial.exists) and the stored text stays the same.
 */
static const char *const later_fields[] = {"sharing_prohibited", "strip_image", "status_message",
                                           NULL};

/*
 * The hash of the canonical text with c on md.  NUL separators: no
 * concatenation of two parts can look like another.
 */
static int hash_text(EVP_MD_CTX *c, const EVP_MD *md, const char *text, size_t len,
                     const char *status, const char *template_version,
                     const uint8_t signer_sha256[32], char out[65], pm_error *err)
{
    /* The action says what to do, not what the pass is: an ISSUE and an
     * UPDATE of the same content make the same pass.  Hashed: "{" then
     * the members after the action. */
    size_t skip = after_action(text, len);
    if (!skip)
        return pm_error_set(err, PM_ERR_INTERNAL,
                            "the normalized record does not start with its action");
    uint8_t digest[32];
    unsigned int mdlen = 0;
    int ok = c && EVP_DigestInit_ex(c, md, NULL) == 1 && EVP_DigestUpdate(c, "{", 1) == 1 &&
             EVP_DigestUpdate(c, text + skip + 1, len - skip - 1) == 1 &&
             EVP_DigestUpdate(c, "", 1) == 1 &&
             EVP_DigestUpdate(c, status, strlen(status) + 1) == 1 &&
             EVP_DigestUpdate(c, template_version, strlen(template_version) + 1) == 1 &&
             EVP_DigestUpdate(c, signer_sha256, 32) == 1 && EVP_DigestFinal_ex(c, digest, &mdlen) == 1;
    if (!ok)
        return pm_error_set(err, PM_ERR_CRYPTO, "SHA-256 failed for a content hash");
    pm_hex_encode(digest, sizeof digest, out);
    return 0;
}

/* The record's canonical text into canonical (reset first), NUL-terminated. */
static int canonical_text(const json_t *record, pm_buf *canonical, pm_error *err)
{
    pm_buf_reset(canonical);
    if (pm_canonical_json(record, later_fields, canonical) != 0 || !pm_buf_cstr(canonical))
        return pm_error_set(err, PM_ERR_NOMEM, "the record cannot be written as canonical JSON for"
                            " its content hash (out of memory, or a string not valid UTF-8)");
    return 0;
}

int pm_registry_content_hash_text(const char *text, size_t len, const char *status,
                                  const char *template_version, const uint8_t signer_sha256[32],
                                  char out[65], pm_error *err)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int rc = hash_text(c, EVP_sha256(), text, len, status, template_version, signer_sha256, out, err);
    EVP_MD_CTX_free(c);
    return rc;
}

int pm_registry_content_hash(const json_t *record, const char *status,
                             const char *template_version, const uint8_t signer_sha256[32],
                             pm_buf *canonical, char out[65], pm_error *err)
{
    if (canonical_text(record, canonical, err) != 0)
        return -1;
    return pm_registry_content_hash_text((const char *)canonical->data, canonical->len, status,
                                         template_version, signer_sha256, out, err);
}

static int random_bytes(uint8_t *out, size_t n, pm_error *err)
{
    if (RAND_bytes(out, (int)n) != 1)
        return pm_error_set(err, PM_ERR_CRYPTO, "no random bytes for an authenticationToken");
    return 0;
}

int pm_registry_new_token(char out[PM_AUTH_TOKEN_LEN + 1], pm_error *err)
{
    uint8_t rnd[PM_AUTH_TOKEN_LEN / 2];
    if (random_bytes(rnd, sizeof rnd, err) != 0)
        return -1;
    pm_hex_encode(rnd, sizeof rnd, out);
    OPENSSL_cleanse(rnd, sizeof rnd);
    return 0;
}

/* ---- one thread's hasher ---- */

enum { TOKEN_BLOCK = 64 * (PM_AUTH_TOKEN_LEN / 2) }; /* 64 tokens per draw */

struct pm_registry_hasher {
    EVP_MD *sha256;         /* fetched once */
    EVP_MD_CTX *ctx;
    uint8_t random[TOKEN_BLOCK];
    size_t random_left;     /* unused bytes at the end of random[] */
};

int pm_registry_hasher_create(pm_registry_hasher **out, pm_error *err)
{
    *out = NULL;
    pm_registry_hasher *h = calloc(1, sizeof *h);
    if (!h)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    h->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (!h->sha256 || !h->ctx) {
        pm_registry_hasher_destroy(h);
        return pm_error_set(err, PM_ERR_CRYPTO, "no SHA-256 for content hashes");
    }
    *out = h;
    return 0;
}

void pm_registry_hasher_destroy(pm_registry_hasher *h)
{
    if (!h)
        return;
    OPENSSL_cleanse(h->random, sizeof h->random);
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->sha256);
    free(h);
}

int pm_registry_hasher_content_hash_text(pm_registry_hasher *h, const char *text, size_t len,
                                         const char *status, const char *template_version,
                                         const uint8_t signer_sha256[32], char out[65], pm_error *err)
{
    return hash_text(h->ctx, h->sha256, text, len, status, template_version, signer_sha256, out, err);
}

int pm_registry_hasher_content_hash(pm_registry_hasher *h, const json_t *record, const char *status,
                                    const char *template_version, const uint8_t signer_sha256[32],
                                    pm_buf *canonical, char out[65], pm_error *err)
{
    if (canonical_text(record, canonical, err) != 0)
        return -1;
    return hash_text(h->ctx, h->sha256, (const char *)canonical->data, canonical->len, status,
                     template_version, signer_sha256, out, err);
}

int pm_registry_hasher_new_token(pm_registry_hasher *h, char out[PM_AUTH_TOKEN_LEN + 1],
                                 pm_error *err)
{
    size_t n = PM_AUTH_TOKEN_LEN / 2;
    if (h->random_left < n) {
        if (random_bytes(h->random, sizeof h->random, err) != 0)
            return -1;
        h->random_left = sizeof h->random;
    }
    /* Taken from the end, and wiped once taken. */
    uint8_t *take = h->random + h->random_left - n;
    pm_hex_encode(take, n, out);
    OPENSSL_cleanse(take, n);
    h->random_left -= n;
    return 0;
}

const char *pm_outcome_kind_name(pm_outcome_kind k)
{
    switch (k) {
    case PM_OUTCOME_PASS: return "pass";
    case PM_OUTCOME_UNCHANGED: return "unchanged";
    case PM_OUTCOME_REJECT: return "reject";
    case PM_OUTCOME_FAILED: return "failed";
    default: return "?";
    }
}

/* ---- what the backends share (registry_backend.h) ---- */

const char *pm_registry_row_record(const pm_job *job, pm_buf *scratch, pm_error *err)
{
    /* canonical_text() ends both with a NUL (job.h: record_json). */
    if (job->record_json.len)
        return (const char *)job->record_json.data;
    return canonical_text(job->record, scratch, err) == 0 ? (const char *)scratch->data : NULL;
}

/*
 * Version 3: passes_update_tag dropped.  No query reads passes by update
 * tag alone (a device's passesUpdatedSince goes through its registrations,
 * then each pass by serial), and the index cost every pass change an index
 * write (issue 10: what the registry costs a run).
 */
const char *const pm_registry_schema_v3[] = {
    "DROP INDEX IF EXISTS passes_update_tag",
    NULL,
};

const char *pm_registry_record_text(const pm_job *job, const char *name)
{
    return job->record ? json_string_value(json_object_get(job->record, name)) : NULL;
}

const char *pm_registry_event_id(const pm_job *job)
{
    json_t *ev = job->record ? json_object_get(job->record, "event") : NULL;
    return json_string_value(json_object_get(ev, "event_id"));
}

static json_t *time_json(int64_t t)
{
    char buf[32];
    pm_rfc3339_format_utc(t, buf);
    return json_string(buf);
}

/* Column i of c as parsed JSON (the record columns), or NULL. */
static json_t *col_parsed(const pm_registry_cols *c, int i)
{
    const char *t = c->text(c->row, i);
    return t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
}

#define COL(i) c->json(c->row, (i))

json_t *pm_registry_show_row(const pm_registry_cols *c)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o?, s:o, s:o, s:{s:o, s:o}, s:o, s:o, s:o, s:o, s:o}",
                     "serial", COL(0), "status", COL(1), "template_id", COL(2),
                     "template_version", COL(3), "event_id", COL(4), "record", col_parsed(c, 5),
                     "content_hash", COL(6), "sha256", COL(7), "keys", "pkpass", COL(8), "qr", COL(9),
                     "update_tag", COL(10), "created_at", time_json(c->integer(c->row, 11)),
                     "updated_at", time_json(c->integer(c->row, 12)), "run_id", COL(13),
                     "origin", COL(14));
}

json_t *pm_registry_result_row(const pm_registry_cols *c)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o}, s:o, s:o}",
                     "run_id", COL(0), "serial", COL(1), "outcome", COL(2), "action", COL(3),
                     "status", COL(4), "template_id", COL(5), "template_version", COL(6),
                     "sha256", COL(7), "keys", "pkpass", COL(8), "qr", COL(9), "origin", COL(10),
                     "at", time_json(c->integer(c->row, 11)));
}

json_t *pm_registry_reject_row(const pm_registry_cols *c)
{
    const char *code = c->text(c->row, 2);
    json_t *row = json_pack("{s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "run_id", COL(0),
                            "outcome", code && strncmp(code, "failed.", 7) == 0 ? "failed" : "reject",
                            "serial", COL(1), "code", COL(2), "field", COL(3), "reason", COL(4),
                            "origin", COL(7), "at", time_json(c->integer(c->row, 8)));
    if (row) {
        if (c->text(c->row, 5))
            json_object_set_new(row, "record", col_parsed(c, 5));
        else if (c->text(c->row, 6))
            json_object_set_new(row, "record_base64", COL(6));
    }
    return row;
}

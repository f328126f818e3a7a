#include "engine/context.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "wallet/identity.h"
#include "core/rfc3339.h"
#include "record/schema.h"
#include "wallet/template.h"

/*
 * The barcode secret: from the environment variable named by
 * barcode.secret_env, else the file barcode.secret_file, else none (then
 * "autogenerate" barcodes fail with a configuration error).  A key shorter
 * than PM_BARCODE_SECRET_MIN bytes is refused: anyone who guesses it can mint
 * valid barcodes.  A key longer than the HMAC-SHA-256 block is replaced by
 * its SHA-256, exactly as HMAC itself would do.
 */
static int load_barcode_key(const pm_config *cfg, pm_context *ctx, pm_error *err)
{
    char filebuf[4096];
    const char *secret = NULL;
    size_t len = 0;
    if (cfg->barcode_secret_env[0] && (secret = getenv(cfg->barcode_secret_env)) && *secret) {
        len = strlen(secret);
    } else if (cfg->barcode_secret_file[0]) {
        FILE *f = fopen(cfg->barcode_secret_file, "rb");
        if (!f)
            return pm_error_set(err, PM_ERR_CONFIG, "barcode.secret_file '%s': %s",
                                cfg->barcode_secret_file, strerror(errno));
        len = fread(filebuf, 1, sizeof filebuf, f);
        fclose(f);
        while (len && (filebuf[len - 1] == '\n' || filebuf[len - 1] == '\r'))
            len--;
        if (len == 0)
            return pm_error_set(err, PM_ERR_CONFIG, "barcode.secret_file '%s' is empty",
                                cfg->barcode_secret_file);
        secret = filebuf;
    } else {
        ctx->barcode_key_len = 0;
        return 0;
    }
    if (len < PM_BARCODE_SECRET_MIN) {
        OPENSSL_cleanse(filebuf, sizeof filebuf);
        return pm_error_set(err, PM_ERR_CONFIG,
                            "the barcode secret (%s %s) is %zu bytes; at least %d are required "
                            "(e.g. `openssl rand -hex 32`)",
                            secret == filebuf ? "barcode.secret_file" : "environment variable",
                            secret == filebuf ? cfg->barcode_secret_file : cfg->barcode_secret_env,
                            len, PM_BARCODE_SECRET_MIN);
    }
    if (len > sizeof ctx->barcode_key) {
        unsigned int n = 0;
        EVP_Digest(secret, len, ctx->barcode_key, &n, EVP_sha256(), NULL);
        ctx->barcode_key_len = n;
    } else {
        memcpy(ctx->barcode_key, secret, len);
        ctx->barcode_key_len = len;
    }
    OPENSSL_cleanse(filebuf, sizeof filebuf);
    return 0;
}

/*
 * Wallet refuses a pass whose passTypeIdentifier/teamIdentifier differ from
 * the signing certificate's UID/OU: catch that once at start-up rather than
 * producing thousands of passes that will not open.
 */
static int check_templates_match_identity(const pm_context *ctx, pm_error *err)
{
    for (size_t i = 0; i < pm_template_set_count(ctx->templates); i++) {
        const pm_template *t = pm_template_set_at(ctx->templates, i);
        const char *type = json_string_value(json_object_get(t->skeleton, "passTypeIdentifier"));
        const char *team = json_string_value(json_object_get(t->skeleton, "teamIdentifier"));
        if (!type || strcmp(type, ctx->identity->pass_type_id) != 0)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "template '%s': passTypeIdentifier '%s' does not match the signing "
                                "certificate's pass type id '%s' (subject UID); Wallet would refuse "
                                "every pass", t->id, type ? type : "", ctx->identity->pass_type_id);
        if (!team || strcmp(team, ctx->identity->team_id) != 0)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "template '%s': teamIdentifier '%s' does not match the signing "
                                "certificate's team id '%s' (subject OU); Wallet would refuse "
                                "every pass", t->id, team ? team : "", ctx->identity->team_id);
    }
    return 0;
}

/*
 * The signer's SHA-256 alone when no web service is set (so passes issued
 * before service.url existed keep their hash), else SHA-256 over a label,
 * the URL and the signer's: a new service.url makes every pass "changed",
 * and a reissue then gives each its new webServiceURL.
 */
static int pass_settings_hash(const pm_config *cfg, pm_context *ctx, pm_error *err)
{
    memcpy(ctx->pass_settings_sha256, ctx->identity->cert_sha256, 32);
    const char *url = cfg->service_url ? cfg->service_url : "";
    if (!*url)
        return 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int len = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, "webServiceURL", sizeof "webServiceURL") == 1 &&
             EVP_DigestUpdate(c, url, strlen(url) + 1) == 1 &&
             EVP_DigestUpdate(c, ctx->identity->cert_sha256, 32) == 1 &&
             EVP_DigestFinal_ex(c, ctx->pass_settings_sha256, &len) == 1;
    EVP_MD_CTX_free(c);
    return ok ? 0 : pm_error_set(err, PM_ERR_CRYPTO, "SHA-256 failed for the pass settings");
}

int pm_context_create(const pm_config *cfg, pm_context **out, pm_error *err)
{
    pm_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    ctx->config = cfg;
    ctx->fixed_now = -1;
    if (cfg->now[0] && pm_rfc3339_parse(cfg->now, &ctx->fixed_now) != 0) {
        pm_error_set(err, PM_ERR_CONFIG,
                     "engine.now: expected an RFC 3339 timestamp like 2027-01-01T00:00:00Z, got '%s'",
                     cfg->now);
        goto fail;
    }
    if (pm_schema_init(err) != 0)
        goto fail;
    if (pm_template_set_load(cfg->template_dir, &ctx->templates, err) != 0) {
        pm_error_prefix(err, "template.dir '%s'", cfg->template_dir);
        goto fail;
    }
    if (pm_identity_load(cfg, &ctx->identity, err) != 0)
        goto fail;
    if (check_templates_match_identity(ctx, err) != 0)
        goto fail;
    if (load_barcode_key(cfg, ctx, err) != 0)
        goto fail;
    if (pass_settings_hash(cfg, ctx, err) != 0)
        goto fail;
    *out = ctx;
    return 0;
fail:
    pm_context_destroy(ctx);
    return -1;
}

void pm_context_destroy(pm_context *ctx)
{
    if (!ctx)
        return;
    pm_template_set_destroy(ctx->templates);
    pm_identity_destroy(ctx->identity);
    OPENSSL_cleanse(ctx->barcode_key, sizeof ctx->barcode_key);
    free(ctx);
}

int64_t pm_context_now(const pm_context *ctx)
{
    return ctx->fixed_now >= 0 ? ctx->fixed_now : (int64_t)time(NULL);
}

/*
 * manifest.c - stage 3: pass.json from the template and the record, then
 * manifest.json (see manifest.h for the rules).
 */
#include "stages/manifest.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/rfc3339.h"
#include "wallet/verify.h"

#define MAX_DEPTH 64 /* the loader allows 32; rendering never recurses deeper */

/* ---- rendering -------------------------------------------------------- */

typedef struct render_ctx {
    json_t *record;
    json_t *custom;          /* the record's custom_fields array (may be NULL) */
    json_t *barcode_message; /* the barcode stage's final message (NULL: the record's) */
    uint64_t custom_bound;   /* bit i: the template binds custom_fields[i] */
    pm_buf *buf;             /* string building */
    bool null_seen;          /* a binding resolved to null since last cleared */
} render_ctx;

/*
 * Where a value sits: R_FIELDS the five field arrays, R_ENTRIES the arrays
 * of optional entries (relevantDates), where an element with a null binding
 * is left out.
 */
typedef enum render_kind { R_PLAIN, R_ROOT, R_STYLE, R_FIELDS, R_ENTRIES } render_kind;

static const char *const field_arrays[] = {
    "headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields",
};

static bool is_field_array(const char *key)
{
    for (size_t i = 0; i < sizeof field_arrays / sizeof *field_arrays; i++)
        if (strcmp(key, field_arrays[i]) == 0)
            return true;
    return false;
}

/* The record value a binding path names; NULL when absent. */
static json_t *lookup(render_ctx *rc, const char *path, size_t n)
{
    if (n > 7 && memcmp(path, "custom.", 7) == 0) {
        const char *key = path + 7;
        size_t klen = n - 7, i;
        json_t *el;
        json_array_foreach(rc->custom, i, el) {
            json_t *k = json_object_get(el, "key");
            if (json_is_string(k) && json_string_length(k) == klen &&
                memcmp(json_string_value(k), key, klen) == 0) {
                if (i < 64)
                    rc->custom_bound |= UINT64_C(1) << i;
                return json_object_get(el, "value");
            }
        }
        return NULL;
    }
    /* "autogenerate" is the record's request; the pass shows what it became. */
    if (rc->barcode_message && n == 15 && memcmp(path, "barcode.message", 15) == 0)
        return rc->barcode_message;
    json_t *v = rc->record;
    const char *end = path + n;
    while (v && path < end) {
        const char *dot = memchr(path, '.', (size_t)(end - path));
        size_t len = dot ? (size_t)(dot - path) : (size_t)(end - path);
        v = json_object_getn(v, path, len);
        path += len + (dot ? 1 : 0);
    }
    return v;
}

/* Append a leaf's text; a null (or non-leaf) value marks null_seen. */
static int append_value(render_ctx *rc, json_t *v)
{
    char num[40];
    switch (json_typeof(v ? v : json_null())) {
    case JSON_STRING:
        return pm_buf_append(rc->buf, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return pm_buf_append_str(rc->buf, num);
    case JSON_REAL:
        snprintf(num, sizeof num, "%.15g", json_real_value(v));
        return pm_buf_append_str(rc->buf, num);
    case JSON_TRUE:
        return pm_buf_append_str(rc->buf, "true");
    case JSON_FALSE:
        return pm_buf_append_str(rc->buf, "false");
    default:
        rc->null_seen = true;
        return 0;
    }
}

static json_t *render_string(render_ctx *rc, const char *s, size_t n)
{
    const char *p = memchr(s, '$', n) ? strstr(s, "${") : NULL;
    if (!p)
        return json_stringn(s, n);
    /* Exactly one binding to a number: keep the number (numberStyle fields). */
    if (p == s && s[n - 1] == '}' && !memchr(s + 2, '}', n - 3)) {
        json_t *v = lookup(rc, s + 2, n - 3);
        if (json_is_integer(v))
            return json_integer(json_integer_value(v));
        if (json_is_real(v))
            return json_real(json_real_value(v));
    }
    pm_buf_reset(rc->buf);
    const char *end = s + n;
    while (p) {
        const char *close = memchr(p + 2, '}', (size_t)(end - p - 2));
        if (!close) /* the loader refuses this; copy the rest literally */
            break;
        if (pm_buf_append(rc->buf, s, (size_t)(p - s)) != 0 ||
            append_value(rc, lookup(rc, p + 2, (size_t)(close - p - 2))) != 0)
            return NULL;
        s = close + 1;
        p = strstr(s, "${");
    }
    if (pm_buf_append(rc->buf, s, (size_t)(end - s)) != 0)
        return NULL;
    return json_stringn((const char *)rc->buf->data, rc->buf->len);
}

static json_t *render(render_ctx *rc, json_t *v, render_kind kind, int depth);

/* One field object; *drop when its "value" had a null binding. */
static json_t *render_field(render_ctx *rc, json_t *field, int depth, bool *drop)
{
    *drop = false;
    if (!json_is_object(field))
        return render(rc, field, R_PLAIN, depth);
    json_t *out = json_object();
    const char *key;
    json_t *child;
    json_object_foreach(field, key, child) {
        bool is_value = strcmp(key, "value") == 0;
        rc->null_seen = false;
        json_t *r = render(rc, child, R_PLAIN, depth + 1);
        if (!r || !out || json_object_set_new(out, key, r) != 0) {
            json_decref(out);
            return NULL;
        }
        if (is_value && rc->null_seen)
            *drop = true;
    }
    return out;
}

static json_t *render_array(render_ctx *rc, json_t *v, render_kind kind, int depth)
{
    json_t *out = json_array(), *child;
    size_t i;
    json_array_foreach(v, i, child) {
        bool drop = false;
        if (kind == R_ENTRIES)
            rc->null_seen = false;
        json_t *r = kind == R_FIELDS ? render_field(rc, child, depth + 1, &drop)
                                     : render(rc, child, R_PLAIN, depth + 1);
        if (kind == R_ENTRIES)
            drop = rc->null_seen;
        if (!r || !out) {
            json_decref(r);
            json_decref(out);
            return NULL;
        }
        if (drop)
            json_decref(r);
        else if (json_array_append_new(out, r) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *render_object(render_ctx *rc, json_t *v, render_kind kind, int depth)
{
    json_t *out = json_object(), *child;
    const char *key;
    json_object_foreach(v, key, child) {
        render_kind k = R_PLAIN;
        if (kind == R_ROOT && strcmp(key, "eventTicket") == 0)
            k = R_STYLE;
        else if (kind == R_ROOT && strcmp(key, "relevantDates") == 0 && json_is_array(child))
            k = R_ENTRIES;
        else if (kind == R_STYLE && is_field_array(key))
            k = R_FIELDS;
        json_t *r = render(rc, child, k, depth + 1);
        if (r && k == R_ENTRIES && json_array_size(r) == 0 && json_array_size(child) > 0) {
            json_decref(r); /* every entry left out: no key at all */
            continue;
        }
        if (!r || !out || json_object_set_new(out, key, r) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *render(render_ctx *rc, json_t *v, render_kind kind, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return render_object(rc, v, kind, depth);
    case JSON_ARRAY: return render_array(rc, v, kind, depth);
    case JSON_STRING: return render_string(rc, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return json_integer(json_integer_value(v));
    case JSON_REAL: return json_real(json_real_value(v));
    default: return json_copy(v); /* true, false, null: shared singletons */
    }
}

/* ---- per-pass keys ---------------------------------------------------- */

static const char *rec_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Set key to a string when s is not NULL. 0, or -1 when out of memory. */
static int set_str(json_t *obj, const char *key, const char *s)
{
    return s ? json_object_set_new(obj, key, json_string(s)) : 0;
}

static json_t *locations_json(json_t *list)
{
    json_t *out = json_array(), *loc;
    size_t i;
    json_array_foreach(list, i, loc) {
        json_t *alt = json_object_get(loc, "altitude");
        json_t *o = json_object();
        int bad = !o || json_array_append_new(out, o) != 0 ||
                  json_object_set_new(o, "latitude",
                                      json_real(json_number_value(json_object_get(loc, "latitude")))) ||
                  json_object_set_new(o, "longitude",
                                      json_real(json_number_value(json_object_get(loc, "longitude")))) ||
                  (json_is_number(alt) &&
                   json_object_set_new(o, "altitude", json_real(json_number_value(alt)))) ||
                  set_str(o, "relevantText", rec_str(loc, "relevant_text"));
        if (bad || !out) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *beacons_json(json_t *list)
{
    json_t *out = json_array(), *b;
    size_t i;
    json_array_foreach(list, i, b) {
        json_t *major = json_object_get(b, "major"), *minor = json_object_get(b, "minor");
        json_t *o = json_object();
        int bad = !o || json_array_append_new(out, o) != 0 ||
                  set_str(o, "proximityUUID", rec_str(b, "proximity_uuid")) ||
                  (json_is_integer(major) &&
                   json_object_set_new(o, "major", json_integer(json_integer_value(major)))) ||
                  (json_is_integer(minor) &&
                   json_object_set_new(o, "minor", json_integer(json_integer_value(minor)))) ||
                  set_str(o, "relevantText", rec_str(b, "relevant_text"));
        if (bad || !out) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* "VOIDED" etc. for the status back field; NULL for an active pass. */
static const char *status_word(const char *action)
{
    if (!action)
        return NULL;
    if (strcmp(action, "VOID") == 0)
        return "VOIDED";
    if (strcmp(action, "EXPIRE") == 0)
        return "EXPIRED";
    if (strcmp(action, "REDEEM") == 0)
        return "REDEEMED";
    return NULL;
}

static json_t *back_field(const char *key, const char *label, const char *value)
{
    return json_pack("{s:s, s:s, s:s}", "key", key, "label", label, "value", value);
}

/*
 * Apple's changeMessage is a format string that "must contain the escape
 * %@" (replaced by the field's new value).  The holder's text is taken
 * literally: a '%' not starting "%@" is doubled, and text without "%@"
 * gets " %@" appended ("Match postponed" shows "Match postponed VOIDED").
 */
static json_t *change_message(const char *text, pm_buf *buf)
{
    pm_buf_reset(buf);
    bool has_escape = false;
    int rc = 0;
    for (const char *p = text; *p && rc == 0; p++) {
        if (p[0] == '%' && p[1] == '@') {
            has_escape = true;
            rc = pm_buf_append(buf, "%@", 2);
            p++;
        } else {
            rc = pm_buf_append(buf, p, 1);
            if (rc == 0 && *p == '%')
                rc = pm_buf_append(buf, "%", 1);
        }
    }
    if (rc == 0 && !has_escape)
        rc = pm_buf_append(buf, " %@", 3);
    return rc == 0 ? json_stringn((const char *)buf->data, buf->len) : NULL;
}

/* The status field first on the back, unbound custom fields last. */
static int add_back_fields(render_ctx *rc, json_t *pass, const char *status)
{
    json_t *style = json_object_get(pass, "eventTicket");
    if (!json_is_object(style))
        return -1;
    json_t *back = json_object_get(style, "backFields");
    if (!back) {
        back = json_array();
        if (!back || json_object_set_new(style, "backFields", back) != 0)
            return -1;
    }
    if (status) {
        json_t *field = back_field("status", "STATUS", status);
        const char *message = rec_str(rc->record, "status_message");
        if (field && message && *message &&
            json_object_set_new(field, "changeMessage", change_message(message, rc->buf)) != 0) {
            json_decref(field);
            return -1;
        }
        if (json_array_insert_new(back, 0, field) != 0)
            return -1;
    }
    size_t i;
    json_t *cf;
    json_array_foreach(rc->custom, i, cf) {
        if (i < 64 && (rc->custom_bound & (UINT64_C(1) << i)))
            continue;
        const char *key = rec_str(cf, "key"), *label = rec_str(cf, "label"),
                   *value = rec_str(cf, "value");
        if (!key || !label || !value)
            continue; /* decode guarantees all three; never emit a half field */
        char fkey[80];
        snprintf(fkey, sizeof fkey, "custom_%s", key);
        if (json_array_append_new(back, back_field(fkey, label, value)) != 0)
            return -1;
    }
    return 0;
}

static int add_pass_keys(render_ctx *rc, json_t *pass, json_t *barcodes, int64_t now)
{
    json_t *rec = rc->record;
    const char *action = rec_str(rec, "action");
    const char *relevant = rec_str(rec, "relevant_date");
    if (!relevant)
        relevant = rec_str(json_object_get(rec, "event"), "start");
    char now_text[32];
    const char *expires = rec_str(rec, "expiration_date");
    /* An expired pass expires at its own expiration date when that is past
     * (passmill expire writes one into the record), else now. */
    int64_t at = 0;
    if (action && strcmp(action, "EXPIRE") == 0 &&
        !(expires && pm_rfc3339_parse(expires, &at) == 0 && at <= now)) {
        pm_rfc3339_format_utc(now, now_text);
        expires = now_text;
    }
    if (set_str(pass, "serialNumber", rec_str(rec, "serial_number")) != 0)
        return -1;
    const char *key;
    json_t *v;
    json_object_foreach(barcodes, key, v)
        if (json_object_set(pass, key, v) != 0)
            return -1;
    if (set_str(pass, "relevantDate", relevant) != 0 ||
        set_str(pass, "expirationDate", expires) != 0)
        return -1;
    if (action && (strcmp(action, "VOID") == 0 || strcmp(action, "REDEEM") == 0) &&
        json_object_set_new(pass, "voided", json_true()) != 0)
        return -1;
    json_t *locations = json_object_get(rec, "locations");
    if (json_array_size(locations) > 0 &&
        json_object_set_new(pass, "locations", locations_json(locations)) != 0)
        return -1;
    json_t *beacons = json_object_get(rec, "beacons");
    if (json_array_size(beacons) > 0 &&
        json_object_set_new(pass, "beacons", beacons_json(beacons)) != 0)
        return -1;
    /* The record's sharing_prohibited overrides the template's sharingProhibited. */
    json_t *sharing = json_object_get(rec, "sharing_prohibited");
    if (json_is_true(sharing) && json_object_set_new(pass, "sharingProhibited", json_true()) != 0)
        return -1;
    if (json_is_false(sharing))
        json_object_del(pass, "sharingProhibited");
    return add_back_fields(rc, pass, status_word(action));
}

int pm_pass_render(const pm_template *tmpl, json_t *record, json_t *barcodes, int64_t now,
                   pm_buf *scratch, json_t **out, pm_error *err)
{
    if (!json_is_object(record) || !tmpl || !json_is_object(tmpl->skeleton))
        return pm_error_set(err, PM_ERR_INTERNAL, "manifest: no record or template");
    json_t *first = json_array_get(json_object_get(barcodes, "barcodes"), 0);
    json_t *message = json_object_get(first ? first : json_object_get(barcodes, "barcode"),
                                      "message");
    /* No barcode (an inactive pass): ${barcode.message} must not show it either. */
    json_t *none = json_is_object(barcodes) && json_object_size(barcodes) == 0 ? json_string("") : NULL;
    render_ctx rc = {record, json_object_get(record, "custom_fields"),
                     json_is_string(message) ? message : none, 0, scratch, false};
    json_t *pass = render(&rc, tmpl->skeleton, R_ROOT, 0);
    int bad = !pass || add_pass_keys(&rc, pass, barcodes, now) != 0;
    json_decref(none);
    if (bad) {
        json_decref(pass);
        return pm_error_set(err, PM_ERR_NOMEM, "manifest: out of memory rendering pass.json "
                            "(template '%s')", tmpl->id);
    }
    *out = pass;
    return 0;
}

static int dump_to_buf(const char *data, size_t size, void *arg)
{
    return pm_buf_append(arg, data, size);
}

int pm_pass_dump(json_t *pass, pm_buf *out, pm_error *err)
{
    pm_buf_reset(out);
    /* Jansson keeps insertion order; the flags fix everything else. */
    if (json_dump_callback(pass, dump_to_buf, out,
                           JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "manifest: cannot serialize pass.json");
    return 0;
}

/* ---- manifest.json ---------------------------------------------------- */

static int append_entry(pm_buf *m, bool *first, const char *name, const char *hex)
{
    /* Template file names are [A-Za-z0-9._@+-/] (checked at load): no escaping. */
    int rc = pm_buf_printf(m, "%s\"%s\":\"%s\"", *first ? "" : ",", name, hex);
    *first = false;
    return rc;
}

/* The pass's files (the record's strip variant in place of the template's strip). */
static int write_manifest(const pm_template *t, const pm_template_strip *strip,
                          const char *pass_hex, pm_buf *m)
{
    const pm_template_file *stack[64], **files = stack;
    if (t->files_len + PM_STRIP_FILES > sizeof stack / sizeof *stack &&
        !(files = malloc((t->files_len + PM_STRIP_FILES) * sizeof *files)))
        return -1;
    size_t n = pm_template_pass_files(t, strip, files);
    bool first = true, pass_done = false;
    int rc = -1;
    pm_buf_reset(m);
    if (pm_buf_append_str(m, "{") != 0)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (!pass_done && strcmp("pass.json", files[i]->name) < 0) {
            if (append_entry(m, &first, "pass.json", pass_hex) != 0)
                goto done;
            pass_done = true;
        }
        if (append_entry(m, &first, files[i]->name, files[i]->sha1_hex) != 0)
            goto done;
    }
    if (!pass_done && append_entry(m, &first, "pass.json", pass_hex) != 0)
        goto done;
    rc = pm_buf_append_str(m, "}");
done:
    if (files != stack)
        free(files);
    return rc;
}

/* ---- the stage -------------------------------------------------------- */

typedef struct manifest_state {
    EVP_MD *sha1; /* fetched once, shared read-only */
    char *web_service_url;  /* service.url without a trailing '/'; NULL: none */
    bool http_url;          /* an http:// one (service.allow_http, development) */
} manifest_state;

/*
 * webServiceURL from service.url: https, or http with service.allow_http
 * (Wallet takes http only with the developer setting "Allow HTTP Services").
 */
static int web_service_url(const pm_config *cfg, manifest_state *st, pm_error *err)
{
    const char *u = cfg ? cfg->service_url : NULL;
    if (!u || !*u)
        return 0;
    st->http_url = strncmp(u, "http://", 7) == 0;
    if (strncmp(u, "https://", 8) != 0 && !(st->http_url && cfg->service_allow_http))
        return pm_error_set(err, PM_ERR_CONFIG, "service.url: expected an https:// URL (Wallet "
                            "requires https; http:// only with service.allow_http = true, for "
                            "development), got '%s'", u);
    size_t n = strlen(u);
    while (n > 8 && u[n - 1] == '/')
        n--;
    if (!(st->web_service_url = strndup(u, n)))
        return pm_error_set(err, PM_ERR_NOMEM, "manifest: out of memory");
    return 0;
}

typedef struct manifest_scratch {
    const manifest_state *st;
    EVP_MD_CTX *md;  /* reused for every pass.json hash */
    pm_buf str;      /* binding substitution */
    pm_verify_report report; /* verify's pass.json rules, per pass */
} manifest_scratch;

static int manifest_create(const pm_context *ctx, void **state, pm_error *err)
{
    manifest_state *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "manifest: out of memory");
    if (web_service_url(ctx ? ctx->config : NULL, st, err) != 0) {
        free(st);
        return -1;
    }
    st->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    if (!st->sha1) {
        free(st->web_service_url);
        free(st);
        pm_error_set(err, PM_ERR_CRYPTO, "manifest: cannot fetch SHA-1");
        pm_error_add_openssl(err);
        return -1;
    }
    *state = st;
    return 0;
}

static void manifest_destroy(void *state)
{
    manifest_state *st = state;
    if (!st)
        return;
    EVP_MD_free(st->sha1);
    free(st->web_service_url);
    free(st);
}

/* The web service keys (Apple: both or neither), when there is a URL and the
 * registry gave the pass its token (fingerprint.h). */
static int add_web_service(const manifest_state *st, const pm_job *job, json_t *pass)
{
    if (!st->web_service_url || !job->auth_token[0])
        return 0;
    return json_object_set_new(pass, "webServiceURL", json_string(st->web_service_url)) ||
           json_object_set_new(pass, "authenticationToken", json_string(job->auth_token));
}

static int manifest_worker_create(void *state, void **scratch, pm_error *err)
{
    manifest_scratch *sc = calloc(1, sizeof *sc);
    if (!sc || !(sc->md = EVP_MD_CTX_new())) {
        free(sc);
        return pm_error_set(err, PM_ERR_NOMEM, "manifest: out of memory");
    }
    sc->st = state;
    pm_buf_init(&sc->str);
    *scratch = sc;
    return 0;
}

static void manifest_worker_destroy(void *scratch)
{
    manifest_scratch *sc = scratch;
    if (!sc)
        return;
    EVP_MD_CTX_free(sc->md);
    pm_buf_free(&sc->str);
    free(sc);
}

static int sha1_hex(manifest_scratch *sc, const pm_buf *data, char hex[41], pm_error *err)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!EVP_DigestInit_ex(sc->md, sc->st->sha1, NULL) ||
        !EVP_DigestUpdate(sc->md, data->data, data->len) ||
        !EVP_DigestFinal_ex(sc->md, md, &len) || len != 20) {
        pm_error_set(err, PM_ERR_CRYPTO, "manifest: SHA-1 of pass.json failed");
        pm_error_add_openssl(err);
        return -1;
    }
    pm_hex_encode(md, len, hex);
    return 0;
}

/*
 * The record as rendered: job->record itself, or, when the template sets an
 * expiry and the record has none of its own (the record wins), a shallow
 * copy with the template's expiration_date.  The registry keeps the record
 * without it, so a changed template setting applies on reissue; the base
 * is the pass's first issue (job->issued_at), so a reissue keeps the date.
 */
static int with_template_expiry(pm_job *job, json_t **out)
{
    json_t *own = json_object_get(job->record, "expiration_date");
    char text[40];
    int has = 0;
    if (job->tmpl && (!own || json_is_null(own)))
        has = pm_template_expiry_at(&job->tmpl->expiry, job->issued_at ? job->issued_at : job->now,
                                    text, &job->err);
    if (has < 0)
        return -1;
    if (has == 0) {
        *out = json_incref(job->record);
        return 0;
    }
    json_t *copy = json_copy(job->record);
    if (!copy || json_object_set_new(copy, "expiration_date", json_string(text)) != 0) {
        json_decref(copy);
        return pm_error_set(&job->err, PM_ERR_NOMEM, "manifest: out of memory");
    }
    *out = copy;
    return 0;
}

static int manifest_process(void *state, void *scratch, pm_job *job)
{
    const manifest_state *st = state;
    manifest_scratch *sc = scratch;
    if (!sc)
        return pm_error_set(&job->err, PM_ERR_INTERNAL, "manifest: no worker scratch");
    json_t *pass = NULL, *record = NULL;
    if (with_template_expiry(job, &record) != 0)
        return -1;
    int rendered = pm_pass_render(job->tmpl, record, job->barcodes, job->now, &sc->str, &pass,
                                  &job->err);
    json_decref(record);
    if (rendered != 0)
        return -1;
    /* An http:// URL (development) is what verify's pass.webService rule
     * refuses for production: added after the check, so a dev pass is signed. */
    if (!st->http_url && add_web_service(st, job, pass) != 0) {
        json_decref(pass);
        return pm_error_set(&job->err, PM_ERR_NOMEM, "manifest: out of memory");
    }
    /* Never sign what `passmill verify` refuses (an empty date from the record, say). */
    if (pm_verify_pass_json(pass, &sc->report) != 0) {
        const pm_verify_issue *is = &sc->report.failures[0];
        json_decref(pass);
        return pm_reject(&job->err, "pass.verify", "",
                         "template '%s' and this record give a pass.json that passmill verify "
                         "refuses (rule %s): %s", job->tmpl->id, is->rule, is->message);
    }
    if (st->http_url && add_web_service(st, job, pass) != 0) {
        json_decref(pass);
        return pm_error_set(&job->err, PM_ERR_NOMEM, "manifest: out of memory");
    }
    int rc = pm_pass_dump(pass, &job->pass_json, &job->err);
    json_decref(pass);
    if (rc != 0)
        return -1;
    char hex[41];
    if (sha1_hex(sc, &job->pass_json, hex, &job->err) != 0)
        return -1;
    const pm_template_strip *strip = pm_template_find_strip(
        job->tmpl, json_string_value(json_object_get(job->record, "strip_image")));
    if (write_manifest(job->tmpl, strip, hex, &job->manifest_json) != 0)
        return pm_error_set(&job->err, PM_ERR_NOMEM, "manifest: out of memory");
    return 0;
}

const pm_stage pm_stage_manifest = {
    .name = "manifest",
    .create = manifest_create,
    .destroy = manifest_destroy,
    .worker_create = manifest_worker_create,
    .worker_destroy = manifest_worker_destroy,
    .process = manifest_process,
};

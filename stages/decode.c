/*
 * decode.c - stage 0: raw bytes -> normalized record (see decode.h).
 *
 * JSON goes through jansson then pm_schema_normalize(); Avro and
 * Confluent-framed Avro go through pm_schema_avro_decode(), which checks
 * every length against the bytes present, so hostile input cannot make it
 * allocate or read out of bounds.  The state (schema ids from
 * kafka.schema_ids) is built once by create() and only read afterwards;
 * the one mutable part is the cache of schemas fetched from the schema
 * registry, behind its own mutex.  No per-worker scratch.
 */
#include "stages/decode.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "record/schema.h"

typedef struct schema_id {
    uint32_t id;
    pm_schema_writer *writer; /* its schema, resolved against the compiled one; NULL: */
    char why[1200];           /* not accepted: why, for the reject message */
} schema_id;

/* A Confluent-compatible schema registry: GET {url}/schemas/ids/{id}. */
typedef struct registry {
    char *url;                /* without a trailing '/'; NULL: none */
    pthread_mutex_t mu;       /* guards the cache and serialises fetches */
    schema_id *cache;         /* ids fetched, accepted or not (ids never change) */
    size_t len, cap;
} registry;

typedef struct decode_state {
    schema_id *ids;
    size_t ids_len;
    registry reg;
} decode_state;

#define PM_REGISTRY_MAX ((size_t)16 << 20) /* bytes of one registry answer */
#define PM_REGISTRY_TIMEOUT_MS 10000L

/* ---- kafka.schema_ids ---- */

static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* The .avsc at path as a writer schema; NULL with why when it cannot be
 * read or cannot be read as the compiled schema. */
static pm_schema_writer *schema_file_writer(const char *path, char *why, size_t whylen)
{
    pm_buf b = PM_BUF_INIT;
    if (pm_buf_read_file(&b, path) != 0) {
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
        pm_buf_free(&b);
        return NULL;
    }
    pm_schema_writer *w = NULL;
    pm_error err;
    if (pm_schema_writer_create((const char *)b.data, b.len, NULL, &w, &err) != 0)
        snprintf(why, whylen, "%.*s: %s", (int)pm_utf8_cut(path, strlen(path), 600), path,
                 err.message);
    pm_buf_free(&b);
    return w;
}

static int parse_schema_ids(decode_state *st, const char *spec, bool strict, pm_error *err)
{
    const char *p = spec ? spec : "";
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *s = p, *e = end;
        trim(&s, &e);
        p = *end ? end + 1 : end;
        if (s == e)
            continue;
        const char *colon = memchr(s, ':', (size_t)(e - s));
        char idtext[16], path[1024];
        if (!colon || colon == s || (size_t)(colon - s) >= sizeof idtext ||
            (size_t)(e - colon - 1) >= sizeof path || colon + 1 == e)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "kafka.schema_ids: expected id:path.avsc[,id:path...], found '%.*s'",
                                (int)(e - s), s);
        memcpy(idtext, s, (size_t)(colon - s));
        idtext[colon - s] = '\0';
        memcpy(path, colon + 1, (size_t)(e - colon - 1));
        path[e - colon - 1] = '\0';
        char *idend;
        errno = 0;
        unsigned long long id = strtoull(idtext, &idend, 10);
        if (*idend || errno || id > INT32_MAX || !isdigit((unsigned char)idtext[0]))
            return pm_error_set(err, PM_ERR_CONFIG,
                                "kafka.schema_ids: schema id '%s' is not a number 0..%d",
                                idtext, INT32_MAX);
        schema_id *ids = realloc(st->ids, (st->ids_len + 1) * sizeof *ids);
        if (!ids)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        st->ids = ids;
        schema_id *x = &st->ids[st->ids_len++];
        x->id = (uint32_t)id;
        x->why[0] = '\0';
        x->writer = schema_file_writer(path, x->why, sizeof x->why);
        if (!x->writer && strict)
            return pm_error_set(err, PM_ERR_CONFIG, "kafka.schema_ids: id %u: %s", x->id, x->why);
    }
    return 0;
}

/* ---- the schema registry ---- */

static size_t registry_write(char *data, size_t size, size_t n, void *arg)
{
    pm_buf *b = arg;
    if (b->len + size * n > PM_REGISTRY_MAX || pm_buf_append(b, data, size * n) != 0)
        return 0; /* curl then fails the transfer */
    return size * n;
}

/*
 * Fetch id into x (writer, or why it is not accepted): 0, or -1 with err
 * when the registry could not be asked (then nothing is cached and the
 * record fails, to be retried, rather than being rejected).  Neither the
 * URL nor curl's error text (which names the host) is quoted: the URL may
 * carry credentials.
 */
static int registry_fetch(const registry *reg, uint32_t id, schema_id *x, pm_error *err)
{
    char url[2048];
    if ((size_t)snprintf(url, sizeof url, "%s/schemas/ids/%u", reg->url, id) >= sizeof url)
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.schema_registry_url is too long");
    CURL *c = curl_easy_init();
    if (!c)
        return pm_error_set(err, PM_ERR_NOMEM, "schema registry: cannot start curl");
    pm_buf body = PM_BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, PM_REGISTRY_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, registry_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    int ret = 0;
    x->id = id;
    x->writer = NULL;
    x->why[0] = '\0';
    if (rc != CURLE_OK) {
        ret = pm_error_set(err, PM_ERR_IO, "schema registry (kafka.schema_registry_url): "
                           "schema id %u: %s", id, curl_easy_strerror(rc));
    } else if (status == 404) {
        snprintf(x->why, sizeof x->why, "the schema registry has no schema id %u", id);
    } else if (status != 200) {
        ret = pm_error_set(err, PM_ERR_IO, "schema registry (kafka.schema_registry_url): "
                           "schema id %u: HTTP status %ld", id, status);
    } else {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)body.data, body.len, 0, &jerr);
        const char *type = json_string_value(json_object_get(j, "schemaType"));
        json_t *text = json_object_get(j, "schema");
        pm_error werr;
        if (!json_is_string(text))
            snprintf(x->why, sizeof x->why, "the schema registry's answer for id %u has no "
                     "\"schema\" string", id);
        else if (type && strcmp(type, "AVRO") != 0)
            snprintf(x->why, sizeof x->why, "schema id %u is a %.32s schema, not Avro", id, type);
        else if (pm_schema_writer_create(json_string_value(text), json_string_length(text), NULL,
                                         &x->writer, &werr) != 0)
            snprintf(x->why, sizeof x->why, "schema id %u from the schema registry: %s", id,
                     werr.message);
        json_decref(j);
    }
    pm_buf_free(&body);
    return ret;
}

/* The writer schema of id from the registry (cached); NULL with why. */
static int registry_lookup(registry *reg, uint32_t id, const pm_schema_writer **w,
                           char *why, size_t whylen, pm_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&reg->mu);
    size_t i = 0;
    while (i < reg->len && reg->cache[i].id != id)
        i++;
    if (i == reg->len) {
        schema_id x;
        if (reg->len == reg->cap) {
            size_t cap = reg->cap ? reg->cap * 2 : 8;
            schema_id *v = realloc(reg->cache, cap * sizeof *v);
            if (!v) {
                pthread_mutex_unlock(&reg->mu);
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            }
            reg->cache = v;
            reg->cap = cap;
        }
        rc = registry_fetch(reg, id, &x, err);
        if (rc == 0)
            reg->cache[reg->len++] = x;
    }
    if (rc == 0) {
        *w = reg->cache[i].writer;
        snprintf(why, whylen, "%s", reg->cache[i].why);
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static void decode_destroy(void *state)
{
    decode_state *st = state;
    if (st) {
        for (size_t i = 0; i < st->ids_len; i++)
            pm_schema_writer_destroy(st->ids[i].writer);
        free(st->ids);
        if (st->reg.url) {
            for (size_t i = 0; i < st->reg.len; i++)
                pm_schema_writer_destroy(st->reg.cache[i].writer);
            free(st->reg.cache);
            free(st->reg.url);
            pthread_mutex_destroy(&st->reg.mu);
            curl_global_cleanup();
        }
        free(st);
    }
}

static int decode_create(const pm_context *ctx, void **state, pm_error *err)
{
    if (pm_schema_init(err) != 0)
        return -1;
    decode_state *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    const pm_config *cfg = ctx ? ctx->config : NULL;
    bool strict = cfg && cfg->input_type && strcmp(cfg->input_type, "kafka") == 0 &&
                  cfg->kafka_value_format && strcmp(cfg->kafka_value_format, "avro") == 0;
    if (cfg && parse_schema_ids(st, cfg->kafka_schema_ids, strict, err) != 0) {
        decode_destroy(st);
        return -1;
    }
    const char *url = cfg ? cfg->kafka_schema_registry_url : NULL;
    if (url && *url) {
        if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
            decode_destroy(st);
            return pm_error_set(err, PM_ERR_CONFIG,
                                "kafka.schema_registry_url must start with http:// or https://");
        }
        /* before any worker thread: curl_global_init is not thread-safe */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            decode_destroy(st);
            return pm_error_set(err, PM_ERR_INTERNAL, "curl_global_init failed");
        }
        size_t n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            n--;
        st->reg.url = strndup(url, n);
        pthread_mutex_init(&st->reg.mu, NULL);
        if (!st->reg.url) {
            curl_global_cleanup();
            pthread_mutex_destroy(&st->reg.mu);
            decode_destroy(st);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
    }
    *state = st;
    return 0;
}

/* ---- decoding ---- */

/*
 * The path of the key being read when the parser stopped at byte pos:
 * "event.start", "locations[2].latitude", or "" when no key was being read
 * (the record as a whole, or a key itself).  A light scan of the bytes
 * before pos: strings are skipped whole, so a brace inside one is no
 * brace; keys are kept as written (escapes not decoded).
 */
static void json_error_path(const unsigned char *p, size_t pos, char *out, size_t outlen)
{
    enum { MAXD = 32 };
    typedef struct frame {
        bool obj, have_key;
        size_t key_at, key_len, index;
    } frame;
    frame st[MAXD];
    int depth = 0; /* frames beyond MAXD are counted, not kept */
    bool want_key = false;
    for (size_t i = 0; i < pos; i++) {
        unsigned char c = p[i];
        if (c == '"') {
            size_t start = ++i;
            while (i < pos && p[i] != '"')
                i += p[i] == '\\' ? 2 : 1;
            if (i >= pos)
                break; /* stopped inside this string */
            if (want_key && depth > 0 && depth <= MAXD) {
                st[depth - 1].key_at = start;
                st[depth - 1].key_len = i - start;
                st[depth - 1].have_key = true;
            } else if (depth > 0 && depth <= MAXD && st[depth - 1].obj && i + 1 < pos) {
                /* its value is read (jansson stops just after a string
                 * it refuses: that one is still being read) */
                st[depth - 1].have_key = false;
            }
            want_key = false;
        } else if (c == '{' || c == '[') {
            if (depth < MAXD)
                st[depth] = (frame){c == '{', false, 0, 0, 0};
            depth++;
            want_key = c == '{';
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
            want_key = false;
            if (depth > 0 && depth <= MAXD && st[depth - 1].obj)
                st[depth - 1].have_key = false; /* its value is read */
        } else if (c == ',' && depth > 0 && depth <= MAXD) {
            if (st[depth - 1].obj) {
                st[depth - 1].have_key = false;
                want_key = true;
            } else {
                st[depth - 1].index++;
            }
        }
    }
    size_t len = 0;
    out[0] = '\0';
    for (int d = 0; d < depth && d < MAXD && len + 1 < outlen; d++) {
        int n;
        if (st[d].obj && !st[d].have_key)
            break;
        if (st[d].obj)
            n = snprintf(out + len, outlen - len, "%s%.*s", len ? "." : "",
                         (int)st[d].key_len, (const char *)p + st[d].key_at);
        else
            n = snprintf(out + len, outlen - len, "[%zu]", st[d].index);
        if (n < 0)
            break;
        len += (size_t)n < outlen - len ? (size_t)n : outlen - len - 1;
    }
}

/*
 * A partial request: a change of a pass the registry holds, by serial, with
 * only what changes (a lifecycle action alone, or an UPDATE of some fields).
 * It is one of UPDATE, VOID, EXPIRE, REDEEM, ACTIVATE lacking at least one
 * field a full request requires; a full request decodes as always.
 */
static bool is_patch(json_t *in)
{
    static const char *const actions[] = {"UPDATE", "VOID", "EXPIRE", "REDEEM", "ACTIVATE"};
    static const char *const required[] = {"template_id", "event", "attendee", "barcode"};
    const char *action = json_string_value(json_object_get(in, "action"));
    bool changes = false;
    for (size_t i = 0; action && i < sizeof actions / sizeof actions[0]; i++)
        changes |= strcmp(action, actions[i]) == 0;
    if (!changes)
        return false;
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!json_object_get(in, required[i]))
            return true;
    return false;
}

/* JSON input: a normalized record into *out, or a partial request into *patch. */
static int decode_json(const pm_buf *raw, json_t **out, json_t **patch, pm_error *err)
{
    json_error_t jerr;
    /* jansson checks UTF-8, refuses \u0000 and (with the flag) duplicates. */
    json_t *in = json_loadb((const char *)raw->data, raw->len, JSON_REJECT_DUPLICATES, &jerr);
    /* Byte 0 never starts JSON but always starts a Confluent frame: say which setting is wrong. */
    if (!in && raw->len >= 5 && raw->data[0] == 0)
        return pm_reject(err, "json.syntax", "", "invalid JSON: the value starts with byte 0x00 "
                         "and a 4-byte schema id (%lu), so it looks like Confluent-framed Avro; "
                         "with Avro values set kafka.value_format = avro",
                         (unsigned long)raw->data[1] << 24 | (unsigned long)raw->data[2] << 16 |
                         (unsigned long)raw->data[3] << 8 | raw->data[4]);
    if (!in) {
        /* The column is in characters, within the line; the field is the
         * key being read, when one was (pm_reject cuts it whole). */
        char path[sizeof err->field];
        size_t pos = jerr.position > 0 ? (size_t)jerr.position : 0;
        json_error_path(raw->data, pos < raw->len ? pos : raw->len, path, sizeof path);
        return pm_reject(err, "json.syntax", path, "invalid JSON at column %d%s%s: %s",
                         jerr.column, path[0] ? ", reading " : "", path, jerr.text);
    }
    if (json_is_object(in) && is_patch(in)) {
        if (!json_is_string(json_object_get(in, "serial_number"))) {
            json_decref(in);
            return pm_reject(err, "schema.missing", "serial_number",
                             "a change by serial needs the string field 'serial_number'");
        }
        *patch = in; /* merged onto the registry's record by the merge stage */
        return 0;
    }
    int rc = pm_schema_normalize(in, out, err);
    json_decref(in);
    return rc;
}

static int decode_avro(const pm_schema_writer *writer, const unsigned char *data, size_t len,
                       json_t **out, pm_error *err)
{
    size_t used;
    if (pm_schema_writer_decode(writer, data, len, &used, out, err) != 0)
        return -1;
    if (used != len) {
        json_decref(*out);
        *out = NULL;
        return pm_reject(err, "avro.decode", "",
                         "%zu trailing bytes after the %zu-byte datum", len - used, used);
    }
    return 0;
}

static int decode_confluent(decode_state *st, const pm_buf *raw, json_t **out,
                            pm_error *err)
{
    if (raw->len < 5 || raw->data[0] != 0)
        return pm_reject(err, "avro.magic", "",
                         "expected Confluent framing (byte 0, 4-byte schema id), found %s",
                         raw->len < 5 ? "fewer than 5 bytes" : "a first byte that is not 0");
    uint32_t id = (uint32_t)raw->data[1] << 24 | (uint32_t)raw->data[2] << 16 |
                  (uint32_t)raw->data[3] << 8 | raw->data[4];
    for (size_t i = 0; i < st->ids_len; i++) {
        if (st->ids[i].id != id)
            continue;
        if (!st->ids[i].writer)
            return pm_reject(err, "avro.schema_id", "", "schema id %u is not accepted: %s", id,
                             st->ids[i].why);
        return decode_avro(st->ids[i].writer, raw->data + 5, raw->len - 5, out, err);
    }
    if (!st->reg.url)
        return pm_reject(err, "avro.schema_id", "",
                         "schema id %u is not one of kafka.schema_ids", id);
    const pm_schema_writer *w = NULL;
    char why[1200];
    if (registry_lookup(&st->reg, id, &w, why, sizeof why, err) != 0)
        return -1;
    if (!w)
        return pm_reject(err, "avro.schema_id", "", "schema id %u is not accepted: %s", id, why);
    return decode_avro(w, raw->data + 5, raw->len - 5, out, err);
}

static int decode_process(void *state, void *scratch, pm_job *job)
{
    (void)scratch;
    decode_state *st = state;
    pm_error *err = &job->err;
    json_t *rec = NULL;
    int rc;

    json_decref(job->record);
    json_decref(job->patch);
    job->record = job->patch = NULL;
    job->serial = NULL;
    if (job->raw.len > PM_RECORD_MAX)
        return pm_reject(err, "record.too_large", "",
                         "expected at most %zu bytes, found %zu", PM_RECORD_MAX, job->raw.len);
    switch (job->format) {
    case PM_INPUT_JSON:
        rc = decode_json(&job->raw, &rec, &job->patch, err);
        if (rc == 0 && job->patch) {
            job->serial = json_string_value(json_object_get(job->patch, "serial_number"));
            return 0;
        }
        break;
    case PM_INPUT_AVRO:
        rc = decode_avro(job->writer, job->raw.data, job->raw.len, &rec, err);
        break;
    case PM_INPUT_CONFLUENT:
        rc = decode_confluent(st, &job->raw, &rec, err);
        break;
    default:
        return pm_error_set(err, PM_ERR_INTERNAL, "unknown input format %d", (int)job->format);
    }
    if (rc != 0)
        return -1;
    const char *serial = pm_record_str(rec, "serial_number");
    if (!serial) {
        json_decref(rec);
        return pm_error_set(err, PM_ERR_INTERNAL, "the schema has no string serial_number");
    }
    job->record = rec;
    job->serial = serial;
    return 0;
}

const pm_stage pm_stage_decode = {
    .name = "decode",
    .create = decode_create,
    .destroy = decode_destroy,
    .worker_create = NULL,
    .worker_destroy = NULL,
    .process = decode_process,
};

/* ---- record lookups ---- */

json_t *pm_record_get(json_t *record, const char *path)
{
    json_t *cur = record;
    const char *p = path;
    if (!cur || !p)
        return NULL;
    while (*p && cur) {
        size_t len = strcspn(p, ".[");
        if (len == 0 && *p != '[')
            return NULL; /* empty segment: "a..b", ".a" */
        if (len) {
            char key[128];
            if (len >= sizeof key || !json_is_object(cur))
                return NULL;
            memcpy(key, p, len);
            key[len] = '\0';
            cur = json_object_get(cur, key);
            p += len;
        }
        while (*p == '[' && cur) {
            char *end;
            if (!isdigit((unsigned char)p[1]))
                return NULL;
            unsigned long i = strtoul(p + 1, &end, 10);
            if (*end != ']' || !json_is_array(cur))
                return NULL;
            cur = json_array_get(cur, i);
            p = end + 1;
        }
        if (*p == '.')
            p++;
        else if (*p)
            return NULL;
    }
    return cur;
}

const char *pm_record_str(json_t *record, const char *path)
{
    return json_string_value(pm_record_get(record, path));
}

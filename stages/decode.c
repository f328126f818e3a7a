/*
 * decode.c - stage 0: raw bytes -> normalized record (see decode.h).
 *
 * JSON goes through jansson then pm_schema_normalize(); Avro and
 * Confluent-framed Avro go through pm_schema_avro_decode(), which checks
 * every length against the bytes present, so hostile input cannot make it
 * allocate or read out of bounds.  The state (accepted schema ids) is built
 * once by create() and only read afterwards; no per-worker scratch.
 */
#include "stages/decode.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record/schema.h"

typedef struct schema_id {
    uint32_t id;
    bool accepted;        /* its file is the compiled schema */
    char why[1200];       /* when not accepted: why, for the reject message */
} schema_id;

typedef struct decode_state {
    schema_id *ids;
    size_t ids_len;
} decode_state;

/* ---- kafka.schema_ids ---- */

static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Whether the .avsc at path is the compiled schema; why says otherwise. */
static bool schema_file_matches(const char *path, char *why, size_t whylen)
{
    pm_buf b = PM_BUF_INIT;
    if (pm_buf_read_file(&b, path) != 0) {
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
        pm_buf_free(&b);
        return false;
    }
    avro_schema_t s;
    bool ok = false;
    if (avro_schema_from_json_length((const char *)b.data, b.len, &s) != 0) {
        snprintf(why, whylen, "%s is not a valid Avro schema: %s", path, avro_strerror());
    } else {
        ok = avro_schema_equal(s, pm_schema_pass_request()) != 0;
        if (!ok)
            snprintf(why, whylen, "%s is not the compiled schema schemas/pass_request.avsc "
                     "(schema evolution is not supported)", path);
        avro_schema_decref(s);
    }
    pm_buf_free(&b);
    return ok;
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
        x->accepted = schema_file_matches(path, x->why, sizeof x->why);
        if (!x->accepted && strict)
            return pm_error_set(err, PM_ERR_CONFIG, "kafka.schema_ids: id %u: %s", x->id, x->why);
    }
    return 0;
}

static void decode_destroy(void *state)
{
    decode_state *st = state;
    if (st) {
        free(st->ids);
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
    *state = st;
    return 0;
}

/* ---- decoding ---- */

static int decode_json(const pm_buf *raw, json_t **out, pm_error *err)
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
    if (!in)
        return pm_reject(err, "json.syntax", "", "invalid JSON at line %d column %d: %s",
                         jerr.line, jerr.column, jerr.text);
    int rc = pm_schema_normalize(in, out, err);
    json_decref(in);
    return rc;
}

static int decode_avro(const unsigned char *data, size_t len, json_t **out, pm_error *err)
{
    size_t used;
    if (pm_schema_avro_decode(data, len, &used, out, err) != 0)
        return -1;
    if (used != len) {
        json_decref(*out);
        *out = NULL;
        return pm_reject(err, "avro.decode", "",
                         "%zu trailing bytes after the %zu-byte datum", len - used, used);
    }
    return 0;
}

static int decode_confluent(const decode_state *st, const pm_buf *raw, json_t **out,
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
        if (!st->ids[i].accepted)
            return pm_reject(err, "avro.schema_id", "", "schema id %u is not accepted: %s", id,
                             st->ids[i].why);
        return decode_avro(raw->data + 5, raw->len - 5, out, err);
    }
    return pm_reject(err, "avro.schema_id", "",
                     "schema id %u is not one of kafka.schema_ids", id);
}

static int decode_process(void *state, void *scratch, pm_job *job)
{
    (void)scratch;
    const decode_state *st = state;
    pm_error *err = &job->err;
    json_t *rec = NULL;
    int rc;

    json_decref(job->record);
    job->record = NULL;
    job->serial = NULL;
    if (job->raw.len > PM_RECORD_MAX)
        return pm_reject(err, "record.too_large", "",
                         "expected at most %zu bytes, found %zu", PM_RECORD_MAX, job->raw.len);
    switch (job->format) {
    case PM_INPUT_JSON:
        rc = decode_json(&job->raw, &rec, err);
        break;
    case PM_INPUT_AVRO:
        rc = decode_avro(job->raw.data, job->raw.len, &rec, err);
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

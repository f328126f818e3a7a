/*
 * source_registry.c - the registry as a source (see source_registry.h).
 */
#include "sources/source_registry.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rfc3339.h"
#include "wallet/identity.h"
#include "wallet/template.h"

/* Rows per registry query: large enough that the query costs little per
 * row, small enough that a page of records stays a few hundred kB. */
#define PAGE_ROWS 512

typedef struct entry {
    char *serial;
    char status[16];  /* before this run; "" = not in the registry */
    char *raw;        /* the partial request handed out */
} entry;

typedef struct registry_source {
    pm_source base;
    pm_registry_reader *rd;
    pm_registry_hasher *hasher;    /* reissue: hashes of the rows scanned */
    pm_source_registry_opts o;
    const uint8_t *signer_sha256;
    uint64_t total;
    atomic_uint_fast64_t skipped;  /* reissue: unchanged rows not handed out */
    atomic_uint_fast64_t done;     /* rows consumed: handed out or skipped */
    atomic_bool stop;
    entry page[PAGE_ROWS];
    size_t n, at;
    char *after;                   /* the last serial scanned ("" before the first) */
    bool end;
    size_t next_serial;            /* serial list: the next index */
    int64_t handed;
    entry last;                    /* what the last next() handed out */
    char now_text[32];
    pm_error fill_err;
} registry_source;

static const uint8_t no_signer[32];

const char *pm_lifecycle_status(const char *action)
{
    if (!action)
        return NULL;
    if (strcmp(action, "VOID") == 0)
        return "voided";
    if (strcmp(action, "EXPIRE") == 0)
        return "expired";
    if (strcmp(action, "REDEEM") == 0)
        return "redeemed";
    if (strcmp(action, "ACTIVATE") == 0)
        return "active";
    return NULL;
}

static void entry_clear(entry *e)
{
    free(e->serial);
    free(e->raw);
    memset(e, 0, sizeof *e);
}

static void page_clear(registry_source *s)
{
    for (size_t i = 0; i < s->n; i++)
        entry_clear(&s->page[i]);
    s->n = s->at = 0;
}

/* The action a stored canonical record starts with ({"action":"VOID",...}). */
static bool stored_action(const char *record, char *out, size_t cap)
{
    static const char key[] = "{\"action\":\"";
    if (!record || strncmp(record, key, sizeof key - 1) != 0)
        return false;
    const char *a = record + sizeof key - 1, *end = strchr(a, '"');
    if (!end || (size_t)(end - a) >= cap)
        return false;
    memcpy(out, a, (size_t)(end - a));
    out[end - a] = '\0';
    return true;
}

/*
 * The partial request for one pass.  record (the stored canonical text)
 * may be NULL for a serial the registry lacks: merge then rejects it
 * (serial.unknown), which is the outcome that record deserves.
 */
static char *make_request(registry_source *s, const char *serial, const char *record)
{
    json_t *req = json_pack("{s:s}", "serial_number", serial);
    if (!req)
        return NULL;
    int bad = 0;
    if (!s->o.action) {
        char action[16] = "UPDATE";
        /* An ISSUE again would be refused (serial.exists): the same content
         * as an UPDATE; any other action keeps the pass's status. */
        if (stored_action(record, action, sizeof action) && strcmp(action, "ISSUE") == 0)
            snprintf(action, sizeof action, "UPDATE");
        bad = json_object_set_new(req, "action", json_string(action));
    } else {
        bad = json_object_set_new(req, "action", json_string(s->o.action)) ||
              json_object_set_new(req, "status_message",
                                  s->o.message ? json_string(s->o.message) : json_null());
        bool expire = strcmp(s->o.action, "EXPIRE") == 0,
             activate = strcmp(s->o.action, "ACTIVATE") == 0;
        if (!bad && record && (expire || activate)) {
            /* An expired pass keeps the date it expired at (so a second
             * expire is unchanged); activating clears a date in the past. */
            json_t *rec = json_loads(record, 0, NULL);
            const char *exp = json_string_value(json_object_get(rec, "expiration_date"));
            int64_t at = 0;
            bool past = exp && pm_rfc3339_parse(exp, &at) == 0 && at <= s->o.now;
            if (expire && !past)
                bad = json_object_set_new(req, "expiration_date", json_string(s->now_text));
            else if (activate && past)
                bad = json_object_set_new(req, "expiration_date", json_null());
            json_decref(rec);
        }
    }
    char *text = bad ? NULL : json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

static int add_entry(registry_source *s, const char *serial, const char *status, const char *record)
{
    entry *e = &s->page[s->n];
    e->serial = strdup(serial);
    snprintf(e->status, sizeof e->status, "%s", status ? status : "");
    e->raw = make_request(s, serial, record);
    if (!e->serial || !e->raw) {
        entry_clear(e);
        return pm_error_set(&s->fill_err, PM_ERR_NOMEM, "out of memory selecting %s", serial);
    }
    s->n++;
    return 0;
}

/* A reissue skips a row whose pass would come out the same. */
static bool unchanged_row(registry_source *s, const pm_registry_row *row)
{
    const pm_template *t = pm_template_set_find(s->o.ctx->templates, row->template_id);
    if (!t || !row->record || !row->content_hash)
        return false; /* the stages say why (an unknown template is a reject) */
    char hash[65];
    pm_error err;
    if (pm_registry_hasher_content_hash_text(s->hasher, row->record, strlen(row->record),
                                             row->status, t->version, s->signer_sha256, hash,
                                             &err) != 0)
        return false;
    return strcmp(hash, row->content_hash) == 0;
}

static int on_row(void *arg, const pm_registry_row *row)
{
    registry_source *s = arg;
    char *after = strdup(row->serial);
    if (!after)
        return pm_error_set(&s->fill_err, PM_ERR_NOMEM, "out of memory");
    free(s->after);
    s->after = after;
    if (!s->o.action && unchanged_row(s, row)) {
        atomic_fetch_add(&s->skipped, 1);
        atomic_fetch_add(&s->done, 1);
        return 0;
    }
    return add_entry(s, row->serial, row->status, row->record);
}

/* The next page; s->n == 0 at the end.  A page of reissue rows that were
 * all unchanged is skipped whole and the scan goes on. */
static int fill(registry_source *s, pm_error *err)
{
    page_clear(s);
    pm_error_clear(&s->fill_err);
    if (s->o.n_serials) {
        bool with_record = s->o.action && (strcmp(s->o.action, "EXPIRE") == 0 ||
                                           strcmp(s->o.action, "ACTIVATE") == 0);
        while (s->n < PAGE_ROWS && s->next_serial < s->o.n_serials) {
            const char *serial = s->o.serials[s->next_serial++];
            pm_registry_pass p;
            int found = pm_registry_lookup(s->rd, serial, with_record, &p, err);
            if (found < 0)
                return -1;
            char *record = found && p.record ? json_dumps(p.record, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
            json_decref(p.record);
            int rc = add_entry(s, serial, found ? p.status : "", record);
            free(record);
            if (rc != 0) {
                *err = s->fill_err;
                return -1;
            }
        }
        return 0;
    }
    while (s->n == 0 && !s->end && !atomic_load(&s->stop)) {
        int got = s->rd->ops->scan(s->rd, &s->o.sel, s->after ? s->after : "", PAGE_ROWS, on_row, s, err);
        if (got < 0)
            return -1;
        if (s->fill_err.code != PM_OK) {
            *err = s->fill_err;
            return -1;
        }
        s->end = got < PAGE_ROWS;
    }
    return 0;
}

static int reg_next(pm_source *base, pm_job *job, pm_error *err)
{
    registry_source *s = (registry_source *)base;
    if (atomic_load(&s->stop))
        return 0;
    if (s->at == s->n && fill(s, err) != 0)
        return -1;
    if (s->at == s->n)
        return 0;
    entry_clear(&s->last);
    s->last = s->page[s->at];
    memset(&s->page[s->at], 0, sizeof s->page[s->at]);
    s->at++;
    job->format = PM_INPUT_JSON;
    pm_buf_reset(&job->raw);
    if (pm_buf_append(&job->raw, s->last.raw, strlen(s->last.raw)) != 0)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    snprintf(job->origin.source, sizeof job->origin.source, "registry");
    job->origin.partition = -1;
    job->origin.offset = ++s->handed;
    atomic_fetch_add(&s->done, 1);
    return 1;
}

static void reg_position(pm_source *base, uint64_t *done, uint64_t *total)
{
    registry_source *s = (registry_source *)base;
    *done = atomic_load(&s->done);
    *total = s->total;
}

static void reg_stop(pm_source *base)
{
    atomic_store(&((registry_source *)base)->stop, true);
}

static void reg_close(pm_source *base)
{
    registry_source *s = (registry_source *)base;
    if (!s)
        return;
    page_clear(s);
    entry_clear(&s->last);
    pm_registry_reader_close(s->rd);
    pm_registry_hasher_destroy(s->hasher);
    free(s->after);
    free(s);
}

static const pm_source_ops registry_source_ops = {
    .name = "registry",
    .next = reg_next,
    .position = reg_position,
    .stop = reg_stop,
    .close = reg_close,
};

int pm_source_registry_open(pm_registry *r, const pm_source_registry_opts *opts, pm_source **out,
                            pm_error *err)
{
    *out = NULL;
    if (opts->action && !pm_lifecycle_status(opts->action))
        return pm_error_set(err, PM_ERR_INTERNAL, "registry source: unknown action '%s'", opts->action);
    if (!opts->action && !opts->ctx)
        return pm_error_set(err, PM_ERR_INTERNAL, "registry source: a reissue needs the context");
    registry_source *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->base.ops = &registry_source_ops;
    s->o = *opts;
    s->signer_sha256 = opts->ctx && opts->ctx->identity ? opts->ctx->pass_settings_sha256 : no_signer;
    atomic_init(&s->skipped, 0);
    atomic_init(&s->done, 0);
    atomic_init(&s->stop, false);
    pm_rfc3339_format_utc(opts->now, s->now_text);
    if (r->ops->reader_open(r, &s->rd, err) != 0 ||
        (!opts->action && pm_registry_hasher_create(&s->hasher, err) != 0)) {
        reg_close(&s->base);
        return -1;
    }
    if (opts->n_serials)
        s->total = opts->n_serials;
    else if (s->rd->ops->count(s->rd, &opts->sel, &s->total, err) != 0) {
        reg_close(&s->base);
        return -1;
    }
    *out = &s->base;
    return 0;
}

uint64_t pm_source_registry_total(pm_source *s)
{
    return ((registry_source *)s)->total;
}

uint64_t pm_source_registry_skipped(pm_source *s)
{
    return atomic_load(&((registry_source *)s)->skipped);
}

void pm_source_registry_last(pm_source *base, const char **serial, const char **old_status)
{
    registry_source *s = (registry_source *)base;
    *serial = s->last.serial ? s->last.serial : "";
    *old_status = s->last.status;
}

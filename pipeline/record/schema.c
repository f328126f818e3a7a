/*
 * schema.c - the compiled-in pass request schema and record conversions.
 *
 * The .avsc text is parsed twice, once, at start-up:
 *   - by avro-c, for avro_schema_t users (container files, avro_value_t);
 *   - by jansson into a small node tree (pm_snode) that the conversions
 *     walk.  avro-c does not keep record field defaults, and its binary
 *     reader trusts length prefixes (it mallocs whatever a hostile prefix
 *     asks for), so decoding Avro bytes is done here, against the node
 *     tree, with every length, count and index checked before use.
 * Nothing here knows the field list: everything walks the schema.
 * Supported types: null, boolean, int, long, float, double, string, record,
 * enum, array, map, union and references to named types.  bytes and fixed
 * have no normalized JSON form and make pm_schema_init() fail.
 */
#include "record/schema.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum pm_stype {
    S_NULL, S_BOOLEAN, S_INT, S_LONG, S_FLOAT, S_DOUBLE, S_STRING,
    S_RECORD, S_ENUM, S_ARRAY, S_MAP, S_UNION
} pm_stype;

typedef struct pm_snode pm_snode;

typedef struct pm_sfield {
    char *name;
    pm_snode *type;
    json_t *def;          /* normalized default, NULL when required */
} pm_sfield;

struct pm_snode {
    pm_stype type;
    char *name;           /* full name of a named type, else NULL */
    size_t n;             /* fields, symbols or branches */
    pm_sfield *fields;    /* record */
    char **symbols;       /* enum */
    pm_snode **branches;  /* union */
    pm_snode *items;      /* array items, map values */
    size_t min_size;      /* fewest bytes one value takes in binary */
};

/* Nesting deeper than this is refused (the schema is not recursive, but a
 * schema with recursive named types would otherwise let input pick the
 * C stack depth). */
#define PM_MAX_DEPTH 32
/* Array/map elements that take no bytes (null) are capped per block. */
#define PM_MAX_EMPTY_ELEMS 65536

/* ---- process-wide, read-only after init ---- */

static pthread_once_t schema_once = PTHREAD_ONCE_INIT;
static pm_error schema_init_err;
static avro_schema_t schema_avro;
static pm_snode *schema_root;

/* Named types seen while building (only used during init). */
typedef struct named_list {
    pm_snode **v;
    size_t len, cap;
} named_list;

/* ---- field paths ---- */

typedef struct pm_path {
    char buf[128];
    size_t len;
} pm_path;

static void path_init(pm_path *p)
{
    p->buf[0] = '\0';
    p->len = 0;
}

/* Append ".name" (or "name" at the root), cut to fit; returns the old
 * length.  memcpy, not snprintf: this runs for every field of every record. */
static size_t path_push(pm_path *p, const char *name)
{
    size_t old = p->len, room = sizeof p->buf - 1 - p->len;
    if (p->len && room) {
        p->buf[p->len++] = '.';
        room--;
    }
    size_t n = strlen(name);
    if (n > room)
        n = room;
    memcpy(p->buf + p->len, name, n);
    p->len += n;
    p->buf[p->len] = '\0';
    return old;
}

static size_t path_index(pm_path *p, size_t i)
{
    size_t old = p->len;
    int n = snprintf(p->buf + p->len, sizeof p->buf - p->len, "[%zu]", i);
    if (n > 0)
        p->len += (size_t)n < sizeof p->buf - p->len ? (size_t)n : sizeof p->buf - 1 - p->len;
    return old;
}

static void path_pop(pm_path *p, size_t old)
{
    p->len = old;
    p->buf[old] = '\0';
}

/* ---- names for messages ---- */

static const char *stype_name(pm_stype t)
{
    static const char *names[] = {"null", "boolean", "int", "long", "float",
                                  "double", "string", "record", "enum",
                                  "array", "map", "union"};
    return names[t];
}

/* What a schema type is called in JSON terms, for "expected X" messages. */
static const char *stype_json_name(pm_stype t)
{
    switch (t) {
    case S_INT: case S_LONG: return "integer";
    case S_FLOAT: case S_DOUBLE: return "number";
    case S_RECORD: case S_MAP: return "object";
    case S_ENUM: return "string";
    default: return stype_name(t);
    }
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE: case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Whether a JSON value has the right kind for a (non-union) schema type. */
static int kind_matches(pm_stype t, const json_t *v)
{
    switch (t) {
    case S_NULL: return json_is_null(v);
    case S_BOOLEAN: return json_is_boolean(v);
    case S_INT: case S_LONG: return json_is_integer(v);
    case S_FLOAT: case S_DOUBLE: return json_is_number(v);
    case S_STRING: case S_ENUM: return json_is_string(v);
    case S_RECORD: case S_MAP: return json_is_object(v);
    case S_ARRAY: return json_is_array(v);
    case S_UNION: return 0;
    }
    return 0;
}

/* The union branch a JSON value belongs to: the first whose kind matches. */
static long union_pick(const pm_snode *u, const json_t *v)
{
    for (size_t i = 0; i < u->n; i++)
        if (kind_matches(u->branches[i]->type, v))
            return (long)i;
    return -1;
}

static void union_expected(const pm_snode *u, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < u->n && len < outlen; i++) {
        int n = snprintf(out + len, outlen - len, "%s%s", i ? " or " : "",
                         stype_json_name(u->branches[i]->type));
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

/* ---- building the node tree from the .avsc JSON ----
 * The tree lives as long as the process (read-only, shared by all threads). */

static pm_snode *node_new(pm_stype t)
{
    pm_snode *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->type = t;
    return n;
}

static int named_add(named_list *nl, pm_snode *n)
{
    if (nl->len == nl->cap) {
        size_t cap = nl->cap ? nl->cap * 2 : 16;
        pm_snode **v = realloc(nl->v, cap * sizeof *v);
        if (!v)
            return -1;
        nl->v = v;
        nl->cap = cap;
    }
    nl->v[nl->len++] = n;
    return 0;
}

static pm_snode *named_find(const named_list *nl, const char *name, const char *ns)
{
    char full[512];
    if (!strchr(name, '.') && ns && *ns)
        snprintf(full, sizeof full, "%s.%s", ns, name);
    else
        snprintf(full, sizeof full, "%s", name);
    for (size_t i = 0; i < nl->len; i++)
        if (strcmp(nl->v[i]->name, full) == 0)
            return nl->v[i];
    return NULL;
}

static char *full_name(const char *name, const char *ns)
{
    char buf[512];
    if (!strchr(name, '.') && ns && *ns)
        snprintf(buf, sizeof buf, "%s.%s", ns, name);
    else
        snprintf(buf, sizeof buf, "%s", name);
    return strdup(buf);
}

static int normalize(const pm_snode *n, json_t *in, json_t **out, pm_path *p,
                     pm_error *err);

static pm_snode *build(json_t *def, const char *ns, named_list *nl, pm_error *err);

static int build_primitive(const char *name, pm_stype *t)
{
    static const struct { const char *name; pm_stype t; } prims[] = {
        {"null", S_NULL}, {"boolean", S_BOOLEAN}, {"int", S_INT},
        {"long", S_LONG}, {"float", S_FLOAT}, {"double", S_DOUBLE},
        {"string", S_STRING}};
    for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
        if (strcmp(name, prims[i].name) == 0) {
            *t = prims[i].t;
            return 0;
        }
    return -1;
}

static pm_snode *build_record(json_t *def, const char *ns, named_list *nl, pm_error *err)
{
    const char *name = json_string_value(json_object_get(def, "name"));
    const char *rns = json_string_value(json_object_get(def, "namespace"));
    json_t *fields = json_object_get(def, "fields");
    if (!name || !json_is_array(fields)) {
        pm_error_set(err, PM_ERR_INTERNAL, "schema: record without name or fields");
        return NULL;
    }
    pm_snode *n = node_new(S_RECORD);
    if (!n || !(n->name = full_name(name, rns ? rns : ns)))
        goto nomem;
    const char *inner_ns = rns ? rns : ns;
    if (strchr(name, '.')) /* a dotted name sets the namespace of what it holds */
        inner_ns = NULL;
    if (named_add(nl, n) != 0)
        goto nomem;
    n->n = json_array_size(fields);
    n->fields = calloc(n->n ? n->n : 1, sizeof *n->fields);
    if (!n->fields)
        goto nomem;
    for (size_t i = 0; i < n->n; i++) {
        json_t *f = json_array_get(fields, i);
        const char *fname = json_string_value(json_object_get(f, "name"));
        if (!fname) {
            pm_error_set(err, PM_ERR_INTERNAL, "schema: field %zu of %s has no name", i, n->name);
            return NULL;
        }
        n->fields[i].name = strdup(fname);
        if (!n->fields[i].name)
            goto nomem;
        n->fields[i].type = build(json_object_get(f, "type"), inner_ns, nl, err);
        if (!n->fields[i].type)
            return NULL;
        json_t *d = json_object_get(f, "default");
        if (d) {
            /* Per the Avro spec a union's default belongs to its first branch. */
            const pm_snode *dt = n->fields[i].type;
            pm_path p;
            path_init(&p);
            path_push(&p, fname);
            if (dt->type == S_UNION && !kind_matches(dt->branches[0]->type, d)) {
                pm_error_set(err, PM_ERR_INTERNAL,
                             "schema: default of %s.%s does not match the union's first branch",
                             n->name, fname);
                return NULL;
            }
            if (normalize(dt, d, &n->fields[i].def, &p, err) != 0) {
                pm_error_prefix(err, "schema: default of %s.%s", n->name, fname);
                err->code = PM_ERR_INTERNAL;
                return NULL;
            }
        }
        n->min_size += n->fields[i].type->min_size;
    }
    return n;
nomem:
    pm_error_set(err, PM_ERR_NOMEM, "schema: out of memory");
    return NULL;
}

static pm_snode *build_enum(json_t *def, const char *ns, named_list *nl, pm_error *err)
{
    const char *name = json_string_value(json_object_get(def, "name"));
    const char *ens = json_string_value(json_object_get(def, "namespace"));
    json_t *syms = json_object_get(def, "symbols");
    if (!name || !json_is_array(syms) || json_array_size(syms) == 0) {
        pm_error_set(err, PM_ERR_INTERNAL, "schema: enum without name or symbols");
        return NULL;
    }
    pm_snode *n = node_new(S_ENUM);
    if (!n || !(n->name = full_name(name, ens ? ens : ns)) || named_add(nl, n) != 0)
        goto nomem;
    n->n = json_array_size(syms);
    n->symbols = calloc(n->n, sizeof *n->symbols);
    if (!n->symbols)
        goto nomem;
    for (size_t i = 0; i < n->n; i++) {
        const char *s = json_string_value(json_array_get(syms, i));
        if (!s || !(n->symbols[i] = strdup(s))) {
            pm_error_set(err, PM_ERR_INTERNAL, "schema: bad symbol %zu in enum %s", i, n->name);
            return NULL;
        }
    }
    n->min_size = 1;
    return n;
nomem:
    pm_error_set(err, PM_ERR_NOMEM, "schema: out of memory");
    return NULL;
}

static pm_snode *build(json_t *def, const char *ns, named_list *nl, pm_error *err)
{
    pm_stype t;
    if (json_is_string(def)) {
        const char *s = json_string_value(def);
        if (build_primitive(s, &t) == 0) {
            pm_snode *n = node_new(t);
            if (!n) {
                pm_error_set(err, PM_ERR_NOMEM, "schema: out of memory");
                return NULL;
            }
            n->min_size = t == S_NULL ? 0 : t == S_FLOAT ? 4 : t == S_DOUBLE ? 8 : 1;
            return n;
        }
        pm_snode *ref = named_find(nl, s, ns);
        if (!ref)
            pm_error_set(err, PM_ERR_INTERNAL, "schema: unknown or unsupported type '%s'", s);
        return ref;
    }
    if (json_is_array(def)) {
        pm_snode *n = node_new(S_UNION);
        if (!n || !(n->branches = calloc(json_array_size(def) + 1, sizeof *n->branches))) {
            pm_error_set(err, PM_ERR_NOMEM, "schema: out of memory");
            return NULL;
        }
        n->n = json_array_size(def);
        if (n->n == 0) {
            pm_error_set(err, PM_ERR_INTERNAL, "schema: empty union");
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++)
            if (!(n->branches[i] = build(json_array_get(def, i), ns, nl, err)))
                return NULL;
        n->min_size = 1;
        return n;
    }
    if (!json_is_object(def)) {
        pm_error_set(err, PM_ERR_INTERNAL, "schema: a type must be a name, union or object");
        return NULL;
    }
    json_t *tj = json_object_get(def, "type");
    const char *ts = json_string_value(tj);
    if (!ts)
        return build(tj, ns, nl, err);
    if (strcmp(ts, "record") == 0 || strcmp(ts, "error") == 0)
        return build_record(def, ns, nl, err);
    if (strcmp(ts, "enum") == 0)
        return build_enum(def, ns, nl, err);
    if (strcmp(ts, "array") == 0 || strcmp(ts, "map") == 0) {
        pm_snode *n = node_new(ts[0] == 'a' ? S_ARRAY : S_MAP);
        if (!n) {
            pm_error_set(err, PM_ERR_NOMEM, "schema: out of memory");
            return NULL;
        }
        n->items = build(json_object_get(def, ts[0] == 'a' ? "items" : "values"), ns, nl, err);
        n->min_size = 1;
        return n->items ? n : NULL;
    }
    return build(tj, ns, nl, err); /* {"type": "string"} and the like */
}

static void schema_init_once(void)
{
    pm_error *err = &schema_init_err;
    pm_error_clear(err);
    size_t len = strlen(pm_schema_pass_request_json);
    if (avro_schema_from_json_length(pm_schema_pass_request_json, len, &schema_avro) != 0) {
        pm_error_set(err, PM_ERR_INTERNAL, "avro-c cannot parse the compiled schema: %s",
                     avro_strerror());
        return;
    }
    json_error_t jerr;
    json_t *def = json_loadb(pm_schema_pass_request_json, len, 0, &jerr);
    if (!def) {
        pm_error_set(err, PM_ERR_INTERNAL, "compiled schema is not JSON: line %d: %s",
                     jerr.line, jerr.text);
        return;
    }
    named_list nl = {NULL, 0, 0};
    pm_snode *root = build(def, NULL, &nl, err);
    free(nl.v);
    json_decref(def);
    if (!root)
        return;
    if (root->type != S_RECORD) {
        pm_error_set(err, PM_ERR_INTERNAL, "compiled schema is not a record");
        return;
    }
    schema_root = root;
}

int pm_schema_init(pm_error *err)
{
    pthread_once(&schema_once, schema_init_once);
    if (schema_root)
        return 0;
    *err = schema_init_err;
    if (err->code == PM_OK)
        pm_error_set(err, PM_ERR_INTERNAL, "schema initialisation failed");
    return -1;
}

avro_schema_t pm_schema_pass_request(void)
{
    return schema_root ? schema_avro : NULL;
}

static int need_init(pm_error *err)
{
    return schema_root ? 0 : pm_schema_init(err);
}

/* ---- paths into the schema ---- */

/* A field's type with a ["null", T] wrapper removed. */
static const pm_snode *unwrap_optional(const pm_snode *n)
{
    if (n->type != S_UNION)
        return n;
    const pm_snode *only = NULL;
    for (size_t i = 0; i < n->n; i++) {
        if (n->branches[i]->type == S_NULL)
            continue;
        if (only)
            return n; /* a real choice: no single type */
        only = n->branches[i];
    }
    return only ? only : n;
}

static const pm_sfield *record_field(const pm_snode *rec, const char *name, size_t len)
{
    for (size_t i = 0; i < rec->n; i++)
        if (strlen(rec->fields[i].name) == len && memcmp(rec->fields[i].name, name, len) == 0)
            return &rec->fields[i];
    return NULL;
}

bool pm_schema_has_path(const char *path)
{
    pm_error err;
    if (!path || !*path || need_init(&err) != 0)
        return false;
    const pm_snode *n = schema_root;
    const char *s = path;
    for (;;) {
        if (n->type != S_RECORD)
            return false;
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        const pm_sfield *f = record_field(n, s, len);
        if (!f || len == 0)
            return false;
        n = unwrap_optional(f->type);
        if (!dot)
            break;
        s = dot + 1;
    }
    switch (n->type) {
    case S_RECORD: case S_ARRAY: case S_MAP: case S_UNION: case S_NULL:
        return false;
    default:
        return true;
    }
}

/* ---- JSON -> normalized JSON ---- */

static int type_reject(const pm_snode *n, const json_t *in, pm_path *p, pm_error *err)
{
    return pm_reject(err, "schema.type", p->buf, "expected %s, found %s",
                     stype_json_name(n->type), json_kind(in));
}

static int normalize_record(const pm_snode *n, json_t *in, json_t **out, pm_path *p,
                            pm_error *err)
{
    const char *key;
    json_t *v;
    /* Unknown keys first: a misspelt optional field is then reported as
     * itself, not silently defaulted. */
    json_object_foreach(in, key, v) {
        if (!record_field(n, key, strlen(key))) {
            size_t old = path_push(p, key);
            pm_reject(err, "schema.unknown_field", p->buf,
                      "'%s' is not a field of %s", key, n->name);
            path_pop(p, old);
            return -1;
        }
    }
    json_t *o = json_object();
    if (!o)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        const pm_sfield *f = &n->fields[i];
        size_t old = path_push(p, f->name);
        json_t *fv = json_object_get(in, f->name), *nv = NULL;
        int rc;
        if (fv) {
            rc = normalize(f->type, fv, &nv, p, err);
        } else if (f->def) {
            nv = json_deep_copy(f->def);
            rc = nv ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        } else {
            rc = pm_reject(err, "schema.missing", p->buf, "required field '%s' is missing",
                           f->name);
        }
        path_pop(p, old);
        if (rc == 0 && json_object_set_new(o, f->name, nv) != 0)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        if (rc != 0) {
            json_decref(o);
            return -1;
        }
    }
    *out = o;
    return 0;
}

static int normalize(const pm_snode *n, json_t *in, json_t **out, pm_path *p,
                     pm_error *err)
{
    switch (n->type) {
    case S_UNION: {
        long b = union_pick(n, in);
        if (b < 0) {
            char exp[160];
            union_expected(n, exp, sizeof exp);
            return pm_reject(err, "schema.type", p->buf, "expected %s, found %s", exp,
                             json_kind(in));
        }
        return normalize(n->branches[b], in, out, p, err);
    }
    case S_RECORD:
        if (!json_is_object(in))
            return type_reject(n, in, p, err);
        return normalize_record(n, in, out, p, err);
    case S_ENUM: {
        if (!json_is_string(in))
            return type_reject(n, in, p, err);
        const char *s = json_string_value(in);
        for (size_t i = 0; i < n->n; i++)
            if (strcmp(s, n->symbols[i]) == 0) {
                *out = json_incref(in);
                return 0;
            }
        char syms[256];
        size_t len = 0;
        syms[0] = '\0';
        for (size_t i = 0; i < n->n && len < sizeof syms; i++) {
            int k = snprintf(syms + len, sizeof syms - len, "%s%s", i ? ", " : "", n->symbols[i]);
            if (k < 0)
                break;
            len += (size_t)k;
        }
        return pm_reject(err, "schema.enum", p->buf, "expected one of %s, found '%.40s'",
                         syms, s);
    }
    case S_ARRAY: {
        if (!json_is_array(in))
            return type_reject(n, in, p, err);
        json_t *a = json_array();
        if (!a)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(in); i++) {
            json_t *nv;
            size_t old = path_index(p, i);
            int rc = normalize(n->items, json_array_get(in, i), &nv, p, err);
            path_pop(p, old);
            if (rc != 0 || json_array_append_new(a, nv) != 0) {
                if (rc == 0)
                    pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                json_decref(a);
                return -1;
            }
        }
        *out = a;
        return 0;
    }
    case S_MAP: {
        if (!json_is_object(in))
            return type_reject(n, in, p, err);
        json_t *o = json_object();
        if (!o)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        const char *key;
        json_t *v;
        json_object_foreach(in, key, v) {
            json_t *nv;
            size_t old = path_push(p, key);
            int rc = normalize(n->items, v, &nv, p, err);
            path_pop(p, old);
            if (rc != 0 || json_object_set_new(o, key, nv) != 0) {
                if (rc == 0)
                    pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                json_decref(o);
                return -1;
            }
        }
        *out = o;
        return 0;
    }
    case S_INT:
        if (!json_is_integer(in))
            return type_reject(n, in, p, err);
        if (json_integer_value(in) < INT32_MIN || json_integer_value(in) > INT32_MAX)
            return pm_reject(err, "schema.type", p->buf,
                             "expected a 32-bit integer, found %" JSON_INTEGER_FORMAT,
                             json_integer_value(in));
        *out = json_incref(in);
        return 0;
    case S_FLOAT:
    case S_DOUBLE:
        if (json_is_integer(in)) {
            *out = json_real((double)json_integer_value(in));
            return *out ? 0 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
        /* fall through */
    default:
        if (!kind_matches(n->type, in))
            return type_reject(n, in, p, err);
        *out = json_incref(in);
        return 0;
    }
}

int pm_schema_normalize(json_t *record, json_t **out, pm_error *err)
{
    if (need_init(err) != 0)
        return -1;
    pm_path p;
    path_init(&p);
    if (!record || !json_is_object(record))
        return pm_reject(err, "schema.type", "", "expected a JSON object, found %s",
                         record ? json_kind(record) : "nothing");
    return normalize(schema_root, record, out, &p, err);
}

/* ---- Avro binary -> normalized JSON ---- */

typedef struct bin_reader {
    const unsigned char *p;
    size_t len, pos;
    pm_path path;
    int depth;
    pm_error *err;
} bin_reader;

static int bin_fail(bin_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bin_fail(bin_reader *r, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_reject(r->err, "avro.decode", r->path.buf, "%s (at byte %zu of %zu)", msg,
                     r->pos, r->len);
}

static int bin_long(bin_reader *r, int64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->len)
            return bin_fail(r, "truncated: a number runs past the end");
        uint8_t b = r->p[r->pos++];
        if (shift == 63 && (b & 0x7e))
            return bin_fail(r, "number does not fit in 64 bits");
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return bin_fail(r, "number longer than 10 bytes");
}

static size_t bin_left(const bin_reader *r)
{
    return r->len - r->pos;
}

static int bin_value(bin_reader *r, const pm_snode *n, json_t **out);

/* Read one block header of an array or map; *count = 0 ends the value. */
static int bin_block(bin_reader *r, const pm_snode *n, int64_t *count)
{
    if (bin_long(r, count) != 0)
        return -1;
    if (*count < 0) {
        int64_t size;
        if (*count == INT64_MIN)
            return bin_fail(r, "invalid block count");
        *count = -*count;
        if (bin_long(r, &size) != 0)
            return -1;
        if (size < 0 || (uint64_t)size > bin_left(r))
            return bin_fail(r, "block size %" PRId64 " exceeds the %zu bytes left", size,
                            bin_left(r));
    }
    size_t min = n->type == S_MAP ? 1 + n->items->min_size : n->items->min_size;
    uint64_t limit = min ? bin_left(r) / min : PM_MAX_EMPTY_ELEMS;
    if ((uint64_t)*count > limit)
        return bin_fail(r, "%s block of %" PRId64 " elements cannot fit in %zu bytes",
                        stype_name(n->type), *count, bin_left(r));
    return 0;
}

static int bin_string(bin_reader *r, const char **s, size_t *len)
{
    int64_t l;
    if (bin_long(r, &l) != 0)
        return -1;
    if (l < 0 || (uint64_t)l > bin_left(r))
        return bin_fail(r, "string length %" PRId64 " exceeds the %zu bytes left", l, bin_left(r));
    *s = (const char *)r->p + r->pos;
    *len = (size_t)l;
    r->pos += (size_t)l;
    return 0;
}

static int bin_nomem(bin_reader *r)
{
    return pm_error_set(r->err, PM_ERR_NOMEM, "out of memory decoding Avro");
}

static int bin_record(bin_reader *r, const pm_snode *n, json_t **out)
{
    json_t *o = NULL;
    if (out && !(o = json_object()))
        return bin_nomem(r);
    for (size_t i = 0; i < n->n; i++) {
        json_t *v = NULL;
        size_t old = path_push(&r->path, n->fields[i].name);
        int rc = bin_value(r, n->fields[i].type, o ? &v : NULL);
        path_pop(&r->path, old);
        if (rc == 0 && o && json_object_set_new(o, n->fields[i].name, v) != 0)
            rc = bin_nomem(r);
        if (rc != 0) {
            json_decref(o);
            return -1;
        }
    }
    if (out)
        *out = o;
    return 0;
}

static int bin_array(bin_reader *r, const pm_snode *n, json_t **out)
{
    json_t *a = NULL;
    if (out && !(a = json_array()))
        return bin_nomem(r);
    size_t index = 0;
    for (;;) {
        int64_t count;
        if (bin_block(r, n, &count) != 0)
            goto fail;
        if (count == 0)
            break;
        for (int64_t i = 0; i < count; i++, index++) {
            json_t *v = NULL;
            size_t old = path_index(&r->path, index);
            int rc = bin_value(r, n->items, a ? &v : NULL);
            path_pop(&r->path, old);
            if (rc == 0 && a && json_array_append_new(a, v) != 0)
                rc = bin_nomem(r);
            if (rc != 0)
                goto fail;
        }
    }
    if (out)
        *out = a;
    return 0;
fail:
    json_decref(a);
    return -1;
}

static int bin_map(bin_reader *r, const pm_snode *n, json_t **out)
{
    json_t *o = NULL;
    if (out && !(o = json_object()))
        return bin_nomem(r);
    char *key = NULL;
    for (;;) {
        int64_t count;
        if (bin_block(r, n, &count) != 0)
            goto fail;
        if (count == 0)
            break;
        for (int64_t i = 0; i < count; i++) {
            const char *k;
            size_t klen;
            if (bin_string(r, &k, &klen) != 0)
                goto fail;
            if (memchr(k, '\0', klen)) {
                bin_fail(r, "map key contains a NUL byte");
                goto fail;
            }
            free(key);
            if (!(key = strndup(k, klen))) {
                bin_nomem(r);
                goto fail;
            }
            json_t *v = NULL;
            size_t old = path_push(&r->path, key);
            int rc = bin_value(r, n->items, o ? &v : NULL);
            path_pop(&r->path, old);
            if (rc == 0 && o && json_object_set_new_nocheck(o, key, v) != 0)
                rc = bin_nomem(r);
            if (rc != 0)
                goto fail;
        }
    }
    free(key);
    if (out)
        *out = o;
    return 0;
fail:
    free(key);
    json_decref(o);
    return -1;
}

static int bin_fixed(bin_reader *r, size_t size, void *dst)
{
    if (bin_left(r) < size)
        return bin_fail(r, "truncated: %zu bytes needed, %zu left", size, bin_left(r));
    memcpy(dst, r->p + r->pos, size);
    r->pos += size;
    return 0;
}

static int bin_value(bin_reader *r, const pm_snode *n, json_t **out)
{
    json_t *v = NULL;
    int64_t l;
    if (++r->depth > PM_MAX_DEPTH) {
        r->depth--;
        return bin_fail(r, "nested deeper than %d", PM_MAX_DEPTH);
    }
    int rc = 0;
    switch (n->type) {
    case S_NULL:
        if (out)
            v = json_null();
        break;
    case S_BOOLEAN: {
        uint8_t b = 0;
        if ((rc = bin_fixed(r, 1, &b)) != 0)
            break;
        if (b > 1) {
            rc = bin_fail(r, "boolean byte is %u, not 0 or 1", b);
            break;
        }
        if (out)
            v = json_boolean(b);
        break;
    }
    case S_INT:
    case S_LONG:
        if ((rc = bin_long(r, &l)) != 0)
            break;
        if (n->type == S_INT && (l < INT32_MIN || l > INT32_MAX)) {
            rc = bin_fail(r, "int value %" PRId64 " out of 32-bit range", l);
            break;
        }
        if (out)
            v = json_integer(l);
        break;
    case S_FLOAT:
    case S_DOUBLE: {
        /* Avro stores IEEE 754 little-endian. */
        uint8_t b[8];
        size_t size = n->type == S_FLOAT ? 4 : 8;
        if ((rc = bin_fixed(r, size, b)) != 0)
            break;
        uint64_t bits = 0;
        for (size_t i = size; i-- > 0;)
            bits = bits << 8 | b[i];
        double d;
        if (size == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            d = f;
        } else {
            memcpy(&d, &bits, 8);
        }
        if (!isfinite(d)) {
            rc = bin_fail(r, "%s is not a finite number", stype_name(n->type));
            break;
        }
        if (out)
            v = json_real(d);
        break;
    }
    case S_STRING: {
        const char *s;
        size_t len;
        if ((rc = bin_string(r, &s, &len)) != 0)
            break;
        /* Bytes are kept as sent: validate reports bad UTF-8 by field. */
        if (out)
            v = json_stringn_nocheck(s, len);
        break;
    }
    case S_ENUM:
        if ((rc = bin_long(r, &l)) != 0)
            break;
        if (l < 0 || (uint64_t)l >= n->n) {
            rc = bin_fail(r, "enum index %" PRId64 " outside 0..%zu", l, n->n - 1);
            break;
        }
        if (out)
            v = json_string(n->symbols[l]);
        break;
    case S_UNION:
        if ((rc = bin_long(r, &l)) != 0)
            break;
        if (l < 0 || (uint64_t)l >= n->n) {
            rc = bin_fail(r, "union branch %" PRId64 " outside 0..%zu", l, n->n - 1);
            break;
        }
        r->depth--;
        return bin_value(r, n->branches[l], out);
    case S_RECORD:
        rc = bin_record(r, n, out ? &v : NULL);
        break;
    case S_ARRAY:
        rc = bin_array(r, n, out ? &v : NULL);
        break;
    case S_MAP:
        rc = bin_map(r, n, out ? &v : NULL);
        break;
    }
    r->depth--;
    if (rc != 0)
        return -1;
    if (out) {
        if (!v)
            return bin_nomem(r);
        *out = v;
    }
    return 0;
}

int pm_schema_avro_decode(const unsigned char *data, size_t len, size_t *used,
                          json_t **out, pm_error *err)
{
    if (need_init(err) != 0)
        return -1;
    bin_reader r = {.p = data, .len = len, .pos = 0, .depth = 0, .err = err};
    path_init(&r.path);
    if (bin_value(&r, schema_root, out) != 0)
        return -1;
    if (used)
        *used = r.pos;
    return 0;
}

/* ---- avro_value_t <-> normalized JSON ---- */

static int avro_fail(pm_error *err, const pm_path *p, const char *what)
{
    return pm_error_set(err, PM_ERR_INTERNAL, "avro-c: %s at '%s': %s", what, p->buf,
                        avro_strerror());
}

static int value_to_json(const pm_snode *n, avro_value_t *v, json_t **out, pm_path *p,
                         pm_error *err)
{
    json_t *j = NULL;
    switch (n->type) {
    case S_NULL:
        j = json_null();
        break;
    case S_BOOLEAN: {
        int b;
        if (avro_value_get_boolean(v, &b) != 0)
            return avro_fail(err, p, "get boolean");
        j = json_boolean(b);
        break;
    }
    case S_INT: {
        int32_t i;
        if (avro_value_get_int(v, &i) != 0)
            return avro_fail(err, p, "get int");
        j = json_integer(i);
        break;
    }
    case S_LONG: {
        int64_t l;
        if (avro_value_get_long(v, &l) != 0)
            return avro_fail(err, p, "get long");
        j = json_integer(l);
        break;
    }
    case S_FLOAT:
    case S_DOUBLE: {
        double d;
        if (n->type == S_FLOAT) {
            float f;
            if (avro_value_get_float(v, &f) != 0)
                return avro_fail(err, p, "get float");
            d = f;
        } else if (avro_value_get_double(v, &d) != 0) {
            return avro_fail(err, p, "get double");
        }
        if (!isfinite(d))
            return pm_reject(err, "avro.decode", p->buf, "%s is not a finite number",
                             stype_name(n->type));
        j = json_real(d);
        break;
    }
    case S_STRING: {
        const char *s;
        size_t size;
        if (avro_value_get_string(v, &s, &size) != 0)
            return avro_fail(err, p, "get string");
        j = json_stringn_nocheck(s ? s : "", size ? size - 1 : 0); /* size counts the NUL */
        break;
    }
    case S_ENUM: {
        int e;
        if (avro_value_get_enum(v, &e) != 0)
            return avro_fail(err, p, "get enum");
        if (e < 0 || (size_t)e >= n->n)
            return pm_reject(err, "avro.decode", p->buf, "enum index %d outside 0..%zu", e,
                             n->n - 1);
        j = json_string(n->symbols[e]);
        break;
    }
    case S_UNION: {
        int d;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &d) != 0 ||
            avro_value_get_current_branch(v, &branch) != 0)
            return avro_fail(err, p, "get union branch");
        if (d < 0 || (size_t)d >= n->n)
            return pm_reject(err, "avro.decode", p->buf, "union branch %d outside 0..%zu", d,
                             n->n - 1);
        return value_to_json(n->branches[d], &branch, out, p, err);
    }
    case S_RECORD: {
        if (!(j = json_object()))
            break;
        for (size_t i = 0; i < n->n; i++) {
            avro_value_t child;
            json_t *cj;
            size_t old = path_push(p, n->fields[i].name);
            int rc = avro_value_get_by_index(v, i, &child, NULL) != 0
                         ? avro_fail(err, p, "get field")
                         : value_to_json(n->fields[i].type, &child, &cj, p, err);
            path_pop(p, old);
            if (rc == 0 && json_object_set_new(j, n->fields[i].name, cj) != 0)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            if (rc != 0) {
                json_decref(j);
                return -1;
            }
        }
        break;
    }
    case S_ARRAY:
    case S_MAP: {
        size_t count;
        if (avro_value_get_size(v, &count) != 0)
            return avro_fail(err, p, "get size");
        if (!(j = n->type == S_ARRAY ? json_array() : json_object()))
            break;
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            const char *key = NULL;
            json_t *cj;
            if (avro_value_get_by_index(v, i, &child, &key) != 0) {
                json_decref(j);
                return avro_fail(err, p, "get element");
            }
            size_t old = n->type == S_ARRAY ? path_index(p, i) : path_push(p, key);
            int rc = value_to_json(n->items, &child, &cj, p, err);
            path_pop(p, old);
            if (rc == 0 && (n->type == S_ARRAY ? json_array_append_new(j, cj)
                                               : json_object_set_new_nocheck(j, key, cj)) != 0)
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            if (rc != 0) {
                json_decref(j);
                return -1;
            }
        }
        break;
    }
    }
    if (!j)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    *out = j;
    return 0;
}

static int check_value_schema(avro_value_t *v, pm_error *err)
{
    avro_schema_t s = avro_value_get_schema(v);
    if (s == schema_avro || (s && avro_schema_equal(s, schema_avro)))
        return 0;
    return pm_error_set(err, PM_ERR_INTERNAL, "avro value is not of the pass request schema (%s)",
                        s ? avro_schema_type_name(s) : "no schema");
}

int pm_schema_avro_to_json(avro_value_t *value, json_t **out, pm_error *err)
{
    if (need_init(err) != 0 || check_value_schema(value, err) != 0)
        return -1;
    pm_path p;
    path_init(&p);
    return value_to_json(schema_root, value, out, &p, err);
}

static int json_to_value(const pm_snode *n, json_t *j, avro_value_t *v, pm_path *p,
                         pm_error *err)
{
    int rc = 0;
    switch (n->type) {
    case S_NULL:
        rc = avro_value_set_null(v);
        break;
    case S_BOOLEAN:
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case S_INT:
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case S_LONG:
        rc = avro_value_set_long(v, json_integer_value(j));
        break;
    case S_FLOAT:
        rc = avro_value_set_float(v, (float)json_number_value(j));
        break;
    case S_DOUBLE:
        rc = avro_value_set_double(v, json_number_value(j));
        break;
    case S_STRING: {
        size_t len = json_string_length(j);
        const char *s = json_string_value(j);
        if (memchr(s, '\0', len))
            return pm_reject(err, "schema.type", p->buf, "string contains a NUL character");
        rc = avro_value_set_string_len(v, s, len + 1);
        break;
    }
    case S_ENUM: {
        const char *s = json_string_value(j);
        size_t i = 0;
        while (i < n->n && strcmp(n->symbols[i], s) != 0)
            i++;
        rc = avro_value_set_enum(v, (int)i);
        break;
    }
    case S_UNION: {
        long b = union_pick(n, j);
        avro_value_t branch;
        if (b < 0 || avro_value_set_branch(v, (int)b, &branch) != 0)
            return avro_fail(err, p, "set union branch");
        return json_to_value(n->branches[b], j, &branch, p, err);
    }
    case S_RECORD:
        for (size_t i = 0; i < n->n; i++) {
            avro_value_t child;
            size_t old = path_push(p, n->fields[i].name);
            rc = avro_value_get_by_index(v, i, &child, NULL) != 0
                     ? avro_fail(err, p, "get field")
                     : json_to_value(n->fields[i].type, json_object_get(j, n->fields[i].name),
                                     &child, p, err);
            path_pop(p, old);
            if (rc != 0)
                return -1;
        }
        return 0;
    case S_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++) {
            avro_value_t child;
            size_t old = path_index(p, i);
            rc = avro_value_append(v, &child, NULL) != 0
                     ? avro_fail(err, p, "append")
                     : json_to_value(n->items, json_array_get(j, i), &child, p, err);
            path_pop(p, old);
            if (rc != 0)
                return -1;
        }
        return 0;
    case S_MAP: {
        const char *key;
        json_t *cj;
        json_object_foreach(j, key, cj) {
            avro_value_t child;
            size_t old = path_push(p, key);
            rc = avro_value_add(v, key, &child, NULL, NULL) != 0
                     ? avro_fail(err, p, "add map entry")
                     : json_to_value(n->items, cj, &child, p, err);
            path_pop(p, old);
            if (rc != 0)
                return -1;
        }
        return 0;
    }
    }
    return rc != 0 ? avro_fail(err, p, "set value") : 0;
}

int pm_schema_json_to_avro(json_t *record, avro_value_t *out, pm_error *err)
{
    if (need_init(err) != 0 || check_value_schema(out, err) != 0)
        return -1;
    /* Normalizing first checks every type, so the writer below can trust
     * the shape, and fills the defaults of missing optional fields. */
    json_t *norm;
    if (pm_schema_normalize(record, &norm, err) != 0)
        return -1;
    pm_path p;
    path_init(&p);
    int rc = avro_value_reset(out) != 0 ? avro_fail(err, &p, "reset")
                                        : json_to_value(schema_root, norm, out, &p, err);
    json_decref(norm);
    return rc;
}

/*
 * schema.c - the compiled-in pass request schema and record conversions.
 *
 * The .avsc text is parsed twice, once, at start-up:
 *   - by avro-c, for avro_schema_t users (avro_value_t conversions);
 *   - by jansson into a small node tree (pm_snode) that the conversions
 *     walk.  avro-c does not keep record field defaults, and its binary
 *     reader trusts length prefixes (it mallocs whatever a hostile prefix
 *     asks for), so decoding Avro bytes is done here, against the node
 *     tree, with every length, count and index checked before use.
 * Writer schemas from the input (container headers, Confluent ids) get a
 * node tree of their own, built by the same checked builder, and a
 * resolution against the compiled tree (pm_schema_writer).
 * Nothing here knows the field list: everything walks the schema.
 * Supported types: null, boolean, int, long, float, double, string, record,
 * enum, array, map, union and references to named types.  bytes and fixed
 * have no normalized JSON form: the compiled schema may not use them, a
 * writer schema may (skipped, or bytes read as a string).
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
    S_RECORD, S_ENUM, S_ARRAY, S_MAP, S_UNION,
    S_BYTES, S_FIXED /* writer schemas only: skipped, or bytes read as string */
} pm_stype;

typedef struct pm_snode pm_snode;

typedef struct pm_sfield {
    char *name;
    pm_snode *type;
    json_t *def;          /* normalized default, NULL when required */
    json_t *aliases;      /* array of strings, or NULL */
} pm_sfield;

struct pm_snode {
    pm_stype type;
    char *name;           /* full name of a named type, else NULL */
    json_t *aliases;      /* named type: array of full names, or NULL */
    long enum_default;    /* enum: index of its "default" symbol, or -1 */
    size_t n;             /* fields, symbols, branches, or fixed size */
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

/* While building a tree: its named types, and every node it allocated (so
 * that a writer schema's tree can be freed). */
typedef struct named_list {
    pm_snode **v;
    size_t len, cap;
    pm_snode **all;
    size_t all_len, all_cap;
    bool writer;          /* bytes and fixed allowed */
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
    /* A cut keeps whole UTF-8 characters: a map key may be any text. */
    size_t n = pm_utf8_cut(name, strlen(name), room);
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
                                  "array", "map", "union", "bytes", "fixed"};
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
    case S_STRING: case S_ENUM: case S_BYTES: case S_FIXED: return json_is_string(v);
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
 * The compiled schema's tree lives as long as the process (read-only,
 * shared by all threads); a writer schema's tree is freed with its
 * pm_schema_writer.  The builder checks what the Avro specification
 * requires of a schema (names, no type defined twice, no duplicate field,
 * symbol or union branch), so that avro-c is never handed a writer schema
 * from the input: it leaks when such a schema fails to parse. */

static pm_snode *node_new(named_list *nl, pm_stype t)
{
    if (nl->all_len == nl->all_cap) {
        size_t cap = nl->all_cap ? nl->all_cap * 2 : 64;
        pm_snode **v = realloc(nl->all, cap * sizeof *v);
        if (!v)
            return NULL;
        nl->all = v;
        nl->all_cap = cap;
    }
    pm_snode *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->type = t;
    n->enum_default = -1;
    nl->all[nl->all_len++] = n;
    return n;
}

/* Free every node a build allocated, and the lists. */
static void tree_free(named_list *nl)
{
    for (size_t i = 0; i < nl->all_len; i++) {
        pm_snode *n = nl->all[i];
        free(n->name);
        json_decref(n->aliases);
        if (n->fields)
            for (size_t k = 0; k < n->n; k++) {
                free(n->fields[k].name);
                json_decref(n->fields[k].def);
                json_decref(n->fields[k].aliases);
            }
        free(n->fields);
        if (n->symbols)
            for (size_t k = 0; k < n->n; k++)
                free(n->symbols[k]);
        free(n->symbols);
        free(n->branches);
        free(n);
    }
    free(nl->all);
    free(nl->v);
    memset(nl, 0, sizeof *nl);
}

static pm_snode *named_find(const named_list *nl, const char *name, const char *ns);

static pm_snode *build_fail(pm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A schema error; NULL for the caller to return. */
static pm_snode *build_fail(pm_error *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pm_error_set(err, PM_ERR_FORMAT, "%s", msg);
    return NULL;
}

static pm_snode *build_nomem(pm_error *err)
{
    pm_error_set(err, PM_ERR_NOMEM, "out of memory reading a schema");
    return NULL;
}

static int named_add(named_list *nl, pm_snode *n, pm_error *err)
{
    if (named_find(nl, n->name, NULL)) {
        build_fail(err, "type '%s' is defined twice", n->name);
        return -1;
    }
    if (nl->len == nl->cap) {
        size_t cap = nl->cap ? nl->cap * 2 : 16;
        pm_snode **v = realloc(nl->v, cap * sizeof *v);
        if (!v) {
            build_nomem(err);
            return -1;
        }
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
    /* A name without namespace may also be one defined in no namespace. */
    if (!strchr(name, '.') && ns && *ns)
        for (size_t i = 0; i < nl->len; i++)
            if (strcmp(nl->v[i]->name, name) == 0)
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

/* Avro names: [A-Za-z_][A-Za-z0-9_]*, dotted parts for full names. */
static bool name_ok(const char *s, bool dotted)
{
    bool start = true;
    if (!s || !*s)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (c == '.' && dotted && !start) {
            start = true;
            continue;
        }
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && (start || !(c >= '0' && c <= '9')))
            return false;
        start = false;
    }
    return !start;
}

/* "aliases" of a field or named type: an array of names (full names for a
 * type, resolved against its namespace), kept for schema resolution. */
static int build_aliases(json_t *def, const char *ns, bool type, json_t **out, pm_error *err)
{
    json_t *a = json_object_get(def, "aliases");
    *out = NULL;
    if (!a)
        return 0;
    if (!json_is_array(a)) {
        build_fail(err, "aliases must be an array of names");
        return -1;
    }
    json_t *keep = json_array();
    if (!keep) {
        build_nomem(err);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        const char *name = json_string_value(v);
        if (!name_ok(name, type)) {
            json_decref(keep);
            build_fail(err, "alias %zu is not a valid name", i);
            return -1;
        }
        char *full = type ? full_name(name, ns) : strdup(name);
        if (!full || json_array_append_new(keep, json_string(full)) != 0) {
            free(full);
            json_decref(keep);
            build_nomem(err);
            return -1;
        }
        free(full);
    }
    *out = keep;
    return 0;
}

static int normalize(const pm_snode *n, json_t *in, json_t **out, pm_path *p,
                     pm_error *err);

static pm_snode *build(json_t *def, const char *ns, named_list *nl, int depth, pm_error *err);

static int build_primitive(const char *name, bool writer, pm_stype *t)
{
    static const struct { const char *name; pm_stype t; } prims[] = {
        {"null", S_NULL}, {"boolean", S_BOOLEAN}, {"int", S_INT},
        {"long", S_LONG}, {"float", S_FLOAT}, {"double", S_DOUBLE},
        {"string", S_STRING}, {"bytes", S_BYTES}};
    for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
        if (strcmp(name, prims[i].name) == 0) {
            if (prims[i].t == S_BYTES && !writer)
                return -1;
            *t = prims[i].t;
            return 0;
        }
    return -1;
}

/* The name and namespace of a named type; inner[512] gets the namespace
 * of what it holds. */
static pm_snode *build_named(json_t *def, const char *ns, pm_stype t, named_list *nl,
                             char *inner, pm_error *err)
{
    const char *name = json_string_value(json_object_get(def, "name"));
    const char *tns = json_string_value(json_object_get(def, "namespace"));
    if (!name_ok(name, true))
        return build_fail(err, "a %s needs a valid name, found '%s'", stype_name(t),
                          name ? name : "(none)");
    pm_snode *n = node_new(nl, t);
    if (!n || !(n->name = full_name(name, tns ? tns : ns)))
        return build_nomem(err);
    /* What it holds is in its own namespace (a dotted name sets it). */
    const char *dot = strrchr(n->name, '.');
    snprintf(inner, 512, "%.*s", dot ? (int)(dot - n->name) : 0, n->name);
    if (build_aliases(def, inner, true, &n->aliases, err) != 0 || named_add(nl, n, err) != 0)
        return NULL;
    return n;
}

static pm_snode *build_record(json_t *def, const char *ns, named_list *nl, int depth,
                              pm_error *err)
{
    json_t *fields = json_object_get(def, "fields");
    if (!json_is_array(fields))
        return build_fail(err, "record without fields");
    char inner_ns[512];
    pm_snode *n = build_named(def, ns, S_RECORD, nl, inner_ns, err);
    if (!n)
        return NULL;
    size_t count = json_array_size(fields);
    n->fields = calloc(count ? count : 1, sizeof *n->fields);
    if (!n->fields)
        return build_nomem(err);
    for (size_t i = 0; i < count; i++) {
        json_t *f = json_array_get(fields, i);
        const char *fname = json_string_value(json_object_get(f, "name"));
        if (!name_ok(fname, false))
            return build_fail(err, "field %zu of %s has no valid name", i, n->name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(n->fields[k].name, fname) == 0)
                return build_fail(err, "field '%s' of %s is defined twice", fname, n->name);
        n->fields[i].name = strdup(fname);
        if (!n->fields[i].name)
            return build_nomem(err);
        n->n = i + 1; /* what tree_free frees */
        if (build_aliases(f, NULL, false, &n->fields[i].aliases, err) != 0)
            return NULL;
        n->fields[i].type = build(json_object_get(f, "type"), inner_ns, nl, depth + 1, err);
        if (!n->fields[i].type)
            return NULL;
        json_t *d = json_object_get(f, "default");
        if (d) {
            /* Per the Avro spec a union's default belongs to its first branch. */
            const pm_snode *dt = n->fields[i].type;
            pm_path p;
            path_init(&p);
            path_push(&p, fname);
            if (dt->type == S_UNION && !kind_matches(dt->branches[0]->type, d))
                return build_fail(err, "default of %s.%s does not match the union's first branch",
                                  n->name, fname);
            if (normalize(dt, d, &n->fields[i].def, &p, err) != 0) {
                pm_error_prefix(err, "the default of %s.%s", n->name, fname);
                err->code = PM_ERR_FORMAT;
                err->reason[0] = err->field[0] = '\0';
                return NULL;
            }
        }
        n->min_size += n->fields[i].type->min_size;
    }
    return n;
}

static pm_snode *build_enum(json_t *def, const char *ns, named_list *nl, pm_error *err)
{
    json_t *syms = json_object_get(def, "symbols");
    if (!json_is_array(syms) || json_array_size(syms) == 0)
        return build_fail(err, "enum without symbols");
    char inner[512];
    pm_snode *n = build_named(def, ns, S_ENUM, nl, inner, err);
    if (!n)
        return NULL;
    size_t count = json_array_size(syms);
    n->symbols = calloc(count, sizeof *n->symbols);
    if (!n->symbols)
        return build_nomem(err);
    for (size_t i = 0; i < count; i++) {
        const char *sym = json_string_value(json_array_get(syms, i));
        if (!name_ok(sym, false))
            return build_fail(err, "symbol %zu of enum %s is not a valid name", i, n->name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(n->symbols[k], sym) == 0)
                return build_fail(err, "symbol '%s' of enum %s is defined twice", sym, n->name);
        if (!(n->symbols[i] = strdup(sym)))
            return build_nomem(err);
        n->n = i + 1;
    }
    json_t *d = json_object_get(def, "default");
    if (d) {
        for (size_t i = 0; i < n->n && json_is_string(d); i++)
            if (strcmp(n->symbols[i], json_string_value(d)) == 0)
                n->enum_default = (long)i;
        if (n->enum_default < 0)
            return build_fail(err, "the default of enum %s is not one of its symbols", n->name);
    }
    n->min_size = 1;
    return n;
}

/* Whether two union branches would be the same choice (the spec forbids it). */
static bool same_branch(const pm_snode *a, const pm_snode *b)
{
    if (a->name || b->name)
        return a->name && b->name && strcmp(a->name, b->name) == 0;
    return a->type == b->type;
}

static pm_snode *build(json_t *def, const char *ns, named_list *nl, int depth, pm_error *err)
{
    pm_stype t;
    if (depth > PM_MAX_DEPTH)
        return build_fail(err, "nested deeper than %d", PM_MAX_DEPTH);
    if (!def)
        return build_fail(err, "a field or item has no type");
    if (json_is_string(def)) {
        const char *s = json_string_value(def);
        if (build_primitive(s, nl->writer, &t) == 0) {
            pm_snode *n = node_new(nl, t);
            if (!n)
                return build_nomem(err);
            n->min_size = t == S_NULL ? 0 : t == S_FLOAT ? 4 : t == S_DOUBLE ? 8 : 1;
            return n;
        }
        pm_snode *ref = named_find(nl, s, ns);
        if (!ref)
            return build_fail(err, "unknown or unsupported type '%s'", s);
        return ref;
    }
    if (json_is_array(def)) {
        size_t count = json_array_size(def);
        if (count == 0)
            return build_fail(err, "empty union");
        pm_snode *n = node_new(nl, S_UNION);
        if (!n || !(n->branches = calloc(count + 1, sizeof *n->branches)))
            return build_nomem(err);
        for (size_t i = 0; i < count; i++) {
            pm_snode *b = build(json_array_get(def, i), ns, nl, depth + 1, err);
            if (!b)
                return NULL;
            if (b->type == S_UNION)
                return build_fail(err, "a union inside a union");
            for (size_t k = 0; k < i; k++)
                if (same_branch(n->branches[k], b))
                    return build_fail(err, "a union has two %s branches",
                                      b->name ? b->name : stype_name(b->type));
            n->branches[i] = b;
            n->n = i + 1;
        }
        n->min_size = 1;
        return n;
    }
    if (!json_is_object(def))
        return build_fail(err, "a type must be a name, union or object");
    json_t *tj = json_object_get(def, "type");
    const char *ts = json_string_value(tj);
    if (!ts)
        return build(tj, ns, nl, depth + 1, err);
    if (strcmp(ts, "record") == 0 || strcmp(ts, "error") == 0)
        return build_record(def, ns, nl, depth, err);
    if (strcmp(ts, "enum") == 0)
        return build_enum(def, ns, nl, err);
    if (strcmp(ts, "fixed") == 0 && nl->writer) {
        json_t *size = json_object_get(def, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0 ||
            json_integer_value(size) > (1 << 20))
            return build_fail(err, "fixed needs a size 0..1048576");
        char inner[512];
        pm_snode *n = build_named(def, ns, S_FIXED, nl, inner, err);
        if (!n)
            return NULL;
        n->n = (size_t)json_integer_value(size);
        n->min_size = n->n;
        return n;
    }
    if (strcmp(ts, "array") == 0 || strcmp(ts, "map") == 0) {
        pm_snode *n = node_new(nl, ts[0] == 'a' ? S_ARRAY : S_MAP);
        if (!n)
            return build_nomem(err);
        n->items = build(json_object_get(def, ts[0] == 'a' ? "items" : "values"), ns, nl,
                         depth + 1, err);
        n->min_size = 1;
        return n->items ? n : NULL;
    }
    return build(tj, ns, nl, depth + 1, err); /* {"type": "string"} and the like */
}

/* Build a tree from schema text; on success the caller owns nl. */
static pm_snode *build_text(const char *text, size_t len, bool writer, named_list *nl,
                            pm_error *err)
{
    memset(nl, 0, sizeof *nl);
    nl->writer = writer;
    json_error_t jerr;
    json_t *def = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!def) {
        pm_error_set(err, PM_ERR_FORMAT, "not JSON: line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    pm_snode *root = build(def, NULL, nl, 0, err);
    json_decref(def);
    if (root && root->type != S_RECORD) {
        build_fail(err, "the schema is a %s, not a record", stype_name(root->type));
        root = NULL;
    }
    if (!root)
        tree_free(nl);
    return root;
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
    named_list nl;
    pm_snode *root = build_text(pm_schema_pass_request_json, len, false, &nl, err);
    if (!root) {
        err->code = PM_ERR_INTERNAL;
        pm_error_prefix(err, "the compiled schema");
        return;
    }
    /* The tree is kept for the life of the process; only the lists go. */
    free(nl.v);
    free(nl.all);
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
        /* The value quoted is cut to 40 bytes, at a character boundary. */
        size_t slen = strlen(s), cut = pm_utf8_cut(s, slen, 40);
        return pm_reject(err, "schema.enum", p->buf, "expected one of %s, found '%.*s'%s",
                         syms, (int)cut, s, cut < slen ? "..." : "");
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

/* How an array's or map's elements are read: by bin_value, or resolved. */
typedef int (*item_fn)(bin_reader *r, const void *item, json_t **out);

static int item_bin(bin_reader *r, const void *item, json_t **out)
{
    return bin_value(r, item, out);
}

/* n (the writer's array) sizes the blocks; read each element with fn(item). */
static int bin_array_of(bin_reader *r, const pm_snode *n, item_fn fn, const void *item,
                        json_t **out)
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
            int rc = fn(r, item, a ? &v : NULL);
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

static int bin_map_of(bin_reader *r, const pm_snode *n, item_fn fn, const void *item,
                      json_t **out)
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
            int rc = fn(r, item, o ? &v : NULL);
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
        if (out && b > 1) {
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
        /* Value checks only when decoding: measuring needs the datum's
         * extent, and a bad value does not hide where the next one starts. */
        if (out && n->type == S_INT && (l < INT32_MIN || l > INT32_MAX)) {
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
        if (out && !isfinite(d)) {
            rc = bin_fail(r, "%s is not a finite number", stype_name(n->type));
            break;
        }
        if (out)
            v = json_real(d);
        break;
    }
    case S_STRING:
    case S_BYTES: { /* bytes only in writer schemas; read as a string (promotion) */
        const char *s;
        size_t len;
        if ((rc = bin_string(r, &s, &len)) != 0)
            break;
        /* Bytes are kept as sent: validate reports bad UTF-8 by field. */
        if (out)
            v = json_stringn_nocheck(s, len);
        break;
    }
    case S_FIXED: /* writer schemas only, never read into a record: skipped */
        if (out)
            rc = bin_fail(r, "fixed has no normalized form");
        else if (bin_left(r) < n->n)
            rc = bin_fail(r, "truncated: fixed of %zu bytes, %zu left", n->n, bin_left(r));
        else
            r->pos += n->n;
        break;
    case S_ENUM:
        if ((rc = bin_long(r, &l)) != 0)
            break;
        if (out && (l < 0 || (uint64_t)l >= n->n)) {
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
        rc = bin_array_of(r, n, item_bin, n->items, out ? &v : NULL);
        break;
    case S_MAP:
        rc = bin_map_of(r, n, item_bin, n->items, out ? &v : NULL);
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


/* ---- schema resolution: bytes of a writer schema read as the reader's ----
 *
 * The rules of the Avro specification ("Schema Resolution"): record fields
 * are matched by name or by the reader field's aliases, in any order; a
 * writer field the reader lacks is skipped; a reader field the writer lacks
 * takes its default (none: incompatible); int, long and float promote to
 * wider numbers and bytes to string; an enum symbol the reader lacks takes
 * the reader enum's default; union branches are resolved one by one.
 * What cannot be resolved at all is refused when the writer is created;
 * a writer union branch (or enum symbol) that cannot be read is only an
 * error for a datum that uses it ("avro.resolve").  Resolution is worked
 * out once, into a tree of pm_rnode, so a datum is read in one pass. */

typedef enum rkind {
    R_DIRECT,   /* same type: read as is */
    R_PROMOTE,  /* int/long/float to a wider number, bytes to string */
    R_RECORD, R_ENUM, R_ARRAY, R_MAP,
    R_WUNION,   /* writer union: each branch resolved */
    R_RUNION,   /* reader union, writer not: the reader branch it matches */
    R_FAIL      /* cannot be read: why */
} rkind;

typedef struct pm_rnode pm_rnode;
struct pm_rnode {
    rkind kind;
    const pm_snode *w, *r;
    long *map;            /* record: reader field of each writer field, -1 skipped;
                             enum: reader symbol of each writer symbol, -1 none */
    pm_rnode **sub;       /* record: each writer field's resolution (NULL skipped);
                             writer union: each branch's */
    pm_rnode *items;      /* array items, map values; reader union: the branch */
    char *why;            /* R_FAIL */
};

struct pm_schema_writer {
    named_list wtree, rtree;   /* rtree empty when the reader is the compiled schema */
    pm_snode *wroot;
    const pm_snode *rroot;
    bool identity;             /* the writer is the reader: no resolution */
    pm_rnode **nodes;          /* every pm_rnode, to free */
    size_t nodes_len, nodes_cap;
    pm_rnode *root;
};

typedef struct rmemo {
    const pm_snode *w, *r;
    pm_rnode *n;
} rmemo;

typedef struct rbuild {
    pm_schema_writer *sw;
    rmemo *memo;               /* record pairs resolved or in progress (recursion) */
    size_t memo_len, memo_cap;
    bool nomem;
    pm_path path;
} rbuild;

/* Whether two trees are the same schema (names, fields, symbols, order). */
static bool same_tree(const pm_snode *a, const pm_snode *b, int depth)
{
    if (a == b)
        return true;
    if (depth > 2 * PM_MAX_DEPTH || a->type != b->type)
        return false;
    if ((a->name || b->name) && !(a->name && b->name && strcmp(a->name, b->name) == 0))
        return false;
    switch (a->type) {
    case S_RECORD:
        if (a->n != b->n)
            return false;
        for (size_t i = 0; i < a->n; i++)
            if (strcmp(a->fields[i].name, b->fields[i].name) != 0 ||
                !same_tree(a->fields[i].type, b->fields[i].type, depth + 1))
                return false;
        return true;
    case S_ENUM:
        if (a->n != b->n)
            return false;
        for (size_t i = 0; i < a->n; i++)
            if (strcmp(a->symbols[i], b->symbols[i]) != 0)
                return false;
        return true;
    case S_UNION:
        if (a->n != b->n)
            return false;
        for (size_t i = 0; i < a->n; i++)
            if (!same_tree(a->branches[i], b->branches[i], depth + 1))
                return false;
        return true;
    case S_ARRAY:
    case S_MAP:
        return same_tree(a->items, b->items, depth + 1);
    case S_FIXED:
        return a->n == b->n;
    default:
        return true;
    }
}

static const char *unqualified(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Named types match by unqualified name, or by one of the reader's aliases. */
static bool names_match(const pm_snode *w, const pm_snode *r)
{
    if (strcmp(unqualified(w->name), unqualified(r->name)) == 0)
        return true;
    size_t i;
    json_t *a;
    json_array_foreach(r->aliases, i, a) {
        const char *s = json_string_value(a);
        if (strcmp(s, w->name) == 0 || strcmp(unqualified(s), unqualified(w->name)) == 0)
            return true;
    }
    return false;
}

static bool promotable(pm_stype w, pm_stype r)
{
    switch (w) {
    case S_INT: return r == S_LONG || r == S_FLOAT || r == S_DOUBLE;
    case S_LONG: return r == S_FLOAT || r == S_DOUBLE;
    case S_FLOAT: return r == S_DOUBLE;
    case S_BYTES: return r == S_STRING;
    default: return false;
    }
}

static const char *type_label(const pm_snode *n)
{
    return n->name ? n->name : stype_name(n->type);
}

static pm_rnode *rnode_new(rbuild *b, rkind k, const pm_snode *w, const pm_snode *r)
{
    pm_schema_writer *sw = b->sw;
    if (sw->nodes_len == sw->nodes_cap) {
        size_t cap = sw->nodes_cap ? sw->nodes_cap * 2 : 64;
        pm_rnode **v = realloc(sw->nodes, cap * sizeof *v);
        if (!v) {
            b->nomem = true;
            return NULL;
        }
        sw->nodes = v;
        sw->nodes_cap = cap;
    }
    pm_rnode *n = calloc(1, sizeof *n);
    if (!n) {
        b->nomem = true;
        return NULL;
    }
    n->kind = k;
    n->w = w;
    n->r = r;
    sw->nodes[sw->nodes_len++] = n;
    return n;
}

static pm_rnode *resolve(rbuild *b, const pm_snode *w, const pm_snode *r, int depth,
                         char *why, size_t whylen);

static pm_rnode *resolve_fail(rbuild *b, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Incompatible: why = "at PATH: what" (or just what at the top). */
static pm_rnode *resolve_fail(rbuild *b, char *why, size_t whylen, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b->path.len)
        snprintf(why, whylen, "field %s: %s", b->path.buf, msg);
    else
        snprintf(why, whylen, "%s", msg);
    return NULL;
}

/* The reader branch a writer type is read as: same type (and name) first,
 * then a promotion; -1 if none. */
static long reader_branch(const pm_snode *w, const pm_snode *ru)
{
    for (size_t i = 0; i < ru->n; i++) {
        const pm_snode *r = ru->branches[i];
        if (r->type == w->type && (!r->name || names_match(w, r)))
            return (long)i;
    }
    for (size_t i = 0; i < ru->n; i++)
        if (promotable(w->type, ru->branches[i]->type))
            return (long)i;
    return -1;
}

/* A record pair that cannot be resolved stays in the memo as R_FAIL: a
 * later use of the pair fails the same way, and a recursive use made while
 * it was being resolved reads as avro.resolve, never a half-built node. */
static pm_rnode *record_failed(rbuild *b, pm_rnode *n, const char *why)
{
    n->kind = R_FAIL;
    if (!n->why && !(n->why = strdup(why)))
        b->nomem = true;
    return NULL;
}

static pm_rnode *resolve_record_fields(rbuild *b, pm_rnode *n, int depth, char *why,
                                       size_t whylen);

static pm_rnode *resolve_record(rbuild *b, const pm_snode *w, const pm_snode *r, int depth,
                                char *why, size_t whylen)
{
    for (size_t i = 0; i < b->memo_len; i++)
        if (b->memo[i].w == w && b->memo[i].r == r) {
            if (b->memo[i].n->kind == R_FAIL)
                return resolve_fail(b, why, whylen, "%s", b->memo[i].n->why);
            return b->memo[i].n;
        }
    pm_rnode *n = rnode_new(b, R_RECORD, w, r);
    if (!n || !(n->map = malloc((w->n ? w->n : 1) * sizeof *n->map)) ||
        !(n->sub = calloc(w->n ? w->n : 1, sizeof *n->sub))) {
        b->nomem = true;
        return NULL;
    }
    if (b->memo_len == b->memo_cap) {
        size_t cap = b->memo_cap ? b->memo_cap * 2 : 16;
        rmemo *m = realloc(b->memo, cap * sizeof *m);
        if (!m) {
            b->nomem = true;
            return NULL;
        }
        b->memo = m;
        b->memo_cap = cap;
    }
    b->memo[b->memo_len++] = (rmemo){w, r, n};
    if (!resolve_record_fields(b, n, depth, why, whylen))
        return b->nomem ? NULL : record_failed(b, n, why);
    return n;
}

static pm_rnode *resolve_record_fields(rbuild *b, pm_rnode *n, int depth, char *why,
                                       size_t whylen)
{
    const pm_snode *w = n->w, *r = n->r;
    for (size_t i = 0; i < w->n; i++)
        n->map[i] = -1;
    for (size_t j = 0; j < r->n; j++) {
        const pm_sfield *rf = &r->fields[j];
        long found = -1;
        for (size_t i = 0; i < w->n && found < 0; i++) {
            if (strcmp(w->fields[i].name, rf->name) == 0)
                found = (long)i;
            size_t k;
            json_t *a;
            json_array_foreach(rf->aliases, k, a)
                if (found < 0 && strcmp(w->fields[i].name, json_string_value(a)) == 0)
                    found = (long)i;
        }
        size_t old = path_push(&b->path, rf->name);
        if (found < 0) {
            pm_rnode *f = rf->def ? n
                                  : resolve_fail(b, why, whylen,
                                                 "the reader's field has no default and the "
                                                 "writer's %s has no such field", w->name);
            path_pop(&b->path, old);
            if (!f)
                return NULL;
            continue;
        }
        if (n->map[found] >= 0) {
            resolve_fail(b, why, whylen, "two reader fields read the writer's field '%s'",
                         w->fields[found].name);
            path_pop(&b->path, old);
            return NULL;
        }
        n->map[found] = (long)j;
        n->sub[found] = resolve(b, w->fields[found].type, rf->type, depth + 1, why, whylen);
        path_pop(&b->path, old);
        if (!n->sub[found])
            return NULL;
    }
    return n;
}

static pm_rnode *resolve(rbuild *b, const pm_snode *w, const pm_snode *r, int depth,
                         char *why, size_t whylen)
{
    if (depth > 2 * PM_MAX_DEPTH)
        return resolve_fail(b, why, whylen, "nested deeper than %d", 2 * PM_MAX_DEPTH);
    if (w->type == S_UNION) {
        pm_rnode *n = rnode_new(b, R_WUNION, w, r);
        if (!n || !(n->sub = calloc(w->n, sizeof *n->sub))) {
            b->nomem = true;
            return NULL;
        }
        size_t ok = 0;
        for (size_t i = 0; i < w->n; i++) {
            char bwhy[512];
            n->sub[i] = resolve(b, w->branches[i], r, depth + 1, bwhy, sizeof bwhy);
            if (b->nomem)
                return NULL;
            if (n->sub[i]) {
                ok++;
                continue;
            }
            /* Only an error for a datum that takes this branch. */
            if (!(n->sub[i] = rnode_new(b, R_FAIL, w->branches[i], r)) ||
                !(n->sub[i]->why = strdup(bwhy))) {
                b->nomem = true;
                return NULL;
            }
        }
        if (!ok)
            return resolve_fail(b, why, whylen, "no branch of the writer's union can be read "
                                "as the reader's %s", type_label(r));
        return n;
    }
    if (r->type == S_UNION) {
        long k = reader_branch(w, r);
        if (k < 0)
            return resolve_fail(b, why, whylen, "the writer's %s matches no branch of the "
                                "reader's union", type_label(w));
        pm_rnode *n = rnode_new(b, R_RUNION, w, r);
        if (!n)
            return NULL;
        n->items = resolve(b, w, r->branches[k], depth + 1, why, whylen);
        return n->items ? n : NULL;
    }
    if (w->type != r->type) {
        if (promotable(w->type, r->type))
            return rnode_new(b, R_PROMOTE, w, r);
        return resolve_fail(b, why, whylen, "the writer's %s cannot be read as the reader's %s",
                            type_label(w), type_label(r));
    }
    switch (w->type) {
    case S_RECORD:
        if (!names_match(w, r))
            return resolve_fail(b, why, whylen, "the writer's record %s is not the reader's %s "
                                "(names differ, and no alias of %s names it)", w->name,
                                r->name, r->name);
        return resolve_record(b, w, r, depth, why, whylen);
    case S_ENUM: {
        if (!names_match(w, r))
            return resolve_fail(b, why, whylen, "the writer's enum %s is not the reader's %s",
                                w->name, r->name);
        pm_rnode *n = rnode_new(b, R_ENUM, w, r);
        if (!n || !(n->map = malloc(w->n * sizeof *n->map))) {
            b->nomem = true;
            return NULL;
        }
        for (size_t i = 0; i < w->n; i++) {
            n->map[i] = -1;
            for (size_t k = 0; k < r->n; k++)
                if (strcmp(w->symbols[i], r->symbols[k]) == 0)
                    n->map[i] = (long)k;
        }
        return n;
    }
    case S_ARRAY:
    case S_MAP: {
        pm_rnode *n = rnode_new(b, w->type == S_ARRAY ? R_ARRAY : R_MAP, w, r);
        if (!n)
            return NULL;
        n->items = resolve(b, w->items, r->items, depth + 1, why, whylen);
        return n->items ? n : NULL;
    }
    case S_FIXED:
        return resolve_fail(b, why, whylen, "fixed cannot be read");
    default:
        return rnode_new(b, R_DIRECT, w, r);
    }
}

static int res_value(bin_reader *rd, const pm_rnode *n, json_t **out);

static int item_res(bin_reader *rd, const void *item, json_t **out)
{
    return res_value(rd, item, out);
}

static int res_record(bin_reader *rd, const pm_rnode *n, json_t **out)
{
    const pm_snode *w = n->w, *r = n->r;
    json_t **slot = calloc(r->n ? r->n : 1, sizeof *slot);
    json_t *o = NULL;
    int rc = 0;
    if (!slot)
        return bin_nomem(rd);
    for (size_t i = 0; i < w->n && rc == 0; i++) {
        long j = n->map[i];
        size_t old = path_push(&rd->path, j >= 0 ? r->fields[j].name : w->fields[i].name);
        rc = j >= 0 ? res_value(rd, n->sub[i], &slot[j])
                    : bin_value(rd, w->fields[i].type, NULL); /* skipped */
        path_pop(&rd->path, old);
    }
    if (rc == 0 && !(o = json_object()))
        rc = bin_nomem(rd);
    for (size_t j = 0; j < r->n; j++) {
        if (rc == 0 && !slot[j] && !(slot[j] = json_deep_copy(r->fields[j].def)))
            rc = bin_nomem(rd);
        if (rc == 0 && json_object_set_new(o, r->fields[j].name, slot[j]) != 0)
            rc = bin_nomem(rd);
        else if (rc != 0)
            json_decref(slot[j]);
        slot[j] = NULL;
    }
    free(slot);
    if (rc != 0) {
        json_decref(o);
        return -1;
    }
    *out = o;
    return 0;
}

static int res_reject(bin_reader *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A well-formed datum with no value in the reader's schema. */
static int res_reject(bin_reader *rd, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_reject(rd->err, "avro.resolve", rd->path.buf, "%s", msg);
}

static int res_value(bin_reader *rd, const pm_rnode *n, json_t **out)
{
    int64_t l;
    json_t *v = NULL;
    int rc = 0;
    if (++rd->depth > 2 * PM_MAX_DEPTH) {
        rd->depth--;
        return bin_fail(rd, "nested deeper than %d", 2 * PM_MAX_DEPTH);
    }
    switch (n->kind) {
    case R_DIRECT:
        rc = bin_value(rd, n->w, &v);
        break;
    case R_PROMOTE:
        if (n->w->type == S_INT || n->w->type == S_LONG) {
            if ((rc = bin_long(rd, &l)) != 0)
                break;
            if (n->w->type == S_INT && (l < INT32_MIN || l > INT32_MAX)) {
                rc = bin_fail(rd, "int value %" PRId64 " out of 32-bit range", l);
                break;
            }
            v = n->r->type == S_LONG    ? json_integer(l)
                : n->r->type == S_FLOAT ? json_real((double)(float)l)
                                        : json_real((double)l);
        } else {
            rc = bin_value(rd, n->w, &v); /* float as double, bytes as string */
        }
        break;
    case R_RECORD:
        rc = res_record(rd, n, &v);
        break;
    case R_ENUM:
        if ((rc = bin_long(rd, &l)) != 0)
            break;
        if (l < 0 || (uint64_t)l >= n->w->n) {
            rc = bin_fail(rd, "enum index %" PRId64 " outside 0..%zu", l, n->w->n - 1);
            break;
        }
        if (n->map[l] < 0 && n->r->enum_default < 0) {
            rc = res_reject(rd, "the writer's symbol %s is not in the reader's enum %s, which "
                            "has no default", n->w->symbols[l], n->r->name);
            break;
        }
        v = json_string(n->r->symbols[n->map[l] >= 0 ? n->map[l] : n->r->enum_default]);
        break;
    case R_ARRAY:
        rc = bin_array_of(rd, n->w, item_res, n->items, &v);
        break;
    case R_MAP:
        rc = bin_map_of(rd, n->w, item_res, n->items, &v);
        break;
    case R_WUNION:
        if ((rc = bin_long(rd, &l)) != 0)
            break;
        if (l < 0 || (uint64_t)l >= n->w->n) {
            rc = bin_fail(rd, "union branch %" PRId64 " outside 0..%zu", l, n->w->n - 1);
            break;
        }
        rc = res_value(rd, n->sub[l], &v);
        break;
    case R_RUNION:
        rc = res_value(rd, n->items, &v);
        break;
    case R_FAIL:
        rc = res_reject(rd, "the writer's %s cannot be read: %s", type_label(n->w), n->why);
        break;
    }
    rd->depth--;
    if (rc != 0)
        return -1;
    if (!v)
        return bin_nomem(rd);
    *out = v;
    return 0;
}

void pm_schema_writer_destroy(pm_schema_writer *sw)
{
    if (!sw)
        return;
    for (size_t i = 0; i < sw->nodes_len; i++) {
        free(sw->nodes[i]->map);
        free(sw->nodes[i]->sub);
        free(sw->nodes[i]->why);
        free(sw->nodes[i]);
    }
    free(sw->nodes);
    tree_free(&sw->wtree);
    tree_free(&sw->rtree);
    free(sw);
}

int pm_schema_writer_create(const char *writer_json, size_t len, const char *reader_json,
                            pm_schema_writer **out, pm_error *err)
{
    *out = NULL;
    if (need_init(err) != 0)
        return -1;
    pm_schema_writer *sw = calloc(1, sizeof *sw);
    if (!sw)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    sw->wroot = build_text(writer_json, len, true, &sw->wtree, err);
    if (!sw->wroot) {
        pm_error_prefix(err, "the writer schema");
        pm_schema_writer_destroy(sw);
        return -1;
    }
    if (reader_json) {
        pm_snode *rr = build_text(reader_json, strlen(reader_json), false, &sw->rtree, err);
        if (!rr) {
            pm_error_prefix(err, "the reader schema");
            pm_schema_writer_destroy(sw);
            return -1;
        }
        sw->rroot = rr;
    } else {
        sw->rroot = schema_root;
    }
    sw->identity = same_tree(sw->wroot, sw->rroot, 0);
    if (!sw->identity) {
        rbuild b = {.sw = sw};
        char why[600];
        path_init(&b.path);
        sw->root = resolve(&b, sw->wroot, sw->rroot, 0, why, sizeof why);
        free(b.memo);
        if (!sw->root) {
            if (b.nomem)
                pm_error_set(err, PM_ERR_NOMEM, "out of memory resolving the writer schema");
            else
                pm_error_set(err, PM_ERR_FORMAT, "the writer schema %s cannot be read as %s: %s",
                             sw->wroot->name, sw->rroot->name, why);
            pm_schema_writer_destroy(sw);
            return -1;
        }
    }
    *out = sw;
    return 0;
}

bool pm_schema_writer_is_reader(const pm_schema_writer *sw)
{
    return sw->identity;
}

size_t pm_schema_writer_min_size(const pm_schema_writer *sw)
{
    return sw->wroot->min_size;
}

int pm_schema_writer_decode(const pm_schema_writer *sw, const unsigned char *data, size_t len,
                            size_t *used, json_t **out, pm_error *err)
{
    if (!sw)
        return pm_schema_avro_decode(data, len, used, out, err);
    bin_reader r = {.p = data, .len = len, .pos = 0, .depth = 0, .err = err};
    path_init(&r.path);
    int rc = !out || sw->identity ? bin_value(&r, sw->wroot, out) : res_value(&r, sw->root, out);
    if (rc != 0)
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
    case S_BYTES:
    case S_FIXED:
        return pm_error_set(err, PM_ERR_INTERNAL, "the compiled schema has no %s",
                            stype_name(n->type));
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
    case S_BYTES:
    case S_FIXED:
        return pm_error_set(err, PM_ERR_INTERNAL, "the compiled schema has no %s",
                            stype_name(n->type));
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

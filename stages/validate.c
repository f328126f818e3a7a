/*
 * validate.c - stage 1: business rules on the normalized record.
 * See validate.h for the contract and docs/rejects.md for every code.
 */
#include "stages/validate.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rfc3339.h"
#include "core/utf8.h"
#include "wallet/template.h"

/* ------------------------------------------------------------------ */
/* ISO 4217                                                           */
/* ------------------------------------------------------------------ */

/*
 * Active ISO 4217 alphabetic codes, sorted.  Generated once from Debian's
 * iso-codes 4.15.0 (/usr/share/iso-codes/json/iso_4217.json, all 181
 * entries); no runtime dependency on that package.
 */
static const char currencies[][4] = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR",
    "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW",
    "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE",
    "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWL",
};

static int currency_cmp(const void *key, const void *elem)
{
    return memcmp(key, elem, 3);
}

bool pm_currency_is_active(const char *code, size_t len)
{
    if (len != 3)
        return false;
    return bsearch(code, currencies, sizeof currencies / sizeof currencies[0],
                   sizeof currencies[0], currency_cmp) != NULL;
}

/* ------------------------------------------------------------------ */
/* Rejects: field paths and safe quoting                              */
/* ------------------------------------------------------------------ */

typedef struct vstate {
    const pm_template_set *templates; /* borrowed from the context */
    pm_tz_set *tz;                    /* owned */
} vstate;

/* One validation run: where rejects go. */
typedef struct vc {
    pm_error *err;
    const vstate *st;
} vc;

/*
 * A field path, formatted only when a reject needs it:
 * base | base.leaf | base[index] | base[index].leaf.  `what` (optional) is
 * shown after the path in messages, e.g. "metadata (key)".
 */
typedef struct fpath {
    const char *base;
    long index;       /* -1: not an array element */
    const char *leaf; /* NULL: none */
    const char *what; /* NULL: none */
} fpath;

#define FP(s) (&(fpath){(s), -1, NULL, NULL})
#define FPI(s, i, l) (&(fpath){(s), (long)(i), (l), NULL})

static void path_format(const fpath *p, char *out, size_t n)
{
    if (p->index >= 0)
        snprintf(out, n, p->leaf ? "%s[%ld].%s" : "%s[%ld]", p->base, p->index, p->leaf);
    else
        snprintf(out, n, p->leaf ? "%s.%s" : "%s", p->base, p->leaf);
}

static int reject(vc *v, const char *code, const fpath *p, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int reject(vc *v, const char *code, const fpath *p, const char *fmt, ...)
{
    char field[sizeof v->err->field], msg[sizeof v->err->message];
    path_format(p, field, sizeof field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_reject(v->err, code, field, "%s%s%s%s: %s", field[0] ? field : "record",
                     p->what ? " (" : "", p->what ? p->what : "", p->what ? ")" : "", msg);
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F);
}

#define QUOTE_BYTES 40
#define QUOTE_BUF (QUOTE_BYTES * 4 + 8)

/*
 * s[0..len) as a double-quoted string for a message: at most QUOTE_BYTES
 * input bytes (cut at a character boundary, then "..."), printable ASCII and
 * valid non-control UTF-8 kept, '"' and '\' escaped, anything else \xNN.
 */
static const char *quote(char out[QUOTE_BUF], const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    out[o++] = '"';
    while (i < len && i < QUOTE_BYTES) {
        uint32_t cp;
        int n = (int)pm_utf8_next(u + i, len - i, &cp);
        if (n > 1 && !is_control(cp)) {
            if (i + (size_t)n > QUOTE_BYTES)
                break;
            memcpy(out + o, s + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
            continue;
        }
        unsigned char c = u[i++];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7F) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, 5, "\\x%02X", c);
        }
    }
    out[o++] = '"';
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* Shortest "%g" form that reads back as d. */
static const char *fmt_double(char out[32], double d)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return out;
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

/* ------------------------------------------------------------------ */
/* Shape (decode guarantees it; checked so a bad tree is a reject)    */
/* ------------------------------------------------------------------ */

static int member(vc *v, const fpath *p, json_t *obj, const char *name, json_t **out)
{
    *out = json_object_get(obj, name);
    if (!*out)
        return reject(v, "schema.missing", p, "expected the field to be present, found it missing");
    return 0;
}

static int want_type(vc *v, const fpath *p, json_t *j, json_type type, bool nullable, const char *what)
{
    if (json_typeof(j) == type || (nullable && json_is_null(j)))
        return 0;
    return reject(v, "schema.type", p, "expected %s%s, found %s", what,
                  nullable ? " or null" : "", json_type_name(j));
}

/* ------------------------------------------------------------------ */
/* Text                                                               */
/* ------------------------------------------------------------------ */

enum { UNIT_CHARS, UNIT_BYTES };

typedef struct text_spec {
    size_t max;        /* 0: no limit */
    int unit;          /* UNIT_CHARS or UNIT_BYTES */
    bool required;     /* non-empty and not only spaces (field.empty) */
    bool nullable;
    bool free_text;    /* tab and newline allowed */
    const char *too_long_code; /* NULL: "field.too_long" */
} text_spec;

typedef struct text {
    const char *s;     /* NULL when the value is null */
    size_t len;        /* bytes */
    size_t chars;      /* code points */
    uint32_t max_cp;   /* largest code point */
} text;

/* UTF-8 and control-character rules for s[0..len); fills chars and max_cp. */
static int scan_text(vc *v, const fpath *p, text *t, bool free_text)
{
    const unsigned char *u = (const unsigned char *)t->s;
    char q[QUOTE_BUF];
    t->chars = 0;
    t->max_cp = 0;
    for (size_t i = 0; i < t->len;) {
        uint32_t cp;
        int n = (int)pm_utf8_next(u + i, t->len - i, &cp);
        if (n == 0)
            return reject(v, "utf8.invalid", p,
                          "expected valid UTF-8, found byte 0x%02X at byte %zu of %s", u[i], i,
                          quote(q, t->s, t->len));
        if (is_control(cp) && !(free_text && (cp == '\t' || cp == '\n')))
            return reject(v, "text.control", p,
                          "expected no control characters%s, found U+%04X at byte %zu of %s",
                          free_text ? " other than tab and newline" : "", (unsigned)cp, i,
                          quote(q, t->s, t->len));
        if (cp > t->max_cp)
            t->max_cp = cp;
        t->chars++;
        i += (size_t)n;
    }
    return 0;
}

static bool only_spaces(const text *t)
{
    for (size_t i = 0; i < t->len; i++)
        if (t->s[i] != ' ')
            return false;
    return true;
}

/* A string value j at p under spec: type, UTF-8, controls, emptiness, length. */
static int text_value(vc *v, const fpath *p, json_t *j, const text_spec *spec, text *t)
{
    memset(t, 0, sizeof *t);
    if (want_type(v, p, j, JSON_STRING, spec->nullable, "a string"))
        return -1;
    if (json_is_null(j))
        return 0;
    t->s = json_string_value(j);
    t->len = json_string_length(j);
    if (scan_text(v, p, t, spec->free_text))
        return -1;
    char q[QUOTE_BUF];
    const char *unit = spec->unit == UNIT_BYTES ? "bytes" : "characters";
    if (spec->required && only_spaces(t))
        return reject(v, "field.empty", p, "expected 1..%zu %s of text, found %s", spec->max,
                      unit, t->len ? "only spaces" : "an empty string");
    size_t n = spec->unit == UNIT_BYTES ? t->len : t->chars;
    if (spec->max && n > spec->max)
        return reject(v, spec->too_long_code ? spec->too_long_code : "field.too_long", p,
                      "expected at most %zu %s, found %zu: %s", spec->max, unit, n,
                      quote(q, t->s, t->len));
    return 0;
}

/* The member `name` of obj (path base.name) as text. */
static int text_member(vc *v, json_t *obj, const char *path, const char *name,
                       const text_spec *spec, text *t)
{
    json_t *j;
    if (member(v, FP(path), obj, name, &j))
        return -1;
    return text_value(v, FP(path), j, spec, t);
}

static const text_spec ANY_STRING = {0, UNIT_CHARS, false, false, false, NULL};

/*
 * Identifier: 1..max bytes of [A-Za-z0-9_-] plus '.' when dot is true.
 * Returns NULL when valid, else what is wrong (for the message).
 */
static const char *id_problem(const text *t, size_t max, bool dot, char buf[64])
{
    if (t->len == 0)
        return "it is empty";
    if (t->len > max) {
        snprintf(buf, 64, "it has %zu characters", t->len);
        return buf;
    }
    for (size_t i = 0; i < t->len; i++) {
        char c = t->s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || (dot && c == '.'))) {
            snprintf(buf, 64, "invalid character at byte %zu", i);
            return buf;
        }
    }
    return NULL;
}

static int check_id(vc *v, const fpath *p, const text *t, const char *code, size_t max, bool dot)
{
    char buf[64], q[QUOTE_BUF];
    const char *why = id_problem(t, max, dot, buf);
    if (!why)
        return 0;
    return reject(v, code, p, "expected 1..%zu characters of [A-Za-z0-9%s_-], found %s (%s)", max,
                  dot ? "." : "", quote(q, t->s, t->len), why);
}

static bool text_eq(const text *t, const char *lit)
{
    size_t n = strlen(lit);
    return t->len == n && memcmp(t->s, lit, n) == 0;
}

static bool text_eq_nocase(const text *t, const char *lit)
{
    size_t n = strlen(lit);
    if (t->len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t->s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Timestamps                                                         */
/* ------------------------------------------------------------------ */

static bool digits(const char *s, int n, int *out)
{
    int val = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        val = val * 10 + (s[i] - '0');
    }
    *out = val;
    return true;
}

#define TIME_EXPECTED "an RFC 3339 timestamp with offset, YYYY-MM-DDTHH:MM:SS[.frac] then Z or +hh:mm/-hh:mm"

/*
 * RFC 3339 with explicit offset, the same grammar as pm_rfc3339_parse (see
 * validate.h); on success *out is unix seconds.  Layout errors and
 * out-of-range times or offsets are time.format, impossible calendar dates
 * time.invalid_date.
 */
static int parse_time(vc *v, const fpath *p, const text *t, int64_t *out)
{
    const char *s = t->s;
    size_t len = t->len;
    char q[QUOTE_BUF];
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    size_t i = 19;
    bool ok = len >= 20 && digits(s, 4, &y) && s[4] == '-' && digits(s + 5, 2, &mo) && s[7] == '-' &&
              digits(s + 8, 2, &d) && (s[10] == 'T' || s[10] == 't') && digits(s + 11, 2, &h) &&
              s[13] == ':' && digits(s + 14, 2, &mi) && s[16] == ':' && digits(s + 17, 2, &sec);
    if (ok && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        ok = i > start;
    }
    if (ok && i < len && (s[i] == 'Z' || s[i] == 'z')) {
        ok = i + 1 == len;
    } else if (ok && i < len && (s[i] == '+' || s[i] == '-')) {
        sign = s[i] == '-' ? -1 : 1;
        ok = i + 6 == len && digits(s + i + 1, 2, &oh) && s[i + 3] == ':' && digits(s + i + 4, 2, &om);
    } else {
        ok = false;
    }
    if (!ok)
        return reject(v, "time.format", p, "expected %s, found %s", TIME_EXPECTED,
                      quote(q, s, len));
    if (!pm_date_valid(y, (unsigned)mo, (unsigned)d))
        return reject(v, "time.invalid_date", p,
                      "expected a real calendar date (years 0001..9999), found %.10s in %s", s,
                      quote(q, s, len));
    if (h > 23 || mi > 59 || sec > 59)
        return reject(v, "time.format", p,
                      "expected a time of day 00:00:00..23:59:59 (no leap second), found %.8s in %s",
                      s + 11, quote(q, s, len));
    if (om > 59 || oh * 60 + om > 14 * 60)
        return reject(v, "time.format", p, "expected an offset within -14:00..+14:00, found %.6s in %s",
                      s + len - 6, quote(q, s, len));
    *out = pm_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec -
           (int64_t)sign * (oh * 60 + om) * 60;
    return 0;
}

/* A timestamp member: *present false when null (nullable only). */
static int time_member(vc *v, json_t *obj, const char *path, const char *name, bool nullable,
                       bool *present, int64_t *out, text *t)
{
    const text_spec spec = {0, UNIT_CHARS, false, nullable, false, NULL};
    if (text_member(v, obj, path, name, &spec, t))
        return -1;
    *present = t->s != NULL;
    return *present ? parse_time(v, FP(path), t, out) : 0;
}

/* ------------------------------------------------------------------ */
/* Sections, in schema field order                                    */
/* ------------------------------------------------------------------ */

static int check_action(vc *v, json_t *rec, const char **status)
{
    static const struct { const char *action, *status; } map[] = {
        {"ISSUE", "active"}, {"UPDATE", "active"}, {"VOID", "voided"},
        {"EXPIRE", "expired"}, {"REDEEM", "redeemed"}, {"ACTIVATE", "active"},
    };
    text t;
    if (text_member(v, rec, "action", "action", &ANY_STRING, &t))
        return -1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (text_eq(&t, map[i].action)) {
            *status = map[i].status;
            return 0;
        }
    char q[QUOTE_BUF];
    return reject(v, "action.unknown", FP("action"),
                  "expected ISSUE, UPDATE, VOID, EXPIRE, REDEEM or ACTIVATE, found %s", quote(q, t.s, t.len));
}

static int check_template(vc *v, json_t *rec, const pm_template **tmpl)
{
    text t;
    if (text_member(v, rec, "template_id", "template_id", &ANY_STRING, &t) ||
        check_id(v, FP("template_id"), &t, "template.format", PM_ID_MAX, true))
        return -1;
    *tmpl = pm_template_set_find(v->st->templates, t.s);
    if (!*tmpl) {
        char q[QUOTE_BUF];
        return reject(v, "template.unknown", FP("template_id"),
                      "expected the id of a loaded template (%zu loaded), found %s",
                      pm_template_set_count(v->st->templates), quote(q, t.s, t.len));
    }
    return 0;
}

/* strip_image: null (the template's own strip) or one of its strips/<name>.png variants. */
static int check_strip(vc *v, json_t *rec, const pm_template *tmpl)
{
    static const text_spec spec = {64, UNIT_CHARS, true, true, false, NULL};
    text t;
    json_t *j = json_object_get(rec, "strip_image");
    if (!j || json_is_null(j)) /* absent: a record older than the field (a registry row) */
        return 0;
    if (text_value(v, FP("strip_image"), j, &spec, &t))
        return -1;
    if (pm_template_find_strip(tmpl, t.s))
        return 0;
    char q[QUOTE_BUF], names[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < tmpl->strips_len && used < sizeof names - 70; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                 tmpl->strips[i].name);
    return reject(v, "strip_image.unknown", FP("strip_image"),
                  "expected the name of a strip image of template %s (%s), found %s", tmpl->id,
                  tmpl->strips_len ? names : "it has none: no strips/ folder",
                  quote(q, t.s, t.len));
}

static int check_pass_groups(vc *v, json_t *rec)
{
    json_t *arr;
    if (member(v, FP("pass_group_ids"), rec, "pass_group_ids", &arr) ||
        want_type(v, FP("pass_group_ids"), arr, JSON_ARRAY, false, "an array"))
        return -1;
    size_t n = json_array_size(arr);
    if (n > PM_PASS_GROUPS_MAX)
        return reject(v, "pass_group.count", FP("pass_group_ids"), "expected at most %d ids, found %zu",
                      PM_PASS_GROUPS_MAX, n);
    for (size_t i = 0; i < n; i++) {
        const fpath *p = FPI("pass_group_ids", i, NULL);
        text t;
        if (text_value(v, p, json_array_get(arr, i), &ANY_STRING, &t) ||
            check_id(v, p, &t, "pass_group.format", PM_ID_MAX, true))
            return -1;
        for (size_t k = 0; k < i; k++) {
            json_t *o = json_array_get(arr, k);
            if (json_string_length(o) == t.len && memcmp(json_string_value(o), t.s, t.len) == 0) {
                char q[QUOTE_BUF];
                return reject(v, "pass_group.duplicate", p,
                              "expected unique ids, found %s again (also pass_group_ids[%zu])",
                              quote(q, t.s, t.len), k);
            }
        }
    }
    return 0;
}

static int check_event(vc *v, json_t *rec)
{
    static const text_spec event_id = {128, UNIT_CHARS, false, true, false, NULL};
    static const text_spec name = {200, UNIT_CHARS, true, false, false, NULL};
    static const text_spec address = {500, UNIT_CHARS, false, true, true, NULL};
    json_t *ev;
    if (member(v, FP("event"), rec, "event", &ev) ||
        want_type(v, FP("event"), ev, JSON_OBJECT, false, "an object"))
        return -1;
    text t, doors_t, start_t;
    if (text_member(v, ev, "event.event_id", "event_id", &event_id, &t) ||
        text_member(v, ev, "event.name", "name", &name, &t) ||
        text_member(v, ev, "event.venue_title", "venue_title", &name, &t) ||
        text_member(v, ev, "event.venue_address", "venue_address", &address, &t) ||
        text_member(v, ev, "event.time_zone", "time_zone", &ANY_STRING, &t))
        return -1;
    char q[QUOTE_BUF], q2[QUOTE_BUF];
    if (!pm_tz_set_has(v->st->tz, t.s, t.len))
        return reject(v, "time_zone.unknown", FP("event.time_zone"),
                      "expected an IANA time zone name such as Europe/London, found %s",
                      quote(q, t.s, t.len));
    bool has_doors, has_start, has_end;
    int64_t doors = 0, start = 0, end = 0;
    if (time_member(v, ev, "event.doors_open", "doors_open", true, &has_doors, &doors, &doors_t) ||
        time_member(v, ev, "event.start", "start", false, &has_start, &start, &start_t))
        return -1;
    if (has_doors && doors > start)
        return reject(v, "event.doors_after_start", FP("event.doors_open"),
                      "expected doors to open at or before event.start %s, found %s",
                      quote(q, start_t.s, start_t.len), quote(q2, doors_t.s, doors_t.len));
    if (time_member(v, ev, "event.end", "end", true, &has_end, &end, &t))
        return -1;
    if (has_end && end < start)
        return reject(v, "event.end_before_start", FP("event.end"),
                      "expected an end at or after event.start %s, found %s",
                      quote(q, start_t.s, start_t.len), quote(q2, t.s, t.len));
    return 0;
}

static int check_money(vc *v, json_t *fv)
{
    json_t *amount;
    text cur;
    char q[QUOTE_BUF];
    if (member(v, FP("attendee.face_value.amount_micros"), fv, "amount_micros", &amount) ||
        want_type(v, FP("attendee.face_value.amount_micros"), amount, JSON_INTEGER, false,
                  "an integer"))
        return -1;
    json_int_t micros = json_integer_value(amount);
    if (micros < 0)
        return reject(v, "money.negative", FP("attendee.face_value.amount_micros"),
                      "expected an amount of 0 or more micros, found %" JSON_INTEGER_FORMAT, micros);
    if (micros > PM_MONEY_MAX_MICROS)
        return reject(v, "money.too_large", FP("attendee.face_value.amount_micros"),
                      "expected at most 10^15 micros (10^9 units), found %" JSON_INTEGER_FORMAT, micros);
    if (text_member(v, fv, "attendee.face_value.currency", "currency", &ANY_STRING, &cur))
        return -1;
    if (pm_currency_is_active(cur.s, cur.len))
        return 0;
    char upper[4] = {0};
    bool letters = cur.len == 3;
    for (size_t i = 0; letters && i < 3; i++) {
        char c = cur.s[i];
        letters = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        upper[i] = (char)(c >= 'a' ? c - 'a' + 'A' : c);
    }
    if (letters && pm_currency_is_active(upper, 3))
        return reject(v, "money.currency", FP("attendee.face_value.currency"),
                      "expected an uppercase ISO 4217 code, found %s (did you mean \"%s\"?)",
                      quote(q, cur.s, cur.len), upper);
    return reject(v, "money.currency", FP("attendee.face_value.currency"),
                  "expected an active ISO 4217 alphabetic code such as GBP, USD or EUR, found %s",
                  quote(q, cur.s, cur.len));
}

static int check_attendee(vc *v, json_t *rec)
{
    static const struct { const char *name, *path; size_t max; } fields[] = {
        {"holder_name", "attendee.holder_name", 200},
        {"seat", "attendee.seat", 32},
        {"row", "attendee.row", 32},
        {"section", "attendee.section", 64},
        {"gate", "attendee.gate", 64},
        {"ticket_type", "attendee.ticket_type", 64},
        {"ticket_number", "attendee.ticket_number", 64},
        {"confirmation_code", "attendee.confirmation_code", 64},
    };
    json_t *at, *fv;
    if (member(v, FP("attendee"), rec, "attendee", &at) ||
        want_type(v, FP("attendee"), at, JSON_OBJECT, false, "an object"))
        return -1;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const text_spec spec = {fields[i].max, UNIT_CHARS, false, true, false, NULL};
        text t;
        if (text_member(v, at, fields[i].path, fields[i].name, &spec, &t))
            return -1;
    }
    if (member(v, FP("attendee.face_value"), at, "face_value", &fv) ||
        want_type(v, FP("attendee.face_value"), fv, JSON_OBJECT, true, "an object"))
        return -1;
    return json_is_null(fv) ? 0 : check_money(v, fv);
}

static int check_barcode(vc *v, json_t *rec)
{
    /* Free text (tab/newline allowed); emptiness and size are checked below as
       barcode.message, one code for "not a usable barcode payload". */
    static const text_spec message = {0, UNIT_BYTES, false, false, true, NULL};
    static const text_spec alt_text = {128, UNIT_CHARS, false, true, false, NULL};
    static const char *const formats[] = {"QRCODE", "AZTEC", "PDF417", "CODE128"};
    json_t *bc;
    char q[QUOTE_BUF];
    if (member(v, FP("barcode"), rec, "barcode", &bc) ||
        want_type(v, FP("barcode"), bc, JSON_OBJECT, false, "an object"))
        return -1;
    text fmt, msg, alt, enc;
    if (text_member(v, bc, "barcode.format", "format", &ANY_STRING, &fmt))
        return -1;
    bool known = false;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        known = known || text_eq(&fmt, formats[i]);
    if (!known)
        return reject(v, "barcode.format", FP("barcode.format"),
                      "expected QRCODE, AZTEC, PDF417 or CODE128, found %s", quote(q, fmt.s, fmt.len));
    json_t *mj;
    if (member(v, FP("barcode.message"), bc, "message", &mj))
        return -1;
    if (text_value(v, FP("barcode.message"), mj, &message, &msg))
        return -1;
    if (msg.len == 0 || msg.len > PM_BARCODE_MESSAGE_MAX)
        return reject(v, "barcode.message", FP("barcode.message"),
                      "expected 1..%d bytes or \"autogenerate\", found %zu bytes%s%s",
                      PM_BARCODE_MESSAGE_MAX, msg.len, msg.len ? ": " : "",
                      msg.len ? quote(q, msg.s, msg.len) : "");
    if (text_member(v, bc, "barcode.alt_text", "alt_text", &alt_text, &alt) ||
        text_member(v, bc, "barcode.encoding", "encoding", &ANY_STRING, &enc))
        return -1;
    bool latin1 = text_eq_nocase(&enc, "iso-8859-1");
    if (!latin1 && !text_eq_nocase(&enc, "utf-8"))
        return reject(v, "barcode.encoding", FP("barcode.encoding"),
                      "expected iso-8859-1 or utf-8, found %s", quote(q, enc.s, enc.len));
    if (latin1 && msg.max_cp > 0xFF)
        return reject(v, "barcode.charset", FP("barcode.message"),
                      "expected only characters up to U+00FF for encoding iso-8859-1, found U+%04X in %s",
                      (unsigned)msg.max_cp, quote(q, msg.s, msg.len));
    return 0;
}

static int check_locations(vc *v, json_t *rec)
{
    static const text_spec relevant = {256, UNIT_CHARS, false, true, true, NULL};
    json_t *arr;
    if (member(v, FP("locations"), rec, "locations", &arr) ||
        want_type(v, FP("locations"), arr, JSON_ARRAY, false, "an array"))
        return -1;
    size_t n = json_array_size(arr);
    if (n > PM_LOCATIONS_MAX)
        return reject(v, "locations.count", FP("locations"), "expected at most %d locations, found %zu",
                      PM_LOCATIONS_MAX, n);
    static const struct { const char *name, *code; double lim; } coords[] = {
        {"latitude", "location.latitude", 90.0},
        {"longitude", "location.longitude", 180.0},
    };
    for (size_t i = 0; i < n; i++) {
        json_t *loc = json_array_get(arr, i), *j;
        char num[32];
        if (want_type(v, FPI("locations", i, NULL), loc, JSON_OBJECT, false, "an object"))
            return -1;
        for (size_t c = 0; c < 2; c++) {
            const fpath *p = FPI("locations", i, coords[c].name);
            if (member(v, p, loc, coords[c].name, &j))
                return -1;
            if (!json_is_number(j))
                return want_type(v, p, j, JSON_REAL, false, "a number");
            double d = json_number_value(j);
            if (!isfinite(d) || d < -coords[c].lim || d > coords[c].lim)
                return reject(v, coords[c].code, p, "expected %s in -%g..%g degrees, found %s",
                              coords[c].name, coords[c].lim, coords[c].lim, fmt_double(num, d));
        }
        const fpath *pa = FPI("locations", i, "altitude");
        if (member(v, pa, loc, "altitude", &j))
            return -1;
        if (!json_is_null(j)) {
            if (!json_is_number(j))
                return want_type(v, pa, j, JSON_REAL, true, "a number");
            if (!isfinite(json_number_value(j)))
                return reject(v, "location.altitude", pa, "expected a finite number of metres, found %s",
                              fmt_double(num, json_number_value(j)));
        }
        const fpath *pr = FPI("locations", i, "relevant_text");
        text t;
        if (member(v, pr, loc, "relevant_text", &j) || text_value(v, pr, j, &relevant, &t))
            return -1;
    }
    return 0;
}

static bool is_uuid(const text *t)
{
    if (t->len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = t->s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

static int check_beacons(vc *v, json_t *rec)
{
    static const text_spec relevant = {256, UNIT_CHARS, false, true, true, NULL};
    static const struct { const char *name, *code; } ids[] = {
        {"major", "beacon.major"}, {"minor", "beacon.minor"},
    };
    json_t *arr;
    if (member(v, FP("beacons"), rec, "beacons", &arr) ||
        want_type(v, FP("beacons"), arr, JSON_ARRAY, false, "an array"))
        return -1;
    size_t n = json_array_size(arr);
    if (n > PM_BEACONS_MAX)
        return reject(v, "beacons.count", FP("beacons"), "expected at most %d beacons, found %zu",
                      PM_BEACONS_MAX, n);
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(arr, i), *j;
        char q[QUOTE_BUF];
        text t;
        if (want_type(v, FPI("beacons", i, NULL), b, JSON_OBJECT, false, "an object"))
            return -1;
        const fpath *pu = FPI("beacons", i, "proximity_uuid");
        if (member(v, pu, b, "proximity_uuid", &j) || text_value(v, pu, j, &ANY_STRING, &t))
            return -1;
        if (!is_uuid(&t))
            return reject(v, "beacon.uuid", pu,
                          "expected a UUID of 8-4-4-4-12 hexadecimal digits, found %s",
                          quote(q, t.s, t.len));
        for (size_t k = 0; k < 2; k++) {
            const fpath *p = FPI("beacons", i, ids[k].name);
            if (member(v, p, b, ids[k].name, &j) ||
                want_type(v, p, j, JSON_INTEGER, true, "an integer"))
                return -1;
            if (json_is_integer(j) && (json_integer_value(j) < 0 || json_integer_value(j) > 65535))
                return reject(v, ids[k].code, p, "expected 0..65535, found %" JSON_INTEGER_FORMAT,
                              json_integer_value(j));
        }
        const fpath *pr = FPI("beacons", i, "relevant_text");
        if (member(v, pr, b, "relevant_text", &j) || text_value(v, pr, j, &relevant, &t))
            return -1;
    }
    return 0;
}

static int check_custom_fields(vc *v, json_t *rec)
{
    static const text_spec label = {64, UNIT_CHARS, true, false, false, NULL};
    static const text_spec value = {256, UNIT_CHARS, false, false, true, NULL};
    json_t *arr;
    if (member(v, FP("custom_fields"), rec, "custom_fields", &arr) ||
        want_type(v, FP("custom_fields"), arr, JSON_ARRAY, false, "an array"))
        return -1;
    size_t n = json_array_size(arr);
    if (n > PM_CUSTOM_FIELDS_MAX)
        return reject(v, "custom.count", FP("custom_fields"), "expected at most %d custom fields, found %zu",
                      PM_CUSTOM_FIELDS_MAX, n);
    for (size_t i = 0; i < n; i++) {
        json_t *cf = json_array_get(arr, i), *j;
        text key, t;
        if (want_type(v, FPI("custom_fields", i, NULL), cf, JSON_OBJECT, false, "an object"))
            return -1;
        const fpath *pk = FPI("custom_fields", i, "key");
        if (member(v, pk, cf, "key", &j) || text_value(v, pk, j, &ANY_STRING, &key) ||
            check_id(v, pk, &key, "custom.key", PM_CUSTOM_KEY_MAX, false))
            return -1;
        for (size_t k = 0; k < i; k++) {
            /* Earlier keys already passed check_id, so they are strings. */
            const char *other = json_string_value(json_object_get(json_array_get(arr, k), "key"));
            if (other && strlen(other) == key.len && memcmp(other, key.s, key.len) == 0) {
                char q[QUOTE_BUF];
                return reject(v, "custom.duplicate", pk,
                              "expected unique keys, found %s again (also custom_fields[%zu].key)",
                              quote(q, key.s, key.len), k);
            }
        }
        const fpath *pl = FPI("custom_fields", i, "label");
        if (member(v, pl, cf, "label", &j) || text_value(v, pl, j, &label, &t))
            return -1;
        const fpath *pv = FPI("custom_fields", i, "value");
        if (member(v, pv, cf, "value", &j) || text_value(v, pv, j, &value, &t))
            return -1;
    }
    return 0;
}

static int check_metadata(vc *v, json_t *rec)
{
    static const text_spec value = {PM_METADATA_VALUE_MAX, UNIT_BYTES, false, false, true,
                                    "metadata.too_long"};
    json_t *obj;
    if (member(v, FP("metadata"), rec, "metadata", &obj) ||
        want_type(v, FP("metadata"), obj, JSON_OBJECT, false, "an object"))
        return -1;
    size_t n = json_object_size(obj);
    if (n > PM_METADATA_MAX)
        return reject(v, "metadata.count", FP("metadata"), "expected at most %d entries, found %zu",
                      PM_METADATA_MAX, n);
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        text key = {json_object_iter_key(it), json_object_iter_key_len(it), 0, 0}, t;
        const fpath pk = {"metadata", -1, NULL, "key"};
        char q[QUOTE_BUF];
        if (scan_text(v, &pk, &key, false))
            return -1;
        if (key.len > PM_METADATA_KEY_MAX)
            return reject(v, "metadata.too_long", &pk, "expected at most %d bytes, found %zu: %s",
                          PM_METADATA_KEY_MAX, key.len, quote(q, key.s, key.len));
        /* The key is now short, valid text without controls: safe in the path. */
        const fpath pv = {"metadata", -1, key.s, NULL};
        if (text_value(v, &pv, json_object_iter_value(it), &value, &t))
            return -1;
    }
    return 0;
}

/* A pass issued or updated must not expire before its event starts: Wallet
 * would show it expired, or drop it, before the doors open. */
static int check_expiration(vc *v, json_t *rec, const char *status)
{
    bool present, has_start;
    int64_t when, start;
    text t, start_t;
    if (time_member(v, rec, "expiration_date", "expiration_date", true, &present, &when, &t))
        return -1;
    if (!present || strcmp(status, "active") != 0)
        return 0;
    /* event.start was checked by check_event; read again for its instant */
    if (time_member(v, json_object_get(rec, "event"), "event.start", "start", false, &has_start,
                    &start, &start_t))
        return -1;
    char q[QUOTE_BUF], q2[QUOTE_BUF];
    if (when < start)
        return reject(v, "expiration.before_start", FP("expiration_date"),
                      "expected an expiration at or after event.start %s for an ISSUE or "
                      "UPDATE, found %s", quote(q, start_t.s, start_t.len), quote(q2, t.s, t.len));
    return 0;
}

static int validate_record(vc *v, json_t *rec, const pm_template **tmpl, const char **status)
{
    text t;
    bool present;
    int64_t when;
    if (!json_is_object(rec))
        return reject(v, "schema.type", FP(""), "expected an object, found %s",
                      rec ? json_type_name(rec) : "nothing");
    if (text_member(v, rec, "serial_number", "serial_number", &ANY_STRING, &t) ||
        check_id(v, FP("serial_number"), &t, "serial.format", PM_ID_MAX, true) ||
        check_action(v, rec, status) ||
        check_template(v, rec, tmpl) ||
        check_strip(v, rec, *tmpl) ||
        check_pass_groups(v, rec) ||
        check_event(v, rec) ||
        check_attendee(v, rec) ||
        check_barcode(v, rec) ||
        check_locations(v, rec) ||
        check_beacons(v, rec) ||
        time_member(v, rec, "relevant_date", "relevant_date", true, &present, &when, &t) ||
        check_expiration(v, rec, *status) ||
        check_custom_fields(v, rec) ||
        check_metadata(v, rec))
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Stage                                                              */
/* ------------------------------------------------------------------ */

static int validate_create(const pm_context *ctx, void **state, pm_error *err)
{
    *state = NULL;
    if (!ctx->templates)
        return pm_error_set(err, PM_ERR_CONFIG, "validate: no templates loaded");
    vstate *st = calloc(1, sizeof *st);
    if (!st)
        return pm_error_set(err, PM_ERR_NOMEM, "validate: out of memory");
    st->templates = ctx->templates;
    if (pm_tz_set_load(NULL, &st->tz, err) != 0) {
        pm_error_prefix(err, "validate");
        free(st);
        return -1;
    }
    *state = st;
    return 0;
}

static void validate_destroy(void *state)
{
    vstate *st = state;
    if (!st)
        return;
    pm_tz_set_destroy(st->tz);
    free(st);
}

static int validate_process(void *state, void *scratch, pm_job *job)
{
    (void)scratch;
    vc v = {&job->err, state};
    const pm_template *tmpl = NULL;
    const char *status = NULL;
    if (validate_record(&v, job->record, &tmpl, &status) != 0)
        return -1;
    job->tmpl = tmpl;
    job->status = status;
    return 0;
}

const pm_stage pm_stage_validate = {
    .name = "validate",
    .create = validate_create,
    .destroy = validate_destroy,
    .worker_create = NULL,
    .worker_destroy = NULL,
    .process = validate_process,
};

/*
 * canonical.c - the canonical text of a normalized record (see canonical.h).
 *
 * Every rule here is one of jansson 2.14's dump.c under JSON_COMPACT |
 * JSON_SORT_KEYS: members sorted by key bytes (shorter first on a tie),
 * "," and ":" without spaces, strings escaped as \" \\ \b \f \n \r \t and
 * \uXXXX (upper-case hex) for the other control characters, everything
 * else (non-ASCII included) written as it is, reals as "%.17g" with ".0"
 * added when the text has neither '.' nor 'e' and the exponent's '+' and
 * leading zeros dropped.
 */
#include "record/canonical.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

#define MAX_DEPTH 2048

/* One member of an object being written: its key and value. */
typedef struct member {
    const char *key;
    size_t len;
    const json_t *value;
} member;

/* Members on the stack up to this many per object (a record has ~16). */
enum { STACK_MEMBERS = 32 };

/* jansson's compare_keys: bytes, then length. */
static int key_cmp(const member *a, const member *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->key, b->key, n);
    if (c)
        return c;
    return (a->len > b->len) - (a->len < b->len);
}

/* Insertion sort: the keys are few, often nearly sorted already. */
static void sort_members(member *m, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        member x = m[i];
        size_t j = i;
        while (j > 0 && key_cmp(&m[j - 1], &x) > 0) {
            m[j] = m[j - 1];
            j--;
        }
        m[j] = x;
    }
}

static int put(pm_buf *out, const void *p, size_t n)
{
    return pm_buf_append(out, p, n);
}

/* One byte of punctuation: most of what a record's text is made of, by count. */
static inline int put1(pm_buf *out, char c)
{
    if (out->len + 2 > out->cap && pm_buf_reserve(out, 1) != 0) /* +1: pm_buf keeps a NUL's room */
        return -1;
    out->data[out->len++] = (uint8_t)c;
    return 0;
}

/* Some byte of the 8 in x is < 0x20, '"', '\\' or >= 0x80: one needs a look. */
static inline bool word_needs_look(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t control = x - ones * 0x20;  /* a byte below 0x20 borrows into its high bit */
    uint64_t zero_q = (quote - ones) & ~quote, zero_b = (backslash - ones) & ~backslash;
    return ((x | control | zero_q | zero_b) & highs) != 0;
}

static int put_string(pm_buf *out, const char *str, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str;
    /* Worst case: every byte a six-byte \u escape, plus the quotes. */
    if (len > (SIZE_MAX - 2) / 6 || pm_buf_reserve(out, len * 6 + 2) != 0)
        return -1;
    uint8_t *w = out->data + out->len;
    *w++ = '"';
    size_t i = 0;
    while (i < len) {
        /* Eight plain bytes at a time (most of a record), then byte by byte. */
        while (i + 8 <= len) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (word_needs_look(x))
                break;
            memcpy(w, &x, 8);
            w += 8;
            i += 8;
        }
        while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
            *w++ = s[i++];
        if (i == len)
            break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t n = pm_utf8_next(s + i, len - i, NULL);
            if (n == 0)
                return -1;
            memcpy(w, s + i, n);
            w += n;
            i += n;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 0xF];
        }
        i++;
    }
    *w++ = '"';
    out->len = (size_t)(w - out->data);
    return 0;
}

/* An integer as "%" JSON_INTEGER_FORMAT writes it. */
static int put_integer(pm_buf *out, json_int_t v)
{
    char b[24];
    char *p = b + sizeof b;
    /* unsigned arithmetic: the most negative value has no positive twin */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put(out, p, (size_t)(b + sizeof b - p));
}

/* jansson's jsonp_dtostr at its default precision (17). */
static int put_real(pm_buf *out, double d)
{
    if (!isfinite(d))
        return -1;
    /* A whole number below 10^15 (an altitude of 35.0): "%.17g" writes its
     * digits exactly, then ".0" follows; -0.0 and the rest go to snprintf. */
    if (d != 0 && fabs(d) < 1e15 && d == (double)(long long)d) {
        if (put_integer(out, (json_int_t)(long long)d) != 0)
            return -1;
        return put(out, ".0", 2);
    }
    char b[64];
    int n = snprintf(b, sizeof b, "%.17g", d);
    if (n < 0 || (size_t)n >= sizeof b - 3)
        return -1;
    size_t len = (size_t)n;
    if (!strchr(b, '.') && !strchr(b, 'e')) {
        memcpy(b + len, ".0", 3);
        len += 2;
    }
    char *e = strchr(b, 'e');
    if (e) {
        char *start = e + 1, *end = e + 2; /* the sign, then the digits */
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - b) + 1);
            len -= (size_t)(end - start);
        }
    }
    return put(out, b, len);
}

static int put_value(pm_buf *out, const json_t *v, const char *const *omit, int depth);

static int put_object(pm_buf *out, const json_t *obj, const char *const *omit, int depth)
{
    size_t n = json_object_size(obj);
    member stack[STACK_MEMBERS];
    member *m = n <= STACK_MEMBERS ? stack : malloc(n * sizeof *m);
    if (!m)
        return -1;
    size_t k = 0;
    for (void *it = json_object_iter((json_t *)obj); it && k < n;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        const json_t *value = json_object_iter_value(it);
        bool skip = false;
        for (const char *const *o = omit; o && *o && !skip; o++)
            skip = json_is_null(value) && strcmp(key, *o) == 0;
        if (!skip)
            m[k++] = (member){key, json_object_iter_key_len(it), value};
    }
    sort_members(m, k);
    int rc = put1(out, '{');
    for (size_t i = 0; rc == 0 && i < k; i++) {
        if (i > 0)
            rc = put1(out, ',');
        if (rc == 0)
            rc = put_string(out, m[i].key, m[i].len);
        if (rc == 0)
            rc = put1(out, ':');
        if (rc == 0)
            rc = put_value(out, m[i].value, NULL, depth + 1);
    }
    if (rc == 0)
        rc = put1(out, '}');
    if (m != stack)
        free(m);
    return rc;
}

static int put_value(pm_buf *out, const json_t *v, const char *const *omit, int depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(out, v, omit, depth);
    case JSON_ARRAY: {
        int rc = put1(out, '[');
        for (size_t i = 0, n = json_array_size(v); rc == 0 && i < n; i++) {
            if (i > 0)
                rc = put1(out, ',');
            if (rc == 0)
                rc = put_value(out, json_array_get(v, i), NULL, depth + 1);
        }
        return rc == 0 ? put1(out, ']') : rc;
    }
    case JSON_STRING:
        return put_string(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_integer(out, json_integer_value(v));
    case JSON_REAL:
        return put_real(out, json_real_value(v));
    case JSON_TRUE:
        return put(out, "true", 4);
    case JSON_FALSE:
        return put(out, "false", 5);
    case JSON_NULL:
        return put(out, "null", 4);
    }
    return -1;
}

int pm_canonical_json(const json_t *value, const char *const *omit_if_null, pm_buf *out)
{
    if (!value)
        return -1;
    return put_value(out, value, omit_if_null, 0);
}

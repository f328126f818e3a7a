/* test_canonical.c - the canonical record text is jansson's sorted compact dump, byte for byte. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/buf.h"
#include "record/canonical.h"
#include "record/sample.h"

/* Both writers on v: equal text, or both fail. */
static void check_same(const json_t *v, const char *what)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    pm_buf got = PM_BUF_INIT;
    int rc = pm_canonical_json(v, NULL, &got);
    if (!want) {
        cr_assert_neq(rc, 0, "%s: jansson fails, canonical wrote %.*s", what, (int)got.len,
                      (const char *)got.data);
    } else {
        cr_assert_eq(rc, 0, "%s: canonical failed where jansson wrote %s", what, want);
        cr_assert_eq(got.len, strlen(want), "%s: %zu bytes, jansson %zu:\n%.*s\n%s", what, got.len,
                     strlen(want), (int)got.len, (const char *)got.data, want);
        cr_assert(memcmp(got.data, want, got.len) == 0, "%s:\n%.*s\n%s", what, (int)got.len,
                  (const char *)got.data, want);
    }
    free(want);
    pm_buf_free(&got);
}

Test(canonical, sample_records_are_written_as_jansson_writes_them)
{
    pm_sample_gen *g;
    pm_error err;
    cr_assert_eq(pm_sample_gen_create(11, &g, &err), 0, "%s", err.message);
    for (int i = 0; i < 2000; i++) {
        json_t *rec;
        cr_assert_eq(pm_sample_gen_next(g, &rec, &err), 0, "%s", err.message);
        char what[32];
        snprintf(what, sizeof what, "sample record %d", i);
        check_same(rec, what);
        json_decref(rec);
    }
    pm_sample_gen_destroy(g);
}

Test(canonical, strings_escape_every_control_character_and_keep_utf8)
{
    char s[0x80];
    for (int c = 0; c < 0x80; c++)
        s[c] = (char)c; /* NUL included: json_stringn keeps it */
    json_t *v = json_pack("{s:s%, s:s, s:s, s:s, s:s}", "ascii", s, sizeof s, "two", "caf\xc3\xa9",
                          "three", "\xe2\x82\xac \xef\xbf\xbf", "four", "\xf0\x9f\x8e\x9f\xf4\x8f\xbf\xbf",
                          "slash", "a/b\\c\"d");
    cr_assert_not_null(v);
    check_same(v, "strings");
    json_decref(v);
}

Test(canonical, invalid_utf8_fails_as_in_jansson)
{
    static const char *const bad[] = {
        "\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xc3", "\xe2\x82", "ok\xffok",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "k", json_stringn_nocheck(bad[i], strlen(bad[i])));
        char what[32];
        snprintf(what, sizeof what, "bad UTF-8 #%zu", i);
        check_same(v, what);
        json_decref(v);
    }
}

Test(canonical, numbers_and_literals)
{
    const double reals[] = {0.0, -0.0, 1.0, -1.5, 0.1, 1.0 / 3, 51.556, -0.2796, 1e15, 1e16, 1e17,
                            1e21, 1.5e300, 1e-5, 1e-7, 5e-324, DBL_MAX, DBL_MIN, 9007199254740993.0,
                            123456789.125, -2.5e-10};
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++)
        json_array_append_new(arr, json_real(reals[i]));
    json_array_append_new(arr, json_integer(0));
    json_array_append_new(arr, json_integer(-1));
    json_array_append_new(arr, json_integer(INT64_MAX));
    json_array_append_new(arr, json_integer(INT64_MIN));
    json_array_append_new(arr, json_true());
    json_array_append_new(arr, json_false());
    json_array_append_new(arr, json_null());
    json_array_append_new(arr, json_object());
    json_array_append_new(arr, json_array());
    check_same(arr, "numbers");
    json_decref(arr);
}

Test(canonical, keys_sort_by_bytes_then_length_at_every_level)
{
    json_t *v = json_object();
    const char *keys[] = {"b", "a", "ab", "A", "aa", "", "\xc3\xa9", "a\x7f", "Z", "ba"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        json_object_set_new(v, keys[i], json_pack("{s:i, s:i, s:[{s:n, s:n}]}", "y", (int)i, "x",
                                                  1, "z", "q", "p"));
    /* a key with a NUL inside sorts after its prefix */
    json_object_setn_new(v, "a\0b", 3, json_integer(7));
    /* more members than the writer keeps on its stack */
    json_t *wide = json_object();
    for (int i = 99; i >= 0; i--) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(wide, k, json_integer(i));
    }
    json_object_set_new(v, "wide", wide);
    check_same(v, "keys");
    json_decref(v);
}

/* xorshift64: the same trees on every run */
static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static json_t *random_string(uint64_t *x)
{
    /* code points from each UTF-8 length, controls, quotes and backslashes */
    static const uint32_t picks[] = {'a', 'Z', ' ', '"', '\\', '/', '\n', '\t', 0x01, 0x1f, 0x7f,
                                     0xe9, 0x7ff, 0x800, 0x20ac, 0xfffd, 0xffff, 0x10000, 0x1f39f,
                                     0x10ffff};
    char s[128];
    size_t n = 0, want = next(x) % 24;
    for (size_t i = 0; i < want; i++) {
        uint32_t cp = picks[next(x) % (sizeof picks / sizeof *picks)];
        if (cp < 0x80) {
            s[n++] = (char)cp;
        } else if (cp < 0x800) {
            s[n++] = (char)(0xc0 | cp >> 6);
            s[n++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            s[n++] = (char)(0xe0 | cp >> 12);
            s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            s[n++] = (char)(0x80 | (cp & 0x3f));
        } else {
            s[n++] = (char)(0xf0 | cp >> 18);
            s[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            s[n++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return json_stringn(s, n);
}

static json_t *random_value(uint64_t *x, int depth)
{
    switch (next(x) % (depth > 4 ? 5 : 7)) {
    case 0: return random_string(x);
    case 1: return json_integer((json_int_t)next(x) >> (next(x) % 64));
    case 2: {
        uint64_t bits = next(x);
        double d;
        memcpy(&d, &bits, sizeof d);
        return json_real(isfinite(d) ? d : (double)(int64_t)bits / 1e9);
    }
    case 3: return json_null();
    case 4: return json_boolean(next(x) & 1);
    case 5: {
        json_t *a = json_array();
        for (size_t i = 0, n = next(x) % 5; i < n; i++)
            json_array_append_new(a, random_value(x, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (size_t i = 0, n = next(x) % 8; i < n; i++) {
            json_t *k = random_string(x);
            json_object_setn_new(o, json_string_value(k), json_string_length(k),
                                 random_value(x, depth + 1));
            json_decref(k);
        }
        return o;
    }
    }
}

Test(canonical, random_trees)
{
    uint64_t x = 0x2545F4914F6CDD1DULL;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(&x, 0);
        char what[32];
        snprintf(what, sizeof what, "random tree %d", i);
        check_same(v, what);
        json_decref(v);
    }
}

Test(canonical, omit_if_null_leaves_out_only_null_top_level_members)
{
    json_t *v = json_pack("{s:n, s:s, s:n, s:{s:n}}", "later", "kept", "x", "other", "inner",
                          "later");
    static const char *const omit[] = {"later", "kept", "inner", NULL};
    pm_buf got = PM_BUF_INIT;
    cr_assert_eq(pm_canonical_json(v, omit, &got), 0);
    cr_assert_str_eq(pm_buf_cstr(&got), "{\"inner\":{\"later\":null},\"kept\":\"x\",\"other\":null}");
    pm_buf_free(&got);
    json_decref(v);
}

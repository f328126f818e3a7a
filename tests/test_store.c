/* Tests for the local directory store and the key rules every store shares. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "stores/store.h"
#include "test_util.h"

Test(store_keys, escapes_are_refused)
{
    cr_assert(pm_store_key_valid("passes/ABC-1.pkpass"));
    cr_assert(pm_store_key_valid("qr/a.b_c.png"));
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "a\\b",
                         "a\nb", "..", ".", "passes/..", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert(!pm_store_key_valid(bad[i]), "'%s' must be refused", bad[i]);
}

static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix)))
            n++;
    closedir(d);
    return n;
}

Test(store_local, put_get_overwrite_no_temp_left)
{
    char *root = pmt_tmpdir("store");
    pm_store *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open(root, true, &s, &err), 0, "%s", err.message);
    pm_object o = {"passes/S1.pkpass", (const uint8_t *)"first", 5, "application/vnd.apple.pkpass", NULL};
    cr_assert_eq(pm_store_put(s, &o, &err), 0, "%s", err.message);
    o.data = (const uint8_t *)"second version";
    o.len = 14;
    cr_assert_eq(pm_store_put(s, &o, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_sync(s, &err), 0, "%s", err.message);

    pm_buf b = PM_BUF_INIT;
    cr_assert_eq(pm_store_get(s, "passes/S1.pkpass", &b, &err), 0, "%s", err.message);
    cr_assert_eq(b.len, 14);
    cr_assert(memcmp(b.data, "second version", 14) == 0);

    char dir[1024];
    snprintf(dir, sizeof dir, "%s/passes", root);
    cr_assert_eq(count_entries(dir, ".pm-tmp-"), 0, "no temporary file is left behind");
    cr_assert_eq(count_entries(dir, "S1.pkpass"), 1);

    char *url = pm_store_url(s, "passes/S1.pkpass", 0);
    cr_assert_not_null(url);
    cr_assert(strncmp(url, "file:///", 8) == 0, "%s", url);
    free(url);
    pm_buf_free(&b);
    pm_store_close(s);
    pmt_rmrf(root);
    free(root);
}

Test(store_local, invalid_and_temp_keys_are_refused_and_write_nothing)
{
    char *root = pmt_tmpdir("store");
    pm_store *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open(root, false, &s, &err), 0, "%s", err.message);
    const char *keys[] = {"../escape.pkpass", "/abs.pkpass", "passes/.pm-tmp-1-2", NULL};
    for (int i = 0; keys[i]; i++) {
        pm_object o = {keys[i], (const uint8_t *)"x", 1, "text/plain", NULL};
        cr_assert_eq(pm_store_put(s, &o, &err), -1, "%s must be refused", keys[i]);
        cr_assert_eq(err.code, PM_ERR_STORE);
    }
    char parent[1100];
    snprintf(parent, sizeof parent, "%s/../escape.pkpass", root);
    struct stat st;
    cr_assert_neq(stat(parent, &st), 0, "nothing written outside the root");
    pm_store_close(s);
    pmt_rmrf(root);
    free(root);
}

Test(store_local, unwritable_root_is_a_clear_error)
{
    pm_store *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open("/proc/passmill-no-such/x", false, &s, &err), -1);
    cr_assert(strstr(err.message, "/proc/passmill-no-such/x"), "%s", err.message);
}

/* ---- store.layout = split ---- */

static void put16(pm_buf *b, unsigned v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    pm_buf_append(b, x, 2);
}

static void put32(pm_buf *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}

/*
 * An archive of the bundle stage's shape, as far as the split store looks:
 * static bytes, then "pass.json"'s entry (here just bytes), a central
 * directory naming it, the end record.
 */
static void fake_pass(pm_buf *b, const char *statics, const char *own)
{
    pm_buf_reset(b);
    pm_buf_append_str(b, statics);
    uint32_t off = (uint32_t)b->len;
    pm_buf_append_str(b, own);
    uint32_t cd = (uint32_t)b->len;
    put32(b, 0x02014b50u);
    for (int i = 0; i < 19; i++) /* versions .. attributes: unused here */
        put16(b, i == 12 ? 9 : 0); /* name length at offset 28 */
    put32(b, off);
    pm_buf_append_str(b, "pass.json");
    uint32_t cd_len = (uint32_t)b->len - cd;
    put32(b, 0x06054b50u);
    put16(b, 0);
    put16(b, 0);
    put16(b, 1);
    put16(b, 1);
    put32(b, cd_len);
    put32(b, cd);
    put16(b, 0);
}

static int collect(void *ctx, const uint8_t *data, size_t len)
{
    return pm_buf_append(ctx, data, len);
}

Test(store_split, one_prefix_per_static_part_and_the_same_bytes_back)
{
    char *root = pmt_tmpdir("split");
    pm_store *inner, *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open(root, true, &inner, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_split_open(inner, &s, &err), 0, "%s", err.message);
    pm_buf a = PM_BUF_INIT, b = PM_BUF_INIT, got = PM_BUF_INIT;
    fake_pass(&a, "STATIC FILES OF VERSION 1", "pass one's own bytes");
    fake_pass(&b, "STATIC FILES OF VERSION 1", "pass two, longer own bytes");
    pm_object o = {"passes/A.pkpass", a.data, a.len, "application/vnd.apple.pkpass", NULL};
    cr_assert_eq(pm_store_put(s, &o, &err), 0, "%s", err.message);
    o = (pm_object){"passes/B.pkpass", b.data, b.len, "application/vnd.apple.pkpass", NULL};
    cr_assert_eq(pm_store_put(s, &o, &err), 0, "%s", err.message);
    pm_object qr = {"qr/A.png", (const uint8_t *)"png", 3, "image/png", NULL};
    cr_assert_eq(pm_store_put(s, &qr, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_sync(s, &err), 0, "%s", err.message);

    char dir[1024];
    snprintf(dir, sizeof dir, "%s/prefixes", root);
    cr_assert_eq(count_entries(dir, ""), 3, "one prefix (and . ..)");
    snprintf(dir, sizeof dir, "%s/passes", root);
    cr_assert_eq(count_entries(dir, "A.part"), 1);
    cr_assert_eq(count_entries(dir, "A.pkpass"), 0);

    cr_assert_eq(pm_store_get(s, "passes/B.pkpass", &got, &err), 0, "%s", err.message);
    cr_assert(got.len == b.len && memcmp(got.data, b.data, b.len) == 0);
    pm_buf_reset(&got);
    cr_assert_eq(pm_store_stream(s, "passes/A.pkpass", collect, &got, &err), 0, "%s", err.message);
    cr_assert(got.len == a.len && memcmp(got.data, a.data, a.len) == 0);
    cr_assert_eq(pm_store_get(s, "qr/A.png", &got, &err), 0, "%s", err.message);
    cr_assert(got.len == 3 && memcmp(got.data, "png", 3) == 0);
    /* No direct link to bytes that exist only assembled; other objects keep theirs. */
    cr_assert_null(pm_store_url(s, "passes/A.pkpass", 0));
    char *url = pm_store_url(s, "qr/A.png", 0);
    cr_assert_not_null(url);
    free(url);
    /* Anything else under a .pkpass key is refused, not stored whole. */
    o = (pm_object){"passes/C.pkpass", (const uint8_t *)"not a zip", 9, "x", NULL};
    cr_assert_eq(pm_store_put(s, &o, &err), -1);
    cr_assert(strstr(err.message, "passes/C.pkpass"), "%s", err.message);
    pm_store_close(s);

    /* A fresh reader (the prefix not in memory) reads it from the store, checked. */
    cr_assert_eq(pm_store_local_open(root, true, &inner, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_split_open(inner, &s, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_get(s, "passes/A.pkpass", &got, &err), 0, "%s", err.message);
    cr_assert(got.len == a.len && memcmp(got.data, a.data, a.len) == 0);
    pm_store_close(s);
    cr_assert_eq(pmt_sh("for f in '%s'/prefixes/*; do printf 'STATIC FILES OF VERSION 2' > $f; done", root), 0);
    cr_assert_eq(pm_store_local_open(root, true, &inner, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_split_open(inner, &s, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_get(s, "passes/A.pkpass", &got, &err), -1, "a changed prefix is refused");
    cr_assert(strstr(err.message, "does not match"), "%s", err.message);
    pm_store_close(s);
    pm_buf_free(&a);
    pm_buf_free(&b);
    pm_buf_free(&got);
    pmt_rmrf(root);
    free(root);
}

typedef struct putter {
    pm_store *s;
    int id, failures;
} putter;

static void *put_many(void *arg)
{
    putter *p = arg;
    pm_buf b = PM_BUF_INIT;
    for (int i = 0; i < 40; i++) {
        char own[64], key[64];
        snprintf(own, sizeof own, "own bytes of pass %d-%d", p->id, i);
        snprintf(key, sizeof key, "passes/P%d-%d.pkpass", p->id, i);
        fake_pass(&b, i % 2 ? "STATIC ODD VARIANT" : "STATIC EVEN VARIANT", own);
        pm_object o = {key, b.data, b.len, "application/vnd.apple.pkpass", NULL};
        pm_error err;
        if (pm_store_put(p->s, &o, &err) != 0)
            p->failures++;
    }
    pm_buf_free(&b);
    return NULL;
}

/* Workers put passes at once: every prefix stored once, every pass reads back. */
Test(store_split, concurrent_puts_share_prefixes)
{
    char *root = pmt_tmpdir("splitmt");
    pm_store *inner, *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open(root, false, &inner, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_split_open(inner, &s, &err), 0, "%s", err.message);
    pthread_t th[4];
    putter p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (putter){s, i, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, put_many, &p[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(p[i].failures, 0);
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/prefixes", root);
    cr_assert_eq(count_entries(dir, ""), 4, "two prefixes (and . ..)");
    pm_buf want = PM_BUF_INIT, got = PM_BUF_INIT;
    fake_pass(&want, "STATIC ODD VARIANT", "own bytes of pass 3-39");
    cr_assert_eq(pm_store_get(s, "passes/P3-39.pkpass", &got, &err), 0, "%s", err.message);
    cr_assert(got.len == want.len && memcmp(got.data, want.data, want.len) == 0);
    pm_buf_free(&want);
    pm_buf_free(&got);
    pm_store_close(s);
    pmt_rmrf(root);
    free(root);
}

/* delete: the object goes, a missing one is no error, a bad key is refused. */
Test(store_local, delete_removes_and_is_idempotent)
{
    char *root = pmt_tmpdir("store");
    pm_store *s;
    pm_error err;
    cr_assert_eq(pm_store_local_open(root, true, &s, &err), 0, "%s", err.message);
    pm_object o = {"qr/S1.png", (const uint8_t *)"png", 3, "image/png", NULL};
    cr_assert_eq(pm_store_put(s, &o, &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_delete(s, "qr/S1.png", &err), 0, "%s", err.message);
    cr_assert_eq(pm_store_sync(s, &err), 0, "%s", err.message);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qr", root);
    cr_assert_eq(count_entries(dir, "S1.png"), 0, "the object is gone");
    pm_buf b = PM_BUF_INIT;
    cr_assert_neq(pm_store_get(s, "qr/S1.png", &b, &err), 0);
    cr_assert_eq(pm_store_delete(s, "qr/S1.png", &err), 0, "a missing object: %s", err.message);
    cr_assert_eq(pm_store_delete(s, "qr/never-there.png", &err), 0, "%s", err.message);
    cr_assert_neq(pm_store_delete(s, "../outside", &err), 0);
    cr_assert_neq(pm_store_delete(s, "qr/.pm-tmp-1-2", &err), 0, "temporary names are the store's own");
    pm_buf_free(&b);
    pm_store_close(s);
    pmt_rmrf(root);
    free(root);
}

/* Tests for the local directory store and the key rules every store shares. */
#include <criterion/criterion.h>
#include <dirent.h>
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

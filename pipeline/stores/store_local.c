/*
 * store_local.c - the embedded default store: a local directory.
 *
 * An object is written to a hidden temporary file in its key's folder and
 * renamed into place, so a reader sees the old object or the whole new one,
 * never a partial file.  A crash leaves at most a ".pm-tmp-*" file, which is
 * never visible under a key: keys with a segment starting ".pm-tmp-" are
 * refused, and open() removes the ones whose writer process is gone.  Durability is batched: put() does not fsync; sync() calls
 * syncfs() on the store's file system once for every put before it, which
 * is what the engine waits for before it reports passes.
 */
#include "stores/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct local_store {
    pm_store base;
    char *root;
    int root_fd;
    bool fsync_objects;
    atomic_uint_fast64_t tmp_counter;
} local_store;

/* mkdir -p for the folders of key below root_fd (not the last segment). */
static int make_parents(local_store *ls, const char *key, pm_error *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s", key);
    for (char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdirat(ls->root_fd, path, 0755) != 0 && errno != EEXIST)
            return pm_error_set(err, PM_ERR_STORE, "store %s: cannot create folder '%s': %s",
                                ls->root, path, strerror(errno));
        *p = '/';
    }
    return 0;
}

#define TEMP_PREFIX ".pm-tmp-"

static bool is_temp_name(const char *key)
{
    for (const char *seg = key; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL)
        if (strncmp(seg, TEMP_PREFIX, sizeof TEMP_PREFIX - 1) == 0)
            return true;
    return false;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int local_put(pm_store *s, const pm_object *obj, pm_error *err)
{
    local_store *ls = (local_store *)s;
    if (!pm_store_key_valid(obj->key) || is_temp_name(obj->key))
        return pm_error_set(err, PM_ERR_STORE, "store %s: refusing invalid key '%s'", ls->root, obj->key);

    char tmp[1200];
    const char *slash = strrchr(obj->key, '/');
    int dirlen = slash ? (int)(slash - obj->key + 1) : 0;
    snprintf(tmp, sizeof tmp, "%.*s" TEMP_PREFIX "%ld-%llu", dirlen, obj->key, (long)getpid(),
             (unsigned long long)atomic_fetch_add(&ls->tmp_counter, 1));

    int fd = openat(ls->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        if (make_parents(ls, obj->key, err) != 0)
            return -1;
        fd = openat(ls->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0)
        return pm_error_set(err, PM_ERR_STORE, "store %s: cannot create '%s': %s", ls->root, tmp,
                            strerror(errno));
    if (write_all(fd, obj->data, obj->len) != 0) {
        int e = errno;
        close(fd);
        unlinkat(ls->root_fd, tmp, 0);
        return pm_error_set(err, PM_ERR_STORE, "store %s: writing '%s': %s", ls->root, obj->key,
                            strerror(e));
    }
    if (close(fd) != 0 || renameat(ls->root_fd, tmp, ls->root_fd, obj->key) != 0) {
        int e = errno;
        unlinkat(ls->root_fd, tmp, 0);
        return pm_error_set(err, PM_ERR_STORE, "store %s: publishing '%s': %s", ls->root,
                            obj->key, strerror(e));
    }
    return 0;
}

/* The unlink is durable with the next sync (syncfs covers the directory). */
static int local_delete(pm_store *s, const char *key, pm_error *err)
{
    local_store *ls = (local_store *)s;
    if (!pm_store_key_valid(key) || is_temp_name(key))
        return pm_error_set(err, PM_ERR_STORE, "store %s: refusing invalid key '%s'", ls->root, key);
    if (unlinkat(ls->root_fd, key, 0) != 0 && errno != ENOENT)
        return pm_error_set(err, PM_ERR_STORE, "store %s: removing '%s': %s", ls->root, key,
                            strerror(errno));
    return 0;
}

static int local_sync(pm_store *s, pm_error *err)
{
    local_store *ls = (local_store *)s;
    if (!ls->fsync_objects)
        return 0;
    if (syncfs(ls->root_fd) != 0)
        return pm_error_set(err, PM_ERR_STORE, "store %s: syncfs: %s", ls->root, strerror(errno));
    return 0;
}

static int local_get(pm_store *s, const char *key, pm_buf *out, pm_error *err)
{
    local_store *ls = (local_store *)s;
    if (!pm_store_key_valid(key))
        return pm_error_set(err, PM_ERR_STORE, "store %s: invalid key '%s'", ls->root, key);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", ls->root, key);
    if (pm_buf_read_file(out, path) != 0)
        return pm_error_set(err, PM_ERR_STORE, "store %s: reading '%s': %s", ls->root, key,
                            strerror(errno));
    return 0;
}

static char *local_url(pm_store *s, const char *key, int64_t now)
{
    (void)now;
    local_store *ls = (local_store *)s;
    char *url = NULL;
    if (asprintf(&url, "file://%s/%s", ls->root, key) < 0)
        return NULL;
    return url;
}

static void local_close(pm_store *s)
{
    local_store *ls = (local_store *)s;
    close(ls->root_fd);
    free(ls->root);
    free(ls);
}

static const pm_store_ops local_ops = {
    .name = "local",
    .put = local_put,
    .sync = local_sync,
    .get = local_get,
    .del = local_delete,
    .url = local_url,
    .close = local_close,
};

/* The writer of ".pm-tmp-<pid>-<n>" is gone (a kill -9, a crash)? */
static bool temp_writer_gone(const char *name)
{
    long pid = strtol(name + sizeof TEMP_PREFIX - 1, NULL, 10);
    return pid <= 0 || (pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

/*
 * Remove leftover temporary files below dir_fd (which this call closes):
 * they are never an object, and nothing else would ever remove them.  A
 * live process's files (another passmill writing to the same store) stay.
 * Counts into *removed; depth-limited, symlinks not followed.
 */
static void remove_leftovers(int dir_fd, int depth, size_t *removed)
{
    DIR *d = fdopendir(dir_fd);
    if (!d) {
        close(dir_fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        bool temp = strncmp(de->d_name, TEMP_PREFIX, sizeof TEMP_PREFIX - 1) == 0;
        /* A store holds two files per pass: skip the stat for every object. */
        if (!temp && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 8) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                remove_leftovers(sub, depth + 1, removed);
        } else if (S_ISREG(st.st_mode) && temp && temp_writer_gone(de->d_name) && unlinkat(dirfd(d), de->d_name, 0) == 0) {
            (*removed)++;
        }
    }
    closedir(d);
}

int pm_store_local_open(const char *root, bool fsync_objects, pm_store **out, pm_error *err)
{
    if (!root || !*root)
        return pm_error_set(err, PM_ERR_CONFIG, "store.dir is empty");
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        return pm_error_set(err, PM_ERR_STORE, "store: cannot create '%s': %s", root, strerror(errno));
    local_store *ls = calloc(1, sizeof *ls);
    if (!ls)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    ls->base.ops = &local_ops;
    ls->fsync_objects = fsync_objects;
    ls->root = realpath(root, NULL);
    ls->root_fd = ls->root ? open(ls->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (ls->root_fd < 0) {
        pm_error_set(err, PM_ERR_STORE, "store: cannot open '%s': %s", root, strerror(errno));
        free(ls->root);
        free(ls);
        return -1;
    }
    size_t removed = 0;
    int scan_fd = dup(ls->root_fd);
    if (scan_fd >= 0)
        remove_leftovers(scan_fd, 0, &removed);
    if (removed)
        fprintf(stderr, "passmill: store %s: removed %zu temporary file(s) left by an interrupted run\n",
                ls->root, removed);
    *out = &ls->base;
    return 0;
}

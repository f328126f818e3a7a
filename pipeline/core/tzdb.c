/*
 * tzdb.c - the IANA time zone names (see tzdb.h).
 */
#include "core/tzdb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pm_tz_set {
    char *dir;          /* zoneinfo directory (fallback lookups) */
    char *blob;         /* tzdata.zi contents; names point into it */
    const char **names; /* sorted, unique; NULL in fallback mode */
    size_t len;
};

#define TZ_NAME_MAX 255

static int strp_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Read a whole file into a NUL-terminated malloc'd buffer. */
static char *read_all(FILE *f, size_t *len_out)
{
    size_t cap = 1 << 17, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

/* The n-th (0-based) blank-separated token of line, NUL-terminated in place. */
static char *zi_token(char *line, int n)
{
    char *p = line;
    for (int i = 0;; i++) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return NULL;
        char *start = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (i == n) {
            *p = '\0';
            return start;
        }
    }
}

/*
 * Collect zone names from tzdata.zi: "Z name stdoff ..." declares a zone,
 * "L target alias" a link (both names are valid TZ values).
 */
static int tz_parse_zi(pm_tz_set *set, const char *path, FILE *f, pm_error *err)
{
    size_t len = 0, cap = 0;
    set->blob = read_all(f, &len);
    if (!set->blob)
        return pm_error_set(err, PM_ERR_IO, "reading %s: %s", path, strerror(errno ? errno : EIO));
    char *line = set->blob;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *name = NULL;
        if (line[0] == 'Z' && (line[1] == ' ' || line[1] == '\t'))
            name = zi_token(line, 1);
        else if (line[0] == 'L' && (line[1] == ' ' || line[1] == '\t'))
            name = zi_token(line, 2);
        if (name && strlen(name) <= TZ_NAME_MAX) {
            if (set->len == cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                const char **nn = realloc(set->names, ncap * sizeof *nn);
                if (!nn)
                    return pm_error_set(err, PM_ERR_NOMEM, "out of memory loading %s", path);
                set->names = nn;
                cap = ncap;
            }
            set->names[set->len++] = name;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (set->len == 0)
        return pm_error_set(err, PM_ERR_CONFIG, "%s lists no time zones (Z or L lines)", path);
    qsort(set->names, set->len, sizeof *set->names, strp_cmp);
    size_t out = 1;
    for (size_t i = 1; i < set->len; i++)
        if (strcmp(set->names[i], set->names[out - 1]) != 0)
            set->names[out++] = set->names[i];
    set->len = out;
    return 0;
}

int pm_tz_set_load(const char *zoneinfo_dir, pm_tz_set **out, pm_error *err)
{
    *out = NULL;
    if (!zoneinfo_dir || !*zoneinfo_dir) {
        const char *env = getenv("TZDIR");
        zoneinfo_dir = env && *env ? env : PM_ZONEINFO_DIR;
    }
    struct stat st;
    if (stat(zoneinfo_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return pm_error_set(err, PM_ERR_CONFIG,
                            "time zone directory %s not found (install the tzdata package or set TZDIR)",
                            zoneinfo_dir);
    pm_tz_set *set = calloc(1, sizeof *set);
    if (!set || !(set->dir = strdup(zoneinfo_dir))) {
        free(set);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tzdata.zi", zoneinfo_dir);
    FILE *f = fopen(path, "rb");
    if (!f && errno != ENOENT) {
        /* Present but unreadable: an installation problem, not a fallback case. */
        pm_error_set(err, PM_ERR_IO, "opening %s: %s", path, strerror(errno));
        pm_tz_set_destroy(set);
        return -1;
    }
    if (f) {
        errno = 0;
        int rc = tz_parse_zi(set, path, f, err);
        fclose(f);
        if (rc != 0) {
            pm_tz_set_destroy(set);
            return -1;
        }
    }
    *out = set;
    return 0;
}

void pm_tz_set_destroy(pm_tz_set *set)
{
    if (!set)
        return;
    free(set->names);
    free(set->blob);
    free(set->dir);
    free(set);
}

size_t pm_tz_set_count(const pm_tz_set *set)
{
    return set->names ? set->len : 0;
}

/* Compare name[0..len) (no NUL inside) with the C string b, like strcmp. */
static int cmp_n(const char *a, size_t alen, const char *b)
{
    int c = strncmp(a, b, alen);
    if (c != 0)
        return c;
    return b[alen] ? -1 : 0;
}

/*
 * A name safe to append to the zoneinfo directory: relative, components of
 * [A-Za-z0-9_+-.] not starting with '.', so no "..", no hidden files.
 */
static bool tz_name_safe(const char *s, size_t len)
{
    if (len == 0 || len > TZ_NAME_MAX)
        return false;
    bool comp_start = true;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '/') {
            if (comp_start)
                return false; /* leading '/' or "//" */
            comp_start = true;
            continue;
        }
        if (comp_start && c == '.')
            return false;
        comp_start = false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '.'))
            return false;
    }
    return !comp_start; /* no trailing '/' */
}

static bool tz_file_is_tzif(const char *dir, const char *name, size_t len)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%.*s", dir, (int)len, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return false;
    char magic[4];
    ssize_t r = read(fd, magic, sizeof magic);
    close(fd);
    return r == 4 && memcmp(magic, "TZif", 4) == 0;
}

bool pm_tz_set_has(const pm_tz_set *set, const char *name, size_t len)
{
    if (len == 0 || len > TZ_NAME_MAX || memchr(name, '\0', len))
        return false;
    if (!set->names)
        return tz_name_safe(name, len) && tz_file_is_tzif(set->dir, name, len);
    size_t lo = 0, hi = set->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_n(name, len, set->names[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

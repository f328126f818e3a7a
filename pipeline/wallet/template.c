/*
 * template.c - load, check and hash pass templates (see template.h and
 * docs/templates.md for the rules).
 *
 * Everything here runs once at start-up: each file of a template folder is
 * read once, checked, SHA-1 hashed for manifest.json and folded into the
 * template version; workers only ever read the result.
 */
#include "wallet/template.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#include "core/buf.h"
#include "core/rfc3339.h"
#include "core/utf8.h"
#include "wallet/pass_format.h"
#include "record/schema.h"

#define MAX_FILE_BYTES (8u << 20)  /* larger files are refused */
#define MAX_FILES 256              /* per template, a pkpass is small */
#define MAX_NAME 128               /* one path component */
#define MAX_DEPTH 32               /* JSON nesting in pass.json */

struct pm_template_set {
    pm_template **items;  /* sorted by id */
    size_t len;
};

/* One file while loading: pass.json included, freed or moved into the template. */
typedef struct loaded_file {
    char *name;
    uint8_t *data;
    size_t len;
} loaded_file;

typedef struct loader {
    const char *id;
    pm_error *err;
    loaded_file *files;
    size_t len, cap;
} loader;

/* ---- errors ----------------------------------------------------------- */

/* "template 'id': file: message" with code PM_ERR_CONFIG; returns -1. */
__attribute__((format(printf, 3, 4)))
static int fail(loader *ld, const char *file, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_error_set(ld->err, PM_ERR_CONFIG, "template '%s': %s: %s", ld->id, file, msg);
}

__attribute__((format(printf, 3, 4)))
static int fail_io(loader *ld, const char *file, const char *fmt, ...)
{
    char msg[400];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pm_error_set(ld->err, PM_ERR_IO, "template '%s': %s: %s: %s", ld->id, file, msg,
                        strerror(saved));
}

/* ---- names ------------------------------------------------------------ */

static bool id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]))
            return false;
    return true;
}

/* File names go into manifest.json and the zip unescaped, so keep them plain. */
static bool valid_file_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > MAX_NAME || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]) && s[i] != '@' && s[i] != '+')
            return false;
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* "en", "fr", "pt-BR", "zh_Hans" followed by ".lproj". */
static bool valid_lproj(const char *s)
{
    if (!ends_with(s, ".lproj"))
        return false;
    size_t n = strlen(s) - strlen(".lproj");
    if (n < 2 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        bool digit = c >= '0' && c <= '9';
        if (i < 2 ? !alpha : !(alpha || digit || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- reading the folder ---------------------------------------------- */

static int add_file(loader *ld, const char *name, uint8_t *data, size_t len)
{
    if (ld->len == ld->cap) {
        size_t cap = ld->cap ? ld->cap * 2 : 16;
        loaded_file *f = realloc(ld->files, cap * sizeof *f);
        if (!f)
            return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
        ld->files = f;
        ld->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
    ld->files[ld->len++] = (loaded_file){copy, data, len};
    return 0;
}

/* Read one regular file (never through a symlink), at most MAX_FILE_BYTES. */
static int read_file(loader *ld, int dirfd, const char *entry, const char *name)
{
    int fd = openat(dirfd, entry, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? fail(ld, name, "symlinks are not allowed")
                              : fail_io(ld, name, "cannot open");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fail_io(ld, name, "cannot stat");
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(ld, name, "not a regular file");
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        close(fd);
        return fail(ld, name, "file too large (%lld bytes, at most %u)",
                    (long long)st.st_size, MAX_FILE_BYTES);
    }
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *data = malloc(len ? len : 1);
    if (!data) {
        close(fd);
        return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
    }
    while (got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the file shrank under us */
            fail_io(ld, name, "cannot read");
            free(data);
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    if (add_file(ld, name, data, len) != 0) {
        free(data);
        return -1;
    }
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entry names of an open directory, sorted, "." and ".." left out. */
static int list_dir(loader *ld, DIR *d, const char *what, char ***out, size_t *outlen)
{
    char **names = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            char **n = realloc(names, cap * sizeof *n);
            if (!n)
                goto nomem;
            names = n;
        }
        if (!(names[len] = strdup(e->d_name)))
            goto nomem;
        len++;
    }
    if (errno != 0) {
        fail_io(ld, what, "cannot list folder");
        goto fail;
    }
    if (len > 1)
        qsort(names, len, sizeof *names, compare_names);
    *out = names;
    *outlen = len;
    return 0;
nomem:
    pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
fail:
    for (size_t i = 0; i < len; i++)
        free(names[i]);
    free(names);
    return -1;
}

static void free_names(char **names, size_t len)
{
    for (size_t i = 0; i < len; i++)
        free(names[i]);
    free(names);
}

/*
 * Read the files of one folder.  prefix is "" for the template root or
 * "xx.lproj/" inside a localisation folder, which may hold files only.
 */
static int read_folder(loader *ld, int dirfd, const char *prefix)
{
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return fail_io(ld, *prefix ? prefix : ".", "cannot open folder");
    }
    char **names = NULL;
    size_t len = 0;
    int rc = list_dir(ld, d, *prefix ? prefix : ".", &names, &len);
    for (size_t i = 0; rc == 0 && i < len; i++) {
        char name[2 * MAX_NAME + 8];
        snprintf(name, sizeof name, "%s%s", prefix, names[i]);
        struct stat st;
        if (!valid_file_name(names[i])) {
            rc = fail(ld, name, "bad file name (rule: [A-Za-z0-9._@+-]{1,%d}, "
                      "not starting with '.')", MAX_NAME);
        } else if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = fail_io(ld, name, "cannot stat");
        } else if (S_ISLNK(st.st_mode)) {
            rc = fail(ld, name, "symlinks are not allowed");
        } else if (S_ISDIR(st.st_mode)) {
            if (*prefix || (!valid_lproj(names[i]) && strcmp(names[i], "strips") != 0)) {
                rc = fail(ld, name, "unexpected folder (only xx.lproj localisation "
                          "folders and strips/, holding files, are allowed)");
                continue;
            }
            int sub = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = fail_io(ld, name, "cannot open folder");
                continue;
            }
            char subprefix[MAX_NAME + 2];
            snprintf(subprefix, sizeof subprefix, "%s/", names[i]);
            rc = read_folder(ld, sub, subprefix);
            close(sub);
        } else if (ld->len >= MAX_FILES) {
            rc = fail(ld, name, "too many files (at most %d)", MAX_FILES);
        } else {
            rc = read_file(ld, dirfd, names[i], name);
        }
    }
    free_names(names, len);
    closedir(d);
    return rc;
}

/* ---- PNG -------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* CRC-32 (ISO-HDLC) as PNG chunks use it; bitwise, load time only. */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static bool ihdr_depth_ok(uint8_t colour, uint8_t depth)
{
    switch (colour) {
    case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case 2: case 4: case 6: return depth == 8 || depth == 16;
    default: return false;
    }
}

/*
 * A real PNG: signature, IHDR first and valid, every chunk's CRC right, at
 * least one IDAT, IEND last and at the end of the file.
 */
static int check_png(loader *ld, const loaded_file *f)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *p = f->data;
    size_t len = f->len, pos = 8;
    bool idat = false, iend = false;
    if (len < 8 || memcmp(p, sig, 8) != 0)
        return fail(ld, f->name, "not a PNG (rule: PNG signature)");
    for (int n = 0; pos < len; n++) {
        if (iend)
            return fail(ld, f->name, "bad PNG (rule: data after IEND)");
        if (len - pos < 12)
            return fail(ld, f->name, "bad PNG (rule: truncated chunk at byte %zu)", pos);
        uint32_t clen = be32(p + pos);
        const uint8_t *type = p + pos + 4;
        if (clen > 0x7FFFFFFFu || clen > len - pos - 12)
            return fail(ld, f->name, "bad PNG (rule: chunk length past end of file at byte %zu)",
                        pos);
        if (crc32_png(type, 4 + (size_t)clen) != be32(type + 4 + clen))
            return fail(ld, f->name, "bad PNG (rule: CRC of chunk '%.4s' at byte %zu)",
                        (const char *)type, pos);
        if (n == 0) {
            const uint8_t *h = type + 4;
            if (memcmp(type, "IHDR", 4) != 0 || clen != 13)
                return fail(ld, f->name, "bad PNG (rule: IHDR must be the first chunk)");
            uint32_t w = be32(h), ht = be32(h + 4);
            if (w == 0 || ht == 0 || w > 0x7FFFFFFFu || ht > 0x7FFFFFFFu)
                return fail(ld, f->name, "bad PNG (rule: IHDR size %ux%u)", w, ht);
            if (!ihdr_depth_ok(h[9], h[8]) || h[10] != 0 || h[11] != 0 || h[12] > 1)
                return fail(ld, f->name, "bad PNG (rule: IHDR colour type %u, bit depth %u, "
                            "compression %u, filter %u, interlace %u)",
                            h[9], h[8], h[10], h[11], h[12]);
        } else if (memcmp(type, "IDAT", 4) == 0) {
            idat = true;
        } else if (memcmp(type, "IEND", 4) == 0) {
            iend = true;
        }
        pos += 12 + (size_t)clen;
    }
    if (!idat || !iend)
        return fail(ld, f->name, "bad PNG (rule: needs IDAT and a final IEND)");
    return 0;
}

/* ---- pass.strings ----------------------------------------------------- */

typedef struct strings_cursor {
    const uint8_t *p, *end;
    unsigned line;
} strings_cursor;

/* Skip whitespace and comments; -1 on an unterminated comment. */
static int strings_skip(strings_cursor *c)
{
    while (c->p < c->end) {
        if (*c->p == '\n') {
            c->line++;
            c->p++;
        } else if (*c->p == ' ' || *c->p == '\t' || *c->p == '\r') {
            c->p++;
        } else if (c->end - c->p >= 2 && c->p[0] == '/' && c->p[1] == '/') {
            while (c->p < c->end && *c->p != '\n')
                c->p++;
        } else if (c->end - c->p >= 2 && c->p[0] == '/' && c->p[1] == '*') {
            c->p += 2;
            while (c->end - c->p >= 2 && !(c->p[0] == '*' && c->p[1] == '/'))
                c->line += *c->p++ == '\n';
            if (c->end - c->p < 2)
                return -1;
            c->p += 2;
        } else {
            break;
        }
    }
    return 0;
}

static int strings_quoted(strings_cursor *c)
{
    if (c->p >= c->end || *c->p != '"')
        return -1;
    for (c->p++; c->p < c->end; c->p++) {
        if (*c->p == '\\') {
            if (++c->p == c->end)
                return -1;
        } else if (*c->p == '"') {
            c->p++;
            return 0;
        }
        if (*c->p == '\n')
            c->line++;
    }
    return -1;
}

/*
 * "KEY" = "value"; entries with comments, in UTF-8 (optional BOM).  UTF-16
 * with a BOM is what Apple's tools write; it is accepted as is (even length).
 */
static int check_strings(loader *ld, const loaded_file *f)
{
    const uint8_t *p = f->data;
    size_t n = f->len;
    if (n >= 2 && ((p[0] == 0xFF && p[1] == 0xFE) || (p[0] == 0xFE && p[1] == 0xFF))) {
        if (n % 2 != 0)
            return fail(ld, f->name, "bad UTF-16 (rule: odd byte count)");
        return 0;
    }
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) {
        p += 3;
        n -= 3;
    }
    if (!pm_utf8_valid(p, n))
        return fail(ld, f->name, "not UTF-8 (rule: pass.strings is UTF-8 or UTF-16 with BOM)");
    strings_cursor c = {p, p + n, 1};
    for (;;) {
        if (strings_skip(&c) != 0)
            return fail(ld, f->name, "line %u: unterminated comment", c.line);
        if (c.p == c.end)
            return 0;
        unsigned line = c.line;
        if (strings_quoted(&c) != 0)
            return fail(ld, f->name, "line %u: expected a quoted key (rule: \"KEY\" = \"value\";)",
                        line);
        if (strings_skip(&c) != 0 || c.p == c.end || *c.p++ != '=')
            return fail(ld, f->name, "line %u: expected '=' (rule: \"KEY\" = \"value\";)", line);
        if (strings_skip(&c) != 0 || strings_quoted(&c) != 0)
            return fail(ld, f->name, "line %u: expected a quoted value (rule: \"KEY\" = \"value\";)",
                        line);
        if (strings_skip(&c) != 0 || c.p == c.end || *c.p++ != ';')
            return fail(ld, f->name, "line %u: expected ';' (rule: \"KEY\" = \"value\";)", line);
    }
}

/* ---- pass.json -------------------------------------------------------- */

/* A JSON path being walked, for messages: "eventTicket.backFields[2].value". */
typedef struct jpath {
    char s[256];
    size_t len;
} jpath;

static size_t jpath_add(jpath *jp, int n)
{
    size_t old = jp->len;
    if (n > 0)
        jp->len = old + (size_t)n < sizeof jp->s ? old + (size_t)n : sizeof jp->s - 1;
    return old;
}

static size_t jpath_key(jpath *jp, const char *key)
{
    return jpath_add(jp, snprintf(jp->s + jp->len, sizeof jp->s - jp->len, "%s%s",
                                  jp->len ? "." : "", key));
}

static size_t jpath_index(jpath *jp, size_t index)
{
    return jpath_add(jp, snprintf(jp->s + jp->len, sizeof jp->s - jp->len, "[%zu]", index));
}

static void jpath_pop(jpath *jp, size_t old)
{
    jp->len = old;
    jp->s[old] = '\0';
}

static bool custom_key_ok(const char *s, size_t n)
{
    if (n < 1 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Every "${path}" in s names a schema leaf or custom.KEY. */
static int check_bindings(loader *ld, const jpath *jp, const char *s)
{
    const char *p = s;
    while ((p = strstr(p, "${")) != NULL) {
        const char *start = p + 2, *close = strchr(start, '}');
        if (!close)
            return fail(ld, "pass.json", "%s: unterminated binding '${' (rule: bindings are "
                        "${path})", jp->s);
        size_t n = (size_t)(close - start);
        char path[160];
        if (n == 0 || n >= sizeof path)
            return fail(ld, "pass.json", "%s: bad binding '%.*s' (rule: bindings are ${path})",
                        jp->s, (int)(n + 3 < 200 ? n + 3 : 200), p);
        memcpy(path, start, n);
        path[n] = '\0';
        bool ok = strncmp(path, "custom.", 7) == 0 ? custom_key_ok(path + 7, n - 7)
                                                    : pm_schema_has_path(path);
        if (!ok)
            return fail(ld, "pass.json", "%s: unknown binding ${%s} (rule: a binding names a "
                        "record leaf field such as attendee.seat, or custom.KEY)", jp->s, path);
        p = close + 1;
    }
    return 0;
}

static int walk_bindings(loader *ld, jpath *jp, json_t *v, int depth)
{
    if (depth > MAX_DEPTH)
        return fail(ld, "pass.json", "%s: nested deeper than %d (rule: nesting)", jp->s,
                    MAX_DEPTH);
    if (json_is_string(v))
        return check_bindings(ld, jp, json_string_value(v));
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child) {
            if (strstr(key, "${"))
                return fail(ld, "pass.json", "%s: binding in a key '%s' (rule: bindings only "
                            "in string values)", jp->s, key);
            size_t old = jpath_key(jp, key);
            int rc = walk_bindings(ld, jp, child, depth + 1);
            jpath_pop(jp, old);
            if (rc != 0)
                return -1;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) {
            size_t old = jpath_index(jp, i);
            int rc = walk_bindings(ld, jp, child, depth + 1);
            jpath_pop(jp, old);
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

static const char *const field_arrays[] = {
    "headerFields", "primaryFields", "secondaryFields", "auxiliaryFields", "backFields",
};

/* Keys the pipeline sets per pass; a template must not set them. */
static const char *const per_pass_keys[] = {
    "serialNumber", "barcode", "barcodes", "voided", "relevantDate", "expirationDate",
    "locations", "beacons", "userInfo",
};

/*
 * Every top-level key of Apple's pass.json (WalletPasses "Pass" object, as
 * of iOS 18, which added the poster event ticket keys from accessibilityURL
 * to useAutomaticColor).  Wallet silently ignores a key it does not know,
 * so a misspelt one ("sharingProhibitted") would never take effect: the
 * loader refuses anything else.
 */
static const char *const known_keys[] = {
    "accessibilityURL", "addOnURL", "appLaunchURL", "associatedStoreIdentifiers",
    "authenticationToken", "auxiliaryStoreIdentifiers", "backgroundColor", "bagPolicyURL",
    "barcode", "barcodes", "beacons", "boardingPass", "contactVenueEmail",
    "contactVenuePhoneNumber", "contactVenueWebsite", "coupon", "description",
    "directionsInformationURL", "eventLogoText", "eventTicket", "expirationDate",
    "footerBackgroundColor", "foregroundColor", "formatVersion", "generic",
    "groupingIdentifier", "labelColor", "locations", "logoText", "maxDistance",
    "merchandiseURL", "nfc", "orderFoodURL", "organizationName", "parkingInformationURL",
    "passTypeIdentifier", "preferredStyleSchemes", "purchaseParkingURL", "relevantDate",
    "relevantDates", "sellURL", "semantics", "serialNumber", "sharingProhibited", "storeCard",
    "suppressHeaderDarkening", "suppressStripShine", "teamIdentifier", "transferURL",
    "transitInformationURL", "useAutomaticColor", "userInfo", "voided", "webServiceURL",
};

/* Levenshtein distance of two short keys, capped: enough to suggest a spelling. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b), row[65];
    if (n > 64 || m > 64)
        return 99;
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t sub = diag + ((a[i - 1] | 32) != (b[j - 1] | 32));
            size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[m];
}

/* Every top-level key is one of Apple's; a near miss is named. */
static int check_known_keys(loader *ld, json_t *root)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        const char *best = NULL;
        size_t best_d = 3; /* suggest within two edits (case ignored) */
        bool known = false;
        for (size_t i = 0; !known && i < sizeof known_keys / sizeof *known_keys; i++) {
            known = strcmp(key, known_keys[i]) == 0;
            size_t d = known ? 0 : edit_distance(key, known_keys[i]);
            if (d < best_d) {
                best_d = d;
                best = known_keys[i];
            }
        }
        if (!known)
            return fail(ld, "pass.json", "unknown top-level key '%s'%s%s%s (rule: keys: Apple's "
                        "pass.json keys only; Wallet ignores any other)", key,
                        best ? ", did you mean '" : "", best ? best : "", best ? "'?" : "");
    }
    return 0;
}

static const char *const other_styles[] = {
    "boardingPass", "coupon", "generic", "storeCard",
};

/* Field objects: a literal unique "key" and a "value"; "status"/"custom_*" are ours. */
static int check_fields(loader *ld, json_t *style)
{
    json_t *seen = json_object();
    if (!seen)
        return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
    int rc = 0;
    for (size_t a = 0; rc == 0 && a < sizeof field_arrays / sizeof *field_arrays; a++) {
        json_t *arr = json_object_get(style, field_arrays[a]), *field;
        size_t i;
        if (!arr)
            continue;
        if (!json_is_array(arr)) {
            rc = fail(ld, "pass.json", "eventTicket.%s: must be an array of fields "
                      "(rule: field arrays)", field_arrays[a]);
            break;
        }
        json_array_foreach(arr, i, field) {
            json_t *key = json_object_get(field, "key");
            const char *k = json_string_value(key);
            if (!json_is_object(field) || !k || !*k || strstr(k, "${")) {
                rc = fail(ld, "pass.json", "eventTicket.%s[%zu]: a field needs a literal "
                          "non-empty string \"key\" (rule: fields)", field_arrays[a], i);
            } else if (!json_object_get(field, "value")) {
                rc = fail(ld, "pass.json", "eventTicket.%s[%zu]: field '%s' has no \"value\" "
                          "(rule: fields)", field_arrays[a], i, k);
            } else if (strcmp(k, "status") == 0 || strncmp(k, "custom_", 7) == 0) {
                rc = fail(ld, "pass.json", "eventTicket.%s[%zu]: field key '%s' is reserved "
                          "for the pipeline (rule: fields: 'status' and 'custom_*')",
                          field_arrays[a], i, k);
            } else if (json_object_get(seen, k)) {
                rc = fail(ld, "pass.json", "eventTicket.%s[%zu]: duplicate field key '%s' "
                          "(rule: field keys are unique in a pass)", field_arrays[a], i, k);
            } else if (json_object_set_new(seen, k, json_true()) != 0) {
                rc = pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
            }
            if (rc != 0)
                break;
        }
    }
    json_decref(seen);
    return rc;
}

/*
 * Colours: "rgb(r, g, b)" or "#RRGGBB"; hex is rewritten in the skeleton as
 * rgb(), which every Wallet version reads (hex only iOS 18 and later).
 */
static int check_colours(loader *ld, json_t *root)
{
    static const char *const colours[] = {
        "foregroundColor", "backgroundColor", "labelColor", "footerBackgroundColor",
    };
    for (size_t i = 0; i < sizeof colours / sizeof *colours; i++) {
        json_t *c = json_object_get(root, colours[i]);
        uint8_t rgb[3];
        if (!c)
            continue;
        if (!json_is_string(c) || !pm_pass_color_parse(json_string_value(c), rgb))
            return fail(ld, "pass.json", "%s must be \"rgb(r, g, b)\" with r, g, b in 0..255 "
                        "or \"#RRGGBB\", found %s%s%s (rule: colours)", colours[i],
                        json_is_string(c) ? "\"" : "",
                        json_is_string(c) ? json_string_value(c) : "a non-string",
                        json_is_string(c) ? "\"" : "");
        if (json_string_value(c)[0] == '#') {
            char text[32];
            snprintf(text, sizeof text, "rgb(%u, %u, %u)", rgb[0], rgb[1], rgb[2]);
            if (json_string_set(c, text) != 0)
                return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory",
                                    ld->id);
        }
    }
    return 0;
}

static int check_skeleton(loader *ld, json_t *root)
{
    if (check_known_keys(ld, root) != 0)
        return -1;
    json_t *fv = json_object_get(root, "formatVersion");
    if (!json_is_integer(fv) || json_integer_value(fv) != 1)
        return fail(ld, "pass.json", "formatVersion must be the integer 1 (rule: formatVersion)");
    static const char *const required[] = {
        "passTypeIdentifier", "teamIdentifier", "organizationName", "description",
    };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        const char *s = json_string_value(json_object_get(root, required[i]));
        if (!s || !*s)
            return fail(ld, "pass.json", "%s must be a non-empty string (rule: required keys)",
                        required[i]);
    }
    if (check_colours(ld, root) != 0)
        return -1;
    for (size_t i = 0; i < sizeof other_styles / sizeof *other_styles; i++)
        if (json_object_get(root, other_styles[i]))
            return fail(ld, "pass.json", "style '%s' found (rule: style: only eventTicket)",
                        other_styles[i]);
    for (size_t i = 0; i < sizeof per_pass_keys / sizeof *per_pass_keys; i++)
        if (json_object_get(root, per_pass_keys[i]))
            return fail(ld, "pass.json", "'%s' is set per pass by the pipeline "
                        "(rule: no per-pass keys in a template)%s", per_pass_keys[i],
                        strcmp(per_pass_keys[i], "expirationDate") == 0
                            ? "; a template's expiry goes in " PM_TEMPLATE_SETTINGS
                              " (expiration_setting, docs/templates.md)" : "");
    json_t *style = json_object_get(root, "eventTicket");
    if (!json_is_object(style))
        return fail(ld, "pass.json", "\"eventTicket\" must be an object (rule: style)");
    if (check_fields(ld, style) != 0)
        return -1;
    jpath jp = {{0}, 0};
    return walk_bindings(ld, &jp, root, 0);
}

static int parse_pass_json(loader *ld, const loaded_file *f, json_t **out)
{
    json_error_t jerr;
    /* Jansson keeps object keys in insertion order, so the skeleton's order survives. */
    json_t *root = json_loadb((const char *)f->data, f->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(ld, "pass.json", "invalid JSON at line %d column %d: %s (rule: JSON)",
                    jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(ld, "pass.json", "must be a JSON object (rule: JSON)");
    }
    if (check_skeleton(ld, root) != 0) {
        json_decref(root);
        return -1;
    }
    *out = root;
    return 0;
}

/* ---- hashing ---------------------------------------------------------- */

/* Version: SHA-256 over (name, NUL, 64-bit big-endian length, content) per file. */
static int hash_version(loader *ld, EVP_MD *sha256, char version[17])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, sha256, NULL);
    for (size_t i = 0; ok && i < ld->len; i++) {
        uint8_t len[8];
        uint64_t n = ld->files[i].len;
        for (int k = 7; k >= 0; k--, n >>= 8)
            len[k] = (uint8_t)n;
        ok = EVP_DigestUpdate(ctx, ld->files[i].name, strlen(ld->files[i].name) + 1) &&
             EVP_DigestUpdate(ctx, len, sizeof len) &&
             EVP_DigestUpdate(ctx, ld->files[i].data, ld->files[i].len);
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        pm_error_set(ld->err, PM_ERR_CRYPTO, "template '%s': SHA-256 failed", ld->id);
        pm_error_add_openssl(ld->err);
        return -1;
    }
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    pm_hex_encode(md, 8, hex);
    memcpy(version, hex, 17);
    return 0;
}

/*
 * "strips/gold@2x.png" -> base "gold", *scale 1 (0: 1x, 1: @2x, 2: @3x).
 * false for anything else.
 */
static bool strip_variant(const char *path, char *base, int *scale)
{
    if (strncmp(path, "strips/", 7) != 0 || !ends_with(path, ".png"))
        return false;
    const char *n = path + 7;
    size_t len = strlen(n) - 4;
    int k = 0;
    if (len > 3 && (memcmp(n + len - 3, "@2x", 3) == 0 || memcmp(n + len - 3, "@3x", 3) == 0)) {
        k = n[len - 2] == '2' ? 1 : 2;
        len -= 3;
    }
    if (len == 0 || len > MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!id_char(n[i]))
            return false;
    memcpy(base, n, len);
    base[len] = '\0';
    if (scale)
        *scale = k;
    return true;
}

/* Move the static files (all but pass.json) into t, SHA-1 hashing each once. */
static int take_files(loader *ld, EVP_MD *sha1, pm_template *t)
{
    t->files = calloc(ld->len ? ld->len : 1, sizeof *t->files);
    t->strips = calloc(ld->len ? ld->len : 1, sizeof *t->strips);
    if (!t->files || !t->strips)
        return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
    for (size_t i = 0; i < ld->len; i++) {
        loaded_file *f = &ld->files[i];
        if (strcmp(f->name, "pass.json") == 0 || strcmp(f->name, PM_TEMPLATE_SETTINGS) == 0)
            continue; /* passmill's own files, not the pass's */
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (!EVP_Digest(f->data, f->len, md, &mdlen, sha1, NULL)) {
            pm_error_set(ld->err, PM_ERR_CRYPTO, "template '%s': %s: SHA-1 failed", ld->id,
                         f->name);
            pm_error_add_openssl(ld->err);
            return -1;
        }
        char base[MAX_NAME + 1];
        int scale = 0;
        pm_template_file *tf;
        if (strip_variant(f->name, base, &scale)) {
            /* Files come sorted, but "gold@2x.png" sorts before "gold.png": look it up. */
            pm_template_strip *st = NULL;
            for (size_t k = 0; k < t->strips_len && !st; k++)
                if (strcmp(t->strips[k].name, base) == 0)
                    st = &t->strips[k];
            if (!st) {
                st = &t->strips[t->strips_len];
                if (!(st->name = strdup(base)))
                    return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory",
                                        ld->id);
                t->strips_len++;
            }
            static const char *const as[PM_STRIP_FILES] = {"strip.png", "strip@2x.png",
                                                           "strip@3x.png"};
            tf = &st->files[scale];
            if (!(tf->name = strdup(as[scale])))
                return pm_error_set(ld->err, PM_ERR_NOMEM, "template '%s': out of memory", ld->id);
            free(f->name);
        } else {
            tf = &t->files[t->files_len++];
            tf->name = f->name;
        }
        tf->data = f->data;
        tf->len = f->len;
        tf->compressed = ends_with(tf->name, ".png");
        pm_hex_encode(md, mdlen, tf->sha1_hex);
        f->name = NULL;
        f->data = NULL;
    }
    return 0;
}

/* ---- template.json: expiry and barcode settings ------------------------ */

static const loaded_file *find_loaded(const loader *ld, const char *name);

/*
 * The keys of template.json.  Names follow Skycore's pass template fields
 * (expiration-fields, barcode-fields) in snake_case; "inactive_barcode" is
 * read by the lifecycle settings.  Anything else is refused like an unknown
 * pass.json key: a misspelt setting would silently never apply.
 */
static const char *const settings_keys[] = {
    "auto_expire_number_days", "auto_expire_number_hours", "auto_expire_roundoff_midnight",
    "auto_expire_timezone", "autogenerate_barcode_value_length",
    "autogenerate_barcode_value_type", "expiration_setting", "expiry_date", "inactive_barcode",
};

#define EXPIRY_MAX_DAYS 3650  /* ten years: beyond that it is a typo */
#define EXPIRY_MAX_HOURS (24 * EXPIRY_MAX_DAYS)

/* A non-negative integer setting within 0..max; absent is 0. */
static int settings_count(loader *ld, json_t *root, const char *key, long long max,
                          long long *out)
{
    json_t *v = json_object_get(root, key);
    *out = 0;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"%s\" must be an integer 0..%lld (rule: "
                    "expiry settings)", key, max);
    *out = json_integer_value(v);
    return 0;
}

/* An IANA zone ICU knows (ICU does the midnight arithmetic, so it must know it). */
static bool zone_known(const char *name)
{
    UChar id[64], canon[128];
    UBool system = 0;
    UErrorCode st = U_ZERO_ERROR;
    if (strlen(name) >= sizeof id / sizeof *id)
        return false;
    u_uastrcpy(id, name);
    ucal_getCanonicalTimeZoneID(id, -1, canon, 128, &system, &st);
    return U_SUCCESS(st) && system;
}

static int parse_expiry(loader *ld, json_t *root, pm_template_expiry *e)
{
    const char *setting = json_string_value(json_object_get(root, "expiration_setting"));
    json_t *date = json_object_get(root, "expiry_date");
    json_t *zone = json_object_get(root, "auto_expire_timezone");
    json_t *round = json_object_get(root, "auto_expire_roundoff_midnight");
    long long days, hours;
    if (json_object_get(root, "expiration_setting") &&
        !(setting && (strcmp(setting, "default") == 0 || strcmp(setting, "auto") == 0)))
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"expiration_setting\" must be \"default\" (a "
                    "fixed expiry_date) or \"auto\" (days/hours after issue) (rule: expiry "
                    "settings)");
    if (settings_count(ld, root, "auto_expire_number_days", EXPIRY_MAX_DAYS, &days) != 0 ||
        settings_count(ld, root, "auto_expire_number_hours", EXPIRY_MAX_HOURS, &hours) != 0)
        return -1;
    bool auto_keys = json_object_get(root, "auto_expire_number_days") ||
                     json_object_get(root, "auto_expire_number_hours") || zone || round;
    if (!setting && date)
        setting = "default"; /* as Skycore: an expiry-date alone is the default setting */
    if (!setting) {
        if (auto_keys)
            return fail(ld, PM_TEMPLATE_SETTINGS, "auto_expire_* settings need "
                        "\"expiration_setting\": \"auto\" (rule: expiry settings)");
        return 0;
    }
    if (strcmp(setting, "default") == 0) {
        const char *text = json_string_value(date);
        if (auto_keys)
            return fail(ld, PM_TEMPLATE_SETTINGS, "auto_expire_* settings apply to "
                        "\"expiration_setting\": \"auto\" only, not \"default\" (rule: expiry "
                        "settings)");
        if (!text || strlen(text) >= sizeof e->fixed_text ||
            pm_rfc3339_parse(text, &e->fixed_at) != 0)
            return fail(ld, PM_TEMPLATE_SETTINGS, "\"expiry_date\" must be an RFC 3339 "
                        "timestamp with offset such as \"2027-06-13T03:00:00+01:00\" (rule: "
                        "expiry settings)");
        e->kind = PM_EXPIRY_FIXED;
        snprintf(e->fixed_text, sizeof e->fixed_text, "%s", text);
        return 0;
    }
    if (date)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"expiry_date\" is for \"expiration_setting\": "
                    "\"default\"; \"auto\" takes auto_expire_number_days/_hours (rule: expiry "
                    "settings)");
    if (days + hours == 0)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"expiration_setting\": \"auto\" needs "
                    "auto_expire_number_days or auto_expire_number_hours above 0 (rule: expiry "
                    "settings)");
    if (round && !json_is_boolean(round))
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"auto_expire_roundoff_midnight\" must be true "
                    "or false (rule: expiry settings)");
    const char *z = json_string_value(zone);
    if (zone && (!z || !zone_known(z)))
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"auto_expire_timezone\" must be an IANA time "
                    "zone name such as \"America/New_York\", found %s (rule: expiry settings)",
                    z ? z : "a non-string");
    e->round_midnight = json_is_true(round);
    if (e->round_midnight && !z)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"auto_expire_roundoff_midnight\" needs "
                    "\"auto_expire_timezone\": midnight is local (rule: expiry settings)");
    e->kind = PM_EXPIRY_AUTO;
    e->after_days = (int)days;
    e->after_hours = (int)hours;
    snprintf(e->zone, sizeof e->zone, "%s", z ? z : "");
    return 0;
}

static int parse_autogen(loader *ld, json_t *root, pm_template_autogen *a)
{
    static const struct { const char *name; pm_autogen_type type; } types[] = {
        {"Numeric", PM_AUTOGEN_NUMERIC}, {"Alphabet", PM_AUTOGEN_ALPHABET},
        {"Alphanumeric", PM_AUTOGEN_ALPHANUMERIC},
    };
    json_t *jt = json_object_get(root, "autogenerate_barcode_value_type");
    json_t *jl = json_object_get(root, "autogenerate_barcode_value_length");
    if (!jt && !jl)
        return 0;
    const char *t = json_string_value(jt);
    for (size_t i = 0; t && i < sizeof types / sizeof *types; i++)
        if (strcmp(t, types[i].name) == 0)
            a->type = types[i].type;
    if (a->type == PM_AUTOGEN_DEFAULT)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"autogenerate_barcode_value_type\" must be "
                    "\"Numeric\", \"Alphabet\" or \"Alphanumeric\"%s (rule: barcode settings)",
                    jt ? "" : " when a length is set");
    if (!json_is_integer(jl) || json_integer_value(jl) < PM_AUTOGEN_LEN_MIN ||
        json_integer_value(jl) > PM_AUTOGEN_LEN_MAX)
        return fail(ld, PM_TEMPLATE_SETTINGS, "\"autogenerate_barcode_value_length\" must be "
                    "an integer %d..%d (rule: barcode settings)", PM_AUTOGEN_LEN_MIN,
                    PM_AUTOGEN_LEN_MAX);
    a->length = (unsigned)json_integer_value(jl);
    return 0;
}

/* template.json is optional; absent, the template sets no expiry and keeps the default barcode. */
static int parse_template_settings(loader *ld, pm_template *t)
{
    const loaded_file *f = find_loaded(ld, PM_TEMPLATE_SETTINGS);
    if (!f)
        return 0;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->data, f->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(ld, PM_TEMPLATE_SETTINGS, "invalid JSON at line %d column %d: %s (rule: "
                    "JSON)", jerr.line, jerr.column, jerr.text);
    int rc = 0;
    const char *key;
    json_t *v;
    if (!json_is_object(root))
        rc = fail(ld, PM_TEMPLATE_SETTINGS, "must be a JSON object (rule: JSON)");
    else
        json_object_foreach(root, key, v) {
            bool known = false;
            for (size_t i = 0; !known && i < sizeof settings_keys / sizeof *settings_keys; i++)
                known = strcmp(key, settings_keys[i]) == 0;
            if (!known) {
                rc = fail(ld, PM_TEMPLATE_SETTINGS, "unknown setting '%s' (rule: settings: "
                          "docs/templates.md lists them)", key);
                break;
            }
        }
    if (rc == 0)
        rc = parse_expiry(ld, root, &t->expiry);
    if (rc == 0)
        rc = parse_autogen(ld, root, &t->autogen);
    json_decref(root);
    return rc;
}

/* "2027-06-13T00:00:00-04:00": t written in local time at offset_s from UTC. */
static void format_with_offset(int64_t t, int32_t offset_s, char out[40])
{
    char local[32];
    pm_rfc3339_format_utc(t + offset_s, local);
    local[19] = '\0'; /* drop the "Z" */
    /* Zone offsets are within +-18 hours (RFC 3339 / ICU): two digits each. */
    unsigned a = (unsigned)(offset_s < 0 ? -(int64_t)offset_s : offset_s) % (24u * 3600u);
    snprintf(out, 40, "%.19s%c%02u:%02u", local, offset_s < 0 ? '-' : '+', a / 3600u % 24u,
             a / 60u % 60u);
}

int pm_template_expiry_at(const pm_template_expiry *e, int64_t issued_at, char out[40],
                          pm_error *err)
{
    if (!e || e->kind == PM_EXPIRY_NONE)
        return 0;
    if (e->kind == PM_EXPIRY_FIXED) {
        snprintf(out, 40, "%s", e->fixed_text);
        return 1;
    }
    if (!e->zone[0]) {
        char utc[32];
        pm_rfc3339_format_utc(issued_at + (int64_t)e->after_days * 86400 +
                              (int64_t)e->after_hours * 3600, utc);
        snprintf(out, 40, "%s", utc);
        return 1;
    }
    /* A calendar in the zone: days are local calendar days (a DST day is 23
     * or 25 hours), hours are elapsed hours, midnight is local. */
    UChar id[64];
    UErrorCode st = U_ZERO_ERROR;
    u_uastrcpy(id, e->zone);
    UCalendar *cal = ucal_open(id, -1, "en_US_POSIX", UCAL_GREGORIAN, &st);
    ucal_setMillis(cal, (UDate)issued_at * 1000.0, &st);
    ucal_add(cal, UCAL_DATE, e->after_days, &st);
    ucal_add(cal, UCAL_HOUR, e->after_hours, &st);
    if (e->round_midnight && U_SUCCESS(st) &&
        (ucal_get(cal, UCAL_HOUR_OF_DAY, &st) || ucal_get(cal, UCAL_MINUTE, &st) ||
         ucal_get(cal, UCAL_SECOND, &st) || ucal_get(cal, UCAL_MILLISECOND, &st))) {
        ucal_add(cal, UCAL_DATE, 1, &st);
        ucal_set(cal, UCAL_HOUR_OF_DAY, 0);
        ucal_set(cal, UCAL_MINUTE, 0);
        ucal_set(cal, UCAL_SECOND, 0);
        ucal_set(cal, UCAL_MILLISECOND, 0);
    }
    UDate ms = ucal_getMillis(cal, &st);
    int32_t offset = ucal_get(cal, UCAL_ZONE_OFFSET, &st) + ucal_get(cal, UCAL_DST_OFFSET, &st);
    ucal_close(cal);
    if (U_FAILURE(st))
        return pm_error_set(err, PM_ERR_INTERNAL, "expiry in time zone %s failed: %s", e->zone,
                            u_errorName(st));
    format_with_offset((int64_t)(ms / 1000.0), offset / 1000, out);
    return 1;
}

/* ---- one template ----------------------------------------------------- */

static const loaded_file *find_loaded(const loader *ld, const char *name)
{
    for (size_t i = 0; i < ld->len; i++)
        if (strcmp(ld->files[i].name, name) == 0)
            return &ld->files[i];
    return NULL;
}

static int compare_loaded(const void *a, const void *b)
{
    return strcmp(((const loaded_file *)a)->name, ((const loaded_file *)b)->name);
}

/*
 * template.json: passmill's settings for the template (docs/templates.md),
 * never bundled.  Read here: "inactive_barcode".
 */
static int parse_settings(loader *ld, const loaded_file *f, pm_template *t)
{
    t->keep_inactive_barcode = false;
    if (!f)
        return 0;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->data, f->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(ld, PM_TEMPLATE_SETTINGS, "must be a JSON object (%s)",
                    root ? "found another JSON value" : jerr.text);
    }
    json_t *v = json_object_get(root, "inactive_barcode");
    const char *mode = json_string_value(v);
    int rc = 0;
    if (v && !(mode && (strcmp(mode, "remove") == 0 || strcmp(mode, "keep") == 0)))
        rc = fail(ld, PM_TEMPLATE_SETTINGS, "\"inactive_barcode\" must be \"remove\" or \"keep\"");
    else
        t->keep_inactive_barcode = mode && strcmp(mode, "keep") == 0;
    json_decref(root);
    return rc;
}

static int check_files(loader *ld, json_t **skeleton)
{
    static const char *const required[] = {"pass.json", "icon.png", "icon@2x.png"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!find_loaded(ld, required[i]))
            return fail(ld, required[i], "missing (rule: required files pass.json, icon.png, "
                        "icon@2x.png)");
    static const char *const reserved[] = {"manifest.json", "signature"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (find_loaded(ld, reserved[i]))
            return fail(ld, reserved[i], "reserved name (rule: manifest.json and signature "
                        "are written per pass)");
    if (parse_pass_json(ld, find_loaded(ld, "pass.json"), skeleton) != 0)
        return -1;
    for (size_t i = 0; i < ld->len; i++) {
        const loaded_file *f = &ld->files[i];
        if (strncmp(f->name, "strips/", 7) == 0) {
            char base[MAX_NAME + 1];
            if (!strip_variant(f->name, base, NULL))
                return fail(ld, f->name, "not a strip image (rule: strips/<name>.png, "
                            "<name>@2x.png or <name>@3x.png, name [A-Za-z0-9._-])");
            char one[MAX_NAME + 16];
            snprintf(one, sizeof one, "strips/%s.png", base);
            if (!find_loaded(ld, one))
                return fail(ld, f->name, "has no %s (rule: every strip variant has its 1x image)",
                            one);
        }
        if (ends_with(f->name, ".png") && check_png(ld, f) != 0)
            return -1;
        if (strchr(f->name, '/') && ends_with(f->name, "/pass.strings") && check_strings(ld, f) != 0)
            return -1;
    }
    return 0;
}

static void loader_free(loader *ld)
{
    for (size_t i = 0; i < ld->len; i++) {
        free(ld->files[i].name);
        free(ld->files[i].data);
    }
    free(ld->files);
}

/* The base name of path, ignoring trailing slashes, into out. */
static void base_name(const char *path, char *out, size_t outlen)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t n = end - start < outlen - 1 ? end - start : outlen - 1;
    memcpy(out, path + start, n);
    out[n] = '\0';
}

static int load_one(const char *path, EVP_MD *sha1, EVP_MD *sha256, pm_template **out,
                    pm_error *err)
{
    char id[256];
    base_name(path, id, sizeof id);
    loader ld = {id, err, NULL, 0, 0};
    if (!valid_id(id))
        return pm_error_set(err, PM_ERR_CONFIG, "template folder '%s': the folder name is the "
                            "template id and must match [A-Za-z0-9._-]{1,64}", path);
    int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ELOOP || errno == ENOTDIR
                   ? fail(&ld, path, "not a folder (rule: a template is a real folder, "
                          "not a symlink)")
                   : fail_io(&ld, path, "cannot open folder");
    pm_template *t = calloc(1, sizeof *t);
    json_t *skeleton = NULL;
    int rc = t ? 0 : pm_error_set(err, PM_ERR_NOMEM, "template '%s': out of memory", id);
    if (rc == 0)
        rc = read_folder(&ld, dirfd, "");
    close(dirfd);
    if (rc == 0) {
        if (ld.len > 1)
            qsort(ld.files, ld.len, sizeof *ld.files, compare_loaded);
        rc = check_files(&ld, &skeleton);
    }
    if (rc == 0)
        rc = parse_settings(&ld, find_loaded(&ld, PM_TEMPLATE_SETTINGS), t);
    if (rc == 0)
        rc = hash_version(&ld, sha256, t->version);
    if (rc == 0 && !(t->id = strdup(id)))
        rc = pm_error_set(err, PM_ERR_NOMEM, "template '%s': out of memory", id);
    if (rc == 0)
        rc = parse_template_settings(&ld, t);
    if (rc == 0)
        rc = take_files(&ld, sha1, t);
    loader_free(&ld);
    if (rc != 0) {
        json_decref(skeleton);
        pm_template_destroy(t);
        return -1;
    }
    t->skeleton = skeleton;
    *out = t;
    return 0;
}

/* Fetch the digests once per load call, not once per file. */
static int fetch_digests(EVP_MD **sha1, EVP_MD **sha256, pm_error *err)
{
    *sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (*sha1 && *sha256)
        return 0;
    EVP_MD_free(*sha1);
    EVP_MD_free(*sha256);
    pm_error_set(err, PM_ERR_CRYPTO, "templates: cannot fetch SHA-1/SHA-256");
    pm_error_add_openssl(err);
    return -1;
}

int pm_template_load(const char *path, pm_template **out, pm_error *err)
{
    EVP_MD *sha1, *sha256;
    if (fetch_digests(&sha1, &sha256, err) != 0)
        return -1;
    int rc = load_one(path, sha1, sha256, out, err);
    EVP_MD_free(sha1);
    EVP_MD_free(sha256);
    return rc;
}

void pm_template_destroy(pm_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->files_len; i++) {
        free(t->files[i].name);
        free(t->files[i].data);
    }
    free(t->files);
    for (size_t i = 0; i < t->strips_len; i++) {
        free(t->strips[i].name);
        for (int k = 0; k < PM_STRIP_FILES; k++) {
            free(t->strips[i].files[k].name);
            free(t->strips[i].files[k].data);
        }
    }
    free(t->strips);
    json_decref(t->skeleton);
    free(t->id);
    free(t);
}

const pm_template_strip *pm_template_find_strip(const pm_template *t, const char *name)
{
    for (size_t i = 0; name && i < t->strips_len; i++)
        if (strcmp(t->strips[i].name, name) == 0)
            return &t->strips[i];
    return NULL;
}

static int compare_file_ptrs(const void *a, const void *b)
{
    return strcmp((*(const pm_template_file *const *)a)->name,
                  (*(const pm_template_file *const *)b)->name);
}

size_t pm_template_pass_files(const pm_template *t, const pm_template_strip *strip,
                              const pm_template_file **out)
{
    size_t n = 0;
    for (size_t i = 0; i < t->files_len; i++) {
        const char *name = t->files[i].name;
        if (strip && (strcmp(name, "strip.png") == 0 || strcmp(name, "strip@2x.png") == 0 ||
                      strcmp(name, "strip@3x.png") == 0))
            continue;
        out[n++] = &t->files[i];
    }
    if (!strip)
        return n;
    for (int k = 0; k < PM_STRIP_FILES; k++)
        if (strip->files[k].name)
            out[n++] = &strip->files[k];
    qsort(out, n, sizeof *out, compare_file_ptrs);
    return n;
}

/* ---- the set ---------------------------------------------------------- */

static int compare_templates(const void *a, const void *b)
{
    return strcmp((*(pm_template *const *)a)->id, (*(pm_template *const *)b)->id);
}

/* Template folders under dir: sorted names of real sub-folders, hidden ones skipped. */
static int template_folders(const char *dir, char ***out, size_t *outlen, pm_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return pm_error_set(err, PM_ERR_CONFIG, "templates: cannot open folder '%s': %s", dir,
                            strerror(errno));
    loader ld = {dir, err, NULL, 0, 0};
    char **names = NULL;
    size_t len = 0, kept = 0;
    int rc = list_dir(&ld, d, dir, &names, &len);
    for (size_t i = 0; i < len; i++) {
        struct stat st;
        bool folder = rc == 0 && names[i][0] != '.' &&
                      fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                      (S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode));
        if (folder && S_ISLNK(st.st_mode)) {
            rc = pm_error_set(err, PM_ERR_CONFIG, "templates: '%s/%s' is a symlink (rule: a "
                              "template is a real folder)", dir, names[i]);
            folder = false;
        }
        if (folder)
            names[kept++] = names[i];
        else
            free(names[i]); /* hidden entries and plain files (a README) are not templates */
    }
    closedir(d);
    if (rc != 0) {
        free_names(names, kept);
        return -1;
    }
    *out = names;
    *outlen = kept;
    return 0;
}

int pm_template_set_load(const char *dir, pm_template_set **out, pm_error *err)
{
    char **names = NULL;
    size_t len = 0;
    if (template_folders(dir, &names, &len, err) != 0)
        return -1;
    if (len == 0) {
        free(names);
        return pm_error_set(err, PM_ERR_CONFIG, "templates: no template folders in '%s'", dir);
    }
    EVP_MD *sha1, *sha256;
    pm_template_set *set = calloc(1, sizeof *set);
    int rc = set ? 0 : pm_error_set(err, PM_ERR_NOMEM, "templates: out of memory");
    if (rc == 0 && !(set->items = calloc(len, sizeof *set->items)))
        rc = pm_error_set(err, PM_ERR_NOMEM, "templates: out of memory");
    if (rc == 0)
        rc = fetch_digests(&sha1, &sha256, err);
    if (rc == 0) {
        for (size_t i = 0; rc == 0 && i < len; i++) {
            size_t n = strlen(dir) + strlen(names[i]) + 2;
            char *path = malloc(n);
            if (!path) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "templates: out of memory");
                break;
            }
            snprintf(path, n, "%s/%s", dir, names[i]);
            rc = load_one(path, sha1, sha256, &set->items[set->len], err);
            if (rc == 0)
                set->len++;
            free(path);
        }
        EVP_MD_free(sha1);
        EVP_MD_free(sha256);
    }
    free_names(names, len);
    if (rc != 0) {
        pm_template_set_destroy(set);
        return -1;
    }
    qsort(set->items, set->len, sizeof *set->items, compare_templates);
    *out = set;
    return 0;
}

void pm_template_set_destroy(pm_template_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->len; i++)
        pm_template_destroy(set->items[i]);
    free(set->items);
    free(set);
}

const pm_template *pm_template_set_find(const pm_template_set *set, const char *id)
{
    size_t lo = 0, hi = set ? set->len : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, set->items[mid]->id);
        if (c == 0)
            return set->items[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t pm_template_set_count(const pm_template_set *set)
{
    return set ? set->len : 0;
}

const pm_template *pm_template_set_at(const pm_template_set *set, size_t i)
{
    return set && i < set->len ? set->items[i] : NULL;
}

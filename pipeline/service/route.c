/*
 * route.c - method and path to an endpoint, with every id checked.
 *
 * Paths are split on '/' into at most a few segments; an id is
 * [A-Za-z0-9._-] without a leading dot (so "." and ".." never reach a store
 * key), at most PM_SVC_ID_MAX bytes.  MHD has already decoded %XX, so an
 * encoded "/" or ".." is seen here as what it is.
 */
#include "service/internal.h"

#include <string.h>

bool pm_route_id_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

#define MAX_SEGMENTS 8

/* Split path into segments (copied into buf); the count, or -1 when too many,
 * an empty segment or a segment too long. */
static int split(const char *path, char *buf, size_t cap, char *seg[MAX_SEGMENTS])
{
    size_t n = strlen(path);
    if (n == 0 || path[0] != '/' || n >= cap)
        return -1;
    memcpy(buf, path + 1, n);  /* includes the NUL */
    if (buf[0] == '\0')
        return 0;
    int count = 0;
    char *p = buf;
    for (;;) {
        if (count == MAX_SEGMENTS)
            return -1;
        seg[count++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    for (int i = 0; i < count; i++)
        if (seg[i][0] == '\0' || strlen(seg[i]) > PM_SVC_ID_MAX)
            return -1;
    return count;
}

static void take(pm_route *r, char *dst, const char *src)
{
    if (!pm_route_id_valid(src, PM_SVC_ID_MAX))
        r->bad_id = true;
    else
        strcpy(dst, src);  /* fits: checked against PM_SVC_ID_MAX */
}

static void expect(pm_route *r, pm_endpoint ep, const char *method, const char *want,
                   const char *allow)
{
    r->ep = ep;
    r->method_ok = !strcmp(method, want);
    r->allow = allow;
}

void pm_route_match(const char *method, const char *path, pm_route *r)
{
    memset(r, 0, sizeof *r);
    r->ep = PM_EP_OTHER;
    r->method_ok = true;
    char buf[4 * PM_SVC_ID_MAX + 64];
    char *s[MAX_SEGMENTS];
    int n = split(path, buf, sizeof buf, s);
    if (n <= 0)
        return;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (n == 1 && !strcmp(s[0], "healthz")) {
        expect(r, PM_EP_HEALTHZ, get ? "GET" : method, "GET", "GET, HEAD");
    } else if (n == 1 && !strcmp(s[0], "metrics")) {
        expect(r, PM_EP_METRICS, get ? "GET" : method, "GET", "GET, HEAD");
    } else if (!strcmp(s[0], "v1")) {
        if (n == 2 && !strcmp(s[1], "log")) {
            expect(r, PM_EP_LOG, method, "POST", "POST");
        } else if (n == 6 && !strcmp(s[1], "devices") && !strcmp(s[3], "registrations")) {
            if (!strcmp(method, "DELETE"))
                expect(r, PM_EP_UNREGISTER, method, "DELETE", "POST, DELETE");
            else
                expect(r, PM_EP_REGISTER, method, "POST", "POST, DELETE");
            take(r, r->device, s[2]);
            take(r, r->pass_type, s[4]);
            take(r, r->serial, s[5]);
        } else if (n == 5 && !strcmp(s[1], "devices") && !strcmp(s[3], "registrations")) {
            expect(r, PM_EP_SERIALS, get ? "GET" : method, "GET", "GET, HEAD");
            take(r, r->device, s[2]);
            take(r, r->pass_type, s[4]);
        } else if (n == 4 && !strcmp(s[1], "passes")) {
            expect(r, PM_EP_PASS, get ? "GET" : method, "GET", "GET, HEAD");
            take(r, r->pass_type, s[2]);
            take(r, r->serial, s[3]);
        }
    } else if (n == 3 && !strcmp(s[0], "tickets") &&
               (!strcmp(s[2], "pkpass") || !strcmp(s[2], "qr"))) {
        expect(r, !strcmp(s[2], "qr") ? PM_EP_TICKET_QR : PM_EP_TICKET_PKPASS,
               get ? "GET" : method, "GET", "GET, HEAD");
        take(r, r->serial, s[1]);
    }
}

/*
 * wallet_ws.c - Apple's pass web service, version 1 (docs/web-service.md):
 *
 *   POST   /v1/devices/D/registrations/T/S   register (201 new, 200 already, 401)
 *   DELETE /v1/devices/D/registrations/T/S   unregister (200, 401)
 *   GET    /v1/devices/D/registrations/T[?passesUpdatedSince=TAG]
 *                                            serials (200 {serialNumbers, lastUpdated}, 204)
 *   GET    /v1/passes/T/S                    latest pass (200 pkpass + Last-Modified, 304, 401)
 *   POST   /v1/log                           device log lines (200)
 *
 * Authorization: ApplePass <authenticationToken>, compared with the
 * registry's token in constant time; an unknown serial or pass type is
 * compared against a dummy so its answer (401) takes the same path.
 */
#include "service/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#define LOG_LINES_MAX 32       /* lines written per /v1/log request */
#define LOG_LINE_MAX 512       /* bytes kept of each */
#define PUSH_TOKEN_MAX 512

static enum MHD_Result text(pm_request *rq, unsigned status, const char *t)
{
    return pm_reply(rq, status, "text/plain; charset=utf-8", t, strlen(t), MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result server_error(pm_request *rq, const char *what, const pm_error *err)
{
    /* err comes from the registry or the store: names tables and keys, never a token. */
    fprintf(stderr, "passmill serve: %s: %s\n", what, err->message);
    return text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
}

/* Does the request carry "Authorization: ApplePass <expected>"?  expected
 * NULL (unknown pass) still costs one comparison, then fails. */
static bool authorized(pm_request *rq, const char *expected)
{
    static const char dummy[PM_AUTH_TOKEN_LEN + 1] = "00000000000000000000000000000000";
    const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    char got[PM_AUTH_TOKEN_LEN] = {0};
    bool shape = false;
    if (h && !strncmp(h, "ApplePass ", 10)) {
        const char *t = h + 10;
        size_t n = strlen(t);
        shape = n == PM_AUTH_TOKEN_LEN;
        memcpy(got, t, n < sizeof got ? n : sizeof got);
    }
    const char *want = expected && strlen(expected) == PM_AUTH_TOKEN_LEN ? expected : dummy;
    bool same = CRYPTO_memcmp(got, want, PM_AUTH_TOKEN_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return same && shape && want != dummy;
}

/*
 * Look up the route's pass and check the token: 1 authorized (pass
 * filled), 0 not (401 to answer), -1 registry error (err).
 */
static int authorize_pass(pm_request *rq, pm_registry_reader *rd, pm_registry_service_pass *pass,
                          pm_error *err)
{
    int found = 0;
    bool our_type = !strcmp(rq->route.pass_type, rq->svc->pass_type_id);
    if (our_type && (found = rd->ops->pass_info(rd, rq->route.serial, pass, err)) < 0)
        return -1;
    bool ok = authorized(rq, found ? pass->auth_token : NULL);
    OPENSSL_cleanse(pass->auth_token, sizeof pass->auth_token);
    return ok && found && our_type;
}

static bool push_token_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > PUSH_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)t[i]))
            return false;
    return true;
}

/*
 * The start of a request about one pass on one device (register,
 * unregister): the path's ids checked, a service reader taken, the token
 * checked.  Returns the reader (the caller gives it back with
 * pm_service_reader_done), or NULL with *reply the answer already given.
 */
static pm_registry_reader *begin_device_request(pm_request *rq, const char *what, enum MHD_Result *reply)
{
    if (rq->route.bad_id) {
        *reply = text(rq, MHD_HTTP_BAD_REQUEST, "invalid identifier in the path\n");
        return NULL;
    }
    pm_error err;
    pm_registry_service_pass pass;
    pm_registry_reader *rd = pm_service_reader(rq->svc, &err);
    if (!rd) {
        *reply = server_error(rq, what, &err);
        return NULL;
    }
    int auth = authorize_pass(rq, rd, &pass, &err);
    if (auth <= 0) {
        pm_service_reader_done(rq->svc, rd, auth < 0);
        *reply = auth < 0 ? server_error(rq, what, &err) : text(rq, MHD_HTTP_UNAUTHORIZED, "unauthorized\n");
        return NULL;
    }
    return rd;
}

enum MHD_Result pm_ws_register(pm_request *rq)
{
    enum MHD_Result reply;
    pm_registry_reader *rd = begin_device_request(rq, "register", &reply);
    if (!rd)
        return reply;
    json_error_t je;
    json_t *body = json_loadb((const char *)rq->body.data, rq->body.len, JSON_REJECT_DUPLICATES, &je);
    const char *push = json_string_value(json_object_get(body, "pushToken"));
    if (!json_is_object(body) || !push || !push_token_valid(push)) {
        json_decref(body);
        pm_service_reader_done(rq->svc, rd, false);
        return text(rq, MHD_HTTP_BAD_REQUEST,
                    "expected a JSON object {\"pushToken\": \"<APNs device token>\"}\n");
    }
    pm_error err;
    int added = rd->ops->register_device(rd, rq->route.device, push, rq->route.pass_type,
                                         rq->route.serial, (int64_t)time(NULL), &err);
    json_decref(body);
    pm_service_reader_done(rq->svc, rd, added < 0);
    if (added < 0)
        return server_error(rq, "register", &err);
    if (added)
        atomic_fetch_add_explicit(&rq->svc->metrics.registrations_created, 1, memory_order_relaxed);
    return pm_reply_empty(rq, added ? MHD_HTTP_CREATED : MHD_HTTP_OK, NULL);
}

enum MHD_Result pm_ws_unregister(pm_request *rq)
{
    enum MHD_Result reply;
    pm_registry_reader *rd = begin_device_request(rq, "unregister", &reply);
    if (!rd)
        return reply;
    pm_error err;
    int removed = rd->ops->unregister_device(rd, rq->route.device, rq->route.pass_type,
                                             rq->route.serial, &err);
    pm_service_reader_done(rq->svc, rd, removed < 0);
    if (removed < 0)
        return server_error(rq, "unregister", &err);
    if (removed)
        atomic_fetch_add_explicit(&rq->svc->metrics.registrations_deleted, 1, memory_order_relaxed);
    return pm_reply_empty(rq, MHD_HTTP_OK, NULL);
}

static int add_serial(void *arg, const char *serial)
{
    return json_array_append_new(arg, json_string(serial));
}

enum MHD_Result pm_ws_serials(pm_request *rq)
{
    if (rq->route.bad_id)
        return text(rq, MHD_HTTP_BAD_REQUEST, "invalid identifier in the path\n");
    /* The tag is what lastUpdated said before: digits (absent or empty: every pass). */
    const char *since = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "passesUpdatedSince");
    int64_t tag = 0;
    if (since && *since) {
        size_t n = strlen(since);
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)since[i]) || n > 18)
                return text(rq, MHD_HTTP_BAD_REQUEST,
                            "passesUpdatedSince: expected the lastUpdated tag of an earlier answer\n");
        tag = strtoll(since, NULL, 10);
    }
    if (strcmp(rq->route.pass_type, rq->svc->pass_type_id) != 0)
        return pm_reply_empty(rq, MHD_HTTP_NO_CONTENT, NULL);
    pm_error err;
    pm_registry_reader *rd = pm_service_reader(rq->svc, &err);
    if (!rd)
        return server_error(rq, "serials", &err);
    json_t *serials = json_array();
    int64_t last = tag;
    long n = serials ? rd->ops->serials_since(rd, rq->route.device, rq->route.pass_type, tag,
                                              add_serial, serials, &last, &err)
                     : pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
    pm_service_reader_done(rq->svc, rd, n < 0);
    if (n < 0) {
        json_decref(serials);
        return server_error(rq, "serials", &err);
    }
    if (n == 0) {
        json_decref(serials);
        return pm_reply_empty(rq, MHD_HTTP_NO_CONTENT, NULL);
    }
    char last_s[24];
    snprintf(last_s, sizeof last_s, "%lld", (long long)last);
    json_t *doc = json_pack("{s:o,s:s}", "serialNumbers", serials, "lastUpdated", last_s);
    char *out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!out)
        return text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    pm_buf b = {(uint8_t *)out, strlen(out), strlen(out) + 1};
    return pm_reply_buf(rq, MHD_HTTP_OK, "application/json", &b, NULL);
}

/* RFC 9110 IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT". */
static void http_date(int64_t t, char out[40])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* An IMF-fixdate to unix seconds; -1 when it is not one. */
static int64_t parse_http_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    return (int64_t)timegm(&tm);
}

enum MHD_Result pm_ws_pass(pm_request *rq)
{
    if (rq->route.bad_id)
        return text(rq, MHD_HTTP_BAD_REQUEST, "invalid identifier in the path\n");
    pm_error err;
    pm_registry_service_pass pass;
    pm_registry_reader *rd = pm_service_reader(rq->svc, &err);
    if (!rd)
        return server_error(rq, "pass", &err);
    int auth = authorize_pass(rq, rd, &pass, &err);
    pm_service_reader_done(rq->svc, rd, auth < 0);
    if (auth < 0)
        return server_error(rq, "pass", &err);
    if (auth == 0)
        return text(rq, MHD_HTTP_UNAUTHORIZED, "unauthorized\n");
    char modified[40];
    http_date(pass.updated_at, modified);
    const char *headers[] = {MHD_HTTP_HEADER_LAST_MODIFIED, modified, NULL};
    const char *ims = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
    int64_t since = ims ? parse_http_date(ims) : -1;
    if (since >= 0 && pass.updated_at <= since)
        return pm_reply_empty(rq, MHD_HTTP_NOT_MODIFIED, headers);
    pm_buf b = PM_BUF_INIT;
    if (service_pass_bytes(rq->svc, &pass, false, &b, &err) != 0) {
        pm_buf_free(&b);
        return server_error(rq, "pass", &err);
    }
    return pm_reply_buf(rq, MHD_HTTP_OK, "application/vnd.apple.pkpass", &b, headers);
}

/*
 * One device log line to stderr: control bytes and non-ASCII become '?',
 * runs of 16 or more hex digits (tokens, device ids) become "[redacted]",
 * at most LOG_LINE_MAX bytes.
 */
static void log_line(const char *s)
{
    char out[LOG_LINE_MAX + 16];
    size_t o = 0;
    for (size_t i = 0; s[i] && o < LOG_LINE_MAX;) {
        size_t run = 0;
        while (isxdigit((unsigned char)s[i + run]))
            run++;
        if (run >= 16) {
            o += (size_t)snprintf(out + o, sizeof out - o, "[redacted]");
            i += run;
            continue;
        }
        for (size_t k = 0; k < (run ? run : 1) && o < LOG_LINE_MAX; k++, i++) {
            unsigned char c = (unsigned char)s[i];
            out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
    }
    out[o < sizeof out ? o : sizeof out - 1] = '\0';
    fprintf(stderr, "passmill serve: device log: %s%s\n", out, strlen(s) > LOG_LINE_MAX ? " [...]" : "");
}

enum MHD_Result pm_ws_log(pm_request *rq)
{
    json_error_t je;
    json_t *body = json_loadb((const char *)rq->body.data, rq->body.len, 0, &je);
    json_t *logs = json_object_get(body, "logs");
    if (!json_is_object(body) || !json_is_array(logs)) {
        json_decref(body);
        return text(rq, MHD_HTTP_BAD_REQUEST, "expected a JSON object {\"logs\": [\"...\"]}\n");
    }
    size_t i, shown = 0;
    json_t *v;
    json_array_foreach(logs, i, v) {
        const char *s = json_string_value(v);
        if (!s)
            continue;
        atomic_fetch_add_explicit(&rq->svc->metrics.device_log_lines, 1, memory_order_relaxed);
        if (shown++ < LOG_LINES_MAX)
            log_line(s);
    }
    if (shown > LOG_LINES_MAX)
        fprintf(stderr, "passmill serve: device log: %zu more lines not shown\n", shown - LOG_LINES_MAX);
    json_decref(body);
    return pm_reply_empty(rq, MHD_HTTP_OK, NULL);
}

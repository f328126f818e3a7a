/*
 * store_s3.c - the S3 object store (libcurl + our own SigV4, sigv4.c).
 *
 * Concurrency: put()/get() are called from many worker threads.  The store
 * owns a pool of s3.max_inflight slots; each slot is one CURL easy handle
 * (which keeps its connection alive between requests) plus its own signing
 * scratch and buffers.  A request takes a free slot (waiting on a condvar
 * when all are busy), runs synchronously on it and gives it back, so at most
 * s3.max_inflight requests are in flight and every connection is reused.
 * DNS and TLS sessions are shared between the slots through a curl share
 * handle (connections are not: libcurl does not support sharing them across
 * threads).
 *
 * Every request is signed with SigV4 (header auth, the body's SHA-256 as
 * x-amz-content-sha256).  A PUT sends Content-Type, the optional
 * Cache-Control and the SHA-256 as x-amz-meta-sha256, all signed.
 *
 * Failures are retried with exponential backoff and full jitter (sleep a
 * uniform random time in [0, min(cap, base * 2^attempt)]) when they may be
 * transient: HTTP 5xx, 429, S3's RequestTimeout, curl timeouts and connection
 * errors.  Any other answer is final.  put() returns 0 only on HTTP 200, so
 * nothing is reported stored that is not.
 *
 * Messages name the endpoint, bucket, key and HTTP status or curl error, and
 * the access key id on authentication failures -- never the secret.
 */
#include "stores/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <curl/curl.h>

#include "stores/sigv4.h"

#define S3_BACKOFF_BASE_MS 100
#define S3_BACKOFF_CAP_MS 5000
#define S3_ERROR_BODY_MAX 16384
#define S3_PRESIGN_MAX 604800

typedef struct s3_slot {
    CURL *curl;
    pm_sigv4_scratch sig;
    pm_buf url;
    pm_buf auth;
    pm_buf resp;            /* error bodies of PUTs */
    uint64_t rng;           /* xorshift64* state for the backoff jitter */
    char errbuf[CURL_ERROR_SIZE];
    struct s3_slot *next_free;
} s3_slot;

typedef struct s3_store {
    pm_store base;
    pm_sigv4 *signer;
    char *endpoint;         /* as configured, for messages */
    char *scheme;           /* "http" / "https" */
    char *host;             /* Host header: authority, or bucket.authority */
    char *bucket;
    char *base_path;        /* "/bucket" (path style) or "" (virtual-hosted) */
    char *prefix;
    char *cache_control;    /* NULL if none */
    int64_t presign_expiry;
    int64_t max_retries;
    int64_t timeout_ms;

    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    bool curl_inited;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    s3_slot *slots;
    size_t nslots;
    s3_slot *free_list;
} s3_store;

/* ---- slots ------------------------------------------------------------- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    (void)h;
    (void)access;
    s3_store *s = ud;
    pthread_mutex_lock(&s->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    (void)h;
    s3_store *s = ud;
    pthread_mutex_unlock(&s->share_locks[data]);
}

static s3_slot *slot_acquire(s3_store *s)
{
    pthread_mutex_lock(&s->mu);
    while (!s->free_list)
        pthread_cond_wait(&s->cv, &s->mu);
    s3_slot *slot = s->free_list;
    s->free_list = slot->next_free;
    pthread_mutex_unlock(&s->mu);
    return slot;
}

static void slot_release(s3_store *s, s3_slot *slot)
{
    pthread_mutex_lock(&s->mu);
    slot->next_free = s->free_list;
    s->free_list = slot;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] milliseconds. */
static void backoff_sleep(s3_slot *slot, int attempt)
{
    uint64_t ceiling = S3_BACKOFF_BASE_MS;
    for (int i = 1; i < attempt && ceiling < S3_BACKOFF_CAP_MS; i++)
        ceiling *= 2;
    if (ceiling > S3_BACKOFF_CAP_MS)
        ceiling = S3_BACKOFF_CAP_MS;
    uint64_t ms = rng_next(&slot->rng) % (ceiling + 1);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int slot_init(s3_store *s, s3_slot *slot, pm_error *err)
{
    pm_sigv4_scratch_init(&slot->sig);
    pm_buf_init(&slot->url);
    pm_buf_init(&slot->auth);
    pm_buf_init(&slot->resp);
    if (getrandom(&slot->rng, sizeof slot->rng, 0) != (ssize_t)sizeof slot->rng)
        slot->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)slot;
    slot->rng |= 1; /* xorshift state must not be 0 */
    slot->curl = curl_easy_init();
    if (!slot->curl)
        return pm_error_set(err, PM_ERR_NOMEM, "S3: curl_easy_init failed");
    CURL *c = slot->curl;
    /* Options that never change; per request only method, URL, headers, body. */
    curl_easy_setopt(c, CURLOPT_SHARE, s->share);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, slot->errbuf);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (s->timeout_ms > 0) {
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(s->timeout_ms < 10000 ? s->timeout_ms : 10000));
    }
    return 0;
}

static void slot_free(s3_slot *slot)
{
    if (slot->curl)
        curl_easy_cleanup(slot->curl);
    pm_sigv4_scratch_free(&slot->sig);
    pm_buf_free(&slot->url);
    pm_buf_free(&slot->auth);
    pm_buf_free(&slot->resp);
}

/* ---- one HTTP exchange ------------------------------------------------- */

typedef struct upload {
    const uint8_t *data;
    size_t len, pos;
} upload;

static size_t read_cb(char *buf, size_t size, size_t n, void *ud)
{
    upload *u = ud;
    size_t want = size * n, left = u->len - u->pos;
    if (want > left)
        want = left;
    memcpy(buf, u->data + u->pos, want);
    u->pos += want;
    return want;
}

/* libcurl rewinds the body when it resends on a fresh connection (e.g. the
 * server closed the kept-alive one). */
static int seek_cb(void *ud, curl_off_t offset, int origin)
{
    upload *u = ud;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > u->len)
        return CURL_SEEKFUNC_CANTSEEK;
    u->pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

typedef struct sink {
    pm_buf *buf;
    size_t limit;           /* keep at most this many bytes (0 = no limit) */
    bool oom;
} sink;

static size_t write_cb(char *data, size_t size, size_t n, void *ud)
{
    sink *k = ud;
    size_t len = size * n, keep = len;
    if (k->limit && k->buf->len + keep > k->limit)
        keep = k->buf->len < k->limit ? k->limit - k->buf->len : 0;
    if (keep && pm_buf_append(k->buf, data, keep) != 0) {
        k->oom = true;
        return 0; /* aborts the transfer */
    }
    return len;
}

/* The outcome of one attempt. */
typedef struct attempt {
    CURLcode curl;
    long status;
    bool retryable;
    char detail[200];       /* "HTTP 503 SlowDown: ..." or the curl error */
} attempt;

/* Copy the text of <tag>...</tag> from an S3 XML error body, printable ASCII only. */
static void xml_field(const pm_buf *body, const char *tag, char *out, size_t outsz)
{
    out[0] = '\0';
    if (!body->data || body->len == 0)
        return;
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *text = (const char *)body->data, *end = text + body->len;
    const char *a = memmem(text, body->len, open, strlen(open));
    if (!a)
        return;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (!b)
        return;
    size_t j = 0;
    for (const char *p = a; p < b && j + 1 < outsz; p++)
        out[j++] = (*p >= 0x20 && *p < 0x7f) ? *p : ' ';
    out[j] = '\0';
}

static void classify(attempt *a, const pm_buf *body)
{
    if (a->curl != CURLE_OK) {
        switch (a->curl) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
            a->retryable = true;
            break;
        default:
            a->retryable = false;
        }
        return;
    }
    char code[64], message[128];
    xml_field(body, "Code", code, sizeof code);
    xml_field(body, "Message", message, sizeof message);
    snprintf(a->detail, sizeof a->detail, "HTTP %ld%s%s%s%s", a->status, code[0] ? " " : "", code,
             message[0] ? ": " : "", message);
    a->retryable = a->status >= 500 || a->status == 429 ||
                   (a->status == 400 && strcmp(code, "RequestTimeout") == 0);
}

static bool auth_failure(long status)
{
    return status == 401 || status == 403;
}

/* Raw path of a full key: base_path + "/" + prefix + key. */
static int raw_path(const s3_store *s, const char *key, pm_buf *out)
{
    pm_buf_reset(out);
    if (pm_buf_printf(out, "%s/%s%s", s->base_path, s->prefix, key) != 0)
        return -1;
    pm_buf_cstr(out);
    return 0;
}

/* Set the URL (scheme://host + encoded path) on slot->url. */
static int build_url(const s3_store *s, const char *path, pm_buf *url)
{
    pm_buf_reset(url);
    if (pm_buf_printf(url, "%s://%s", s->scheme, s->host) != 0 ||
        pm_sigv4_uri_encode(url, path, strlen(path), true) != 0 || !pm_buf_cstr(url))
        return -1;
    return 0;
}

static struct curl_slist *add_header(struct curl_slist *list, bool *oom, const char *name,
                                     const char *value)
{
    char line[2048];
    /* "Name:" with nothing after it tells libcurl to send no such header. */
    snprintf(line, sizeof line, "%s:%s%s", name, *value ? " " : "", value);
    struct curl_slist *l = curl_slist_append(list, line);
    if (!l) {
        *oom = true;
        return list;
    }
    return l;
}

/*
 * One signed request on slot: method "PUT" (body up), "GET" (body down into
 * `down`) or "DELETE".  Fills *a; returns -1 only for local failures (memory, crypto),
 * which go to err and are not retried.
 */
static int perform(s3_store *s, s3_slot *slot, const char *method, const char *path,
                   const pm_object *obj, const char *payload_hash, pm_buf *down,
                   attempt *a, pm_error *err)
{
    memset(a, 0, sizeof *a);
    char amz_date[17];
    if (!pm_sigv4_amz_date((int64_t)time(NULL), amz_date))
        return pm_error_set(err, PM_ERR_INTERNAL, "S3: system clock out of range");
    const char *token = pm_sigv4_session_token(s->signer);
    bool put = obj != NULL;

    pm_sigv4_pair h[8];
    size_t n = 0;
    h[n++] = (pm_sigv4_pair){"host", s->host};
    h[n++] = (pm_sigv4_pair){"x-amz-date", amz_date};
    h[n++] = (pm_sigv4_pair){"x-amz-content-sha256", payload_hash};
    if (token)
        h[n++] = (pm_sigv4_pair){"x-amz-security-token", token};
    if (put) {
        h[n++] = (pm_sigv4_pair){"content-type",
                                 obj->content_type ? obj->content_type : "application/octet-stream"};
        h[n++] = (pm_sigv4_pair){"x-amz-meta-sha256",
                                 obj->sha256_hex ? obj->sha256_hex : payload_hash};
        if (s->cache_control)
            h[n++] = (pm_sigv4_pair){"cache-control", s->cache_control};
    }
    pm_sigv4_request r = {.method = method, .path = path, .headers = h, .n_headers = n,
                          .payload_hash = payload_hash};
    char sig[65];
    pm_buf_reset(&slot->auth);
    if (pm_sigv4_sign(s->signer, &slot->sig, &r, amz_date, sig, &slot->auth, err) != 0)
        return -1;
    pm_buf_cstr(&slot->auth);

    bool oom = false;
    struct curl_slist *hl = NULL;
    for (size_t i = 0; i < n; i++)
        hl = add_header(hl, &oom, h[i].name, h[i].value);
    hl = add_header(hl, &oom, "authorization", (const char *)slot->auth.data);
    hl = add_header(hl, &oom, "expect", ""); /* "Expect:" = no 100-continue round trip */
    if (oom || !hl || build_url(s, path, &slot->url) != 0) {
        curl_slist_free_all(hl);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }

    CURL *c = slot->curl;
    upload up = {put ? obj->data : NULL, put ? obj->len : 0, 0};
    pm_buf_reset(&slot->resp);
    pm_buf *body = down ? down : &slot->resp;
    pm_buf_reset(body);
    sink k = {body, down ? 0 : S3_ERROR_BODY_MAX, false};
    slot->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, (const char *)slot->url.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &k);
    if (put) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, &up);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)obj->len);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        /* The handle is reused: the custom method is set per request. */
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, strcmp(method, "DELETE") == 0 ? "DELETE" : NULL);
    }
    a->curl = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    if (k.oom)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading the S3 response");
    if (a->curl == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    else
        snprintf(a->detail, sizeof a->detail, "%.40s (%.150s)", curl_easy_strerror(a->curl),
                 slot->errbuf[0] ? slot->errbuf : "no details");
    classify(a, body);
    return 0;
}

/* The request loop with retries; on failure fills err with the full story. */
static int request(s3_store *s, const char *method, const char *key, const pm_object *obj,
                   pm_buf *down, pm_error *err)
{
    if (!pm_store_key_valid(key))
        return pm_error_set(err, PM_ERR_STORE, "S3 %s: invalid key '%s'", method, key ? key : "");
    s3_slot *slot = slot_acquire(s);
    int rc = -1;
    char payload_hash[65];
    attempt a;
    int attempts = 0;
    char *path = NULL;
    /* The path lives in slot->url only until build_url reuses it: copy it. */
    if (raw_path(s, key, &slot->url) != 0 || !(path = strdup((const char *)slot->url.data))) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (obj) {
        if (pm_sigv4_sha256_hex(s->signer, obj->data, obj->len, payload_hash, err) != 0)
            goto out;
    } else {
        memcpy(payload_hash, PM_SIGV4_EMPTY_SHA256, sizeof payload_hash);
    }
    for (;;) {
        attempts++;
        if (perform(s, slot, method, path, obj, payload_hash, down, &a, err) != 0)
            goto out;
        if (a.curl == CURLE_OK && a.status >= 200 && a.status < 300) {
            rc = 0;
            goto out;
        }
        if (!a.retryable || attempts > s->max_retries)
            break;
        backoff_sleep(slot, attempts);
    }
    if (down)
        pm_buf_reset(down); /* an error body is not the object */
    pm_error_set(err, PM_ERR_STORE,
                 "S3 %s failed: endpoint %s, bucket '%s', key '%s%s': %s (%d attempt%s)%s%s%s",
                 method, s->endpoint, s->bucket, s->prefix, key, a.detail, attempts,
                 attempts == 1 ? "" : "s",
                 a.curl == CURLE_OK && auth_failure(a.status)
                     ? "; authentication failed for access key id '" : "",
                 a.curl == CURLE_OK && auth_failure(a.status) ? pm_sigv4_access_key_id(s->signer) : "",
                 a.curl == CURLE_OK && auth_failure(a.status)
                     ? "' (check the secret key, s3.region and the clock)" : "");
out:
    free(path);
    slot_release(s, slot);
    return rc;
}

/* ---- store ops --------------------------------------------------------- */

static int s3_put(pm_store *base, const pm_object *obj, pm_error *err)
{
    return request((s3_store *)base, "PUT", obj->key, obj, NULL, err);
}

/* S3 answers 204 whether or not the object existed: removal is idempotent,
 * and durable once answered (like a PUT). */
static int s3_delete(pm_store *base, const char *key, pm_error *err)
{
    return request((s3_store *)base, "DELETE", key, NULL, NULL, err);
}

static int s3_get(pm_store *base, const char *key, pm_buf *out, pm_error *err)
{
    return request((s3_store *)base, "GET", key, NULL, out, err);
}

static char *s3_url(pm_store *base, const char *key, int64_t now)
{
    s3_store *s = (s3_store *)base;
    char amz_date[17];
    if (!pm_store_key_valid(key) || !pm_sigv4_amz_date(now, amz_date))
        return NULL;
    /* Pure computation: local scratch, no slot (those may all be on the network). */
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_buf path = PM_BUF_INIT, url = PM_BUF_INIT;
    pm_error err;
    char *result = NULL;
    if (raw_path(s, key, &path) == 0 && build_url(s, (const char *)path.data, &url) == 0 &&
        pm_buf_append(&url, "?", 1) == 0 &&
        pm_sigv4_presign_query(s->signer, &sc, "GET", (const char *)path.data, s->host,
                               amz_date, s->presign_expiry, &url, &err) == 0 &&
        pm_buf_cstr(&url))
        result = strdup((const char *)url.data);
    pm_buf_free(&path);
    pm_buf_free(&url);
    pm_sigv4_scratch_free(&sc);
    return result;
}

static void s3_close(pm_store *base)
{
    s3_store *s = (s3_store *)base;
    if (!s)
        return;
    for (size_t i = 0; i < s->nslots; i++)
        slot_free(&s->slots[i]);
    free(s->slots);
    if (s->share) {
        curl_share_cleanup(s->share);
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&s->share_locks[i]);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pm_sigv4_destroy(s->signer);
    free(s->endpoint);
    free(s->scheme);
    free(s->host);
    free(s->bucket);
    free(s->base_path);
    free(s->prefix);
    free(s->cache_control);
    if (s->curl_inited)
        curl_global_cleanup();
    free(s);
}

static const pm_store_ops s3_ops = {
    .name = "s3",
    .put = s3_put,
    .sync = NULL, /* a PUT answered 200 is durable */
    .get = s3_get,
    .del = s3_delete,
    .url = s3_url,
    .close = s3_close,
};

/* ---- open -------------------------------------------------------------- */

/* Split "scheme://authority[/]" and build the Host value (default port dropped). */
static int parse_endpoint(s3_store *s, const char *endpoint, bool path_style, pm_error *err)
{
    const char *rest;
    if (strncmp(endpoint, "http://", 7) == 0) {
        s->scheme = strdup("http");
        rest = endpoint + 7;
    } else if (strncmp(endpoint, "https://", 8) == 0) {
        s->scheme = strdup("https");
        rest = endpoint + 8;
    } else {
        return pm_error_set(err, PM_ERR_CONFIG,
                            "s3.endpoint: expected http://host[:port] or https://host[:port], got '%s'",
                            endpoint);
    }
    size_t alen = strcspn(rest, "/?#");
    bool bad_tail = rest[alen] && strcmp(rest + alen, "/") != 0;
    if (alen == 0 || bad_tail || memchr(rest, '@', alen) || memchr(rest, ' ', alen))
        return pm_error_set(err, PM_ERR_CONFIG,
                            "s3.endpoint: expected scheme://host[:port] without user, path or "
                            "query, got '%s'", endpoint);
    char authority[512];
    if (alen >= sizeof authority)
        return pm_error_set(err, PM_ERR_CONFIG, "s3.endpoint: host too long");
    memcpy(authority, rest, alen);
    authority[alen] = '\0';
    const char *default_port = strcmp(s->scheme, "https") == 0 ? ":443" : ":80";
    size_t dlen = strlen(default_port);
    if (alen > dlen && strcmp(authority + alen - dlen, default_port) == 0)
        authority[alen - dlen] = '\0';
    if (path_style) {
        s->host = strdup(authority);
        s->base_path = malloc(strlen(s->bucket) + 2);
        if (s->base_path)
            sprintf(s->base_path, "/%s", s->bucket);
    } else {
        s->host = malloc(strlen(s->bucket) + strlen(authority) + 2);
        if (s->host)
            sprintf(s->host, "%s.%s", s->bucket, authority);
        s->base_path = strdup("");
    }
    if (!s->scheme || !s->host || !s->base_path)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    return 0;
}

static bool bucket_name_ok(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (const char *p = b; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_' || (*p >= 'A' && *p <= 'Z')))
            return false;
    return true;
}

static int check_config(const pm_config *cfg, pm_error *err)
{
    if (!cfg->s3_bucket || !bucket_name_ok(cfg->s3_bucket))
        return pm_error_set(err, PM_ERR_CONFIG,
                            "s3.bucket: expected a bucket name (3-63 letters, digits, '-', '.', "
                            "'_'), got '%s'", cfg->s3_bucket ? cfg->s3_bucket : "");
    if (!cfg->s3_region || !*cfg->s3_region || strchr(cfg->s3_region, '/'))
        return pm_error_set(err, PM_ERR_CONFIG, "s3.region: expected a region like us-east-1, got '%s'",
                            cfg->s3_region ? cfg->s3_region : "");
    if (cfg->s3_prefix && *cfg->s3_prefix) {
        char probe[1100];
        snprintf(probe, sizeof probe, "%sx", cfg->s3_prefix);
        if (!pm_store_key_valid(probe))
            return pm_error_set(err, PM_ERR_CONFIG,
                                "s3.prefix: '%s' would make invalid keys (relative, no '.', '..' or "
                                "empty segments)", cfg->s3_prefix);
    }
    if (cfg->s3_presign_expiry < 1 || cfg->s3_presign_expiry > S3_PRESIGN_MAX)
        return pm_error_set(err, PM_ERR_CONFIG, "s3.presign_expiry: expected 1..%d seconds, got %lld",
                            S3_PRESIGN_MAX, (long long)cfg->s3_presign_expiry);
    if (cfg->s3_max_inflight < 1 || cfg->s3_max_inflight > 1024)
        return pm_error_set(err, PM_ERR_CONFIG, "s3.max_inflight: expected 1..1024, got %lld",
                            (long long)cfg->s3_max_inflight);
    if (cfg->s3_max_retries > 100)
        return pm_error_set(err, PM_ERR_CONFIG, "s3.max_retries: expected 0..100, got %lld",
                            (long long)cfg->s3_max_retries);
    if (cfg->s3_timeout_ms > 86400000)
        return pm_error_set(err, PM_ERR_CONFIG, "s3.timeout_ms: expected at most 86400000, got %lld",
                            (long long)cfg->s3_timeout_ms);
    return 0;
}

int pm_store_s3_open(const pm_config *cfg, pm_store **out, pm_error *err)
{
    *out = NULL;
    if (check_config(cfg, err) != 0)
        return -1;
    s3_store *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->base.ops = &s3_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->presign_expiry = cfg->s3_presign_expiry;
    s->max_retries = cfg->s3_max_retries;
    s->timeout_ms = cfg->s3_timeout_ms;

    char aws_endpoint[300];
    const char *endpoint = cfg->s3_endpoint;
    if (!endpoint || !*endpoint) {
        snprintf(aws_endpoint, sizeof aws_endpoint, "https://s3.%s.amazonaws.com", cfg->s3_region);
        endpoint = aws_endpoint;
    }
    s->endpoint = strdup(endpoint);
    s->bucket = strdup(cfg->s3_bucket);
    s->prefix = strdup(cfg->s3_prefix ? cfg->s3_prefix : "");
    s->cache_control = (cfg->s3_cache_control && *cfg->s3_cache_control)
                           ? strdup(cfg->s3_cache_control) : NULL;
    if (!s->endpoint || !s->bucket || !s->prefix ||
        (cfg->s3_cache_control && *cfg->s3_cache_control && !s->cache_control)) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (parse_endpoint(s, endpoint, cfg->s3_path_style, err) != 0)
        goto fail;

    pm_sigv4_creds creds;
    if (pm_sigv4_creds_load(&creds, cfg->s3_credentials_file, cfg->s3_profile, err) != 0)
        goto fail;
    int rc = pm_sigv4_create(&s->signer, &creds, cfg->s3_region, "s3", err);
    pm_sigv4_creds_clear(&creds);
    if (rc != 0)
        goto fail;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        pm_error_set(err, PM_ERR_IO, "S3: curl_global_init failed");
        goto fail;
    }
    s->curl_inited = true;
    s->share = curl_share_init();
    if (!s->share) {
        pm_error_set(err, PM_ERR_NOMEM, "S3: curl_share_init failed");
        goto fail;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->share_locks[i], NULL);
    curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

    s->slots = calloc((size_t)cfg->s3_max_inflight, sizeof *s->slots);
    if (!s->slots) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < (size_t)cfg->s3_max_inflight; i++) {
        s->nslots = i + 1;
        if (slot_init(s, &s->slots[i], err) != 0)
            goto fail;
        s->slots[i].next_free = s->free_list;
        s->free_list = &s->slots[i];
    }
    *out = &s->base;
    return 0;
fail:
    s3_close(&s->base);
    return -1;
}

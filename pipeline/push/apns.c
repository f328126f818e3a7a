/* apns.c - see apns.h.  Protocol: Apple's "Sending notification requests to
 * APNs" and "Handling notification responses from APNs" (docs/push.md). */
#include "push/apns.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/ssl.h>

struct pm_apns {
    pm_apns_options o;
    char *url;
    CURLM *multi;
    CURL **easy;          /* reused between batches: their connections stay in the multi's cache */
    size_t n_easy;
};

typedef struct transfer {
    char body[512];       /* APNs' JSON answer ({"reason": ...}); longer is cut */
    size_t len;
    long retry_after;     /* seconds, -1 = none */
    CURLcode code;        /* the transfer's result, once done */
    struct curl_slist *headers;
} transfer;

/* The pass type ID certificate and key, already loaded, into curl's OpenSSL
 * context: no file name or passphrase goes through curl. */
static CURLcode set_identity(CURL *curl, void *sslctx, void *arg)
{
    (void)curl;
    const pm_apns *a = arg;
    SSL_CTX *ctx = sslctx;
    if (SSL_CTX_use_certificate(ctx, a->o.cert) != 1 || SSL_CTX_use_PrivateKey(ctx, a->o.key) != 1)
        return CURLE_SSL_CERTPROBLEM;
    for (int i = 0; a->o.chain && i < sk_X509_num(a->o.chain); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(a->o.chain, i)) != 1)
            return CURLE_SSL_CERTPROBLEM;
    return CURLE_OK;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    size_t len = size * n, room = sizeof t->body - 1 - t->len;
    size_t take = len < room ? len : room;
    memcpy(t->body + t->len, data, take);
    t->len += take;
    t->body[t->len] = '\0';
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    transfer *t = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name && strncasecmp(data, name, sizeof name - 1) == 0) {
        const char *v = data + sizeof name - 1;
        while (*v == ' ' || *v == '\t')
            v++;
        /* Seconds only: an HTTP date is rare here and the backoff covers it. */
        if (isdigit((unsigned char)*v))
            t->retry_after = strtol(v, NULL, 10);
    }
    return len;
}

int64_t pm_apns_backoff(const pm_apns_options *o, int attempts, int64_t now)
{
    int64_t wait = o->backoff_initial > 0 ? o->backoff_initial : 1;
    for (int i = 1; i < attempts && wait < o->backoff_max; i++)
        wait *= 2;
    if (o->backoff_max > 0 && wait > o->backoff_max)
        wait = o->backoff_max;
    return now + wait;
}

int pm_apns_create(const pm_apns_options *o, pm_apns **out, pm_error *err)
{
    *out = NULL;
    if (!o->cert || !o->key)
        return pm_error_set(err, PM_ERR_CONFIG, "push: no pass type ID certificate and key (sign.*)");
    if (strncmp(o->url, "https://", 8) != 0)
        return pm_error_set(err, PM_ERR_CONFIG, "push.apns_url '%s': expected an https:// URL", o->url);
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_HTTP2))
        return pm_error_set(err, PM_ERR_CONFIG, "push: this libcurl has no HTTP/2 (APNs needs it)");
    /* Reference-counted by libcurl; paired in pm_apns_destroy. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return pm_error_set(err, PM_ERR_IO, "push: curl_global_init failed");
    pm_apns *a = calloc(1, sizeof *a);
    if (!a) {
        curl_global_cleanup();
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    a->o = *o;
    size_t ulen = strlen(o->url);
    while (ulen && o->url[ulen - 1] == '/')
        ulen--;
    a->url = strndup(o->url, ulen);
    a->multi = curl_multi_init();
    if (!a->url || !a->multi) {
        pm_apns_destroy(a);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    curl_multi_setopt(a->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(a->multi, CURLMOPT_MAX_HOST_CONNECTIONS, o->connections > 0 ? o->connections : 1);
    curl_multi_setopt(a->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, o->streams > 0 ? o->streams : 1);
    *out = a;
    return 0;
}

void pm_apns_destroy(pm_apns *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_easy; i++)
        curl_easy_cleanup(a->easy[i]);
    free(a->easy);
    if (a->multi)
        curl_multi_cleanup(a->multi);
    free(a->url);
    free(a);
    curl_global_cleanup();
}

/* A new handle with the options every push shares: set once, kept while
 * the handle is reused (no curl_easy_reset: re-setting them for every push
 * was a measurable part of its cost, docs/push.md). */
static CURL *easy_new(pm_apns *a)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L); /* wait for a connection to multiplex on */
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 2L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, set_identity);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, a);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (a->o.ca_file && *a->o.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, a->o.ca_file);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, a->o.timeout_ms > 0 ? a->o.timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    return e;
}

static CURL *easy_for(pm_apns *a, size_t i)
{
    if (i < a->n_easy)
        return a->easy[i];
    CURL **grown = realloc(a->easy, (i + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    a->easy = grown;
    CURL *e = easy_new(a);
    if (!e)
        return NULL;
    a->easy[a->n_easy++] = e;
    return e;
}

/* The request headers for a topic. */
static struct curl_slist *headers_for(const char *pass_type_id)
{
    char topic[PM_PUSH_ID_MAX + 16];
    snprintf(topic, sizeof topic, "apns-topic: %s", pass_type_id);
    /* Wallet's push: the topic is the pass type identifier, the payload an
     * empty dictionary; a background push (no alert) has priority 5. */
    const char *lines[] = {topic, "apns-push-type: background", "apns-priority: 5",
                           "content-type: application/json"};
    struct curl_slist *h = NULL, *h2;
    for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++) {
        if (!(h2 = curl_slist_append(h, lines[k]))) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = h2;
    }
    return h;
}

/* A token is hex in practice; anything that could change the path or a
 * header (/, ?, #, %, spaces, controls) is refused before sending. */
static bool token_ok(const char *t)
{
    if (!*t)
        return false;
    for (; *t; t++)
        if (!isalnum((unsigned char)*t) && *t != '-' && *t != '_' && *t != '.')
            return false;
    return true;
}

static void verdict(const pm_apns *a, const pm_push_item *it, const transfer *t, CURLcode code,
                    long status, int64_t now, pm_push_result *r)
{
    memset(r, 0, sizeof *r);
    r->status = (int)status;
    if (code != CURLE_OK) {
        r->verdict = PM_PUSH_RETRY;
        snprintf(r->reason, sizeof r->reason, "%s", curl_easy_strerror(code));
    } else {
        json_t *j = t->len ? json_loads(t->body, 0, NULL) : NULL;
        const char *why = json_string_value(json_object_get(j, "reason"));
        snprintf(r->reason, sizeof r->reason, "%s", why ? why : "");
        json_decref(j);
        if (status == 200)
            r->verdict = PM_PUSH_SENT;
        else if (status == 410)
            r->verdict = PM_PUSH_GONE;
        else if (status == 429 || status >= 500)
            r->verdict = PM_PUSH_RETRY;
        else
            r->verdict = PM_PUSH_FAILED;
        if (!r->reason[0] && status != 200)
            snprintf(r->reason, sizeof r->reason, "HTTP %ld", status);
    }
    if (r->verdict == PM_PUSH_RETRY) {
        /* The outbox keeps whole seconds and now was cut down to one: + 1
         * makes the wait at least what was asked, never a fraction less. */
        r->retry_at = 1 + (t->retry_after >= 0 ? now + t->retry_after : pm_apns_backoff(&a->o, it->attempts, now));
    }
}

int pm_apns_send(pm_apns *a, const pm_push_item *items, pm_push_result *res, size_t n, int64_t now,
                 pm_error *err)
{
    if (n == 0)
        return 0;
    transfer *t = calloc(n, sizeof *t);
    CURL **done = calloc(n, sizeof *done); /* the transfers one wake-up finished */
    if (!t || !done) {
        free(t);
        free(done);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    size_t added = 0;
    int rc = 0;
    struct curl_slist *h = NULL; /* the header list of h_topic */
    const char *h_topic = NULL;
    /* Until answered, a push is one to try again. */
    for (size_t i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        res[i].verdict = PM_PUSH_RETRY;
        res[i].retry_at = pm_apns_backoff(&a->o, items[i].attempts, now);
        snprintf(res[i].reason, sizeof res[i].reason, "not answered");
        t[i].retry_after = -1;
    }
    for (size_t i = 0; i < n; i++) {
        const pm_push_item *it = &items[i];
        if (!token_ok(it->push_token)) {
            memset(&res[i], 0, sizeof res[i]);
            res[i].verdict = PM_PUSH_FAILED;
            snprintf(res[i].reason, sizeof res[i].reason, "BadDeviceToken (not sent: not a token)");
            continue;
        }
        CURL *e = easy_for(a, i);
        /* Pushes of one topic (a round's usual case) share its header list;
         * t[i].headers owns the lists made here. */
        if (!h || strcmp(h_topic, it->pass_type_id) != 0) {
            h = t[i].headers = headers_for(it->pass_type_id);
            h_topic = it->pass_type_id;
        }
        if (!e || !h) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        char url[PM_PUSH_TOKEN_MAX + 512];
        snprintf(url, sizeof url, "%s/3/device/%s", a->url, it->push_token);
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &t[i]);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &t[i]);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)(uintptr_t)i);
        if (curl_multi_add_handle(a->multi, e) != CURLM_OK) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "push: curl_multi_add_handle failed");
            break;
        }
        added++;
    }
    int running = 1;
    while (running) {
        CURLMcode mc = curl_multi_perform(a->multi, &running);
        if (mc == CURLM_OK && running) {
            mc = curl_multi_poll(a->multi, NULL, 0, 1000, NULL);
            /* Every perform walks all of the batch's transfers: let answers
             * gather for a millisecond so one walk settles many of them
             * (measured: CPU per push fell, see docs/push.md). */
            struct timespec gather = {0, 1000000L};
            nanosleep(&gather, NULL);
        }
        if (mc != CURLM_OK) {
            rc = pm_error_set(err, PM_ERR_IO, "push: %s", curl_multi_strerror(mc));
            break;
        }
        /* All the finished transfers first, then their removal: libcurl
         * 7.88's curl_multi_remove_handle walks the messages not read yet,
         * so removing while reading cost O(finished^2) per wake-up. */
        CURLMsg *m;
        int left;
        size_t nd = 0;
        while ((m = curl_multi_info_read(a->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            void *priv = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            t[(uintptr_t)priv].code = m->data.result;
            done[nd++] = m->easy_handle;
        }
        for (size_t k = 0; k < nd; k++) {
            void *priv = NULL;
            long status = 0;
            curl_easy_getinfo(done[k], CURLINFO_PRIVATE, &priv);
            curl_easy_getinfo(done[k], CURLINFO_RESPONSE_CODE, &status);
            size_t i = (size_t)(uintptr_t)priv;
            verdict(a, &items[i], &t[i], t[i].code, status, now, &res[i]);
            curl_multi_remove_handle(a->multi, done[k]);
            added--;
        }
    }
    /* After an error some may still be attached (their result stays RETRY);
     * removing a handle that is not attached is harmless. */
    for (size_t i = 0; added && i < n && i < a->n_easy; i++)
        curl_multi_remove_handle(a->multi, a->easy[i]);
    for (size_t i = 0; i < n; i++)
        curl_slist_free_all(t[i].headers);
    free(t);
    free(done);
    return rc;
}

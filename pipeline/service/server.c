/*
 * server.c - the HTTP server: libmicrohttpd with its internal epoll thread
 * pool, request limits, connection deadlines, the reader pool, dispatch.
 *
 * Limits.  MHD bounds the request line and headers together by its
 * per-connection memory (PM_SVC_HEADER_MEMORY: a longer URL or header is
 * answered 414/431 by MHD and closed); bodies are bounded per endpoint here
 * (413, Content-Length checked before any byte is read); ids in paths are
 * checked by route.c.
 *
 * Deadlines.  MHD's connection timeout counts idle time only, so a client
 * sending one header byte a second keeps a connection forever (slowloris).
 * Every connection therefore has a deadline: service.timeout_s after it
 * opened or after its last response, a complete request must have arrived.
 * A reaper thread shuts down the socket of a connection past its deadline
 * (MHD then closes it).  The connection list is guarded by conn_lock, which
 * MHD's "closed" notification also takes before MHD closes the socket, so
 * the reaper never touches a descriptor that was reused.
 */
#include "service/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

typedef struct pm_conn {
    struct pm_conn *prev, *next;
    int fd;
    uint64_t deadline_ms;       /* 0: none (a request is being answered) */
} pm_conn;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the reader pool ---- */

pm_registry_reader *pm_service_reader(pm_service *s, pm_error *err)
{
    pthread_mutex_lock(&s->pool_lock);
    pm_registry_reader *rd = s->pool_len ? s->pool[--s->pool_len] : NULL;
    pthread_mutex_unlock(&s->pool_lock);
    if (rd)
        return rd;
    if (s->registry->ops->service_open(s->registry, &rd, err) != 0)
        return NULL;
    return rd;
}

void pm_service_reader_done(pm_service *s, pm_registry_reader *rd, bool failed)
{
    if (!rd)
        return;
    if (!failed) {
        pthread_mutex_lock(&s->pool_lock);
        if (s->pool_len == s->pool_cap) {
            size_t cap = s->pool_cap ? 2 * s->pool_cap : 16;
            pm_registry_reader **p = realloc(s->pool, cap * sizeof *p);
            if (p) {
                s->pool = p;
                s->pool_cap = cap;
            }
        }
        if (s->pool_len < s->pool_cap) {
            s->pool[s->pool_len++] = rd;
            rd = NULL;
        }
        pthread_mutex_unlock(&s->pool_lock);
    }
    pm_registry_reader_close(rd);
}

/* ---- replies ---- */

static enum MHD_Result queue(pm_request *rq, unsigned status, struct MHD_Response *resp,
                             const char *content_type, const char *const *headers)
{
    if (!resp)
        return MHD_NO;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (size_t i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && rq->route.allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rq->route.allow);
    rq->status = status;
    enum MHD_Result r = MHD_queue_response(rq->conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

enum MHD_Result pm_reply(pm_request *rq, unsigned status, const char *content_type,
                         const void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    return queue(rq, status, MHD_create_response_from_buffer(len, (void *)body, mode),
                 content_type, NULL);
}

enum MHD_Result pm_reply_buf(pm_request *rq, unsigned status, const char *content_type,
                             pm_buf *b, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(b->len, b->data, free);
    if (resp)
        pm_buf_init(b);  /* MHD frees the memory with the response */
    return queue(rq, status, resp, content_type, headers);
}

enum MHD_Result pm_reply_empty(pm_request *rq, unsigned status, const char *const *headers)
{
    return queue(rq, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT),
                 NULL, headers);
}

static enum MHD_Result reply_text(pm_request *rq, unsigned status, const char *text)
{
    return pm_reply(rq, status, "text/plain; charset=utf-8", text, strlen(text),
                    MHD_RESPMEM_PERSISTENT);
}

/* ---- health and metrics ---- */

static enum MHD_Result healthz(pm_request *rq)
{
    pm_error err;
    pm_registry_service_stats st;
    pm_registry_reader *rd = pm_service_reader(rq->svc, &err);
    int rc = rd ? rd->ops->service_stats(rd, &st, &err) : -1;
    pm_service_reader_done(rq->svc, rd, rc != 0);
    if (rc != 0) {
        fprintf(stderr, "passmill serve: healthz: %s\n", err.message);
        return reply_text(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "registry unavailable\n");
    }
    return reply_text(rq, MHD_HTTP_OK, "ok\n");
}

static enum MHD_Result metrics(pm_request *rq)
{
    pm_service *s = rq->svc;
    pm_buf out = PM_BUF_INIT;
    pm_error err;
    pm_registry_service_stats st;
    pm_registry_reader *rd = pm_service_reader(s, &err);
    int rc = rd ? rd->ops->service_stats(rd, &st, &err) : -1;
    pm_service_reader_done(s, rd, rc != 0);
    int bad = pm_metrics_render(&s->metrics, &out);
    bad |= pm_buf_printf(&out, "# HELP passmill_registry_up Whether the registry answered this scrape.\n"
                               "# TYPE passmill_registry_up gauge\npassmill_registry_up %d\n", rc == 0);
    if (rc == 0)
        bad |= pm_buf_printf(&out,
                             "# HELP passmill_devices Devices registered (all serve processes).\n"
                             "# TYPE passmill_devices gauge\npassmill_devices %llu\n"
                             "# HELP passmill_registrations Registrations of passes on devices.\n"
                             "# TYPE passmill_registrations gauge\npassmill_registrations %llu\n"
                             "# HELP passmill_push_outbox_depth Pushes queued, not yet accepted by APNs.\n"
                             "# TYPE passmill_push_outbox_depth gauge\npassmill_push_outbox_depth %llu\n"
                             "# HELP passmill_push_outbox_failed Pushes APNs refused for good (outbox rows in state failed).\n"
                             "# TYPE passmill_push_outbox_failed gauge\npassmill_push_outbox_failed %llu\n",
                             (unsigned long long)st.devices, (unsigned long long)st.registrations,
                             (unsigned long long)st.outbox_queued, (unsigned long long)st.outbox_failed);
    for (size_t i = 0; i < s->n_sources; i++)
        s->sources[i].fn(s->sources[i].arg, &out);
    if (bad) {
        pm_buf_free(&out);
        return reply_text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return pm_reply_buf(rq, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &out, NULL);
}

int pm_service_add_metrics(pm_service *s, pm_service_metrics_fn fn, void *arg)
{
    if (s->n_sources == sizeof s->sources / sizeof s->sources[0])
        return -1;
    s->sources[s->n_sources++] = (pm_metrics_source){fn, arg};
    return 0;
}

/* ---- the request handler ---- */

static pm_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_deadline(pm_service *s, struct MHD_Connection *c, bool armed)
{
    pm_conn *pc = conn_of(c);
    if (!pc)
        return;
    pthread_mutex_lock(&s->conn_lock);
    pc->deadline_ms = armed ? now_ms() + 1000u * s->timeout_s : 0;
    pthread_mutex_unlock(&s->conn_lock);
}

static size_t body_max(pm_endpoint ep)
{
    switch (ep) {
    case PM_EP_REGISTER: return PM_SVC_BODY_MAX_REGISTER;
    case PM_EP_LOG: return PM_SVC_BODY_MAX_LOG;
    default: return 0;
    }
}

static enum MHD_Result dispatch(pm_request *rq)
{
    const pm_route *r = &rq->route;
    if (r->ep == PM_EP_OTHER)
        return reply_text(rq, MHD_HTTP_NOT_FOUND, "not found\n");
    if (!r->method_ok)
        return reply_text(rq, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (rq->body_too_large)
        return reply_text(rq, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
    switch (r->ep) {
    case PM_EP_REGISTER: return pm_ws_register(rq);
    case PM_EP_UNREGISTER: return pm_ws_unregister(rq);
    case PM_EP_SERIALS: return pm_ws_serials(rq);
    case PM_EP_PASS: return pm_ws_pass(rq);
    case PM_EP_LOG: return pm_ws_log(rq);
    case PM_EP_TICKET_PKPASS: return pm_ticket_get(rq, false);
    case PM_EP_TICKET_QR: return pm_ticket_get(rq, true);
    case PM_EP_HEALTHZ: return healthz(rq);
    case PM_EP_METRICS: return metrics(rq);
    default: return reply_text(rq, MHD_HTTP_NOT_FOUND, "not found\n");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls)
{
    (void)version;
    pm_service *s = cls;
    pm_request *rq = *req_cls;
    if (!rq) {
        /* First call: the headers are in.  Route now, to bound the body. */
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->svc = s;
        rq->conn = c;
        rq->method = method;
        rq->started_us = now_us();
        pm_route_match(method, url, &rq->route);
        rq->body_max = body_max(rq->route.ep);
        *req_cls = rq;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > rq->body_max) {
            /* Answer before reading the body; MHD then closes the connection. */
            rq->body_too_large = true;
            if (rq->route.ep == PM_EP_OTHER || !rq->route.method_ok)
                return dispatch(rq);
            return reply_text(rq, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->body_too_large && rq->body.len + *upload_size <= rq->body_max) {
            if (pm_buf_append(&rq->body, upload, *upload_size) != 0)
                return MHD_NO;
        } else {
            rq->body_too_large = true;  /* chunked and too long: drop the rest */
            pm_buf_free(&rq->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->status)
        return MHD_YES;  /* answered early (413) */
    set_deadline(s, c, false);
    return dispatch(rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    pm_service *s = cls;
    pm_request *rq = *req_cls;
    if (rq) {
        if (rq->status)
            pm_metrics_record(&s->metrics, rq->route.ep, rq->status, now_us() - rq->started_us);
        pm_buf_free(&rq->body);
        free(rq);
        *req_cls = NULL;
    }
    set_deadline(s, c, true);  /* the next request must arrive in time too */
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    pm_service *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        pm_conn *pc = calloc(1, sizeof *pc);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!pc || !ci) {
            free(pc);
            return;  /* no deadline for it: MHD's idle timeout still applies */
        }
        pc->fd = ci->connect_fd;
        pthread_mutex_lock(&s->conn_lock);
        pc->deadline_ms = now_ms() + 1000u * s->timeout_s;
        pc->next = s->conns;
        if (s->conns)
            s->conns->prev = pc;
        s->conns = pc;
        pthread_mutex_unlock(&s->conn_lock);
        *socket_context = pc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        pm_conn *pc = *socket_context;
        if (!pc)
            return;
        pthread_mutex_lock(&s->conn_lock);
        if (pc->prev)
            pc->prev->next = pc->next;
        else
            s->conns = pc->next;
        if (pc->next)
            pc->next->prev = pc->prev;
        pthread_mutex_unlock(&s->conn_lock);
        free(pc);
        *socket_context = NULL;
    }
}

/* Shut down connections past their deadline, four times a second. */
static void *reaper_main(void *arg)
{
    pm_service *s = arg;
    pthread_mutex_lock(&s->stop_lock);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &ts);
        if (s->stopping)
            break;
        uint64_t now = now_ms();
        pthread_mutex_lock(&s->conn_lock);
        for (pm_conn *pc = s->conns; pc; pc = pc->next)
            if (pc->deadline_ms && now > pc->deadline_ms) {
                shutdown(pc->fd, SHUT_RDWR);
                pc->deadline_ms = 0;
                atomic_fetch_add_explicit(&s->metrics.connections_dropped, 1, memory_order_relaxed);
            }
        pthread_mutex_unlock(&s->conn_lock);
    }
    pthread_mutex_unlock(&s->stop_lock);
    return NULL;
}

/*
 * Percent-decoding of paths and query values, as MHD's own but for %00,
 * which is kept as the three characters "%00": a NUL would cut the id short
 * ("a%00b" would be read as "a"); kept, the '%' fails the id charset.
 */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 && (hi || lo)) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    /* MHD's own messages name sockets and limits, never request content. */
    fputs("passmill serve: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ---- start / stop ---- */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        pm_error *err)
{
    char host[256];
    const char *colon = strrchr(listen ? listen : "", ':');
    if (!listen || !colon || colon == listen || (size_t)(colon - listen) >= sizeof host || !colon[1])
        return pm_error_set(err, PM_ERR_CONFIG, "service.listen: expected HOST:PORT such as "
                            "127.0.0.1:8080 or [::1]:8080, got '%s'", listen ? listen : "");
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0 || !ai)
        return pm_error_set(err, PM_ERR_CONFIG, "service.listen '%s': %s", listen,
                            rc ? gai_strerror(rc) : "no address");
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int pm_service_start(const pm_service_deps *d, pm_service **out, pm_error *err)
{
    *out = NULL;
    const pm_config *cfg = d->cfg;
    if (!d->registry)
        return pm_error_set(err, PM_ERR_CONFIG, "passmill serve needs a registry "
                            "(registry.path or registry.url)");
    if (cfg->service_timeout_s < 1 || cfg->service_timeout_s > 3600)
        return pm_error_set(err, PM_ERR_CONFIG, "service.timeout_s: expected 1..3600, got %lld",
                            (long long)cfg->service_timeout_s);
    if (cfg->service_threads < 0 || cfg->service_threads > 256)
        return pm_error_set(err, PM_ERR_CONFIG, "service.threads: expected 0..256, got %lld",
                            (long long)cfg->service_threads);
    if (cfg->service_max_connections < 1 || cfg->service_max_connections > 100000)
        return pm_error_set(err, PM_ERR_CONFIG, "service.max_connections: expected 1..100000, got %lld",
                            (long long)cfg->service_max_connections);
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_listen(cfg->service_listen, &ss, &sl, err) != 0)
        return -1;

    pm_service *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->registry = d->registry;
    s->store = d->store;
    s->timeout_s = (unsigned)cfg->service_timeout_s;
    pm_metrics_init(&s->metrics);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->conn_lock, NULL);
    pthread_mutex_init(&s->stop_lock, NULL);
    pthread_cond_init(&s->stop_cond, NULL);
    s->pass_type_id = strdup(d->pass_type_id ? d->pass_type_id : "");
    if (d->link_key && d->link_key_len) {
        s->link_key = malloc(d->link_key_len);
        if (s->link_key) {
            memcpy(s->link_key, d->link_key, d->link_key_len);
            s->link_key_len = d->link_key_len;
        }
    }
    if (!s->pass_type_id || (d->link_key_len && !s->link_key)) {
        pm_service_stop(s);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    if (d->metrics_fn)
        pm_service_add_metrics(s, d->metrics_fn, d->metrics_arg); /* before any request thread */
    /* One reader up front: a registry that cannot be reached fails start-up. */
    pm_registry_reader *rd = pm_service_reader(s, err);
    if (!rd) {
        pm_service_stop(s);
        return -1;
    }
    pm_service_reader_done(s, rd, false);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cfg->service_threads ? (unsigned)cfg->service_threads
                                            : (unsigned)(cpus > 0 ? cpus : 1);
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        pm_service_stop(s);
        return pm_error_set(err, PM_ERR_INTERNAL, "cannot start the connection reaper thread");
    }
    s->reaper_started = true;
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->service_max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, s->timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)PM_SVC_HEADER_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_END);
    if (!s->daemon) {
        pm_service_stop(s);
        return pm_error_set(err, PM_ERR_IO, "service.listen '%s': cannot listen (in use? "
                            "not an address of this machine?)", cfg->service_listen);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : 0;
    *out = s;
    return 0;
}

uint16_t pm_service_port(const pm_service *s)
{
    return s->port;
}

void pm_service_stop(pm_service *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);  /* joins every MHD thread */
    if (s->reaper_started) {
        pthread_mutex_lock(&s->stop_lock);
        s->stopping = true;
        pthread_cond_signal(&s->stop_cond);
        pthread_mutex_unlock(&s->stop_lock);
        pthread_join(s->reaper, NULL);
    }
    for (size_t i = 0; i < s->pool_len; i++)
        pm_registry_reader_close(s->pool[i]);
    free(s->pool);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->conn_lock);
    pthread_mutex_destroy(&s->stop_lock);
    pthread_cond_destroy(&s->stop_cond);
    free(s->pass_type_id);
    if (s->link_key)
        OPENSSL_cleanse(s->link_key, s->link_key_len);
    free(s->link_key);
    free(s);
}

/*
 * internal.h - what the service's files share (not a public contract).
 *
 * server.c owns the MHD daemon, the connection deadlines and the reader
 * pool; route.c turns a method and path into an endpoint with validated
 * ids; wallet_ws.c (Apple's web service) and tickets.c answer them;
 * pass_bytes.c is the one place that reads a pass's objects.
 */
#ifndef PM_SERVICE_INTERNAL_H
#define PM_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "core/buf.h"
#include "registry/registry.h"
#include "service/metrics.h"
#include "service/service.h"

/* Ids in paths: [A-Za-z0-9._-], not starting with '.', at most this long. */
#define PM_SVC_ID_MAX 128
/* Request bodies: registration {"pushToken":...}; /v1/log's messages. */
#define PM_SVC_BODY_MAX_REGISTER 4096
#define PM_SVC_BODY_MAX_LOG 65536
/* Request line and headers together (MHD's per-connection memory pool). */
#define PM_SVC_HEADER_MEMORY (16u << 10)  /* MHD zeroes it per request: keep it small */

typedef struct pm_route {
    pm_endpoint ep;
    bool method_ok;                /* false: 405 for a known path */
    const char *allow;             /* the Allow header for a 405 */
    char device[PM_SVC_ID_MAX + 1];
    char pass_type[PM_SVC_ID_MAX + 1];
    char serial[PM_SVC_ID_MAX + 1];
    bool bad_id;                   /* a path of a known shape with an id outside the charset */
} pm_route;

/* Match method and path (decoded by MHD) to an endpoint: PM_EP_OTHER = 404. */
void pm_route_match(const char *method, const char *path, pm_route *out);
/* Is s an acceptable id ([A-Za-z0-9._-]{1,PM_SVC_ID_MAX}, no leading '.')? */
bool pm_route_id_valid(const char *s, size_t max);

typedef struct pm_metrics_source {
    pm_service_metrics_fn fn;
    void *arg;
} pm_metrics_source;

struct pm_service {
    struct MHD_Daemon *daemon;
    pm_registry *registry;
    pm_store *store;
    char *pass_type_id;
    uint8_t *link_key;
    size_t link_key_len;
    unsigned timeout_s;
    uint16_t port;
    pm_service_metrics metrics;
    pm_metrics_source sources[8];
    size_t n_sources;

    /* Registry readers: one per request in flight, kept for reuse. */
    pthread_mutex_t pool_lock;
    pm_registry_reader **pool;
    size_t pool_len, pool_cap;

    /* Connection deadlines (slowloris): see server.c. */
    pthread_mutex_t conn_lock;
    struct pm_conn *conns;
    pthread_t reaper;
    bool reaper_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

/* One request being answered: what the handlers see. */
typedef struct pm_request {
    pm_service *svc;
    struct MHD_Connection *conn;
    pm_route route;
    const char *method;
    pm_buf body;
    size_t body_max;
    bool body_too_large;
    unsigned status;               /* what was answered, for metrics */
    uint64_t started_us;
} pm_request;

/* A registry reader for this request (from the pool); NULL + err. */
pm_registry_reader *pm_service_reader(pm_service *s, pm_error *err);
/* Back to the pool (a reader that failed is closed: the next one reconnects). */
void pm_service_reader_done(pm_service *s, pm_registry_reader *rd, bool failed);

/* Answer: queue a response and record the status.  body is copied only when
 * it is not persistent (MHD_RESPMEM_*). */
enum MHD_Result pm_reply(pm_request *rq, unsigned status, const char *content_type,
                         const void *body, size_t len, enum MHD_ResponseMemoryMode mode);
/* Answer with a buffer whose memory MHD takes over (no copy): b is reset. */
enum MHD_Result pm_reply_buf(pm_request *rq, unsigned status, const char *content_type,
                             pm_buf *b, const char *const *headers);
/* An empty answer with a status (and optional extra header pairs, NULL-ended). */
enum MHD_Result pm_reply_empty(pm_request *rq, unsigned status, const char *const *headers);

/* The handlers. */
enum MHD_Result pm_ws_register(pm_request *rq);
enum MHD_Result pm_ws_unregister(pm_request *rq);
enum MHD_Result pm_ws_serials(pm_request *rq);
enum MHD_Result pm_ws_pass(pm_request *rq);
enum MHD_Result pm_ws_log(pm_request *rq);
enum MHD_Result pm_ticket_get(pm_request *rq, bool qr);

/*
 * The bytes of one of a pass's objects (qr false: the .pkpass, true: its QR
 * PNG), into out (reset first).  The only place serve reads them, so a new
 * store layout changes this function alone.  0, or -1 + err.
 */
int service_pass_bytes(pm_service *s, const pm_registry_service_pass *pass, bool qr, pm_buf *out,
                       pm_error *err);

#endif

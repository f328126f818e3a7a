/*
 * service.h - `passmill serve`: the Apple Wallet web service and the ticket
 * downloads over HTTP (docs/web-service.md).
 *
 * One pm_service is an HTTP/1.1 server on Debian's libmicrohttpd: an
 * internal epoll thread pool (service.threads), each thread taking a
 * registry reader of its own from a pool (pm_registry_ops.service_open), so
 * no database handle is shared between threads.  It speaks plain HTTP: TLS
 * is terminated in front of it (nginx, a load balancer).
 *
 * Endpoints (all of Apple's web service version 1, the seed's tickets,
 * health and metrics): docs/web-service.md.  Nothing secret is logged:
 * no authentication token, push token or device id.
 */
#ifndef PM_SERVICE_H
#define PM_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"
#include "registry/registry.h"
#include "stores/store.h"

typedef struct pm_service pm_service;

/* Appends Prometheus text-format lines to out; called from any serve thread. */
typedef void (*pm_service_metrics_fn)(void *arg, pm_buf *out);

/* What a service needs; borrowed, all must outlive the service. */
typedef struct pm_service_deps {
    const pm_config *cfg;      /* service.* keys */
    pm_registry *registry;     /* required */
    pm_store *store;           /* where the .pkpass and QR objects are */
    const char *pass_type_id;  /* the signer's passTypeIdentifier: others are 401 */
    const uint8_t *link_key;   /* HMAC key of ticket links; NULL: /tickets/ answers 404 */
    size_t link_key_len;
    /* Optional extra /metrics lines (e.g. the push sender's counters), set
     * before the first request; see pm_service_add_metrics(). */
    pm_service_metrics_fn metrics_fn;
    void *metrics_arg;
} pm_service_deps;

/*
 * Bind service.listen (port 0: any free port) and start serving.  Returns
 * once the socket listens; PM_ERR_CONFIG for a bad service.* value,
 * PM_ERR_IO when the address cannot be bound.
 */
int pm_service_start(const pm_service_deps *deps, pm_service **out, pm_error *err);
/* The port it listens on (the bound one when service.listen said 0). */
uint16_t pm_service_port(const pm_service *s);
/* Stop accepting, finish the requests in flight, join every thread, free. */
void pm_service_stop(pm_service *s);

/*
 * An extra /metrics source (e.g. the push sender's counters): fn appends
 * Prometheus text-format lines to out at every scrape; it is called from
 * any serve thread, so it reads atomics.  Add before traffic starts.
 */
int pm_service_add_metrics(pm_service *s, pm_service_metrics_fn fn, void *arg);

#endif

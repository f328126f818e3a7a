/*
 * metrics.h - the service's counters and latency histograms, rendered in
 * Prometheus' text exposition format at /metrics.
 *
 * Every serve thread records into one pm_service_metrics with relaxed
 * atomics (no lock on the request path); a scrape reads them as they are.
 */
#ifndef PM_SERVICE_METRICS_H
#define PM_SERVICE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"

/* The endpoints, as the `endpoint` label names them. */
typedef enum pm_endpoint {
    PM_EP_REGISTER,        /* POST   /v1/devices/D/registrations/T/S */
    PM_EP_UNREGISTER,      /* DELETE /v1/devices/D/registrations/T/S */
    PM_EP_SERIALS,         /* GET    /v1/devices/D/registrations/T */
    PM_EP_PASS,            /* GET    /v1/passes/T/S */
    PM_EP_LOG,             /* POST   /v1/log */
    PM_EP_TICKET_PKPASS,   /* GET    /tickets/ID/pkpass */
    PM_EP_TICKET_QR,       /* GET    /tickets/ID/qr */
    PM_EP_HEALTHZ,
    PM_EP_METRICS,
    PM_EP_OTHER,           /* anything else: 404 / 405 */
    PM_EP_COUNT
} pm_endpoint;

const char *pm_endpoint_name(pm_endpoint ep);

/* The status codes counted one by one; others count as "other". */
#define PM_METRICS_CODES 16
/* Latency buckets in microseconds (le=0.0005 ... 2.5 seconds), then +Inf. */
#define PM_METRICS_BUCKETS 12

typedef struct pm_service_metrics {
    atomic_uint_fast64_t requests[PM_EP_COUNT][PM_METRICS_CODES + 1];
    atomic_uint_fast64_t latency[PM_EP_COUNT][PM_METRICS_BUCKETS + 1];
    atomic_uint_fast64_t latency_sum_us[PM_EP_COUNT];
    atomic_uint_fast64_t registrations_created, registrations_deleted;
    atomic_uint_fast64_t connections_dropped;   /* slow or idle: closed at the deadline */
    atomic_uint_fast64_t device_log_lines;
} pm_service_metrics;

void pm_metrics_init(pm_service_metrics *m);
void pm_metrics_record(pm_service_metrics *m, pm_endpoint ep, unsigned status, uint64_t micros);
/* Append this process's counters and histograms to out (0, -1 out of memory). */
int pm_metrics_render(const pm_service_metrics *m, pm_buf *out);

#endif

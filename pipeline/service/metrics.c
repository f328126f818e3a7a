/*
 * metrics.c - counters and histograms in Prometheus' text format.
 */
#include "service/metrics.h"

#include <inttypes.h>

static const char *const endpoint_names[PM_EP_COUNT] = {
    "register", "unregister", "serials", "pass", "log",
    "ticket_pkpass", "ticket_qr", "healthz", "metrics", "other",
};

static const unsigned codes[PM_METRICS_CODES] = {
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 410, 413, 414, 431, 500, 503,
};

static const uint64_t bucket_us[PM_METRICS_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
};

const char *pm_endpoint_name(pm_endpoint ep)
{
    return ep < PM_EP_COUNT ? endpoint_names[ep] : "other";
}

void pm_metrics_init(pm_service_metrics *m)
{
    for (int e = 0; e < PM_EP_COUNT; e++) {
        for (int c = 0; c <= PM_METRICS_CODES; c++)
            atomic_init(&m->requests[e][c], 0);
        for (int b = 0; b <= PM_METRICS_BUCKETS; b++)
            atomic_init(&m->latency[e][b], 0);
        atomic_init(&m->latency_sum_us[e], 0);
    }
    atomic_init(&m->registrations_created, 0);
    atomic_init(&m->registrations_deleted, 0);
    atomic_init(&m->connections_dropped, 0);
    atomic_init(&m->device_log_lines, 0);
}

void pm_metrics_record(pm_service_metrics *m, pm_endpoint ep, unsigned status, uint64_t micros)
{
    if (ep >= PM_EP_COUNT)
        ep = PM_EP_OTHER;
    int c = 0;
    while (c < PM_METRICS_CODES && codes[c] != status)
        c++;
    int b = 0;
    while (b < PM_METRICS_BUCKETS && micros > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&m->requests[ep][c], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency[ep][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[ep], micros, memory_order_relaxed);
}

static uint64_t get(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

int pm_metrics_render(const pm_service_metrics *m, pm_buf *out)
{
    int rc = 0;
    rc |= pm_buf_append_str(out, "# HELP passmill_http_requests_total HTTP requests answered, by endpoint and status code.\n"
                                 "# TYPE passmill_http_requests_total counter\n");
    for (int e = 0; e < PM_EP_COUNT; e++)
        for (int c = 0; c <= PM_METRICS_CODES; c++) {
            uint64_t v = get(&m->requests[e][c]);
            if (!v)
                continue;
            if (c < PM_METRICS_CODES)
                rc |= pm_buf_printf(out, "passmill_http_requests_total{endpoint=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                                    endpoint_names[e], codes[c], v);
            else
                rc |= pm_buf_printf(out, "passmill_http_requests_total{endpoint=\"%s\",code=\"other\"} %" PRIu64 "\n",
                                    endpoint_names[e], v);
        }
    rc |= pm_buf_append_str(out, "# HELP passmill_http_request_duration_seconds Time from the request's headers to its response, by endpoint.\n"
                                 "# TYPE passmill_http_request_duration_seconds histogram\n");
    for (int e = 0; e < PM_EP_COUNT; e++) {
        uint64_t cum = 0;
        for (int b = 0; b <= PM_METRICS_BUCKETS; b++) {
            cum += get(&m->latency[e][b]);
            if (b < PM_METRICS_BUCKETS)
                rc |= pm_buf_printf(out, "passmill_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                                    endpoint_names[e], (double)bucket_us[b] / 1e6, cum);
            else
                rc |= pm_buf_printf(out, "passmill_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                                    endpoint_names[e], cum);
        }
        rc |= pm_buf_printf(out, "passmill_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n"
                                 "passmill_http_request_duration_seconds_count{endpoint=\"%s\"} %" PRIu64 "\n",
                            endpoint_names[e], (double)get(&m->latency_sum_us[e]) / 1e6, endpoint_names[e], cum);
    }
    rc |= pm_buf_printf(out,
                        "# HELP passmill_registrations_created_total Device registrations made by this process.\n"
                        "# TYPE passmill_registrations_created_total counter\n"
                        "passmill_registrations_created_total %" PRIu64 "\n"
                        "# HELP passmill_registrations_deleted_total Device registrations removed by this process.\n"
                        "# TYPE passmill_registrations_deleted_total counter\n"
                        "passmill_registrations_deleted_total %" PRIu64 "\n"
                        "# HELP passmill_connections_dropped_total Connections closed at their deadline (slow or idle clients).\n"
                        "# TYPE passmill_connections_dropped_total counter\n"
                        "passmill_connections_dropped_total %" PRIu64 "\n"
                        "# HELP passmill_device_log_lines_total Lines devices sent to /v1/log.\n"
                        "# TYPE passmill_device_log_lines_total counter\n"
                        "passmill_device_log_lines_total %" PRIu64 "\n",
                        get(&m->registrations_created), get(&m->registrations_deleted),
                        get(&m->connections_dropped), get(&m->device_log_lines));
    return rc ? -1 : 0;
}

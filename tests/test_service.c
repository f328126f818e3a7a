/* Tests for the web service's pure parts: routing and id checks, signed
 * links, metrics rendering.  The HTTP behaviour is tests/test_serve.sh. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/buf.h"
#include "service/internal.h"
#include "service/link.h"
#include "service/metrics.h"

static const uint8_t key[] = "0123456789abcdef0123456789abcdef";

Test(route, apple_endpoints_and_their_ids)
{
    pm_route r;
    pm_route_match("POST", "/v1/devices/dev1/registrations/pass.com.x/S-1", &r);
    cr_assert_eq(r.ep, PM_EP_REGISTER);
    cr_assert(r.method_ok && !r.bad_id);
    cr_assert_str_eq(r.device, "dev1");
    cr_assert_str_eq(r.pass_type, "pass.com.x");
    cr_assert_str_eq(r.serial, "S-1");
    pm_route_match("DELETE", "/v1/devices/dev1/registrations/pass.com.x/S-1", &r);
    cr_assert_eq(r.ep, PM_EP_UNREGISTER);
    pm_route_match("PUT", "/v1/devices/dev1/registrations/pass.com.x/S-1", &r);
    cr_assert_eq(r.ep, PM_EP_REGISTER);
    cr_assert(!r.method_ok, "PUT is 405");
    pm_route_match("GET", "/v1/devices/dev1/registrations/pass.com.x", &r);
    cr_assert_eq(r.ep, PM_EP_SERIALS);
    pm_route_match("HEAD", "/v1/passes/pass.com.x/S-1", &r);
    cr_assert_eq(r.ep, PM_EP_PASS);
    cr_assert(r.method_ok);
    pm_route_match("POST", "/v1/log", &r);
    cr_assert_eq(r.ep, PM_EP_LOG);
    pm_route_match("GET", "/tickets/S-1/qr", &r);
    cr_assert_eq(r.ep, PM_EP_TICKET_QR);
    pm_route_match("GET", "/tickets/S-1/pdf", &r);
    cr_assert_eq(r.ep, PM_EP_OTHER);
}

Test(route, traversal_and_odd_paths_never_yield_an_id)
{
    pm_route r;
    const char *bad[] = {"/v1/passes/pass.com.x/..", "/v1/passes/pass.com.x/.hidden",
                         "/v1/passes/pass.com.x/a b", "/v1/passes/pass.com.x/a%00b",
                         "/v1/passes/../S-1", "/tickets/a\\b/qr"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pm_route_match("GET", bad[i], &r);
        cr_assert(r.bad_id, "%s: an id outside the charset", bad[i]);
    }
    const char *other[] = {"/v1/passes/pass.com.x/../../etc/passwd", "//v1/log", "/v1//log",
                           "v1/log", "", "/v1/passes/x/y/", "/a/b/c/d/e/f/g/h/i/j"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        pm_route_match("GET", other[i], &r);
        cr_assert_eq(r.ep, PM_EP_OTHER, "%s: no endpoint", other[i]);
    }
    char longid[PM_SVC_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    cr_assert(!pm_route_id_valid(longid, PM_SVC_ID_MAX));
    longid[PM_SVC_ID_MAX] = '\0';
    cr_assert(pm_route_id_valid(longid, PM_SVC_ID_MAX));
}

Test(link, signs_one_path_until_its_expiry)
{
    char sig[PM_LINK_SIG_HEX + 1];
    pm_error err;
    cr_assert_eq(pm_link_sign(key, 32, "/tickets/S-1/pkpass", 2000, sig, &err), 0);
    cr_assert_eq(strlen(sig), 64);
    cr_assert(pm_link_valid(key, 32, "/tickets/S-1/pkpass", "2000", sig, 1999));
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", "2000", sig, 2000), "expired");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/qr", "2000", sig, 1000), "another path");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-2/pkpass", "2000", sig, 1000), "another ticket");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", "20000", sig, 1000), "another expiry");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", "+2000", sig, 1000), "not digits");
    cr_assert(!pm_link_valid(key, 31, "/tickets/S-1/pkpass", "2000", sig, 1000), "another key");
    char upper[PM_LINK_SIG_HEX + 1];
    for (size_t i = 0; i <= PM_LINK_SIG_HEX; i++)
        upper[i] = (char)((sig[i] >= 'a' && sig[i] <= 'f') ? sig[i] - 32 : sig[i]);
    cr_assert(pm_link_valid(key, 32, "/tickets/S-1/pkpass", "2000", upper, 1000), "hex in any case");
    sig[10] = sig[10] == '0' ? '1' : '0';
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", "2000", sig, 1000), "tampered");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", "2000", "abc", 1000), "short");
    cr_assert(!pm_link_valid(key, 32, "/tickets/S-1/pkpass", NULL, sig, 1000), "no expiry");
}

Test(metrics, counts_and_cumulative_buckets)
{
    pm_service_metrics m;
    pm_metrics_init(&m);
    pm_metrics_record(&m, PM_EP_PASS, 200, 400);      /* 0.4 ms */
    pm_metrics_record(&m, PM_EP_PASS, 200, 3000);     /* 3 ms */
    pm_metrics_record(&m, PM_EP_PASS, 304, 9000000);  /* 9 s: +Inf only */
    pm_metrics_record(&m, PM_EP_REGISTER, 299, 100);  /* a code not listed */
    pm_buf out = PM_BUF_INIT;
    cr_assert_eq(pm_metrics_render(&m, &out), 0);
    const char *t = pm_buf_cstr(&out);
    cr_assert(strstr(t, "passmill_http_requests_total{endpoint=\"pass\",code=\"200\"} 2\n"));
    cr_assert(strstr(t, "passmill_http_requests_total{endpoint=\"pass\",code=\"304\"} 1\n"));
    cr_assert(strstr(t, "passmill_http_requests_total{endpoint=\"register\",code=\"other\"} 1\n"));
    cr_assert(strstr(t, "passmill_http_request_duration_seconds_bucket{endpoint=\"pass\",le=\"0.0005\"} 1\n"));
    cr_assert(strstr(t, "passmill_http_request_duration_seconds_bucket{endpoint=\"pass\",le=\"0.005\"} 2\n"));
    cr_assert(strstr(t, "passmill_http_request_duration_seconds_bucket{endpoint=\"pass\",le=\"2.5\"} 2\n"));
    cr_assert(strstr(t, "passmill_http_request_duration_seconds_bucket{endpoint=\"pass\",le=\"+Inf\"} 3\n"));
    cr_assert(strstr(t, "passmill_http_request_duration_seconds_count{endpoint=\"pass\"} 3\n"));
    cr_assert(!strstr(t, "endpoint=\"log\",code="), "no series for what never happened");
    pm_buf_free(&out);
}

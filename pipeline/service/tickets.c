/*
 * tickets.c - the seed's ticket service behind signed links (link.h):
 *
 *   GET /tickets/ID/pkpass?expires=E&sig=S   the pass (application/vnd.apple.pkpass)
 *   GET /tickets/ID/qr?expires=E&sig=S       its QR image (image/png)
 *
 * 400 an id outside the charset, 403 a missing, wrong or expired signature
 * (checked before the registry is asked, so a bad link tells nothing about
 * which tickets exist), 404 unknown, 410 the QR of a ticket no longer
 * active (voided, redeemed, expired): it must not open a gate.
 */
#include "service/internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "service/link.h"

static enum MHD_Result text(pm_request *rq, unsigned status, const char *t)
{
    return pm_reply(rq, status, "text/plain; charset=utf-8", t, strlen(t), MHD_RESPMEM_PERSISTENT);
}

enum MHD_Result pm_ticket_get(pm_request *rq, bool qr)
{
    pm_service *s = rq->svc;
    if (!s->link_key)
        return text(rq, MHD_HTTP_NOT_FOUND, "not found\n");
    if (rq->route.bad_id)
        return text(rq, MHD_HTTP_BAD_REQUEST, "invalid ticket id\n");
    char path[PM_SVC_ID_MAX + 32];
    snprintf(path, sizeof path, "/tickets/%s/%s", rq->route.serial, qr ? "qr" : "pkpass");
    const char *exp = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "expires");
    const char *sig = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "sig");
    if (!pm_link_valid(s->link_key, s->link_key_len, path, exp, sig, (int64_t)time(NULL)))
        return text(rq, MHD_HTTP_FORBIDDEN, "this link is not valid or has expired\n");
    pm_error err;
    pm_registry_service_pass pass;
    pm_registry_reader *rd = pm_service_reader(s, &err);
    int found = rd ? rd->ops->pass_info(rd, rq->route.serial, &pass, &err) : -1;
    pm_service_reader_done(s, rd, found < 0);
    if (found < 0) {
        fprintf(stderr, "passmill serve: ticket: %s\n", err.message);
        return text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
    }
    if (!found)
        return text(rq, MHD_HTTP_NOT_FOUND, "no such ticket\n");
    if (qr && strcmp(pass.status, "active") != 0)
        return text(rq, MHD_HTTP_GONE, "this ticket is no longer valid\n");
    pm_buf b = PM_BUF_INIT;
    if (service_pass_bytes(s, &pass, qr, &b, &err) != 0) {
        pm_buf_free(&b);
        fprintf(stderr, "passmill serve: ticket: %s\n", err.message);
        return text(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
    }
    const char *headers[] = {MHD_HTTP_HEADER_CACHE_CONTROL, "private, no-store", NULL};
    return pm_reply_buf(rq, MHD_HTTP_OK, qr ? "image/png" : "application/vnd.apple.pkpass", &b,
                        headers);
}

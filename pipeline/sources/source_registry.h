/*
 * source_registry.h - the registry as a source: lifecycle commands
 * (passmill void|expire|redeem|activate|reissue, docs/lifecycle.md).
 *
 * The source selects passes from the registry (by event, pass group and
 * template, or a list of serials), in serial order, a page at a time, and
 * hands the engine one partial request per pass, by serial alone: the
 * merge stage takes the rest from the stored record and the fingerprint
 * stage finds the passes already in the wanted state (`unchanged`).
 *   - void/expire/redeem/activate: {"serial_number", "action", "status_message"}
 *     (expire: plus an "expiration_date" of now unless the record has one in
 *     the past; activate: an expiration date in the past is cleared);
 *   - reissue: the stored action again (an ISSUE as UPDATE), so the pass is
 *     rendered from its stored record with the template as it is now.  A row
 *     whose content hash, recomputed from its stored canonical text with the
 *     current template version and signer, equals the stored one is not
 *     handed out at all: it is counted as skipped (unchanged) without
 *     parsing, rendering or signing.
 */
#ifndef PM_SOURCE_REGISTRY_H
#define PM_SOURCE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "engine/context.h"
#include "registry/registry.h"
#include "sources/source.h"

typedef struct pm_source_registry_opts {
    /* "VOID", "EXPIRE", "REDEEM", "ACTIVATE"; NULL = reissue. */
    const char *action;
    pm_registry_selection sel;        /* used when n_serials == 0 */
    const char *const *serials;       /* borrowed; in this order */
    size_t n_serials;
    const char *message;              /* status_message; NULL = none (clears an earlier one) */
    int64_t now;                      /* unix seconds, for expire/activate */
    const pm_context *ctx;            /* reissue: templates and signer; borrowed */
} pm_source_registry_opts;

/* Counts the selection up front (pm_source_registry_total).  r and opts'
 * strings are borrowed and must outlive the source. */
int pm_source_registry_open(pm_registry *r, const pm_source_registry_opts *opts, pm_source **out,
                            pm_error *err);
/* Passes selected (serials: the list's length). */
uint64_t pm_source_registry_total(pm_source *s);
/* Rows the reissue scan found unchanged and did not hand out.  Any thread. */
uint64_t pm_source_registry_skipped(pm_source *s);
/* The pass the last next() handed out: its serial and status before this
 * run ("" when the registry does not hold it).  Source thread only; valid
 * until the next call of next(). */
void pm_source_registry_last(pm_source *s, const char **serial, const char **old_status);
/* The status an action gives: "voided", "expired", "redeemed", "active". */
const char *pm_lifecycle_status(const char *action);

#endif

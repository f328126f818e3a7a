/*
 * manifest.h - stage 3: render pass.json and manifest.json.
 *
 * Runs after barcode.  Reads job->tmpl (validate), job->record (decode),
 * job->barcodes (barcode) and job->now (engine); writes job->pass_json and
 * job->manifest_json.
 *
 * pass.json is the template skeleton with every binding substituted from
 * the record, in the skeleton's key order, then these keys appended in this
 * order (the template may not set them; see docs/templates.md):
 *   serialNumber    record serial_number
 *   barcodes, barcode   the keys of job->barcodes, as they are
 *   relevantDate    record relevant_date, else event.start
 *   expirationDate  record expiration_date, else the template's expiry
 *                   (template.json, pm_template_expiry_at from the pass's
 *                   first issue job->issued_at, or job->now when 0); for
 *                   action EXPIRE the pass's
 *                   clock job->now as RFC 3339 UTC ("2027-06-12T18:00:00Z")
 *   voided          true for actions VOID and REDEEM
 *   locations       [{latitude, longitude, altitude?, relevantText?}] when
 *                   the record has any
 *   beacons         [{proximityUUID, major?, minor?, relevantText?}] likewise
 *   sharingProhibited  true when the record's sharing_prohibited is true;
 *                   false removes the template's key, null keeps it
 * Bindings:
 *   "${path}" names a record leaf (event.name, attendee.seat, ...) and
 *   "${custom.KEY}" the value of the custom field KEY.  Strings get the
 *   value's text (integers in decimal, RFC 3339 dates as they are); a
 *   string that is exactly one binding to a number becomes that number.
 *   Record text is inserted once and never scanned for bindings again.
 *   A null binding is "" - and a field of headerFields, primaryFields,
 *   secondaryFields, auxiliaryFields or backFields whose "value" has a null
 *   binding is left out of its array (no "SEAT" label over nothing); so is
 *   an entry of relevantDates with a null binding anywhere in it (no
 *   "startDate": "" when the record has no doors time), and relevantDates
 *   itself when no entry is left.
 *   ${barcode.message} is the barcode stage's final message (the generated
 *   value for "autogenerate"), the record's only when barcodes is NULL.
 * Back of the pass (eventTicket.backFields):
 *   - when the action is not ISSUE/UPDATE, a first field
 *     {"key": "status", "label": "STATUS", "value": "VOIDED"|"EXPIRED"|
 *     "REDEEMED"} (templates localise these words in pass.strings);
 *   - then, appended, every custom field the template does not bind
 *     itself, in record order: {"key": "custom_<key>", "label", "value"}.
 * metadata never appears on the pass (no userInfo).
 *
 * Serialization is deterministic: compact JSON (no spaces), keys in the
 * order above, reals with 15 significant digits, UTF-8 unescaped.
 *
 * manifest.json is {"<file>": "<sha1 hex>", ...} over pass.json (hashed
 * here) and every template file (hashed once at load), keys sorted by
 * byte value, compact.
 *
 * Before anything is hashed, the rendered tree is checked with verify's
 * pass.json rules (pm_verify_pass_json): a pass that `passmill verify`
 * would refuse is never signed or stored.  It is the reject "pass.verify"
 * (field "", the message names the template, verify's rule and what it
 * found): the template and this record's values do not make a valid pass.
 * Other failures are system errors (PM_ERR_NOMEM, PM_ERR_INTERNAL for a job
 * without template or record, PM_ERR_CRYPTO).
 */
#ifndef PM_STAGE_MANIFEST_H
#define PM_STAGE_MANIFEST_H

#include <stdint.h>

#include "core/buf.h"
#include "wallet/template.h"
#include "stages/stage.h"

/*
 * Render the pass.json tree of one record (the rules above) into *out, a new
 * tree the caller frees.  barcodes may be NULL (no barcode keys).  scratch
 * is a buffer reused for string building.  Exposed for tests and tools; the
 * stage calls it with its per-worker scratch.
 */
int pm_pass_render(const pm_template *tmpl, json_t *record, json_t *barcodes, int64_t now,
                   pm_buf *scratch, json_t **out, pm_error *err);

/* Serialize a pass.json tree the one deterministic way into out (replaced). */
int pm_pass_dump(json_t *pass, pm_buf *out, pm_error *err);

#endif

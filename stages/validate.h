/*
 * validate.h - stage 1: business rules on the normalized record.
 *
 * Runs after decode.  Reads job->record (shaped by schemas/pass_request.avsc,
 * see stages/decode.h) and checks every rule below in schema field order, so
 * the first failure reported for a record is predictable.  On the first
 * failure it returns -1 with a reject in job->err: a stable dotted reason
 * code, the exact field path ("locations[3].latitude",
 * "attendee.face_value.currency", "custom_fields[1].key") and a message that
 * says what was expected and what was found (found values quoted, cut to 40
 * bytes, non-printable bytes escaped as \xNN).  docs/rejects.md is the
 * complete table of reason codes.
 *
 * On success it writes
 *   job->tmpl    the template named by template_id (borrowed from ctx)
 *   job->status  "active" (ISSUE, UPDATE), "voided" (VOID),
 *                "expired" (EXPIRE), "redeemed" (REDEEM)
 *
 * Rules, per string field (applied to every string in the record, in this
 * order):
 *   utf8.invalid   not shortest-form UTF-8, a surrogate, or above U+10FFFF
 *                  (Avro input can carry any bytes);
 *   text.control   a control character (C0 U+0000..U+001F, DEL, C1
 *                  U+0080..U+009F); tab and newline are allowed only in
 *                  free-text fields: event.venue_address, barcode.message,
 *                  locations[i].relevant_text, beacons[i].relevant_text,
 *                  custom_fields[i].value and metadata values;
 *   field.empty    a required text (event.name, event.venue_title,
 *                  custom_fields[i].label) is empty or only spaces;
 *   field.too_long longer than the schema's documented limit.  Limits the
 *                  schema gives in "characters" count Unicode code points,
 *                  limits given in "bytes" count UTF-8 bytes.
 * then the field's own rule (identifiers, timestamps, time zone, money,
 * barcode, locations, beacons, custom fields, metadata; see docs/rejects.md).
 *
 * Timestamps are RFC 3339 with an explicit offset, exactly as
 * pipeline/core/rfc3339.h parses them: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm),
 * a real calendar date, second 0..59 (leap second 60 is rejected: Wallet and
 * the rest of the pipeline cannot represent it), offset within +-14:00.
 * Fractions are accepted and ignored in comparisons.
 *
 * Time zones are checked against the IANA names (zones and links) that
 * pipeline/core/tzdb.h loads once, in create().
 *
 * Currencies are checked against a compiled-in table of the active ISO 4217
 * alphabetic codes.
 *
 * create() fails (PM_ERR_CONFIG) when ctx->templates is NULL or the zoneinfo
 * directory does not exist.  The state is read-only afterwards; process()
 * needs no scratch and does not allocate.
 */
#ifndef PM_STAGE_VALIDATE_H
#define PM_STAGE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tzdb.h"
#include "stages/stage.h"

/* Limits the validate stage enforces (see schemas/pass_request.avsc). */
#define PM_ID_MAX 64                 /* serial_number, template_id, pass group ids */
#define PM_PASS_GROUPS_MAX 16
#define PM_LOCATIONS_MAX 10
#define PM_BEACONS_MAX 10
#define PM_CUSTOM_FIELDS_MAX 10
#define PM_CUSTOM_KEY_MAX 32
#define PM_METADATA_MAX 32
#define PM_METADATA_KEY_MAX 64       /* bytes */
#define PM_METADATA_VALUE_MAX 1024   /* bytes */
#define PM_BARCODE_MESSAGE_MAX 512   /* bytes */
#define PM_MONEY_MAX_MICROS 1000000000000000LL /* 10^15 */

/* Is code[0..len) an active ISO 4217 alphabetic code (uppercase, e.g. "GBP")? */
bool pm_currency_is_active(const char *code, size_t len);

#endif

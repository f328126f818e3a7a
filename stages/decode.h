/*
 * decode.h - stage 0: raw bytes -> normalized record.
 *
 * Turns job->raw (JSON object, Avro binary datum, or Confluent-framed Avro)
 * into job->record, a jansson tree shaped exactly by
 * schemas/pass_request.avsc:
 *   - every field of every record is present; missing optional fields get
 *     their schema default; a missing field without default is a reject
 *     (reason "schema.missing", field = dotted path);
 *   - unions ["null", T] are JSON null or a plain T (no {"string": ...}
 *     wrapper); enums are their symbol strings; longs are JSON integers;
 *   - in JSON input an unknown field is a reject ("schema.unknown_field"),
 *     a wrong type is "schema.type", an unknown enum symbol "schema.enum",
 *     invalid JSON "json.syntax" (field: the key being read, or ""),
 *     bad Avro bytes "avro.decode", a datum with no value in the
 *     compiled schema "avro.resolve", a bad Confluent frame "avro.magic"
 *     / "avro.schema_id".
 *   - a raw record longer than PM_RECORD_MAX bytes is "record.too_large"
 *     (field ""), before any parsing; trailing bytes after an Avro datum
 *     are "avro.decode".
 * Array elements appear in paths as "locations[3].latitude", map entries
 * as "metadata.order_id".  A reject about the record as a whole (not a
 * JSON object, bad JSON, bad frame) has field "".
 * Avro string bytes are kept as sent; UTF-8 is checked by validate.
 * PM_INPUT_AVRO is read with job->writer (the container file's writer
 * schema, resolved against the compiled one; NULL = the compiled one).
 * Sets job->serial to the serial_number string inside the tree.
 *
 * Partial requests (JSON only): an UPDATE, VOID, EXPIRE, REDEEM or ACTIVATE
 * that lacks any of template_id, event, attendee, barcode is a change of a
 * pass the registry holds: {"serial_number": "...", "action": "VOID"}, or
 * an UPDATE carrying only the fields that change.  decode then leaves
 * job->record NULL and puts the parsed object in job->patch (serial_number
 * must be a string, else "schema.missing"); the merge stage builds the
 * record from the registry's.
 *
 * Confluent framing: the schema id must be one of kafka.schema_ids
 * ("id:path.avsc,...") whose file is a writer schema that can be read as
 * the compiled schema (pm_schema_writer), or, for an id not listed, one
 * the schema registry at kafka.schema_registry_url has (fetched once per
 * id, cached; a 404 or an unreadable schema is "avro.schema_id", a
 * registry that cannot be reached is a PM_ERR_IO failure of the record).
 * create() fails (PM_ERR_CONFIG) on a malformed kafka.schema_ids or
 * registry URL, or, when input.type is kafka with kafka.value_format
 * avro, on a listed file that cannot be read or cannot be read as the
 * compiled schema.  Otherwise such ids are just not accepted.
 * The stage needs no per-worker scratch: its state is read-only but for
 * the registry's cache, which has its own mutex.
 *
 * The schema is compiled into the binary (generated from the .avsc by
 * CMake) and parsed once; see pipeline/record/schema.h.
 */
#ifndef PM_STAGE_DECODE_H
#define PM_STAGE_DECODE_H

#include "stages/stage.h"

/* The largest raw record decode accepts (1 MiB). */
#define PM_RECORD_MAX ((size_t)1 << 20)

/* Dotted-path lookup in a normalized record: "attendee.face_value.currency". */
json_t *pm_record_get(json_t *record, const char *path);
/* The string at path, or NULL when absent/null/not a string. */
const char *pm_record_str(json_t *record, const char *path);

#endif

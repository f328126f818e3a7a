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
 *     invalid JSON "json.syntax", bad Avro bytes "avro.decode", a bad
 *     Confluent frame "avro.magic" / "avro.schema_id".
 * Array elements appear in paths as "locations[3].latitude".
 * Sets job->serial to the serial_number string inside the tree.
 *
 * The schema is compiled into the binary (generated from the .avsc by
 * CMake) and parsed once; see pipeline/schema.h.
 */
#ifndef PM_STAGE_DECODE_H
#define PM_STAGE_DECODE_H

#include "stage.h"

/* Dotted-path lookup in a normalized record: "attendee.face_value.currency". */
json_t *pm_record_get(json_t *record, const char *path);
/* The string at path, or NULL when absent/null/not a string. */
const char *pm_record_str(json_t *record, const char *path);

#endif

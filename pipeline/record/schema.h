/*
 * schema.h - the pass request schema, compiled in and parsed once.
 *
 * The text of schemas/pass_request.avsc is embedded at build time.
 * pm_schema_init() parses it (call once at start-up, before threads);
 * afterwards the schema is read-only and shared.
 */
#ifndef PM_SCHEMA_H
#define PM_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <avro.h>
#include <jansson.h>

#include "core/error.h"

extern const char pm_schema_pass_request_json[]; /* the .avsc text */

int pm_schema_init(pm_error *err);
avro_schema_t pm_schema_pass_request(void);      /* borrowed */

/*
 * Whether a dotted path names a leaf field of the record (for template
 * bindings), e.g. "event.name" yes, "event" no, "locations" no.
 */
bool pm_schema_has_path(const char *path);

/* Convert between an Avro value of the schema and a normalized JSON record. */
int pm_schema_avro_to_json(avro_value_t *value, json_t **out, pm_error *err);
int pm_schema_json_to_avro(json_t *record, avro_value_t *out, pm_error *err);

/*
 * Additions (decode, source_file):
 *
 * pm_schema_normalize: check a parsed JSON record against the schema and
 * build its normalized form (*out, new reference).  Rejects:
 * schema.type, schema.missing, schema.unknown_field, schema.enum, with the
 * dotted field path.
 *
 * pm_schema_avro_decode: decode one Avro binary datum of the schema from
 * data[0..len), bounds-checked against hostile bytes (lengths, counts,
 * union and enum indexes checked before use; nothing allocated beyond what
 * the input can hold).  *used = bytes consumed (may be < len).  With
 * out == NULL it only checks the structure and measures the datum (used to
 * split Avro container blocks).  Reject "avro.decode" with the field path.
 * String bytes are kept as they are (validate checks UTF-8).
 */
int pm_schema_normalize(json_t *record, json_t **out, pm_error *err);
int pm_schema_avro_decode(const unsigned char *data, size_t len, size_t *used,
                          json_t **out, pm_error *err);

#endif

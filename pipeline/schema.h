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

#include <avro.h>
#include <jansson.h>

#include "error.h"

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

#endif

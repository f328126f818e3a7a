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
 * split Avro container blocks): the checks of a value that do not change
 * where the datum ends (an int beyond 32 bits, a NaN or infinite float or
 * double, an enum index out of range, a boolean byte not 0/1) are left to
 * decoding, so one bad value is that record's reject, not the block's.
 * Reject "avro.decode" with the field path.
 * String bytes are kept as they are (validate checks UTF-8).
 */
int pm_schema_normalize(json_t *record, json_t **out, pm_error *err);
int pm_schema_avro_decode(const unsigned char *data, size_t len, size_t *used,
                          json_t **out, pm_error *err);

/*
 * A writer schema (a container file's header, a Confluent schema id)
 * resolved against a reader schema by the Avro specification's rules:
 * fields matched by name or reader alias in any order, writer-only fields
 * skipped, reader-only fields defaulted, int/long/float promoted to wider
 * numbers and bytes to string, enum symbols by name (else the reader
 * enum's default), unions branch by branch.
 *
 * pm_schema_writer_create: parse writer_json (checked as the specification
 * requires; avro-c never sees it) and resolve it against reader_json, or
 * against the compiled schema when reader_json is NULL.  PM_ERR_FORMAT
 * when the writer schema is invalid, or cannot be read as the reader
 * ("... cannot be read as com.passmill.PassRequest: field event.start: the
 * writer's string cannot be read as the reader's long").  Read-only once
 * created: one writer may serve many threads.
 *
 * pm_schema_writer_decode: like pm_schema_avro_decode for a datum written
 * with this schema; *out is shaped by the reader schema.  A datum that is
 * well-formed but has no reader value (an enum symbol the reader lacks
 * with no default, a writer union branch the reader cannot read) is the
 * reject "avro.resolve" with the field path.  sw == NULL means the
 * compiled schema itself.
 */
typedef struct pm_schema_writer pm_schema_writer;

int pm_schema_writer_create(const char *writer_json, size_t len, const char *reader_json,
                            pm_schema_writer **out, pm_error *err);
void pm_schema_writer_destroy(pm_schema_writer *sw);
/* Whether the writer schema is the reader schema itself (no resolution). */
bool pm_schema_writer_is_reader(const pm_schema_writer *sw);
/* The fewest bytes one datum of the writer schema takes. */
size_t pm_schema_writer_min_size(const pm_schema_writer *sw);
int pm_schema_writer_decode(const pm_schema_writer *sw, const unsigned char *data, size_t len,
                            size_t *used, json_t **out, pm_error *err);

#endif

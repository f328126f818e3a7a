/*
 * fuzz_record.h - one record through decode then validate, with the
 * contracts checked (shared by fuzz_json, fuzz_avro, fuzz_confluent).
 */
#ifndef PM_FUZZ_RECORD_H
#define PM_FUZZ_RECORD_H

#include "core/config.h"
#include "engine/job.h"
#include "fuzz.h"

/* Load the example templates and create both stages; cfg may be NULL. */
void fuzz_record_init(const pm_config *cfg);
void fuzz_record(pm_input_format format, const uint8_t *data, size_t size);

#endif

/*
 * fuzz_confluent.c - a Confluent-framed Avro value (magic 0, 4-byte schema
 * id, datum) through decode and validate.  Schema id 1 is the real schema
 * file, id 2 a file that does not exist (accepted at start-up, since the
 * input is not Kafka, but every record with it is a reject).
 */
#include "fuzz_record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static pm_config *cfg; /* lives as long as the process: the stages borrow it */
    pm_error err;
    cfg = pm_config_create();
    FUZZ_CHECK(cfg, "out of memory");
    FUZZ_CHECK(pm_config_set(cfg, "kafka.schema_ids",
                             "1:" PM_SOURCE_DIR "/schemas/pass_request.avsc,2:/nonexistent/x.avsc",
                             &err) == 0, "%s", err.message);
    fuzz_record_init(cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_record(PM_INPUT_CONFLUENT, data, size);
    return 0;
}

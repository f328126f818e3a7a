/* fuzz_avro.c - an Avro binary datum through decode and validate. */
#include "fuzz_record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_record_init(NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_record(PM_INPUT_AVRO, data, size);
    return 0;
}

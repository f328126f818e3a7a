/* fuzz_json.c - a JSON Lines record through decode and validate. */
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
    fuzz_record(PM_INPUT_JSON, data, size);
    return 0;
}

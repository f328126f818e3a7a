/*
 * fuzz_config.c - the configuration parser: the input as a config file,
 * then each of its lines as a -X key=value.
 *
 * Contracts: loading either works or fails with a configuration error
 * naming the file and line (or out of memory); nothing leaks on either path.
 */
#include "fuzz.h"

#include <string.h>

#include "core/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    pm_config *cfg = pm_config_create();
    FUZZ_CHECK(cfg, "out of memory");
    pm_error err;
    pm_error_clear(&err);
    if (pm_config_load_file(cfg, path, &err) != 0) {
        FUZZ_CHECK(err.code == PM_ERR_CONFIG || err.code == PM_ERR_NOMEM, "%s: %s",
                   pm_code_name(err.code), err.message);
        FUZZ_CHECK(strncmp(err.message, path, strlen(path)) == 0, "no file:line in '%s'",
                   err.message);
    }
    /* The same bytes as -X pairs, one per line (NULs end a pair early). */
    char *copy = malloc(size + 1);
    FUZZ_CHECK(copy, "out of memory");
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (pm_config_set_pair(cfg, line, &err) != 0)
            FUZZ_CHECK(err.code == PM_ERR_CONFIG || err.code == PM_ERR_NOMEM, "%s: %s",
                       pm_code_name(err.code), err.message);
    }
    free(copy);
    pm_config_destroy(cfg);
    return 0;
}

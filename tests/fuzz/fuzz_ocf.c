/*
 * fuzz_ocf.c - the file source on hostile files: an Avro Object Container
 * File when the input starts with "Obj\x01", JSON Lines otherwise ("auto"),
 * then every record it hands out through decode.
 *
 * Contracts: open and next() either work or fail with a format, I/O or
 * memory error that has a message; a record has bytes' worth of origin
 * (file and a 1-based, increasing record number) and the format its
 * container says; decode of it is a record or a reject.
 */
#include "fuzz.h"

#include <string.h>

#include "engine/job.h"
#include "sources/source.h"
#include "stages/stage.h"

static void *decode_state;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pm_error err;
    FUZZ_CHECK(pm_stage_decode.create(NULL, &decode_state, &err) == 0, "decode: %s", err.message);
    return 0;
}

static void check_source_error(const char *what, const pm_error *err)
{
    FUZZ_CHECK(err->code == PM_ERR_FORMAT || err->code == PM_ERR_IO || err->code == PM_ERR_NOMEM,
               "%s failed with %s: %s", what, pm_code_name(err->code), err->message);
    FUZZ_CHECK(err->message[0], "%s failed without a message", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    bool avro = size >= 4 && memcmp(data, "Obj\x01", 4) == 0;
    pm_source *src = NULL;
    pm_error err;
    pm_error_clear(&err);
    if (pm_source_file_open(path, "auto", &src, &err) != 0) {
        check_source_error("open", &err);
        FUZZ_CHECK(avro, "a JSON Lines file must always open: %s", err.message);
        return 0;
    }
    pm_job job;
    pm_job_init(&job);
    int64_t last = 0;
    int rc;
    while ((rc = src->ops->next(src, &job, &err)) == 1) {
        FUZZ_CHECK(job.format == (avro ? PM_INPUT_AVRO : PM_INPUT_JSON), "format %d", job.format);
        FUZZ_CHECK(job.origin.offset > last && strcmp(job.origin.source, path) == 0,
                   "origin %s:%lld after %lld", job.origin.source, (long long)job.origin.offset,
                   (long long)last);
        last = job.origin.offset;
        FUZZ_CHECK(avro || job.raw.len <= size, "a line longer than the file");
        if (pm_stage_decode.process(decode_state, NULL, &job) != 0)
            FUZZ_CHECK(job.err.code == PM_ERR_REJECT || job.err.code == PM_ERR_NOMEM,
                       "decode of a record failed with %s: %s", pm_code_name(job.err.code),
                       job.err.message);
        pm_job_reset(&job);
    }
    if (rc < 0) {
        check_source_error("next", &err);
        FUZZ_CHECK(avro, "reading a JSON Lines file cannot fail: %s", err.message);
    }
    uint64_t done, total;
    src->ops->position(src, &done, &total);
    FUZZ_CHECK(total == size && (rc < 0 || done == size), "position %llu of %llu, file %zu bytes",
               (unsigned long long)done, (unsigned long long)total, size);
    pm_job_free(&job);
    src->ops->close(src); /* pm_source_close() lives in pm_pipeline; the ops table is the contract */
    return 0;
}

/*
 * fuzz.h - what the fuzz targets share (tests/fuzz/, see ops/fuzz).
 *
 * Each fuzz_*.c defines LLVMFuzzerInitialize (one-time setup) and
 * LLVMFuzzerTestOneInput.  Built with clang -fsanitize=fuzzer they are
 * libFuzzer programs; built with replay.c (any compiler) they run the
 * committed corpus tests/fuzz/corpus/<target>/ as a ctest, so every input
 * a fuzzer once found stays a regression test in the normal builds.
 *
 * A harness aborts when a contract is broken, not only on a crash: a
 * failed record must be a reject with a code (or an out-of-memory error),
 * a source error must say what went wrong.
 */
#ifndef PM_FUZZ_H
#define PM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                              \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: contract broken: %s: ", __FILE__,      \
                    __LINE__, #cond);                                      \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            abort();                                                       \
        }                                                                  \
    } while (0)

/*
 * A file holding exactly data[0..size), reachable by path (memfd behind
 * /proc/self/fd/N), for the functions that take a path.  One per process,
 * rewritten by each call; returns the path.
 */
const char *fuzz_file(const uint8_t *data, size_t size);

#endif

/*
 * test_util.h - small helpers shared by the Criterion tests.
 */
#ifndef PM_TEST_UTIL_H
#define PM_TEST_UTIL_H

#include <stddef.h>

/* A fresh empty temporary directory (malloc'd path; removed by pmt_rmrf). */
char *pmt_tmpdir(const char *tag);
/* rm -rf path. */
void pmt_rmrf(const char *path);
/* Run a shell command; returns its exit status (or -1). Output to stderr. */
int pmt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run a shell command and capture stdout (malloc'd, NUL-terminated) and exit status. */
char *pmt_sh_out(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write len bytes to path; returns 0 or -1. */
int pmt_write_file(const char *path, const void *data, size_t len);
/* Read a whole file (malloc'd, NUL-terminated); *len gets its size. NULL on error. */
char *pmt_read_file(const char *path, size_t *len);
/* PM_SOURCE_DIR "/" rel, in a static buffer per call site (copy it). */
const char *pmt_src(const char *rel);
/* The passmill binary (env PASSMILL_BIN, else PM_BINARY_DIR/passmill). */
const char *pmt_passmill(void);

#endif

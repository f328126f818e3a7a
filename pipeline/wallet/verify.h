/*
 * verify.h - check a .pkpass the way Apple Wallet does, rule by rule.
 *
 * Every rule has a stable id ("manifest.hash", "signature.chain", ...);
 * docs/verify.md lists them all with what a failure means for the user.
 * A report holds every failed rule (the first PM_VERIFY_MAX_ISSUES, in
 * check order; `failed` counts them all), the rules not checked (e.g.
 * signature.chain without a CA) and how many checks passed.  Rules that
 * depend on a missing part (pass.* without pass.json, say) are not run: the
 * failure of the part already says why.
 *
 * The archive is read from memory with libzip; nothing is written to disk.
 * Thread-safe: no shared state.
 */
#ifndef PM_VERIFY_H
#define PM_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"

#define PM_VERIFY_MAX_ISSUES 32
#define PM_VERIFY_MAX_SKIPS 8

typedef struct pm_verify_issue {
    char rule[40];     /* stable rule id, e.g. "manifest.hash" */
    char message[320]; /* what was expected, what was found; names the file */
} pm_verify_issue;

typedef struct pm_verify_report {
    int passed;   /* checks run and satisfied (some rules run once per file) */
    int failed;   /* checks that failed, including any beyond the list */
    int nfailures;
    pm_verify_issue failures[PM_VERIFY_MAX_ISSUES];
    int nskipped; /* rules deliberately not checked, with the reason */
    pm_verify_issue skipped[PM_VERIFY_MAX_SKIPS];
    pm_error error; /* set when verification could not run at all (return -1) */
} pm_verify_report;

/*
 * Verify a .pkpass held in data[0..len).  ca: a PEM file with the trusted
 * root(s) to chain the signer to (Apple's root for production passes, the
 * dev ca.pem for `passmill identity create` ones), or NULL to skip that rule.
 * Returns 0 when every checked rule passed, 1 when some failed (see report),
 * -1 when verification could not run (unreadable CA file, out of memory:
 * report->error says why).
 */
int pm_verify_pkpass(const uint8_t *data, size_t len, const char *ca_path_or_NULL,
                     pm_verify_report *report);

/*
 * The pass.json rules alone (pass.formatVersion, the required keys,
 * pass.style, pass.fields, pass.barcodes, pass.colors, pass.dates,
 * pass.webService) on a tree, as the manifest stage checks every rendered
 * pass before it is signed.  Returns 0 when all pass, 1 when some failed.
 * Cheap enough per pass: no parsing, and only the report's counts are reset.
 */
int pm_verify_pass_json(json_t *pass, pm_verify_report *report);

/* The same for a file; an unreadable file is -1 with a PM_ERR_IO error. */
int pm_verify_file(const char *path, const char *ca_path_or_NULL, pm_verify_report *report);

#endif

/*
 * context.h - process-wide, read-only setup shared by every stage.
 *
 * Built once before any worker starts (pm_context_create) and immutable
 * while the pipeline runs: the configuration, the compiled templates, the
 * signing identity and the barcode secret.  This is the only global state.
 */
#ifndef PM_CONTEXT_H
#define PM_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/error.h"

/* Shortest barcode secret accepted: 256 bits, as much as HMAC-SHA-256 can use. */
#define PM_BARCODE_SECRET_MIN 32

struct pm_template_set;
struct pm_identity;
struct pm_registry;

typedef struct pm_context {
    const pm_config *config;                /* borrowed */
    struct pm_template_set *templates;      /* owned */
    struct pm_identity *identity;           /* owned */
    uint8_t barcode_key[64];                /* HMAC key for "autogenerate" */
    size_t barcode_key_len;                 /* 0: "autogenerate" fails as a config error */
    int64_t fixed_now;                      /* -1: real clock; else unix seconds */
    /* What, besides record, status and template, decides a pass's bytes, for
     * its content hash (registry.h): the signer certificate's SHA-256, and
     * when service.url is set, mixed with it (the pass's webServiceURL). */
    uint8_t pass_settings_sha256[32];
    struct pm_registry *registry;           /* borrowed; NULL = none.  Set by the command before
                                               the run; thread-safe for readers (registry.h) */
} pm_context;

/*
 * Load templates, identity and secrets named by cfg.  cfg must outlive the
 * context.  Free with pm_context_destroy().
 */
int pm_context_create(const pm_config *cfg, pm_context **out, pm_error *err);
void pm_context_destroy(pm_context *ctx);

/* The clock for one pass: fixed_now, or time(NULL). */
int64_t pm_context_now(const pm_context *ctx);

#endif

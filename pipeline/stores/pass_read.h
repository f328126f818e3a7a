/*
 * pass_read.h - reading a stored pass, whatever the store's layout.
 *
 * The one way to get a pass's .pkpass bytes back out of a store: `passmill
 * get` and the web service use it.  With store.layout = full the object is
 * read as is; with split (stores/store.h) the template prefix and the
 * pass's own bytes are assembled into the same bytes the bundle stage made
 * (their SHA-256 is the registry's pkpass_sha256).
 *
 * Errors: PM_ERR_STORE for an unknown serial or an unreadable object,
 * PM_ERR_IO when the sink refuses bytes, PM_ERR_NOMEM.
 */
#ifndef PM_PASS_READ_H
#define PM_PASS_READ_H

#include "core/buf.h"
#include "core/error.h"
#include "stores/store.h"

/* The whole .pkpass of serial into out (replacing what it held). */
int pm_pass_read(pm_store *store, const char *serial, pm_buf *out, pm_error *err);

/*
 * The .pkpass of serial handed to sink in order, in pieces (the split
 * layout sends its shared prefix straight from memory).  A sink that fails
 * midway leaves a partial output: callers that need all or nothing write
 * to a temporary file, or use pm_pass_read.
 */
int pm_pass_stream(pm_store *store, const char *serial, pm_store_sink sink, void *ctx,
                   pm_error *err);

#endif

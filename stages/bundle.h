/*
 * bundle.h - stage 5: the .pkpass zip, built in memory.
 *
 * Runs after sign.  Reads job->tmpl, job->pass_json, job->manifest_json,
 * job->signature and job->now; writes job->pkpass (the zip bytes) and
 * job->pkpass_sha256 (SHA-256 of those bytes).
 *
 * The archive, built with libzip on an in-memory buffer source (no temp
 * files), holds in this order:
 *   pass.json, manifest.json, signature, then every template file in the
 *   template's (sorted) order, e.g. en.lproj/pass.strings, icon.png, ...
 * PNGs (pm_template_file.compressed) are stored (ZIP_CM_STORE): deflating
 * them again only costs time.  Everything else is raw-deflated at level 6
 * by this stage with one reused zlib stream per worker and handed to libzip
 * already compressed (a source that reports method, sizes and CRC), which
 * copies it as is: libzip's own deflate allocates ~256 KiB of zlib state
 * per entry, which cost more than the RSA signature.  Static template files
 * are deflated once per worker and template, then reused.  No directory
 * entries, no comment, no extra fields.
 *
 * Errors: PM_ERR_INTERNAL for a job without template, pass.json, manifest
 * or signature; PM_ERR_IO for libzip failures; PM_ERR_NOMEM.
 *
 * Byte-identical output: every entry's modification time is job->now.  Zip
 * keeps MS-DOS local date/time (2-second resolution, 1980..2107); this
 * stage stores the UTC wall-clock time of job->now whatever the process's
 * time zone is, so the same input and clock give the same bytes on every
 * host.
 */
#ifndef PM_STAGE_BUNDLE_H
#define PM_STAGE_BUNDLE_H

#include "stage.h"

#endif

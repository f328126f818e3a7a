/*
 * bundle.h - stage 5: the .pkpass zip, built in memory.
 *
 * Runs after sign.  Reads job->tmpl, job->pass_json, job->manifest_json,
 * job->signature and job->now; writes job->pkpass (the zip bytes) and
 * job->pkpass_sha256 (SHA-256 of those bytes).
 *
 * The archive, built with libzip in memory (no temp files), holds in this
 * order: every template file in the template's (sorted) order, e.g.
 * en.lproj/pass.strings, icon.png, ..., then pass.json, manifest.json,
 * signature.  PNGs (pm_template_file.compressed) and the DER signature are
 * stored (ZIP_CM_STORE): PNGs do not shrink, and deflating the signature
 * saves ~25% of its ~2.6 KB for about half of this stage's time.  pass.json and manifest.json are raw-deflated
 * (level 1) by this stage with one reused zlib stream per worker and handed
 * to libzip already compressed (a source that reports method, sizes and
 * CRC), which copies them as is: libzip's own deflate allocates ~256 KiB
 * of zlib state per entry.  No directory entries, no comment, no extra
 * fields.  Every entry is a Unix regular file with mode 0644 (libzip's
 * default, 0666, unzips world-writable).
 *
 * Static files are packed once: on a template's first pass, a worker
 * builds an archive of its static files alone (strings deflated at level
 * 9) and the SHA-256 state after their local entries.  Every pass then
 * opens that archive with libzip, adds its three entries and closes it;
 * libzip keeps the unchanged entries as they are (cloned: one memcpy, no
 * CRC or recompression) and appends the new entries and a new central
 * directory, so the archive's hash only covers those last few KiB.  The
 * hash falls back to all bytes whenever libzip did not keep the prefix.
 *
 * Errors: PM_ERR_INTERNAL for a job without template, pass.json, manifest
 * or signature; PM_ERR_IO for libzip failures; PM_ERR_NOMEM.
 *
 * Byte-identical output: the same input and job->now give the same bytes.
 * Zip keeps MS-DOS local date/time (2-second resolution, 1980..2107).
 * pass.json, manifest.json and signature carry job->now's UTC wall-clock
 * time whatever the process's time zone is (clamped to that range).  The
 * static files carry the fixed time 1980-01-01 00:00:00, the earliest DOS
 * time: their bytes are the same for every pass, and so are their entries,
 * which is what lets every pass reuse them (Wallet ignores entry times).
 */
#ifndef PM_STAGE_BUNDLE_H
#define PM_STAGE_BUNDLE_H

#include "stages/stage.h"

#endif

/*
 * bundle.h - stage 5: the .pkpass zip, built in memory.
 *
 * Runs after sign.  Reads job->tmpl, job->pass_json, job->manifest_json,
 * job->signature and job->now; writes job->pkpass (the zip bytes) and
 * job->pkpass_sha256 (SHA-256 of those bytes).
 *
 * The archive, built in memory (no temp files), holds in this order: every
 * template file in the template's (sorted) order, e.g.
 * en.lproj/pass.strings, icon.png, ..., then pass.json, manifest.json,
 * signature, then the central directory.  PNGs
 * (pm_template_file.compressed) and the DER signature are stored: PNGs do
 * not shrink, and deflating the signature saves ~25% of its ~2.6 KB for
 * about half of this stage's time.  pass.json and manifest.json are
 * raw-deflated (level 1) with one reused zlib stream per worker.  No
 * directory entries, no comment, no extra fields, no data descriptors.
 * Every entry is a Unix regular file with mode 0644 (libzip's default,
 * 0666, unzips world-writable).
 *
 * Static files are packed once: on a template's first pass, a worker
 * builds with libzip an archive of its static files alone (strings deflated
 * at level 9), and keeps its local entries, its central directory records
 * and the SHA-256 state after the local entries.  Every pass is then
 * written by this stage itself, without libzip (measured: 83 -> 54 us per
 * pass in bench_bundle): those local entries (one memcpy), this pass's
 * three entries, the static central records unchanged (the entries did
 * not move), this pass's records, the end record.  The hash covers only
 * the bytes after the static entries, and the bytes are identical to what
 * libzip wrote for the same entries.  So every pass of one template
 * version starts with the same bytes: the split store layout
 * (stores/store.h) keeps them once.
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

/*
 * fingerprint.h - stage 2: what the registry already holds of this pass.
 *
 * Runs after validate, before anything is rendered or signed.  Computes the
 * record's content hash (pm_registry_content_hash: normalized record without
 * its action, status, template version, signer certificate) and looks the
 * serial up in the registry (ctx->registry, through this worker's own
 * reader).  Writes
 *   job->content_hash  always when there is a registry;
 *   job->auth_token    the pass's authenticationToken: the registry's for a
 *                      known serial (Apple: never changes), a new random one
 *                      for a new serial;
 *   job->unchanged     true when the registry's content hash is the same:
 *                      the pass would come out identical, so the engine stops
 *                      the chain here (no render, no sign, no store write)
 *                      and reports the record `unchanged`;
 *   job->prior_sha256  the stored .pkpass sha256 when unchanged.
 *   job->issued_at     the pass's first issue: the registry's created_at for
 *                      a known serial, job->now for a new one (what a
 *                      template's auto expiry counts from, so an UPDATE or
 *                      a reissue never moves it).
 * Rejects `serial.exists` (field serial_number) when an ISSUE names a serial
 * the registry holds with different content: like Skycore's generatepass, an
 * ISSUE never replaces a pass (UPDATE does).
 *
 * Without a registry (ctx->registry NULL) the stage does nothing
 * (issued_at stays 0: manifest uses job->now).
 * Per-serial order is the engine's job: two requests for one serial never
 * run this stage at the same time, and the later one runs after the
 * earlier one's registry transaction committed.
 */
#ifndef PM_STAGE_FINGERPRINT_H
#define PM_STAGE_FINGERPRINT_H

#include "stages/stage.h"

#endif

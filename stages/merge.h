/*
 * merge.h - stage 1: a partial request becomes a whole record.
 *
 * Runs after decode, before validate, and only for partial requests
 * (job->patch, see stages/decode.h); a whole record passes untouched.  The
 * registry's stored record of job->serial is the base; the patch is merged
 * onto it (objects member by member, recursively; arrays and scalars
 * replace), its action replaces the stored one, and the result is
 * normalized by the schema exactly like a whole request, so validate sees
 * no difference.  Writes job->record and job->serial (into the record).
 *
 * Rejects:
 *   serial.unknown  (serial_number) the registry holds no pass with this
 *                   serial: a change by serial needs an earlier ISSUE;
 *   record.partial  (field "") there is no registry to merge from;
 *   and the schema's codes for a merged record that does not fit it.
 * Per-serial order (engine.c) makes the stored record the one every earlier
 * request for this serial left.
 */
#ifndef PM_STAGE_MERGE_H
#define PM_STAGE_MERGE_H

#include <jansson.h>

#include "stages/stage.h"

/* Merge patch onto base in place: objects recursively, anything else replaces.
 * A JSON null in the patch sets the member to null (it does not remove it). */
int pm_merge_patch(json_t *base, json_t *patch);

#endif

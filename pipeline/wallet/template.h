/*
 * template.h - pass templates, loaded and compiled once at start-up.
 *
 * A template is a folder named by its template id:
 *   pass.json              skeleton: formatVersion 1, style "eventTicket",
 *                          passTypeIdentifier, teamIdentifier,
 *                          organizationName, description, colours, and the
 *                          eventTicket field layout.  Any string value may
 *                          contain bindings "${path}" naming a record field
 *                          (schemas/pass_request.avsc, e.g. ${attendee.seat},
 *                          ${event.start}) or a custom field (${custom.KEY}).
 *   icon.png, icon@2x.png  required; logo.png, strip.png, background.png,
 *                          thumbnail.png (and @2x/@3x) optional; real PNGs.
 *   xx.lproj/pass.strings  optional localisations.
 * Loading checks every rule (only Apple's top-level pass.json keys, required
 * images present and decodable PNG signatures, colours "rgb(r, g, b)" or
 * "#RRGGBB" - hex is rewritten as rgb() in the skeleton, for Wallet before
 * iOS 18 - every binding names a real record field) and hashes every
 * static file once (SHA-1 for the manifest); the
 * version is a SHA-256 over all files, so a changed template has a new one.
 * A loaded template set is read-only and shared by all workers.
 */
#ifndef PM_TEMPLATE_H
#define PM_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"

/* passmill's settings file in a template folder (docs/templates.md); part of
 * the version, never bundled into a pass. */
#define PM_TEMPLATE_SETTINGS "template.json"

typedef struct pm_template_file {
    char *name;              /* bundle path, e.g. "icon.png", "fr.lproj/pass.strings" */
    uint8_t *data;
    size_t len;
    char sha1_hex[41];       /* for manifest.json */
    int compressed;          /* already compressed (PNG): store, don't deflate */
} pm_template_file;

typedef struct pm_template {
    char *id;
    char version[17];        /* first 16 hex digits of SHA-256 over all files */
    json_t *skeleton;        /* parsed pass.json with bindings */
    pm_template_file *files; /* static files, sorted by name, pass.json excluded */
    bool keep_inactive_barcode; /* template.json "inactive_barcode": "keep" (default
                                   "remove": docs/lifecycle.md) */
    size_t files_len;
} pm_template;

typedef struct pm_template_set pm_template_set;

/* Load every template folder under dir. Errors name the template, file and rule. */
int pm_template_set_load(const char *dir, pm_template_set **out, pm_error *err);
void pm_template_set_destroy(pm_template_set *set);
/* NULL if no such template. */
const pm_template *pm_template_set_find(const pm_template_set *set, const char *id);
size_t pm_template_set_count(const pm_template_set *set);
/* The i-th template in id order, NULL past the end (for start-up checks). */
const pm_template *pm_template_set_at(const pm_template_set *set, size_t i);

/* Load one template folder (the id is the folder's base name). */
int pm_template_load(const char *path, pm_template **out, pm_error *err);
void pm_template_destroy(pm_template *t);

#endif

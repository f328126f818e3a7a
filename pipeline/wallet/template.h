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
 *   template.json          optional passmill settings, never bundled: expiry
 *                          (fixed, or days/hours after first issue, rounded
 *                          to midnight in a zone) and the alphabet and
 *                          length of "autogenerate" barcodes.
 *   strips/<name>.png      optional strip image variants (Skycore strip-image),
 *   strips/<name>@2x.png   chosen per record by its strip_image field: the
 *   strips/<name>@3x.png   pass then carries them as strip.png, strip@2x.png,
 *                          strip@3x.png instead of the template's own strip
 *                          files.  <name>.png is required for each name.
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

/*
 * Expiry settings (template.json, Skycore "expiration-setting"): every pass
 * of the template gets an expirationDate unless its record has its own
 * expiration_date (the record wins: it is the more specific).
 */
typedef enum pm_expiry_kind {
    PM_EXPIRY_NONE = 0,
    PM_EXPIRY_FIXED,   /* "default": expiry_date for every pass */
    PM_EXPIRY_AUTO,    /* "auto": issue time + days/hours, optionally to the next midnight */
} pm_expiry_kind;

typedef struct pm_template_expiry {
    pm_expiry_kind kind;
    int64_t fixed_at;        /* FIXED: unix seconds */
    char fixed_text[40];     /* FIXED: expiry_date as written (RFC 3339) */
    int after_days;          /* AUTO: calendar days after issue (in zone when set) */
    int after_hours;         /* AUTO: then elapsed hours */
    bool round_midnight;     /* AUTO: up to the next 00:00 in zone */
    char zone[64];           /* IANA name; "" = UTC offsets, no rounding */
} pm_template_expiry;

/* Auto-generated barcode values (Skycore autogenerate-barcode-value-*). */
typedef enum pm_autogen_type {
    PM_AUTOGEN_DEFAULT = 0,  /* no setting: 24 Crockford base32 characters */
    PM_AUTOGEN_NUMERIC,      /* "Numeric": 0-9 */
    PM_AUTOGEN_ALPHABET,     /* "Alphabet": A-Z a-z */
    PM_AUTOGEN_ALPHANUMERIC, /* "Alphanumeric": A-Z a-z 0-9 */
} pm_autogen_type;

#define PM_AUTOGEN_LEN_MIN 10    /* Skycore's accepted range */
#define PM_AUTOGEN_LEN_MAX 100

typedef struct pm_template_autogen {
    pm_autogen_type type;
    unsigned length;         /* PM_AUTOGEN_LEN_MIN..MAX when type is set */
} pm_template_autogen;
/* One strip image variant: files[k] is strip.png, strip@2x.png, strip@3x.png (len 0: absent). */
#define PM_STRIP_FILES 3
typedef struct pm_template_strip {
    char *name;              /* "gold" for strips/gold.png */
    pm_template_file files[PM_STRIP_FILES];
} pm_template_strip;

typedef struct pm_template {
    char *id;
    char version[17];        /* first 16 hex digits of SHA-256 over all files */
    json_t *skeleton;        /* parsed pass.json with bindings */
    pm_template_file *files; /* static files, sorted by name, pass.json excluded */
    bool keep_inactive_barcode; /* template.json "inactive_barcode": "keep" (default
                                   "remove": docs/lifecycle.md) */
    size_t files_len;
    pm_template_expiry expiry;       /* template.json expiration_setting & co */
    pm_template_autogen autogen;     /* template.json autogenerate_barcode_value_* */
    pm_template_strip *strips; /* sorted by name; strips/ files are not in files */
    size_t strips_len;
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

/* The strip variant called name, NULL if the template has none such (or name is NULL). */
const pm_template_strip *pm_template_find_strip(const pm_template *t, const char *name);

/*
 * The files of a pass of t with strip variant strip (NULL: the template's
 * own), sorted by name, into out (room for files_len + PM_STRIP_FILES
 * pointers): the variant's files replace strip.png, strip@2x.png and
 * strip@3x.png.  Returns how many.
 */
size_t pm_template_pass_files(const pm_template *t, const pm_template_strip *strip,
                              const pm_template_file **out);

/* Load one template folder (the id is the folder's base name). */
int pm_template_load(const char *path, pm_template **out, pm_error *err);
void pm_template_destroy(pm_template *t);

/*
 * The expirationDate the template gives a pass first issued at issued_at
 * (unix seconds): 1 and out = RFC 3339 text ("2027-06-13T00:00:00-04:00"
 * in the zone when one is set, else UTC "Z"), 0 when the template sets no
 * expiry, -1 with err on failure.  Rounding: the first local midnight at or
 * after issued_at + after_s, found by the zone's rules (a day with a DST
 * change is 23 or 25 hours long; ICU's calendar does the arithmetic).
 */
int pm_template_expiry_at(const pm_template_expiry *e, int64_t issued_at, char out[40],
                          pm_error *err);

#endif

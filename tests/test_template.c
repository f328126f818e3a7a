/*
 * test_template.c - loading the example template, its version, and every
 * load rule broken once in a temporary copy.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rfc3339.h"
#include "record/schema.h"
#include "wallet/template.h"
#include "test_util.h"

static char *tmp;       /* per test, removed in teardown */
static char copy[600];  /* tmp/stadium: a fresh copy of the example */

static void setup(void)
{
    pm_error err;
    cr_assert_eq(pm_schema_init(&err), 0, "%s", err.message);
    tmp = pmt_tmpdir("template");
    cr_assert_not_null(tmp);
    snprintf(copy, sizeof copy, "%s/stadium", tmp);
    cr_assert_eq(pmt_sh("cp -r '%s' '%s'", pmt_src("config/templates/stadium"), copy), 0);
}

static void teardown(void)
{
    pmt_rmrf(tmp);
    free(tmp);
}

TestSuite(template, .init = setup, .fini = teardown);

/* Load the copy and expect failure with a config error whose message holds each needle. */
static void expect_fail(const char *needle1, const char *needle2)
{
    pm_template *t = NULL;
    pm_error err;
    pm_error_clear(&err);
    int rc = pm_template_load(copy, &t, &err);
    cr_assert_eq(rc, -1, "expected a load failure (%s)", needle1);
    cr_assert_null(t);
    cr_assert_eq(err.code, PM_ERR_CONFIG, "code %s: %s", pm_code_name(err.code), err.message);
    cr_assert(strstr(err.message, "template 'stadium'"), "no template id in: %s", err.message);
    cr_assert(strstr(err.message, needle1), "'%s' not in: %s", needle1, err.message);
    if (needle2)
        cr_assert(strstr(err.message, needle2), "'%s' not in: %s", needle2, err.message);
}

/* Rewrite the copy's pass.json after edit() changed the parsed tree. */
static void edit_pass_json(void (*edit)(json_t *root))
{
    char path[700];
    snprintf(path, sizeof path, "%s/pass.json", copy);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    cr_assert_not_null(root, "%s", jerr.text);
    edit(root);
    cr_assert_eq(json_dump_file(root, path, JSON_INDENT(2)), 0);
    json_decref(root);
}

/* Put the example's pass.json back into the copy. */
static void reset_pass_json(void)
{
    cr_assert_eq(pmt_sh("cp '%s/pass.json' '%s/pass.json'", pmt_src("config/templates/stadium"),
                        copy), 0);
}

static pm_template *load_ok(const char *path)
{
    pm_template *t = NULL;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_template_load(path, &t, &err), 0, "%s", err.message);
    cr_assert_not_null(t);
    return t;
}

Test(template, example_loads)
{
    pm_template *t = load_ok(pmt_src("config/templates/stadium"));
    cr_assert_str_eq(t->id, "stadium");
    static const char *const names[] = {
        "en.lproj/pass.strings", "fr.lproj/pass.strings", "icon.png", "icon@2x.png",
        "logo.png", "logo@2x.png", "strip.png", "strip@2x.png",
    };
    cr_assert_eq(t->files_len, 8);
    for (size_t i = 0; i < t->files_len; i++) {
        const pm_template_file *f = &t->files[i];
        cr_assert_str_eq(f->name, names[i]);
        cr_assert_eq(f->compressed, strstr(f->name, ".png") != NULL, "%s", f->name);
        /* The SHA-1 and the bytes agree with the file on disk, computed independently. */
        int st;
        char *out = pmt_sh_out(&st, "sha1sum '%s/%s' | cut -c1-40",
                               pmt_src("config/templates/stadium"), f->name);
        cr_assert_eq(st, 0);
        cr_assert_eq(strlen(f->sha1_hex), 40);
        cr_assert(strncmp(out, f->sha1_hex, 40) == 0, "%s: %s vs %s", f->name, out, f->sha1_hex);
        free(out);
    }
    cr_assert_str_eq(json_string_value(json_object_get(t->skeleton, "passTypeIdentifier")),
                     "pass.dev.passmill.stadium");
    /* The skeleton keeps the file's key order. */
    const char *first = NULL;
    void *it = json_object_iter(t->skeleton);
    first = json_object_iter_key(it);
    cr_assert_str_eq(first, "formatVersion");
    json_t *aux = json_object_get(json_object_get(t->skeleton, "eventTicket"), "auxiliaryFields");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(aux, 2), "value")),
                     "${attendee.seat}");
    pm_template_destroy(t);
}

Test(template, version_is_stable_and_independent)
{
    pm_template *a = load_ok(pmt_src("config/templates/stadium"));
    pm_template *b = load_ok(copy); /* a copy elsewhere: same files, same version */
    cr_assert_eq(strlen(a->version), 16);
    cr_assert_str_eq(a->version, b->version);
    /* Recompute the documented formula with Python: sorted (name NUL len64be content). */
    int st;
    char *out = pmt_sh_out(&st,
        "cd '%s' && python3 -c 'import hashlib,os,struct\n"
        "names=sorted(os.path.relpath(os.path.join(d,f)) for d,_,fs in os.walk(\".\") for f in fs)\n"
        "h=hashlib.sha256()\n"
        "for n in names:\n"
        "    data=open(n,\"rb\").read(); h.update(n.encode()+b\"\\0\"+struct.pack(\">Q\",len(data))+data)\n"
        "print(h.hexdigest()[:16])'", copy);
    cr_assert_eq(st, 0);
    cr_assert(strncmp(out, a->version, 16) == 0, "python %s vs %s", out, a->version);
    free(out);
    pm_template_destroy(b);

    /* One changed byte in any file gives a new version. */
    cr_assert_eq(pmt_sh("printf '\"X\" = \"y\";\\n' >> '%s/fr.lproj/pass.strings'", copy), 0);
    b = load_ok(copy);
    cr_assert_str_neq(a->version, b->version);
    pm_template_destroy(a);
    pm_template_destroy(b);
}

Test(template, set_loads_and_finds)
{
    /* A README and a hidden folder next to the templates are not templates. */
    cr_assert_eq(pmt_sh("cp -r '%s' '%s/second' && echo hi > '%s/README' && mkdir '%s/.git'",
                        copy, tmp, tmp, tmp), 0);
    pm_template_set *set = NULL;
    pm_error err;
    cr_assert_eq(pm_template_set_load(tmp, &set, &err), 0, "%s", err.message);
    cr_assert_eq(pm_template_set_count(set), 2);
    const pm_template *s = pm_template_set_find(set, "stadium");
    const pm_template *t = pm_template_set_find(set, "second");
    cr_assert_not_null(s);
    cr_assert_not_null(t);
    cr_assert_str_eq(s->id, "stadium");
    cr_assert_str_eq(t->id, "second");
    cr_assert_str_eq(s->version, t->version);
    cr_assert_null(pm_template_set_find(set, "stadiu"));
    cr_assert_null(pm_template_set_find(set, "zzz"));
    pm_template_set_destroy(set);

    /* The repository's own template folder loads as a set. */
    cr_assert_eq(pm_template_set_load(pmt_src("config/templates"), &set, &err), 0, "%s",
                 err.message);
    cr_assert_not_null(pm_template_set_find(set, "stadium"));
    pm_template_set_destroy(set);
}

Test(template, set_errors)
{
    pm_template_set *set = NULL;
    pm_error err;
    char *empty = pmt_tmpdir("template-empty");
    cr_assert_eq(pm_template_set_load(empty, &set, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert(strstr(err.message, "no template folders"), "%s", err.message);
    pmt_rmrf(empty);
    free(empty);

    cr_assert_eq(pmt_sh("mkdir '%s/bad id' && rm '%s/icon.png'", tmp, copy), 0);
    cr_assert_eq(pm_template_set_load(tmp, &set, &err), -1);
    cr_assert_null(set);
    /* Folders load in sorted order: 'bad id' fails first, on its name. */
    cr_assert(strstr(err.message, "bad id"), "%s", err.message);
    cr_assert(strstr(err.message, "[A-Za-z0-9._-]{1,64}"), "%s", err.message);
    cr_assert_eq(pmt_sh("rmdir '%s/bad id'", tmp), 0);
    cr_assert_eq(pm_template_set_load(tmp, &set, &err), -1);
    cr_assert(strstr(err.message, "template 'stadium': icon.png: missing"), "%s", err.message);

    cr_assert_eq(pm_template_set_load("/nonexistent/templates", &set, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG, "a configured path that does not open (exit status 2)");
}

Test(template, missing_icon)
{
    cr_assert_eq(pmt_sh("rm '%s/icon.png'", copy), 0);
    expect_fail("icon.png: missing", "rule: required files");
}

Test(template, missing_icon_2x)
{
    cr_assert_eq(pmt_sh("rm '%s/icon@2x.png'", copy), 0);
    expect_fail("icon@2x.png: missing", NULL);
}

Test(template, icon_not_a_png)
{
    cr_assert_eq(pmt_sh("echo 'not a picture' > '%s/icon.png'", copy), 0);
    expect_fail("icon.png: not a PNG", "PNG signature");
}

Test(template, png_bad_crc)
{
    /* Flip one byte inside the compressed data of strip.png. */
    cr_assert_eq(pmt_sh("printf '\\377' | dd of='%s/strip.png' bs=1 seek=200 conv=notrunc "
                        "status=none", copy), 0);
    expect_fail("strip.png: bad PNG", "CRC of chunk 'IDAT'");
}

Test(template, png_truncated)
{
    cr_assert_eq(pmt_sh("truncate -s 300 '%s/logo@2x.png'", copy), 0);
    expect_fail("logo@2x.png: bad PNG", NULL);
}

static void bad_colour(json_t *root)
{
    json_object_set_new(root, "backgroundColor", json_string("rgb(300,0,0)"));
}

Test(template, bad_colour)
{
    edit_pass_json(bad_colour);
    expect_fail("pass.json: backgroundColor must be \"rgb(r, g, b)\"", "rgb(300,0,0)");
}

static void hex_colour(json_t *root)
{
    json_object_set_new(root, "labelColor", json_string("#fcA311"));
    json_object_set_new(root, "footerBackgroundColor", json_string("#000000"));
}

/* Issue 14: "#RRGGBB" was refused; it loads and becomes rgb() for Wallet before iOS 18. */
Test(template, hex_colour_becomes_rgb)
{
    edit_pass_json(hex_colour);
    pm_template *t = load_ok(copy);
    cr_assert_str_eq(json_string_value(json_object_get(t->skeleton, "labelColor")),
                     "rgb(252, 163, 17)");
    cr_assert_str_eq(json_string_value(json_object_get(t->skeleton, "footerBackgroundColor")),
                     "rgb(0, 0, 0)");
    /* rgb() values are kept as written. */
    cr_assert_str_eq(json_string_value(json_object_get(t->skeleton, "backgroundColor")),
                     "rgb(20, 33, 61)");
    pm_template_destroy(t);
}

static void short_hex_colour(json_t *root)
{
    json_object_set_new(root, "labelColor", json_string("#fc1"));
}

static void bad_hex_colour(json_t *root)
{
    json_object_set_new(root, "labelColor", json_string("#fcA31g"));
}

static void bad_footer_colour(json_t *root)
{
    json_object_set_new(root, "footerBackgroundColor", json_string("black"));
}

Test(template, bad_hex_colours)
{
    edit_pass_json(short_hex_colour);
    expect_fail("labelColor", "\"#fc1\" (rule: colours)");
    edit_pass_json(bad_hex_colour);
    expect_fail("labelColor", "\"#fcA31g\" (rule: colours)");
    reset_pass_json();
    edit_pass_json(bad_footer_colour);
    expect_fail("footerBackgroundColor", "(rule: colours)");
}

static void misspelt_key(json_t *root)
{
    json_object_set_new(root, "sharingProhibitted", json_true());
}

static void unknown_key(json_t *root)
{
    json_object_set_new(root, "ticketColour", json_string("red"));
}

static void known_keys(json_t *root)
{
    json_object_set_new(root, "sharingProhibited", json_true());
    json_object_set_new(root, "suppressStripShine", json_true());
    json_object_set_new(root, "groupingIdentifier", json_string("${event.event_id}"));
    json_object_set_new(root, "preferredStyleSchemes", json_pack("[s]", "eventTicket"));
    json_object_set_new(root, "bagPolicyURL", json_string("https://example.com/bags"));
    json_object_set_new(root, "semantics", json_pack("{s:s}", "eventName", "${event.name}"));
}

/* Issue 14: a misspelt top-level key was accepted, so Wallet silently ignored it. */
Test(template, unknown_top_level_key_is_named)
{
    edit_pass_json(misspelt_key);
    expect_fail("unknown top-level key 'sharingProhibitted'", "did you mean 'sharingProhibited'?");
    /* Far from any key: no suggestion. */
    reset_pass_json();
    edit_pass_json(unknown_key);
    expect_fail("unknown top-level key 'ticketColour' (rule: keys", NULL);
    /* Apple's keys load. */
    reset_pass_json();
    edit_pass_json(known_keys);
    pm_template_destroy(load_ok(copy));
}

static void unknown_binding(json_t *root)
{
    json_t *aux = json_object_get(json_object_get(root, "eventTicket"), "auxiliaryFields");
    json_object_set_new(json_array_get(aux, 2), "value", json_string("Seat ${attendee.sseat}"));
}

Test(template, unknown_binding)
{
    edit_pass_json(unknown_binding);
    expect_fail("pass.json: eventTicket.auxiliaryFields[2].value: unknown binding "
                "${attendee.sseat}", "rule: a binding names a record leaf field");
}

static void record_binding(json_t *root)
{
    /* "event" is a record, not a leaf. */
    json_object_set_new(root, "logoText", json_string("${event}"));
}

Test(template, binding_to_a_record)
{
    edit_pass_json(record_binding);
    expect_fail("logoText: unknown binding ${event}", NULL);
}

static void unterminated_binding(json_t *root)
{
    json_object_set_new(root, "logoText", json_string("${event.name"));
}

Test(template, unterminated_binding)
{
    edit_pass_json(unterminated_binding);
    expect_fail("logoText: unterminated binding", NULL);
}

static void custom_bindings(json_t *root)
{
    json_t *back = json_object_get(json_object_get(root, "eventTicket"), "backFields");
    json_array_append_new(back, json_pack("{s:s, s:s, s:s}", "key", "door", "label", "DOOR",
                                          "value", "Door ${custom.door_code} / ${attendee.face_value.currency}"));
}

Test(template, custom_and_nested_bindings_load)
{
    edit_pass_json(custom_bindings);
    pm_template *t = load_ok(copy);
    pm_template_destroy(t);
}

static void bad_custom_binding(json_t *root)
{
    json_object_set_new(root, "logoText", json_string("${custom.}"));
}

Test(template, bad_custom_binding)
{
    edit_pass_json(bad_custom_binding);
    expect_fail("unknown binding ${custom.}", NULL);
}

static void format_version_2(json_t *root)
{
    json_object_set_new(root, "formatVersion", json_integer(2));
}

Test(template, format_version_2)
{
    edit_pass_json(format_version_2);
    expect_fail("pass.json: formatVersion must be the integer 1", "rule: formatVersion");
}

static void no_pass_type(json_t *root)
{
    json_object_del(root, "passTypeIdentifier");
}

Test(template, missing_pass_type_identifier)
{
    edit_pass_json(no_pass_type);
    expect_fail("pass.json: passTypeIdentifier must be a non-empty string", "rule: required keys");
}

static void empty_description(json_t *root)
{
    json_object_set_new(root, "description", json_string(""));
}

Test(template, empty_description)
{
    edit_pass_json(empty_description);
    expect_fail("description must be a non-empty string", NULL);
}

static void no_event_ticket(json_t *root)
{
    json_object_del(root, "eventTicket");
    json_object_set_new(root, "generic", json_object());
}

Test(template, wrong_style)
{
    edit_pass_json(no_event_ticket);
    expect_fail("style 'generic'", "only eventTicket");
}

static void duplicate_field_key(json_t *root)
{
    json_t *back = json_object_get(json_object_get(root, "eventTicket"), "backFields");
    json_array_append_new(back, json_pack("{s:s, s:s}", "key", "seat", "value", "x"));
}

Test(template, duplicate_field_key)
{
    edit_pass_json(duplicate_field_key);
    expect_fail("eventTicket.backFields[6]: duplicate field key 'seat'", NULL);
}

static void reserved_field_key(json_t *root)
{
    json_t *back = json_object_get(json_object_get(root, "eventTicket"), "backFields");
    json_array_append_new(back, json_pack("{s:s, s:s}", "key", "custom_x", "value", "x"));
}

Test(template, reserved_field_key)
{
    edit_pass_json(reserved_field_key);
    expect_fail("field key 'custom_x' is reserved", NULL);
}

static void per_pass_key(json_t *root)
{
    json_object_set_new(root, "serialNumber", json_string("fixed"));
}

Test(template, per_pass_key)
{
    edit_pass_json(per_pass_key);
    expect_fail("'serialNumber' is set per pass", NULL);
}

Test(template, invalid_json)
{
    cr_assert_eq(pmt_sh("printf '{\"formatVersion\": 1,,}' > '%s/pass.json'", copy), 0);
    expect_fail("pass.json: invalid JSON at line 1", NULL);
}

Test(template, duplicate_json_key)
{
    cr_assert_eq(pmt_sh("printf '{\"formatVersion\": 1, \"formatVersion\": 1}' > '%s/pass.json'",
                        copy), 0);
    expect_fail("pass.json: invalid JSON", "duplicate");
}

Test(template, not_an_object)
{
    cr_assert_eq(pmt_sh("printf '[1]' > '%s/pass.json'", copy), 0);
    expect_fail("pass.json: must be a JSON object", NULL);
}

Test(template, missing_pass_json)
{
    cr_assert_eq(pmt_sh("rm '%s/pass.json'", copy), 0);
    expect_fail("pass.json: missing", NULL);
}

Test(template, symlink_refused)
{
    cr_assert_eq(pmt_sh("ln -s icon.png '%s/thumbnail.png'", copy), 0);
    expect_fail("thumbnail.png: symlinks are not allowed", NULL);
}

Test(template, big_file_refused)
{
    cr_assert_eq(pmt_sh("truncate -s 9M '%s/background.bin'", copy), 0);
    expect_fail("background.bin: file too large", NULL);
}

Test(template, unexpected_folder)
{
    cr_assert_eq(pmt_sh("mkdir '%s/images'", copy), 0);
    expect_fail("images: unexpected folder", NULL);
}

Test(template, hidden_file_refused)
{
    cr_assert_eq(pmt_sh("touch '%s/.DS_Store'", copy), 0);
    expect_fail(".DS_Store: bad file name", NULL);
}

Test(template, bad_strings)
{
    cr_assert_eq(pmt_sh("printf '\"A\" = \"b\";\\n\"C\" \"d\";\\n' > '%s/fr.lproj/pass.strings'",
                        copy), 0);
    expect_fail("fr.lproj/pass.strings: line 2: expected '='", NULL);
}

Test(template, strings_not_utf8)
{
    cr_assert_eq(pmt_sh("printf '\"A\" = \"\\351t\\351\";\\n' > '%s/fr.lproj/pass.strings'",
                        copy), 0);
    expect_fail("fr.lproj/pass.strings: not UTF-8", NULL);
}

Test(template, extra_files_are_kept)
{
    /* Any plain file is allowed and bundled; localised images too. */
    cr_assert_eq(pmt_sh("cp '%s/logo.png' '%s/fr.lproj/logo.png' && echo note > '%s/notes.txt'",
                        copy, copy, copy), 0);
    pm_template *t = load_ok(copy);
    cr_assert_eq(t->files_len, 10);
    cr_assert_str_eq(t->files[1].name, "fr.lproj/logo.png");
    cr_assert_eq(t->files[1].compressed, 1);
    cr_assert_str_eq(t->files[7].name, "notes.txt");
    cr_assert_eq(t->files[7].compressed, 0);
    cr_assert_eq(t->files[7].len, 5);
    pm_template_destroy(t);
}

Test(template, bad_folder_name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/has space", tmp);
    cr_assert_eq(pmt_sh("mv '%s' '%s'", copy, path), 0);
    pm_template *t = NULL;
    pm_error err;
    cr_assert_eq(pm_template_load(path, &t, &err), -1);
    cr_assert(strstr(err.message, "has space"), "%s", err.message);
}

Test(template, reserved_file_names)
{
    cr_assert_eq(pmt_sh("echo '{}' > '%s/manifest.json'", copy), 0);
    expect_fail("manifest.json: reserved name", NULL);
    cr_assert_eq(pmt_sh("rm '%s/manifest.json' && echo x > '%s/signature'", copy, copy), 0);
    expect_fail("signature: reserved name", NULL);
}

/* ---- template.json: expiry and barcode settings ---------------------------- */

static void write_settings(const char *json)
{
    char path[700];
    snprintf(path, sizeof path, "%s/" PM_TEMPLATE_SETTINGS, copy);
    cr_assert_eq(pmt_write_file(path, json, strlen(json)), 0);
}

/* The template's expirationDate for a pass first issued at issued (RFC 3339). */
static void expect_expiry(const pm_template *t, const char *issued, const char *want)
{
    int64_t at;
    cr_assert_eq(pm_rfc3339_parse(issued, &at), 0);
    char out[40];
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_template_expiry_at(&t->expiry, at, out, &err), 1, "%s", err.message);
    cr_assert_str_eq(out, want, "issued %s: got %s, want %s", issued, out, want);
}

Test(template, no_settings_no_expiry)
{
    pm_template *t = load_ok(copy);
    char out[40];
    pm_error err;
    cr_assert_eq(t->expiry.kind, PM_EXPIRY_NONE);
    cr_assert_eq(pm_template_expiry_at(&t->expiry, 1800000000, out, &err), 0);
    cr_assert_eq(t->autogen.type, PM_AUTOGEN_DEFAULT);
    pm_template_destroy(t);
}

Test(template, fixed_expiry)
{
    pm_template *before = load_ok(copy);
    write_settings("{\"expiration_setting\": \"default\", "
                   "\"expiry_date\": \"2027-06-13T03:00:00+01:00\"}");
    pm_template *t = load_ok(copy);
    cr_assert_eq(t->expiry.kind, PM_EXPIRY_FIXED);
    expect_expiry(t, "2027-01-01T00:00:00Z", "2027-06-13T03:00:00+01:00");
    expect_expiry(t, "2027-05-01T10:00:00Z", "2027-06-13T03:00:00+01:00");
    /* part of the version, never a file of the pass */
    cr_assert_str_neq(t->version, before->version);
    for (size_t i = 0; i < t->files_len; i++)
        cr_assert_str_neq(t->files[i].name, PM_TEMPLATE_SETTINGS);
    cr_assert_eq(t->files_len, before->files_len);
    pm_template_destroy(before);
    pm_template_destroy(t);
    /* Skycore: an expiry date alone is the "default" setting */
    write_settings("{\"expiry_date\": \"2027-06-13T03:00:00Z\"}");
    t = load_ok(copy);
    expect_expiry(t, "2027-01-01T00:00:00Z", "2027-06-13T03:00:00Z");
    pm_template_destroy(t);
}

Test(template, auto_expiry_days)
{
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 3}");
    pm_template *t = load_ok(copy);
    cr_assert_eq(t->expiry.kind, PM_EXPIRY_AUTO);
    expect_expiry(t, "2027-06-10T12:34:56Z", "2027-06-13T12:34:56Z");
    expect_expiry(t, "2027-12-30T23:00:00+01:00", "2028-01-02T22:00:00Z");
    pm_template_destroy(t);
}

Test(template, auto_expiry_hours)
{
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_hours\": 5}");
    pm_template *t = load_ok(copy);
    expect_expiry(t, "2027-06-10T21:00:00Z", "2027-06-11T02:00:00Z");
    pm_template_destroy(t);
    /* in a zone: the same instant, written at the zone's offset */
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_hours\": 5, "
                   "\"auto_expire_timezone\": \"Europe/London\"}");
    t = load_ok(copy);
    expect_expiry(t, "2027-06-10T12:00:00Z", "2027-06-10T18:00:00+01:00");
    expect_expiry(t, "2027-01-10T12:00:00Z", "2027-01-10T17:00:00+00:00");
    pm_template_destroy(t);
}

/* America/New_York: EST -05:00 until 2027-03-14 02:00, EDT -04:00 until 2027-11-07 02:00. */
Test(template, auto_expiry_midnight_across_dst)
{
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 1, "
                   "\"auto_expire_timezone\": \"America/New_York\", "
                   "\"auto_expire_roundoff_midnight\": true}");
    pm_template *t = load_ok(copy);
    /* Sat 15:00 EST + 1 day = Sun 15:00 EDT (23 h later) -> Mon 00:00 EDT, 04:00 UTC */
    expect_expiry(t, "2027-03-13T15:00:00-05:00", "2027-03-15T00:00:00-04:00");
    /* already midnight: kept (Sat 00:00 EST + 1 day = Sun 00:00 EST, before the change) */
    expect_expiry(t, "2027-03-13T00:00:00-05:00", "2027-03-14T00:00:00-05:00");
    /* autumn: Sat 12:00 EDT + 1 day = Sun 12:00 EST (25 h later) -> Mon 00:00 EST */
    expect_expiry(t, "2027-11-06T12:00:00-04:00", "2027-11-08T00:00:00-05:00");
    pm_template_destroy(t);
    /* hours are elapsed: Sat 20:00 EST + 8 h = Sun 05:00 EDT -> Mon 00:00 EDT */
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_hours\": 8, "
                   "\"auto_expire_timezone\": \"America/New_York\", "
                   "\"auto_expire_roundoff_midnight\": true}");
    t = load_ok(copy);
    expect_expiry(t, "2027-03-13T20:00:00-05:00", "2027-03-15T00:00:00-04:00");
    /* Sat 10:00 EST + 8 h = 18:00 EST -> Sun 00:00 EST */
    expect_expiry(t, "2027-03-13T10:00:00-05:00", "2027-03-14T00:00:00-05:00");
    pm_template_destroy(t);
    /* no rounding: calendar days keep the wall time across the change */
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 1, "
                   "\"auto_expire_timezone\": \"America/New_York\"}");
    t = load_ok(copy);
    expect_expiry(t, "2027-03-13T12:00:00-05:00", "2027-03-14T12:00:00-04:00");
    pm_template_destroy(t);
}

Test(template, expiry_settings_errors)
{
    write_settings("{\"expiration_setting\": \"fixed\"}");
    expect_fail(PM_TEMPLATE_SETTINGS, "\"expiration_setting\" must be \"default\"");
    write_settings("{\"expiration_setting\": \"default\"}");
    expect_fail("\"expiry_date\" must be an RFC 3339", NULL);
    write_settings("{\"expiry_date\": \"06/13/2027 3:00 AM\"}");
    expect_fail("\"expiry_date\" must be an RFC 3339", NULL);
    write_settings("{\"expiration_setting\": \"auto\"}");
    expect_fail("needs auto_expire_number_days or auto_expire_number_hours", NULL);
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": -1}");
    expect_fail("\"auto_expire_number_days\" must be an integer 0..3650", NULL);
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_hours\": \"5\"}");
    expect_fail("\"auto_expire_number_hours\" must be an integer", NULL);
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 1, "
                   "\"auto_expire_timezone\": \"Mars/Olympus_Mons\"}");
    expect_fail("\"auto_expire_timezone\" must be an IANA time zone", "Mars/Olympus_Mons");
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 1, "
                   "\"auto_expire_roundoff_midnight\": true}");
    expect_fail("needs \"auto_expire_timezone\"", NULL);
    write_settings("{\"expiration_setting\": \"auto\", \"auto_expire_number_days\": 1, "
                   "\"expiry_date\": \"2027-06-13T03:00:00Z\"}");
    expect_fail("\"expiry_date\" is for \"expiration_setting\": \"default\"", NULL);
    write_settings("{\"auto_expire_number_days\": 1}");
    expect_fail("need \"expiration_setting\": \"auto\"", NULL);
    write_settings("{\"expiration_settings\": \"auto\"}");
    expect_fail("unknown setting 'expiration_settings'", NULL);
    write_settings("[1]");
    expect_fail("must be a JSON object", NULL);
}

static void expiry_in_skeleton(json_t *root)
{
    json_object_set_new(root, "expirationDate", json_string("2027-06-13T03:00:00Z"));
}

Test(template, expiry_in_pass_json_points_to_the_setting)
{
    edit_pass_json(expiry_in_skeleton);
    expect_fail("'expirationDate' is set per pass", "expiration_setting");
}

Test(template, autogen_settings)
{
    write_settings("{\"autogenerate_barcode_value_type\": \"Numeric\", "
                   "\"autogenerate_barcode_value_length\": 12}");
    pm_template *t = load_ok(copy);
    cr_assert_eq(t->autogen.type, PM_AUTOGEN_NUMERIC);
    cr_assert_eq(t->autogen.length, 12);
    pm_template_destroy(t);
    write_settings("{\"autogenerate_barcode_value_type\": \"Alphanumeric\", "
                   "\"autogenerate_barcode_value_length\": 100}");
    t = load_ok(copy);
    cr_assert_eq(t->autogen.type, PM_AUTOGEN_ALPHANUMERIC);
    cr_assert_eq(t->autogen.length, 100);
    pm_template_destroy(t);
    write_settings("{\"autogenerate_barcode_value_type\": \"Alphabet\", "
                   "\"autogenerate_barcode_value_length\": 10}");
    t = load_ok(copy);
    cr_assert_eq(t->autogen.type, PM_AUTOGEN_ALPHABET);
    pm_template_destroy(t);
}

Test(template, autogen_settings_errors)
{
    write_settings("{\"autogenerate_barcode_value_type\": \"Hex\", "
                   "\"autogenerate_barcode_value_length\": 12}");
    expect_fail("\"autogenerate_barcode_value_type\" must be \"Numeric\", \"Alphabet\" or "
                "\"Alphanumeric\"", NULL);
    write_settings("{\"autogenerate_barcode_value_length\": 12}");
    expect_fail("when a length is set", NULL);
    write_settings("{\"autogenerate_barcode_value_type\": \"Numeric\"}");
    expect_fail("\"autogenerate_barcode_value_length\" must be an integer 10..100", NULL);
    write_settings("{\"autogenerate_barcode_value_type\": \"Numeric\", "
                   "\"autogenerate_barcode_value_length\": 9}");
    expect_fail("\"autogenerate_barcode_value_length\" must be an integer 10..100", NULL);
    write_settings("{\"autogenerate_barcode_value_type\": \"Numeric\", "
                   "\"autogenerate_barcode_value_length\": 101}");
    expect_fail("\"autogenerate_barcode_value_length\" must be an integer 10..100", NULL);
    write_settings("{\"autogenerate_barcode_value_type\": \"Numeric\", "
                   "\"autogenerate_barcode_value_length\": \"12\"}");
    expect_fail("\"autogenerate_barcode_value_length\" must be an integer 10..100", NULL);
}

/* strips/<name>.png variants: kept apart from the static files, swapped in per pass. */
Test(template, strip_variants_load_apart_and_replace_the_strip)
{
    cr_assert_eq(pmt_sh("cd '%s' && mkdir strips && cp logo.png strips/gold.png && "
                        "cp logo@2x.png strips/gold@2x.png && cp icon.png strips/blue.png", copy), 0);
    pm_template *t = load_ok(copy);
    cr_assert_eq(t->strips_len, 2);
    cr_assert_str_eq(t->strips[0].name, "blue");
    cr_assert_str_eq(t->strips[1].name, "gold");
    for (size_t i = 0; i < t->files_len; i++)
        cr_assert(strncmp(t->files[i].name, "strips/", 7) != 0, "%s", t->files[i].name);
    const pm_template_strip *gold = pm_template_find_strip(t, "gold");
    cr_assert_eq(gold, &t->strips[1]);
    cr_assert_null(pm_template_find_strip(t, "silver"));
    cr_assert_null(pm_template_find_strip(t, NULL));
    const pm_template_file *files[64];
    size_t n = pm_template_pass_files(t, gold, files);
    cr_assert_eq(n, t->files_len, "strip.png and strip@2x.png replaced, none added");
    for (size_t i = 0; i < n; i++) {
        if (i)
            cr_assert_lt(strcmp(files[i - 1]->name, files[i]->name), 0, "sorted");
        if (!strcmp(files[i]->name, "strip.png"))
            cr_assert_eq(files[i], &gold->files[0]);
        if (!strcmp(files[i]->name, "strip@2x.png"))
            cr_assert_eq(files[i], &gold->files[1]);
    }
    /* blue has no @2x: the pass then has no strip@2x.png at all */
    n = pm_template_pass_files(t, pm_template_find_strip(t, "blue"), files);
    cr_assert_eq(n, t->files_len - 1);
    pm_template_destroy(t);
    /* a variant needs its 1x image; nothing but variant images may sit in strips/ */
    cr_assert_eq(pmt_sh("rm '%s/strips/gold.png'", copy), 0);
    expect_fail("strips/gold@2x.png", "has no strips/gold.png");
    cr_assert_eq(pmt_sh("rm '%s/strips/gold@2x.png' && echo x > '%s/strips/notes.txt'", copy, copy), 0);
    expect_fail("strips/notes.txt", "not a strip image");
}

/* template.json: passmill's settings, part of the version, never bundled. */
Test(template, settings_inactive_barcode)
{
    pm_template *t = load_ok(copy);
    cr_assert_not(t->keep_inactive_barcode, "the default is remove");
    char version[17];
    memcpy(version, t->version, sizeof version);
    pm_template_destroy(t);

    cr_assert_eq(pmt_sh("printf '{\"inactive_barcode\": \"keep\"}' > '%s/template.json'", copy), 0);
    t = load_ok(copy);
    cr_assert(t->keep_inactive_barcode);
    cr_assert_str_neq(t->version, version, "template.json is part of the version");
    for (size_t i = 0; i < t->files_len; i++)
        cr_assert_str_neq(t->files[i].name, "template.json", "template.json must not be bundled");
    pm_template_destroy(t);

    cr_assert_eq(pmt_sh("printf '{\"inactive_barcode\": \"remove\"}' > '%s/template.json'", copy), 0);
    t = load_ok(copy);
    cr_assert_not(t->keep_inactive_barcode);
    pm_template_destroy(t);

    cr_assert_eq(pmt_sh("printf '{\"inactive_barcode\": true}' > '%s/template.json'", copy), 0);
    expect_fail("template.json", "inactive_barcode");
    cr_assert_eq(pmt_sh("printf '[1]' > '%s/template.json'", copy), 0);
    expect_fail("template.json", "JSON object");
}

/* Tests for the small core modules: error, buf, config, tzdb. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"
#include "core/tzdb.h"
#include "core/utf8.h"
#include "test_util.h"

Test(buf, append_printf_and_reset_keep_capacity)
{
    pm_buf b = PM_BUF_INIT;
    cr_assert_eq(pm_buf_append_str(&b, "abc"), 0);
    cr_assert_eq(pm_buf_printf(&b, "-%d-", 42), 0);
    cr_assert_str_eq(pm_buf_cstr(&b), "abc-42-");
    size_t cap = b.cap;
    pm_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, cap);
    pm_buf_free(&b);
    cr_assert_null(b.data);
}

Test(error, reject_carries_code_field_reason)
{
    pm_error e;
    pm_error_clear(&e);
    cr_assert_eq(pm_reject(&e, "serial.format", "serial_number", "expected %s", "[A-Za-z0-9._-]"), -1);
    cr_assert_eq(e.code, PM_ERR_REJECT);
    cr_assert_str_eq(e.reason, "serial.format");
    cr_assert_str_eq(e.field, "serial_number");
    cr_assert_str_eq(e.message, "expected [A-Za-z0-9._-]");
    pm_error_prefix(&e, "record %d", 7);
    cr_assert_str_eq(e.message, "record 7: expected [A-Za-z0-9._-]");
}

/* Whether s is whole UTF-8 (jansson refuses anything else). */
static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* 1-, 2-, 3- and 4-byte characters. */
#define MIXED "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"

Test(error, utf8_cut_keeps_whole_characters_at_every_cut_point)
{
    const char *s = MIXED MIXED MIXED;
    size_t len = strlen(s);
    cr_assert_eq(len, 30);
    for (size_t max = 0; max <= len + 1; max++) {
        size_t n = pm_utf8_cut(s, len, max);
        char buf[64];
        memcpy(buf, s, n);
        buf[n] = '\0';
        cr_assert_leq(n, max);
        cr_assert_geq(n + 3, max < len ? max : len, "cut %zu gave %zu", max, n);
        cr_assert(valid_utf8(buf), "cut at %zu leaves a broken character", max);
    }
    /* bytes that are not UTF-8 count one each: never walk back over them */
    cr_assert_eq(pm_utf8_cut("ab\x80\x80\x80\x80", 6, 5), 5);
    cr_assert_eq(pm_utf8_cut("\xff\xfe", 2, 1), 1);
}

Test(error, field_and_message_are_cut_at_character_boundaries)
{
    pm_error e;
    /* every alignment of multi-byte text against the buffer ends */
    for (size_t pad = 0; pad < 10; pad++) {
        char field[400], text[1200];
        memset(field, 'x', pad);
        field[pad] = '\0';
        while (strlen(field) + 10 < sizeof field)
            strcat(field, MIXED);
        memset(text, 'y', pad);
        text[pad] = '\0';
        while (strlen(text) + 10 < sizeof text)
            strcat(text, MIXED);
        pm_reject(&e, "schema.type", field, "%s", text);
        cr_assert(valid_utf8(e.field), "pad %zu: field %s", pad, e.field);
        cr_assert(valid_utf8(e.message), "pad %zu: message", pad);
        cr_assert_gt(strlen(e.field), sizeof e.field - 5);
        cr_assert_gt(strlen(e.message), sizeof e.message - 5);
        cr_assert_eq(strncmp(e.field, field, strlen(e.field)), 0);
        cr_assert_eq(strncmp(e.message, text, strlen(e.message)), 0);
        /* a field that fits but ends inside a character (a caller's own cut) */
        char part[8] = "ab\xe2\x82";
        pm_reject(&e, "x", part, "m");
        cr_assert_str_eq(e.field, "ab");
        pm_error_set(&e, PM_ERR_IO, "%s", text);
        cr_assert(valid_utf8(e.message), "pad %zu: system message", pad);
        pm_reject(&e, "x", "f", "%s", text + pad); /* starts on a character */
        pm_error_prefix(&e, "%.*s", (int)(250 + pad), text);
        cr_assert(valid_utf8(e.message), "pad %zu: prefixed message", pad);
        cr_assert_gt(strlen(e.message), sizeof e.message - 6);
    }
    /* bytes that are not UTF-8 (an Avro map key is raw bytes) become '?' */
    pm_reject(&e, "avro.decode", "metadata.k\xff\xc3x\xed\xa0\x80", "bad \xc0\xaf%s", "\xc3\xa9");
    cr_assert_str_eq(e.field, "metadata.k??x???");
    cr_assert_str_eq(e.message, "bad ??\xc3\xa9");
}

Test(config, defaults_file_and_overrides)
{
    char *dir = pmt_tmpdir("cfg");
    char path[1024];
    snprintf(path, sizeof path, "%s/a.conf", dir);
    const char *text = "# comment\n\nstore.dir = \"out dir\"\nengine.workers=3\n"
                       "store.fsync = off\nkafka.session.timeout.ms = 6000\n";
    cr_assert_eq(pmt_write_file(path, text, strlen(text)), 0);
    pm_config *cfg = pm_config_create();
    cr_assert_not_null(cfg);
    cr_assert_str_eq(cfg->store_type, "local");
    pm_error e;
    cr_assert_eq(pm_config_load_file(cfg, path, &e), 0, "%s", e.message);
    char want[1100];
    snprintf(want, sizeof want, "%s/out dir", dir); /* quotes removed, then resolved */
    cr_assert_str_eq(cfg->store_dir, want);
    cr_assert_eq(cfg->workers, 3);
    cr_assert(!cfg->store_fsync);
    cr_assert_eq(cfg->kafka_props_len, 1);
    cr_assert_str_eq(cfg->kafka_props[0].key, "session.timeout.ms");
    cr_assert_eq(pm_config_set_pair(cfg, "engine.workers=5", &e), 0);
    cr_assert_eq(cfg->workers, 5);
    pm_config_destroy(cfg);
    pmt_rmrf(dir);
    free(dir);
}

Test(config, unknown_key_and_bad_values_are_errors)
{
    pm_config *cfg = pm_config_create();
    pm_error e;
    cr_assert_eq(pm_config_set_pair(cfg, "store.dri=x", &e), -1);
    cr_assert(strstr(e.message, "store.dri"), "%s", e.message);
    cr_assert_eq(pm_config_set_pair(cfg, "engine.workers=-1", &e), -1);
    cr_assert_eq(pm_config_set_pair(cfg, "engine.workers=4x", &e), -1);
    cr_assert_eq(pm_config_set_pair(cfg, "store.fsync=maybe", &e), -1);
    cr_assert_eq(pm_config_set_pair(cfg, "novalue", &e), -1);
    pm_config_destroy(cfg);

    char *dir = pmt_tmpdir("cfg");
    char path[1024];
    snprintf(path, sizeof path, "%s/b.conf", dir);
    const char *text = "store.dir = a\nbogus.key = 1\n";
    pmt_write_file(path, text, strlen(text));
    cfg = pm_config_create();
    cr_assert_eq(pm_config_load_file(cfg, path, &e), -1);
    cr_assert(strstr(e.message, ":2:") && strstr(e.message, "bogus.key"), "%s", e.message);
    pm_config_destroy(cfg);
    pmt_rmrf(dir);
    free(dir);
}

/* Issue 14 item 9: `run -c /abs/dir/x.conf` from another folder must find
 * the files x.conf names relative to itself. */
Test(config, relative_paths_in_a_file_are_relative_to_its_folder)
{
    char *dir = pmt_tmpdir("cfg");
    char sub[1024], path[1100];
    snprintf(sub, sizeof sub, "%s/conf", dir);
    cr_assert_eq(pmt_sh("mkdir '%s'", sub), 0);
    snprintf(path, sizeof path, "%s/run.conf", sub);
    const char *text = "input.path = in.jsonl\n"
                       "template.dir = ../templates\n"
                       "sign.cert = /abs/signer.pem\n"
                       "sign.key = \"id/signer.key\"\n"
                       "sign.chain =\n"
                       "store.dir = store\n"
                       "output.ledger = out/ledger.jsonl.zst\n"
                       "kafka.schema_ids = 1:schemas/a.avsc, 2:/abs/b.avsc,3: c.avsc\n"
                       "kafka.ssl.ca.location = ca.pem\n"
                       "kafka.ssl.key.location = /abs/client.key\n"
                       "kafka.session.timeout.ms = 6000\n"
                       "barcode.secret_env = PM_SECRET\n";
    cr_assert_eq(pmt_write_file(path, text, strlen(text)), 0);
    pm_config *cfg = pm_config_create();
    pm_error e;
    cr_assert_eq(pm_config_load_file(cfg, path, &e), 0, "%s", e.message);
    char want[2400];
#define WANT(field, rel) \
    snprintf(want, sizeof want, "%s/%s", sub, rel); \
    cr_assert_str_eq(cfg->field, want)
    WANT(input_path, "in.jsonl");
    WANT(template_dir, "../templates");
    WANT(sign_key, "id/signer.key");
    WANT(store_dir, "store");
    WANT(ledger_path, "out/ledger.jsonl.zst");
#undef WANT
    cr_assert_str_eq(cfg->sign_cert, "/abs/signer.pem");
    cr_assert_str_eq(cfg->sign_chain, "", "an empty value stays empty");
    cr_assert_str_eq(cfg->barcode_secret_env, "PM_SECRET", "not a path: unchanged");
    cr_assert_str_eq(cfg->rejects_path, "rejects.jsonl", "a default stays relative to the working directory");
    snprintf(want, sizeof want, "1:%s/schemas/a.avsc, 2:/abs/b.avsc,3: %s/c.avsc", sub, sub);
    cr_assert_str_eq(cfg->kafka_schema_ids, want);
    cr_assert_eq(cfg->kafka_props_len, 3);
    snprintf(want, sizeof want, "%s/ca.pem", sub);
    cr_assert_str_eq(cfg->kafka_props[0].value, want);
    cr_assert_str_eq(cfg->kafka_props[1].value, "/abs/client.key");
    cr_assert_str_eq(cfg->kafka_props[2].value, "6000");

    /* -X (pm_config_set_pair) values stay relative to the working directory. */
    cr_assert_eq(pm_config_set_pair(cfg, "input.path=x/in.jsonl", &e), 0);
    cr_assert_str_eq(cfg->input_path, "x/in.jsonl");
    cr_assert_eq(pm_config_set_pair(cfg, "kafka.schema_ids=1:s.avsc", &e), 0);
    cr_assert_str_eq(cfg->kafka_schema_ids, "1:s.avsc");
    pm_config_destroy(cfg);

    /* stdin and the system CA keyword are not paths; a file in the working
     * directory (no folder in its name) changes nothing. */
    snprintf(path, sizeof path, "%s/stdin.conf", sub);
    text = "input.path = -\nkafka.ssl.ca.location = probe\n";
    cr_assert_eq(pmt_write_file(path, text, strlen(text)), 0);
    cfg = pm_config_create();
    cr_assert_eq(pm_config_load_file(cfg, path, &e), 0, "%s", e.message);
    cr_assert_str_eq(cfg->input_path, "-");
    cr_assert_str_eq(cfg->kafka_props[0].value, "probe");
    pm_config_destroy(cfg);
    cr_assert_eq(pmt_sh("cd '%s' && cp run.conf ../here.conf", sub), 0);
    char cwd[1024];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    cfg = pm_config_create();
    cr_assert_eq(pm_config_load_file(cfg, "here.conf", &e), 0, "%s", e.message);
    cr_assert_str_eq(cfg->input_path, "in.jsonl");
    pm_config_destroy(cfg);
    cr_assert_eq(chdir(cwd), 0);

    pmt_rmrf(dir);
    free(dir);
}

Test(tzdb, loads_zones_and_links_from_tzdata_zi)
{
    pm_tz_set *tz;
    pm_error err;
    cr_assert_eq(pm_tz_set_load(PM_ZONEINFO_DIR, &tz, &err), 0, "%s", err.message);
    cr_assert_gt(pm_tz_set_count(tz), 400);
    cr_assert(pm_tz_set_has(tz, "Europe/London", 13));
    cr_assert(pm_tz_set_has(tz, "GB", 2));              /* link */
    cr_assert(pm_tz_set_has(tz, "Europe/London!", 13)); /* length-bounded */
    cr_assert_not(pm_tz_set_has(tz, "Europe/Londo", 12));
    cr_assert_not(pm_tz_set_has(tz, "Europe/London", 14));
    cr_assert_not(pm_tz_set_has(tz, "", 0));
    cr_assert_not(pm_tz_set_has(tz, "Etc", 3));
    pm_tz_set_destroy(tz);

    cr_assert_eq(pm_tz_set_load("/nonexistent/zoneinfo", &tz, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert_null(tz);
}

Test(tzdb, fallback_checks_tzif_files)
{
    char *dir = pmt_tmpdir("core-tz");
    cr_assert_not_null(dir);
    cr_assert_eq(pmt_sh("mkdir -p '%s/Test' && cp " PM_ZONEINFO_DIR "/Europe/London '%s/Test/Zone' && "
                        "printf 'not a zone' > '%s/Test/Text' && printf 'TZif' > '%s/.hidden'",
                        dir, dir, dir, dir), 0);
    pm_tz_set *tz;
    pm_error err;
    cr_assert_eq(pm_tz_set_load(dir, &tz, &err), 0, "%s", err.message);
    cr_assert_eq(pm_tz_set_count(tz), 0);
    cr_assert(pm_tz_set_has(tz, "Test/Zone", 9));
    cr_assert_not(pm_tz_set_has(tz, "Test/Text", 9));  /* not TZif */
    cr_assert_not(pm_tz_set_has(tz, "Test", 4));       /* a directory */
    cr_assert_not(pm_tz_set_has(tz, "Test/Nope", 9));
    cr_assert_not(pm_tz_set_has(tz, ".hidden", 7));
    cr_assert_not(pm_tz_set_has(tz, "Test/../Test/Zone", 17));
    cr_assert_not(pm_tz_set_has(tz, "/Test/Zone", 10));
    cr_assert_not(pm_tz_set_has(tz, "Test//Zone", 10));
    cr_assert_not(pm_tz_set_has(tz, "Test/Zone/", 10));
    pm_tz_set_destroy(tz);
    pmt_rmrf(dir);
    free(dir);
}

Test(buf, read_file_whole_files_of_any_size)
{
    char path[] = "/dev/shm/pm-test-read-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    static uint8_t data[200001];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    cr_assert_eq(write(fd, data, sizeof data), (ssize_t)sizeof data);
    close(fd);
    pm_buf b = PM_BUF_INIT;
    cr_assert_eq(pm_buf_read_file(&b, path), 0);
    cr_assert_eq(b.len, sizeof data);
    cr_assert_eq(memcmp(b.data, data, sizeof data), 0);
    cr_assert_eq(truncate(path, 0), 0);
    cr_assert_eq(pm_buf_read_file(&b, path), 0);
    cr_assert_eq(b.len, 0, "an empty file is empty, not the last content");
    unlink(path);
    /* /proc files say size 0: read until the end anyway. */
    cr_assert_eq(pm_buf_read_file(&b, "/proc/self/status"), 0);
    cr_assert(b.len > 100 && strstr(pm_buf_cstr(&b), "Name:"));
    cr_assert_eq(pm_buf_read_file(&b, "/no/such/file"), -1);
    pm_buf_free(&b);
}

/* Every scalar value encodes and decodes to itself; surrogates, overlong
 * forms, values above U+10FFFF, stray and missing continuation bytes are
 * refused (RFC 3629). */
Test(utf8, every_code_point_and_the_invalid_forms)
{
    unsigned char b[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        size_t n;
        if (cp < 0x80) {
            b[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (unsigned char)(0xC0 | cp >> 6);
            b[1] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (unsigned char)(0xE0 | cp >> 12);
            b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            b[2] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            b[0] = (unsigned char)(0xF0 | cp >> 18);
            b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            b[3] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 4;
        }
        uint32_t got = 0xFFFFFFFF;
        size_t len = pm_utf8_next(b, n, &got);
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            cr_assert_eq(len, 0, "surrogate U+%04X accepted", cp);
            continue;
        }
        cr_assert_eq(len, n, "U+%04X: length %zu", cp, len);
        cr_assert_eq(got, cp, "U+%04X decoded as U+%04X", cp, got);
        if (n > 1)
            cr_assert_eq(pm_utf8_next(b, n - 1, NULL), 0, "U+%04X cut short accepted", cp);
    }
    static const char *const bad[] = {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x9F\xBF",
                                      "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                                      "\xFF", "\xC3\x28", "\xE2\x82\x28"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(pm_utf8_next((const unsigned char *)bad[i], strlen(bad[i]), NULL), 0, "bad #%zu", i);
    cr_assert_eq(pm_utf8_next((const unsigned char *)"", 0, NULL), 0);
    cr_assert_eq(pm_utf8_next((const unsigned char *)"\0x", 2, NULL), 1, "NUL is a character");
    cr_assert(pm_utf8_valid((const unsigned char *)"caf\xC3\xA9 \xF0\x9F\x8E\x9F", 10));
    cr_assert(!pm_utf8_valid((const unsigned char *)"caf\xC3", 4));
    cr_assert(pm_utf8_valid((const unsigned char *)"", 0));
}

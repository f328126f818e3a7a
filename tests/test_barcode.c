/*
 * test_barcode.c - the barcode stage: autogenerate, pass.json barcode
 * dictionaries, QR PNG (decoded back with zbarimg), rejects.
 */
#include <criterion/criterion.h>

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <qrencode.h>
#include <zlib.h>

#include "stages/barcode.h"
#include "wallet/template.h"
#include "test_util.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
static const uint8_t key_a[] = "passmill test barcode key A";
static const uint8_t key_b[] = "passmill test barcode key B";

/* ---- a stage instance around a hand-built context ----------------------- */

typedef struct env {
    pm_context ctx;
    void *state;
    void *scratch;
    pm_job job;
} env;

static void env_open(env *e, const uint8_t *key, size_t key_len)
{
    memset(e, 0, sizeof *e);
    e->ctx.fixed_now = -1;
    cr_assert(key_len <= sizeof e->ctx.barcode_key);
    if (key_len)
        memcpy(e->ctx.barcode_key, key, key_len);
    e->ctx.barcode_key_len = key_len;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_stage_barcode.create(&e->ctx, &e->state, &err), 0, "%s", err.message);
    cr_assert_eq(pm_stage_barcode.worker_create(e->state, &e->scratch, &err), 0, "%s",
                 err.message);
    pm_job_init(&e->job);
}

static void env_close(env *e)
{
    pm_job_free(&e->job);
    pm_stage_barcode.worker_destroy(e->scratch);
    pm_stage_barcode.destroy(e->state);
}

/* A normalized record (every schema field present); alt NULL -> JSON null. */
static json_t *make_record(const char *serial, const char *format, const char *message,
                           const char *alt, const char *encoding)
{
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:[],"
        " s:{s:n, s:s, s:s, s:n, s:s, s:n, s:s, s:n},"
        " s:{s:n, s:n, s:n, s:n, s:n, s:n, s:n, s:n, s:n},"
        " s:{s:s, s:s, s:o, s:s},"
        " s:[], s:[], s:n, s:n, s:[], s:{}}",
        "serial_number", serial, "action", "ISSUE", "template_id", "concert", "pass_group_ids",
        "event", "event_id", "name", "Summer Gala", "venue_title", "Royal Hall",
        "venue_address", "time_zone", "Europe/London", "doors_open", "start",
        "2027-06-12T19:00:00+01:00", "end",
        "attendee", "holder_name", "seat", "row", "section", "gate", "ticket_type",
        "ticket_number", "confirmation_code", "face_value",
        "barcode", "format", format, "message", message, "alt_text",
        alt ? json_string(alt) : json_null(), "encoding", encoding,
        "locations", "beacons", "relevant_date", "expiration_date", "custom_fields", "metadata");
    cr_assert_not_null(rec, "test record did not build");
    return rec;
}

/* Run the stage on a fresh record; returns process()'s result. */
static int run(env *e, const char *serial, const char *format, const char *message,
               const char *alt, const char *encoding)
{
    pm_job_reset(&e->job);
    e->job.record = make_record(serial, format, message, alt, encoding);
    e->job.serial = json_string_value(json_object_get(e->job.record, "serial_number"));
    return pm_stage_barcode.process(e->state, e->scratch, &e->job);
}

static const char *final_message(env *e)
{
    return pm_buf_cstr(&e->job.barcode_message);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- independent reference for autogenerate ------------------------------ */

/* HMAC-SHA-256 via the openssl CLI (a separate implementation path). */
static void openssl_hmac(const uint8_t *key, size_t key_len, const char *serial,
                         uint8_t mac[32])
{
    char hex[2 * 64 + 1];
    for (size_t i = 0; i < key_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    hex[2 * key_len] = '\0';
    int status = -1;
    char *out = pmt_sh_out(&status, "printf '%%s' '%s' | openssl dgst -sha256 -mac HMAC -macopt hexkey:%s",
                           serial, hex);
    cr_assert_not_null(out);
    cr_assert_eq(status, 0, "openssl dgst failed: %s", out);
    const char *eq = strstr(out, "= ");
    cr_assert_not_null(eq, "unexpected openssl output: %s", out);
    for (int i = 0; i < 32; i++) {
        unsigned v;
        cr_assert_eq(sscanf(eq + 2 + 2 * i, "%2x", &v), 1, "bad hex in: %s", out);
        mac[i] = (uint8_t)v;
    }
    free(out);
}

/* Crockford base32 with a bit accumulator (the stage uses 40-bit groups). */
static void reference_base32(const uint8_t *in, size_t n, char *out)
{
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = crockford[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
        acc &= (1u << bits) - 1;
    }
    cr_assert_eq(bits, 0);
    out[o] = '\0';
}

static void expected_autogenerate(const uint8_t *key, size_t key_len, const char *serial,
                                  char out[25])
{
    uint8_t mac[32];
    openssl_hmac(key, key_len, serial, mac);
    reference_base32(mac, 15, out);
}

static void assert_crockford24(const char *s)
{
    cr_assert_eq(strlen(s), 24, "length %zu: %s", strlen(s), s);
    for (const char *p = s; *p; p++)
        cr_assert_not_null(strchr(crockford, *p), "'%c' is not Crockford base32 in %s", *p, s);
}

Test(autogenerate, matches_openssl_hmac_and_reference_base32)
{
    const char *serials[] = {"TKT-0001", "TKT-0002", "a", "serial.with_dots-and-64-chars-"
                                                          "0123456789012345678901234567890123"};
    const struct {
        const uint8_t *key;
        size_t len;
    } keys[] = {{key_a, sizeof key_a - 1}, {key_b, sizeof key_b - 1}, {key_a, 1}};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        for (size_t s = 0; s < sizeof serials / sizeof serials[0]; s++) {
            char got[25], want[25];
            pm_error err;
            pm_error_clear(&err);
            cr_assert_eq(pm_barcode_autogenerate(keys[k].key, keys[k].len, serials[s], got, &err),
                         0, "%s", err.message);
            expected_autogenerate(keys[k].key, keys[k].len, serials[s], want);
            cr_assert_str_eq(got, want, "key %zu serial %s", k, serials[s]);
            assert_crockford24(got);
        }
    }
}

Test(autogenerate, deterministic_and_distinct_per_serial_and_key)
{
    char a1[25], a2[25], b1[25], other[25];
    pm_error err;
    cr_assert_eq(pm_barcode_autogenerate(key_a, sizeof key_a - 1, "TKT-0001", a1, &err), 0);
    cr_assert_eq(pm_barcode_autogenerate(key_a, sizeof key_a - 1, "TKT-0001", a2, &err), 0);
    cr_assert_eq(pm_barcode_autogenerate(key_b, sizeof key_b - 1, "TKT-0001", b1, &err), 0);
    cr_assert_eq(pm_barcode_autogenerate(key_a, sizeof key_a - 1, "TKT-0002", other, &err), 0);
    cr_assert_str_eq(a1, a2);
    cr_assert_str_neq(a1, b1);
    cr_assert_str_neq(a1, other);
}

Test(autogenerate, stateless_without_key_is_config_error)
{
    char out[25];
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_barcode_autogenerate(key_a, 0, "TKT-0001", out, &err), -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert_not_null(strstr(err.message, "barcode.secret_env"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "barcode.secret_file"), "%s", err.message);
}

Test(autogenerate, stage_matches_stateless_across_reused_scratch)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    const char *serials[] = {"TKT-0001", "TKT-0002", "TKT-0003", "TKT-0001"};
    char first[25] = "";
    for (size_t i = 0; i < sizeof serials / sizeof serials[0]; i++) {
        cr_assert_eq(run(&e, serials[i], "QRCODE", "autogenerate", NULL, "iso-8859-1"), 0, "%s",
                     e.job.err.message);
        char want[25];
        expected_autogenerate(key_a, sizeof key_a - 1, serials[i], want);
        cr_assert_str_eq(final_message(&e), want, "serial %s", serials[i]);
        if (i == 0)
            strcpy(first, want);
        /* The final message, not the literal, goes into pass.json. */
        json_t *d = json_array_get(json_object_get(e.job.barcodes, "barcodes"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(d, "message")), want);
    }
    cr_assert_str_eq(final_message(&e), first, "re-issuance reproduces the barcode");

    /* A second worker's scratch derives the same value. */
    void *scratch2 = NULL;
    pm_error err;
    cr_assert_eq(pm_stage_barcode.worker_create(e.state, &scratch2, &err), 0);
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-0003", "PDF417", "autogenerate", NULL, "utf-8");
    cr_assert_eq(pm_stage_barcode.process(e.state, scratch2, &e.job), 0);
    char want3[25];
    expected_autogenerate(key_a, sizeof key_a - 1, "TKT-0003", want3);
    cr_assert_str_eq(final_message(&e), want3);
    pm_stage_barcode.worker_destroy(scratch2);
    env_close(&e);
}

Test(autogenerate, stage_without_secret_is_config_failure)
{
    env e;
    env_open(&e, NULL, 0);
    cr_assert_eq(run(&e, "TKT-0001", "QRCODE", "autogenerate", NULL, "iso-8859-1"), -1);
    cr_assert_eq(e.job.err.code, PM_ERR_CONFIG);
    cr_assert_str_eq(e.job.err.reason, "");
    cr_assert_not_null(strstr(e.job.err.message, "barcode.secret_env"), "%s", e.job.err.message);
    cr_assert_not_null(strstr(e.job.err.message, "barcode.secret_file"), "%s",
                       e.job.err.message);
    /* Records with an explicit message need no secret. */
    cr_assert_eq(run(&e, "TKT-0001", "QRCODE", "ASDE96325", NULL, "iso-8859-1"), 0, "%s",
                 e.job.err.message);
    cr_assert_str_eq(final_message(&e), "ASDE96325");
    env_close(&e);
}

/* Several workers at once, each with its own scratch. */
typedef struct worker_arg {
    env *e;
    int id;
    int failures;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *w = p;
    void *scratch = NULL;
    pm_error err;
    if (pm_stage_barcode.worker_create(w->e->state, &scratch, &err) != 0) {
        w->failures++;
        return NULL;
    }
    pm_job job;
    pm_job_init(&job);
    for (int i = 0; i < 150; i++) {
        char serial[32], want[25];
        snprintf(serial, sizeof serial, "W%d-%d", w->id, i);
        pm_job_reset(&job);
        job.record = make_record(serial, "AZTEC", "autogenerate", NULL, "utf-8");
        if (pm_stage_barcode.process(w->e->state, scratch, &job) != 0
            || pm_barcode_autogenerate(key_a, sizeof key_a - 1, serial, want, &err) != 0
            || strcmp(pm_buf_cstr(&job.barcode_message), want) != 0 || job.qr_png.len < 8)
            w->failures++;
    }
    pm_job_free(&job);
    pm_stage_barcode.worker_destroy(scratch);
    return NULL;
}

Test(autogenerate, concurrent_workers_agree_with_stateless)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    pthread_t t[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){&e, i, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(args[i].failures, 0, "worker %d", i);
    }
    env_close(&e);
}

/* ---- QR PNG --------------------------------------------------------------- */

/* Exported by libqrencode 4.1.1 but missing from its header (see barcode.c). */
extern QRcode *QRcode_encodeMask(QRinput *input, int mask);

/* The symbol the stage should draw: 8-bit mode, level M, mask PM_QR_MASK. */
static QRcode *expected_symbol(const uint8_t *msg, size_t len)
{
    QRinput *in = QRinput_new2(0, QR_ECLEVEL_M);
    cr_assert_not_null(in);
    cr_assert_eq(QRinput_append(in, QR_MODE_8, (int)len, msg), 0);
    QRcode *code = QRcode_encodeMask(in, PM_QR_MASK);
    QRinput_free(in);
    cr_assert_not_null(code);
    return code;
}

static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decode with zbarimg; -Sbinary prints the symbol's bytes unconverted
 * (without it zbar guesses a charset and may turn UTF-8 into SJIS). */
static char *zbar_decode(const pm_buf *png, const char *dir, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/qr.png", dir);
    cr_assert_eq(pmt_write_file(path, png->data, png->len), 0);
    int status = -1;
    char *out = pmt_sh_out(&status, "zbarimg --raw -q -Sbinary '%s' 2>/dev/null", path);
    cr_assert_not_null(out);
    cr_assert_eq(status, 0, "zbarimg found no QR code in %s", path);
    *len = strlen(out);
    return out;
}

/* Structure: signature, IHDR 1-bit gray of the expected size, only IHDR,
 * IDAT, IEND, each with a correct CRC; pixels: 4-module white quiet zone,
 * 8 px per module, every module that of the symbol with mask PM_QR_MASK. */
static void assert_png_layout(const pm_buf *png, const uint8_t *msg, size_t len)
{
    cr_assert_geq(png->len, 8 + 25 + 12);
    cr_assert_arr_eq(png->data, png_signature, 8);
    QRcode *code = expected_symbol(msg, len);
    uint32_t side = (uint32_t)(code->width + 8) * 8;

    const uint8_t *p = png->data + 8;
    cr_assert_eq(be32(p), 13, "IHDR length");
    cr_assert_eq(memcmp(p + 4, "IHDR", 4), 0);
    cr_assert_eq(be32(p + 8), side);
    cr_assert_eq(be32(p + 12), side);
    cr_assert_eq(p[16], 1, "bit depth");
    cr_assert_eq(p[17], 0, "colour type gray");
    cr_assert_eq(p[18] | p[19] | p[20], 0, "deflate, filter method 0, no interlace");
    const char *order[] = {"IHDR", "IDAT", "IEND"};
    size_t chunks = 0;
    for (size_t off = 8; off < png->len; chunks++) {
        cr_assert_leq(off + 12, png->len, "chunk %zu fits", chunks);
        uint32_t clen = be32(png->data + off);
        cr_assert_leq(off + 12 + clen, png->len);
        const char *type = (const char *)png->data + off + 4;
        cr_assert_lt(chunks, 3, "more than three chunks");
        cr_assert_eq(memcmp(type, order[chunks], 4), 0, "chunk %zu is %.4s", chunks, type);
        uint32_t crc = (uint32_t)crc32(0L, png->data + off + 4, clen + 4);
        cr_assert_eq(be32(png->data + off + 8 + clen), crc, "CRC of %.4s", type);
        off += 12 + clen;
    }
    cr_assert_eq(chunks, 3);

    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_memory(&img, png->data, png->len), "%s", img.message);
    img.format = PNG_FORMAT_GRAY;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(img));
    cr_assert_not_null(px);
    cr_assert(png_image_finish_read(&img, NULL, px, 0, NULL), "%s", img.message);
    cr_assert_eq(img.width, side);
    cr_assert_eq(img.height, side);
    for (uint32_t i = 0; i < side; i++) {
        for (uint32_t q = 0; q < 32; q++) {
            cr_assert_eq(px[q * side + i], 255, "top quiet zone");
            cr_assert_eq(px[i * side + q], 255, "left quiet zone");
            cr_assert_eq(px[(side - 1 - q) * side + i], 255, "bottom quiet zone");
            cr_assert_eq(px[i * side + side - 1 - q], 255, "right quiet zone");
        }
    }
    /* Every pixel of every module is the module's colour. */
    for (uint32_t y = 0; y < (uint32_t)code->width * 8; y++)
        for (uint32_t x = 0; x < (uint32_t)code->width * 8; x++) {
            bool dark = code->data[(y / 8) * (uint32_t)code->width + x / 8] & 1;
            cr_assert_eq(px[(32 + y) * side + 32 + x], dark ? 0 : 255,
                         "module (%u,%u) pixel (%u,%u)", x / 8, y / 8, x % 8, y % 8);
        }
    QRcode_free(code);
    free(px);
}

Test(qr_png, stateless_decodes_back_exactly)
{
    char *dir = pmt_tmpdir("barcode");
    cr_assert_not_null(dir);
    char *long_msg = malloc(501);
    for (int i = 0; i < 500; i++)
        long_msg[i] = (char)(0x20 + (i * 7) % 95);
    long_msg[500] = '\0';
    const char *msgs[] = {"Hello", "ASDE96325", "Caf\xc3\xa9 M\xc3\xbcller \xe2\x82\xac \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x8e\xab",
                          "Caf\xe9 M\xfcller" /* Latin-1 bytes */, long_msg};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        pm_buf png = PM_BUF_INIT;
        pm_error err;
        pm_error_clear(&err);
        size_t len = strlen(msgs[i]);
        cr_assert_eq(pm_qr_png_render((const uint8_t *)msgs[i], len, &png, &err), 0, "%s",
                     err.message);
        assert_png_layout(&png, (const uint8_t *)msgs[i], len);
        size_t got_len;
        char *got = zbar_decode(&png, dir, &got_len);
        cr_assert_eq(got_len, len, "message %zu: decoded %zu bytes, want %zu", i, got_len, len);
        cr_assert_arr_eq(got, msgs[i], len, "message %zu", i);
        free(got);
        pm_buf_free(&png);
    }
    free(long_msg);
    pmt_rmrf(dir);
    free(dir);
}

Test(qr_png, stage_png_holds_message_in_its_encoding)
{
    char *dir = pmt_tmpdir("barcode");
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    const char *utf8 = "Gate \xe2\x86\x92 B \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x8e\xab";
    const char *latin_text = "Caf\xc3\xa9 M\xc3\xbcller \xc2\xa3" "5"; /* UTF-8 in the record */
    const char *latin_bytes = "Caf\xe9 M\xfcller \xa3" "5";              /* what the QR holds */
    struct {
        const char *format, *message, *encoding, *want;
    } cases[] = {
        {"QRCODE", utf8, "utf-8", utf8},
        {"CODE128", "ABC-123 xyz", "iso-8859-1", "ABC-123 xyz"},
        {"AZTEC", latin_text, "iso-8859-1", latin_bytes},
        {"PDF417", latin_text, "utf-8", latin_text},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(run(&e, "TKT-9", cases[i].format, cases[i].message, NULL, cases[i].encoding),
                     0, "case %zu: %s", i, e.job.err.message);
        cr_assert_str_eq(final_message(&e), cases[i].message, "barcode_message stays UTF-8");
        size_t got_len;
        char *got = zbar_decode(&e.job.qr_png, dir, &got_len);
        cr_assert_eq(got_len, strlen(cases[i].want), "case %zu", i);
        cr_assert_arr_eq(got, cases[i].want, got_len, "case %zu", i);
        free(got);
    }
    /* Autogenerated value decodes too. */
    cr_assert_eq(run(&e, "TKT-9", "QRCODE", "autogenerate", NULL, "iso-8859-1"), 0);
    size_t got_len;
    char *got = zbar_decode(&e.job.qr_png, dir, &got_len);
    cr_assert_eq(got_len, 24);
    cr_assert_arr_eq(got, final_message(&e), 24);
    free(got);
    env_close(&e);
    pmt_rmrf(dir);
    free(dir);
}

Test(qr_png, deterministic_bytes)
{
    const char *msg = "ASDE96325";
    pm_buf a = PM_BUF_INIT, b = PM_BUF_INIT;
    pm_error err;
    cr_assert_eq(pm_qr_png_render((const uint8_t *)msg, strlen(msg), &a, &err), 0);
    cr_assert_eq(pm_qr_png_render((const uint8_t *)msg, strlen(msg), &b, &err), 0);
    cr_assert_eq(a.len, b.len);
    cr_assert_arr_eq(a.data, b.data, a.len);
    cr_assert_arr_eq(a.data, png_signature, 8);

    /* The stage, with its reused buffers, gives the same bytes each time. */
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(run(&e, "TKT-1", "AZTEC", msg, "alt", "iso-8859-1"), 0);
        cr_assert_eq(e.job.qr_png.len, a.len);
        cr_assert_arr_eq(e.job.qr_png.data, a.data, a.len);
        cr_assert_eq(run(&e, "TKT-2", "QRCODE", "a different, longer message", NULL, "utf-8"),
                     0);
        cr_assert_neq(e.job.qr_png.len, 0);
    }
    env_close(&e);
    /* Rendering into a non-empty buffer replaces its contents. */
    cr_assert_eq(pm_qr_png_render((const uint8_t *)msg, strlen(msg), &b, &err), 0);
    cr_assert_eq(b.len, a.len);
    pm_buf_free(&a);
    pm_buf_free(&b);
}

/* The fixed mask is not chosen per symbol, so every kind of message the
 * pipeline makes is decoded back: 600 serial-like and autogenerated values
 * of lengths 1..120 (QR versions 1..6), all files in one zbarimg run. */
Test(qr_png, many_serials_decode_with_the_fixed_mask, .timeout = 120)
{
    enum { N = 600 };
    char *dir = pmt_tmpdir("barcode");
    cr_assert_not_null(dir);
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    static char want[N][128];
    size_t cmd_cap = 64 + (size_t)N * (strlen(dir) + 16);
    char *cmd = malloc(cmd_cap);
    cr_assert_not_null(cmd);
    /* ASCII messages: without -Sbinary zbarimg ends each symbol with a newline. */
    size_t cmd_len = (size_t)snprintf(cmd, cmd_cap, "zbarimg --raw -q");
    for (int i = 0; i < N; i++) {
        char serial[64];
        snprintf(serial, sizeof serial, "STA-2027-%06d-%c%c", i * 7919 % 1000000,
                 crockford[i % 32], crockford[(i / 32) % 32]);
        if (i % 3 == 0) {
            cr_assert_eq(run(&e, serial, "QRCODE", "autogenerate", NULL, "iso-8859-1"), 0);
        } else {
            size_t len = 1 + (size_t)(i * 37) % 120;
            char msg[128];
            for (size_t k = 0; k < len; k++)
                msg[k] = serial[k % strlen(serial)] + (char)(k / strlen(serial));
            msg[len] = '\0';
            cr_assert_eq(run(&e, serial, "QRCODE", msg, NULL, "iso-8859-1"), 0, "%s",
                         e.job.err.message);
        }
        snprintf(want[i], sizeof want[i], "%s", final_message(&e));
        if (i % 50 == 0)
            assert_png_layout(&e.job.qr_png, (const uint8_t *)want[i], strlen(want[i]));
        char path[512];
        snprintf(path, sizeof path, "%s/qr%03d.png", dir, i);
        cr_assert_eq(pmt_write_file(path, e.job.qr_png.data, e.job.qr_png.len), 0);
        cmd_len += (size_t)snprintf(cmd + cmd_len, cmd_cap - cmd_len, " %s", path);
    }
    env_close(&e);
    int status = -1;
    char *out = pmt_sh_out(&status, "%s 2>/dev/null", cmd);
    cr_assert_not_null(out);
    cr_assert_eq(status, 0);
    /* One line per file, in argument order. */
    char *line = out;
    for (int i = 0; i < N; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "zbarimg decoded only %d of %d symbols", i, N);
        *nl = '\0';
        cr_assert_str_eq(line, want[i], "symbol %d", i);
        line = nl + 1;
    }
    cr_assert_eq(*line, '\0', "more symbols than files");
    free(out);
    free(cmd);
    pmt_rmrf(dir);
    free(dir);
}

Test(qr_png, capacity_is_a_reject)
{
    char *fits = repeat('x', 2331); /* version 40-M, 8-bit mode */
    char *too_long = repeat('x', 2332);
    pm_buf png = PM_BUF_INIT;
    pm_error err;
    pm_error_clear(&err);
    cr_assert_eq(pm_qr_png_render((const uint8_t *)fits, 2331, &png, &err), 0, "%s", err.message);
    cr_assert_eq(pm_qr_png_render((const uint8_t *)too_long, 2332, &png, &err), -1);
    cr_assert_eq(err.code, PM_ERR_REJECT);
    cr_assert_str_eq(err.reason, "barcode.too_long");
    cr_assert_str_eq(err.field, "barcode.message");
    cr_assert_eq(png.len, 0);
    cr_assert_eq(pm_qr_png_render((const uint8_t *)"", 0, &png, &err), -1);
    cr_assert_str_eq(err.reason, "barcode.empty");
    pm_buf_free(&png);
    free(fits);
    free(too_long);
}

/* ---- pass.json dictionaries -------------------------------------------------- */

static void assert_barcodes_json(env *e, const char *want)
{
    char *got = json_dumps(e->job.barcodes, JSON_COMPACT);
    cr_assert_not_null(got);
    cr_assert_str_eq(got, want);
    free(got);
}

Test(barcodes_json, exact_for_each_format)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    cr_assert_eq(run(&e, "TKT-1", "QRCODE", "ASDE96325", "ASDE 96325", "iso-8859-1"), 0);
    assert_barcodes_json(
        &e, "{\"barcodes\":[{\"format\":\"PKBarcodeFormatQR\",\"message\":\"ASDE96325\","
            "\"messageEncoding\":\"iso-8859-1\",\"altText\":\"ASDE 96325\"}],"
            "\"barcode\":{\"format\":\"PKBarcodeFormatQR\",\"message\":\"ASDE96325\","
            "\"messageEncoding\":\"iso-8859-1\",\"altText\":\"ASDE 96325\"}}");

    cr_assert_eq(run(&e, "TKT-1", "AZTEC", "A\xc3\xa9Z", NULL, "utf-8"), 0);
    assert_barcodes_json(
        &e, "{\"barcodes\":[{\"format\":\"PKBarcodeFormatAztec\",\"message\":\"A\xc3\xa9Z\","
            "\"messageEncoding\":\"utf-8\"}],"
            "\"barcode\":{\"format\":\"PKBarcodeFormatAztec\",\"message\":\"A\xc3\xa9Z\","
            "\"messageEncoding\":\"utf-8\"}}");

    cr_assert_eq(run(&e, "TKT-1", "PDF417", "1231312", "Seat 12", "UTF-8"), 0);
    assert_barcodes_json(
        &e, "{\"barcodes\":[{\"format\":\"PKBarcodeFormatPDF417\",\"message\":\"1231312\","
            "\"messageEncoding\":\"utf-8\",\"altText\":\"Seat 12\"}],"
            "\"barcode\":{\"format\":\"PKBarcodeFormatPDF417\",\"message\":\"1231312\","
            "\"messageEncoding\":\"utf-8\",\"altText\":\"Seat 12\"}}");

    /* CODE128: no legacy "barcode" key. */
    cr_assert_eq(run(&e, "TKT-1", "CODE128", "ASDH678", "ASDH678", "iso-8859-1"), 0);
    assert_barcodes_json(
        &e, "{\"barcodes\":[{\"format\":\"PKBarcodeFormatCode128\",\"message\":\"ASDH678\","
            "\"messageEncoding\":\"iso-8859-1\",\"altText\":\"ASDH678\"}]}");
    cr_assert_null(json_object_get(e.job.barcodes, "barcode"));

    cr_assert_eq(run(&e, "TKT-1", "CODE128", "ASDH678", NULL, "iso-8859-1"), 0);
    assert_barcodes_json(
        &e, "{\"barcodes\":[{\"format\":\"PKBarcodeFormatCode128\",\"message\":\"ASDH678\","
            "\"messageEncoding\":\"iso-8859-1\"}]}");
    env_close(&e);
}

Test(barcodes_json, legacy_dict_is_independent_copy)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    cr_assert_eq(run(&e, "TKT-1", "QRCODE", "X1", NULL, "utf-8"), 0);
    json_t *list_dict = json_array_get(json_object_get(e.job.barcodes, "barcodes"), 0);
    json_t *legacy = json_object_get(e.job.barcodes, "barcode");
    cr_assert(json_equal(list_dict, legacy));
    cr_assert_neq(list_dict, legacy, "manifest may edit one without touching the other");
    env_close(&e);
}

/* ---- rejects ---------------------------------------------------------------- */

static void assert_reject(env *e, const char *format, const char *message, const char *encoding,
                          const char *reason, const char *field)
{
    cr_assert_eq(run(e, "TKT-1", format, message, NULL, encoding), -1, "%s %s accepted", format,
                 encoding);
    cr_assert_eq(e->job.err.code, PM_ERR_REJECT, "%s", e->job.err.message);
    cr_assert_str_eq(e->job.err.reason, reason, "%s", e->job.err.message);
    cr_assert_str_eq(e->job.err.field, field);
    cr_assert_neq(e->job.err.message[0], '\0');
}

static void assert_accept(env *e, const char *format, const char *message, const char *encoding)
{
    cr_assert_eq(run(e, "TKT-1", format, message, NULL, encoding), 0, "%s: %s", format,
                 e->job.err.message);
    cr_assert_str_eq(final_message(e), message);
}

Test(rejects, code128_charset_and_length)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    char *max = repeat('7', 80), *over = repeat('7', 81);
    assert_accept(&e, "CODE128", max, "iso-8859-1");
    assert_accept(&e, "CODE128", " !~AZaz09", "utf-8");
    assert_reject(&e, "CODE128", over, "iso-8859-1", "barcode.too_long", "barcode.message");
    assert_reject(&e, "CODE128", "Caf\xc3\xa9", "iso-8859-1", "barcode.charset",
                  "barcode.message");
    assert_reject(&e, "CODE128", "tab\there", "utf-8", "barcode.charset", "barcode.message");
    assert_reject(&e, "CODE128", "del\x7f", "utf-8", "barcode.charset", "barcode.message");
    free(max);
    free(over);
    env_close(&e);
}

Test(rejects, pdf417_and_aztec_limits_in_encoded_bytes)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    char *p1800 = repeat('P', 1800), *p1801 = repeat('P', 1801);
    assert_accept(&e, "PDF417", p1800, "utf-8");
    assert_reject(&e, "PDF417", p1801, "utf-8", "barcode.too_long", "barcode.message");

    /* 1000 x U+00E9: 1000 bytes in ISO-8859-1, 2000 in UTF-8. */
    char *e_acute = malloc(2001);
    for (int i = 0; i < 1000; i++)
        memcpy(e_acute + 2 * i, "\xc3\xa9", 2);
    e_acute[2000] = '\0';
    assert_accept(&e, "PDF417", e_acute, "iso-8859-1");
    assert_reject(&e, "PDF417", e_acute, "utf-8", "barcode.too_long", "barcode.message");

    char *a3001 = repeat('A', 3001), *q2332 = repeat('A', 2332), *q2331 = repeat('A', 2331);
    assert_reject(&e, "AZTEC", a3001, "utf-8", "barcode.too_long", "barcode.message");
    cr_assert_not_null(strstr(e.job.err.message, "3000"), "%s", e.job.err.message);
    /* The always-rendered QR PNG bounds every format. */
    assert_accept(&e, "AZTEC", q2331, "utf-8");
    assert_reject(&e, "AZTEC", q2332, "utf-8", "barcode.too_long", "barcode.message");
    assert_reject(&e, "QRCODE", q2332, "iso-8859-1", "barcode.too_long", "barcode.message");
    free(p1800);
    free(p1801);
    free(e_acute);
    free(a3001);
    free(q2332);
    free(q2331);
    env_close(&e);
}

Test(rejects, latin1_representable)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    assert_accept(&e, "QRCODE", "\xc3\xbf\xc2\xa0 \xc3\x80", "iso-8859-1"); /* U+00FF U+00A0 U+00C0 */
    assert_reject(&e, "QRCODE", "5 \xe2\x82\xac", "iso-8859-1", "barcode.charset",
                  "barcode.message");
    cr_assert_not_null(strstr(e.job.err.message, "U+20AC"), "%s", e.job.err.message);
    assert_reject(&e, "AZTEC", "ticket \xf0\x9f\x8e\xab", "iso-8859-1", "barcode.charset",
                  "barcode.message");
    assert_accept(&e, "AZTEC", "ticket \xf0\x9f\x8e\xab", "utf-8");
    env_close(&e);
}

Test(rejects, format_encoding_and_empty)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    assert_reject(&e, "EAN13", "123", "utf-8", "barcode.format", "barcode.format");
    assert_reject(&e, "QRCODE", "123", "utf-16", "barcode.encoding", "barcode.encoding");
    assert_reject(&e, "QRCODE", "", "utf-8", "barcode.empty", "barcode.message");
    /* "Autogenerate" is not the keyword: it is a plain message. */
    assert_accept(&e, "QRCODE", "Autogenerate", "utf-8");
    env_close(&e);
}

Test(rejects, invalid_utf8_in_a_non_validated_string)
{
    /* jansson validates json_string(); a record built without checks (as an
     * Avro decoder may do) can still hold bad UTF-8: the stage must reject. */
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-1", "QRCODE", "placeholder", NULL, "utf-8");
    json_t *bc = json_object_get(e.job.record, "barcode");
    json_object_set_new(bc, "message", json_stringn_nocheck("ok\xc3(", 4));
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), -1);
    cr_assert_str_eq(e.job.err.reason, "barcode.charset");
    cr_assert_str_eq(e.job.err.field, "barcode.message");
    env_close(&e);
}

Test(stage, record_missing_barcode_is_internal_error)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-1", "QRCODE", "x", NULL, "utf-8");
    json_object_del(e.job.record, "barcode");
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), -1);
    cr_assert_eq(e.job.err.code, PM_ERR_INTERNAL);
    env_close(&e);
}

/* ---- autogenerate with a template's type and length ------------------------ */

#include <math.h>

#include <openssl/evp.h>

/* The documented derivation, written out again: HMAC blocks over serial || 0 || be32(i),
 * a byte b kept only below 256 - 256 % n. */
static void expected_typed(const uint8_t *key, size_t key_len, const char *serial,
                           const char *alphabet, unsigned length, char *out)
{
    size_t n = strlen(alphabet), done = 0, sl = strlen(serial);
    uint8_t msg[128];
    cr_assert(sl + 5 <= sizeof msg);
    memcpy(msg, serial, sl);
    for (uint32_t block = 0; done < length; block++) {
        msg[sl] = 0;
        msg[sl + 1] = (uint8_t)(block >> 24);
        msg[sl + 2] = (uint8_t)(block >> 16);
        msg[sl + 3] = (uint8_t)(block >> 8);
        msg[sl + 4] = (uint8_t)block;
        uint8_t mac[64];
        size_t mac_len = 0;
        cr_assert_not_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, msg,
                                     sl + 5, mac, sizeof mac, &mac_len));
        for (size_t i = 0; i < mac_len && done < length; i++)
            if (mac[i] < 256 - 256 % n)
                out[done++] = alphabet[mac[i] % n];
    }
    out[length] = '\0';
}

static const struct {
    pm_autogen_type type;
    const char *alphabet;
} typed[] = {
    {PM_AUTOGEN_NUMERIC, "0123456789"},
    {PM_AUTOGEN_ALPHABET, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"},
    {PM_AUTOGEN_ALPHANUMERIC, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"},
};

Test(autogenerate_typed, alphabet_and_length_of_each_type)
{
    const unsigned lengths[] = {PM_AUTOGEN_LEN_MIN, 31, 57, PM_AUTOGEN_LEN_MAX};
    for (size_t t = 0; t < sizeof typed / sizeof *typed; t++) {
        cr_assert_str_eq(pm_barcode_alphabet(typed[t].type), typed[t].alphabet);
        for (size_t l = 0; l < sizeof lengths / sizeof *lengths; l++) {
            char got[PM_AUTOGEN_LEN_MAX + 1], want[PM_AUTOGEN_LEN_MAX + 1];
            pm_error err;
            cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, "TKT-0001",
                                                       typed[t].type, lengths[l], got, &err),
                         0, "%s", err.message);
            cr_assert_eq(strlen(got), lengths[l], "type %d: %s", (int)typed[t].type, got);
            for (const char *p = got; *p; p++)
                cr_assert_not_null(strchr(typed[t].alphabet, *p), "'%c' in %s", *p, got);
            expected_typed(key_a, sizeof key_a - 1, "TKT-0001", typed[t].alphabet, lengths[l],
                           want);
            cr_assert_str_eq(got, want);
        }
    }
    cr_assert_null(pm_barcode_alphabet(PM_AUTOGEN_DEFAULT));
    char out[PM_AUTOGEN_LEN_MAX + 2];
    pm_error err;
    cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, "T", PM_AUTOGEN_NUMERIC,
                                               PM_AUTOGEN_LEN_MAX + 1, out, &err), -1);
    cr_assert_eq(pm_barcode_autogenerate_typed(key_a, 0, "T", PM_AUTOGEN_NUMERIC, 12, out, &err),
                 -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
}

Test(autogenerate_typed, deterministic_and_distinct_per_serial_and_key)
{
    for (size_t t = 0; t < sizeof typed / sizeof *typed; t++) {
        char a1[41], a2[41], b1[41], other[41];
        pm_error err;
        cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, "TKT-0001",
                                                   typed[t].type, 40, a1, &err), 0);
        cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, "TKT-0001",
                                                   typed[t].type, 40, a2, &err), 0);
        cr_assert_eq(pm_barcode_autogenerate_typed(key_b, sizeof key_b - 1, "TKT-0001",
                                                   typed[t].type, 40, b1, &err), 0);
        cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, "TKT-0002",
                                                   typed[t].type, 40, other, &err), 0);
        cr_assert_str_eq(a1, a2, "same serial and key, same value");
        cr_assert_str_neq(a1, b1, "another secret, another value");
        cr_assert_str_neq(a1, other, "another serial, another value");
    }
}

/*
 * Deterministic inputs, so this never flakes; it fails for a modulo-biased
 * mapping (b % n without rejection: 400,000 digits give chi-square ~150
 * against a bound of 34.5 for Numeric).
 */
Test(autogenerate_typed, characters_are_uniform)
{
    for (size_t t = 0; t < sizeof typed / sizeof *typed; t++) {
        size_t n = strlen(typed[t].alphabet);
        unsigned long counts[64] = {0}, total = 0;
        for (int s = 0; s < 4000; s++) {
            char serial[32], v[PM_AUTOGEN_LEN_MAX + 1];
            pm_error err;
            snprintf(serial, sizeof serial, "U-%06d", s);
            cr_assert_eq(pm_barcode_autogenerate_typed(key_a, sizeof key_a - 1, serial,
                                                       typed[t].type, 100, v, &err), 0);
            for (const char *p = v; *p; p++, total++)
                counts[strchr(typed[t].alphabet, *p) - typed[t].alphabet]++;
        }
        double expected = (double)total / (double)n, chi2 = 0;
        for (size_t i = 0; i < n; i++)
            chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
        double df = (double)(n - 1), bound = df + 6 * sqrt(2 * df);
        cr_assert_lt(chi2, bound, "type %d: chi-square %.1f over %zu symbols (bound %.1f)",
                     (int)typed[t].type, chi2, n, bound);
    }
}

Test(autogenerate_typed, stage_uses_the_template_setting)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    pm_template tmpl = {.id = "typed"};
    tmpl.autogen.type = PM_AUTOGEN_NUMERIC;
    tmpl.autogen.length = 16;
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-0001", "CODE128", "autogenerate", NULL, "iso-8859-1");
    e.job.tmpl = &tmpl;
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0, "%s",
                 e.job.err.message);
    char want[17];
    expected_typed(key_a, sizeof key_a - 1, "TKT-0001", "0123456789", 16, want);
    cr_assert_str_eq(final_message(&e), want);
    json_t *d = json_array_get(json_object_get(e.job.barcodes, "barcodes"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(d, "message")), want);
    /* a template without the setting keeps the 24-character default */
    tmpl.autogen.type = PM_AUTOGEN_DEFAULT;
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-0001", "QRCODE", "autogenerate", NULL, "iso-8859-1");
    e.job.tmpl = &tmpl;
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0);
    assert_crockford24(final_message(&e));
    /* a literal message is never replaced */
    tmpl.autogen.type = PM_AUTOGEN_ALPHABET;
    pm_job_reset(&e.job);
    e.job.record = make_record("TKT-0001", "QRCODE", "GATE-A-123", NULL, "iso-8859-1");
    e.job.tmpl = &tmpl;
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0);
    cr_assert_str_eq(final_message(&e), "GATE-A-123");
    env_close(&e);
}

/* ---- inactive passes (docs/lifecycle.md) ---- */

/* Voided, redeemed, expired: no barcode and no QR image, unless the
 * template keeps them; active passes always have both. */
Test(inactive, no_barcode_unless_the_template_keeps_it)
{
    env e;
    env_open(&e, key_a, sizeof key_a - 1);
    pm_template t = {0};
    static const char *const statuses[] = {"voided", "redeemed", "expired"};
    for (size_t i = 0; i < 3; i++) {
        pm_job_reset(&e.job);
        e.job.record = make_record("S-1", "QRCODE", "gate-code", NULL, "iso-8859-1");
        e.job.serial = "S-1";
        e.job.tmpl = &t;
        e.job.status = statuses[i];
        t.keep_inactive_barcode = false;
        cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0, "%s", e.job.err.message);
        cr_assert_eq(e.job.qr_png.len, 0, "%s: a QR image", statuses[i]);
        cr_assert(json_is_object(e.job.barcodes) && json_object_size(e.job.barcodes) == 0,
                  "%s: barcodes in pass.json", statuses[i]);
        t.keep_inactive_barcode = true;
        cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0, "%s", e.job.err.message);
        cr_assert_gt(e.job.qr_png.len, 0, "%s kept: no QR image", statuses[i]);
        cr_assert_not_null(json_object_get(e.job.barcodes, "barcodes"));
    }
    pm_job_reset(&e.job);
    e.job.record = make_record("S-2", "QRCODE", "gate-code", NULL, "iso-8859-1");
    e.job.serial = "S-2";
    e.job.tmpl = &t;
    e.job.status = "active";
    t.keep_inactive_barcode = false;
    cr_assert_eq(pm_stage_barcode.process(e.state, e.scratch, &e.job), 0, "%s", e.job.err.message);
    cr_assert_gt(e.job.qr_png.len, 0);
    cr_assert_str_eq(final_message(&e), "gate-code");
    env_close(&e);
}

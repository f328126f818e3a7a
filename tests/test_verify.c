/*
 * Tests of pipeline/wallet/verify.c and the `passmill verify` / `passmill identity`
 * commands.
 *
 * The passes here are made WITHOUT passmill's stages: pass.json is written
 * by the test, manifest.json by sha1sum in the shell, the signature by
 * `openssl smime`/`openssl cms`, the archive by `zip`.  Only the development
 * identity comes from pm_identity_create_dev (its certificates are checked
 * against the openssl CLI by test_sign).  Each broken pass asserts the exact
 * rule id that fails, and that nothing else does.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wallet/identity.h"
#include "test_util.h"
#include "wallet/verify.h"

/*
 * The dev identity is made once, in the runner, before the tests start.
 * Tests run in fresh processes (Criterion re-executes the binary), so the
 * folder travels in the environment.
 */
#define SHARED_ENV "PM_TEST_VERIFY_SHARED_DIR"
static char *shared_dir;

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    shared_dir = pmt_tmpdir("verify");
    if (!shared_dir)
        return;
    char id[1024];
    snprintf(id, sizeof id, "%s/id", shared_dir);
    pm_error e;
    if (pm_identity_create_dev(id, "pass.dev.passmill.stadium", "PMDEVTEAM1", &e) != 0) {
        fprintf(stderr, "test_verify: cannot create the shared identity: %s\n", e.message);
        return;
    }
    setenv(SHARED_ENV, shared_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    pmt_rmrf(shared_dir);
    free(shared_dir);
}

static char *work;    /* per-test folder */
static char ca[1100]; /* the dev root */

static void setup(void)
{
    shared_dir = getenv(SHARED_ENV);
    cr_assert_not_null(shared_dir, "the shared identity could not be created");
    work = pmt_tmpdir("verifyt");
    cr_assert_not_null(work);
    snprintf(ca, sizeof ca, "%s/id/ca.pem", shared_dir);
    /* A real 2x2 RGBA PNG made with python3's zlib. */
    cr_assert_eq(pmt_sh("cd '%s' && python3 -c '\n"
                        "import struct, zlib\n"
                        "def chunk(t, d): return struct.pack(\">I\", len(d)) + t + d + struct.pack(\">I\", zlib.crc32(t + d))\n"
                        "row = b\"\\x00\" + b\"\\xff\\x00\\x00\\xff\" * 2\n"
                        "png = b\"\\x89PNG\\r\\n\\x1a\\n\" + chunk(b\"IHDR\", struct.pack(\">IIBBBBB\", 2, 2, 8, 6, 0, 0, 0))"
                        " + chunk(b\"IDAT\", zlib.compress(row * 2)) + chunk(b\"IEND\", b\"\")\n"
                        "open(\"icon.png\", \"wb\").write(png)'",
                        work), 0);
}

static void teardown(void)
{
    pmt_rmrf(work);
    free(work);
}

TestSuite(verify, .init = setup, .fini = teardown);
TestSuite(cli, .init = setup, .fini = teardown);

static const char good_pass[] =
    "{\"formatVersion\":1,\"passTypeIdentifier\":\"pass.dev.passmill.stadium\","
    "\"teamIdentifier\":\"PMDEVTEAM1\",\"serialNumber\":\"T-0001\",\"organizationName\":\"passmill\","
    "\"description\":\"Test ticket\",\"backgroundColor\":\"rgb(20, 30, 40)\","
    "\"foregroundColor\":\"rgb(255,255,255)\",\"relevantDate\":\"2027-06-12T18:00:00Z\","
    "\"expirationDate\":\"2027-06-13T02:00+02:00\","
    "\"webServiceURL\":\"https://example.com/passes\",\"authenticationToken\":\"0123456789abcdef\","
    "\"barcodes\":[{\"format\":\"PKBarcodeFormatQR\",\"message\":\"T-0001\",\"messageEncoding\":\"iso-8859-1\"},"
    "{\"format\":\"PKBarcodeFormatCode128\",\"message\":\"T-0001\",\"messageEncoding\":\"iso-8859-1\"}],"
    "\"eventTicket\":{\"primaryFields\":[{\"key\":\"event\",\"label\":\"EVENT\",\"value\":\"Summer\"}],"
    "\"backFields\":[{\"key\":\"terms\",\"value\":\"No refunds\"}]}}";

/* The shell recipe for one pass; every field defaults to the good pass. */
typedef struct recipe {
    const char *pass_json;   /* NULL: good_pass */
    int no_icon;
    const char *before_manifest; /* shell in the pass folder before sha1sum */
    const char *before_sign;     /* ... after manifest.json, before signing */
    int no_signature;
    const char *signer;      /* path prefix of <signer>.pem/.key; NULL: dev signer */
    const char *certfile;    /* intermediates to embed; NULL: dev wwdr.pem; "": none */
    const char *sign_extra;  /* more `openssl smime -sign` options */
    const char *after_sign;  /* shell in the pass folder after signing */
    const char *zip_opts;    /* e.g. "-0" to store uncompressed */
} recipe;

/* A copy of good_pass with one substring replaced (static buffer). */
static const char *good_with(const char *from, const char *to)
{
    static char out[sizeof good_pass + 256];
    const char *at = strstr(good_pass, from);
    cr_assert_not_null(at, "%s not in good_pass", from);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - good_pass), good_pass, to, at + strlen(from));
    return out;
}

/* Build <work>/pass.pkpass from r with sha1sum, openssl and zip; returns its path. */
static const char *build(const recipe *r)
{
    static char out[1100];
    char path[1100];
    snprintf(path, sizeof path, "%s/pass.json", work);
    const char *pj = r->pass_json ? r->pass_json : good_pass;
    cr_assert_eq(pmt_write_file(path, pj, strlen(pj)), 0);
    char signer[1100];
    if (r->signer)
        snprintf(signer, sizeof signer, "%s", r->signer);
    else
        snprintf(signer, sizeof signer, "%s/id/signer", shared_dir);
    char certfile[1200] = "";
    if (!r->certfile)
        snprintf(certfile, sizeof certfile, "-certfile '%s/id/wwdr.pem'", shared_dir);
    else if (r->certfile[0])
        snprintf(certfile, sizeof certfile, "-certfile '%s'", r->certfile);
    char sign[4096] = "";
    if (!r->no_signature)
        snprintf(sign, sizeof sign,
                 "openssl smime -sign -binary -signer '%s.pem' -inkey '%s.key' %s %s "
                 "-outform DER -in manifest.json -out signature",
                 signer, signer, certfile, r->sign_extra ? r->sign_extra : "");
    cr_assert_eq(pmt_sh("set -e; cd '%s'; rm -rf p pass.pkpass; mkdir p; cp pass.json p/; %s\n"
                        "cd p\n"
                        "%s\n"
                        "{ printf '{'; sep=''; for f in *; do [ -f \"$f\" ] || continue\n"
                        "    printf '%%s\"%%s\":\"%%s\"' \"$sep\" \"$f\" \"$(sha1sum \"$f\" | cut -d' ' -f1)\"\n"
                        "    sep=','; done\n"
                        "  printf '}'; } > ../manifest.tmp\n"
                        "mv ../manifest.tmp manifest.json\n"
                        "%s\n%s\n%s\n"
                        "zip -q -X %s ../pass.pkpass *",
                        work, r->no_icon ? "" : "cp icon.png p/",
                        r->before_manifest ? r->before_manifest : "",
                        r->before_sign ? r->before_sign : "", sign,
                        r->after_sign ? r->after_sign : "", r->zip_opts ? r->zip_opts : ""),
                 0, "building the pass failed");
    snprintf(out, sizeof out, "%s/pass.pkpass", work);
    return out;
}

static void dump(const pm_verify_report *r)
{
    for (int i = 0; i < r->nfailures; i++)
        fprintf(stderr, "  failure %s: %s\n", r->failures[i].rule, r->failures[i].message);
}

/* Verify (with_ca: against the dev root) and expect exactly one failure: rule, message has needle. */
static void expect_only_ca(const recipe *rc, int with_ca, const char *rule, const char *needle)
{
    const char *path = build(rc);
    static pm_verify_report r;
    int st = pm_verify_file(path, with_ca ? ca : NULL, &r);
    if (r.failed != 1)
        dump(&r);
    cr_assert_eq(st, 1, "expected %s to fail (%s)", rule, r.error.message);
    cr_assert_eq(r.failed, 1, "expected only %s to fail, %d failed", rule, r.failed);
    cr_assert_str_eq(r.failures[0].rule, rule, "%s", r.failures[0].message);
    if (needle)
        cr_assert(strstr(r.failures[0].message, needle) != NULL, "message: %s", r.failures[0].message);
}

static void expect_only(const recipe *rc, const char *rule, const char *needle)
{
    expect_only_ca(rc, 1, rule, needle);
}

/* ------------------------------------------------------------------ */

Test(verify, good_pass_ok_with_ca_and_chain_skipped_without)
{
    recipe rc = {0};
    const char *path = build(&rc);
    static pm_verify_report r;
    int st = pm_verify_file(path, ca, &r);
    dump(&r);
    cr_assert_eq(st, 0, "%s", r.error.message);
    cr_assert_eq(r.failed, 0);
    cr_assert_eq(r.nskipped, 0);
    int with_ca = r.passed;
    cr_assert_gt(with_ca, 25);

    /* No CA: still 0, but the chain is recorded as not checked, not as passed. */
    cr_assert_eq(pm_verify_file(path, NULL, &r), 0);
    cr_assert_eq(r.failed, 0);
    cr_assert_eq(r.nskipped, 1);
    cr_assert_str_eq(r.skipped[0].rule, "signature.chain");
    cr_assert(strstr(r.skipped[0].message, "not checked") != NULL);
    cr_assert_eq(r.passed, with_ca - 1);

    /* The same bytes from memory. */
    size_t len;
    char *data = pmt_read_file(path, &len);
    cr_assert_eq(pm_verify_pkpass((const uint8_t *)data, len, ca, &r), 0);
    cr_assert_eq(r.passed, with_ca);
    free(data);
}

Test(verify, openssl_cms_signature_and_localized_folder_ok)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl cms -sign -binary -nosmimecap -md sha256 -signer '%s/id/signer.pem' "
             "-inkey '%s/id/signer.key' -certfile '%s/id/wwdr.pem' -outform DER -in manifest.json "
             "-out signature",
             shared_dir, shared_dir, shared_dir);
    /* A localisation folder: its files are listed by path (the shell loop lists the folder
       itself, so the manifest is rewritten with python3 here). */
    recipe rc = {
        .no_signature = 1,
        .before_manifest = "mkdir en.lproj && printf '\"k\" = \"v\";' > en.lproj/pass.strings",
        .before_sign = "python3 -c 'import hashlib,json,os\n"
                       "fs=[os.path.relpath(os.path.join(r,f)) for r,_,n in os.walk(\".\") for f in n]\n"
                       "fs=[f for f in fs if f!=\"manifest.json\"]\n"
                       "json.dump({f:hashlib.sha1(open(f,\"rb\").read()).hexdigest() for f in fs},open(\"manifest.json\",\"w\"))'",
        .after_sign = cmd,
        .zip_opts = "-r",
    };
    static pm_verify_report r;
    int st = pm_verify_file(build(&rc), ca, &r);
    dump(&r);
    cr_assert_eq(st, 0);
    cr_assert_eq(r.failed, 0);
}

Test(verify, tampered_pass_json_names_the_file)
{
    recipe rc = {.after_sign = "sed -i 's/T-0001/T-9999/' pass.json"};
    expect_only(&rc, "manifest.hash", "pass.json: manifest.json says SHA-1 ");
}

Test(verify, missing_signature)
{
    recipe rc = {.no_signature = 1};
    expect_only(&rc, "file.signature", "signature is missing");
}

Test(verify, missing_icon)
{
    recipe rc = {.no_icon = 1};
    expect_only(&rc, "file.icon", "icon.png is missing");
}

Test(verify, missing_pass_json)
{
    recipe rc = {.after_sign = "rm pass.json"};
    /* pass.json was listed, so the manifest notices too: two failures, both exact. */
    const char *path = build(&rc);
    static pm_verify_report r;
    cr_assert_eq(pm_verify_file(path, ca, &r), 1);
    cr_assert_eq(r.failed, 2);
    cr_assert_str_eq(r.failures[0].rule, "file.pass_json");
    cr_assert_str_eq(r.failures[1].rule, "manifest.missing");
    cr_assert_str_eq(r.failures[1].message, "manifest.json lists pass.json, which is not in the archive");
}

Test(verify, unlisted_and_missing_files)
{
    recipe unlisted = {.after_sign = "printf extra > strip.png"};
    expect_only(&unlisted, "manifest.unlisted", "strip.png is in the archive but not in manifest.json");
    recipe missing = {.before_manifest = "cp icon.png logo.png", .after_sign = "rm logo.png"};
    expect_only(&missing, "manifest.missing", "manifest.json lists logo.png");
}

Test(verify, manifest_not_an_object)
{
    recipe rc = {.before_sign = "printf '[]' > manifest.json"};
    expect_only(&rc, "manifest.parse", "expected a JSON object");
}

Test(verify, signature_from_another_ca)
{
    /* Same subject, but issued under another root: only the chain fails. */
    cr_assert_eq(pmt_sh("set -e; cd '%s'; "
                        "openssl req -x509 -newkey rsa:2048 -nodes -keyout oca.key -out oca.pem -days 30 "
                        "  -subj '/CN=Other Root' 2>/dev/null; "
                        "openssl req -newkey rsa:2048 -nodes -keyout osigner.key -out osigner.csr "
                        "  -subj '/UID=pass.dev.passmill.stadium/CN=Pass Type ID: pass.dev.passmill.stadium"
                        "/OU=PMDEVTEAM1/O=x/C=US' 2>/dev/null; "
                        "openssl x509 -req -in osigner.csr -CA oca.pem -CAkey oca.key -CAcreateserial -days 30 "
                        "  -out osigner.pem 2>/dev/null",
                        work), 0);
    char signer[1100], chain[1100];
    snprintf(signer, sizeof signer, "%s/osigner", work);
    snprintf(chain, sizeof chain, "%s/oca.pem", work);
    recipe rc = {.signer = signer, .certfile = chain};
    expect_only(&rc, "signature.chain", "does not chain to the given CA");
}

Test(verify, pass_type_id_differs_from_certificate)
{
    recipe rc = {.pass_json = good_with("pass.dev.passmill.stadium", "pass.dev.passmill.other")};
    expect_only(&rc, "signature.signer_type_id",
                "passTypeIdentifier is pass.dev.passmill.other but the signer certificate is for "
                "UID=pass.dev.passmill.stadium");
}

Test(verify, team_id_differs_from_certificate)
{
    recipe rc = {.pass_json = good_with("PMDEVTEAM1", "PMDEVTEAM2")};
    expect_only(&rc, "signature.signer_team_id", "certificate's team is OU=PMDEVTEAM1");
}

Test(verify, not_a_zip_or_damaged_zip)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/garbage.pkpass", work);
    cr_assert_eq(pmt_write_file(path, "this is not a zip archive at all", 32), 0);
    static pm_verify_report r;
    cr_assert_eq(pm_verify_file(path, ca, &r), 1);
    cr_assert_eq(r.failed, 1);
    cr_assert_str_eq(r.failures[0].rule, "zip.readable");
    cr_assert_eq(pm_verify_pkpass((const uint8_t *)"", 0, ca, &r), 1);
    cr_assert_eq(r.failed, 1);
    cr_assert_str_eq(r.failures[0].rule, "zip.readable");

    /* Stored (uncompressed) entries, then one byte of pass.json flipped: a CRC error. */
    recipe rc = {.zip_opts = "-0"};
    size_t len;
    char *data = pmt_read_file(build(&rc), &len);
    cr_assert_not_null(data);
    char *hit = memmem(data, len, "Test ticket", 11);
    cr_assert_not_null(hit);
    hit[0] = 'B';
    cr_assert_eq(pm_verify_pkpass((const uint8_t *)data, len, ca, &r), 1);
    cr_assert_eq(r.failed, 1);
    cr_assert_str_eq(r.failures[0].rule, "zip.readable");
    cr_assert(strstr(r.failures[0].message, "pass.json: cannot be extracted") != NULL, "%s",
              r.failures[0].message);
    free(data);

    /* An unreadable file is no rule failure but an I/O error. */
    cr_assert_eq(pm_verify_file("/nonexistent/x.pkpass", ca, &r), -1);
    cr_assert_eq(r.error.code, PM_ERR_IO);
    /* An unusable CA file: verification cannot run. */
    cr_assert_eq(pm_verify_file(path, "/nonexistent/ca.pem", &r), -1);
    cr_assert_eq(r.error.code, PM_ERR_CONFIG);
}

Test(verify, format_version_2)
{
    recipe rc = {.pass_json = good_with("\"formatVersion\":1", "\"formatVersion\":2")};
    expect_only(&rc, "pass.formatVersion", "formatVersion must be 1, found 2");
}

Test(verify, bad_colour)
{
    recipe rc = {.pass_json = good_with("rgb(20, 30, 40)", "rgb(20, 30, 400)")};
    expect_only(&rc, "pass.colors",
                "backgroundColor must be rgb(r, g, b) with each value 0-255, found rgb(20, 30, 400)");
    recipe hex = {.pass_json = good_with("rgb(255,255,255)", "#ffffff")};
    expect_only(&hex, "pass.colors", "foregroundColor");
}

Test(verify, bad_barcode_format)
{
    recipe rc = {.pass_json = good_with("PKBarcodeFormatCode128", "PKBarcodeFormatCode39")};
    expect_only(&rc, "pass.barcodes", "barcodes[1].format must be");
    recipe enc = {.pass_json = good_with(",\"messageEncoding\":\"iso-8859-1\"}]", "}]")};
    expect_only(&enc, "pass.barcodes", "barcodes[1].messageEncoding");
}

Test(verify, pass_json_rules)
{
    recipe parse = {.pass_json = "{\"formatVersion\": 1,"};
    expect_only(&parse, "pass.parse", "pass.json: expected a JSON object, found invalid JSON");
    recipe serial = {.pass_json = good_with("\"serialNumber\":\"T-0001\"", "\"serialNumber\":\"\"")};
    expect_only(&serial, "pass.serialNumber", "serialNumber must be a non-empty string, found an empty string");
    recipe org = {.pass_json = good_with("\"organizationName\":\"passmill\",", "")};
    expect_only(&org, "pass.organizationName", "found nothing");
    recipe desc = {.pass_json = good_with("\"description\":\"Test ticket\"", "\"description\":7")};
    expect_only(&desc, "pass.description", NULL);
    recipe two = {.pass_json = good_with("\"eventTicket\":", "\"coupon\":{},\"eventTicket\":")};
    expect_only(&two, "pass.style", "found coupon, eventTicket");
    recipe date = {.pass_json = good_with("2027-06-12T18:00:00Z", "2027-13-12T18:00:00Z")};
    expect_only(&date, "pass.dates", "relevantDate must be a W3C date");
    recipe dup = {.pass_json = good_with("\"key\":\"terms\"", "\"key\":\"event\"")};
    expect_only(&dup, "pass.fields", "field key \"event\" (backFields[0]) is used twice");
    recipe token = {.pass_json = good_with("0123456789abcdef", "short")};
    expect_only(&token, "pass.webService", "at least 16 characters");
}

Test(verify, signature_rules)
{
    recipe parse = {.after_sign = "printf 'not DER' > signature"};
    expect_only(&parse, "signature.parse", "expected DER PKCS#7/CMS SignedData");
    recipe digest = {.after_sign = "printf ' ' >> manifest.json"};
    expect_only(&digest, "signature.digest", "manifest.json differs from what was signed");
    /* The RSA value is the last thing in the DER: flip its last byte. */
    recipe value = {.after_sign = "python3 -c 'b=bytearray(open(\"signature\",\"rb\").read()); b[-1]^=1;"
                                  "open(\"signature\",\"wb\").write(b)'"};
    expect_only(&value, "signature.digest", "the signature value is invalid");
    recipe attached = {.sign_extra = "-nodetach"};
    expect_only(&attached, "signature.detached", "embedded");
    /* Without the intermediate, the chain cannot be built either: check without a CA. */
    recipe nowwdr = {.certfile = ""};
    expect_only_ca(&nowwdr, 0, "signature.wwdr", "Apple WWDR");
}

Test(verify, signing_time_before_certificate_validity)
{
    /* A signer certificate valid only from 2040: `openssl smime` signs at the wall clock. */
    cr_assert_eq(pmt_sh("set -e; cd '%s'; touch index.txt; echo 01 > serial; "
                        "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\nserial=serial\\n"
                        "default_md=sha256\\npolicy=p\\nunique_subject=no\\n"
                        "[p]\\nUID=supplied\\nCN=supplied\\nOU=supplied\\nO=optional\\nC=optional\\n' > ca.cnf; "
                        "openssl req -new -newkey rsa:2048 -nodes -keyout fut.key -out fut.csr "
                        "  -subj '/UID=pass.dev.passmill.stadium/CN=Pass Type ID: pass.dev.passmill.stadium"
                        "/OU=PMDEVTEAM1/O=x/C=US' 2>/dev/null; "
                        "openssl ca -batch -config ca.cnf -preserveDN -notext -cert '%s/id/wwdr.pem' "
                        "  -keyfile '%s/id/wwdr.key' -in fut.csr -out fut.pem "
                        "  -startdate 20400101000000Z -enddate 20410101000000Z 2>/dev/null",
                        work, shared_dir, shared_dir), 0);
    char signer[1100];
    snprintf(signer, sizeof signer, "%s/fut", work);
    recipe rc = {.signer = signer};
    expect_only_ca(&rc, 0, "signature.signing_time", "before the signer certificate is valid (from 2040-01-01T00:00:00Z)");
    /* With the CA the chain fails as well: the certificate is not valid yet. */
    static pm_verify_report r;
    cr_assert_eq(pm_verify_file(build(&rc), ca, &r), 1);
    cr_assert_eq(r.failed, 2);
    cr_assert_str_eq(r.failures[0].rule, "signature.chain");
    cr_assert(strstr(r.failures[0].message, "not yet valid") != NULL, "%s", r.failures[0].message);
    cr_assert_str_eq(r.failures[1].rule, "signature.signing_time");
}

/* ------------------------------------------------------------------ */
/* The commands (skipped until the passmill binary is built)           */
/* ------------------------------------------------------------------ */

static void need_binary(void)
{
    if (access(pmt_passmill(), X_OK) != 0) {
        teardown(); /* a skipped test may not reach .fini */
        work = NULL;
        cr_skip_test("no passmill binary at %s", pmt_passmill());
    }
}

Test(cli, verify_exit_codes_and_lines)
{
    need_binary();
    const char *bin = pmt_passmill();
    recipe rc = {0};
    build(&rc);
    cr_assert_eq(pmt_sh("cd '%s' && mv pass.pkpass good.pkpass", work), 0);
    recipe bad = {.after_sign = "sed -i 's/T-0001/T-9999/' pass.json"};
    build(&bad);
    cr_assert_eq(pmt_sh("cd '%s' && mv pass.pkpass bad.pkpass", work), 0);

    int st;
    char *out = pmt_sh_out(&st, "cd '%s' && '%s' verify --ca '%s' good.pkpass", work, bin, ca);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(out, "OK good.pkpass\n");
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify good.pkpass", work, bin);
    cr_assert_eq(st, 0);
    const char *note = "OK good.pkpass\n  note: signature.chain: not checked";
    cr_assert(strncmp(out, note, strlen(note)) == 0, "%s", out);
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify --quiet --ca '%s' good.pkpass", work, bin, ca);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(out, "");
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify --ca '%s' good.pkpass bad.pkpass", work, bin, ca);
    cr_assert_eq(st, 1);
    const char *two = "OK good.pkpass\nFAIL bad.pkpass: manifest.hash: pass.json: manifest.json says SHA-1 ";
    cr_assert(strncmp(out, two, strlen(two)) == 0, "%s", out);
    cr_assert(strchr(out + strlen(two), '\n') == out + strlen(out) - 1, "one FAIL line: %s", out);
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify 2>/dev/null", work, bin);
    cr_assert_eq(st, 2);
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify --bogus good.pkpass 2>/dev/null", work, bin);
    cr_assert_eq(st, 2);
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify --ca /nonexistent.pem good.pkpass 2>/dev/null", work, bin);
    cr_assert_eq(st, 2);
    free(out);
    out = pmt_sh_out(&st, "cd '%s' && '%s' verify --ca '%s' missing.pkpass good.pkpass", work, bin, ca);
    cr_assert_eq(st, 3);
    cr_assert_str_eq(out, "FAIL missing.pkpass: cannot read 'missing.pkpass': No such file or directory\n"
                          "OK good.pkpass\n");
    free(out);
    out = pmt_sh_out(&st, "'%s' verify --help", bin);
    cr_assert_eq(st, 0);
    const char *usage = "usage: passmill verify [--ca FILE] [--quiet] FILE.pkpass...\n";
    cr_assert(strncmp(out, usage, strlen(usage)) == 0, "%s", out);
    free(out);
}

Test(cli, identity_create)
{
    need_binary();
    const char *bin = pmt_passmill();
    int st;
    char *out = pmt_sh_out(&st, "'%s' identity create '%s/dev' 2>&1", bin, work);
    cr_assert_eq(st, 0, "%s", out);
    char expect[1400];
    snprintf(expect, sizeof expect, "created a development identity in %s/dev:\n", work);
    cr_assert(strncmp(out, expect, strlen(expect)) == 0, "%s", out);
    cr_assert(strstr(out, "UID=pass.dev.passmill.stadium/CN=Pass Type ID: pass.dev.passmill.stadium/OU=PMDEVTEAM1")
              != NULL, "%s", out);
    cr_assert(strstr(out, "PRIVATE") == NULL);
    free(out);
    char key[1400];
    snprintf(key, sizeof key, "%s/dev/signer.key", work);
    struct stat sb;
    cr_assert_eq(stat(key, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    /* Never overwrite; usage error. */
    out = pmt_sh_out(&st, "'%s' identity create '%s/dev' 2>&1", bin, work);
    cr_assert_eq(st, 2);
    cr_assert(strstr(out, "refusing to overwrite") != NULL, "%s", out);
    free(out);
    out = pmt_sh_out(&st, "'%s' identity create --pass-type-id pass.x.y --team-id T1 '%s/dev2' 2>&1", bin, work);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "UID=pass.x.y/CN=Pass Type ID: pass.x.y/OU=T1") != NULL, "%s", out);
    free(out);
    out = pmt_sh_out(&st, "'%s' identity 2>/dev/null", bin);
    cr_assert_eq(st, 2);
    free(out);
    out = pmt_sh_out(&st, "'%s' identity --help", bin);
    cr_assert_eq(st, 0);
    const char *usage = "usage: passmill identity create DIR [--pass-type-id ID] [--team-id ID]\n";
    cr_assert(strncmp(out, usage, strlen(usage)) == 0, "%s", out);
    free(out);
}

/*
 * Tests of the signing identity (pipeline/wallet/identity.c) and the sign stage
 * (stages/sign.c).  Signatures are checked by the openssl CLI, which knows
 * nothing of passmill.
 *
 * One development identity is created before all tests (RSA key generation
 * is the slow part) and shared read-only; tests that need their own files
 * make a fresh temporary folder.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "engine/context.h"
#include "wallet/identity.h"
#include "stages/sign.h"
#include "stages/stage.h"
#include "test_util.h"

#define PASS_TYPE "pass.dev.passmill.stadium"
#define TEAM "PMDEVTEAM1"
#define T_2027 1798761600 /* 2027-01-01T00:00:00Z */

/*
 * Created in the runner before the tests start.  Tests run in fresh
 * processes (Criterion's BoxFort re-executes the binary), so the path
 * travels in the environment, not in a global.
 */
#define SHARED_ENV "PM_TEST_SIGN_SHARED_DIR"
static char *shared_dir;

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    shared_dir = pmt_tmpdir("sign");
    char id[1024];
    snprintf(id, sizeof id, "%s/id", shared_dir);
    pm_error e;
    if (pm_identity_create_dev(id, PASS_TYPE, TEAM, &e) != 0) {
        fprintf(stderr, "test_sign: cannot create the shared identity: %s\n", e.message);
        pmt_rmrf(shared_dir);
        free(shared_dir);
        shared_dir = NULL;
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

static char *work; /* per-test temporary folder */

static void setup(void)
{
    shared_dir = getenv(SHARED_ENV);
    cr_assert_not_null(shared_dir, "the shared identity could not be created");
    work = pmt_tmpdir("signt");
    cr_assert_not_null(work);
}

static void teardown(void)
{
    pmt_rmrf(work);
    free(work);
}

TestSuite(identity, .init = setup, .fini = teardown);
TestSuite(sign, .init = setup, .fini = teardown);

/* "<shared>/id/<file>" in a static buffer per call (copy when needed twice). */
static const char *idf(const char *file)
{
    static char paths[8][1024];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 1024, "%s/id/%s", shared_dir, file);
    return p;
}

static pm_config *pem_config(void)
{
    pm_config *cfg = pm_config_create();
    cr_assert_not_null(cfg);
    pm_error e;
    cr_assert_eq(pm_config_set(cfg, "sign.cert", idf("signer.pem"), &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.key", idf("signer.key"), &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.chain", idf("wwdr.pem"), &e), 0);
    return cfg;
}

static pm_identity *load_shared(void)
{
    pm_config *cfg = pem_config();
    pm_identity *id = NULL;
    pm_error e;
    cr_assert_eq(pm_identity_load(cfg, &id, &e), 0, "%s", e.message);
    pm_config_destroy(cfg);
    return id;
}

static const char manifest[] =
    "{\"icon.png\":\"2b5f0c4d0c1f8f5e3f2b3ad0b7a4b8b3cfc3c8a1\","
    "\"pass.json\":\"9d2c1e0e8f7d2b9a4c1d3e5f7a9b0c2d4e6f8a1b\"}";

static void write_buf(const char *dir, const char *name, const pm_buf *b)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_eq(pmt_write_file(path, b->data, b->len), 0);
}

/* openssl cms -verify of work/<sig> over work/<content> against ca; exit status. */
static int openssl_verify(const char *sig, const char *content, const char *ca)
{
    return pmt_sh("cd '%s' && openssl cms -verify -binary -inform DER -in '%s' -content '%s' "
                  "-CAfile '%s' -purpose any -out /dev/null 2>/dev/null",
                  work, sig, content, ca);
}

/* --------------------------------------------------------------------- */

Test(identity, dev_identity_files_modes_and_no_overwrite)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/new", work);
    pm_error e;
    cr_assert_eq(pm_identity_create_dev(dir, "pass.com.example.t", "ABCDE12345", &e), 0, "%s", e.message);
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "folder mode %o", st.st_mode & 0777);
    const char *keys[] = {"ca.key", "wwdr.key", "signer.key"};
    const char *certs[] = {"ca.pem", "wwdr.pem", "signer.pem"};
    for (int i = 0; i < 3; i++) {
        char p[1100];
        snprintf(p, sizeof p, "%s/%s", dir, keys[i]);
        cr_assert_eq(stat(p, &st), 0, "%s", p);
        cr_assert_eq(st.st_mode & 0777, 0600, "%s mode %o", keys[i], st.st_mode & 0777);
        snprintf(p, sizeof p, "%s/%s", dir, certs[i]);
        cr_assert_eq(stat(p, &st), 0, "%s", p);
    }
    size_t before_len;
    char p[1100];
    snprintf(p, sizeof p, "%s/signer.key", dir);
    char *before = pmt_read_file(p, &before_len);
    cr_assert_not_null(before);

    /* A second identity in the same folder is refused; nothing is touched. */
    cr_assert_eq(pm_identity_create_dev(dir, "pass.com.example.t", "ABCDE12345", &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    cr_assert(strstr(e.message, "refusing to overwrite") != NULL, "%s", e.message);
    cr_assert(strstr(e.message, "/ca.pem") != NULL, "%s", e.message);
    size_t after_len;
    char *after = pmt_read_file(p, &after_len);
    cr_assert_eq(before_len, after_len);
    cr_assert_eq(memcmp(before, after, before_len), 0);
    free(before);
    free(after);

    /* Bad ids are refused before anything is written. */
    snprintf(p, sizeof p, "%s/other", work);
    cr_assert_eq(pm_identity_create_dev(p, "", "T", &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    struct stat st2;
    cr_assert_neq(stat(p, &st2), 0);
}

Test(identity, certificates_shaped_like_apple)
{
    int status;
    char *subj = pmt_sh_out(&status, "openssl x509 -noout -subject -in '%s'", idf("signer.pem"));
    cr_assert_eq(status, 0);
    cr_assert_str_eq(subj, "subject=UID = " PASS_TYPE ", CN = Pass Type ID: " PASS_TYPE
                           ", OU = " TEAM ", O = passmill Development, C = US\n");
    free(subj);
    char *issuer = pmt_sh_out(&status, "openssl x509 -noout -issuer -in '%s'", idf("signer.pem"));
    cr_assert_str_eq(issuer, "issuer=CN = passmill Development Worldwide Developer Relations, "
                             "OU = G4, O = passmill Development, C = US\n");
    free(issuer);
    char *root = pmt_sh_out(&status, "openssl x509 -noout -subject -in '%s'", idf("ca.pem"));
    cr_assert_str_eq(root, "subject=CN = passmill Development Root CA, O = passmill Development, C = US\n");
    free(root);

    /* The chain verifies with the openssl CLI. */
    cr_assert_eq(pmt_sh("openssl verify -CAfile '%s' -untrusted '%s' '%s' >/dev/null", idf("ca.pem"),
                        idf("wwdr.pem"), idf("signer.pem")), 0);
    /* Extensions as specified. */
    char *ext = pmt_sh_out(&status, "openssl x509 -noout -ext basicConstraints,keyUsage -in '%s' | tr -d ' \\n'",
                           idf("wwdr.pem"));
    cr_assert_str_eq(ext, "X509v3BasicConstraints:criticalCA:TRUE,pathlen:0"
                          "X509v3KeyUsage:criticalCertificateSign,CRLSign");
    free(ext);
    ext = pmt_sh_out(&status, "openssl x509 -noout -ext basicConstraints,keyUsage -in '%s' | tr -d ' \\n'",
                     idf("ca.pem"));
    cr_assert_str_eq(ext, "X509v3BasicConstraints:criticalCA:TRUE"
                          "X509v3KeyUsage:criticalCertificateSign,CRLSign");
    free(ext);
    ext = pmt_sh_out(&status,
                     "openssl x509 -noout -ext keyUsage,extendedKeyUsage -in '%s' | tr -d ' \\n'",
                     idf("signer.pem"));
    cr_assert_str_eq(ext, "X509v3KeyUsage:criticalDigitalSignature"
                          "X509v3ExtendedKeyUsage:TLSWebClientAuthentication,E-mailProtection");
    free(ext);
    /* RSA 2048, validity about two years starting a day back. */
    char *bits = pmt_sh_out(&status, "openssl x509 -noout -text -in '%s' | grep -c 'Public-Key: (2048 bit)'",
                            idf("signer.pem"));
    cr_assert_str_eq(bits, "1\n");
    free(bits);
    cr_assert_eq(pmt_sh("openssl x509 -noout -checkend %d -in '%s' >/dev/null", 729 * 86400, idf("signer.pem")), 0);
    cr_assert_neq(pmt_sh("openssl x509 -noout -checkend %d -in '%s' >/dev/null", 731 * 86400, idf("signer.pem")), 0);
    /* Random serials: no two certificates share one. */
    char *serials = pmt_sh_out(&status, "for c in ca wwdr signer; do openssl x509 -noout -serial -in '%s/id/'$c.pem; done"
                                        " | sort -u | wc -l", shared_dir);
    cr_assert_str_eq(serials, "3\n");
    free(serials);
}

Test(identity, load_pem_extracts_ids)
{
    pm_identity *id = load_shared();
    cr_assert_str_eq(id->pass_type_id, PASS_TYPE);
    cr_assert_str_eq(id->team_id, TEAM);
    cr_assert_eq(sk_X509_num(id->chain), 1);
    pm_identity_destroy(id);
}

Test(identity, load_p12_with_passphrase_from_env)
{
    setenv("PM_TEST_P12_PASS", "correct horse battery", 1);
    cr_assert_eq(pmt_sh("openssl pkcs12 -export -in '%s' -inkey '%s' -certfile '%s' "
                        "-passout env:PM_TEST_P12_PASS -out '%s/id.p12'",
                        idf("signer.pem"), idf("signer.key"), idf("wwdr.pem"), work), 0);
    char p12[1100];
    snprintf(p12, sizeof p12, "%s/id.p12", work);
    pm_config *cfg = pm_config_create();
    pm_error e;
    cr_assert_eq(pm_config_set(cfg, "sign.p12", p12, &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.passphrase_env", "PM_TEST_P12_PASS", &e), 0);
    pm_identity *id = NULL;
    cr_assert_eq(pm_identity_load(cfg, &id, &e), 0, "%s", e.message);
    cr_assert_str_eq(id->pass_type_id, PASS_TYPE);
    cr_assert_str_eq(id->team_id, TEAM);
    cr_assert_eq(sk_X509_num(id->chain), 1);
    pm_identity_destroy(id);

    /* Wrong passphrase: a crypto error naming the file, without any passphrase. */
    setenv("PM_TEST_P12_PASS", "wrong guess 42", 1);
    id = NULL;
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_null(id);
    cr_assert_eq(e.code, PM_ERR_CRYPTO);
    cr_assert(strstr(e.message, "wrong passphrase") != NULL, "%s", e.message);
    cr_assert(strstr(e.message, p12) != NULL, "%s", e.message);
    cr_assert(strstr(e.message, "wrong guess") == NULL, "%s", e.message);
    cr_assert(strstr(e.message, "correct horse") == NULL, "%s", e.message);

    /* The variable named in the config is not set: a config error naming it. */
    unsetenv("PM_TEST_P12_PASS");
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    cr_assert(strstr(e.message, "PM_TEST_P12_PASS") != NULL, "%s", e.message);

    /* No passphrase configured at all. */
    cr_assert_eq(pm_config_set(cfg, "sign.passphrase_env", "", &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CRYPTO);
    cr_assert(strstr(e.message, "protected by a passphrase") != NULL, "%s", e.message);
    pm_config_destroy(cfg);
}

/* macOS Keychain exports use RC2-40/3DES: only OpenSSL's legacy provider has RC2. */
Test(identity, load_legacy_rc2_p12_from_keychain_style_export)
{
    cr_assert_eq(pmt_sh("PM_PW=keychain-pass openssl pkcs12 -export -legacy -in '%s' -inkey '%s' "
                        "-certfile '%s' -passout env:PM_PW -out '%s/legacy.p12'",
                        idf("signer.pem"), idf("signer.key"), idf("wwdr.pem"), work), 0);
    int status;
    char *info = pmt_sh_out(&status, "openssl pkcs12 -in '%s/legacy.p12' -info -noout -passin pass:keychain-pass "
                                     "-legacy 2>&1 | grep -c RC2", work);
    cr_assert_str_eq(info, "1\n", "the file really uses RC2");
    free(info);
    char p12[1100], passf[1100];
    snprintf(p12, sizeof p12, "%s/legacy.p12", work);
    snprintf(passf, sizeof passf, "%s/pw", work);
    cr_assert_eq(pmt_write_file(passf, "keychain-pass\n", 14), 0);
    pm_config *cfg = pm_config_create();
    pm_error e;
    cr_assert_eq(pm_config_set(cfg, "sign.p12", p12, &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.passphrase_file", passf, &e), 0);
    pm_identity *id = NULL;
    cr_assert_eq(pm_identity_load(cfg, &id, &e), 0, "%s", e.message);
    cr_assert_str_eq(id->pass_type_id, PASS_TYPE);
    cr_assert_eq(sk_X509_num(id->chain), 1);
    /* The key works in the default library context once the legacy one is gone. */
    pm_buf sig = PM_BUF_INIT;
    cr_assert_eq(pm_sign_manifest(id, (const uint8_t *)"{}", 2, T_2027, &sig, &e), 0, "%s", e.message);
    pm_buf_free(&sig);
    pm_identity_destroy(id);
    pm_config_destroy(cfg);
}

Test(identity, encrypted_pem_key_with_passphrase_file)
{
    cr_assert_eq(pmt_sh("cd '%s' && printf 's3cret-pem\\nsecond line ignored\\n' > pass.txt && "
                        "openssl pkey -in '%s' -aes256 -passout pass:s3cret-pem -out enc.key",
                        work, idf("signer.key")), 0);
    char key[1100], passf[1100];
    snprintf(key, sizeof key, "%s/enc.key", work);
    snprintf(passf, sizeof passf, "%s/pass.txt", work);
    pm_config *cfg = pem_config();
    pm_error e;
    cr_assert_eq(pm_config_set(cfg, "sign.key", key, &e), 0);
    pm_identity *id = NULL;
    /* Without a passphrase the error says what to configure. */
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CRYPTO);
    cr_assert(strstr(e.message, "sign.passphrase_file") != NULL, "%s", e.message);
    cr_assert_eq(pm_config_set(cfg, "sign.passphrase_file", passf, &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), 0, "%s", e.message);
    cr_assert_str_eq(id->pass_type_id, PASS_TYPE);
    pm_identity_destroy(id);
    /* Wrong passphrase from the file. */
    cr_assert_eq(pmt_sh("printf 'nope-nope\\n' > '%s'", passf), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CRYPTO);
    cr_assert(strstr(e.message, key) != NULL, "%s", e.message);
    cr_assert(strstr(e.message, "nope-nope") == NULL, "%s", e.message);
    cr_assert(strstr(e.message, "s3cret") == NULL, "%s", e.message);
    pm_config_destroy(cfg);
}

Test(identity, mismatched_key_missing_files_and_missing_uid)
{
    pm_config *cfg = pem_config();
    pm_error e;
    pm_identity *id = NULL;
    cr_assert_eq(pm_config_set(cfg, "sign.key", idf("wwdr.key"), &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CRYPTO);
    cr_assert(strstr(e.message, "does not belong to the certificate") != NULL, "%s", e.message);

    cr_assert_eq(pm_config_set(cfg, "sign.key", "/nonexistent/k.pem", &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    cr_assert_str_eq(e.message, "sign.key '/nonexistent/k.pem': No such file or directory");

    /* The root CA as "signer": it has no UID, so it is no pass type certificate. */
    cr_assert_eq(pm_config_set(cfg, "sign.cert", idf("ca.pem"), &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.key", idf("ca.key"), &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    cr_assert(strstr(e.message, "found no UID") != NULL, "%s", e.message);

    /* No chain: Wallet needs the WWDR certificate. */
    cr_assert_eq(pm_config_set(cfg, "sign.cert", idf("signer.pem"), &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.key", idf("signer.key"), &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.chain", "", &e), 0);
    cr_assert_eq(pm_identity_load(cfg, &id, &e), -1);
    cr_assert_eq(e.code, PM_ERR_CONFIG);
    cr_assert(strstr(e.message, "WWDR") != NULL, "%s", e.message);
    pm_config_destroy(cfg);
}

/* --------------------------------------------------------------------- */

Test(sign, fast_path_matches_cms_api_and_openssl_verifies)
{
    pm_identity *id = load_shared();
    pm_signer *s = NULL;
    pm_signer_scratch *sc = NULL;
    pm_error e;
    cr_assert_eq(pm_signer_create(id, &s, &e), 0, "%s", e.message);
    cr_assert(pm_signer_fast(s), "an RSA identity uses the template fast path");
    cr_assert_eq(pm_signer_scratch_create(s, &sc, &e), 0, "%s", e.message);

    pm_buf fast = PM_BUF_INIT, ref = PM_BUF_INIT, again = PM_BUF_INIT;
    const uint8_t *m = (const uint8_t *)manifest;
    cr_assert_eq(pm_signer_sign(sc, m, strlen(manifest), T_2027, &fast, &e), 0, "%s", e.message);
    cr_assert_eq(pm_sign_manifest(id, m, strlen(manifest), T_2027, &ref, &e), 0, "%s", e.message);
    cr_assert_eq(fast.len, ref.len);
    cr_assert_eq(memcmp(fast.data, ref.data, ref.len), 0, "fast path and CMS API differ");
    /* Deterministic: same input and clock, same bytes; a buffer is reused. */
    cr_assert_eq(pm_signer_sign(sc, m, strlen(manifest), T_2027, &again, &e), 0);
    cr_assert_eq(again.len, fast.len);
    cr_assert_eq(memcmp(again.data, fast.data, fast.len), 0);
    cr_assert_eq(pm_signer_sign(sc, m, strlen(manifest), T_2027 + 1, &again, &e), 0);
    cr_assert_neq(memcmp(again.data, fast.data, fast.len), 0);

    char path[1100];
    snprintf(path, sizeof path, "%s/manifest.json", work);
    cr_assert_eq(pmt_write_file(path, manifest, strlen(manifest)), 0);
    write_buf(work, "signature", &fast);
    cr_assert_eq(openssl_verify("signature", "manifest.json", idf("ca.pem")), 0);
    /* The check can fail: other content, or another root. */
    snprintf(path, sizeof path, "%s/other.json", work);
    cr_assert_eq(pmt_write_file(path, manifest, strlen(manifest) - 1), 0);
    cr_assert_neq(openssl_verify("signature", "other.json", idf("ca.pem")), 0);
    cr_assert_neq(openssl_verify("signature", "manifest.json", idf("wwdr.pem")), 0);

    /* Detached, SHA-256, signer + WWDR embedded. */
    int status;
    char *print = pmt_sh_out(&status, "openssl cms -cmsout -print -inform DER -in '%s/signature'", work);
    cr_assert_eq(status, 0);
    cr_assert(strstr(print, "eContent: <ABSENT>") != NULL);
    cr_assert(strstr(print, "algorithm: sha256 (2.16.840.1.101.3.4.2.1)") != NULL);
    cr_assert(strstr(print, "Pass Type ID: " PASS_TYPE) != NULL);
    cr_assert(strstr(print, "passmill Development Worldwide Developer Relations") != NULL);
    free(print);

    pm_buf_free(&fast);
    pm_buf_free(&ref);
    pm_buf_free(&again);
    pm_signer_scratch_destroy(sc);
    pm_signer_destroy(s);
    pm_identity_destroy(id);
}

Test(sign, signing_time_attribute_is_the_given_clock)
{
    pm_identity *id = load_shared();
    pm_buf sig = PM_BUF_INIT;
    pm_error e;
    cr_assert_eq(pm_sign_manifest(id, (const uint8_t *)manifest, strlen(manifest), T_2027 + 3723, &sig, &e), 0);
    write_buf(work, "signature", &sig);
    int status;
    char *line = pmt_sh_out(&status,
                            "openssl cms -cmsout -print -inform DER -in '%s/signature' | "
                            "grep -A2 'object: signingTime' | tail -1 | tr -s ' '",
                            work);
    cr_assert_str_eq(line, " UTCTIME:Jan 1 01:02:03 2027 GMT\n");
    free(line);
    pm_buf_free(&sig);
    pm_identity_destroy(id);
}

Test(sign, stage_signs_job_and_refuses_time_outside_validity)
{
    pm_identity *id = load_shared();
    pm_context ctx = {0};
    ctx.identity = id;
    ctx.fixed_now = -1;
    void *state = NULL, *scratch = NULL;
    pm_error e;
    cr_assert_str_eq(pm_stage_sign.name, "sign");
    cr_assert_eq(pm_stage_sign.create(&ctx, &state, &e), 0, "%s", e.message);
    cr_assert_eq(pm_stage_sign.worker_create(state, &scratch, &e), 0, "%s", e.message);
    pm_job job;
    pm_job_init(&job);
    job.now = T_2027;
    cr_assert_eq(pm_buf_append_str(&job.manifest_json, manifest), 0);
    cr_assert_eq(pm_stage_sign.process(state, scratch, &job), 0, "%s", job.err.message);
    pm_buf ref = PM_BUF_INIT;
    cr_assert_eq(pm_sign_manifest(id, job.manifest_json.data, job.manifest_json.len, T_2027, &ref, &e), 0);
    cr_assert_eq(job.signature.len, ref.len);
    cr_assert_eq(memcmp(job.signature.data, ref.data, ref.len), 0);

    job.now = 4102444800; /* 2100: after the certificate expires */
    cr_assert_eq(pm_stage_sign.process(state, scratch, &job), -1);
    cr_assert_eq(job.err.code, PM_ERR_CRYPTO);
    cr_assert(strstr(job.err.message, "2100-01-01T00:00:00Z is outside the signer certificate's validity") != NULL,
              "%s", job.err.message);

    pm_buf_free(&ref);
    pm_job_free(&job);
    pm_stage_sign.worker_destroy(scratch);
    pm_stage_sign.destroy(state);
    pm_identity_destroy(id);
}

/* A long-lived pass-type certificate made by the openssl CLI. */
static pm_identity *cli_identity(const char *keyspec)
{
    cr_assert_eq(pmt_sh("cd '%s' && openssl req -x509 %s -nodes -keyout cli.key -out cli.pem -days 40000 "
                        "-subj '/UID=pass.cli.test/CN=Pass Type ID: pass.cli.test/OU=CLITEAM/O=t/C=US' "
                        "-addext keyUsage=critical,digitalSignature 2>/dev/null",
                        work, keyspec), 0);
    pm_config *cfg = pm_config_create();
    char p[1100];
    pm_error e;
    snprintf(p, sizeof p, "%s/cli.pem", work);
    cr_assert_eq(pm_config_set(cfg, "sign.cert", p, &e), 0);
    snprintf(p, sizeof p, "%s/cli.key", work);
    cr_assert_eq(pm_config_set(cfg, "sign.key", p, &e), 0);
    cr_assert_eq(pm_config_set(cfg, "sign.chain", idf("wwdr.pem"), &e), 0);
    pm_identity *id = NULL;
    cr_assert_eq(pm_identity_load(cfg, &id, &e), 0, "%s", e.message);
    pm_config_destroy(cfg);
    cr_assert_str_eq(id->pass_type_id, "pass.cli.test");
    cr_assert_str_eq(id->team_id, "CLITEAM");
    return id;
}

static void sign_and_check(pm_identity *id, int64_t when, bool expect_fast, const char *time_line)
{
    pm_signer *s = NULL;
    pm_signer_scratch *sc = NULL;
    pm_error e;
    cr_assert_eq(pm_signer_create(id, &s, &e), 0, "%s", e.message);
    cr_assert_eq(pm_signer_fast(s), expect_fast);
    cr_assert_eq(pm_signer_scratch_create(s, &sc, &e), 0, "%s", e.message);
    pm_buf sig = PM_BUF_INIT;
    cr_assert_eq(pm_signer_sign(sc, (const uint8_t *)manifest, strlen(manifest), when, &sig, &e), 0,
                 "%s", e.message);
    write_buf(work, "signature", &sig);
    char path[1100];
    snprintf(path, sizeof path, "%s/manifest.json", work);
    cr_assert_eq(pmt_write_file(path, manifest, strlen(manifest)), 0);
    cr_assert_eq(openssl_verify("signature", "manifest.json", "cli.pem"), 0);
    int status;
    char *line = pmt_sh_out(&status,
                            "openssl cms -cmsout -print -inform DER -in '%s/signature' | "
                            "grep -A2 'object: signingTime' | tail -1 | tr -s ' '",
                            work);
    cr_assert_str_eq(line, time_line);
    free(line);
    pm_buf_free(&sig);
    pm_signer_scratch_destroy(sc);
    pm_signer_destroy(s);
}

Test(sign, generalized_time_after_2049_uses_cms_api)
{
    pm_identity *id = cli_identity("-newkey rsa:2048");
    /* 2051-01-01T00:00:00Z needs a GeneralizedTime: the fast path steps aside. */
    sign_and_check(id, 2556144000, true, " GENERALIZEDTIME:Jan 1 00:00:00 2051 GMT\n");
    pm_identity_destroy(id);
}

Test(sign, ec_key_signs_through_cms_api)
{
    pm_identity *id = cli_identity("-newkey ec -pkeyopt ec_paramgen_curve:P-256");
    sign_and_check(id, T_2027, false, " UTCTIME:Jan 1 00:00:00 2027 GMT\n");
    pm_identity_destroy(id);
}

/* Workers share the signer and have their own scratch: same bytes as the reference. */
typedef struct worker_arg {
    const pm_signer *signer;
    int index;
    pm_buf out[8];
    int failures;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    pm_signer_scratch *sc = NULL;
    pm_error e;
    if (pm_signer_scratch_create(a->signer, &sc, &e) != 0) {
        a->failures++;
        return NULL;
    }
    char m[128];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 8; i++) {
            snprintf(m, sizeof m, "{\"pass.json\":\"worker %d manifest %d\"}", a->index, i);
            if (pm_signer_sign(sc, (const uint8_t *)m, strlen(m), T_2027 + i, &a->out[i], &e) != 0)
                a->failures++;
        }
    }
    pm_signer_scratch_destroy(sc);
    return NULL;
}

Test(sign, concurrent_workers_match_reference)
{
    pm_identity *id = load_shared();
    pm_signer *s = NULL;
    pm_error e;
    cr_assert_eq(pm_signer_create(id, &s, &e), 0, "%s", e.message);
    static worker_arg args[3];
    pthread_t th[3];
    for (int t = 0; t < 3; t++) {
        args[t] = (worker_arg){.signer = s, .index = t};
        cr_assert_eq(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    pm_buf ref = PM_BUF_INIT;
    char m[128];
    for (int t = 0; t < 3; t++) {
        cr_assert_eq(args[t].failures, 0);
        for (int i = 0; i < 8; i++) {
            snprintf(m, sizeof m, "{\"pass.json\":\"worker %d manifest %d\"}", t, i);
            cr_assert_eq(pm_sign_manifest(id, (const uint8_t *)m, strlen(m), T_2027 + i, &ref, &e), 0);
            cr_assert_eq(args[t].out[i].len, ref.len);
            cr_assert_eq(memcmp(args[t].out[i].data, ref.data, ref.len), 0, "worker %d manifest %d", t, i);
            pm_buf_free(&args[t].out[i]);
        }
    }
    pm_buf_free(&ref);
    pm_signer_destroy(s);
    pm_identity_destroy(id);
}

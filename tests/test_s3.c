/*
 * test_s3.c - the S3 store: SigV4 against AWS's published examples, and the
 * store against a real S3 server (OpenStack Swift + s3api on loopback).
 *
 * When PASSMILL_S3_ENDPOINT is not set, the runner starts its own server with
 * ops/s3-dev start (in a private folder) before the tests and stops it after
 * them.  Run with --jobs 1: two tests stop and restart Swift processes.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/logging.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "stores/sigv4.h"
#include "stores/store.h"
#include "test_util.h"

/* ---- the server -------------------------------------------------------- */

static bool started_server;
static char server_dir[256];

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    const char *ep = getenv("PASSMILL_S3_ENDPOINT");
    if (ep && *ep)
        return;
    snprintf(server_dir, sizeof server_dir, "/tmp/passmill-s3-test-%d", (int)getpid());
    started_server = pmt_dev_server_start("ops/s3-dev", "PASSMILL_S3_DIR", server_dir, "test_s3") == 0;
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (started_server)
        pmt_dev_server_stop("ops/s3-dev", "PASSMILL_S3_DIR", server_dir);
}

static void need_server(void)
{
    const char *ep = getenv("PASSMILL_S3_ENDPOINT");
    cr_assert(ep && *ep, "no S3 server: ops/s3-dev start failed or PASSMILL_S3_ENDPOINT unset");
}

/* A config for the dev server; every test writes below its own prefix. */
static pm_config *s3_config(const char *tag)
{
    pm_config *cfg = pm_config_create();
    cr_assert(cfg);
    pm_error err;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "s3.prefix=t%d-%s/", (int)getpid(), tag);
    const char *ep = getenv("PASSMILL_S3_ENDPOINT"), *bucket = getenv("PASSMILL_S3_BUCKET");
    cr_assert(pm_config_set(cfg, "store.type", "s3", &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.endpoint", ep ? ep : "", &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.bucket", bucket ? bucket : "passmill", &err) == 0);
    cr_assert(pm_config_set_pair(cfg, prefix, &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.max_retries", "2", &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.timeout_ms", "10000", &err) == 0);
    return cfg;
}

static pm_store *open_store(const pm_config *cfg)
{
    pm_store *st = NULL;
    pm_error err;
    pm_error_clear(&err);
    cr_assert(pm_store_s3_open(cfg, &st, &err) == 0, "open: %s", err.message);
    cr_assert_str_eq(st->ops->name, "s3");
    return st;
}

static char *env_dup(const char *name)
{
    const char *v = getenv(name);
    return strdup(v ? v : "");
}

/* ---- stderr capture ---------------------------------------------------- */

typedef struct capture {
    int saved;
    char path[256];
} capture;

static void capture_begin(capture *c)
{
    snprintf(c->path, sizeof c->path, "/tmp/pm-s3-stderr-%d", (int)getpid());
    fflush(stderr);
    c->saved = dup(2);
    FILE *f = fopen(c->path, "w");
    cr_assert(f);
    dup2(fileno(f), 2);
    fclose(f);
}

/* Restores stderr; returns what was written (malloc'd). */
static char *capture_end(capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    size_t len;
    char *text = pmt_read_file(c->path, &len);
    unlink(c->path);
    cr_assert(text);
    return text;
}

/* ---- SigV4: AWS's published examples ----------------------------------- */

static pm_sigv4 *signer(const char *id, const char *secret, const char *token, const char *service)
{
    pm_sigv4_creds creds = {(char *)id, (char *)secret, (char *)token};
    pm_sigv4 *s = NULL;
    pm_error err;
    cr_assert(pm_sigv4_create(&s, &creds, "us-east-1", service, &err) == 0, "%s", err.message);
    return s;
}

/* Sign and return the Authorization value (static buffer). */
static const char *authorization(pm_sigv4 *s, const pm_sigv4_request *r, const char *date)
{
    static char out[1024];
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_buf auth = PM_BUF_INIT;
    pm_error err;
    char sig[65];
    cr_assert(pm_sigv4_sign(s, &sc, r, date, sig, &auth, &err) == 0, "%s", err.message);
    snprintf(out, sizeof out, "%s", pm_buf_cstr(&auth));
    pm_buf_free(&auth);
    pm_sigv4_scratch_free(&sc);
    return out;
}

#define AWS_SUITE_ID "AKIDEXAMPLE"
#define AWS_SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define S3_DOC_ID "AKIAIOSFODNN7EXAMPLE"
#define S3_DOC_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_DOC_HOST "examplebucket.s3.amazonaws.com"

/* SigV4 test suite "get-vanilla": canonical request, string to sign, header. */
Test(sigv4, get_vanilla)
{
    pm_sigv4 *s = signer(AWS_SUITE_ID, AWS_SUITE_SECRET, NULL, "service");
    pm_sigv4_pair h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
    pm_sigv4_request r = {.method = "GET", .path = "/", .headers = h, .n_headers = 2,
                          .payload_hash = PM_SIGV4_EMPTY_SHA256};
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_error err;
    char sig[65];
    cr_assert(pm_sigv4_sign(s, &sc, &r, "20150830T123600Z", sig, NULL, &err) == 0);
    cr_assert_str_eq((const char *)sc.creq.data,
                     "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                     "host;x-amz-date\n" PM_SIGV4_EMPTY_SHA256);
    cr_assert_str_eq((const char *)sc.sts.data,
                     "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
                     "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
    cr_assert_str_eq(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    pm_sigv4_scratch_free(&sc);
    cr_assert_str_eq(authorization(s, &r, "20150830T123600Z"),
                     "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                     "SignedHeaders=host;x-amz-date, "
                     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    pm_sigv4_destroy(s);
}

/* "get-vanilla-query-order-key-case": parameters sorted by name. */
Test(sigv4, get_vanilla_query_order_key_case)
{
    pm_sigv4 *s = signer(AWS_SUITE_ID, AWS_SUITE_SECRET, NULL, "service");
    pm_sigv4_pair q[] = {{"Param2", "value2"}, {"Param1", "value1"}};
    pm_sigv4_pair h[] = {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}};
    pm_sigv4_request r = {.method = "GET", .path = "/", .query = q, .n_query = 2, .headers = h,
                          .n_headers = 2, .payload_hash = PM_SIGV4_EMPTY_SHA256};
    cr_assert(strstr(authorization(s, &r, "20150830T123600Z"),
                     "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
    pm_sigv4_destroy(s);
}

/* S3 docs, header auth: GET Object with a Range header. */
Test(sigv4, s3_get_object)
{
    pm_sigv4 *s = signer(S3_DOC_ID, S3_DOC_SECRET, NULL, "s3");
    pm_sigv4_pair h[] = {{"Host", S3_DOC_HOST}, {"Range", "bytes=0-9"},
                         {"x-amz-content-sha256", PM_SIGV4_EMPTY_SHA256},
                         {"x-amz-date", "20130524T000000Z"}};
    pm_sigv4_request r = {.method = "GET", .path = "/test.txt", .headers = h, .n_headers = 4,
                          .payload_hash = PM_SIGV4_EMPTY_SHA256};
    cr_assert_str_eq(authorization(s, &r, "20130524T000000Z"),
                     "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                     "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                     "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    pm_sigv4_destroy(s);
}

/* S3 docs: PUT Object "test$file.text" -- '$' encoded in the path, body hashed. */
Test(sigv4, s3_put_object)
{
    pm_sigv4 *s = signer(S3_DOC_ID, S3_DOC_SECRET, NULL, "s3");
    const char *body = "Welcome to Amazon S3.";
    char hash[65];
    pm_error err;
    cr_assert(pm_sigv4_sha256_hex(s, body, strlen(body), hash, &err) == 0);
    cr_assert_str_eq(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    pm_sigv4_pair h[] = {{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                         {"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"Host", S3_DOC_HOST},
                         {"x-amz-date", "20130524T000000Z"}, {"x-amz-content-sha256", hash}};
    pm_sigv4_request r = {.method = "PUT", .path = "/test$file.text", .headers = h, .n_headers = 5,
                          .payload_hash = hash};
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    char sig[65];
    cr_assert(pm_sigv4_sign(s, &sc, &r, "20130524T000000Z", sig, NULL, &err) == 0);
    cr_assert(strncmp((const char *)sc.creq.data, "PUT\n/test%24file.text\n\n", 23) == 0);
    cr_assert_str_eq(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    pm_sigv4_scratch_free(&sc);
    pm_sigv4_destroy(s);
}

/* S3 docs: GET Bucket (list objects) with query parameters. */
Test(sigv4, s3_list_objects)
{
    pm_sigv4 *s = signer(S3_DOC_ID, S3_DOC_SECRET, NULL, "s3");
    pm_sigv4_pair q[] = {{"prefix", "J"}, {"max-keys", "2"}};
    pm_sigv4_pair h[] = {{"host", S3_DOC_HOST}, {"x-amz-content-sha256", PM_SIGV4_EMPTY_SHA256},
                         {"x-amz-date", "20130524T000000Z"}};
    pm_sigv4_request r = {.method = "GET", .path = "/", .query = q, .n_query = 2, .headers = h,
                          .n_headers = 3, .payload_hash = PM_SIGV4_EMPTY_SHA256};
    cr_assert(strstr(authorization(s, &r, "20130524T000000Z"),
                     "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
    pm_sigv4_destroy(s);
}

/* S3 docs: presigned GET of examplebucket/test.txt, valid 86400 s. */
Test(sigv4, s3_presigned_url)
{
    pm_sigv4 *s = signer(S3_DOC_ID, S3_DOC_SECRET, NULL, "s3");
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_buf q = PM_BUF_INIT;
    pm_error err;
    char date[17];
    cr_assert(pm_sigv4_amz_date(1369353600, date)); /* 2013-05-24T00:00:00Z */
    cr_assert_str_eq(date, "20130524T000000Z");
    cr_assert(pm_sigv4_presign_query(s, &sc, "GET", "/test.txt", S3_DOC_HOST, date, 86400, &q,
                                     &err) == 0);
    cr_assert_str_eq(pm_buf_cstr(&q),
                     "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
                     "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
                     "&X-Amz-SignedHeaders=host&X-Amz-Signature="
                     "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    pm_buf_free(&q);
    pm_sigv4_scratch_free(&sc);
    pm_sigv4_destroy(s);
}

/* A session token is part of the signed query of a presigned URL. */
Test(sigv4, presign_with_session_token)
{
    pm_sigv4 *s = signer(S3_DOC_ID, S3_DOC_SECRET, "tok/en+=", "s3");
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_buf q = PM_BUF_INIT;
    pm_error err;
    cr_assert(pm_sigv4_presign_query(s, &sc, "GET", "/a b", S3_DOC_HOST, "20130524T000000Z", 60,
                                     &q, &err) == 0);
    cr_assert(strstr(pm_buf_cstr(&q), "&X-Amz-Security-Token=tok%2Fen%2B%3D&X-Amz-SignedHeaders=host"));
    cr_assert(strncmp((const char *)sc.creq.data, "GET\n/a%20b\n", 11) == 0);
    pm_buf_free(&q);
    pm_sigv4_scratch_free(&sc);
    pm_sigv4_destroy(s);
}

Test(sigv4, uri_encode)
{
    struct { const char *in; bool slash; const char *want; } cases[] = {
        {"a b", true, "a%20b"},
        {"a+b=c&d", true, "a%2Bb%3Dc%26d"},
        {"A-Za-z0-9-._~", false, "A-Za-z0-9-._~"},
        {"dir/file", true, "dir/file"},
        {"dir/file", false, "dir%2Ffile"},
        {"\xc3\xbc\xe2\x82\xac", true, "%C3%BC%E2%82%AC"},
        {"100%!*'()$", true, "100%25%21%2A%27%28%29%24"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pm_buf b = PM_BUF_INIT;
        cr_assert(pm_sigv4_uri_encode(&b, cases[i].in, strlen(cases[i].in), cases[i].slash) == 0);
        cr_assert_str_eq(pm_buf_cstr(&b), cases[i].want, "case %zu", i);
        pm_buf_free(&b);
    }
    char d[17];
    cr_assert(pm_sigv4_amz_date(0, d));
    cr_assert_str_eq(d, "19700101T000000Z");
    cr_assert_not(pm_sigv4_amz_date(-1, d));
}

/* Header values are trimmed and inner whitespace collapsed; names lowercased and sorted. */
Test(sigv4, canonical_headers)
{
    pm_sigv4_pair h[] = {{"X-Amz-Date", "20150830T123600Z"}, {"My-Header1", "  a   b  c "},
                         {"Host", "example.amazonaws.com"}};
    pm_sigv4_request r = {.method = "GET", .path = "/", .headers = h, .n_headers = 3,
                          .payload_hash = PM_SIGV4_EMPTY_SHA256};
    pm_sigv4_scratch sc;
    pm_sigv4_scratch_init(&sc);
    pm_error err;
    cr_assert(pm_sigv4_canonical_request(&sc, &r, &err) == 0);
    cr_assert_str_eq((const char *)sc.creq.data,
                     "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:a b c\n"
                     "x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" PM_SIGV4_EMPTY_SHA256);
    pm_sigv4_scratch_free(&sc);
}

/* ---- credentials ------------------------------------------------------- */

#define FILE_SECRET "file-secret-Zq81/xx+yy"

static char *write_credentials(void)
{
    char *dir = pmt_tmpdir("s3creds");
    char path[512];
    snprintf(path, sizeof path, "%s/credentials", dir);
    const char *text = "# comment\n[default]\naws_access_key_id = DEFAULTID\n"
                       "aws_secret_access_key = default-secret\n\n"
                       "[profile ci]\n  aws_access_key_id=CIID  \naws_secret_access_key = " FILE_SECRET
                       "\naws_session_token = ci-token\n[broken]\naws_access_key_id = X\n";
    cr_assert(pmt_write_file(path, text, strlen(text)) == 0);
    return dir;
}

Test(credentials, env_first_then_file)
{
    char *dir = write_credentials();
    char path[512];
    snprintf(path, sizeof path, "%s/credentials", dir);
    pm_sigv4_creds c;
    pm_error err;

    setenv("AWS_ACCESS_KEY_ID", "ENVID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
    unsetenv("AWS_SESSION_TOKEN");
    cr_assert(pm_sigv4_creds_load(&c, path, "ci", &err) == 0);
    cr_assert_str_eq(c.access_key_id, "ENVID");
    cr_assert_str_eq(c.secret_access_key, "env-secret");
    cr_assert_null(c.session_token);
    pm_sigv4_creds_clear(&c);

    unsetenv("AWS_ACCESS_KEY_ID");
    cr_assert(pm_sigv4_creds_load(&c, path, "ci", &err) == 0, "%s", err.message);
    cr_assert_str_eq(c.access_key_id, "CIID");
    cr_assert_str_eq(c.secret_access_key, FILE_SECRET);
    cr_assert_str_eq(c.session_token, "ci-token");
    pm_sigv4_creds_clear(&c);

    cr_assert(pm_sigv4_creds_load(&c, path, "default", &err) == 0);
    cr_assert_str_eq(c.access_key_id, "DEFAULTID");
    cr_assert_null(c.session_token);
    pm_sigv4_creds_clear(&c);
    pmt_rmrf(dir);
    free(dir);
}

Test(credentials, errors_name_the_place_not_the_secret)
{
    char *dir = write_credentials();
    char path[512];
    snprintf(path, sizeof path, "%s/credentials", dir);
    pm_sigv4_creds c;
    pm_error err;
    unsetenv("AWS_ACCESS_KEY_ID");

    cr_assert(pm_sigv4_creds_load(&c, path, "nope", &err) == -1);
    cr_assert_eq(err.code, PM_ERR_CONFIG);
    cr_assert(strstr(err.message, "has no profile [nope]"), "%s", err.message);
    cr_assert(strstr(err.message, path));

    cr_assert(pm_sigv4_creds_load(&c, path, "broken", &err) == -1);
    cr_assert(strstr(err.message, "profile [broken]: needs both"), "%s", err.message);

    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    cr_assert(pm_sigv4_creds_load(&c, missing, "default", &err) == -1);
    cr_assert(strstr(err.message, "cannot read S3 credentials file"), "%s", err.message);

    setenv("AWS_ACCESS_KEY_ID", "ENVID", 1);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    cr_assert(pm_sigv4_creds_load(&c, path, "ci", &err) == -1);
    cr_assert_str_eq(err.message, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");

    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    setenv("HOME", dir, 1); /* no .aws/credentials there */
    cr_assert(pm_sigv4_creds_load(&c, "", "default", &err) == -1);
    cr_assert(strstr(err.message, "no S3 credentials"), "%s", err.message);
    pmt_rmrf(dir);
    free(dir);
}

Test(s3_config, rejects_bad_settings)
{
    struct { const char *key, *value, *expect; } cases[] = {
        {"s3.bucket", "", "s3.bucket: expected a bucket name"},
        {"s3.endpoint", "ftp://x", "s3.endpoint: expected http://host[:port]"},
        {"s3.endpoint", "http://user:pw@host", "s3.endpoint: expected scheme://host[:port] without user"},
        {"s3.endpoint", "http://host/path", "s3.endpoint: expected scheme://host[:port] without user"},
        {"s3.prefix", "../x/", "s3.prefix: '../x/' would make invalid keys"},
        {"s3.presign_expiry", "604801", "s3.presign_expiry: expected 1..604800 seconds"},
        {"s3.max_inflight", "0", "s3.max_inflight: expected 1..1024"},
    };
    setenv("AWS_ACCESS_KEY_ID", "ID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pm_config *cfg = pm_config_create();
        pm_error err;
        cr_assert(pm_config_set(cfg, "s3.bucket", "passmill", &err) == 0);
        cr_assert(pm_config_set(cfg, "s3.endpoint", "http://127.0.0.1:1", &err) == 0);
        cr_assert(pm_config_set(cfg, cases[i].key, cases[i].value, &err) == 0);
        pm_store *st = NULL;
        cr_assert(pm_store_s3_open(cfg, &st, &err) == -1, "case %zu", i);
        cr_assert_null(st);
        cr_assert_eq(err.code, PM_ERR_CONFIG);
        cr_assert(strstr(err.message, cases[i].expect), "case %zu: %s", i, err.message);
        pm_config_destroy(cfg);
    }
}

/* ---- against the server ------------------------------------------------ */

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

static void put_ok(pm_store *st, const char *key, const uint8_t *data, size_t len, const char *ctype)
{
    pm_object o = {.key = key, .data = data, .len = len, .content_type = ctype};
    pm_error err;
    pm_error_clear(&err);
    cr_assert(pm_store_put(st, &o, &err) == 0, "put %s: %s", key, err.message);
}

static void get_equals(pm_store *st, const char *key, const uint8_t *data, size_t len)
{
    pm_buf b = PM_BUF_INIT;
    pm_error err;
    cr_assert(pm_store_get(st, key, &b, &err) == 0, "get %s: %s", key, err.message);
    cr_assert_eq(b.len, len, "get %s: %zu bytes, expected %zu", key, b.len, len);
    cr_assert(len == 0 || memcmp(b.data, data, len) == 0, "get %s: bytes differ", key);
    pm_buf_free(&b);
}

/* Fetch a URL with plain curl; returns the body and fills headers (lowercased). */
static char *curl_fetch(const char *url, size_t *len, char **headers)
{
    char *dir = pmt_tmpdir("s3fetch");
    int rc = pmt_sh("curl -sf -D '%s/h' -o '%s/b' '%s'", dir, dir, url);
    cr_assert_eq(rc, 0, "curl -sf failed (%d) for %s", rc, url);
    char path[512];
    snprintf(path, sizeof path, "%s/b", dir);
    char *body = pmt_read_file(path, len);
    snprintf(path, sizeof path, "%s/h", dir);
    size_t hl;
    *headers = pmt_read_file(path, &hl);
    for (char *p = *headers; p && *p; p++)
        *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    pmt_rmrf(dir);
    free(dir);
    cr_assert(body && *headers);
    return body;
}

Test(s3, round_trip_with_headers_and_presigned_url, .init = need_server)
{
    pm_config *cfg = s3_config("rt");
    pm_error err;
    cr_assert(pm_config_set(cfg, "s3.cache_control", "public, max-age=60", &err) == 0);
    pm_store *st = open_store(cfg);
    static uint8_t pkpass[37000], png[1500];
    fill(pkpass, sizeof pkpass, 1);
    fill(png, sizeof png, 2);
    put_ok(st, "passes/ABC123.pkpass", pkpass, sizeof pkpass, "application/vnd.apple.pkpass");
    put_ok(st, "qr/ABC123.png", png, sizeof png, "image/png");
    get_equals(st, "passes/ABC123.pkpass", pkpass, sizeof pkpass);
    get_equals(st, "qr/ABC123.png", png, sizeof png);

    /* Overwrite: the new bytes win. */
    png[0] ^= 0xff;
    put_ok(st, "qr/ABC123.png", png, sizeof png, "image/png");
    get_equals(st, "qr/ABC123.png", png, sizeof png);

    char *url = pm_store_url(st, "passes/ABC123.pkpass", (int64_t)time(NULL));
    cr_assert(url);
    cr_assert(strncmp(url, getenv("PASSMILL_S3_ENDPOINT"), strlen(getenv("PASSMILL_S3_ENDPOINT"))) == 0);
    cr_assert(strstr(url, "X-Amz-Expires=604800&"), "%s", url);
    cr_assert(strstr(url, "&X-Amz-Signature="));
    cr_assert_null(strstr(url, "testing"), "the secret must not be in the URL");
    size_t len;
    char *headers;
    char *body = curl_fetch(url, &len, &headers);
    cr_assert_eq(len, sizeof pkpass);
    cr_assert(memcmp(body, pkpass, len) == 0);
    cr_assert(strstr(headers, "\ncontent-type: application/vnd.apple.pkpass\r\n"), "%s", headers);
    cr_assert(strstr(headers, "\ncache-control: public, max-age=60\r\n"), "%s", headers);
    char sha[65], want[128];
    {
        pm_sigv4_creds c = {"x", "y", NULL};
        pm_sigv4 *s = NULL;
        cr_assert(pm_sigv4_create(&s, &c, "us-east-1", "s3", &err) == 0);
        cr_assert(pm_sigv4_sha256_hex(s, pkpass, sizeof pkpass, sha, &err) == 0);
        pm_sigv4_destroy(s);
    }
    snprintf(want, sizeof want, "\nx-amz-meta-sha256: %s\r\n", sha);
    cr_assert(strstr(headers, want), "%s", headers);
    free(body);
    free(headers);
    free(url);

    url = pm_store_url(st, "qr/ABC123.png", (int64_t)time(NULL));
    body = curl_fetch(url, &len, &headers);
    cr_assert(strstr(headers, "\ncontent-type: image/png\r\n"), "%s", headers);
    cr_assert(len == sizeof png && memcmp(body, png, len) == 0);
    free(body);
    free(headers);
    free(url);

    /* An expired link is refused. */
    cr_assert(pm_config_set(cfg, "s3.presign_expiry", "1", &err) == 0);
    pm_store *st2 = open_store(cfg);
    url = pm_store_url(st2, "qr/ABC123.png", (int64_t)time(NULL) - 120);
    cr_assert_neq(pmt_sh("curl -sf -o /dev/null '%s'", url), 0);
    free(url);
    pm_store_close(st2);

    /* The pm_object's sha256_hex, when given, is the stored metadata. */
    pm_object o = {.key = "qr/meta.png", .data = png, .len = sizeof png, .content_type = "image/png",
                   .sha256_hex = "00ff"};
    cr_assert(pm_store_put(st, &o, &err) == 0, "%s", err.message);
    url = pm_store_url(st, "qr/meta.png", (int64_t)time(NULL));
    body = curl_fetch(url, &len, &headers);
    cr_assert(strstr(headers, "\nx-amz-meta-sha256: 00ff\r\n"), "%s", headers);
    free(body);
    free(headers);
    free(url);

    /* DELETE (a voided pass's QR): gone, then a GET fails; deleting again is
     * no error; the handle still PUTs and GETs after a DELETE. */
    cr_assert(pm_store_delete(st, "qr/ABC123.png", &err) == 0, "%s", err.message);
    pm_buf gone = PM_BUF_INIT;
    cr_assert_neq(pm_store_get(st, "qr/ABC123.png", &gone, &err), 0, "the object is still there");
    cr_assert(pm_store_delete(st, "qr/ABC123.png", &err) == 0, "%s", err.message);
    get_equals(st, "passes/ABC123.pkpass", pkpass, sizeof pkpass);
    put_ok(st, "qr/ABC123.png", png, sizeof png, "image/png");
    get_equals(st, "qr/ABC123.png", png, sizeof png);
    pm_buf_free(&gone);

    pm_store_close(st);
    pm_config_destroy(cfg);
}

Test(s3, keys_with_spaces_unicode_and_reserved_characters, .init = need_server)
{
    pm_config *cfg = s3_config("keys");
    pm_store *st = open_store(cfg);
    const char *keys[] = {
        "passes/with space.pkpass",
        "passes/\xc3\xbcn\xc3\xaf c\xc3\xb8" "d\xc3\xa9 \xe2\x82\xac.pkpass", /* ünï cødé € */
        "passes/a+b=c&d;e,f@g:h.pkpass",
        "passes/tilde~paren(1)!*'$%.png",
        "passes/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x8e\xab.png", /* 日本/🎫 */
    };
    uint8_t data[700];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        fill(data, sizeof data, (unsigned)i + 10);
        put_ok(st, keys[i], data, sizeof data, "image/png");
        get_equals(st, keys[i], data, sizeof data);
        char *url = pm_store_url(st, keys[i], (int64_t)time(NULL));
        cr_assert(url);
        size_t len;
        char *headers, *body = curl_fetch(url, &len, &headers);
        cr_assert(len == sizeof data && memcmp(body, data, len) == 0, "presigned GET of '%s'", keys[i]);
        free(body);
        free(headers);
        free(url);
    }
    /* Different keys are different objects ('+' is not a space). */
    fill(data, sizeof data, 99);
    put_ok(st, "passes/x+y.png", data, sizeof data, "image/png");
    pm_buf b = PM_BUF_INIT;
    pm_error err;
    cr_assert(pm_store_get(st, "passes/x y.png", &b, &err) == -1);
    cr_assert(strstr(err.message, "HTTP 404"), "%s", err.message);
    pm_buf_free(&b);
    pm_store_close(st);
    pm_config_destroy(cfg);
}

Test(s3, invalid_keys_are_refused, .init = need_server)
{
    pm_config *cfg = s3_config("invalid");
    pm_store *st = open_store(cfg);
    const char *bad[] = {"", "/abs", "a/../b", "a//b", "./a", "a\\b", "a\nb"};
    uint8_t d[4] = {1, 2, 3, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pm_object o = {.key = bad[i], .data = d, .len = 4, .content_type = "image/png"};
        pm_error err;
        cr_assert(pm_store_put(st, &o, &err) == -1, "key %zu accepted", i);
        cr_assert_eq(err.code, PM_ERR_STORE);
        cr_assert(strstr(err.message, "invalid key"), "%s", err.message);
        cr_assert_null(pm_store_url(st, bad[i], (int64_t)time(NULL)));
    }
    pm_store_close(st);
    pm_config_destroy(cfg);
}

Test(s3, wrong_secret_is_an_authentication_error, .init = need_server)
{
    const char *wrong = "Wr0ng-S3cret-7f3a9";
    char *good = env_dup("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_SECRET_ACCESS_KEY", wrong, 1);
    pm_config *cfg = s3_config("auth");
    capture cap;
    capture_begin(&cap);
    pm_store *st = open_store(cfg);
    uint8_t d[100];
    fill(d, sizeof d, 5);
    pm_object o = {.key = "passes/auth.pkpass", .data = d, .len = sizeof d,
                   .content_type = "application/vnd.apple.pkpass"};
    pm_error err, gerr;
    int rc = pm_store_put(st, &o, &err);
    pm_buf b = PM_BUF_INIT;
    int grc = pm_store_get(st, "passes/auth.pkpass", &b, &gerr);
    pm_store_close(st);
    char *stderr_text = capture_end(&cap);

    cr_assert_eq(rc, -1);
    cr_assert_eq(err.code, PM_ERR_STORE);
    cr_log_info("wrong secret: %s", err.message);
    cr_assert(strstr(err.message, "S3 PUT failed: endpoint "), "%s", err.message);
    cr_assert(strstr(err.message, getenv("PASSMILL_S3_ENDPOINT")), "%s", err.message);
    cr_assert(strstr(err.message, "bucket '"), "%s", err.message);
    cr_assert(strstr(err.message, "passes/auth.pkpass'"), "%s", err.message);
    cr_assert(strstr(err.message, "HTTP 403"), "%s", err.message);
    cr_assert(strstr(err.message, "authentication failed for access key id 'test:tester'"), "%s",
              err.message);
    cr_assert(strstr(err.message, "(1 attempt)"), "a 403 is not retried: %s", err.message);
    cr_assert_eq(grc, -1);
    cr_assert(strstr(gerr.message, "HTTP 403"), "%s", gerr.message);
    cr_assert_eq(b.len, 0);
    for (const char *secret = wrong; secret; secret = secret == wrong ? good : NULL) {
        cr_assert_null(strstr(err.message, secret));
        cr_assert_null(strstr(gerr.message, secret));
        cr_assert_null(strstr(stderr_text, secret));
    }
    free(stderr_text);
    free(good);
    pm_buf_free(&b);
    pm_config_destroy(cfg);
}

/* A listener that never answers: every request times out. */
Test(s3, timeouts_are_retried_then_fail)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0);
    socklen_t alen = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &alen);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    setenv("AWS_ACCESS_KEY_ID", "test:tester", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "Sup3r-secret-timeouts", 1);
    pm_config *cfg = pm_config_create();
    pm_error err;
    cr_assert(pm_config_set(cfg, "s3.endpoint", ep, &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.bucket", "passmill", &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.timeout_ms", "300", &err) == 0);
    cr_assert(pm_config_set(cfg, "s3.max_retries", "2", &err) == 0);
    pm_store *st = open_store(cfg);
    uint8_t d[10] = {0};
    pm_object o = {.key = "k.png", .data = d, .len = sizeof d, .content_type = "image/png"};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(pm_store_put(st, &o, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_log_info("timeouts: %.2f s: %s", secs, err.message);
    cr_assert(strstr(err.message, "Timeout was reached"), "%s", err.message);
    cr_assert(strstr(err.message, ep), "%s", err.message);
    cr_assert(strstr(err.message, "key 'k.png'"), "%s", err.message);
    cr_assert(strstr(err.message, "(3 attempts)"), "%s", err.message);
    cr_assert(secs >= 0.85, "three attempts of 300 ms took %.2f s", secs);
    cr_assert_null(strstr(err.message, "Sup3r-secret"));
    pm_store_close(st);
    pm_config_destroy(cfg);
    close(fd);
}

static void kill_service(const char *name)
{
    const char *dir = getenv("PASSMILL_S3_DIR");
    cr_assert(dir && *dir, "PASSMILL_S3_DIR unset: cannot stop the %s server", name);
    cr_assert_eq(pmt_sh("pid=$(cat '%s/run/%s.pid') && kill \"$pid\" && "
                        "while kill -0 \"$pid\" 2>/dev/null; do sleep 0.05; done",
                        dir, name), 0);
}

static void restart_services(void)
{
    const char *dir = getenv("PASSMILL_S3_DIR");
    cr_assert_eq(pmt_sh("PASSMILL_S3_DIR='%s' '%s' start >/dev/null 2>&1", dir, pmt_src("ops/s3-dev")), 0,
                 "ops/s3-dev start could not restart the server");
}

Test(s3, server_down_then_restarted, .init = need_server)
{
    pm_config *cfg = s3_config("down");
    pm_store *st = open_store(cfg);
    uint8_t d[2000];
    fill(d, sizeof d, 7);
    put_ok(st, "passes/before.pkpass", d, sizeof d, "application/vnd.apple.pkpass");

    capture cap;
    capture_begin(&cap);
    kill_service("proxy");
    pm_object o = {.key = "passes/during.pkpass", .data = d, .len = sizeof d,
                   .content_type = "application/vnd.apple.pkpass"};
    pm_error err;
    int rc = pm_store_put(st, &o, &err);
    char *stderr_text = capture_end(&cap);
    cr_log_info("proxy down: %s", err.message);
    cr_assert_eq(rc, -1);
    cr_assert_eq(err.code, PM_ERR_STORE);
    cr_assert(strstr(err.message, getenv("PASSMILL_S3_ENDPOINT")), "%s", err.message);
    cr_assert(strstr(err.message, "passes/during.pkpass'"), "%s", err.message);
    cr_assert(strstr(err.message, "Couldn't connect to server"), "%s", err.message);
    cr_assert(strstr(err.message, "(3 attempts)"), "%s", err.message);
    cr_assert_null(strstr(err.message, getenv("AWS_SECRET_ACCESS_KEY")));
    cr_assert_null(strstr(stderr_text, getenv("AWS_SECRET_ACCESS_KEY")));
    free(stderr_text);

    restart_services();
    put_ok(st, "passes/during.pkpass", d, sizeof d, "application/vnd.apple.pkpass");
    get_equals(st, "passes/during.pkpass", d, sizeof d);
    get_equals(st, "passes/before.pkpass", d, sizeof d);
    pm_store_close(st);
    pm_config_destroy(cfg);
}

/* The object server gone: Swift answers 503, which is retried, then reported. */
Test(s3, http_503_is_retried_then_fails, .init = need_server)
{
    pm_config *cfg = s3_config("503");
    pm_store *st = open_store(cfg);
    uint8_t d[500];
    fill(d, sizeof d, 8);
    kill_service("object");
    pm_object o = {.key = "qr/x.png", .data = d, .len = sizeof d, .content_type = "image/png"};
    pm_error err;
    int rc = pm_store_put(st, &o, &err);
    restart_services();
    cr_log_info("object server down: %s", err.message);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err.message, "HTTP 503"), "%s", err.message);
    cr_assert(strstr(err.message, "(3 attempts)"), "%s", err.message);
    put_ok(st, "qr/x.png", d, sizeof d, "image/png");
    get_equals(st, "qr/x.png", d, sizeof d);
    pm_store_close(st);
    pm_config_destroy(cfg);
}

/* ---- concurrency ------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 50
#define OBJ_SIZE 20000

typedef struct worker {
    pm_store *st;
    int id;
    int failures;
    char first_error[512];
} worker;

static void *put_many(void *arg)
{
    worker *w = arg;
    uint8_t *d = malloc(OBJ_SIZE);
    for (int i = 0; i < PER_THREAD; i++) {
        char key[64];
        snprintf(key, sizeof key, "passes/w%d/%03d.pkpass", w->id, i);
        fill(d, OBJ_SIZE, (unsigned)(w->id * 1000 + i));
        pm_object o = {.key = key, .data = d, .len = OBJ_SIZE,
                       .content_type = "application/vnd.apple.pkpass"};
        pm_error err;
        if (pm_store_put(w->st, &o, &err) != 0 && w->failures++ == 0)
            snprintf(w->first_error, sizeof w->first_error, "%s", err.message);
    }
    free(d);
    return NULL;
}

Test(s3, concurrent_puts_all_land, .init = need_server, .timeout = 90)
{
    pm_config *cfg = s3_config("conc");
    pm_error err;
    cr_assert(pm_config_set(cfg, "s3.max_inflight", "4", &err) == 0);
    pm_store *st = open_store(cfg);
    pthread_t t[THREADS];
    worker w[THREADS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.st = st, .id = i};
        pthread_create(&t[i], NULL, put_many, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_log_info("%d PUTs of %d bytes from %d threads in %.2f s: %.0f PUT/s", THREADS * PER_THREAD,
                OBJ_SIZE, THREADS, secs, THREADS * PER_THREAD / secs);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(w[i].failures, 0, "thread %d: %d failures, first: %s", i, w[i].failures,
                     w[i].first_error);
    uint8_t *d = malloc(OBJ_SIZE);
    for (int id = 0; id < THREADS; id++) {
        for (int i = 0; i < PER_THREAD; i++) {
            char key[64];
            snprintf(key, sizeof key, "passes/w%d/%03d.pkpass", id, i);
            fill(d, OBJ_SIZE, (unsigned)(id * 1000 + i));
            get_equals(st, key, d, OBJ_SIZE);
        }
    }
    free(d);
    pm_store_close(st);
    pm_config_destroy(cfg);
}

/* ---- store.layout = split over S3 ---- */

static void put16le(pm_buf *b, unsigned v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    pm_buf_append(b, x, 2);
}

/* Static bytes, then "pass.json"'s entry, a central directory naming it, the end record. */
static void fake_pass(pm_buf *b, const uint8_t *statics, size_t slen, const char *own)
{
    pm_buf_reset(b);
    pm_buf_append(b, statics, slen);
    uint32_t off = (uint32_t)b->len;
    pm_buf_append_str(b, own);
    uint32_t cd = (uint32_t)b->len;
    put16le(b, 0x4b50);
    put16le(b, 0x0201);
    for (int i = 0; i < 19; i++)
        put16le(b, i == 12 ? 9 : 0); /* the name length sits at offset 28 */
    put16le(b, off & 0xffff);
    put16le(b, off >> 16);
    pm_buf_append_str(b, "pass.json");
    uint32_t cd_len = (uint32_t)b->len - cd;
    put16le(b, 0x4b50);
    put16le(b, 0x0605);
    put16le(b, 0);
    put16le(b, 0);
    put16le(b, 1);
    put16le(b, 1);
    put16le(b, cd_len & 0xffff);
    put16le(b, cd_len >> 16);
    put16le(b, cd & 0xffff);
    put16le(b, cd >> 16);
    put16le(b, 0);
}

Test(s3, split_layout_puts_the_prefix_once_and_reads_the_same_bytes, .init = need_server)
{
    pm_config *cfg = s3_config("split");
    pm_error err;
    cr_assert(pm_config_set(cfg, "store.layout", "split", &err) == 0);
    pm_store *st = NULL;
    cr_assert(pm_store_open(cfg, &st, &err) == 0, "open: %s", err.message);
    cr_assert_str_eq(st->ops->name, "split");
    static uint8_t statics[90000];
    fill(statics, sizeof statics, 3);
    pm_buf a = PM_BUF_INIT, b = PM_BUF_INIT;
    fake_pass(&a, statics, sizeof statics, "pass A's own bytes");
    fake_pass(&b, statics, sizeof statics, "pass B, other own bytes");
    put_ok(st, "passes/A.pkpass", a.data, a.len, "application/vnd.apple.pkpass");
    put_ok(st, "passes/B.pkpass", b.data, b.len, "application/vnd.apple.pkpass");
    cr_assert_null(pm_store_url(st, "passes/A.pkpass", 0), "no direct link to a split pass");
    pm_store_close(st);
    /* A fresh store reads the prefix from the bucket; the raw objects are what the layout says. */
    cr_assert(pm_store_open(cfg, &st, &err) == 0, "open: %s", err.message);
    get_equals(st, "passes/A.pkpass", a.data, a.len);
    get_equals(st, "passes/B.pkpass", b.data, b.len);
    pm_store_close(st);
    cr_assert(pm_config_set(cfg, "store.layout", "full", &err) == 0);
    st = open_store(cfg);
    pm_buf part = PM_BUF_INIT;
    cr_assert(pm_store_get(st, "passes/A.part", &part, &err) == 0, "%s", err.message);
    cr_assert_lt(part.len, 300, "only the pass's own bytes: %zu", part.len);
    cr_assert(strncmp((const char *)part.data, "passmill-split 1 prefixes/", 26) == 0);
    char key[100];
    memcpy(key, part.data + 17, 84); /* "prefixes/<64 hex>.zip-prefix" */
    key[84] = '\0';
    get_equals(st, key, statics, sizeof statics);
    pm_buf_free(&part);
    pm_buf_free(&a);
    pm_buf_free(&b);
    pm_store_close(st);
    pm_config_destroy(cfg);
}

/*
 * End-to-end tests of `passmill run`: the real binary, real files, real
 * signatures, checked by the openssl CLI, unzip, sha1sum and zbarimg as
 * well as by passmill's own verify.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry/registry.h"
#include "test_util.h"

static char *work; /* per-test temporary folder */

static void setup(void)
{
    work = pmt_tmpdir("pipe");
    cr_assert_not_null(work);
    setenv("W", work, 1); /* shell commands below say "$W" */
    cr_assert_eq(pmt_sh("'%s' identity create '%s/id' >/dev/null", pmt_passmill(), work), 0);
    cr_assert_eq(pmt_sh("printf 'test-barcode-secret-0123456789abcdef' > '%s/secret'", work), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/run.conf", work);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "input.path = %s/in.jsonl\ntemplate.dir = %s/config/templates\n", work, PM_SOURCE_DIR);
    fprintf(f, "sign.cert = %s/id/signer.pem\nsign.key = %s/id/signer.key\nsign.chain = %s/id/wwdr.pem\n",
            work, work, work);
    fprintf(f, "barcode.secret_env = PM_TEST_NO_SUCH_VAR\nbarcode.secret_file = %s/secret\n", work);
    fprintf(f, "store.dir = %s/store\noutput.ledger = %s/ledger.jsonl.zst\noutput.rejects = %s/rejects.jsonl\n",
            work, work, work);
    fprintf(f, "engine.workers = 2\nengine.progress_ms = 0\n");
    fclose(f);
}

static void teardown(void)
{
    pmt_rmrf(work);
    free(work);
}

/* Run passmill with the test config; returns the exit status, *summary = stdout. */
static int run(char **summary, const char *extra)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c '%s/run.conf' --now 2027-05-01T12:00:00Z %s 2>'%s/stderr.txt'",
                           pmt_passmill(), work, extra ? extra : "", work);
    cr_assert_not_null(out);
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    *summary = out;
    return status;
}

TestSuite(pipeline, .init = setup, .fini = teardown, .timeout = 600);

Test(pipeline, every_pass_signed_verified_and_hashed)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 120 --seed 3 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "summary: %s", summary);
    cr_assert_str_eq(summary, "in=120 passes=120 unchanged=0 rejects=0");
    free(summary);

    /* passmill's own verifier, chain checked against the dev CA. */
    cr_assert_eq(pmt_sh("'%s' verify --quiet --ca \"$W/id/ca.pem\" \"$W\"/store/passes/*.pkpass >/dev/null",
                        pmt_passmill()), 0);
    /* openssl CLI + unzip + sha1sum on every pass: an independent check. */
    cr_assert_eq(pmt_sh(
        "set -e; cd \"$W\"; n=0; for p in store/passes/*.pkpass; do "
        "  rm -rf x; mkdir x; (cd x && unzip -q ../$p); "
        "  openssl cms -verify -binary -inform DER -in x/signature -content x/manifest.json "
        "    -CAfile id/ca.pem -purpose any -out /dev/null 2>/dev/null; "
        "  (cd x && python3 -c 'import json,hashlib,sys,os; m=json.load(open(\"manifest.json\"));"
        "   files=[f for f in (os.path.relpath(os.path.join(r,x)) for r,_,fs in os.walk(\".\") for x in fs) if f not in (\"manifest.json\",\"signature\")];"
        "   assert sorted(files)==sorted(m), (files, m);"
        "   [sys.exit(\"hash \"+f) for f in m if hashlib.sha1(open(f,\"rb\").read()).hexdigest()!=m[f]]'); "
        "  n=$((n+1)); done; test $n -eq 120"), 0);
}

Test(pipeline, qr_images_decode_to_the_pass_barcode)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 10 --seed 5 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh(
        "set -e; cd '%s'; for p in store/passes/*.pkpass; do s=$(basename $p .pkpass); "
        "  msg=$(unzip -p $p pass.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"barcodes\"][0][\"message\"], end=\"\")'); "
        "  got=$(zbarimg --raw -q -Sbinary store/qr/$s.png); test \"$got\" = \"$msg\"; done", work), 0);
}

/*
 * The durability thread is woken when the durable list becomes non-empty or
 * a batch is full, not once per pass: one worker, the registry on, so every
 * pass goes through it.  Signalled per pass, the thread woke from its 10 ms
 * linger for each: about two voluntary context switches per pass (1,140 to
 * 1,221 for 600).  Now a few per batch, and a batch is at most one 10 ms window: the
 * bound allows 3 per window of the run's wall time (a slow build, ASan or a
 * loaded machine, makes more, smaller batches) plus N/2.
 */
Test(pipeline, durability_thread_is_not_woken_per_pass)
{
    enum { N = 600 };
    cr_assert_eq(pmt_sh("'%s' sample --count %d --seed 11 > '%s/in.jsonl'", pmt_passmill(), N, work),
                 0);
    /* Store and registry on tmpfs: on a disk, waits for I/O are voluntary
     * switches too. */
    char shm[] = "/dev/shm/pm-pipe-XXXXXX";
    cr_assert_not_null(mkdtemp(shm));
    int status;
    char *out = pmt_sh_out(&status,
                           "/usr/bin/time -f 'switches=%%w wall=%%e' '%s' run -c '%s/run.conf' "
                           "-X engine.workers=1 -X store.dir='%s/store' "
                           "-X registry.path='%s/registry.db' 2>&1 >/dev/null | grep '^switches='",
                           pmt_passmill(), work, shm, shm);
    pmt_rmrf(shm);
    cr_assert_not_null(out);
    cr_assert_eq(status, 0, "%s", out);
    long switches = -1;
    double wall = -1;
    cr_assert_eq(sscanf(out, "switches=%ld wall=%lf", &switches, &wall), 2, "%s", out);
    long bound = N / 2 + (long)(wall * 100.0 * 3);
    cr_assert_lt(switches, bound, "%ld voluntary context switches for %d passes in %.2f s",
                 switches, N, wall);
    free(out);
}

Test(pipeline, fixed_clock_gives_byte_identical_output)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 30 --seed 9 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0);
    free(summary);
    cr_assert_eq(pmt_sh("mv \"$W/store\" \"$W/store1\""), 0);
    cr_assert_eq(run(&summary, "--workers 1"), 0);
    free(summary);
    cr_assert_eq(pmt_sh("diff -r \"$W/store1\" \"$W/store\" >/dev/null"), 0,
                 "same input and clock must give the same bytes");
    /* and a different clock gives different signatures */
    cr_assert_eq(pmt_sh("mv \"$W/store\" \"$W/store2\""), 0);
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c '%s/run.conf' --now 2027-05-02T12:00:00Z 2>/dev/null",
                           pmt_passmill(), work);
    free(out);
    cr_assert_eq(status, 0);
    cr_assert_neq(pmt_sh("diff -r -q \"$W/store1\" \"$W/store\" >/dev/null"), 0);
}

/*
 * store.layout = split keeps the template's static entries once and per pass
 * only its own bytes; `passmill get` must give back exactly the bytes the
 * full layout stores, whose sha256 the registry holds.
 */
Test(pipeline, split_layout_reads_back_the_full_layout_bytes)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 25 --seed 4 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("mv \"$W/store\" \"$W/full\""), 0);
    cr_assert_eq(run(&summary, "-X store.layout=split -X registry.path=\"$W/reg.db\""), 0, "%s",
                 summary);
    cr_assert_str_eq(summary, "in=25 passes=25 unchanged=0 rejects=0");
    free(summary);
    /* One prefix for the one template version; no .pkpass objects; parts are small. */
    cr_assert_eq(pmt_sh("set -e; cd \"$W/store\"; test $(ls prefixes | wc -l) -eq 1; "
                        "test $(ls passes/*.part | wc -l) -eq 25; ! ls passes/*.pkpass 2>/dev/null; "
                        "test $(cat passes/*.part | wc -c) -lt $((25 * 8000))"), 0);
    /* get checks each pass against the registry's sha256 too. */
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; n=0; for f in full/passes/*.pkpass; do "
                        "  s=$(basename $f .pkpass); "
                        "  '%s' get -c run.conf -X store.layout=split -X registry.path=reg.db $s > got; "
                        "  cmp got $f; '%s' get -c run.conf -X store.layout=split $s -o got2; cmp got2 $f; "
                        "  n=$((n+1)); done; test $n -eq 25", pmt_passmill(), pmt_passmill()), 0);
    /* ... and the full layout reads back through the same command. */
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; f=$(ls full/passes/*.pkpass | head -1); "
                        "'%s' get -c run.conf -X store.dir=\"$W/full\" $(basename $f .pkpass) | cmp - $f",
                        pmt_passmill()), 0);
    /* A damaged part is refused against the registry (exit 1), and an unknown serial too. */
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; p=$(ls store/passes/*.part | head -1); "
                        "printf 'x' >> $p; s=$(basename $p .part); "
                        "set +e; '%s' get -c run.conf -X store.layout=split -X registry.path=reg.db $s "
                        ">/dev/null 2>err; test $? -eq 1 && grep -q 'the registry says' err && "
                        "'%s' get -c run.conf -X store.layout=split NO-SUCH >/dev/null 2>&1; test $? -eq 1",
                        pmt_passmill(), pmt_passmill()), 0);
    /* A layout that does not exist is a configuration error. */
    cr_assert_eq(pmt_sh("'%s' get -c \"$W/run.conf\" -X store.layout=halves X 2>/dev/null; test $? -eq 2",
                        pmt_passmill()), 0);
}

/*
 * strip_image picks one of the template's strips/<name>.png per record: the
 * pass carries it as strip.png (hashed in the manifest), the split layout
 * keeps one prefix per variant, an unknown name is a reject.
 */
Test(pipeline, strip_image_per_record_in_both_layouts)
{
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; mkdir t; cp -r '%s' t/stadium; mkdir t/stadium/strips; "
                        "cp t/stadium/logo.png t/stadium/strips/gold.png; "
                        "cp t/stadium/logo@2x.png t/stadium/strips/gold@2x.png; "
                        "'%s' sample --count 12 --seed 6 | python3 -c 'import json,sys\n"
                        "for i,l in enumerate(sys.stdin):\n"
                        "    r=json.loads(l)\n"
                        "    if i%%2: r[\"strip_image\"]=\"gold\"\n"
                        "    if i==4: r[\"strip_image\"]=\"silver\"\n"
                        "    print(json.dumps(r))' > in.jsonl",
                        pmt_src("config/templates/stadium"), pmt_passmill()), 0);
    char *summary;
    cr_assert_eq(run(&summary, "-X template.dir=\"$W/t\""), 1, "%s", summary);
    cr_assert_str_eq(summary, "in=12 passes=11 unchanged=0 rejects=1");
    free(summary);
    cr_assert_eq(pmt_sh("cd \"$W\" && python3 -c 'import json; r=json.loads(open(\"rejects.jsonl\").readline());"
                        " assert (r[\"code\"], r[\"field\"]) == (\"strip_image.unknown\", \"strip_image\"), r;"
                        " assert \"gold\" in r[\"reason\"] and \"silver\" in r[\"reason\"], r'"), 0);
    cr_assert_eq(pmt_sh("'%s' verify --quiet --ca \"$W/id/ca.pem\" \"$W\"/store/passes/*.pkpass >/dev/null",
                        pmt_passmill()), 0);
    /* odd records carry the gold strip (1x and 2x), even ones the template's own */
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; g=0; for p in store/passes/*.pkpass; do "
                        "  s=$(unzip -p $p pass.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"serialNumber\"])'); "
                        "  if grep -q \"\\\"$s\\\".*\\\"strip_image\\\": \\\"gold\\\"\" in.jsonl; then "
                        "    unzip -p $p strip.png | cmp - t/stadium/logo.png; unzip -p $p strip@2x.png | cmp - t/stadium/logo@2x.png; g=$((g+1)); "
                        "  else unzip -p $p strip.png | cmp - t/stadium/strip.png; fi; done; test $g -eq 6"), 0);
    cr_assert_eq(pmt_sh("mv \"$W/store\" \"$W/full\""), 0);
    cr_assert_eq(run(&summary, "-X template.dir=\"$W/t\" -X store.layout=split"), 1, "%s", summary);
    free(summary);
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; test $(ls store/prefixes | wc -l) -eq 2; "
                        "for f in full/passes/*.pkpass; do s=$(basename $f .pkpass); "
                        "'%s' get -c run.conf -X store.layout=split $s | cmp - $f; done",
                        pmt_passmill()), 0);
    /* a template whose strips/ holds something else is refused at start-up */
    cr_assert_eq(pmt_sh("set -e; cd \"$W\"; cp t/stadium/icon.png t/stadium/strips/gold@4x.png; "
                        "set +e; '%s' run -c run.conf -X template.dir=\"$W/t\" >/dev/null 2>err; "
                        "test $? -eq 2 && grep -q 'strips/gold@4x.png' err", pmt_passmill()), 0);
}

/*
 * A pass issued before strip_image existed must keep its content hash, so a
 * re-run after the upgrade finds it unchanged rather than re-issuing it.
 */
Test(pipeline, strip_image_null_keeps_the_content_hash)
{
    const char *old = "{\"action\":\"ISSUE\",\"serial_number\":\"S-1\",\"template_id\":\"stadium\"}";
    json_t *a = json_loads(old, 0, NULL), *b = json_loads(old, 0, NULL), *c = json_loads(old, 0, NULL);
    cr_assert(a && b && c);
    json_object_set_new(b, "strip_image", json_null());
    json_object_set_new(c, "strip_image", json_string("gold"));
    uint8_t signer[32] = {1};
    char ha[65], hb[65], hc[65];
    pm_buf canon = PM_BUF_INIT;
    pm_error err;
    cr_assert_eq(pm_registry_content_hash(a, "active", "v1", signer, &canon, ha, &err), 0, "%s", err.message);
    cr_assert_eq(pm_registry_content_hash(b, "active", "v1", signer, &canon, hb, &err), 0, "%s", err.message);
    cr_assert_str_eq(ha, hb, "a null strip_image must not change the hash");
    cr_assert_eq(pm_registry_content_hash(c, "active", "v1", signer, &canon, hc, &err), 0, "%s", err.message);
    cr_assert_str_neq(ha, hc, "a chosen strip makes another pass");
    cr_assert(json_object_get(b, "strip_image"), "the caller's record is left as it was");
    pm_buf_free(&canon);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

/* One hostile record per line, each with the code and field it must get. */
static const struct {
    const char *patch; /* python expression applied to a valid record r */
    const char *code;
    const char *field;
} hostile[] = {
    {"r.update(serial_number='bad serial!')", "serial.format", "serial_number"},
    {"r['attendee']['face_value'].update(currency='GPB')", "money.currency", "attendee.face_value.currency"},
    {"r['attendee']['face_value'].update(amount_micros=-1)", "money.negative", "attendee.face_value.amount_micros"},
    {"r.update(locations=[{'latitude':1.0,'longitude':2.0}]*11)", "locations.count", "locations"},
    {"r['event'].update(time_zone='Mars/Olympus_Mons')", "time_zone.unknown", "event.time_zone"},
    {"r['event'].update(start='2027-02-29T19:00:00+00:00')", "time.invalid_date", "event.start"},
    {"r['attendee'].update(sseat='1')", "schema.unknown_field", "attendee.sseat"},
    {"r['barcode'].update(format='EAN13')", "schema.enum", "barcode.format"},
    {"r.update(template_id='no-such-template')", "template.unknown", "template_id"},
    {"r['event'].update(name='')", "field.empty", "event.name"},
};

Test(pipeline, hostile_records_are_rejected_with_code_and_field_and_nothing_is_lost)
{
    size_t n_hostile = sizeof hostile / sizeof hostile[0];
    cr_assert_eq(pmt_sh("'%s' sample --count 20 --seed 11 > '%s/good.jsonl'", pmt_passmill(), work), 0);
    /* Build the input: good records interleaved with hostile ones. */
    char path[1024];
    snprintf(path, sizeof path, "%s/mk.py", work);
    FILE *f = fopen(path, "w");
    fprintf(f, "import json\ngood=[json.loads(l) for l in open('%s/good.jsonl')]\nout=open('%s/in.jsonl','w')\n",
            work, work);
    for (size_t i = 0; i < n_hostile; i++)
        fprintf(f, "r=json.loads(json.dumps(good[%zu])); r['serial_number']='HOSTILE-%zu'\n%s\n"
                   "out.write(json.dumps(good[%zu])+'\\n'); out.write(json.dumps(r)+'\\n')\n",
                i, i, hostile[i].patch, i + 10 < 20 ? i + 10 : i);
    fprintf(f, "out.write('{\"truncated\": \\n')\nout.write('\\n')\n");
    fclose(f);
    cr_assert_eq(pmt_sh("python3 '%s/mk.py'", work), 0);

    char *summary;
    int status = run(&summary, NULL);
    cr_assert_eq(status, 1, "exit 1 when something was rejected (%s)", summary);
    char expect[128];
    /* 10 distinct good records (some repeated serials are fine: same pass) */
    snprintf(expect, sizeof expect, "in=%zu passes=%zu unchanged=0 rejects=%zu", 2 * n_hostile + 1, n_hostile,
             n_hostile + 1);
    cr_assert_str_eq(summary, expect);
    free(summary);

    snprintf(path, sizeof path, "%s/rejects.jsonl", work);
    FILE *rf = fopen(path, "r");
    cr_assert_not_null(rf);
    char line[65536];
    size_t seen = 0, syntax = 0;
    while (fgets(line, sizeof line, rf)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        cr_assert_not_null(j, "reject line is JSON: %s", je.text);
        const char *code = json_string_value(json_object_get(j, "code"));
        const char *field = json_string_value(json_object_get(j, "field"));
        const char *serial = json_string_value(json_object_get(j, "serial"));
        cr_assert_not_null(code);
        cr_assert_not_null(json_object_get(j, "reason"));
        cr_assert_not_null(json_object_get(j, "origin"));
        if (!strcmp(code, "json.syntax")) {
            syntax++;
            cr_assert_not_null(json_object_get(j, "record_base64"), "undecodable input kept as bytes");
        } else {
            cr_assert_not_null(json_object_get(j, "record"), "the original record is kept");
            size_t i = 0; /* record 0 is the one whose serial itself is bad */
            if (!serial || strcmp(serial, "bad serial!") != 0)
                cr_assert_eq(sscanf(serial ? serial : "", "HOSTILE-%zu", &i), 1, "serial %s",
                             serial ? serial : "(null)");
            cr_assert_str_eq(code, hostile[i].code, "record %zu", i);
            cr_assert_str_eq(field, hostile[i].field, "record %zu", i);
        }
        seen++;
        json_decref(j);
    }
    fclose(rf);
    cr_assert_eq(seen, n_hostile + 1);
    cr_assert_eq(syntax, 1);
}

Test(pipeline, ledger_has_one_line_per_pass_with_the_pass_sha256)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 25 --seed 13 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0);
    free(summary);
    cr_assert_eq(pmt_sh(
        "set -e; cd '%s'; test $(zstd -dc ledger.jsonl.zst | wc -l) -eq 25; "
        "zstd -dc ledger.jsonl.zst | python3 -c '\n"
        "import json,sys,hashlib\n"
        "for l in sys.stdin:\n"
        "  r=json.loads(l)\n"
        "  assert r[\"status\"]==\"active\" and r[\"action\"]==\"ISSUE\", r\n"
        "  assert r[\"keys\"]==({\"pkpass\":\"passes/%%s.pkpass\"%%r[\"serial\"],\"qr\":\"qr/%%s.png\"%%r[\"serial\"]}), r\n"
        "  assert hashlib.sha256(open(\"store/\"+r[\"keys\"][\"pkpass\"],\"rb\").read()).hexdigest()==r[\"sha256\"]\n"
        "  assert len(r[\"template_version\"])==16\n'", work), 0);
}

Test(pipeline, configuration_errors_exit_2_with_a_clear_message)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c '%s/run.conf' -X store.dri=x 2>&1", pmt_passmill(), work);
    cr_assert_eq(status, 2);
    cr_assert(strstr(out, "store.dri"), "%s", out);
    free(out);
    out = pmt_sh_out(&status, "'%s' run -c '%s/run.conf' -X sign.key=/nonexistent/key.pem 2>&1",
                     pmt_passmill(), work);
    cr_assert_neq(status, 0);
    cr_assert(strstr(out, "/nonexistent/key.pem"), "%s", out);
    free(out);
    out = pmt_sh_out(&status, "'%s' run --help", pmt_passmill());
    cr_assert_eq(status, 0);
    cr_assert(strstr(out, "store.dir") && strstr(out, "exit status"), "%s", out);
    free(out);
}

Test(pipeline, the_barcode_secret_never_appears_in_output)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 5 --seed 1 > '%s/in.jsonl'", pmt_passmill(), work), 0);
    char *summary;
    cr_assert_eq(run(&summary, NULL), 0);
    free(summary);
    cr_assert_neq(pmt_sh("cd '%s' && grep -r -a -l 'test-barcode-secret' store stderr.txt rejects.jsonl", work), 0);
    cr_assert_neq(pmt_sh("cd '%s' && zstd -dc ledger.jsonl.zst | grep -q 'test-barcode-secret'", work), 0);
}

/* Issue 14: a one-byte barcode secret was accepted; 32 bytes are the minimum. */
Test(pipeline, a_short_barcode_secret_is_refused)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 1 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("printf 'x' > \"$W/short\"; printf '%%031d' 0 > \"$W/31\""), 0);
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X barcode.secret_file=\"$W/short\" 2>&1",
                           pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "barcode.secret_file") && strstr(out, "is 1 bytes") &&
              strstr(out, "at least 32"), "%s", out);
    free(out);
    out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X barcode.secret_file=\"$W/31\" 2>&1",
                     pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    free(out);
    /* The environment variable is held to the same rule. */
    out = pmt_sh_out(&status, "PM_SHORT=abc '%s' run -c \"$W/run.conf\" -X barcode.secret_env=PM_SHORT 2>&1",
                     pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "PM_SHORT") && strstr(out, "is 3 bytes"), "%s", out);
    cr_assert_null(strstr(out, "abc"), "the secret itself is printed: %s", out);
    free(out);
    /* 32 bytes run. */
    cr_assert_eq(pmt_sh("printf '%%032d' 0 > \"$W/32\""), 0);
    char *summary;
    cr_assert_eq(run(&summary, "-X barcode.secret_file=\"$W/32\""), 0, "%s", summary);
    free(summary);
}

/* Issue 14: rejects (personal data) and the ledger (presigned URLs) were created 0644. */
Test(pipeline, rejects_and_ledger_are_created_private)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 1 > \"$W/in.jsonl\" && "
                        "echo '{\"not\": \"a request\"}' >> \"$W/in.jsonl\"", pmt_passmill()), 0);
    int status;
    char *out = pmt_sh_out(&status, "umask 022; '%s' run -c \"$W/run.conf\" --now 2027-05-01T12:00:00Z "
                           "2>/dev/null; stat -c '%%a %%n' \"$W/rejects.jsonl\" \"$W/ledger.jsonl.zst\"",
                           pmt_passmill());
    cr_assert_not_null(out);
    cr_assert(strstr(out, "in=4 passes=3 unchanged=0 rejects=1\n"), "%s", out);
    char expect[2048];
    snprintf(expect, sizeof expect, "600 %s/rejects.jsonl\n600 %s/ledger.jsonl.zst\n", work, work);
    cr_assert(strstr(out, expect), "expected\n%sin\n%s", expect, out);
    free(out);
}

/* Issue 14: Kafka credentials could only be given on the command line. */
Test(pipeline, kafka_secrets_are_refused_as_values)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X kafka.sasl.password=hunter2-secret 2>&1",
                           pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "kafka.sasl.password_env") && strstr(out, "kafka.sasl.password_file"), "%s", out);
    cr_assert_null(strstr(out, "hunter2"), "the secret is echoed: %s", out);
    free(out);
    /* In a config file too, named by file and line. */
    cr_assert_eq(pmt_sh("cp \"$W/run.conf\" \"$W/bad.conf\" && echo 'kafka.ssl.key.password = pw' >> \"$W/bad.conf\""), 0);
    out = pmt_sh_out(&status, "'%s' run -c \"$W/bad.conf\" 2>&1", pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "bad.conf:") && strstr(out, "kafka.ssl.key.password is a secret"), "%s", out);
    free(out);
    /* produce takes librdkafka properties directly: the same rule. */
    out = pmt_sh_out(&status, "'%s' produce -b 127.0.0.1:1 -t t -X sasl.password=hunter2-secret /dev/null 2>&1",
                     pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "sasl.password_env"), "%s", out);
    cr_assert_null(strstr(out, "hunter2"), "the secret is echoed: %s", out);
    free(out);
}

Test(pipeline, an_identity_for_another_pass_type_is_refused_at_start)
{
    cr_assert_eq(pmt_sh("'%s' identity create \"$W/other\" --pass-type-id pass.com.example.other >/dev/null",
                        pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("'%s' sample --count 3 --seed 1 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    int status;
    char *out = pmt_sh_out(&status,
                           "'%s' run -c \"$W/run.conf\" -X sign.cert=\"$W/other/signer.pem\" "
                           "-X sign.key=\"$W/other/signer.key\" -X sign.chain=\"$W/other/wwdr.pem\" 2>&1",
                           pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "template 'stadium'") && strstr(out, "pass.com.example.other"), "%s", out);
    free(out);
}

Test(pipeline, a_corrupt_avro_block_is_rejected_and_the_run_goes_on)
{
    /* an Avro container file whose first block's sync marker is damaged */
    cr_assert_eq(pmt_sh("'%s' sample --format avro --count 150 --seed 4 > \"$W/good.avro\"",
                        pmt_passmill()), 0);
    cr_assert_eq(pmt_sh(
        "python3 -c '\n"
        "import os\n"
        "w = os.environ[\"W\"]; b = bytearray(open(w + \"/good.avro\", \"rb\").read())\n"
        "sync = bytes(b[-16:]); h = b.index(sync) + 16\n"
        "def varint(p):\n"
        "    v = s = 0\n"
        "    while True:\n"
        "        c = b[p]; p += 1; v |= (c & 0x7f) << s; s += 7\n"
        "        if not c & 0x80: return (v >> 1) ^ -(v & 1), p\n"
        "n, p = varint(h); size, p = varint(p)\n"
        "assert p + size + 16 < len(b), \"one block only\"\n"
        "b[p + size + 3] ^= 0x55\n"
        "open(w + \"/in.jsonl\", \"wb\").write(b); open(w + \"/n\", \"w\").write(str(n))'"), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/n", work);
    char *ntext = pmt_read_file(path, NULL);
    cr_assert_not_null(ntext);
    int n = atoi(ntext);
    free(ntext);
    cr_assert_gt(n, 0);

    char *summary;
    int status = run(&summary, NULL);
    cr_assert_eq(status, 1, "exit 1 (some rejected), not 3: %s", summary);
    char expect[128];
    snprintf(expect, sizeof expect, "in=150 passes=%d unchanged=0 rejects=%d", 150 - n, n);
    cr_assert_str_eq(summary, expect);
    free(summary);

    snprintf(path, sizeof path, "%s/rejects.jsonl", work);
    FILE *rf = fopen(path, "r");
    cr_assert_not_null(rf);
    char line[65536];
    int seen = 0;
    char *got = calloc((size_t)n + 1, 1); /* workers write rejects in any order */
    while (fgets(line, sizeof line, rf)) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert_not_null(j);
        cr_assert_str_eq(json_string_value(json_object_get(j, "code")), "avro.block");
        cr_assert_str_eq(json_string_value(json_object_get(j, "field")), "");
        const char *reason = json_string_value(json_object_get(j, "reason"));
        cr_assert(reason && strstr(reason, "sync marker"), "%s", line);
        json_t *origin = json_object_get(j, "origin");
        json_int_t at = json_integer_value(json_object_get(origin, "line"));
        cr_assert(at >= 1 && at <= n && !got[at], "records 1..%d once each: %s", n, line);
        got[at] = 1;
        seen++;
        json_decref(j);
    }
    fclose(rf);
    free(got);
    cr_assert_eq(seen, n);
}

/* Issue 14 item 9: paths in a config file are relative to its folder, so
 * `run -c /abs/conf/x.conf` works from any working directory; -X paths stay
 * relative to the working directory. */
Test(pipeline, config_file_paths_are_relative_to_the_config_file)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 4 --seed 2 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    cr_assert_eq(pmt_sh("mkdir \"$W/conf\" \"$W/elsewhere\" && cat > \"$W/conf/rel.conf\" <<'END'\n"
                        "input.path = ../in.jsonl\n"
                        "template.dir = ../templates\n"
                        "sign.cert = ../id/signer.pem\nsign.key = ../id/signer.key\nsign.chain = ../id/wwdr.pem\n"
                        "barcode.secret_env = PM_TEST_NO_SUCH_VAR\nbarcode.secret_file = ../secret\n"
                        "store.dir = ../store\noutput.ledger = ../ledger.jsonl.zst\noutput.rejects = ../rejects.jsonl\n"
                        "engine.workers = 1\nengine.progress_ms = 0\n"
                        "END\n"
                        "cp -r '%s/config/templates' \"$W/templates\"", PM_SOURCE_DIR), 0);
    int status;
    char *out = pmt_sh_out(&status, "cd \"$W/elsewhere\" && '%s' run -c \"$W/conf/rel.conf\" 2>&1",
                           pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "in=4 passes=4 unchanged=0 rejects=0"), "%s", out);
    free(out);
    cr_assert_eq(pmt_sh("test $(ls \"$W/store/passes\" | wc -l) -eq 4 && test -s \"$W/ledger.jsonl.zst\" && "
                        "test -z \"$(ls \"$W/elsewhere\")\""), 0, "outputs land next to the config, not in the working directory");
    /* -X: relative to the working directory */
    out = pmt_sh_out(&status, "cd \"$W\" && '%s' run -c \"$W/conf/rel.conf\" -X store.dir=xstore "
                     "-X input.path=in.jsonl 2>&1", pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    free(out);
    cr_assert_eq(pmt_sh("test $(ls \"$W/xstore/passes\" | wc -l) -eq 4"), 0);
}

/* Issue 14 item 10: a template folder or input file that the configuration
 * names and that does not exist is a configuration error: exit 2. */
Test(pipeline, missing_template_dir_or_input_file_exits_2)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 2 --seed 2 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X template.dir=\"$W/no-templates\" 2>&1",
                           pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "template.dir") && strstr(out, "no-templates"), "%s", out);
    free(out);
    out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X input.path=\"$W/no-such.jsonl\" 2>&1",
                     pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "input.path") && strstr(out, "no-such.jsonl"), "%s", out);
    free(out);
    out = pmt_sh_out(&status, "'%s' run -c \"$W/no-such.conf\" 2>&1", pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    free(out);
    /* found when the stages are created, as the engine starts */
    out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X kafka.schema_ids=abc 2>&1", pmt_passmill());
    cr_assert_eq(status, 2, "%s", out);
    cr_assert(strstr(out, "kafka.schema_ids"), "%s", out);
    free(out);
}

/* Issue 14 item 11: the usage line names every option. */
Test(pipeline, run_usage_line_lists_every_option)
{
    int status;
    char *out = pmt_sh_out(&status, "'%s' run --help | sed '/^$/q'", pmt_passmill()); /* the usage lines */
    cr_assert_eq(status, 0);
    const char *opts[] = {"-c CONFIG", "-X key=value", "--now", "--workers", "--exit-on-eof"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        cr_assert(strstr(out, opts[i]), "usage line lacks %s: %s", opts[i], out);
    free(out);
}

/* Issue 14 item 11: progress for a file shows percent, total and ETA: plain
 * lines when stderr is not a terminal, a bar rewritten in place when it is
 * (a pty from script(1)); a pipe has no total. */
Test(pipeline, file_progress_shows_percent_total_and_eta)
{
    cr_assert_eq(pmt_sh("'%s' sample --count 150 --seed 4 > \"$W/in.jsonl\"", pmt_passmill()), 0);
    int status;
    char *out = pmt_sh_out(&status, "'%s' run -c \"$W/run.conf\" -X engine.workers=1 "
                           "-X engine.progress_ms=20 2>&1 >/dev/null", pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "% of ") && strstr(out, ", eta "), "plain progress lines: %s", out);
    cr_assert_null(strchr(out, '\r'), "no bar when stderr is not a terminal: %s", out);
    free(out);

    out = pmt_sh_out(&status, "cat \"$W/in.jsonl\" | '%s' run -c \"$W/run.conf\" -X input.path=- "
                     "-X engine.workers=1 -X engine.progress_ms=20 2>&1 >/dev/null", pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "records/s)"), "%s", out);
    cr_assert_null(strstr(out, "eta"), "a pipe has no total: %s", out);
    free(out);

    /* TERM set here: the environment may say dumb (CI, a fresh root), which means lines. */
    out = pmt_sh_out(&status, "TERM=xterm script -qec \"'%s' run -c '$W/run.conf' -X engine.progress_ms=20 "
                     ">/dev/null\" /dev/null", pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "\rpassmill [") && strstr(out, "] 100% 150/150 rejects=0 "),
              "a bar on a terminal, completed at the end: %s", out);
    free(out);
    out = pmt_sh_out(&status, "TERM=dumb script -qec \"'%s' run -c '$W/run.conf' -X engine.workers=1 -X engine.progress_ms=20 "
                     ">/dev/null\" /dev/null", pmt_passmill());
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "% of 150, eta ") && !strchr(out, '\033'), "lines on a dumb terminal: %s", out);
    free(out);
}

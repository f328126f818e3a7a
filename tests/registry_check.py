#!/usr/bin/env python3
"""registry_check.py REGISTRY STORE_DIR [--status S] [--count N]

Checks that a registry and a local store agree one to one, with Python's
own sqlite3, hashlib and zipfile (not passmill's code).  REGISTRY is a
SQLite file, or a postgresql:// URL read with psql (the password in
PGPASSWORD, never argv):
  - every passes row has passes/<serial>.pkpass, and the .pkpass's SHA-256 is
    the row's pkpass_sha256; an active row has qr/<serial>.png and a barcode
    in pass.json, any other has neither (docs/lifecycle.md: the test
    templates keep the default "inactive_barcode": "remove");
  - every .pkpass in the store has a row;
  - no temporary (.pm-tmp-*) file is left anywhere in the store;
  - each pass.json's serialNumber is the row's serial, and "voided" is true
    exactly when the row's status is voided or redeemed;
  - with --status: every row has that status; with --count: that many rows.
Prints "ok rows=N" or the first disagreement, and exits 1 on one.
"""
import argparse, hashlib, json, os, sqlite3, subprocess, sys, zipfile

ap = argparse.ArgumentParser()
ap.add_argument("db")
ap.add_argument("store")
ap.add_argument("--status")
ap.add_argument("--count", type=int)
a = ap.parse_args()

def fail(msg):
    print("registry_check: " + msg)
    sys.exit(1)

QUERY = "SELECT serial, status, pkpass_sha256, pkpass_key, qr_key FROM passes"
if a.db.startswith("postgresql:") or a.db.startswith("postgres:"):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", QUERY, a.db],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    rows = [tuple(l.split("\t")) for l in out.splitlines() if l]
else:
    rows = sqlite3.connect("file:%s?mode=ro" % a.db, uri=True).execute(QUERY).fetchall()
if a.count is not None and len(rows) != a.count:
    fail("expected %d rows, found %d" % (a.count, len(rows)))
for root, dirs, files in os.walk(a.store):
    for f in files + dirs:
        if f.startswith(".pm-tmp-"):
            fail("temporary file left: " + os.path.join(root, f))
stored = set(f[:-len(".pkpass")] for f in os.listdir(os.path.join(a.store, "passes")) if f.endswith(".pkpass")) \
    if os.path.isdir(os.path.join(a.store, "passes")) else set()
serials = set()
for serial, status, sha, pkey, qkey in rows:
    serials.add(serial)
    if a.status and status != a.status:
        fail("%s: status %s, expected %s" % (serial, status, a.status))
    p = os.path.join(a.store, pkey)
    if not os.path.isfile(p):
        fail("%s: row without its pass object" % serial)
    if os.path.isfile(os.path.join(a.store, qkey)) != (status == "active"):
        fail("%s: status %s but its QR image is %s" % (serial, status,
             "there" if status != "active" else "missing"))
    data = open(p, "rb").read()
    if hashlib.sha256(data).hexdigest() != sha:
        fail("%s: stored .pkpass sha256 differs from the registry's" % serial)
    pj = json.loads(zipfile.ZipFile(p).read("pass.json"))
    if pj.get("serialNumber") != serial:
        fail("%s: pass.json serialNumber is %r" % (serial, pj.get("serialNumber")))
    if bool(pj.get("voided")) != (status in ("voided", "redeemed")):
        fail("%s: pass.json voided=%r but status %s" % (serial, pj.get("voided"), status))
    if ("barcodes" in pj or "barcode" in pj) != (status == "active"):
        fail("%s: status %s but pass.json %s a barcode" % (serial, status,
             "has" if status != "active" else "lacks"))
extra = stored - serials
if extra:
    fail("%d stored passes without a row, e.g. %s" % (len(extra), sorted(extra)[0]))
print("ok rows=%d" % len(rows))

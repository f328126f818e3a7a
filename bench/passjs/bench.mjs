// bench.mjs TEMPLATE_DIR IDENTITY_DIR RECORDS.jsonl OUT_DIR
// Builds one pass per record with @walletpass/pass-js 7.2 from the same
// template folder and the same records passmill uses, writes each .pkpass,
// and prints two lines:
//   bench=passjs value=X unit=passes/s          (wall clock, the loop only)
//   bench=passjs_cpu value=X unit=passes/cpu-s  (user+system CPU of the loop)
// pass-js signs with Node's crypto (OpenSSL) and bundles Apple's WWDR
// certificate itself; the identity's signer certificate and key are used.
import { Template } from "@walletpass/pass-js";
import fs from "node:fs";
import path from "node:path";

const [templateDir, idDir, recordsPath, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: bench.mjs TEMPLATE_DIR IDENTITY_DIR RECORDS.jsonl OUT_DIR");
  process.exit(2);
}

// passmill's skeleton uses ${path} bindings; fill them per record, as
// bench/passkit/bench.mjs does for passkit-generator.
const skeleton = JSON.parse(fs.readFileSync(path.join(templateDir, "pass.json"), "utf8"));
const get = (obj, p) => p.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
function bind(value, record) {
  if (typeof value === "string")
    return value.replace(/\$\{([^}]+)\}/g, (_, p) => {
      const v = p.startsWith("custom.")
        ? (record.custom_fields || []).find((c) => c.key === p.slice(7))?.value
        : get(record, p);
      return v == null ? "" : String(v);
    });
  if (Array.isArray(value)) return value.map((v) => bind(v, record));
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, bind(v, record)]));
  return value;
}

const records = fs.readFileSync(recordsPath, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
fs.mkdirSync(outDir, { recursive: true });

// Images and localizations once, from a copy of the template folder whose
// pass.json is bound to the first record (Template.load checks the fields,
// and "${event.doors_open}" is not a date).
const scratch = fs.mkdtempSync(path.join(outDir, "template-"));
fs.cpSync(templateDir, scratch, { recursive: true });
fs.writeFileSync(path.join(scratch, "pass.json"), JSON.stringify(bind(skeleton, records[0])));
const template = await Template.load(scratch); // reads the images per pass: keep it
template.setCertificate(fs.readFileSync(path.join(idDir, "signer.pem"), "utf8"));
template.setPrivateKey(fs.readFileSync(path.join(idDir, "signer.key"), "utf8"));

const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
for (const r of records) {
  const fields = bind(skeleton, r);
  delete fields.barcodes;
  delete fields.barcode;
  const pass = template.createPass({ ...fields, serialNumber: r.serial_number });
  const message = r.barcode.message === "autogenerate" ? r.serial_number : r.barcode.message;
  pass.barcodes = [{ message, format: "PKBarcodeFormatQR", messageEncoding: "iso-8859-1" }];
  fs.writeFileSync(path.join(outDir, r.serial_number + ".pkpass"), await pass.asBuffer());
}
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(c0);
const cpuSecs = (cpu.user + cpu.system) / 1e6;
fs.rmSync(scratch, { recursive: true });
console.log(`bench=passjs value=${(records.length / secs).toFixed(1)} unit=passes/s`);
console.log(`bench=passjs_cpu value=${(records.length / cpuSecs).toFixed(1)} unit=passes/cpu-s`);

// bench.mjs TEMPLATE_DIR IDENTITY_DIR RECORDS.jsonl OUT_DIR
// Builds one pass per record with passkit-generator 3.6.1 from the same
// template files and the same records passmill uses, writes each .pkpass,
// and prints two lines:
//   bench=passkit_generator value=X unit=passes/s          (wall clock, the loop only)
//   bench=passkit_generator_cpu value=X unit=passes/cpu-s  (user+system CPU of the loop)
import { PKPass } from "passkit-generator";
import fs from "node:fs";
import path from "node:path";

const [templateDir, idDir, recordsPath, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: bench.mjs TEMPLATE_DIR IDENTITY_DIR RECORDS.jsonl OUT_DIR");
  process.exit(2);
}

function readTree(dir, prefix = "") {
  const files = {};
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix + e.name;
    if (e.isDirectory()) Object.assign(files, readTree(path.join(dir, e.name), rel + "/"));
    else files[rel] = fs.readFileSync(path.join(dir, e.name));
  }
  return files;
}

// passmill's skeleton uses ${path} bindings; give passkit-generator the same
// layout with the bindings filled per record, as a user of it would.
const template = readTree(templateDir);
const skeleton = JSON.parse(template["pass.json"].toString("utf8"));
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

const certificates = {
  wwdr: fs.readFileSync(path.join(idDir, "wwdr.pem")),
  signerCert: fs.readFileSync(path.join(idDir, "signer.pem")),
  signerKey: fs.readFileSync(path.join(idDir, "signer.key")),
};
const records = fs.readFileSync(recordsPath, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
fs.mkdirSync(outDir, { recursive: true });

const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
for (const r of records) {
  const passJson = bind(skeleton, r);
  const files = { ...template, "pass.json": Buffer.from(JSON.stringify(passJson)) };
  const pass = new PKPass(files, certificates, { serialNumber: r.serial_number });
  const message = r.barcode.message === "autogenerate" ? r.serial_number : r.barcode.message;
  pass.setBarcodes({ message, format: "PKBarcodeFormatQR", messageEncoding: "iso-8859-1" });
  fs.writeFileSync(path.join(outDir, r.serial_number + ".pkpass"), pass.getAsBuffer());
}
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(c0);
const cpuSecs = (cpu.user + cpu.system) / 1e6;
console.log(`bench=passkit_generator value=${(records.length / secs).toFixed(1)} unit=passes/s`);
console.log(`bench=passkit_generator_cpu value=${(records.length / cpuSecs).toFixed(1)} unit=passes/cpu-s`);

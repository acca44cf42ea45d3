// 1,000-record bulk write and read through the Node package; prints the
// per-iteration seconds as JSON. Run by `chittysync-bench --only bindings`,
// which times the same work in Rust in the same run.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { Replica, field } from "./dist/index.js";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "1000" },
    iterations: { type: "string", default: "15" },
    warmup: { type: "string", default: "3" },
  },
});
const [records, iterations, warmup] = [values.records, values.iterations, values.warmup].map(Number);
const write = [];
const read = [];
for (let i = 0; i < warmup + iterations; i++) {
  const d = mkdtempSync(join(tmpdir(), "chittysync-bench-"));
  try {
    const reg = Replica.open(join(d, "bench.db")).createRegistry("bench", [
      field("name", "text", { required: true }),
      field("tier", "integer"),
    ]);
    const rows = Array.from({ length: records }, (_, n) => ({ fields: { name: `service-${n}`, tier: (n % 3) + 1 } }));
    let t = process.hrtime.bigint();
    reg.putMany(rows);
    const w = Number(process.hrtime.bigint() - t) / 1e9;
    t = process.hrtime.bigint();
    const got = reg.list();
    const r = Number(process.hrtime.bigint() - t) / 1e9;
    if (got.length !== records || !got[0].fields.name.startsWith("service-")) throw new Error("bench read back wrong records");
    if (i >= warmup) {
      write.push(w);
      read.push(r);
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}
console.log(JSON.stringify({ write, read }));

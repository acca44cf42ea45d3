// Adapters written in JavaScript, driven by the Rust sync engine: the same
// plans and final state as the engine's own in-memory table on the same
// scenario, dry runs that write nothing, progress, and failures.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { MemoryTable, Replica, field } from "../dist/index.js";

const dir = () => mkdtempSync(join(tmpdir(), "chittysync-node-"));

/** A table in a Map, with incremental fetches: outside edits are versioned; the adapter's own writes are not echoed. */
class MapAdapter {
  system = "js-map";
  target = "services";
  rows = new Map();
  version = 0;
  edited = new Map();
  deletedLog = [];
  writes = 0;

  outsideWrite(id, fields) {
    this.version++;
    this.rows.set(id, { ...(this.rows.get(id) ?? {}), ...fields });
    this.edited.set(id, this.version);
  }
  outsideDelete(id) {
    this.version++;
    this.rows.delete(id);
    this.deletedLog.push([this.version, id]);
  }
  columns() {
    return ["id", "name", "tier"];
  }
  fetch(since) {
    const all = [...this.rows.keys()].sort();
    if (since === undefined) {
      return { rows: all.map((id) => ({ id, fields: { ...this.rows.get(id) } })), complete: true, cursor: String(this.version) };
    }
    const after = Number(since);
    const rows = [...this.edited.entries()]
      .filter(([id, v]) => v > after && this.rows.has(id))
      .sort()
      .map(([id]) => ({ id, fields: { ...this.rows.get(id) } }));
    const deleted = this.deletedLog.filter(([v]) => v > after).map(([, id]) => id);
    return { rows, deleted, complete: false, cursor: String(this.version) };
  }
  apply(ops) {
    this.writes += ops.length;
    return ops.map((op) => {
      if (op.kind === "create") this.rows.set(op.id, { ...op.fields });
      else if (op.kind === "update") {
        const row = this.rows.get(op.id) ?? {};
        for (const [k, v] of Object.entries(op.fields)) {
          if (v === null) delete row[k];
          else row[k] = v;
        }
        this.rows.set(op.id, row);
      } else this.rows.delete(op.id);
      return op.id;
    });
  }
}

const comparable = (plan) => ({
  changes: plan.changes,
  conflicts: plan.conflicts,
  invalid: plan.invalid,
  summary: plan.summary,
  deletes: plan.deletes,
});

const remote = (table) => ({
  write(id, fields) {
    if (table instanceof MemoryTable) table.insert(id, fields);
    else table.outsideWrite(id, fields);
  },
  update(id, fields) {
    if (table instanceof MemoryTable) table.update(id, fields);
    else table.outsideWrite(id, fields);
  },
  rows() {
    if (table instanceof MemoryTable) {
      return table.rows();
    }
    return Object.fromEntries([...table.rows].map(([id, f]) => [id, { ...f }]));
  },
});

async function scenario(kind, table) {
  const replica = Replica.open(join(dir(), `${kind}.db`));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true }), field("tier", "integer")]);
  const added = replica.addBinding({ name: "mirror", registry: "services", kind, target: "services" });
  assert.equal(added.madeWriter, true);
  const r = remote(table);
  reg.put({ name: "billing", tier: 1 }, "r1");
  reg.put({ name: "search", tier: 2 }, "r2");
  r.write("x1", { name: "mail", tier: 3 });
  r.write("bad", { tier: 2 });

  const plans = [];
  const dry = await replica.runMirror("mirror", table, { dryRun: true });
  plans.push(comparable(dry.plan));
  assert.equal(dry.applied, 0);
  assert.deepEqual(Object.keys(r.rows()).sort(), ["bad", "x1"]);
  assert.equal(reg.size, 2);

  let stages = 0;
  let done = 0;
  const first = await replica.runMirror("mirror", table, {
    progress: { stage: () => stages++, advance: (n) => (done += n) },
  });
  plans.push(comparable(first.plan));
  assert.ok(first.applied > 0 && first.failed.length === 0);
  assert.ok(stages > 0 && done > 0);

  r.update("x1", { tier: 1 });
  reg.put({ tier: 3 }, "r1");
  reg.delete("r2");
  plans.push(comparable((await replica.runMirror("mirror", table)).plan));
  plans.push(comparable((await replica.runMirror("mirror", table)).plan));
  const records = Object.fromEntries(reg.list().map((x) => [x.id, x.fields]));
  return { plans, rows: r.rows(), records, replica, added, reg };
}

test("a JavaScript adapter plans and ends like the in-memory table", async () => {
  const js = await scenario("js-map", new MapAdapter());
  const mem = await scenario("memory", new MemoryTable("services"));
  assert.deepEqual(js.plans, mem.plans);
  assert.deepEqual(js.rows, mem.rows);
  assert.deepEqual(js.records, mem.records);
  assert.deepEqual(js.rows.r1, { name: "billing", tier: 3 });
  assert.equal(js.rows.r2, undefined);
  assert.equal(js.plans[0].summary.invalid, 1);
  assert.deepEqual(js.plans.at(-1).changes, []);
  // What came from the table is signed by the binding's own key.
  const last = js.reg.audit().filter((e) => e.author === js.added.key);
  assert.ok(last.length > 0 && last.every((e) => e.message.includes("js-map")));
});

test("an adapter that throws fails the run with its reason, and nothing is lost", async () => {
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true })]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "js-map", target: "services" });
  reg.put({ name: "billing" }, "r1");
  const unreachable = new MapAdapter();
  unreachable.fetch = () => {
    throw new Error("no answer from the service");
  };
  await assert.rejects(replica.runMirror("mirror", unreachable), (e) => e.kind === "Adapter" && e.message.includes("no answer from the service"));
  const good = new MapAdapter();
  await replica.runMirror("mirror", good);
  assert.deepEqual(Object.fromEntries(good.rows), { r1: { name: "billing" } });
  assert.equal(reg.size, 1);
});

test("bulk deletes stop until allowed", async () => {
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true })]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "js-map", target: "services" });
  const table = new MapAdapter();
  reg.putMany(Array.from({ length: 30 }, (_, i) => ({ id: `r${i}`, fields: { name: `s${i}` } })));
  await replica.runMirror("mirror", table);
  assert.equal(table.rows.size, 30);
  for (let i = 0; i < 30; i++) table.outsideDelete(`r${i}`);
  await assert.rejects(replica.runMirror("mirror", table), (e) => e.kind === "TooManyDeletes");
  assert.equal(reg.size, 30);
  await replica.runMirror("mirror", table, { allowDeletes: true });
  assert.equal(reg.size, 0);
});

test("a JavaScript adapter reports an invalid row through the public API", async () => {
  const sheet = {
    system: "js-sheet",
    target: "services",
    rows: { x1: { name: "mail", tier: 1 }, x2: { name: "search", tier: 2 } },
    ops: [],
    columns: () => ["id", "name", "tier"],
    fetch() {
      const rows = Object.keys(this.rows).sort().map((id) => ({ id, fields: { ...this.rows[id] } }));
      rows.splice(1, 0, { id: "broken", invalid: "row 3 has a merged cell" });
      return { rows, complete: true };
    },
    apply(ops) {
      this.ops.push(...ops);
      return ops.map(() => undefined);
    },
  };
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true }), field("tier", "integer")]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "js-sheet", target: "services" });
  let report;
  for (let run = 0; run < 2; run++) {
    report = await replica.runMirror("mirror", sheet);
    assert.deepEqual(report.invalid.map((i) => [i.id, i.reason]), [["broken", "row 3 has a merged cell"]], `run ${run}`);
    assert.equal(report.plan.summary.invalid, 1);
    assert.deepEqual(report.failed, []);
    // The valid rows landed; the invalid one is neither mirrored nor deleted.
    assert.deepEqual(reg.list().map((r) => r.fields.name).sort(), ["mail", "search"]);
    assert.equal(reg.get("broken"), undefined);
    assert.ok(!sheet.ops.some((op) => op.id === "broken" || op.kind === "delete"));
  }
  assert.equal(report.applied, 0, "the second run had nothing left to do");
});

test("a write failed with an Error object is a failure, and the record survives the next run", async () => {
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true })]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "js-map", target: "services" });
  reg.put({ name: "billing" }, "r1");
  const table = new MapAdapter();
  const apply = table.apply.bind(table);
  // An adapter that reports its failure as an Error, not a string.
  table.apply = (ops) => ops.map(() => ({ failed: new Error("constraint refused the row") }));
  const first = await replica.runMirror("mirror", table);
  assert.equal(first.failed.length, 1);
  assert.ok(JSON.stringify(first.failed).includes("constraint refused the row"));
  assert.equal(table.rows.size, 0);
  // The next complete fetch sees no row: the record must not be taken as deleted remotely.
  table.apply = apply;
  await replica.runMirror("mirror", table);
  assert.equal(reg.size, 1);
  assert.deepEqual(Object.fromEntries(table.rows), { r1: { name: "billing" } });
});

test("an adapter with the old `table` property still names its table; one with neither is refused", async () => {
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true })]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "js-map", target: "services" });
  const old = new MapAdapter();
  delete old.target;
  old.table = "legacy_services";
  old.outsideWrite("x1", { name: "mail" });
  await replica.runMirror("mirror", old);
  // The change that brought x1 names the table it came from.
  assert.ok(reg.audit().some((e) => e.message.includes("legacy_services")));
  const nameless = new MapAdapter();
  delete nameless.target;
  await assert.rejects(replica.runMirror("mirror", nameless), (e) => e instanceof TypeError && e.message.includes("no `target`"));
});

test("a scheduled binding records its runs", async () => {
  const replica = Replica.open(join(dir(), "a.db"));
  const reg = replica.createRegistry("services", [field("name", "text", { required: true })]);
  replica.addBinding({ name: "mirror", registry: "services", kind: "memory", target: "services", everySecs: 300 });
  assert.deepEqual(replica.bindings().map((b) => b.everySecs), [300n]);

  const table = new MemoryTable("services");
  reg.put({ name: "billing" }, "r1");
  table.insert("x1", { name: "mail" });
  table.insert("bad", {}); // breaks the schema: no name
  const result = await replica.runMirror("mirror", table);
  assert.ok(result.applied >= 2);
  assert.deepEqual(result.pending.map((p) => [p.id, p.state]), [["bad", "invalid"]]);

  const runs = replica.mirrorRuns("mirror");
  assert.equal(runs.length, 1);
  assert.equal(runs[0].outcome, "ok");
  assert.equal(runs[0].error, undefined);
  assert.equal(Number(runs[0].applied), result.applied);
  assert.equal(runs[0].invalid, 1n);

  const off = replica.setBindingSchedule("mirror");
  assert.equal(off.everySecs, undefined);
  assert.deepEqual(replica.bindings().map((b) => b.everySecs), [undefined]);
  assert.equal(replica.setBindingSchedule("mirror", 60).everySecs, 60n);
  assert.throws(() => replica.setBindingSchedule("no-such-binding"), (e) => e.kind === "NotFound");
});

// The Node package end to end: replicas, registries, errors, conflicts,
// exchange, audit and verify.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ChittySyncError, Decimal, Replica, decimal, field } from "../dist/index.js";

const dir = () => mkdtempSync(join(tmpdir(), "chittysync-node-"));

const schema = () => [
  field("name", "text", { required: true, unique: true }),
  field("tier", "integer", { min: 1, max: 3 }),
  field("price", "decimal"),
  field("active", "bool"),
  field("tags", "multi_select", { options: ["core", "edge", "beta"] }),
  field("notes", "long_text"),
  field("meta", "json"),
];

test("replica and registry lifecycle", () => {
  const d = dir();
  const replica = Replica.open(join(d, "a.db"));
  assert.equal(replica.publicKey.length, 64);
  const services = replica.createRegistry("services", schema());
  const id = services.put({
    name: "billing",
    tier: 2,
    price: decimal("19.99"),
    active: true,
    tags: new Set(["core", "edge"]),
    notes: "handles invoices",
    meta: { owner: "finance", ports: [443] },
  });
  const r = services.get(id);
  assert.equal(r.fields.name, "billing");
  assert.equal(r.fields.tier, 2);
  assert.ok(r.fields.price instanceof Decimal);
  assert.equal(r.fields.price.value, "19.99");
  assert.equal(r.fields.active, true);
  assert.deepEqual(r.fields.tags, new Set(["core", "edge"]));
  assert.deepEqual(r.fields.meta, { owner: "finance", ports: [443] });
  assert.equal(r.deleted, false);

  services.put({ tier: 3 }, id);
  services.unset(id, "notes");
  assert.equal(services.get(id).fields.notes, undefined);
  const ids = services.putMany([{ fields: { name: "search" } }, { id: "fixed", fields: { name: "mail", tags: ["beta"] } }]);
  assert.equal(ids[1], "fixed");
  assert.equal(services.size, 3);
  assert.deepEqual(services.list({ tags: "beta" }).map((x) => x.id), ["fixed"]);
  services.delete("fixed");
  assert.equal(services.get("fixed").deleted, true);
  assert.equal(services.size, 2);

  const again = Replica.open(join(d, "a.db")).registry("services");
  assert.equal(again.stateDigest(), services.stateDigest());
  assert.equal(again.schema.fields[0].name, "name");
});

test("schema errors are thrown with the same information", () => {
  const services = Replica.open(join(dir(), "a.db")).createRegistry("services", schema());
  const first = services.put({ name: "billing" });
  assert.throws(
    () => services.put({ name: "billing" }),
    (e) =>
      e instanceof ChittySyncError &&
      e.kind === "Invalid" &&
      e.registry === "services" &&
      e.field === "name" &&
      e.value === "billing" &&
      e.rule === "unique" &&
      e.message.includes(first) &&
      e.message.includes("fix the value or change the schema"),
  );
  assert.throws(() => services.put({ name: "x", tier: 9 }), (e) => e.kind === "Invalid" && e.rule === "max");
  assert.throws(() => services.put({ tier: 1 }), (e) => e.kind === "Invalid" && e.rule === "required");
  assert.throws(() => services.delete("nope"), (e) => e.kind === "NotFound");
  assert.throws(() => services.put({ name: null }), (e) => e.kind === "Argument" && e.message.includes("unset"));
  assert.throws(() => field("x", "colour"), TypeError);
  assert.equal(services.size, 1);
});

test("two replicas exchange, conflict and resolve", () => {
  const d = dir();
  const a = Replica.open(join(d, "a.db"));
  const b = Replica.open(join(d, "b.db"));
  const ra = a.createRegistry("services", { conflict_policy: "manual", fields: [{ name: "name", type: "text" }] });
  ra.setMember(b.publicKey, "writer");
  ra.put({ name: "start" }, "svc");
  const summary = b.importBundle(ra.exportBundle());
  assert.equal(summary.created, true);
  const rb = b.registry("services");

  ra.put({ name: "from a" }, "svc");
  rb.put({ name: "from b" }, "svc");
  b.importBundle(ra.exportBundle(rb.heads()));
  a.importBundle(rb.exportBundle(ra.heads()));
  assert.deepEqual(ra.heads(), rb.heads());
  const [c] = ra.conflicts();
  assert.equal(c.policy, "manual");
  assert.equal(c.chosen, undefined);
  assert.deepEqual(new Set(c.candidates.map((x) => x.value)), new Set(["from a", "from b"]));
  assert.deepEqual(new Set(c.candidates.map((x) => x.author)), new Set([a.publicKey, b.publicKey]));

  ra.resolve("svc", "name", "agreed");
  b.importBundle(ra.exportBundle(rb.heads()));
  assert.deepEqual(rb.conflicts(), []);
  assert.equal(rb.get("svc").fields.name, "agreed");
  assert.equal(ra.stateDigest(), rb.stateDigest());
});

test("a forged bundle is refused whole, and readers cannot write", () => {
  const d = dir();
  const a = Replica.open(join(d, "a.db"));
  const reg = a.createRegistry("r", [field("name")]);
  reg.put({ name: "x" });
  const bundle = reg.exportBundle();
  bundle[bundle.length - 10] ^= 0xff;
  const b = Replica.open(join(d, "b.db"));
  assert.throws(() => b.importBundle(bundle), (e) => e.kind === "Refused");
  assert.deepEqual(b.registries(), []);

  reg.setMember(b.publicKey, "reader");
  b.importBundle(reg.exportBundle());
  assert.throws(() => b.registry("r").put({ name: "no" }), (e) => e.kind === "NotPermitted");
  assert.throws(() => reg.setMember("not-a-key", "writer"), (e) => e.kind === "Argument");
});

test("audit log, verify and revocation", () => {
  const d = dir();
  const a = Replica.open(join(d, "a.db"));
  const w = Replica.open(join(d, "w.db"));
  const ra = a.createRegistry("r", [field("name")]);
  ra.setMember(w.publicKey, "writer");
  const id = ra.put({ name: "one" });
  ra.put({ name: "two" }, id);
  const entries = ra.audit({ record: id });
  assert.equal(entries.length, 2);
  assert.ok(entries.every((e) => e.signature === "valid" && e.author === a.publicKey));

  w.importBundle(ra.exportBundle());
  ra.removeMember(w.publicKey);
  w.registry("r").put({ name: "edited while removed" }, id);
  a.importBundle(w.registry("r").exportBundle(ra.heads()));
  assert.equal(ra.get(id).fields.name, "two");
  assert.deepEqual(ra.audit().filter((e) => e.revokedBy !== undefined).map((e) => e.author), [w.publicKey]);
  const report = a.verify();
  assert.equal(report.registries[0].revoked, 1n);
  assert.equal(report.registries[0].records, 1n);
});

test("an array for a json field stays JSON, on one write and in bulk", () => {
  const services = Replica.open(join(dir(), "a.db")).createRegistry("services", schema());
  const one = services.put({ name: "billing", meta: ["b", "a", "a"] });
  const [bulk] = services.putMany([{ fields: { name: "search", meta: ["z", "y"] } }]);
  assert.deepEqual(services.get(one).fields.meta, ["b", "a", "a"]);
  assert.deepEqual(services.get(bulk).fields.meta, ["z", "y"]);
  assert.throws(() => services.putMany([{ fields: { name: "mail", tier: null } }]), (e) => e.kind === "Argument");
});

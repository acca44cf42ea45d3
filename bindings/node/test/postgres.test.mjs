// A Postgres binding run from Node against a real PostgreSQL server
// (CHITTYSYNC_TEST_PG_URL, which scripts/test sets with scripts/pg-up).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Replica, field } from "../dist/index.js";

const URL_VAR = "CHITTYSYNC_TEST_PG_URL";

test("two replicas mirror through a Postgres table", async () => {
  const url = process.env[URL_VAR];
  assert.ok(url, `${URL_VAR} is not set; run scripts/pg-up (scripts/test does) to start PostgreSQL`);
  const d = mkdtempSync(join(tmpdir(), "chittysync-node-"));
  const table = `js_services_${randomBytes(6).toString("hex")}`;
  const fields = () => [field("name", "text", { required: true }), field("tier", "integer")];

  const a = Replica.open(join(d, "a.db"));
  const ra = a.createRegistry("services", fields());
  a.addBinding({ name: "pg", registry: "services", kind: "postgres", target: table, secretEnv: URL_VAR });
  const info = await a.prepareBinding("pg", true);
  assert.equal(info.incremental, true);
  assert.ok(["id", "name", "tier"].every((c) => info.columns.includes(c)));
  const stored = JSON.stringify(a.bindings(), (_, v) => (v instanceof Map ? Object.fromEntries(v) : v));
  assert.ok(stored.includes(URL_VAR), "the binding names the variable");
  assert.equal(stored.includes(url), false, "the secret is never stored");

  ra.put({ name: "billing", tier: 1 }, "r1");
  ra.put({ name: "search", tier: 2 }, "r2");
  const dry = await a.runMirror("pg", undefined, { dryRun: true });
  assert.equal(dry.plan.summary.remote_create, 2);
  assert.equal(dry.applied, 0);
  assert.equal((await a.runMirror("pg")).applied, 2);

  const b = Replica.open(join(d, "b.db"));
  const rb = b.createRegistry("services", fields());
  b.addBinding({ name: "pg", registry: "services", kind: "postgres", target: table, secretEnv: URL_VAR, direction: "pull" });
  await b.runMirror("pg");
  const state = () => Object.fromEntries(rb.list().map((r) => [r.id, r.fields]));
  assert.deepEqual(state(), { r1: { name: "billing", tier: 1 }, r2: { name: "search", tier: 2 } });

  ra.put({ tier: 3 }, "r1");
  ra.delete("r2");
  await a.runMirror("pg");
  await b.runMirror("pg");
  assert.deepEqual(state(), { r1: { name: "billing", tier: 3 } });
});

// The shared cross-language vectors (bindings/vectors.json), each run
// through put/get, list and bulk putMany; the Python suite runs the same
// file, so the two packages cannot drift.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Decimal, Replica, decimal, field } from "../dist/index.js";

const { vectors } = JSON.parse(readFileSync(new URL("../../vectors.json", import.meta.url), "utf8"));
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A vector's input as the JavaScript value a program would pass. */
function js(v) {
  if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 1) {
    const [[tag, inner]] = Object.entries(v);
    if (tag === "$int") return BigInt(inner);
    if (tag === "$decimal") return decimal(inner);
    if (tag === "$set") return new Set(inner);
  }
  return v;
}

/** A value read back, spelled as the vectors spell it. */
function neutral(v) {
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") {
    assert.ok(Number.isSafeInteger(v), `a number read back must be a safe integer, not ${v}`);
    return v;
  }
  if (typeof v === "bigint") {
    assert.ok(v > SAFE || v < -SAFE, `${v} fits a number, so must be read back as one`);
    return { $int: v.toString() };
  }
  if (v instanceof Decimal) return { $decimal: v.value };
  if (v instanceof Set) return { $set: [...v].sort() };
  return { $json: v };
}

function same(got, expected) {
  // A document reads back as the language's value: a scalar document is that scalar.
  if (expected !== null && typeof expected === "object" && Object.keys(expected).join() === "$json") {
    expected = neutral(expected.$json);
  }
  // As text, so object key order counts.
  assert.equal(JSON.stringify(neutral(got)), JSON.stringify(expected));
}

for (const vector of vectors) {
  test(`vector: ${vector.name}`, () => {
    const replica = Replica.open(join(mkdtempSync(join(tmpdir(), "chittysync-vectors-")), "v.db"));
    const reg = replica.createRegistry("vectors", [field("v", vector.field.type, { options: vector.field.options ?? [] })]);
    const value = js(vector.input);
    if (vector.error !== undefined) {
      assert.throws(() => reg.put({ v: value }), (e) => e.kind === vector.error);
      assert.throws(() => reg.putMany([{ fields: { v: value } }]), (e) => e.kind === vector.error);
      assert.equal(reg.size, 0);
      return;
    }
    const id = reg.put({ v: value });
    same(reg.get(id).fields.v, vector.expected);
    same(reg.list().find((r) => r.id === id).fields.v, vector.expected);
    const [bulk] = reg.putMany([{ fields: { v: value } }]);
    same(reg.get(bulk).fields.v, vector.expected);
    same(reg.list().find((r) => r.id === bulk).fields.v, vector.expected);
    if (vector.filter) {
      assert.deepEqual(new Set(reg.list({ v: value }).map((r) => r.id)), new Set([id, bulk]));
    }
  });
}

// Two replicas syncing over loopback TCP from Node: a hub, one-round syncs
// with a pinned key, and the stream of changes peers deliver.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Replica, field } from "../dist/index.js";

test("two replicas sync over loopback, and changes stream in", async () => {
  const d = mkdtempSync(join(tmpdir(), "chittysync-node-"));
  const a = Replica.open(join(d, "a.db"));
  const b = Replica.open(join(d, "b.db"));
  const ra = a.createRegistry("services", [field("name", "text", { required: true })]);
  ra.setMember(b.publicKey, "writer");
  ra.put({ name: "billing" }, "r1");

  const hub = await a.serve("127.0.0.1:0");
  try {
    const stream = b.changes();
    const first = await b.syncPeer(hub.address(), { key: a.publicKey });
    assert.equal(first.peer, a.publicKey);
    assert.equal(first.registries[0].name, "services");
    assert.ok(first.registries[0].changesIn > 0n);
    for await (const arrived of stream) {
      assert.equal(arrived.name, "services");
      assert.equal(arrived.peer, a.publicKey);
      break;
    }

    const rb = b.registry("services");
    assert.equal(rb.get("r1").fields.name, "billing");
    rb.put({ name: "search" }, "r2");
    const second = await b.syncPeer(hub.address(), { key: a.publicKey });
    assert.ok(second.registries[0].changesOut > 0n);
    assert.equal(ra.get("r2").fields.name, "search");
    assert.deepEqual(ra.heads(), rb.heads());
    assert.equal(ra.stateDigest(), rb.stateDigest());

    const c = Replica.open(join(d, "c.db"));
    await assert.rejects(c.syncPeer(hub.address(), { key: b.publicKey }), (e) => e.kind === "Refused");
  } finally {
    hub.shutdown();
  }
  await assert.rejects(b.syncPeer(hub.address(), { key: a.publicKey, timeoutSecs: 5 }), (e) => e.kind === "Network");
});

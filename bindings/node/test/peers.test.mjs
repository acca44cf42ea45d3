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

test("a hub takes a new registry only from keys allowed to create", async () => {
  const d = mkdtempSync(join(tmpdir(), "chittysync-node-"));
  const hubReplica = Replica.open(join(d, "hub.db"));
  const client = Replica.open(join(d, "client.db"));
  const notes = client.createRegistry("notes", [field("text", "text")]);
  notes.setMember(hubReplica.publicKey, "writer");
  notes.put({ text: "from the client" }, "n1");

  // Accepted as a peer, but not allowed to create: the push is refused.
  let hub = await hubReplica.serve("127.0.0.1:0", { allow: [client.publicKey] });
  try {
    const report = await client.syncPeer(hub.address(), { key: hubReplica.publicKey });
    const refused = report.registries.filter((r) => r.refused !== undefined);
    assert.deepEqual(refused.map((r) => r.name), ["notes"]);
    assert.match(refused[0].refused, /takes no new registries/);
    assert.deepEqual(hubReplica.registries(), []);
  } finally {
    hub.shutdown();
  }

  // Allowed to create: the hub takes it.
  hub = await hubReplica.serve("127.0.0.1:0", { allowCreate: [client.publicKey] });
  try {
    const report = await client.syncPeer(hub.address(), { key: hubReplica.publicKey });
    assert.ok(report.registries.every((r) => r.refused === undefined));
    assert.deepEqual(hubReplica.registries().map((r) => r.name), ["notes"]);
    assert.equal(hubReplica.registry("notes").get("n1").fields.text, "from the client");
  } finally {
    hub.shutdown();
  }
});

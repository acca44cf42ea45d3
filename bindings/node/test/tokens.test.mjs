// API tokens from Node: each token's own key is a member of its registries
// with its role until the token is removed; the secret is shown once and
// never listed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Replica, Role, field } from "../dist/index.js";

const dir = () => mkdtempSync(join(tmpdir(), "chittysync-node-"));

test("a token is a member of its registries until removed", () => {
  const replica = Replica.open(join(dir(), "hub.db"));
  const services = replica.createRegistry("services", [field("name", "text")]);

  const added = replica.addToken("deploy-bot", ["services"], { role: "writer", expiresInSeconds: 86400 });
  assert.equal(added.name, "deploy-bot");
  assert.deepEqual(added.registries, ["services"]);
  assert.equal(added.role, Role.Writer);
  assert.ok(added.secret.startsWith("cst_"));
  assert.equal(added.expiresAt - added.createdAt, 86_400_000n);

  const listed = replica.tokens();
  assert.deepEqual(listed.map((t) => t.name), ["deploy-bot"]);
  assert.equal(listed[0].key, added.key);
  assert.deepEqual(listed[0].registries, ["services"]);
  assert.equal(listed[0].lastUsedAt, undefined);
  assert.equal("secret" in listed[0], false);

  const member = services.members().find((m) => m.key === added.key);
  assert.equal(member.role, Role.Writer);

  const removed = replica.removeToken("deploy-bot");
  assert.equal(removed.key, added.key);
  assert.deepEqual(replica.tokens(), []);
  assert.equal(services.members().some((m) => m.key === added.key), false);
});

test("token errors are of the right kind", () => {
  const d = dir();
  const replica = Replica.open(join(d, "hub.db"));
  const services = replica.createRegistry("services", [field("name", "text")]);
  const kind = (k) => (e) => e.kind === k;

  assert.throws(() => replica.addToken("not a name", ["services"]), (e) => e.kind === "Argument" && /not a token name/.test(e.message));
  assert.throws(() => replica.addToken("no-registries", []), kind("Argument"));
  assert.throws(() => replica.addToken("bot", ["no-such-registry"]), kind("NotFound"));
  assert.throws(() => replica.removeToken("never-added"), kind("NotFound"));
  replica.addToken("bot", ["services"], { role: "reader", expiresInSeconds: 60 });
  assert.throws(() => replica.addToken("bot", ["services"]), kind("Argument"));

  // Only an admin of the registry can make a token's key a member.
  const writer = Replica.open(join(d, "writer.db"));
  services.setMember(writer.publicKey, "writer");
  writer.importBundle(services.exportBundle());
  assert.throws(() => writer.addToken("bot", ["services"]), (e) => e.kind === "NotPermitted" && /token 'bot'/.test(e.message));
  assert.deepEqual(writer.tokens(), []);
});

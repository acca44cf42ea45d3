"""The Python package end to end: replicas, registries, errors, conflicts,
exchange, audit and verify."""

import decimal
import os

import pytest

import chittysync as cs


def schema():
    return [
        cs.field("name", "text", required=True, unique=True),
        cs.field("tier", "integer", min=1, max=3),
        cs.field("price", "decimal"),
        cs.field("active", "bool"),
        cs.field("tags", "multi_select", options=["core", "edge", "beta"]),
        cs.field("notes", "long_text"),
        cs.field("meta", "json"),
    ]


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def test_replica_and_registry_lifecycle(tmp):
    replica = cs.Replica(os.fspath(tmp / "a.db"))
    assert len(replica.public_key) == 64
    services = replica.create_registry("services", schema())
    rid = services.put(
        name="billing",
        tier=2,
        price=decimal.Decimal("19.99"),
        active=True,
        tags={"core", "edge"},
        notes="handles invoices",
        meta={"owner": "finance", "ports": [443]},
    )
    record = services.get(rid)
    assert record["name"] == "billing"
    assert record["tier"] == 2
    assert record["price"] == decimal.Decimal("19.99")
    assert record["active"] is True
    assert record["tags"] == {"core", "edge"}
    assert record["meta"] == {"owner": "finance", "ports": [443]}
    assert not record.deleted

    services.put(rid, tier=3)
    services.unset(rid, "notes")
    assert services.get(rid).get("notes") is None
    assert services.get(rid)["tier"] == 3
    ids = services.put_many([{"name": "search"}, ("fixed-id", {"name": "mail", "tags": {"beta"}})])
    assert ids[1] == "fixed-id"
    assert len(services) == 3
    assert [r.id for r in services.list(tags="beta")] == ["fixed-id"]
    services.delete("fixed-id")
    assert services.get("fixed-id").deleted
    assert len(services) == 2

    # Reopening the file shows the same state.
    again = cs.Replica(os.fspath(tmp / "a.db")).registry("services")
    assert again.state_digest() == services.state_digest()
    assert [r.name for r in cs.Replica(os.fspath(tmp / "a.db")).registries()] == ["services"]
    assert again.schema["fields"][0]["name"] == "name"


def test_schema_errors_are_exceptions_with_the_same_information(tmp):
    services = cs.Replica(os.fspath(tmp / "a.db")).create_registry("services", schema())
    first = services.put(name="billing")
    with pytest.raises(cs.ChittyError.Invalid) as caught:
        services.put(name="billing")
    e = caught.value
    assert (e.registry, e.field, e.value, e.rule) == ("services", "name", "billing", "unique")
    assert first in e.message and "fix the value or change the schema" in e.message
    with pytest.raises(cs.ChittyError.Invalid) as caught:
        services.put(name="x", tier=9)
    assert caught.value.rule == "max"
    with pytest.raises(cs.ChittyError.Invalid) as caught:
        services.put(tier=1)
    assert caught.value.rule == "required"
    with pytest.raises(cs.ChittyError.NotFound):
        services.delete("no-such-record")
    with pytest.raises(cs.ChittyError.NotFound):
        cs.Replica(os.fspath(tmp / "a.db")).registry("nope")
    with pytest.raises(cs.ChittyError.Schema):
        cs.Replica(os.fspath(tmp / "b.db")).create_registry("bad", schema="[[fields]]\nname = 1\n")
    with pytest.raises(TypeError):
        services.put(name=object())
    # Nothing of the refused writes landed.
    assert len(services) == 1


def test_two_replicas_exchange_conflict_and_resolve(tmp):
    a = cs.Replica(os.fspath(tmp / "a.db"))
    b = cs.Replica(os.fspath(tmp / "b.db"))
    ra = a.create_registry(
        "services",
        schema='{"conflict_policy": "manual", "fields": [{"name": "name", "type": "text"}]}',
    )
    ra.set_member(b.public_key, "writer")
    ra.put("svc", name="start")
    summary = b.import_bundle(ra.export_bundle())
    assert summary.created and summary.applied == 3
    rb = b.registry("services")

    ra.put("svc", name="from a")
    rb.put("svc", name="from b")
    b.import_bundle(ra.export_bundle(rb.heads()))
    a.import_bundle(rb.export_bundle(ra.heads()))
    assert ra.heads() == rb.heads()
    conflicts = ra.conflicts()
    assert len(conflicts) == 1
    c = conflicts[0]
    assert (c.record, c.field, c.policy, c.chosen) == ("svc", "name", "manual", None)
    assert {x.value for x in c.candidates} == {"from a", "from b"}
    assert {x.author for x in c.candidates} == {a.public_key, b.public_key}

    ra.resolve("svc", "name", "agreed")
    b.import_bundle(ra.export_bundle(rb.heads()))
    assert rb.conflicts() == []
    assert rb.get("svc")["name"] == "agreed"
    assert ra.state_digest() == rb.state_digest()


def test_a_forged_bundle_is_refused_whole(tmp):
    a = cs.Replica(os.fspath(tmp / "a.db"))
    reg = a.create_registry("r", [cs.field("name")])
    reg.put(name="x")
    bundle = bytearray(reg.export_bundle())
    bundle[-10] ^= 0xFF
    b = cs.Replica(os.fspath(tmp / "b.db"))
    with pytest.raises(cs.ChittyError) as caught:
        b.import_bundle(bytes(bundle))
    assert isinstance(caught.value, (cs.ChittyError.Refused,))
    assert b.registries() == []


def test_readers_cannot_write(tmp):
    a = cs.Replica(os.fspath(tmp / "a.db"))
    b = cs.Replica(os.fspath(tmp / "b.db"))
    ra = a.create_registry("r", [cs.field("name")])
    ra.set_member(b.public_key, cs.Role.READER)
    b.import_bundle(ra.export_bundle())
    with pytest.raises(cs.ChittyError.NotPermitted):
        b.registry("r").put(name="nope")
    with pytest.raises(ValueError):
        ra.set_member(b.public_key, "owner")
    with pytest.raises(cs.ChittyError.Argument):
        ra.set_member("not-a-key", "writer")


def test_audit_log_and_verify(tmp):
    a = cs.Replica(os.fspath(tmp / "a.db"))
    reg = a.create_registry("r", [cs.field("name")])
    rid = reg.put(name="one")
    reg.put(rid, name="two")
    entries = reg.audit(record=rid)
    assert len(entries) == 2
    assert all(e.signature == "valid" and e.author == a.public_key for e in entries)
    last = entries[-1].effects
    assert any(
        x.is_field_set() and x.field == "name" and x.old.value == "one" and x.new.value == "two"
        for x in last
    )
    report = a.verify()
    assert report.registries[0].changes == 3
    assert report.registries[0].records == 1
    assert report.journal_rows >= 3


def test_a_removed_members_concurrent_edit_is_revoked(tmp):
    a = cs.Replica(os.fspath(tmp / "a.db"))
    w = cs.Replica(os.fspath(tmp / "w.db"))
    ra = a.create_registry("r", [cs.field("name")])
    ra.set_member(w.public_key, "writer")
    ra.put("x", name="original")
    w.import_bundle(ra.export_bundle())
    rw = w.registry("r")
    ra.remove_member(w.public_key)
    rw.put("x", name="edited while removed")
    a.import_bundle(rw.export_bundle(ra.heads()))
    assert ra.get("x")["name"] == "original"
    revoked = [e for e in ra.audit() if e.revoked_by]
    assert [e.author for e in revoked] == [w.public_key]
    assert a.verify().registries[0].revoked == 1


def test_bulk_writes_keep_json_as_given_and_filters_read_like_values(tmp_path):
    services = cs.Replica(os.fspath(tmp_path / "a.db")).create_registry("services", schema())
    ids = services.put_many(
        [
            {"name": "billing", "active": True, "meta": ["b", "a", "a"], "tags": {"core"}},
            {"name": "search", "active": False, "tier": 3},
        ]
    )
    assert services.get(ids[0])["meta"] == ["b", "a", "a"]
    assert [r.id for r in services.list(active=True)] == [ids[0]]
    assert [r["tier"] for r in services.list(active=False)] == [3]
    with pytest.raises(cs.ChittyError.Argument) as caught:
        services.put_many([{"name": "mail", "tier": None}])
    assert "unset" in caught.value.message
    assert len(services) == 2

"""Two replicas syncing over loopback TCP from Python: a hub, one-round
syncs with a pinned key, and the stream of changes peers deliver."""

import asyncio
import os

import pytest

import chittysync as cs


def test_two_replicas_sync_over_loopback_and_changes_stream_in(tmp_path):
    async def main():
        a = cs.Replica(os.fspath(tmp_path / "a.db"))
        b = cs.Replica(os.fspath(tmp_path / "b.db"))
        ra = a.create_registry("services", [cs.field("name", "text", required=True)])
        ra.set_member(b.public_key, "writer")
        ra.put("r1", name="billing")

        hub = await a.serve("127.0.0.1:0")
        try:
            stream = b.changes()
            first = await b.sync_peer(hub.address(), key=a.public_key)
            assert first.peer == a.public_key
            assert [(r.name, r.changes_in > 0) for r in first.registries] == [("services", True)]
            arrived = await asyncio.wait_for(stream.next(), 10)
            assert arrived.name == "services" and arrived.peer == a.public_key and arrived.applied > 0

            rb = b.registry("services")
            assert rb.get("r1")["name"] == "billing"
            rb.put("r2", name="search")
            second = await b.sync_peer(hub.address(), key=a.public_key)
            assert second.registries[0].changes_out > 0
            assert ra.get("r2")["name"] == "search"
            assert ra.heads() == rb.heads() and ra.state_digest() == rb.state_digest()

            # A peer proving another key than the pinned one is refused.
            c = cs.Replica(os.fspath(tmp_path / "c.db"))
            with pytest.raises(cs.ChittyError.Refused):
                await c.sync_peer(hub.address(), key=b.public_key)
        finally:
            hub.shutdown()
        with pytest.raises(cs.ChittyError.Network):
            await b.sync_peer(hub.address(), key=a.public_key, timeout=5)

    asyncio.run(main())


def test_a_hub_takes_a_new_registry_only_from_keys_allowed_to_create(tmp_path):
    async def main():
        hub_replica = cs.Replica(os.fspath(tmp_path / "hub.db"))
        client = cs.Replica(os.fspath(tmp_path / "client.db"))
        notes = client.create_registry("notes", [cs.field("text", "text")])
        notes.set_member(hub_replica.public_key, "writer")
        notes.put("n1", text="from the client")

        # Accepted as a peer, but not allowed to create: the push is refused.
        hub = await hub_replica.serve("127.0.0.1:0", allow=[client.public_key])
        try:
            report = await client.sync_peer(hub.address(), key=hub_replica.public_key)
            refused = [r for r in report.registries if r.refused]
            assert [r.name for r in refused] == ["notes"], report
            assert "takes no new registries" in refused[0].refused
            assert [r.name for r in hub_replica.registries()] == []
        finally:
            hub.shutdown()

        # Allowed to create: the hub takes it.
        hub = await hub_replica.serve("127.0.0.1:0", allow_create=[client.public_key])
        try:
            report = await client.sync_peer(hub.address(), key=hub_replica.public_key)
            assert all(r.refused is None for r in report.registries), report
            assert [r.name for r in hub_replica.registries()] == ["notes"]
            assert hub_replica.registry("notes").get("n1")["text"] == "from the client"
        finally:
            hub.shutdown()

    asyncio.run(main())

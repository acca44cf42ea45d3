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

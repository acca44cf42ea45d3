"""A Postgres binding run from Python against a real PostgreSQL server
(CHITTYSYNC_TEST_PG_URL, which scripts/test sets with scripts/pg-up)."""

import asyncio
import os
import uuid

import pytest

import chittysync as cs

URL_VAR = "CHITTYSYNC_TEST_PG_URL"


@pytest.fixture
def pg_url():
    url = os.environ.get(URL_VAR)
    if not url:
        pytest.fail(f"{URL_VAR} is not set; run scripts/pg-up (scripts/test does) to start PostgreSQL")
    return url


def test_two_replicas_mirror_through_a_postgres_table(tmp_path, pg_url):
    table = f"py_services_{uuid.uuid4().hex[:12]}"
    fields = [cs.field("name", "text", required=True), cs.field("tier", "integer")]

    a = cs.Replica(os.fspath(tmp_path / "a.db"))
    ra = a.create_registry("services", fields)
    a.add_binding("pg", "services", "postgres", table, secret_env=URL_VAR)
    info = asyncio.run(a.prepare_binding("pg", create=True))
    assert info.incremental and set(info.columns) >= {"id", "name", "tier"}
    # The secret stays in the environment, never in the stored binding.
    stored = a.bindings()[0]
    assert stored.secret_env == URL_VAR and pg_url not in repr(stored)

    ra.put("r1", name="billing", tier=1)
    ra.put("r2", name="search", tier=2)
    dry = asyncio.run(a.run_mirror("pg", dry_run=True))
    assert dry.plan["summary"]["remote_create"] == 2 and dry.applied == 0
    pushed = asyncio.run(a.run_mirror("pg"))
    assert pushed.applied == 2 and not pushed.failed

    b = cs.Replica(os.fspath(tmp_path / "b.db"))
    rb = b.create_registry("services", fields)
    b.add_binding("pg", "services", "postgres", table, secret_env=URL_VAR, direction="pull")
    asyncio.run(b.run_mirror("pg"))
    assert {r.id: r.fields for r in rb.list()} == {
        "r1": {"name": "billing", "tier": 1},
        "r2": {"name": "search", "tier": 2},
    }

    ra.put("r1", tier=3)
    ra.delete("r2")
    asyncio.run(a.run_mirror("pg"))
    asyncio.run(b.run_mirror("pg"))
    assert {r.id: r.fields for r in rb.list()} == {"r1": {"name": "billing", "tier": 3}}

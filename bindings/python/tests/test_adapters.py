"""Adapters written in Python, driven by the Rust sync engine: the same
plans and final state as the engine's own in-memory table on the same
scenario, dry runs that write nothing, progress, and failures."""

import asyncio
import os
from datetime import timedelta

import pytest

import chittysync as cs


class DictAdapter(cs.Adapter):
    """A table held in a Python dict, with incremental fetches: edits by
    other applications are versioned; the adapter's own writes are not
    echoed back."""

    system = "python-dict"
    target = "services"

    def __init__(self):
        self.rows = {}
        self.version = 0
        self.edited = {}  # row id -> version of its last outside edit
        self.deleted = []  # (version, row id) of outside deletes
        self.writes = 0

    # What another application does to the table.
    def outside_write(self, id, fields):
        self.version += 1
        self.rows.setdefault(id, {}).update(fields)
        self.edited[id] = self.version

    def outside_delete(self, id):
        self.version += 1
        self.rows.pop(id, None)
        self.deleted.append((self.version, id))

    def columns(self):
        return ["id", "name", "tier"]

    def fetch(self, since):
        if since is None:
            rows = [cs.Row(id=k, fields=dict(v)) for k, v in sorted(self.rows.items())]
            return cs.Fetch(rows=rows, complete=True, cursor=str(self.version))
        after = int(since)
        rows = [
            cs.Row(id=k, fields=dict(self.rows[k]))
            for k, v in sorted(self.edited.items())
            if v > after and k in self.rows
        ]
        gone = [k for v, k in self.deleted if v > after]
        return cs.Fetch(rows=rows, deleted=gone, complete=False, cursor=str(self.version))

    def apply(self, ops):
        self.writes += len(ops)
        out = []
        for op in ops:
            if isinstance(op, cs.Create):
                self.rows[op.id] = dict(op.fields)
            elif isinstance(op, cs.Update):
                row = self.rows.setdefault(op.id, {})
                for k, v in op.fields.items():
                    if v is None:
                        row.pop(k, None)
                    else:
                        row[k] = v
            else:
                self.rows.pop(op.id, None)
            out.append(op.id)
        return out


class Recorder:
    def __init__(self):
        self.stages = []
        self.done = 0

    def stage(self, name, total):
        self.stages.append((name, total))

    def advance(self, n):
        self.done += n


def comparable(plan):
    return {k: plan[k] for k in ("changes", "conflicts", "invalid", "summary", "deletes")}


class Remote:
    """The same remote edits on either kind of table."""

    def __init__(self, table):
        self.table = table

    def insert(self, id, **fields):
        if isinstance(self.table, cs.MemoryTable):
            self.table.insert(id, fields)
        else:
            self.table.outside_write(id, fields)

    def update(self, id, **fields):
        if isinstance(self.table, cs.MemoryTable):
            self.table.update(id, fields)
        else:
            self.table.outside_write(id, fields)

    def rows(self):
        if isinstance(self.table, cs.MemoryTable):
            return self.table.rows()
        return {k: dict(v) for k, v in self.table.rows.items()}


def scenario(tmp, name, table):
    """Runs the scenario on a fresh replica; returns every plan and the end state."""
    replica = cs.Replica(os.fspath(tmp / f"{name}.db"))
    reg = replica.create_registry(
        "services", [cs.field("name", "text", required=True), cs.field("tier", "integer")]
    )
    added = replica.add_binding("mirror", "services", name, "services")
    assert added.made_writer
    remote = Remote(table)
    reg.put("r1", name="billing", tier=1)
    reg.put("r2", name="search", tier=2)
    remote.insert("x1", name="mail", tier=3)
    remote.insert("bad", tier=2)  # breaks the schema: no name

    plans = []

    async def run(**kw):
        result = await replica.run_mirror("mirror", table, **kw)
        plans.append(comparable(result.plan))
        return result

    dry = asyncio.run(run(dry_run=True))
    assert dry.dry_run and dry.applied == 0
    assert set(remote.rows()) == {"x1", "bad"}, "a dry run writes nothing remotely"
    assert reg.get("x1") is None and len(reg) == 2, "nor locally"

    progress = Recorder()
    first = asyncio.run(replica.run_mirror("mirror", table, progress=progress))
    plans.append(comparable(first.plan))
    assert first.applied > 0 and not first.failed
    assert progress.stages and progress.done > 0

    remote.update("x1", tier=1)
    reg.put("r1", tier=3)
    reg.delete("r2")
    asyncio.run(run())
    asyncio.run(run())  # nothing left to do
    records = {r.id: r.fields for r in reg.list()}
    return plans, remote.rows(), records, reg


def test_a_python_adapter_plans_and_ends_like_the_in_memory_table(tmp_path):
    dict_adapter = DictAdapter()
    py_plans, py_rows, py_records, _ = scenario(tmp_path, "python", dict_adapter)
    mem_plans, mem_rows, mem_records, _ = scenario(tmp_path, "memory", cs.MemoryTable("services"))
    assert py_plans == mem_plans
    assert py_rows == mem_rows
    assert py_records == mem_records
    # The scenario did what it says, on both.
    assert py_rows["r1"] == {"name": "billing", "tier": 3}
    assert "r2" not in py_rows
    assert any(r["name"] == "mail" and r["tier"] == 1 for r in py_records.values())
    assert py_plans[0]["summary"]["invalid"] == 1
    assert py_plans[-1]["changes"] == []


def test_remote_changes_arrive_signed_by_the_binding_with_provenance(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry("services", [cs.field("name", "text", required=True)])
    added = replica.add_binding("mirror", "services", "python-dict", "services")
    adapter = DictAdapter()
    adapter.outside_write("x1", {"name": "mail"})
    asyncio.run(replica.run_mirror("mirror", adapter))
    entry = reg.audit()[-1]
    assert entry.author == added.key and entry.author != replica.public_key
    assert "python-dict" in entry.message and "services" in entry.message
    assert [b.name for b in replica.bindings()] == ["mirror"]


def test_an_adapter_that_raises_fails_its_rows_and_loses_nothing(tmp_path):
    class Broken(DictAdapter):
        def apply(self, ops):
            raise ConnectionError("the remote went away")

    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry("services", [cs.field("name", "text", required=True)])
    replica.add_binding("mirror", "services", "python-dict", "services")
    reg.put("r1", name="billing")
    # A whole write call that fails stops the run; what it did not write is
    # retried by the next run.
    with pytest.raises(cs.ChittyError.Adapter) as caught:
        asyncio.run(replica.run_mirror("mirror", Broken()))
    assert "the remote went away" in str(caught.value)
    # A working adapter then syncs everything, with no duplicates.
    good = DictAdapter()
    asyncio.run(replica.run_mirror("mirror", good))
    assert good.rows == {"r1": {"name": "billing"}}
    assert len(reg) == 1


def test_bulk_deletes_stop_until_allowed(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry("services", [cs.field("name", "text", required=True)])
    replica.add_binding("mirror", "services", "python-dict", "services")
    adapter = DictAdapter()
    reg.put_many([(f"r{i}", {"name": f"s{i}"}) for i in range(30)])
    asyncio.run(replica.run_mirror("mirror", adapter))
    assert len(adapter.rows) == 30
    for i in range(30):
        adapter.outside_delete(f"r{i}")
    with pytest.raises(cs.ChittyError.TooManyDeletes):
        asyncio.run(replica.run_mirror("mirror", adapter))
    assert len(reg) == 30
    asyncio.run(replica.run_mirror("mirror", adapter, allow_deletes=True))
    assert len(reg) == 0


def test_an_adapter_whose_fetch_raises_fails_the_run(tmp_path):
    class Unreachable(DictAdapter):
        def fetch(self, since):
            raise TimeoutError("no answer from the service")

    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    replica.create_registry("services", [cs.field("name", "text", required=True)])
    replica.add_binding("mirror", "services", "python-dict", "services")
    with pytest.raises(cs.ChittyError.Adapter) as caught:
        asyncio.run(replica.run_mirror("mirror", Unreachable()))
    assert "TimeoutError: no answer from the service" in caught.value.message


def test_a_python_adapter_reports_an_invalid_row_through_the_public_api(tmp_path):
    class Sheet(cs.Adapter):
        """A whole-table adapter with one row it cannot read."""

        system = "python-sheet"
        target = "services"

        def __init__(self):
            self.rows = {"x1": {"name": "mail", "tier": 1}, "x2": {"name": "search", "tier": 2}}
            self.ops = []

        def columns(self):
            return ["id", "name", "tier"]

        def fetch(self, since):
            rows = [cs.Row(id=k, fields=dict(v)) for k, v in sorted(self.rows.items())]
            rows.insert(1, cs.Row(id="broken", invalid="row 3 has a merged cell"))
            return cs.Fetch(rows=rows, complete=True)

        def apply(self, ops):
            self.ops.extend(ops)
            return [None for _ in ops]

    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry(
        "services", [cs.field("name", "text", required=True), cs.field("tier", "integer")]
    )
    replica.add_binding("mirror", "services", "python-sheet", "services")
    sheet = Sheet()
    for run in range(2):
        report = asyncio.run(replica.run_mirror("mirror", sheet))
        assert [(i.id, i.reason) for i in report.invalid] == [("broken", "row 3 has a merged cell")], run
        assert report.plan["summary"]["invalid"] == 1
        assert not report.failed
        # The valid rows landed; the invalid one is neither mirrored nor deleted.
        assert sorted(r["name"] for r in reg.list()) == ["mail", "search"]
        assert reg.get("broken") is None
        assert not any(op.id == "broken" for op in sheet.ops)
        assert not any(isinstance(op, cs.Delete) for op in sheet.ops)
    assert report.applied == 0, "the second run had nothing left to do"


def test_an_adapter_with_the_old_table_attribute_names_its_table_and_one_with_none_is_refused(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry("services", [cs.field("name", "text", required=True)])
    replica.add_binding("mirror", "services", "python-dict", "services")
    reg.put("r1", name="billing")

    class Old(DictAdapter):
        target = None
        table = "legacy_services"

    old = Old()
    old.outside_write("x1", {"name": "mail"})
    asyncio.run(replica.run_mirror("mirror", old))
    # The change that brought x1 names the table it came from.
    assert any("legacy_services" in e.message for e in reg.audit())

    class Nameless(DictAdapter):
        target = None

    with pytest.raises(ValueError, match="no `target`"):
        asyncio.run(replica.run_mirror("mirror", Nameless()))


def test_a_scheduled_binding_records_its_runs(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "a.db"))
    reg = replica.create_registry("services", [cs.field("name", "text", required=True)])
    replica.add_binding("mirror", "services", "memory", "services", every=timedelta(minutes=5))
    assert [b.every_secs for b in replica.bindings()] == [300]

    table = cs.MemoryTable("services")
    reg.put("r1", name="billing")
    table.insert("x1", name="mail")
    table.insert("bad", {})  # breaks the schema: no name
    result = asyncio.run(replica.run_mirror("mirror", table))
    assert result.applied >= 2
    assert [(p.id, p.state) for p in result.pending] == [("bad", "invalid")]

    runs = replica.mirror_runs("mirror")
    assert len(runs) == 1
    assert runs[0].outcome == "ok" and runs[0].error is None
    assert runs[0].applied == result.applied and runs[0].invalid == 1

    off = replica.set_binding_schedule("mirror", None)
    assert off.every_secs is None
    assert [b.every_secs for b in replica.bindings()] == [None]
    assert replica.set_binding_schedule("mirror", 60).every_secs == 60
    with pytest.raises(cs.ChittyError.NotFound):
        replica.set_binding_schedule("no-such-binding", None)

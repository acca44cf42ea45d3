"""The shared cross-language vectors (bindings/vectors.json), each run
through put/get, list and bulk put_many; the Node suite runs the same file,
so the two packages cannot drift."""

import decimal
import json
import os
from pathlib import Path

import pytest

import chittysync as cs

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "vectors.json").read_text("utf-8"))["vectors"]
SAFE = 2**53 - 1


def python(v):
    """A vector's input as the Python value a program would pass."""
    if isinstance(v, dict) and len(v) == 1:
        (tag, inner), = v.items()
        if tag == "$int":
            return int(inner)
        if tag == "$decimal":
            return decimal.Decimal(inner)
        if tag == "$set":
            return set(inner)
    return v


def neutral(v):
    """A value read back, spelled as the vectors spell it."""
    if isinstance(v, bool) or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if -SAFE <= v <= SAFE else {"$int": str(v)}
    if isinstance(v, decimal.Decimal):
        return {"$decimal": format(v, "f")}
    if isinstance(v, (set, frozenset)):
        return {"$set": sorted(v)}
    if isinstance(v, (dict, list)) or v is None:
        return {"$json": v}
    raise AssertionError(f"unexpected {type(v).__name__} read back: {v!r}")


def same(got, expected):
    # A document reads back as the language's value: a scalar document
    # is that scalar.
    if isinstance(expected, dict) and list(expected) == ["$json"]:
        expected = neutral(expected["$json"])
    # As text, so object key order counts.
    assert json.dumps(neutral(got)) == json.dumps(expected)


def registry(tmp_path, vector):
    f = vector["field"]
    replica = cs.Replica(os.fspath(tmp_path / "v.db"))
    return replica.create_registry("vectors", [cs.field("v", f["type"], options=f.get("options", []))])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(tmp_path, vector):
    reg = registry(tmp_path, vector)
    value = python(vector["input"])
    if "error" in vector:
        with pytest.raises(getattr(cs.ChittyError, vector["error"])):
            reg.put(v=value)
        with pytest.raises(getattr(cs.ChittyError, vector["error"])):
            reg.put_many([{"v": value}])
        assert len(reg) == 0
        return
    expected = vector["expected"]
    rid = reg.put(v=value)
    same(reg.get(rid)["v"], expected)
    listed = {r.id: r for r in reg.list()}
    same(listed[rid]["v"], expected)
    [bulk] = reg.put_many([{"v": value}])
    same(reg.get(bulk)["v"], expected)
    same({r.id: r for r in reg.list()}[bulk]["v"], expected)
    if vector.get("filter"):
        assert {r.id for r in reg.list(v=value)} == {rid, bulk}


def test_every_vector_kind_is_covered():
    kinds = {v["field"]["type"] for v in VECTORS}
    assert kinds == {k.name.lower() for k in cs.FieldKind}

"""ChittySync for Python: registries of canonical records kept identical
everywhere — signed, offline-first, verifiable.

    import chittysync as cs

    replica = cs.Replica("services.db")
    services = replica.create_registry("services", [cs.field("name", "text", required=True, unique=True)])
    rid = services.put(name="billing", tier=2)
    print(services.get(rid).fields)        # {'name': 'billing', 'tier': 2}

Field values are plain Python values: ``str``, ``int`` (exact to 64 bits),
``bool``, ``decimal.Decimal`` (or ``float``) for decimals, a ``set`` or
``frozenset`` of options for multi-selects and ``dict``/``list`` for JSON
fields (stored with their keys sorted). The conversion by field type happens
once, in Rust, for Python and Node alike (``bindings/vectors.json`` holds the
cases both test suites run); this module only spells values in the shared
wire encoding and back. Errors are
``ChittyError`` subclasses carrying the same fields as the Rust errors,
e.g. ``ChittyError.Invalid`` with ``.registry``, ``.record``, ``.field``,
``.value`` and ``.rule``.

The generated low-level API is available as ``chittysync.native``.
"""

from __future__ import annotations

import datetime
import decimal
import json
from dataclasses import dataclass, field as _dc_field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._native import chittysync_ffi as native
from ._native.chittysync_ffi import (  # noqa: F401  (re-exported)
    AdapterFailure,
    AttestationStatus,
    BindingAdded,
    BindingSpec,
    InvalidRow,
    MirrorDirection,
    MirrorRunInfo,
    PendingRow,
    AuditEffect,
    AuditEntry,
    ChittyError,
    FieldKind,
    ImportSummary,
    Member,
    PeerReport,
    RegistryInfo,
    Role,
    TokenAdded,
    TokenInfo,
    VerifySummary,
)

__all__ = [
    "ChangeStream",
    "Adapter",
    "Create",
    "Update",
    "Delete",
    "Fetch",
    "Row",
    "RowFailed",
    "MemoryTable",
    "MirrorReport",
    "InvalidRow",
    "PendingRow",
    "MirrorRunInfo",
    "PeerReport",
    "Replica",
    "Registry",
    "Record",
    "Conflict",
    "Candidate",
    "field",
    "ChittyError",
    "Role",
    "FieldKind",
    "AuditEntry",
    "AuditEffect",
    "Member",
    "RegistryInfo",
    "ImportSummary",
    "VerifySummary",
    "AttestationStatus",
    "TokenAdded",
    "TokenInfo",
    "native",
]

_SAFE_INTEGER = 2**53 - 1


def _encode(value: Any) -> Any:
    """A Python value in the wire encoding (see ``ffi/src/wire.rs``); what it
    means for a field is decided in Rust, by the field's type."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else {"$int": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, float):
        return {"$decimal": repr(value)}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(str(v) for v in value)}
    if isinstance(value, (dict, list, tuple)):
        return {"$json": value}
    raise TypeError(
        f"cannot store a {type(value).__name__} in a field; use str, int, bool, "
        "Decimal, a set of options, or a dict/list for JSON"
    )


def _decode(value: Any) -> Any:
    """A wire value as the matching Python value."""
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$int":
            return int(inner)
        if tag == "$decimal":
            return decimal.Decimal(inner)
        if tag == "$set":
            return set(inner)
        if tag == "$json":
            return inner
    return value


def _dumps(fields: Mapping[str, Any]) -> str:
    return json.dumps({k: _encode(v) for k, v in fields.items()}, separators=(",", ":"))


def _fields(wire: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: _decode(v) for k, v in wire.items()}


def _seconds(d: Union[datetime.timedelta, int, None]) -> Optional[int]:
    """A duration given as a ``timedelta`` or seconds, in whole seconds."""
    if isinstance(d, datetime.timedelta):
        return int(d.total_seconds())
    return None if d is None else int(d)


def _role(role: Union[str, Role]) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role[role.upper()]
    except KeyError:
        raise ValueError(f"unknown role {role!r}; use 'admin', 'writer' or 'reader'") from None


def field(
    name: str,
    kind: Union[str, FieldKind] = "text",
    *,
    required: bool = False,
    unique: bool = False,
    options: Sequence[str] = (),
    pattern: Optional[str] = None,
    min: Optional[float] = None,
    max: Optional[float] = None,
    description: Optional[str] = None,
) -> native.FieldSpec:
    """One field of a schema: ``field("name", "text", required=True)``.

    ``kind`` is a ``FieldKind`` or its name: text, long_text, integer,
    decimal, bool, date, datetime, select, multi_select, url, email,
    reference, json.
    """
    if isinstance(kind, str):
        try:
            kind = FieldKind[kind.upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(k.name.lower() for k in FieldKind)
            raise ValueError(f"unknown field type {kind!r}; use one of {names}") from None
    return native.FieldSpec(
        name=name,
        kind=kind,
        required=required,
        unique=unique,
        options=list(options),
        pattern=pattern,
        min=min,
        max=max,
        description=description,
    )


@dataclass(slots=True)
class Record:
    """A record: its id, its field values as Python values, and whether it
    is deleted or has fields with concurrent values."""

    id: str
    fields: Dict[str, Any]
    deleted: bool = False
    conflicted: List[str] = _dc_field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @staticmethod
    def _from(r: Mapping[str, Any]) -> "Record":
        return Record(
            id=r["id"],
            fields=_fields(r["fields"]),
            deleted=r["deleted"],
            conflicted=list(r["conflicted"]),
        )


@dataclass(frozen=True)
class Candidate:
    """One of several concurrent values of a field."""

    value: Any
    author: Optional[str]
    time: int
    change: str


@dataclass(frozen=True)
class Conflict:
    """A field with concurrent values, and the policy's pick (``chosen`` is
    an index into ``candidates``, or None under the manual policy)."""

    record: str
    field: str
    policy: str
    candidates: List[Candidate]
    chosen: Optional[int]

    @staticmethod
    def _from(c: Mapping[str, Any]) -> "Conflict":
        return Conflict(
            record=c["record"],
            field=c["field"],
            policy=c["policy"],
            candidates=[
                Candidate(_decode(x["value"]), x["author"], x["time"], x["change"])
                for x in c["candidates"]
            ],
            chosen=c["chosen"],
        )


class Registry:
    """A registry in a replica. Every write is one signed change, durable
    when the call returns."""

    def __init__(self, inner: native.Registry):
        self._inner = inner

    def __repr__(self) -> str:
        return f"Registry(name={self.name!r}, id={self.id!r})"

    def __len__(self) -> int:
        return self._inner.len()

    @property
    def id(self) -> str:
        return self._inner.id()

    @property
    def name(self) -> str:
        return self._inner.name()

    @property
    def schema(self) -> Dict[str, Any]:
        """The schema, as the JSON object of the schema files."""
        return json.loads(self._inner.schema_json())

    @property
    def native(self) -> native.Registry:
        """The generated low-level object."""
        return self._inner

    def put(self, id: Optional[str] = None, fields: Optional[Mapping[str, Any]] = None, **kw: Any) -> str:
        """Creates a record (no id: a new one) or updates the given fields
        of an existing one. Fields come as a mapping, keywords, or both.
        Returns the record's id."""
        return self._inner.put_json(id, _dumps({**(fields or {}), **kw}))

    def put_many(self, records: Iterable[Union[Mapping[str, Any], tuple]]) -> List[str]:
        """Writes many records as one signed change: all land, or none do.
        Each item is a mapping of fields, or an ``(id, fields)`` pair."""
        objects = []
        for item in records:
            if isinstance(item, tuple):
                rid, values = item
                item = dict(values)
                item["_id"] = rid
            elif not isinstance(item, dict):
                item = dict(item)
            objects.append({k: v if k == "_id" else _encode(v) for k, v in item.items()})
        # One JSON document crosses the boundary: far cheaper than a typed
        # value per field for thousands of records.
        return json.loads(self._inner.put_many_json(json.dumps(objects, separators=(",", ":"))))

    def get(self, id: str) -> Optional[Record]:
        """A record by id (deleted ones too, with ``deleted`` set)."""
        r = self._inner.get_json(id)
        return None if r is None else Record._from(json.loads(r))

    def list(self, **filters: Any) -> List[Record]:
        """Live records whose fields equal every filter (a multi-select
        matches when it holds the value)."""
        return [Record._from(r) for r in json.loads(self._inner.list_json(_dumps(filters)))]

    def __iter__(self):
        return iter(self.list())

    def unset(self, id: str, *fields: str) -> None:
        """Clears fields of a record."""
        self._inner.unset(id, list(fields))

    def delete(self, id: str) -> None:
        """Deletes a record (a tombstone)."""
        self._inner.delete(id)

    def conflicts(self) -> List[Conflict]:
        """Every field with concurrent values, and the policy's pick."""
        return [Conflict._from(c) for c in json.loads(self._inner.conflicts_json())]

    def resolve(self, record: str, field: str, value: Any) -> None:
        """Settles a conflict by writing the chosen value as a new change."""
        self._inner.resolve_json(record, field, json.dumps(_encode(value)))

    def members(self) -> List[Member]:
        return self._inner.members()

    def set_member(self, key: str, role: Union[str, Role]) -> None:
        """Adds a member or changes their role (admins only)."""
        self._inner.set_member(key, _role(role))

    def remove_member(self, key: str) -> None:
        """Removes a member (admins only). Their later changes are refused,
        and the ones they made concurrently are revoked."""
        self._inner.remove_member(key)

    def heads(self) -> List[str]:
        return self._inner.heads()

    def state_digest(self) -> str:
        return self._inner.state_digest()

    def export_bundle(self, their_heads: Sequence[str] = ()) -> bytes:
        """The signed changes the other side lacks, given its heads."""
        return bytes(self._inner.export_bundle(list(their_heads)))

    def audit(
        self,
        *,
        record: Optional[str] = None,
        author: Optional[str] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
    ) -> List[AuditEntry]:
        """Every change with author, signature status and what it did."""
        return self._inner.audit(
            native.AuditFilter(record=record, author=author, since=since, until=until)
        )

    def attest(self) -> None:
        """Signs this replica's attestation of the current state."""
        self._inner.attest()

    def attestation_status(self) -> AttestationStatus:
        return self._inner.attestation_status()


class Replica:
    """A local replica: one file holding many registries, with this
    replica's signing key beside it (created on first open)."""

    def __init__(self, path: str):
        self._inner = native.Replica.open(str(path))
        self.path = str(path)

    def __repr__(self) -> str:
        return f"Replica({self.path!r})"

    @property
    def public_key(self) -> str:
        """This replica's public key: what admins add as a member."""
        return self._inner.public_key()

    @property
    def native(self) -> native.Replica:
        return self._inner

    def create_registry(
        self,
        name: str,
        fields: Optional[Sequence[native.FieldSpec]] = None,
        *,
        schema: Optional[Union[str, Mapping[str, Any]]] = None,
    ) -> Registry:
        """Creates a registry from ``field(...)`` specs, or from a schema
        given as TOML/JSON text or a dict (the schema-file format)."""
        if schema is not None:
            text = schema if isinstance(schema, str) else json.dumps(schema)
            return Registry(self._inner.create_registry_with_schema(name, text))
        return Registry(self._inner.create_registry(name, list(fields or [])))

    def registry(self, name_or_id: str) -> Registry:
        return Registry(self._inner.registry(name_or_id))

    def registries(self) -> List[RegistryInfo]:
        return self._inner.registries()

    def import_bundle(self, bundle: bytes) -> ImportSummary:
        """Verifies and applies a bundle; any bad change refuses it whole."""
        return self._inner.import_bundle(bytes(bundle))

    def verify(self, registry: Optional[str] = None) -> VerifySummary:
        """Re-checks everything from genesis; raises ``ChittyError.Verify``
        naming the first bad item."""
        return self._inner.verify(registry)

    def add_binding(
        self,
        name: str,
        registry: str,
        kind: str,
        target: str,
        *,
        id_column: str = "id",
        mapping: Optional[Mapping[str, str]] = None,
        key_field: Optional[str] = None,
        direction: Optional[str] = None,
        settings: Optional[Mapping[str, str]] = None,
        secret_env: Optional[str] = None,
        conflict_policy: Optional[str] = None,
        every: Union[datetime.timedelta, int, None] = None,
    ) -> BindingAdded:
        """Binds a registry to an external target (a table); the binding gets
        its own signing key (made a writer when this replica is an admin).
        Secrets only by reference: ``secret_env`` names an environment
        variable. ``every`` (a ``timedelta`` or seconds) runs it on that
        schedule while the replica is served over HTTP."""
        return self._inner.add_binding(
            BindingSpec(
                name=name,
                registry=registry,
                kind=kind,
                target=target,
                id_column=id_column,
                mapping=dict(mapping or {}),
                key_field=key_field,
                direction=None if direction is None else MirrorDirection[direction.upper()],
                settings=dict(settings or {}),
                secret_env=secret_env,
                conflict_policy=conflict_policy,
                every_secs=_seconds(every),
            )
        )

    def bindings(self) -> List[BindingSpec]:
        return self._inner.bindings()

    def remove_binding(self, name: str) -> None:
        self._inner.remove_binding(name)

    def set_binding_schedule(
        self, name: str, every: Union[datetime.timedelta, int, None]
    ) -> BindingSpec:
        """Runs binding ``name`` every ``every`` (a ``timedelta`` or seconds)
        while the replica is served over HTTP, or only when asked (None).
        Returns the binding as stored."""
        return self._inner.set_binding_schedule(name, _seconds(every))

    def mirror_runs(self, name: str, limit: int = 20) -> List[MirrorRunInfo]:
        """The last ``limit`` recorded runs of binding ``name``, newest first:
        ``outcome`` (``ok``, ``partial``, ``failed``, ``dry-run``),
        ``applied``, ``failed``, ``invalid``, ``conflicts``, ``error``."""
        return self._inner.mirror_runs(name, limit)

    def add_token(
        self,
        name: str,
        registries: Sequence[str],
        *,
        role: Union[str, Role] = "writer",
        expires_in: Union[datetime.timedelta, int, None] = None,
    ) -> TokenAdded:
        """Adds an API token that may use ``registries`` with ``role``, valid
        for ``expires_in`` (a ``timedelta`` or seconds; None: until removed).
        Its own key is made a member of each registry (this replica must be
        an admin of each). ``.secret`` is shown once, never stored."""
        return self._inner.add_token(name, list(registries), _role(role), _seconds(expires_in))

    def tokens(self) -> List[TokenInfo]:
        """Every token, by name (never their secrets)."""
        return self._inner.tokens()

    def remove_token(self, name: str) -> TokenInfo:
        """Removes a token: its key leaves its registries and its secret stops
        working. Returns what it was."""
        return self._inner.remove_token(name)

    async def sync_peer(
        self,
        address: str,
        *,
        key: Optional[str] = None,
        registries: Sequence[str] = (),
        timeout: int = 60,
    ) -> PeerReport:
        """One round with the peer at ``address`` (``host:port``). With
        ``key`` the peer must prove it; without, the key it proves first is
        pinned for the address (trust on first use)."""
        return await self._inner.sync_peer(address, key, list(registries), timeout)

    async def serve(
        self,
        address: str = "127.0.0.1:0",
        *,
        allow: Sequence[str] = (),
        allow_any: bool = False,
        allow_create: Sequence[str] = (),
        allow_create_any: bool = False,
        create_quota: Optional[int] = None,
    ) -> "native.Hub":
        """Serves this replica's registries to peers (a hub); each peer gets
        only the registries it is a member of. A registry new to this hub is
        taken only from keys in ``allow_create`` (or any accepted key with
        ``allow_create_any``), at most ``create_quota`` per key (default 10).
        ``hub.address()`` tells the port; ``hub.shutdown()`` stops it."""
        return await self._inner.serve(
            address, list(allow), allow_any, list(allow_create), allow_create_any, create_quota
        )

    def changes(self) -> "ChangeStream":
        """The changes peers deliver from now on: ``async for c in
        replica.changes(): ...``."""
        return ChangeStream(self._inner.subscribe())

    async def prepare_binding(self, name: str, create: bool = False) -> "native.RemoteTableInfo":
        """Makes a stored Postgres binding's table ready: creates it from the
        schema when ``create`` and it is missing, installs change tracking
        (or says why it cannot), and describes it."""
        return await self._inner.prepare_binding(name, create)

    async def run_mirror(
        self,
        binding: str,
        adapter: Union["Adapter", "MemoryTable", None] = None,
        *,
        direction: Optional[str] = None,
        dry_run: bool = False,
        allow_deletes: bool = False,
        full: bool = False,
        progress: Any = None,
    ) -> "MirrorReport":
        """Runs a binding once: plan, then (unless ``dry_run``) the writes on
        both sides. ``adapter`` is a Python ``Adapter``, a ``MemoryTable``,
        or None for a stored binding of a built-in kind (e.g. Postgres).
        ``progress`` is any object with ``stage(name, total)`` and
        ``advance(n)``."""
        options = native.MirrorOptions(
            direction=None if direction is None else MirrorDirection[direction.upper()],
            dry_run=dry_run,
            allow_deletes=allow_deletes,
            full=full,
        )
        listener = _Progress(progress)
        if adapter is None:
            out = await self._inner.run_mirror(binding, options, listener)
        elif isinstance(adapter, MemoryTable):
            out = await self._inner.run_mirror_memory(binding, adapter.native, options, listener)
        else:
            out = await self._inner.run_mirror_foreign(binding, _Bridge(adapter), options, listener)
        return MirrorReport(
            dry_run=out.dry_run,
            applied=out.applied,
            failed=list(out.failed),
            invalid=list(out.invalid),
            open_conflicts=out.open_conflicts,
            plan=json.loads(out.report_json),
            pending=list(out.pending),
        )


class ChangeStream:
    """The changes peers deliver to a replica, as an async iterator of
    ``RemoteChange`` (registry, name, peer, applied, heads)."""

    def __init__(self, inner: "native.ChangeStream"):
        self._inner = inner

    def __aiter__(self) -> "ChangeStream":
        return self

    async def __anext__(self) -> "native.RemoteChange":
        change = await self._inner.next()
        if change is None:
            raise StopAsyncIteration
        return change

    async def next(self) -> "Optional[native.RemoteChange]":
        """The next delivery (waits for it); None once the replica is gone."""
        return await self._inner.next()


# --- Adapters -------------------------------------------------------------


@dataclass
class Row:
    """A row of an adapter's table: its id and values by registry field (a
    value of None is a missing one). A row the adapter knows is broken
    carries ``invalid``, the reason: the mirror reports it on every run
    until fixed, and neither mirrors it nor takes it as deleted."""

    id: str
    fields: Dict[str, Any] = _dc_field(default_factory=dict)
    modified_at: Optional[int] = None
    invalid: Optional[str] = None


@dataclass
class Fetch:
    """What ``Adapter.fetch`` returns: the rows (all, or those changed since
    the cursor), ids deleted since the cursor, whether ``rows`` is the whole
    table, and the cursor for next time (None: always fetch everything)."""

    rows: List[Row]
    deleted: List[str] = _dc_field(default_factory=list)
    complete: bool = True
    cursor: Optional[str] = None


@dataclass
class Create:
    """Create row ``id`` (update it if it exists: retries never duplicate)."""

    id: str
    fields: Dict[str, Any]


@dataclass
class Update:
    """Change some fields of row ``id``; a value of None clears the field."""

    id: str
    fields: Dict[str, Any]


@dataclass
class Delete:
    """Delete row ``id``."""

    id: str


@dataclass
class RowFailed:
    """A write that failed: return it from ``apply`` in the op's place."""

    message: str
    retryable: bool = False


class Adapter:
    """An adapter written in Python, run by the Rust mirror engine (plan,
    dry run, conflict policies, provenance, snapshots). Subclass it and
    implement ``columns``, ``fetch`` and ``apply``; set ``system`` and
    ``target`` (the table's name). Raise any exception to fail the whole
    call."""

    system: str = "python"
    target: Optional[str] = None

    def columns(self) -> List[str]:
        raise NotImplementedError

    def fetch(self, since: Optional[str]) -> Fetch:
        raise NotImplementedError

    def apply(self, ops: List[Union[Create, Update, Delete]]) -> List[Union[str, RowFailed]]:
        """Applies the writes in order; returns per op the row's id, or a
        ``RowFailed``."""
        raise NotImplementedError


class _Bridge(native.ForeignAdapter):
    """Spells a Python adapter's rows and results in the wire encoding; the
    Rust side decodes them by the registry's field types."""

    def __init__(self, adapter: Adapter):
        self._a = adapter
        # Adapters written before ``target`` replaced ``table`` still work.
        target = getattr(adapter, "target", None) or getattr(adapter, "table", None)
        if target is None or not str(target).strip():
            raise ValueError(
                f"the adapter {type(adapter).__name__} has no `target`: "
                "set it to the name of the table it mirrors"
            )
        self._target = str(target)

    def system(self) -> str:
        return str(self._a.system)

    def target(self) -> str:
        return self._target

    def columns(self):
        return self._guard(lambda: [str(c) for c in self._a.columns()])

    def fetch(self, since):
        def go():
            f = self._a.fetch(since)
            rows = [
                {
                    "id": r.id,
                    "fields": {k: _encode(v) for k, v in (r.fields or {}).items()},
                    "modified_at": r.modified_at,
                    "invalid": r.invalid,
                }
                for r in f.rows
            ]
            return json.dumps(
                {"rows": rows, "deleted": list(f.deleted), "complete": f.complete, "cursor": f.cursor},
                separators=(",", ":"),
            )

        return self._guard(go)

    def apply(self, ops):
        def go():
            mine: List[Union[Create, Update, Delete]] = []
            for op in json.loads(ops):
                if op["op"] == "create":
                    mine.append(Create(op["id"], _fields(op["fields"])))
                elif op["op"] == "update":
                    mine.append(Update(op["id"], _fields(op["fields"])))
                else:
                    mine.append(Delete(op["id"]))
            out: List[Any] = []
            for result in self._a.apply(mine):
                if isinstance(result, RowFailed):
                    out.append({"error": str(result.message) or "the adapter reported an error with no message", "retryable": bool(result.retryable)})
                else:
                    # None: the row kept the id the engine proposed.
                    out.append(None if result is None else str(result))
            return json.dumps(out)

        return self._guard(go)

    @staticmethod
    def _guard(f):
        try:
            return f()
        except AdapterFailure:
            raise
        except Exception as e:  # the adapter's own failure, named
            raise AdapterFailure.Failed(f"{type(e).__name__}: {e}") from e


class _Progress(native.ProgressListener):
    def __init__(self, progress):
        self._p = progress

    def stage(self, stage, total):
        if self._p is not None:
            self._p.stage(stage, total)

    def advance(self, n):
        if self._p is not None:
            self._p.advance(n)


@dataclass
class MirrorReport:
    """What a mirror run planned and did. ``invalid`` lists the remote rows
    that could not be taken (``id``, ``record``, ``field``, ``reason``);
    ``plan`` is the whole plan as a dict: per row the action, side, fields
    old → new; conflicts; invalid rows; a summary of counts. ``pending``
    lists every row still not applied after the run (``id``, ``record``,
    ``state``, ``reason``, ``retryable``, ``since``): the next run retries
    them."""

    dry_run: bool
    applied: int
    failed: List[str]
    invalid: List[InvalidRow]
    open_conflicts: int
    plan: Dict[str, Any]
    pending: List[PendingRow] = _dc_field(default_factory=list)


class MemoryTable:
    """An in-memory table: the reference adapter, for tests and for
    comparing a Python adapter's behaviour against. Its ``insert``,
    ``update`` and ``remove`` act as another application would."""

    def __init__(self, name: str):
        self.native = native.MemoryTable(name)

    def insert(self, id: str, fields: Optional[Mapping[str, Any]] = None, **kw: Any) -> None:
        """Inserts or replaces a row."""
        self.native.insert(id, _dumps({**(fields or {}), **kw}))

    def update(self, id: str, fields: Optional[Mapping[str, Any]] = None, **kw: Any) -> None:
        """Changes fields of a row; a value of None clears the field."""
        self.native.update(id, _dumps({**(fields or {}), **kw}))

    def remove(self, id: str) -> None:
        """Deletes a row."""
        self.native.remove(id)

    def rows(self) -> Dict[str, Dict[str, Any]]:
        """Every row: id → fields."""
        return {id: _fields(f) for id, f in json.loads(self.native.rows_json()).items()}

    def mutating_calls(self) -> int:
        """How many writes the engine made to the table (0 after a dry run)."""
        return self.native.mutating_calls()

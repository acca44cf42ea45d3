"""ChittySync for Python: registries of canonical records kept identical
everywhere — signed, offline-first, verifiable.

    import chittysync as cs

    replica = cs.Replica("services.db")
    services = replica.create_registry("services", [cs.field("name", "text", required=True, unique=True)])
    rid = services.put(name="billing", tier=2)
    print(services.get(rid).fields)        # {'name': 'billing', 'tier': 2}

Field values are plain Python values: ``str``, ``int``, ``bool``,
``decimal.Decimal`` (or ``float``) for decimals, a ``set`` of options for
multi-selects and ``dict``/``list`` for JSON fields. Errors are
``ChittyError`` subclasses carrying the same fields as the Rust errors,
e.g. ``ChittyError.Invalid`` with ``.registry``, ``.record``, ``.field``,
``.value`` and ``.rule``.

The generated low-level API is available as ``chittysync.native``.
"""

from __future__ import annotations

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
    MemoryTable,
    SyncDirection,
    AuditEffect,
    AuditEntry,
    ChittyError,
    FieldKind,
    ImportSummary,
    Member,
    RegistryInfo,
    Role,
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
    "SyncResult",
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
    "native",
]

def to_native(value: Any) -> native.FieldValue:
    """Converts a Python value to a field value."""
    if isinstance(value, native.FieldValue):
        return value
    if isinstance(value, bool):
        return native.FieldValue.BOOL(value)
    if isinstance(value, int):
        return native.FieldValue.INTEGER(value)
    if isinstance(value, decimal.Decimal):
        return native.FieldValue.DECIMAL(str(value))
    if isinstance(value, float):
        return native.FieldValue.DECIMAL(repr(value))
    if isinstance(value, str):
        return native.FieldValue.TEXT(value)
    if isinstance(value, (set, frozenset)):
        return native.FieldValue.SET(sorted(str(v) for v in value))
    if isinstance(value, (dict, list)):
        return native.FieldValue.JSON(json.dumps(value, separators=(",", ":"), sort_keys=True))
    raise TypeError(
        f"cannot store a {type(value).__name__} in a field; use str, int, bool, "
        "Decimal, a set of options, or a dict/list for JSON"
    )


def _filter_text(value: Any) -> str:
    """A filter value as the registry shows values (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_default(value: Any) -> Any:
    """What the JSON encoder cannot write by itself, for the bulk path
    (which converts values by field type)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    raise TypeError(
        f"cannot store a {type(value).__name__} in a field; use str, int, bool, "
        "Decimal, a set of options, or a dict/list for JSON"
    )


def from_native(value: "native.FieldValue") -> Any:
    """Converts a field value to the matching Python value."""
    if value.is_text():
        return value.value
    if value.is_integer():
        return value.value
    if value.is_decimal():
        return decimal.Decimal(value.value)
    if value.is_bool():
        return value.value
    if value.is_set():
        return set(value.values)
    if value.is_json():
        return json.loads(value.value)
    raise TypeError(f"unknown field value {value!r}")


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
    def _from(r: native.Record) -> "Record":
        return Record(
            id=r.id,
            fields={k: from_native(v) for k, v in r.fields.items()},
            deleted=r.deleted,
            conflicted=list(r.conflicted),
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
    def _from(c: native.Conflict) -> "Conflict":
        return Conflict(
            record=c.record,
            field=c.field,
            policy=c.policy,
            candidates=[
                Candidate(from_native(x.value), x.author, x.time, x.change) for x in c.candidates
            ],
            chosen=c.chosen,
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
        values = {**(fields or {}), **kw}
        return self._inner.put(id, {k: to_native(v) for k, v in values.items()})

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
            objects.append(item)
        # One JSON document crosses the boundary: far cheaper than a typed
        # value per field for thousands of records.
        text = json.dumps(objects, separators=(",", ":"), default=_json_default)
        return json.loads(self._inner.put_many_json(text))

    def get(self, id: str) -> Optional[Record]:
        """A record by id (deleted ones too, with ``deleted`` set)."""
        r = self._inner.get(id)
        return None if r is None else Record._from(r)

    def list(self, **filters: Any) -> List[Record]:
        """Live records whose fields equal every filter (a multi-select
        matches when it holds the value)."""
        text = self._inner.list_json({k: _filter_text(v) for k, v in filters.items()})
        kinds = {f["name"]: f["type"] for f in self.schema["fields"]}
        out = []
        for r in json.loads(text):
            fields = r["fields"]
            for name, value in fields.items():
                kind = kinds.get(name)
                if kind == "decimal" and isinstance(value, str):
                    fields[name] = decimal.Decimal(value)
                elif kind == "multi_select" and isinstance(value, list):
                    fields[name] = set(value)
            out.append(Record(id=r["id"], fields=fields, conflicted=r["conflicted"]))
        return out

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
        return [Conflict._from(c) for c in self._inner.conflicts()]

    def resolve(self, record: str, field: str, value: Any) -> None:
        """Settles a conflict by writing the chosen value as a new change."""
        self._inner.resolve(record, field, to_native(value))

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
        table: str,
        *,
        id_column: str = "id",
        mapping: Optional[Mapping[str, str]] = None,
        key_field: Optional[str] = None,
        direction: Optional[str] = None,
        settings: Optional[Mapping[str, str]] = None,
        secret_env: Optional[str] = None,
        conflict_policy: Optional[str] = None,
    ) -> BindingAdded:
        """Binds a registry to an external table; the binding gets its own
        signing key (made a writer when this replica is an admin). Secrets
        only by reference: ``secret_env`` names an environment variable."""
        return self._inner.add_binding(
            BindingSpec(
                name=name,
                registry=registry,
                kind=kind,
                table=table,
                id_column=id_column,
                mapping=dict(mapping or {}),
                key_field=key_field,
                direction=None if direction is None else SyncDirection[direction.upper()],
                settings=dict(settings or {}),
                secret_env=secret_env,
                conflict_policy=conflict_policy,
            )
        )

    def bindings(self) -> List[BindingSpec]:
        return self._inner.bindings()

    def remove_binding(self, name: str) -> None:
        self._inner.remove_binding(name)

    async def sync_with(
        self,
        address: str,
        *,
        key: Optional[str] = None,
        registries: Sequence[str] = (),
        timeout: int = 60,
    ) -> "native.PeerSyncSummary":
        """One sync round with the peer at ``address`` (``host:port``). With
        ``key`` the peer must prove it; without, the key it proves first is
        pinned for the address (trust on first use)."""
        return await self._inner.sync_with(address, key, list(registries), timeout)

    async def serve(
        self, address: str = "127.0.0.1:0", *, allow: Sequence[str] = (), allow_any: bool = False
    ) -> "native.Hub":
        """Serves this replica's registries to peers (a hub); each peer gets
        only the registries it is a member of. ``hub.address()`` tells the
        port; ``hub.shutdown()`` stops it."""
        return await self._inner.serve(address, list(allow), allow_any)

    def changes(self) -> "ChangeStream":
        """The changes peers deliver from now on: ``async for c in
        replica.changes(): ...``."""
        return ChangeStream(self._inner.subscribe())

    async def prepare_binding(self, name: str, create: bool = False) -> "native.RemoteTableInfo":
        """Makes a stored Postgres binding's table ready: creates it from the
        schema when ``create`` and it is missing, installs change tracking
        (or says why it cannot), and describes it."""
        return await self._inner.prepare_binding(name, create)

    async def sync(
        self,
        binding: str,
        adapter: Union[Adapter, MemoryTable, None] = None,
        *,
        direction: Optional[str] = None,
        dry_run: bool = False,
        allow_deletes: bool = False,
        full: bool = False,
        progress: Any = None,
    ) -> SyncResult:
        """Runs a binding once: plan, then (unless ``dry_run``) the writes on
        both sides. ``adapter`` is a Python ``Adapter``, a ``MemoryTable``,
        or None for a stored Postgres binding. ``progress`` is any object
        with ``stage(name, total)`` and ``advance(n)``."""
        settings = native.SyncSettings(
            direction=None if direction is None else SyncDirection[direction.upper()],
            dry_run=dry_run,
            allow_deletes=allow_deletes,
            full=full,
        )
        listener = _Progress(progress)
        if adapter is None:
            out = await self._inner.sync_binding(binding, settings, listener)
        elif isinstance(adapter, MemoryTable):
            out = await self._inner.sync_memory(binding, adapter, settings, listener)
        else:
            out = await self._inner.sync_foreign(binding, _Bridge(adapter), settings, listener)
        return SyncResult(
            dry_run=out.dry_run,
            applied=out.applied,
            failed=list(out.failed),
            open_conflicts=out.open_conflicts,
            plan=json.loads(out.report_json),
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
    """A row of an adapter's table: its id and values by registry field."""

    id: str
    fields: Dict[str, Any]
    modified_at: Optional[int] = None


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
    """An adapter written in Python, driven by the Rust sync engine (plan,
    dry run, conflict policies, provenance, snapshots). Subclass it and
    implement ``columns``, ``fetch`` and ``apply``; set ``system`` and
    ``table``. Raise any exception to fail the whole call."""

    system: str = "python"
    table: str = "table"

    def columns(self) -> List[str]:
        raise NotImplementedError

    def fetch(self, since: Optional[str]) -> Fetch:
        raise NotImplementedError

    def apply(self, ops: List[Union[Create, Update, Delete]]) -> List[Union[str, RowFailed]]:
        """Applies the writes in order; returns per op the row's id, or a
        ``RowFailed``."""
        raise NotImplementedError


class _Bridge(native.ForeignAdapter):
    def __init__(self, adapter: Adapter):
        self._a = adapter

    def system(self) -> str:
        return str(self._a.system)

    def table(self) -> str:
        return str(self._a.table)

    def columns(self):
        return self._guard(lambda: [str(c) for c in self._a.columns()])

    def fetch(self, since):
        def go():
            f = self._a.fetch(since)
            return native.RemoteFetch(
                rows=[
                    native.RemoteRow(
                        id=r.id,
                        fields={k: to_native(v) for k, v in r.fields.items() if v is not None},
                        modified_at=r.modified_at,
                    )
                    for r in f.rows
                ],
                deleted=list(f.deleted),
                complete=f.complete,
                cursor=f.cursor,
            )

        return self._guard(go)

    def apply(self, ops):
        def go():
            mine = []
            for op in ops:
                if op.is_create():
                    mine.append(Create(op.id, {k: from_native(v) for k, v in op.fields.items()}))
                elif op.is_update():
                    mine.append(
                        Update(
                            op.id,
                            {k: None if v is None else from_native(v) for k, v in op.fields.items()},
                        )
                    )
                else:
                    mine.append(Delete(op.id))
            out = []
            for result in self._a.apply(mine):
                if isinstance(result, RowFailed):
                    out.append(
                        native.RemoteOpResult(id=None, error=result.message, retryable=result.retryable)
                    )
                else:
                    # None: the row kept the id the engine proposed.
                    rid = None if result is None else str(result)
                    out.append(native.RemoteOpResult(id=rid, error=None, retryable=False))
            return out

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
class SyncResult:
    """What a sync run planned and did. ``plan`` is the whole plan as a
    dict: per row the action, side, fields old → new; conflicts; invalid
    rows; a summary of counts."""

    dry_run: bool
    applied: int
    failed: List[str]
    open_conflicts: int
    plan: Dict[str, Any]

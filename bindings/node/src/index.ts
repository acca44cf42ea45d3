// ChittySync for Node: registries of canonical records kept identical
// everywhere — signed, offline-first, verifiable.
//
// The classes here take and return plain JavaScript values; the generated
// low-level API (UniFFI) is exported as `native`.

import * as native from "./generated/index";
import {
  AdapterFailure,
  AuditFilter,
  BindingSpec,
  ChittyError as NativeError,
  MemoryTable as NativeMemoryTable,
  MirrorDirection,
  MirrorOptions,
  FieldKind,
  FieldSpec,
  Role,
} from "./generated/index";
import type {
  ChangeStreamLike,
  HubLike,
  InvalidRow,
  MirrorRunInfo,
  PendingRow,
  PeerReport,
  RemoteChange,
  RemoteTableInfo,
  BindingAdded,
  ForeignAdapter,
  ProgressListener,
  AttestationStatus,
  AuditEntry,
  ImportSummary,
  Member,
  RegistryInfo,
  RegistryLike,
  ReplicaLike,
  TokenAdded,
  TokenInfo,
  VerifySummary,
} from "./generated/index";

export { native, FieldKind, Role };
export type {
  HubLike as Hub,
  InvalidRow,
  MirrorRunInfo,
  PendingRow,
  PeerReport,
  RemoteChange,
  RemoteTableInfo,
  BindingAdded,
  BindingSpec,
  AttestationStatus,
  AuditEntry,
  ImportSummary,
  Member,
  RegistryInfo,
  TokenAdded,
  TokenInfo,
  VerifySummary,
};

/** A decimal number, kept exact as text: `decimal("19.99")`. */
export class Decimal {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** A decimal number, kept exact as text. */
export function decimal(value: string | number): Decimal {
  return new Decimal(String(value));
}

/**
 * What a field holds, as JavaScript sees it: integers as numbers (bigint
 * beyond 2^53, exact to 64 bits), decimals as `Decimal` (a non-integer
 * number is taken as a decimal too), multi-selects as a `Set` of options,
 * JSON documents as arrays and objects (stored with their keys sorted).
 * What a value means for a field is decided once, in Rust, for Node and
 * Python alike (`bindings/vectors.json` holds the cases both suites run).
 */
export type Value =
  | string
  | number
  | bigint
  | boolean
  | Decimal
  | Set<string>
  | unknown[]
  | { [key: string]: unknown };

/** The kinds of ChittySync errors (see the Rust `ChittyError`). */
export type ErrorKind =
  | "Invalid"
  | "Schema"
  | "NotFound"
  | "NotPermitted"
  | "Refused"
  | "Verify"
  | "Argument"
  | "Adapter"
  | "TooManyDeletes"
  | "Network"
  | "Store"
  | "Internal";

/**
 * A ChittySync failure. `kind` says which; the message names what failed
 * and what to do. Schema violations (`kind === "Invalid"`) also carry
 * `registry`, `record`, `field`, `value` and `rule`.
 */
export class ChittySyncError extends Error {
  readonly kind: ErrorKind;
  readonly registry?: string;
  readonly record?: string;
  readonly field?: string;
  readonly value?: string;
  readonly rule?: string;

  constructor(kind: ErrorKind, fields: { message: string } & Record<string, string>) {
    super(fields.message);
    this.name = `ChittySyncError(${kind})`;
    this.kind = kind;
    Object.assign(this, { ...fields, message: fields.message });
  }
}

type Record<K extends string, V> = { [P in K]: V };

/** A native error as a `ChittySyncError`; anything else unchanged. */
function translate(e: unknown): unknown {
  if (NativeError.instanceOf(e)) {
    const err = e as unknown as { tag: string; inner: { message: string } & Record<string, string> };
    return new ChittySyncError(err.tag as ErrorKind, err.inner);
  }
  return e;
}

function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw translate(e);
  }
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A JavaScript value in the wire encoding (see ffi/src/wire.rs); what it means for a field is decided in Rust by the field's type. */
function encode(value: Value | null | undefined): unknown {
  if (value === null || value === undefined) return null;
  if (value instanceof Decimal) return { $decimal: value.value };
  if (typeof value === "bigint") {
    return value >= -SAFE && value <= SAFE ? Number(value) : { $int: value.toString() };
  }
  if (typeof value === "number") {
    if (!Number.isInteger(value)) return { $decimal: String(value) };
    return Number.isSafeInteger(value) ? value : { $int: BigInt(value).toString() };
  }
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (value instanceof Set) return { $set: [...value].map(String).sort() };
  if (typeof value === "object") return { $json: value };
  throw new TypeError(
    `cannot store ${typeof value} in a field; use a string, number, bigint, boolean, decimal(), a Set of options, or an array or object for JSON`,
  );
}

/** A wire value as JavaScript. */
function decode(value: unknown): unknown {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1) {
      const inner = (value as { [k: string]: unknown })[keys[0]];
      switch (keys[0]) {
        case "$int":
          return BigInt(inner as string);
        case "$decimal":
          return new Decimal(inner as string);
        case "$set":
          return new Set(inner as string[]);
        case "$json":
          return inner;
      }
    }
  }
  return value;
}

function dumps(fields: { [name: string]: Value | null | undefined }): string {
  const o: { [k: string]: unknown } = {};
  for (const [k, v] of Object.entries(fields)) o[k] = encode(v);
  return JSON.stringify(o);
}

function fieldsOf(wire: { [name: string]: unknown }): { [name: string]: unknown } {
  const o: { [k: string]: unknown } = {};
  for (const [k, v] of Object.entries(wire)) o[k] = decode(v);
  return o;
}

/** A record: its id, field values, and whether it is deleted or has conflicting fields. */
export interface Record_ {
  id: string;
  fields: { [name: string]: unknown };
  deleted: boolean;
  conflicted: string[];
}
export type { Record_ as Record };

type WireRecord = { id: string; fields: { [name: string]: unknown }; deleted: boolean; conflicted: string[] };

function record(r: WireRecord): Record_ {
  return { id: r.id, fields: fieldsOf(r.fields), deleted: r.deleted, conflicted: r.conflicted };
}

/** One of several concurrent values of a field. */
export interface Candidate {
  value: unknown;
  author?: string;
  time: number;
  change: string;
}

/** A field with concurrent values; `chosen` indexes the policy's pick (undefined under `manual`). */
export interface Conflict {
  record: string;
  field: string;
  policy: string;
  candidates: Candidate[];
  chosen?: number;
}

type WireConflict = {
  record: string;
  field: string;
  policy: string;
  candidates: Array<{ value: unknown; author: string | null; time: number; change: string }>;
  chosen: number | null;
};

function conflict(c: WireConflict): Conflict {
  return {
    record: c.record,
    field: c.field,
    policy: c.policy,
    candidates: c.candidates.map((x) => ({
      value: decode(x.value),
      author: x.author ?? undefined,
      time: x.time,
      change: x.change,
    })),
    chosen: c.chosen ?? undefined,
  };
}

/** One field of a schema. */
export interface FieldOptions {
  required?: boolean;
  unique?: boolean;
  options?: string[];
  pattern?: string;
  min?: number;
  max?: number;
  description?: string;
}

const KINDS: { [name: string]: FieldKind } = {
  text: FieldKind.Text,
  long_text: FieldKind.LongText,
  integer: FieldKind.Integer,
  decimal: FieldKind.Decimal,
  bool: FieldKind.Bool,
  date: FieldKind.Date,
  datetime: FieldKind.Datetime,
  select: FieldKind.Select,
  multi_select: FieldKind.MultiSelect,
  url: FieldKind.Url,
  email: FieldKind.Email,
  reference: FieldKind.Reference,
  json: FieldKind.Json,
};

/** A schema field: `field("name", "text", { required: true })`. */
export function field(name: string, kind: string | FieldKind = "text", opts: FieldOptions = {}): FieldSpec {
  let k: FieldKind;
  if (typeof kind === "string") {
    const found = KINDS[kind.toLowerCase().replace("-", "_")];
    if (found === undefined) {
      throw new TypeError(`unknown field type '${kind}'; use one of ${Object.keys(KINDS).join(", ")}`);
    }
    k = found;
  } else {
    k = kind;
  }
  return FieldSpec.create({
    name,
    kind: k,
    required: opts.required ?? false,
    unique: opts.unique ?? false,
    options: opts.options ?? [],
    pattern: opts.pattern,
    min: opts.min,
    max: opts.max,
    description: opts.description,
  });
}

function role(r: string | Role): Role {
  if (typeof r !== "string") return r;
  switch (r) {
    case "admin":
      return Role.Admin;
    case "writer":
      return Role.Writer;
    case "reader":
      return Role.Reader;
    default:
      throw new TypeError(`unknown role '${r}'; use 'admin', 'writer' or 'reader'`);
  }
}

/** Which changes `audit` lists. */
export interface AuditOptions {
  record?: string;
  author?: string;
  since?: number;
  until?: number;
}

/** A registry in a replica. Every write is one signed change, durable when the call returns. */
export class Registry {
  /** The generated low-level object. */
  readonly native: RegistryLike;

  constructor(inner: RegistryLike) {
    this.native = inner;
  }

  get id(): string {
    return this.native.id();
  }

  get name(): string {
    return this.native.name();
  }

  /** The schema, as the JSON object of schema files. */
  get schema(): { fields: Array<{ name: string; type: string }> } & { [k: string]: unknown } {
    return JSON.parse(this.native.schemaJson());
  }

  /** How many live records there are. */
  get size(): number {
    return Number(this.native.len());
  }

  /** Creates a record (no id: a new one) or updates the given fields of an existing one; returns its id. */
  put(fields: { [name: string]: Value }, id?: string): string {
    return call(() => this.native.putJson(id, dumps(fields)));
  }

  /** Writes many records as one signed change: all land, or none do. */
  putMany(records: Array<{ id?: string; fields: { [name: string]: Value } }>): string[] {
    // One JSON document crosses the boundary: far cheaper than a typed
    // value per field for thousands of records.
    const objects = records.map((r) => {
      const o: { [k: string]: unknown } = {};
      for (const [k, v] of Object.entries(r.fields)) o[k] = encode(v);
      if (r.id !== undefined) o._id = r.id;
      return o;
    });
    return JSON.parse(call(() => this.native.putManyJson(JSON.stringify(objects)))) as string[];
  }

  /** A record by id (deleted ones too, with `deleted` set). */
  get(id: string): Record_ | undefined {
    const r = this.native.getJson(id);
    return r === undefined ? undefined : record(JSON.parse(r) as WireRecord);
  }

  /** Live records whose fields equal every filter (a multi-select matches when it holds the value). */
  list(filters: { [field: string]: Value } = {}): Record_[] {
    const records = JSON.parse(call(() => this.native.listJson(dumps(filters)))) as WireRecord[];
    return records.map(record);
  }

  /** Clears fields of a record. */
  unset(id: string, ...fields: string[]): void {
    call(() => this.native.unset(id, fields));
  }

  /** Deletes a record (a tombstone). */
  delete(id: string): void {
    call(() => this.native.delete_(id));
  }

  /** Every field with concurrent values, and the policy's pick. */
  conflicts(): Conflict[] {
    return (JSON.parse(this.native.conflictsJson()) as WireConflict[]).map(conflict);
  }

  /** Settles a conflict by writing the chosen value as a new change. */
  resolve(recordId: string, fieldName: string, value: Value): void {
    call(() => this.native.resolveJson(recordId, fieldName, JSON.stringify(encode(value))));
  }

  members(): Member[] {
    return this.native.members();
  }

  /** Adds a member or changes their role (admins only). */
  setMember(key: string, r: string | Role): void {
    const parsed = role(r);
    call(() => this.native.setMember(key, parsed));
  }

  /** Removes a member (admins only); their concurrent changes are revoked. */
  removeMember(key: string): void {
    call(() => this.native.removeMember(key));
  }

  heads(): string[] {
    return this.native.heads();
  }

  stateDigest(): string {
    return this.native.stateDigest();
  }

  /** The signed changes the other side lacks, given its heads. */
  exportBundle(theirHeads: string[] = []): Uint8Array {
    return new Uint8Array(call(() => this.native.exportBundle(theirHeads)));
  }

  /** Every change with author, signature status and what it did. */
  audit(opts: AuditOptions = {}): AuditEntry[] {
    const filter = AuditFilter.create({
      record: opts.record,
      author: opts.author,
      since: opts.since === undefined ? undefined : BigInt(opts.since),
      until: opts.until === undefined ? undefined : BigInt(opts.until),
    });
    return call(() => this.native.audit(filter));
  }

  /** Signs this replica's attestation of the current state. */
  attest(): void {
    call(() => this.native.attest());
  }

  attestationStatus(): AttestationStatus {
    return call(() => this.native.attestationStatus());
  }
}

/** How a replica serves its registries to peers (`Replica.serve`). */
export interface ServeOptions {
  /** Keys accepted even if they are members of no registry here. */
  allow?: string[];
  /** Accept any key; registries are still served only to their members. */
  allowAny?: boolean;
  /** Keys that may bring registries new to this hub (they are accepted as peers too). */
  allowCreate?: string[];
  /** Any accepted key may bring new registries, within `createQuota`. */
  allowCreateAny?: boolean;
  /** New registries one key may bring to this hub, in all (default 10). */
  createQuota?: number;
}

/** A local replica: one file holding many registries, with this replica's signing key beside it. */
export class Replica {
  /** The generated low-level object. */
  readonly native: ReplicaLike;

  private constructor(inner: ReplicaLike) {
    this.native = inner;
  }

  /** Opens (or creates) the replica at `path`. */
  static open(path: string): Replica {
    return new Replica(call(() => native.Replica.open(path)));
  }

  /** This replica's public key: what admins add as a member. */
  get publicKey(): string {
    return this.native.publicKey();
  }

  /** Creates a registry from `field(...)` specs, or from a schema object or TOML/JSON text. */
  createRegistry(name: string, schema: FieldSpec[] | string | object): Registry {
    if (Array.isArray(schema)) {
      return new Registry(call(() => this.native.createRegistry(name, schema as FieldSpec[])));
    }
    const text = typeof schema === "string" ? schema : JSON.stringify(schema);
    return new Registry(call(() => this.native.createRegistryWithSchema(name, text)));
  }

  registry(nameOrId: string): Registry {
    return new Registry(call(() => this.native.registry(nameOrId)));
  }

  registries(): RegistryInfo[] {
    return call(() => this.native.registries());
  }

  /** Verifies and applies a bundle; any bad change refuses it whole. */
  importBundle(bundle: Uint8Array): ImportSummary {
    const copy = bundle.buffer.slice(bundle.byteOffset, bundle.byteOffset + bundle.byteLength) as ArrayBuffer;
    return call(() => this.native.importBundle(copy));
  }

  /** Re-checks everything from genesis; throws (kind "Verify") naming the first bad item. */
  verify(registry?: string): VerifySummary {
    return call(() => this.native.verify(registry));
  }

  /** Binds a registry to an external target (a table); the binding gets its own signing key (made a writer when this replica is an admin). Secrets only by reference: `secretEnv` names an environment variable. */
  addBinding(spec: {
    name: string;
    registry: string;
    kind: string;
    target: string;
    idColumn?: string;
    mapping?: { [field: string]: string };
    keyField?: string;
    direction?: Direction;
    settings?: { [key: string]: string };
    secretEnv?: string;
    conflictPolicy?: string;
    /** Run it every so many seconds while the replica is served over HTTP. */
    everySecs?: number;
  }): BindingAdded {
    const native_ = BindingSpec.create({
      name: spec.name,
      registry: spec.registry,
      kind: spec.kind,
      target: spec.target,
      idColumn: spec.idColumn ?? "id",
      mapping: new Map(Object.entries(spec.mapping ?? {})),
      keyField: spec.keyField,
      direction: direction(spec.direction),
      settings: new Map(Object.entries(spec.settings ?? {})),
      secretEnv: spec.secretEnv,
      conflictPolicy: spec.conflictPolicy,
      everySecs: spec.everySecs === undefined ? undefined : BigInt(spec.everySecs),
    });
    return call(() => this.native.addBinding(native_));
  }

  bindings(): BindingSpec[] {
    return call(() => this.native.bindings());
  }

  removeBinding(name: string): void {
    call(() => this.native.removeBinding(name));
  }

  /** Runs binding `name` every `everySecs` seconds while the replica is served over HTTP, or only when asked (undefined). Returns the binding as stored. */
  setBindingSchedule(name: string, everySecs?: number): BindingSpec {
    const every = everySecs === undefined ? undefined : BigInt(everySecs);
    return call(() => this.native.setBindingSchedule(name, every));
  }

  /** The last `limit` recorded runs of binding `name`, newest first: `outcome` ("ok", "partial", "failed", "dry-run"), `applied`, `failed`, `invalid`, `conflicts`, `error`. */
  mirrorRuns(name: string, limit = 20): MirrorRunInfo[] {
    return call(() => this.native.mirrorRuns(name, limit));
  }

  /**
   * Adds an API token that may use `registries` with `role` (default "writer"), valid for
   * `expiresInSeconds` (none: until removed). Its own key is made a member of each registry (this
   * replica must be an admin of each). `.secret` is shown once, never stored.
   */
  addToken(name: string, registries: string[], opts: { role?: string | Role; expiresInSeconds?: number } = {}): TokenAdded {
    const r = role(opts.role ?? "writer");
    const expires = opts.expiresInSeconds === undefined ? undefined : BigInt(opts.expiresInSeconds);
    return call(() => this.native.addToken(name, registries, r, expires));
  }

  /** Every token, by name (never their secrets). */
  tokens(): TokenInfo[] {
    return call(() => this.native.tokens());
  }

  /** Removes a token: its key leaves its registries and its secret stops working. Returns what it was. */
  removeToken(name: string): TokenInfo {
    return call(() => this.native.removeToken(name));
  }

  /** One round with the peer at `address` (`host:port`). With `key` the peer must prove it; without, the key it proves first is pinned for the address (trust on first use). */
  async syncPeer(
    address: string,
    opts: { key?: string; registries?: string[]; timeoutSecs?: number } = {},
  ): Promise<PeerReport> {
    try {
      return await this.native.syncPeer(
        address,
        opts.key,
        opts.registries ?? [],
        opts.timeoutSecs === undefined ? undefined : BigInt(opts.timeoutSecs),
      );
    } catch (e) {
      throw translate(e);
    }
  }

  /**
   * Serves this replica's registries to peers (a hub); each peer gets only the registries it is a member of.
   * A registry new to this hub is taken only from keys in `allowCreate` (or any accepted key with
   * `allowCreateAny`), at most `createQuota` per key (default 10). `hub.address()` tells the port;
   * `hub.shutdown()` stops it.
   */
  async serve(address = "127.0.0.1:0", opts: ServeOptions = {}): Promise<HubLike> {
    try {
      return await this.native.serve(
        address,
        opts.allow ?? [],
        opts.allowAny ?? false,
        opts.allowCreate ?? [],
        opts.allowCreateAny ?? false,
        opts.createQuota === undefined ? undefined : BigInt(opts.createQuota),
      );
    } catch (e) {
      throw translate(e);
    }
  }

  /** The changes peers deliver from now on: `for await (const c of replica.changes()) …`. */
  changes(): ChangeStream {
    return new ChangeStream(this.native.subscribe());
  }

  /** Makes a stored Postgres binding's table ready: creates it from the schema when `create` and it is missing, installs change tracking (or says why it cannot), and describes it. */
  async prepareBinding(name: string, create = false): Promise<RemoteTableInfo> {
    try {
      return await this.native.prepareBinding(name, create);
    } catch (e) {
      throw translate(e);
    }
  }

  /**
   * Runs a binding once: plan, then (unless `dryRun`) the writes on both
   * sides. `adapter` is an `Adapter` written in JavaScript, a `MemoryTable`,
   * or undefined for a stored binding of a built-in kind (e.g. Postgres).
   */
  async runMirror(binding: string, adapter?: Adapter | MemoryTable, opts: MirrorRunOptions = {}): Promise<MirrorReport> {
    const options = MirrorOptions.create({
      direction: direction(opts.direction),
      dryRun: opts.dryRun ?? false,
      allowDeletes: opts.allowDeletes ?? false,
      full: opts.full ?? false,
    });
    const progress = opts.progress;
    const listener: ProgressListener = {
      stage: (stage: string, total: bigint) => progress?.stage(stage, Number(total)),
      advance: (n: bigint) => progress?.advance(Number(n)),
    };
    let out;
    try {
      if (adapter === undefined) out = await this.native.runMirror(binding, options, listener);
      else if (adapter instanceof MemoryTable) out = await this.native.runMirrorMemory(binding, adapter.native, options, listener);
      else out = await this.native.runMirrorForeign(binding, bridge(adapter), options, listener);
    } catch (e) {
      throw translate(e);
    }
    return {
      dryRun: out.dryRun,
      applied: Number(out.applied),
      failed: [...out.failed],
      invalid: [...out.invalid],
      openConflicts: Number(out.openConflicts),
      plan: JSON.parse(out.reportJson),
      pending: out.pending,
    };
  }
}

/** Which way a binding moves data. */
export type Direction = "push" | "pull" | "both";

function direction(d?: Direction): MirrorDirection | undefined {
  switch (d) {
    case undefined:
      return undefined;
    case "push":
      return MirrorDirection.Push;
    case "pull":
      return MirrorDirection.Pull;
    case "both":
      return MirrorDirection.Both;
    default:
      throw new TypeError(`unknown direction '${d}'; use push, pull or both`);
  }
}

/** How to run a mirror. */
export interface MirrorRunOptions {
  direction?: Direction;
  dryRun?: boolean;
  allowDeletes?: boolean;
  full?: boolean;
  /** Told each stage (`fetch`, `apply-local`, `apply-remote`) and the work done. */
  progress?: { stage(name: string, total: number): void; advance(n: number): void };
}

/** What a mirror run planned and did. `invalid` lists the remote rows that could not be taken (`id`, `record`, `field`, `reason`); `plan` holds per row the action, side, fields old → new, conflicts, invalid rows and a summary. */
export interface MirrorReport {
  dryRun: boolean;
  applied: number;
  failed: string[];
  invalid: InvalidRow[];
  openConflicts: number;
  plan: { [key: string]: unknown };
  /** Every row still not applied after the run (`id`, `record`, `state`, `reason`, `retryable`, `since`): the next run retries them. */
  pending: PendingRow[];
}

/**
 * A row of an adapter's table: its id and values by registry field (null or
 * undefined: missing). A row the adapter knows is broken carries `invalid`,
 * the reason: the mirror reports it on every run until fixed, and neither
 * mirrors it nor takes it as deleted.
 */
export interface Row {
  id: string;
  fields?: { [field: string]: Value | null | undefined };
  modifiedAt?: number;
  invalid?: string;
}

/** What `Adapter.fetch` returns. */
export interface Fetch {
  rows: Row[];
  deleted?: string[];
  /** Whether `rows` is the whole table (default true). */
  complete?: boolean;
  /** The cursor for the next incremental fetch (none: always fetch everything). */
  cursor?: string;
}

/** One write the engine asks an adapter to make. */
export type Op =
  | { kind: "create"; id: string; fields: { [field: string]: unknown } }
  | { kind: "update"; id: string; fields: { [field: string]: unknown } }
  | { kind: "delete"; id: string };

/** A write that failed; return it from `apply` in the op's place. */
export interface RowFailed {
  /** Why the write failed: a message, or the `Error` that says it. */
  failed: string | Error;
  retryable?: boolean;
}

/**
 * An adapter written in JavaScript, run by the Rust mirror engine (plan,
 * dry run, conflict policies, provenance, snapshots). `target` is the
 * table's name. Throw to fail the whole call. In an `update`, a field set
 * to `null` is cleared.
 */
export interface Adapter {
  system: string;
  target: string;
  columns(): string[];
  fetch(since: string | undefined): Fetch;
  /** Per op: the row's id (undefined: the id proposed), or a `RowFailed`. */
  apply(ops: Op[]): Array<string | undefined | RowFailed>;
}

function guard<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (AdapterFailure.instanceOf(e)) throw e;
    const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw new AdapterFailure.Failed({ message: what });
  }
}

/** The adapter's target; adapters written before `target` replaced `table` still work, and one with neither is refused by name. */
function targetOf(a: Adapter): string {
  const legacy = (a as unknown as { table?: unknown }).table;
  const target = a.target ?? legacy;
  if (target === undefined || target === null || String(target).trim() === "") {
    throw new TypeError("the adapter has no `target`: set it to the name of the table it mirrors");
  }
  return String(target);
}

/** The message of a failed write, whatever the adapter put in `failed`: a row is never taken as written because its failure had no text. */
function failureMessage(failed: unknown): string {
  if (failed instanceof Error) return failed.message || failed.name || "the adapter reported an error with no message";
  const text = failed === undefined || failed === null ? "" : String(failed);
  return text.trim() === "" ? "the adapter reported an error with no message" : text;
}

/** Spells a JavaScript adapter's rows and results in the wire encoding; the Rust side decodes them by the registry's field types. */
function bridge(a: Adapter): ForeignAdapter {
  const target = targetOf(a);
  return {
    system: () => String(a.system),
    target: () => target,
    columns: () => guard(() => a.columns().map(String)),
    fetch: (since) =>
      guard(() => {
        const f = a.fetch(since);
        return JSON.stringify({
          rows: f.rows.map((r) => ({
            id: r.id,
            fields: JSON.parse(dumps(r.fields ?? {})),
            modified_at: r.modifiedAt ?? null,
            invalid: r.invalid ?? null,
          })),
          deleted: f.deleted ?? [],
          complete: f.complete ?? true,
          cursor: f.cursor ?? null,
        });
      }),
    apply: (ops: string) =>
      guard(() => {
        const wire = JSON.parse(ops) as Array<{ op: string; id: string; fields?: { [k: string]: unknown } }>;
        const mine: Op[] = wire.map((o) => {
          const fields = fieldsOf(o.fields ?? {});
          switch (o.op) {
            case "create":
              return { kind: "create", id: o.id, fields };
            case "update":
              return { kind: "update", id: o.id, fields };
            default:
              return { kind: "delete", id: o.id };
          }
        });
        return JSON.stringify(
          a.apply(mine).map((r) =>
            r === undefined || r === null || typeof r === "string"
              ? (r ?? null)
              : { error: failureMessage(r.failed), retryable: r.retryable ?? false },
          ),
        );
      }),
  };
}

/** An in-memory table: the reference adapter, for tests and for comparing a JavaScript adapter's behaviour against. Its `insert`, `update` and `remove` act as another application would. */
export class MemoryTable {
  /** The generated low-level object. */
  readonly native: NativeMemoryTable;

  constructor(name: string) {
    this.native = new NativeMemoryTable(name);
  }

  /** Inserts or replaces a row. */
  insert(id: string, fields: { [field: string]: Value }): void {
    call(() => this.native.insert(id, dumps(fields)));
  }

  /** Changes fields of a row; `null` clears a field. */
  update(id: string, fields: { [field: string]: Value | null }): void {
    call(() => this.native.update(id, dumps(fields)));
  }

  /** Deletes a row. */
  remove(id: string): void {
    this.native.remove(id);
  }

  /** Every row: id → fields. */
  rows(): { [id: string]: { [field: string]: unknown } } {
    const wire = JSON.parse(this.native.rowsJson()) as { [id: string]: { [k: string]: unknown } };
    const out: { [id: string]: { [field: string]: unknown } } = {};
    for (const [id, f] of Object.entries(wire)) out[id] = fieldsOf(f);
    return out;
  }

  /** How many writes the engine made to the table (0 after a dry run). */
  mutatingCalls(): number {
    return Number(this.native.mutatingCalls());
  }
}

/** The changes peers deliver to a replica, as an async iterator of `RemoteChange`. */
export class ChangeStream implements AsyncIterable<RemoteChange> {
  constructor(private readonly inner: ChangeStreamLike) {}

  /** The next delivery (waits for it); undefined once the replica is gone. */
  next(): Promise<RemoteChange | undefined> {
    return this.inner.next();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<RemoteChange> {
    for (;;) {
      const change = await this.inner.next();
      if (change === undefined) return;
      yield change;
    }
  }
}

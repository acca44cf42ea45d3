//! Numbered schema migrations. Append new ones; never edit a released one.

/// Migration `i` brings the store from `user_version` i to i + 1.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: registries, signed changes, compacted snapshots.
    r#"
    CREATE TABLE registries (
        id          BLOB PRIMARY KEY,       -- 16 bytes: prefix of the genesis change hash
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,       -- ms since the epoch, from the genesis
        added_at    INTEGER NOT NULL        -- when this replica first stored it
    ) STRICT;
    CREATE INDEX registries_name ON registries(name);

    -- Every change this replica accepted, in acceptance order (pos).
    -- `bytes` is NULL once the change is folded into a snapshot; the
    -- signature, author and hash stay, so it remains verifiable.
    CREATE TABLE changes (
        pos         INTEGER PRIMARY KEY AUTOINCREMENT,
        registry_id BLOB NOT NULL REFERENCES registries(id),
        hash        BLOB NOT NULL,
        bytes       BLOB,
        actor       BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        start_op    INTEGER NOT NULL,
        time        INTEGER NOT NULL,       -- the change's hybrid logical clock (ms)
        author_key  BLOB NOT NULL,
        signature   BLOB NOT NULL,
        received_at INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX changes_hash ON changes(registry_id, hash);
    CREATE INDEX changes_registry_pos ON changes(registry_id, pos);

    -- The latest compacted document per registry, covering every change of
    -- it with pos <= upto_pos.
    CREATE TABLE snapshots (
        registry_id BLOB PRIMARY KEY REFERENCES registries(id),
        upto_pos    INTEGER NOT NULL,
        data        BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: the local journal (hash-chained record of what this replica
    //    accepted, refused and wrote) and signed transparency-log checkpoints.
    r#"
    CREATE TABLE journal (
        seq         INTEGER PRIMARY KEY,    -- 1, 2, 3, … with no gaps
        at          INTEGER NOT NULL,       -- ms since the epoch
        registry_id BLOB,                   -- NULL for replica-wide events
        kind        TEXT NOT NULL,          -- created | wrote | accepted | refused | …
        detail      TEXT NOT NULL,          -- JSON
        prev        BLOB NOT NULL,          -- hash of the previous row (zeros for the first)
        hash        BLOB NOT NULL
    ) STRICT;
    CREATE INDEX journal_registry ON journal(registry_id, seq);

    -- Checkpoints this replica signed over its log of accepted changes
    -- (leaf i = the change at the i-th position of `changes`).
    CREATE TABLE checkpoints (
        size        INTEGER PRIMARY KEY,
        root        BLOB NOT NULL,
        note        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: members' signed attestations of registry states (they travel in
    //    bundles beside the changes and live outside the document).
    r#"
    CREATE TABLE attestations (
        registry_id  BLOB NOT NULL REFERENCES registries(id),
        member       BLOB NOT NULL,
        heads        BLOB NOT NULL,         -- sorted change hashes, 32 bytes each
        digest       BLOB NOT NULL,
        change_count INTEGER NOT NULL,
        signature    BLOB NOT NULL,
        received_at  INTEGER NOT NULL,
        PRIMARY KEY (registry_id, member, digest, heads)
    ) STRICT;
    "#,
    // 4: the changes that touched a registry's members, schema or meta —
    //    the only ones that can remove a member — so revocations are found
    //    without decoding the whole history on every load.
    r#"
    CREATE TABLE admin_changes (
        registry_id BLOB NOT NULL REFERENCES registries(id),
        hash        BLOB NOT NULL,
        PRIMARY KEY (registry_id, hash)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 5: adapter bindings (a registry mirrored to an external table), the
    //    last-known snapshot of each bound record on both sides, cursors.
    r#"
    CREATE TABLE adapter_bindings (
        name        TEXT PRIMARY KEY,
        registry_id BLOB NOT NULL REFERENCES registries(id),
        config      TEXT NOT NULL,          -- JSON: kind, settings, table, mapping, …; no secrets
        cursor      TEXT,                   -- the adapter's opaque change cursor
        local_heads TEXT,                   -- registry heads (hex, comma-separated) a run fully synced
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX adapter_bindings_registry ON adapter_bindings(registry_id);

    -- Per bound record: the values both sides last agreed on (the base of
    -- the three-way merge) and the remote row as last seen, as JSON objects
    -- keyed by registry field name.
    CREATE TABLE adapter_rows (
        binding     TEXT NOT NULL REFERENCES adapter_bindings(name) ON DELETE CASCADE,
        record_id   TEXT NOT NULL,
        remote_id   TEXT NOT NULL,
        base        TEXT NOT NULL,
        remote      TEXT NOT NULL,
        synced_at   INTEGER NOT NULL,
        PRIMARY KEY (binding, record_id)
    ) STRICT;
    CREATE UNIQUE INDEX adapter_rows_remote ON adapter_rows(binding, remote_id);
    "#,
    // 6: peer sync — peers this replica knows (trust on first use pins a
    //    key to the address it was first reached at), envelope nonces seen
    //    per peer (replays are refused across restarts), and the Automerge
    //    sync state per peer and registry (reconnects are incremental).
    r#"
    CREATE TABLE peers (
        key         BLOB PRIMARY KEY,       -- the peer's ed25519 public key
        address     TEXT,                   -- host:port it was reached at, if dialled
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX peers_address ON peers(address);

    CREATE TABLE peer_nonces (
        peer        BLOB NOT NULL,
        nonce       BLOB NOT NULL,
        at          INTEGER NOT NULL,       -- the envelope's timestamp (ms)
        PRIMARY KEY (peer, nonce)
    ) STRICT;
    CREATE INDEX peer_nonces_at ON peer_nonces(at);

    CREATE TABLE peer_sync_states (
        peer        BLOB NOT NULL,
        registry_id BLOB NOT NULL,
        state       BLOB NOT NULL,          -- automerge::sync::State::encode()
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (peer, registry_id)
    ) STRICT;
    "#,
    // 7: API tokens of the HTTP service — a hash of each bearer secret (never
    //    the secret), the token's own key (a member of its registries) and
    //    its scope.
    r#"
    CREATE TABLE api_tokens (
        name         TEXT PRIMARY KEY,
        key          BLOB NOT NULL,          -- the token's ed25519 public key
        secret_hash  BLOB NOT NULL UNIQUE,   -- sha256 of the bearer secret
        role         TEXT NOT NULL,
        registries   TEXT NOT NULL,          -- JSON array of registry ids (hex)
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,                -- ms since the epoch; NULL: never
        last_used_at INTEGER
    ) STRICT;
    "#,
    // 8: mirror runs — each run of a binding (by hand, by a schedule or
    //    through the API): when, how long, how it ended, what it did.
    r#"
    CREATE TABLE mirror_runs (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        binding      TEXT NOT NULL REFERENCES adapter_bindings(name) ON DELETE CASCADE,
        started_at   INTEGER NOT NULL,
        duration_ms  INTEGER NOT NULL,
        outcome      TEXT NOT NULL,          -- ok | partial | failed | dry-run
        applied      INTEGER NOT NULL,
        failed       INTEGER NOT NULL,
        invalid      INTEGER NOT NULL,
        conflicts    INTEGER NOT NULL,
        error        TEXT
    ) STRICT;
    CREATE INDEX mirror_runs_binding ON mirror_runs(binding, seq);
    "#,
    // 9: trust on first use per address — each address dialled is pinned
    //    to the key first proven there, and a key seen at a new address gets
    //    a pin of its own without moving the old one (the `peers.address`
    //    column only ever held the latest address per key; its pins carry
    //    over) — and which peer brought each registry to this replica (a
    //    hub's quota of new registries per key).
    r#"
    CREATE TABLE peer_pins (
        address     TEXT PRIMARY KEY,       -- host:port as dialled
        key         BLOB NOT NULL,          -- the key that address must prove
        pinned_at   INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX peer_pins_key ON peer_pins(key);
    INSERT OR IGNORE INTO peer_pins (address, key, pinned_at, last_seen)
        SELECT address, key, first_seen, last_seen FROM peers
        WHERE address IS NOT NULL ORDER BY first_seen;

    CREATE TABLE registry_origins (
        registry_id BLOB PRIMARY KEY,
        peer        BLOB NOT NULL,          -- the key that pushed it here first
        added_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX registry_origins_peer ON registry_origins(peer);
    "#,
    // 10: rows a mirror run could not settle: remote rows that break the
    //    schema, and rows whose write failed on either side. Each run
    //    retries them and reports them until they are applied or gone, so
    //    nothing is dropped when the change cursor moves on.
    r#"
    CREATE TABLE adapter_pending (
        binding     TEXT NOT NULL REFERENCES adapter_bindings(name) ON DELETE CASCADE,
        remote_id   TEXT NOT NULL,
        record_id   TEXT,                   -- the bound record, if there is one
        state       TEXT NOT NULL,          -- invalid | local | remote (the side a write failed on)
        reason      TEXT NOT NULL,
        retryable   INTEGER NOT NULL,
        row         TEXT,                   -- the remote row as last fetched (JSON), to retry a pull
        since       INTEGER NOT NULL,       -- ms since the epoch: first seen pending
        PRIMARY KEY (binding, remote_id)
    ) STRICT;
    "#,
];

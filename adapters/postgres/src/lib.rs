//! The Postgres adapter (tokio-postgres): a registry mirrored in a
//! PostgreSQL table (the binding's table, optionally `schema.table`; the
//! id column is its primary key).
//!
//! - Values travel as text and are cast in SQL to each column's actual
//!   type, so any existing table whose columns accept the registry's values
//!   can be bound, and the schema's types map as in the reference table
//!   (text, bigint, numeric, boolean, date, timestamptz, text + CHECK for
//!   select, text[] for multi-select, jsonb).
//! - Writes are batched: `INSERT … SELECT FROM unnest(…) ON CONFLICT … DO
//!   UPDATE … WHERE … IS DISTINCT FROM` for creates, `UPDATE … FROM
//!   unnest(…)` touching only the changed columns for updates, `DELETE …
//!   = ANY(…)` for deletes; one transaction per batch, retried on
//!   serialization failure or deadlock, never on constraint violations,
//!   which are reported per row.
//! - Changes are read from a trigger-fed change log, proportional to what
//!   changed; the sync's own writes are tagged (`app.sync_origin`) and
//!   never logged, and entries every binding has read are deleted (see
//!   `changelog`). The cursor is the fetch's snapshot (`pg_current_snapshot()`):
//!   an entry is consumed once its transaction is visible, i.e. committed,
//!   and was not visible in the previous fetch's snapshot. Entries at or
//!   above the previous snapshot's xmin are re-examined, so a transaction
//!   that commits late (after a later one) is never skipped, and unlike
//!   consuming only below the current xmin, one long-running transaction
//!   elsewhere in the cluster does not hold every other change back.
//! - Tables made from the schema give ids themselves (a UUID, for other
//!   applications' inserts that leave the id out), with required fields
//!   `NOT NULL` and unique ones `UNIQUE`.
//! - Every identifier is quoted; every value is a parameter.
//!
//! # Settings
//!
//! [`PostgresKind`]; see [`PostgresAdapter::for_binding`]:
//!
//! | Setting | Meaning | Default |
//! |---|---|---|
//! | `url` | `postgres://user@host:port/db`, without a password: the password comes from the binding's secret variable (without `url`, that variable holds the whole connection string) | |
//! | `statement_timeout_ms` | how long one statement may run | 30000 |
//!
//! # TLS
//!
//! The connection string's `sslmode` and `sslrootcert` mean what they mean
//! to libpq (`postgres://sync@db.example/app?sslmode=verify-full`):
//! `disable`; `prefer` (the default: TLS when the server offers it);
//! `require` (always TLS, the certificate unchecked, unless `sslrootcert`
//! names a file: then as `verify-ca`); `verify-ca` (the certificate must
//! be signed by a trusted root); `verify-full` (and name the host). The
//! trusted roots are those in the `sslrootcert` file, or else (and with
//! `sslrootcert=system`, which makes `verify-full` the default) the
//! system's roots and the webpki roots. Channel binding is used whenever
//! the server offers it (`channel_binding=require` insists on it).
//!
//! # Modules
//!
//! `settings` reads connection strings, `tls` makes rustls connections,
//! `layout` checks the table against the spec, `changelog` installs the
//! change log and fetches, `sql` holds quoting, value casts and the batch
//! statements, `adapter` applies.

mod adapter;
mod changelog;
mod layout;
mod settings;
mod sql;
mod tls;

pub use tls::SslMode;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config};

use chittysync::{Adapter, AdapterError, BoxFuture, RemoteTable, TableSpec};

use crate::sql::{db_reason, ident};
use crate::tls::{Roots, TlsSettings};

const SYSTEM: &str = "postgres";

/// Settings of a [`PostgresAdapter`] that are not the connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Tags this adapter's writes in the change log so its own fetches
    /// skip them (use a value unique to the binding).
    pub origin: String,
    /// `statement_timeout` for every statement.
    pub statement_timeout: Duration,
    /// Retries of a batch after a serialization failure or deadlock.
    pub max_retries: u32,
}

impl PostgresOptions {
    /// Options with this origin tag, a 30 s statement timeout and 5 retries.
    pub fn new(origin: impl Into<String>) -> Self {
        PostgresOptions {
            origin: origin.into(),
            statement_timeout: Duration::from_secs(30),
            max_retries: 5,
        }
    }
}

/// A Postgres table as an adapter.
pub struct PostgresAdapter {
    client: Mutex<Client>,
    schema: String,
    table_name: String,
    shown: String,
    spec: TableSpec,
    options: PostgresOptions,
    /// Test hook: the next apply writes only this many ops.
    fail_after: Arc<AtomicUsize>,
    /// Set by `prepare` (a run that writes), cleared by `describe` (a dry
    /// run): only the former records what it read and prunes the log.
    writable: AtomicBool,
}

impl fmt::Debug for PostgresAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the connection settings: they may hold a password.
        f.debug_struct("PostgresAdapter")
            .field("table", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresAdapter {
    /// Connects with a connection string (which may hold a password: it is
    /// never logged, stored or put in an error) to mirror `spec.table`
    /// (`table` or `schema.table`). TLS follows the string's `sslmode`
    /// and `sslrootcert` (see the crate's docs).
    pub async fn connect(
        connection: &str,
        spec: TableSpec,
        options: PostgresOptions,
    ) -> Result<Self, AdapterError> {
        let (config, tls) = settings::parse(connection).map_err(|reason| {
            AdapterError::Config(format!("the Postgres connection string: {reason}"))
        })?;
        PostgresAdapter::connect_tls(config, tls, spec, options).await
    }

    /// Connects with a parsed configuration: TLS as its `ssl_mode` says
    /// (`require` leaves the certificate unchecked), with the system's
    /// roots.
    pub async fn connect_with(
        config: Config,
        spec: TableSpec,
        options: PostgresOptions,
    ) -> Result<Self, AdapterError> {
        use tokio_postgres::config::SslMode as Wire;
        let mode = match config.get_ssl_mode() {
            Wire::Disable => SslMode::Disable,
            Wire::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = TlsSettings {
            mode,
            roots: Roots::System,
        };
        PostgresAdapter::connect_tls(config, tls, spec, options).await
    }

    async fn connect_tls(
        mut config: Config,
        tls: TlsSettings,
        spec: TableSpec,
        options: PostgresOptions,
    ) -> Result<Self, AdapterError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.ssl_mode(tls.mode.wire());
        let connect_err = |reason| AdapterError::Connect {
            system: SYSTEM.into(),
            reason,
        };
        let connector = tls.connector().map_err(connect_err)?;
        let (client, connection) = config
            .connect(connector)
            .await
            .map_err(|e| connect_err(tls_reason(&e, &tls)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        let timeout_ms = options.statement_timeout.as_millis();
        client
            .batch_execute(&format!(
                "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET statement_timeout = {timeout_ms}"
            ))
            .await
            .map_err(|e| AdapterError::Connect {
                system: SYSTEM.into(),
                reason: db_reason(&e),
            })?;
        let (schema, table) = match spec.table.split_once('.') {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => {
                let row = client
                    .query_one("SELECT current_schema()::text", &[])
                    .await
                    .map_err(|e| AdapterError::Connect {
                        system: SYSTEM.into(),
                        reason: db_reason(&e),
                    })?;
                let schema: Option<String> = row.get(0);
                (
                    schema.unwrap_or_else(|| "public".into()),
                    spec.table.clone(),
                )
            }
        };
        if schema.contains('\0') || table.contains('\0') {
            return Err(AdapterError::Config(
                "a table or schema name cannot contain a NUL character".into(),
            ));
        }
        Ok(PostgresAdapter {
            client: Mutex::new(client),
            shown: format!("{schema}.{table}"),
            schema,
            table_name: table,
            spec,
            options,
            fail_after: Arc::new(AtomicUsize::new(usize::MAX)),
            writable: AtomicBool::new(false),
        })
    }

    /// Connects for a stored binding. The connection string is the
    /// binding's `url` setting (which must hold no password) with the
    /// password read from the binding's secret variable, or, without a
    /// `url` setting, the whole connection string read from that variable.
    /// `origin` tags this binding's writes (see [`PostgresOptions::origin`]).
    pub async fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
        origin: &str,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let secret = binding.secret()?;
        let (config, tls) = match (binding.settings.get("url"), secret) {
            (Some(url), secret) => {
                let (mut config, tls) = settings::parse(url).map_err(|reason| {
                    wrap(AdapterError::Config(format!(
                        "binding '{}': setting url: {reason}",
                        binding.name
                    )))
                })?;
                if let Some(password) = secret {
                    config.password(password);
                }
                (config, tls)
            }
            (None, Some(whole)) => settings::parse(&whole).map_err(|reason| {
                wrap(AdapterError::Config(format!(
                    "binding '{}': the connection string in environment variable {}: {reason}",
                    binding.name,
                    binding.secret_env.as_deref().unwrap_or_default()
                )))
            })?,
            (None, None) => {
                return Err(wrap(AdapterError::Config(format!(
                    "binding '{}' has no connection: give the `url` setting (without a password) and/or a secret_env naming the variable that holds the password or the whole connection string",
                    binding.name
                ))));
            }
        };
        let mut options = PostgresOptions::new(origin);
        if let Some(ms) = binding.settings.get("statement_timeout_ms") {
            let ms: u64 = ms.parse().map_err(|_| {
                wrap(AdapterError::Config(format!(
                    "statement_timeout_ms '{ms}' is not a number of milliseconds"
                )))
            })?;
            options.statement_timeout = Duration::from_millis(ms);
        }
        PostgresAdapter::connect_tls(config, tls, binding.table_spec(schema), options)
            .await
            .map_err(wrap)
    }

    /// Fault injection for tests: the next apply writes only its first `n`
    /// ops and reports the rest as failed, as a connection lost mid-batch.
    pub fn fail_after(&self, n: usize) {
        self.fail_after.store(n, Ordering::SeqCst);
    }

    /// The quoted, qualified table name.
    fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.table_name))
    }

    fn request(&self, action: &str) -> impl Fn(tokio_postgres::Error) -> AdapterError + '_ {
        let action = action.to_owned();
        move |e| AdapterError::Request {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            action: action.clone(),
            reason: db_reason(&e),
        }
    }

    fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            reason,
        }
    }
}

/// Why a connection failed, in the words of its TLS settings where TLS is
/// the reason.
fn tls_reason(e: &tokio_postgres::Error, tls: &TlsSettings) -> String {
    let text = db_reason(e);
    let mode = tls.mode.name();
    if text.contains("server does not support TLS") {
        format!(
            "the server does not accept TLS connections, and sslmode={mode} requires TLS; turn on ssl in the server's configuration, or set sslmode=prefer or sslmode=disable in the connection string if the network is trusted"
        )
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        format!(
            "the server's certificate does not name the host connected to (sslmode={mode} checks it); connect with a host name the certificate names, or use sslmode=verify-ca to check only who signed it"
        )
    } else if text.contains("UnknownIssuer") {
        format!(
            "the server's certificate is not signed by a trusted root (sslmode={mode}); set sslrootcert to the file holding the certificate of the authority that signed it"
        )
    } else if text.contains("invalid peer certificate") {
        format!("the server's certificate was refused (sslmode={mode}): {text}")
    } else {
        text
    }
}

/// The `postgres` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresKind;

impl chittysync::AdapterKind for PostgresKind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "url",
                help: "postgres://user@host:port/db?sslmode=verify-full (no password: name its environment variable as the secret)",
            },
            chittysync::SettingSpec {
                key: "statement_timeout_ms",
                help: "how long one statement may run, in ms",
            },
        ]
    }

    fn tracking(&self, _table: &RemoteTable) -> String {
        "change-log trigger (cost follows what changed)".into()
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = PostgresAdapter::for_binding(cx.binding, cx.schema, cx.origin).await?;
            Ok(Box::new(adapter) as Box<dyn Adapter>)
        })
    }
}

//! The Notion adapter: a registry mirrored in a Notion database, over a thin
//! HTTP client (API version 2025-09-03, where a database holds one or more
//! data sources).
//!
//! - **Where.** The binding's table is the database id; the data source is
//!   discovered from it (`GET /v1/databases/{id}`). A database with several
//!   data sources needs the `data_source` setting (an id or a name).
//! - **Which property.** A mapped column names a property by id or by name
//!   (ids first). [`NotionAdapter::pinned_mapping`] gives the property ids,
//!   so a mapping stored with them survives renames in Notion.
//! - **Row ids.** A dedicated rich-text property (the binding's id column)
//!   holds the registry record id. A page without one (a person created it
//!   in Notion) is known by its page id.
//! - **Reading.** Queries are sorted by a timestamp and split into windows
//!   (`on_or_after` the last timestamp seen), so Notion's cap on the results
//!   of one query never truncates a scan silently; more pages created within
//!   one minute than the cap fail a full fetch loudly. An incremental fetch re-reads
//!   from one minute before the cursor (Notion rounds `last_edited_time`
//!   down to the minute), de-duplicates, and reports pages moved to the
//!   trash since then as deleted; when more pages were edited within one
//!   minute than a query returns (a bulk edit), it reads every page instead.
//!   A page's edit time, for last-write-wins, is the end of its minute: in
//!   the same minute, an edit in Notion wins over one in the registry.
//! - **Writing.** Create (`POST /v1/pages`), update (`PATCH`), delete (move
//!   to the trash). A create for a record id that already has a page updates
//!   that page, so a retried create never duplicates a page. A row whose
//!   relation names a record created in the same batch is written after it.
//! - **Rate limits.** A client-side budget (2.8 requests/s by default),
//!   `Retry-After` honoured (up to a minute) on 429, 503 and 529, jittered
//!   exponential backoff on 409 and 529 (any request) and on
//!   500/502/503/504 (reads and queries only; a create is retried after a
//!   5xx or a lost answer only once a wait and a lookup show it did not
//!   land). The loop, the waits and the budget are
//!   [`chittysync_http`]'s; which failures are transient is Notion's.
//!
//! # Settings
//!
//! A binding's table is the database id and its id column the record-id
//! property; the integration token comes from the variable its
//! `--secret-env` names. Settings ([`NotionKind`]; see [`NotionOptions`]):
//!
//! | Setting | Meaning | Default |
//! |---|---|---|
//! | `data_source` | the data source's id or name | the database's only one |
//! | `base_url` | the API's address | `https://api.notion.com` |
//! | `requests_per_second` | the client-side request budget | 2.8 |
//! | `retry_base_ms` | the first retry's wait, doubled after each | 1000 |
//! | `max_retries` | retries of one request | 5 |
//! | `timeout_ms` | how long one request may take | 30000 |
//!
//! # Modules
//!
//! `client` sends one request (auth, budget, retries, errors), `codec`
//! turns values into property values and back, `layout` finds the data
//! source and the property of each field, `adapter` fetches and applies.
//!
//! # Field types
//!
//! | Registry type | Notion property types | Notes |
//! |---|---|---|
//! | text | title, rich_text, phone_number | text in chunks of at most 2000 characters |
//! | long_text | title, rich_text | chunks of at most 2000 characters, joined on read |
//! | integer | number | beyond ±2^53 cannot be held exactly: the row fails |
//! | decimal | number | more than 15 significant digits cannot be held exactly: the row fails |
//! | bool | checkbox | a checkbox cannot be empty: unchecked reads as `false` and no value writes unchecked; a record without a value is not changed to `false` by reading its unchecked box back ([`Adapter::unset_reads_as`]) |
//! | date | date | `{start: "YYYY-MM-DD"}`; a date with a time set in Notion reads as its day; only a range's start is read, and writing the field replaces the whole date, dropping a range's end |
//! | datetime | date | `{start: RFC 3339}` |
//! | select | select, status | no commas; a status option must already exist |
//! | multi_select | multi_select, relation, people | at most 100 items; options without commas; relation items are record ids, people items user ids |
//! | url | url, rich_text, title | at most 2000 characters |
//! | email | email, rich_text, title | at most 200 characters |
//! | reference | relation (to the same data source), rich_text | record id ↔ page id |
//! | json | rich_text | the compact JSON text |
//!
//! Notion-computed properties (formula, rollup, created/last-edited time and
//! by, unique_id) can be read into any field but never written: mapping a
//! field onto one is refused unless the binding only pulls. Any other pair
//! of field type and property type is refused at prepare/describe, naming
//! both. Empty text and empty lists read as no value.

mod adapter;
mod client;
mod codec;
mod layout;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::sync::Mutex;

use chittysync::{Adapter, AdapterError, BoxFuture, RemoteTable, TableSpec};
use chittysync_http::RequestBudget;

use crate::adapter::State;

const SYSTEM: &str = "notion";

/// How a [`NotionAdapter`] reaches its database. Bindings set these from
/// their settings (named in brackets); the token comes from the binding's
/// secret variable.
#[derive(Clone)]
#[non_exhaustive]
pub struct NotionOptions {
    /// The API's address (`base_url`; default `https://api.notion.com`), for
    /// proxies and emulators.
    pub base_url: String,
    /// The integration token (never logged, stored or shown in an error).
    pub token: String,
    /// The database id (the binding's table).
    pub database_id: String,
    /// The data source, by id or name (`data_source`); needed only when the
    /// database has several.
    pub data_source: Option<String>,
    /// The rich-text property holding each page's record id, by name or id
    /// (the binding's id column).
    pub id_property: String,
    /// The client-side request budget (`requests_per_second`; default 2.8,
    /// below Notion's average of 3).
    pub requests_per_second: f64,
    /// The first retry's wait, doubled on each further retry and jittered
    /// (`retry_base_ms`; default 1000).
    pub retry_base_ms: u64,
    /// Retries of one request (`max_retries`; default 5).
    pub max_retries: u32,
    /// The timeout of one request (`timeout_ms`; default 30 s).
    pub timeout: Duration,
    /// Whether the binding only pulls, which allows mapping fields onto
    /// Notion-computed properties (set from the binding's direction).
    pub pull_only: bool,
}

impl NotionOptions {
    /// Options for `database_id` with `token`: the public API, the id in a
    /// property named `id`, 2.8 requests/s, 5 retries from 1 s, 30 s
    /// timeout, both directions.
    pub fn new(token: impl Into<String>, database_id: impl Into<String>) -> Self {
        NotionOptions {
            base_url: "https://api.notion.com".into(),
            token: token.into(),
            database_id: database_id.into(),
            data_source: None,
            id_property: "id".into(),
            requests_per_second: 2.8,
            retry_base_ms: 1000,
            max_retries: 5,
            timeout: Duration::from_secs(30),
            pull_only: false,
        }
    }
}

impl fmt::Debug for NotionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("NotionOptions")
            .field("base_url", &self.base_url)
            .field("database_id", &self.database_id)
            .field("data_source", &self.data_source)
            .field("id_property", &self.id_property)
            .field("requests_per_second", &self.requests_per_second)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("max_retries", &self.max_retries)
            .field("timeout", &self.timeout)
            .field("pull_only", &self.pull_only)
            .finish_non_exhaustive()
    }
}

/// A Notion data source as an adapter.
pub struct NotionAdapter {
    http: reqwest::Client,
    options: NotionOptions,
    spec: TableSpec,
    budget: RequestBudget,
    state: Mutex<State>,
}

impl fmt::Debug for NotionAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotionAdapter")
            .field("database", &self.options.database_id)
            .finish_non_exhaustive()
    }
}

impl NotionAdapter {
    /// An adapter on the database in `options`, mirroring the fields of
    /// `spec` (each [`chittysync::ColumnSpec::column`] is a property id or
    /// name; the record ids live in [`NotionOptions::id_property`], not in
    /// `spec.id_column`). Nothing is requested until the first call.
    pub fn new(spec: TableSpec, options: NotionOptions) -> Result<Self, AdapterError> {
        if options.token.trim().is_empty() {
            return Err(AdapterError::Config(
                "the Notion integration token is empty; put it in the environment variable the binding's secret_env names".into(),
            ));
        }
        if options.database_id.trim().is_empty() {
            return Err(AdapterError::Config(
                "give the Notion database id as the binding's table".into(),
            ));
        }
        let budget = RequestBudget::per_second(options.requests_per_second).ok_or_else(|| {
            AdapterError::Config("requests_per_second must be a positive number".into())
        })?;
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| AdapterError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(NotionAdapter {
            http,
            spec,
            budget,
            state: Mutex::new(State::default()),
            options,
        })
    }

    /// An adapter for a stored binding: the database is the binding's
    /// table, the id property its id column, the token read from its secret
    /// variable; settings `base_url`, `data_source`, `requests_per_second`,
    /// `retry_base_ms`, `max_retries` and `timeout_ms` as in
    /// [`NotionOptions`].
    pub fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let token = binding.secret()?.ok_or_else(|| {
            wrap(AdapterError::Config(format!(
                "binding '{}' has no Notion token: set its secret_env to the name of the environment variable that holds the integration token",
                binding.name
            )))
        })?;
        let mut options = NotionOptions::new(token, binding.target.clone());
        options.id_property = binding.id_column.clone();
        options.pull_only = !binding.direction.pushes();
        let s = &binding.settings;
        if let Some(url) = s.get("base_url") {
            options.base_url = url.trim_end_matches('/').to_owned();
        }
        options.data_source = s.get("data_source").cloned();
        let number = |key: &str| -> Result<Option<f64>, chittysync::MirrorError> {
            s.get(key)
                .map(|v| {
                    v.parse::<f64>().map_err(|_| {
                        wrap(AdapterError::Config(format!(
                            "binding '{}': setting {key} = '{v}' is not a number",
                            binding.name
                        )))
                    })
                })
                .transpose()
        };
        if let Some(rps) = number("requests_per_second")? {
            options.requests_per_second = rps;
        }
        if let Some(ms) = number("retry_base_ms")? {
            options.retry_base_ms = ms.max(0.0) as u64;
        }
        if let Some(n) = number("max_retries")? {
            options.max_retries = n.max(0.0) as u32;
        }
        if let Some(ms) = number("timeout_ms")? {
            if !(ms.is_finite() && ms >= 1.0) {
                return Err(wrap(AdapterError::Config(format!(
                    "binding '{}': setting timeout_ms = {ms} must be a finite number of milliseconds, at least 1 (e.g. 30000)",
                    binding.name
                ))));
            }
            options.timeout = Duration::from_millis(ms as u64);
        }
        NotionAdapter::new(binding.table_spec(schema), options).map_err(wrap)
    }

    /// Registry field → property id of every mapped field. Stored as the
    /// binding's mapping, it keeps the binding working when properties are
    /// renamed in Notion.
    pub async fn pinned_mapping(&self) -> Result<BTreeMap<String, String>, AdapterError> {
        let layout = self.layout(false, false).await?;
        Ok(layout
            .mapped
            .iter()
            .map(|(c, p)| (c.field.clone(), p.id.clone()))
            .collect())
    }

    /// The id of the record-id property. Stored as the binding's id column,
    /// it keeps the binding working when that property is renamed.
    pub async fn pinned_id_property(&self) -> Result<String, AdapterError> {
        Ok(self.layout(false, false).await?.id_prop.id)
    }
}

/// The `notion` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NotionKind;

impl chittysync::AdapterKind for NotionKind {
    fn name(&self) -> &'static str {
        "notion"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "data_source",
                help: "the data source's id or name, when the database has several",
            },
            chittysync::SettingSpec {
                key: "base_url",
                help: "the API's address (default https://api.notion.com)",
            },
            chittysync::SettingSpec {
                key: "requests_per_second",
                help: "the client's request budget (default 2.8)",
            },
            chittysync::SettingSpec {
                key: "retry_base_ms",
                help: "the first retry's wait, doubled after each",
            },
            chittysync::SettingSpec {
                key: "max_retries",
                help: "retries of a rate-limited or failed request",
            },
            chittysync::SettingSpec {
                key: "timeout_ms",
                help: "how long one request may take",
            },
        ]
    }

    fn tracking(&self, table: &RemoteTable) -> String {
        format!(
            "pages edited since the last sync, and pages moved to the trash ({})",
            table.name
        )
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = NotionAdapter::for_binding(cx.binding, cx.schema)?;
            Ok(Box::new(adapter) as Box<dyn Adapter>)
        })
    }

    fn setup<'a>(
        &'a self,
        binding: &'a mut chittysync::AdapterBinding,
        schema: &'a chittysync::Schema,
        create: bool,
    ) -> BoxFuture<'a, Result<RemoteTable, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = NotionAdapter::for_binding(binding, schema)?;
            let wrap = |source| chittysync::MirrorError::Adapter {
                binding: binding.name.clone(),
                source,
            };
            let table = adapter.prepare(create).await.map_err(wrap)?;
            // Pin the mapping to property ids: renames in Notion then
            // break nothing.
            let mapping = adapter.pinned_mapping().await.map_err(wrap)?;
            let id_property = adapter.pinned_id_property().await.map_err(wrap)?;
            binding.mapping = mapping;
            binding.id_column = id_property;
            Ok(table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chittysync::FieldKind;

    #[test]
    fn a_timeout_that_is_not_a_finite_number_is_refused() {
        let schema =
            chittysync::Schema::new().field(chittysync::FieldDef::new("name", FieldKind::Text));
        for bad in ["NaN", "inf", "-5", "0"] {
            let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1")
                .secret_env("PATH")
                .setting("timeout_ms", bad);
            let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
            assert!(err.to_string().contains("timeout_ms"), "{bad}: {err}");
        }
        let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1")
            .secret_env("PATH")
            .setting("timeout_ms", "250");
        assert!(NotionAdapter::for_binding(&binding, &schema).is_ok());
    }

    #[test]
    fn a_binding_without_a_token_says_how_to_give_one() {
        let schema =
            chittysync::Schema::new().field(chittysync::FieldDef::new("name", FieldKind::Text));
        let binding = chittysync::AdapterBinding::new("n", "services", "notion", "db1");
        let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
        assert!(err.to_string().contains("secret_env"), "{err}");
        let binding = binding.secret_env("CHITTYSYNC_TEST_UNSET_NOTION_TOKEN");
        let err = NotionAdapter::for_binding(&binding, &schema).unwrap_err();
        assert!(
            err.to_string()
                .contains("CHITTYSYNC_TEST_UNSET_NOTION_TOKEN"),
            "{err}"
        );
    }
}

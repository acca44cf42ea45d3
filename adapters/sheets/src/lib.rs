//! The Google Sheets adapter: one sheet (tab) of a spreadsheet as a table,
//! through a thin reqwest client for the Sheets v4 and Drive v3 endpoints.
//!
//! - **Layout.** Row 1 holds the headers; a field lives in the column whose
//!   header is the field's mapped column name. Record ids live in a hidden
//!   id column, headed `_id` (or the binding's id column, when that is not
//!   the default `id`). Other columns are left alone.
//! - **Auth.** A service-account key file: an RS256 JWT (`iss` = the
//!   account's email, `aud` = the key file's `token_uri`, one hour) is
//!   traded for an access token, cached and refreshed before it expires
//!   (and once more if a request is refused with 401). Neither the key nor
//!   the token is ever logged or put in an error.
//! - **Reads.** A fetch first asks Drive for the file's `version` (the
//!   cursor): when it equals the previous fetch's, nothing changed and the
//!   sheet is not read. Otherwise the whole sheet is read in one
//!   `values:batchGet` (unformatted values, dates as serial numbers) and
//!   returned as a complete fetch, so deletes are seen as missing rows.
//!   Sheets keeps no per-row times: every row's modification time is the
//!   file's `modifiedTime` (an upper bound), which is what last-write-wins
//!   compares.
//! - **Ids for rows people add.** A row without an id gets a fresh UUIDv7,
//!   written into the id column by the first fetch after
//!   [`Adapter::prepare`] (one `values:batchUpdate`). Just before that
//!   write (after every wait) the sheet is read again, and a row whose id
//!   cell or content changed meanwhile (a person sorted the sheet) is
//!   skipped and left out of the fetch: it gets its id next run, and no id
//!   lands on another row. [`Adapter::describe`] (what a dry run calls)
//!   disarms this, and so does a binding that only pulls
//!   ([`SheetsOptions::pull_only`]): such fetches never write, and give
//!   such a row a provisional id `sheet-row-<hash of its cells>`.
//! - **Writes.** Every request that addresses rows by number (deletes,
//!   cell writes, id writes) takes its row numbers from a read of the id
//!   column made after the last wait before it (the write budget, a retry's
//!   backoff), so rows a person moves meanwhile are found where they are
//!   now; a 429 is retried by reading again, never by resending old row
//!   numbers. In this order: one structural `:batchUpdate` deleting rows
//!   bottom-up (a request of its own: if it is refused, only the deletes
//!   fail, for good, with the reason, and the other changes are still
//!   written); then, when rows are added, one growing the grid (new rows go
//!   below every row with content, including rows typed in since the
//!   fetch: the whole sheet is read then); then one `values:batchUpdate`
//!   (RAW) of every changed cell. A create whose id is already in the sheet
//!   updates that row, so a retried create never duplicates a row. A
//!   request that fails marks the ops it carried as failed; nothing is
//!   reported as written that was not. A structural request is never
//!   repeated after a lost answer (deleting twice would delete other
//!   rows): the next run re-reads and finishes.
//! - **Values.** Text-like fields, dates and date-times are written as
//!   strings (ISO 8601), numbers as numbers (as text when a double cannot
//!   hold them exactly), booleans as booleans, multi-selects as a JSON
//!   array string, JSON as its text. Serial numbers in date and date-time
//!   columns (what people's typed dates become) are read as days since
//!   1899-12-30; date-times are local times of the spreadsheet's time zone
//!   (`properties.timeZone`). Without a time-zone database, only zones with
//!   a fixed offset are converted (`UTC`, `GMT`, `Etc/GMT±N`); in any other
//!   zone a typed (serial) date-time is passed on as an invalid value
//!   saying what to do, so the engine reports that row instead of storing a
//!   shifted time. Dates, and date-times typed as text with an offset, read
//!   the same in every zone.
//! - **Quotas.** A client-side budget of reads and writes per minute
//!   (Google's per-user limits are 60 each), retries of 429 (honouring
//!   `Retry-After`) and, where a retry cannot apply a change twice, of 5xx
//!   and lost responses, with jittered exponential backoff. The loop, the
//!   waits and the budgets are [`chittysync_http`]'s.
//!
//! # Settings
//!
//! A binding's table is the spreadsheet id (from its URL); its id column,
//! when not the default `id`, is the id column's header. Settings
//! ([`SheetsKind`]; see [`SheetsOptions`]):
//!
//! | Setting | Meaning | Default |
//! |---|---|---|
//! | `key_file` | the service account's JSON key file (required; not readable by group or others) | |
//! | `sheet` | the tab's title | the first tab |
//! | `sheet_id` | the tab's numeric id, pinned when the binding is added | |
//! | `base_url` | the Sheets API's root | `https://sheets.googleapis.com` |
//! | `drive_base_url` | the Drive API's root | `https://www.googleapis.com` |
//! | `reads_per_minute`, `writes_per_minute` | the client-side request budgets | 60 each |
//! | `retry_base_ms` | the backoff unit | 1000 |
//! | `max_retries` | retries of one request | 5 |
//! | `timeout_ms` | how long one request may take | 30000 |
//!
//! # Modules
//!
//! `auth` gets access tokens, `client` sends requests (budgets, retries,
//! errors), `codec` turns values into cells and back, `layout` finds the
//! tab and its columns, `adapter` fetches and applies.

mod adapter;
mod auth;
mod client;
mod codec;
mod layout;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use chittysync::{Adapter, AdapterError, BoxFuture, RemoteTable, TableSpec};
use chittysync_http::RequestBudget;

use crate::auth::{AccessToken, ServiceAccount, load_key};
use crate::layout::Layout;

const SYSTEM: &str = "sheets";
/// The id column's header unless the binding names another id column.
pub(crate) const DEFAULT_ID_HEADER: &str = "_id";
/// Ops per apply unless the run says otherwise: every row of any sheet
/// that fits Google's cell limit with a few columns.
const PREFERRED_BATCH: usize = 1_000_000;

/// Settings of a [`SheetsAdapter`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SheetsOptions {
    /// The spreadsheet's id (from its URL; a binding's `table`).
    pub spreadsheet_id: String,
    /// The sheet (tab) title; `None` = the spreadsheet's first sheet
    /// (setting `sheet`).
    pub sheet: Option<String>,
    /// The sheet's numeric id (`sheetId`, setting `sheet_id`): when set, the
    /// tab is found by it, so renaming or reordering tabs changes nothing.
    /// `chittysync adapter add` stores it ([`SheetsAdapter::pinned_sheet_id`]).
    pub sheet_id: Option<i64>,
    /// The service-account key file (JSON, as Google issues it); on unix it
    /// must not be readable by group or others (setting `key_file`).
    pub key_file: PathBuf,
    /// The header of the hidden column holding record ids (default `_id`;
    /// a binding's id column when that is not `id`).
    pub id_header: String,
    /// The Sheets API root (setting `base_url`, default
    /// `https://sheets.googleapis.com`), for proxies and emulators.
    pub base_url: String,
    /// The Drive API root (setting `drive_base_url`, default
    /// `https://www.googleapis.com`).
    pub drive_base_url: String,
    /// Sheets read requests allowed per minute (setting
    /// `reads_per_minute`, default 60: Google's per-user quota).
    pub reads_per_minute: u32,
    /// Sheets write requests allowed per minute (setting
    /// `writes_per_minute`, default 60).
    pub writes_per_minute: u32,
    /// The backoff unit (setting `retry_base_ms`, default 1000): the n-th
    /// retry waits `min(2^n + jitter, 32)` units.
    pub retry_base: Duration,
    /// Retries of a request after 429, 5xx or a lost response (setting
    /// `max_retries`, default 5).
    pub max_retries: u32,
    /// Timeout of each request (setting `timeout_ms`, default 30 s).
    pub timeout: Duration,
    /// The binding only pulls: fetches never write to the sheet, and rows
    /// without an id keep provisional ids (set from the binding's
    /// direction).
    pub pull_only: bool,
}

impl SheetsOptions {
    /// Options for the first sheet of `spreadsheet_id`, authenticated with
    /// the service-account key in `key_file`, with Google's endpoints and
    /// the defaults above.
    pub fn new(spreadsheet_id: impl Into<String>, key_file: impl Into<PathBuf>) -> Self {
        SheetsOptions {
            spreadsheet_id: spreadsheet_id.into(),
            sheet: None,
            sheet_id: None,
            key_file: key_file.into(),
            id_header: DEFAULT_ID_HEADER.into(),
            base_url: "https://sheets.googleapis.com".into(),
            drive_base_url: "https://www.googleapis.com".into(),
            reads_per_minute: 60,
            writes_per_minute: 60,
            retry_base: Duration::from_millis(1000),
            max_retries: 5,
            timeout: Duration::from_secs(30),
            pull_only: false,
        }
    }

    /// Reads the options from a binding's settings (see each field).
    fn from_binding(binding: &chittysync::AdapterBinding) -> Result<Self, AdapterError> {
        let s = &binding.settings;
        let key_file = s.get("key_file").ok_or_else(|| {
            AdapterError::Config(format!(
                "binding '{}' has no key_file setting; set it to the path of the service account's JSON key file",
                binding.name
            ))
        })?;
        let mut o = SheetsOptions::new(binding.target.clone(), key_file);
        o.sheet = s.get("sheet").cloned();
        o.pull_only = !binding.direction.pushes();
        if let Some(id) = s.get("sheet_id") {
            o.sheet_id = Some(id.trim().parse().map_err(|_| {
                AdapterError::Config(format!(
                    "binding '{}': setting sheet_id = '{id}' is not a sheet id (a whole number, the gid= in the sheet's URL)",
                    binding.name
                ))
            })?);
        }
        if binding.id_column != "id" {
            o.id_header = binding.id_column.clone();
        }
        if let Some(url) = s.get("base_url") {
            o.base_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(url) = s.get("drive_base_url") {
            o.drive_base_url = url.trim_end_matches('/').to_owned();
        }
        let number = |key: &str, default: u64| -> Result<u64, AdapterError> {
            match s.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    AdapterError::Config(format!(
                        "binding '{}': setting {key} = '{v}' is not a whole number",
                        binding.name
                    ))
                }),
            }
        };
        o.reads_per_minute = number("reads_per_minute", 60)? as u32;
        o.writes_per_minute = number("writes_per_minute", 60)? as u32;
        o.retry_base = Duration::from_millis(number("retry_base_ms", 1000)?);
        o.max_retries = number("max_retries", 5)? as u32;
        o.timeout = Duration::from_millis(number("timeout_ms", 30_000)?);
        Ok(o)
    }
}

#[derive(Default)]
struct State {
    /// The layout as last read.
    layout: Option<Layout>,
    /// Whether fetches may write ids (armed by `prepare`, disarmed by
    /// `describe`).
    fill_ids: bool,
}

/// A sheet of a Google spreadsheet as an adapter.
pub struct SheetsAdapter {
    spec: TableSpec,
    options: SheetsOptions,
    shown: String,
    account: ServiceAccount,
    http: reqwest::Client,
    reads: RequestBudget,
    writes: RequestBudget,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    state: std::sync::Mutex<State>,
}

impl fmt::Debug for SheetsAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key or the token.
        f.debug_struct("SheetsAdapter")
            .field("spreadsheet", &self.shown)
            .field("service_account", &self.account.client_email)
            .finish_non_exhaustive()
    }
}

impl SheetsAdapter {
    /// An adapter on the sheet `options` names, laid out as `spec` (its
    /// `table` should be the spreadsheet id). Reads the key file now, so a
    /// missing or unsafe key is reported before any request.
    pub fn new(spec: TableSpec, options: SheetsOptions) -> Result<Self, AdapterError> {
        let account = load_key(&options.key_file)?;
        if options.spreadsheet_id.trim().is_empty()
            || options.spreadsheet_id.contains(['/', '?', '#'])
        {
            return Err(AdapterError::Config(format!(
                "'{}' is not a spreadsheet id; give the id from the spreadsheet's URL (the part after /d/)",
                options.spreadsheet_id
            )));
        }
        for base in [&options.base_url, &options.drive_base_url] {
            let usable = Url::parse(base)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base());
            if !usable {
                return Err(AdapterError::Config(format!(
                    "'{base}' is not an http(s) URL; give the API root like https://sheets.googleapis.com"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| AdapterError::Config(format!("cannot build the HTTP client: {e}")))?;
        let shown = match &options.sheet {
            Some(sheet) => format!("{}/{sheet}", options.spreadsheet_id),
            None => options.spreadsheet_id.clone(),
        };
        Ok(SheetsAdapter {
            reads: RequestBudget::per_minute(options.reads_per_minute),
            writes: RequestBudget::per_minute(options.writes_per_minute),
            spec,
            shown,
            account,
            http,
            options,
            token: tokio::sync::Mutex::new(None),
            state: std::sync::Mutex::new(State::default()),
        })
    }

    /// An adapter for a stored binding: `table` is the spreadsheet id; the
    /// settings are those of [`SheetsOptions`] (`key_file` is required).
    pub fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let options = SheetsOptions::from_binding(binding).map_err(wrap)?;
        SheetsAdapter::new(binding.table_spec(schema), options).map_err(wrap)
    }

    /// The numeric id (`sheetId`) of the sheet this adapter mirrors (read
    /// now unless known). Stored as the binding's `sheet_id` setting, it
    /// keeps the binding on that tab when tabs are renamed, reordered or
    /// added before it.
    pub async fn pinned_sheet_id(&self) -> Result<i64, AdapterError> {
        Ok(self.layout().await?.sheet_id)
    }
}

/// The `sheets` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SheetsKind;

impl chittysync::AdapterKind for SheetsKind {
    fn name(&self) -> &'static str {
        "sheets"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "key_file",
                help: "the service account's JSON key file",
            },
            chittysync::SettingSpec {
                key: "sheet",
                help: "the tab's title (default: the first tab)",
            },
            chittysync::SettingSpec {
                key: "sheet_id",
                help: "the tab's id, pinned when the binding is added",
            },
            chittysync::SettingSpec {
                key: "base_url",
                help: "the Sheets API's address",
            },
            chittysync::SettingSpec {
                key: "drive_base_url",
                help: "the Drive API's address",
            },
            chittysync::SettingSpec {
                key: "reads_per_minute",
                help: "the client's Sheets read budget (default 60)",
            },
            chittysync::SettingSpec {
                key: "writes_per_minute",
                help: "the client's Sheets write budget (default 60)",
            },
            chittysync::SettingSpec {
                key: "retry_base_ms",
                help: "the backoff unit: the n-th retry waits 2^n units plus jitter, at most 32",
            },
            chittysync::SettingSpec {
                key: "max_retries",
                help: "retries of a rate-limited or failed request (default 5)",
            },
            chittysync::SettingSpec {
                key: "timeout_ms",
                help: "how long one request may take (default 30000)",
            },
        ]
    }

    fn tracking(&self, _table: &RemoteTable) -> String {
        "the file's Drive version; a changed sheet is read in one request".into()
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = SheetsAdapter::for_binding(cx.binding, cx.schema)?;
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
            let adapter = SheetsAdapter::for_binding(binding, schema)?;
            let wrap = |source| chittysync::MirrorError::Adapter {
                binding: binding.name.clone(),
                source,
            };
            let table = adapter.prepare(create).await.map_err(wrap)?;
            // Pin the tab by its id: renaming, reordering or adding tabs
            // then moves nothing (without a sheet setting, "the first tab"
            // would).
            let sheet_id = adapter.pinned_sheet_id().await.map_err(wrap)?;
            binding
                .settings
                .insert("sheet_id".into(), sheet_id.to_string());
            Ok(table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_settings_become_options() {
        let binding = chittysync::AdapterBinding::new("s", "services", "sheets", "sheet-id")
            .setting("key_file", "key.json")
            .setting("sheet", "Contacts")
            .setting("retry_base_ms", "10")
            .setting("reads_per_minute", "120");
        let o = SheetsOptions::from_binding(&binding).unwrap();
        assert_eq!(o.spreadsheet_id, "sheet-id");
        assert_eq!(o.sheet.as_deref(), Some("Contacts"));
        assert_eq!(o.id_header, DEFAULT_ID_HEADER);
        assert_eq!(o.retry_base, Duration::from_millis(10));
        assert_eq!((o.reads_per_minute, o.writes_per_minute), (120, 60));
        assert_eq!(o.base_url, "https://sheets.googleapis.com");
        assert!(!o.pull_only);
        assert_eq!(o.sheet_id, None);
        let pinned = binding.clone().setting("sheet_id", "1234");
        assert_eq!(
            SheetsOptions::from_binding(&pinned).unwrap().sheet_id,
            Some(1234)
        );
        let bad = binding.clone().setting("sheet_id", "Contacts");
        let err = SheetsOptions::from_binding(&bad).unwrap_err().to_string();
        assert!(
            err.contains("sheet_id") && err.contains("Contacts"),
            "{err}"
        );
        let pulling = binding.clone().direction(chittysync::Direction::Pull);
        assert!(SheetsOptions::from_binding(&pulling).unwrap().pull_only);

        let mut renamed = binding.clone().setting("max_retries", "many");
        let err = SheetsOptions::from_binding(&renamed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_retries") && err.contains("many"), "{err}");
        renamed.settings.remove("max_retries");
        renamed.id_column = "record_id".into();
        assert_eq!(
            SheetsOptions::from_binding(&renamed).unwrap().id_header,
            "record_id"
        );
        let mut keyless = binding;
        keyless.settings.remove("key_file");
        let err = SheetsOptions::from_binding(&keyless)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
    }
}

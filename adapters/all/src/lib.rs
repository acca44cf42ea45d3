//! Every adapter kind ChittySync ships, registered in one place: the CLI,
//! the FFI and the service connect stored bindings through [`kinds`].
//!
//! A new adapter crate adds one line here.

pub use chittysync_notion::NotionKind;
pub use chittysync_postgres::PostgresKind;
pub use chittysync_sheets::SheetsKind;

/// The adapter kinds this build ships: `postgres`, `notion`, `sheets`.
pub fn kinds() -> chittysync::AdapterKinds {
    chittysync::AdapterKinds::new()
        .with(PostgresKind)
        .with(NotionKind)
        .with(SheetsKind)
}

/// The Postgres adapter crate.
pub use chittysync_postgres as postgres;

/// The Notion adapter crate.
pub use chittysync_notion as notion;

/// The Google Sheets adapter crate.
pub use chittysync_sheets as sheets;

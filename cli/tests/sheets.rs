//! `adapter add --kind sheets`, `sync`, `push`, `pull` and dry runs against
//! the Sheets emulator: the binding stores the key file's path, never the
//! key, and a sheet people edit stays in step with the registry.

mod common;

use std::path::Path;

use chittysync_emulators::Sheets;
use common::{chittysync as run, ok, services_replica};
use serde_json::json;

const ACCOUNT: &str = "sync-bot@chittysync-tests.iam.gserviceaccount.com";

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true

[[fields]]
name = "port"
type = "integer"
"#;

fn write_key(path: &Path, key: &serde_json::Value, mode: u32) {
    std::fs::write(path, serde_json::to_vec(key).unwrap()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn bind_a_sheet_and_keep_it_in_sync_both_ways() {
    let sheets = Sheets::new();
    let server = sheets.start_thread().unwrap();
    let spreadsheet = sheets.create_spreadsheet(&["Services"], &[ACCOUNT]);
    let dir = tempfile::tempdir().unwrap();
    let r = services_replica(dir.path(), SCHEMA);
    let key = sheets.service_account_key(&server.base_url(), ACCOUNT);
    let private_key = key["private_key"].as_str().unwrap().to_owned();
    let key_file = dir.path().join("sync-bot.json");
    let base = format!("base_url={}", server.base_url());
    let drive = format!("drive_base_url={}", server.base_url());
    let add = || {
        run(
            &r,
            &[
                "adapter",
                "add",
                "s",
                "--registry",
                "services",
                "--kind",
                "sheets",
                "--table",
                &spreadsheet,
                "--key-file",
                key_file.to_str().unwrap(),
                "--sheet",
                "Services",
                "--setting",
                &base,
                "--setting",
                &drive,
                "--create",
            ],
        )
    };
    // A key file others can read is refused, and the error shows no key.
    write_key(&key_file, &key, 0o644);
    let refused = add();
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("PRIVATE KEY"));
    write_key(&key_file, &key, 0o600);
    let added = add();
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert_eq!(
        sheets.values(&spreadsheet, "Services")[0],
        vec![json!("name"), json!("port"), json!("_id")],
        "--create wrote the headers"
    );

    // The binding keeps the key file's path, not the key.
    let shown = ok(&r, &["--json", "adapter", "show", "s"]);
    assert!(shown.contains("sync-bot.json"), "{shown}");
    assert!(
        shown.contains("\"sheet_id\""),
        "the tab is pinned by its id: {shown}"
    );
    let stored = String::from_utf8_lossy(&std::fs::read(&r).unwrap()).into_owned();
    let key_body = &private_key[40..80];
    assert!(!stored.contains(key_body) && !shown.contains(key_body));

    ok(
        &r,
        &["put", "services", "billing", "name=billing", "port=80"],
    );
    let before = sheets.version(&spreadsheet);
    let dry = ok(&r, &["sync", "s", "--dry-run"]);
    assert!(dry.contains("billing"), "{dry}");
    assert_eq!(
        sheets.version(&spreadsheet),
        before,
        "the dry run wrote nothing"
    );
    ok(&r, &["push", "s"]);
    let rows = sheets.values(&spreadsheet, "Services");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][..2], [json!("billing"), json!(80)]);

    // A person edits the port and types a new row without an id.
    let id = rows[1][2].clone();
    sheets.set_values(
        &spreadsheet,
        "Services",
        vec![
            rows[0].clone(),
            vec![json!("billing"), json!(8080), id],
            vec![json!("ledger"), json!(9000)],
        ],
    );
    ok(&r, &["sync", "s"]);
    let listed = ok(&r, &["--json", "ls", "services"]);
    assert!(
        listed.contains("8080") && listed.contains("ledger") && listed.contains("9000"),
        "{listed}"
    );
    let rows = sheets.values(&spreadsheet, "Services");
    assert!(
        rows[2]
            .get(2)
            .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())),
        "the new row got an id: {rows:?}"
    );
    // Nothing new: a second sync changes nothing.
    let again = ok(&r, &["--json", "sync", "s"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["applied"], 0, "{again}");
}

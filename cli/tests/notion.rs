//! `adapter add --kind notion`, `sync`, `push`, `pull` and dry runs against
//! the Notion emulator: the token travels only in an environment variable,
//! and the stored mapping names property ids, so renames in Notion break
//! nothing.

mod common;

use std::path::Path;

use chittysync_emulators::Notion;
use common::{Run, chittysync_env, services_replica};
use serde_json::json;

const TOKEN: &str = "secret_cli_integration_token";
const TOKEN_VAR: &str = "CHITTYSYNC_TEST_NOTION_TOKEN";

/// Runs the binary with the token in its environment.
fn run(replica: &Path, args: &[&str]) -> Run {
    chittysync_env(replica, args, &[(TOKEN_VAR, TOKEN)])
}

fn ok(replica: &Path, args: &[&str]) -> String {
    let r = run(replica, args);
    assert_eq!(r.code, 0, "chittysync {args:?} failed: {}", r.stderr);
    r.stdout
}

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true

[[fields]]
name = "port"
type = "integer"
"#;

fn title(text: &str) -> serde_json::Value {
    json!({"title": [{"type": "text", "text": {"content": text}}]})
}

#[test]
fn bind_a_notion_database_and_keep_it_in_sync_through_renames() {
    let notion = Notion::new();
    notion.add_token(TOKEN);
    let server = notion.start_thread().unwrap();
    let (db, sources) = notion.create_database(
        "Services",
        vec![(
            "Services",
            json!({"name": {"title": {}}, "port": {"number": {}}}),
        )],
    );
    let ds = &sources[0];
    let dir = tempfile::tempdir().unwrap();
    let r = services_replica(dir.path(), SCHEMA);
    let base = format!("base_url={}", server.base_url());
    let add = |extra: &[&str]| {
        let mut args = vec![
            "adapter",
            "add",
            "n",
            "--registry",
            "services",
            "--kind",
            "notion",
            "--table",
            &db,
            "--secret-env",
            TOKEN_VAR,
            "--setting",
            &base,
        ];
        args.extend_from_slice(extra);
        run(&r, &args)
    };
    // Without the record-id property, and without --create: told what to add.
    let refused = add(&[]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no property 'id'"),
        "{}",
        refused.stderr
    );
    let added = add(&["--create"]);
    assert_eq!(added.code, 0, "{}", added.stderr);

    // The stored binding names property ids and holds no token.
    let shown = ok(&r, &["--json", "adapter", "show", "n"]);
    assert!(!shown.contains(TOKEN));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["mapping"]["name"], "title", "{shown}");
    let stored = std::fs::read(&r).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(TOKEN));

    ok(
        &r,
        &["put", "services", "billing", "name=billing", "port=80"],
    );
    let dry = ok(&r, &["adapter", "sync", "n", "--dry-run"]);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(notion.pages(ds).is_empty(), "the dry run wrote nothing");
    ok(&r, &["push", "n"]);
    assert_eq!(notion.pages(ds).len(), 1);

    notion.rename_property(ds, "port", "TCP port");
    notion.rename_property(ds, "id", "Record");
    notion.create_page(
        ds,
        json!({"name": title("ledger"), "TCP port": {"number": 9000}}),
    );
    ok(&r, &["pull", "n"]);
    let listed = ok(&r, &["--json", "ls", "services"]);
    assert!(
        listed.contains("ledger") && listed.contains("9000"),
        "{listed}"
    );
    ok(&r, &["put", "services", "billing", "port=81"]);
    ok(&r, &["adapter", "sync", "n"]);
    let ports: Vec<_> = notion
        .pages(ds)
        .iter()
        .map(|p| p["properties"]["TCP port"]["number"].clone())
        .collect();
    assert!(ports.contains(&json!(81)), "{ports:?}");
}

//! `chittysync audit` as an operator uses it: two replicas, a history with
//! edits by both, filters, JSON Lines, and a tampered signature.

mod common;

use std::path::Path;

use common::{chittysync, ok};

/// `--json audit …`: one JSON object a line.
fn audit(replica: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--json", "audit", "services"];
    all.extend_from_slice(args);
    ok(replica, &all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect()
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

const SCHEMA_WITH_OWNER: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true

[[fields]]
name = "port"
type = "integer"

[[fields]]
name = "owner"
type = "text"
"#;

struct Setup {
    dir: tempfile::TempDir,
    a: std::path::PathBuf,
    key_a: String,
    key_b: String,
}

/// Alice creates `services`, adds Bob (alias "bob") and `svc`; Bob changes
/// `svc.port` and creates `web`; Alice deletes `web`, adds a field and
/// makes Bob a reader.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = dir.path().join("schema.toml");
    let schema2 = dir.path().join("schema2.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    std::fs::write(&schema2, SCHEMA_WITH_OWNER).unwrap();
    let key_a = ok(&a, &["whoami"]).trim().to_owned();
    let key_b = ok(&b, &["whoami"]).trim().to_owned();
    let bundle = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    ok(
        &a,
        &["registry", "create", "services", "--schema", &s(&schema)],
    );
    ok(
        &a,
        &["members", "add", "services", &key_b, "--role", "writer"],
    );
    ok(&a, &["members", "alias", "services", &key_b, "bob"]);
    ok(&a, &["put", "services", "svc", "name=svc", "port=80"]);
    ok(&a, &["export", "services", "-o", &bundle("a1")]);
    ok(&b, &["import", &bundle("a1")]);
    ok(&b, &["put", "services", "svc", "port=81"]);
    ok(&b, &["put", "services", "web", "name=web"]);
    ok(&b, &["export", "services", "-o", &bundle("b1")]);
    ok(&a, &["import", &bundle("b1")]);
    ok(&a, &["rm", "services", "web"]);
    ok(&a, &["registry", "set-schema", "services", &s(&schema2)]);
    ok(
        &a,
        &["members", "add", "services", &key_b, "--role", "reader"],
    );
    Setup {
        dir,
        a,
        key_a,
        key_b,
    }
}

#[test]
fn the_table_says_who_changed_what_with_valid_signatures() {
    let s = setup();
    let out = ok(&s.a, &["audit", "services"]);
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{out}"))
            .to_owned()
    };
    let port = line("svc.port 80 → 81");
    assert!(port.contains("bob") && port.contains('✓'), "{port}");
    let created = line("created svc");
    assert!(created.contains(&s.key_a[..8]), "{created}");
    assert!(line("deleted web").contains('✓'));
    line("svc.port (none) → 80");
    line("created web");
    line("schema: field owner added (text)");
    line(&format!("member {} writer → reader", &s.key_b[..8]));
    line(&format!("alias of {} (none) → \"bob\"", &s.key_b[..8]));
    assert!(!out.contains('✗'), "{out}");
    assert!(out.contains("9 change(s)"), "{out}");
}

#[test]
fn json_lines_carry_positions_authors_aliases_and_exact_values() {
    let s = setup();
    let log = audit(&s.a, &[]);
    assert_eq!(log.len(), 9);
    let positions: Vec<i64> = log
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(log.iter().all(|e| e["signature"] == "valid"));
    let authors: Vec<&str> = log.iter().map(|e| e["author"].as_str().unwrap()).collect();
    let (a, b) = (s.key_a.as_str(), s.key_b.as_str());
    assert_eq!(authors, [a, a, a, a, b, b, a, a, a]);
    for e in &log {
        let alias = if e["author"] == b {
            "bob".into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(e["alias"], alias);
    }
    assert_eq!(
        log[4]["effects"],
        serde_json::json!([{ "kind": "field_set", "record": "svc", "field": "port", "old": 80, "new": 81 }])
    );
    assert_eq!(log[6]["effects"][0]["kind"], "record_deleted");
    assert_eq!(
        log[8]["effects"],
        serde_json::json!([{ "kind": "member_changed", "key": b, "old": "writer", "new": "reader" }])
    );
}

#[test]
fn filters_by_record_author_and_time() {
    let s = setup();
    let all = audit(&s.a, &[]);

    let web = audit(&s.a, &["--record", "web"]);
    let kinds: Vec<&str> = web
        .iter()
        .map(|e| e["effects"][0]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["record_created", "record_deleted"]);

    for who in ["bob", &s.key_b[..10], s.key_b.as_str()] {
        let bobs = audit(&s.a, &["--author", who]);
        assert_eq!(bobs.len(), 2, "--author {who}");
        assert!(bobs.iter().all(|e| e["author"] == s.key_b.as_str()));
    }
    let run = chittysync(&s.a, &["audit", "services", "--author", "carol"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--author 'carol'"), "{}", run.stderr);

    // --since is inclusive, --until exclusive; RFC 3339 or ms.
    let at = all[5]["at"].as_str().unwrap();
    let ms = all[5]["time"].as_i64().unwrap().to_string();
    assert_eq!(audit(&s.a, &["--since", at]), all[5..]);
    assert_eq!(audit(&s.a, &["--since", &ms]), all[5..]);
    assert_eq!(audit(&s.a, &["--until", at]), all[..5]);
    assert!(audit(&s.a, &["--since", "2999-01-01"]).is_empty());
    let bad = chittysync(&s.a, &["audit", "services", "--since", "soon"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}

#[test]
fn a_tampered_signature_shows_as_invalid_on_that_change_only() {
    let s = setup();
    let before = audit(&s.a, &[]);
    let target = before[4]["change"].as_str().unwrap().to_owned();
    let conn = rusqlite::Connection::open(&s.a).unwrap();
    let hash: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&target[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let changed = conn
        .execute(
            "UPDATE changes SET signature = zeroblob(64) WHERE hash = ?1",
            [&hash],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let after = audit(&s.a, &[]);
    let statuses: Vec<&str> = after
        .iter()
        .map(|e| e["signature"].as_str().unwrap())
        .collect();
    let mut expected = vec!["valid"; 9];
    expected[4] = "invalid";
    assert_eq!(statuses, expected);
    // What the change did is still shown.
    assert_eq!(after[4]["effects"], before[4]["effects"]);

    let run = chittysync(&s.a, &["audit", "services"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let port = run
        .stdout
        .lines()
        .find(|l| l.contains("svc.port 80 → 81"))
        .unwrap();
    assert!(port.contains("✗ invalid"), "{port}");
    assert!(
        run.stderr
            .contains("1 change(s) with an invalid or missing signature"),
        "{}",
        run.stderr
    );
    let _ = &s.dir;
}

#[test]
fn the_table_shows_where_a_mirror_run_brought_a_change_from() {
    use chittysync::{AdapterBinding, MemoryAdapter, MirrorOptions, Replica};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    {
        let replica = Replica::open(&path).unwrap();
        let schema = chittysync::Schema::new().field(chittysync::FieldDef::new(
            "name",
            chittysync::FieldKind::Text,
        ));
        replica.create_registry("services", schema).unwrap();
        replica
            .add_binding(&AdapterBinding::new("m", "services", "memory", "t"))
            .unwrap();
        let table = MemoryAdapter::new("t");
        table.insert("row-7", [("name", "from the table")]);
        let options = MirrorOptions::sync();
        let run = replica.run_mirror("m", &table, &options, &());
        let report = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run)
            .unwrap();
        assert_eq!(report.applied, 1);
    }
    let out = ok(&path, &["audit", "services"]);
    let line = out
        .lines()
        .find(|l| l.contains("via sync from memory table t, rows row-7"))
        .unwrap_or_else(|| panic!("no provenance in\n{out}"));
    assert!(line.contains('✓'), "{line}");
    // Ordinary writes say nothing more than what they did.
    assert_eq!(out.matches("via ").count(), 1, "{out}");
}

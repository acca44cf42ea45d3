//! `chittysync verify` and `chittysync journal` as an operator runs them.

mod common;

use std::path::Path;

use common::ok;

fn run(replica: &Path, args: &[&str]) -> (i32, String, String) {
    let run = common::chittysync(replica, args);
    (run.code, run.stdout, run.stderr)
}

fn setup(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("a.db");
    let schema = dir.join("s.toml");
    std::fs::write(&schema, "[[fields]]\nname = \"name\"\ntype = \"text\"\n").unwrap();
    ok(
        &db,
        &[
            "registry",
            "create",
            "r",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    for i in 0..3 {
        ok(&db, &["put", "r", &format!("id{i}"), &format!("name=n{i}")]);
    }
    db
}

#[test]
fn verify_passes_with_counts_then_names_a_deleted_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(dir.path());
    let out = ok(&db, &["verify"]);
    assert!(out.contains("verified"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&db, &["--json", "verify", "r"])).unwrap();
    assert_eq!(json["registries"][0]["changes"], 4);
    assert_eq!(json["journal_rows"], 4);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let hash: Vec<u8> = conn
        .query_row("SELECT hash FROM changes WHERE pos = 2", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM changes WHERE pos = 2", [])
        .unwrap();
    drop(conn);
    let (code, _, err) = run(&db, &["verify"]);
    assert_eq!(code, 5, "{err}");
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert!(err.contains(&hex), "the error names the change: {err}");
}

#[test]
fn verify_names_a_tampered_journal_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE journal SET kind = 'accepted' WHERE seq = 3", [])
        .unwrap();
    drop(conn);
    let (code, _, err) = run(&db, &["verify"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("journal row 3"), "{err}");
}

#[test]
fn journal_records_refusals_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(dir.path());
    let other = dir.path().join("b.db");
    let bundle = dir.path().join("x.bundle");
    ok(&db, &["export", "r", "--out", bundle.to_str().unwrap()]);
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0x10;
    std::fs::write(&bundle, bytes).unwrap();
    let (code, _, _) = run(&other, &["import", bundle.to_str().unwrap()]);
    assert_eq!(code, 4);
    let lines = ok(&other, &["--json", "journal"]);
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "refused");
    assert!(
        last["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("refused")
            || last["detail"]["reason"]
                .as_str()
                .unwrap()
                .contains("malformed")
    );
    // The refusal itself is part of the verified chain.
    assert!(ok(&other, &["verify"]).contains("verified"));
}

/// Alters byte `at` (counted from the end when negative) of the last
/// change stored for registry `r`.
fn alter_last_change(db: &Path, at: isize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (mut bytes, pos): (Vec<u8>, i64) = conn
        .query_row(
            "SELECT c.bytes, c.pos FROM changes c JOIN registries r ON r.id = c.registry_id
             WHERE r.name = 'r' ORDER BY c.pos DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = if at < 0 {
        bytes.len() - at.unsigned_abs()
    } else {
        at as usize
    };
    bytes[at] ^= 0x04;
    conn.execute(
        "UPDATE changes SET bytes = ?1 WHERE pos = ?2",
        rusqlite::params![bytes, pos],
    )
    .unwrap();
}

#[test]
fn a_damaged_registry_is_reported_by_name_while_the_others_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(dir.path());
    let schema = dir.path().join("s.toml");
    ok(
        &db,
        &[
            "registry",
            "create",
            "other",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&db, &["put", "other", "o1", "name=fine"]);
    // Bytes of every part of a change: its checksum (5), actor (12),
    // operation columns (50 and 109 made Automerge panic when applied),
    // and its end.
    for at in [5, 12, 50, 109, -20, -8, -1] {
        alter_last_change(&db, at);
        for args in [&["ls", "r"][..], &["heads", "r"], &["registry", "ls"]] {
            let (code, out, err) = run(&db, args);
            assert_eq!(code, 1, "{args:?} with byte {at} altered: {out}{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains("registry 'r'"), "{args:?}: {err}");
            assert!(err.contains("hint: `chittysync verify`"), "{err}");
            if args[0] == "registry" {
                // The others are listed, the damaged one marked.
                assert!(out.lines().any(|l| l.starts_with("other")), "{out}");
                assert!(
                    out.lines()
                        .any(|l| l.starts_with("r ") && l.contains("damaged")),
                    "{out}"
                );
            }
        }
        assert!(ok(&db, &["ls", "other"]).contains("fine"));
        let (code, _, err) = run(&db, &["verify"]);
        assert_eq!(code, 5, "{err}");
        alter_last_change(&db, at); // restore
        assert!(ok(&db, &["ls", "r"]).contains("n2"));
    }
    let journal = ok(&db, &["--json", "journal"]);
    assert!(journal.contains("\"damaged\""), "{journal}");
}

#[test]
fn validation_conflicts_are_listed_and_fail_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let wide = file(
        "wide.toml",
        "[[fields]]\nname = \"port\"\ntype = \"integer\"\nmax = 65535\n",
    );
    let narrow = file(
        "narrow.toml",
        "[[fields]]\nname = \"port\"\ntype = \"integer\"\nmax = 1000\n",
    );
    let bundle = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    ok(&a, &["registry", "create", "r", "--schema", &wide]);
    let key_b = ok(&b, &["whoami"]).trim().to_owned();
    ok(&a, &["members", "add", "r", &key_b, "--role", "writer"]);
    ok(&a, &["export", "r", "--out", &bundle("a1")]);
    ok(&b, &["import", &bundle("a1")]);
    // Concurrently: A narrows the range, B writes a value valid before.
    ok(&a, &["registry", "set-schema", "r", &narrow]);
    ok(&b, &["put", "r", "svc", "port=8080"]);
    ok(&b, &["export", "r", "--out", &bundle("b1")]);
    ok(&a, &["import", &bundle("b1")]);

    let (code, out, err) = run(&a, &["verify"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(out.contains("invalid: ") && out.contains("svc"), "{out}");
    assert!(err.contains("1 record value(s) break the schema"), "{err}");
    assert!(err.contains("hint: `chittysync conflicts r`"), "{err}");
    let (_, json, _) = run(&a, &["--json", "verify"]);
    assert!(
        json.contains("\"ok\":false") || json.contains("\"ok\": false"),
        "{json}"
    );
    let conflicts = ok(&a, &["conflicts", "r"]);
    assert!(
        conflicts.contains("svc") && conflicts.contains("max: must be at most 1000"),
        "{conflicts}"
    );
    assert!(ok(&a, &["status", "r"]).contains("1 value(s) break the schema"));
    // A valid value settles it.
    ok(&a, &["put", "r", "svc", "port=80"]);
    ok(&a, &["verify"]);
}

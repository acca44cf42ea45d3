//! Drives the `chittysync` binary as an operator would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{chittysync, json, ok};

const SCHEMA: &str = r#"
display_field = "name"
conflict_policy = "last-write-wins"

[[fields]]
name = "name"
type = "text"
required = true
unique = true

[[fields]]
name = "port"
type = "integer"
min = 1
max = 65535

[[fields]]
name = "tier"
type = "select"
options = ["gold", "silver", "bronze"]
conflict_policy = "manual"
"#;

fn setup(dir: &Path) -> PathBuf {
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    schema
}

#[test]
fn records_lifecycle_with_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let schema = setup(dir.path());
    let init = json(&a, &["init"]);
    let key = init["public_key"].as_str().unwrap().to_owned();
    assert_eq!(ok(&a, &["whoami"]).trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    ok(
        &a,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let id = json(
        &a,
        &["put", "services", "name=api", "port=8080", "tier=gold"],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&a, &["put", "services", "my-db", "name=db", "port=5432"]);
    ok(&a, &["put", "services", &id, "port=8081"]);

    let record = json(&a, &["get", "services", &id]);
    assert_eq!(record["port"], 8081);
    assert_eq!(record["name"], "api");

    let table = ok(&a, &["ls", "services"]);
    assert!(
        table.contains("api") && table.contains("db") && table.contains("2 record(s)"),
        "{table}"
    );
    let gold = json(&a, &["ls", "services", "--where", "tier=gold"]);
    assert_eq!(gold.as_array().unwrap().len(), 1);

    // Clearing a field, then deleting a record.
    ok(&a, &["put", "services", &id, "tier="]);
    assert!(json(&a, &["get", "services", &id]).get("tier").is_none());
    ok(&a, &["rm", "services", "my-db"]);
    assert_eq!(json(&a, &["ls", "services"]).as_array().unwrap().len(), 1);
    let all = json(&a, &["ls", "services", "--deleted"]);
    assert_eq!(all.as_array().unwrap().len(), 2);

    let shown = json(&a, &["registry", "show", "services"]);
    assert_eq!(shown["records"], 1);
    assert_eq!(shown["members"][0]["key"], key.as_str());
    assert_eq!(shown["members"][0]["role"], "admin");
}

#[test]
fn invalid_input_is_refused_with_a_clear_message_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let schema = setup(dir.path());
    ok(
        &a,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&a, &["put", "services", "r1", "name=api"]);
    let before = json(&a, &["registry", "show", "services"]);

    let run = chittysync(&a, &["put", "services", "r1", "port=70000"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    for part in ["'services'", "r1", "'port'", "70000", "max"] {
        assert!(run.stderr.contains(part), "missing {part}: {}", run.stderr);
    }
    let dup = chittysync(&a, &["put", "services", "name=api"]);
    assert_eq!(dup.code, 3);
    assert!(
        dup.stderr.contains("unique") && dup.stderr.contains("r1"),
        "{}",
        dup.stderr
    );
    let missing = chittysync(&a, &["put", "services", "port=1"]);
    assert!(missing.stderr.contains("required"), "{}", missing.stderr);

    let after = json(&a, &["registry", "show", "services"]);
    assert_eq!(before["heads"], after["heads"]);
    assert_eq!(before["changes"], after["changes"]);

    let unknown = chittysync(&a, &["ls", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no registry named 'nope'"),
        "{}",
        unknown.stderr
    );
    let bad_schema = dir.path().join("bad.toml");
    std::fs::write(&bad_schema, "[[fields]]\nname = \"t\"\ntype = \"select\"\n").unwrap();
    let run = chittysync(
        &a,
        &[
            "registry",
            "create",
            "x",
            "--schema",
            bad_schema.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("needs options"), "{}", run.stderr);
}

#[test]
fn record_ids_are_checked_and_a_mistyped_one_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let schema = setup(dir.path());
    ok(
        &a,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let made = ok(&a, &["put", "services", "name=api"]).trim().to_owned();
    ok(&a, &["put", "services", "billing", "name=billing"]);
    let before = json(&a, &["registry", "show", "services"]);
    for bad in ["../../etc", "a/b", "two words"] {
        let run = chittysync(&a, &["put", "services", bad, "name=x"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("'{bad}' is not a usable record id")),
            "{}",
            run.stderr
        );
        let get = chittysync(&a, &["get", "services", bad]);
        assert_eq!(get.code, 1);
        assert!(
            get.stderr.contains("not a usable record id"),
            "{}",
            get.stderr
        );
    }
    // One digit off the id the registry made: not found, nothing created.
    let last = if made.ends_with('0') { '1' } else { '0' };
    let typo = format!("{}{last}", &made[..made.len() - 1]);
    let run = chittysync(&a, &["put", "services", &typo, "port=1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("no record"), "{}", run.stderr);
    let after = json(&a, &["registry", "show", "services"]);
    assert_eq!(before["heads"], after["heads"]);
    ok(&a, &["put", "services", &made, "port=8080"]);
    assert!(ok(&a, &["get", "services", "billing"]).contains("billing"));
}

#[test]
fn two_replicas_exchange_bundles_converge_and_settle_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = setup(dir.path());
    let bob_key = ok(&b, &["whoami"]).trim().to_owned();
    ok(
        &a,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(
        &a,
        &["members", "add", "services", &bob_key, "--role", "writer"],
    );
    ok(
        &a,
        &["put", "services", "api", "name=api", "tier=gold", "port=80"],
    );
    let full = dir.path().join("full.bundle");
    ok(&a, &["export", "services", "--out", full.to_str().unwrap()]);
    let imported = json(&b, &["import", full.to_str().unwrap()]);
    assert_eq!(imported[0]["created"], true);

    // Concurrent edits: tier (manual policy) and port (last-write-wins).
    ok(&a, &["put", "services", "api", "tier=silver", "port=81"]);
    ok(&b, &["put", "services", "api", "tier=bronze", "port=82"]);
    ok(&b, &["put", "services", "name=search"]);

    let a_heads = ok(&a, &["heads", "services"]).trim().to_owned();
    let b_heads = ok(&b, &["heads", "services"]).trim().to_owned();
    let (to_a, to_b) = (
        dir.path().join("to_a.bundle"),
        dir.path().join("to_b.bundle"),
    );
    ok(
        &b,
        &[
            "export",
            "services",
            "--out",
            to_a.to_str().unwrap(),
            "--since",
            &a_heads,
        ],
    );
    ok(
        &a,
        &[
            "export",
            "services",
            "--out",
            to_b.to_str().unwrap(),
            "--since",
            &b_heads,
        ],
    );
    ok(&a, &["import", to_a.to_str().unwrap()]);
    ok(&b, &["import", to_b.to_str().unwrap()]);

    let (sa, sb) = (
        json(&a, &["registry", "show", "services"]),
        json(&b, &["registry", "show", "services"]),
    );
    assert_eq!(sa["heads"], sb["heads"]);
    assert_eq!(sa["state_digest"], sb["state_digest"]);
    assert_eq!(sa["records"], 2);

    let conflicts = json(&a, &["conflicts", "services"]);
    let tier = conflicts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "tier")
        .unwrap();
    assert_eq!(tier["policy"], "manual");
    assert!(tier["chosen"].is_null());
    let port = conflicts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "port")
        .unwrap();
    assert_eq!(port["policy"], "last-write-wins");
    // Bob wrote last, so his 82 wins — on both replicas.
    let chosen = port["chosen"].as_u64().unwrap() as usize;
    assert_eq!(port["candidates"][chosen]["value"], 82);
    assert_eq!(json(&b, &["get", "services", "api"])["port"], 82);

    ok(&a, &["resolve", "services", "api", "tier", "--pick", "1"]);
    let left = json(&a, &["conflicts", "services"]);
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .all(|c| c["field"] != "tier")
    );
}

#[test]
fn tampered_bundle_is_refused_with_exit_code_4_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let schema = setup(dir.path());
    ok(
        &a,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&a, &["put", "services", "api", "name=api"]);
    let file = dir.path().join("x.bundle");
    ok(&a, &["export", "services", "--out", file.to_str().unwrap()]);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let run = chittysync(&b, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused") || run.stderr.contains("malformed"),
        "{}",
        run.stderr
    );
    assert!(json(&b, &["registry", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn replica_location_comes_from_flag_env_or_user_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let via_env = dir.path().join("env.db");
    let out = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("init")
        .env("CHITTYSYNC_REPLICA", &via_env)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(via_env.exists() && dir.path().join("env.key").exists());

    let home = dir.path().join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("init")
        .env_remove("CHITTYSYNC_REPLICA")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let default = if cfg!(target_os = "macos") {
        home.join("Library/Application Support/chittysync/replica.db")
    } else {
        home.join("data/chittysync/replica.db")
    };
    assert!(default.exists(), "expected {}", default.display());
}

#[test]
fn demo_converges_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        &dir.path().join("unused.db"),
        &["demo", "--dir", dir.path().join("demo").to_str().unwrap()],
    );
    assert!(out.contains("converged ✓"), "{out}");
    assert!(out.contains("refused: registry 'services'"), "{out}");
    assert!(out.contains("bob's replica is unchanged ✓"), "{out}");
}

#[test]
fn sync_takes_a_peer_address_or_a_binding_and_says_which_options_fit() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("a.db");
    let unknown = common::chittysync(&replica, &["sync", "nosuch"]);
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("neither an adapter binding")
            && unknown.stderr.contains("host:port"),
        "{}",
        unknown.stderr
    );
    let mixed = common::chittysync(&replica, &["sync", "127.0.0.1:9", "--dry-run"]);
    assert_ne!(mixed.code, 0);
    assert!(
        mixed.stderr.contains("is a peer address") && mixed.stderr.contains("--dry-run"),
        "{}",
        mixed.stderr
    );
}

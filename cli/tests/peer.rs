//! `chittysync serve` and `chittysync sync` between separate processes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{chittysync, json, ok};

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true
"#;

/// A running `chittysync serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(replica: &Path) -> Server {
        Server::start_with(replica, &[])
    }

    fn start_with(replica: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
            .arg("--replica")
            .arg(replica)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("CHITTYSYNC_REPLICA")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("serve prints where it listens");
        let address = first
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        Server {
            child,
            address,
            lines,
        }
    }

    /// Waits (hang guard only) for a line containing `needle`.
    fn expect_line(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("serve never printed '{needle}'"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

#[test]
fn serve_and_sync_move_changes_both_ways_and_report_them() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub.db");
    let laptop = dir.path().join("laptop.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let hub_key = json(&hub, &["init"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let laptop_key = json(&laptop, &["init"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &hub,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(
        &hub,
        &[
            "members",
            "add",
            "services",
            &laptop_key,
            "--role",
            "writer",
        ],
    );
    ok(&hub, &["put", "services", "web", "name=billing"]);
    let server = Server::start(&hub);

    // First sync pins the hub's key and pulls the registry.
    let out = ok(&laptop, &["sync", &server.address, "--key", &hub_key]);
    assert!(out.contains("services"), "{out}");
    assert!(out.contains("synced"), "{out}");
    assert!(out.contains("change(s) in"), "{out}");
    server.expect_line("connected");
    assert!(ok(&laptop, &["get", "services", "web"]).contains("billing"));

    // A write on the laptop goes up; the JSON report says what moved.
    ok(&laptop, &["put", "services", "db", "name=ledger"]);
    let report = json(&laptop, &["sync", &server.address, "services"]);
    assert_eq!(report["changes_out"], 1, "{report}");
    assert_eq!(report["registries"][0]["name"], "services");
    assert!(report["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(report["peer"], hub_key.as_str());
    let hub_heads = json(&hub, &["heads", "services"]);
    let laptop_heads = json(&laptop, &["heads", "services"]);
    assert_eq!(hub_heads, laptop_heads);
}

#[test]
fn a_wrong_pinned_key_and_an_unknown_replica_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub.db");
    let stranger = dir.path().join("stranger.db");
    let other_key = json(&dir.path().join("other.db"), &["init"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    json(&hub, &["init"]);
    json(&stranger, &["init"]);
    let server = Server::start(&hub);

    // The client expects another key: it refuses the hub.
    let run = chittysync(&stranger, &["sync", &server.address, "--key", &other_key]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("was expected"), "{}", run.stderr);

    // The hub does not know the stranger: it refuses it, and both say why.
    let run = chittysync(&stranger, &["sync", &server.address]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("not a member of any registry"),
        "{}",
        run.stderr
    );
    let line = server.expect_line("refused peer");
    assert!(line.contains("not a member of any registry"), "{line}");
}

/// A running `chittysync sync --watch`, killed when dropped.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sync_watch_delivers_a_write_made_by_another_process_on_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub.db");
    let laptop = dir.path().join("laptop.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let hub_key = json(&hub, &["init"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let laptop_key = json(&laptop, &["init"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &hub,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&hub, &["members", "add", "services", &laptop_key]);
    let server = Server::start(&hub);
    let watcher = Watcher(
        Command::new(env!("CARGO_BIN_EXE_chittysync"))
            .arg("--replica")
            .arg(&laptop)
            .args(["sync", &server.address, "--key", &hub_key, "--watch"])
            .env_remove("CHITTYSYNC_REPLICA")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    server.expect_line("connected");

    // `put` runs as its own process on the hub's file; the serving process
    // notices the new change and pushes it to the watcher.
    ok(&hub, &["put", "services", "live", "name=pushed"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = chittysync(&laptop, &["get", "services", "live"]);
        if run.code == 0 && run.stdout.contains("pushed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hang guard: the write never arrived ({})",
            run.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Ctrl-C closes the connection cleanly: exit 0, and the session's
    // moves are in the journal.
    let mut watcher = watcher;
    let interrupted = Command::new("kill")
        .args(["-INT", &watcher.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = watcher.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hang guard: watch did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let journal = ok(&laptop, &["journal", "--json"]);
    assert!(journal.contains("synced"), "{journal}");
}

#[test]
fn a_hub_linked_to_another_with_serve_peer_relays_its_registries() {
    let dir = tempfile::tempdir().unwrap();
    let east = dir.path().join("east.db");
    let west = dir.path().join("west.db");
    let phone = dir.path().join("phone.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let key = |db: &Path| {
        json(db, &["init"])["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (east_key, west_key, phone_key) = (key(&east), key(&west), key(&phone));
    ok(
        &east,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(&east, &["members", "add", "services", &west_key]);
    ok(
        &east,
        &["members", "add", "services", &phone_key, "--role", "reader"],
    );
    ok(&east, &["put", "services", "web", "name=from-east"]);
    let east_server = Server::start(&east);
    let link = format!("{east_key}@{}", east_server.address);
    let west_server = Server::start_with(&west, &["--peer", &link]);

    // The phone only ever talks to west, which learns the registry (and
    // the phone's membership) over its link to east.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let _ = chittysync(&phone, &["sync", &west_server.address]);
        let run = chittysync(&phone, &["get", "services", "web"]);
        if run.code == 0 && run.stdout.contains("from-east") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hang guard: the registry never reached the phone"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A reader pulls but cannot write.
    let run = chittysync(&phone, &["put", "services", "web", "name=phone"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
}

#[test]
fn a_hub_takes_a_new_registry_only_from_a_key_allowed_to_create_there() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub.db");
    let laptop = dir.path().join("laptop.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let key = |db: &Path| {
        json(db, &["init"])["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (hub_key, laptop_key) = (key(&hub), key(&laptop));
    ok(
        &laptop,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    ok(
        &laptop,
        &["members", "add", "services", &hub_key, "--role", "writer"],
    );

    // Let in, but not allowed to create: the registry is refused, and the
    // laptop is told why.
    let server = Server::start_with(&hub, &["--allow", &laptop_key]);
    let run = chittysync(&laptop, &["sync", &server.address, "--key", &hub_key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("takes no new registries"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains("--allow-create"),
        "{}",
        run.stderr
    );
    assert!(!ok(&hub, &["registry", "ls"]).contains("services"));
    drop(server);

    let server = Server::start_with(&hub, &["--allow-create", &laptop_key]);
    let out = ok(&laptop, &["sync", &server.address, "--key", &hub_key]);
    assert!(out.contains("synced"), "{out}");
    assert!(ok(&hub, &["registry", "ls"]).contains("services"));
}

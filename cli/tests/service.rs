//! `chittysync serve --http`, `token add|ls|rm` and `health` against the
//! real binary: the deploy-pipeline flow a README reader follows.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{chittysync, json, ok, services_replica};
use serde_json::json;

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true
unique = true

[[fields]]
name = "owner"
type = "email"

[[fields]]
name = "port"
type = "integer"

[[fields]]
name = "status"
type = "select"
options = ["planned", "live", "retired"]
"#;

/// A running `chittysync serve`, stopped when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve --http` on free ports; returns it and the HTTP base URL.
fn serve(replica: &std::path::Path) -> (Serve, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(replica)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env_remove("CHITTYSYNC_REPLICA")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serve = Serve(child);
    let base = loop {
        let line = lines
            .next()
            .expect("serve prints where it listens")
            .unwrap();
        if let Some(url) = line.strip_prefix("HTTP API on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (serve, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_registers_a_service_with_a_token_and_the_audit_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let replica = services_replica(dir.path(), SCHEMA);
    let secret = ok(
        &replica,
        &[
            "token",
            "add",
            "deploy-bot",
            "--registry",
            "services",
            "--role",
            "writer",
            "--expires",
            "90d",
        ],
    )
    .trim()
    .to_owned();
    assert!(secret.starts_with("cst_"), "{secret}");
    let (_serve, base) = serve(&replica);
    let client = reqwest::Client::new();

    let url = format!("{base}/v1/registries/services/records/by/name/billing");
    let created = client
        .put(&url)
        .bearer_auth(&secret)
        .json(&json!({"fields": {"owner": "ledger@example.com", "port": 8080}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let record: serde_json::Value = created.json().await.unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    let patched = client
        .patch(format!("{base}/v1/registries/services/records/{id}"))
        .bearer_auth(&secret)
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"fields": {"status": "live"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    // What the pipeline wrote is in the replica, signed by the token's key.
    let got = json(&replica, &["get", "services", &id]);
    assert_eq!(got["status"], "live");
    assert_eq!(got["port"], 8080);
    let audit = ok(&replica, &["audit", "services"]);
    assert!(audit.contains("deploy-bot"), "{audit}");
    let listed = json(&replica, &["token", "ls"]);
    assert_eq!(listed[0]["name"], "deploy-bot");
    assert_eq!(listed[0]["registries"], json!(["services"]));
    assert!(listed[0]["last_used_at"].is_i64());
    assert!(listed[0]["expires_at"].is_i64());
    assert!(!ok(&replica, &["token", "ls"]).contains(&secret));

    // Probes: healthy now; a removed token stops working at once.
    ok(&replica, &["health", &base]);
    ok(&replica, &["health", &base, "--ready"]);
    ok(&replica, &["token", "rm", "deploy-bot"]);
    let refused = client
        .get(format!("{base}/v1/registries/services/records"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let members = ok(&replica, &["members", "ls", "services"]);
    assert!(!members.contains("token deploy-bot"), "{members}");
}

#[test]
fn health_fails_for_a_service_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("r.db");
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = chittysync(
        &replica,
        &[
            "health",
            &format!("http://127.0.0.1:{port}"),
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("no answer"), "{}", run.stderr);
}

#[test]
fn a_token_for_a_registry_that_does_not_exist_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = services_replica(dir.path(), SCHEMA);
    let run = chittysync(
        &replica,
        &[
            "token",
            "add",
            "ci",
            "--registry",
            "nothing",
            "--role",
            "reader",
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nothing"), "{}", run.stderr);
    assert_eq!(json(&replica, &["token", "ls"]), json!([]));
}

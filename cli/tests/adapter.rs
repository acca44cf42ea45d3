//! `adapter add|ls|show|rm`, `push`, `pull` and `sync` against a real
//! PostgreSQL server (from `CHITTYSYNC_TEST_PG_URL`, which `scripts/test`
//! sets; without it these tests fail rather than skip).

mod common;

use std::path::Path;
use std::process::Command;

use common::{chittysync, chittysync_env, json, ok, psql};

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true

[[fields]]
name = "port"
type = "integer"
"#;

const URL_VAR: &str = common::PG_URL_VAR;

fn url() -> String {
    common::pg_url()
}

fn password() -> String {
    // postgres://user:password@host…
    let url = url();
    let rest = url.split_once("://").unwrap().1;
    let userinfo = rest.split_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_owned()
}

fn setup(dir: &Path, tag: &str) -> (std::path::PathBuf, String) {
    let replica = dir.join("r.db");
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    ok(
        &replica,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let pg_schema = format!("cs_cli_{tag}_{}", std::process::id());
    psql(&format!("DROP SCHEMA IF EXISTS {pg_schema} CASCADE"));
    (replica, format!("{pg_schema}.services"))
}

#[test]
fn bind_push_pull_sync_with_dry_runs_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "flow");
    let added = json(
        &r,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--table",
            &table,
            "--secret-env",
            URL_VAR,
            "--create",
            "--key-field",
            "name",
        ],
    );
    assert_eq!(added["made_writer"], true);
    assert_eq!(added["change_tracking"]["mode"], "incremental");
    let key_file = added["key_file"].as_str().unwrap().to_owned();
    assert!(Path::new(&key_file).exists());

    let listed = json(&r, &["adapter", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["secret_env"], URL_VAR);
    let shown = json(&r, &["adapter", "show", "pg"]);
    assert_eq!(shown["bound_rows"], 0);
    assert_eq!(shown["key"], added["key"]);
    let table_view = ok(&r, &["adapter", "show", "pg"]);
    assert!(table_view.contains(&format!("from ${URL_VAR} (not stored)")));

    ok(
        &r,
        &["put", "services", "billing", "name=billing", "port=80"],
    );
    ok(&r, &["put", "services", "search", "name=search", "port=81"]);

    // A dry run shows the plan and writes nothing.
    let plan = json(&r, &["adapter", "sync", "pg", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["summary"]["remote_create"], 2);
    assert_eq!(plan["changes"][0]["side"], "remote");
    assert_eq!(psql(&format!("SELECT count(*) FROM {table}")), "0");
    let human = ok(&r, &["adapter", "sync", "pg", "--dry-run"]);
    assert!(human.contains("dry run: nothing was written"), "{human}");
    assert!(human.contains("port ∅ → 80"), "{human}");

    let pushed = json(&r, &["push", "pg"]);
    assert_eq!(pushed["applied"], 2);
    assert_eq!(psql(&format!("SELECT count(*) FROM {table}")), "2");
    assert!(ok(&r, &["journal", "--json"]).contains("\"pushed\""));

    psql(&format!(
        "INSERT INTO {table} (id, name, port) VALUES ('ledger', 'ledger', 9000); UPDATE {table} SET port = 8080 WHERE id = 'billing'"
    ));
    let plan = json(&r, &["pull", "pg", "--dry-run"]);
    assert_eq!(plan["summary"]["local_create"], 1);
    assert_eq!(plan["summary"]["local_update"], 1);
    assert!(chittysync(&r, &["get", "services", "ledger"]).code != 0);
    json(&r, &["pull", "pg"]);
    let ledger = json(&r, &["get", "services", "ledger"]);
    assert_eq!(ledger["port"], 9000);
    assert_eq!(json(&r, &["get", "services", "billing"])["port"], 8080);

    // --watch runs again and again; here twice.
    let out = ok(
        &r,
        &[
            "--json",
            "adapter",
            "sync",
            "pg",
            "--watch",
            "--interval",
            "100ms",
            "--runs",
            "2",
        ],
    );
    let runs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["summary"]["remote_update"] == 0));

    // The secret appears in no output and not in the replica.
    let pw = password();
    let store = std::fs::read(&r).unwrap();
    assert!(!String::from_utf8_lossy(&store).contains(&pw));
    assert!(!ok(&r, &["adapter", "show", "pg", "--json"]).contains(&pw));

    let removed = json(&r, &["adapter", "rm", "pg"]);
    assert_eq!(removed["removed"], "pg");
    assert!(json(&r, &["adapter", "ls"]).as_array().unwrap().is_empty());
    assert!(!Path::new(&key_file).exists());
    let missing = chittysync(&r, &["adapter", "sync", "pg"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("adapter ls"), "{}", missing.stderr);
}

#[test]
fn a_password_in_the_url_is_refused_and_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "leak");
    let run = chittysync(
        &r,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--table",
            &table,
            "--url",
            "postgres://me:hunter2@127.0.0.1/db",
        ],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("environment variable"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"));
}

#[test]
fn a_missing_table_without_create_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "missing");
    let run = chittysync(
        &r,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--table",
            &table,
            "--secret-env",
            URL_VAR,
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--create"), "{}", run.stderr);
    assert!(json(&r, &["adapter", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn a_watcher_outlives_a_failed_run_and_the_delete_guard_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "guard");
    ok(
        &r,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--table",
            &table,
            "--secret-env",
            URL_VAR,
            "--create",
        ],
    );
    for i in 0..11 {
        ok(
            &r,
            &["put", "services", &format!("r{i}"), &format!("name=n{i}")],
        );
    }
    ok(&r, &["push", "pg"]);
    psql(&format!("DELETE FROM {table}"));
    let run = chittysync(
        &r,
        &[
            "adapter",
            "sync",
            "pg",
            "--watch",
            "--interval",
            "100ms",
            "--runs",
            "2",
        ],
    );
    assert_ne!(run.code, 0, "the last run's error is the exit status");
    assert_eq!(
        run.stderr.matches("trying again").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--allow-deletes"), "{}", run.stderr);
    assert_eq!(json(&r, &["ls", "services"]).as_array().unwrap().len(), 11);
    json(&r, &["pull", "pg", "--allow-deletes"]);
    assert!(json(&r, &["ls", "services"]).as_array().unwrap().is_empty());
}

#[test]
fn failed_rows_decide_the_exit_status_even_when_nobody_reads_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "closed");
    json(
        &r,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--target",
            &table,
            "--secret-env",
            URL_VAR,
            "--create",
        ],
    );
    ok(
        &r,
        &["put", "services", "billing", "name=billing", "port=80"],
    );
    ok(&r, &["push", "pg"]);
    // Another application's rule the registry does not know.
    psql(&format!(
        "ALTER TABLE {table} ADD CONSTRAINT low_ports CHECK (port < 1000)"
    ));
    ok(
        &r,
        &["put", "services", "search", "name=search", "port=5000"],
    );

    // stdout is a pipe whose reader has already gone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(&r)
        .args(["push", "pg"])
        .env_remove("CHITTYSYNC_REPLICA")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("the binary ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed row exited 0: {stderr}");
    assert!(stderr.contains("1 rows failed"), "{stderr}");
}

/// A server that cannot be reached is one error that says each cause once,
/// and neither it nor its hint shows a password; a URL that does not parse
/// is answered without one too.
#[test]
fn connection_errors_say_each_cause_once_and_show_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "refused");
    let add = |url: &str| {
        chittysync_env(
            &r,
            &[
                "adapter",
                "add",
                "pg",
                "--registry",
                "services",
                "--target",
                &table,
                "--url",
                url,
                "--secret-env",
                "CHITTYSYNC_TEST_SECRET",
            ],
            &[("CHITTYSYNC_TEST_SECRET", "s3cret-pass")],
        )
    };
    // Nothing listens on port 1.
    let run = add("postgres://me@127.0.0.1:1/db?sslmode=require");
    assert_ne!(run.code, 0);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert_eq!(
        errors[0].matches("cannot connect").count(),
        1,
        "a cause said twice: {}",
        run.stderr
    );
    for bad in [
        "postgres://me@127.0.0.1:notaport/db",
        "postgres://me@db/app?sslmode=sometimes",
    ] {
        let run = add(bad);
        assert_ne!(run.code, 0);
        assert!(run.stderr.contains("url"), "{}", run.stderr);
        for out in [&run.stderr, &run.stdout] {
            assert!(!out.contains("s3cret-pass"), "{out}");
            assert!(!out.contains(":password@"), "a password in a URL: {out}");
        }
    }
}

/// `chittysync serve` with the HTTP API, stopped when dropped.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_runs_bindings_on_their_schedules_and_backs_off_from_a_server_that_is_down() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = setup(dir.path(), "sched");
    let down_table = table.replace(".services", ".down");
    let add = |name: &str, target: &str, var: &str| {
        let run = common::chittysync_env(
            &r,
            &[
                "adapter",
                "add",
                name,
                "--registry",
                "services",
                "--target",
                target,
                "--secret-env",
                var,
                "--create",
                "--every",
                "1s",
            ],
            &[(var, &url())],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    };
    add("pg", &table, URL_VAR);
    add("down", &down_table, "DOWN_DB_URL");
    ok(
        &r,
        &["put", "services", "billing", "name=billing", "port=80"],
    );
    let token = ok(
        &r,
        &[
            "token",
            "add",
            "ops",
            "--registry",
            "services",
            "--role",
            "writer",
        ],
    )
    .trim()
    .to_owned();

    // The service sees the good server under one variable and a port where
    // nothing listens under the other.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(&r)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env_remove("CHITTYSYNC_REPLICA")
        .env("DOWN_DB_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = Serving(child);
    let base = loop {
        let line = lines.next().expect("serve says where it listens").unwrap();
        if let Some(url) = line.strip_prefix("HTTP API on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    // The schedule pushes the record without anyone asking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while psql(&format!("SELECT count(*) FROM {table}")) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(7));

    let good = json(&r, &["adapter", "runs", "pg"]);
    let good = good.as_array().unwrap();
    // At least twice: the schedule repeats (how often exactly depends on
    // how busy the machine is).
    assert!(
        good.len() >= 2,
        "a 1 s schedule ran {} times in 7 s",
        good.len()
    );
    assert!(good.iter().all(|run| run["outcome"] == "ok"), "{good:?}");

    // Failures wait longer each time: 2 s, then 4 s (±10%), not every second.
    let down = json(&r, &["adapter", "runs", "down"]);
    let down = down.as_array().unwrap();
    assert!(
        down.iter().all(|run| run["outcome"] == "failed"),
        "{down:?}"
    );
    // Backing off, it cannot run more than 4 times in that window.
    assert!(
        (1..=4).contains(&down.len()),
        "{} failed runs in ~7 s: {down:?}",
        down.len()
    );
    // Runs are listed newest first; oldest gap first, each gap is at least
    // the backoff: 2 s, then 4 s, … (less 10% jitter).
    let at: Vec<i64> = down
        .iter()
        .rev()
        .map(|r| r["started_at"].as_i64().unwrap())
        .collect();
    for (i, pair) in at.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(gap >= 1_700 << i, "gap {i} was {gap} ms: {at:?}");
    }
    let error = down[0]["error"].as_str().unwrap();
    assert!(
        error.contains("down") || error.contains("connect"),
        "{error}"
    );
    assert!(!error.contains(&password()));

    // The API shows both mirrors and their last runs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mirrors: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/v1/mirrors"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let listed = mirrors["mirrors"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{mirrors}");
    for m in listed {
        assert_eq!(m["every_secs"], 1);
        assert!(m["next_run_at"].is_i64(), "{m}");
        let expected = if m["name"] == "pg" { "ok" } else { "failed" };
        assert_eq!(m["last_run"]["outcome"], expected, "{m}");
    }
    let metrics = rt.block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains(r#"chittysync_mirror_runs_total{binding="down",outcome="failed"}"#),
        "{metrics}"
    );
    drop(serving);

    // `adapter schedule NAME off` stops it.
    ok(&r, &["adapter", "schedule", "down", "off"]);
    assert_eq!(
        json(&r, &["adapter", "show", "down"])["every_secs"],
        serde_json::Value::Null
    );
}

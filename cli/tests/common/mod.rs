//! Running the `chittysync` binary from tests.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// What one run of the binary did.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `chittysync --replica REPLICA ARGS…` with no replica from the environment.
pub(crate) fn chittysync(replica: &Path, args: &[&str]) -> Run {
    chittysync_env(replica, args, &[])
}

/// The same, with these environment variables set (e.g. a token a binding
/// names).
pub(crate) fn chittysync_env(replica: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(replica)
        .args(args)
        .env_remove("CHITTYSYNC_REPLICA")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and asserts success; returns stdout.
pub(crate) fn ok(replica: &Path, args: &[&str]) -> String {
    let run = chittysync(replica, args);
    assert_eq!(run.code, 0, "chittysync {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Runs with `--json` and parses the output.
pub(crate) fn json(replica: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(replica, &all)).expect("--json prints JSON")
}

/// A replica `r.db` in `dir` with registry `services` made from the TOML
/// schema `schema`.
pub(crate) fn services_replica(dir: &Path, schema: &str) -> std::path::PathBuf {
    let replica = dir.join("r.db");
    let file = dir.join("schema.toml");
    std::fs::write(&file, schema).expect("write the schema");
    ok(
        &replica,
        &[
            "registry",
            "create",
            "services",
            "--schema",
            file.to_str().expect("a UTF-8 path"),
        ],
    );
    replica
}

/// The variable naming the PostgreSQL server the Postgres tests use.
pub(crate) const PG_URL_VAR: &str = "CHITTYSYNC_TEST_PG_URL";

/// The test server's URL; without it the Postgres tests fail (never skip).
pub(crate) fn pg_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set: these tests need a PostgreSQL server. Run `export {PG_URL_VAR}=\"$(scripts/pg-up NAME)\"` (as root), or run scripts/test"
        )
    })
}

/// Plain SQL from "another application"; returns what it printed.
pub(crate) fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .arg(pg_url())
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

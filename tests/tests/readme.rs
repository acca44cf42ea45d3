//! Every code block of README.md runs, in order, as written.
//!
//! The convention (also stated at the top of README.md's source):
//!
//! - ` ```sh ` (or `bash`, `shell`) blocks run in one `bash -euo pipefail`
//!   session, in a fresh directory, with `HOME` (so the default replica)
//!   isolated and the `chittysync` binary just built on `PATH`; variables a
//!   block sets are seen by later blocks. ` ```sh repo ` runs in the checkout
//!   (for `cargo run …`), in a subshell.
//! - ` ```toml file=NAME ` (any language) writes the block to NAME in that
//!   directory, for the blocks after it.
//! - ` ```rust ` blocks are compiled into this test by `build.rs` and run in a
//!   fresh directory; ` ```python ` with the venv scripts/test-bindings
//!   made, ` ```js ` with node and `chittysync` resolving to bindings/node,
//!   each in a fresh directory.
//! - `<!-- readme-test: skip (reason) -->` on the line before a block keeps
//!   it from running; the reason is required. Any other block fails the test.
//!
//! Stand-ins for remote services are set up first and named by environment
//! variables the README's prose defines: `APP_DB_URL` (a fresh database on
//! the server `CHITTYSYNC_TEST_PG_URL` names), `NOTION_TOKEN`,
//! `NOTION_DATABASE`, `NOTION_API` (the Notion emulator), `SPREADSHEET_ID`,
//! `SHEETS_API`, `DRIVE_API` and `~/keys/sync-bot.json` (the Sheets
//! emulator), `HUB` and `HUB_KEY` (a `chittysync serve` on loopback).
//!
//! scripts/test runs it after scripts/test-bindings:
//! `cargo test -p chittysync-tests --test readme -- --ignored`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chittysync_emulators::{Notion, Sheets};
use serde_json::json;

include!(concat!(env!("OUT_DIR"), "/readme_rust.rs"));

/// The longest one block may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);
const NOTION_TOKEN: &str = "ntn_readme_test_token";
const ACCOUNT: &str = "sync-bot@chittysync-readme.iam.gserviceaccount.com";

struct Block {
    line: usize,
    lang: String,
    attrs: Vec<String>,
    skip: Option<String>,
    code: String,
}

fn parse(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && !lines[end].starts_with("```") {
            end += 1;
        }
        let mut words = info.split_whitespace().map(str::to_owned);
        let lang = words.next().unwrap_or_default();
        let skip = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-test: skip"))
            .map(|rest| rest.trim_end_matches("-->").trim().to_owned());
        if let Some(reason) = &skip {
            assert!(
                reason.len() > 2,
                "README.md line {start}: a skipped block needs a reason: <!-- readme-test: skip (why) -->"
            );
        }
        blocks.push(Block {
            line: start,
            lang,
            attrs: words.collect(),
            skip,
            code: lines[start..end].join("\n") + "\n",
        });
        i = end + 1;
    }
    blocks
}

/// Kills a process group when dropped (the shell session and what it
/// started in the background, the hub).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fail(block: &Block, what: &str, output: &str) -> ! {
    panic!(
        "README.md line {} (```{} block) {what}\n--- block ---\n{}--- output ---\n{output}",
        block.line, block.lang, block.code
    )
}

fn run_program(block: &Block, mut cmd: Command) {
    let out = cmd.output().expect("start the interpreter");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        fail(block, &format!("failed: {}", out.status), &text);
    }
}

#[test]
#[ignore = "needs the Python and Node packages: scripts/test runs it after scripts/test-bindings"]
fn every_readme_block_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let blocks = parse(&readme);
    // target/debug/deps/readme-… → target
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let status = Command::new(&cargo)
        .args(["build", "--locked", "--quiet", "-p", "chittysync-cli"])
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p chittysync-cli failed");
    let cli = target.join("debug/chittysync");

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let home = tmp.path().join("home");
    let meta = tmp.path().join("blocks");
    let bin = tmp.path().join("bin");
    for d in [&work, &home, &meta, &bin, &home.join("keys")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(&cli, bin.join("chittysync")).unwrap();
    let real_home = std::env::var("HOME").unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), home.display().to_string()),
        (
            "PATH".into(),
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        (
            "CARGO_HOME".into(),
            std::env::var("CARGO_HOME").unwrap_or(format!("{real_home}/.cargo")),
        ),
        (
            "RUSTUP_HOME".into(),
            std::env::var("RUSTUP_HOME").unwrap_or(format!("{real_home}/.rustup")),
        ),
        ("CARGO_TARGET_DIR".into(), target.display().to_string()),
    ];

    // Postgres: a fresh database on the test server.
    let pg_url = std::env::var("CHITTYSYNC_TEST_PG_URL").expect(
        "CHITTYSYNC_TEST_PG_URL is not set: the README test needs a PostgreSQL server \
         (export CHITTYSYNC_TEST_PG_URL=\"$(scripts/pg-up)\", or run scripts/test)",
    );
    let db = format!("readme_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
            .await
            .expect("connect to CHITTYSYNC_TEST_PG_URL");
        tokio::spawn(conn);
        // Two statements: CREATE DATABASE cannot share a transaction.
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            client.batch_execute(&sql).await.unwrap();
        }
        client
    });
    let (base, _) = pg_url.rsplit_once('/').unwrap();
    env.push(("APP_DB_URL".into(), format!("{base}/{db}")));

    // Notion and Sheets: the emulators, with a database and a spreadsheet.
    let notion = Notion::new();
    notion.add_token(NOTION_TOKEN);
    let notion_server = notion.start_thread().unwrap();
    let (database, _) = notion.create_database(
        "Services",
        vec![("Services", json!({"name": {"title": {}}}))],
    );
    env.push(("NOTION_TOKEN".into(), NOTION_TOKEN.into()));
    env.push(("NOTION_DATABASE".into(), database));
    env.push(("NOTION_API".into(), notion_server.base_url()));
    let sheets = Sheets::new();
    let sheets_server = sheets.start_thread().unwrap();
    let spreadsheet = sheets.create_spreadsheet(&["Services"], &[ACCOUNT]);
    let key = sheets.service_account_key(&sheets_server.base_url(), ACCOUNT);
    std::fs::write(
        home.join("keys/sync-bot.json"),
        serde_json::to_vec(&key).unwrap(),
    )
    .unwrap();
    env.push(("SPREADSHEET_ID".into(), spreadsheet));
    env.push(("SHEETS_API".into(), sheets_server.base_url()));
    env.push(("DRIVE_API".into(), sheets_server.base_url()));

    // The hub: `chittysync serve` on loopback, with its own replica.
    let mut hub = Command::new(&cli)
        .args(["--replica"])
        .arg(tmp.path().join("hub.db"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-any",
            "--allow-create-any",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut hub_out = BufReader::new(hub.stdout.take().unwrap());
    hub_out.read_line(&mut first).unwrap();
    // Keep reading: the hub logs each connection to its stdout.
    std::thread::spawn(move || std::io::copy(&mut hub_out, &mut std::io::sink()));
    let _hub = Group(hub);
    // "listening on ADDR as KEY"
    let words: Vec<&str> = first.split_whitespace().collect();
    assert!(
        words.len() == 5 && words[0] == "listening",
        "the hub said {first:?}"
    );
    env.push(("HUB".into(), words[2].into()));
    env.push(("HUB_KEY".into(), words[4].into()));

    // The shell session.
    let mut shell = Command::new("bash");
    shell
        .args(["--noprofile", "--norc", "-euo", "pipefail"])
        .current_dir(&work)
        .env_remove("CHITTYSYNC_REPLICA")
        .env_remove("XDG_DATA_HOME")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut session = Group(shell.spawn().unwrap());
    let mut to_shell = session.0.stdin.take().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<Option<String>>();
    let from_shell = session.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(from_shell).lines() {
            let Ok(line) = line else { break };
            let _ = done_tx.send(Some(line));
        }
        let _ = done_tx.send(None);
    });

    let python = target.join("bindings-venv/bin/python");
    let node_pkg = repo.join("bindings/node");
    let started = Instant::now();
    let (mut ran, mut skipped) = (0, 0);
    for block in &blocks {
        let t = Instant::now();
        if let Some(reason) = &block.skip {
            eprintln!(
                "README.md:{} ```{} skipped: {reason}",
                block.line, block.lang
            );
            skipped += 1;
            continue;
        }
        if let Some(name) = block.attrs.iter().find_map(|a| a.strip_prefix("file=")) {
            std::fs::write(work.join(name), &block.code).unwrap();
            eprintln!(
                "README.md:{} ```{} written to {name}",
                block.line, block.lang
            );
            continue;
        }
        let fresh = meta.join(format!("line-{}", block.line));
        match block.lang.as_str() {
            "sh" | "bash" | "shell" => {
                let script = meta.join(format!("block-{}.sh", block.line));
                let out = meta.join(format!("block-{}.out", block.line));
                std::fs::write(&script, &block.code).unwrap();
                let run = if block.attrs.iter().any(|a| a == "repo") {
                    format!(
                        "( cd '{}' && source '{}' )",
                        repo.display(),
                        script.display()
                    )
                } else {
                    format!("source '{}'", script.display())
                };
                writeln!(
                    to_shell,
                    "{run} </dev/null >'{out}' 2>&1\necho __readme_block_done__",
                    out = out.display()
                )
                .unwrap();
                let answer = done_rx.recv_timeout(BLOCK_TIMEOUT);
                let output = std::fs::read_to_string(&out).unwrap_or_default();
                match answer {
                    Ok(Some(line)) if line == "__readme_block_done__" => {}
                    Ok(Some(line)) => fail(
                        block,
                        &format!("printed outside its output: {line}"),
                        &output,
                    ),
                    Ok(None) => {
                        let status = session.0.wait().unwrap();
                        fail(block, &format!("failed: {status}"), &output)
                    }
                    Err(_) => fail(
                        block,
                        &format!("did not finish within {BLOCK_TIMEOUT:?}"),
                        &output,
                    ),
                }
            }
            "rust" => {
                let Some((_, f)) = RUST_BLOCKS.iter().find(|(line, _)| *line == block.line) else {
                    panic!(
                        "README.md line {}: build.rs did not compile this block; rebuild",
                        block.line
                    )
                };
                std::fs::create_dir_all(&fresh).unwrap();
                let back = std::env::current_dir().unwrap();
                std::env::set_current_dir(&fresh).unwrap();
                let result = f();
                std::env::set_current_dir(back).unwrap();
                if let Err(e) = result {
                    fail(block, "returned an error", &format!("{e}\n{e:?}"));
                }
            }
            "python" => {
                assert!(
                    python.exists(),
                    "{} is missing: run scripts/test-bindings first",
                    python.display()
                );
                std::fs::create_dir_all(&fresh).unwrap();
                std::fs::write(fresh.join("block.py"), &block.code).unwrap();
                let mut cmd = Command::new(&python);
                cmd.arg("block.py").current_dir(&fresh);
                run_program(block, cmd);
            }
            "js" | "javascript" => {
                assert!(
                    node_pkg.join("dist").exists(),
                    "bindings/node/dist is missing: run scripts/test-bindings first"
                );
                std::fs::create_dir_all(fresh.join("node_modules")).unwrap();
                std::os::unix::fs::symlink(&node_pkg, fresh.join("node_modules/chittysync"))
                    .unwrap();
                std::fs::write(fresh.join("block.mjs"), &block.code).unwrap();
                let mut cmd = Command::new("node");
                cmd.arg("block.mjs").current_dir(&fresh);
                run_program(block, cmd);
            }
            other => panic!(
                "README.md line {}: a ```{other} block neither runs nor is marked: give it \
                 file=NAME, or <!-- readme-test: skip (reason) --> before it",
                block.line
            ),
        }
        ran += 1;
        eprintln!(
            "README.md:{} ```{} ran ({:.1} s)",
            block.line,
            block.lang,
            t.elapsed().as_secs_f64()
        );
    }
    drop(to_shell);
    drop(session);
    let _ = rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")));
    eprintln!(
        "README: {ran} block(s) ran, {skipped} skipped, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

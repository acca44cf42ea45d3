//! Kill -9 campaigns: `chittysync` processes killed at random moments while
//! they write, sync with a peer or mirror to Postgres. Nothing acknowledged
//! may be lost, `verify` must pass afterwards, and running the killed
//! command again must converge, with no duplicates.
//!
//! Each campaign runs for `CHITTYSYNC_CRASH_SECONDS` (default 8) and at
//! least a few kills; `scripts/crash-campaign` runs them for longer.
//! `CHITTYSYNC_CRASH_SEED` replays the random moments of an earlier run
//! (every campaign prints its seed). The Postgres campaign needs
//! `CHITTYSYNC_TEST_PG_URL`, like the other Postgres tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chittysync::{FieldDef, FieldKind, Replica, Role, Schema, Value};
use common::{PG_URL_VAR, chittysync, json, ok, pg_url, psql};

/// How long each campaign keeps killing.
fn budget() -> Duration {
    let seconds = std::env::var("CHITTYSYNC_CRASH_SECONDS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("CHITTYSYNC_CRASH_SECONDS is seconds")
        })
        .unwrap_or(8);
    Duration::from_secs(seconds)
}

/// A small deterministic generator (SplitMix64): the kill moments of a run
/// can be replayed from its seed.
struct Dice(u64);

impl Dice {
    fn new(campaign: &str) -> Dice {
        let seed = std::env::var("CHITTYSYNC_CRASH_SEED")
            .ok()
            .map(|s| s.parse::<u64>().expect("CHITTYSYNC_CRASH_SEED is a number"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{campaign}: CHITTYSYNC_CRASH_SEED={seed}");
        Dice(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[0, max]`.
    fn upto(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % (micros + 1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `chittysync --replica REPLICA ARGS…`, started, not waited for.
fn spawn(replica: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(replica)
        .args(args)
        .env_remove("CHITTYSYNC_REPLICA")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs")
}

/// How long a command takes here, learnt as the campaign goes, so kill
/// moments spread over a whole run (start-up, work, commit) whatever the
/// machine's speed and load: most runs are killed, some finish.
struct Pace(Duration);

impl Pace {
    /// A kill moment: somewhere in `[0, 1.5 × the usual time]`.
    fn moment(&self, dice: &mut Dice) -> Duration {
        dice.upto(self.0.mul_f64(1.5))
    }

    /// A run ended by itself after `took`.
    fn finished(&mut self, took: Duration) {
        self.0 = (self.0 * 3 + took) / 4;
    }

    /// A run was killed: it needed longer than that.
    fn killed(&mut self) {
        self.0 = self.0.mul_f64(1.02);
    }
}

/// Lets `child` run for `delay`, then kills it with SIGKILL if it is still
/// running. Returns its output if it finished by itself.
fn kill_after(mut child: Child, delay: Duration) -> Option<Output> {
    let until = Instant::now() + delay;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(child.wait_with_output().expect("collect the output"));
        }
        let now = Instant::now();
        if now >= until {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            return None;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(1)));
    }
}

/// How long `args` takes when nobody kills it: the range kill moments are
/// drawn from.
fn timed(replica: &Path, args: &[&str], env: &[(&str, &str)]) -> (Duration, Output) {
    let start = Instant::now();
    let out = spawn(replica, args, env)
        .wait_with_output()
        .expect("the binary runs");
    (start.elapsed(), out)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `verify` of the whole replica passes.
fn assert_verifies(replica: &Path, when: &str) {
    let run = chittysync(replica, &["verify"]);
    assert_eq!(
        run.code,
        0,
        "{when}: verify of {} failed: {}{}",
        replica.display(),
        run.stdout,
        run.stderr
    );
}

/// Every live record of `registry`: id → fields.
fn records(replica: &Path, registry: &str) -> BTreeMap<String, serde_json::Value> {
    json(replica, &["ls", registry])
        .as_array()
        .expect("ls --json is an array")
        .iter()
        .map(|r| (r["_id"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

const LOG_SCHEMA: &str = r#"
[[fields]]
name = "n"
type = "integer"
required = true

[[fields]]
name = "body"
type = "long_text"
"#;

/// The body a put of number `n` writes: long enough that a write takes a
/// while, and checkable after a crash.
fn body(n: u64) -> String {
    format!("entry {n}; ").repeat(40)
}

#[test]
fn acknowledged_puts_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("r.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, LOG_SCHEMA).unwrap();
    ok(
        &replica,
        &[
            "registry",
            "create",
            "log",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let mut dice = Dice::new("writer");

    // What a put costs unkilled, measured on the first ones.
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut pace = Pace(Duration::ZERO);
    for n in 0..3 {
        let (took, out) = timed(
            &replica,
            &[
                "put",
                "log",
                &format!("n={n}"),
                &format!("body={}", body(n)),
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        acknowledged.insert(stdout(&out), n);
        pace.0 = pace.0.max(took);
    }

    let deadline = Instant::now() + budget();
    let (mut kills, mut compactions_killed) = (0, 0);
    let mut n = 3;
    while Instant::now() < deadline || kills < 20 {
        // Now and then the process killed is a compaction, which rewrites
        // what the registry keeps.
        let compaction = dice.below(10) == 0;
        let n_arg = format!("n={n}");
        let body_arg = format!("body={}", body(n));
        let args: Vec<&str> = if compaction {
            vec!["compact", "log"]
        } else {
            vec!["put", "log", &n_arg, &body_arg]
        };
        let started = Instant::now();
        let outcome = kill_after(spawn(&replica, &args, &[]), pace.moment(&mut dice));
        match &outcome {
            Some(_) => pace.finished(started.elapsed()),
            None => pace.killed(),
        }
        match outcome {
            Some(out) => {
                assert!(
                    out.status.success(),
                    "{args:?} failed unkilled: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if !compaction {
                    acknowledged.insert(stdout(&out), n);
                }
            }
            None if compaction => compactions_killed += 1,
            None => kills += 1,
        }
        n += 1;

        if n % 16 == 0 {
            check_log(&replica, &acknowledged, n, &format!("after put {n}"));
        }
    }
    check_log(&replica, &acknowledged, n, "at the end");
    assert_verifies(&replica, "at the end");
    eprintln!(
        "writer: {} acknowledged puts, {kills} puts and {compactions_killed} compactions killed",
        acknowledged.len()
    );
}

/// Every acknowledged put is there with what it wrote; whatever a killed
/// put left is either absent or whole.
fn check_log(replica: &Path, acknowledged: &BTreeMap<String, u64>, below: u64, when: &str) {
    let stored = records(replica, "log");
    for (id, n) in acknowledged {
        let record = stored
            .get(id)
            .unwrap_or_else(|| panic!("{when}: acknowledged put {n} ({id}) is lost"));
        assert_eq!(record["n"], *n, "{when}: {id}");
    }
    for (id, record) in &stored {
        let n = record["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("{when}: {record}"));
        assert!(n < below, "{when}: {id} has n = {n}");
        assert_eq!(record["body"], body(n), "{when}: {id} is torn");
    }
}

/// A running `chittysync serve`, killed when dropped.
struct Hub {
    child: Child,
    address: String,
}

impl Hub {
    fn start(replica: &Path) -> Hub {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
            .arg("--replica")
            .arg(replica)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("CHITTYSYNC_REPLICA")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first)
            .expect("serve prints where it listens");
        // Keep reading what it prints, or it would write to a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        let address = first
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        Hub { child, address }
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `changes` signed changes of four records each to `registry` of
/// the replica at `path`, while no other process runs on it. Returns how
/// many records it wrote.
fn write_records(path: &Path, registry: &str, side: &str, round: u64, changes: u64) -> usize {
    let replica = Replica::open(path).unwrap();
    let reg = replica.registry(registry).unwrap();
    for k in 0..changes {
        reg.write(|w| {
            for j in 0..4 {
                w.put(
                    None,
                    [
                        ("n", Value::Integer((round * 10_000 + k * 4 + j) as i64)),
                        (
                            "body",
                            Value::from(format!("{side} {round} {k} {j}; ").repeat(20)),
                        ),
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
    }
    changes as usize * 4
}

/// A registry's heads and state digest, as its replica reads them.
fn state(path: &Path, registry: &str) -> (Vec<String>, String, usize) {
    let replica = Replica::open(path).unwrap();
    let reg = replica.registry(registry).unwrap();
    let mut heads: Vec<String> = reg.heads().iter().map(ToString::to_string).collect();
    heads.sort();
    (heads, reg.state_digest(), reg.len())
}

#[test]
fn a_peer_sync_killed_midway_converges_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let hub_db = dir.path().join("hub.db");
    let laptop_db = dir.path().join("laptop.db");
    let hub_key = {
        let hub = Replica::open(&hub_db).unwrap();
        let laptop = Replica::open(&laptop_db).unwrap();
        let schema = Schema::new()
            .field(FieldDef::new("n", FieldKind::Integer).required())
            .field(FieldDef::new("body", FieldKind::Text));
        let reg = hub.create_registry("log", schema).unwrap();
        reg.set_member(laptop.public_key(), Role::Writer).unwrap();
        hub.public_key().to_string()
    };
    let mut written = write_records(&hub_db, "log", "hub", 0, 60);
    let mut dice = Dice::new("peer sync");

    // The first, full sync, unkilled: it pulls the registry and says how
    // long a sync takes here.
    let hub = Hub::start(&hub_db);
    let sync_args = ["sync", &hub.address, "--key", &hub_key];
    let (took, out) = timed(&laptop_db, &sync_args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.kill();
    let mut pace = Pace(took);

    let deadline = Instant::now() + budget();
    let (mut clients_killed, mut hubs_killed, mut rounds) = (0, 0, 0);
    while Instant::now() < deadline || clients_killed + hubs_killed < 4 {
        rounds += 1;
        // Both sides have news for the other.
        written += write_records(&hub_db, "log", "hub", rounds, 3 + dice.below(10));
        written += write_records(&laptop_db, "log", "laptop", rounds, 3 + dice.below(10));

        let hub = Hub::start(&hub_db);
        let sync_args = ["sync", &hub.address, "--key", &hub_key];
        let delay = pace.moment(&mut dice);
        let kill_hub = dice.below(3) == 0;
        let hub = if kill_hub {
            // The hub dies mid-sync; the laptop's sync then fails or ends.
            let mut client = spawn(&laptop_db, &sync_args, &[]);
            std::thread::sleep(delay);
            let finished = client.try_wait().expect("try_wait").is_some();
            hub.kill();
            let _ = client.wait_with_output();
            if finished {
                pace.finished(delay);
            } else {
                hubs_killed += 1;
                pace.killed();
            }
            Hub::start(&hub_db)
        } else {
            let started = Instant::now();
            if kill_after(spawn(&laptop_db, &sync_args, &[]), delay).is_none() {
                clients_killed += 1;
                pace.killed();
            } else {
                pace.finished(started.elapsed());
            }
            hub
        };

        // Run again, to the end: both sides converge.
        let sync_args = ["sync", &hub.address, "--key", &hub_key];
        let (took, out) = timed(&laptop_db, &sync_args, &[]);
        assert!(
            out.status.success(),
            "round {rounds}: the sync after a kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pace.finished(took);
        hub.kill();
        let on_hub = state(&hub_db, "log");
        // Every record either side wrote is on both.
        assert_eq!(on_hub.2, written, "round {rounds}: records lost or doubled");
        assert_eq!(
            on_hub,
            state(&laptop_db, "log"),
            "round {rounds}: the replicas differ"
        );
        if rounds % 4 == 0 {
            assert_verifies(&hub_db, &format!("round {rounds}"));
            assert_verifies(&laptop_db, &format!("round {rounds}"));
        }
    }
    assert_verifies(&hub_db, "at the end");
    assert_verifies(&laptop_db, "at the end");
    let total = records(&hub_db, "log").len();
    assert_eq!(records(&laptop_db, "log").len(), total);
    eprintln!(
        "peer sync: {rounds} rounds, {clients_killed} syncs and {hubs_killed} hubs killed mid-sync, {total} records on both"
    );
}

const SERVICES_SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"
required = true
unique = true

[[fields]]
name = "port"
type = "integer"
"#;

#[test]
fn a_postgres_mirror_killed_mid_write_converges_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("r.db");
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SERVICES_SCHEMA).unwrap();
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
    let pg_schema = format!("cs_crash_{}", std::process::id());
    psql(&format!("DROP SCHEMA IF EXISTS {pg_schema} CASCADE"));
    let table = format!("{pg_schema}.services");
    let env = [(PG_URL_VAR, pg_url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = common::chittysync_env(
        &replica,
        &[
            "adapter",
            "add",
            "pg",
            "--registry",
            "services",
            "--table",
            &table,
            "--secret-env",
            PG_URL_VAR,
            "--create",
            "--key-field",
            "name",
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut dice = Dice::new("postgres mirror");

    let mut next_name = 0u64;
    let mut write_local = |replica: &Path, count: u64, round: u64| {
        let r = Replica::open(replica).unwrap();
        let reg = r.registry("services").unwrap();
        // One change for many records, as a bulk load would make.
        reg.write(|w| {
            for _ in 0..count {
                w.put(
                    None,
                    [
                        ("name", Value::from(format!("svc-{next_name}"))),
                        ("port", Value::Integer(round as i64)),
                    ],
                )?;
                next_name += 1;
            }
            Ok(())
        })
        .unwrap();
        // A few existing records change too.
        for record in reg.list(&chittysync::Query::all()).iter().take(5) {
            reg.put(
                Some(&record.id),
                [("port", Value::Integer(round as i64 + 7000))],
            )
            .unwrap();
        }
    };

    // The first push, unkilled, in small batches: many commits to land
    // between.
    write_local(&replica, 300, 0);
    let sync = ["sync", "pg", "--batch-size", "25"];
    let (took, out) = timed(&replica, &sync, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pace = Pace(took);

    let deadline = Instant::now() + budget();
    let (mut kills, mut rounds) = (0, 0u64);
    while Instant::now() < deadline || kills < 4 {
        rounds += 1;
        // News on both sides: records made here, rows inserted and updated
        // by another application.
        write_local(&replica, 50 + dice.below(150), rounds);
        let extra = 10 + dice.below(40);
        psql(&format!(
            "INSERT INTO {table} (id, name, port) SELECT 'ext-{rounds}-' || k, 'ext-{rounds}-' || k, k FROM generate_series(1, {extra}) AS k; \
             UPDATE {table} SET port = port + 1 WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT 5)"
        ));

        let started = Instant::now();
        if kill_after(spawn(&replica, &sync, &env), pace.moment(&mut dice)).is_none() {
            kills += 1;
            pace.killed();
        } else {
            pace.finished(started.elapsed());
        }
        // Run again until a run succeeds (a kill may leave work for two).
        let (took, out) = timed(&replica, &sync, &env);
        assert!(
            out.status.success(),
            "round {rounds}: the sync after a kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pace.finished(took);
        check_mirror(&replica, &table, &env, &format!("round {rounds}"));
    }
    assert_verifies(&replica, "at the end");
    let rows = psql(&format!("SELECT count(*) FROM {table}"));
    eprintln!("postgres mirror: {rounds} rounds, {kills} runs killed, {rows} rows");
    psql(&format!("DROP SCHEMA IF EXISTS {pg_schema} CASCADE"));
}

/// The table and the registry hold the same rows, each once, and a further
/// run has nothing to do.
fn check_mirror(replica: &Path, table: &str, env: &[(&str, &str)], when: &str) {
    let registry: BTreeSet<(String, String, i64)> = records(replica, "services")
        .into_iter()
        .map(|(id, r)| {
            (
                id,
                r["name"].as_str().unwrap().to_owned(),
                r["port"].as_i64().unwrap(),
            )
        })
        .collect();
    let rows = psql(&format!("SELECT id, name, port FROM {table} ORDER BY id"));
    let table_rows: BTreeSet<(String, String, i64)> = rows
        .lines()
        .map(|line| {
            let mut cells = line.split('|');
            let id = cells.next().unwrap().to_owned();
            let name = cells.next().unwrap().to_owned();
            let port = cells.next().unwrap().parse().unwrap();
            (id, name, port)
        })
        .collect();
    assert_eq!(
        rows.lines().count(),
        table_rows.len(),
        "{when}: rows repeated in the table"
    );
    let names: BTreeSet<&String> = registry.iter().map(|(_, name, _)| name).collect();
    assert_eq!(
        names.len(),
        registry.len(),
        "{when}: a name twice in the registry"
    );
    let only_here: Vec<_> = registry.difference(&table_rows).take(5).collect();
    let only_there: Vec<_> = table_rows.difference(&registry).take(5).collect();
    assert!(
        only_here.is_empty() && only_there.is_empty(),
        "{when}: the registry and the table differ: only in the registry {only_here:?}, only in the table {only_there:?}"
    );
    let again = common::chittysync_env(replica, &["--json", "sync", "pg"], env);
    assert_eq!(again.code, 0, "{when}: {}", again.stderr);
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        report["applied"], 0,
        "{when}: a converged run applied: {report}"
    );
}

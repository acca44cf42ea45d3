//! The runner that drives the targets on a stable toolchain: it mutates
//! the seed inputs (and any corpus and crashers kept in `fuzz/`) for a
//! given time and stops at the first failure, saving the input that caused
//! it. It has no coverage guidance, unlike libFuzzer; it is the campaign
//! that runs everywhere, in CI included.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{TARGETS, Target};

/// Inputs grow to at most this many bytes.
const MAX_LEN: usize = 64 << 10;
/// One input running longer than this is a hang.
const HANG: Duration = Duration::from_secs(30);

/// A small deterministic generator (SplitMix64), so a run can be replayed
/// from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Where a target's saved inputs live: `fuzz/DIR/TARGET`.
fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

/// The inputs kept for `target`: its seeds, then the files of
/// `fuzz/corpus/TARGET` (cargo-fuzz's corpus) and `fuzz/crashers/TARGET`
/// (inputs that once failed, kept as regressions).
pub fn kept_inputs(target: &str) -> Vec<Vec<u8>> {
    let mut inputs = crate::seeds(target);
    for kind in ["corpus", "crashers"] {
        let Ok(entries) = std::fs::read_dir(dir(kind, target)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            if path.is_file() && path.extension().is_none_or(|e| e != "md") {
                inputs.push(std::fs::read(&path).expect("a kept input reads"));
            }
        }
    }
    inputs
}

/// Changes `input` in one of the ways fuzzers do: flip, set, insert,
/// delete, repeat or splice bytes, or write a boundary value.
pub fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = rng.next_u64() as u8;
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            input.drain(at..at + n);
        }
        4 if len > 0 => {
            // Repeat a slice: lengths and counts that disagree.
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let copy = input[at..at + n].to_vec();
            let to = rng.below(len + 1);
            input.splice(to..to, copy);
        }
        5 if len >= 4 => {
            // A boundary value where a length or count may sit.
            let at = rng.below(len - 3);
            let values = [0u32, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX];
            let v = values[rng.below(values.len())];
            let bytes = if rng.below(2) == 0 {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            input[at..at + 4].copy_from_slice(&bytes);
        }
        6 if !pool.is_empty() => {
            // Splice: our head, another input's tail.
            let other = &pool[rng.below(pool.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => input.truncate(rng.below(len)),
        _ if len > 0 => {
            // ASCII digits and separators, for the text formats.
            let at = rng.below(len);
            const TEXT: &[u8] = b"0123456789\n :,\"{}[]-+=/";
            input[at] = TEXT[rng.below(TEXT.len())];
        }
        _ => input.push(rng.next_u64() as u8),
    }
    input.truncate(MAX_LEN);
}

/// What a run of one target found.
#[derive(Debug)]
pub struct Outcome {
    /// Inputs tried.
    pub runs: u64,
    /// The input that made the target fail, saved under
    /// `fuzz/artifacts/TARGET/`, and the panic message.
    pub failure: Option<(PathBuf, String)>,
}

/// Runs `target` on every kept input, then on mutations of them until
/// `time` has passed or `max_runs` inputs were tried, and stops at the
/// first failure.
pub fn run(name: &str, target: Target, time: Duration, max_runs: u64, seed: u64) -> Outcome {
    let pool = kept_inputs(name);
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + time;
    let current = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let watchdog = spawn_watchdog(name, current.clone(), started.clone(), done.clone());
    let epoch = Instant::now();
    let mut runs = 0;
    let mut failure = None;
    while failure.is_none() {
        let input = if (runs as usize) < pool.len() {
            pool[runs as usize].clone()
        } else if Instant::now() >= deadline || runs >= max_runs || pool.is_empty() {
            break;
        } else {
            let mut input = pool[rng.below(pool.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut input, &pool, &mut rng);
            }
            input
        };
        current.lock().expect("not poisoned").clone_from(&input);
        started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| target(&input)));
        started.store(0, Ordering::SeqCst);
        runs += 1;
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            failure = Some((save(name, "crash", &input), message));
        }
    }
    done.store(1, Ordering::SeqCst);
    let _ = watchdog.join();
    Outcome { runs, failure }
}

/// Stops the process, saving the input, when one input runs too long.
fn spawn_watchdog(
    name: &str,
    current: Arc<Mutex<Vec<u8>>>,
    started: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let name = name.to_owned();
    let epoch = Instant::now();
    std::thread::spawn(move || {
        while done.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(200));
            let at = started.load(Ordering::SeqCst);
            if at != 0 && epoch.elapsed().as_millis() as u64 + 1 - at > HANG.as_millis() as u64 {
                let input = current.lock().map(|i| i.clone()).unwrap_or_default();
                let path = save(&name, "timeout", &input);
                eprintln!(
                    "{name}: one input ran over {} s; saved as {}",
                    HANG.as_secs(),
                    path.display()
                );
                std::process::exit(1);
            }
        }
    })
}

/// Saves a failing input as `fuzz/artifacts/TARGET/KIND-HASH`.
fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name, so the same input is saved once.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let dir = dir("artifacts", target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// The runner's command line.
struct Args {
    targets: Vec<String>,
    files: Vec<PathBuf>,
    seconds: f64,
    runs: u64,
    seed: u64,
    write_corpus: bool,
}

fn parse_args(own_target: Option<&str>) -> Result<Args, String> {
    let mut args = Args {
        targets: Vec::new(),
        files: Vec::new(),
        seconds: 10.0,
        runs: u64::MAX,
        write_corpus: false,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or_else(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "--seconds" => {
                args.seconds = value("a number of seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--runs" => {
                args.runs = value("a number")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
            }
            "--seed" => {
                args.seed = value("a number")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--write-corpus" if own_target.is_none() => args.write_corpus = true,
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if own_target.is_some() => args.files.push(PathBuf::from(other)),
            other if crate::target(other).is_some() => args.targets.push(other.to_owned()),
            other => return Err(format!("no target named {other}")),
        }
    }
    Ok(args)
}

fn usage(own_target: Option<&str>) -> String {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    match own_target {
        Some(t) => format!(
            "usage: {t} [FILE…] [--seconds N] [--runs N] [--seed N]\n\
             With files, runs the target on each (a replay); without, mutates its inputs for N seconds (default 10)."
        ),
        None => format!(
            "usage: fuzz [TARGET…] [--seconds N] [--runs N] [--seed N] | [TARGET…] --write-corpus\n\
             Mutates each target's inputs, the time shared between the targets (default 10 s in all).\n\
             --write-corpus writes the seeds to fuzz/corpus/TARGET/, where cargo fuzz starts from.\n\
             Targets: {}",
            names.join(", ")
        ),
    }
}

/// `main` of the `fuzz` binary: every target named (or all), sharing the time.
pub fn main_all() -> ExitCode {
    main_with(None)
}

/// `main` of one target's binary when it is not built for libFuzzer:
/// replays the files given, or mutates the target's inputs.
pub fn main_for(target: &str) -> ExitCode {
    main_with(Some(target))
}

fn main_with(own_target: Option<&str>) -> ExitCode {
    let args = match parse_args(own_target) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{}", usage(own_target));
            return ExitCode::from(2);
        }
    };
    if let Some(name) = own_target
        && !args.files.is_empty()
    {
        let target = crate::target(name).expect("a known target");
        for file in &args.files {
            let input = match std::fs::read(file) {
                Ok(input) => input,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            target(&input);
            println!("{name}: {} passed", file.display());
        }
        return ExitCode::SUCCESS;
    }
    let names: Vec<String> = match own_target {
        Some(name) => vec![name.to_owned()],
        None if args.targets.is_empty() => TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect(),
        None => args.targets.clone(),
    };
    if args.write_corpus {
        for name in &names {
            let dir = dir("corpus", name);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("{}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            let seeds = crate::seeds(name);
            for (i, seed) in seeds.iter().enumerate() {
                let path = dir.join(format!("seed-{i}"));
                if let Err(e) = std::fs::write(&path, seed) {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            println!("{name}: {} seeds in {}", seeds.len(), dir.display());
        }
        return ExitCode::SUCCESS;
    }
    let share = Duration::from_secs_f64(args.seconds.max(0.0) / names.len() as f64);
    println!("seed {} ({} s per target)", args.seed, share.as_secs_f64());
    for (i, name) in names.iter().enumerate() {
        let target = crate::target(name).expect("a known target");
        let start = Instant::now();
        let outcome = run(
            name,
            target,
            share,
            args.runs,
            args.seed.wrapping_add(i as u64),
        );
        let took = start.elapsed().as_secs_f64();
        match outcome.failure {
            None => println!(
                "{name}: {} inputs in {took:.1} s ({:.0}/s), no failure",
                outcome.runs,
                outcome.runs as f64 / took.max(1e-9)
            ),
            Some((path, message)) => {
                eprintln!(
                    "{name}: FAILED after {} inputs: {message}\n\
                     the input is saved as {}; replay it with\n  \
                     cargo run -p chittysync-fuzz --bin {name} -- {}\n\
                     and keep it in fuzz/crashers/{name}/ once fixed",
                    outcome.runs,
                    path.display(),
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

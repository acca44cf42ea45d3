//! The Python and Node packages against the Rust library: a 1,000-record
//! bulk write (one signed change) and a read of every record, the same work
//! timed in Rust in this process and in each language by its own script.
//!
//! The packages must be built first (`scripts/test-bindings` does it). The
//! Python interpreter is `CHITTYSYNC_PYTHON`, or the one in the packages'
//! virtual environment under the target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chittysync::{FieldDef, FieldKind, Query, Replica, Schema};

use crate::measure::Pairs;
use crate::report::{Figure, Goal};
use crate::{Options, Result};

const RECORDS: usize = 1000;
const BENCH: &str = "bindings vs Rust";

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let (warmup, iterations) = (options.pick(3, 1), options.pick(15, 3));
    let rust = rust_samples(warmup, iterations)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut figures = Vec::new();
    let python = python_interpreter(&root);
    let node_ready = root.join("bindings/node/dist/index.js").exists();
    let languages: [(&str, Option<Command>, &str); 2] = [
        (
            "Python",
            python.map(|py| {
                let mut c = Command::new(py);
                c.arg(root.join("bindings/python/bench.py"));
                c
            }),
            "the Python package is not installed; run scripts/test-bindings first",
        ),
        (
            "Node",
            node_ready.then(|| {
                let mut c = Command::new("node");
                c.arg(root.join("bindings/node/bench.mjs"));
                c
            }),
            "the Node package is not built; run scripts/test-bindings first",
        ),
    ];
    for (language, command, missing) in languages {
        let Some(mut command) = command else {
            figures.push(Figure::missing(
                BENCH,
                format!("{language}: {RECORDS}-record write"),
                missing,
            ));
            continue;
        };
        let out = command
            .args(["--records", &RECORDS.to_string()])
            .args(["--iterations", &iterations.to_string()])
            .args(["--warmup", &warmup.to_string()])
            .output()
            .map_err(|e| format!("running the {language} bench: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the {language} bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let samples: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("the {language} bench printed no JSON: {e}"))?;
        for (what, theirs, ours) in [
            ("write", &samples["write"], &rust.0),
            ("read", &samples["read"], &rust.1),
        ] {
            let theirs: Vec<f64> = theirs
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default();
            let n = theirs.len().min(ours.len());
            let pairs = Pairs {
                ours: theirs[..n].to_vec(),
                base: ours[..n].to_vec(),
            };
            figures.push(Figure::time(
                BENCH,
                format!("{language}: {RECORDS}-record bulk {what}"),
                &pairs,
                Some(Goal::AtMost(1.3)),
                format!(
                    "ours: the {language} package ({what} {} records, values converted to and from the language's own); base: the same calls on the Rust library, same run",
                    RECORDS
                ),
            ));
        }
    }
    Ok(figures)
}

/// Write and read times (s) of the Rust library, per iteration.
fn rust_samples(warmup: usize, iterations: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut write, mut read) = (Vec::new(), Vec::new());
    for i in 0..warmup + iterations {
        let dir = tempfile::tempdir()?;
        let schema = Schema::new()
            .field(FieldDef::new("name", FieldKind::Text).required())
            .field(FieldDef::new("tier", FieldKind::Integer));
        let reg = Replica::open(dir.path().join("bench.db"))?.create_registry("bench", schema)?;
        let rows: Vec<Vec<(String, chittysync::Value)>> = (0..RECORDS)
            .map(|n| {
                vec![
                    ("name".to_owned(), format!("service-{n}").into()),
                    ("tier".to_owned(), ((n % 3 + 1) as i64).into()),
                ]
            })
            .collect();
        let t = Instant::now();
        reg.write(|w| {
            rows.into_iter()
                .map(|fields| w.put(None, fields))
                .collect::<std::result::Result<Vec<_>, _>>()
        })?;
        let w = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = reg.list(&Query::all());
        let r = t.elapsed().as_secs_f64();
        assert_eq!(got.len(), RECORDS);
        if i >= warmup {
            write.push(w);
            read.push(r);
        }
    }
    Ok((write, read))
}

fn python_interpreter(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHITTYSYNC_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("bindings-venv/bin/python");
    venv.exists().then_some(venv)
}

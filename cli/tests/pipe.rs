//! A reader that stops early (`chittysync … | head -1`) ends the command
//! quietly, as with any Unix tool: no panic, no backtrace, exit 0 (or
//! death by SIGPIPE).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{ok, services_replica};

const SCHEMA: &str = r#"
[[fields]]
name = "name"
type = "text"

[[fields]]
name = "notes"
type = "text"
"#;

/// Runs `chittysync --replica REPLICA ARGS…` with stdout in a pipe whose
/// reader reads `keep` bytes (none: closes at once) and then closes it.
/// Returns the exit code (128 + signal if killed) and stderr.
fn run_closing_stdout(replica: &Path, args: &[&str], keep: usize) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chittysync"))
        .arg("--replica")
        .arg(replica)
        .args(args)
        .env_remove("CHITTYSYNC_REPLICA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = vec![0; keep];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout);
    let out = child.wait_with_output().expect("the binary ends");
    #[cfg(unix)]
    let code = {
        use std::os::unix::process::ExitStatusExt;
        out.status
            .code()
            .or(out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    };
    #[cfg(not(unix))]
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_reader_that_closes_early_ends_every_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let replica = services_replica(dir.path(), SCHEMA);
    // Well over a pipe's buffer (64 KiB) in every listing, so the writer
    // meets the closed pipe even when the reader takes its first bytes.
    let notes = "n".repeat(3000);
    for i in 0..40 {
        ok(
            &replica,
            &[
                "put",
                "services",
                &format!("name=s{i}"),
                &format!("notes={notes}"),
            ],
        );
    }
    let commands: [&[&str]; 10] = [
        &["ls", "services"],
        &["--json", "ls", "services"],
        &["registry", "show", "services"],
        &["--json", "registry", "show", "services"],
        &["registry", "ls"],
        &["audit", "services"],
        &["--json", "audit", "services"],
        &["journal"],
        &["--json", "journal"],
        &["--json", "conflicts", "services"],
    ];
    for args in commands {
        for keep in [0, 1] {
            let (code, stderr) = run_closing_stdout(&replica, args, keep);
            assert!(
                code == 0 || code == 141,
                "chittysync {args:?} (reader kept {keep} bytes) exited {code}: {stderr}"
            );
            assert!(
                !stderr.contains("panicked"),
                "chittysync {args:?} (reader kept {keep} bytes) panicked: {stderr}"
            );
        }
    }
}

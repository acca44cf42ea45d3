//! Library errors speak in library terms: no message of the core or of an
//! adapter crate tells the reader to run a `chittysync` command or pass a
//! command-line flag. The CLI adds those hints itself (`cli/src/hint.rs`),
//! and Python and Node users are never pointed at a shell.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of one line (rough: enough for messages).
fn literals(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

#[test]
fn library_messages_name_no_cli_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("core/src"), &mut files);
    for adapter in ["postgres", "notion", "sheets", "http"] {
        rust_files(&root.join("adapters").join(adapter).join("src"), &mut files);
    }
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        // Tests may say anything.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for lit in literals(line) {
                let cli = lit.contains("`chittysync ")
                    || lit.split_whitespace().any(|w| {
                        w.trim_start_matches(['(', '`']).starts_with("--")
                            && w.len() > 3
                            && w.chars().nth(2).is_some_and(|c| c.is_ascii_lowercase())
                    });
                if cli {
                    found.push(format!("{}:{}: {lit}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "library messages that name CLI commands or flags (say it in API terms; the CLI adds hints in cli/src/hint.rs):\n{}",
        found.join("\n")
    );
}

//! Bundles arrive from other replicas as bytes: decoding and importing any
//! bytes must give an error or a verified import, never a panic.
//!
//! `cargo +nightly fuzz run bundle`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = chittysync::Bundle::from_bytes(data) {
        // Re-encoding what decoded must decode again.
        let again = chittysync::Bundle::from_bytes(&bundle.to_bytes()).expect("re-encoded bundle decodes");
        assert_eq!(again.len(), bundle.len());
        let dir = tempfile_dir();
        if let Ok(replica) = chittysync::Replica::open(dir.join("fuzz.db")) {
            let _ = replica.import(bundle);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
});

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chittysync-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

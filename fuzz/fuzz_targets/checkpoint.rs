//! Signed checkpoints (c2sp.org/signed-note) handed over as text: only the
//! log's key makes one verify, and an independent reader agrees.
//!
//! `cargo +nightly fuzz run checkpoint` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin checkpoint -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::checkpoint(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("checkpoint")
}

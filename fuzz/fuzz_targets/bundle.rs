//! Bundles arrive from other replicas and from files: decoding and importing
//! any bytes must give an error or a verified import, never a panic.
//!
//! `cargo +nightly fuzz run bundle` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin bundle -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::bundle(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("bundle")
}

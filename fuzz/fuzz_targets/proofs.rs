//! Inclusion and consistency proofs as JSON: read, written back and checked
//! against any root without a panic.
//!
//! `cargo +nightly fuzz run proofs` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin proofs -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::proofs(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("proofs")
}

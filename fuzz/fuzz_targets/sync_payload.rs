//! Hello and sync payloads inside envelopes a hostile member signed: they
//! decode to what encodes back to them, or to an error.
//!
//! `cargo +nightly fuzz run sync_payload` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin sync_payload -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::sync_payload(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("sync_payload")
}

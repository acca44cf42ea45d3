//! Every message of the peer protocol is a signed envelope: decoding any
//! bytes gives an error or an envelope whose signature verified.
//!
//! `cargo +nightly fuzz run envelope` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin envelope -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::envelope(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("envelope")
}

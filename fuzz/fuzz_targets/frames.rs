//! Wire frames from strangers before the handshake, and badly framed
//! messages from a peer after it: an error or a clean end, never a panic.
//!
//! `cargo +nightly fuzz run frames` (libFuzzer), or on any toolchain
//! `cargo run -p chittysync-fuzz --bin frames -- [FILE…] [--seconds N]`.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chittysync_fuzz::frames(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_for("frames")
}

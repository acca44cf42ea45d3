//! Runs every fuzz target (or those named) on this toolchain for a given
//! time: `cargo run -p chittysync-fuzz --release -- [TARGET…] --seconds N`.
//! Under `cargo fuzz` it is one more target, feeding each input to all.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for (_, target) in chittysync_fuzz::TARGETS {
        target(data);
    }
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    chittysync_fuzz::runner::main_all()
}

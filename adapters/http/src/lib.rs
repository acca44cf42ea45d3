//! What ChittySync's web-API adapters (Notion, Google Sheets) share about
//! talking HTTP: when to retry, how long to wait, and how to spread waits
//! so many clients do not retry in step.

/// A random number in [0, 1), for jittering retry waits.
pub fn jitter_unit() -> f64 {
    let r = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (r >> 11) as f64 / (1u64 << 53) as f64
}

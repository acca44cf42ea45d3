//! The UniFFI facade over ChittySync: what the Python and Node packages
//! call.
//!
//! It is thin on purpose: every operation is one call into the `chittysync`
//! crate, with values converted at the boundary. The core knows nothing of
//! UniFFI; errors are mapped in one place ([`ChittyError`]).
//!
//! Values cross to the Python and Node packages as JSON in one encoding
//! (the `wire` module), converted here by each field's type, so the two
//! packages are thin sugar over one behaviour; `bindings/vectors.json`
//! holds the cases both test suites run.

// The error crosses the boundary by value (UniFFI lifts it field by field),
// so it cannot be boxed to make it small.
#![allow(clippy::result_large_err)]

mod adapters;
mod error;
mod peers;
mod registry;
mod replica;
mod tokens;
mod types;
mod wire;

pub use adapters::*;
pub use error::ChittyError;
pub use peers::*;
pub use registry::Registry;
pub use replica::Replica;
pub use tokens::*;
pub use types::*;

uniffi::setup_scaffolding!();

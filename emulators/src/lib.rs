//! Emulators of the external services ChittySync's adapters talk to, for
//! tests and benchmarks: each serves the documented HTTP API on a random
//! loopback port, from in-memory state.
//!
//! Both share a [`Control`]: an injectable clock, a fault queue ("the next N
//! requests fail with this status, body or delay"), a request log (so a test
//! can prove a dry run made no mutating call) and adjustable limits. Tests
//! in the same process use the [`Control`] handle directly; other processes
//! use the same powers over HTTP under `/_control/`.
//!
//! [`Sheets`] emulates Google Sheets v4, the OAuth token endpoint for
//! service accounts and Drive's file version check.

pub mod control;
pub mod notion;
pub mod server;
pub mod sheets;

pub use control::{Control, Fault, LoggedRequest};
pub use notion::Notion;
pub use server::Running;
pub use sheets::Sheets;

//! How to run a sync, and how a run reports its progress.

use super::{Direction, Side};

/// How to run a sync.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MirrorOptions {
    /// Which way to move data (within what the binding allows).
    pub direction: Direction,
    /// Plan only: write nothing to either side, move no merge base or cursor.
    pub dry_run: bool,
    /// Allow a run that deletes more than the binding's limit.
    pub allow_deletes: bool,
    /// Ignore the cursor and compare the whole table.
    pub full: bool,
    /// Settle open manual conflicts in favour of this side.
    pub take: Option<Side>,
    /// Rows per write batch on either side; `None` lets the adapter choose
    /// ([`Adapter::preferred_batch`](super::Adapter::preferred_batch), else 500).
    pub batch_size: Option<usize>,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            direction: Direction::Both,
            dry_run: false,
            allow_deletes: false,
            full: false,
            take: None,
            batch_size: None,
        }
    }
}

impl MirrorOptions {
    /// Both ways.
    pub fn sync() -> Self {
        MirrorOptions::default()
    }

    /// Registry → remote only.
    pub fn push() -> Self {
        MirrorOptions {
            direction: Direction::Push,
            ..MirrorOptions::default()
        }
    }

    /// Remote → registry only.
    pub fn pull() -> Self {
        MirrorOptions {
            direction: Direction::Pull,
            ..MirrorOptions::default()
        }
    }

    /// Plan only.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Allow more deletes than the limit.
    pub fn allow_deletes(mut self) -> Self {
        self.allow_deletes = true;
        self
    }

    /// Compare the whole table.
    pub fn full(mut self) -> Self {
        self.full = true;
        self
    }

    /// Settle manual conflicts in favour of `side`.
    pub fn take(mut self, side: Side) -> Self {
        self.take = Some(side);
        self
    }

    /// Sets the batch size (overriding the adapter's preference).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.max(1));
        self
    }
}

/// A stage of a run, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Reading remote rows.
    Fetch,
    /// Writing into the registry.
    ApplyLocal,
    /// Writing to the remote table.
    ApplyRemote,
}

impl Stage {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::ApplyLocal => "registry",
            Stage::ApplyRemote => "remote",
        }
    }
}

/// Receives progress of a run (the CLI draws bars from it).
pub trait MirrorProgress: Send + Sync {
    /// A stage starts with `total` units of work (0 if unknown).
    fn stage(&self, stage: Stage, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
}

impl MirrorProgress for () {
    fn stage(&self, _: Stage, _: u64) {}
    fn advance(&self, _: u64) {}
}

//! Scheduled mirrors: a service runs each binding that has a schedule
//! (`every_secs`) when it is due, never two runs of one binding at once,
//! and after failures waits longer each time (doubling, capped at an hour
//! or the schedule, with ±10% jitter so many bindings do not retry in step).
//! Every run is recorded by the replica ([`Replica::mirror_runs`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use chittysync::{AdapterKinds, MirrorError, MirrorOptions, MirrorOutcome, MirrorRun, Replica};

use crate::metrics::Metrics;

/// When to look for due bindings.
const TICK: Duration = Duration::from_millis(250);

/// The longest wait after failures (unless the schedule is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What the scheduler knows of one binding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    pub(crate) every: Option<Duration>,
    pub(crate) running: bool,
    pub(crate) failures: u32,
    pub(crate) next_due: Option<Instant>,
}

/// The schedule's state, shared with the API (next runs).
#[derive(Default)]
pub(crate) struct Schedule {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Schedule {
    /// When binding `name` runs next (ms since the epoch), if scheduled.
    pub(crate) fn next_run(&self, name: &str) -> Option<i64> {
        let due = self.lock().get(name).and_then(|s| s.next_due)?;
        let wait = due.saturating_duration_since(Instant::now());
        Some(now_ms().saturating_add(wait.as_millis() as i64))
    }

    /// Whether binding `name` is running now.
    pub(crate) fn running(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|s| s.running)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims binding `name` for a run unless one is running; false if so.
    pub(crate) fn claim(&self, name: &str) -> bool {
        let mut slots = self.lock();
        let slot = slots.entry(name.to_owned()).or_default();
        if slot.running {
            false
        } else {
            slot.running = true;
            true
        }
    }

    /// Claims binding `name` for a run (see [`Schedule::claim`]); the claim
    /// ends when the guard is finished or dropped, even by a panic or a
    /// cancelled request.
    pub(crate) fn guard(self: &Arc<Self>, name: &str, every: Option<Duration>) -> Option<Claim> {
        self.claim(name).then(|| Claim {
            schedule: self.clone(),
            name: name.to_owned(),
            every,
            done: false,
        })
    }

    /// A run of `name` ended: when the next is due, given its schedule.
    fn finished(&self, name: &str, every: Option<Duration>, ok: bool) {
        let mut slots = self.lock();
        let slot = slots.entry(name.to_owned()).or_default();
        slot.running = false;
        if ok {
            slot.failures = 0;
        } else {
            slot.failures = slot.failures.saturating_add(1);
        }
        match every {
            Some(every) => {
                let wait = if ok {
                    every
                } else {
                    backoff(every, slot.failures)
                };
                slot.next_due = Some(Instant::now() + wait);
            }
            None => {
                slot.next_due = None;
            }
        }
    }

    /// Schedules binding `name` every `every`, next due one interval after
    /// its last run started (ms since the epoch), or now.
    fn seed(&self, name: &str, every: Duration, last_started: Option<i64>) {
        let since =
            last_started.map(|at| Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64));
        let wait = since.map_or(Duration::ZERO, |d| every.saturating_sub(d));
        let mut slots = self.lock();
        let slot = slots.entry(name.to_owned()).or_default();
        slot.every = Some(every);
        slot.next_due = Some(Instant::now() + wait);
    }

    /// Releases a claim made for a run that did not start.
    pub(crate) fn release(&self, name: &str) {
        if let Some(slot) = self.lock().get_mut(name) {
            slot.running = false;
        }
    }
}

/// A binding claimed for one run.
pub(crate) struct Claim {
    schedule: Arc<Schedule>,
    name: String,
    /// The schedule, for a scheduled run: its end sets the next due time.
    every: Option<Duration>,
    done: bool,
}

impl Claim {
    /// The run ended (`ok`: not failed).
    pub(crate) fn finish(mut self, ok: bool) {
        self.done = true;
        self.end(ok);
    }

    fn end(&self, ok: bool) {
        match self.every {
            Some(every) => self.schedule.finished(&self.name, Some(every), ok),
            None => self.schedule.release(&self.name),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled or panicked: as a failure, so a schedule backs off.
            self.end(false);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The wait after `failures` failures in a row: the schedule doubled per
/// failure, capped at an hour (or the schedule, if longer), ±10% jitter.
pub(crate) fn backoff(every: Duration, failures: u32) -> Duration {
    let doubled = every.saturating_mul(1u32 << failures.min(16));
    let capped = doubled.min(MAX_BACKOFF.max(every));
    let mut random = [0u8; 2];
    // Without randomness the wait is exact, which is only less spread out.
    let _ = getrandom::fill(&mut random);
    let jitter = f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX) * 0.2 - 0.1;
    capped.mul_f64(1.0 + jitter)
}

/// Runs binding `name` once now, connecting through `kinds`, and records the
/// run (a failure to connect included). Returns the run.
pub(crate) async fn run_once(
    replica: &Replica,
    kinds: &AdapterKinds,
    name: &str,
    options: &MirrorOptions,
    metrics: &Metrics,
) -> Result<(MirrorRun, chittysync::MirrorReport), Box<(MirrorRun, MirrorError)>> {
    let started_at = now_ms();
    let clock = Instant::now();
    let result = match replica.connect_binding(name, kinds).await {
        Ok(adapter) => {
            replica
                .run_mirror(name, adapter.as_ref(), options, &())
                .await
        }
        Err(e) => {
            let run = MirrorRun::failure(name, started_at, clock.elapsed(), &e.to_string());
            if let Err(e) = replica.record_mirror_run(&run) {
                tracing::warn!(binding = name, error = %e, "could not record the mirror run");
            }
            Err(e)
        }
    };
    match result {
        Ok(report) => {
            let run = MirrorRun::from_report(started_at, clock.elapsed(), &report);
            metrics.mirror_run(&run);
            tracing::info!(
                binding = name,
                outcome = run.outcome.name(),
                applied = run.applied,
                failed = run.failed,
                invalid = run.invalid,
                "mirror run"
            );
            Ok((run, report))
        }
        Err(e) => {
            let run = MirrorRun::failure(name, started_at, clock.elapsed(), &e.to_string());
            if matches!(e, MirrorError::Busy { .. }) {
                // Another process is running it: not a run of ours.
                tracing::info!(
                    binding = name,
                    "mirror run skipped: it is running elsewhere"
                );
            } else {
                metrics.mirror_run(&run);
                tracing::warn!(binding = name, error = %e, "mirror run failed");
            }
            Err(Box::new((run, e)))
        }
    }
}

/// Runs scheduled bindings until the task is dropped.
pub(crate) async fn run(state: crate::Shared, kinds: Arc<AdapterKinds>) {
    let replica = state.replica.clone();
    let schedule = state.schedule.clone();
    loop {
        let listed = {
            let replica = replica.clone();
            tokio::task::spawn_blocking(move || replica.bindings()).await
        };
        let bindings = match listed {
            Ok(Ok(bindings)) => bindings,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the bindings; trying again");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(_) => return,
        };
        // Bindings newly scheduled, or whose schedule changed.
        let unseeded: Vec<(String, Duration)> = {
            let mut slots = schedule.lock();
            slots.retain(|name, slot| {
                slot.running
                    || bindings
                        .iter()
                        .any(|b| &b.name == name && b.every_secs.is_some())
            });
            bindings
                .iter()
                .filter_map(|b| Some((b.name.clone(), Duration::from_secs(b.every_secs?))))
                .filter(|(name, every)| slots.get(name).is_none_or(|s| s.every != Some(*every)))
                .collect()
        };
        if !unseeded.is_empty() {
            // Due one interval after the last run (this service's or any
            // other's), or now: a restart does not run every binding at once.
            let replica = replica.clone();
            let seeds = tokio::task::spawn_blocking(move || {
                unseeded
                    .into_iter()
                    .map(|(name, every)| {
                        let last = replica.mirror_runs(&name, 1).ok();
                        let started = last.and_then(|runs| runs.first().map(|r| r.started_at));
                        (name, every, started)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (name, every, started) in seeds {
                schedule.seed(&name, every, started);
            }
        }
        let now = Instant::now();
        for b in bindings {
            let Some(every) = b.every_secs.map(Duration::from_secs) else {
                continue;
            };
            let due = schedule
                .lock()
                .get(&b.name)
                .is_some_and(|s| !s.running && s.next_due.is_some_and(|d| d <= now));
            if !due {
                continue;
            }
            let Some(claim) = schedule.guard(&b.name, Some(every)) else {
                continue;
            };
            let (state, kinds) = (state.clone(), kinds.clone());
            // Runs write the store synchronously: on a blocking thread, so
            // the API and the peers keep answering.
            tokio::task::spawn_blocking(move || {
                let outcome = tokio::runtime::Handle::current().block_on(run_once(
                    &state.replica,
                    &kinds,
                    &b.name,
                    &MirrorOptions::default(),
                    &state.metrics,
                ));
                // Running elsewhere is no failure: try again on schedule.
                let ok = match &outcome {
                    Ok((run, _)) => run.outcome != MirrorOutcome::Failed,
                    Err(failed) => matches!(failed.1, MirrorError::Busy { .. }),
                };
                claim.finish(ok);
            });
        }
        tokio::time::sleep(TICK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_wait_longer_each_time_within_jitter_and_a_cap() {
        let every = Duration::from_secs(60);
        for failures in 1..=4u32 {
            let expected = every * (1 << failures);
            for _ in 0..20 {
                let wait = backoff(every, failures);
                assert!(wait >= expected.mul_f64(0.9) && wait <= expected.mul_f64(1.1));
            }
        }
        // Capped at an hour, or at the schedule when that is longer.
        assert!(backoff(every, 30) <= MAX_BACKOFF.mul_f64(1.1));
        let daily = Duration::from_secs(86_400);
        assert!(backoff(daily, 3) <= daily.mul_f64(1.1));
        assert!(backoff(daily, 3) >= daily.mul_f64(0.9));
    }

    #[test]
    fn a_binding_is_never_claimed_twice_until_its_run_ends() {
        let schedule = Schedule::default();
        assert!(schedule.claim("pg"));
        assert!(!schedule.claim("pg"));
        assert!(schedule.running("pg"));
        schedule.finished("pg", Some(Duration::from_secs(1)), false);
        assert!(!schedule.running("pg"));
        assert!(schedule.next_run("pg").is_some());
        assert!(schedule.claim("pg"));
        schedule.release("pg");
        assert!(schedule.claim("pg"));
    }
}

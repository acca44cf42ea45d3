//! Scheduled mirrors: a service runs each binding that has a schedule
//! (`every_secs`) when it is due, never two runs of one binding at once,
//! and after failures waits longer each time (doubling, capped at an hour
//! or the schedule, with ±10% jitter so many bindings do not retry in step).
//! Every run is recorded by the replica ([`Replica::mirror_runs`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use chittysync::{AdapterKinds, MirrorOptions, MirrorOutcome, MirrorRun, Replica};

use crate::metrics::Metrics;

/// When to look for due bindings.
const TICK: Duration = Duration::from_millis(250);

/// The longest wait after failures (unless the schedule is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What the scheduler knows of one binding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    pub(crate) running: bool,
    pub(crate) failures: u32,
    pub(crate) next_due: Option<Instant>,
    pub(crate) next_due_ms: Option<i64>,
}

/// The schedule's state, shared with the API (next runs).
#[derive(Default)]
pub(crate) struct Schedule {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Schedule {
    /// When binding `name` runs next (ms since the epoch), if scheduled.
    pub(crate) fn next_run(&self, name: &str) -> Option<i64> {
        self.lock().get(name).and_then(|s| s.next_due_ms)
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
                slot.next_due_ms = Some(now_ms().saturating_add(wait.as_millis() as i64));
            }
            None => {
                slot.next_due = None;
                slot.next_due_ms = None;
            }
        }
    }

    /// Releases a claim made for a run that did not start.
    pub(crate) fn release(&self, name: &str) {
        if let Some(slot) = self.lock().get_mut(name) {
            slot.running = false;
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
) -> (MirrorRun, Option<chittysync::MirrorReport>) {
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
    let (run, report) = match result {
        Ok(report) => (
            MirrorRun::from_report(started_at, clock.elapsed(), &report),
            Some(report),
        ),
        Err(e) => (
            MirrorRun::failure(name, started_at, clock.elapsed(), &e.to_string()),
            None,
        ),
    };
    metrics.mirror_run(&run);
    match run.outcome {
        MirrorOutcome::Failed => tracing::warn!(
            binding = name,
            error = run.error.as_deref().unwrap_or(""),
            "mirror run failed"
        ),
        _ => tracing::info!(
            binding = name,
            outcome = run.outcome.name(),
            applied = run.applied,
            failed = run.failed,
            invalid = run.invalid,
            "mirror run"
        ),
    }
    (run, report)
}

/// Runs scheduled bindings until the task is dropped.
pub(crate) async fn run(state: crate::Shared, kinds: Arc<AdapterKinds>) {
    let replica = state.replica.clone();
    let schedule = &state.schedule;
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
        let now = Instant::now();
        {
            let mut slots = schedule.lock();
            slots.retain(|name, slot| {
                slot.running
                    || bindings
                        .iter()
                        .any(|b| &b.name == name && b.every_secs.is_some())
            });
            for b in &bindings {
                if b.every_secs.is_some() {
                    let slot = slots.entry(b.name.clone()).or_default();
                    if slot.next_due.is_none() {
                        // Newly scheduled: due now.
                        slot.next_due = Some(now);
                        slot.next_due_ms = Some(now_ms());
                    }
                }
            }
        }
        for b in bindings {
            let Some(every) = b.every_secs.map(Duration::from_secs) else {
                continue;
            };
            let due = schedule
                .lock()
                .get(&b.name)
                .is_some_and(|s| !s.running && s.next_due.is_some_and(|d| d <= now));
            if !due || !schedule.claim(&b.name) {
                continue;
            }
            let (state, kinds) = (state.clone(), kinds.clone());
            tokio::spawn(async move {
                let (run, _) = run_once(
                    &state.replica,
                    &kinds,
                    &b.name,
                    &MirrorOptions::default(),
                    &state.metrics,
                )
                .await;
                let ok = run.outcome != MirrorOutcome::Failed;
                state.schedule.finished(&b.name, Some(every), ok);
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

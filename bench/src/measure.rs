//! Interleaved timing of ours against a baseline, and medians.

use std::time::{Duration, Instant};

use crate::Result;

/// Times `f` alone.
pub(crate) fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Paired samples (seconds): `ours[i]` and `base[i]` ran back to back.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pairs {
    pub(crate) ours: Vec<f64>,
    pub(crate) base: Vec<f64>,
}

impl Pairs {
    /// Median time of ours (s).
    pub(crate) fn ours_median(&self) -> f64 {
        median(&self.ours)
    }

    /// Median time of the baseline (s).
    pub(crate) fn base_median(&self) -> f64 {
        median(&self.base)
    }

    /// Median of per-pair `ours / baseline` times: above 1 is slower.
    pub(crate) fn time_ratio(&self) -> f64 {
        median(&self.zip(|o, b| o / b))
    }

    /// Median of per-pair `ours / baseline` throughputs (the inverse time
    /// ratio of equal work): below 1 is slower.
    pub(crate) fn throughput_ratio(&self) -> f64 {
        median(&self.zip(|o, b| b / o))
    }

    fn zip(&self, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.base)
            .map(|(&o, &b)| f(o, b))
            .collect()
    }

    /// Number of measured pairs.
    pub(crate) fn len(&self) -> usize {
        self.ours.len()
    }
}

/// Runs `warmup` unmeasured then `iterations` measured pairs, alternating
/// which side goes first so neither always runs on a cache the other warmed.
///
/// Each closure gets the iteration number (warm-ups included), does its own
/// untimed set-up and returns the time of the measured part only.
pub(crate) fn interleave(
    warmup: usize,
    iterations: usize,
    mut ours: impl FnMut(usize) -> Result<Duration>,
    mut base: impl FnMut(usize) -> Result<Duration>,
) -> Result<Pairs> {
    let mut pairs = Pairs::default();
    for i in 0..warmup + iterations {
        let (o, b) = if i % 2 == 0 {
            let o = ours(i)?;
            (o, base(i)?)
        } else {
            let b = base(i)?;
            (ours(i)?, b)
        };
        if i >= warmup {
            pairs.ours.push(o.as_secs_f64());
            pairs.base.push(b.as_secs_f64());
        }
    }
    Ok(pairs)
}

/// Median of `xs` (mean of the middle two for an even count); 0 if empty.
pub(crate) fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Times `f` `runs` times and returns the median (s).
pub(crate) fn median_of(runs: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<f64> {
    let samples = (0..runs)
        .map(|_| f().map(|d| d.as_secs_f64()))
        .collect::<Result<Vec<_>>>()?;
    Ok(median(&samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn ratios_are_medians_of_pairs_not_ratios_of_medians() {
        let pairs = Pairs {
            ours: vec![2.0, 3.0, 10.0],
            base: vec![1.0, 3.0, 1.0],
        };
        assert_eq!(pairs.time_ratio(), 2.0);
        assert_eq!(pairs.throughput_ratio(), 0.5);
    }
}

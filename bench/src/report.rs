//! Results: one [`Figure`] per measured case, printed as a table and as JSON.

use std::time::Duration;

use serde_json::json;

use crate::Options;
use crate::measure::Pairs;

/// What a figure's absolute values measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Seconds per operation; lower is better.
    Seconds,
    /// Records per second; higher is better.
    RecordsPerSecond,
    /// Signed changes per second; higher is better.
    ChangesPerSecond,
    /// Bytes on disk.
    Bytes,
    /// Requests per second to a remote API; higher is better.
    RequestsPerSecond,
    /// Rows carried per write request; higher is better.
    RowsPerRequest,
    /// A count of API requests; lower is better.
    Requests,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::RecordsPerSecond => "records/s",
            Unit::ChangesPerSecond => "changes/s",
            Unit::Bytes => "bytes",
            Unit::RequestsPerSecond => "requests/s",
            Unit::RowsPerRequest => "rows/request",
            Unit::Requests => "requests",
        }
    }

    fn show(self, v: f64) -> String {
        if !v.is_finite() {
            return "not measured".to_owned();
        }
        match self {
            Unit::Seconds => show_duration(v),
            Unit::RecordsPerSecond => show_rate(v, "rec/s"),
            Unit::ChangesPerSecond => show_rate(v, "changes/s"),
            Unit::Bytes => show_bytes(v),
            Unit::RequestsPerSecond => format!("{v:.2} req/s"),
            Unit::RowsPerRequest => format!("{v:.0} rows/req"),
            Unit::Requests => format!("{v:.0} req"),
        }
    }
}

/// A target for a ratio.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Goal {
    /// The ratio should be at most this (time ratios).
    AtMost(f64),
    /// The ratio should be at least this (throughput ratios).
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    fn show(self) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {g}"),
            Goal::AtLeast(g) => format!("≥ {g}"),
        }
    }
}

/// One row of results.
#[derive(Clone, Debug)]
pub(crate) struct Figure {
    /// Which benchmark.
    pub(crate) bench: &'static str,
    /// Which case of it (size, variant).
    pub(crate) case: String,
    /// Unit of `ours` and `baseline`.
    pub(crate) unit: Unit,
    /// Our median.
    pub(crate) ours: f64,
    /// The baseline's median, when there is a baseline.
    pub(crate) baseline: Option<f64>,
    /// Median of per-pair ratios ours / baseline (of times, or of
    /// throughputs for [`Unit::RecordsPerSecond`] and [`Unit::ChangesPerSecond`]).
    pub(crate) ratio: Option<f64>,
    /// The target for `ratio`.
    pub(crate) goal: Option<Goal>,
    /// Measured samples behind the medians.
    pub(crate) samples: usize,
    /// What is included, and caveats.
    pub(crate) note: String,
    /// Extra figures for the JSON report.
    pub(crate) extra: serde_json::Value,
}

impl Figure {
    /// A time comparison: ratio of times, medians in seconds.
    pub(crate) fn time(
        bench: &'static str,
        case: impl Into<String>,
        pairs: &Pairs,
        goal: Option<Goal>,
        note: impl Into<String>,
    ) -> Figure {
        Figure {
            bench,
            case: case.into(),
            unit: Unit::Seconds,
            ours: pairs.ours_median(),
            baseline: Some(pairs.base_median()),
            ratio: Some(pairs.time_ratio()),
            goal,
            samples: pairs.len(),
            note: note.into(),
            extra: json!({}),
        }
    }

    /// A throughput comparison of `records` per sample: ratio of
    /// throughputs, medians in records per second.
    pub(crate) fn throughput(
        bench: &'static str,
        case: impl Into<String>,
        records: usize,
        pairs: &Pairs,
        goal: Option<Goal>,
        note: impl Into<String>,
    ) -> Figure {
        let n = records as f64;
        Figure {
            bench,
            case: case.into(),
            unit: Unit::RecordsPerSecond,
            ours: n / pairs.ours_median(),
            baseline: Some(n / pairs.base_median()),
            ratio: Some(pairs.throughput_ratio()),
            goal,
            samples: pairs.len(),
            note: note.into(),
            extra: json!({
                "ours_median_s": pairs.ours_median(),
                "baseline_median_s": pairs.base_median(),
            }),
        }
    }

    /// An absolute figure without a baseline.
    pub(crate) fn absolute(
        bench: &'static str,
        case: impl Into<String>,
        unit: Unit,
        value: f64,
        samples: usize,
        note: impl Into<String>,
    ) -> Figure {
        Figure {
            bench,
            case: case.into(),
            unit,
            ours: value,
            baseline: None,
            ratio: None,
            goal: None,
            samples,
            note: note.into(),
            extra: json!({}),
        }
    }

    /// A case that could not be measured here, and why.
    pub(crate) fn missing(bench: &'static str, case: impl Into<String>, why: &str) -> Figure {
        Figure::absolute(bench, case, Unit::Seconds, f64::NAN, 0, why)
    }

    /// The same figure counted in signed changes rather than records.
    pub(crate) fn in_changes(mut self) -> Figure {
        if self.unit == Unit::RecordsPerSecond {
            self.unit = Unit::ChangesPerSecond;
        }
        self
    }

    /// Adds extra JSON fields.
    pub(crate) fn with_extra(mut self, extra: serde_json::Value) -> Figure {
        if let (Some(into), serde_json::Value::Object(from)) = (self.extra.as_object_mut(), extra) {
            into.extend(from);
        }
        self
    }
}

/// The human-readable table.
pub(crate) fn table(figures: &[Figure]) -> String {
    let header = [
        "benchmark",
        "case",
        "ours",
        "baseline",
        "ratio",
        "goal",
        "n",
        "note",
    ];
    let rows: Vec<[String; 8]> = figures
        .iter()
        .map(|f| {
            let goal = match (f.goal, f.ratio) {
                (Some(g), Some(r)) => {
                    format!("{} {}", g.show(), if g.met(r) { "met" } else { "MISSED" })
                }
                _ => String::new(),
            };
            [
                f.bench.to_owned(),
                f.case.clone(),
                f.unit.show(f.ours),
                f.baseline.map(|b| f.unit.show(b)).unwrap_or_default(),
                f.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                goal,
                f.samples.to_string(),
                f.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}", w = w))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(&header.map(str::to_owned))];
    out.push(line(&widths.map(|w| "-".repeat(w))));
    out.extend(rows.iter().map(|r| line(r)));
    out.push(String::new());
    out.push(
        "ratio = median over pairs of ours/baseline (time ratios: lower is better; \
         records/s and changes/s ratios: higher is better)"
            .to_owned(),
    );
    out.join("\n")
}

/// The machine-readable report.
pub(crate) fn json(figures: &[Figure], options: &Options, elapsed: Duration) -> serde_json::Value {
    let results: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            let ratio_of = match (f.ratio, f.unit) {
                (None, _) => None,
                (
                    Some(_),
                    Unit::RecordsPerSecond
                    | Unit::ChangesPerSecond
                    | Unit::RequestsPerSecond
                    | Unit::RowsPerRequest,
                ) => Some("throughput"),
                (Some(_), _) => Some("time"),
            };
            json!({
                "bench": f.bench,
                "case": f.case,
                "unit": f.unit.name(),
                "ours_median": f.ours,
                "baseline_median": f.baseline,
                "ratio": f.ratio,
                "ratio_of": ratio_of,
                "goal": f.goal.map(|g| match g {
                    Goal::AtMost(v) => json!({ "at_most": v }),
                    Goal::AtLeast(v) => json!({ "at_least": v }),
                }),
                "goal_met": f.goal.zip(f.ratio).map(|(g, r)| g.met(r)),
                "samples": f.samples,
                "note": f.note,
                "extra": f.extra,
            })
        })
        .collect();
    json!({
        "tool": "chittysync-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": if options.quick { "quick" } else { "full" },
        "records": options.records,
        "elapsed_s": elapsed.as_secs_f64(),
        "results": results,
    })
}

fn show_duration(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn show_rate(r: f64, per_second: &str) -> String {
    if r >= 1e6 {
        format!("{:.2} M {per_second}", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k {per_second}", r / 1e3)
    } else {
        format!("{r:.0} {per_second}")
    }
}

fn show_bytes(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

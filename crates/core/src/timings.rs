//! How long things take, as Prometheus-style histograms: tool calls (by tool, in
//! `haivemind-mcp`), HTTP requests (by route, in `haivemind-server`), embedding (by kind,
//! [`EMBEDDING`], recorded by the engine) and sync rounds (by peer, [`SYNC_ROUNDS`],
//! recorded by the sync service). Keys come from fixed sets (tool names, route patterns,
//! configured peers), never from caller input, so the tables stay small. `/metrics`
//! renders them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket, `+Inf`, is implied).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One histogram: counts per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket of [`BUCKETS`], then one for larger ones.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of every observation, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Histograms by name.
#[derive(Debug, Default)]
pub struct Timings {
    histograms: Mutex<BTreeMap<String, Histogram>>,
}

/// How long the model takes to embed: `write` (a memory's text, before it is stored),
/// `query` (a search's text, cache misses only) and `batch` (embedding what lacks a
/// vector). One per process, like the model.
pub static EMBEDDING: Timings = Timings::new();

/// How long a sync round with each peer takes (pull and push), by peer machine id.
pub static SYNC_ROUNDS: Timings = Timings::new();

impl Timings {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            histograms: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records that `name` took `elapsed`.
    pub fn observe(&self, name: &str, elapsed: Duration) {
        if let Ok(mut histograms) = self.histograms.lock() {
            match histograms.get_mut(name) {
                Some(histogram) => histogram.observe(elapsed.as_secs_f64()),
                None => {
                    let mut histogram = Histogram::default();
                    histogram.observe(elapsed.as_secs_f64());
                    histograms.insert(name.to_string(), histogram);
                }
            }
        }
    }

    /// Every histogram, by name.
    pub fn snapshot(&self) -> BTreeMap<String, Histogram> {
        self.histograms
            .lock()
            .map(|histograms| histograms.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_into_the_first_bucket_that_holds_them() {
        let timings = Timings::default();
        timings.observe("a", Duration::from_micros(500));
        timings.observe("a", Duration::from_millis(1));
        timings.observe("a", Duration::from_millis(30));
        timings.observe("a", Duration::from_secs(60));
        let a = &timings.snapshot()["a"];
        assert_eq!(a.count, 4);
        assert_eq!(a.counts[0], 2, "0.5 ms and 1 ms are both at most 1 ms");
        assert_eq!(a.counts[5], 1, "30 ms is in the 50 ms bucket");
        assert_eq!(a.counts[BUCKETS.len()], 1, "a minute is past every bound");
        assert!((a.sum - 60.0315).abs() < 1e-9);
    }
}

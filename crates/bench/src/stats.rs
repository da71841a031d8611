//! Latency summaries.

use deltabox_api::nearest_rank;
use serde::Serialize;

/// p50/p90/p99 (nearest rank) of a set of samples, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
}

pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        p50: nearest_rank(&s, 0.50),
        p90: nearest_rank(&s, 0.90),
        p99: nearest_rank(&s, 0.99),
        mean: s.iter().sum::<f64>() / s.len() as f64,
        max: s[s.len() - 1],
    })
}

/// Samples of one operation and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub summary: Summary,
    pub samples: Vec<f64>,
}

impl Series {
    pub fn new(samples: Vec<f64>) -> Option<Series> {
        Some(Series {
            summary: summarize(&samples)?,
            samples,
        })
    }

    pub fn median(&self) -> f64 {
        self.summary.p50
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(s.mean, 50.5);
        let one = summarize(&[3.0]).unwrap();
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert!(summarize(&[]).is_none());
        // Order of the input does not matter.
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().p50, 2.0);
    }
}

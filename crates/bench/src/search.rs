//! Tree-search overhead: the replayed search's state-management time over the LLM-only
//! floor. DeltaBox's operations are the ones it really ran; a baseline pays, for each of
//! the same operations, a latency drawn from its own measured samples (plus a REPL replay
//! per rollback when it keeps no process state).

use crate::baselines::Baseline;
use crate::deltabox::Figures;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    pub expansions: usize,
    pub rollbacks: usize,
    /// Total time spent checkpointing and rolling back, ms.
    pub state_ms: f64,
    /// Sum of the modelled LLM latencies of the expansions, ms.
    pub llm_floor_ms: f64,
    /// (LLM floor + state management) / LLM floor.
    pub overhead: f64,
}

/// The LLM-only floor: one call per expansion, uniform in `llm_s` seconds (seeded, so
/// every system is compared against the same floor).
pub fn llm_floor_ms(expansions: usize, llm_s: (f64, f64)) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    (0..expansions)
        .map(|_| rng.gen_range(llm_s.0..=llm_s.1) * 1000.0)
        .sum()
}

fn row(system: &str, expansions: usize, rollbacks: usize, state_ms: f64, floor: f64) -> Row {
    Row {
        system: system.into(),
        expansions,
        rollbacks,
        state_ms,
        llm_floor_ms: floor,
        overhead: (floor + state_ms) / floor,
    }
}

/// Draws `n` samples (with replacement, seeded) and sums them.
fn draw(samples: &[f64], n: usize, rng: &mut impl Rng) -> f64 {
    (0..n)
        .map(|_| samples[rng.gen_range(0..samples.len())])
        .sum()
}

pub fn overheads(d: &Figures, baselines: &[Baseline], llm_s: (f64, f64)) -> Vec<Row> {
    let s = &d.search;
    let floor = llm_floor_ms(s.expansions, llm_s);
    let real: f64 = s.checkpoint_ms.iter().chain(&s.rollback_ms).sum();
    let mut rows = vec![row("DeltaBox", s.expansions, s.rollbacks, real, floor)];
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for b in baselines {
        let (Some(ck), Some(rs)) = (&b.checkpoint, &b.restore) else {
            continue;
        };
        let mut state =
            draw(&ck.samples, s.expansions, &mut rng) + draw(&rs.samples, s.rollbacks, &mut rng);
        if b.needs_replay {
            state += draw(&d.replay.samples, s.rollbacks, &mut rng);
        }
        rows.push(row(&b.name, s.expansions, s.rollbacks, state, floor));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_seeded_and_in_range() {
        let a = llm_floor_ms(100, (1.0, 20.0));
        assert_eq!(a, llm_floor_ms(100, (1.0, 20.0)));
        assert!((100_000.0..=2_000_000.0).contains(&a), "{a}");
        assert_eq!(llm_floor_ms(10, (2.0, 2.0)), 20_000.0);
    }

    #[test]
    fn overhead_is_total_over_floor() {
        let r = row("x", 10, 4, 500.0, 10_000.0);
        assert!((r.overhead - 1.05).abs() < 1e-9);
    }
}

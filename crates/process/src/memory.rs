//! What a process costs in memory, from /proc/PID/smaps_rollup.

use crate::inspect::field;
use serde::{Deserialize, Serialize};

/// Bytes. `private` is what the process alone holds (freed when it exits): for a
/// template, the pages the live copy has since rewritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCost {
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
}

impl std::ops::AddAssign for MemoryCost {
    fn add_assign(&mut self, o: MemoryCost) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.private += o.private;
    }
}

pub fn parse_rollup(text: &str) -> MemoryCost {
    let kb = |k: &str| {
        field(text, k)
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    MemoryCost {
        rss: kb("Rss"),
        pss: kb("Pss"),
        private: kb("Private_Clean") + kb("Private_Dirty"),
    }
}

pub fn cost(pid: i32) -> Option<MemoryCost> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .map(|t| parse_rollup(&t))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rollup_is_read_in_bytes() {
        let t = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1024 kB\nPss_Anon: 10 kB\nPrivate_Clean: 4 kB\nPrivate_Dirty: 8 kB\n";
        let c = super::parse_rollup(t);
        assert_eq!((c.rss, c.pss, c.private), (2 << 20, 1 << 20, 12 << 10));
    }
}

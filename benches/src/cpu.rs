//! CPU time of processes from /proc, to report what each reading costs each node (what an
//! HPA on CPU pays for).

use serde_json::{json, Value};

/// User + system CPU seconds `pid` has used so far (0 when it is gone).
pub fn seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, utime 14 and stime 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space on every architecture.
    (ticks(14) + ticks(15)) / 100.0
}

/// CPU seconds of several processes, taken together at the start of a measured phase.
pub struct Meter {
    pids: Vec<(String, u32)>,
    start: Vec<f64>,
}

impl Meter {
    /// Starts counting for `pids` (name, pid).
    pub fn start(pids: Vec<(String, u32)>) -> Meter {
        let start = pids.iter().map(|(_, p)| seconds(*p)).collect();
        Meter { pids, start }
    }

    /// CPU µs per item for each process since the start: `{"node0": 41.2, …}` and the sum.
    pub fn per_item(&self, items: u64) -> Value {
        let mut per = serde_json::Map::new();
        let mut total = 0.0;
        for ((name, pid), s0) in self.pids.iter().zip(&self.start) {
            let us = (seconds(*pid) - s0) * 1e6 / items.max(1) as f64;
            total += us;
            per.insert(name.clone(), json!(us));
        }
        json!({"per_process_us": per, "total_us": total})
    }
}

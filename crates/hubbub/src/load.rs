//! The node's load figure: the share of the machine's CPU this process used
//! over the last interval, from `/proc/self/stat` (Linux). Other platforms
//! report 0.

use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times. 100 on every Linux
/// architecture Hubbub targets (USER_HZ is fixed by the kernel ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// Samples process CPU time and turns deltas into a load figure in [0, 1].
pub(crate) struct LoadMeter {
    last: Option<(Instant, u64)>,
    cores: f64,
}

impl LoadMeter {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        LoadMeter { last: None, cores }
    }

    /// CPU share used since the previous call (0 on the first call).
    pub(crate) fn sample(&mut self) -> f64 {
        let Some(ticks) = cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let load = match self.last {
            Some((then, prev)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs <= 0.0 {
                    0.0
                } else {
                    ((ticks.saturating_sub(prev)) as f64 / TICKS_PER_SEC / secs / self.cores).clamp(0.0, 1.0)
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        load
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces:
    // count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the full line are 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_and_stays_in_range() {
        assert!(cpu_ticks().is_some());
        let mut m = LoadMeter::new();
        assert_eq!(m.sample(), 0.0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let load = m.sample();
        assert!((0.0..=1.0).contains(&load));
    }
}

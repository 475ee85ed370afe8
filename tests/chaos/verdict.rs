//! Checking a run's history and printing its summary line.

use std::fmt::Write as _;

use hubbub_testkit::chaos::{History, Verdict, check, explain};

/// Names a directory to write each run's whole history to
/// (`<run>.history`, one record per line, ms since the first record).
const DUMP_VAR: &str = "HUBBUB_CHAOS_DUMP";

/// Checks `history`, prints the summary line (and the first violations),
/// writes the history out when `HUBBUB_CHAOS_DUMP` is set, and returns the
/// verdict.
pub(crate) fn report(run: &str, history: &History, detection_ms: Option<u64>) -> Verdict {
    let verdict = check(history);
    println!("{}", explain(run, &verdict, detection_ms));
    if let Some(dir) = std::env::var_os(DUMP_VAR) {
        let path = std::path::Path::new(&dir).join(format!("{run}.history"));
        let t0 = history.records.first().map(|r| r.at);
        let mut text = String::new();
        let ms = |at: std::time::Instant| t0.map_or(0, |t0| at.saturating_duration_since(t0).as_millis());
        for (at, what) in &history.faults {
            let _ = writeln!(text, "{} FAULT {what}", ms(*at));
        }
        for r in &history.records {
            let _ = writeln!(text, "{} {:?}", ms(r.at), r.event);
        }
        match std::fs::write(&path, text) {
            Ok(()) => println!("{run}: history written to {}", path.display()),
            Err(e) => println!("{run}: cannot write {}: {e}", path.display()),
        }
    }
    verdict
}

/// Panics unless the verdict has no violation and no truncation.
pub(crate) fn assert_clean(run: &str, verdict: &Verdict, detection_ms: Option<u64>) {
    assert!(
        verdict.is_clean() && verdict.truncated == 0,
        "{run}: the history has violations:\n{}",
        explain(run, verdict, detection_ms)
    );
}

//! Watching several nodes at once, and summarising timings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hubbub_testkit::{Node, NodeApi, wait_until};

/// Debug API clients for the named nodes of `nodes`, labelled by name.
pub(crate) fn apis<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<(String, NodeApi)> {
    nodes.into_iter().map(|n| (n.name().to_owned(), n.api().clone())).collect()
}

/// Polls every observer in its own thread (every `poll`, until `deadline`)
/// until `done` holds for it, and returns per observer the time from `since`
/// to the first poll where it held, or why it never did.
pub(crate) fn time_until_each(
    observers: &[(String, NodeApi)],
    since: Instant,
    deadline: Instant,
    poll: Duration,
    done: impl Fn(&NodeApi) -> Result<(), String> + Sync,
) -> Vec<(String, Result<Duration, String>)> {
    thread::scope(|scope| {
        let watchers: Vec<_> = observers
            .iter()
            .map(|(name, api)| {
                let done = &done;
                let watcher = scope.spawn(move || wait_until(deadline, poll, || done(api)).map(|()| since.elapsed()));
                (name.clone(), watcher)
            })
            .collect();
        watchers.into_iter().map(|(name, watcher)| (name, watcher.join().expect("watcher thread panicked"))).collect()
    })
}

/// Ok when `api`'s node lists `target` as down or not at all, and has it
/// out of its ring.
pub(crate) fn sees_gone(api: &NodeApi, target: &str) -> Result<(), String> {
    let members = api.members()?;
    if !members.is_gone(target) {
        let states: Vec<_> = members.named(target).map(|m| m.state).collect();
        return Err(format!("{} still lists {target} as {states:?}", members.self_name));
    }
    let ring = api.ring()?;
    if ring.contains(target) {
        return Err(format!("{} lists {target} down but keeps it in its ring", members.self_name));
    }
    Ok(())
}

/// Splits per-observer results into the times, panicking with every
/// failure if any observer never saw the condition.
pub(crate) fn expect_all(what: &str, results: Vec<(String, Result<Duration, String>)>) -> Vec<(String, Duration)> {
    let failures: Vec<String> =
        results.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}"))).collect();
    assert!(failures.is_empty(), "{what}: not seen by every observer:\n{}", failures.join("\n"));
    results.into_iter().map(|(name, r)| (name, r.expect("checked above"))).collect()
}

/// `first=X.XXs median=Y.YYs last=Z.ZZs` for non-empty `times`.
pub(crate) fn summary(times: &[(String, Duration)]) -> String {
    let mut sorted: Vec<Duration> = times.iter().map(|(_, t)| *t).collect();
    sorted.sort();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    };
    let per_node: Vec<String> = times.iter().map(|(name, t)| format!("{name}={:.2}s", t.as_secs_f64())).collect();
    format!(
        "first={:.2}s median={:.2}s last={:.2}s ({})",
        sorted[0].as_secs_f64(),
        median.as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64(),
        per_node.join(" ")
    )
}

/// The largest of `times`.
pub(crate) fn last(times: &[(String, Duration)]) -> Duration {
    times.iter().map(|(_, t)| *t).max().unwrap_or_default()
}

/// Raises its flag when dropped: watcher threads in a `thread::scope` that
/// loop until the flag is up then end even when the test panics (the scope
/// would otherwise wait for them forever).
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

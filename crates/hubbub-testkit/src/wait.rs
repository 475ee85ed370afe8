//! Waiting for a condition: deadlines and polling, never a fixed sleep.

use std::thread;
use std::time::{Duration, Instant};

/// The instant `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// Calls `check` every `poll` until it returns `Ok`, and returns that value;
/// once `deadline` has passed, returns the last `Err` reason (with how long
/// and how often it tried). `check` runs at least once, even after the
/// deadline.
pub fn wait_until<T>(
    deadline: Instant,
    poll: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let reason = match check() {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "gave up after {:.2}s and {attempts} attempts; last reason: {reason}",
                (now - start).as_secs_f64()
            ));
        }
        thread::sleep(poll.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut calls = 0;
        let value = wait_until(deadline_in(Duration::from_secs(5)), Duration::ZERO, || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(format!("call {calls}")) }
        });
        assert_eq!(value, Ok(3));
    }

    #[test]
    fn reports_the_last_reason_after_the_deadline() {
        let mut calls = 0;
        let err = wait_until(Instant::now(), Duration::from_millis(1), || -> Result<(), _> {
            calls += 1;
            Err(format!("call {calls}"))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.ends_with("last reason: call 1"), "{err}");
    }
}

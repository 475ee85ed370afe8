//! The one ordered scheduler for foca's timers.
//!
//! foca's timers must be delivered in order (foca issues #2 and #26): a task
//! per timer with its own sleep would race. This task keeps a min-heap of
//! deadlines and hands each timer back to the membership task when it is due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foca::Timer;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::identity::NodeIdentity;

/// A timer due at an instant. `seq` keeps equal deadlines in submission order.
type Entry = Reverse<(Instant, u64, Timer<NodeIdentity>)>;

/// Runs until `shutdown` fires or either channel closes.
///
/// `submit` is unbounded on purpose: only the membership task writes to it,
/// and foca keeps a bounded number of timers outstanding (one probe cycle, one
/// suspicion timer per member, a few periodic ones), so it cannot grow without
/// limit; a bounded channel could deadlock the two tasks waiting on each other.
pub(crate) async fn run(
    mut submit: mpsc::UnboundedReceiver<(Instant, Timer<NodeIdentity>)>,
    due: mpsc::Sender<Timer<NodeIdentity>>,
    shutdown: CancellationToken,
) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Reverse((_, _, timer)) = heap.pop().expect("peeked");
            if due.send(timer).await.is_err() {
                return;
            }
        }
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = async { sleep_until(next.expect("guarded")).await }, if next.is_some() => {}
            msg = submit.recv() => match msg {
                Some((at, timer)) => {
                    seq += 1;
                    heap.push(Reverse((at, seq, timer)));
                }
                None => return,
            },
        }
    }
}

//! Process faults: SIGKILL, SIGSTOP, SIGTERM.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hubbub_testkit::{Cluster, MemberState, NodeApi, wait_until};

use crate::observe::{self, StopOnDrop, apis, expect_all, sees_gone, summary, time_until_each};

/// The requirement: every survivor notices a SIGKILLed node this fast.
const DETECTION_BOUND: Duration = Duration::from_secs(5);
/// The requirement: a restarted node is alive everywhere this fast.
const REJOIN_BOUND: Duration = Duration::from_secs(5);
/// Reaching the initial converged state is not what these tests measure.
const SETUP_CONVERGENCE: Duration = Duration::from_secs(15);
/// Survivors are polled this often while we wait for them to notice.
const DETECTION_POLL: Duration = Duration::from_millis(25);

#[test]
fn kill9_detection() {
    let mut cluster = Cluster::start(5);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("5 nodes converge");
    let victim = "n3";
    let survivors = apis(cluster.nodes().iter().filter(|n| n.name() != victim));

    let killed_at = Instant::now();
    cluster.node_mut(victim).kill9();
    // Watch a while past the bound, to report the real times if it is missed.
    let times = time_until_each(&survivors, killed_at, killed_at + 3 * DETECTION_BOUND, DETECTION_POLL, |api| {
        sees_gone(api, victim)
    });
    let times = expect_all(&format!("SIGKILLed {victim} down or absent, and out of the ring"), times);
    println!("kill9_detection: detection: {}", summary(&times));
    assert!(
        observe::last(&times) <= DETECTION_BOUND,
        "detection took longer than {DETECTION_BOUND:?}: {}",
        summary(&times)
    );

    // The same name comes back as a new process, seeded to the survivors.
    let node = cluster.restart(victim);
    let (restarted_at, restarted_api) = (node.started_at(), node.api().clone());
    let new_bump = wait_until(restarted_at + REJOIN_BOUND, DETECTION_POLL, || {
        let members = restarted_api.members()?;
        members.members.iter().find(|m| m.is_self).map(|m| m.bump).ok_or("no is_self entry".to_owned())
    })
    .expect("the restarted node lists itself");
    let everyone = apis(cluster.nodes());
    let times = time_until_each(&everyone, restarted_at, restarted_at + 3 * REJOIN_BOUND, DETECTION_POLL, |api| {
        let members = api.members()?;
        let alive = members.named(victim).any(|m| m.bump == new_bump && m.state == MemberState::Alive);
        if !alive {
            let seen: Vec<_> = members.named(victim).map(|m| (m.bump, m.state)).collect();
            return Err(format!("{} lists {victim} as {seen:?}, not bump {new_bump} alive", members.self_name));
        }
        if !api.ring()?.contains(victim) {
            return Err(format!("{} has {victim} alive but not in its ring", members.self_name));
        }
        Ok(())
    });
    let times = expect_all(&format!("restarted {victim} alive and in the ring"), times);
    println!("kill9_detection: rejoin after restart: {}", summary(&times));
    assert!(observe::last(&times) <= REJOIN_BOUND, "rejoin took longer than {REJOIN_BOUND:?}: {}", summary(&times));
    cluster.wait_converged(SETUP_CONVERGENCE).expect("all 5 converge again after the restart");
}

#[test]
fn sigstop_no_false_death() {
    const STOPPED_FOR: Duration = Duration::from_millis(1500);
    const WATCH_AFTER_CONT: Duration = Duration::from_secs(3);
    const POLL: Duration = Duration::from_millis(50);

    let mut cluster = Cluster::start(5);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("5 nodes converge");
    let victim = "n4";
    let observers = apis(cluster.nodes().iter().filter(|n| n.name() != victim));

    let stop = AtomicBool::new(false);
    let violations = Mutex::new(Vec::new());
    let stopped_at = Instant::now();
    let stats: Vec<(String, PollStats)> = thread::scope(|scope| {
        let watchers: Vec<_> = observers
            .iter()
            .map(|(name, api)| {
                let (stop, violations) = (&stop, &violations);
                let watcher = scope.spawn(move || {
                    let mut stats = PollStats::default();
                    while !stop.load(Ordering::Relaxed) {
                        match still_there(api, victim) {
                            Ok(state) => stats.record(state),
                            Err(Verdict::Dead(why)) => {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("{:.2}s: {why}", stopped_at.elapsed().as_secs_f64()));
                            }
                            Err(Verdict::NoAnswer(why)) => stats.errors.push(why),
                        }
                        thread::sleep(POLL);
                    }
                    stats
                });
                (name.clone(), watcher)
            })
            .collect();
        let stop_watchers = StopOnDrop(&stop);

        cluster.node(victim).sigstop();
        // The fault itself: the node stays frozen this long.
        thread::sleep(STOPPED_FOR);
        cluster.node(victim).sigcont();
        let resumed_at = Instant::now();
        // The observation window after the fault.
        thread::sleep(WATCH_AFTER_CONT);
        drop(stop_watchers);
        println!(
            "sigstop_no_false_death: stopped {:.2}s, watched {:.2}s after SIGCONT",
            (resumed_at - stopped_at).as_secs_f64(),
            resumed_at.elapsed().as_secs_f64()
        );
        watchers.into_iter().map(|(name, w)| (name, w.join().expect("watcher panicked"))).collect()
    });

    for (name, stats) in &stats {
        println!(
            "sigstop_no_false_death: {name} saw {victim}: {} polls alive, {} suspect, {} unanswered",
            stats.alive,
            stats.suspect,
            stats.errors.len()
        );
    }
    let violations = violations.into_inner().unwrap();
    assert!(violations.is_empty(), "{victim} was declared dead while only paused:\n{}", violations.join("\n"));
    for (name, stats) in &stats {
        // 4.5 s at one poll per 50 ms; a loaded machine gets far fewer, but
        // not this few unless the observer itself stopped answering.
        assert!(
            stats.alive + stats.suspect >= 10,
            "{name} answered only {} polls: {:?}",
            stats.alive + stats.suspect,
            stats.errors
        );
    }
    cluster.wait_converged(SETUP_CONVERGENCE).expect("the paused node is alive everywhere again");
}

#[derive(Default)]
struct PollStats {
    alive: usize,
    suspect: usize,
    errors: Vec<String>,
}

impl PollStats {
    fn record(&mut self, state: MemberState) {
        match state {
            MemberState::Suspect => self.suspect += 1,
            _ => self.alive += 1,
        }
    }
}

enum Verdict {
    /// The observer declared the target down or dropped it.
    Dead(String),
    /// The observer did not answer; says nothing about the target.
    NoAnswer(String),
}

/// The target's state as `api`'s node sees it, if it is alive or suspect and
/// in the ring.
fn still_there(api: &NodeApi, target: &str) -> Result<MemberState, Verdict> {
    let members = api.members().map_err(Verdict::NoAnswer)?;
    let state = members.named(target).map(|m| m.state).find(|s| *s != MemberState::Down).ok_or_else(|| {
        let states: Vec<_> = members.named(target).map(|m| m.state).collect();
        Verdict::Dead(format!("{} lists {target} as {states:?}", members.self_name))
    })?;
    let ring = api.ring().map_err(Verdict::NoAnswer)?;
    if !ring.contains(target) {
        return Err(Verdict::Dead(format!("{} dropped {target} from its ring", members.self_name)));
    }
    Ok(state)
}

#[test]
fn graceful_leave() {
    const EXIT_BOUND: Duration = Duration::from_secs(5);
    const NOTICE_BOUND: Duration = Duration::from_secs(3);

    let mut cluster = Cluster::start(3);
    cluster.wait_converged(SETUP_CONVERGENCE).expect("3 nodes converge");
    let leaver = "n3";
    let observers = apis(cluster.nodes().iter().filter(|n| n.name() != leaver));

    let termed_at = Instant::now();
    let (status, exited_after, times) = thread::scope(|scope| {
        let watch = scope.spawn(|| {
            time_until_each(&observers, termed_at, termed_at + 5 * NOTICE_BOUND, DETECTION_POLL, |api| {
                sees_gone(api, leaver)
            })
        });
        let node = cluster.node_mut(leaver);
        node.sigterm();
        let status = node.wait_exit(EXIT_BOUND);
        let exited_after = termed_at.elapsed();
        (status, exited_after, watch.join().expect("watcher panicked"))
    });
    println!("graceful_leave: exited {status} {:.2}s after SIGTERM", exited_after.as_secs_f64());
    assert_eq!(status.code(), Some(0), "SIGTERM must end in a clean exit, got {status}");

    let times = expect_all(&format!("{leaver} down or absent after leaving"), times);
    println!("graceful_leave: others noticed (from SIGTERM): {}", summary(&times));
    assert!(
        observe::last(&times) <= NOTICE_BOUND,
        "a graceful leave was noticed later than {NOTICE_BOUND:?} after SIGTERM: {}",
        summary(&times)
    );
}

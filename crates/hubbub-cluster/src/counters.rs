//! Counters the cluster layer keeps for operators (`GET /debug/node`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic event counters, shared by the cluster tasks.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A point-in-time copy of [`Counters`].
        #[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
        pub struct CountersSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl Counters {
            /// Reads every counter (each one atomically; not a consistent cut).
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Datagrams received on the SWIM port.
    gossip_packets_received,
    /// Datagrams sent from the SWIM port.
    gossip_packets_sent,
    /// SWIM datagrams dropped because they did not open (garbage, unsealed, other key or cluster).
    gossip_rejected,
    /// SWIM datagrams that opened but that foca (or our envelope) could not use.
    gossip_malformed,
    /// Datagrams received on the node-state (chitchat) port.
    state_packets_received,
    /// Node-state datagrams dropped because they did not open.
    state_rejected,
    /// Node-state datagrams that opened but did not decode.
    state_malformed,
    /// Announcements sent to seeds.
    announces_sent,
    /// Times this node renewed its identity after being declared down.
    identity_renewals,
    /// Node links established (both directions).
    links_established,
    /// Node links refused: bad frame, wrong version, failed authentication.
    links_refused,
    /// Node link breaks reported to membership as hints.
    link_break_hints,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

//! Hubbub's chat backplane: the ring as a SignalR-style backplane without
//! Redis.
//!
//! - A room's *owner* (the ring's choice for `room:<name>`) assigns the
//!   room's sequence numbers (per room, gapless from 1) and fans each
//!   message out once per subscribing *node*, encoded once.
//! - A node subscribes to a room with its owner when its first local
//!   connection joins and unsubscribes when its last one leaves; it delivers
//!   to its local subscribers in seq order.
//! - A user's owner (`user:<name>`) knows which nodes the user is connected
//!   to, for direct messages; broadcasts go to every node.
//! - When the ring changes, rooms move whole from the old owner to the new
//!   one (handoff or claim), with frames in flight forwarded, not dropped.
//!
//! [`Core`] is the state machine (no I/O: time and frames come in as
//! arguments); [`Backplane`] drives it from the cluster view and node links.

mod core;
mod driver;
mod history;
mod local;
mod owner;
mod quorum;
pub mod rebalance;
mod replication;
#[cfg(test)]
mod sim_tests;

pub use crate::core::{ChatCounters, ConnId, ConnSink, Core, CoreLimits, HeldRoom, LocalRoomInfo, PeerSink, Run, Text};
pub use crate::driver::{Backplane, now_ms};
pub use crate::history::HistoryLimits;
pub use crate::quorum::{Fencing, FencingConfig};

//! Which node owns a room or a user: rendezvous hashing over stable node ids.
//!
//! Every Hubbub node computes ownership locally from the member set that
//! membership reports; nodes that see the same members compute the same owners
//! without talking to each other. This crate is that computation and nothing
//! else: no I/O, no async, no clock.
//!
//! Main types:
//! - [`NodeId`]: a node's stable cluster-wide id, [`NodeId::from_name`] of its
//!   unique name. It survives restarts and identity renewals, so they do not move
//!   rooms.
//! - [`Ring`]: an immutable member set with an [`epoch`](Ring::epoch) (a local
//!   change counter) and a [`fingerprint`](Ring::fingerprint) (equal on every
//!   node with the same members). It answers [`owner`](Ring::owner) and
//!   [`preference_list`](Ring::preference_list) (owner, then replicas).
//! - [`RingDiff`]: the members added and removed between two rings, for the
//!   rebalancer.
//! - [`room_key`] and [`user_key`]: the byte keys that rooms and users are placed
//!   by.
//!
//! # Algorithm
//!
//! Rendezvous (highest-random-weight) hashing: every member gets a [`score`]
//! for the key and members rank by descending score. Removing a member only
//! moves the keys it owned, and adding one only moves keys to it, which is the
//! least movement any scheme can achieve. The replicas of a key are simply the
//! next members in its order, so they shift minimally too.
//!
//! # Pinned hashes
//!
//! Nodes of different builds must agree during a rolling upgrade, so every hash
//! here is fully specified by this crate: xxh3 with the fixed seeds
//! [`NODE_ID_SEED`], [`KEY_SEED`] and [`FINGERPRINT_SEED`], and a fixed 64-bit
//! mixer. Golden tests pin the outputs; changing any of them is a wire-protocol
//! change.
//!
//! ```
//! use hubbub_ring::{NodeId, Ring, room_key};
//!
//! let ring = Ring::new(["n1", "n2", "n3"].map(NodeId::from_name));
//! let key = room_key("general");
//! let owner = ring.owner(&key).unwrap();
//! let owners_and_replica = ring.preference_list(&key, 2);
//! assert_eq!(owners_and_replica[0], owner);
//!
//! // A node leaves: only the rooms it owned change owner.
//! let smaller = ring.with_members(ring.members().iter().copied().filter(|&m| m != owners_and_replica[1]));
//! assert_eq!(smaller.owner(&key), Some(owner));
//! assert_eq!(smaller.epoch(), 1);
//! ```

mod hash;
mod key;
mod node_id;
mod ring;

pub use hash::{FINGERPRINT_SEED, KEY_SEED, NODE_ID_SEED, score};
pub use key::{room_key, user_key};
pub use node_id::{NodeId, ParseNodeIdError};
pub use ring::{Ring, RingDiff};

//! Balance and movement: the statistical promises of rendezvous hashing,
//! measured on fixed inputs (deterministic) and, with few cases, random ids.

use hubbub_ring::{NodeId, Ring};
use proptest::prelude::*;

use crate::{named_nodes, owners, room_keys};

/// Largest share of `keys` owned by one member, relative to the mean share.
fn max_over_mean(ring: &Ring, keys: &[Vec<u8>]) -> f64 {
    let mut counts = vec![0_usize; ring.len()];
    for owner in owners(ring, keys) {
        let at = ring.members().binary_search(&owner).expect("a member");
        counts[at] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    max as f64 * ring.len() as f64 / keys.len() as f64
}

const BALANCE_KEYS: usize = 100_000;
const BALANCE_LIMIT: f64 = 1.10;

#[test]
fn balance_with_named_nodes() {
    let ring = Ring::new(named_nodes(10));
    let ratio = max_over_mean(&ring, &room_keys(BALANCE_KEYS));
    assert!(ratio <= BALANCE_LIMIT, "max/mean {ratio:.4}");
}

/// Ids that differ only in their low bits: the mixer, not the ids, must
/// spread the keys.
#[test]
fn balance_with_sequential_ids() {
    let ring = Ring::new((0..10).map(NodeId));
    let ratio = max_over_mean(&ring, &room_keys(BALANCE_KEYS));
    assert!(ratio <= BALANCE_LIMIT, "max/mean {ratio:.4}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn balance_with_random_ids(ids in prop::collection::btree_set(any::<u64>(), 10)) {
        let ring = Ring::new(ids.into_iter().map(NodeId));
        let ratio = max_over_mean(&ring, &room_keys(BALANCE_KEYS));
        prop_assert!(ratio <= BALANCE_LIMIT, "max/mean {:.4}", ratio);
    }
}

const MOVEMENT_KEYS: usize = 50_000;

/// Keys that change owner between `before` and `after`, with both owners.
fn moves(before: &Ring, after: &Ring, keys: &[Vec<u8>]) -> Vec<(NodeId, NodeId)> {
    owners(before, keys).into_iter().zip(owners(after, keys)).filter(|(old, new)| old != new).collect()
}

/// The most a single change may move: 10 % over the mean share of one node.
fn movement_limit(keys: usize, members: usize) -> usize {
    keys * 11 / (members * 10)
}

#[test]
fn join_moves_few_keys_and_only_to_the_new_node() {
    let keys = room_keys(MOVEMENT_KEYS);
    for n in 3..=20 {
        let nodes = named_nodes(n + 1);
        let before = Ring::new(nodes[..n].iter().copied());
        let after = before.with_members(nodes.iter().copied());
        let moved = moves(&before, &after, &keys);
        assert!(moved.iter().all(|&(_, new)| new == nodes[n]), "n={n}");
        assert!(moved.len() <= movement_limit(keys.len(), n), "n={n}: {} keys moved", moved.len());
    }
}

/// Removes the member that owns the most keys, the worst case for the bound.
#[test]
fn leave_moves_only_the_leaving_nodes_keys() {
    let keys = room_keys(MOVEMENT_KEYS);
    for n in 3..=20 {
        let before = Ring::new(named_nodes(n));
        let before_owners = owners(&before, &keys);
        let busiest = *before
            .members()
            .iter()
            .max_by_key(|&&m| before_owners.iter().filter(|&&o| o == m).count())
            .expect("not empty");
        let after = before.with_members(before.members().iter().copied().filter(|&m| m != busiest));
        let moved = moves(&before, &after, &keys);
        let owned = before_owners.iter().filter(|&&o| o == busiest).count();
        assert_eq!(moved.len(), owned, "n={n}: exactly the leaver's keys move");
        assert!(moved.iter().all(|&(old, _)| old == busiest), "n={n}");
        assert!(moved.len() <= movement_limit(keys.len(), n), "n={n}: {} keys moved", moved.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rendezvous hashing's exact promise, for any ids: adding a member
    /// inserts it somewhere in each key's order and leaves the others' relative
    /// order alone; removing one is the reverse. Owners and replicas therefore
    /// move only where they must.
    #[test]
    fn membership_change_keeps_the_others_relative_order(
        ids in prop::collection::btree_set(any::<u64>(), 2..24),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..32),
    ) {
        let mut ids: Vec<NodeId> = ids.into_iter().map(NodeId).collect();
        let joiner = ids.pop().expect("at least two ids");
        let small = Ring::new(ids.iter().copied());
        let large = small.with_members(ids.iter().copied().chain([joiner]));
        for key in &keys {
            let without_joiner: Vec<NodeId> =
                large.preference_order(key).into_iter().filter(|&m| m != joiner).collect();
            prop_assert_eq!(without_joiner, small.preference_order(key));
        }
    }
}

//! Properties every node relies on: the same member set gives the same
//! answers however it was assembled, lists agree with orders, and epochs and
//! diffs track changes.

use std::collections::BTreeSet;

use hubbub_ring::{NodeId, Ring, RingDiff, score};
use proptest::prelude::*;

/// Ids from a small range, so sets overlap and collide often.
fn small_ids(max_len: usize) -> impl Strategy<Value = Vec<NodeId>> {
    prop::collection::vec((0_u64..48).prop_map(NodeId), 0..max_len)
}

fn keys() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 1..16)
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn input_order_and_duplicates_do_not_matter(
        (ids, shuffled) in small_ids(40).prop_flat_map(|ids| {
            // The same ids with some repeated, in another order.
            let doubled: Vec<NodeId> = ids.iter().chain(ids.iter().step_by(3)).copied().collect();
            (Just(ids), Just(doubled).prop_shuffle())
        }),
        keys in keys(),
        n in 0_usize..6,
    ) {
        let a = Ring::new(ids.iter().copied());
        let b = Ring::new(shuffled);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.len(), set(&ids).len());
        for key in &keys {
            prop_assert_eq!(a.owner(key), b.owner(key));
            prop_assert_eq!(a.preference_list(key, n), b.preference_list(key, n));
            prop_assert_eq!(a.preference_order(key), b.preference_order(key));
        }
    }

    #[test]
    fn fingerprints_are_equal_iff_sets_are(a in small_ids(6), b in small_ids(6)) {
        let (ring_a, ring_b) = (Ring::new(a.iter().copied()), Ring::new(b.iter().copied()));
        prop_assert_eq!(ring_a.fingerprint() == ring_b.fingerprint(), set(&a) == set(&b));
    }

    /// Checks the fast paths of `owner` and `preference_list` (both sides of
    /// the insertion/selection switch) against sorting every member by the
    /// documented rule: descending `(score, id)`.
    #[test]
    fn lists_follow_the_documented_order(ids in small_ids(40), keys in keys()) {
        let ring = Ring::new(ids);
        for key in &keys {
            let mut expected: Vec<NodeId> = ring.members().to_vec();
            expected.sort_by_key(|&m| std::cmp::Reverse((score(key, m), m)));
            prop_assert_eq!(ring.owner(key), expected.first().copied());
            prop_assert_eq!(&ring.preference_order(key), &expected);
            for n in 0..=ring.len() + 1 {
                prop_assert_eq!(ring.preference_list(key, n), &expected[..n.min(ring.len())]);
            }
        }
    }

    #[test]
    fn epoch_counts_changes_and_diff_names_them(steps in prop::collection::vec(small_ids(8), 1..8)) {
        let mut ring = Ring::new([]);
        let mut changes = 0;
        for ids in steps {
            let next = ring.with_members(ids.iter().copied());
            let (old, new) = (set(ring.members()), set(&ids));
            let diff = ring.diff(&next);
            prop_assert_eq!(&diff.added, &new.difference(&old).copied().collect::<Vec<_>>());
            prop_assert_eq!(&diff.removed, &old.difference(&new).copied().collect::<Vec<_>>());
            prop_assert_eq!(diff.is_empty(), old == new);
            if old == new {
                prop_assert_eq!(&next, &ring);
            } else {
                changes += 1;
            }
            prop_assert_eq!(next.epoch(), changes);
            ring = next;
        }
    }
}

#[test]
fn empty_ring_owns_nothing() {
    let ring = Ring::new([]);
    assert!(ring.is_empty());
    assert_eq!(ring.owner(b"room:general"), None);
    assert_eq!(ring.preference_list(b"room:general", 3), []);
    assert_eq!(ring.preference_order(b"room:general"), []);
}

#[test]
fn with_members_bumps_the_epoch_only_on_change() {
    let [a, b, c] = ["a", "b", "c"].map(NodeId::from_name);
    let diff = |added: &[NodeId], removed: &[NodeId]| RingDiff { added: added.to_vec(), removed: removed.to_vec() };
    let ring = Ring::new([a, b]);
    assert_eq!(ring.epoch(), 0);

    let same = ring.with_members([b, a, b]);
    assert_eq!(same, ring);
    assert_eq!(same.epoch(), 0);
    assert_eq!(ring.diff(&same), RingDiff::default());

    let grown = same.with_members([a, b, c]);
    assert_eq!(grown.epoch(), 1);
    assert!(grown.contains(c) && !ring.contains(c));
    assert_eq!(ring.diff(&grown), diff(&[c], &[]));

    let swapped = grown.with_members([c, b]);
    assert_eq!(swapped.epoch(), 2);
    assert_eq!(grown.diff(&swapped), diff(&[], &[a]));
    assert_eq!(ring.diff(&swapped), diff(&[c], &[a]));
}

//! Keep-majority fencing (as Akka's split-brain resolver) and the delayed
//! removal of downed nodes from the backplane's ring.
//!
//! The *stable membership* is the active member set once it has not changed
//! for `stable_after_ms`. A node has quorum while it sees more than half of
//! the stable membership, or exactly half including its lowest node id. The
//! stable membership follows the current one only while this node has
//! quorum (or when the current set contains it: growth), so a node cut off
//! in a minority never promotes its small view to a new baseline.
//!
//! A member foca declares down stays in the backplane's ring for
//! `removal_delay_ms`, so one flapping verdict does not move every room of
//! the node twice; a member that was draining leaves the ring at once (it
//! handed its rooms off).

use std::collections::{BTreeMap, BTreeSet};

use hubbub_ring::NodeId;

/// Tuning of [`Fencing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FencingConfig {
    /// How long the active set must be unchanged to become the stable membership.
    pub stable_after_ms: u64,
    /// How long a downed member stays in the backplane's ring.
    pub removal_delay_ms: u64,
}

impl Default for FencingConfig {
    fn default() -> Self {
        FencingConfig { stable_after_ms: 3_000, removal_delay_ms: 1_000 }
    }
}

/// The quorum and ring-membership rules. No I/O: fed the active set and the
/// time.
#[derive(Debug)]
pub struct Fencing {
    config: FencingConfig,
    stable: BTreeSet<NodeId>,
    current: BTreeSet<NodeId>,
    changed_at: u64,
    /// Members that went down, with when, while not draining.
    down_at: BTreeMap<NodeId, u64>,
}

impl Fencing {
    pub fn new(me: NodeId, config: FencingConfig, now: u64) -> Fencing {
        Fencing {
            config,
            stable: BTreeSet::from([me]),
            current: BTreeSet::from([me]),
            changed_at: now,
            down_at: BTreeMap::new(),
        }
    }

    /// The active members now (this node included) and which of them are
    /// draining.
    pub fn observe(&mut self, active: BTreeSet<NodeId>, draining: &BTreeSet<NodeId>, now: u64) {
        if active != self.current {
            for gone in self.current.difference(&active) {
                if !draining.contains(gone) {
                    self.down_at.insert(*gone, now);
                }
            }
            for back in &active {
                self.down_at.remove(back);
            }
            self.current = active;
            self.changed_at = now;
        }
        self.down_at.retain(|_, at| now.saturating_sub(*at) < self.config.removal_delay_ms);
        if now.saturating_sub(self.changed_at) >= self.config.stable_after_ms
            && self.current != self.stable
            && (self.has_quorum() || self.current.is_superset(&self.stable))
        {
            self.stable = self.current.clone();
        }
    }

    /// Whether this node sees a majority of the stable membership.
    pub fn has_quorum(&self) -> bool {
        let seen = self.current.intersection(&self.stable).count();
        let total = self.stable.len();
        2 * seen > total || (2 * seen == total && self.stable.first().is_some_and(|n| self.current.contains(n)))
    }

    /// The members the backplane's ring should hold: the active ones and
    /// those down for less than the removal delay.
    pub fn ring_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.current.iter().chain(self.down_at.keys()).copied()
    }

    /// The stable membership.
    pub fn stable(&self) -> &BTreeSet<NodeId> {
        &self.stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: &[u64]) -> BTreeSet<NodeId> {
        n.iter().map(|i| NodeId(*i)).collect()
    }

    fn settled(f: &mut Fencing, active: &[u64], now: &mut u64) {
        f.observe(ids(active), &BTreeSet::new(), *now);
        *now += 3_000;
        f.observe(ids(active), &BTreeSet::new(), *now);
    }

    #[test]
    fn a_minority_never_regains_quorum_by_waiting() {
        let mut now = 0;
        let mut f = Fencing::new(NodeId(5), FencingConfig::default(), now);
        settled(&mut f, &[1, 2, 3, 4, 5], &mut now);
        assert!(f.has_quorum());
        settled(&mut f, &[5], &mut now);
        assert!(!f.has_quorum());
        settled(&mut f, &[5], &mut now);
        assert!(!f.has_quorum(), "the cut-off node kept its old baseline");
        assert_eq!(f.stable().len(), 5);
        settled(&mut f, &[1, 2, 3, 4, 5], &mut now);
        assert!(f.has_quorum());
    }

    #[test]
    fn the_majority_shrinks_its_baseline_and_survives_a_second_loss() {
        let mut now = 0;
        let mut f = Fencing::new(NodeId(1), FencingConfig::default(), now);
        settled(&mut f, &[1, 2, 3, 4, 5], &mut now);
        settled(&mut f, &[1, 2, 3, 4], &mut now);
        assert!(f.has_quorum());
        assert_eq!(f.stable().len(), 4);
        settled(&mut f, &[1, 2, 3], &mut now);
        assert!(f.has_quorum());
    }

    #[test]
    fn an_even_split_keeps_the_side_with_the_lowest_id() {
        let mut now = 0;
        let mut low = Fencing::new(NodeId(1), FencingConfig::default(), now);
        let mut high = Fencing::new(NodeId(3), FencingConfig::default(), now);
        settled(&mut low, &[1, 2, 3, 4], &mut now);
        settled(&mut high, &[1, 2, 3, 4], &mut now);
        low.observe(ids(&[1, 2]), &BTreeSet::new(), now);
        high.observe(ids(&[3, 4]), &BTreeSet::new(), now);
        assert!(low.has_quorum());
        assert!(!high.has_quorum());
    }

    #[test]
    fn downed_members_leave_the_ring_after_the_delay_but_drained_ones_at_once() {
        let mut now = 0;
        let mut f = Fencing::new(NodeId(1), FencingConfig::default(), now);
        settled(&mut f, &[1, 2, 3], &mut now);
        f.observe(ids(&[1, 3]), &ids(&[]), now);
        assert_eq!(f.ring_members().collect::<BTreeSet<_>>(), ids(&[1, 2, 3]));
        now += 1_000;
        f.observe(ids(&[1, 3]), &ids(&[]), now);
        assert_eq!(f.ring_members().collect::<BTreeSet<_>>(), ids(&[1, 3]));
        f.observe(ids(&[1]), &ids(&[3]), now);
        assert_eq!(f.ring_members().collect::<BTreeSet<_>>(), ids(&[1]));
    }
}

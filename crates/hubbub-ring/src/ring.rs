use crate::{NodeId, hash};

/// Rendezvous (highest-random-weight) hashing ring over a set of [`NodeId`]s.
///
/// For a key, members rank by descending `(score(key, member), member)`: the
/// first is the owner, the next ones are its replicas. A ring is immutable;
/// [`Ring::with_members`] makes the next one. Build it once per membership
/// change and share it: lookups only read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Sorted ascending, no duplicates.
    members: Vec<NodeId>,
    epoch: u64,
    fingerprint: u64,
}

/// Up to this many entries, [`Ring::preference_list`] keeps a sorted top-n
/// on the stack while scanning; above, it ranks every member and selects.
const FEW: usize = 8;

impl Ring {
    /// A ring at epoch 0 over `members`, in any order, duplicates ignored.
    pub fn new(members: impl IntoIterator<Item = NodeId>) -> Ring {
        Ring::at_epoch(sorted_set(members), 0)
    }

    /// The ring for a new member set: same epoch (a clone) if the set is equal,
    /// else epoch + 1.
    pub fn with_members(&self, members: impl IntoIterator<Item = NodeId>) -> Ring {
        let members = sorted_set(members);
        if members == self.members {
            return self.clone();
        }
        Ring::at_epoch(members, self.epoch + 1)
    }

    fn at_epoch(members: Vec<NodeId>, epoch: u64) -> Ring {
        let fingerprint = hash::fingerprint(&members);
        Ring { members, epoch, fingerprint }
    }

    /// How many member-set changes this ring has been through since
    /// [`Ring::new`]. It is local to the process that built the rings: compare
    /// rings across nodes by [`Ring::fingerprint`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Pinned hash of the sorted member set: equal on every node that has the
    /// same members.
    ///
    /// `xxh3_64_with_seed` over the concatenated little-endian `u64`s of
    /// [`Ring::members`], with [`FINGERPRINT_SEED`](crate::FINGERPRINT_SEED).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The members, sorted ascending.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when the ring has no members and so owns nothing.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.binary_search(&id).is_ok()
    }

    /// The member that owns `key`, `None` if the ring is empty. Does not
    /// allocate.
    pub fn owner(&self, key: &[u8]) -> Option<NodeId> {
        let key_hash = hash::key_hash(key);
        // `max_by_key` returns the last of equal maxima and members ascend, so
        // a tie goes to the larger id as in `preference_list`; comparing only
        // the score is faster than comparing `(score, id)` pairs.
        self.members.iter().copied().max_by_key(|&node| hash::score_hashed(key_hash, node))
    }

    /// The first `n` nodes of the key's preference order (owner first, then
    /// replicas), `min(n, len)` long.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let n = n.min(self.members.len());
        let key_hash = hash::key_hash(key);
        match n {
            0 => Vec::new(),
            1..=FEW => self.top_few(key_hash, n),
            _ => self.top_many(key_hash, n),
        }
    }

    /// The best `n` (at most [`FEW`]) by insertion into a small sorted array,
    /// comparing scores only: most members lose to the current last place in
    /// one comparison, and nothing but the result is allocated.
    fn top_few(&self, key_hash: u64, n: usize) -> Vec<NodeId> {
        // Descending by score; the first `len` entries are filled.
        let mut top = [(0_u64, NodeId(0)); FEW];
        let mut len = 0;
        for &node in &self.members {
            let score = hash::score_hashed(key_hash, node);
            if len < n {
                len += 1;
            } else if score < top[n - 1].0 {
                continue;
            }
            // Members ascend, so `<=` puts the larger id first on a tie, as
            // the `(score, id)` order says.
            let mut at = len - 1;
            while at > 0 && top[at - 1].0 <= score {
                top[at] = top[at - 1];
                at -= 1;
            }
            top[at] = (score, node);
        }
        top[..len].iter().map(|&(_, node)| node).collect()
    }

    /// The best `n` by ranking every member, selecting the first `n` and
    /// sorting only those.
    fn top_many(&self, key_hash: u64, n: usize) -> Vec<NodeId> {
        let mut ranked: Vec<(u64, NodeId)> =
            self.members.iter().map(|&node| (hash::score_hashed(key_hash, node), node)).collect();
        let descending = |a: &(u64, NodeId), b: &(u64, NodeId)| b.cmp(a);
        if n < ranked.len() {
            ranked.select_nth_unstable_by(n - 1, descending);
            ranked.truncate(n);
        }
        ranked.sort_unstable_by(descending);
        ranked.into_iter().map(|(_, node)| node).collect()
    }

    /// Every member in preference order for `key`.
    pub fn preference_order(&self, key: &[u8]) -> Vec<NodeId> {
        self.preference_list(key, self.members.len())
    }

    /// The members `newer` has that `self` lacks, and the reverse; both sorted
    /// ascending.
    pub fn diff(&self, newer: &Ring) -> RingDiff {
        let only_in = |ring: &Ring, other: &Ring| -> Vec<NodeId> {
            let absent = |id: &&NodeId| !other.contains(**id);
            ring.members.iter().filter(absent).copied().collect()
        };
        RingDiff { added: only_in(newer, self), removed: only_in(self, newer) }
    }
}

fn sorted_set(members: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut members: Vec<NodeId> = members.into_iter().collect();
    members.sort_unstable();
    members.dedup();
    members
}

/// How the member set changed between two rings, from [`Ring::diff`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingDiff {
    /// Members of the newer ring only, sorted ascending.
    pub added: Vec<NodeId>,
    /// Members of the older ring only, sorted ascending.
    pub removed: Vec<NodeId>,
}

impl RingDiff {
    /// True when the two rings have the same members.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

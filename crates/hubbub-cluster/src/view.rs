//! The cluster view: membership from foca, node state from chitchat, and the
//! ring computed from the members foca says are active.
//!
//! One task builds it and publishes it on a `watch`; everything else (debug
//! API, node links, later chat routing) reads the latest `Arc<ClusterView>`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hubbub_ring::{NodeId, Ring};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::identity::NodeIdentity;
use crate::membership::{MemberState, Membership};
use crate::node_state::{NodeStateGossip, NodeStatus};

/// How often node state is read from chitchat into the view.
const STATE_POLL: Duration = Duration::from_millis(250);
/// How often we nudge chitchat towards active members whose state it lacks.
const STATE_NUDGE: Duration = Duration::from_secs(2);

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    pub identity: NodeIdentity,
    pub state: MemberState,
    pub incarnation: u16,
    pub is_self: bool,
    /// The member's gossiped state; `None` until chitchat has delivered it.
    pub status: Option<NodeStatus>,
}

/// This node's view of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView {
    /// This node.
    pub me: NodeIdentity,
    /// Every member including this node, sorted by name.
    pub members: Vec<MemberView>,
    /// The ring over this node and every active member.
    pub ring: Ring,
    /// At least one other member is active.
    pub joined: bool,
    /// Ready to serve: joined, or alone by configuration.
    pub ready: bool,
}

impl ClusterView {
    /// The member with this node id, if known.
    pub fn member(&self, id: NodeId) -> Option<&MemberView> {
        self.members.iter().find(|m| m.identity.id == id)
    }

    /// Active members (alive or suspect), this node included.
    pub fn active(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.state != MemberState::Down)
    }

    pub(crate) fn initial(me: NodeIdentity) -> ClusterView {
        ClusterView {
            ring: Ring::new([me.id]),
            members: vec![MemberView {
                identity: me.clone(),
                state: MemberState::Alive,
                incarnation: 0,
                is_self: true,
                status: None,
            }],
            me,
            joined: false,
            ready: false,
        }
    }
}

fn build(prev: &ClusterView, membership: &Membership, states: &HashMap<String, (u64, NodeStatus)>) -> ClusterView {
    // Only the state of the member's current process (chitchat's generation
    // is the identity's `generation`): a restarted node must not inherit its
    // previous process's state (`draining` above all) until its own arrives.
    let status_of = |identity: &NodeIdentity| {
        states.get(&identity.name).filter(|(generation, _)| *generation == identity.generation).map(|(_, s)| s.clone())
    };
    let mut members: Vec<MemberView> = membership
        .members
        .iter()
        .map(|m| MemberView {
            identity: m.identity.clone(),
            state: m.state,
            incarnation: m.incarnation,
            is_self: false,
            status: status_of(&m.identity),
        })
        .collect();
    members.push(MemberView {
        identity: membership.me.clone(),
        state: MemberState::Alive,
        incarnation: 0,
        is_self: true,
        status: status_of(&membership.me),
    });
    members.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
    let ring_members = members.iter().filter(|m| m.state != MemberState::Down).map(|m| m.identity.id);
    ClusterView {
        me: membership.me.clone(),
        ring: prev.ring.with_members(ring_members),
        members,
        joined: membership.joined,
        ready: membership.joined || membership.alone_by_design,
    }
}

/// Rebuilds the view whenever membership changes and polls node state.
pub(crate) async fn run(
    mut membership: watch::Receiver<Membership>,
    state: Arc<NodeStateGossip>,
    view: watch::Sender<Arc<ClusterView>>,
    shutdown: CancellationToken,
) {
    let mut poll = tokio::time::interval(STATE_POLL);
    let mut nudge = tokio::time::interval(STATE_NUDGE);
    let mut greeted: HashSet<(NodeId, u64)> = HashSet::new();
    let mut states = HashMap::new();
    loop {
        let mut nudge_all = false;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = membership.changed() => if changed.is_err() { return },
            _ = poll.tick() => states = state.snapshot().await,
            _ = nudge.tick() => nudge_all = true,
        }
        let current = membership.borrow_and_update().clone();
        // Introduce chitchat to members foca found, once per incarnation, and
        // again every STATE_NUDGE while their state is still missing.
        for m in current.active() {
            let fresh = greeted.insert((m.identity.id, m.identity.bump));
            let missing = !states.contains_key(&m.identity.name);
            if fresh || (nudge_all && missing) {
                state.gossip_with(m.identity.state);
            }
        }
        // Forget incarnations that are gone, so the set stays bounded.
        greeted.retain(|(id, b)| current.active().any(|m| m.identity.id == *id && m.identity.bump == *b));
        let prev = view.borrow().clone();
        let next = build(&prev, &current, &states);
        if *prev != next {
            view.send_replace(Arc::new(next));
        }
    }
}

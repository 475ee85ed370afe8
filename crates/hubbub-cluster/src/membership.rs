//! SWIM membership: the task that owns foca.
//!
//! foca is sans-IO. This module feeds it opened datagrams and due timers, and
//! carries out what it asks for: sealed sends, timers (through the ordered
//! scheduler in [`crate::timers`]) and notifications. foca alone decides who
//! is alive; the result is published as a [`Membership`] on a `watch`.
//!
//! Datagrams on the SWIM port are sealed ([`crate::seal`]); once opened, the
//! first byte says what they carry:
//!
//! - `0x00`: a foca packet;
//! - `0x01`: "who are you?", sent to a seed address whose identity we do not
//!   know yet (foca can only announce to a full identity);
//! - `0x02`: "this is me", the answer, carrying the postcard identity.
//!
//! Known foca pitfalls handled here: announcements are never retried by foca
//! (issue #41), so while the node is alone it asks its seeds every
//! `seed_announce_ms`, again when foca reports `Idle`, and every 30 s even when
//! joined (merging clusters that formed apart); a node declared down renews its
//! identity (`Identity::renew`) and rejoins, and on `Defunct` we renew by hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Identity, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use hubbub_ring::NodeId;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counters::{Counters, bump};
use crate::identity::NodeIdentity;
use crate::seal::Keyring;

const KIND_FOCA: u8 = 0x00;
const KIND_WHO_ARE_YOU: u8 = 0x01;
const KIND_THIS_IS_ME: u8 = 0x02;
/// Even when joined, ask the seeds this often, so two clusters that formed
/// apart (a partition at start-up) merge.
const SEED_REFRESH_WHEN_JOINED: Duration = Duration::from_secs(30);

/// A member's state as foca sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

impl From<foca::State> for MemberState {
    fn from(s: foca::State) -> Self {
        match s {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

/// One other member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub identity: NodeIdentity,
    pub state: MemberState,
    pub incarnation: u16,
}

/// This node's view of SWIM membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// This node's current identity (its bump changes on renewal).
    pub me: NodeIdentity,
    /// Every other member foca knows, down ones included until forgotten.
    pub members: Vec<MemberInfo>,
    /// At least one other member is active.
    pub joined: bool,
    /// No seed other than this node is configured: being alone is intended.
    pub alone_by_design: bool,
}

impl Membership {
    /// Active (alive or suspect) members other than this node.
    pub fn active(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.iter().filter(|m| m.state != MemberState::Down)
    }
}

pub(crate) enum Input {
    /// An opened datagram and its source.
    Datagram(SocketAddr, Vec<u8>),
    /// Resolved seed addresses.
    Seeds(Vec<SocketAddr>),
    /// A node link to this node broke: a hint, never a verdict.
    LinkHint(NodeId),
    /// Leave the cluster gracefully, then answer.
    Leave(oneshot::Sender<()>),
}

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

pub(crate) struct MembershipTask {
    pub(crate) foca: Swim,
    pub(crate) runtime: AccumulatingRuntime<NodeIdentity>,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) timers: mpsc::UnboundedSender<(Instant, Timer<NodeIdentity>)>,
    pub(crate) view: watch::Sender<Membership>,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) configured_seeds: usize,
    pub(crate) seed_announce: Duration,
    pub(crate) left: bool,
}

impl MembershipTask {
    // The task's collaborators, each from a different part of start-up; a
    // builder would only move the same list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: NodeIdentity,
        config: foca::Config,
        socket: Arc<UdpSocket>,
        keyring: Arc<Keyring>,
        counters: Arc<Counters>,
        timers: mpsc::UnboundedSender<(Instant, Timer<NodeIdentity>)>,
        configured_seeds: usize,
        seed_announce: Duration,
    ) -> (Self, watch::Receiver<Membership>) {
        let initial =
            Membership { me: me.clone(), members: Vec::new(), joined: false, alone_by_design: configured_seeds == 0 };
        let (view, rx) = watch::channel(initial);
        let foca = Foca::new(me, config, rand::make_rng(), PostcardCodec);
        let task = MembershipTask {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            keyring,
            counters,
            timers,
            view,
            seeds: Vec::new(),
            configured_seeds,
            seed_announce,
            left: false,
        };
        (task, rx)
    }

    pub(crate) async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut due: mpsc::Receiver<Timer<NodeIdentity>>,
        shutdown: CancellationToken,
    ) {
        let mut seed_tick = tokio::time::interval(self.seed_announce);
        seed_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seed_round_joined = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(timer) = due.recv() => {
                    if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                        debug!(error = %e, "foca timer");
                    }
                }
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input).await,
                    None => break,
                },
                _ = seed_tick.tick() => {
                    let joined = self.foca.num_members() > 0;
                    if !joined || last_seed_round_joined.elapsed() >= SEED_REFRESH_WHEN_JOINED {
                        last_seed_round_joined = Instant::now();
                        self.ask_seeds().await;
                    }
                }
            }
            self.drain().await;
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Datagram(from, bytes) => self.handle_datagram(from, &bytes).await,
            Input::Seeds(seeds) => {
                let me = self.foca.identity().gossip;
                self.seeds = seeds.into_iter().filter(|a| *a != me).collect();
                let alone_by_design = self.configured_seeds == 0 || self.seeds.is_empty();
                self.view.send_if_modified(|v| {
                    let changed = v.alone_by_design != alone_by_design;
                    v.alone_by_design = alone_by_design;
                    changed
                });
            }
            Input::LinkHint(id) => {
                bump(&self.counters.link_break_hints);
                debug!(node = %id, "link broke; gossiping sooner (a hint, not a verdict)");
                if let Err(e) = self.foca.gossip(&mut self.runtime) {
                    debug!(error = %e, "foca gossip");
                }
            }
            Input::Leave(done) => {
                if !self.left {
                    self.left = true;
                    if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
                        warn!(error = %e, "leaving the cluster");
                    }
                    self.drain().await;
                }
                let _ = done.send(());
            }
        }
    }

    async fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Some((&kind, body)) = bytes.split_first() else {
            bump(&self.counters.gossip_malformed);
            return;
        };
        match kind {
            KIND_FOCA if !self.left => {
                if let Err(e) = self.foca.handle_data(body, &mut self.runtime) {
                    // DataFromOurselves happens when a seed list names us.
                    if !matches!(e, foca::Error::DataFromOurselves) {
                        bump(&self.counters.gossip_malformed);
                        debug!(%from, error = %e, "foca refused a packet");
                    }
                }
            }
            KIND_WHO_ARE_YOU if body.is_empty() && !self.left => {
                if let Ok(reply) = postcard::to_extend(self.foca.identity(), vec![KIND_THIS_IS_ME]) {
                    self.send_sealed(from, &reply).await;
                }
            }
            KIND_THIS_IS_ME => match postcard::from_bytes::<NodeIdentity>(body) {
                Ok(id) if NodeIdentity::valid_name(&id.name) && id.id == NodeId::from_name(&id.name) => {
                    self.discovered(id)
                }
                _ => bump(&self.counters.gossip_malformed),
            },
            _ if self.left => {}
            _ => bump(&self.counters.gossip_malformed),
        }
    }

    /// A seed told us who it is: announce to it unless it is already a member.
    fn discovered(&mut self, id: NodeIdentity) {
        if id.id == self.foca.identity().id {
            return;
        }
        let known = self.foca.iter_members().any(|m| m.id() == &id);
        if !known {
            debug!(seed = ?id, "announcing to seed");
            bump(&self.counters.announces_sent);
            if let Err(e) = self.foca.announce(id, &mut self.runtime) {
                debug!(error = %e, "foca announce");
            }
        }
    }

    async fn ask_seeds(&mut self) {
        if self.left {
            return;
        }
        let seeds = self.seeds.clone();
        for seed in seeds {
            self.send_sealed(seed, &[KIND_WHO_ARE_YOU]).await;
        }
    }

    async fn send_sealed(&self, to: SocketAddr, plaintext: &[u8]) {
        let packet = self.keyring.seal(plaintext);
        match self.socket.send_to(&packet, to).await {
            Ok(_) => bump(&self.counters.gossip_packets_sent),
            Err(e) => debug!(%to, error = %e, "gossip send failed"),
        }
    }

    /// Carries out what foca asked for, then publishes the membership.
    async fn drain(&mut self) {
        self.flush_sends().await;
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            // The scheduler only stops at shutdown; a lost timer then is harmless.
            let _ = self.timers.send((now + delay, timer));
        }
        let mut renew = false;
        let mut ask_seeds = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => info!(member = ?id, "member up"),
                OwnedNotification::MemberDown(id) => info!(member = ?id, "member down"),
                OwnedNotification::Rename(old, new) => info!(?old, ?new, "member renewed its identity"),
                OwnedNotification::Active => info!("joined the cluster"),
                OwnedNotification::Idle => {
                    info!("no active members left; asking the seeds again");
                    ask_seeds = true;
                }
                OwnedNotification::Rejoin(id) => {
                    bump(&self.counters.identity_renewals);
                    warn!(new = ?id, "declared down by the cluster; rejoined with a renewed identity");
                }
                OwnedNotification::Defunct => {
                    if !self.left {
                        renew = true;
                    }
                }
            }
        }
        if renew && let Some(new) = self.foca.identity().renew() {
            bump(&self.counters.identity_renewals);
            warn!(new = ?new, "defunct: renewing identity and rejoining");
            if let Err(e) = self.foca.change_identity(new, &mut self.runtime) {
                warn!(error = %e, "changing identity");
            }
            ask_seeds = true;
        }
        if ask_seeds {
            self.ask_seeds().await;
            // Sends queued by the renewal go out now; their own notifications
            // are picked up on the next turn.
            self.flush_sends().await;
        }
        self.publish();
    }

    /// Seals and sends every packet foca queued.
    async fn flush_sends(&mut self) {
        let mut buf = Vec::with_capacity(1_500);
        while let Some((dst, data)) = self.runtime.to_send() {
            buf.clear();
            buf.push(KIND_FOCA);
            buf.extend_from_slice(&data);
            self.send_sealed(dst.gossip, &buf).await;
        }
    }

    fn publish(&self) {
        let me = self.foca.identity().clone();
        let my_id = me.id;
        let mut members: Vec<MemberInfo> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id != my_id)
            .map(|m| MemberInfo { identity: m.id().clone(), state: m.state().into(), incarnation: m.incarnation() })
            .collect();
        members.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
        let joined = !self.left && self.foca.num_members() > 0;
        self.view.send_if_modified(|v| {
            if v.me == me && v.members == members && v.joined == joined {
                return false;
            }
            v.me = me;
            v.members = members;
            v.joined = joined;
            true
        });
    }
}

/// Reads datagrams from the SWIM socket, opens them and hands them on.
/// Packets that do not open are counted and dropped before any decoding.
pub(crate) async fn receive_loop(
    socket: Arc<UdpSocket>,
    keyring: Arc<Keyring>,
    counters: Arc<Counters>,
    to_membership: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, from) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors (ECONNREFUSED from a dead peer) surface here on
                // Linux; they say nothing about our socket.
                debug!(error = %e, "gossip recv error");
                continue;
            }
        };
        bump(&counters.gossip_packets_received);
        match keyring.open(&buf[..len]) {
            Ok(plaintext) => {
                if to_membership.send(Input::Datagram(from, plaintext)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                bump(&counters.gossip_rejected);
                debug!(%from, len, error = %e, "dropped a gossip packet that did not open");
            }
        }
    }
}

/// Resolves the seed list now and every `every`, sending the result to the
/// membership task. Host names are re-resolved each time, so a Kubernetes
/// headless service that gains pods is followed.
pub(crate) async fn resolve_seeds_loop(
    seeds: Vec<String>,
    every: Duration,
    retry: Duration,
    to_membership: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) {
    loop {
        let mut addrs = Vec::new();
        for seed in &seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(e) => warn!(seed = %seed, error = %e, "could not resolve seed"),
            }
        }
        addrs.sort();
        addrs.dedup();
        // Until at least one seed resolves, retry at the announce pace: a
        // DNS name often appears only after its pod starts.
        let wait = if addrs.is_empty() && !seeds.is_empty() { retry } else { every };
        if to_membership.send(Input::Seeds(addrs)).await.is_err() {
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

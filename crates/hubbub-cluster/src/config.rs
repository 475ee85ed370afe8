//! Settings of the cluster layer and their defaults, with the reasons for them.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::seal::{Keyring, SEAL_OVERHEAD};

/// SWIM (foca) tuning. The defaults detect a crashed node in about 2 s on a
/// LAN while never declaring a node dead that pauses for 1.5 s, at roughly
/// 1 KB/s of gossip per node; see ARCHITECTURE.md, "Membership tuning".
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// How often each node probes one member (ms).
    pub probe_period_ms: u64,
    /// How long a direct probe may take before indirect probes go out (ms).
    pub probe_rtt_ms: u64,
    /// Members asked to probe indirectly when a direct probe fails.
    pub indirect_probes: usize,
    /// How long a suspect has to refute before it is declared down (ms).
    pub suspect_to_down_ms: u64,
    /// Times each membership update is piggybacked before it is dropped.
    pub max_transmissions: u8,
    /// Interval of the extra gossip rounds that spread updates fast (ms).
    pub gossip_interval_ms: u64,
    /// Members each gossip round goes to.
    pub gossip_fanout: usize,
    /// Interval of the announcements to known members that heal partitions (ms).
    pub periodic_announce_ms: u64,
    /// Interval of announcements to members we believe down (ms), so a healed
    /// partition merges quickly instead of after foca's 65 s default.
    pub announce_to_down_ms: u64,
    /// While alone, how often to announce to the seeds (ms).
    pub seed_announce_ms: u64,
    /// How often to re-resolve seed host names (ms).
    pub seed_resolve_ms: u64,
    /// How long a down member is remembered (ms), so its stale packets are
    /// recognised; after that foca forgets it and the list stays bounded.
    pub remove_down_after_ms: u64,
    /// Node-state (chitchat) gossip interval (ms).
    pub state_gossip_interval_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_period_ms: 300,
            probe_rtt_ms: 100,
            indirect_probes: 3,
            suspect_to_down_ms: 1_500,
            max_transmissions: 10,
            gossip_interval_ms: 100,
            gossip_fanout: 3,
            periodic_announce_ms: 10_000,
            announce_to_down_ms: 5_000,
            seed_announce_ms: 1_000,
            seed_resolve_ms: 30_000,
            remove_down_after_ms: 120_000,
            state_gossip_interval_ms: 300,
        }
    }
}

/// Why membership settings were refused: names the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("membership.{setting}: {reason}")]
pub struct MembershipConfigError {
    pub setting: &'static str,
    pub reason: String,
}

/// Largest foca packet: one Ethernet-MTU datagram after IP/UDP headers and our seal.
pub const MAX_FOCA_PACKET: usize = 1_400 - SEAL_OVERHEAD;

impl MembershipConfig {
    /// Checks the values and turns them into a foca configuration.
    pub fn to_foca(&self) -> Result<foca::Config, MembershipConfigError> {
        let err = |setting: &'static str, reason: &str| MembershipConfigError { setting, reason: reason.to_owned() };
        if self.probe_period_ms == 0 {
            return Err(err("probe_period_ms", "must be > 0"));
        }
        if self.probe_rtt_ms == 0 || self.probe_rtt_ms >= self.probe_period_ms {
            return Err(err("probe_rtt_ms", "must be > 0 and below probe_period_ms"));
        }
        if self.suspect_to_down_ms == 0 {
            return Err(err("suspect_to_down_ms", "must be > 0"));
        }
        let nz = |v: usize, s: &'static str| NonZeroUsize::new(v).ok_or_else(|| err(s, "must be > 0"));
        let ms = Duration::from_millis;
        let periodic = |v: u64, n: usize, s: &'static str| {
            if v == 0 {
                return Err(err(s, "must be > 0"));
            }
            Ok(Some(foca::PeriodicParams { frequency: ms(v), num_members: nz(n, s)? }))
        };
        Ok(foca::Config {
            probe_period: ms(self.probe_period_ms),
            probe_rtt: ms(self.probe_rtt_ms),
            num_indirect_probes: nz(self.indirect_probes, "indirect_probes")?,
            max_transmissions: NonZeroU8::new(self.max_transmissions)
                .ok_or_else(|| err("max_transmissions", "must be > 0"))?,
            suspect_to_down_after: ms(self.suspect_to_down_ms),
            remove_down_after: Some(ms(self.remove_down_after_ms.max(1))),
            max_packet_size: NonZeroUsize::new(MAX_FOCA_PACKET).expect("constant is non-zero"),
            notify_down_members: true,
            periodic_announce: periodic(self.periodic_announce_ms, 1, "periodic_announce_ms")?,
            periodic_announce_to_down_members: periodic(self.announce_to_down_ms, 2, "announce_to_down_ms")?,
            periodic_gossip: periodic(self.gossip_interval_ms, self.gossip_fanout, "gossip_interval_ms")?,
        })
    }
}

/// What the cluster layer needs to start.
#[derive(Debug)]
pub struct ClusterConfig {
    /// This node's unique name.
    pub name: String,
    /// Address to bind the SWIM UDP socket to.
    pub gossip_bind: SocketAddr,
    /// Address to bind the node-state UDP socket to.
    pub state_bind: SocketAddr,
    /// IP other nodes use to reach this one.
    pub advertise_ip: std::net::IpAddr,
    /// Advertised HTTP address (node links, debug API).
    pub http_advertise: SocketAddr,
    /// WebSocket URL clients should use for this node.
    pub ws_url: String,
    /// Seeds: `host:port` of other nodes' SWIM sockets.
    pub seeds: Vec<String>,
    /// Keys that seal gossip and authenticate links; carries the cluster name.
    pub keyring: Keyring,
    /// SWIM tuning.
    pub membership: MembershipConfig,
    /// Build version, gossiped in node state.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_valid_foca_config() {
        let c = MembershipConfig::default().to_foca().unwrap();
        assert!(c.max_transmissions.get() >= 10);
        assert_eq!(c.max_packet_size.get() + SEAL_OVERHEAD, 1_400);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let c = MembershipConfig { probe_rtt_ms: 400, ..Default::default() };
        assert_eq!(c.to_foca().unwrap_err().setting, "probe_rtt_ms");
        let c = MembershipConfig { max_transmissions: 0, ..Default::default() };
        assert_eq!(c.to_foca().unwrap_err().setting, "max_transmissions");
    }
}

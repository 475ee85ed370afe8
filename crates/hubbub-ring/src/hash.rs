//! The pinned hash functions. Every output here is part of the cluster protocol:
//! two builds that disagree would place the same room on different nodes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::NodeId;

/// Seed of [`NodeId::from_name`]: the ASCII bytes `hubbub/n` read big-endian.
pub const NODE_ID_SEED: u64 = u64::from_be_bytes(*b"hubbub/n");

/// Seed of the key hash inside [`score`]: the ASCII bytes `hubbub/k` read big-endian.
pub const KEY_SEED: u64 = u64::from_be_bytes(*b"hubbub/k");

/// Seed of [`Ring::fingerprint`](crate::Ring::fingerprint): the ASCII bytes
/// `hubbub/f` read big-endian.
pub const FINGERPRINT_SEED: u64 = u64::from_be_bytes(*b"hubbub/f");

/// The rendezvous score of `node` for `key`; the member with the highest score
/// owns the key.
///
/// Defined as `mix64(xxh3_64_with_seed(key, KEY_SEED) ^ node.0)`, where `mix64`
/// is SplitMix64's finalizer (David Stafford's "Mix13"):
///
/// ```text
/// z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
/// z = (z ^ (z >> 27)) * 0x94d049bb133111eb
/// z =  z ^ (z >> 31)
/// ```
///
/// The key is hashed once per lookup and each member then costs one mix (two
/// multiplications). `mix64` is a bijection, so two distinct nodes never tie
/// for the same key, and for any two nodes exactly half of all key hashes rank
/// one above the other (`x` and `x ^ a ^ b` pair up). The tie-break by the larger
/// [`NodeId`] in [`Ring`](crate::Ring) exists only to make the order total on paper.
pub fn score(key: &[u8], node: NodeId) -> u64 {
    score_hashed(key_hash(key), node)
}

/// The first half of [`score`]: done once per key, not once per member.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_SEED)
}

/// The second half of [`score`]: done once per member.
pub(crate) fn score_hashed(key_hash: u64, node: NodeId) -> u64 {
    mix64(key_hash ^ node.0)
}

pub(crate) fn node_id_hash(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), NODE_ID_SEED)
}

/// `xxh3_64_with_seed` over the members' little-endian bytes, concatenated in
/// the given (sorted) order, with [`FINGERPRINT_SEED`]. One shot over a
/// buffer: several times faster than feeding a streaming hasher 8 bytes at a
/// time.
pub(crate) fn fingerprint(sorted_members: &[NodeId]) -> u64 {
    let bytes: Vec<u8> = sorted_members.iter().flat_map(|member| member.0.to_le_bytes()).collect();
    xxh3_64_with_seed(&bytes, FINGERPRINT_SEED)
}

const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_the_documented_ascii() {
        assert_eq!(NODE_ID_SEED, 0x6875_6262_7562_2f6e);
        assert_eq!(KEY_SEED, 0x6875_6262_7562_2f6b);
        assert_eq!(FINGERPRINT_SEED, 0x6875_6262_7562_2f66);
    }

    /// Known answers from the SplitMix64 reference generator (seed 0): its
    /// outputs are `mix64(k * 0x9e3779b97f4a7c15)` for k = 1, 2, 3.
    #[test]
    fn mix64_is_splitmix64_finalizer() {
        let gamma = 0x9e37_79b9_7f4a_7c15_u64;
        assert_eq!(mix64(gamma), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(gamma.wrapping_mul(2)), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(mix64(gamma.wrapping_mul(3)), 0x06c4_5d18_8009_454f);
    }
}

use std::{error::Error, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::hash;

/// Stable cluster-wide node id, derived from the node's unique name.
///
/// Pinned hash: [`NodeId::from_name`] never changes across Rust or crate
/// releases. Displayed (and parsed) as 16 lowercase hex digits; `Debug` prints
/// the same, so logs and the debug API show one form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// `xxh3_64_with_seed(name.as_bytes(), NODE_ID_SEED)`; see
    /// [`NODE_ID_SEED`](crate::NODE_ID_SEED).
    pub fn from_name(name: &str) -> NodeId {
        NodeId(hash::node_id_hash(name))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Parses exactly 16 hex digits (either case), the form [`Display`](fmt::Display) prints.
    fn from_str(s: &str) -> Result<NodeId, ParseNodeIdError> {
        // `from_str_radix` alone would also take a sign and shorter strings.
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseNodeIdError);
        }
        u64::from_str_radix(s, 16).map(NodeId).map_err(|_| ParseNodeIdError)
    }
}

/// A string that is not 16 hex digits was parsed as a [`NodeId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseNodeIdError;

impl fmt::Display for ParseNodeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node id is 16 hex digits")
    }
}

impl Error for ParseNodeIdError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_debug_and_parse_round_trip() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!(format!("{id:?}"), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse(), Ok(id));
        assert_eq!("00ABCDEF01234567".parse(), Ok(id));
        assert_eq!(NodeId(0).to_string(), "0000000000000000");
        assert_eq!(NodeId(u64::MAX).to_string(), "ffffffffffffffff");
    }

    #[test]
    fn parse_rejects_other_forms() {
        for bad in [
            "",
            "abcdef01234567",
            "+0abcdef01234567",
            "0x00abcdef012345",
            "00abcdef012345678",
            "00abcdef0123456g",
            " 0abcdef01234567",
        ] {
            assert_eq!(bad.parse::<NodeId>(), Err(ParseNodeIdError), "{bad:?}");
        }
    }
}

//! Sealing of gossip datagrams and keys for node links.
//!
//! Every UDP datagram Hubbub sends for SWIM (foca) or node state (chitchat) is
//! sealed as
//!
//! ```text
//! version (1) | key id (4) | nonce (24) | XChaCha20-Poly1305(plaintext) | tag (16)
//! ```
//!
//! with `version | key id | cluster name` as associated data, so a packet of
//! another cluster or another envelope version fails to open even under the
//! same key. The nonce is random per packet: XChaCha's 192-bit nonces make
//! random nonces safe for any realistic packet count, which a 96-bit nonce
//! would not be at gossip rates over months.
//!
//! A [`Keyring`] holds one or more keys: the first seals, all of them open, so
//! an operator rotates a key by (1) adding the new key second everywhere,
//! (2) moving it first everywhere, (3) removing the old one. Keys are derived
//! from the operator's secret strings with HKDF-SHA256; the key id is derived
//! the same way, so it identifies a key without revealing it.
//!
//! A datagram that fails to open is dropped and counted by the caller; it is
//! never given to a decoder.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngExt;
use sha2::Sha256;

/// Envelope version byte.
pub const SEAL_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed packet adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;
/// Shortest secret accepted as a cluster key.
pub const MIN_SECRET_LEN: usize = 32;
/// Most keys a keyring holds (a rotation needs two; a few more cover mistakes).
pub const MAX_KEYS: usize = 4;
/// The secret used by `--insecure`. It is public, so "sealed" packets of an
/// insecure cluster protect nothing; it only keeps one code path.
pub const INSECURE_SECRET: &str = "hubbub-insecure-cluster-key-do-not-use-in-production";

/// Why a secret could not become a keyring. Nothing was created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no cluster key given")]
    Empty,
    #[error("key {index} is {len} characters long; at least {MIN_SECRET_LEN} are required")]
    TooShort { index: usize, len: usize },
    #[error("{0} keys given; at most {MAX_KEYS} are allowed")]
    TooMany(usize),
    #[error("keys {0} and {1} are the same")]
    Duplicate(usize, usize),
}

/// Why a packet did not open. The packet is dropped; no state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("packet too short to be sealed")]
    TooShort,
    #[error("unknown envelope version {0}")]
    Version(u8),
    #[error("no key with this key id")]
    UnknownKey,
    #[error("authentication failed")]
    Forged,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    aead: XChaCha20Poly1305,
    link_mac: [u8; 32],
}

/// The cluster's keys, bound to the cluster name.
pub struct Keyring {
    keys: Vec<Key>,
    cluster: String,
    insecure: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .field("cluster", &self.cluster)
            .field("insecure", &self.insecure)
            .finish()
    }
}

fn derive(secret: &str, info: &[u8], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(b"hubbub-keyring-v1"), secret.as_bytes());
    hk.expand(info, out).expect("HKDF-SHA256 can expand up to 8160 bytes; we ask for at most 32");
}

impl Keyring {
    /// Builds a keyring from the operator's secrets (first one seals).
    pub fn new<S: AsRef<str>>(secrets: &[S], cluster: &str) -> Result<Keyring, KeyringError> {
        if secrets.is_empty() {
            return Err(KeyringError::Empty);
        }
        if secrets.len() > MAX_KEYS {
            return Err(KeyringError::TooMany(secrets.len()));
        }
        for (i, s) in secrets.iter().enumerate() {
            let len = s.as_ref().chars().count();
            if len < MIN_SECRET_LEN {
                return Err(KeyringError::TooShort { index: i + 1, len });
            }
            if let Some(j) = secrets[..i].iter().position(|o| o.as_ref() == s.as_ref()) {
                return Err(KeyringError::Duplicate(j + 1, i + 1));
            }
        }
        Ok(Self::build(secrets, cluster, false))
    }

    /// The keyring of `--insecure`: a published key. Anyone can join.
    pub fn insecure(cluster: &str) -> Keyring {
        Self::build(&[INSECURE_SECRET], cluster, true)
    }

    fn build<S: AsRef<str>>(secrets: &[S], cluster: &str, insecure: bool) -> Keyring {
        let keys = secrets
            .iter()
            .map(|s| {
                let s = s.as_ref();
                let mut id = [0u8; KEY_ID_LEN];
                derive(s, b"key-id", &mut id);
                let mut aead_key = [0u8; 32];
                derive(s, b"gossip-aead", &mut aead_key);
                let mut link_mac = [0u8; 32];
                derive(s, b"link-mac", &mut link_mac);
                let aead = XChaCha20Poly1305::new(&aead_key.into());
                Key { id, aead, link_mac }
            })
            .collect();
        Keyring { keys, cluster: cluster.to_owned(), insecure }
    }

    /// Whether this is the public `--insecure` keyring.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The cluster name bound into every seal and link proof.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Hex key ids, first (sealing) key first. Safe to show operators.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.iter().map(|b| format!("{b:02x}")).collect()).collect()
    }

    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(header.len() + self.cluster.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(self.cluster.as_bytes());
        aad
    }

    /// Seals `plaintext` with the first key.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&key.id);
        let aad = self.aad(&out);
        out.extend_from_slice(&nonce);
        let ciphertext = key
            .aead
            .encrypt(&nonce.into(), Payload { msg: plaintext, aad: &aad })
            .expect("XChaCha20-Poly1305 encryption only fails past 256 GiB messages");
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a sealed packet with whichever key its key id names.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        if packet.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort);
        }
        if packet[0] != SEAL_VERSION {
            return Err(OpenError::Version(packet[0]));
        }
        let header = &packet[..1 + KEY_ID_LEN];
        let key = self.keys.iter().find(|k| k.id == header[1..]).ok_or(OpenError::UnknownKey)?;
        let nonce: [u8; NONCE_LEN] =
            packet[header.len()..header.len() + NONCE_LEN].try_into().expect("slice has NONCE_LEN bytes");
        let aad = self.aad(header);
        key.aead
            .decrypt(&nonce.into(), Payload { msg: &packet[header.len() + NONCE_LEN..], aad: &aad })
            .map_err(|_| OpenError::Forged)
    }

    /// HMAC-SHA256 proof over `parts` with the first key, for link handshakes.
    pub fn link_proof(&self, parts: &[&[u8]]) -> [u8; 32] {
        Self::mac(&self.keys[0].link_mac, &self.cluster, parts)
    }

    /// Whether `mac` is a valid proof over `parts` under any key (constant time
    /// per key).
    pub fn verify_link_proof(&self, parts: &[&[u8]], mac: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| Self::mac_state(&k.link_mac, &self.cluster, parts).verify_slice(mac).is_ok())
    }

    fn mac_state(key: &[u8; 32], cluster: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
        m.update(cluster.as_bytes());
        for p in parts {
            // Length-prefix each part so ("ab","c") and ("a","bc") differ.
            m.update(&(p.len() as u32).to_be_bytes());
            m.update(p);
        }
        m
    }

    fn mac(key: &[u8; 32], cluster: &str, parts: &[&[u8]]) -> [u8; 32] {
        Self::mac_state(key, cluster, parts).finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn seal_open_round_trip() {
        let ring = Keyring::new(&[A], "c1").unwrap();
        let sealed = ring.seal(b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(ring.open(&sealed).unwrap(), b"hello");
    }

    #[test]
    fn other_key_or_cluster_does_not_open() {
        let a = Keyring::new(&[A], "c1").unwrap();
        let b = Keyring::new(&[B], "c1").unwrap();
        let a2 = Keyring::new(&[A], "c2").unwrap();
        let sealed = a.seal(b"x");
        assert_eq!(b.open(&sealed), Err(OpenError::UnknownKey));
        assert_eq!(a2.open(&sealed), Err(OpenError::Forged));
    }

    #[test]
    fn rotation_opens_with_any_key_seals_with_first() {
        let old = Keyring::new(&[A], "c").unwrap();
        let both = Keyring::new(&[B, A], "c").unwrap();
        assert_eq!(both.open(&old.seal(b"1")).unwrap(), b"1");
        assert_eq!(old.open(&both.seal(b"2")), Err(OpenError::UnknownKey));
        let both_old_first = Keyring::new(&[A, B], "c").unwrap();
        assert_eq!(old.open(&both_old_first.seal(b"3")).unwrap(), b"3");
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new(&[A], "c").unwrap();
        let sealed = ring.seal(b"payload");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(ring.open(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert_eq!(ring.open(&sealed[..10]), Err(OpenError::TooShort));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(Keyring::new::<&str>(&[], "c").unwrap_err(), KeyringError::Empty);
        assert!(matches!(Keyring::new(&["short"], "c"), Err(KeyringError::TooShort { .. })));
        assert_eq!(Keyring::new(&[A, A], "c").unwrap_err(), KeyringError::Duplicate(1, 2));
        assert!(matches!(Keyring::new(&[A, B, A, B, A], "c"), Err(KeyringError::TooMany(5))));
    }

    #[test]
    fn link_proofs_verify_under_any_key_only() {
        let a = Keyring::new(&[A], "c").unwrap();
        let ba = Keyring::new(&[B, A], "c").unwrap();
        let b = Keyring::new(&[B], "c").unwrap();
        let proof = a.link_proof(&[b"dialer", b"nonce"]);
        assert!(ba.verify_link_proof(&[b"dialer", b"nonce"], &proof));
        assert!(!b.verify_link_proof(&[b"dialer", b"nonce"], &proof));
        assert!(!a.verify_link_proof(&[b"dialer", b"other"], &proof));
        assert!(!a.verify_link_proof(&[b"dialern", b"once"], &proof));
    }
}

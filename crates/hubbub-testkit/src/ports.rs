//! Finding a free range of fixed ports, for commands that take a base port.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ranges are picked below Linux's ephemeral range (32768–60999), so nodes
/// other tests start on port 0 do not land in them.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

/// A base port `p` such that `p..p+len` are all free for TCP and UDP on
/// 127.0.0.1 right now. Panics if none is found after many tries.
pub fn free_port_range(len: u16) -> u16 {
    let span = HIGH - LOW - len;
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) ^ std::process::id();
    let mut base = LOW + (seed % u32::from(span)) as u16;
    for _ in 0..200 {
        if range_is_free(base, len) {
            return base;
        }
        base = LOW + (base - LOW + 97 * len) % span;
    }
    panic!("no free range of {len} ports found in {LOW}..{HIGH}");
}

fn range_is_free(base: u16, len: u16) -> bool {
    // Hold every socket until all are checked, then release them together.
    let mut held = Vec::new();
    for port in base..base + len {
        let (Ok(tcp), Ok(udp)) =
            (TcpListener::bind((Ipv4Addr::LOCALHOST, port)), UdpSocket::bind((Ipv4Addr::LOCALHOST, port)))
        else {
            return false;
        };
        held.push((tcp, udp));
    }
    true
}

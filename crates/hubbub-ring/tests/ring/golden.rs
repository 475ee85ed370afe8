//! Known answers. These values are part of the cluster protocol: a node built
//! with different ones would place rooms elsewhere than its peers during a
//! rolling upgrade. If one of these tests fails, the change is the bug.
//!
//! The values were checked against the reference C implementation of XXH3
//! (through Python's `xxhash` package) and a direct transcription of the
//! documented score, so they describe the specification, not just this code.

use hubbub_ring::{NodeId, Ring, room_key, score, user_key};

#[test]
fn node_ids_from_names() {
    let cases = [
        ("n1", 0xd140_94ad_362b_a7ac),
        ("n2", 0x0cdf_6182_c644_610d),
        ("n3", 0xdc91_0611_e606_73e1),
        ("node-0", 0x13dd_fa1a_11c9_cd72),
        ("hubbub-0.hubbub.default.svc", 0x2437_3b98_8500_3189),
        ("", 0x3b0a_38fc_61ed_817a),
    ];
    for (name, id) in cases {
        assert_eq!(NodeId::from_name(name), NodeId(id), "{name:?}");
    }
}

#[test]
fn scores() {
    let n1 = NodeId::from_name("n1");
    let cases: [(&[u8], NodeId, u64); 5] = [
        (b"room:general", n1, 0xa593_72f9_a077_50ac),
        (b"user:alice", n1, 0xc730_f1dd_638b_1147),
        (b"", NodeId(0), 0x4111_9cdb_3f16_db00),
        (b"", NodeId(u64::MAX), 0xcb6b_5740_a35d_1ab5),
        (b"room:general", NodeId(1), 0x561a_84d7_346d_27d4),
    ];
    for (key, node, expected) in cases {
        assert_eq!(score(key, node), expected, "{key:?} {node}");
    }
}

#[test]
fn fingerprints() {
    assert_eq!(Ring::new([]).fingerprint(), 0x69f4_e994_10e0_9b50);
    let ring = Ring::new(["n1", "n2", "n3"].map(NodeId::from_name));
    assert_eq!(ring.fingerprint(), 0x7bf1_0f35_a2c1_37b7);
    // 400 bytes of input: XXH3's long-input path.
    let ring = Ring::new(crate::named_nodes(50));
    assert_eq!(ring.fingerprint(), 0xd311_a51b_95c7_64c6);
}

#[test]
fn owners_and_preference_orders() {
    let ring = Ring::new(["n1", "n2", "n3", "n4", "n5"].map(NodeId::from_name));
    let name = |id: NodeId| (1..=5).map(|i| format!("n{i}")).find(|n| NodeId::from_name(n) == id).expect("a member");
    let cases = [
        (room_key("general"), ["n2", "n5", "n1", "n3", "n4"]),
        (room_key("random"), ["n1", "n4", "n3", "n5", "n2"]),
        (user_key("alice"), ["n5", "n3", "n1", "n2", "n4"]),
        (user_key("bob"), ["n1", "n4", "n3", "n2", "n5"]),
    ];
    for (key, expected) in cases {
        let order: Vec<String> = ring.preference_order(&key).into_iter().map(name).collect();
        assert_eq!(order, expected, "{:?}", String::from_utf8_lossy(&key));
        assert_eq!(ring.owner(&key).map(name).as_deref(), Some(expected[0]));
    }
}

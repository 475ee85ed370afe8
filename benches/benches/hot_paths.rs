//! The per-message hot paths of a node: parsing a client's JSON frame,
//! serializing a delivered message for clients, encoding and decoding the
//! postcard frame that carries a message between nodes, and one message's
//! fan-out to N local subscribers through the backplane's [`Core`] (no I/O:
//! the subscribers' sinks only count).

use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubbub_backplane::{ConnSink, Core, CoreLimits, PeerSink, Text};
use hubbub_proto::chat::ChatFrame;
use hubbub_proto::client::{self, Audience, CloseCode, Limits, ServerMsg};
use hubbub_proto::link::{self, LinkFrame};
use hubbub_ring::NodeId;

/// A 64-byte body, as in the load generator's latency workload.
const BODY: &str = "r12p3q123456t98765432101234.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn client_json(c: &mut Criterion) {
    let limits = Limits::default();
    let send = format!(r#"{{"type":"send","room":"bench-12","body":"{BODY}","id":"123456"}}"#);
    c.bench_function("client_parse_send", |b| {
        b.iter(|| black_box(client::parse(black_box(&send), &limits).expect("valid frame")));
    });
    let msg = ServerMsg::Message {
        kind: Audience::Room,
        room: Some("bench-12".into()),
        seq: Some(123_456),
        to: None,
        from: "p3".into(),
        body: BODY.into(),
        id: "123456".into(),
        ts: 1_767_225_600_000,
    };
    c.bench_function("server_message_to_string", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&msg)).expect("serializes")));
    });
}

fn link_frames(c: &mut Criterion) {
    let text = hubbub_proto::client::room_message_json("bench-12", 123_456, "p3", BODY, "123456", 1_767_225_600_000);
    let frame = LinkFrame::Chat(ChatFrame::Deliver { room: "bench-12".into(), first: 123_456, texts: vec![text] });
    c.bench_function("link_encode_deliver", |b| b.iter(|| black_box(link::encode(black_box(&frame)))));
    let bytes = link::encode(&frame);
    c.bench_function("link_decode_deliver", |b| {
        b.iter(|| black_box(link::decode(black_box(&bytes)).expect("valid frame")));
    });
}

/// A client connection that only counts what it is sent.
#[derive(Default)]
struct Counting(AtomicU64);

impl ConnSink for Counting {
    fn push(&self, text: Text) -> bool {
        black_box(text);
        self.0.fetch_add(1, Relaxed);
        true
    }
    fn close(&self, _code: CloseCode) {}
}

/// A single-node cluster sends nothing to peers.
struct NoPeers;

impl PeerSink for NoPeers {
    fn send(&self, _peer: NodeId, _frame: Bytes) {}
}

/// One `send` to a room with `n` local subscribers on a single-node core:
/// sequencing, one serialization, `n` pushes (plus the sender's copy and ack).
fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_send");
    for n in [10u64, 100, 1_000] {
        let mut core = Core::new(NodeId::from_name("bench-node"), CoreLimits::default(), Box::new(NoPeers));
        let sink = Arc::new(Counting::default());
        let mut now = 1_000;
        for conn in 0..=n {
            core.connect(conn, &format!("u{conn}"), sink.clone(), now);
            core.join(conn, "bench", None, now);
        }
        let publisher = n;
        let before = sink.0.load(Relaxed);
        core.send(publisher, "bench", BODY.to_owned(), "0", now);
        // Every subscriber, the sender's own copy and its ack: else the
        // benchmark would measure something other than a fan-out.
        assert_eq!(sink.0.load(Relaxed) - before, n + 2, "one send reaches every subscriber");
        group.throughput(Throughput::Elements(n));
        // Ids are distinct: a repeated (user, id) is answered as a retry
        // of the first send, without a new delivery.
        let mut id = String::new();
        let mut next_id = 0u64;
        let mut send = |core: &mut Core| {
            now += 1;
            next_id += 1;
            id.clear();
            write!(id, "{next_id}").expect("writing to a String");
            core.send(publisher, "bench", BODY.to_owned(), &id, now);
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| send(&mut core)));
        // Still fanning out after every iteration (no flood close, no stall).
        let before = sink.0.load(Relaxed);
        for _ in 0..3 {
            send(&mut core);
        }
        assert_eq!(sink.0.load(Relaxed) - before, 3 * (n + 2), "every send still reaches every subscriber");
    }
    group.finish();
}

criterion_group!(benches, client_json, link_frames, fanout);
criterion_main!(benches);

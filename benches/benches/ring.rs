//! `hubbub-ring`: the cost of a lookup per message routed (`owner`), of picking
//! replicas (`preference_list`), and of rebuilding the ring on a membership
//! change (`with_members`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hubbub_ring::{NodeId, Ring, room_key};

const RING_SIZES: [usize; 4] = [3, 10, 50, 200];

/// Lookups cycle through this many keys, so one key's branches are not learnt.
const KEY_COUNT: usize = 1024;

fn ring_of(members: usize) -> Ring {
    Ring::new((0..members).map(|i| NodeId::from_name(&format!("node-{i}"))))
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEY_COUNT).map(|i| room_key(&format!("bench-{i}"))).collect()
}

fn lookups(c: &mut Criterion) {
    let keys = keys();
    // Each case black-boxes its whole answer, so no part of the scan can be
    // optimised away.
    lookup_group(c, &keys, "owner", |ring, key| {
        black_box(ring.owner(key));
    });
    lookup_group(c, &keys, "preference_list_2", |ring, key| {
        black_box(ring.preference_list(key, 2));
    });
    lookup_group(c, &keys, "preference_list_3", |ring, key| {
        black_box(ring.preference_list(key, 3));
    });
}

/// One benchmark of `lookup` per ring size, cycling through `keys`.
fn lookup_group(c: &mut Criterion, keys: &[Vec<u8>], name: &str, lookup: fn(&Ring, &[u8])) {
    let mut group = c.benchmark_group(name);
    for members in RING_SIZES {
        let ring = ring_of(members);
        group.bench_with_input(BenchmarkId::from_parameter(members), &ring, |b, ring| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % keys.len();
                lookup(ring, black_box(&keys[next]));
            });
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let ring = ring_of(50);
    // One member replaced: a real change, so a new member list and fingerprint.
    let changed: Vec<NodeId> = ring.members()[1..].iter().copied().chain([NodeId::from_name("node-50")]).collect();
    let unchanged = ring.members().to_vec();

    let mut group = c.benchmark_group("with_members");
    group.bench_function("50/changed", |b| {
        b.iter(|| ring.with_members(black_box(&changed).iter().copied()));
    });
    group.bench_function("50/unchanged", |b| {
        b.iter(|| ring.with_members(black_box(&unchanged).iter().copied()));
    });
    group.finish();
}

criterion_group!(benches, lookups, rebuild);
criterion_main!(benches);

//! The whole engine path for one request, without I/O: a new telemetry
//! request from one of 10 000 devices through to the piggybacked 2.04, and a
//! retransmitted request answered from the deduplication cache.
//!
//! `cargo bench -p coapgate-endpoint --bench engine` (about 15 s); the
//! allocations per request are counted by the `engine_allocs` bench. Numbers
//! in docs/performance.md.

mod common;

use std::time::Duration;

use common::{DEVICES, Rig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));

    // One rig for warm-up and every sample: the dedup cache fills up to its
    // bound and stays there, as in a busy steady state.
    let mut rig = Rig::new();
    group.bench_function("new_request_to_2.04", |b| b.iter(|| rig.new_request()));

    let mut rig = Rig::new();
    const ANSWERED: u64 = DEVICES as u64;
    for _ in 0..ANSWERED {
        rig.new_request();
    }
    let mut n = 0;
    group.bench_function("duplicate_replay", |b| {
        b.iter(|| {
            rig.duplicate(n % ANSWERED);
            n += 1;
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    targets = engine
}
criterion_main!(benches);

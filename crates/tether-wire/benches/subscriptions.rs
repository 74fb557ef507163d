//! Subscription matching with 10 000 subscriptions, for publish URLs of depth 1 to 8.
//! `cargo bench -p tether-wire --bench subscriptions`.
#![allow(missing_docs)] // criterion_group! defines the undocumented `pub fn benches`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tether_wire::url::SubscriptionIndex;

/// A URL `/s0/s1/...` of `depth` levels; level names come from `seed`.
fn url(depth: usize, seed: usize) -> String {
    (0..depth)
        .map(|l| format!("/n{}", (seed >> l) % 4))
        .collect()
}

/// 10 000 distinct subscriptions over 2 000 clients: exact URLs and prefixes of depth 1 to
/// 8, with names from a small alphabet so publishes have real matches at every depth.
fn index() -> SubscriptionIndex<u32> {
    let mut idx = SubscriptionIndex::new();
    let mut i = 0usize;
    while idx.len() < 10_000 {
        let depth = 1 + i % 8;
        let mut pattern = url(depth, i.wrapping_mul(2_654_435_761) >> 7);
        if i.is_multiple_of(3) {
            pattern.push('/');
        }
        idx.subscribe((i % 2000) as u32, &pattern);
        i += 1;
    }
    idx
}

fn matching(c: &mut Criterion) {
    let idx = index();
    let mut g = c.benchmark_group("subscriptions/matching, 10000 subscriptions");
    for depth in 1..=8 {
        let u = url(depth, 0x5a5a);
        let mut out = Vec::with_capacity(10_000);
        idx.matching(&u, &mut out);
        let matches = out.len();
        g.bench_with_input(
            BenchmarkId::new(format!("{matches} matches"), format!("depth {depth}")),
            &u,
            |b, u| {
                b.iter(|| {
                    out.clear();
                    idx.matching(black_box(u), &mut out);
                    black_box(out.len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);

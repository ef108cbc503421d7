//! Checking and planning a large `services.toml`.
//!
//! Run: `cargo bench --bench manifest`
//!
//! `Manifest::parse` on 10,000 services, all on one payload: in a chain
//! (each depends on the one before, written in reverse so the plan has to
//! reorder everything) and independent. The whole check is timed: TOML
//! parsing, every key of every service, and the dependency plan. The plan
//! used to be quadratic (a 4,000-service chain took 17 s); it must stay well
//! under a second here.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stigmer::Manifest;

const SERVICES: usize = 10_000;

/// `n` services; with `chain`, service i depends on service i + 1.
fn manifest(n: usize, chain: bool) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[services.s{i:05}]\npayload = \"api\"\n"));
        if chain && i + 1 < n {
            text.push_str(&format!("depends_on = [\"s{:05}\"]\n", i + 1));
        }
    }
    text
}

fn plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("manifest 10,000 services");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, chain) in [("chain", true), ("independent", false)] {
        let text = manifest(SERVICES, chain);
        // The plan is right before it is timed.
        let m = Manifest::parse(&text, "bench.toml", &["api"]).unwrap();
        let first = if chain { format!("s{:05}", SERVICES - 1) } else { "s00000".to_owned() };
        assert_eq!(m.services[0].name, first);
        assert_eq!(m.services.len(), SERVICES);
        group.bench_function(name, |b| {
            b.iter(|| Manifest::parse(black_box(&text), "bench.toml", &["api"]).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);

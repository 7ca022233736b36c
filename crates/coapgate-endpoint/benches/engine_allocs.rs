//! Heap allocations per engine request in the steady state, counted by an
//! instrumented global allocator (kept out of the `engine` bench so that
//! its timings carry no counting overhead).
//!
//! `cargo bench -p coapgate-endpoint --bench engine_allocs` (a few seconds).

mod common;

use common::Rig;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Prints heap allocations per request in the steady state.
fn count_allocations() {
    const WARM: u64 = 600_000; // past the 500 000-entry dedup bound
    const COUNTED: u64 = 100_000;
    let mut rig = Rig::new();
    for _ in 0..WARM {
        rig.new_request();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..COUNTED {
        rig.new_request();
    }
    let new = region.change();
    let region = Region::new(GLOBAL);
    for n in 0..COUNTED {
        rig.duplicate(WARM + n);
    }
    let dup = region.change();
    let per = |x: usize| x as f64 / COUNTED as f64;
    println!(
        "allocations per request (steady state, {COUNTED} requests): \
         new {:.1} allocs + {:.1} reallocs, {:.0} bytes; \
         duplicate {:.1} allocs + {:.1} reallocs, {:.0} bytes",
        per(new.allocations),
        per(new.reallocations),
        per(new.bytes_allocated),
        per(dup.allocations),
        per(dup.reallocations),
        per(dup.bytes_allocated),
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: keep
    // that quick.
    if std::env::args().any(|a| a == "--bench") {
        count_allocations();
    }
}

//! What one deduplication entry costs: fills a [`DedupCache`] keyed like the
//! engine's plain-CoAP `Link` with 500 000 entries, each with a typical
//! 8-byte response (an ACK 2.04 with a 4-byte token), and prints the
//! resident memory (from `/proc/self/statm`) and the heap bytes the
//! allocator reports per entry, beyond the response bytes.
//!
//! `cargo bench -p coapgate-exchange --bench dedup_memory` (a few seconds).
//! Two fills, each in a fresh process so that freed memory of the first does
//! not hide the second's: 64 000 peers × about 8 message IDs each (a fleet),
//! and 500 000 peers with one message ID each (the worst case for the peer
//! table). Numbers in docs/performance.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use coapgate_exchange::{DedupCache, DedupLimits, Lookup, MessageKind};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const ENTRIES: usize = 500_000;
const RESPONSE: [u8; 8] = [0x64, 0x44, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef];

/// The engine's deduplication key for plain CoAP (and DTLS), same layout as
/// `coapgate_endpoint::Link`, without depending on that crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Link {
    Udp(SocketAddr),
    #[allow(dead_code)]
    Dtls {
        addr: SocketAddr,
        session: u64,
    },
}

/// Resident pages × page size, from /proc/self/statm (0 where unavailable).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn peer(i: usize) -> Link {
    let ip = u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i as u32;
    Link::Udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 5683))
}

fn fill(peers: usize) {
    let limits = DedupLimits {
        max_entries: ENTRIES,
        max_bytes: usize::MAX,
    };
    let t0 = Instant::now();
    // Touch the allocator and the page tables of the statm reader first.
    let _ = rss_bytes();
    let rss_before = rss_bytes();
    let region = Region::new(GLOBAL);
    let mut cache = DedupCache::new(Duration::from_secs(247), Duration::from_secs(145), limits);
    for n in 0..ENTRIES {
        let link = peer(n % peers);
        let mid = (n / peers) as u16;
        let now = t0 + Duration::from_micros(n as u64 * 400);
        let Lookup::New(ticket) = cache.lookup(now, &link, mid, MessageKind::Confirmable) else {
            panic!("entry {n} should be new");
        };
        assert!(cache.respond(&link, mid, ticket, &RESPONSE));
    }
    let heap = region.change();
    let rss_after = rss_bytes();
    assert_eq!(cache.len(), ENTRIES);
    let stats = cache.stats();
    let per = |x: usize| x as f64 / ENTRIES as f64;
    // Reallocations count their growth in bytes_allocated.
    let heap_net = heap.bytes_allocated.saturating_sub(heap.bytes_deallocated);
    let response = RESPONSE.len() as f64;
    println!(
        "{ENTRIES} entries from {peers} peers, {}-byte responses: \
         RSS {:.1} bytes/entry beyond the response ({:.1} MiB in all); \
         heap {:.1} bytes/entry beyond the response ({:.1} MiB net); \
         accounted {:.1} bytes/entry",
        RESPONSE.len(),
        per(rss_after.saturating_sub(rss_before)) - response,
        rss_after.saturating_sub(rss_before) as f64 / f64::from(1 << 20),
        per(heap_net) - response,
        heap_net as f64 / f64::from(1 << 20),
        per(stats.bytes),
    );

    // Speed, for comparison between implementations (noisy on a shared
    // machine: run it more than once): duplicates answered from the full
    // cache, then new messages at the bound, each evicting the oldest.
    let started = Instant::now();
    let mut replayed = 0usize;
    for n in 0..ENTRIES {
        let link = peer(n % peers);
        let mid = (n / peers) as u16;
        let at = t0 + Duration::from_secs(200);
        if let Lookup::Replay(bytes) = cache.lookup(at, &link, mid, MessageKind::Confirmable) {
            replayed += bytes.len();
        }
    }
    let duplicate = started.elapsed();
    assert_eq!(replayed, ENTRIES * RESPONSE.len());
    let started = Instant::now();
    for n in ENTRIES..2 * ENTRIES {
        let link = peer(n % peers);
        let mid = (n / peers) as u16;
        let now = t0 + Duration::from_micros(n as u64 * 400);
        if let Lookup::New(ticket) = cache.lookup(now, &link, mid, MessageKind::Confirmable) {
            cache.respond(&link, mid, ticket, &RESPONSE);
        }
    }
    let evicting = started.elapsed();
    let ns = |d: Duration| d.as_nanos() as f64 / ENTRIES as f64;
    println!(
        "  duplicate lookup (replay) {:.0} ns; new message at the bound (lookup, \
         eviction, respond) {:.0} ns",
        ns(duplicate),
        ns(evicting),
    );
    std::hint::black_box(&cache);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench targets with `--bench` absent: keep
    // that quick.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // One fill per process: re-run ourselves for each.
    if let Some(peers) = args
        .iter()
        .find_map(|a| a.strip_prefix("--peers="))
        .and_then(|p| p.parse().ok())
    {
        fill(peers);
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        fill(64_000);
        return;
    };
    for peers in [64_000, ENTRIES] {
        let status = std::process::Command::new(&me)
            .arg("--bench")
            .arg(format!("--peers={peers}"))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("the fill with {peers} peers failed");
            std::process::exit(1);
        }
    }
}

//! Property: whatever arrives, the cache stays within its bounds, its byte
//! accounting matches what it holds, and a live duplicate is never `New`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coapgate_exchange::{DedupCache, DedupLimits, Lookup, MessageKind, Ticket};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Arrive { peer: u8, mid: u8, con: bool },
    Respond { peer: u8, mid: u8, len: usize },
    Advance { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..16, any::<bool>()).prop_map(|(peer, mid, con)| Op::Arrive { peer, mid, con }),
        2 => (0u8..4, 0u8..16, 0usize..300).prop_map(|(peer, mid, len)| Op::Respond { peer, mid, len }),
        1 => (0u16..120).prop_map(|secs| Op::Advance { secs }),
    ]
}

proptest! {
    #[test]
    fn bounded_and_never_reprocesses_a_live_unevicted_message(
        ops in proptest::collection::vec(op(), 1..200),
        max_entries in 1usize..20,
        max_bytes in 256usize..4000,
    ) {
        let limits = DedupLimits { max_entries, max_bytes };
        let mut cache = DedupCache::new(Duration::from_secs(247), Duration::from_secs(145), limits);
        let mut now = Instant::now();
        // Our model: when each key was first accepted as New, and its kind.
        let mut accepted: HashMap<(u8, u8), (Instant, bool)> = HashMap::new();
        // The ticket of each key's latest New.
        let mut tickets: HashMap<(u8, u8), Ticket> = HashMap::new();
        for op in ops {
            match op {
                Op::Arrive { peer, mid, con } => {
                    let kind = if con { MessageKind::Confirmable } else { MessageKind::NonConfirmable };
                    let evictions_before = cache.stats().evictions;
                    let result = cache.lookup(now, &peer, u16::from(mid), kind);
                    if let Lookup::New(ticket) = result {
                        tickets.insert((peer, mid), ticket);
                        // Allowed only if never seen, expired, or possibly evicted.
                        if let Some(&(at, was_con)) = accepted.get(&(peer, mid)) {
                            let life = if was_con { 247 } else { 145 };
                            let expired = now >= at + Duration::from_secs(life);
                            prop_assert!(expired || evictions_before > 0,
                                "a live, never-evicted duplicate was accepted as new");
                        }
                        accepted.insert((peer, mid), (now, con));
                    }
                }
                Op::Respond { peer, mid, len } => {
                    if let Some(&ticket) = tickets.get(&(peer, mid)) {
                        cache.respond(&peer, u16::from(mid), ticket, &vec![0u8; len]);
                    }
                }
                Op::Advance { secs } => {
                    now += Duration::from_secs(u64::from(secs));
                    cache.expire(now);
                }
            }
            let stats = cache.stats();
            prop_assert!(stats.entries <= max_entries);
            prop_assert_eq!(stats.entries, cache.len());
            // Over the byte bound only when a single entry is alone.
            prop_assert!(stats.bytes <= max_bytes || cache.len() <= 1,
                "bytes {} > {} with {} entries", stats.bytes, max_bytes, cache.len());
        }
        cache.expire(now + Duration::from_secs(1000));
        prop_assert_eq!(cache.len(), 0);
        prop_assert_eq!(cache.stats().bytes, 0);
    }
}

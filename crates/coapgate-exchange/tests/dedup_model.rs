//! Property: the compact cache behaves exactly like the straightforward one
//! it replaced (decision 99), kept here as the reference model: the same
//! lookups, the same respond results, the same statistics, after any
//! sequence of arrivals, responses (with current and stale tickets),
//! forgets, expiries and time steps under small bounds. Its `next_expiry`
//! is the exact earliest end of life of what it holds (the reference's may
//! be early: it may name an entry already gone).

#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use coapgate_exchange::{DedupCache, DedupLimits, DedupStats, Lookup, MessageKind, Ticket};
use proptest::prelude::*;

mod reference {
    use std::collections::{HashMap, VecDeque};
    use std::hash::Hash;
    use std::time::{Duration, Instant};

    use coapgate_exchange::{DedupCache, DedupLimits, DedupStats, MessageKind};

    #[derive(Debug, PartialEq, Eq)]
    pub enum RefLookup<'a> {
        New(u64),
        InProgress,
        Replay(&'a [u8]),
        Ignore,
    }

    impl<K: Hash + Eq + Clone> RefCache<K> {
        /// The earliest end of life among the entries held.
        pub fn earliest_expiry(&self) -> Option<Instant> {
            self.entries.values().map(|e| e.expires).min()
        }
    }

    #[derive(Debug)]
    struct Entry {
        seq: u64,
        kind: MessageKind,
        expires: Instant,
        response: Option<Box<[u8]>>,
    }

    #[derive(Debug)]
    struct Queued<K> {
        seq: u64,
        expires: Instant,
        key: (K, u16),
    }

    /// The cache as it was before decision 99 (a HashMap entry, a queued key
    /// and a boxed response per message), unchanged but for names.
    ///
    /// `K` identifies the peer: a socket address for plain CoAP, a session for
    /// DTLS. Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON) from the
    /// first arrival. Two FIFO queues, one per lifetime, keep expiry and
    /// eviction O(1) amortised.
    #[derive(Debug)]
    pub struct RefCache<K> {
        entries: HashMap<(K, u16), Entry>,
        con_queue: VecDeque<Queued<K>>,
        non_queue: VecDeque<Queued<K>>,
        con_lifetime: Duration,
        non_lifetime: Duration,
        limits: DedupLimits,
        next_seq: u64,
        stats: DedupStats,
    }

    impl<K: Hash + Eq + Clone> RefCache<K> {
        const ENTRY_OVERHEAD: usize = DedupCache::<()>::ENTRY_OVERHEAD;

        /// A cache with these lifetimes (usually
        /// [`TransmissionParams::exchange_lifetime`](crate::TransmissionParams::exchange_lifetime)
        /// and [`non_lifetime`](crate::TransmissionParams::non_lifetime)) and bounds.
        pub fn new(con_lifetime: Duration, non_lifetime: Duration, limits: DedupLimits) -> Self {
            Self {
                entries: HashMap::new(),
                con_queue: VecDeque::new(),
                non_queue: VecDeque::new(),
                con_lifetime,
                non_lifetime,
                limits,
                next_seq: 0,
                stats: DedupStats::default(),
            }
        }

        /// Looks a message up; a message not seen within its lifetime is
        /// remembered from now on as in progress and [`RefLookup::New`] returned.
        pub fn lookup(
            &mut self,
            now: Instant,
            peer: &K,
            message_id: u16,
            kind: MessageKind,
        ) -> RefLookup<'_> {
            let key = (peer.clone(), message_id);
            let live = self.entries.get(&key).is_some_and(|e| e.expires > now);
            if live {
                self.stats.hits += 1;
                let entry = &self.entries[&key];
                return match (entry.kind, &entry.response) {
                    (MessageKind::NonConfirmable, _) => RefLookup::Ignore,
                    (MessageKind::Confirmable, None) => RefLookup::InProgress,
                    (MessageKind::Confirmable, Some(bytes)) => RefLookup::Replay(bytes),
                };
            }
            if let Some(old) = self.entries.remove(&key) {
                // Expired but not yet collected: it ends here.
                self.release(&old);
                self.stats.expirations += 1;
            }
            self.make_room(Self::ENTRY_OVERHEAD);
            let seq = self.next_seq;
            self.next_seq += 1;
            let (lifetime, queue) = match kind {
                MessageKind::Confirmable => (self.con_lifetime, &mut self.con_queue),
                MessageKind::NonConfirmable => (self.non_lifetime, &mut self.non_queue),
            };
            let expires = now + lifetime;
            queue.push_back(Queued {
                seq,
                expires,
                key: key.clone(),
            });
            self.entries.insert(
                key,
                Entry {
                    seq,
                    kind,
                    expires,
                    response: None,
                },
            );
            self.stats.entries = self.entries.len();
            self.stats.bytes += Self::ENTRY_OVERHEAD;
            RefLookup::New(seq)
        }

        /// Records the response a duplicate must get (the piggybacked response,
        /// or the empty ACK when the response goes separately) in the entry
        /// `ticket` names. Returns `false` when that entry is gone (expired or
        /// evicted meanwhile, even if the message ID was seen again since).
        pub fn respond(&mut self, peer: &K, message_id: u16, ticket: u64, response: &[u8]) -> bool {
            let key = (peer.clone(), message_id);
            let Some(entry) = self.entries.get_mut(&key).filter(|e| e.seq == ticket) else {
                return false;
            };
            let old = entry.response.as_ref().map_or(0, |r| r.len());
            entry.response = Some(response.into());
            self.stats.bytes = self.stats.bytes - old + response.len();
            // Over the byte bound: evict the oldest entries, never the one just
            // answered unless it is alone.
            while self.stats.bytes > self.limits.max_bytes && self.entries.len() > 1 {
                if !self.evict_oldest(Some(&key)) {
                    break;
                }
            }
            true
        }

        /// Forgets the entry without counting it anywhere; used when a message
        /// turned out not to need deduplication after all.
        pub fn forget(&mut self, peer: &K, message_id: u16) {
            if let Some(old) = self.entries.remove(&(peer.clone(), message_id)) {
                self.release(&old);
            }
        }

        /// Drops every entry whose lifetime has ended by `now`.
        pub fn expire(&mut self, now: Instant) {
            for which in [MessageKind::Confirmable, MessageKind::NonConfirmable] {
                loop {
                    let queue = match which {
                        MessageKind::Confirmable => &mut self.con_queue,
                        MessageKind::NonConfirmable => &mut self.non_queue,
                    };
                    let Some(front) = queue.front() else { break };
                    if front.expires > now {
                        break;
                    }
                    let Some(q) = queue.pop_front() else { break };
                    if self.entries.get(&q.key).is_some_and(|e| e.seq == q.seq) {
                        if let Some(old) = self.entries.remove(&q.key) {
                            self.release(&old);
                            self.stats.expirations += 1;
                        }
                    }
                }
            }
        }

        /// The next instant at which [`expire`](Self::expire) has work (may be
        /// early when the front entry was already evicted).
        pub fn next_expiry(&self) -> Option<Instant> {
            let con = self.con_queue.front().map(|q| q.expires);
            let non = self.non_queue.front().map(|q| q.expires);
            match (con, non) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }

        /// Entries held now.
        pub fn len(&self) -> usize {
            self.entries.len()
        }

        /// Whether nothing is held.
        pub fn is_empty(&self) -> bool {
            self.entries.is_empty()
        }

        /// Counters and gauges.
        pub fn stats(&self) -> DedupStats {
            self.stats
        }

        fn release(&mut self, entry: &Entry) {
            self.stats.bytes -=
                Self::ENTRY_OVERHEAD + entry.response.as_ref().map_or(0, |r| r.len());
            self.stats.entries = self.entries.len();
        }

        fn make_room(&mut self, incoming: usize) {
            while !self.entries.is_empty()
                && (self.entries.len() >= self.limits.max_entries
                    || self.stats.bytes + incoming > self.limits.max_bytes)
            {
                if !self.evict_oldest(None) {
                    break;
                }
            }
        }

        /// Evicts the entry that arrived first (smallest sequence number) among
        /// both queues, never `keep`. Returns whether anything was evicted.
        fn evict_oldest(&mut self, keep: Option<&(K, u16)>) -> bool {
            let mut held: Option<(MessageKind, Queued<K>)> = None;
            let evicted = loop {
                // Drop queue fronts whose entry is already gone or was replaced.
                for queue in [&mut self.con_queue, &mut self.non_queue] {
                    while let Some(front) = queue.front() {
                        if self
                            .entries
                            .get(&front.key)
                            .is_some_and(|e| e.seq == front.seq)
                        {
                            break;
                        }
                        queue.pop_front();
                    }
                }
                let con = self.con_queue.front().map(|q| q.seq);
                let non = self.non_queue.front().map(|q| q.seq);
                let kind = match (con, non) {
                    (Some(c), Some(n)) if n < c => MessageKind::NonConfirmable,
                    (Some(_), _) => MessageKind::Confirmable,
                    (None, Some(_)) => MessageKind::NonConfirmable,
                    (None, None) => break false,
                };
                let queue = match kind {
                    MessageKind::Confirmable => &mut self.con_queue,
                    MessageKind::NonConfirmable => &mut self.non_queue,
                };
                let Some(victim) = queue.pop_front() else {
                    break false;
                };
                if keep == Some(&victim.key) {
                    // Set the protected entry aside and look at the next oldest.
                    held = Some((kind, victim));
                    continue;
                }
                if let Some(old) = self.entries.remove(&victim.key) {
                    self.release(&old);
                    self.stats.evictions += 1;
                }
                break true;
            };
            if let Some((kind, q)) = held {
                match kind {
                    MessageKind::Confirmable => self.con_queue.push_front(q),
                    MessageKind::NonConfirmable => self.non_queue.push_front(q),
                }
            }
            evicted
        }
    }
}

use reference::{RefCache, RefLookup};

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        peer: u8,
        mid: u16,
        con: bool,
    },
    Respond {
        peer: u8,
        mid: u16,
        latest: bool,
        pick: usize,
        len: usize,
        fill: u8,
    },
    Forget {
        peer: u8,
        mid: u16,
    },
    Expire,
    Advance {
        millis: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u16..6, any::<bool>()).prop_map(|(peer, mid, con)| Op::Arrive { peer, mid, con }),
        4 => (0u8..4, 0u16..6, any::<bool>(), any::<usize>(), prop_oneof![0usize..16, 0usize..400], any::<u8>())
            .prop_map(|(peer, mid, latest, pick, len, fill)| Op::Respond { peer, mid, latest, pick, len, fill }),
        1 => (0u8..4, 0u16..6).prop_map(|(peer, mid)| Op::Forget { peer, mid }),
        1 => Just(Op::Expire),
        // Whole seconds too, so that lifetimes end exactly at some lookups.
        2 => prop_oneof![0u32..2_000, 0u32..150_000, (0u32..150).prop_map(|s| s * 1000)]
            .prop_map(|millis| Op::Advance { millis }),
    ]
}

fn addr(peer: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, peer), 5683 + u16::from(peer % 2)))
}

fn same(new: &Lookup<'_>, reference: &RefLookup<'_>, tickets: &[(u64, Ticket)]) -> bool {
    match (new, reference) {
        (Lookup::New(t), RefLookup::New(seq)) => tickets.last() == Some(&(*seq, *t)),
        (Lookup::InProgress, RefLookup::InProgress) | (Lookup::Ignore, RefLookup::Ignore) => true,
        (Lookup::Replay(a), RefLookup::Replay(b)) => a == b,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_compact_cache_behaves_like_the_reference(
        ops in proptest::collection::vec(op(), 1..300),
        max_entries in 1usize..12,
        extra_bytes in 0usize..1200,
    ) {
        let overhead = DedupCache::<()>::ENTRY_OVERHEAD;
        let limits = DedupLimits { max_entries, max_bytes: overhead + extra_bytes };
        let (con, non) = (Duration::from_secs(247), Duration::from_secs(145));
        let mut cache = DedupCache::new(con, non, limits);
        let mut model = RefCache::new(con, non, limits);
        let mut now = Instant::now();
        // Every ticket issued, as (the reference's sequence number, ours).
        let mut tickets: Vec<(u64, Ticket)> = Vec::new();
        let mut latest: std::collections::HashMap<(u8, u16), usize> = Default::default();
        for op in ops {
            match op {
                Op::Arrive { peer, mid, con } => {
                    let kind = if con { MessageKind::Confirmable } else { MessageKind::NonConfirmable };
                    let expected = model.lookup(now, &addr(peer), mid, kind);
                    if let RefLookup::New(seq) = expected {
                        let got = cache.lookup(now, &addr(peer), mid, kind);
                        let Lookup::New(ticket) = got else {
                            return Err(TestCaseError::fail(format!("{op:?}: {got:?}, expected New")));
                        };
                        tickets.push((seq, ticket));
                        latest.insert((peer, mid), tickets.len() - 1);
                    } else {
                        let got = cache.lookup(now, &addr(peer), mid, kind);
                        prop_assert!(same(&got, &expected, &tickets), "{:?}: {:?}, expected {:?}", op, got, expected);
                    }
                }
                Op::Respond { peer, mid, latest: use_latest, pick, len, fill } => {
                    let chosen = match (use_latest, latest.get(&(peer, mid))) {
                        (true, Some(&i)) => tickets.get(i),
                        _ if tickets.is_empty() => None,
                        _ => tickets.get(pick % tickets.len()),
                    };
                    if let Some(&(seq, ticket)) = chosen {
                        let response = vec![fill; len];
                        let expected = model.respond(&addr(peer), mid, seq, &response);
                        let got = cache.respond(&addr(peer), mid, ticket, &response);
                        prop_assert_eq!(got, expected, "{:?}", op);
                    }
                }
                Op::Forget { peer, mid } => {
                    model.forget(&addr(peer), mid);
                    cache.forget(&addr(peer), mid);
                }
                Op::Expire => {
                    model.expire(now);
                    cache.expire(now);
                }
                Op::Advance { millis } => now += Duration::from_millis(u64::from(millis)),
            }
            let stats: DedupStats = cache.stats();
            prop_assert_eq!(stats, model.stats(), "after {:?}", op);
            prop_assert_eq!(cache.len(), model.len());
            prop_assert_eq!(cache.is_empty(), model.is_empty());
            prop_assert_eq!(cache.next_expiry(), model.earliest_expiry(), "after {:?}", op);
            // The reference's answer is never later: it may be early.
            if let Some(ours) = cache.next_expiry() {
                prop_assert!(model.next_expiry().is_some_and(|theirs| theirs <= ours));
            }
        }
        let end = now + Duration::from_secs(1000);
        model.expire(end);
        cache.expire(end);
        prop_assert_eq!(cache.stats(), model.stats());
        prop_assert_eq!(cache.stats().bytes, 0);
        prop_assert_eq!(cache.next_expiry(), None);
    }
}

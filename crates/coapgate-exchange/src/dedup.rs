use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::InvalidParam;

/// Whether a message was confirmable; it decides the entry's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// CON: remembered for EXCHANGE_LIFETIME, duplicates get the response replayed.
    Confirmable,
    /// NON: remembered for NON_LIFETIME, duplicates are ignored.
    NonConfirmable,
}

/// How much the cache may hold. When either bound would be exceeded, the
/// oldest entries (by arrival) are evicted first and counted in
/// [`DedupStats::evictions`]; a duplicate of an evicted message is treated as
/// a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct DedupLimits {
    /// Most entries held at once.
    pub max_entries: usize,
    /// Most bytes held at once: cached responses plus a fixed per-entry
    /// overhead ([`DedupCache::ENTRY_OVERHEAD`]).
    pub max_bytes: usize,
}

impl DedupLimits {
    /// Checks the bounds leave room for at least one entry; names the first
    /// field that does not.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.max_entries == 0 {
            return Err(InvalidParam::new("max_entries", "must be at least 1"));
        }
        if self.max_bytes < DedupCache::<()>::ENTRY_OVERHEAD {
            return Err(InvalidParam::new(
                "max_bytes",
                "must be at least 256 (what one entry costs)",
            ));
        }
        Ok(())
    }
}

impl Default for DedupLimits {
    /// 500 000 entries or 128 MiB: a little over 2 000 messages per second
    /// sustained for the whole 247 s lifetime.
    fn default() -> Self {
        Self {
            max_entries: 500_000,
            max_bytes: 128 << 20,
        }
    }
}

/// Names one entry of the cache: a message ID from a peer, as first seen at
/// one time. A response recorded with a ticket lands only in the entry that
/// issued it, never in a later entry for the same message ID (after the
/// first was evicted or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// What the cache knows about a message ID from a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not seen within its lifetime: it is now remembered as in progress;
    /// process it and call [`DedupCache::respond`] with the response and
    /// this ticket.
    New(Ticket),
    /// A duplicate of a confirmable message still being processed: do not
    /// process it again; there is nothing to replay yet.
    InProgress,
    /// A duplicate of a confirmable message: send exactly these bytes again.
    Replay(&'a [u8]),
    /// A duplicate of a non-confirmable message: ignore it.
    Ignore,
}

/// Counters and gauges of the cache, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Entries held now.
    pub entries: usize,
    /// Bytes accounted now (see [`DedupLimits::max_bytes`]).
    pub bytes: usize,
    /// Duplicates recognised since creation.
    pub hits: u64,
    /// Entries evicted before their lifetime ended because a bound was hit.
    pub evictions: u64,
    /// Entries that reached the end of their lifetime.
    pub expirations: u64,
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

/// Message-ID deduplication with a bounded response cache (RFC 7252 §4.5).
///
/// `K` identifies the peer: a socket address for plain CoAP, a session for
/// DTLS. Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON) from the
/// first arrival. Two FIFO queues, one per lifetime, keep expiry and
/// eviction O(1) amortised.
#[derive(Debug)]
pub struct DedupCache<K> {
    entries: HashMap<(K, u16), Entry>,
    con_queue: VecDeque<Queued<K>>,
    non_queue: VecDeque<Queued<K>>,
    con_lifetime: Duration,
    non_lifetime: Duration,
    limits: DedupLimits,
    next_seq: u64,
    stats: DedupStats,
}

impl<K: Hash + Eq + Clone> DedupCache<K> {
    /// Bytes accounted per entry on top of its cached response: the key,
    /// the entry, the response's allocation, and the entry's share of the
    /// map and the queue including their spare capacity. Measured: a full
    /// cache of 500 000 plain-CoAP entries costs about 270 bytes of resident
    /// memory each (docs/performance.md).
    pub const ENTRY_OVERHEAD: usize = 256;

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
    /// remembered from now on as in progress and [`Lookup::New`] returned.
    pub fn lookup(
        &mut self,
        now: Instant,
        peer: &K,
        message_id: u16,
        kind: MessageKind,
    ) -> Lookup<'_> {
        let key = (peer.clone(), message_id);
        let live = self.entries.get(&key).is_some_and(|e| e.expires > now);
        if live {
            self.stats.hits += 1;
            let entry = &self.entries[&key];
            return match (entry.kind, &entry.response) {
                (MessageKind::NonConfirmable, _) => Lookup::Ignore,
                (MessageKind::Confirmable, None) => Lookup::InProgress,
                (MessageKind::Confirmable, Some(bytes)) => Lookup::Replay(bytes),
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
        Lookup::New(Ticket(seq))
    }

    /// Records the response a duplicate must get (the piggybacked response,
    /// or the empty ACK when the response goes separately) in the entry
    /// `ticket` names. Returns `false` when that entry is gone (expired or
    /// evicted meanwhile, even if the message ID was seen again since).
    pub fn respond(&mut self, peer: &K, message_id: u16, ticket: Ticket, response: &[u8]) -> bool {
        let key = (peer.clone(), message_id);
        let Some(entry) = self.entries.get_mut(&key).filter(|e| e.seq == ticket.0) else {
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
        self.stats.bytes -= Self::ENTRY_OVERHEAD + entry.response.as_ref().map_or(0, |r| r.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    const CON: MessageKind = MessageKind::Confirmable;
    const NON: MessageKind = MessageKind::NonConfirmable;

    #[test]
    fn validate_names_the_field() {
        assert_eq!(DedupLimits::default().validate(), Ok(()));
        let no_entries = DedupLimits {
            max_entries: 0,
            ..DedupLimits::default()
        };
        assert_eq!(
            no_entries.validate().map_err(|e| e.field),
            Err("max_entries")
        );
        let no_bytes = DedupLimits {
            max_bytes: 255,
            ..DedupLimits::default()
        };
        assert_eq!(no_bytes.validate().map_err(|e| e.field), Err("max_bytes"));
    }

    fn cache(limits: DedupLimits) -> DedupCache<u32> {
        DedupCache::new(Duration::from_secs(247), Duration::from_secs(145), limits)
    }

    /// Looks up a message that must be new; returns its ticket.
    fn new(c: &mut DedupCache<u32>, at: Instant, peer: u32, mid: u16, kind: MessageKind) -> Ticket {
        match c.lookup(at, &peer, mid, kind) {
            Lookup::New(ticket) => ticket,
            other => panic!("({peer}, {mid}) should be new, got {other:?}"),
        }
    }

    fn is_new(lookup: Lookup<'_>) -> bool {
        matches!(lookup, Lookup::New(_))
    }

    #[test]
    fn a_con_duplicate_replays_the_response_until_the_exchange_lifetime_ends() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits::default());
        let ticket = new(&mut c, t0, 1, 7, CON);
        assert_eq!(c.lookup(t0, &1, 7, CON), Lookup::InProgress);
        assert!(c.respond(&1, 7, ticket, b"ack"));
        let just_before = t0 + Duration::from_secs(247) - Duration::from_millis(1);
        assert_eq!(c.lookup(just_before, &1, 7, CON), Lookup::Replay(b"ack"));
        assert!(is_new(c.lookup(t0 + Duration::from_secs(247), &1, 7, CON)));
        assert_eq!(c.stats().hits, 2);
    }

    #[test]
    fn a_non_duplicate_is_ignored_for_the_non_lifetime() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits::default());
        new(&mut c, t0, 1, 7, NON);
        assert_eq!(
            c.lookup(t0 + Duration::from_secs(144), &1, 7, NON),
            Lookup::Ignore
        );
        assert!(is_new(c.lookup(t0 + Duration::from_secs(145), &1, 7, NON)));
    }

    #[test]
    fn peers_do_not_share_message_ids() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits::default());
        new(&mut c, t0, 1, 7, CON);
        new(&mut c, t0, 2, 7, CON);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn expire_collects_entries_and_accounting_returns_to_zero() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits::default());
        let ticket = new(&mut c, t0, 1, 1, CON);
        c.respond(&1, 1, ticket, &[0; 10]);
        new(&mut c, t0, 1, 2, NON);
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_secs(145)));
        c.expire(t0 + Duration::from_secs(145));
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(247));
        assert!(c.is_empty());
        assert_eq!(c.stats().bytes, 0);
        assert_eq!(c.stats().expirations, 2);
        assert_eq!(c.next_expiry(), None);
    }

    #[test]
    fn the_entry_bound_evicts_the_oldest_arrival_across_both_kinds() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits {
            max_entries: 3,
            max_bytes: usize::MAX,
        });
        new(&mut c, t0, 1, 1, CON);
        new(&mut c, t0, 1, 2, NON);
        new(&mut c, t0, 1, 3, CON);
        new(&mut c, t0, 1, 4, NON);
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evictions, 1);
        // Message 1 was the oldest: it is new again ...
        new(&mut c, t0, 1, 1, CON);
        // ... which evicted message 2 (NON, next oldest).
        assert_eq!(c.lookup(t0, &1, 3, CON), Lookup::InProgress);
        assert_eq!(c.lookup(t0, &1, 4, NON), Lookup::Ignore);
        assert_eq!(c.stats().evictions, 2);
    }

    #[test]
    fn the_byte_bound_evicts_older_entries_but_keeps_the_one_answered() {
        let t0 = Instant::now();
        let overhead = DedupCache::<u32>::ENTRY_OVERHEAD;
        let mut c = cache(DedupLimits {
            max_entries: 100,
            max_bytes: 3 * overhead + 100,
        });
        let tickets: Vec<Ticket> = (0..3).map(|mid| new(&mut c, t0, 1, mid, CON)).collect();
        c.respond(&1, 2, tickets[2], &[0; 150]);
        assert!(c.stats().bytes <= 3 * overhead + 100);
        assert_eq!(c.lookup(t0, &1, 2, CON), Lookup::Replay(&[0; 150]));
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn an_entry_larger_than_the_byte_bound_alone_is_kept() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits {
            max_entries: 10,
            max_bytes: 10,
        });
        let ticket = new(&mut c, t0, 1, 1, CON);
        assert!(c.respond(&1, 1, ticket, b"0123456789abcdef"));
        new(&mut c, t0, 1, 2, CON);
        assert_eq!(c.len(), 1, "the older entry made room");
    }

    #[test]
    fn respond_to_an_evicted_entry_reports_it() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits {
            max_entries: 1,
            max_bytes: usize::MAX,
        });
        let first = new(&mut c, t0, 1, 1, CON);
        let second = new(&mut c, t0, 1, 2, CON);
        assert!(!c.respond(&1, 1, first, b"late"));
        assert!(c.respond(&1, 2, second, b"ok"));
    }

    #[test]
    fn a_late_response_never_lands_in_a_newer_entry_for_the_same_message_id() {
        let t0 = Instant::now();
        let mut c = cache(DedupLimits {
            max_entries: 1,
            max_bytes: usize::MAX,
        });
        let old = new(&mut c, t0, 1, 1, CON);
        new(&mut c, t0, 1, 2, CON); // evicts message 1
        let newer = new(&mut c, t0, 1, 1, CON); // message 1 again: a new entry
        assert!(!c.respond(&1, 1, old, b"for the old one"));
        assert_eq!(c.lookup(t0, &1, 1, CON), Lookup::InProgress);
        assert!(c.respond(&1, 1, newer, b"for the new one"));
        assert_eq!(c.lookup(t0, &1, 1, CON), Lookup::Replay(b"for the new one"));
    }
}

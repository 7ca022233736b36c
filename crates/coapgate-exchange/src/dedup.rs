use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashTable};

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
                "must be at least 64 (what one entry costs)",
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

/// Adds another cache's counters and gauges (caches of several shards
/// reported as one).
impl std::ops::AddAssign for DedupStats {
    fn add_assign(&mut self, other: Self) {
        let Self {
            entries,
            bytes,
            hits,
            evictions,
            expirations,
        } = other;
        self.entries += entries;
        self.bytes += bytes;
        self.hits += hits;
        self.evictions += evictions;
        self.expirations += expirations;
    }
}

/// Marks a ring slot whose entry is gone (forgotten, evicted, or replaced).
const GONE: u32 = u32::MAX;

/// A ring slot reference in the index: the ring in the top bit, the slot's
/// ring-local sequence number (wrapping) in the other 31.
const RING_BIT: u32 = 1 << 31;
const SEQ_MASK: u32 = RING_BIT - 1;

/// One remembered message: 32 bytes in its lifetime's ring.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Arrival number, unique over the cache's life: the ticket, and the
    /// eviction order across both rings.
    seq: u64,
    /// End of life, in nanoseconds since the cache's epoch.
    expires: u64,
    /// Index into the peer table, or [`GONE`].
    peer: u32,
    /// The response's cell in its size class (see [`Responses`]).
    cell: u32,
    message_id: u16,
    /// The response's length when it lives in a small class.
    len: u16,
    /// The response's size class: [`NO_RESPONSE`], a small class, or [`BIG`].
    class: u8,
}

impl Slot {
    fn live(&self) -> bool {
        self.peer != GONE
    }
}

/// Entries of one lifetime in arrival order, which is also expiry order:
/// expiry pops the front, eviction takes the older of the two fronts.
/// Removal from the middle leaves a [`GONE`] slot, dropped when it reaches
/// the front; the front is always a live entry.
#[derive(Debug)]
struct Ring {
    slots: VecDeque<Slot>,
    /// Ring-local sequence number of the front slot (31 bits, wrapping).
    head: u32,
    lifetime: Duration,
    /// This ring's bit in an index reference.
    bit: u32,
    kind: MessageKind,
}

impl Ring {
    fn new(lifetime: Duration, kind: MessageKind) -> Self {
        Self {
            slots: VecDeque::new(),
            head: 0,
            lifetime,
            bit: match kind {
                MessageKind::Confirmable => 0,
                MessageKind::NonConfirmable => RING_BIT,
            },
            kind,
        }
    }

    fn position(&self, reference: u32) -> usize {
        ((reference & SEQ_MASK).wrapping_sub(self.head) & SEQ_MASK) as usize
    }

    fn reference(&self, position: usize) -> u32 {
        self.bit | (self.head.wrapping_add(position as u32) & SEQ_MASK)
    }

    fn push(&mut self, slot: Slot) -> u32 {
        self.slots.push_back(slot);
        self.reference(self.slots.len() - 1)
    }

    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.head = self.head.wrapping_add(1) & SEQ_MASK;
        Some(slot)
    }

    /// Drops gone slots at the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| !s.live()) {
            self.pop_front();
        }
    }

    /// The first live slot at or after `position` that is not `keep`.
    fn first_live_from(&self, position: usize, keep: Option<u32>) -> Option<(usize, u64)> {
        self.slots
            .range(position.min(self.slots.len())..)
            .enumerate()
            .map(|(i, s)| (position + i, s))
            .find(|(i, s)| s.live() && keep != Some(self.reference(*i)))
            .map(|(i, s)| (i, s.seq))
    }
}

/// No response recorded yet.
const NO_RESPONSE: u8 = 0;
/// Cell sizes of the small classes (class `c` is `CELL_SIZES[c - 1]`).
/// Responses are small (an empty ACK is 4 bytes, an ACK 2.04 with a token
/// 5–12, the answer to `/bootstrap` about 70); the classes waste at most a
/// third of a response above 8 bytes.
const CELL_SIZES: [usize; 12] = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256];
/// A response larger than the largest cell: a boxed slice of its own.
const BIG: u8 = CELL_SIZES.len() as u8 + 1;

/// Fixed-size cells of one size class, back to back, with a free list.
#[derive(Debug, Default)]
struct Cells {
    bytes: Vec<u8>,
    free: Vec<u32>,
}

/// The cached responses: small ones in size-class slabs (no allocation and
/// no allocator header per response), big ones boxed.
#[derive(Debug, Default)]
struct Responses {
    small: [Cells; CELL_SIZES.len()],
    big: Vec<Box<[u8]>>,
    big_free: Vec<u32>,
}

impl Responses {
    /// Stores a response; returns its class, cell and (small) length.
    fn store(&mut self, response: &[u8]) -> (u8, u32, u16) {
        let small = CELL_SIZES
            .iter()
            .position(|&size| response.len() <= size)
            .and_then(|c| Some((c, self.small.get_mut(c)?, CELL_SIZES.get(c)?)));
        if let Some((c, cells, &size)) = small {
            let cell = match cells.free.pop() {
                Some(cell) => {
                    let start = cell as usize * size;
                    if let Some(dst) = cells.bytes.get_mut(start..start + response.len()) {
                        dst.copy_from_slice(response);
                    }
                    cell
                }
                None => {
                    let cell = (cells.bytes.len() / size) as u32;
                    cells.bytes.extend_from_slice(response);
                    cells.bytes.resize((cell as usize + 1) * size, 0);
                    cell
                }
            };
            // c < 12 and response.len() <= 256: both fit.
            return (c as u8 + 1, cell, response.len() as u16);
        }
        let boxed: Box<[u8]> = response.into();
        let cell = match self.big_free.pop() {
            Some(cell) => {
                if let Some(at) = self.big.get_mut(cell as usize) {
                    *at = boxed;
                }
                cell
            }
            None => {
                self.big.push(boxed);
                (self.big.len() - 1) as u32
            }
        };
        (BIG, cell, 0)
    }

    fn get(&self, slot: &Slot) -> Option<&[u8]> {
        match slot.class {
            NO_RESPONSE => None,
            BIG => self.big.get(slot.cell as usize).map(|b| &b[..]),
            class => {
                let c = usize::from(class) - 1;
                let start = slot.cell as usize * CELL_SIZES.get(c)?;
                self.small
                    .get(c)?
                    .bytes
                    .get(start..start + usize::from(slot.len))
            }
        }
    }

    /// The length of the slot's response (0 if none).
    fn len(&self, slot: &Slot) -> usize {
        match slot.class {
            NO_RESPONSE => 0,
            BIG => self.big.get(slot.cell as usize).map_or(0, |b| b.len()),
            _ => usize::from(slot.len),
        }
    }

    /// Frees the slot's response.
    fn free(&mut self, slot: &Slot) {
        match slot.class {
            NO_RESPONSE => {}
            BIG => {
                if let Some(at) = self.big.get_mut(slot.cell as usize) {
                    *at = Box::default();
                    self.big_free.push(slot.cell);
                }
            }
            class => {
                if let Some(cells) = self.small.get_mut(usize::from(class) - 1) {
                    cells.free.push(slot.cell);
                }
            }
        }
    }
}

/// A peer interned as a `u32`, with the number of entries that name it.
#[derive(Debug)]
struct Peer<K> {
    key: Option<K>,
    refs: u32,
}

/// The peers that have entries, each stored once however many message IDs
/// it has: an entry names its peer by index.
#[derive(Debug)]
struct Peers<K> {
    slots: Vec<Peer<K>>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl<K: Hash + Eq> Peers<K> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
        }
    }

    fn find(&self, hasher: &DefaultHashBuilder, peer: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hasher.hash_one(peer), |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|p| p.key.as_ref() == Some(peer))
            })
            .copied()
    }

    /// The peer's index, with one more reference.
    fn acquire(&mut self, hasher: &DefaultHashBuilder, peer: &K) -> u32
    where
        K: Clone,
    {
        if let Some(i) = self.find(hasher, peer) {
            if let Some(p) = self.slots.get_mut(i as usize) {
                p.refs += 1;
            }
            return i;
        }
        let entry = Peer {
            key: Some(peer.clone()),
            refs: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(at) = self.slots.get_mut(i as usize) {
                    *at = entry;
                }
                i
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hasher.hash_one(peer), i, |&j| {
            slots
                .get(j as usize)
                .and_then(|p| p.key.as_ref())
                .map_or(0, |k| hasher.hash_one(k))
        });
        i
    }

    /// Drops one reference; the last one frees the peer.
    fn release(&mut self, hasher: &DefaultHashBuilder, i: u32) {
        let Some(p) = self.slots.get_mut(i as usize) else {
            return;
        };
        p.refs = p.refs.saturating_sub(1);
        if p.refs > 0 {
            return;
        }
        let Some(key) = p.key.take() else { return };
        if let Ok(entry) = self.index.find_entry(hasher.hash_one(&key), |&j| j == i) {
            entry.remove();
        }
        self.free.push(i);
    }
}

/// Message-ID deduplication with a bounded response cache (RFC 7252 §4.5).
///
/// `K` identifies the peer: a socket address for plain CoAP, a session for
/// DTLS. Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON) from the
/// first arrival. Two rings, one per lifetime, keep expiry and eviction O(1)
/// amortised.
///
/// Compact (decision 99): each peer is stored once and entries name it by a
/// `u32` index; an entry is a 32-byte slot in its lifetime's ring; a hash
/// index (keyed, randomly seeded: peers and message IDs are chosen by
/// whoever sends) maps (peer, message ID) to a 4-byte ring reference; the
/// responses live in size-class slabs. See [`ENTRY_OVERHEAD`](Self::ENTRY_OVERHEAD).
pub struct DedupCache<K> {
    hasher: DefaultHashBuilder,
    /// (peer, message ID) → ring reference, hashed by [`key_hash`].
    index: HashTable<u32>,
    peers: Peers<K>,
    con: Ring,
    non: Ring,
    responses: Responses,
    /// Times are kept as nanoseconds since this instant (set by the first
    /// lookup, a while before it).
    epoch: Option<Instant>,
    limits: DedupLimits,
    next_seq: u64,
    stats: DedupStats,
}

impl<K> std::fmt::Debug for DedupCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupCache")
            .field("con_lifetime", &self.con.lifetime)
            .field("non_lifetime", &self.non.lifetime)
            .field("limits", &self.limits)
            .field("peers", &self.peers.index.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn key_hash(hasher: &DefaultHashBuilder, peer: u32, message_id: u16) -> u64 {
    hasher.hash_one((u64::from(peer) << 16) | u64::from(message_id))
}

/// How far before the first lookup the epoch lies, so that a caller's
/// clock may step back a little without losing precision.
const EPOCH_SLACK: Duration = Duration::from_secs(1 << 20);

/// Nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<K: Hash + Eq + Clone> DedupCache<K> {
    /// Bytes accounted per entry on top of its cached response: its ring
    /// slot, its share of the index and of the peer table, including their
    /// spare capacity, and the size-class rounding of the response.
    /// Measured: a full cache of 500 000 plain-CoAP entries from 64 000
    /// peers with 8-byte responses costs about 50 bytes of resident memory
    /// each beyond the response (`cargo bench -p coapgate-exchange --bench
    /// dedup_memory`, docs/performance.md), 500 000 entries from as many
    /// peers about 100; 64 leaves room for the growth slack of the ring and
    /// the index and for the size-class rounding of responses.
    pub const ENTRY_OVERHEAD: usize = 64;

    /// A cache with these lifetimes (usually
    /// [`TransmissionParams::exchange_lifetime`](crate::TransmissionParams::exchange_lifetime)
    /// and [`non_lifetime`](crate::TransmissionParams::non_lifetime)) and bounds.
    pub fn new(con_lifetime: Duration, non_lifetime: Duration, limits: DedupLimits) -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            index: HashTable::new(),
            peers: Peers::new(),
            con: Ring::new(con_lifetime, MessageKind::Confirmable),
            non: Ring::new(non_lifetime, MessageKind::NonConfirmable),
            responses: Responses::default(),
            epoch: None,
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
        let epoch = *self
            .epoch
            .get_or_insert_with(|| now.checked_sub(EPOCH_SLACK).unwrap_or(now));
        let tick = nanos(now.saturating_duration_since(epoch));
        if let Some(reference) = self.find(peer, message_id) {
            if self.slot(reference).is_some_and(|s| s.expires > tick) {
                self.stats.hits += 1;
                let ring = self.ring(reference);
                let slot = ring.slots.get(ring.position(reference));
                return match (ring.kind, slot.and_then(|s| self.responses.get(s))) {
                    (MessageKind::NonConfirmable, _) => Lookup::Ignore,
                    (MessageKind::Confirmable, None) => Lookup::InProgress,
                    (MessageKind::Confirmable, Some(bytes)) => Lookup::Replay(bytes),
                };
            }
            // Expired but not yet collected: it ends here.
            self.remove(reference);
            self.stats.expirations += 1;
        }
        self.make_room(Self::ENTRY_OVERHEAD);
        let peer = self.peers.acquire(&self.hasher, peer);
        let seq = self.next_seq;
        self.next_seq += 1;
        let ring = match kind {
            MessageKind::Confirmable => &mut self.con,
            MessageKind::NonConfirmable => &mut self.non,
        };
        let reference = ring.push(Slot {
            seq,
            expires: tick.saturating_add(nanos(ring.lifetime)),
            peer,
            cell: 0,
            message_id,
            len: 0,
            class: NO_RESPONSE,
        });
        let (con, non) = (&self.con, &self.non);
        let hasher = &self.hasher;
        self.index
            .insert_unique(key_hash(hasher, peer, message_id), reference, |&r| {
                slot_of(con, non, r).map_or(0, |s| key_hash(hasher, s.peer, s.message_id))
            });
        self.stats.entries += 1;
        self.stats.bytes += Self::ENTRY_OVERHEAD;
        Lookup::New(Ticket(seq))
    }

    /// Records the response a duplicate must get (the piggybacked response,
    /// or the empty ACK when the response goes separately) in the entry
    /// `ticket` names. Returns `false` when that entry is gone (expired or
    /// evicted meanwhile, even if the message ID was seen again since).
    pub fn respond(&mut self, peer: &K, message_id: u16, ticket: Ticket, response: &[u8]) -> bool {
        let Some(reference) = self.find(peer, message_id) else {
            return false;
        };
        let Some(&old) = self.slot(reference).filter(|s| s.seq == ticket.0) else {
            return false;
        };
        let old_len = self.responses.len(&old);
        self.responses.free(&old);
        let (class, cell, len) = self.responses.store(response);
        if let Some(slot) = self.slot_mut(reference) {
            slot.class = class;
            slot.cell = cell;
            slot.len = len;
        }
        self.stats.bytes = self.stats.bytes - old_len + response.len();
        // Over the byte bound: evict the oldest entries, never the one just
        // answered unless it is alone.
        let mut from = [0, 0];
        while self.stats.bytes > self.limits.max_bytes && self.stats.entries > 1 {
            if !self.evict_oldest(Some(reference), &mut from) {
                break;
            }
        }
        true
    }

    /// Forgets the entry without counting it anywhere; used when a message
    /// turned out not to need deduplication after all.
    pub fn forget(&mut self, peer: &K, message_id: u16) {
        if let Some(reference) = self.find(peer, message_id) {
            self.remove(reference);
        }
    }

    /// Drops every entry whose lifetime has ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        let Some(epoch) = self.epoch else { return };
        let tick = nanos(now.saturating_duration_since(epoch));
        for kind in [MessageKind::Confirmable, MessageKind::NonConfirmable] {
            loop {
                let ring = match kind {
                    MessageKind::Confirmable => &self.con,
                    MessageKind::NonConfirmable => &self.non,
                };
                // The front is live (rings are trimmed after every removal).
                match ring.slots.front() {
                    Some(front) if front.expires <= tick => {
                        let reference = ring.reference(0);
                        self.remove(reference);
                        self.stats.expirations += 1;
                    }
                    _ => break,
                }
            }
        }
    }

    /// The next instant at which [`expire`](Self::expire) has work (may be
    /// early when the front entry was already evicted).
    pub fn next_expiry(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        let con = self.con.slots.front().map(|s| s.expires);
        let non = self.non.slots.front().map(|s| s.expires);
        let expires = match (con, non) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        epoch.checked_add(Duration::from_nanos(expires))
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.stats.entries
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.stats.entries == 0
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// The ring reference of the live entry for this message, if any.
    fn find(&self, peer: &K, message_id: u16) -> Option<u32> {
        let peer = self.peers.find(&self.hasher, peer)?;
        let (con, non) = (&self.con, &self.non);
        self.index
            .find(key_hash(&self.hasher, peer, message_id), |&r| {
                slot_of(con, non, r).is_some_and(|s| s.peer == peer && s.message_id == message_id)
            })
            .copied()
    }

    fn ring(&self, reference: u32) -> &Ring {
        if reference & RING_BIT == 0 {
            &self.con
        } else {
            &self.non
        }
    }

    fn slot(&self, reference: u32) -> Option<&Slot> {
        slot_of(&self.con, &self.non, reference)
    }

    fn slot_mut(&mut self, reference: u32) -> Option<&mut Slot> {
        let ring = if reference & RING_BIT == 0 {
            &mut self.con
        } else {
            &mut self.non
        };
        let position = ring.position(reference);
        ring.slots.get_mut(position)
    }

    /// Removes a live entry: out of the index, its slot gone, its response
    /// and its peer reference released, its bytes no longer counted.
    fn remove(&mut self, reference: u32) {
        let Some(slot) = self.slot_mut(reference) else {
            return;
        };
        let old = *slot;
        slot.peer = GONE;
        slot.class = NO_RESPONSE;
        if let Ok(entry) = self
            .index
            .find_entry(key_hash(&self.hasher, old.peer, old.message_id), |&r| {
                r == reference
            })
        {
            entry.remove();
        }
        self.stats.bytes -= Self::ENTRY_OVERHEAD + self.responses.len(&old);
        self.stats.entries -= 1;
        self.responses.free(&old);
        self.peers.release(&self.hasher, old.peer);
        // Only this ring changed; the other's front is still live.
        if reference & RING_BIT == 0 {
            self.con.trim();
        } else {
            self.non.trim();
        }
    }

    fn make_room(&mut self, incoming: usize) {
        let mut from = [0, 0];
        while self.stats.entries > 0
            && (self.stats.entries >= self.limits.max_entries
                || self.stats.bytes + incoming > self.limits.max_bytes)
        {
            if !self.evict_oldest(None, &mut from) {
                break;
            }
        }
    }

    /// Evicts the live entry that arrived first (smallest sequence number)
    /// among both rings, never `keep`. Returns whether anything was evicted.
    /// `from` holds, per ring, the position before which no candidate is
    /// left (only `keep` and gone slots), so that repeated evictions past a
    /// kept front do not scan the same slots again; positions stay valid
    /// because a ring's front moves only when it is gone, and with `keep`
    /// at the front it is not.
    fn evict_oldest(&mut self, keep: Option<u32>, from: &mut [usize; 2]) -> bool {
        let [con_from, non_from] = from;
        let con = self.con.first_live_from(*con_from, keep);
        let non = self.non.first_live_from(*non_from, keep);
        let victim = match (con, non) {
            (Some((c, cs)), Some((_, ns))) if cs < ns => self.con.reference(c),
            (_, Some((n, _))) => self.non.reference(n),
            (Some((c, _)), None) => self.con.reference(c),
            (None, None) => return false,
        };
        let (ring, at) = if victim & RING_BIT == 0 {
            (&self.con, con_from)
        } else {
            (&self.non, non_from)
        };
        // Everything before the victim is gone or kept; the removal may
        // move the front, so count from the ring's new front.
        let position = ring.position(victim);
        let head_before = ring.head;
        self.remove(victim);
        let ring = if victim & RING_BIT == 0 {
            &self.con
        } else {
            &self.non
        };
        let popped = (ring.head.wrapping_sub(head_before) & SEQ_MASK) as usize;
        *at = (position + 1).saturating_sub(popped);
        // The other ring did not change.
        self.stats.evictions += 1;
        true
    }
}

/// The slot a ring reference names, if it is in its ring.
fn slot_of<'a>(con: &'a Ring, non: &'a Ring, reference: u32) -> Option<&'a Slot> {
    let ring = if reference & RING_BIT == 0 { con } else { non };
    ring.slots.get(ring.position(reference))
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
            max_bytes: DedupCache::<u32>::ENTRY_OVERHEAD - 1,
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

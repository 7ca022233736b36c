use std::collections::BTreeMap;

use coapgate_exchange::DedupStats;

/// A request counter's labels: the resource and the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// `telemetry`, `unknown` (no such path), … as a stable label.
    pub resource: &'static str,
    /// The response code as `2.04`-style text.
    pub code: &'static str,
}

/// Counters and gauges of the engine, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Requests answered, by resource and code.
    pub requests: BTreeMap<RequestKey, u64>,
    /// Datagrams that were not CoAP (dropped or answered RST).
    pub malformed: u64,
    /// Empty CON messages (pings) answered with RST.
    pub pings: u64,
    /// Duplicates answered from the cache or ignored.
    pub duplicates: u64,
    /// Requests refused 4.29 Too Many Requests: over their device's rate
    /// limit (also counted in `requests`).
    pub rate_limited: u64,
    /// The deduplication cache.
    pub dedup: DedupStats,
    /// Publishes awaiting the broker now.
    pub pending_publishes: usize,
    /// Store writes awaiting the store now.
    pub pending_store_writes: usize,
    /// Separate responses retransmitted.
    pub retransmissions: u64,
    /// Separate responses given up after MAX_RETRANSMIT.
    pub retransmit_give_ups: u64,
}

/// Adds another engine's counters and gauges (the engines of several
/// shards reported as one).
impl std::ops::AddAssign for EndpointStats {
    fn add_assign(&mut self, other: Self) {
        let Self {
            requests,
            malformed,
            pings,
            duplicates,
            rate_limited,
            dedup,
            pending_publishes,
            pending_store_writes,
            retransmissions,
            retransmit_give_ups,
        } = other;
        for (key, value) in requests {
            *self.requests.entry(key).or_default() += value;
        }
        self.malformed += malformed;
        self.pings += pings;
        self.duplicates += duplicates;
        self.rate_limited += rate_limited;
        self.dedup += dedup;
        self.pending_publishes += pending_publishes;
        self.pending_store_writes += pending_store_writes;
        self.retransmissions += retransmissions;
        self.retransmit_give_ups += retransmit_give_ups;
    }
}

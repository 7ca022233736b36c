use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::TransmissionParams;

/// What [`Retransmissions::poll`] asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum RetransmitEvent<K> {
    /// Send these bytes to the peer again.
    Retransmit {
        /// The peer the message is for.
        peer: K,
        /// The message's ID.
        message_id: u16,
        /// The message, exactly as first sent.
        bytes: Vec<u8>,
    },
    /// MAX_RETRANSMIT retransmissions went unacknowledged: the message is
    /// abandoned (RFC 7252 §4.2).
    GaveUp {
        /// The peer the message was for.
        peer: K,
        /// The message's ID.
        message_id: u16,
    },
}

#[derive(Debug)]
struct Outstanding {
    bytes: Box<[u8]>,
    retransmissions: u32,
    timeout: Duration,
    due: Instant,
    timer: u64,
}

/// Confirmable messages we sent and not yet saw acknowledged, with
/// exponential back-off (RFC 7252 §4.2): the first timeout is drawn from
/// `[ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR]`, each retransmission
/// doubles it, and after MAX_RETRANSMIT retransmissions plus one last
/// timeout the message is given up.
#[derive(Debug)]
pub struct Retransmissions<K> {
    params: TransmissionParams,
    outstanding: HashMap<(K, u16), Outstanding>,
    timers: BTreeMap<(Instant, u64), (K, u16)>,
    next_timer: u64,
}

impl<K: Hash + Eq + Clone> Retransmissions<K> {
    /// Nothing outstanding yet.
    pub fn new(params: TransmissionParams) -> Self {
        Self {
            params,
            outstanding: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
        }
    }

    /// Tracks a confirmable message the caller has just sent for the first
    /// time. `jitter` in `[0, 1]` picks the initial timeout within its
    /// random range. A message already tracked under the same key is replaced.
    pub fn start(&mut self, now: Instant, peer: K, message_id: u16, bytes: &[u8], jitter: f64) {
        let timeout = self.params.initial_timeout(jitter);
        let due = now + timeout;
        let timer = self.next_timer;
        self.next_timer += 1;
        let key = (peer, message_id);
        self.timers.insert((due, timer), key.clone());
        if let Some(old) = self.outstanding.insert(
            key,
            Outstanding {
                bytes: bytes.into(),
                retransmissions: 0,
                timeout,
                due,
                timer,
            },
        ) {
            self.timers.remove(&(old.due, old.timer));
        }
    }

    /// The peer acknowledged (ACK) or rejected (RST) the message: stop.
    /// Returns whether it was outstanding.
    pub fn acknowledge(&mut self, peer: &K, message_id: u16) -> bool {
        match self.outstanding.remove(&(peer.clone(), message_id)) {
            Some(o) => {
                self.timers.remove(&(o.due, o.timer));
                true
            }
            None => false,
        }
    }

    /// The next due retransmission or give-up at `now`, if any. Call until
    /// it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<RetransmitEvent<K>> {
        let (&(due, timer), _) = self.timers.first_key_value()?;
        if due > now {
            return None;
        }
        let (peer, message_id) = self.timers.remove(&(due, timer))?;
        let key = (peer, message_id);
        let max = self.params.max_retransmit;
        let o = self.outstanding.get_mut(&key)?;
        if o.retransmissions >= max {
            self.outstanding.remove(&key);
            let (peer, message_id) = key;
            return Some(RetransmitEvent::GaveUp { peer, message_id });
        }
        o.retransmissions += 1;
        o.timeout *= 2;
        o.due = now + o.timeout;
        o.timer = self.next_timer;
        self.next_timer += 1;
        let bytes = o.bytes.to_vec();
        self.timers.insert((o.due, o.timer), key.clone());
        let (peer, message_id) = key;
        Some(RetransmitEvent::Retransmit {
            peer,
            message_id,
            bytes,
        })
    }

    /// When [`poll`](Self::poll) has work next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first_key_value().map(|(&(due, _), _)| due)
    }

    /// Messages outstanding.
    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut Retransmissions<u8>, now: Instant) -> Vec<RetransmitEvent<u8>> {
        std::iter::from_fn(|| r.poll(now)).collect()
    }

    #[test]
    fn backs_off_exponentially_then_gives_up_after_max_retransmit() {
        let t0 = Instant::now();
        let mut r = Retransmissions::new(TransmissionParams::default());
        r.start(t0, 9, 100, b"resp", 0.0);
        let mut at = t0;
        // Timeouts 2, 4, 8, 16 s: four retransmissions.
        for (n, wait) in [2u64, 4, 8, 16].into_iter().enumerate() {
            assert!(
                drain(
                    &mut r,
                    at + Duration::from_secs(wait) - Duration::from_millis(1)
                )
                .is_empty()
            );
            at += Duration::from_secs(wait);
            assert_eq!(r.next_timeout(), Some(at), "retransmission {}", n + 1);
            assert_eq!(
                drain(&mut r, at),
                vec![RetransmitEvent::Retransmit {
                    peer: 9,
                    message_id: 100,
                    bytes: b"resp".to_vec()
                }]
            );
        }
        // After the fourth retransmission, one last timeout of 32 s: give up.
        at += Duration::from_secs(32);
        assert_eq!(
            drain(&mut r, at),
            vec![RetransmitEvent::GaveUp {
                peer: 9,
                message_id: 100
            }]
        );
        assert!(r.is_empty());
        assert_eq!(r.next_timeout(), None);
        // 2+4+8+16+32 = 62 s = MAX_TRANSMIT_WAIT at the minimum random factor.
        assert_eq!(at - t0, Duration::from_secs(62));
    }

    #[test]
    fn the_initial_timeout_follows_the_jitter() {
        let t0 = Instant::now();
        let mut r = Retransmissions::new(TransmissionParams::default());
        r.start(t0, 1, 1, b"x", 1.0);
        assert_eq!(r.next_timeout(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn an_ack_stops_retransmission() {
        let t0 = Instant::now();
        let mut r = Retransmissions::new(TransmissionParams::default());
        r.start(t0, 1, 5, b"x", 0.0);
        r.start(t0, 2, 5, b"y", 0.0);
        assert!(r.acknowledge(&1, 5));
        assert!(!r.acknowledge(&1, 5), "only once");
        assert!(!r.acknowledge(&3, 5), "other peers' IDs are theirs");
        let events = drain(&mut r, t0 + Duration::from_secs(2));
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0],
            RetransmitEvent::Retransmit { peer: 2, .. }
        ));
    }
}

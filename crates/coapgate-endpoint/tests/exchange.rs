//! spec.md §4 on a fake clock: deduplication lifetimes, duplicates while the
//! broker has not confirmed, the piggyback window, separate responses and
//! their retransmission, cache bounds. Each 247-second story runs in
//! microseconds.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use coapgate_endpoint::codec::{self, MessageClass, MessageType, ResponseType};
use coapgate_endpoint::{EndpointConfig, PublishResult};
use coapgate_exchange::DedupLimits;
use support::*;

const SEC: Duration = Duration::from_secs(1);

fn post(mid: u16) -> Vec<u8> {
    Req::con_post(mid)
        .path("data")
        .query("t=x")
        .token(&[0xa, 0xb])
        .payload(b"v")
        .bytes()
}

#[test]
fn a_con_duplicate_within_247_s_gets_the_identical_response_and_no_second_publish() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    let first = w.broker(0, PublishResult::Confirmed);
    w.advance(246 * SEC);
    let again = w.deliver(link, &post(10));
    assert_eq!(again, first, "byte-identical replay");
    assert_eq!(w.published.len(), 1);
    w.advance(SEC - Duration::from_millis(1));
    assert_eq!(w.deliver(link, &post(10)), first);
    assert_eq!(w.published.len(), 1);
}

#[test]
fn after_247_s_the_same_message_id_is_a_new_message() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    w.broker(0, PublishResult::Confirmed);
    w.advance(247 * SEC);
    assert!(
        w.deliver(link, &post(10)).is_empty(),
        "processed, waiting for the broker"
    );
    assert_eq!(w.published.len(), 2);
}

#[test]
fn a_non_duplicate_is_ignored_for_145_s() {
    let mut w = World::new();
    let link = device_link(2);
    let non = Req::non_post(3).payload(b"v").bytes();
    w.deliver(link, &non);
    w.broker(0, PublishResult::Confirmed);
    w.advance(144 * SEC);
    assert!(w.deliver(link, &non).is_empty());
    assert_eq!(w.published.len(), 1);
    w.advance(SEC);
    w.deliver(link, &non);
    assert_eq!(w.published.len(), 2);
}

#[test]
fn the_same_message_id_from_another_port_is_another_message() {
    let mut w = World::new();
    w.deliver(device_link(2), &post(10));
    let other_port = coapgate_endpoint::Link::Udp("127.0.0.2:40001".parse().unwrap());
    w.deliver(other_port, &post(10));
    assert_eq!(w.published.len(), 2);
}

#[test]
fn a_duplicate_while_the_puback_is_pending_is_not_processed_again() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    w.advance(Duration::from_millis(500));
    assert!(
        w.deliver(link, &post(10)).is_empty(),
        "nothing to replay yet"
    );
    assert_eq!(w.published.len(), 1);
    let piggybacked = w.broker(0, PublishResult::Confirmed);
    assert!(one(piggybacked.clone()).is(ResponseType::Changed));
    assert_eq!(w.deliver(link, &post(10)), piggybacked);
    assert_eq!(w.published.len(), 1);
}

#[test]
fn a_slow_broker_gets_an_empty_ack_at_the_window_then_a_separate_con_response() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    let sent = w.advance(2 * SEC);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0, SEC,
        "the empty ACK goes exactly at the 1 s window"
    );
    assert_eq!(sent[0].1, codec::empty_ack(10));
    // A duplicate of the request now gets the empty ACK again.
    assert_eq!(w.deliver(link, &post(10)), vec![codec::empty_ack(10)]);
    let separate = one(w.broker(0, PublishResult::Confirmed));
    assert_eq!(separate.kind, MessageType::Confirmable);
    assert!(separate.is(ResponseType::Changed));
    assert_eq!(separate.token, [0xa, 0xb], "the request's token");
    assert_ne!(separate.message_id, 10, "a message ID of our own");
    // The device acknowledges; nothing more is sent.
    let ack = codec::empty_ack(separate.message_id);
    assert!(w.deliver(link, &ack).is_empty());
    assert!(w.advance(100 * SEC).is_empty());
    assert_eq!(w.published.len(), 1);
}

#[test]
fn an_unacknowledged_separate_response_is_retransmitted_with_back_off_then_given_up() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    w.advance(SEC);
    let separate = w.broker(0, PublishResult::Confirmed);
    let sent_at = w.now - w.start;
    let retransmits = w.advance(200 * SEC);
    assert_eq!(retransmits.len(), 4, "MAX_RETRANSMIT = 4");
    for (_, bytes) in &retransmits {
        assert_eq!(bytes, &separate[0], "retransmissions are the same bytes");
    }
    // Each gap doubles; the first lies in [2 s, 3 s].
    let mut previous = sent_at;
    let mut gaps = Vec::new();
    for (at, _) in &retransmits {
        gaps.push(*at - previous);
        previous = *at;
    }
    assert!(gaps[0] >= 2 * SEC && gaps[0] <= 3 * SEC, "{gaps:?}");
    for pair in gaps.windows(2) {
        let ratio = pair[1].as_secs_f64() / pair[0].as_secs_f64();
        assert!((ratio - 2.0).abs() < 1e-6, "{gaps:?}");
    }
    let stats = w.endpoint.stats();
    assert_eq!(stats.retransmissions, 4);
    assert_eq!(stats.retransmit_give_ups, 1);
}

#[test]
fn an_rst_to_a_separate_response_stops_retransmission() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    w.advance(SEC);
    let separate = one(w.broker(0, PublishResult::Confirmed));
    w.deliver(link, &codec::reset(separate.message_id));
    assert!(w.advance(100 * SEC).is_empty());
}

#[test]
fn an_ack_from_another_peer_does_not_stop_retransmission() {
    let mut w = World::new();
    w.deliver(device_link(2), &post(10));
    w.advance(SEC);
    let separate = one(w.broker(0, PublishResult::Confirmed));
    w.deliver(device_link(3), &codec::empty_ack(separate.message_id));
    assert_eq!(w.advance(4 * SEC).len(), 1);
}

#[test]
fn a_lost_ack_is_recovered_by_the_devices_retransmission() {
    let mut w = World::new();
    let link = device_link(2);
    w.deliver(link, &post(10));
    let lost = w.broker(0, PublishResult::Confirmed);
    // The device retransmits after ACK_TIMEOUT and then twice more.
    for wait in [2, 4, 8] {
        w.advance(wait * SEC);
        assert_eq!(w.deliver(link, &post(10)), lost);
    }
    assert_eq!(w.published.len(), 1);
}

#[test]
fn error_responses_are_replayed_too() {
    let mut w = World::new();
    let bad = Req::con_post(4).path("nope").bytes();
    let first = w.deliver(device_link(2), &bad);
    assert_eq!(w.deliver(device_link(2), &bad), first);
    assert_eq!(w.endpoint.stats().duplicates, 1);
}

#[test]
fn the_cache_is_bounded_and_evicts_the_oldest_first() {
    let mut w = World::with_config({
        let mut config = EndpointConfig::default();
        config.dedup = DedupLimits {
            max_entries: 3,
            max_bytes: 1 << 20,
        };
        config
    });
    let link = device_link(2);
    for mid in 0..4u16 {
        w.deliver(link, &post(mid));
        w.broker(u64::from(mid), PublishResult::Confirmed);
    }
    let stats = w.endpoint.stats();
    assert_eq!(stats.dedup.entries, 3);
    assert_eq!(stats.dedup.evictions, 1);
    // Message 3 is still remembered, message 0 was evicted: processed again.
    w.deliver(link, &post(3));
    assert_eq!(w.published.len(), 4);
    w.deliver(link, &post(0));
    assert_eq!(w.published.len(), 5);
}

#[test]
fn an_answer_for_an_evicted_exchange_never_lands_in_a_newer_one() {
    let mut w = World::with_config({
        let mut config = EndpointConfig::default();
        config.dedup = DedupLimits {
            max_entries: 1,
            max_bytes: 1 << 20,
        };
        config
    });
    let link = device_link(2);
    w.deliver(link, &post(1)); // publish 0
    w.deliver(link, &post(2)); // publish 1; evicts message 1's entry
    w.deliver(link, &post(1)); // evicts 2; message 1 is new again: publish 2
    assert_eq!(w.published.len(), 3);
    // The first exchange's answer goes out, but is not recorded for the
    // second copy, which is still in progress.
    assert!(one(w.broker(0, PublishResult::Confirmed)).is(ResponseType::Changed));
    assert!(w.deliver(link, &post(1)).is_empty(), "still in progress");
    let second = w.broker(2, PublishResult::Unavailable);
    assert!(one(second.clone()).is(ResponseType::BadGateway));
    assert_eq!(
        w.deliver(link, &post(1)),
        second,
        "the second exchange's own answer"
    );
}

#[test]
fn dedup_entries_expire_and_the_cache_empties() {
    let mut w = World::new();
    let link = device_link(2);
    for mid in 0..10 {
        w.deliver(link, &post(mid));
        w.broker(u64::from(mid), PublishResult::Confirmed);
    }
    assert_eq!(w.endpoint.stats().dedup.entries, 10);
    w.advance(247 * SEC);
    let stats = w.endpoint.stats();
    assert_eq!(stats.dedup.entries, 0);
    assert_eq!(stats.dedup.bytes, 0);
    assert_eq!(
        w.endpoint.poll_timeout(),
        None,
        "nothing left to wake up for"
    );
}

/// A device that behaves like libcoap: CON requests retransmitted with
/// back-off until a response (piggybacked, or separate after an empty ACK),
/// separate responses acknowledged.
mod lossy {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// A tiny deterministic PRNG (xorshift64*), so the schedule is the same
    /// on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn millis(&mut self, max: u64) -> Duration {
            Duration::from_millis(self.next() % max)
        }
    }

    #[derive(Debug)]
    enum Event {
        ToEndpoint(Vec<u8>),
        ToDevice(Vec<u8>),
        Broker(u64),
        DeviceTimer(u16),
    }

    fn run(seed: u64, requests: u16) {
        let mut rng = Rng(seed);
        let mut w = World::new();
        let link = device_link(2);
        let t0 = w.now;
        // Events by (time, sequence) so equal times stay ordered.
        let mut queue: BTreeMap<(Duration, u64), Event> = BTreeMap::new();
        let mut seq = 0u64;
        let mut at = |q: &mut BTreeMap<(Duration, u64), Event>, t: Duration, e: Event| {
            seq += 1;
            q.insert((t, seq), e);
        };
        // The network, both ways: 20 % loss, 10 % duplication, up to 80 ms
        // of latency (so reordering).
        let travel = |rng: &mut Rng, t: Duration| -> Vec<Duration> {
            if rng.chance(20) {
                return Vec::new();
            }
            let mut arrivals = vec![t + rng.millis(80)];
            if rng.chance(10) {
                arrivals.push(t + rng.millis(80));
            }
            arrivals
        };
        // Device state: per message ID, (request bytes, retransmissions, timeout, done, got empty ACK).
        let mut outstanding: HashMap<u16, (Vec<u8>, u32, Duration)> = HashMap::new();
        let mut answered: HashMap<u16, MessageClass> = HashMap::new();
        let mut token_to_mid: HashMap<Vec<u8>, u16> = HashMap::new();
        for mid in 0..requests {
            let token = mid.to_be_bytes().to_vec();
            let bytes = Req::con_post(mid)
                .query("t=x")
                .token(&token)
                .payload(&mid.to_be_bytes())
                .bytes();
            token_to_mid.insert(token, mid);
            let start = Duration::from_millis(u64::from(mid) * 300);
            for arrival in travel(&mut rng, start) {
                at(&mut queue, arrival, Event::ToEndpoint(bytes.clone()));
            }
            let timeout = 2 * SEC + rng.millis(1000);
            outstanding.insert(mid, (bytes, 0, timeout));
            at(&mut queue, start + timeout, Event::DeviceTimer(mid));
        }
        let mut published_seen = 0;
        // Bounded: every event is handled once and spawns a bounded number.
        for _ in 0..1_000_000 {
            let Some(((t, _), event)) = queue.pop_first() else {
                break;
            };
            let sent_before = w.sent.len();
            w.advance((t0 + t).saturating_duration_since(w.now));
            // Anything the engine sent on its timers travels too.
            let mut to_device: Vec<Vec<u8>> = w.sent[sent_before..]
                .iter()
                .map(|(_, tr)| tr.payload.clone())
                .collect();
            match event {
                Event::ToEndpoint(bytes) => to_device.extend(w.deliver(link, &bytes)),
                Event::Broker(id) => to_device.extend(w.broker(id, PublishResult::Confirmed)),
                Event::DeviceTimer(mid) => {
                    if let Some((bytes, tries, timeout)) = outstanding.get_mut(&mid) {
                        if *tries < 4 {
                            *tries += 1;
                            *timeout *= 2;
                            let resend = bytes.clone();
                            let next = t + *timeout;
                            for arrival in travel(&mut rng, t) {
                                at(&mut queue, arrival, Event::ToEndpoint(resend.clone()));
                            }
                            at(&mut queue, next, Event::DeviceTimer(mid));
                        }
                    }
                }
                Event::ToDevice(bytes) => {
                    let r = Resp::parse(&bytes);
                    match (r.kind, r.code) {
                        (MessageType::Acknowledgement, MessageClass::Empty) => {
                            // Separate response will follow: stop retransmitting.
                            outstanding.remove(&r.message_id);
                        }
                        (MessageType::Acknowledgement, code) => {
                            outstanding.remove(&r.message_id);
                            answered.entry(r.message_id).or_insert(code);
                        }
                        (MessageType::Confirmable, code) => {
                            let mid = token_to_mid[&r.token];
                            outstanding.remove(&mid);
                            answered.entry(mid).or_insert(code);
                            for arrival in travel(&mut rng, t) {
                                at(
                                    &mut queue,
                                    arrival,
                                    Event::ToEndpoint(codec::empty_ack(r.message_id)),
                                );
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            // New publishes: the broker confirms each after up to 2.5 s.
            while published_seen < w.published.len() {
                let id = w.published[published_seen].id;
                published_seen += 1;
                at(&mut queue, t + rng.millis(2500), Event::Broker(id));
            }
            for bytes in to_device {
                for arrival in travel(&mut rng, t) {
                    at(&mut queue, arrival, Event::ToDevice(bytes.clone()));
                }
            }
        }
        // Exactly one publish per distinct request that reached the endpoint.
        let mut payloads: Vec<Vec<u8>> = w
            .published
            .iter()
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap()["payload"]["value"]
                    .as_str()
                    .unwrap()
                    .to_owned()
                    .into_bytes()
            })
            .collect();
        let total = payloads.len();
        payloads.sort();
        payloads.dedup();
        assert_eq!(
            payloads.len(),
            total,
            "seed {seed}: a request was published twice"
        );
        // Every answer the device got is 2.04: nothing else can happen here.
        for (mid, code) in &answered {
            assert_eq!(
                *code,
                MessageClass::Response(ResponseType::Changed),
                "seed {seed}, mid {mid}"
            );
        }
        // Every answered request was published (2.04 only after the broker).
        assert!(answered.len() <= total, "seed {seed}");
        assert!(total as u16 <= requests);
        // With 20 % loss and five tries nearly all requests are answered.
        assert!(
            answered.len() as u16 >= requests * 8 / 10,
            "seed {seed}: only {} of {requests} answered",
            answered.len()
        );
    }

    #[test]
    fn loss_duplication_and_reordering_never_publish_twice() {
        for seed in 1..=20 {
            run(seed * 7919, 40);
        }
    }
}

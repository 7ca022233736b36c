//! spec.md §2.1 step 4 on a fake clock: the per-device rate limit, 4.29 Too
//! Many Requests with Max-Age (RFC 8516), duplicates for free, other
//! devices untouched, off by default.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use coapgate_endpoint::codec::{CoapOption, MessageType, ResponseType};
use coapgate_endpoint::{EndpointConfig, Link, PublishResult, RequestKey};
use coapgate_exchange::RateLimit;
use coapgate_model::DeviceStatus;
use support::*;

const MS: Duration = Duration::from_millis(1);
const ICCID_B: &str = "8988280666000000001";

fn post(mid: u16) -> Vec<u8> {
    Req::con_post(mid)
        .path("data")
        .query("t=x")
        .token(&[0x5a])
        .payload(b"v")
        .bytes()
}

/// A world whose devices may send `rate` requests a second, `burst` at once.
fn limited(rate: f64, burst: u32) -> World {
    let mut config = EndpointConfig::default();
    config.device_limit = RateLimit::per_second(rate, burst).unwrap();
    World::with_config(config)
}

/// Sends a CON and confirms its publish, if there is one: the response.
fn send(w: &mut World, link: Link, mid: u16) -> Resp {
    let published = w.published.len();
    let mut sent = w.deliver(link, &post(mid));
    if w.published.len() > published {
        let id = w.published[published].id;
        sent.extend(w.broker(id, PublishResult::Confirmed));
    }
    one(sent)
}

/// The Max-Age option's value; `None` when absent.
fn max_age(r: &Resp) -> Option<u32> {
    let values = r.packet.get_option(CoapOption::MaxAge)?;
    let bytes = values.front()?;
    Some(bytes.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)))
}

fn count(w: &World, code: &'static str) -> u64 {
    let key = RequestKey {
        resource: "telemetry",
        code,
    };
    w.endpoint
        .stats()
        .requests
        .get(&key)
        .copied()
        .unwrap_or_default()
}

#[test]
fn off_by_default_a_burst_of_a_thousand_is_served() {
    let mut w = World::new();
    assert!(w.endpoint.config().device_limit.is_off());
    for mid in 0..1000 {
        assert!(send(&mut w, device_link(2), mid).is(ResponseType::Changed));
    }
    assert_eq!(w.published.len(), 1000);
    assert_eq!(w.endpoint.stats().rate_limited, 0);
}

#[test]
fn over_the_burst_a_device_gets_4_29_with_max_age_an_empty_payload_and_nothing_is_published() {
    let mut w = limited(2.0, 3);
    let link = device_link(2);
    for mid in 1..=3 {
        assert!(send(&mut w, link, mid).is(ResponseType::Changed), "{mid}");
    }
    let refused = send(&mut w, link, 4);
    assert!(refused.is(ResponseType::TooManyRequests), "{refused:?}");
    assert_eq!(refused.kind, MessageType::Acknowledgement);
    assert_eq!(
        (refused.message_id, &refused.token[..]),
        (4, &[0x5a][..]),
        "piggybacked on the request's ACK"
    );
    assert_eq!(max_age(&refused), Some(1), "0.5 s rounds up to 1");
    assert!(refused.packet.payload.is_empty());
    assert_eq!(w.published.len(), 3, "nothing published for the 4.29");
    assert_eq!(w.endpoint.stats().rate_limited, 1);
    assert_eq!((count(&w, "2.04"), count(&w, "4.29")), (3, 1));

    // A NON over budget gets a NON 4.29, with Max-Age too.
    let non = Req::non_post(5).path("data").payload(b"v").bytes();
    let refused = one(w.deliver(link, &non));
    assert!(refused.is(ResponseType::TooManyRequests));
    assert_eq!(refused.kind, MessageType::NonConfirmable);
    assert_eq!(max_age(&refused), Some(1));
    assert_eq!(w.published.len(), 3);
}

#[test]
fn tokens_come_back_at_the_rate() {
    let mut w = limited(2.0, 2);
    let link = device_link(2);
    assert!(send(&mut w, link, 1).is(ResponseType::Changed));
    assert!(send(&mut w, link, 2).is(ResponseType::Changed));
    assert!(send(&mut w, link, 3).is(ResponseType::TooManyRequests));
    w.advance(499 * MS);
    assert!(send(&mut w, link, 4).is(ResponseType::TooManyRequests));
    w.advance(MS);
    assert!(
        send(&mut w, link, 5).is(ResponseType::Changed),
        "one token back"
    );
    assert!(send(&mut w, link, 6).is(ResponseType::TooManyRequests));
    // A device that keeps to the rate is never refused.
    for mid in 7..50 {
        w.advance(500 * MS);
        assert!(send(&mut w, link, mid).is(ResponseType::Changed), "{mid}");
    }
    // After the fill time (1 s), the whole burst again.
    w.advance(1000 * MS);
    assert!(send(&mut w, link, 50).is(ResponseType::Changed));
    assert!(send(&mut w, link, 51).is(ResponseType::Changed));
    assert!(send(&mut w, link, 52).is(ResponseType::TooManyRequests));
}

#[test]
fn max_age_is_the_whole_seconds_until_a_token_is_back_rounded_up() {
    // One token every 4 s, no burst.
    let mut w = limited(0.25, 1);
    let link = device_link(2);
    assert!(send(&mut w, link, 1).is(ResponseType::Changed));
    let mut mid = 2;
    for (after_ms, expected) in [(0, 4), (1, 4), (500, 4), (1000, 3), (2999, 2), (3000, 1)] {
        let mut probe = limited(0.25, 1);
        probe.deliver(link, &post(1));
        probe.confirm_all();
        probe.advance(after_ms * MS);
        let refused = one(probe.deliver(link, &post(2)));
        assert!(refused.is(ResponseType::TooManyRequests), "{after_ms} ms");
        assert_eq!(max_age(&refused), Some(expected), "{after_ms} ms after");
    }
    // 3999 ms: 1 ms to wait is still a whole second.
    w.advance(3999 * MS);
    let refused = send(&mut w, link, mid);
    assert_eq!(max_age(&refused), Some(1));
    mid += 1;
    // Waiting the Max-Age it was told is always enough.
    w.advance(1000 * MS);
    assert!(send(&mut w, link, mid).is(ResponseType::Changed));
}

#[test]
fn duplicates_are_replayed_without_spending_budget_and_a_4_29_is_replayed_too() {
    let mut w = limited(1.0, 2);
    let link = device_link(2);
    let first = w.deliver(link, &post(1));
    assert!(first.is_empty(), "waiting for the broker");
    let ack = w.broker(0, PublishResult::Confirmed);
    // The device did not hear the 2.04 and retransmits, many times: each
    // gets the cached bytes and costs nothing.
    for _ in 0..10 {
        assert_eq!(w.deliver(link, &post(1)), ack);
    }
    assert_eq!(w.published.len(), 1);
    // So the second token is still there.
    assert!(send(&mut w, link, 2).is(ResponseType::Changed));
    let refused = w.deliver(link, &post(3));
    assert!(one(refused.clone()).is(ResponseType::TooManyRequests));
    assert_eq!(w.endpoint.stats().rate_limited, 1);
    // A retransmission of the refused request gets the same 4.29 from the
    // dedup cache, even once a token is back; it is not counted again and
    // takes no token.
    assert_eq!(w.deliver(link, &post(3)), refused);
    w.advance(1000 * MS);
    assert_eq!(w.deliver(link, &post(3)), refused);
    assert_eq!(w.endpoint.stats().rate_limited, 1);
    assert_eq!(w.endpoint.stats().duplicates, 12);
    // The token that came back is there for a new request.
    assert!(send(&mut w, link, 4).is(ResponseType::Changed));
    assert_eq!(w.published.len(), 3);
}

#[test]
fn other_devices_keep_their_own_budget() {
    let mut w = limited(1.0, 2);
    w.devices.add(ICCID_B, "127.0.0.3", DeviceStatus::Active);
    w.registered
        .devices
        .write()
        .unwrap()
        .insert(ICCID_B.parse().unwrap());
    let (a, b) = (device_link(2), device_link(3));
    for mid in 1..=2 {
        assert!(send(&mut w, a, mid).is(ResponseType::Changed));
    }
    for mid in 3..=10 {
        assert!(send(&mut w, a, mid).is(ResponseType::TooManyRequests));
    }
    for mid in 1..=2 {
        assert!(send(&mut w, b, mid).is(ResponseType::Changed), "B's burst");
    }
    assert!(send(&mut w, b, 3).is(ResponseType::TooManyRequests));
}

#[test]
fn the_budget_belongs_to_the_device_not_to_its_port_or_session() {
    let mut w = limited(1.0, 2);
    let other_port = Link::Udp("127.0.0.2:40001".parse().unwrap());
    assert!(send(&mut w, device_link(2), 1).is(ResponseType::Changed));
    assert!(send(&mut w, other_port, 1).is(ResponseType::Changed));
    assert!(send(&mut w, other_port, 2).is(ResponseType::TooManyRequests));
    // Through a DTLS session with the device's identity: the same bucket.
    w.endpoint
        .handle_session_established(7, ICCID.parse().unwrap());
    let dtls = Link::Dtls {
        addr: "127.0.0.2:50000".parse().unwrap(),
        session: 7,
    };
    assert!(send(&mut w, dtls, 1).is(ResponseType::TooManyRequests));
    w.advance(1000 * MS);
    assert!(send(&mut w, dtls, 2).is(ResponseType::Changed));
}

#[test]
fn the_limit_comes_after_the_device_check_and_before_the_option_check() {
    let mut w = limited(1.0, 1);
    // Strangers get 4.01, however many: they have no budget to spend.
    for mid in 1..=5 {
        let r = one(w.deliver(device_link(9), &post(mid)));
        assert!(r.is(ResponseType::Unauthorized));
    }
    assert_eq!(w.endpoint.stats().rate_limited, 0);
    let link = device_link(2);
    assert!(send(&mut w, link, 1).is(ResponseType::Changed));
    // Over budget, an unknown critical option is not looked at: 4.29.
    let bad = Req::con_post(2)
        .path("data")
        .option(65001, b"x")
        .payload(b"v")
        .bytes();
    assert!(one(w.deliver(link, &bad)).is(ResponseType::TooManyRequests));
    // Any resource counts: /location over budget gets 4.29 as well.
    let location = Req::new(
        MessageType::Confirmable,
        coapgate_endpoint::codec::RequestType::Get,
        3,
    )
    .path("location")
    .bytes();
    assert!(one(w.deliver(link, &location)).is(ResponseType::TooManyRequests));
}

#[test]
fn a_refused_request_publishes_no_lifecycle_event() {
    let mut w = limited(1.0, 1);
    w.registered.devices.write().unwrap().clear();
    let link = device_link(2);
    // The first request spends the token while the broker is down (5.02;
    // no event can go out then).
    w.endpoint.handle_broker_state(false);
    assert!(send(&mut w, link, 1).is(ResponseType::BadGateway));
    w.endpoint.handle_broker_state(true);
    // Over budget: 4.29, and no DEVICE_FIRST_TIME_REGISTERED either.
    assert!(send(&mut w, link, 2).is(ResponseType::TooManyRequests));
    assert!(w.published.is_empty(), "{:?}", w.published);
    // The next admitted request announces the device, and is published.
    w.advance(1000 * MS);
    w.deliver(link, &post(3));
    let topics: Vec<&str> = w.published.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        [format!("{ICCID}/lifecycle"), format!("{ICCID}/x")],
        "the event, then the telemetry"
    );
}

//! The engine never waits for the store (spec.md §2.1 step 8): store writes
//! are outputs like publishes, and the request that needs one is answered
//! when the result comes back, with the same piggyback/separate rules as a
//! slow broker. Everyone else is served from memory meanwhile.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use coapgate_endpoint::codec::{CoapOption, MessageType, RequestType, ResponseType};
use coapgate_endpoint::{PublishResult, StoreRequest, StoreResult};
use coapgate_model::DeviceStatus;
use support::*;

const OTHER_ICCID: &str = "8988280666000000001";

fn get_bootstrap(kind: MessageType, message_id: u16) -> Vec<u8> {
    Req::new(kind, RequestType::Get, message_id)
        .path("bootstrap")
        .bytes()
}

fn post(message_id: u16) -> Vec<u8> {
    Req::con_post(message_id)
        .path("data")
        .payload(b"21.5")
        .bytes()
}

/// Two devices: 127.0.0.2 onboarding, 127.0.0.3 sending telemetry; the
/// store takes `latency` per write.
fn world(latency: Duration) -> World {
    let mut w = World::new();
    w.devices
        .add(OTHER_ICCID, "127.0.0.3", DeviceStatus::Active);
    w.registered
        .devices
        .write()
        .unwrap()
        .insert(OTHER_ICCID.parse().unwrap());
    w.store_latency = latency;
    w
}

fn body(r: &Resp) -> String {
    String::from_utf8(r.packet.payload.clone()).unwrap()
}

#[test]
fn a_store_taking_500_ms_delays_only_the_bootstrap_that_needs_it() {
    let mut w = world(Duration::from_millis(500));
    // The field case: NON GET /bootstrap. Nothing yet: the write is out.
    assert!(
        w.deliver(
            device_link(2),
            &get_bootstrap(MessageType::NonConfirmable, 1)
        )
        .is_empty()
    );
    assert_eq!(w.store_writes.len(), 1);
    assert!(matches!(
        w.store_writes[0].request,
        StoreRequest::Bootstrap(ref u) if u.iccid.as_str() == ICCID
    ));
    // Another device's telemetry is published and answered at once, at
    // the same instant, while the write is in the store's hands.
    for mid in 1..=20u16 {
        assert!(w.deliver(device_link(3), &post(mid)).is_empty());
        let id = w.published.last().unwrap().id;
        let r = one(w.broker(id, PublishResult::Confirmed));
        assert!(r.is(ResponseType::Changed));
        assert_eq!(r.message_id, mid);
    }
    assert_eq!(w.now, w.start, "no time passed for the other device");
    // The bootstrap answer comes with the stored record, 500 ms later.
    assert!(w.advance(Duration::from_millis(499)).is_empty());
    let sent = w.advance(Duration::from_millis(1));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Duration::from_millis(500));
    let r = Resp::parse(&sent[0].1);
    assert_eq!(r.kind, MessageType::NonConfirmable);
    assert!(r.is(ResponseType::Content));
    assert_eq!(
        body(&r),
        format!("{ICCID},PSK0000000000001,coaps://localhost:5684")
    );
    assert_eq!(w.endpoint.pending_work(), 0);
}

#[test]
fn a_con_bootstrap_is_piggybacked_within_the_window_and_separate_after_it() {
    // 500 ms: inside the 1 s piggyback window.
    let mut w = world(Duration::from_millis(500));
    w.deliver(device_link(2), &get_bootstrap(MessageType::Confirmable, 7));
    let sent = w.advance(Duration::from_secs(1));
    assert_eq!(sent.len(), 1);
    let r = Resp::parse(&sent[0].1);
    assert_eq!((r.kind, r.message_id), (MessageType::Acknowledgement, 7));
    assert!(r.is(ResponseType::Content));

    // 1.5 s: an empty ACK at 1 s, then a separate CON 2.05 with the PSK.
    let mut w = world(Duration::from_millis(1500));
    let request = get_bootstrap(MessageType::Confirmable, 8);
    w.deliver(device_link(2), &request);
    let sent = w.advance(Duration::from_secs(2));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].0, Duration::from_secs(1));
    let ack = Resp::parse(&sent[0].1);
    assert_eq!(
        (ack.kind, ack.message_id),
        (MessageType::Acknowledgement, 8)
    );
    assert!(ack.packet.payload.is_empty());
    assert_eq!(sent[1].0, Duration::from_millis(1500));
    let separate = Resp::parse(&sent[1].1);
    assert_eq!(separate.kind, MessageType::Confirmable);
    assert!(separate.is(ResponseType::Content));
    assert!(body(&separate).starts_with(ICCID));
    // A retransmitted request gets the empty ACK again, not a second write.
    let again = one(w.deliver(device_link(2), &request));
    assert_eq!(again.kind, MessageType::Acknowledgement);
    assert_eq!(w.store_writes.len(), 1);
}

#[test]
fn a_store_that_cannot_take_the_write_gets_5_03_with_max_age() {
    let mut w = world(Duration::ZERO);
    w.psks.unavailable.store(true, Ordering::Relaxed);
    let r = one(w.deliver(
        device_link(2),
        &get_bootstrap(MessageType::NonConfirmable, 1),
    ));
    assert!(r.is(ResponseType::ServiceUnavailable));
    assert_eq!(
        r.packet.get_first_option(CoapOption::MaxAge),
        Some(&vec![5])
    );
    assert!(r.packet.payload.is_empty());
    // Once the store is back, the device's retry gets its PSK.
    w.psks.unavailable.store(false, Ordering::Relaxed);
    let r = one(w.deliver(
        device_link(2),
        &get_bootstrap(MessageType::NonConfirmable, 2),
    ));
    assert!(r.is(ResponseType::Content));
}

#[test]
fn a_store_that_never_answers_gets_5_03_at_the_store_timeout_and_its_late_answer_is_ignored() {
    let mut w = world(Duration::from_secs(60));
    w.deliver(
        device_link(2),
        &get_bootstrap(MessageType::NonConfirmable, 1),
    );
    let sent = w.advance(Duration::from_secs(11));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Duration::from_secs(10), "store_timeout");
    assert!(Resp::parse(&sent[0].1).is(ResponseType::ServiceUnavailable));
    assert_eq!(w.endpoint.pending_work(), 0);
    // The write completes at 60 s: nothing more is sent.
    assert!(w.advance(Duration::from_secs(60)).is_empty());
    // The record was written all the same; the next call within 5 minutes
    // gets that PSK.
    let stored = w.psks.records.read().unwrap()[&ICCID.parse().unwrap()].clone();
    w.store_latency = Duration::ZERO;
    let r = one(w.deliver(
        device_link(2),
        &get_bootstrap(MessageType::NonConfirmable, 2),
    ));
    assert!(body(&r).contains(stored.psk.expose()));
}

#[test]
fn a_registration_is_recorded_through_the_store_once_the_broker_confirmed_it() {
    let mut w = world(Duration::from_millis(300));
    w.registered.devices.write().unwrap().clear();
    w.deliver(device_link(2), &post(1));
    let lifecycle = w.published[0].id;
    assert!(w.published[0].topic.ends_with("/lifecycle"));
    assert!(
        w.store_writes.is_empty(),
        "nothing recorded before the PUBACK"
    );
    w.broker(lifecycle, PublishResult::Confirmed);
    assert!(matches!(
        w.store_writes[..],
        [ref write] if matches!(write.request, StoreRequest::MarkRegistered { ref iccid, .. } if iccid.as_str() == ICCID)
    ));
    // While the store writes, the device is not offered the event again.
    w.deliver(device_link(2), &post(2));
    assert_eq!(
        w.published
            .iter()
            .filter(|p| p.topic.ends_with("/lifecycle"))
            .count(),
        1
    );
    w.advance(Duration::from_millis(300));
    assert!(
        w.registered
            .devices
            .read()
            .unwrap()
            .contains(&ICCID.parse().unwrap())
    );
}

#[test]
fn a_registration_the_store_could_not_record_is_published_again() {
    let mut w = world(Duration::ZERO);
    w.registered.devices.write().unwrap().clear();
    w.registered.fail.store(true, Ordering::Relaxed);
    w.deliver(device_link(2), &post(1));
    w.confirm_all();
    assert_eq!(w.store_writes.len(), 1);
    assert_eq!(w.endpoint.pending_work(), 0);
    w.registered.fail.store(false, Ordering::Relaxed);
    w.deliver(device_link(2), &post(2));
    let lifecycle = w
        .published
        .iter()
        .filter(|p| p.topic.ends_with("/lifecycle"))
        .count();
    assert_eq!(lifecycle, 2, "at least once: published again");
    // A store answer for a write it was never asked for changes nothing.
    w.endpoint
        .handle_store_result(w.now, 999, StoreResult::Done);
    assert_eq!(w.endpoint.pending_work(), 2);
}

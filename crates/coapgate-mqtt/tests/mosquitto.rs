//! The bridge against a real Mosquitto on loopback.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, MqttError, Outgoing, Qos};
use coapgate_testkit::Mosquitto;
use common::{Subscriber, collect_events, disconnected, wait_connected};

fn config(port: u16, name: &str) -> BridgeConfig {
    let mut config = BridgeConfig::default();
    config.port = port;
    config.client_id = format!("bridge-{name}-{}", std::process::id());
    config.reconnect_delay_min = Duration::from_millis(50);
    config.reconnect_delay_max = Duration::from_millis(500);
    config
}

fn message(id: u64, deadline: Instant) -> Outgoing {
    Outgoing {
        id,
        topic: format!("8988280666000000000/t{}", id % 7),
        payload: Bytes::from(format!("{{\"n\":{id}}}")),
        deadline,
    }
}

fn delivered_ids(events: &[BridgeEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::Delivered { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn expired_ids(events: &[BridgeEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::Expired { id } => Some(*id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_publishes_are_delivered_and_reach_the_subscriber() {
    let Some(mosq) = Mosquitto::start("hundred_publishes_are_delivered_and_reach_the_subscriber")
    else {
        return;
    };
    let sub = Subscriber::start(mosq.port, "sub-hundred", false, rumqttc::QoS::AtLeastOnce).await;
    let (handle, mut rx) =
        Bridge::start(config(mosq.port, "hundred")).expect("a valid bridge configuration");
    wait_connected(&mut rx).await;
    assert!(handle.is_connected());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expected = Vec::new();
    for id in 0..100 {
        let m = message(id, deadline);
        expected.push((m.topic.clone(), m.payload.clone()));
        handle.publish(m).expect("publish");
    }
    let events = collect_events(&mut rx, Duration::from_secs(10), |e| {
        delivered_ids(e).len() == 100
    })
    .await;
    let mut ids = delivered_ids(&events);
    ids.sort_unstable();
    assert_eq!(ids, (0..100).collect::<Vec<_>>(), "events: {events:?}");
    assert!(expired_ids(&events).is_empty());
    assert_eq!(handle.outbox_depth(), 0);

    let mut got = sub
        .wait_until(Duration::from_secs(10), |r| r.len() >= 100)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // would catch duplicates
    got.extend(
        sub.received.lock().expect("lock")[got.len()..]
            .iter()
            .cloned(),
    );
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "the subscriber must see exactly the 100 messages"
    );
    handle
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing_and_confirms_nothing_falsely() {
    let Some(mut mosq) = Mosquitto::start_persistent("broker_restart") else {
        return;
    };
    let port = mosq.port;
    // Persistent session on a persistent broker: it queues for the subscriber
    // across the restart, so everything the broker accepted reaches it.
    let sub = Subscriber::start(port, "sub-restart", true, rumqttc::QoS::AtLeastOnce).await;
    let (handle, mut rx) =
        Bridge::start(config(port, "restart")).expect("a valid bridge configuration");
    wait_connected(&mut rx).await;

    const N: u64 = 300;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut payloads = HashMap::new();
    // Freeze the broker so the publishes are surely in flight (sent, not
    // acknowledged) when it stops; a fast broker would otherwise confirm
    // them all first.
    mosq.pause();
    for id in 0..N {
        let m = message(id, deadline);
        payloads.insert(id, m.payload.clone());
        handle.publish(m).expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    mosq.stop();
    let mut events = collect_events(&mut rx, Duration::from_secs(10), disconnected).await;
    assert!(disconnected(&events), "no Disconnected: {events:?}");
    let before_restart = delivered_ids(&events).len();
    assert!(!handle.is_connected());
    assert!(matches!(
        handle.publish(message(10_000, deadline)),
        Err(MqttError::NotConnected)
    ));
    assert!(handle.outbox_depth() as u64 + before_restart as u64 == N);
    assert!(
        before_restart < N as usize,
        "some publishes were in flight when the broker stopped"
    );

    mosq.restart();
    let more = collect_events(&mut rx, Duration::from_secs(30), |e| {
        e.contains(&BridgeEvent::Connected)
            && delivered_ids(e).len() + expired_ids(e).len() + before_restart == N as usize
    })
    .await;
    assert!(
        more.contains(&BridgeEvent::Connected),
        "no reconnect: {more:?}"
    );
    events.extend(more);

    let delivered = delivered_ids(&events);
    let expired = expired_ids(&events);
    let unique: BTreeSet<u64> = delivered.iter().chain(&expired).copied().collect();
    assert_eq!(
        delivered.len() + expired.len(),
        N as usize,
        "one final event per publish"
    );
    assert_eq!(unique.len(), N as usize, "no publish reported twice");
    assert!(
        expired.is_empty(),
        "30 s deadlines should not expire: {expired:?}"
    );
    assert_eq!(handle.outbox_depth(), 0);
    eprintln!(
        "restart: {before_restart} delivered before the broker stopped, {} after the restart",
        delivered.len() - before_restart
    );

    // Every Delivered payload is at the subscriber.
    let want: BTreeSet<Bytes> = delivered.iter().map(|id| payloads[id].clone()).collect();
    let got = sub
        .wait_until(Duration::from_secs(15), |r| {
            let have: BTreeSet<&Bytes> = r.iter().map(|(_, p)| p).collect();
            want.iter().all(|p| have.contains(p))
        })
        .await;
    let have: BTreeSet<Bytes> = got.into_iter().map(|(_, p)| p).collect();
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "Delivered but not at the broker: {missing:?}\n{}",
        mosq.log()
    );

    // And the bridge works normally afterwards.
    handle
        .publish(message(N + 1, Instant::now() + Duration::from_secs(5)))
        .expect("publish after restart");
    let ev = collect_events(&mut rx, Duration::from_secs(5), |e| {
        !delivered_ids(e).is_empty()
    })
    .await;
    assert_eq!(delivered_ids(&ev), vec![N + 1]);
    handle
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publishes_are_delivered() {
    let Some(mosq) = Mosquitto::start("qos2_publishes_are_delivered") else {
        return;
    };
    let sub = Subscriber::start(mosq.port, "sub-qos2", false, rumqttc::QoS::ExactlyOnce).await;
    let (handle, mut rx) = Bridge::start({
        let mut config = config(mosq.port, "qos2");
        config.qos = Qos::ExactlyOnce;
        config.max_inflight = 10;
        config
    })
    .expect("a valid bridge configuration");
    wait_connected(&mut rx).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expected = Vec::new();
    for id in 0..50 {
        let m = message(id, deadline);
        expected.push((m.topic.clone(), m.payload.clone()));
        handle.publish(m).expect("publish");
    }
    let events = collect_events(&mut rx, Duration::from_secs(10), |e| {
        delivered_ids(e).len() == 50
    })
    .await;
    let mut ids = delivered_ids(&events);
    ids.sort_unstable();
    assert_eq!(ids, (0..50).collect::<Vec<_>>(), "{events:?}");
    let mut got = sub
        .wait_until(Duration::from_secs(10), |r| r.len() >= 50)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    got.extend(
        sub.received.lock().expect("lock")[got.len()..]
            .iter()
            .cloned(),
    );
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    handle
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

/// Confirmed publishes per second on loopback. Run with
/// `cargo test -p coapgate-mqtt --release --test mosquitto -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput() {
    let Some(mosq) = Mosquitto::start("throughput") else {
        return;
    };
    for (qos, total) in [(Qos::AtLeastOnce, 50_000u64), (Qos::ExactlyOnce, 20_000)] {
        let (handle, mut rx) = Bridge::start({
            let mut config = config(mosq.port, "throughput");
            config.qos = qos;
            config
        })
        .expect("a valid bridge configuration");
        wait_connected(&mut rx).await;
        let payload = Bytes::from(vec![b'x'; 300]);
        let start = Instant::now();
        let (mut next, mut done) = (0u64, 0u64);
        let mut lat = Duration::ZERO;
        while done < total {
            while next < total {
                let m = Outgoing {
                    id: next,
                    topic: "8988280666000000000/bench".into(),
                    payload: payload.clone(),
                    deadline: Instant::now() + Duration::from_secs(30),
                };
                match handle.publish(m) {
                    Ok(()) => next += 1,
                    Err(MqttError::OutboxFull) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(BridgeEvent::Delivered { latency, .. })) => {
                    done += 1;
                    lat += latency;
                }
                other => panic!("{other:?}"),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "THROUGHPUT {qos:?}: {total} confirmed in {secs:.2} s = {:.0}/s, mean latency {:?}",
            total as f64 / secs,
            lat / total as u32
        );
        handle
            .shutdown(Instant::now() + Duration::from_secs(2))
            .await;
    }
}

//! The spool in front of a real bridge and a real Mosquitto on loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, BridgeHandle};
use coapgate_spool::{Spool, SpoolConfig, SpoolError, SpoolEvent, SpoolHandle};
use coapgate_testkit::{Mosquitto, MosquittoSub, temp_dir};
use tokio::sync::mpsc;

const DEVICE: &str = "8988280666000000000";

fn start_bridge(port: u16, name: &str) -> (BridgeHandle, mpsc::Receiver<BridgeEvent>) {
    let mut config = BridgeConfig::default();
    config.port = port;
    config.client_id = format!("spool-{name}-{}", std::process::id());
    config.reconnect_delay_min = Duration::from_millis(50);
    config.reconnect_delay_max = Duration::from_millis(300);
    Bridge::start(config).expect("a valid bridge configuration")
}

fn spool_config(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig::new(dir.join("coapgate.spool"))
}

fn payload(n: u64) -> Bytes {
    Bytes::from(format!("{{\"n\":{n}}}"))
}

/// Publishes `ids` and waits until each is reported spooled (or not).
async fn spool_all(
    spool: &SpoolHandle,
    events: &mut mpsc::UnboundedReceiver<SpoolEvent>,
    ids: std::ops::Range<u64>,
) -> (Vec<u64>, Vec<u64>) {
    for id in ids.clone() {
        spool
            .publish(id, format!("{DEVICE}/t"), payload(id))
            .expect("room in the spool");
    }
    let (mut spooled, mut refused) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spooled.len() + refused.len() < ids.clone().count() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SpoolEvent::Spooled { id })) => spooled.push(id),
            Ok(Some(SpoolEvent::NotSpooled { id })) => refused.push(id),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (spooled, refused)
}

/// The numbers of the messages `sub` has seen on the device's topic, in
/// arrival order.
fn seen(sub: &MosquittoSub) -> Vec<u64> {
    sub.messages()
        .iter()
        .filter(|m| m.topic == format!("{DEVICE}/t"))
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).ok()?;
            v["n"].as_u64()
        })
        .collect()
}

async fn wait_seen(sub: &MosquittoSub, n: usize, timeout: Duration) -> Vec<u64> {
    let end = Instant::now() + timeout;
    loop {
        let got = seen(sub);
        if got.len() >= n || Instant::now() >= end {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_distinct(sub: &MosquittoSub, n: usize, timeout: Duration) -> Vec<u64> {
    let end = Instant::now() + timeout;
    loop {
        let got = seen(sub);
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        if distinct.len() >= n || Instant::now() >= end {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_empty(spool: &SpoolHandle, timeout: Duration) -> u64 {
    let end = Instant::now() + timeout;
    loop {
        let held = spool.status().messages;
        if held == 0 || Instant::now() >= end {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dir(name: &str) -> PathBuf {
    temp_dir(&format!("spool-{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_messages_reach_the_broker_in_order_and_leave_the_spool() {
    let test = "spooled_messages_reach_the_broker_in_order_and_leave_the_spool";
    let Some(mosq) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(mosq.port, test) else {
        return;
    };
    let dir = dir("order");
    let (bridge, bridge_events) = start_bridge(mosq.port, "order");
    let (spool, mut events) =
        Spool::start(spool_config(&dir), bridge, bridge_events).expect("spool opens");
    let (spooled, refused) = spool_all(&spool, &mut events, 1..501).await;
    assert_eq!(spooled, (1..501).collect::<Vec<_>>(), "spooled in order");
    assert!(refused.is_empty());
    let got = wait_seen(&sub, 500, Duration::from_secs(10)).await;
    assert_eq!(
        got,
        (1..501).collect::<Vec<_>>(),
        "forwarded once each, in order"
    );
    assert_eq!(wait_empty(&spool, Duration::from_secs(5)).await, 0);
    assert_eq!(spool.status().bytes, 0, "every byte accounted back");
    spool
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_takes_messages_while_the_broker_is_down_and_forwards_them_when_it_is_back() {
    let test =
        "the_spool_takes_messages_while_the_broker_is_down_and_forwards_them_when_it_is_back";
    let Some(mut mosq) = Mosquitto::start_persistent(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start_session(mosq.port, "spool-outage-sub", test) else {
        return;
    };
    let dir = dir("outage");
    let (bridge, bridge_events) = start_bridge(mosq.port, "outage");
    let (spool, mut events) =
        Spool::start(spool_config(&dir), bridge, bridge_events).expect("spool opens");
    let (first, _) = spool_all(&spool, &mut events, 1..51).await;
    assert_eq!(first.len(), 50);
    assert_eq!(wait_seen(&sub, 50, Duration::from_secs(10)).await.len(), 50);

    mosq.stop();
    let (during, refused) = spool_all(&spool, &mut events, 51..251).await;
    assert_eq!(during.len(), 200, "the spool answers with the broker away");
    assert!(refused.is_empty());
    let status = spool.status();
    assert!(!status.broker_connected);
    assert_eq!(status.messages, 200, "held until the broker has them");
    assert!(status.bytes > 0);

    mosq.restart();
    let got = wait_distinct(&sub, 250, Duration::from_secs(20)).await;
    // QoS 1 across a broker restart: what was in flight when it stopped
    // (to the broker, or from it to the subscriber) may arrive twice.
    let mut first_seen = Vec::new();
    for n in &got {
        if !first_seen.contains(n) {
            first_seen.push(*n);
        }
    }
    assert_eq!(
        first_seen,
        (1..251).collect::<Vec<_>>(),
        "every spooled message, in order"
    );
    let duplicates = got.len() - first_seen.len();
    assert!(
        duplicates <= 50,
        "only what was in flight repeats: {duplicates}"
    );
    for n in 51..251 {
        let copies = got.iter().filter(|&&m| m == n).count();
        assert_eq!(
            copies, 1,
            "message {n}, spooled during the outage, arrived once"
        );
    }
    assert_eq!(wait_empty(&spool, Duration::from_secs(5)).await, 0);
    spool
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_not_forwarded_before_a_restart_is_forwarded_after_it() {
    let test = "what_was_not_forwarded_before_a_restart_is_forwarded_after_it";
    let Some(mut mosq) = Mosquitto::start(test) else {
        return;
    };
    let dir = dir("restart");
    mosq.stop();
    {
        let (bridge, bridge_events) = start_bridge(mosq.port, "restart-1");
        let (spool, mut events) =
            Spool::start(spool_config(&dir), bridge, bridge_events).expect("spool opens");
        let (spooled, _) = spool_all(&spool, &mut events, 1..101).await;
        assert_eq!(spooled.len(), 100);
        // The same file cannot be opened twice.
        let (other, other_events) = start_bridge(mosq.port, "restart-other");
        match Spool::start(spool_config(&dir), other, other_events) {
            Err(SpoolError::InUse { .. }) => {}
            other => panic!("a second spool on the same file: {other:?}"),
        }
        spool
            .shutdown(Instant::now() + Duration::from_millis(100))
            .await;
    }
    mosq.restart();
    let Some(sub) = MosquittoSub::start(mosq.port, test) else {
        return;
    };
    let (bridge, bridge_events) = start_bridge(mosq.port, "restart-2");
    let (spool, _events) =
        Spool::start(spool_config(&dir), bridge, bridge_events).expect("spool reopens");
    assert_eq!(spool.status().messages, 100, "kept across the restart");
    let got = wait_seen(&sub, 100, Duration::from_secs(10)).await;
    assert_eq!(got, (1..101).collect::<Vec<_>>());
    assert_eq!(wait_empty(&spool, Duration::from_secs(5)).await, 0);
    spool
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_at_once_and_takes_again_once_forwarded() {
    let test = "a_full_spool_refuses_at_once_and_takes_again_once_forwarded";
    let Some(mut mosq) = Mosquitto::start(test) else {
        return;
    };
    mosq.stop();
    let dir = dir("full");
    let (bridge, bridge_events) = start_bridge(mosq.port, "full");
    let mut config = spool_config(&dir);
    let size = (format!("{DEVICE}/t").len() + payload(10).len()) as u64;
    config.max_bytes = 10 * size;
    let (spool, mut events) = Spool::start(config, bridge, bridge_events).expect("spool opens");
    let (spooled, _) = spool_all(&spool, &mut events, 10..20).await;
    assert_eq!(spooled.len(), 10);
    match spool.publish(20, format!("{DEVICE}/t"), payload(20)) {
        Err(SpoolError::Full { held, max }) => assert_eq!((held, max), (10 * size, 10 * size)),
        other => panic!("over max_bytes: {other:?}"),
    }
    // Nothing the bridge could never send is taken either.
    assert!(matches!(
        spool.publish(21, "a/+/wildcard".into(), payload(21)),
        Err(SpoolError::Unsendable(_))
    ));
    mosq.restart();
    assert_eq!(wait_empty(&spool, Duration::from_secs(10)).await, 0);
    let (again, _) = spool_all(&spool, &mut events, 20..21).await;
    assert_eq!(again, vec![20], "room again once forwarded");
    spool
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_20_000_drains_in_order_once_the_broker_is_back() {
    let test = "a_backlog_of_20_000_drains_in_order_once_the_broker_is_back";
    let Some(mut mosq) = Mosquitto::start_persistent(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start_session(mosq.port, "spool-backlog-sub", test) else {
        return;
    };
    mosq.stop();
    let dir = dir("backlog");
    let (bridge, bridge_events) = start_bridge(mosq.port, "backlog");
    let (spool, mut events) =
        Spool::start(spool_config(&dir), bridge, bridge_events).expect("spool opens");
    let started = Instant::now();
    let (spooled, _) = spool_all(&spool, &mut events, 1..20_001).await;
    assert_eq!(spooled.len(), 20_000);
    let spooling = started.elapsed();
    mosq.restart();
    let back = Instant::now();
    let held = wait_empty(&spool, Duration::from_secs(60)).await;
    let draining = back.elapsed();
    assert_eq!(held, 0, "the whole backlog forwarded");
    let got = wait_distinct(&sub, 20_000, Duration::from_secs(30)).await;
    let mut first_seen = Vec::new();
    let mut known = std::collections::HashSet::new();
    for n in got {
        if known.insert(n) {
            first_seen.push(n);
        }
    }
    assert_eq!(first_seen, (1..20_001).collect::<Vec<_>>(), "in order");
    // A figure for docs/performance.md, not a check (shared machines).
    eprintln!(
        "backlog: 20000 spooled in {:.2} s, forwarded in {:.2} s after the broker was back",
        spooling.as_secs_f64(),
        draining.as_secs_f64()
    );
    spool
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

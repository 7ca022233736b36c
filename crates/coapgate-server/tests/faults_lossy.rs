//! Fault: a lossy link (issue 12). A UDP proxy between devices and coapgate
//! drops 30 % of datagrams each way and duplicates and reorders 3 %
//! (seeded, [`coapgate_testkit::LossyLink`]); devices retransmit as RFC
//! 7252 says. Every message a device saw acknowledged is published exactly
//! once, and nothing is published twice: plain CoAP (retransmissions and
//! duplicates deduplicated by message ID, also when reordered) and DTLS
//! (libcoap's `coap-client-openssl`, a handshake per request; duplicated
//! records are dropped by the replay window).
//!
//! `COAPGATE_LONG_FAULTS=1` runs more devices and requests.

#![allow(clippy::unwrap_used)]

mod faults_common;

use std::time::{Duration, Instant};

use coapgate_testkit::{
    Impairment, LossyLink, Mosquitto, MosquittoSub, coap_client_waiting, long_faults, require,
};
use faults_common::*;

const LOSS: f64 = 0.30;

/// Plain CoAP devices: (devices, requests per device).
fn plain_size() -> (usize, usize) {
    if long_faults() { (32, 40) } else { (16, 6) }
}

/// DTLS devices: (devices, requests per device).
fn dtls_size() -> (usize, usize) {
    if long_faults() { (8, 10) } else { (6, 2) }
}

fn link_line(link: &LossyLink) -> String {
    let (u, d) = (link.upstream(), link.downstream());
    format!(
        "link up {}/{} dropped, {} dup, {} reordered; down {}/{} dropped, {} dup, {} reordered",
        u.dropped, u.seen, u.duplicated, u.reordered, d.dropped, d.seen, d.duplicated, d.reordered
    )
}

#[test]
fn plain_coap_over_a_30_percent_lossy_link_publishes_each_acknowledged_message_once() {
    let _serial = serial();
    let test = "lossy_plain";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let (devices, per_device) = plain_size();
    let server = coapgate_server::BackgroundServer::start(fleet_config(
        devices,
        &broker.url(),
        "sqlite::memory:",
    ))
    .unwrap();
    let link = LossyLink::start(server.coap_addr(), Impairment::lossy(LOSS, 12));
    // ACK_TIMEOUT 0.5 s instead of RFC 7252's 2 s: retransmissions come
    // sooner (harder on deduplication) and the test is shorter; with
    // exponential back-off a request still takes about 3 s on average.
    let shape = LoadShape {
        devices,
        pause: Duration::ZERO,
        ack_timeout: Duration::from_millis(500),
        max_per_device: per_device,
    };
    let start = Instant::now();
    let load = Load::start(link.addr, shape, test, 0x1055);
    // The load ends by itself (max_per_device); bounded anyway.
    let limit = Duration::from_secs(if long_faults() { 900 } else { 150 });
    while load.records().len() < devices * per_device {
        assert!(start.elapsed() < limit, "the load did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = load.stop();
    let took = start.elapsed();
    let published = wait_delivered(&records, Duration::from_secs(10), || {
        sub.telemetry().iter().map(value).collect()
    });
    let d = delivery(&records, &published);
    let retransmissions: u32 = records.iter().map(|r| r.sends - 1).sum();
    eprintln!(
        "FAULT {test}: load {devices} devices × {per_device} CON POSTs in {}, {retransmissions} \
         retransmissions; acknowledged {}, lost {}, duplicates {}, published but not \
         acknowledged {}; codes [{}]; {}",
        secs(took),
        d.acknowledged,
        d.lost.len(),
        d.duplicates,
        d.unacknowledged_published,
        show(&codes(&records)),
        link_line(&link),
    );
    assert!(
        d.lost.is_empty(),
        "acknowledged, not published: {:?}",
        d.lost
    );
    assert_eq!(d.duplicates, 0, "published more than once");
    assert!(d.unknown.is_empty());
    assert!(
        d.acknowledged * 10 >= records.len() * 8,
        "most requests get through: {} of {}",
        d.acknowledged,
        records.len()
    );
    let (up, down) = (link.upstream(), link.downstream());
    assert!(up.dropped > 0 && down.dropped > 0 && up.duplicated > 0 && up.reordered > 0);
    for code in codes(&records).keys() {
        assert!(["2.04", "none"].contains(&code.as_str()), "{code}");
    }
}

#[test]
fn dtls_over_a_30_percent_lossy_link_publishes_each_acknowledged_message_once() {
    let _serial = serial();
    let test = "lossy_dtls";
    let client = "coap-client-openssl";
    if require(client, test).is_none() {
        return;
    }
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let (devices, per_device) = dtls_size();
    let server = coapgate_server::BackgroundServer::start(fleet_config(
        devices,
        &broker.url(),
        "sqlite::memory:",
    ))
    .unwrap();
    let link = LossyLink::start(server.coaps_addr(), Impairment::lossy(LOSS, 13));
    let url = format!("coaps://{}/data?t=fault", link.addr);
    let start = Instant::now();
    let threads: Vec<_> = (0..devices)
        .map(|d| {
            let url = url.clone();
            std::thread::spawn(move || {
                (0..per_device)
                    .map(|n| {
                        let payload = format!("{test}-d{d}-n{n}");
                        let sent = Instant::now();
                        let reply = coap_client_waiting(
                            client,
                            &[
                                "-a",
                                &device_ip(d),
                                "-u",
                                &iccid(d),
                                "-k",
                                &psk(d),
                                "-m",
                                "post",
                                "-e",
                                &payload,
                                &url,
                            ],
                            40,
                            test,
                        )
                        .unwrap();
                        let code = reply.code.as_deref().map(|c| {
                            let (class, detail) = c.split_once('.').unwrap();
                            class.parse::<u8>().unwrap() << 5 | detail.parse::<u8>().unwrap()
                        });
                        Record {
                            device: d,
                            payload,
                            code,
                            sent,
                            answered: Instant::now(),
                            sends: 1,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let records: Vec<Record> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let took = start.elapsed();
    let published = wait_delivered(&records, Duration::from_secs(10), || {
        sub.telemetry().iter().map(value).collect()
    });
    let d = delivery(&records, &published);
    let slowest = records
        .iter()
        .map(|r| r.answered - r.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "FAULT {test}: load {devices} devices × {per_device} DTLS handshakes + CON POSTs \
         (coap-client-openssl) in {}, slowest {}; acknowledged {}, lost {}, duplicates {}, \
         published but not acknowledged {}; codes [{}]; {}",
        secs(took),
        secs(slowest),
        d.acknowledged,
        d.lost.len(),
        d.duplicates,
        d.unacknowledged_published,
        show(&codes(&records)),
        link_line(&link),
    );
    assert!(
        d.lost.is_empty(),
        "acknowledged, not published: {:?}",
        d.lost
    );
    assert_eq!(d.duplicates, 0, "published more than once");
    assert!(d.unknown.is_empty());
    assert!(
        d.acknowledged * 2 >= records.len(),
        "most requests get through: {} of {}",
        d.acknowledged,
        records.len()
    );
    assert!(link.upstream().dropped > 0 && link.downstream().dropped > 0);
}

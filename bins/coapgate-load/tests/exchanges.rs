//! One device against a scripted peer on loopback (no coapgate): the
//! RFC 7252 message layer of the generator, retransmission back-off and
//! give-up, empty ACK then separate response, NON timeout, RST.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coapgate_codec::{self as codec, MessageClass, MessageType, Packet, ResponseType};
use coapgate_load::{LoadConfig, Report, TransmissionParams};

/// A UDP peer that hands every datagram it receives to `answer` (with the
/// socket and the sender) until the run is over; what it received, with
/// when.
struct Peer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Vec<u8>)>>,
}

impl Peer {
    fn start(mut answer: impl FnMut(&UdpSocket, SocketAddr, &Packet) + Send + 'static) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                received.push((Instant::now(), buf[..len].to_vec()));
                answer(&socket, from, &codec::decode(&buf[..len]).unwrap());
            }
            received
        });
        Self { addr, stop, thread }
    }

    /// Stops the peer: what it received.
    fn finish(self) -> Vec<(Instant, Vec<u8>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// One request from one device to `peer`.
fn run_one(peer: &Peer, config: LoadConfig) -> Report {
    let config = LoadConfig {
        target: peer.addr,
        devices: 1,
        requests: 1,
        duration: Duration::from_secs(10),
        ..config
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(coapgate_load::run(&config))
        .unwrap()
}

/// One CON request with this ACK_TIMEOUT (ms) and MAX_RETRANSMIT. Where a
/// retransmission must not happen, ACK_TIMEOUT is 100 ms: more than a busy
/// machine delays a loopback answer.
fn run_con(peer: &Peer, ack_timeout_ms: u64, max_retransmit: u32) -> Report {
    run_one(
        peer,
        LoadConfig {
            transmission: quick(ack_timeout_ms, max_retransmit),
            ..LoadConfig::default()
        },
    )
}

/// A fast ACK_TIMEOUT with ACK_RANDOM_FACTOR 1.5.
fn quick(ack_timeout_ms: u64, max_retransmit: u32) -> TransmissionParams {
    TransmissionParams {
        ack_timeout: Duration::from_millis(ack_timeout_ms),
        max_retransmit,
        ..TransmissionParams::default()
    }
}

fn response(kind: MessageType, message_id: u16, token: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Response(ResponseType::Changed);
    packet.header.message_id = message_id;
    codec::set_token(&mut packet, token).unwrap();
    codec::encode(&packet).unwrap()
}

#[test]
fn an_unanswered_con_is_retransmitted_with_doubling_timeouts_then_given_up() {
    let peer = Peer::start(|_, _, _| {});
    let report = run_con(&peer, 40, 3);
    let received = peer.finish();
    assert_eq!(
        (report.sent, report.retransmissions, report.timeouts),
        (1, 3, 1),
        "{report}"
    );
    assert_eq!(report.answered(), 0);
    // The same message four times: after the initial timeout t (40–60 ms),
    // then 2t, then 4t. A busy machine only ever delays a timer, and the
    // back-off doubles t, not the delayed gap, so the first gap bounds t
    // from above and ACK_TIMEOUT from below.
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|(_, bytes)| *bytes == received[0].1));
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let first = gaps[0];
    assert!(first < Duration::from_millis(150), "{gaps:?}");
    for (gap, factor) in gaps.iter().zip([1u32, 2, 4]) {
        // Less than 1 ms early: the peer timestamps after receiving.
        assert!(
            *gap + Duration::from_millis(1) >= Duration::from_millis(40) * factor,
            "{gaps:?}"
        );
        assert!(
            *gap < first * factor + Duration::from_millis(100),
            "{gaps:?}"
        );
    }
}

#[test]
fn an_empty_ack_stops_the_retransmissions_and_the_separate_response_is_acknowledged() {
    let peer = Peer::start(|socket, from, packet| {
        if packet.header.get_type() == MessageType::Confirmable {
            socket
                .send_to(&codec::empty_ack(packet.header.message_id), from)
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            socket
                .send_to(
                    &response(MessageType::Confirmable, 0x7777, packet.get_token()),
                    from,
                )
                .unwrap();
        }
    });
    let report = run_con(&peer, 100, 4);
    let received = peer.finish();
    assert_eq!(report.count("2.04"), 1, "{report}");
    assert_eq!(
        (report.empty_acks, report.separate_responses),
        (1, 1),
        "{report}"
    );
    assert_eq!(report.retransmissions + report.timeouts, 0, "{report}");
    assert!(report.latencies[0] >= Duration::from_millis(100));
    // The request once, then the ACK of the separate response.
    assert_eq!(received.len(), 2, "{report}");
    assert_eq!(received[1].1, codec::empty_ack(0x7777));
}

#[test]
fn a_piggybacked_answer_to_a_retransmission_completes_the_request() {
    let mut seen = 0;
    let peer = Peer::start(move |socket, from, packet| {
        seen += 1;
        if seen == 2 {
            let ack = response(
                MessageType::Acknowledgement,
                packet.header.message_id,
                packet.get_token(),
            );
            socket.send_to(&ack, from).unwrap();
        }
    });
    let report = run_con(&peer, 100, 4);
    peer.finish();
    assert_eq!(report.count("2.04"), 1, "{report}");
    assert_eq!(report.retransmissions, 1, "{report}");
    assert_eq!(report.separate_responses + report.timeouts, 0, "{report}");
}

#[test]
fn an_unanswered_non_times_out_without_retransmission() {
    let peer = Peer::start(|_, _, _| {});
    let start = Instant::now();
    let report = run_one(
        &peer,
        LoadConfig {
            non: true,
            transmission: quick(10, 4),
            response_timeout: Some(Duration::from_millis(150)),
            ..LoadConfig::default()
        },
    );
    let elapsed = start.elapsed();
    let received = peer.finish();
    assert_eq!((report.sent, report.timeouts), (1, 1), "{report}");
    assert_eq!(report.retransmissions, 0, "{report}");
    assert_eq!(received.len(), 1);
    assert_eq!(
        codec::decode(&received[0].1).unwrap().header.get_type(),
        MessageType::NonConfirmable
    );
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
}

#[test]
fn a_reset_ends_the_request() {
    let peer = Peer::start(|socket, from, packet| {
        socket
            .send_to(&codec::reset(packet.header.message_id), from)
            .unwrap();
    });
    let report = run_con(&peer, 100, 4);
    let received = peer.finish();
    assert_eq!((report.resets, report.answered()), (1, 0), "{report}");
    assert_eq!(report.retransmissions + report.timeouts, 0, "{report}");
    assert_eq!(received.len(), 1);
}

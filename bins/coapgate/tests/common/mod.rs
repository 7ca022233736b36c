//! A device's side of a CoAP exchange over raw UDP, for the tests that
//! drive the real binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// CON POST /data?t=s with `payload` and message ID `mid`.
pub fn request(mid: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x40, 0x02];
    bytes.extend_from_slice(&mid.to_be_bytes());
    bytes.extend_from_slice(&[0xb4, b'd', b'a', b't', b'a', 0x43, b't', b'=', b's', 0xff]);
    bytes.extend_from_slice(payload);
    bytes
}

/// Sends one request and waits (bounded) for its final response code:
/// piggybacked, or separate after an empty ACK. `None` when none came.
pub fn exchange(socket: &UdpSocket, mid: u16, payload: &[u8]) -> Option<u8> {
    let message = request(mid, payload);
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            socket.send(&message).ok()?;
            next_send = Instant::now() + Duration::from_millis(1500);
        }
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        if n < 4 {
            continue;
        }
        let (kind, code) = (buf[0] >> 4 & 0x3, buf[1]);
        let id = u16::from_be_bytes([buf[2], buf[3]]);
        match kind {
            // ACK: piggybacked when it has a code; empty: the answer follows.
            2 if id == mid && code != 0 => return Some(code),
            2 => next_send = deadline,
            // A separate CON response: acknowledge it.
            0 if code != 0 => {
                socket.send(&[0x60, 0x00, buf[2], buf[3]]).ok()?;
                return Some(code);
            }
            _ => {}
        }
    }
    None
}

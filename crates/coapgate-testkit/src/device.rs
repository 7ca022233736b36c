//! A CoAP device as firmware behaves (RFC 7252 §4.2 retransmission), over
//! a raw UDP socket, and raw DTLS ClientHellos for flood tests.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The response code byte (`0x44` is 2.04); `None` when the device gave
    /// up without one.
    pub code: Option<u8>,
    /// The Max-Age option of the response, if any.
    pub max_age: Option<u32>,
    /// How often the request was sent (1 + retransmissions).
    pub sends: u32,
    /// From the first send to the response (or giving up).
    pub took: Duration,
    /// Whether an empty ACK came first (a separate response).
    pub separate: bool,
}

impl Outcome {
    /// The code as `2.04`, or `none`.
    pub fn code_text(&self) -> String {
        self.code.map_or_else(|| "none".to_owned(), code_text)
    }
}

/// A code byte as `c.dd`.
pub fn code_text(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1f)
}

/// A parsed CoAP message: enough of it for a device.
#[derive(Debug)]
struct Parsed {
    kind: u8,
    code: u8,
    mid: u16,
    token: Vec<u8>,
    max_age: Option<u32>,
}

fn parse(bytes: &[u8]) -> Option<Parsed> {
    let (&first, rest) = bytes.split_first()?;
    if first >> 6 != 1 || rest.len() < 3 {
        return None;
    }
    let tkl = usize::from(first & 0x0f);
    let token = bytes.get(4..4 + tkl)?.to_vec();
    let mut at = 4 + tkl;
    let mut number = 0u32;
    let mut max_age = None;
    while let Some(&b) = bytes.get(at) {
        if b == 0xff {
            break;
        }
        at += 1;
        let mut ext = |nibble: u8| -> Option<u32> {
            Some(match nibble {
                13 => {
                    let v = u32::from(*bytes.get(at)?) + 13;
                    at += 1;
                    v
                }
                14 => {
                    let v =
                        u32::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?])) + 269;
                    at += 2;
                    v
                }
                15 => return None,
                n => u32::from(n),
            })
        };
        let delta = ext(b >> 4)?;
        let len = ext(b & 0x0f)? as usize;
        number += delta;
        let value = bytes.get(at..at + len)?;
        at += len;
        if number == 14 {
            max_age = Some(value.iter().fold(0u32, |a, &v| (a << 8) | u32::from(v)));
        }
    }
    Some(Parsed {
        kind: (first >> 4) & 0x3,
        code: bytes[1],
        mid: u16::from_be_bytes([bytes[2], bytes[3]]),
        token,
        max_age,
    })
}

fn push_option(out: &mut Vec<u8>, last: &mut u16, number: u16, value: &[u8]) {
    let nibble = |v: usize, ext: &mut Vec<u8>| -> u8 {
        if v < 13 {
            v as u8
        } else if v < 269 {
            ext.push((v - 13) as u8);
            13
        } else {
            ext.extend_from_slice(&((v - 269) as u16).to_be_bytes());
            14
        }
    };
    let mut ext = Vec::new();
    let d = nibble(usize::from(number - *last), &mut ext);
    let l = nibble(value.len(), &mut ext);
    out.push(d << 4 | l);
    out.extend_from_slice(&ext);
    out.extend_from_slice(value);
    *last = number;
}

/// Encodes a request: type (0 CON, 1 NON), method code, message ID,
/// token, `path?query` as Uri-Path and Uri-Query options, payload.
pub fn encode_request(
    kind: u8,
    method: u8,
    mid: u16,
    token: &[u8],
    target: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![0x40 | (kind << 4) | token.len() as u8, method];
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(token);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut last = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        push_option(&mut out, &mut last, 11, segment.as_bytes());
    }
    for q in query.split('&').filter(|s| !s.is_empty()) {
        push_option(&mut out, &mut last, 15, q.as_bytes());
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

/// A device on its own address sending CON requests with RFC 7252's
/// retransmission: the first timeout is `ack_timeout` × a random factor in
/// [1, 1.5), doubled on every retransmission, at most `max_retransmit`
/// retransmissions. After an empty ACK it waits up to `separate_wait` for
/// the separate response (and acknowledges it).
pub struct CoapDevice {
    socket: UdpSocket,
    server: SocketAddr,
    mid: u16,
    token: u32,
    rng: StdRng,
    /// ACK_TIMEOUT; RFC 7252 default 2 s.
    pub ack_timeout: Duration,
    /// MAX_RETRANSMIT; RFC 7252 default 4.
    pub max_retransmit: u32,
    /// How long to wait for a separate response after an empty ACK.
    pub separate_wait: Duration,
}

impl CoapDevice {
    /// A device at `ip` (any port) talking to `server`; `seed` seeds its
    /// message IDs, tokens and timeouts.
    pub fn new(ip: &str, server: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let socket = UdpSocket::bind((ip, 0))?;
        let mut rng = StdRng::seed_from_u64(seed);
        Ok(CoapDevice {
            socket,
            server,
            mid: rng.random(),
            token: rng.random(),
            rng,
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            separate_wait: Duration::from_secs(15),
        })
    }

    /// The device's socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// A CON POST of `payload` to `target` (`path?query`).
    pub fn post(&mut self, target: &str, payload: &[u8]) -> Outcome {
        self.request(0x02, target, payload)
    }

    /// A CON request with `method` (1 GET, 2 POST, …).
    pub fn request(&mut self, method: u8, target: &str, payload: &[u8]) -> Outcome {
        self.mid = self.mid.wrapping_add(1);
        self.token = self.token.wrapping_add(1);
        let token = self.token.to_be_bytes();
        let message = encode_request(0, method, self.mid, &token, target, payload);
        let start = Instant::now();
        let factor: f64 = self.rng.random_range(1.0..1.5);
        let mut timeout = self.ack_timeout.mul_f64(factor);
        let mut sends = 1u32;
        let _ = self.socket.send_to(&message, self.server);
        let mut next = start + timeout;
        let mut separate_until: Option<Instant> = None;
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            let deadline = separate_until.unwrap_or(next);
            if now >= deadline {
                if separate_until.is_some() || sends > self.max_retransmit {
                    return Outcome {
                        code: None,
                        max_age: None,
                        sends,
                        took: start.elapsed(),
                        separate: separate_until.is_some(),
                    };
                }
                timeout *= 2;
                sends += 1;
                let _ = self.socket.send_to(&message, self.server);
                next = Instant::now() + timeout;
                continue;
            }
            let _ = self
                .socket
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let Some(p) = parse(&buf[..n]) else { continue };
            let is_response = p.code >> 5 >= 2;
            match p.kind {
                // ACK for our request: piggybacked, or empty (separate follows).
                2 if p.mid == self.mid => {
                    if p.code == 0 {
                        separate_until.get_or_insert(Instant::now() + self.separate_wait);
                    } else if p.token == token {
                        return Outcome {
                            code: Some(p.code),
                            max_age: p.max_age,
                            sends,
                            took: start.elapsed(),
                            separate: false,
                        };
                    }
                }
                // A separate response (or a retransmission of an older
                // one): acknowledge every CON, keep ours.
                0 | 1 if is_response => {
                    if p.kind == 0 {
                        let mut ack = vec![0x60, 0x00];
                        ack.extend_from_slice(&p.mid.to_be_bytes());
                        let _ = self.socket.send_to(&ack, self.server);
                    }
                    if p.token == token {
                        return Outcome {
                            code: Some(p.code),
                            max_age: p.max_age,
                            sends,
                            took: start.elapsed(),
                            separate: true,
                        };
                    }
                }
                _ => {}
            }
        }
    }
}

/// The PSK cipher suites a ClientHello offers (CCM8, CBC-SHA256, GCM).
const SUITES: [u8; 6] = [0xc0, 0xa8, 0x00, 0xae, 0x00, 0xa8];

/// A DTLS 1.2 ClientHello record offering the PSK suites, with `random`
/// and `cookie` (empty for the first hello), handshake message sequence
/// `message_seq` and record sequence `record_seq`.
pub fn dtls_client_hello(
    random: &[u8; 32],
    cookie: &[u8],
    message_seq: u16,
    record_seq: u64,
) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(random);
    body.push(0); // no session ID
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&(SUITES.len() as u16).to_be_bytes());
    body.extend_from_slice(&SUITES);
    body.extend_from_slice(&[1, 0]); // null compression
    let len = body.len() as u32;
    let mut handshake = vec![1];
    handshake.extend_from_slice(&len.to_be_bytes()[1..]);
    handshake.extend_from_slice(&message_seq.to_be_bytes());
    handshake.extend_from_slice(&[0, 0, 0]);
    handshake.extend_from_slice(&len.to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 0xfe, 0xfd, 0, 0];
    record.extend_from_slice(&record_seq.to_be_bytes()[2..]);
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The cookie of a HelloVerifyRequest record, if `datagram` is one.
pub fn hello_verify_cookie(datagram: &[u8]) -> Option<Vec<u8>> {
    // Record header 13 bytes, handshake header 12, then version (2).
    if datagram.first() != Some(&22) || datagram.get(13) != Some(&3) {
        return None;
    }
    let len = usize::from(*datagram.get(13 + 12 + 2)?);
    datagram.get(28..28 + len).map(<[u8]>::to_vec)
}

/// The resident set size of process `pid`, from `/proc/PID/status`, in
/// KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether the long variants of the fault tests were asked for
/// (`COAPGATE_LONG_FAULTS=1`).
pub fn long_faults() -> bool {
    std::env::var("COAPGATE_LONG_FAULTS").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_parses_a_request_and_a_response() {
        let r = encode_request(0, 2, 0x1234, &[0xaa], "data?t=x", b"hi");
        assert_eq!(
            r,
            [
                0x41, 0x02, 0x12, 0x34, 0xaa, 0xb4, b'd', b'a', b't', b'a', 0x43, b't', b'=', b'x',
                0xff, b'h', b'i'
            ]
        );
        // 5.03 with Max-Age 5 (option 14: delta 13 + 1, one byte).
        let p = parse(&[0x61, 0xa3, 0x00, 0x01, 0x07, 0xd1, 0x01, 0x05]).unwrap();
        assert_eq!((p.kind, p.code, p.mid, p.max_age), (2, 0xa3, 1, Some(5)));
        assert_eq!(p.token, [7]);
        assert!(parse(&[0x81, 0x00, 0, 0]).is_none(), "version 2");
    }

    #[test]
    fn a_client_hello_with_a_cookie_has_it_where_a_verify_request_would() {
        let hello = dtls_client_hello(&[7; 32], &[1, 2, 3], 1, 1);
        assert_eq!(&hello[..3], &[22, 0xfe, 0xfd]);
        let len = usize::from(u16::from_be_bytes([hello[11], hello[12]]));
        assert_eq!(hello.len(), 13 + len);
        // A HelloVerifyRequest: record, handshake type 3, version, cookie.
        let mut hvr = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 18];
        hvr.extend_from_slice(&[3, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 6, 0xfe, 0xff, 3, 9, 8, 7]);
        assert_eq!(hello_verify_cookie(&hvr), Some(vec![9, 8, 7]));
        assert_eq!(hello_verify_cookie(&hello), None);
    }
}

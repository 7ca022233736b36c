//! The body of the `dtls` fuzz target, here so that `cargo test` replays
//! the committed corpus (`fuzz/corpus/dtls/`) through exactly the same
//! checks. Not part of the API.
//!
//! The input is a *script*. Each step's first byte picks an action
//! (`op % 10`), its arguments follow:
//!
//! | `op % 10` | step | arguments |
//! |---|---|---|
//! | 0, 1, 2 | a datagram from peer 0, 1 or 2 (127.0.0.2:5000, 127.0.0.2:5001, 127.0.0.3:6000) | length `n` (2 bytes, big-endian), `n` bytes |
//! | 3 | the same, but a ClientHello gets the cookie the server would give that peer spliced in; with `p ≥ 128` the harness refuses the handshake it asks for (an address no device has) | peer `p % 3`, length `n` (2 bytes), `n` bytes |
//! | 4 | advance the clock by `100 ms · d`, firing every timer due on the way at its instant | `d` |
//! | 5 | advance the clock to `poll_timeout`, then `handle_timeout` | — |
//! | 6 | send `n` bytes of application data to an established session | selector `s`, length `n` |
//! | 7 | close an established session | selector `s` |
//! | 8 | OpenSSL's own DTLS client at peer `p % 3` (a new one, as after a reboot) handshakes with suite `p / 3 % 3` and the right key (at most 6 per script) | `p` |
//! | 9 | that client, if connected, sends `8 · n` bytes of application data | `p`, `n` |
//!
//! The server runs with small bounds (2 handshakes, 2 sessions, 5 s
//! handshake timeout, 60 s idle timeout). After every step the harness
//! drains `poll_event` and panics when: a datagram goes to an address that
//! never sent one; a stateless answer is not smaller than the datagram
//! that caused it; the caps are exceeded; a session ID is established
//! twice, or gets `Data`/`Closed` without being established or after it
//! closed; `poll_timeout` is not after `now` once timers ran.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVersion};

use coapgate_exchange::clock::{self, Timers};

use crate::pipe::Pipe;
use crate::{DtlsConfig, DtlsEvent, DtlsServer, DtlsStats, Key, SessionId};

/// The suites op 8 picks from.
const SUITES: [&str; 3] = [
    "PSK-AES128-CCM8",
    "PSK-AES128-CBC-SHA256",
    "PSK-AES128-GCM-SHA256",
];

/// The PSK identity the fuzzing server knows.
pub const IDENTITY: &str = "8988228066602306711";
/// Its key.
pub const KEY: &[u8] = b"fuzzing-psk-0123";

/// The three peers a script can speak as.
pub fn peers() -> [SocketAddr; 3] {
    [
        SocketAddr::from(([127, 0, 0, 2], 5000)),
        SocketAddr::from(([127, 0, 0, 2], 5001)),
        SocketAddr::from(([127, 0, 0, 3], 6000)),
    ]
}

/// The server configuration scripts run against.
pub fn config() -> DtlsConfig {
    DtlsConfig {
        max_handshakes: 2,
        max_sessions: 2,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        ..DtlsConfig::default()
    }
}

/// What a script did, for the corpus test's expectations.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The server's counters at the end.
    pub stats: DtlsStats,
    /// Datagrams the server sent.
    pub transmits: usize,
    /// Sessions established.
    pub established: usize,
    /// `Data` events.
    pub data: usize,
    /// `Closed` events.
    pub closed: usize,
}

/// The fuzz target: runs `data` as a script; panics on a broken invariant.
pub fn datagrams(data: &[u8]) {
    run(data);
}

/// Runs `data` as a script and reports what happened.
pub fn run(data: &[u8]) -> Outcome {
    let psk = |identity: &str| (identity == IDENTITY).then(|| Key::new(KEY.to_vec()));
    let cfg = config();
    let Ok(mut server) = DtlsServer::new(cfg.clone(), Arc::new(psk)) else {
        panic!("the fuzzing configuration is valid");
    };
    let peers = peers();
    let mut now = Instant::now();
    let mut h = Harness::default();
    let mut input = data;
    // Bounded: every step consumes at least one byte.
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op % 10 {
            p @ 0..=2 => {
                let datagram = take_sized(&mut input);
                let from = peers[usize::from(p)];
                h.deliver(&mut server, now, from, datagram);
            }
            3 => {
                let p = take_byte(&mut input);
                let from = peers[usize::from(p % 3)];
                let datagram = take_sized(&mut input);
                let patched = server
                    .with_valid_cookie(now, from, datagram)
                    .unwrap_or_else(|| datagram.to_vec());
                h.refusing = p >= 128;
                h.deliver(&mut server, now, from, &patched);
                h.refusing = false;
            }
            4 => {
                let d = take_byte(&mut input);
                let target = now + Duration::from_millis(100 * u64::from(d));
                let mut running = Running {
                    harness: &mut h,
                    server: &mut server,
                };
                clock::advance(&mut running, now, target);
                now = target;
            }
            5 => {
                if let Some(at) = server.poll_timeout() {
                    now = now.max(at);
                }
                h.timeout(&mut server, now);
            }
            6 => {
                let s = take_byte(&mut input);
                let n = take_byte(&mut input);
                if let Some(id) = h.pick(s) {
                    let _ = server.send(id, &vec![0x42; usize::from(n) * 8]);
                    h.drain(&mut server, now);
                }
            }
            7 => {
                let s = take_byte(&mut input);
                if let Some(id) = h.pick(s) {
                    server.close(id);
                    h.drain(&mut server, now);
                    assert!(!h.live.contains(&id), "close() without Closed");
                }
            }
            8 => {
                let p = take_byte(&mut input);
                let peer = usize::from(p % 3);
                if h.real_handshakes == MAX_REAL_HANDSHAKES {
                    continue;
                }
                h.real_handshakes += 1;
                h.clients[peer] = client(usize::from(p / 3 % 3));
                // Bounded: a handshake is four flights.
                for _ in 0..8 {
                    h.step_client(&mut server, now, peer, peers[peer]);
                }
            }
            _ => {
                let p = take_byte(&mut input);
                let n = take_byte(&mut input);
                let peer = usize::from(p % 3);
                if let Some(c) = h.clients[peer].as_mut().filter(|c| c.connected) {
                    let _ = c.stream.ssl_write(&vec![0x43; usize::from(n) * 8 + 1]);
                    h.step_client(&mut server, now, peer, peers[peer]);
                }
            }
        }
        let stats = server.stats();
        assert!(
            stats.handshakes_in_progress <= cfg.max_handshakes,
            "{stats:?}"
        );
        assert!(stats.sessions <= cfg.max_sessions, "{stats:?}");
        assert_eq!(stats.sessions, h.live.len(), "sessions vs events");
    }
    Outcome {
        stats: server.stats(),
        transmits: h.transmits,
        established: h.established.len(),
        data: h.data,
        closed: h.closed,
    }
}

/// OpenSSL's DTLS client, for op 8.
struct FuzzClient {
    stream: SslStream<Pipe>,
    connected: bool,
}

/// At most this many real handshakes per script (each costs about a millisecond).
const MAX_REAL_HANDSHAKES: usize = 6;

fn client(suite: usize) -> Option<FuzzClient> {
    // One client context per suite for the whole process: building one
    // is what costs most.
    static CONTEXTS: OnceLock<Vec<Option<SslContext>>> = OnceLock::new();
    let ctx = CONTEXTS
        .get_or_init(|| SUITES.iter().map(|s| client_context(s)).collect())
        .get(suite)?
        .as_ref()?;
    let mut ssl = Ssl::new(ctx).ok()?;
    ssl.set_mtu(1200).ok()?;
    ssl.set_connect_state();
    Some(FuzzClient {
        stream: SslStream::new(ssl, Pipe::default()).ok()?,
        connected: false,
    })
}

fn client_context(suite: &str) -> Option<SslContext> {
    let mut ctx = SslContext::builder(SslMethod::dtls_client()).ok()?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2)).ok()?;
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2)).ok()?;
    ctx.set_cipher_list(suite).ok()?;
    ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    ctx.set_psk_client_callback(|_ssl, _hint, identity, key| {
        let id = IDENTITY.as_bytes();
        identity[..id.len()].copy_from_slice(id);
        identity[id.len()] = 0;
        key[..KEY.len()].copy_from_slice(KEY);
        Ok(KEY.len())
    });
    Some(ctx.build())
}

#[derive(Default)]
struct Harness {
    senders: HashSet<SocketAddr>,
    established: HashSet<SessionId>,
    live: Vec<SessionId>,
    transmits: usize,
    data: usize,
    closed: usize,
    /// Real clients, by peer; they get every datagram sent to their peer.
    clients: [Option<FuzzClient>; 3],
    /// Datagrams the server sent, by peer, not yet given to a client.
    to_peer: [Vec<Vec<u8>>; 3],
    real_handshakes: usize,
    /// Refuse the handshakes the datagram being delivered asks for.
    refusing: bool,
}

impl Harness {
    /// Lets peer `peer`'s client read what came and send what it writes.
    fn step_client(
        &mut self,
        server: &mut DtlsServer,
        now: Instant,
        peer: usize,
        addr: SocketAddr,
    ) {
        let Some(c) = self.clients[peer].as_mut() else {
            return;
        };
        for d in self.to_peer[peer].drain(..) {
            c.stream.get_mut().push(d);
        }
        if !c.connected {
            match c.stream.do_handshake() {
                Ok(()) => c.connected = true,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(_) => {}
            }
        }
        if c.connected {
            let mut buf = [0u8; 2048];
            for _ in 0..16 {
                if c.stream.ssl_read(&mut buf).is_err() {
                    break;
                }
            }
        }
        c.stream.get_mut().clear_inbox();
        let out = c.stream.get_mut().take_outbox();
        for d in out {
            self.deliver(server, now, addr, &d);
        }
    }

    fn deliver(
        &mut self,
        server: &mut DtlsServer,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        self.senders.insert(from);
        let before = server.stats();
        server.handle_datagram(now, from, datagram);
        let sent = self.drain(server, now);
        let after = server.stats();
        if after.cookies_sent > before.cookies_sent {
            assert!(
                sent < datagram.len(),
                "a HelloVerifyRequest of {sent} bytes answered {} bytes",
                datagram.len()
            );
            assert_eq!(after.handshakes_in_progress, before.handshakes_in_progress);
        }
    }

    fn timeout(&mut self, server: &mut DtlsServer, now: Instant) {
        server.handle_timeout(now);
        self.drain(server, now);
        if let Some(at) = server.poll_timeout() {
            assert!(at > now, "poll_timeout {at:?} not after now {now:?}");
        }
    }

    /// Drains events, checking them; returns the bytes transmitted.
    /// Handshakes are accepted unless `refusing`.
    fn drain(&mut self, server: &mut DtlsServer, now: Instant) -> usize {
        let mut sent = 0;
        while let Some(event) = server.poll_event() {
            match event {
                DtlsEvent::Incoming(incoming) => {
                    assert!(self.senders.contains(&incoming.addr()));
                    if self.refusing {
                        let before = server.stats();
                        server.refuse(incoming);
                        let after = server.stats();
                        assert_eq!(after.handshakes_refused, before.handshakes_refused + 1);
                        assert_eq!(after.handshakes_in_progress, before.handshakes_in_progress);
                    } else {
                        server.accept(now, incoming);
                    }
                }
                DtlsEvent::Transmit { to, bytes } => {
                    assert!(self.senders.contains(&to), "transmit to a stranger {to}");
                    assert!(bytes.len() <= 1200, "datagram over the MTU");
                    sent += bytes.len();
                    self.transmits += 1;
                    if let Some(p) = peers().iter().position(|&a| a == to) {
                        if self.clients[p].is_some() && self.to_peer[p].len() < 64 {
                            self.to_peer[p].push(bytes);
                        }
                    }
                }
                DtlsEvent::Established { session, addr, .. } => {
                    assert!(self.senders.contains(&addr));
                    assert!(self.established.insert(session), "established twice");
                    self.live.push(session);
                }
                DtlsEvent::Data { session, .. } => {
                    assert!(self.live.contains(&session), "data on a dead session");
                    self.data += 1;
                }
                DtlsEvent::Closed { session, .. } => {
                    let at = self.live.iter().position(|&s| s == session);
                    let Some(at) = at else {
                        panic!("Closed for a session that is not live");
                    };
                    self.live.remove(at);
                    self.closed += 1;
                }
            }
        }
        sent
    }

    fn pick(&self, s: u8) -> Option<SessionId> {
        (!self.live.is_empty()).then(|| self.live[usize::from(s) % self.live.len()])
    }
}

fn take_byte(input: &mut &[u8]) -> u8 {
    match input.split_first() {
        Some((&b, rest)) => {
            *input = rest;
            b
        }
        None => 0,
    }
}

fn take_sized<'a>(input: &mut &'a [u8]) -> &'a [u8] {
    let hi = take_byte(input);
    let lo = take_byte(input);
    let n = usize::from(u16::from_be_bytes([hi, lo])).min(input.len());
    let (head, rest) = input.split_at(n);
    *input = rest;
    head
}

/// Encodes a script step delivering `datagram` from peer `p` (0..=2).
pub fn step_datagram(p: u8, datagram: &[u8]) -> Vec<u8> {
    let mut out = vec![p];
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    out
}

/// Encodes a script step in which OpenSSL's client at peer `p` handshakes
/// with suite `suite` (0..=2).
pub fn step_real_handshake(p: u8, suite: u8) -> Vec<u8> {
    vec![8, p % 3 + 3 * (suite % 3)]
}

/// Encodes a script step in which peer `p`'s client sends `8 · n + 1` bytes.
pub fn step_real_data(p: u8, n: u8) -> Vec<u8> {
    vec![9, p, n]
}

/// Encodes a script step delivering `datagram` from peer `p` with a valid
/// cookie spliced in.
pub fn step_with_cookie(p: u8, datagram: &[u8]) -> Vec<u8> {
    let mut out = vec![3, p];
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    out
}

/// The harness and its server as one machine with timers, for the
/// fake-clock loop every harness shares ([`clock::advance`]).
struct Running<'a> {
    harness: &'a mut Harness,
    server: &'a mut DtlsServer,
}

impl Timers for Running<'_> {
    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.harness.timeout(self.server, now);
    }
}

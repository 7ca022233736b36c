//! [`DtlsServer`]: routing, the stateless cookie path, one OpenSSL `Ssl`
//! per handshake or session, caps and timers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use coapgate_exchange::RateLimiter;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslMode, SslOptions, SslSessionCacheMode, SslStream,
    SslVersion,
};

use crate::cookie::{COOKIE_LEN, Cookie, CookieJar};
use crate::pipe::Pipe;
use crate::record::{self, ClientHello};
use crate::{
    CloseReason, DtlsConfig, DtlsError, DtlsEvent, DtlsStats, Incoming, PskLookup, SessionId, ffi,
};

/// Where each `Ssl` keeps the cookie it was admitted with, for OpenSSL's
/// cookie callbacks. Allocated once per process (ex-data indexes are global
/// in OpenSSL and never freed).
static COOKIE_INDEX: OnceLock<Option<Index<Ssl, Cookie>>> = OnceLock::new();

fn cookie_index() -> Result<Index<Ssl, Cookie>, DtlsError> {
    COOKIE_INDEX
        .get_or_init(|| Ssl::new_ex_index::<Cookie>().ok())
        .ok_or(DtlsError::Config("OpenSSL has no ex-data index left"))
}

/// A datagram carries at most this many records that we read out one by one.
const MAX_READS_PER_DATAGRAM: usize = 64;
/// A second ClientHello's message_seq above this is not believed (a client
/// sends 1 after one HelloVerifyRequest; more only after stale cookies).
const MAX_CLIENT_HELLO_SEQ: u16 = 4;
/// OpenSSL's state string while it waits for the client's Finished after
/// its ChangeCipherSpec ("TLS read change cipher spec").
const AWAITING_FINISHED: &str = "TRCCS";
/// Never schedule a retransmission check sooner than this after `now`.
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);

enum Phase {
    Handshake {
        /// Dropped at this instant if not complete.
        deadline: Instant,
        /// When OpenSSL's retransmission timer next wants attention.
        retransmit_at: Option<Instant>,
        /// The ClientHello's random: a retransmitted second ClientHello
        /// has the same, a new attempt from the same address another.
        random: [u8; 32],
    },
    Session {
        identity: String,
        last_activity: Instant,
    },
}

struct Conn {
    addr: SocketAddr,
    stream: SslStream<Pipe>,
    phase: Phase,
    /// This connection's entry in `DtlsServer::timers`, if any.
    timer: Option<Instant>,
    /// Added to the record number of every epoch-0 record this `Ssl`
    /// writes (see `record::shift_epoch0_seqs`).
    seq_offset: u64,
}

/// What an address has: at most one handshake and one session (a session
/// and a handshake side by side while a device re-handshakes).
#[derive(Default, Clone, Copy)]
struct Slot {
    handshake: Option<SessionId>,
    session: Option<SessionId>,
}

/// Why a handshake ended without a session.
#[derive(Clone, Copy)]
enum Abort {
    Failed(&'static str),
    TimedOut,
    RefusedOverCap,
}

/// A DTLS 1.2 PSK server for many peers behind one UDP socket the caller
/// owns. See the [crate documentation](crate) for the contract.
pub struct DtlsServer {
    config: DtlsConfig,
    ctx: SslContext,
    cookie_index: Index<Ssl, Cookie>,
    cookies: CookieJar,
    conns: HashMap<SessionId, Conn>,
    peers: HashMap<SocketAddr, Slot>,
    /// New handshakes per source IP: a token bucket per address.
    handshake_limiter: RateLimiter<IpAddr>,
    /// One entry per connection: its next deadline.
    timers: BTreeSet<(Instant, SessionId)>,
    events: VecDeque<DtlsEvent>,
    stats: DtlsStats,
    /// Connections in the `Session` phase (the rest are handshakes).
    n_sessions: usize,
    /// The next handshake's ID: this server's own sequence, never reused.
    next_id: SessionId,
    read_buf: Vec<u8>,
}

impl fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsServer")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DtlsServer {
    /// A server with this configuration, looking keys up in `psk`.
    ///
    /// Fails if the configuration is invalid or OpenSSL accepts none of the
    /// configured cipher suites.
    pub fn new(config: DtlsConfig, psk: Arc<dyn PskLookup>) -> Result<Self, DtlsError> {
        config.validate()?;
        let cookie_index = cookie_index()?;
        let mut ctx = SslContext::builder(SslMethod::dtls_server())?;
        ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
        ctx.set_cipher_list(&config.ciphers)
            .map_err(|source| DtlsError::Ciphers {
                ciphers: config.ciphers.clone(),
                source,
            })?;
        ctx.set_options(
            SslOptions::COOKIE_EXCHANGE
                | SslOptions::NO_QUERY_MTU
                | SslOptions::NO_TICKET
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::CIPHER_SERVER_PREFERENCE,
        );
        // No resumption: every handshake asks the lookup for the key.
        ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
        ctx.set_mode(SslMode::RELEASE_BUFFERS);
        ctx.set_psk_server_callback(move |_ssl, identity, out| {
            let Some(identity) = identity.and_then(|i| std::str::from_utf8(i).ok()) else {
                return Ok(0);
            };
            let Some(key) = psk.key(identity) else {
                tracing::debug!(identity, "DTLS: unknown PSK identity");
                return Ok(0);
            };
            let bytes = key.as_bytes();
            match out.get_mut(..bytes.len()) {
                Some(dst) if !bytes.is_empty() => {
                    dst.copy_from_slice(bytes);
                    Ok(bytes.len())
                }
                _ => Ok(0),
            }
        });
        ctx.set_cookie_generate_cb(move |ssl, out| {
            let cookie = ssl.ex_data(cookie_index).ok_or_else(ErrorStack::get)?;
            let dst = out.get_mut(..COOKIE_LEN).ok_or_else(ErrorStack::get)?;
            dst.copy_from_slice(cookie);
            Ok(COOKIE_LEN)
        });
        ctx.set_cookie_verify_cb(move |ssl, offered| {
            ssl.ex_data(cookie_index).is_some_and(|cookie| {
                offered.len() == COOKIE_LEN && openssl::memcmp::eq(cookie, offered)
            })
        });
        Ok(DtlsServer {
            cookies: CookieJar::new(config.cookie_rotation)?,
            handshake_limiter: RateLimiter::new(config.handshake_limit),
            config,
            ctx: ctx.build(),
            cookie_index,
            conns: HashMap::new(),
            peers: HashMap::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            stats: DtlsStats::default(),
            n_sessions: 0,
            next_id: 1,
            read_buf: vec![0; 16 * 1024 + 256],
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DtlsConfig {
        &self.config
    }

    /// Handles one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if record::starts_with_client_hello(data) {
            self.client_hello(now, from, data);
            return;
        }
        let slot = self.peers.get(&from).copied().unwrap_or_default();
        let encrypted = record::split_record(data).is_some_and(|(r, _)| r.epoch >= 1);
        let mut consumed = false;
        if let Some(handshake) = slot.handshake {
            consumed |= self.feed_handshake(now, handshake, data);
        }
        if let Some(session) = slot.session {
            // While the address also has a handshake (a re-handshake),
            // encrypted records may belong to either: each `Ssl` silently
            // drops what it cannot decrypt. Epoch-0 records then belong to
            // the handshake.
            if (slot.handshake.is_none() || encrypted) && self.conns.contains_key(&session) {
                self.feed_session(now, session, data);
                consumed = true;
            }
        }
        if !consumed {
            self.stats.datagrams_dropped += 1;
        }
    }

    /// Encrypts `data` as one record to `session` (a `Transmit` follows).
    pub fn send(&mut self, session: SessionId, data: &[u8]) -> Result<(), DtlsError> {
        let conn = match self.conns.get_mut(&session) {
            Some(conn) if matches!(conn.phase, Phase::Session { .. }) => conn,
            _ => return Err(DtlsError::UnknownSession(session)),
        };
        let max = ffi::data_mtu(&mut conn.stream);
        if data.len() > max {
            return Err(DtlsError::TooLarge {
                len: data.len(),
                max,
            });
        }
        if data.is_empty() {
            // OpenSSL treats a zero-length write as a failure; there is
            // nothing to send.
            return Ok(());
        }
        let result = conn.stream.ssl_write(data);
        self.flush(session);
        match result {
            Ok(_) => Ok(()),
            Err(source) => {
                self.end_session(session, CloseReason::Error);
                Err(DtlsError::Write { session, source })
            }
        }
    }

    /// Handles timers due at `now`: handshake deadlines, OpenSSL's
    /// retransmissions, idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handshake_limiter.sweep(now);
        // Every connection is handled at most once per call; re-armed timers
        // lie after `now`.
        let mut budget = self.timers.len();
        while budget > 0 {
            budget -= 1;
            let Some(&(at, id)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.timer = None;
            match conn.phase {
                Phase::Handshake { deadline, .. } if now >= deadline => {
                    self.abort_handshake(id, Abort::TimedOut);
                }
                Phase::Handshake { .. } => {
                    let fired = ffi::handle_timeout(&mut conn.stream);
                    self.flush(id);
                    if fired < 0 {
                        self.abort_handshake(id, Abort::TimedOut);
                    } else {
                        self.rearm_handshake(now, id);
                    }
                }
                Phase::Session { last_activity, .. } => {
                    let expires = last_activity + self.config.idle_timeout;
                    if now >= expires {
                        self.close_with(id, CloseReason::Idle);
                    } else {
                        self.set_timer(id, expires);
                    }
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Sends close_notify to `session` and forgets it (`Closed` with
    /// [`CloseReason::Local`] follows). Unknown IDs are ignored.
    pub fn close(&mut self, session: SessionId) {
        if matches!(
            self.conns.get(&session).map(|c| &c.phase),
            Some(Phase::Session { .. })
        ) {
            self.close_with(session, CloseReason::Local);
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DtlsStats {
        DtlsStats {
            sessions: self.n_sessions,
            handshakes_in_progress: self.conns.len() - self.n_sessions,
            ..self.stats
        }
    }

    /// The session's peer address and PSK identity, if it is established.
    pub fn session_info(&self, session: SessionId) -> Option<(SocketAddr, &str)> {
        match self.conns.get(&session)? {
            Conn {
                addr,
                phase: Phase::Session { identity, .. },
                ..
            } => Some((*addr, identity.as_str())),
            _ => None,
        }
    }

    fn handshakes_in_progress(&self) -> usize {
        self.conns.len() - self.n_sessions
    }

    fn sessions(&self) -> usize {
        self.n_sessions
    }

    // ---- the cookie path -------------------------------------------------

    fn client_hello(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.cookies.rotate_if_due(now);
        let Ok(hello) = record::parse_client_hello(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Some(cookie) = self.cookies.verify(&from, &hello) else {
            self.send_hello_verify_request(from, &hello, data.len());
            return;
        };
        let slot = self.peers.get(&from).copied().unwrap_or_default();
        if let Some(id) = slot.handshake {
            let same = matches!(self.conns.get(&id),
                Some(Conn { phase: Phase::Handshake { random, .. }, .. }) if random[..] == *hello.random);
            if same {
                // The client repeated its second ClientHello: OpenSSL
                // ignores the duplicate and retransmits on its timer.
                self.feed_handshake(now, id, data);
                return;
            }
        }
        if hello.message_seq > MAX_CLIENT_HELLO_SEQ {
            self.stats.datagrams_dropped += 1;
            return;
        }
        // A return-routable address wants a handshake: the caller decides
        // (accept / refuse) before any state exists for it.
        self.events.push_back(DtlsEvent::Incoming(Incoming {
            addr: from,
            datagram: data.to_vec(),
            cookie,
        }));
    }

    /// Starts the handshake an [`Incoming`] asked for, if its address is
    /// within [`DtlsConfig::handshake_limit`] (else it is dropped silently
    /// and counted as rate-limited) and the caps allow (else it is counted
    /// as refused over the cap). A half-open handshake from the same
    /// address is abandoned for it; a live session from the same address
    /// stays until the new handshake completes.
    pub fn accept(&mut self, now: Instant, incoming: Incoming) {
        let Incoming {
            addr: from,
            datagram,
            cookie,
        } = incoming;
        // First, so that a ClientHello over the limit changes nothing: no
        // `Ssl`, no slot, and a half-open handshake of the address is kept.
        if let Err(wait) = self.handshake_limiter.check(now, &from.ip().to_canonical()) {
            self.stats.handshakes_rate_limited += 1;
            tracing::debug!(%from, ?wait, "DTLS: handshake dropped, over the address's handshake rate");
            return;
        }
        let Ok(hello) = record::parse_client_hello(&datagram) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let slot = self.peers.get(&from).copied().unwrap_or_default();
        if let Some(id) = slot.handshake {
            // A new attempt from the same (return-routable) address: the
            // old half-open handshake is abandoned.
            self.abort_handshake(id, Abort::Failed("superseded by a new ClientHello"));
        }
        if self.handshakes_in_progress() >= self.config.max_handshakes {
            self.stats.handshakes_refused_over_cap += 1;
            tracing::debug!(%from, "DTLS: handshake refused, max_handshakes reached");
            return;
        }
        if slot.session.is_none() && self.sessions() >= self.config.max_sessions {
            self.stats.handshakes_refused_over_cap += 1;
            tracing::debug!(%from, "DTLS: handshake refused, max_sessions reached");
            return;
        }
        self.start_handshake(now, from, &hello, &datagram, cookie);
    }

    /// Refuses the handshake an [`Incoming`] asked for: nothing is
    /// allocated and nothing is sent (an alert would only tell a scanner
    /// that the port is live).
    pub fn refuse(&mut self, incoming: Incoming) {
        self.stats.handshakes_refused += 1;
        tracing::debug!(addr = %incoming.addr, "DTLS: handshake refused");
    }

    fn send_hello_verify_request(&mut self, to: SocketAddr, hello: &ClientHello<'_>, len: usize) {
        let cookie = self.cookies.cookie(&to, hello);
        let bytes = record::hello_verify_request(hello, &cookie);
        if bytes.len() >= len {
            // Never answer a spoofable datagram with more bytes than it had.
            self.stats.datagrams_dropped += 1;
            return;
        }
        self.stats.cookies_sent += 1;
        self.events.push_back(DtlsEvent::Transmit { to, bytes });
    }

    /// Creates the `Ssl` for a ClientHello with a valid cookie and hands it
    /// the ClientHello as the second one of a cookie exchange.
    ///
    /// The usual case, a ClientHello with message_seq 1 (the client's
    /// second, RFC 6347 §4.2.1), goes through `DTLSv1_listen`: OpenSSL
    /// parses it once, asks the verify callback (a compare with the cookie
    /// we just checked), buffers it and numbers its own messages and
    /// records to follow it, as if it had sent the HelloVerifyRequest
    /// itself. Any other message_seq (0, or 2 and up after a rejected
    /// cookie) gets the general path, `replay_cookie_exchange`.
    fn start_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hello: &ClientHello<'_>,
        data: &[u8],
        cookie: Cookie,
    ) {
        let listened = hello.message_seq == 1;
        let stream = if listened {
            self.listen(data, cookie)
        } else {
            self.replay_cookie_exchange(hello, cookie)
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(why) => {
                tracing::debug!(%from, why, "DTLS: could not start a handshake");
                self.stats.handshakes_failed += 1;
                return;
            }
        };
        let mut random = [0u8; 32];
        random.copy_from_slice(hello.random);
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                addr: from,
                stream,
                phase: Phase::Handshake {
                    deadline: now + self.config.handshake_timeout,
                    retransmit_at: None,
                    random,
                },
                timer: None,
                // After a replay, OpenSSL's HelloVerifyRequests took record
                // numbers 0..message_seq; its ServerHello must carry the
                // second ClientHello's number, as after DTLSv1_listen
                // (which sets that number itself).
                seq_offset: if listened {
                    0
                } else {
                    hello
                        .record_seq
                        .saturating_sub(u64::from(hello.message_seq))
                },
            },
        );
        self.peers.entry(from).or_default().handshake = Some(id);
        if listened {
            self.drive_handshake(now, id, false);
        } else {
            self.feed_handshake(now, id, data);
        }
    }

    /// A fresh server `Ssl` in accept state over an empty [`Pipe`], whose
    /// cookie callbacks accept exactly `cookie`.
    fn new_stream(&self, cookie: Cookie) -> Result<SslStream<Pipe>, &'static str> {
        let mut ssl = Ssl::new(&self.ctx).map_err(|_| "Ssl::new failed")?;
        ssl.set_mtu(self.config.mtu)
            .map_err(|_| "OpenSSL refused the MTU")?;
        if !ffi::set_max_send_fragment(&mut ssl, (self.config.mtu as usize).clamp(512, 16_384)) {
            return Err("OpenSSL refused the max send fragment");
        }
        ssl.set_ex_data(self.cookie_index, cookie);
        ssl.set_accept_state();
        SslStream::new(ssl, Pipe::default()).map_err(|_| "no BIO")
    }

    /// A fresh server `Ssl` that has taken `data` (a ClientHello with
    /// message_seq 1 and a valid cookie) through `DTLSv1_listen`: its next
    /// `do_handshake` writes the ServerHello flight.
    fn listen(&self, data: &[u8], cookie: Cookie) -> Result<SslStream<Pipe>, &'static str> {
        let mut stream = self.new_stream(cookie)?;
        stream.get_mut().push(data.to_vec());
        let taken = ffi::listen(&mut stream);
        // Had the verify callback refused the cookie, OpenSSL would have
        // written a HelloVerifyRequest: never send it.
        let wrote = !stream.get_mut().take_outbox().is_empty();
        stream.get_mut().clear_inbox();
        if !taken || wrote {
            return Err("DTLSv1_listen did not take the ClientHello");
        }
        Ok(stream)
    }

    /// A fresh server `Ssl` that has answered cookie-less copies of `hello`
    /// (message_seq 0 .. hello.message_seq) with HelloVerifyRequests, which
    /// are discarded: it now expects exactly the client's ClientHello with
    /// cookie, and its cookie callbacks accept `cookie`.
    fn replay_cookie_exchange(
        &self,
        hello: &ClientHello<'_>,
        cookie: Cookie,
    ) -> Result<SslStream<Pipe>, &'static str> {
        let mut stream = self.new_stream(cookie)?;
        let k = u64::from(hello.message_seq);
        for seq in 0..hello.message_seq {
            // Record sequence numbers below the real one when there is room
            // (else just above it): none repeats, all lie in the replay window.
            let i = u64::from(seq);
            let record_seq = if hello.record_seq >= k {
                hello.record_seq - k + i
            } else {
                hello.record_seq + 1 + i
            };
            stream
                .get_mut()
                .push(record::cookieless_copy(hello, seq, record_seq));
            match stream.do_handshake() {
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                _ => return Err("OpenSSL did not take the cookie-less ClientHello"),
            }
            let out = stream.get_mut().take_outbox();
            let is_hvr = |d: &Vec<u8>| {
                record::split_record(d).is_some_and(|(r, _)| {
                    r.fragment.first() == Some(&record::HT_HELLO_VERIFY_REQUEST)
                })
            };
            if out.len() != 1 || !is_hvr(&out[0]) {
                return Err("OpenSSL did not answer with a HelloVerifyRequest");
            }
        }
        Ok(stream)
    }

    // ---- handshakes ------------------------------------------------------

    /// Feeds a datagram, minus its application data, to a handshake;
    /// `false` if nothing was left to feed.
    fn feed_handshake(&mut self, now: Instant, id: SessionId, data: &[u8]) -> bool {
        let Some(filtered) = record::without_application_data(data) else {
            return false;
        };
        let finished = record::has_encrypted_handshake(&filtered);
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        conn.stream.get_mut().push(filtered);
        self.drive_handshake(now, id, finished);
        true
    }

    /// Runs OpenSSL's handshake on what was fed to `id`; `finished`: the
    /// input held the client's (encrypted) Finished.
    fn drive_handshake(&mut self, now: Instant, id: SessionId, finished: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let result = conn.stream.do_handshake();
        let state = conn.stream.ssl().state_string();
        conn.stream.get_mut().clear_inbox();
        self.flush(id);
        match result {
            Ok(()) => self.establish(now, id),
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                if finished && state == AWAITING_FINISHED {
                    // DTLS drops records that fail to decrypt, so a wrong
                    // PSK shows only as a Finished that changed nothing.
                    self.abort_handshake(
                        id,
                        Abort::Failed("client Finished did not verify (wrong PSK?)"),
                    );
                } else {
                    self.rearm_handshake(now, id);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "DTLS: handshake failed");
                self.abort_handshake(id, Abort::Failed("OpenSSL ended the handshake"));
            }
        }
    }

    fn rearm_handshake(&mut self, now: Instant, id: SessionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let left = ffi::get_timeout(&mut conn.stream);
        let Phase::Handshake {
            deadline,
            retransmit_at,
            ..
        } = &mut conn.phase
        else {
            return;
        };
        *retransmit_at = left.map(|d| now + d.max(MIN_TIMER_STEP));
        let at = retransmit_at.map_or(*deadline, |r| r.min(*deadline));
        self.set_timer(id, at);
    }

    fn establish(&mut self, now: Instant, id: SessionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let addr = conn.addr;
        let identity = conn
            .stream
            .ssl()
            .psk_identity()
            .and_then(|i| std::str::from_utf8(i).ok())
            .map(str::to_owned);
        let Some(identity) = identity else {
            self.abort_handshake(id, Abort::Failed("no PSK identity"));
            return;
        };
        let slot = self.peers.get(&addr).copied().unwrap_or_default();
        if slot.session.is_none() && self.n_sessions >= self.config.max_sessions {
            // Sessions filled up while this handshake ran.
            let _ = conn.stream.shutdown();
            self.flush(id);
            self.abort_handshake(id, Abort::RefusedOverCap);
            return;
        }
        conn.phase = Phase::Session {
            identity: identity.clone(),
            last_activity: now,
        };
        self.n_sessions += 1;
        self.stats.handshakes_ok += 1;
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.handshake = None;
        }
        if let Some(old) = slot.session {
            self.remove(old);
            self.events.push_back(DtlsEvent::Closed {
                session: old,
                reason: CloseReason::Replaced,
            });
        }
        self.peers.entry(addr).or_default().session = Some(id);
        self.set_timer(id, now + self.config.idle_timeout);
        tracing::debug!(%addr, identity, session = id, "DTLS: session established");
        self.events.push_back(DtlsEvent::Established {
            session: id,
            addr,
            identity,
        });
        // Records that arrived with the Finished (OpenSSL buffers them).
        self.read_session(now, id);
    }

    fn abort_handshake(&mut self, id: SessionId, why: Abort) {
        let Some(conn) = self.remove(id) else {
            return;
        };
        match why {
            Abort::Failed(reason) => {
                tracing::debug!(addr = %conn.addr, reason, "DTLS: handshake failed");
                self.stats.handshakes_failed += 1;
            }
            Abort::TimedOut => {
                tracing::debug!(addr = %conn.addr, "DTLS: handshake timed out");
                self.stats.handshakes_timed_out += 1;
            }
            Abort::RefusedOverCap => {
                tracing::debug!(addr = %conn.addr, "DTLS: session refused, max_sessions reached");
                self.stats.handshakes_refused_over_cap += 1;
            }
        }
    }

    // ---- sessions --------------------------------------------------------

    fn feed_session(&mut self, now: Instant, id: SessionId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.stream.get_mut().push(data.to_vec());
        self.read_session(now, id);
    }

    fn read_session(&mut self, now: Instant, id: SessionId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut ended = None;
        for _ in 0..MAX_READS_PER_DATAGRAM {
            match conn.stream.ssl_read(&mut self.read_buf) {
                Ok(n) => {
                    if let Phase::Session { last_activity, .. } = &mut conn.phase {
                        *last_activity = now;
                    }
                    self.events.push_back(DtlsEvent::Data {
                        session: id,
                        addr: conn.addr,
                        bytes: self.read_buf[..n].to_vec(),
                    });
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    ended = Some(CloseReason::PeerClosed);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, session = id, "DTLS: session failed");
                    ended = Some(CloseReason::Error);
                    break;
                }
            }
        }
        conn.stream.get_mut().clear_inbox();
        self.flush(id);
        match ended {
            Some(CloseReason::PeerClosed) => self.close_with(id, CloseReason::PeerClosed),
            Some(reason) => self.end_session(id, reason),
            None => {}
        }
    }

    /// Sends close_notify, then ends the session.
    fn close_with(&mut self, id: SessionId, reason: CloseReason) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let _ = conn.stream.shutdown();
            self.flush(id);
        }
        self.end_session(id, reason);
    }

    fn end_session(&mut self, id: SessionId, reason: CloseReason) {
        if self.remove(id).is_some() {
            self.events.push_back(DtlsEvent::Closed {
                session: id,
                reason,
            });
        }
    }

    // ---- bookkeeping -----------------------------------------------------

    /// Turns what OpenSSL wrote for `id` into `Transmit` events.
    fn flush(&mut self, id: SessionId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let to = conn.addr;
            for mut bytes in conn.stream.get_mut().take_outbox() {
                if conn.seq_offset > 0 {
                    record::shift_epoch0_seqs(&mut bytes, conn.seq_offset);
                }
                self.events.push_back(DtlsEvent::Transmit { to, bytes });
            }
        }
    }

    fn set_timer(&mut self, id: SessionId, at: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if let Some(old) = conn.timer.replace(at) {
                self.timers.remove(&(old, id));
            }
            self.timers.insert((at, id));
        }
    }

    /// Forgets a connection everywhere.
    fn remove(&mut self, id: SessionId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if matches!(conn.phase, Phase::Session { .. }) {
            self.n_sessions -= 1;
        }
        if let Some(at) = conn.timer {
            self.timers.remove(&(at, id));
        }
        if let Some(slot) = self.peers.get_mut(&conn.addr) {
            if slot.handshake == Some(id) {
                slot.handshake = None;
            }
            if slot.session == Some(id) {
                slot.session = None;
            }
            if slot.handshake.is_none() && slot.session.is_none() {
                self.peers.remove(&conn.addr);
            }
        }
        Some(conn)
    }

    /// Test and fuzz hook: the cookie this server would hand `addr` for the
    /// ClientHello in `datagram`, spliced into it.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn with_valid_cookie(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        self.cookies.rotate_if_due(now);
        let hello = record::parse_client_hello(datagram).ok()?;
        let cookie = self.cookies.cookie(&addr, &hello);
        Some(record::with_cookie(&hello, &cookie))
    }
}

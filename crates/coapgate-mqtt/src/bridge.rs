//! The bridge: an outbox of unconfirmed publishes on top of a rumqttc
//! `EventLoop` that this module drives itself.
//!
//! # Why the outbox, and why re-sends happen exactly once per connection
//!
//! Facts from rumqttc 0.25.1 (`src/state.rs`, `src/eventloop.rs`):
//!
//! * Packet ids are assigned when the event loop *dequeues* a publish request
//!   (`MqttState::outgoing_publish` → `next_pkid`), cycling `1..=inflight`;
//!   the same call pushes `Event::Outgoing(Outgoing::Publish(pkid))`, or
//!   `Outgoing::AwaitAck(pkid)` when that id is still unacknowledged (a
//!   "collision": the publish is parked in `state.collision` and sent, with
//!   another `Outgoing::Publish(pkid)` event, right after the PUBACK/PUBCOMP
//!   of the old holder of `pkid`). While a collision is parked, no further
//!   request is dequeued. Events are queued in `state.events` (a FIFO) and
//!   returned one per `poll()`.
//! * On an error, `poll()` calls `EventLoop::clean()`: every unacknowledged
//!   publish and every request still in the channel moves to `pending`; on the
//!   next CONNACK without `session_present` `pending` is cleared (so with a
//!   clean session those messages are silently dropped), otherwise they are
//!   re-sent ahead of new requests.
//!
//! One more fact: each request `poll()` takes from the channel is written
//! *and flushed* on its own, one system call per PUBLISH. So while
//! connected the bridge does not hand publishes through the channel at
//! all: its task writes them itself, through the event loop's public
//! `state` (`MqttState::handle_outgoing_packet`, which assigns the packet
//! id and pushes the same `Outgoing::Publish`/`AwaitAck` events) and
//! `network` (`write` into the frame buffer), every publish queued at that
//! moment, then one `flush` — and reads the broker's packets with
//! `Network::readb` (a batch per read), pinging at `keep_alive` itself.
//! `poll()` is used to connect and, at shutdown, to send DISCONNECT. The
//! frame buffer is tokio-util's `Framed`, so an interrupted flush resumes
//! where it stopped and never writes a byte twice.
//!
//! The design that follows from this:
//!
//! 1. The outbox here owns every publish until it is `Delivered` or
//!    `Expired`. Each entry is, at any time, in exactly one place: `queued`
//!    (waiting for this bridge to hand it over), `handed` (given to
//!    `MqttState`, its event not yet read), `collided` (parked by rumqttc),
//!    or `inflight` (sent under a known packet id on the *current*
//!    connection).
//! 2. Publishes are handed over in order and each hand-over pushes one
//!    `Outgoing::Publish`/`AwaitAck` event, so the n-th such event belongs
//!    to the n-th handed-over entry (FIFO), except for the single parked
//!    collision, whose second `Outgoing::Publish(pkid)` names its id.
//! 3. A PUBACK (QoS 1) / PUBCOMP (QoS 2) for `pkid` confirms the entry that
//!    `inflight[pkid]` names; rumqttc never reuses a packet id before its
//!    acknowledgement (it parks a collision instead), so that is the last
//!    message sent with this id on this connection. Entries carry a private
//!    sequence number, so an acknowledgement for an entry that has meanwhile
//!    expired (a tombstone) confirms nothing, even if the caller reuses the
//!    id.
//! 4. After every connection error, under the outbox lock, the bridge calls
//!    `EventLoop::clean()` once more (draining anything that raced into the
//!    request channel), clears `pending`, drains `state.events` (acks already
//!    read are genuine and are honoured) and replaces `state` with a fresh
//!    `MqttState`. rumqttc then holds no copy of any message, and every live
//!    entry goes back to `queued`. Handing over happens only while connected,
//!    so after the next CONNACK each queued entry whose deadline has not passed
//!    is sent once — never a second copy from rumqttc's `pending`.
//! 5. Neither `poll()` nor the bridge's own write loop is cancelled while
//!    the bridge is running (a cancelled write may drop a packet that
//!    `MqttState` already counts as sent); expiry runs in a separate task.
//!    The write loop watches the stop signal itself and ends between steps.
//!
//! This is at-least-once delivery to the broker: a message whose
//! acknowledgement was lost with the connection is sent again on the next one.
//! With QoS 2 and a clean session the same holds (the broker cannot
//! de-duplicate across sessions).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Disconnect, Event, EventLoop, MqttOptions, MqttState, Packet,
    PingReq, Publish, Request,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{BridgeConfig, MqttError, Password, Qos};

/// One message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The caller's number for this publish, echoed in its [`BridgeEvent`]s;
    /// unique among publishes not yet `Delivered`/`Expired` (coapgate's
    /// engine uses its `u64`).
    pub id: u64,
    /// MQTT topic (no wildcards).
    pub topic: String,
    /// Message body.
    pub payload: Bytes,
    /// Give up (and report [`BridgeEvent::Expired`]) if not confirmed by then.
    pub deadline: Instant,
}

/// What the bridge reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The broker accepted our CONNECT (also after every reconnect).
    Connected,
    /// The connection is down; the bridge reconnects by itself.
    Disconnected {
        /// Why, for logs and operators.
        reason: String,
    },
    /// The broker confirmed this publish (PUBACK / PUBCOMP); `latency` from first send.
    Delivered {
        /// The publish's id.
        id: u64,
        /// From the first hand-over to the MQTT client until the confirmation.
        latency: Duration,
    },
    /// The deadline passed before confirmation; the bridge stopped trying. (The device will be told 5.04.)
    Expired {
        /// The publish's id.
        id: u64,
    },
}

/// Entry point of the bridge; see [`Bridge::start`].
#[derive(Debug)]
pub struct Bridge;

impl Bridge {
    /// Spawn the bridge on the current tokio runtime. Returns a handle and the event stream.
    ///
    /// A configuration that [`BridgeConfig::validate`] refuses is an error
    /// ([`MqttError::InvalidConfig`]); nothing is started. The event channel
    /// holds `outbox_capacity + 16` events; the bridge waits when it is
    /// full, so keep reading it.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(
        config: BridgeConfig,
    ) -> Result<(BridgeHandle, mpsc::Receiver<BridgeEvent>), MqttError> {
        config.validate()?;
        let window = usize::from(config.max_inflight);

        let mut options =
            MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(config.max_packet_size, config.max_packet_size)
            .set_inflight(config.max_inflight)
            .set_request_channel_capacity(window);
        if let Some(tls) = &config.tls {
            #[cfg(feature = "tls")]
            options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                tls.client_config()?,
            )));
            #[cfg(not(feature = "tls"))]
            {
                let _ = tls;
                return Err(MqttError::TlsNotBuiltIn);
            }
        }
        if let Some(user) = &config.username {
            options.set_credentials(
                user.clone(),
                config.password.as_ref().map_or("", Password::expose),
            );
        }
        // Never log `options`: its Debug prints the password.
        // The client is not needed: publishes go to the event loop's state
        // directly (module docs); the loop keeps its own request sender.
        let (_client, mut eventloop) = AsyncClient::new(options, window);
        // Small packets (PUBLISH one way, PUBACK the other) must not wait for
        // Nagle: without TCP_NODELAY a run stalls ~40 ms at a time.
        eventloop.network_options.set_tcp_nodelay(true);

        let (events_tx, events_rx) = mpsc::channel(config.outbox_capacity.saturating_add(16));
        let (stop_tx, stop_rx) = watch::channel(false);
        let broker = match config.host.contains(':') {
            true => format!("[{}]:{}", config.host, config.port),
            false => format!("{}:{}", config.host, config.port),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                connected: false,
                closing: false,
                next_seq: 0,
                outbox: BTreeMap::new(),
                ids: HashMap::new(),
                queued: BTreeSet::new(),
                handed: VecDeque::new(),
                collided: None,
                inflight: HashMap::new(),
                reaper_at: None,
            }),
            qos: config.qos,
            window,
            capacity: config.outbox_capacity,
            max_packet_size: config.max_packet_size,
            reaper_wake: Notify::new(),
            queued: Notify::new(),
            shrunk: Notify::new(),
            link: watch::Sender::new(false),
            broker,
        });
        info!(
            broker = %shared.broker,
            tls = config.tls.is_some(),
            client_id = %config.client_id,
            qos = ?config.qos,
            "MQTT bridge starting"
        );
        let task = tokio::spawn(run_bridge(
            eventloop,
            shared.clone(),
            events_tx.clone(),
            stop_rx.clone(),
            config.reconnect_delay_min,
            config.reconnect_delay_max,
        ));
        tokio::spawn(run_reaper(shared.clone(), events_tx, stop_rx));
        let handle = BridgeHandle {
            inner: Arc::new(HandleInner {
                shared,
                stop: stop_tx,
                task: Mutex::new(Some(task)),
            }),
        };
        Ok((handle, events_rx))
    }
}

/// A cheap, cloneable handle to a running bridge.
///
/// When the last clone is dropped without [`shutdown`](Self::shutdown), the
/// bridge stops at once and reports every unconfirmed publish as `Expired`.
#[derive(Clone)]
pub struct BridgeHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("connected", &self.is_connected())
            .field("outbox_depth", &self.outbox_depth())
            .finish()
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.stop.send_replace(true);
    }
}

impl BridgeHandle {
    /// Queue a publish; never blocks; Err(MqttError::OutboxFull / NotConnected / Closed) when it cannot be taken.
    ///
    /// Also [`MqttError::DuplicateId`], [`MqttError::InvalidTopic`] and
    /// [`MqttError::PacketTooLarge`] (checked here, so that one bad message
    /// can never break the connection). Exactly one `Delivered` or `Expired`
    /// follows every `Ok`.
    pub fn publish(&self, msg: Outgoing) -> Result<(), MqttError> {
        let shared = &self.inner.shared;
        self.check(&msg.topic, msg.payload.len())?;
        let mut st = shared.lock();
        if st.closing {
            return Err(MqttError::Closed);
        }
        if !st.connected {
            return Err(MqttError::NotConnected);
        }
        if st.ids.contains_key(&msg.id) {
            return Err(MqttError::DuplicateId(msg.id));
        }
        if st.outbox.len() >= shared.capacity {
            return Err(MqttError::OutboxFull);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let deadline = msg.deadline;
        st.ids.insert(msg.id, seq);
        st.outbox.insert(
            seq,
            Entry {
                id: msg.id,
                topic: msg.topic,
                payload: msg.payload,
                deadline,
                first_sent: None,
            },
        );
        st.queued.insert(seq);
        shared.queued.notify_one();
        if st.reaper_at.is_none_or(|at| deadline < at) {
            st.reaper_at = Some(deadline);
            shared.reaper_wake.notify_one();
        }
        Ok(())
    }

    /// Whether [`publish`](Self::publish) could ever take a message with
    /// this topic and payload size: [`MqttError::InvalidTopic`] or
    /// [`MqttError::PacketTooLarge`] when not. For callers that accept a
    /// message before handing it over (a spool).
    pub fn check(&self, topic: &str, payload_len: usize) -> Result<(), MqttError> {
        check_topic(topic)?;
        let size = publish_packet_size(topic.len(), payload_len);
        let max = self.inner.shared.max_packet_size;
        if size > max {
            return Err(MqttError::PacketTooLarge { size, max });
        }
        Ok(())
    }

    /// Whether the broker connection is up (CONNACK received, no error since).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().connected
    }

    /// The connection state to watch: `true` from each CONNACK until the
    /// connection is lost (as [`is_connected`](Self::is_connected)). The
    /// receiver does not keep the bridge running; once the bridge is gone,
    /// waiting on it returns an error.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.inner.shared.link.subscribe()
    }

    /// Publishes accepted and not yet `Delivered` or `Expired`.
    pub fn outbox_depth(&self) -> usize {
        self.inner.shared.lock().outbox.len()
    }

    /// Stop: stop reconnecting, disconnect cleanly after trying to flush until `deadline`.
    ///
    /// New publishes are refused with [`MqttError::Closed`] at once (on every
    /// clone of the handle). Publishes still unconfirmed at `deadline` are
    /// reported `Expired`. Returns when the bridge's tasks have ended (at most
    /// about one second after `deadline`).
    pub async fn shutdown(self, deadline: Instant) {
        let inner = &self.inner;
        inner.shared.lock().closing = true;
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            let shrunk = inner.shared.shrunk.notified();
            tokio::pin!(shrunk);
            shrunk.as_mut().enable();
            if inner.shared.lock().outbox.is_empty() {
                break;
            }
            tokio::select! {
                _ = shrunk => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        inner.stop.send_replace(true);
        let task = inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            let grace = deadline.max(tokio::time::Instant::now()) + Duration::from_secs(1);
            if tokio::time::timeout_at(grace, task).await.is_err() {
                warn!("MQTT bridge did not stop in time; aborted");
                abort.abort();
            }
        }
    }
}

struct Entry {
    id: u64,
    topic: String,
    payload: Bytes,
    deadline: Instant,
    first_sent: Option<Instant>,
}

/// The outbox and what the bridge knows about rumqttc's copy of it.
/// Invariant: every live `seq` (a key of `outbox`) is in exactly one of
/// `queued`, `handed`, `collided`, `inflight`; those may also hold dead
/// `seq`s (expired tombstones) that still occupy a slot in rumqttc.
struct State {
    connected: bool,
    closing: bool,
    next_seq: u64,
    outbox: BTreeMap<u64, Entry>,
    ids: HashMap<u64, u64>,
    queued: BTreeSet<u64>,
    handed: VecDeque<u64>,
    collided: Option<(u16, u64)>,
    inflight: HashMap<u16, u64>,
    reaper_at: Option<Instant>,
}

impl State {
    fn window_used(&self) -> usize {
        self.handed.len() + self.inflight.len() + usize::from(self.collided.is_some())
    }

    /// Removes a confirmed entry; `None` for tombstones.
    fn confirm(&mut self, seq: u64, now: Instant) -> Option<BridgeEvent> {
        let entry = self.outbox.remove(&seq)?;
        self.ids.remove(&entry.id);
        let latency = entry
            .first_sent
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        Some(BridgeEvent::Delivered {
            id: entry.id,
            latency,
        })
    }

    /// Forget rumqttc's copy: every live entry goes back to `queued`.
    fn requeue_all(&mut self) {
        let mut back: Vec<u64> = self.handed.drain(..).collect();
        back.extend(self.inflight.drain().map(|(_, seq)| seq));
        back.extend(self.collided.take().map(|(_, seq)| seq));
        for seq in back {
            if self.outbox.contains_key(&seq) {
                self.queued.insert(seq);
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    qos: Qos,
    window: usize,
    capacity: usize,
    max_packet_size: usize,
    reaper_wake: Notify,
    /// Something was queued: the bridge's task hands it over.
    queued: Notify,
    shrunk: Notify,
    /// `State::connected`, to watch ([`BridgeHandle::connection`]).
    link: watch::Sender<bool>,
    /// `host:port`, for log lines.
    broker: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets `State::connected` and tells the watchers.
    fn set_connected(&self, st: &mut State, up: bool) {
        st.connected = up;
        self.link
            .send_if_modified(|link| std::mem::replace(link, up) != up);
    }

    /// Takes queued entries to hand over, oldest first, while connected and
    /// the window has room; each moves to `handed`, in the order returned.
    /// Entries past their deadline stay for the reaper.
    fn take(&self, st: &mut State, now: Instant) -> Vec<Publish> {
        if !st.connected {
            return Vec::new();
        }
        let free = self.window.saturating_sub(st.window_used());
        if free == 0 || st.queued.is_empty() {
            return Vec::new();
        }
        let picked: Vec<u64> = st
            .queued
            .iter()
            .copied()
            .filter(|seq| st.outbox.get(seq).is_some_and(|e| e.deadline > now))
            .take(free)
            .collect();
        let mut publishes = Vec::with_capacity(picked.len());
        for seq in picked {
            let Some(entry) = st.outbox.get_mut(&seq) else {
                continue;
            };
            entry.first_sent.get_or_insert(now);
            publishes.push(Publish::from_bytes(
                entry.topic.as_str(),
                self.qos.to_rumqttc(),
                entry.payload.clone(),
            ));
            st.queued.remove(&seq);
            st.handed.push_back(seq);
        }
        publishes
    }

    /// Puts the last `count` entries handed over back in `queued` (taken,
    /// then not given to rumqttc after all).
    fn unhand(&self, st: &mut State, count: usize) {
        for _ in 0..count {
            let Some(seq) = st.handed.pop_back() else {
                break;
            };
            if st.outbox.contains_key(&seq) {
                st.queued.insert(seq);
            }
        }
    }

    /// Mirrors one rumqttc event into the outbox. Returns a `Delivered` when
    /// this event confirmed a live entry.
    fn on_event(&self, st: &mut State, event: &Event, now: Instant) -> Option<BridgeEvent> {
        match event {
            Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                let seq = match st.collided {
                    Some((p, seq)) if p == *pkid => {
                        st.collided = None;
                        Some(seq)
                    }
                    _ => st.handed.pop_front(),
                };
                match seq {
                    Some(seq) => {
                        if let Some(old) = st.inflight.insert(*pkid, seq) {
                            // rumqttc parks a collision instead of reusing an
                            // unacknowledged id; if that ever failed, re-send the
                            // displaced entry rather than confirm the wrong one.
                            warn!(pkid, "packet id reused before its acknowledgement");
                            if st.outbox.contains_key(&old) {
                                st.queued.insert(old);
                            }
                        }
                    }
                    None => warn!(pkid, "outgoing publish that the bridge did not hand over"),
                }
                None
            }
            Event::Outgoing(rumqttc::Outgoing::AwaitAck(pkid)) => {
                debug!(pkid, "packet id collision; publish parked by rumqttc");
                if let Some(seq) = st.handed.pop_front() {
                    st.collided = Some((*pkid, seq));
                }
                None
            }
            Event::Incoming(Packet::PubAck(ack)) if self.qos == Qos::AtLeastOnce => {
                let seq = st.inflight.remove(&ack.pkid)?;
                st.confirm(seq, now)
            }
            Event::Incoming(Packet::PubComp(comp)) if self.qos == Qos::ExactlyOnce => {
                let seq = st.inflight.remove(&comp.pkid)?;
                st.confirm(seq, now)
            }
            _ => None,
        }
    }
}

/// Encoded size of a QoS 1/2 PUBLISH (fixed header, topic, packet id, payload).
fn publish_packet_size(topic_len: usize, payload_len: usize) -> usize {
    let remaining = 2 + topic_len + 2 + payload_len;
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

fn check_topic(topic: &str) -> Result<(), MqttError> {
    if topic.is_empty() {
        return Err(MqttError::InvalidTopic("empty"));
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(MqttError::InvalidTopic("longer than 65535 bytes"));
    }
    if topic.contains(['+', '#']) {
        return Err(MqttError::InvalidTopic(
            "wildcards are not allowed in a publish topic",
        ));
    }
    if topic.contains('\0') {
        return Err(MqttError::InvalidTopic("NUL is not allowed"));
    }
    Ok(())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means every sender is gone: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

async fn send_all(events: &mpsc::Sender<BridgeEvent>, out: Vec<BridgeEvent>) {
    for ev in out {
        if events.send(ev).await.is_err() {
            return; // receiver dropped; nobody listens
        }
    }
}

async fn run_bridge(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    events: mpsc::Sender<BridgeEvent>,
    mut stop: watch::Receiver<bool>,
    delay_min: Duration,
    delay_max: Duration,
) {
    let mut delay = delay_min;
    loop {
        let connected = eventloop.network.is_some() && shared.lock().connected;
        let polled = if connected {
            // Ends only when stopped or with the connection's error.
            match serve_connection(&mut eventloop, &shared, &events, &mut stop).await {
                Ok(()) => break,
                Err(e) => Err(e),
            }
        } else {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                r = eventloop.poll() => r,
            }
        };
        let now = Instant::now();
        let mut out = Vec::new();
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = delay_min;
                let mut st = shared.lock();
                shared.set_connected(&mut st, true);
                let resend = st.queued.len();
                drop(st);
                info!(broker = %shared.broker, resend, "MQTT broker connected");
                out.push(BridgeEvent::Connected);
            }
            Ok(event) => {
                let mut st = shared.lock();
                let delivered = shared.on_event(&mut st, &event, now);
                drop(st);
                if let Some(d) = delivered {
                    shared.shrunk.notify_waiters();
                    out.push(d);
                }
            }
            Err(e) => {
                let reason = connection_error_text(&e);
                let was_connected = reset_after_error(&mut eventloop, &shared, now, &mut out);
                if was_connected {
                    warn!(broker = %shared.broker, %reason, "MQTT broker connection lost");
                    out.push(BridgeEvent::Disconnected { reason });
                } else {
                    warn!(
                        broker = %shared.broker,
                        %reason,
                        retry_in = ?delay,
                        "MQTT broker connection failed"
                    );
                }
                send_all(&events, out).await;
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = delay.saturating_mul(2).min(delay_max);
                continue;
            }
        }
        send_all(&events, out).await;
    }
    shutdown_connection(&mut eventloop, &shared, &events).await;
}

/// While connected: hands every queued publish over and writes them with
/// one flush, reads the broker's packets a batch at a time, pings at
/// `keep_alive` (module docs). Returns `Ok` when stopped, between steps,
/// or the connection's error.
async fn serve_connection(
    eventloop: &mut EventLoop,
    shared: &Shared,
    events: &mpsc::Sender<BridgeEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let keep_alive = eventloop.mqtt_options.keep_alive();
    let ping = tokio::time::sleep(keep_alive);
    tokio::pin!(ping);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let Some(network) = eventloop.network.as_mut() else {
            return Err(ConnectionError::MqttState(
                rumqttc::StateError::ConnectionAborted,
            ));
        };
        let state = &mut eventloop.state;
        // As rumqttc's own loop: nothing new while a collision is parked.
        let publishes = match state.collision {
            None => shared.take(&mut shared.lock(), Instant::now()),
            Some(_) => Vec::new(),
        };
        if !publishes.is_empty() {
            let count = publishes.len();
            for (n, publish) in publishes.into_iter().enumerate() {
                if let Some(packet) = state.handle_outgoing_packet(Request::Publish(publish))? {
                    network.write(packet).await?;
                }
                if state.collision.is_some() {
                    // Parked: the rest waits, as it would in rumqttc's channel.
                    shared.unhand(&mut shared.lock(), count - n - 1);
                    break;
                }
            }
            network.flush().await?;
        } else {
            tokio::select! {
                biased;
                () = stopped(stop) => return Ok(()),
                read = network.readb(state) => {
                    read?;
                    // Whatever the packets read asked for (a PUBREL).
                    network.flush().await?;
                }
                () = shared.queued.notified() => {}
                () = &mut ping, if !keep_alive.is_zero() => {
                    ping.as_mut().reset(tokio::time::Instant::now() + keep_alive);
                    if let Some(packet) = state.handle_outgoing_packet(Request::PingReq(PingReq))? {
                        network.write(packet).await?;
                    }
                    network.flush().await?;
                }
            }
        }
        // The events of what was written and read, in order.
        let now = Instant::now();
        let mut out = Vec::new();
        {
            let mut st = shared.lock();
            while let Some(event) = state.events.pop_front() {
                out.extend(shared.on_event(&mut st, &event, now));
            }
        }
        if !out.is_empty() {
            shared.shrunk.notify_waiters();
            send_all(events, out).await;
        }
    }
}

/// Leaves rumqttc with no copy of any message (see the module docs, point 4).
/// Returns whether the bridge was connected.
fn reset_after_error(
    eventloop: &mut EventLoop,
    shared: &Shared,
    now: Instant,
    out: &mut Vec<BridgeEvent>,
) -> bool {
    let mut st = shared.lock();
    // Events read before the error are facts of the old connection.
    while let Some(event) = eventloop.state.events.pop_front() {
        out.extend(shared.on_event(&mut st, &event, now));
    }
    eventloop.clean(); // drains requests that raced into the channel
    eventloop.pending.clear();
    eventloop.state = MqttState::new(eventloop.mqtt_options.inflight(), false);
    st.requeue_all();
    let was_connected = st.connected;
    shared.set_connected(&mut st, false);
    drop(st);
    if !out.is_empty() {
        shared.shrunk.notify_waiters();
    }
    was_connected
}

/// `ConnectionError`'s text (it never contains our CONNECT packet), or for
/// a TLS failure, what went wrong in plain words (an untrusted certificate,
/// a refused client certificate).
fn connection_error_text(e: &ConnectionError) -> String {
    #[cfg(feature = "tls")]
    if let Some(text) = crate::tls::describe(e) {
        return text;
    }
    e.to_string()
}

/// After the stop signal: a clean DISCONNECT if connected, then every entry
/// still in the outbox is reported `Expired`.
async fn shutdown_connection(
    eventloop: &mut EventLoop,
    shared: &Shared,
    events: &mpsc::Sender<BridgeEvent>,
) {
    let mut out = Vec::new();
    let was_connected = shared.lock().connected;
    if was_connected && eventloop.network.is_some() {
        // `pending` is served before the request channel and regardless of the
        // in-flight limit, so the DISCONNECT goes out even if the broker is slow.
        eventloop.pending.clear();
        eventloop.pending.push_back(Request::Disconnect(Disconnect));
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(until, eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break;
                }
                Ok(Ok(event)) => {
                    let delivered = shared.on_event(&mut shared.lock(), &event, Instant::now());
                    out.extend(delivered);
                }
            }
        }
    }
    eventloop.network = None;
    let left = {
        let mut st = shared.lock();
        shared.set_connected(&mut st, false);
        st.closing = true;
        st.queued.clear();
        st.handed.clear();
        st.inflight.clear();
        st.collided = None;
        st.ids.clear();
        std::mem::take(&mut st.outbox)
    };
    out.extend(
        left.into_values()
            .map(|e| BridgeEvent::Expired { id: e.id }),
    );
    if was_connected {
        out.push(BridgeEvent::Disconnected {
            reason: "shutdown".to_owned(),
        });
    }
    shared.shrunk.notify_waiters();
    info!("MQTT bridge stopped");
    send_all(events, out).await;
}

/// Reports `Expired` for entries whose deadline passed, never before it.
async fn run_reaper(
    shared: Arc<Shared>,
    events: mpsc::Sender<BridgeEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = Instant::now();
        let mut expired = Vec::new();
        let next = {
            let mut st = shared.lock();
            let dead: Vec<u64> = st
                .outbox
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in dead {
                if let Some(entry) = st.outbox.remove(&seq) {
                    st.ids.remove(&entry.id);
                    // Only `queued` is cleaned here; in `handed`, `collided`
                    // and `inflight` the seq stays as a tombstone.
                    st.queued.remove(&seq);
                    expired.push(BridgeEvent::Expired { id: entry.id });
                }
            }
            let next = st.outbox.values().map(|e| e.deadline).min();
            st.reaper_at = next;
            next
        };
        if !expired.is_empty() {
            debug!(count = expired.len(), "MQTT publishes expired");
            shared.shrunk.notify_waiters();
            send_all(&events, expired).await;
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = shared.reaper_wake.notified() => {}
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_matches_rumqttc() {
        for (t, p) in [
            (1, 0),
            (10, 100),
            (20, 200),
            (100, 16_000),
            (40, 65_000),
            (5, 3_000_000),
        ] {
            let mut publish =
                rumqttc::Publish::new("x".repeat(t), rumqttc::QoS::AtLeastOnce, vec![0u8; p]);
            publish.pkid = 1;
            assert_eq!(
                publish_packet_size(t, p),
                publish.size(),
                "topic {t} payload {p}"
            );
        }
    }

    #[test]
    fn topic_rules() {
        assert!(check_topic("8988280666000000000/test").is_ok());
        for bad in ["", "a/+/b", "a/#", "a\0b"] {
            assert!(
                matches!(check_topic(bad), Err(MqttError::InvalidTopic(_))),
                "{bad:?}"
            );
        }
        assert!(check_topic(&"a".repeat(65_536)).is_err());
    }
}

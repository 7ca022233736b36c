//! The event loop around the engine and the DTLS server.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use coapgate_dtls::{DtlsEvent, DtlsServer};
use coapgate_endpoint::{Endpoint, Link, PublishResult};
use coapgate_model::Iccid;
use coapgate_mqtt::{BridgeEvent, BridgeHandle, Outgoing};
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{self, Snapshot};

/// Datagrams read per wake-up before the loop looks at its other inputs.
const RECV_BATCH: usize = 64;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Stand-in for "no timer": far enough never to fire.
const IDLE: Duration = Duration::from_secs(3600);

/// The CoAPS listener: its socket and the DTLS sessions on it.
pub(crate) struct Dtls {
    pub(crate) socket: UdpSocket,
    pub(crate) server: DtlsServer,
}

pub(crate) struct Driver {
    pub(crate) endpoint: Endpoint,
    pub(crate) coap: UdpSocket,
    pub(crate) dtls: Dtls,
    pub(crate) bridge: BridgeHandle,
    pub(crate) events: mpsc::Receiver<BridgeEvent>,
    pub(crate) shutdown_grace: Duration,
    /// Scrapes: each asks for the metrics text at this instant.
    pub(crate) scrapes: mpsc::Receiver<oneshot::Sender<String>>,
    pub(crate) publish_seconds: Histogram,
}

/// Which socket a batch of datagrams came from.
#[derive(Clone, Copy)]
enum Listener {
    Coap,
    Coaps,
}

impl Driver {
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut dtls_buf = vec![0u8; MAX_DATAGRAM];
        let timer = tokio::time::sleep(IDLE);
        tokio::pin!(timer);
        let mut events_open = true;
        // Set once shutdown began: stop reading, finish pending publishes.
        let mut draining_until: Option<tokio::time::Instant> = None;
        loop {
            let next = [
                self.endpoint.poll_timeout(),
                self.dtls.server.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if let Some(until) = draining_until {
                let pending = self.endpoint.stats().pending_publishes;
                if pending == 0 || tokio::time::Instant::now() >= until {
                    if pending > 0 {
                        tracing::warn!(pending, "shutdown grace over with publishes unconfirmed");
                    }
                    break;
                }
            }
            let grace_over = async {
                match draining_until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            let reading = draining_until.is_none();
            tokio::select! {
                biased;
                () = &mut shutdown, if reading => {
                    tracing::info!("shutting down: no new datagrams, finishing pending publishes");
                    draining_until = Some(tokio::time::Instant::now() + self.shutdown_grace);
                }
                Some(reply) = self.scrapes.recv() => {
                    let _ = reply.send(metrics::render(self.snapshot(), &self.publish_seconds));
                }
                event = self.events.recv(), if events_open => match event {
                    Some(event) => self.on_bridge_event(event),
                    None => {
                        events_open = false;
                        self.endpoint.handle_broker_state(false);
                    }
                },
                received = self.coap.recv_from(&mut buf), if reading => {
                    self.on_received(Listener::Coap, received, &mut buf);
                }
                received = self.dtls.socket.recv_from(&mut dtls_buf), if reading => {
                    self.on_received(Listener::Coaps, received, &mut dtls_buf);
                }
                () = &mut timer => {
                    let now = Instant::now();
                    self.endpoint.handle_timeout(now);
                    self.dtls.server.handle_timeout(now);
                }
                () = grace_over => {}
            }
            self.pump().await;
        }
        self.bridge
            .shutdown(Instant::now() + Duration::from_secs(1))
            .await;
        tracing::info!("stopped");
    }

    /// Handles the datagram just received and whatever else is queued on
    /// the same socket, up to a batch.
    fn on_received(
        &mut self,
        listener: Listener,
        first: std::io::Result<(usize, SocketAddr)>,
        buf: &mut [u8],
    ) {
        let mut received = first;
        for n in 1..=RECV_BATCH {
            match received {
                Ok((len, from)) => self.on_datagram(listener, from, &buf[..len]),
                // ICMP port unreachable from an earlier send and the like.
                Err(error) => {
                    if error.kind() != ErrorKind::WouldBlock {
                        tracing::debug!(%error, "recv_from");
                    }
                    return;
                }
            }
            if n == RECV_BATCH {
                return;
            }
            received = match listener {
                Listener::Coap => self.coap.try_recv_from(buf),
                Listener::Coaps => self.dtls.socket.try_recv_from(buf),
            };
        }
    }

    fn on_datagram(&mut self, listener: Listener, from: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        match listener {
            Listener::Coap => {
                self.endpoint
                    .handle_datagram(now, SystemTime::now(), Link::Udp(from), data);
            }
            Listener::Coaps => self.dtls.server.handle_datagram(now, from, data),
        }
    }

    /// Everything counted, now.
    fn snapshot(&self) -> Snapshot {
        let receive_drops = [("coap", &self.coap), ("coaps", &self.dtls.socket)]
            .into_iter()
            .filter_map(|(name, socket)| {
                let drops = metrics::receive_drops(metrics::socket_inode(socket)?)?;
                Some((name, drops))
            })
            .collect();
        Snapshot {
            engine: self.endpoint.stats(),
            dtls: self.dtls.server.stats(),
            outbox_depth: self.bridge.outbox_depth(),
            broker_connected: self.bridge.is_connected(),
            receive_drops,
        }
    }

    fn on_bridge_event(&mut self, event: BridgeEvent) {
        let now = Instant::now();
        match event {
            BridgeEvent::Connected => {
                tracing::info!("MQTT broker connected");
                self.endpoint.handle_broker_state(true);
            }
            BridgeEvent::Disconnected { reason } => {
                tracing::warn!(%reason, "MQTT broker connection lost; reconnecting");
                self.endpoint.handle_broker_state(false);
            }
            BridgeEvent::Delivered { id, latency } => {
                self.publish_seconds.observe(latency.as_secs_f64());
                self.endpoint
                    .handle_publish_result(now, id, PublishResult::Confirmed);
            }
            BridgeEvent::Expired { id } => {
                self.endpoint
                    .handle_publish_result(now, id, PublishResult::TimedOut);
            }
        }
    }

    /// Drains the DTLS server and the engine into each other, the sockets
    /// and the bridge, until neither has anything left: decrypted CoAP goes
    /// into the engine, the engine's answers into their sessions, and a
    /// publish the bridge refuses back into the engine as unavailable.
    async fn pump(&mut self) {
        let Self {
            endpoint,
            coap,
            dtls,
            bridge,
            ..
        } = self;
        loop {
            let mut progress = false;
            while let Some(event) = dtls.server.poll_event() {
                progress = true;
                match event {
                    DtlsEvent::Transmit { to, bytes } => send(&dtls.socket, to, &bytes).await,
                    DtlsEvent::Established {
                        session,
                        addr,
                        identity,
                    } => match identity.parse::<Iccid>() {
                        Ok(iccid) => {
                            tracing::debug!(session, %addr, %iccid, "DTLS session established");
                            endpoint.handle_session_established(session, iccid);
                        }
                        // The PSK lookup only knows ICCIDs, so this cannot
                        // happen; never serve a session without one.
                        Err(_) => dtls.server.close(session),
                    },
                    DtlsEvent::Data {
                        session,
                        addr,
                        bytes,
                    } => endpoint.handle_datagram(
                        Instant::now(),
                        SystemTime::now(),
                        Link::Dtls { addr, session },
                        &bytes,
                    ),
                    DtlsEvent::Closed { session, reason } => {
                        tracing::debug!(session, ?reason, "DTLS session closed");
                        endpoint.handle_session_closed(session);
                    }
                }
            }
            while let Some(transmit) = endpoint.poll_transmit() {
                progress = true;
                match transmit.to {
                    Link::Udp(to) => send(coap, to, &transmit.payload).await,
                    Link::Dtls { session, .. } => {
                        if let Err(error) = dtls.server.send(session, &transmit.payload) {
                            tracing::debug!(session, %error, "answer for a closed DTLS session dropped");
                        }
                    }
                }
            }
            while let Some(publish) = endpoint.poll_publish() {
                let id = publish.id;
                let outgoing = Outgoing {
                    id,
                    topic: publish.topic,
                    payload: publish.payload.into(),
                    deadline: publish.deadline,
                };
                if let Err(error) = bridge.publish(outgoing) {
                    tracing::debug!(%error, id, "publish not taken by the bridge");
                    endpoint.handle_publish_result(Instant::now(), id, PublishResult::Unavailable);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }
}

async fn send(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    match socket.try_send_to(payload, to) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            if let Err(error) = socket.send_to(payload, to).await {
                tracing::debug!(%error, %to, "send_to");
            }
        }
        Err(error) => tracing::debug!(%error, %to, "send_to"),
    }
}

//! The event loop around the engine.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use coapgate_endpoint::{Endpoint, Link, PublishResult, Transmit};
use coapgate_mqtt::{BridgeEvent, BridgeHandle, Outgoing};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Datagrams read per wake-up before the loop looks at its other inputs.
const RECV_BATCH: usize = 64;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Stand-in for "no timer": far enough never to fire.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct Driver {
    pub(crate) endpoint: Endpoint,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) bridge: BridgeHandle,
    pub(crate) events: mpsc::Receiver<BridgeEvent>,
    pub(crate) shutdown_grace: Duration,
}

impl Driver {
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let timer = tokio::time::sleep(IDLE);
        tokio::pin!(timer);
        let mut events_open = true;
        // Set once shutdown began: stop reading, finish pending publishes.
        let mut draining_until: Option<tokio::time::Instant> = None;
        loop {
            let next = self
                .endpoint
                .poll_timeout()
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
            tokio::select! {
                biased;
                () = &mut shutdown, if draining_until.is_none() => {
                    tracing::info!("shutting down: no new datagrams, finishing pending publishes");
                    draining_until = Some(tokio::time::Instant::now() + self.shutdown_grace);
                }
                event = self.events.recv(), if events_open => match event {
                    Some(event) => self.on_bridge_event(event),
                    None => {
                        events_open = false;
                        self.endpoint.handle_broker_state(false);
                    }
                },
                received = self.socket.recv_from(&mut buf), if draining_until.is_none() => {
                    match received {
                        Ok((len, from)) => {
                            self.on_datagram(from, &buf[..len]);
                            // Read what else is already queued, up to a batch.
                            for _ in 1..RECV_BATCH {
                                match self.socket.try_recv_from(&mut buf) {
                                    Ok((len, from)) => self.on_datagram(from, &buf[..len]),
                                    Err(_) => break,
                                }
                            }
                        }
                        // ICMP port unreachable from an earlier send and the like.
                        Err(error) => tracing::debug!(%error, "recv_from"),
                    }
                }
                () = &mut timer => self.endpoint.handle_timeout(Instant::now()),
                () = grace_over => {}
            }
            self.flush().await;
        }
        self.bridge
            .shutdown(Instant::now() + Duration::from_secs(1))
            .await;
        tracing::info!("stopped");
    }

    fn on_datagram(&mut self, from: std::net::SocketAddr, data: &[u8]) {
        self.endpoint
            .handle_datagram(Instant::now(), SystemTime::now(), Link::Udp(from), data);
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
            BridgeEvent::Delivered { id, .. } => {
                self.endpoint
                    .handle_publish_result(now, id, PublishResult::Confirmed);
            }
            BridgeEvent::Expired { id } => {
                self.endpoint
                    .handle_publish_result(now, id, PublishResult::TimedOut);
            }
        }
    }

    /// Drains the engine: datagrams to the socket, publishes to the bridge.
    /// A publish the bridge refuses goes back to the engine as unavailable,
    /// which may produce more datagrams, hence the loop.
    async fn flush(&mut self) {
        loop {
            while let Some(transmit) = self.endpoint.poll_transmit() {
                self.send(transmit).await;
            }
            let mut refused = false;
            while let Some(publish) = self.endpoint.poll_publish() {
                let id = publish.id;
                let outgoing = Outgoing {
                    id,
                    topic: publish.topic,
                    payload: publish.payload.into(),
                    deadline: publish.deadline,
                };
                if let Err(error) = self.bridge.publish(outgoing) {
                    tracing::debug!(%error, id, "publish not taken by the bridge");
                    self.endpoint.handle_publish_result(
                        Instant::now(),
                        id,
                        PublishResult::Unavailable,
                    );
                    refused = true;
                }
            }
            if !refused {
                break;
            }
        }
    }

    async fn send(&self, transmit: Transmit) {
        match transmit.to {
            Link::Udp(to) => match self.socket.try_send_to(&transmit.payload, to) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Err(error) = self.socket.send_to(&transmit.payload, to).await {
                        tracing::debug!(%error, %to, "send_to");
                    }
                }
                Err(error) => tracing::debug!(%error, %to, "send_to"),
            },
            Link::Dtls { .. } => {
                tracing::debug!("DTLS transmit without a DTLS listener; dropped");
            }
        }
    }
}

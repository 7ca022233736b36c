//! The event loop around the sans-IO [`Gateway`]: two UDP sockets, one
//! timer, the sink for accepted messages (the MQTT bridge, or the spool in
//! front of it), the store writer — and nothing else. Every protocol
//! decision is the gateway's.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use coapgate_endpoint::{StoreResult, StoreWrite, StoreWriteId};
use coapgate_gateway::{Datagram, Gateway, Listener, Output};
use coapgate_mqtt::Outgoing;
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::health::Dependencies;
use crate::metrics::{self, Snapshot};
use crate::sink::{Sink, SinkEvent};
use crate::writer::StoreWriter;

/// Datagrams read per wake-up before the loop looks at its other inputs.
const RECV_BATCH: usize = 64;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Stand-in for "no timer": far enough never to fire.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct Driver {
    pub(crate) gateway: Gateway,
    pub(crate) coap: UdpSocket,
    pub(crate) coaps: UdpSocket,
    /// Where accepted messages go (`[mqtt] ack`).
    pub(crate) sink: Sink,
    pub(crate) writer: StoreWriter,
    pub(crate) store_results: mpsc::UnboundedReceiver<(StoreWriteId, StoreResult)>,
    pub(crate) shutdown_grace: Duration,
    /// Scrapes: each asks for the metrics text at this instant.
    pub(crate) scrapes: mpsc::Receiver<oneshot::Sender<String>>,
    pub(crate) publish_seconds: Histogram,
    /// The store and broker in use, and whether each answers.
    pub(crate) deps: Arc<Dependencies>,
}

impl Driver {
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut secure_buf = vec![0u8; MAX_DATAGRAM];
        let timer = tokio::time::sleep(IDLE);
        tokio::pin!(timer);
        let mut events_open = true;
        // Set once shutdown began: stop reading, finish pending work.
        let mut draining_until: Option<tokio::time::Instant> = None;
        let mut wake_at = None;
        loop {
            let next = wake_at
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if let Some(until) = draining_until {
                let pending = self.gateway.pending_work();
                if pending == 0 || tokio::time::Instant::now() >= until {
                    if pending > 0 {
                        tracing::warn!(pending, "shutdown grace over with work unconfirmed");
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
                    tracing::info!("shutting down: no new datagrams, finishing pending work");
                    draining_until = Some(tokio::time::Instant::now() + self.shutdown_grace);
                }
                Some(reply) = self.scrapes.recv() => {
                    let _ = reply.send(metrics::render(self.snapshot(), &self.publish_seconds));
                }
                event = self.sink.next(), if events_open => match event {
                    Some(event) => self.on_sink_event(event),
                    None => {
                        events_open = false;
                        self.gateway.handle_broker_state(false);
                    }
                },
                Some((id, result)) = self.store_results.recv() => {
                    self.gateway.handle_store_result(Instant::now(), id, result);
                }
                received = self.coap.recv_from(&mut buf), if reading => {
                    self.on_received(Listener::Coap, received, &mut buf);
                }
                received = self.coaps.recv_from(&mut secure_buf), if reading => {
                    self.on_received(Listener::Coaps, received, &mut secure_buf);
                }
                () = &mut timer => self.gateway.handle_timeout(Instant::now()),
                () = grace_over => {}
            }
            wake_at = self.drain().await;
        }
        self.sink
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
                Ok((len, from)) => self.gateway.handle_datagram(
                    Instant::now(),
                    SystemTime::now(),
                    listener,
                    from,
                    &buf[..len],
                ),
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
            received = self.socket(listener).try_recv_from(buf);
        }
    }

    fn socket(&self, listener: Listener) -> &UdpSocket {
        match listener {
            Listener::Coap => &self.coap,
            Listener::Coaps => &self.coaps,
        }
    }

    /// Everything counted, now.
    fn snapshot(&self) -> Snapshot {
        let receive_drops = [("coap", &self.coap), ("coaps", &self.coaps)]
            .into_iter()
            .filter_map(|(name, socket)| {
                let drops = metrics::receive_drops(metrics::socket_inode(socket)?)?;
                Some((name, drops))
            })
            .collect();
        Snapshot {
            engine: self.gateway.endpoint_stats(),
            dtls: self.gateway.dtls_stats(),
            outbox_depth: self.sink.bridge().outbox_depth(),
            broker_connected: self.sink.bridge().is_connected(),
            spool: self.sink.spool_status(),
            store_up: self.deps.store_up.load(Ordering::Relaxed),
            store_follow: Some(self.deps.follow_status()),
            receive_drops,
        }
    }

    fn on_sink_event(&mut self, event: SinkEvent) {
        let now = Instant::now();
        match event {
            SinkEvent::Accepting(up) => {
                if up {
                    tracing::info!("MQTT broker connected");
                }
                self.gateway.handle_broker_state(up);
            }
            SinkEvent::Broker { up: true, .. } => {
                tracing::info!("MQTT broker connected; forwarding the spool");
            }
            SinkEvent::Broker { up: false, reason } => {
                let reason = reason.unwrap_or_default();
                tracing::warn!(%reason, "MQTT broker connection lost; the spool keeps accepting");
            }
            SinkEvent::Verdict {
                id,
                result,
                broker_latency,
            } => {
                if let Some(latency) = broker_latency {
                    self.publish_seconds.observe(latency.as_secs_f64());
                }
                self.gateway.handle_publish_result(now, id, result);
            }
            SinkEvent::Forwarded(latency) => self.publish_seconds.observe(latency.as_secs_f64()),
        }
    }

    /// Carries out every output of the gateway (the contract), and returns
    /// when to wake it next. A publish the sink refuses goes back with its
    /// verdict at once (5.02, or 5.03 for a full spool), which may yield
    /// more outputs.
    async fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.gateway.poll_output() {
                Output::Transmit(datagram) => self.send(datagram).await,
                Output::Publish(publish) => {
                    let id = publish.id;
                    let outgoing = Outgoing {
                        id,
                        topic: publish.topic.into(),
                        payload: publish.payload.into(),
                        deadline: publish.deadline,
                    };
                    if let Err(verdict) = self.sink.publish(outgoing) {
                        self.gateway
                            .handle_publish_result(Instant::now(), id, verdict);
                    }
                }
                Output::Store(write) => self.store(write),
                Output::Timeout(at) => return at,
            }
        }
    }

    fn store(&mut self, write: StoreWrite) {
        let id = write.id;
        if !self.writer.submit(write) {
            tracing::error!(write = id, "the store writer has stopped");
            self.gateway
                .handle_store_result(Instant::now(), id, StoreResult::Unavailable);
        }
    }

    async fn send(&self, datagram: Datagram) {
        let Datagram {
            listener,
            to,
            payload,
        } = datagram;
        let socket = self.socket(listener);
        match socket.try_send_to(&payload, to) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Err(error) = socket.send_to(&payload, to).await {
                    tracing::debug!(%error, %to, "send_to");
                }
            }
            Err(error) => tracing::debug!(%error, %to, "send_to"),
        }
    }
}

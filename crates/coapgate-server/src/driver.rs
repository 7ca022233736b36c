//! The event loop around the sans-IO [`Gateway`]: two UDP sockets, one
//! timer, the sink for accepted messages (the MQTT bridge, or the spool in
//! front of it), the store writer — and nothing else. Every protocol
//! decision is the gateway's. One driver runs per shard (`[coap] threads`),
//! each on its own thread and runtime.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use coapgate_endpoint::{StoreResult, StoreWrite, StoreWriteId};
use coapgate_gateway::{Datagram, Gateway, Listener, Output};
use coapgate_mqtt::Outgoing;
use prometheus_client::metrics::histogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{self, Receiver, Sender};
use crate::health::Dependencies;
use crate::metrics::{self, Snapshot};
use crate::sink::{Sink, SinkEvent};
use crate::writer::{Answers, StoreWriter};

/// Datagrams read per wake-up before the loop looks at its other inputs.
const RECV_BATCH: usize = 2 * batch::BATCH;
/// Stand-in for "no timer": far enough never to fire.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct Driver {
    /// Which shard this is (0 when there is one).
    pub(crate) shard: usize,
    pub(crate) gateway: Gateway,
    pub(crate) coap: UdpSocket,
    pub(crate) coaps: UdpSocket,
    /// Where accepted messages go (`[mqtt] ack`).
    pub(crate) sink: Sink,
    pub(crate) writer: StoreWriter,
    /// Where the writer answers this shard's store writes…
    pub(crate) answers: Answers,
    /// …and where they arrive.
    pub(crate) store_results: mpsc::UnboundedReceiver<(StoreWriteId, StoreResult)>,
    pub(crate) shutdown_grace: Duration,
    /// Scrapes: each asks for this shard's numbers at this instant.
    pub(crate) scrapes: mpsc::Receiver<oneshot::Sender<Snapshot>>,
    /// Shared by the shards.
    pub(crate) publish_seconds: Histogram,
    /// The store and broker in use, and whether each answers: shard 0
    /// reports them for all.
    pub(crate) deps: Option<Arc<Dependencies>>,
    /// Datagrams received, both listeners.
    pub(crate) datagrams: u64,
}

impl Driver {
    /// Serves until `shutdown` completes, then finishes the pending work
    /// (within the grace period) and hands back the sink, for the caller to
    /// stop once no shard needs it.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Sink {
        tokio::pin!(shutdown);
        let mut io = Io {
            coap: (Receiver::new(), Sender::new()),
            coaps: (Receiver::new(), Sender::new()),
        };
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
                    let _ = reply.send(self.snapshot());
                }
                event = self.sink.next(), if events_open => match event {
                    Some(event) => {
                        self.on_sink_event(event);
                        // And every verdict already there: their devices are
                        // answered together, one sendmmsg.
                        for _ in 0..RECV_BATCH {
                            let Some(event) = self.sink.try_next() else { break };
                            self.on_sink_event(event);
                        }
                    }
                    None => {
                        events_open = false;
                        self.gateway.handle_broker_state(false);
                    }
                },
                Some((id, result)) = self.store_results.recv() => {
                    self.gateway.handle_store_result(Instant::now(), id, result);
                }
                ready = self.coap.readable(), if reading => {
                    self.on_readable(Listener::Coap, ready, &mut io.coap.0);
                }
                ready = self.coaps.readable(), if reading => {
                    self.on_readable(Listener::Coaps, ready, &mut io.coaps.0);
                }
                () = &mut timer => self.gateway.handle_timeout(Instant::now()),
                () = grace_over => {}
            }
            wake_at = self.drain(&mut io).await;
        }
        tracing::info!(shard = self.shard, "stopped");
        self.sink
    }

    /// Handles what a readable socket holds, up to [`RECV_BATCH`]
    /// datagrams, read a batch per system call.
    fn on_readable(
        &mut self,
        listener: Listener,
        ready: std::io::Result<()>,
        receiver: &mut Receiver,
    ) {
        if let Err(error) = ready {
            tracing::debug!(%error, "UDP socket readiness");
            return;
        }
        let socket = match listener {
            Listener::Coap => &self.coap,
            Listener::Coaps => &self.coaps,
        };
        let (gateway, datagrams) = (&mut self.gateway, &mut self.datagrams);
        let mut read = 0;
        while read < RECV_BATCH {
            // One reading of the clocks per batch: its datagrams were all
            // waiting in the socket at this instant.
            let (now, wall) = (Instant::now(), SystemTime::now());
            let received = receiver.receive(socket, |from, data| {
                *datagrams += 1;
                gateway.handle_datagram(now, wall, listener, from, data);
            });
            match received {
                // Fewer than a batch: the socket is empty (or nearly).
                Ok(n) if n < batch::BATCH => return,
                Ok(n) => read += n,
                // ICMP port unreachable from an earlier send and the like.
                Err(error) => {
                    if error.kind() != ErrorKind::WouldBlock {
                        tracing::debug!(%error, "recvmmsg");
                    }
                    return;
                }
            }
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
        let deps = self.deps.as_deref();
        Snapshot {
            engine: self.gateway.endpoint_stats(),
            dtls: self.gateway.dtls_stats(),
            outbox_depth: if self.sink.owns_bridge() {
                self.sink.bridge().outbox_depth()
            } else {
                0
            },
            broker_connected: self.sink.bridge().is_connected(),
            spool: deps.and(self.sink.spool_status()),
            store_up: deps.is_some_and(|deps| deps.store_up.load(Ordering::Relaxed)),
            store_follow: deps.map(Dependencies::follow_status),
            receive_drops,
            shard_datagrams: vec![(self.shard, self.datagrams)],
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
    async fn drain(&mut self, io: &mut Io) -> Option<Instant> {
        loop {
            match self.gateway.poll_output() {
                Output::Transmit(Datagram {
                    listener,
                    to,
                    payload,
                }) => match listener {
                    Listener::Coap => io.coap.1.push(to, payload),
                    Listener::Coaps => io.coaps.1.push(to, payload),
                },
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
                Output::Timeout(at) => {
                    io.coap.1.flush(&self.coap).await;
                    io.coaps.1.flush(&self.coaps).await;
                    return at;
                }
            }
        }
    }

    fn store(&mut self, write: StoreWrite) {
        let id = write.id;
        if !self.writer.submit(write, &self.answers) {
            tracing::error!(write = id, "the store writer has stopped");
            self.gateway
                .handle_store_result(Instant::now(), id, StoreResult::Unavailable);
        }
    }
}

/// Each listener's receive buffers and send queue.
struct Io {
    coap: (Receiver, Sender),
    coaps: (Receiver, Sender),
}

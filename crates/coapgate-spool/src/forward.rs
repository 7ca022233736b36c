//! The forwarder: reads the spool in order and hands a window of it to the
//! bridge; a message leaves the spool when the broker confirmed it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use coapgate_mqtt::{BridgeEvent, BridgeHandle, MqttError, Outgoing};
use tokio::sync::{mpsc, oneshot, watch};

use crate::SpoolEvent;
use crate::file::Stored;
use crate::writer::Command;

/// How long the bridge keeps trying one hand-over before it reports it
/// expired (and the forwarder hands it over again). Long: while the broker
/// is away the bridge keeps what it has and re-sends it after reconnecting,
/// in order; this only matters for a broker that stays connected and
/// never confirms.
const FORWARD_DEADLINE: Duration = Duration::from_secs(600);

pub(crate) struct Forwarder {
    pub(crate) bridge: BridgeHandle,
    pub(crate) bridge_events: mpsc::Receiver<BridgeEvent>,
    pub(crate) commands: Sender<Command>,
    pub(crate) written: watch::Receiver<u64>,
    pub(crate) events: mpsc::UnboundedSender<SpoolEvent>,
    pub(crate) stop: watch::Receiver<Option<Instant>>,
    /// Most messages read from the spool and not yet confirmed.
    pub(crate) window: usize,
}

/// Where the forwarder stands.
struct Window {
    /// Read from the spool, not yet confirmed by the broker.
    entries: BTreeMap<u64, Stored>,
    /// Those of `entries` the bridge does not hold (never handed over, or
    /// expired there): handed over first, in order.
    unhanded: BTreeSet<u64>,
    /// The last position read from the spool.
    cursor: u64,
}

impl Forwarder {
    pub(crate) async fn run(mut self) {
        let mut window = Window {
            entries: BTreeMap::new(),
            unhanded: BTreeSet::new(),
            cursor: 0,
        };
        let mut connected = self.bridge.is_connected();
        let mut bridge_open = true;
        loop {
            if connected {
                self.hand_over(&mut window);
                if window.unhanded.is_empty() && self.fill(&mut window).await {
                    continue;
                }
            }
            tokio::select! {
                event = self.bridge_events.recv(), if bridge_open => match event {
                    Some(event) => {
                        self.on_bridge_event(event, &mut window, &mut connected);
                        // Take what else is there in one go: one read of
                        // the spool then refills for many confirmations.
                        for _ in 0..self.window {
                            let Ok(event) = self.bridge_events.try_recv() else {
                                break;
                            };
                            self.on_bridge_event(event, &mut window, &mut connected);
                        }
                    }
                    None => bridge_open = false,
                },
                changed = self.written.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = self.stop.changed() => break,
            }
        }
        self.finish(window).await;
    }

    /// Reads more from the spool when the window is at most half full and
    /// there is something new; `true` when it read anything. (Refilling
    /// a message at a time would cost a round trip to the writer per
    /// confirmation.)
    async fn fill(&mut self, window: &mut Window) -> bool {
        if window.entries.len() > self.window / 2 || *self.written.borrow() <= window.cursor {
            return false;
        }
        let room = self.window - window.entries.len();
        let (reply, answer) = oneshot::channel();
        let read = Command::Read {
            after: window.cursor,
            limit: room,
            reply,
        };
        if self.commands.send(read).is_err() {
            return false;
        }
        let Ok(messages) = answer.await else {
            return false;
        };
        let any = !messages.is_empty();
        for message in messages {
            window.cursor = message.seq;
            window.unhanded.insert(message.seq);
            window.entries.insert(message.seq, message);
        }
        any
    }

    /// Hands the bridge what it does not hold yet, in order, until it
    /// refuses one.
    fn hand_over(&self, window: &mut Window) {
        while let Some(&seq) = window.unhanded.first() {
            let Some(message) = window.entries.get(&seq) else {
                window.unhanded.remove(&seq);
                continue;
            };
            let outgoing = Outgoing {
                id: seq,
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                deadline: Instant::now() + FORWARD_DEADLINE,
            };
            match self.bridge.publish(outgoing) {
                Ok(()) | Err(MqttError::DuplicateId(_)) => {
                    window.unhanded.remove(&seq);
                }
                Err(MqttError::NotConnected | MqttError::OutboxFull | MqttError::Closed) => return,
                // Checked before spooling (SpoolHandle::publish), so only a
                // changed limit gets here: it can never be sent.
                Err(error) => {
                    tracing::error!(%error, seq, topic = %message.topic, "spooled message cannot be published; dropped");
                    window.unhanded.remove(&seq);
                    if let Some(message) = window.entries.remove(&seq) {
                        let _ = self.commands.send(Command::Remove {
                            seq,
                            size: message.size(),
                        });
                    }
                }
            }
        }
    }

    fn on_bridge_event(&self, event: BridgeEvent, window: &mut Window, connected: &mut bool) {
        match event {
            BridgeEvent::Connected => {
                *connected = true;
                let _ = self.events.send(SpoolEvent::BrokerConnected);
            }
            BridgeEvent::Disconnected { reason } => {
                *connected = false;
                let _ = self.events.send(SpoolEvent::BrokerDisconnected { reason });
            }
            BridgeEvent::Delivered { id, latency } => {
                if let Some(message) = window.entries.remove(&id) {
                    window.unhanded.remove(&id);
                    let _ = self.commands.send(Command::Remove {
                        seq: id,
                        size: message.size(),
                    });
                    let _ = self.events.send(SpoolEvent::Forwarded { latency });
                }
            }
            BridgeEvent::Expired { id } => {
                if window.entries.contains_key(&id) {
                    window.unhanded.insert(id);
                }
            }
        }
    }

    /// Shutdown: let the bridge flush what it holds until the deadline,
    /// forget what the broker confirmed, keep the rest for the next start.
    async fn finish(mut self, mut window: Window) {
        let deadline = (*self.stop.borrow()).unwrap_or_else(Instant::now);
        let mut connected = true;
        let bridge = self.bridge.clone();
        let shutdown = bridge.shutdown(deadline);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(event) = self.bridge_events.recv() => {
                    self.on_bridge_event(event, &mut window, &mut connected);
                }
            }
        }
        while let Ok(event) = self.bridge_events.try_recv() {
            self.on_bridge_event(event, &mut window, &mut connected);
        }
    }
}

//! Where accepted messages go (`[mqtt] ack`): straight to the broker, a
//! device answered on PUBACK; or into the spool, a device answered once the
//! message is on disk, the spool forwarding it to the broker.
//!
//! With several shards, each has its own bridge (its own broker
//! connection), but they share the one spool: one file, one order on disk,
//! whatever `[coap] threads` was when a message was spooled. The shards'
//! publish ids are made unique in the spool ([`Shard::spool_id`]) and
//! [`share_spool`] hands each shard the verdicts on its own messages.

use std::time::{Duration, Instant};

use coapgate_endpoint::{PublishId, PublishResult};
use coapgate_mqtt::{BridgeEvent, BridgeHandle, Outgoing};
use coapgate_spool::{SpoolError, SpoolEvent, SpoolHandle, SpoolStatus};
use tokio::sync::mpsc;

pub(crate) enum Sink {
    /// `ack = "broker"`.
    Broker {
        bridge: BridgeHandle,
        events: mpsc::Receiver<BridgeEvent>,
    },
    /// `ack = "spool"`.
    Spool {
        spool: SpoolHandle,
        events: mpsc::UnboundedReceiver<SpoolEvent>,
        /// Which of the shards sharing the spool this is.
        shard: Shard,
    },
}

/// One of `count` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Shard {
    /// The id under which the spool knows this shard's publish `id`
    /// (`None` past `u64::MAX`, after 2⁶⁴ / count publishes).
    fn spool_id(self, id: u64) -> Option<u64> {
        let count = u64::try_from(self.count).ok()?;
        id.checked_mul(count)?
            .checked_add(u64::try_from(self.index).ok()?)
    }

    /// The shard's own id for a spool id of this shard.
    fn local_id(self, spool_id: u64) -> u64 {
        spool_id / u64::try_from(self.count).unwrap_or(1)
    }

    /// Which shard a spool id belongs to.
    fn of(spool_id: u64, count: usize) -> usize {
        usize::try_from(spool_id % u64::try_from(count).unwrap_or(1)).unwrap_or(0)
    }
}

/// Splits the spool's event stream between `count` shards, on a task of
/// the current runtime: each verdict to the shard whose message it is,
/// broker state changes to all, forwarding latencies to shard 0 (the
/// latency histogram is one for all shards). Returns shard 0's stream and
/// the others', in order.
pub(crate) fn share_spool(
    mut events: mpsc::UnboundedReceiver<SpoolEvent>,
    count: usize,
) -> (
    mpsc::UnboundedReceiver<SpoolEvent>,
    Vec<mpsc::UnboundedReceiver<SpoolEvent>>,
) {
    if count <= 1 {
        // One shard: nothing to split, no hop through a router.
        return (events, Vec::new());
    }
    let (senders, mut receivers): (Vec<_>, Vec<_>) =
        (0..count).map(|_| mpsc::unbounded_channel()).unzip();
    let first = receivers.remove(0);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let to = match &event {
                SpoolEvent::Spooled { id } | SpoolEvent::NotSpooled { id } => {
                    Some(Shard::of(*id, count))
                }
                SpoolEvent::BrokerConnected | SpoolEvent::BrokerDisconnected { .. } => None,
                _ => Some(0),
            };
            // A shard that stopped no longer needs its events.
            match to.and_then(|shard| senders.get(shard)) {
                Some(sender) => {
                    let _ = sender.send(event);
                }
                None => {
                    for sender in &senders {
                        let _ = sender.send(event.clone());
                    }
                }
            }
        }
    });
    (first, receivers)
}

/// An event as the bridge or the spool reports it.
enum Event {
    Bridge(BridgeEvent),
    Spool(SpoolEvent),
}

/// What the driver learns from its sink.
pub(crate) enum SinkEvent {
    /// Whether the engine may hand out publishes now: the broker link with
    /// `ack = "broker"` (5.02 while it is down); a spool always may.
    Accepting(bool),
    /// The broker link behind a spool changed (for the log).
    Broker { up: bool, reason: Option<String> },
    /// The verdict on one of the engine's publishes, and how long the
    /// broker took when that verdict is its confirmation.
    Verdict {
        id: PublishId,
        result: PublishResult,
        broker_latency: Option<Duration>,
    },
    /// The broker confirmed a spooled message after this long.
    Forwarded(Duration),
}

impl Sink {
    /// The bridge behind the sink.
    pub(crate) fn bridge(&self) -> &BridgeHandle {
        match self {
            Self::Broker { bridge, .. } => bridge,
            Self::Spool { spool, .. } => spool.bridge(),
        }
    }

    /// Whether [`bridge`](Self::bridge) is this sink's own, not a bridge
    /// it shares with other shards (the spool's, for shards other than 0).
    pub(crate) fn owns_bridge(&self) -> bool {
        match self {
            Self::Broker { .. } => true,
            Self::Spool { shard, .. } => shard.index == 0,
        }
    }

    /// Whether the engine may hand out publishes at start.
    pub(crate) fn accepting(&self) -> bool {
        match self {
            Self::Broker { bridge, .. } => bridge.is_connected(),
            Self::Spool { .. } => true,
        }
    }

    /// The spool's state, with `ack = "spool"`.
    pub(crate) fn spool_status(&self) -> Option<SpoolStatus> {
        match self {
            Self::Broker { .. } => None,
            Self::Spool { spool, .. } => Some(spool.status()),
        }
    }

    /// Hands a publish over; `Err` is the verdict to give it at once.
    pub(crate) fn publish(&self, outgoing: Outgoing) -> Result<(), PublishResult> {
        let id = outgoing.id;
        match self {
            Self::Broker { bridge, .. } => bridge.publish(outgoing).map_err(|error| {
                tracing::debug!(%error, id, "publish not taken by the bridge");
                PublishResult::Unavailable
            }),
            Self::Spool { spool, shard, .. } => shard
                .spool_id(id)
                .ok_or(SpoolError::Closed)
                .and_then(|spool_id| spool.publish(spool_id, outgoing.topic, outgoing.payload))
                .map_err(|error| {
                    tracing::debug!(%error, id, "publish not taken by the spool");
                    match error {
                        SpoolError::Unsendable(_) | SpoolError::Closed => {
                            PublishResult::Unavailable
                        }
                        _ => PublishResult::TryLater,
                    }
                }),
        }
    }

    /// The next event; `None` once the sink has stopped.
    pub(crate) async fn next(&mut self) -> Option<SinkEvent> {
        loop {
            let event = match self {
                Self::Broker { events, .. } => Event::Bridge(events.recv().await?),
                Self::Spool { events, .. } => Event::Spool(events.recv().await?),
            };
            if let Some(event) = self.translate(event) {
                return Some(event);
            }
        }
    }

    /// An event that is there already, without waiting (so that a loop
    /// turn handles every verdict that has arrived, and answers their
    /// devices with one `sendmmsg`).
    pub(crate) fn try_next(&mut self) -> Option<SinkEvent> {
        loop {
            let event = match self {
                Self::Broker { events, .. } => Event::Bridge(events.try_recv().ok()?),
                Self::Spool { events, .. } => Event::Spool(events.try_recv().ok()?),
            };
            if let Some(event) = self.translate(event) {
                return Some(event);
            }
        }
    }

    /// What an event of the bridge or the spool means to the driver;
    /// `None` for one it does not use.
    fn translate(&self, event: Event) -> Option<SinkEvent> {
        let verdict = |id, result, broker_latency| SinkEvent::Verdict {
            id,
            result,
            broker_latency,
        };
        Some(match event {
            Event::Bridge(event) => match event {
                BridgeEvent::Connected => SinkEvent::Accepting(true),
                BridgeEvent::Disconnected { reason } => {
                    tracing::warn!(%reason, "MQTT broker connection lost; reconnecting");
                    SinkEvent::Accepting(false)
                }
                BridgeEvent::Delivered { id, latency } => {
                    verdict(id, PublishResult::Confirmed, Some(latency))
                }
                BridgeEvent::Expired { id } => verdict(id, PublishResult::TimedOut, None),
            },
            Event::Spool(event) => {
                let Self::Spool { shard, .. } = self else {
                    return None;
                };
                let local = |id| shard.local_id(id);
                match event {
                    SpoolEvent::Spooled { id } => {
                        verdict(local(id), PublishResult::Confirmed, None)
                    }
                    SpoolEvent::NotSpooled { id } => {
                        verdict(local(id), PublishResult::TryLater, None)
                    }
                    SpoolEvent::Forwarded { latency } => SinkEvent::Forwarded(latency),
                    SpoolEvent::BrokerConnected => SinkEvent::Broker {
                        up: true,
                        reason: None,
                    },
                    SpoolEvent::BrokerDisconnected { reason } => SinkEvent::Broker {
                        up: false,
                        reason: Some(reason),
                    },
                    // Anything a newer spool reports that we do not use.
                    _ => return None,
                }
            }
        })
    }

    /// Stops: the bridge flushes until `deadline`; a spool keeps what the
    /// broker has not confirmed for the next start. Of a spool the shards
    /// share, only shard 0 (which runs last) stops it.
    pub(crate) async fn shutdown(self, deadline: Instant) {
        match self {
            Self::Broker { bridge, .. } => bridge.shutdown(deadline).await,
            Self::Spool { spool, shard, .. } if shard.index == 0 => {
                spool.shutdown(deadline).await;
            }
            Self::Spool { .. } => {}
        }
    }
}

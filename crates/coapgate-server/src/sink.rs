//! Where accepted messages go (`[mqtt] ack`): straight to the broker, a
//! device answered on PUBACK; or into the spool, a device answered once the
//! message is on disk, the spool forwarding it to the broker.

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
    },
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
            Self::Spool { spool, .. } => spool
                .publish(id, outgoing.topic, outgoing.payload)
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
        match self {
            Self::Broker { events, .. } => Some(match events.recv().await? {
                BridgeEvent::Connected => SinkEvent::Accepting(true),
                BridgeEvent::Disconnected { reason } => {
                    tracing::warn!(%reason, "MQTT broker connection lost; reconnecting");
                    SinkEvent::Accepting(false)
                }
                BridgeEvent::Delivered { id, latency } => SinkEvent::Verdict {
                    id,
                    result: PublishResult::Confirmed,
                    broker_latency: Some(latency),
                },
                BridgeEvent::Expired { id } => SinkEvent::Verdict {
                    id,
                    result: PublishResult::TimedOut,
                    broker_latency: None,
                },
            }),
            Self::Spool { events, .. } => loop {
                let verdict = |id, result| SinkEvent::Verdict {
                    id,
                    result,
                    broker_latency: None,
                };
                break Some(match events.recv().await? {
                    SpoolEvent::Spooled { id } => verdict(id, PublishResult::Confirmed),
                    SpoolEvent::NotSpooled { id } => verdict(id, PublishResult::TryLater),
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
                    _ => continue,
                });
            },
        }
    }

    /// Stops: the bridge flushes until `deadline`; a spool keeps what the
    /// broker has not confirmed for the next start.
    pub(crate) async fn shutdown(self, deadline: Instant) {
        match self {
            Self::Broker { bridge, .. } => bridge.shutdown(deadline).await,
            Self::Spool { spool, .. } => spool.shutdown(deadline).await,
        }
    }
}

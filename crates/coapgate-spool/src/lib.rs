//! Store-and-forward for coapgate's MQTT publishes.
//!
//! By default a device gets its 2.04 only once the broker confirmed the
//! message; while the broker is away, every device retries. With a spool,
//! a message is answered once it is **durably on local disk** instead, and
//! forwarded to the broker when it can be:
//!
//! * [`SpoolHandle::publish`] queues a message for the writer thread, after
//!   checking that the bridge could ever send it and that the spool has room
//!   (`max_bytes`; beyond it [`SpoolError::Full`], the device gets 5.03).
//! * The writer thread appends everything queued meanwhile in one SQLite
//!   transaction (WAL, `synchronous = FULL`: fsync'd before the commit
//!   returns; group commit), then reports [`SpoolEvent::Spooled`] per
//!   message — only then may the device be answered. A write that fails (a
//!   full or broken disk) is [`SpoolEvent::NotSpooled`]; nothing of it is
//!   kept.
//! * The forwarder reads the spool in order and keeps a window of it handed
//!   to a [`BridgeHandle`]; a message is removed from the spool only after
//!   its PUBACK (PUBCOMP for QoS 2). While the broker is down nothing is
//!   handed over; after it is back, forwarding resumes where it stopped.
//! * The spool survives the process: after `kill -9` or a power cut, the
//!   next [`Spool::start`] forwards whatever was not confirmed. A message
//!   confirmed by the broker whose removal did not reach the disk is sent
//!   once more — at-least-once, as QoS 1 is anyway; the envelope's `id`
//!   lets consumers drop the copy.
//!
//! Order: messages are handed to the bridge in spool order, which is the
//! order [`SpoolHandle::publish`] was called; the bridge keeps that order on
//! the wire and re-sends in it after a reconnect. A re-send after a lost
//! acknowledgement may repeat a message after later ones (QoS 1 allows it).
//!
//! One process holds a spool file at a time; a second gets
//! [`SpoolError::InUse`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use coapgate_mqtt::{Bridge, BridgeConfig};
//! use coapgate_spool::{Spool, SpoolConfig, SpoolEvent};
//!
//! let (bridge, bridge_events) = Bridge::start(BridgeConfig::from_url("mqtt://127.0.0.1:1883")?)?;
//! let (spool, mut events) = Spool::start(SpoolConfig::new("coapgate.spool"), bridge, bridge_events)?;
//! spool.publish(1, "8988280666000000000/t".into(), "hello".into())?;
//! while let Some(event) = events.recv().await {
//!     if let SpoolEvent::Spooled { id: 1 } = event {
//!         break; // durable: answer the device
//!     }
//! }
//! spool.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod file;
mod forward;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{BridgeEvent, BridgeHandle, MqttError};
use tokio::sync::{mpsc, watch};

use crate::file::{SpoolFile, message_size};
use crate::writer::Command;

/// Where the spool lives and how big it may grow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// The spool file (SQLite; `-wal` and `-shm` files beside it).
    pub path: PathBuf,
    /// Most bytes of messages (topic and payload) held at once; beyond it
    /// [`SpoolHandle::publish`] answers [`SpoolError::Full`]
    /// ([`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
    /// Most messages handed to the bridge and not yet confirmed
    /// ([`DEFAULT_WINDOW`]); give the bridge an outbox at least this big.
    pub window: usize,
}

/// [`SpoolConfig::max_bytes`] unless set: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// [`SpoolConfig::window`] unless set.
pub const DEFAULT_WINDOW: usize = 1024;

impl SpoolConfig {
    /// A spool at `path` with the default bound and window.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            window: DEFAULT_WINDOW,
        }
    }
}

/// What the spool reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolEvent {
    /// The message is durably in the spool: the device may get its 2.04.
    Spooled {
        /// The caller's id from [`SpoolHandle::publish`].
        id: u64,
    },
    /// The message could not be written (the disk is full or failing);
    /// nothing of it is kept, the device should try again later (5.03).
    NotSpooled {
        /// The caller's id.
        id: u64,
    },
    /// The broker confirmed a forwarded message, which left the spool.
    Forwarded {
        /// From its hand-over to the bridge until the confirmation.
        latency: Duration,
    },
    /// The bridge connected to the broker (also after every reconnect).
    BrokerConnected,
    /// The broker connection is down; the spool keeps taking messages.
    BrokerDisconnected {
        /// Why, for logs.
        reason: String,
    },
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool file could not be opened or set up.
    #[error("spool {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// Another process holds the spool file.
    #[error("spool {} is in use by another process", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The spool holds `max_bytes` already: nothing was queued.
    #[error("spool full ({held} of {max} bytes held)")]
    Full {
        /// Bytes held and queued.
        held: u64,
        /// The bound.
        max: u64,
    },
    /// The bridge could never send this message (a topic it refuses, a
    /// packet over its size limit): nothing was queued.
    #[error("cannot be forwarded: {0}")]
    Unsendable(MqttError),
    /// The spool has stopped.
    #[error("spool stopped")]
    Closed,
    /// The writer thread could not be started.
    #[error("could not start the spool writer: {0}")]
    Thread(std::io::Error),
}

/// Counts shared by the handle and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Messages durably held.
    pub(crate) messages: AtomicU64,
    /// Bytes held, and reserved by messages queued for the writer.
    pub(crate) bytes: AtomicU64,
    /// The last write succeeded.
    pub(crate) writable: AtomicBool,
}

/// The spool's state, for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SpoolStatus {
    /// Messages durably held (not yet confirmed by the broker).
    pub messages: u64,
    /// Bytes held and queued for writing.
    pub bytes: u64,
    /// The bound ([`SpoolConfig::max_bytes`]).
    pub max_bytes: u64,
    /// Whether its last write succeeded.
    pub writable: bool,
    /// Whether the broker connection is up.
    pub broker_connected: bool,
}

/// Entry point; see [`Spool::start`].
#[derive(Debug)]
pub struct Spool;

impl Spool {
    /// Opens the spool (creating it if needed), and starts its writer
    /// thread and the forwarder (on the current tokio runtime), which owns
    /// `bridge` and reads `bridge_events` from now on. Messages left from an
    /// earlier run are forwarded first.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(
        config: SpoolConfig,
        bridge: BridgeHandle,
        bridge_events: mpsc::Receiver<BridgeEvent>,
    ) -> Result<(SpoolHandle, mpsc::UnboundedReceiver<SpoolEvent>), SpoolError> {
        let (file, totals) = SpoolFile::open(&config.path)?;
        if totals.messages > 0 {
            tracing::info!(
                messages = totals.messages,
                bytes = totals.bytes,
                path = %config.path.display(),
                "spool holds messages from an earlier run; forwarding them first"
            );
        }
        let counters = Arc::new(Counters {
            messages: AtomicU64::new(totals.messages),
            bytes: AtomicU64::new(totals.bytes),
            writable: AtomicBool::new(true),
        });
        let (commands, commands_rx) = std::sync::mpsc::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(totals.last_seq);
        let writer = writer::Writer {
            file,
            commands: commands_rx,
            events: events_tx.clone(),
            written: written_tx,
            counters: counters.clone(),
            next_seq: totals.last_seq + 1,
        };
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("coapgate-spool".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(());
            })
            .map_err(SpoolError::Thread)?;
        let (stop_tx, stop) = watch::channel(None);
        let forwarder = forward::Forwarder {
            bridge: bridge.clone(),
            bridge_events,
            commands: commands.clone(),
            written,
            events: events_tx,
            stop,
            window: config.window.max(1),
        };
        let task = tokio::spawn(forwarder.run());
        Ok((
            SpoolHandle {
                inner: Arc::new(Inner {
                    commands: Mutex::new(Some(commands)),
                    counters,
                    max_bytes: config.max_bytes,
                    bridge,
                    stop: stop_tx,
                    task: Mutex::new(Some((task, done))),
                    path: config.path,
                }),
            },
            events,
        ))
    }
}

/// A cheap, cloneable handle to a running spool.
#[derive(Clone)]
pub struct SpoolHandle {
    inner: Arc<Inner>,
}

type Tasks = (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
);

struct Inner {
    /// `None` once shut down.
    commands: Mutex<Option<std::sync::mpsc::Sender<Command>>>,
    counters: Arc<Counters>,
    max_bytes: u64,
    bridge: BridgeHandle,
    stop: watch::Sender<Option<Instant>>,
    task: Mutex<Option<Tasks>>,
    path: PathBuf,
}

impl Drop for Inner {
    /// The last handle gone without [`SpoolHandle::shutdown`]: stop at once.
    fn drop(&mut self) {
        self.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(Instant::now());
            }
            first
        });
    }
}

impl std::fmt::Debug for SpoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolHandle")
            .field("path", &self.inner.path)
            .field("status", &self.status())
            .finish()
    }
}

impl SpoolHandle {
    /// Queues a message for the spool; never blocks. Exactly one
    /// [`SpoolEvent::Spooled`] or [`SpoolEvent::NotSpooled`] with `id`
    /// follows every `Ok`. Refused at once: [`SpoolError::Full`],
    /// [`SpoolError::Unsendable`], [`SpoolError::Closed`].
    pub fn publish(&self, id: u64, topic: String, payload: Bytes) -> Result<(), SpoolError> {
        self.inner
            .bridge
            .check(&topic, payload.len())
            .map_err(SpoolError::Unsendable)?;
        let size = message_size(&topic, &payload);
        let counters = &self.inner.counters;
        let max = self.inner.max_bytes;
        counters
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&after| after <= max)
            })
            .map_err(|held| SpoolError::Full { held, max })?;
        let sent = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|commands| commands.send(Command::Append { id, topic, payload }));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => {
                counters.bytes.fetch_sub(size, Ordering::AcqRel);
                Err(SpoolError::Closed)
            }
        }
    }

    /// Where the spool stands now.
    pub fn status(&self) -> SpoolStatus {
        let counters = &self.inner.counters;
        SpoolStatus {
            messages: counters.messages.load(Ordering::Acquire),
            bytes: counters.bytes.load(Ordering::Acquire),
            max_bytes: self.inner.max_bytes,
            writable: counters.writable.load(Ordering::Acquire),
            broker_connected: self.inner.bridge.is_connected(),
        }
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The bridge it forwards through (for its outbox depth and link).
    pub fn bridge(&self) -> &BridgeHandle {
        &self.inner.bridge
    }

    /// Stops: no new messages; the bridge flushes what it holds until
    /// `deadline`; what the broker confirmed is removed; the rest stays in
    /// the file for the next start. Returns when the writer has finished.
    pub async fn shutdown(self, deadline: Instant) {
        self.inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.inner.stop.send_replace(Some(deadline));
        let tasks = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((forwarder, writer)) = tasks {
            // The writer ends when the forwarder, which holds the last
            // command sender, has ended.
            let _ = forwarder.await;
            let _ = writer.await;
        }
    }
}

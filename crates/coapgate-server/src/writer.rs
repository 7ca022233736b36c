//! The store writer: the engine's store writes, carried out one after
//! another on a thread of their own (and the store's own writer
//! connection), never on the event loop. A locked or slow database delays
//! only the requests that wait for a write. The shards share the one
//! writer (one writer connection, no lock contention between shards); each
//! gets its answers on a channel of its own.

use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Instant;

use coapgate_endpoint::{StoreRequest, StoreResult, StoreWrite, StoreWriteId};
use coapgate_store::{Store, StoreError};
use tokio::sync::mpsc;

use crate::ServerError;

/// Where a shard's store writes are answered.
pub(crate) type Answers = mpsc::UnboundedSender<(StoreWriteId, StoreResult)>;

/// Hands store writes to the writer thread. Dropping every clone lets the
/// thread finish what was queued and end.
#[derive(Clone)]
pub(crate) struct StoreWriter {
    writes: std_mpsc::Sender<(StoreWrite, Answers)>,
}

impl StoreWriter {
    /// Starts the writer thread over `store`.
    pub(crate) fn start(store: Store) -> Result<Self, ServerError> {
        let (writes, queue) = std_mpsc::channel::<(StoreWrite, Answers)>();
        thread::Builder::new()
            .name("coapgate-store-writer".into())
            .spawn(move || {
                for (write, answers) in queue {
                    if Instant::now() > write.deadline {
                        tracing::warn!(write = write.id, "store write started after its deadline");
                    }
                    let result = execute(&store, &write.request);
                    // A shard that stopped no longer needs its answer.
                    let _ = answers.send((write.id, result));
                }
            })
            .map_err(|source| ServerError::Io {
                what: "spawn the store writer".into(),
                source,
            })?;
        Ok(Self { writes })
    }

    /// Queues a write, to be answered on `answers`; `false` if the writer
    /// thread has stopped.
    pub(crate) fn submit(&self, write: StoreWrite, answers: &Answers) -> bool {
        self.writes.send((write, answers.clone())).is_ok()
    }
}

/// Carries out one write. A busy or locked database is
/// [`StoreResult::Unavailable`] (the device gets 5.03 with Max-Age and
/// tries again); any other failure is [`StoreResult::Failed`] (5.00).
pub(crate) fn execute(store: &Store, request: &StoreRequest) -> StoreResult {
    let failed = |what: &str, error: StoreError| {
        // Store errors never hold a PSK.
        if error.is_transient() {
            tracing::warn!(%error, "{what}: store busy");
            StoreResult::Unavailable
        } else {
            tracing::error!(%error, "{what} failed");
            StoreResult::Failed
        }
    };
    match request {
        StoreRequest::Bootstrap(update) => match store.bootstrap(update) {
            Ok(record) => StoreResult::Psk(record),
            Err(error) => failed("bootstrap", error),
        },
        StoreRequest::MarkRegistered { iccid, at } => match store.mark_registered(iccid, *at) {
            Ok(()) => StoreResult::Done,
            Err(error) => failed("record a registration", error),
        },
    }
}

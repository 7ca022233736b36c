//! The writer thread: the only user of the spool file. It takes commands
//! in batches — everything queued while the previous fsync ran — so many
//! appends share one commit (group commit).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::file::{SpoolFile, Stored};
use crate::{Counters, SpoolEvent};

/// Most commands taken into one batch.
const BATCH: usize = 4096;
/// How soon removals that failed are tried again.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) enum Command {
    /// Make this message durable, then report [`SpoolEvent::Spooled`] (or
    /// `NotSpooled`) for `id`.
    Append {
        id: u64,
        topic: String,
        payload: bytes::Bytes,
    },
    /// The broker has it: forget it.
    Remove { seq: u64, size: u64 },
    /// Messages after `after`, in order, at most `limit`.
    Read {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Vec<Stored>>,
    },
}

pub(crate) struct Writer {
    pub(crate) file: SpoolFile,
    pub(crate) commands: Receiver<Command>,
    pub(crate) events: mpsc::UnboundedSender<SpoolEvent>,
    /// The highest durable position, for the forwarder.
    pub(crate) written: watch::Sender<u64>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) next_seq: u64,
}

impl Writer {
    /// Runs until every sender is gone.
    pub(crate) fn run(mut self) {
        let mut removals: Vec<(u64, u64)> = Vec::new();
        loop {
            let first = if removals.is_empty() {
                match self.commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            } else {
                match self.commands.recv_timeout(RETRY) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut ids = Vec::new();
            let mut messages = Vec::new();
            let mut reads = Vec::new();
            let mut take = |command| match command {
                Command::Append { id, topic, payload } => {
                    let seq = self.next_seq + messages.len() as u64;
                    ids.push(id);
                    messages.push(Stored {
                        seq,
                        topic,
                        payload,
                    });
                }
                Command::Remove { seq, size } => removals.push((seq, size)),
                Command::Read {
                    after,
                    limit,
                    reply,
                } => reads.push((after, limit, reply)),
            };
            if let Some(command) = first {
                take(command);
            }
            for _ in 1..BATCH {
                match self.commands.try_recv() {
                    Ok(command) => take(command),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            // Removals first: on a full disk they make the room appends need.
            self.remove(&mut removals);
            self.append(&ids, &messages);
            for (after, limit, reply) in reads {
                let messages = self.file.read(after, limit).unwrap_or_else(|error| {
                    tracing::error!(%error, "could not read the spool");
                    Vec::new()
                });
                let _ = reply.send(messages);
            }
        }
        // Removals acknowledged at the very end (shutdown) are kept.
        self.remove(&mut removals);
    }

    fn remove(&mut self, removals: &mut Vec<(u64, u64)>) {
        if removals.is_empty() {
            return;
        }
        let seqs: Vec<u64> = removals.iter().map(|&(seq, _)| seq).collect();
        match self.file.remove(&seqs) {
            Ok(()) => {
                let bytes: u64 = removals.iter().map(|&(_, size)| size).sum();
                self.counters.bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.counters
                    .messages
                    .fetch_sub(seqs.len() as u64, Ordering::AcqRel);
                removals.clear();
            }
            // Kept and tried again; at worst a restart forwards them once more.
            Err(error) => {
                tracing::warn!(%error, pending = seqs.len(), "could not remove forwarded messages from the spool")
            }
        }
    }

    /// Appends `messages`, the `ids` of the caller in the same order.
    fn append(&mut self, ids: &[u64], messages: &[Stored]) {
        let Some(last) = messages.last().map(|m| m.seq) else {
            return;
        };
        match self.file.append(messages) {
            Ok(()) => {
                self.next_seq = last + 1;
                self.counters
                    .messages
                    .fetch_add(messages.len() as u64, Ordering::AcqRel);
                if !self.counters.writable.swap(true, Ordering::AcqRel) {
                    tracing::info!("the spool takes messages again");
                }
                self.written.send_replace(last);
                for &id in ids {
                    let _ = self.events.send(SpoolEvent::Spooled { id });
                }
            }
            Err(error) => {
                if self.counters.writable.swap(false, Ordering::AcqRel) {
                    tracing::error!(%error, "could not write to the spool; devices get 5.03 until it can");
                }
                let bytes: u64 = messages.iter().map(Stored::size).sum();
                self.counters.bytes.fetch_sub(bytes, Ordering::AcqRel);
                for &id in ids {
                    let _ = self.events.send(SpoolEvent::NotSpooled { id });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::message_size;

    struct Running {
        commands: std::sync::mpsc::Sender<Command>,
        events: mpsc::UnboundedReceiver<SpoolEvent>,
        counters: Arc<Counters>,
        thread: std::thread::JoinHandle<()>,
    }

    fn start(file: SpoolFile) -> Running {
        let (commands, commands_rx) = std::sync::mpsc::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        counters.writable.store(true, Ordering::Release);
        let writer = Writer {
            file,
            commands: commands_rx,
            events: events_tx,
            written: watch::channel(0).0,
            counters: counters.clone(),
            next_seq: 1,
        };
        let thread = std::thread::spawn(move || writer.run());
        Running {
            commands,
            events,
            counters,
            thread,
        }
    }

    /// Reserves the bytes, as `SpoolHandle::publish` does, and sends.
    fn append(running: &Running, id: u64, payload: Vec<u8>) {
        let topic = "8988280666000000000".to_owned();
        running
            .counters
            .bytes
            .fetch_add(message_size(&topic, &payload), Ordering::AcqRel);
        running
            .commands
            .send(Command::Append {
                id,
                topic,
                payload: payload.into(),
            })
            .expect("writer runs");
    }

    #[test]
    fn a_write_the_disk_refuses_is_reported_and_releases_its_room() {
        let dir = std::env::temp_dir().join(format!("coapgate-spool-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("full.spool");
        let (file, _) = SpoolFile::open(&path).expect("opens");
        file.limit_pages(8);
        let mut running = start(file);

        append(&running, 1, vec![7; 64 * 1024]);
        assert_eq!(
            running.events.blocking_recv(),
            Some(SpoolEvent::NotSpooled { id: 1 })
        );
        assert_eq!(running.counters.bytes.load(Ordering::Acquire), 0);
        assert_eq!(running.counters.messages.load(Ordering::Acquire), 0);
        assert!(!running.counters.writable.load(Ordering::Acquire));

        // Small enough for what the "disk" has left: taken, and the spool
        // says it is writable again.
        append(&running, 2, vec![7; 16]);
        assert_eq!(
            running.events.blocking_recv(),
            Some(SpoolEvent::Spooled { id: 2 })
        );
        assert_eq!(running.counters.messages.load(Ordering::Acquire), 1);
        assert!(running.counters.writable.load(Ordering::Acquire));
        drop(running.commands);
        running.thread.join().expect("writer ends");

        let (_, totals) = SpoolFile::open(&path).expect("reopens");
        assert_eq!(
            (totals.messages, totals.last_seq),
            (1, 1),
            "only the message that was spooled is in the file"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

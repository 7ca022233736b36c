//! The spool file: one SQLite table in WAL mode, every commit fsync'd
//! (`synchronous = FULL`), held by one process at a time
//! (`locking_mode = EXCLUSIVE`). Blocking; only the writer thread uses it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use crate::SpoolError;

/// A message as it lies in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Position in the spool: forwarding order.
    pub(crate) seq: u64,
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
}

impl Stored {
    /// What it counts against `max_bytes`.
    pub(crate) fn size(&self) -> u64 {
        message_size(&self.topic, &self.payload)
    }
}

/// Bytes a message counts against the bound: its topic and payload (the
/// file's own overhead, a few dozen bytes a row, is not counted).
pub(crate) fn message_size(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64
}

/// What the file holds when it is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    /// The highest `seq` present (0: none).
    pub(crate) last_seq: u64,
}

pub(crate) struct SpoolFile {
    conn: Connection,
}

impl SpoolFile {
    /// Opens (creating if needed) the spool at `path` and takes it for
    /// this process; another process holding it is [`SpoolError::InUse`].
    pub(crate) fn open(path: &Path) -> Result<(Self, Totals), SpoolError> {
        let error = |source: rusqlite::Error| SpoolError::from_sqlite(path, source);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error)?;
        // Exclusive first: with WAL it means no shared-memory index and a
        // lock held from the first write until the connection closes.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(error)?;
        // The first write takes the lock (or finds another process has it).
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (
                 seq INTEGER PRIMARY KEY,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 spooled_ms INTEGER NOT NULL
             );",
        )
        .map_err(error)?;
        let totals = conn
            .query_row(
                "SELECT COUNT(*),
                        COALESCE(SUM(length(CAST(topic AS BLOB)) + length(payload)), 0),
                        COALESCE(MAX(seq), 0)
                 FROM spool",
                [],
                |row| {
                    Ok(Totals {
                        messages: row.get::<_, i64>(0)?.unsigned_abs(),
                        bytes: row.get::<_, i64>(1)?.unsigned_abs(),
                        last_seq: row.get::<_, i64>(2)?.unsigned_abs(),
                    })
                },
            )
            .map_err(error)?;
        Ok((Self { conn }, totals))
    }

    /// Appends the messages in one transaction; durable when it returns
    /// `Ok` (`synchronous = FULL`, set for every append since a removal
    /// lowers it). On error nothing of them is kept.
    pub(crate) fn append(&mut self, messages: &[Stored]) -> rusqlite::Result<()> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO spool (seq, topic, payload, spooled_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for m in messages {
                insert.execute(params![seq_param(m.seq), m.topic, &m.payload[..], now])?;
            }
        }
        tx.commit()
    }

    /// Forgets the messages with these positions, in one transaction.
    ///
    /// Without an fsync of its own (`synchronous = NORMAL` for this commit):
    /// a removal lost in a crash only means the broker gets that message
    /// once more, and the next append's fsync makes it durable anyway.
    pub(crate) fn remove(&mut self, seqs: &[u64]) -> rusqlite::Result<()> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM spool WHERE seq = ?1")?;
            for &seq in seqs {
                delete.execute([seq_param(seq)])?;
            }
        }
        tx.commit()
    }

    /// Up to `limit` messages after position `after`, in order.
    pub(crate) fn read(&self, after: u64, limit: usize) -> rusqlite::Result<Vec<Stored>> {
        let mut select = self.conn.prepare_cached(
            "SELECT seq, topic, payload FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = select.query_map(params![seq_param(after), limit], |row| {
            Ok(Stored {
                seq: row.get::<_, i64>(0)?.unsigned_abs(),
                topic: row.get(1)?,
                payload: Bytes::from(row.get::<_, Vec<u8>>(2)?),
            })
        })?;
        rows.collect()
    }
}

/// Positions are assigned from 1 upwards by this crate, so they fit.
fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl SpoolError {
    fn from_sqlite(path: &Path, source: rusqlite::Error) -> Self {
        let busy = matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        );
        if busy {
            Self::InUse {
                path: path.to_owned(),
            }
        } else {
            Self::Open {
                path: path.to_owned(),
                source,
            }
        }
    }
}

#[cfg(test)]
impl SpoolFile {
    /// Makes the file unable to grow beyond `pages` pages, as a full disk.
    pub(crate) fn limit_pages(&self, pages: u64) {
        self.conn
            .pragma_update(None, "max_page_count", pages)
            .expect("max_page_count");
    }
}

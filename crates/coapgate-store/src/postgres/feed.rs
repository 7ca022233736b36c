//! The change feed: a connection that `LISTEN`s on the channel the
//! triggers of migration 0005 announce every change on, and reads back the
//! rows a change touched.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;

use super::pool::{Conn, Statements};
use super::{Target, read_rows};
use crate::StoreError;
use crate::backend::{Change, ChangeFeed, Notice, RawPosition, Snapshot};
use crate::error::Context;

/// The channel migration 0005 notifies on.
const CHANNEL: &str = "coapgate_changes";

/// At most this many announcements are taken in one [`ChangeFeed::wait`]:
/// a burst is applied in slices, each with one read.
const MAX_BATCH: usize = 4096;

pub(crate) struct Feed {
    conn: Conn,
}

impl Feed {
    /// A new connection, listening.
    pub(crate) fn open(target: &Target) -> Result<Self, StoreError> {
        const CONTEXT: &str = "listen for changes";
        let mut client = target.connect().context(CONTEXT)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .context(CONTEXT)?;
        Ok(Feed {
            conn: Conn {
                client,
                statements: Statements::default(),
            },
        })
    }
}

impl ChangeFeed for Feed {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<Notice>, StoreError> {
        const CONTEXT: &str = "receive changes";
        let mut notices = Vec::new();
        {
            let mut notifications = self.conn.client.notifications();
            let first = notifications
                .timeout_iter(timeout)
                .next()
                .context(CONTEXT)?;
            if let Some(first) = first {
                notices.push(notice(first.payload()));
                // Whatever else has arrived, without waiting.
                let mut pending = notifications.iter();
                while notices.len() < MAX_BATCH {
                    match pending.next().context(CONTEXT)? {
                        Some(next) => notices.push(notice(next.payload())),
                        None => break,
                    }
                }
            }
        }
        if notices.is_empty() && self.conn.client.is_closed() {
            return Err(StoreError::Busy {
                context: CONTEXT,
                source: "the database closed the connection".into(),
            });
        }
        Ok(notices)
    }

    fn read(&mut self, iccids: &[String], template: bool) -> Result<Snapshot, StoreError> {
        let read = read_rows(&mut self.conn, Some(iccids), template);
        if read.is_err() {
            self.conn.statements.clear();
        }
        read
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .client
            .batch_execute("SELECT 1")
            .context("ping the database")
    }
}

/// One announcement's payload (see migration 0005). Anything it cannot
/// place is [`Change::Unknown`], which makes the receiver read everything.
fn notice(payload: &str) -> Notice {
    let Ok(value) = serde_json::from_str::<Value>(payload) else {
        return Notice {
            change: Change::Unknown,
            at_ms: 0,
        };
    };
    let at_ms = value.get("at").and_then(Value::as_i64).unwrap_or(0);
    let text = |field: &str| value.get(field).and_then(Value::as_str);
    let key = text("k").map(str::to_owned);
    let change = match (text("t"), key) {
        (Some("devices" | "psks" | "registrations"), Some(iccid)) => Change::Device(iccid),
        (Some("templates"), _) => Change::Template,
        (Some("positions"), Some(iccid)) => {
            let number = |field: &str| value.get(field).and_then(Value::as_f64);
            match (
                number("lon"),
                number("lat"),
                text("src"),
                value.get("time").and_then(Value::as_i64),
            ) {
                (Some(longitude), Some(latitude), Some(source), Some(sample_time)) => {
                    Change::Position(RawPosition {
                        iccid,
                        longitude,
                        latitude,
                        source: source.to_owned(),
                        sample_time,
                    })
                }
                // Read the device back instead.
                _ => Change::Device(iccid),
            }
        }
        _ => Change::Unknown,
    };
    Notice { change, at_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_changes() {
        let n = notice(r#"{"t": "devices", "k": "8988280666000000001", "at": 1700000000123}"#);
        assert_eq!(n.at_ms, 1_700_000_000_123);
        assert!(matches!(n.change, Change::Device(ref k) if k == "8988280666000000001"));
        for table in ["psks", "registrations"] {
            let n = notice(&format!(r#"{{"t": "{table}", "k": "1", "at": 1}}"#));
            assert!(
                matches!(n.change, Change::Device(ref k) if k == "1"),
                "{table}"
            );
        }
        let n = notice(r#"{"t": "templates", "at": 5}"#);
        assert!(matches!(n.change, Change::Template));
        let n = notice(
            r#"{"t": "positions", "k": "7", "at": 9, "lon": 13.4, "lat": -52.5, "src": "gps", "time": 1700000000}"#,
        );
        match n.change {
            Change::Position(p) => {
                assert_eq!(
                    (p.iccid.as_str(), p.longitude, p.latitude),
                    ("7", 13.4, -52.5)
                );
                assert_eq!((p.source.as_str(), p.sample_time), ("gps", 1_700_000_000));
            }
            _ => panic!("not a position"),
        }
    }

    #[test]
    fn what_cannot_be_placed_is_unknown_or_read_back() {
        for payload in [
            "",
            "not json",
            "[]",
            r#"{"t": "devices"}"#,
            r#"{"t": "gadgets", "k": "1"}"#,
            r#"{"k": "1"}"#,
        ] {
            assert!(
                matches!(notice(payload).change, Change::Unknown),
                "{payload:?}"
            );
        }
        // A position without its fields: the device is read back.
        let n = notice(r#"{"t": "positions", "k": "7", "lon": "east"}"#);
        assert!(matches!(n.change, Change::Device(ref k) if k == "7"));
        assert_eq!(n.at_ms, 0);
    }
}

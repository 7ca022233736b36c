//! The SQLite backend: a file (WAL, `synchronous=FULL`, a busy timeout of
//! [`BUSY_TIMEOUT`]) or a private in-memory database.
//!
//! A file database has two connections, each behind a mutex: one for the
//! engine's writes (the writer), one for everything else (the admin API);
//! an in-memory database has only one (a second connection would be a
//! second, empty database).

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use coapgate_bootstrap::{PskRecord, PskUpdate};
use coapgate_location::Position;
use coapgate_model::{Device, Iccid};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use zeroize::Zeroizing;

use crate::backend::{
    Backend, ChangeFeed, DeviceRow, PskRow, RawDevice, RawPosition, RawPsk, RawTemplate, Rows,
    Snapshot, epoch_ms, parse_iccid, sample_time,
};
use crate::error::Context;
use crate::psk::restore;
use crate::{BUSY_TIMEOUT, POSITIONS_KEPT, Put, SCHEMA_VERSION, StoreError, TemplateStatus};

pub(crate) struct Sqlite {
    conn: Mutex<Connection>,
    /// A file database's connection for the engine's writes.
    writer: Option<Mutex<Connection>>,
}

impl Sqlite {
    /// Opens (creating and migrating) a database; `None` is in memory.
    /// Returns the schema version found.
    pub(crate) fn open(path: Option<&Path>) -> Result<(Self, u32), StoreError> {
        let mut conn = match path {
            None => Connection::open_in_memory().context("open an in-memory database")?,
            Some(path) => open_file(path)?,
        };
        conn.pragma_update(None, "foreign_keys", true)
            .context("enable foreign keys")?;
        let found = migrate(&mut conn)?;
        let writer = match path {
            None => None,
            Some(path) => {
                let writer = open_file(path)?;
                writer
                    .pragma_update(None, "foreign_keys", true)
                    .context("enable foreign keys")?;
                Some(Mutex::new(writer))
            }
        };
        let db = Sqlite {
            conn: Mutex::new(conn),
            writer,
        };
        Ok((db, found))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped any open transaction, which
        // rolled it back; the connection itself is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection of the engine's writes: a file database's own second
    /// connection, an in-memory database's only one.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer
            .as_ref()
            .unwrap_or(&self.conn)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let failed = |source: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        source: Box::new(source),
    };
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    // The first statement that reads the file: "not a database" shows here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(failed)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, path = %path.display(), "WAL mode not available");
    }
    Ok(conn)
}

fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .context("read the schema version")
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it was at.
fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in crate::schema::SQLITE
        .iter()
        .enumerate()
        .skip(found as usize)
    {
        let to = index as u32 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start a migration")?;
        // Another process may have migrated while we waited for the lock.
        if user_version(&tx)? >= to {
            continue;
        }
        tx.execute_batch(sql).context("apply a schema migration")?;
        tx.pragma_update(None, "user_version", to)
            .context("record the schema version")?;
        tx.commit().context("commit a schema migration")?;
        tracing::info!(version = to, "store schema migrated");
    }
    Ok(found)
}

const COLUMNS: &str = "iccid, imsi, ip, status, name";

/// A TEXT column, borrowed.
fn text<'r>(row: &'r Row<'_>, column: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(column)?.as_str()?)
}

/// A TEXT column that may be NULL, borrowed.
fn optional_text<'r>(row: &'r Row<'_>, column: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(row.get_ref(column)?.as_str_or_null()?)
}

fn raw_device(row: &Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok(RawDevice {
        iccid: row.get(0)?,
        imsi: row.get(1)?,
        ip: row.get(2)?,
        status: row.get(3)?,
        name: row.get(4)?,
    })
}

fn is_ip_conflict(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg.contains("devices.ip")
    )
}

fn device_exists(tx: &Connection, iccid: &Iccid) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM devices WHERE iccid = ?1",
            [iccid.as_str()],
            |_| Ok(()),
        )
        .optional()
        .context("look a device up")?
        .is_some())
}

fn read_psk(conn: &Connection, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
    let row = conn
        .query_row(
            "SELECT secret, origin, last_bootstrap_ms FROM psks WHERE iccid = ?1",
            [iccid.as_str()],
            |row| {
                Ok(RawPsk {
                    iccid: iccid.to_string(),
                    secret: Zeroizing::new(row.get(0)?),
                    origin: row.get(1)?,
                    last_bootstrap_ms: row.get(2)?,
                })
            },
        )
        .optional()
        .context("read a PSK")?;
    row.as_ref().map(restore).transpose()
}

fn write_psk(tx: &Transaction<'_>, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO psks (iccid, secret, origin, last_bootstrap_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (iccid) DO UPDATE SET secret = ?2, origin = ?3, last_bootstrap_ms = ?4, updated_ms = ?5",
        params![
            iccid.as_str(),
            record.psk.expose(),
            record.origin.as_str(),
            record.last_bootstrap.map(epoch_ms),
            epoch_ms(std::time::SystemTime::now()),
        ],
    )
    .context("write a PSK")?;
    Ok(())
}

fn insert_position(conn: &Connection, iccid: &Iccid, p: &Position) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO positions (iccid, sample_time, longitude, latitude, source) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            iccid.as_str(),
            sample_time(p),
            p.longitude(),
            p.latitude(),
            p.source()
        ],
    )
    .context("write a position")?;
    conn.execute(
        "DELETE FROM positions WHERE iccid = ?1 AND rowid NOT IN
           (SELECT rowid FROM positions WHERE iccid = ?1 ORDER BY sample_time DESC, rowid DESC LIMIT ?2)",
        params![iccid.as_str(), POSITIONS_KEPT as i64],
    )
    .context("trim positions")?;
    Ok(())
}

fn query_all<T>(
    conn: &Connection,
    sql: &str,
    context: &'static str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).context(context)?;
    let rows = stmt.query_map([], map).context(context)?;
    rows.map(|row| row.context(context)).collect()
}

impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .context("ping the database")
    }

    fn snapshot(&self, rows: &mut dyn Rows) -> Result<Snapshot, StoreError> {
        let mut conn = self.conn();
        // One read transaction: the views agree with each other.
        let tx = conn.transaction().context("start loading the views")?;
        let (devices, psks): (i64, i64) = tx
            .query_row(
                "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM psks)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .context("count devices")?;
        rows.expect(
            usize::try_from(devices).unwrap_or(0),
            usize::try_from(psks).unwrap_or(0),
        );
        // Each row is handed over borrowed from SQLite's buffers: no string
        // is allocated per row.
        {
            const CONTEXT: &str = "load devices";
            let mut stmt = tx
                .prepare(&format!("SELECT {COLUMNS} FROM devices"))
                .context(CONTEXT)?;
            let mut found = stmt.query([]).context(CONTEXT)?;
            while let Some(row) = found.next().context(CONTEXT)? {
                rows.device(DeviceRow {
                    iccid: text(row, 0).context(CONTEXT)?,
                    imsi: optional_text(row, 1).context(CONTEXT)?,
                    ip: text(row, 2).context(CONTEXT)?,
                    status: text(row, 3).context(CONTEXT)?,
                    name: optional_text(row, 4).context(CONTEXT)?,
                })?;
            }
        }
        {
            const CONTEXT: &str = "load PSKs";
            let mut stmt = tx
                .prepare("SELECT iccid, secret, origin, last_bootstrap_ms FROM psks")
                .context(CONTEXT)?;
            let mut found = stmt.query([]).context(CONTEXT)?;
            while let Some(row) = found.next().context(CONTEXT)? {
                rows.psk(PskRow {
                    iccid: text(row, 0).context(CONTEXT)?,
                    secret: text(row, 1).context(CONTEXT)?,
                    origin: text(row, 2).context(CONTEXT)?,
                    last_bootstrap_ms: row.get(3).context(CONTEXT)?,
                })?;
            }
        }
        // SQLite takes the bare columns from the row holding the MAX.
        let latest = query_all(
            &tx,
            "SELECT iccid, longitude, latitude, source, MAX(sample_time) FROM positions GROUP BY iccid",
            "load positions",
            |row| {
                Ok(RawPosition {
                    iccid: row.get(0)?,
                    longitude: row.get(1)?,
                    latitude: row.get(2)?,
                    source: row.get(3)?,
                    sample_time: row.get(4)?,
                })
            },
        )?;
        let registered = query_all(
            &tx,
            "SELECT iccid FROM registrations",
            "load registrations",
            |row| row.get(0),
        )?;
        let template = tx
            .query_row(
                "SELECT name, template, status FROM templates WHERE protocol = 'COAP'",
                [],
                |row| {
                    Ok(RawTemplate {
                        name: row.get(0)?,
                        text: row.get(1)?,
                        status: row.get(2)?,
                    })
                },
            )
            .optional()
            .context("load the template")?;
        tx.finish().context("finish loading the views")?;
        Ok(Snapshot {
            devices: Vec::new(),
            psks: Vec::new(),
            latest,
            registered,
            template,
        })
    }

    fn put_device(&self, device: &Device) -> Result<Put, StoreError> {
        let ip = device.ip.to_string();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a device")?;
        let exists = device_exists(&tx, &device.iccid)?;
        let values = params![
            device.iccid.as_str(),
            device.imsi.as_ref().map(|imsi| imsi.as_str()),
            ip,
            device.status.as_str(),
            device.name,
        ];
        let written = if exists {
            tx.execute(
                "UPDATE devices SET imsi = ?2, ip = ?3, status = ?4, name = ?5 WHERE iccid = ?1",
                values,
            )
        } else {
            tx.execute(
                &format!("INSERT INTO devices ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                values,
            )
        };
        match written {
            Ok(_) => {}
            Err(e) if is_ip_conflict(&e) => {
                let holder: String = tx
                    .query_row("SELECT iccid FROM devices WHERE ip = ?1", [&ip], |row| {
                        row.get(0)
                    })
                    .context("find the device holding an address")?;
                let iccid = parse_iccid(&holder, "iccid")?;
                return Err(StoreError::IpInUse { iccid });
            }
            Err(e) => return Err(e).context("write a device"),
        }
        tx.commit().context("commit a device")?;
        Ok(if exists { Put::Replaced } else { Put::Created })
    }

    fn device(&self, iccid: &Iccid) -> Result<Option<RawDevice>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE iccid = ?1"),
                [iccid.as_str()],
                raw_device,
            )
            .optional()
            .context("read a device")
    }

    fn remove_device(&self, iccid: &Iccid) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM devices WHERE iccid = ?1", [iccid.as_str()])
            .context("remove a device")?
            > 0)
    }

    fn devices(&self, limit: u32, offset: i64) -> Result<Vec<RawDevice>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM devices ORDER BY iccid LIMIT ?1 OFFSET ?2"
            ))
            .context("list devices")?;
        let rows = stmt
            .query_map(params![limit, offset], raw_device)
            .context("list devices")?;
        rows.map(|raw| raw.context("list devices")).collect()
    }

    fn psk(&self, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
        read_psk(&self.conn(), iccid)
    }

    fn set_psk(&self, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a PSK")?;
        if !device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        write_psk(&tx, iccid, record)?;
        tx.commit().context("commit a PSK")
    }

    fn bootstrap(&self, update: &PskUpdate) -> Result<(Option<PskRecord>, PskRecord), StoreError> {
        let iccid = &update.iccid;
        let mut conn = self.writer();
        // IMMEDIATE: the write lock is taken before the read, so no other
        // connection writes between this read and this write.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start updating a PSK")?;
        if !device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        let current = read_psk(&tx, iccid)?;
        let next = update.apply(current.as_ref());
        write_psk(&tx, iccid, &next)?;
        tx.commit().context("commit a PSK")?;
        Ok((current, next))
    }

    fn put_position(&self, iccid: &Iccid, position: &Position) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a position")?;
        if !device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        insert_position(&tx, iccid, position)?;
        tx.commit().context("commit a position")
    }

    fn positions(&self, iccid: &Iccid) -> Result<Vec<RawPosition>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT longitude, latitude, source, sample_time FROM positions
                 WHERE iccid = ?1 ORDER BY sample_time DESC, rowid DESC",
            )
            .context("list positions")?;
        let rows = stmt
            .query_map([iccid.as_str()], |row| {
                Ok(RawPosition {
                    iccid: iccid.to_string(),
                    longitude: row.get(0)?,
                    latitude: row.get(1)?,
                    source: row.get(2)?,
                    sample_time: row.get(3)?,
                })
            })
            .context("list positions")?;
        rows.map(|row| row.context("list positions")).collect()
    }

    fn write_positions(&self, queued: &[(Iccid, Position)]) -> Result<usize, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing positions")?;
        let mut written = 0;
        for (iccid, position) in queued {
            if device_exists(&tx, iccid)? {
                insert_position(&tx, iccid, position)?;
                written += 1;
            }
        }
        tx.commit().context("commit positions")?;
        Ok(written)
    }

    fn mark_registered(&self, iccid: &Iccid, at_ms: i64) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT INTO registrations (iccid, registered_ms) SELECT ?1, ?2
                 WHERE EXISTS (SELECT 1 FROM devices WHERE iccid = ?1)
                 ON CONFLICT (iccid) DO NOTHING",
                params![iccid.as_str(), at_ms],
            )
            .context("record a registration")?;
        Ok(())
    }

    fn set_template(
        &self,
        name: &str,
        text: &str,
        status: TemplateStatus,
        updated_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO templates (protocol, name, template, status, updated_ms) VALUES ('COAP', ?1, ?2, ?3, ?4)
                 ON CONFLICT (protocol) DO UPDATE SET name = ?1, template = ?2, status = ?3, updated_ms = ?4",
                params![name, text, status.as_str(), updated_ms],
            )
            .context("write the template")?;
        Ok(())
    }

    fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }
}

//! Positions (spec.md §2.5) and first-time registrations (spec.md §2.3).
//!
//! Positions from templates arrive with telemetry, on the hot path, so
//! [`PositionStore::record`] only updates memory and queues the row;
//! [`Store::flush_positions`] writes the queue in one transaction (the
//! server calls it every second and at shutdown). A crash loses at most the
//! queued positions, which were also published as LOCATION events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use coapgate_location::{Position, PositionStore};
use coapgate_model::{Iccid, Registrations, epoch_millis};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::error::Context;
use crate::{Store, StoreError};

/// How many positions per device the database keeps (newest first).
pub const POSITIONS_KEPT: usize = 100;

/// Latest positions and registrations in memory, plus the queue of
/// positions not yet written.
#[derive(Default)]
pub(crate) struct Tracking {
    latest: RwLock<HashMap<Iccid, Position>>,
    queue: Mutex<Vec<(Iccid, Position)>>,
    registered: RwLock<std::collections::HashSet<Iccid>>,
}

fn corrupt(key: &str, why: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("position: {why}"),
    }
}

impl Tracking {
    pub(crate) fn load(conn: &Connection) -> Result<Arc<Self>, StoreError> {
        let tracking = Self::default();
        let mut stmt = conn
            .prepare(
                "SELECT iccid, longitude, latitude, source, MAX(sample_time) FROM positions GROUP BY iccid",
            )
            .context("load positions")?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, f64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .context("load positions")?;
        let mut latest = HashMap::new();
        for row in rows {
            let (iccid, lon, lat, source, time) = row.context("load positions")?;
            let position = Position::new(lon, lat, &source, u64::try_from(time).unwrap_or(0))
                .map_err(|e| corrupt(&iccid, &e))?;
            latest.insert(iccid.parse().map_err(|e| corrupt(&iccid, &e))?, position);
        }
        *tracking
            .latest
            .write()
            .unwrap_or_else(PoisonError::into_inner) = latest;
        let mut stmt = conn
            .prepare("SELECT iccid FROM registrations")
            .context("load registrations")?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .context("load registrations")?;
        let mut registered = std::collections::HashSet::new();
        for row in rows {
            let iccid = row.context("load registrations")?;
            registered.insert(iccid.parse().map_err(|e| corrupt(&iccid, &e))?);
        }
        *tracking
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = registered;
        Ok(Arc::new(tracking))
    }

    fn remember(&self, iccid: &Iccid, position: &Position) {
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        let newer = latest
            .get(iccid)
            .is_none_or(|p| p.sample_time() <= position.sample_time());
        if newer {
            latest.insert(iccid.clone(), position.clone());
        }
    }

    pub(crate) fn forget(&self, iccid: &Iccid) {
        self.latest
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(iccid);
        self.registered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(iccid);
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(i, _)| i != iccid);
    }
}

fn insert(conn: &Connection, iccid: &Iccid, p: &Position) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO positions (iccid, sample_time, longitude, latitude, source) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            iccid.as_str(),
            i64::try_from(p.sample_time()).unwrap_or(i64::MAX),
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

impl Store {
    /// Writes an operator's position (a cell-tower fix, …) at once.
    /// [`StoreError::UnknownDevice`] when the device does not exist.
    pub fn put_position(&self, iccid: &Iccid, position: &Position) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a position")?;
        if !crate::psk::device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        insert(&tx, iccid, position)?;
        tx.commit().context("commit a position")?;
        self.inner.tracking.remember(iccid, position);
        Ok(())
    }

    /// The device's stored positions, newest first (at most
    /// [`POSITIONS_KEPT`]), queued ones included.
    pub fn positions(&self, iccid: &Iccid) -> Result<Vec<Position>, StoreError> {
        self.flush_positions()?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT longitude, latitude, source, sample_time FROM positions
                 WHERE iccid = ?1 ORDER BY sample_time DESC, rowid DESC",
            )
            .context("list positions")?;
        let rows = stmt
            .query_map([iccid.as_str()], |row| {
                Ok((
                    row.get::<_, f64>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .context("list positions")?;
        rows.map(|row| {
            let (lon, lat, source, time) = row.context("list positions")?;
            Position::new(lon, lat, &source, u64::try_from(time).unwrap_or(0))
                .map_err(|e| corrupt(iccid.as_str(), &e))
        })
        .collect()
    }

    /// Writes the queued positions in one transaction; returns how many.
    /// Positions of devices removed meanwhile are dropped.
    pub fn flush_positions(&self) -> Result<usize, StoreError> {
        let queued = std::mem::take(
            &mut *self
                .inner
                .tracking
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if queued.is_empty() {
            return Ok(0);
        }
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing positions")?;
        let mut written = 0;
        for (iccid, position) in &queued {
            if crate::psk::device_exists(&tx, iccid)? {
                insert(&tx, iccid, position)?;
                written += 1;
            }
        }
        tx.commit().context("commit positions")?;
        Ok(written)
    }
}

impl PositionStore for Store {
    fn latest(&self, iccid: &Iccid) -> Option<Position> {
        self.inner
            .tracking
            .latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(iccid)
            .cloned()
    }

    fn record(&self, iccid: &Iccid, position: Position) {
        self.inner.tracking.remember(iccid, &position);
        self.inner
            .tracking
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((iccid.clone(), position));
    }
}

impl Registrations for Store {
    fn is_registered(&self, iccid: &Iccid) -> bool {
        self.inner
            .tracking
            .registered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(iccid)
    }
}

impl Store {
    /// Records, durably and on the writer connection, that the device's
    /// first-time registration event was published; from then on
    /// [`Registrations::is_registered`] says so. Recording a device twice,
    /// or one removed meanwhile, changes nothing.
    pub fn mark_registered(&self, iccid: &Iccid, at: SystemTime) -> Result<(), StoreError> {
        let at_ms = epoch_millis(at);
        self.writer()
            .execute(
                "INSERT INTO registrations (iccid, registered_ms) SELECT ?1, ?2
                 WHERE EXISTS (SELECT 1 FROM devices WHERE iccid = ?1)
                 ON CONFLICT (iccid) DO NOTHING",
                params![iccid.as_str(), at_ms],
            )
            .context("record a registration")?;
        self.inner
            .tracking
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iccid.clone());
        Ok(())
    }
}

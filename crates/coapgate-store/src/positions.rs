//! Positions (spec.md §2.5) and first-time registrations (spec.md §2.3).
//!
//! Positions from templates arrive with telemetry, on the hot path, so
//! [`PositionStore::record`] only updates memory and queues the row;
//! [`Store::flush_positions`] writes the queue in one transaction (the
//! server calls it every second and at shutdown). A crash loses at most the
//! queued positions, which were also published as LOCATION events.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use coapgate_location::{Position, PositionStore};
use coapgate_model::{Iccid, Registrations};

use crate::backend::{RawPosition, epoch_ms, parse_iccid};
use crate::{Store, StoreError};

/// How many positions per device the database keeps (newest first).
pub const POSITIONS_KEPT: usize = 100;

/// Latest positions and registrations in memory, plus the queue of
/// positions not yet written.
#[derive(Default)]
pub(crate) struct Tracking {
    latest: RwLock<HashMap<Iccid, Position>>,
    queue: Mutex<Vec<(Iccid, Position)>>,
    registered: RwLock<HashSet<Iccid>>,
}

/// What [`Tracking::parse`] read.
pub(crate) struct Loaded {
    latest: HashMap<Iccid, Position>,
    registered: HashSet<Iccid>,
}

impl Tracking {
    /// The latest positions and the registrations of stored rows (at open
    /// and resync).
    pub(crate) fn parse(
        latest_rows: Vec<RawPosition>,
        registered_rows: &[String],
    ) -> Result<Loaded, StoreError> {
        let mut latest = HashMap::with_capacity(latest_rows.len());
        for row in latest_rows {
            let iccid = parse_iccid(&row.iccid, "position")?;
            latest.insert(iccid, row.into_position()?);
        }
        let mut registered = HashSet::with_capacity(registered_rows.len());
        for iccid in registered_rows {
            registered.insert(parse_iccid(iccid, "registration")?);
        }
        Ok(Loaded { latest, registered })
    }

    /// Replaces the latest positions and the registrations; the queue is
    /// kept.
    pub(crate) fn replace(&self, loaded: Loaded) {
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = loaded.latest;
        *self
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded.registered;
    }

    /// Adds what was read back for some devices (following another
    /// process's writes): a newer position replaces the one held, a
    /// registration is added.
    pub(crate) fn merge(&self, loaded: Loaded) {
        for (iccid, position) in &loaded.latest {
            self.remember(iccid, position);
        }
        self.registered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(loaded.registered);
    }

    /// A position another process added, if newer than the one held.
    pub(crate) fn remember_raw(&self, raw: &RawPosition) -> Result<(), StoreError> {
        let iccid = parse_iccid(&raw.iccid, "position")?;
        self.remember(&iccid, &raw.clone().into_position()?);
        Ok(())
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

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<(Iccid, Position)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.queue().retain(|(i, _)| i != iccid);
    }
}

impl Store {
    /// Writes an operator's position (a cell-tower fix, …) at once.
    /// [`StoreError::UnknownDevice`] when the device does not exist.
    pub fn put_position(&self, iccid: &Iccid, position: &Position) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.inner.db.put_position(iccid, position)?;
        self.inner.tracking.remember(iccid, position);
        Ok(())
    }

    /// The device's stored positions, newest first (at most
    /// [`POSITIONS_KEPT`]), queued ones included.
    pub fn positions(&self, iccid: &Iccid) -> Result<Vec<Position>, StoreError> {
        self.flush_positions()?;
        self.inner
            .db
            .positions(iccid)?
            .into_iter()
            .map(RawPosition::into_position)
            .collect()
    }

    /// Writes the queued positions in one transaction; returns how many.
    /// Positions of devices removed meanwhile are dropped. When the database
    /// is busy or unreachable ([`StoreError::is_transient`]) the positions
    /// go back to the queue for the next flush.
    pub fn flush_positions(&self) -> Result<usize, StoreError> {
        let queued = std::mem::take(&mut *self.inner.tracking.queue());
        if queued.is_empty() {
            return Ok(0);
        }
        match self.inner.db.write_positions(&queued) {
            Ok(written) => Ok(written),
            Err(e) => {
                if e.is_transient() {
                    let mut queue = self.inner.tracking.queue();
                    let newer = std::mem::replace(&mut *queue, queued);
                    queue.extend(newer);
                }
                Err(e)
            }
        }
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
        self.inner.tracking.queue().push((iccid.clone(), position));
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
        let _writing = self.writing();
        self.inner.db.mark_registered(iccid, epoch_ms(at))?;
        self.inner
            .tracking
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iccid.clone());
        Ok(())
    }
}

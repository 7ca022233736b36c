//! What a database backend does for the store, and the rows it hands back.
//!
//! Each backend ([`crate::sqlite`], `crate::postgres`) holds its own SQL and
//! connections and implements [`Backend`]; everything above it — the
//! in-memory views, validation of stored rows, the PSK policy — is shared
//! and lives in `lib.rs`, `psk.rs`, `positions.rs` and `templates.rs`.
//! Rows come back raw (text as stored) and are validated by the shared code,
//! so a damaged row is reported the same way on every backend.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use coapgate_bootstrap::{PskRecord, PskUpdate};
use coapgate_location::Position;
use coapgate_model::{Device, Iccid};
use zeroize::Zeroizing;

use crate::{Put, StoreError, TemplateStatus, canonical_ip};

/// One database behind a [`Store`](crate::Store).
///
/// Every method blocks. "Writer" methods are the engine's writes
/// ([`bootstrap`](Self::bootstrap), [`write_positions`](Self::write_positions),
/// [`mark_registered`](Self::mark_registered)): a backend runs them on
/// connections of their own, so an operator's query never delays a device
/// and the reverse.
pub(crate) trait Backend: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn name(&self) -> &'static str;
    /// One trivial round trip.
    fn ping(&self) -> Result<(), StoreError>;
    /// Every row the in-memory views are built from, read consistently:
    /// the devices and PSKs handed to `rows` one at a time (a million rows
    /// never sit in memory at once as strings), the rest returned (its
    /// `devices` and `psks` empty).
    fn snapshot(&self, rows: &mut dyn Rows) -> Result<Snapshot, StoreError>;

    /// Creates or replaces a device (its `ip` already canonical);
    /// [`StoreError::IpInUse`] when another device has the address.
    fn put_device(&self, device: &Device) -> Result<Put, StoreError>;
    fn device(&self, iccid: &Iccid) -> Result<Option<RawDevice>, StoreError>;
    /// Removes a device and (by cascade) its PSK, positions, registration.
    fn remove_device(&self, iccid: &Iccid) -> Result<bool, StoreError>;
    /// Devices ordered by ICCID (byte-wise), `limit` from `offset`.
    fn devices(&self, limit: u32, offset: i64) -> Result<Vec<RawDevice>, StoreError>;

    fn psk(&self, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError>;
    /// [`StoreError::UnknownDevice`] when the device does not exist; ordered
    /// with a concurrent [`bootstrap`](Self::bootstrap) of the same device.
    fn set_psk(&self, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError>;
    /// Writer. One atomic read-apply-write of the device's PSK record:
    /// returns the record read and the one stored. Two calls for one device
    /// at the same moment — from this process or another on the same
    /// database — are ordered: the second reads what the first wrote.
    fn bootstrap(&self, update: &PskUpdate) -> Result<(Option<PskRecord>, PskRecord), StoreError>;

    /// Stores an operator's position at once (trimming the device's history
    /// to [`POSITIONS_KEPT`](crate::POSITIONS_KEPT));
    /// [`StoreError::UnknownDevice`] when the device does not exist.
    fn put_position(&self, iccid: &Iccid, position: &Position) -> Result<(), StoreError>;
    /// The device's positions, newest first.
    fn positions(&self, iccid: &Iccid) -> Result<Vec<RawPosition>, StoreError>;
    /// Writer. Stores queued positions in one transaction, dropping those of
    /// devices that no longer exist; returns how many were stored.
    fn write_positions(&self, queued: &[(Iccid, Position)]) -> Result<usize, StoreError>;
    /// Writer. Records a first-time registration; a second one, or one of a
    /// device removed meanwhile, changes nothing.
    fn mark_registered(&self, iccid: &Iccid, at_ms: i64) -> Result<(), StoreError>;

    /// Stores the CoAP template (the JSON text), replacing any other.
    fn set_template(
        &self,
        name: &str,
        text: &str,
        status: TemplateStatus,
        updated_ms: i64,
    ) -> Result<(), StoreError>;

    /// A new connection that receives the changes other processes commit
    /// from now on; `None` for a database only this process writes
    /// (SQLite).
    fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError>;
}

/// Changes committed to a shared database, as they are announced, and the
/// rows they touched, read on the same connection.
pub(crate) trait ChangeFeed: Send {
    /// Waits up to `timeout` for announcements, then returns every one that
    /// has arrived (none when the time ran out). [`StoreError::Busy`] when
    /// the connection is lost: announcements may have been missed.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<Notice>, StoreError>;
    /// The rows of these devices (a device missing from the answer is
    /// gone) and, when `template`, the template; `latest` holds each
    /// device's newest position.
    fn read(&mut self, iccids: &[String], template: bool) -> Result<Snapshot, StoreError>;
    /// One round trip, to find a dead connection while nothing is announced.
    fn ping(&mut self) -> Result<(), StoreError>;
}

/// One announced change.
pub(crate) struct Notice {
    pub change: Change,
    /// When it was made, epoch milliseconds by the database's clock.
    pub at_ms: i64,
}

/// What changed.
pub(crate) enum Change {
    /// A device's row, PSK or registration: read the device back.
    Device(String),
    /// A position was added; it is all a receiver needs.
    Position(RawPosition),
    /// The template.
    Template,
    /// An announcement this build does not understand (a newer schema's):
    /// read everything back.
    Unknown,
}

/// Receives the device and PSK rows of a full load
/// ([`Backend::snapshot`]), borrowed from the database's buffers.
pub(crate) trait Rows {
    /// How many rows of each are coming (to size the tables once).
    fn expect(&mut self, devices: usize, psks: usize);
    /// One `devices` row; an error stops the load.
    fn device(&mut self, row: DeviceRow<'_>) -> Result<(), StoreError>;
    /// One `psks` row; an error stops the load.
    fn psk(&mut self, row: PskRow<'_>) -> Result<(), StoreError>;
}

/// A `devices` row as stored, borrowed, before validation.
pub(crate) struct DeviceRow<'a> {
    pub iccid: &'a str,
    pub imsi: Option<&'a str>,
    pub ip: &'a str,
    pub status: &'a str,
    pub name: Option<&'a str>,
}

/// A `psks` row as stored, borrowed, before validation.
pub(crate) struct PskRow<'a> {
    pub iccid: &'a str,
    pub secret: &'a str,
    pub origin: &'a str,
    pub last_bootstrap_ms: Option<i64>,
}

/// Every row the in-memory views hold, as stored.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub devices: Vec<RawDevice>,
    pub psks: Vec<RawPsk>,
    /// Each device's newest position (by sample time).
    pub latest: Vec<RawPosition>,
    pub registered: Vec<String>,
    pub template: Option<RawTemplate>,
}

/// A `devices` row as stored, before validation.
pub(crate) struct RawDevice {
    pub iccid: String,
    pub imsi: Option<String>,
    pub ip: String,
    pub status: String,
    pub name: Option<String>,
}

/// A `psks` row as stored, before validation.
pub(crate) struct RawPsk {
    pub iccid: String,
    pub secret: Zeroizing<String>,
    pub origin: String,
    pub last_bootstrap_ms: Option<i64>,
}

/// A `positions` row as stored, before validation.
#[derive(Clone)]
pub(crate) struct RawPosition {
    pub iccid: String,
    pub longitude: f64,
    pub latitude: f64,
    pub source: String,
    pub sample_time: i64,
}

/// The `templates` row of CoAP, as stored.
pub(crate) struct RawTemplate {
    pub name: String,
    pub text: String,
    pub status: String,
}

impl RawDevice {
    pub(crate) fn into_device(self) -> Result<Device, StoreError> {
        self.row().to_device()
    }

    pub(crate) fn row(&self) -> DeviceRow<'_> {
        DeviceRow {
            iccid: &self.iccid,
            imsi: self.imsi.as_deref(),
            ip: &self.ip,
            status: &self.status,
            name: self.name.as_deref(),
        }
    }
}

impl DeviceRow<'_> {
    /// The device, validated; [`StoreError::Corrupt`] names the field.
    pub(crate) fn to_device(&self) -> Result<Device, StoreError> {
        let corrupt = |field: &str, why: &dyn fmt::Display| StoreError::Corrupt {
            key: self.iccid.to_owned(),
            reason: format!("{field}: {why}"),
        };
        let iccid = self.iccid.parse().map_err(|e| corrupt("iccid", &e))?;
        let imsi = match self.imsi {
            Some(imsi) => Some(imsi.parse().map_err(|e| corrupt("imsi", &e))?),
            None => None,
        };
        let ip: IpAddr = self.ip.parse().map_err(|e| corrupt("ip", &e))?;
        let status = self.status.parse().map_err(|e| corrupt("status", &e))?;
        Ok(Device {
            iccid,
            imsi,
            ip: canonical_ip(ip),
            status,
            name: self.name.map(str::to_owned),
        })
    }
}

impl RawPsk {
    pub(crate) fn row(&self) -> PskRow<'_> {
        PskRow {
            iccid: &self.iccid,
            secret: &self.secret,
            origin: &self.origin,
            last_bootstrap_ms: self.last_bootstrap_ms,
        }
    }
}

impl RawPosition {
    pub(crate) fn into_position(self) -> Result<Position, StoreError> {
        // Never written negative; a corrupted negative value reads as 1970.
        let time = u64::try_from(self.sample_time).unwrap_or(0);
        Position::new(self.longitude, self.latitude, &self.source, time).map_err(|e| {
            StoreError::Corrupt {
                key: self.iccid.clone(),
                reason: format!("position: {e}"),
            }
        })
    }
}

/// The stored time of a position (epoch seconds, saturating).
pub(crate) fn sample_time(position: &Position) -> i64 {
    i64::try_from(position.sample_time()).unwrap_or(i64::MAX)
}

/// An ICCID read back from a row that references a device.
pub(crate) fn parse_iccid(key: &str, what: &str) -> Result<Iccid, StoreError> {
    key.parse().map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("{what}: {e}"),
    })
}

/// Epoch milliseconds as stored (a signed 64-bit column on every backend;
/// `epoch_millis` never exceeds `i64::MAX`).
pub(crate) fn epoch_ms(time: std::time::SystemTime) -> i64 {
    i64::try_from(coapgate_model::epoch_millis(time)).unwrap_or(i64::MAX)
}

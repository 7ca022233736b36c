//! The coapgate device registry and PSK records: SQLite by default, in
//! memory for tests.
//!
//! The endpoint identifies a device by the source IP of its SIM on every
//! datagram (spec.md §2.1 step 3), so that lookup never touches the database:
//! [`Store::directory`] hands out a [`DeviceView`], an in-memory map that
//! implements [`coapgate_model::DeviceDirectory`]. Writes (the admin API of
//! spec.md §6, the `[[device]]` seeding of §7) go to the database first and
//! then update the view, before the write call returns.
//!
//! ```
//! use coapgate_model::{Device, DeviceDirectory, DeviceStatus};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = coapgate_store::open("memory://")?;
//! let view = store.directory();
//! store.put_device(Device {
//!     iccid: "8988280666000000000".parse()?,
//!     imsi: Some("901405100000000".parse()?),
//!     ip: "10.0.0.7".parse()?,
//!     status: DeviceStatus::Active,
//!     name: None,
//! })?;
//! // A dual-stack socket reports the IPv4 peer as ::ffff:10.0.0.7.
//! let found = view.by_ip("::ffff:10.0.0.7".parse()?).expect("registered");
//! assert_eq!(found.iccid.as_str(), "8988280666000000000");
//! # Ok(()) }
//! ```
//!
//! PSK records (spec.md §2.4) live in the same database.
//! [`Store::bootstrap`] applies a `/bootstrap` call's
//! [`PskUpdate`](coapgate_bootstrap::PskUpdate) in one atomic
//! read-decide-write, and [`Store::psk_keys`] hands out [`PskKeys`], the
//! in-memory DTLS keys by identity that a handshake reads.
//!
//! # Backends and URLs
//!
//! [`open`] takes the `[store] url` of the configuration:
//!
//! | URL | database |
//! |---|---|
//! | `sqlite://coapgate.db` | the file `coapgate.db` relative to the process's working directory |
//! | `sqlite:///var/lib/coapgate.db` | the absolute path `/var/lib/coapgate.db` |
//! | `sqlite::memory:`, `memory://` | a private in-memory SQLite database; nothing is persisted |
//! | `postgres://…` | planned; [`StoreError::Unsupported`] for now |
//!
//! The in-memory store is the same code on SQLite's `:memory:` database, so
//! tests exercise exactly what production runs. File databases use WAL
//! journaling, SQLite's default `synchronous=FULL` (a write that returned is
//! on disk), and a busy timeout of [`BUSY_TIMEOUT`]. The parent directory
//! must exist; it is not created. One coapgate process owns a database:
//! another process writing to it would not update this process's view.
//!
//! # Addresses
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address
//! `a.b.c.d` ([`canonical_ip`]): a device written with a mapped address is
//! stored, returned and found under the IPv4 address, and a lookup with a
//! mapped address finds the IPv4 device. One address belongs to at most one
//! device; the database enforces it with a UNIQUE index, and a write that
//! would break it fails with [`StoreError::IpInUse`] and changes nothing.
//!
//! # Blocking
//!
//! Every [`Store`] method is synchronous and may wait for the database
//! (a disk write, or up to [`BUSY_TIMEOUT`] for a lock, then
//! [`StoreError::Busy`]). Never call one on an event loop: from async code
//! use `tokio::task::spawn_blocking` or a thread of its own (the server runs
//! the engine's writes on a writer thread). The in-memory views —
//! [`DeviceView`], [`PskKeys`], registrations, latest positions, the active
//! template — never wait for the database and are what the hot path reads.
//! A file database has two connections: one for the engine's writes, one
//! for everything else (the admin API).
//!
//! # Schema
//!
//! Versioned migrations are embedded in the crate (`migrations/NNNN_*.sql`)
//! and tracked in `PRAGMA user_version`; [`open`] applies the missing ones, so
//! later features (PSKs, positions, templates, a first-seen flag) arrive as
//! additive migrations. A database from a newer build is refused
//! ([`StoreError::SchemaTooNew`]). Foreign keys are enforced.

#![forbid(unsafe_code)]

mod error;
mod positions;
mod psk;
mod schema;
mod templates;
mod url;
mod view;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use coapgate_model::{Device, Iccid};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

pub use error::{BoxError, StoreError};
pub use positions::POSITIONS_KEPT;
pub use psk::PskKeys;
pub use schema::SCHEMA_VERSION;
pub use templates::{TemplateRecord, TemplateStatus};
pub use view::{DeviceView, canonical_ip};

use error::Context;
use url::Location;

/// How long a file database waits for a lock held by another connection
/// before a call fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating and migrating if needed) the store a URL names, and loads
/// every device into the view.
///
/// See the [crate documentation](crate#backends-and-urls) for the URLs.
/// Errors: [`StoreError::InvalidUrl`] (naming the URL, any password
/// redacted), [`StoreError::Unsupported`] for `postgres://`,
/// [`StoreError::Open`], [`StoreError::SchemaTooNew`],
/// [`StoreError::Corrupt`], [`StoreError::Database`].
pub fn open(url: &str) -> Result<Store, StoreError> {
    let location = url::parse(url)?;
    let mut conn = match &location {
        Location::Memory => Connection::open_in_memory().context("open an in-memory database")?,
        Location::File(path) => open_file(path)?,
    };
    conn.pragma_update(None, "foreign_keys", true)
        .context("enable foreign keys")?;
    let found = schema::migrate(&mut conn)?;
    let devices = all_devices(&conn)?;
    let psk_keys = PskKeys::load(&conn)?;
    let tracking = positions::Tracking::load(&conn)?;
    let template = templates::Current::load(&conn)?;
    let view = DeviceView::default();
    let count = devices.len();
    view.load(devices);
    let described = match &location {
        Location::Memory => "memory".to_owned(),
        Location::File(path) => path.display().to_string(),
    };
    tracing::info!(
        database = %described,
        schema_found = found,
        schema = SCHEMA_VERSION,
        devices = count,
        "store open"
    );
    let writer = match &location {
        Location::Memory => None,
        Location::File(path) => {
            let writer = open_file(path)?;
            writer
                .pragma_update(None, "foreign_keys", true)
                .context("enable foreign keys")?;
            Some(Mutex::new(writer))
        }
    };
    Ok(Store {
        inner: Arc::new(Inner {
            conn: Mutex::new(conn),
            writer,
            view,
            psk_keys,
            tracking,
            template,
            described,
        }),
    })
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

/// What [`Store::put_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Put {
    /// No device had this ICCID; it was added (the admin API's 201).
    Created,
    /// A device with this ICCID existed; it was replaced whole (200).
    Replaced,
}

/// The device registry: a database plus the in-memory [`DeviceView`].
///
/// Cheap to clone (an `Arc` inside; clones share the database connection and
/// the view), `Send + Sync`. Writes are serialised on one connection; each is
/// one transaction, and the view is updated after it commits, before the call
/// returns. Calls block (see [Blocking](crate#blocking)).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// A file database's connection for the engine's writes.
    writer: Option<Mutex<Connection>>,
    view: DeviceView,
    psk_keys: PskKeys,
    tracking: Arc<positions::Tracking>,
    template: templates::Current,
    described: String,
}

const COLUMNS: &str = "iccid, imsi, ip, status, name";

impl Store {
    /// The in-memory view for the hot path; it follows every later write.
    pub fn directory(&self) -> DeviceView {
        self.inner.view.clone()
    }

    /// Creates or replaces the device with `device.iccid`.
    ///
    /// The address is stored in canonical form ([`canonical_ip`]). If another
    /// device already has that address, fails with
    /// [`StoreError::IpInUse`] naming that device, and nothing changes.
    pub fn put_device(&self, mut device: Device) -> Result<Put, StoreError> {
        device.ip = canonical_ip(device.ip);
        let ip = device.ip.to_string();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a device")?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM devices WHERE iccid = ?1",
                [device.iccid.as_str()],
                |_| Ok(()),
            )
            .optional()
            .context("look a device up")?
            .is_some();
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
                let iccid = holder.parse().map_err(|e| StoreError::Corrupt {
                    key: holder.clone(),
                    reason: format!("iccid: {e}"),
                })?;
                return Err(StoreError::IpInUse { iccid });
            }
            Err(e) => return Err(e).context("write a device"),
        }
        tx.commit().context("commit a device")?;
        let outcome = if exists { Put::Replaced } else { Put::Created };
        tracing::debug!(iccid = %device.iccid, ip = %device.ip, ?outcome, "device stored");
        self.inner.view.put(device);
        Ok(outcome)
    }

    /// The device with this ICCID, as stored.
    pub fn device(&self, iccid: &Iccid) -> Result<Option<Device>, StoreError> {
        let conn = self.conn();
        let raw = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE iccid = ?1"),
                [iccid.as_str()],
                RawDevice::from_row,
            )
            .optional()
            .context("read a device")?;
        raw.map(RawDevice::into_device).transpose()
    }

    /// Removes the device with this ICCID; `false` if there was none. Its
    /// address stops resolving at once.
    pub fn remove_device(&self, iccid: &Iccid) -> Result<bool, StoreError> {
        let conn = self.conn();
        let removed = conn
            .execute("DELETE FROM devices WHERE iccid = ?1", [iccid.as_str()])
            .context("remove a device")?
            > 0;
        if removed {
            // The PSK row went with it (ON DELETE CASCADE).
            self.inner.view.remove(iccid);
            self.inner.psk_keys.remove(iccid);
            self.inner.tracking.forget(iccid);
            tracing::debug!(%iccid, "device removed");
        }
        Ok(removed)
    }

    /// One page of devices, ordered by ICCID (as text). `page` is 1-based;
    /// a page past the end is empty. `page` or `page_size` 0 is
    /// [`StoreError::InvalidPage`].
    pub fn devices(&self, page: u32, page_size: u32) -> Result<Vec<Device>, StoreError> {
        if page == 0 || page_size == 0 {
            return Err(StoreError::InvalidPage { page, page_size });
        }
        // Saturates: any page that far out is empty anyway.
        let offset = i64::from(page - 1).saturating_mul(i64::from(page_size));
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM devices ORDER BY iccid LIMIT ?1 OFFSET ?2"
            ))
            .context("list devices")?;
        let rows = stmt
            .query_map(params![page_size, offset], RawDevice::from_row)
            .context("list devices")?;
        rows.map(|raw| raw.context("list devices")?.into_device())
            .collect()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped any open transaction, which
        // rolled it back; the connection itself is still usable.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection of the engine's writes ([`bootstrap`](Self::bootstrap),
    /// [`mark_registered`](Self::mark_registered),
    /// [`flush_positions`](Self::flush_positions)): a file database's own
    /// second connection, so an operator's query never delays a device's
    /// write and the reverse; an in-memory database's only one.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .writer
            .as_ref()
            .unwrap_or(&self.inner.conn)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.inner.described)
            .field("devices", &self.inner.view.len())
            .finish()
    }
}

fn is_ip_conflict(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg.contains("devices.ip")
    )
}

fn all_devices(conn: &Connection) -> Result<Vec<Device>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM devices"))
        .context("load devices")?;
    let rows = stmt
        .query_map([], RawDevice::from_row)
        .context("load devices")?;
    rows.map(|raw| raw.context("load devices")?.into_device())
        .collect()
}

/// A `devices` row as stored, before validation.
struct RawDevice {
    iccid: String,
    imsi: Option<String>,
    ip: String,
    status: String,
    name: Option<String>,
}

impl RawDevice {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            iccid: row.get(0)?,
            imsi: row.get(1)?,
            ip: row.get(2)?,
            status: row.get(3)?,
            name: row.get(4)?,
        })
    }

    fn into_device(self) -> Result<Device, StoreError> {
        let corrupt = |field: &str, why: &dyn fmt::Display| StoreError::Corrupt {
            key: self.iccid.clone(),
            reason: format!("{field}: {why}"),
        };
        let iccid = self.iccid.parse().map_err(|e| corrupt("iccid", &e))?;
        let imsi = match &self.imsi {
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
            name: self.name,
        })
    }
}

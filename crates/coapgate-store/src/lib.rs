//! The coapgate device registry and PSK records: SQLite by default,
//! PostgreSQL for several instances sharing one registry, in memory for
//! tests.
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
//! | `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?…]` | PostgreSQL (also `postgresql://`; cargo feature `postgres`, on by default) |
//!
//! The in-memory store is the same code on SQLite's `:memory:` database, so
//! tests exercise exactly what production runs. File databases use WAL
//! journaling, SQLite's default `synchronous=FULL` (a write that returned is
//! on disk), and a busy timeout of [`BUSY_TIMEOUT`]. The parent directory
//! must exist; it is not created. One coapgate process owns a SQLite
//! database: another process writing to it would not update this process's
//! view.
//!
//! ## PostgreSQL
//!
//! The same schema, API, errors and views, on the blocking `postgres`
//! client. The password comes from the URL or, when it has none, from the
//! environment variable `COAPGATE_STORE_PASSWORD`; it is never logged or put
//! into an error. Query parameters: `sslmode` (`disable`, `prefer` — the
//! default —, `require`; TLS is rustls with ring and always verifies the
//! server's certificate and host name, against `sslrootcert=FILE` or the
//! system's roots), `pool_size` (connections for the admin API and reads,
//! 1–64, default 4; the engine's writes have one more of their own), and
//! the client's own (`connect_timeout`, `application_name`, `options`, …).
//!
//! Several processes may share one database: migrations run under an
//! advisory lock, [`Store::bootstrap`] locks the device's row so two
//! processes never hand out two PSKs for one device, and
//! [`Store::resync`] reloads this process's views with what others wrote.
//! While the server cannot be reached every call fails at once with
//! [`StoreError::Busy`] (the views keep answering); the next call after it
//! is back opens a new connection. A connection lost during `COMMIT` leaves
//! that write's outcome unknown (reported as `Busy`): the engine's writes
//! are safe to repeat.
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
//! (a disk write or a round trip, or up to [`BUSY_TIMEOUT`] for a lock,
//! then [`StoreError::Busy`]). Never call one on an event loop: from async code
//! use `tokio::task::spawn_blocking` or a thread of its own (the server runs
//! the engine's writes on a writer thread). The in-memory views —
//! [`DeviceView`], [`PskKeys`], registrations, latest positions, the active
//! template — never wait for the database and are what the hot path reads.
//! A file database has two connections: one for the engine's writes, one
//! for everything else (the admin API); PostgreSQL has a connection for the
//! engine's writes and a pool for everything else.
//!
//! # Schema
//!
//! Versioned migrations are embedded in the crate (`migrations/sqlite/` and
//! `migrations/postgres/`, in step) and tracked in `PRAGMA user_version`
//! (PostgreSQL: the table `coapgate_schema`); [`open`] applies the missing
//! ones, so
//! later features (PSKs, positions, templates, a first-seen flag) arrive as
//! additive migrations. A database from a newer build is refused
//! ([`StoreError::SchemaTooNew`]). Foreign keys are enforced.

#![forbid(unsafe_code)]

mod backend;
mod compact;
mod error;
mod follow;
mod positions;
#[cfg(feature = "postgres")]
mod postgres;
mod psk;
mod schema;
mod sqlite;
mod templates;
mod url;
mod view;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use coapgate_model::{Device, Iccid};

pub use error::{BoxError, StoreError};
pub use follow::{FollowStatus, Follower, RECONNECT_MAX};
pub use positions::POSITIONS_KEPT;
pub use psk::PskKeys;
pub use schema::SCHEMA_VERSION;
pub use templates::{TemplateRecord, TemplateStatus};
pub use view::{DeviceView, canonical_ip};

use backend::{Backend, RawDevice};
use url::Location;

/// How long a call waits for a lock held by another connection (SQLite's
/// busy timeout; PostgreSQL's `lock_timeout`, and the wait for a free pooled
/// connection) before it fails with [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating and migrating if needed) the store a URL names, and loads
/// every device, PSK, latest position, registration and the template into
/// the in-memory views.
///
/// See the [crate documentation](crate#backends-and-urls) for the URLs.
/// Errors: [`StoreError::InvalidUrl`] (naming the URL, any password
/// redacted), [`StoreError::Unsupported`] for `postgres://` in a build
/// without the `postgres` feature, [`StoreError::Open`] (a SQLite file),
/// [`StoreError::Connect`] (a PostgreSQL server that cannot be reached or
/// refuses the login), [`StoreError::SchemaTooNew`],
/// [`StoreError::Corrupt`], [`StoreError::Busy`], [`StoreError::Database`].
pub fn open(url: &str) -> Result<Store, StoreError> {
    let started = Instant::now();
    let location = url::parse(url)?;
    let (db, found, described): (Box<dyn Backend>, u32, String) = match location {
        Location::Memory => {
            let (db, found) = sqlite::Sqlite::open(None)?;
            (Box::new(db), found, "memory".to_owned())
        }
        Location::File(path) => {
            let (db, found) = sqlite::Sqlite::open(Some(&path))?;
            (Box::new(db), found, path.display().to_string())
        }
        #[cfg(feature = "postgres")]
        Location::Postgres(target) => {
            let described = target.described.clone();
            let (db, found) = postgres::Postgres::open(*target)?;
            (Box::new(db), found, described)
        }
    };
    let store = Store {
        inner: Arc::new(Inner {
            db,
            sync: RwLock::new(()),
            view: DeviceView::default(),
            psk_keys: PskKeys::default(),
            tracking: positions::Tracking::default(),
            template: templates::Current::default(),
            described,
        }),
    };
    let devices = store.load_views()?;
    tracing::info!(
        database = %store.inner.described,
        schema_found = found,
        schema = SCHEMA_VERSION,
        devices,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store open"
    );
    Ok(store)
}

/// Checks a store URL by the rules of [`open`] without opening anything
/// (no file is created, no connection made): the configuration refuses a
/// bad `[store] url` when it is loaded. The error shows the URL with any
/// password redacted.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    url::parse(url).map(|_| ())
}

/// A store URL as it may be shown: any password replaced by `***` (the
/// `user:password@` part and any `password=` parameter).
pub fn redacted_url(url: &str) -> String {
    url::redact(url)
}

/// What [`Store::put_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Put {
    /// No device had this ICCID; it was added (the admin API's 201).
    Created,
    /// A device with this ICCID existed; it was replaced whole (200).
    Replaced,
}

/// The device registry: a database plus the in-memory views.
///
/// Cheap to clone (an `Arc` inside; clones share the database connections
/// and the views), `Send + Sync`. Each write is one transaction, and the
/// views are updated after it commits, before the call returns. Calls block
/// (see [Blocking](crate#blocking)).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Box<dyn Backend>,
    /// Writes hold it shared from their database write to their view update;
    /// [`Store::resync`] holds it exclusively, so a reload never drops a
    /// write that committed while it read.
    sync: RwLock<()>,
    view: DeviceView,
    psk_keys: PskKeys,
    tracking: positions::Tracking,
    template: templates::Current,
    /// The database, for logs and `Debug` (never a password).
    described: String,
}

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
        let _writing = self.writing();
        let outcome = self.inner.db.put_device(&device)?;
        tracing::debug!(iccid = %device.iccid, ip = %device.ip, ?outcome, "device stored");
        self.inner.view.put(&device);
        Ok(outcome)
    }

    /// The device with this ICCID, as stored.
    pub fn device(&self, iccid: &Iccid) -> Result<Option<Device>, StoreError> {
        self.inner
            .db
            .device(iccid)?
            .map(RawDevice::into_device)
            .transpose()
    }

    /// Removes the device with this ICCID; `false` if there was none. Its
    /// address stops resolving at once.
    pub fn remove_device(&self, iccid: &Iccid) -> Result<bool, StoreError> {
        let _writing = self.writing();
        let removed = self.inner.db.remove_device(iccid)?;
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
        self.inner
            .db
            .devices(page_size, offset)?
            .into_iter()
            .map(RawDevice::into_device)
            .collect()
    }

    /// Reloads every in-memory view (devices, PSK keys, latest positions,
    /// registrations, the template) from the database, replacing what they
    /// held; positions queued for [`flush_positions`](Self::flush_positions)
    /// stay queued. For a store that other processes write too (several
    /// instances on one PostgreSQL database): after a missed change
    /// notification, or periodically. Returns how many devices it loaded.
    /// Writes of this store wait while it runs; the hot path does not.
    pub fn resync(&self) -> Result<usize, StoreError> {
        let _alone = self
            .inner
            .sync
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.load_views()
    }

    fn load_views(&self) -> Result<usize, StoreError> {
        // Validate everything before replacing anything: the new tables are
        // built row by row, and swapped in only when every row was read.
        let mut loaded = Loaded::default();
        let snapshot = self.inner.db.snapshot(&mut loaded)?;
        let tracking = positions::Tracking::parse(snapshot.latest, &snapshot.registered)?;
        let template = templates::Current::parse(snapshot.template)?;
        let count = loaded.devices.len();
        loaded.keys.fit();
        self.inner.psk_keys.replace(loaded.keys);
        self.inner.tracking.replace(tracking);
        self.inner.template.replace(template);
        self.inner.view.replace(loaded.devices);
        Ok(count)
    }

    /// Whether the database answers now: one round trip (PostgreSQL) or a
    /// trivial query (SQLite), for health checks. [`StoreError::Busy`] when
    /// it cannot be reached.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.inner.db.ping()
    }

    /// Which backend this store runs on: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.inner.db.name()
    }

    /// Held across a write's database call and its view update.
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.inner
            .sync
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The device view's and the PSK keys' tables of a full load, built from
/// the rows as the backend reads them.
#[derive(Default)]
struct Loaded {
    devices: view::Table,
    keys: psk::KeyTable,
}

impl backend::Rows for Loaded {
    fn expect(&mut self, devices: usize, psks: usize) {
        // Generated PSKs are 16 bytes, operator ones 8 to 256; the arena
        // grows by copying if this is short, and is fitted at the end.
        self.devices = view::Table::with_capacity(devices);
        self.keys = psk::KeyTable::with_capacity(psks, psks.saturating_mul(32));
    }

    fn device(&mut self, row: backend::DeviceRow<'_>) -> Result<(), StoreError> {
        // The view keeps no name: leave it in the database's buffer.
        let device = backend::DeviceRow { name: None, ..row }.to_device()?;
        self.devices.put(&device);
        Ok(())
    }

    fn psk(&mut self, row: backend::PskRow<'_>) -> Result<(), StoreError> {
        let record = psk::restore_row(&row)?;
        let iccid = backend::parse_iccid(row.iccid, "psk")?;
        self.keys.set(&iccid, &record.key());
        Ok(())
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

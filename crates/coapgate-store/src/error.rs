//! The one error type of this crate.

use std::path::PathBuf;

use coapgate_model::Iccid;

/// The backend's own error, kept opaque so that the public API does not
/// depend on the SQLite binding's version.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the store.
///
/// No variant ever carries a password from a store URL: URLs are redacted
/// before they are put into an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL is not one this crate understands. `url` is the URL as
    /// given, with any password replaced by `***`.
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL names a backend this build leaves out (`postgres://` without
    /// coapgate-store's `postgres` cargo feature).
    #[error(
        "store backend `{backend}` is not built into this coapgate (cargo feature `{backend}` of coapgate-store); use sqlite://FILE or memory://"
    )]
    Unsupported {
        /// The backend, as its URL scheme spells it.
        backend: String,
    },
    /// The database file could not be opened or created (missing directory,
    /// permissions, not a database).
    #[error("cannot open database `{}`", path.display())]
    Open {
        /// The file as the process resolved it (relative paths are relative
        /// to the working directory).
        path: PathBuf,
        /// Why SQLite refused.
        #[source]
        source: BoxError,
    },
    /// The PostgreSQL server could not be reached, refused the login or the
    /// TLS handshake, or the `sslrootcert` file could not be read, at
    /// [`open`](crate::open). [`is_transient`](StoreError::is_transient)
    /// tells an unreachable server (start again later) from a refusal.
    #[error("cannot connect to the PostgreSQL store `{url}`")]
    Connect {
        /// The URL as given, password redacted.
        url: String,
        /// Why (the client's error; never holds the password).
        #[source]
        source: BoxError,
    },
    /// The database was written by a newer coapgate: its schema version is
    /// higher than any this build knows. Nothing was changed.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade coapgate"
    )]
    SchemaTooNew {
        /// The version found in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// Another device already holds the IP address of the device being
    /// written. Nothing was changed.
    #[error("the IP address is already used by device {iccid}")]
    IpInUse {
        /// The device that holds the address.
        iccid: Iccid,
    },
    /// The device does not exist (a PSK can only be set for a known device).
    #[error("no device {iccid}")]
    UnknownDevice {
        /// The ICCID asked for.
        iccid: Iccid,
    },
    /// An operator PSK is not acceptable (the text never holds the PSK).
    #[error("invalid PSK: {0}")]
    InvalidPsk(#[from] coapgate_bootstrap::BootstrapError),
    /// A template is not valid (the error names its path in the template).
    #[error("invalid template: {0}")]
    InvalidTemplate(#[from] coapgate_translate::TemplateError),
    /// A status other than ACTIVE or INACTIVE.
    #[error("a status is ACTIVE or INACTIVE")]
    InvalidStatus,
    /// A page number of 0 or a page size of 0 was asked for; pages are
    /// 1-based and hold at least one device.
    #[error("page {page} of size {page_size}: pages start at 1 and hold at least one device")]
    InvalidPage {
        /// The page asked for.
        page: u32,
        /// The page size asked for.
        page_size: u32,
    },
    /// A stored row does not make a valid device (the database was edited by
    /// hand or damaged).
    #[error("stored device `{key}` is invalid: {reason}")]
    Corrupt {
        /// The row's ICCID column, as stored.
        key: String,
        /// Which field is wrong.
        reason: String,
    },
    /// The database stayed locked or busy (another process or connection
    /// holds a write lock) for [`BUSY_TIMEOUT`](crate::BUSY_TIMEOUT), its
    /// disk could not take the write (SQLite: full, an I/O error, the file
    /// read-only or unopenable), or
    /// cannot be reached (PostgreSQL: connection refused or lost, every
    /// pooled connection in use for [`BUSY_TIMEOUT`](crate::BUSY_TIMEOUT), a
    /// lock or statement timeout, a serialization failure or deadlock, the
    /// server shutting down or out of connections); nothing was written
    /// (but see the crate docs on a connection lost during `COMMIT`), and
    /// the same call may succeed later.
    #[error("database busy while trying to {context}")]
    Busy {
        /// What the store was doing.
        context: &'static str,
        /// The database's own error.
        #[source]
        source: BoxError,
    },
    /// A database operation failed.
    #[error("database error while trying to {context}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The database's own error.
        #[source]
        source: BoxError,
    },
}

/// Attaches what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| {
            // Busy or locked, and a disk that cannot take a write now
            // (full, an I/O error, the file system read-only, the file
            // unopenable): the same call may succeed once the disk
            // recovers, so the device is told to come back (5.03), not
            // that coapgate failed (5.00).
            let busy = matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::CannotOpen
                )
            );
            let source = Box::new(source);
            if busy {
                StoreError::Busy { context, source }
            } else {
                StoreError::Database { context, source }
            }
        })
    }
}

impl StoreError {
    /// Whether the same call may succeed later: the database was busy or
    /// unreachable ([`StoreError::Busy`]; at open, a
    /// [`StoreError::Connect`] to a server that could not be reached).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy { .. } => true,
            #[cfg(feature = "postgres")]
            StoreError::Connect { source, .. } => crate::postgres::is_transient_source(source),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> Result<(), rusqlite::Error> {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_disk_that_cannot_take_a_write_is_transient_other_failures_are_not() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CANTOPEN,
        ] {
            let error = failure(code).context("write").unwrap_err();
            assert!(error.is_transient(), "{code}: {error:?}");
        }
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_MISUSE,
        ] {
            let error = failure(code).context("write").unwrap_err();
            assert!(!error.is_transient(), "{code}: {error:?}");
        }
    }
}

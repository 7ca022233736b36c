//! Versioned schema migrations, embedded in the crate as SQL, one list per
//! backend.
//!
//! Migration *n* (1-based) takes a database from version *n − 1* to *n*; the
//! two lists stay in step (migration *n* of SQLite and of PostgreSQL make the
//! same tables, each in its dialect), so one [`SCHEMA_VERSION`] describes
//! both. A migration file is never edited once released: changes are new
//! files, appended to both lists. Each backend applies the missing ones at
//! open, each in its own transaction together with the version bump, so a
//! crash leaves the database at a whole version:
//!
//! - SQLite tracks the version in `PRAGMA user_version` and migrates under
//!   an `IMMEDIATE` transaction;
//! - PostgreSQL tracks it in the one-row table `coapgate_schema` and
//!   migrates while holding an advisory lock ([`PG_MIGRATION_LOCK`]), so
//!   several instances starting at once migrate one after the other.

/// SQLite's migrations, in order; index 0 is version 1.
pub(crate) const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_devices.sql"),
    include_str!("../migrations/sqlite/0002_psks.sql"),
    include_str!("../migrations/sqlite/0003_positions_registrations.sql"),
    include_str!("../migrations/sqlite/0004_templates.sql"),
    include_str!("../migrations/sqlite/0005_change_notifications.sql"),
];

/// PostgreSQL's migrations, in order; index 0 is version 1.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_devices.sql"),
    include_str!("../migrations/postgres/0002_psks.sql"),
    include_str!("../migrations/postgres/0003_positions_registrations.sql"),
    include_str!("../migrations/postgres/0004_templates.sql"),
    include_str!("../migrations/postgres/0005_change_notifications.sql"),
];

#[cfg(feature = "postgres")]
const _: () = assert!(
    SQLITE.len() == POSTGRES.len(),
    "the SQLite and PostgreSQL migrations must stay in step"
);

/// The advisory lock key PostgreSQL migrations run under (`coapgate` in
/// ASCII): an instance that starts while another migrates waits for it.
#[cfg(feature = "postgres")]
pub(crate) const PG_MIGRATION_LOCK: i64 = 0x636f_6170_6761_7465;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: u32 = SQLITE.len() as u32;

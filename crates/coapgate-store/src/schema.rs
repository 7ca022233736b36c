//! Versioned schema migrations, embedded in the crate as SQL.
//!
//! The schema version lives in SQLite's `PRAGMA user_version` (0 for a new,
//! empty database). Migration *n* (1-based) takes the database from version
//! *n − 1* to *n*; each runs in its own `IMMEDIATE` transaction together with
//! the version bump, so a crash leaves the database at a whole version. A
//! migration file is never edited once released: changes are new files,
//! appended to [`MIGRATIONS`].

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;
use crate::error::Context;

/// The migrations, in order; index 0 is version 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_devices.sql"),
    include_str!("../migrations/0002_psks.sql"),
    include_str!("../migrations/0003_positions_registrations.sql"),
    include_str!("../migrations/0004_templates.sql"),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .context("read the schema version")
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it was at.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
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

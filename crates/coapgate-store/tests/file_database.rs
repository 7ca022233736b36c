//! File databases: persistence, schema migrations and open errors.

// Test helpers panic to report a failure, like the #[test]s that call them.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid};
use coapgate_store::{Put, SCHEMA_VERSION, StoreError};
use rusqlite::Connection;

const A: &str = "8988280666000000001";
const B: &str = "89882806660000000002";

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn device(iccid: &str, ip: &str) -> Device {
    Device {
        iccid: iccid.parse().unwrap(),
        imsi: None,
        ip: ip.parse().unwrap(),
        status: DeviceStatus::Active,
        name: None,
    }
}

fn user_version(path: &Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[test]
fn an_absolute_sqlite_url_is_the_file_at_that_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    assert!(path.is_absolute());
    // sqlite:// + /abs/path = sqlite:///abs/path
    assert!(url(&path).starts_with("sqlite:///"));
    coapgate_store::open(&url(&path)).unwrap();
    assert!(path.exists());
}

#[test]
fn reopening_a_file_database_keeps_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir.path().join("coapgate.db"));
    {
        let store = coapgate_store::open(&url).unwrap();
        store.put_device(device(A, "10.0.0.7")).unwrap();
        store.put_device(device(B, "2001:db8::2")).unwrap();
        store.put_device(device(A, "10.0.0.9")).unwrap();
        let gone = "8988280666000000003";
        store.put_device(device(gone, "10.0.0.3")).unwrap();
        assert!(store.remove_device(&gone.parse().unwrap()).unwrap());
    }
    let store = coapgate_store::open(&url).unwrap();
    let iccids: Vec<String> = store
        .devices(1, 10)
        .unwrap()
        .iter()
        .map(|d| d.iccid.to_string())
        .collect();
    // Ordered by ICCID as text, as `Iccid` orders.
    assert_eq!(iccids, [B, A]);
    // The view is loaded at open: the hot path knows them without a write.
    let view = store.directory();
    assert_eq!(view.len(), 2);
    assert_eq!(
        view.by_ip("10.0.0.9".parse().unwrap())
            .unwrap()
            .iccid
            .as_str(),
        A
    );
    assert!(view.by_ip("10.0.0.7".parse().unwrap()).is_none());
    assert!(view.by_ip("10.0.0.3".parse().unwrap()).is_none());
    // And it is still a registry, not a snapshot.
    assert_eq!(
        store.put_device(device(A, "10.0.0.7")).unwrap(),
        Put::Replaced
    );
}

#[test]
fn file_databases_use_wal_journaling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    let _store = coapgate_store::open(&url(&path)).unwrap();
    let mode: String = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_database_at_version_0_is_migrated_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    {
        // A database file that exists but has no coapgate schema yet.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE operator_notes (note TEXT); INSERT INTO operator_notes VALUES ('keep me');")
            .unwrap();
    }
    assert_eq!(user_version(&path), 0);

    let store = coapgate_store::open(&url(&path)).unwrap();
    store.put_device(device(A, "10.0.0.7")).unwrap();
    drop(store);

    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let conn = Connection::open(&path).unwrap();
    let note: String = conn
        .query_row("SELECT note FROM operator_notes", [], |row| row.get(0))
        .unwrap();
    assert_eq!(note, "keep me", "migrations touch only their own tables");
    let stored: (String, String, String) = conn
        .query_row("SELECT iccid, ip, status FROM devices", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    assert_eq!(
        stored,
        (A.to_owned(), "10.0.0.7".to_owned(), "ACTIVE".to_owned())
    );

    // Opening again at the current version changes nothing.
    coapgate_store::open(&url(&path)).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[test]
fn the_database_itself_refuses_a_second_device_on_one_ip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    coapgate_store::open(&url(&path)).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO devices (iccid, ip, status) VALUES (?1, '10.0.0.7', 'ACTIVE')",
        [A],
    )
    .unwrap();
    let err = conn
        .execute(
            "INSERT INTO devices (iccid, ip, status) VALUES (?1, '10.0.0.7', 'ACTIVE')",
            [B],
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("UNIQUE constraint failed: devices.ip"),
        "{err}"
    );
}

#[test]
fn a_database_from_a_newer_build_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = coapgate_store::open(&url(&path)).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
    let tables: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn a_stored_row_that_is_not_a_device_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    coapgate_store::open(&url(&path)).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO devices (iccid, ip, status) VALUES (?1, 'not-an-ip', 'ACTIVE')",
            [A],
        )
        .unwrap();
    let err = coapgate_store::open(&url(&path)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, reason } if key == A && reason.starts_with("ip")),
        "{err:?}"
    );
}

#[test]
fn a_missing_directory_is_an_open_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("coapgate.db");
    let err = coapgate_store::open(&url(&path)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(!path.parent().unwrap().exists(), "no directory is created");
}

#[test]
fn a_file_that_is_not_a_database_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coapgate.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = coapgate_store::open(&url(&path)).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 4096]);
}

#[test]
fn iccid_lookups_and_removal_do_not_need_the_view() {
    // Two stores on one file: the second reads what the first wrote, but its
    // view is its own (one process should own a database; see crate docs).
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir.path().join("coapgate.db"));
    let first = coapgate_store::open(&url).unwrap();
    let second = coapgate_store::open(&url).unwrap();
    first.put_device(device(A, "10.0.0.7")).unwrap();
    let a: Iccid = A.parse().unwrap();
    assert!(second.device(&a).unwrap().is_some());
    assert!(
        second
            .directory()
            .by_ip("10.0.0.7".parse().unwrap())
            .is_none()
    );
}

//! PSK records: operator PSKs, the atomic /bootstrap update, the in-memory
//! DTLS keys, persistence.

#![allow(clippy::unwrap_used)]

mod common;

use common::Db;

use std::time::{Duration, SystemTime};

use coapgate_bootstrap::{OsPskGenerator, Policy, PskFormat, PskOrigin, PskRecord, PskUpdate};
use coapgate_model::{Device, DeviceStatus, Iccid};
use coapgate_store::StoreError;

const A: &str = "8988280666000000001";

fn device(iccid: &str, ip: &str) -> Device {
    Device {
        iccid: iccid.parse().unwrap(),
        imsi: None,
        ip: ip.parse().unwrap(),
        status: DeviceStatus::Active,
        name: None,
    }
}

fn iccid(s: &str) -> Iccid {
    s.parse().unwrap()
}

fn update(who: &Iccid, now: SystemTime) -> PskUpdate {
    PskUpdate::new(who.clone(), now, Policy::default(), &mut OsPskGenerator)
}

fn bootstrap(store: &coapgate_store::Store, who: &Iccid, now: SystemTime) -> PskRecord {
    store.bootstrap(&update(who, now)).unwrap()
}

fn a_psk_needs_a_known_device(db: &Db) {
    let store = db.open();
    let record = PskRecord::operator("secret12", PskFormat::String).unwrap();
    assert!(matches!(
        store.set_psk(&iccid(A), &record),
        Err(StoreError::UnknownDevice { .. })
    ));
    assert!(matches!(
        store.bootstrap(&update(&iccid(A), SystemTime::now())),
        Err(StoreError::UnknownDevice { .. })
    ));
    assert!(store.psk_keys().is_empty());
}

fn an_operator_psk_is_stored_and_its_key_is_used_at_once(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    let keys = store.psk_keys();
    assert!(keys.key(A).is_none());
    let record = PskRecord::operator("DEADBEEF00112233", PskFormat::Hex).unwrap();
    store.set_psk(&iccid(A), &record).unwrap();
    assert_eq!(store.psk(&iccid(A)).unwrap(), Some(record));
    assert_eq!(
        keys.key(A).unwrap().as_slice(),
        &[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33]
    );
    assert!(keys.key("not an iccid").is_none());
}

fn bootstrap_generates_keeps_and_regenerates_through_the_store(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let first = bootstrap(&store, &iccid(A), t0);
    assert_eq!(first.origin, PskOrigin::Generated);
    assert_eq!(
        store.psk_keys().key(A).unwrap().as_slice(),
        first.psk.expose().as_bytes()
    );
    let same = bootstrap(&store, &iccid(A), t0 + Duration::from_secs(299));
    assert_eq!(same.psk, first.psk);
    assert_eq!(
        store.psk(&iccid(A)).unwrap().unwrap().last_bootstrap,
        Some(t0 + Duration::from_secs(299))
    );
    let new = bootstrap(&store, &iccid(A), t0 + Duration::from_secs(299 + 300));
    assert_ne!(new.psk, first.psk);
    assert_eq!(
        store.psk_keys().key(A).unwrap().as_slice(),
        new.psk.expose().as_bytes()
    );
}

fn an_operator_psk_set_later_wins_and_bootstrap_then_keeps_it(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    bootstrap(&store, &iccid(A), t0);
    let operator = PskRecord::operator("operator-key", PskFormat::String).unwrap();
    store.set_psk(&iccid(A), &operator).unwrap();
    let after = bootstrap(&store, &iccid(A), t0 + Duration::from_secs(3600));
    assert_eq!(after.psk, operator.psk);
    assert_eq!(store.psk_keys().key(A).unwrap().as_slice(), b"operator-key");
}

fn removing_a_device_removes_its_psk_and_key(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    store
        .set_psk(
            &iccid(A),
            &PskRecord::operator("secret12", PskFormat::String).unwrap(),
        )
        .unwrap();
    assert!(store.remove_device(&iccid(A)).unwrap());
    assert!(store.psk_keys().key(A).is_none());
    store.put_device(device(A, "10.0.0.1")).unwrap();
    assert_eq!(
        store.psk(&iccid(A)).unwrap(),
        None,
        "the row went with the device"
    );
}

fn psks_survive_a_restart(db: &Db) {
    let url = db.url();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let issued = {
        let store = coapgate_store::open(url).unwrap();
        store.put_device(device(A, "10.0.0.1")).unwrap();
        bootstrap(&store, &iccid(A), t0)
    };
    let store = coapgate_store::open(url).unwrap();
    assert_eq!(store.psk(&iccid(A)).unwrap(), Some(issued.clone()));
    assert_eq!(
        store.psk_keys().key(A).unwrap().as_slice(),
        issued.psk.expose().as_bytes()
    );
    // Within the interval after the restart: still the same PSK.
    assert_eq!(
        bootstrap(&store, &iccid(A), t0 + Duration::from_secs(60)).psk,
        issued.psk
    );
}

fn debug_output_never_shows_a_psk(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    store
        .set_psk(
            &iccid(A),
            &PskRecord::operator("hunter2hunter2", PskFormat::String).unwrap(),
        )
        .unwrap();
    let debug = format!(
        "{store:?} {:?} {:?}",
        store.psk_keys(),
        store.psk(&iccid(A)).unwrap()
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn a_locked_database_makes_bootstrap_busy_writes_nothing_and_leaves_reads_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let store = coapgate_store::open(&format!("sqlite://{}", path.display())).unwrap();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    // Another connection takes the write lock and keeps it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let error = store
        .bootstrap(&update(&iccid(A), SystemTime::now()))
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, StoreError::Busy { .. }));
    assert!(started.elapsed() >= coapgate_store::BUSY_TIMEOUT / 2);
    // Reads (the admin API's connection, the in-memory views) still work.
    assert!(store.device(&iccid(A)).unwrap().is_some());
    assert!(store.psk_keys().key(A).is_none(), "nothing was issued");
    other.execute_batch("ROLLBACK").unwrap();
    // The lock is gone: the same call succeeds.
    let record = bootstrap(&store, &iccid(A), SystemTime::now());
    assert_eq!(store.psk(&iccid(A)).unwrap().unwrap().psk, record.psk);
    assert!(store.psk_keys().key(A).is_some());
}

on_both_backends!(
    a_psk_needs_a_known_device,
    an_operator_psk_is_stored_and_its_key_is_used_at_once,
    bootstrap_generates_keeps_and_regenerates_through_the_store,
    an_operator_psk_set_later_wins_and_bootstrap_then_keeps_it,
    removing_a_device_removes_its_psk_and_key,
    psks_survive_a_restart,
    debug_output_never_shows_a_psk,
);

//! Positions (latest in memory, queued writes, history, trimming) and
//! first-time registrations, including across a restart.

#![allow(clippy::unwrap_used)]

mod common;

use common::Db;

use std::time::SystemTime;

use coapgate_location::{Position, PositionStore};
use coapgate_model::{Device, DeviceStatus, Iccid, Registrations};
use coapgate_store::{POSITIONS_KEPT, StoreError};

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

fn iccid() -> Iccid {
    A.parse().unwrap()
}

fn at(t: u64) -> Position {
    Position::new(13.4 + t as f64 / 1000.0, 52.5, "GPS", t).unwrap()
}

fn a_recorded_position_is_the_latest_at_once_and_persisted_on_flush(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    assert!(store.latest(&iccid()).is_none());
    store.record(&iccid(), at(100));
    assert_eq!(store.latest(&iccid()), Some(at(100)));
    assert_eq!(store.flush_positions().unwrap(), 1);
    assert_eq!(store.flush_positions().unwrap(), 0, "nothing queued twice");
    assert_eq!(store.positions(&iccid()).unwrap(), vec![at(100)]);
}

fn an_older_sample_does_not_replace_the_latest_but_is_kept_in_history(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    store.record(&iccid(), at(200));
    store.record(&iccid(), at(100));
    assert_eq!(store.latest(&iccid()), Some(at(200)));
    assert_eq!(
        store.positions(&iccid()).unwrap(),
        vec![at(200), at(100)],
        "newest first; positions() flushes"
    );
}

fn operator_positions_need_a_known_device(db: &Db) {
    let store = db.open();
    let cell = Position::new(13.0, 52.0, "CellTower", 5).unwrap();
    assert!(matches!(
        store.put_position(&iccid(), &cell),
        Err(StoreError::UnknownDevice { .. })
    ));
    store.put_device(device(A, "10.0.0.1")).unwrap();
    store.put_position(&iccid(), &cell).unwrap();
    assert_eq!(store.latest(&iccid()), Some(cell));
}

fn history_is_trimmed_to_the_newest_positions(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    for t in 0..(POSITIONS_KEPT as u64 + 20) {
        store.record(&iccid(), at(t));
    }
    let kept = store.positions(&iccid()).unwrap();
    assert_eq!(kept.len(), POSITIONS_KEPT);
    assert_eq!(kept[0], at(POSITIONS_KEPT as u64 + 19));
}

fn removing_a_device_forgets_its_positions_and_registration(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.1")).unwrap();
    store.record(&iccid(), at(1));
    store.mark_registered(&iccid(), SystemTime::now()).unwrap();
    store.remove_device(&iccid()).unwrap();
    assert!(store.latest(&iccid()).is_none());
    assert!(!store.is_registered(&iccid()));
    assert_eq!(
        store.flush_positions().unwrap(),
        0,
        "the queued row went too"
    );
    store.put_device(device(A, "10.0.0.1")).unwrap();
    assert!(store.positions(&iccid()).unwrap().is_empty());
}

fn positions_and_registrations_survive_a_restart(db: &Db) {
    let url = db.url();
    {
        let store = coapgate_store::open(url).unwrap();
        store.put_device(device(A, "10.0.0.1")).unwrap();
        assert!(!store.is_registered(&iccid()));
        store.mark_registered(&iccid(), SystemTime::now()).unwrap();
        store.record(&iccid(), at(300));
        store.record(&iccid(), at(200));
        store.flush_positions().unwrap();
    }
    let store = coapgate_store::open(url).unwrap();
    assert!(
        store.is_registered(&iccid()),
        "the first-time event is not repeated"
    );
    assert_eq!(
        store.latest(&iccid()),
        Some(at(300)),
        "the latest by sample time"
    );
    assert_eq!(store.positions(&iccid()).unwrap().len(), 2);
}

on_both_backends!(
    a_recorded_position_is_the_latest_at_once_and_persisted_on_flush,
    an_older_sample_does_not_replace_the_latest_but_is_kept_in_history,
    operator_positions_need_a_known_device,
    history_is_trimmed_to_the_newest_positions,
    removing_a_device_forgets_its_positions_and_registration,
    positions_and_registrations_survive_a_restart,
);

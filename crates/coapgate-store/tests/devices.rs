//! The device registry as spec.md §6 describes it, on each backend.

// Test helpers panic to report a failure, like the #[test]s that call them.
#![allow(clippy::unwrap_used)]

mod common;

use common::Db;

use std::net::IpAddr;
use std::sync::Arc;

use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid};
use coapgate_store::{DeviceView, Put, Store, StoreError};

const A: &str = "8988280666000000001";
const B: &str = "8988280666000000002";

fn memory() -> Store {
    coapgate_store::open("memory://").unwrap()
}

fn iccid(s: &str) -> Iccid {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn device(iccid_: &str, ip_: &str) -> Device {
    Device {
        iccid: iccid(iccid_),
        imsi: Some("901405100000000".parse().unwrap()),
        ip: ip(ip_),
        status: DeviceStatus::Active,
        name: Some("meter".to_owned()),
    }
}

fn holder(view: &DeviceView, address: &str) -> Option<String> {
    view.by_ip(ip(address)).map(|d| d.iccid.to_string())
}

fn put_creates_a_new_iccid_and_get_returns_it_as_stored(db: &Db) {
    let store = db.open();
    assert_eq!(
        store.put_device(device(A, "10.0.0.7")).unwrap(),
        Put::Created
    );
    assert_eq!(
        store.device(&iccid(A)).unwrap(),
        Some(device(A, "10.0.0.7"))
    );
    assert_eq!(store.device(&iccid(B)).unwrap(), None);
}

fn put_replaces_an_existing_iccid_whole(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.7")).unwrap();
    let replacement = Device {
        imsi: None,
        status: DeviceStatus::Inactive,
        name: None,
        ..device(A, "10.0.0.8")
    };
    assert_eq!(
        store.put_device(replacement.clone()).unwrap(),
        Put::Replaced
    );
    assert_eq!(store.device(&iccid(A)).unwrap(), Some(replacement));
}

fn a_device_may_be_replaced_keeping_its_own_ip(db: &Db) {
    let store = db.open();
    store.put_device(device(A, "10.0.0.7")).unwrap();
    let renamed = Device {
        name: Some("renamed".to_owned()),
        ..device(A, "10.0.0.7")
    };
    assert_eq!(store.put_device(renamed.clone()).unwrap(), Put::Replaced);
    assert_eq!(store.device(&iccid(A)).unwrap(), Some(renamed));
}

fn an_ip_held_by_another_device_is_refused_and_nothing_changes(db: &Db) {
    let store = db.open();
    let view = store.directory();
    store.put_device(device(A, "10.0.0.7")).unwrap();
    store.put_device(device(B, "10.0.0.8")).unwrap();

    // Replacing B with A's address.
    let err = store.put_device(device(B, "10.0.0.7")).unwrap_err();
    assert!(
        matches!(&err, StoreError::IpInUse { iccid: holder } if holder.as_str() == A),
        "{err:?}"
    );
    // Creating a third device with A's address.
    let c = "8988280666000000003";
    let err = store.put_device(device(c, "10.0.0.7")).unwrap_err();
    assert!(
        matches!(&err, StoreError::IpInUse { iccid: holder } if holder.as_str() == A),
        "{err:?}"
    );
    assert!(err.to_string().contains(A), "{err}");

    assert_eq!(
        store.device(&iccid(A)).unwrap(),
        Some(device(A, "10.0.0.7"))
    );
    assert_eq!(
        store.device(&iccid(B)).unwrap(),
        Some(device(B, "10.0.0.8"))
    );
    assert_eq!(store.device(&iccid(c)).unwrap(), None);
    assert_eq!(holder(&view, "10.0.0.7").as_deref(), Some(A));
    assert_eq!(holder(&view, "10.0.0.8").as_deref(), Some(B));
    assert_eq!(view.len(), 2);
}

fn an_ipv4_mapped_address_is_the_ipv4_address(db: &Db) {
    let store = db.open();
    let view = store.directory();

    // Written mapped: stored, returned and found as IPv4.
    store.put_device(device(A, "::ffff:10.0.0.7")).unwrap();
    assert_eq!(store.device(&iccid(A)).unwrap().unwrap().ip, ip("10.0.0.7"));
    assert_eq!(holder(&view, "10.0.0.7").as_deref(), Some(A));
    assert_eq!(holder(&view, "::ffff:10.0.0.7").as_deref(), Some(A));

    // The mapped and the plain form are one address for the unique rule.
    let err = store.put_device(device(B, "10.0.0.7")).unwrap_err();
    assert!(matches!(err, StoreError::IpInUse { .. }), "{err:?}");

    // Written plain, found by a dual-stack socket's mapped address.
    store.put_device(device(B, "192.0.2.1")).unwrap();
    assert_eq!(holder(&view, "::ffff:192.0.2.1").as_deref(), Some(B));
}

fn ipv6_devices_are_found_by_their_address(db: &Db) {
    let store = db.open();
    let view = store.directory();
    store.put_device(device(A, "2001:db8::7")).unwrap();
    assert_eq!(holder(&view, "2001:0db8:0:0::7").as_deref(), Some(A));
    assert_eq!(holder(&view, "2001:db8::8"), None);
}

fn the_view_follows_every_write_at_once(db: &Db) {
    let store = db.open();
    let view = store.directory();
    assert!(view.is_empty());

    store.put_device(device(A, "10.0.0.7")).unwrap();
    let found = view.by_ip(ip("10.0.0.7")).unwrap();
    // What the hot path needs: identity and status (the name stays in the
    // database).
    assert_eq!(found, device(A, "10.0.0.7").entry());

    // A replace that changes status is seen by the hot path.
    store
        .put_device(Device {
            status: DeviceStatus::Inactive,
            ..device(A, "10.0.0.7")
        })
        .unwrap();
    assert!(!view.by_ip(ip("10.0.0.7")).unwrap().is_active());

    // A replace that moves the device frees its old address.
    store.put_device(device(A, "10.0.0.9")).unwrap();
    assert_eq!(holder(&view, "10.0.0.7"), None);
    assert_eq!(holder(&view, "10.0.0.9").as_deref(), Some(A));
    assert_eq!(view.len(), 1);

    // The freed address can go to another device.
    store.put_device(device(B, "10.0.0.7")).unwrap();
    assert_eq!(holder(&view, "10.0.0.7").as_deref(), Some(B));
}

fn removing_a_device_removes_its_ip_from_the_view(db: &Db) {
    let store = db.open();
    let view = store.directory();
    store.put_device(device(A, "10.0.0.7")).unwrap();
    store.put_device(device(B, "10.0.0.8")).unwrap();

    assert!(store.remove_device(&iccid(A)).unwrap());
    assert_eq!(store.device(&iccid(A)).unwrap(), None);
    assert_eq!(holder(&view, "10.0.0.7"), None);
    assert_eq!(holder(&view, "10.0.0.8").as_deref(), Some(B));

    assert!(!store.remove_device(&iccid(A)).unwrap(), "already gone");
    // Its address is free again.
    store.put_device(device(B, "10.0.0.7")).unwrap();
}

fn devices_are_listed_by_iccid_in_one_based_pages(db: &Db) {
    let store = db.open();
    // Written out of order; 19- and 20-digit ICCIDs mixed.
    let iccids = [
        "8988280666000000005",
        "89882806660000000001",
        "8988280666000000003",
        "8988280666000000001",
        "8988280666000000004",
    ];
    for (n, i) in iccids.iter().enumerate() {
        store.put_device(device(i, &format!("10.0.1.{n}"))).unwrap();
    }
    let mut sorted: Vec<Iccid> = iccids.iter().map(|i| iccid(i)).collect();
    sorted.sort();

    let page = |p, size| -> Vec<Iccid> {
        store
            .devices(p, size)
            .unwrap()
            .into_iter()
            .map(|d| d.iccid)
            .collect()
    };
    assert_eq!(page(1, 2), sorted[0..2]);
    assert_eq!(page(2, 2), sorted[2..4]);
    assert_eq!(page(3, 2), sorted[4..5]);
    assert_eq!(page(4, 2), Vec::<Iccid>::new());
    assert_eq!(page(1, 50), sorted);
    assert_eq!(page(u32::MAX, u32::MAX), Vec::<Iccid>::new());
    // Whole devices, not just keys.
    let first = iccids
        .iter()
        .position(|i| *i == sorted[0].as_str())
        .unwrap();
    assert_eq!(
        store.devices(1, 1).unwrap(),
        [device(sorted[0].as_str(), &format!("10.0.1.{first}"))]
    );
}

fn page_and_page_size_zero_are_refused(db: &Db) {
    let store = db.open();
    for (page, size) in [(0, 10), (1, 0), (0, 0)] {
        let err = store.devices(page, size).unwrap_err();
        assert!(matches!(err, StoreError::InvalidPage { .. }), "{err:?}");
    }
}

fn clones_share_one_registry_and_one_view(db: &Db) {
    let store = db.open();
    let other = store.clone();
    let view = store.directory();
    other.put_device(device(A, "10.0.0.7")).unwrap();
    assert!(store.device(&iccid(A)).unwrap().is_some());
    assert_eq!(holder(&view, "10.0.0.7").as_deref(), Some(A));
    assert_eq!(holder(&other.directory(), "10.0.0.7").as_deref(), Some(A));
}

#[test]
fn every_memory_store_is_its_own() {
    let one = memory();
    let two = memory();
    one.put_device(device(A, "10.0.0.7")).unwrap();
    assert_eq!(two.device(&iccid(A)).unwrap(), None);
}

fn store_and_view_can_be_shared_across_threads(db: &Db) {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Store>();
    send_sync::<DeviceView>();
    send_sync::<StoreError>();

    let store = db.open();
    let directory: Arc<dyn DeviceDirectory> = Arc::new(store.directory());
    let reader = {
        let directory = directory.clone();
        std::thread::spawn(move || {
            // Lookups during writes see either no device or a whole one.
            for _ in 0..10_000 {
                if let Some(d) = directory.by_ip(ip("10.0.0.7")) {
                    assert_eq!(d.iccid.as_str(), A);
                }
            }
        })
    };
    for n in 0..50 {
        let address = if n % 2 == 0 { "10.0.0.7" } else { "10.0.0.8" };
        store.put_device(device(A, address)).unwrap();
    }
    reader.join().unwrap();
    assert_eq!(directory.by_ip(ip("10.0.0.8")).unwrap().iccid.as_str(), A);
}

on_both_backends!(
    put_creates_a_new_iccid_and_get_returns_it_as_stored,
    put_replaces_an_existing_iccid_whole,
    a_device_may_be_replaced_keeping_its_own_ip,
    an_ip_held_by_another_device_is_refused_and_nothing_changes,
    an_ipv4_mapped_address_is_the_ipv4_address,
    ipv6_devices_are_found_by_their_address,
    the_view_follows_every_write_at_once,
    removing_a_device_removes_its_ip_from_the_view,
    devices_are_listed_by_iccid_in_one_based_pages,
    page_and_page_size_zero_are_refused,
    clones_share_one_registry_and_one_view,
    store_and_view_can_be_shared_across_threads,
);

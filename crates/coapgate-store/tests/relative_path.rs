//! `sqlite://coapgate.db` is relative to the working directory (spec.md §7).
//!
//! Its own test binary: it changes the process's working directory.

use coapgate_model::{Device, DeviceStatus};

#[test]
fn a_relative_sqlite_url_is_relative_to_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    std::fs::create_dir("data").unwrap();

    let store = coapgate_store::open("sqlite://data/coapgate.db").unwrap();
    store
        .put_device(Device {
            iccid: "8988280666000000000".parse().unwrap(),
            imsi: None,
            ip: "127.0.0.1".parse().unwrap(),
            status: DeviceStatus::Active,
            name: None,
        })
        .unwrap();
    drop(store);

    assert!(dir.path().join("data/coapgate.db").is_file());
    let again = coapgate_store::open("sqlite://./data/coapgate.db").unwrap();
    assert_eq!(again.devices(1, 10).unwrap().len(), 1);
}

//! The hot-path lookup allocates nothing: `DeviceView::by_ip` builds the
//! `DeviceEntry` it returns from the compact table on the stack (issue 13).
//! A test binary of its own, since it counts with a global allocator.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use coapgate_model::{Device, DeviceDirectory, DeviceStatus};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_lookup_allocates_nothing() {
    let store = coapgate_store::open("memory://").unwrap();
    for (i, (iccid, ip)) in [
        ("89882806660000000001", "10.0.0.1"),
        ("8988280666000000002", "2001:db8::2"),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .put_device(Device {
                iccid: iccid.parse().unwrap(),
                imsi: (i == 0).then(|| "901405100000000".parse().unwrap()),
                ip: ip.parse().unwrap(),
                status: DeviceStatus::Active,
                name: Some("meter".into()),
            })
            .unwrap();
    }
    let view = store.directory();
    let addresses: Vec<IpAddr> = ["10.0.0.1", "::ffff:10.0.0.1", "2001:db8::2", "10.9.9.9"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let region = Region::new(GLOBAL);
    let mut found = 0;
    for _ in 0..1000 {
        for &ip in &addresses {
            if let Some(entry) = view.by_ip(ip) {
                found += usize::from(entry.is_active() && !entry.iccid.as_str().is_empty());
            }
        }
    }
    let change = region.change();
    assert_eq!(found, 3000);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
}

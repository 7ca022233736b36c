//! The in-memory view that answers the hot-path lookup by IP.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use coapgate_model::{Device, DeviceDirectory, Iccid};

/// The address under which a device is stored and looked up.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 peer) is the IPv4 address `a.b.c.d`; every other
/// address is itself.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Every device of the store, by IP address, in memory.
///
/// Obtained from [`Store::directory`](crate::Store::directory); cheap to
/// clone (all clones share one map), `Send + Sync`. The store updates it
/// after each successful write, before the write call returns, so a lookup
/// that starts after `put_device` or `remove_device` returned sees the
/// change. [`by_ip`](DeviceDirectory::by_ip) takes a read lock on a hash map
/// and clones an `Arc`; writers hold the write lock only for one map insert
/// or removal, never across database work.
///
/// Lookups normalise the address with [`canonical_ip`], so a datagram from
/// `::ffff:10.0.0.7` finds the device registered as `10.0.0.7`.
#[derive(Clone, Default)]
pub struct DeviceView {
    maps: Arc<RwLock<Maps>>,
}

/// Both maps change under one lock, so they always agree.
#[derive(Default)]
struct Maps {
    /// The hot-path index, keyed by canonical address.
    by_ip: HashMap<IpAddr, Arc<Device>>,
    /// Where each device sits in `by_ip`, so that a replace or remove finds
    /// the old address without asking the database.
    ip_of: HashMap<Iccid, IpAddr>,
}

impl DeviceView {
    /// How many devices the view holds.
    pub fn len(&self) -> usize {
        self.read().by_ip.len()
    }

    /// Whether the view holds no device.
    pub fn is_empty(&self) -> bool {
        self.read().by_ip.is_empty()
    }

    // A panic while holding the lock can only happen inside a HashMap insert
    // or remove, which leaves the map consistent; so a poisoned lock is used
    // as it is rather than taking the endpoint down.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the whole content (at open).
    pub(crate) fn load(&self, devices: impl IntoIterator<Item = Device>) {
        let devices = devices.into_iter();
        // Sized once: growing two maps of a million entries step by step
        // rehashed them a dozen times (a tenth of a million-device start).
        let (expected, _) = devices.size_hint();
        let mut maps = Maps {
            by_ip: HashMap::with_capacity(expected),
            ip_of: HashMap::with_capacity(expected),
        };
        for device in devices {
            maps.put(device);
        }
        *self.write() = maps;
    }

    /// Records a created or replaced device, dropping its previous address.
    pub(crate) fn put(&self, device: Device) {
        self.write().put(device);
    }

    /// Forgets a removed device and its address.
    pub(crate) fn remove(&self, iccid: &Iccid) {
        let mut maps = self.write();
        if let Some(ip) = maps.ip_of.remove(iccid) {
            maps.drop_address(ip, iccid);
        }
    }
}

impl Maps {
    /// Changes read back from another process may arrive in any order (a
    /// device taking the address another one just gave up, applied before
    /// the other's move), so each step checks whose entry it touches.
    fn put(&mut self, device: Device) {
        let ip = canonical_ip(device.ip);
        if let Some(old) = self.ip_of.insert(device.iccid.clone(), ip) {
            if old != ip {
                self.drop_address(old, &device.iccid);
            }
        }
        let iccid = device.iccid.clone();
        if let Some(previous) = self.by_ip.insert(ip, Arc::new(device)) {
            if previous.iccid != iccid && self.ip_of.get(&previous.iccid) == Some(&ip) {
                self.ip_of.remove(&previous.iccid);
            }
        }
    }

    /// Removes `ip` from the index if it still belongs to `iccid`.
    fn drop_address(&mut self, ip: IpAddr, iccid: &Iccid) {
        if self.by_ip.get(&ip).is_some_and(|d| &d.iccid == iccid) {
            self.by_ip.remove(&ip);
        }
    }
}

impl DeviceDirectory for DeviceView {
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Device>> {
        self.read().by_ip.get(&canonical_ip(ip)).cloned()
    }
}

impl fmt::Debug for DeviceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceView")
            .field("devices", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coapgate_model::DeviceStatus;

    fn device(iccid: &str, ip: &str) -> Device {
        Device {
            iccid: iccid.parse().unwrap(),
            imsi: None,
            ip: ip.parse().unwrap(),
            status: DeviceStatus::Active,
            name: None,
        }
    }

    #[test]
    fn an_address_handed_over_out_of_order_ends_where_the_database_has_it() {
        let a = "8988280666000000001";
        let b = "8988280666000000002";
        let view = DeviceView::default();
        view.put(device(b, "10.0.0.1"));
        // The database: b moved to 10.0.0.2, then a took 10.0.0.1; the view
        // hears of a first.
        view.put(device(a, "10.0.0.1"));
        view.put(device(b, "10.0.0.2"));
        let at = |ip: &str| view.by_ip(ip.parse().unwrap()).map(|d| d.iccid.to_string());
        assert_eq!(at("10.0.0.1").as_deref(), Some(a));
        assert_eq!(at("10.0.0.2").as_deref(), Some(b));
        assert_eq!(view.len(), 2);
        // And a removal of b never takes a's address with it.
        view.remove(&b.parse().unwrap());
        assert_eq!(at("10.0.0.1").as_deref(), Some(a));
        assert_eq!(view.len(), 1);
    }
}

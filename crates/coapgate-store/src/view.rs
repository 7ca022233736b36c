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
        let mut maps = Maps::default();
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
            maps.by_ip.remove(&ip);
        }
    }
}

impl Maps {
    fn put(&mut self, device: Device) {
        let ip = canonical_ip(device.ip);
        if let Some(old) = self.ip_of.insert(device.iccid.clone(), ip) {
            self.by_ip.remove(&old);
        }
        self.by_ip.insert(ip, Arc::new(device));
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

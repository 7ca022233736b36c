//! The in-memory view that answers the hot-path lookup by IP.
//!
//! Built for a carrier's fleet (a million devices and more, issue 13): one
//! `Vec` of fixed-size slots, one per device (the ICCID and IMSI packed
//! into integers, [`crate::compact`]; the address; the status), and two
//! hashbrown `HashTable<u32>` indexes into it, by address and by ICCID,
//! hashed with foldhash under a random seed per table (addresses are chosen
//! by whoever sends a datagram: no unkeyed hash). A slot is 40 bytes and an
//! index entry 5 bytes, so a device costs about 60 bytes with the indexes'
//! slack. The name is not kept: the hot path does not read it, and the
//! admin API reads devices from the database. A lookup builds a
//! [`DeviceEntry`] from the slot on the stack, without allocating.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus, Iccid};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::compact::{PackedIccid, pack_imsi, unpack_imsi};

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
/// clone (all clones share one table), `Send + Sync`. The store updates it
/// after each successful write, before the write call returns, so a lookup
/// that starts after `put_device` or `remove_device` returned sees the
/// change. [`by_ip`](DeviceDirectory::by_ip) takes a read lock, probes a
/// hash index and copies a 40-byte slot; writers hold the write lock only
/// for one slot's change, never across database work. It holds what the
/// hot path needs of each device ([`DeviceEntry`]), not its name.
///
/// Lookups normalise the address with [`canonical_ip`], so a datagram from
/// `::ffff:10.0.0.7` finds the device registered as `10.0.0.7`.
#[derive(Clone, Default)]
pub struct DeviceView {
    table: Arc<RwLock<Table>>,
}

/// Every device in one vector of slots, with an index by address and one
/// by ICCID; both change under one lock, so they always agree.
#[derive(Default)]
pub(crate) struct Table {
    hasher: DefaultHashBuilder,
    slots: Vec<Slot>,
    /// Slots of removed devices, for the next new one.
    free: Vec<u32>,
    /// The hot-path index: slot numbers, hashed by canonical address.
    by_ip: HashTable<u32>,
    /// The same slots hashed by ICCID, so that a replace or remove finds a
    /// device's slot without asking the database.
    by_iccid: HashTable<u32>,
}

/// One device, 40 bytes.
#[derive(Clone, Copy)]
struct Slot {
    /// [`PackedIccid::low`].
    iccid_low: u64,
    /// The IMSI as a number ([`pack_imsi`]).
    imsi: u64,
    /// Canonical.
    ip: IpAddr,
    /// [`PackedIccid::high`].
    iccid_high: u8,
    /// The IMSI's length in digits, 0 for none.
    imsi_len: u8,
    active: bool,
}

impl Slot {
    fn new(device: &Device) -> Self {
        let iccid = PackedIccid::new(&device.iccid);
        let (imsi, imsi_len) = pack_imsi(device.imsi.as_ref());
        Self {
            iccid_low: iccid.low,
            imsi,
            ip: canonical_ip(device.ip),
            iccid_high: iccid.high,
            imsi_len,
            active: device.is_active(),
        }
    }

    fn iccid(&self) -> PackedIccid {
        PackedIccid {
            low: self.iccid_low,
            high: self.iccid_high,
        }
    }

    /// `None` only for a slot no device packs to.
    fn entry(&self) -> Option<DeviceEntry> {
        Some(DeviceEntry {
            iccid: self.iccid().iccid()?,
            imsi: unpack_imsi(self.imsi, self.imsi_len),
            status: if self.active {
                DeviceStatus::Active
            } else {
                DeviceStatus::Inactive
            },
        })
    }
}

impl DeviceView {
    /// How many devices the view holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the view holds no device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock can only come from a failed allocation
    // inside an insert, which leaves the indexes consistent; so a poisoned
    // lock is used as it is rather than taking the endpoint down.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the whole content (at open and resync) with a table built
    /// beforehand, outside the lock.
    pub(crate) fn replace(&self, table: Table) {
        let old = std::mem::replace(&mut *self.write(), table);
        // Freed after the lock is released.
        drop(old);
    }

    /// Records a created or replaced device, dropping its previous address.
    pub(crate) fn put(&self, device: &Device) {
        self.write().put(device);
    }

    /// Forgets a removed device and its address.
    pub(crate) fn remove(&self, iccid: &Iccid) {
        self.write().remove(iccid);
    }
}

impl Table {
    /// An empty table with room for `devices` without growing (growing a
    /// million-entry index step by step rehashes it a dozen times).
    pub(crate) fn with_capacity(devices: usize) -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            slots: Vec::with_capacity(devices),
            free: Vec::new(),
            by_ip: HashTable::with_capacity(devices),
            by_iccid: HashTable::with_capacity(devices),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_iccid.len()
    }

    fn find_ip(&self, ip: IpAddr) -> Option<u32> {
        let slots = &self.slots;
        self.by_ip
            .find(self.hasher.hash_one(ip), |&i| slots[i as usize].ip == ip)
            .copied()
    }

    fn find_iccid(&self, iccid: PackedIccid) -> Option<u32> {
        let slots = &self.slots;
        self.by_iccid
            .find(self.hasher.hash_one(iccid), |&i| {
                slots[i as usize].iccid() == iccid
            })
            .copied()
    }

    /// The device at this address (canonical).
    fn get(&self, ip: IpAddr) -> Option<&Slot> {
        self.find_ip(ip).map(|i| &self.slots[i as usize])
    }

    /// Records a created or replaced device: the device with its ICCID (at
    /// whatever address) and the device at its address (whatever its
    /// ICCID) are replaced by this one.
    ///
    /// Changes read back from another process may arrive in any order (a
    /// device taking the address another one just gave up, applied before
    /// the other's move): the address's previous holder is dropped here,
    /// and when its own move arrives it is put at its new address; a
    /// removal only ever takes the removed device's own slot.
    pub(crate) fn put(&mut self, device: &Device) {
        let slot = Slot::new(device);
        let mine = self.find_iccid(slot.iccid());
        let holder = self.find_ip(slot.ip);
        if let Some(holder) = holder.filter(|&h| Some(h) != mine) {
            self.remove_slot(holder);
        }
        let Table {
            hasher,
            slots,
            free,
            by_ip,
            by_iccid,
        } = self;
        match mine {
            Some(i) => {
                let old_ip = slots[i as usize].ip;
                if old_ip != slot.ip {
                    if let Ok(entry) = by_ip.find_entry(hasher.hash_one(old_ip), |&j| j == i) {
                        entry.remove();
                    }
                    by_ip.insert_unique(hasher.hash_one(slot.ip), i, |&j| {
                        hasher.hash_one(slots[j as usize].ip)
                    });
                }
                slots[i as usize] = slot;
            }
            None => {
                let i = match free.pop() {
                    Some(i) => {
                        slots[i as usize] = slot;
                        i
                    }
                    None => {
                        let Ok(i) = u32::try_from(slots.len()) else {
                            tracing::error!(
                                iccid = %device.iccid,
                                "the device view is full (2^32 devices); device not served"
                            );
                            return;
                        };
                        slots.push(slot);
                        i
                    }
                };
                by_ip.insert_unique(hasher.hash_one(slot.ip), i, |&j| {
                    hasher.hash_one(slots[j as usize].ip)
                });
                by_iccid.insert_unique(hasher.hash_one(slot.iccid()), i, |&j| {
                    hasher.hash_one(slots[j as usize].iccid())
                });
            }
        }
    }

    /// Forgets the device with this ICCID and its address.
    fn remove(&mut self, iccid: &Iccid) {
        if let Some(i) = self.find_iccid(PackedIccid::new(iccid)) {
            self.remove_slot(i);
        }
    }

    /// Takes slot `i` out of both indexes and onto the free list.
    fn remove_slot(&mut self, i: u32) {
        let slot = self.slots[i as usize];
        if let Ok(entry) = self
            .by_ip
            .find_entry(self.hasher.hash_one(slot.ip), |&j| j == i)
        {
            entry.remove();
        }
        if let Ok(entry) = self
            .by_iccid
            .find_entry(self.hasher.hash_one(slot.iccid()), |&j| j == i)
        {
            entry.remove();
        }
        self.free.push(i);
    }
}

impl DeviceDirectory for DeviceView {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        let slot = *self.read().get(canonical_ip(ip))?;
        slot.entry()
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use coapgate_model::Imsi;
    use proptest::prelude::*;
    use std::collections::HashMap;

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
    fn a_slot_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
    }

    #[test]
    fn an_address_handed_over_out_of_order_ends_where_the_database_has_it() {
        let a = "8988280666000000001";
        let b = "8988280666000000002";
        let view = DeviceView::default();
        view.put(&device(b, "10.0.0.1"));
        // The database: b moved to 10.0.0.2, then a took 10.0.0.1; the view
        // hears of a first.
        view.put(&device(a, "10.0.0.1"));
        view.put(&device(b, "10.0.0.2"));
        let at = |ip: &str| view.by_ip(ip.parse().unwrap()).map(|d| d.iccid.to_string());
        assert_eq!(at("10.0.0.1").as_deref(), Some(a));
        assert_eq!(at("10.0.0.2").as_deref(), Some(b));
        assert_eq!(view.len(), 2);
        // And a removal of b never takes a's address with it.
        view.remove(&b.parse().unwrap());
        assert_eq!(at("10.0.0.1").as_deref(), Some(a));
        assert_eq!(view.len(), 1);
    }

    /// The view as it was before the compact table (two `HashMap`s), kept
    /// as the reference the compact one must answer exactly like.
    #[derive(Default)]
    struct Model {
        by_ip: HashMap<IpAddr, Device>,
        ip_of: HashMap<Iccid, IpAddr>,
    }

    impl Model {
        fn put(&mut self, mut device: Device) {
            let ip = canonical_ip(device.ip);
            device.ip = ip;
            if let Some(old) = self.ip_of.insert(device.iccid.clone(), ip) {
                if old != ip {
                    self.drop_address(old, &device.iccid);
                }
            }
            let iccid = device.iccid.clone();
            if let Some(previous) = self.by_ip.insert(ip, device) {
                if previous.iccid != iccid && self.ip_of.get(&previous.iccid) == Some(&ip) {
                    self.ip_of.remove(&previous.iccid);
                }
            }
        }

        fn remove(&mut self, iccid: &Iccid) {
            if let Some(ip) = self.ip_of.remove(iccid) {
                self.drop_address(ip, iccid);
            }
        }

        fn drop_address(&mut self, ip: IpAddr, iccid: &Iccid) {
            if self.by_ip.get(&ip).is_some_and(|d| &d.iccid == iccid) {
                self.by_ip.remove(&ip);
            }
        }
    }

    // ICCIDs of both lengths, with leading zeros and past u64::MAX.
    const ICCIDS: [&str; 6] = [
        "8988280666000000001",
        "0000000000000000001",
        "89882806660000000001",
        "08988280666000000001",
        "99999999999999999999",
        "18446744073709551616",
    ];
    const IPS: [&str; 6] = [
        "10.0.0.1",
        "::ffff:10.0.0.1",
        "10.0.0.2",
        "::1",
        "2001:db8::1",
        "::ffff:10.0.0.3",
    ];
    const IMSIS: [Option<&str>; 3] = [None, Some("901405100000000"), Some("000123")];

    #[derive(Debug, Clone)]
    enum Op {
        Put(Device),
        Remove(usize),
        Load(Vec<Device>),
    }

    fn any_device() -> impl Strategy<Value = Device> {
        (0..ICCIDS.len(), 0..IPS.len(), 0..IMSIS.len(), any::<bool>()).prop_map(
            |(i, ip, imsi, active)| Device {
                iccid: ICCIDS[i].parse().unwrap(),
                imsi: IMSIS[imsi].map(|s| s.parse::<Imsi>().unwrap()),
                ip: IPS[ip].parse().unwrap(),
                status: if active {
                    DeviceStatus::Active
                } else {
                    DeviceStatus::Inactive
                },
                name: Some("not kept".into()),
            },
        )
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any_device().prop_map(Op::Put),
            3 => (0..ICCIDS.len()).prop_map(Op::Remove),
            1 => prop::collection::vec(any_device(), 0..8).prop_map(Op::Load),
        ]
    }

    proptest! {
        #[test]
        fn the_compact_view_answers_like_two_hash_maps(ops in prop::collection::vec(any_op(), 1..60)) {
            let view = DeviceView::default();
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Put(device) => {
                        view.put(&device);
                        model.put(device);
                    }
                    Op::Remove(i) => {
                        let iccid: Iccid = ICCIDS[i].parse().unwrap();
                        view.remove(&iccid);
                        model.remove(&iccid);
                    }
                    Op::Load(devices) => {
                        let mut table = Table::with_capacity(devices.len());
                        model = Model::default();
                        for device in devices {
                            table.put(&device);
                            model.put(device);
                        }
                        view.replace(table);
                    }
                }
                prop_assert_eq!(view.len(), model.by_ip.len());
                prop_assert_eq!(model.ip_of.len(), model.by_ip.len());
                for ip in IPS {
                    let ip: IpAddr = ip.parse().unwrap();
                    let expected = model.by_ip.get(&canonical_ip(ip)).map(Device::entry);
                    prop_assert_eq!(view.by_ip(ip), expected);
                }
            }
        }
    }
}

//! PSK records (spec.md §2.4): the `psks` table, and the in-memory key map the
//! DTLS handshake reads.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use coapgate_bootstrap::{PskOrigin, PskRecord, PskUpdate};
use coapgate_model::{Iccid, from_epoch_millis};
use hashbrown::{DefaultHashBuilder, HashTable};
use zeroize::{Zeroize, Zeroizing};

use crate::backend::{PskRow, RawPsk, parse_iccid};
use crate::compact::PackedIccid;
use crate::{Store, StoreError};

/// A few devices' keys by ICCID (what a change read back holds).
pub(crate) type KeyMap = HashMap<Iccid, Zeroizing<Vec<u8>>>;

/// Every device's DTLS key by PSK identity (the ICCID), in memory.
///
/// Obtained from [`Store::psk_keys`]; cheap to clone, `Send + Sync`. The
/// store updates it after each PSK write commits, before the write call
/// returns, so the next DTLS handshake uses the new key. `Debug` shows only
/// how many keys it holds.
///
/// Compact for a large fleet: the keys' bytes one after another in a single
/// arena, a 16-byte slot per key (the ICCID packed into integers, where its
/// bytes are) and a hash index of slot numbers by ICCID (foldhash, a random
/// seed per table). Every byte that held a key is wiped: a replaced or
/// removed key in place, the arena whenever it is dropped — and it is never
/// grown in place (a reallocation would leave a copy behind), only copied
/// into a bigger arena whose predecessor is then dropped.
#[derive(Clone, Default)]
pub struct PskKeys {
    keys: Arc<RwLock<KeyTable>>,
}

/// The keys of [`PskKeys`]: see there.
#[derive(Default)]
pub(crate) struct KeyTable {
    hasher: DefaultHashBuilder,
    slots: Vec<KeySlot>,
    /// Slots of removed keys, for the next new one.
    free: Vec<u32>,
    /// Slot numbers, hashed by ICCID.
    index: HashTable<u32>,
    /// The keys' bytes; only ever appended to within its capacity.
    bytes: Zeroizing<Vec<u8>>,
    /// How many bytes of `bytes` belonged to replaced or removed keys (now
    /// zero); reclaimed when the arena is next copied.
    garbage: usize,
}

/// One key, 16 bytes; `len` 0 is a free slot (a key is never empty).
#[derive(Clone, Copy)]
struct KeySlot {
    iccid_low: u64,
    start: u32,
    len: u16,
    iccid_high: u8,
}

impl KeySlot {
    fn iccid(&self) -> PackedIccid {
        PackedIccid {
            low: self.iccid_low,
            high: self.iccid_high,
        }
    }

    fn range(&self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + usize::from(self.len)
    }
}

/// An arena never starts smaller than this.
const MIN_ARENA: usize = 256;

impl KeyTable {
    /// An empty table with room for `keys` keys of about `bytes` bytes in
    /// all, without growing.
    pub(crate) fn with_capacity(keys: usize, bytes: usize) -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            slots: Vec::with_capacity(keys),
            free: Vec::new(),
            index: HashTable::with_capacity(keys),
            bytes: Zeroizing::new(Vec::with_capacity(bytes)),
            garbage: 0,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn find(&self, iccid: PackedIccid) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(iccid), |&i| {
                slots[i as usize].iccid() == iccid
            })
            .copied()
    }

    fn key(&self, iccid: &Iccid) -> Option<Zeroizing<Vec<u8>>> {
        let slot = self.slots[self.find(PackedIccid::new(iccid))? as usize];
        Some(Zeroizing::new(self.bytes.get(slot.range())?.to_vec()))
    }

    /// Sets (adds or replaces) a device's key.
    pub(crate) fn set(&mut self, iccid: &Iccid, key: &[u8]) {
        let packed = PackedIccid::new(iccid);
        let Ok(len) = u16::try_from(key.len()) else {
            // A PSK has at most 256 characters: never.
            tracing::error!(%iccid, "a DTLS key over 64 KiB; not kept");
            return;
        };
        if len == 0 {
            // A PSK has at least 8 characters: never.
            tracing::error!(%iccid, "an empty DTLS key; not kept");
            return;
        }
        let found = self.find(packed);
        if let Some(i) = found {
            let slot = self.slots[i as usize];
            if slot.len == len {
                if let Some(bytes) = self.bytes.get_mut(slot.range()) {
                    bytes.copy_from_slice(key);
                }
                return;
            }
            self.wipe(slot);
            // Out of the arena while it may be copied.
            self.slots[i as usize].len = 0;
        }
        let Some(start) = self.append(key) else {
            tracing::error!(%iccid, "the DTLS key arena is full (4 GiB); key not kept");
            if let Some(i) = found {
                self.remove_slot(i);
            }
            return;
        };
        let slot = KeySlot {
            iccid_low: packed.low,
            start,
            len,
            iccid_high: packed.high,
        };
        if let Some(i) = found {
            self.slots[i as usize] = slot;
            return;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                let Ok(i) = u32::try_from(self.slots.len()) else {
                    self.wipe(slot);
                    tracing::error!(%iccid, "the DTLS key table is full (2^32 keys); key not kept");
                    return;
                };
                self.slots.push(slot);
                i
            }
        };
        let KeyTable {
            hasher,
            slots,
            index,
            ..
        } = self;
        index.insert_unique(hasher.hash_one(packed), i, |&j| {
            hasher.hash_one(slots[j as usize].iccid())
        });
    }

    /// Forgets a device's key, wiping it.
    fn remove(&mut self, iccid: &Iccid) {
        if let Some(i) = self.find(PackedIccid::new(iccid)) {
            self.remove_slot(i);
        }
    }

    fn remove_slot(&mut self, i: u32) {
        let slot = self.slots[i as usize];
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(slot.iccid()), |&j| j == i)
        {
            entry.remove();
        }
        if slot.len > 0 {
            self.wipe(slot);
        }
        self.slots[i as usize].len = 0;
        self.free.push(i);
        // Mostly garbage: copy the live keys into a smaller arena.
        if self.garbage > MIN_ARENA && self.garbage > self.bytes.len() / 2 {
            self.copy_arena(0, 0);
        }
    }

    /// Zeroes a key's bytes in the arena, which become garbage.
    fn wipe(&mut self, slot: KeySlot) {
        if let Some(bytes) = self.bytes.get_mut(slot.range()) {
            bytes.zeroize();
            self.garbage += bytes.len();
        }
    }

    /// Adds a key's bytes at the end of the arena (copying it into a bigger
    /// one first if needed); where they start, or `None` past 4 GiB.
    fn append(&mut self, key: &[u8]) -> Option<u32> {
        if self.bytes.capacity() - self.bytes.len() < key.len() {
            let live = self.bytes.len() - self.garbage;
            self.copy_arena(key.len(), live + key.len());
        }
        let start = u32::try_from(self.bytes.len()).ok()?;
        u32::try_from(self.bytes.len() + key.len()).ok()?;
        // Within the capacity: never reallocates.
        self.bytes.extend_from_slice(key);
        Some(start)
    }

    /// Copies the live keys into a new arena with room for `room` more
    /// bytes and `slack` bytes beyond that; the old arena is wiped as it is
    /// dropped, and the garbage is gone.
    fn copy_arena(&mut self, room: usize, slack: usize) {
        let live = self.bytes.len() - self.garbage;
        let mut bytes = Zeroizing::new(Vec::with_capacity((live + room + slack).max(MIN_ARENA)));
        for slot in self.slots.iter_mut().filter(|s| s.len > 0) {
            let Some(key) = self.bytes.get(slot.range()) else {
                continue;
            };
            // Below the old arena's length, which fitted in a u32.
            slot.start = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(key);
        }
        self.bytes = bytes;
        self.garbage = 0;
    }

    /// After a load: the arena's spare room given back (copied into one of
    /// the right size), so a million keys cost their bytes and no more.
    pub(crate) fn fit(&mut self) {
        let live = self.bytes.len() - self.garbage;
        if self.bytes.capacity() > live + live / 16 + MIN_ARENA {
            self.copy_arena(0, live / 32);
        }
    }
}

impl PskKeys {
    /// The DTLS key for a PSK identity (an ICCID), if the device has a PSK.
    pub fn key(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        let iccid: Iccid = identity.parse().ok()?;
        self.read().key(&iccid)
    }

    /// How many devices have a key.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no device has a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, KeyTable> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, KeyTable> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, iccid: &Iccid, record: &PskRecord) {
        self.set_key(iccid, &record.key());
    }

    pub(crate) fn set_key(&self, iccid: &Iccid, key: &[u8]) {
        self.write().set(iccid, key);
    }

    pub(crate) fn remove(&self, iccid: &Iccid) {
        self.write().remove(iccid);
    }

    /// The keys of stored records, by ICCID (a few devices' rows, read back
    /// after another process changed them).
    pub(crate) fn parse(rows: &[RawPsk]) -> Result<KeyMap, StoreError> {
        let mut keys = HashMap::with_capacity(rows.len());
        for row in rows {
            let record = restore(row)?;
            keys.insert(parse_iccid(&row.iccid, "psk")?, record.key());
        }
        Ok(keys)
    }

    /// Replaces every key (at open and resync) with a table built
    /// beforehand, outside the lock.
    pub(crate) fn replace(&self, keys: KeyTable) {
        let old = std::mem::replace(&mut *self.write(), keys);
        drop(old);
    }
}

impl fmt::Debug for PskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskKeys")
            .field("keys", &self.len())
            .finish()
    }
}

fn corrupt(key: &str, why: &dyn fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: format!("psk: {why}"),
    }
}

/// A stored row as a record; [`StoreError::Corrupt`] when it breaks a rule
/// (the reason names the rule, never the secret).
pub(crate) fn restore(row: &RawPsk) -> Result<PskRecord, StoreError> {
    restore_row(&row.row())
}

/// [`restore`] of a row borrowed from the database's buffers.
pub(crate) fn restore_row(row: &PskRow<'_>) -> Result<PskRecord, StoreError> {
    let origin: PskOrigin = row.origin.parse().map_err(|e| corrupt(row.iccid, &e))?;
    // Never written negative; a corrupted negative value reads as 1970.
    let last = row
        .last_bootstrap_ms
        .map(|ms| from_epoch_millis(u64::try_from(ms).unwrap_or(0)));
    PskRecord::restore(row.secret, origin, last).map_err(|e| corrupt(row.iccid, &e))
}

impl Store {
    /// The in-memory DTLS keys, by identity; they follow every later write.
    pub fn psk_keys(&self) -> PskKeys {
        self.inner.psk_keys.clone()
    }

    /// This device's PSK record, as stored.
    pub fn psk(&self, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
        self.inner.db.psk(iccid)
    }

    /// Sets a device's PSK (an operator's, from [`PskRecord::operator`]),
    /// replacing whatever it had; the next DTLS handshake uses it.
    /// [`StoreError::UnknownDevice`] when the device does not exist. A
    /// [`bootstrap`](Self::bootstrap) of the same device at the same moment
    /// (from any instance on the database) is ordered before or after it.
    pub fn set_psk(&self, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.inner.db.set_psk(iccid, record)?;
        self.inner.psk_keys.set(iccid, record);
        tracing::info!(%iccid, origin = record.origin.as_str(), "PSK set");
        Ok(())
    }
}

impl Store {
    /// Applies one `/bootstrap` call: reads the device's PSK record,
    /// [`apply`](PskUpdate::apply)s the update, stores the result, and
    /// makes it the device's DTLS key — one transaction on the writer
    /// connection that locks the device's record (SQLite: IMMEDIATE;
    /// PostgreSQL: the device's row `FOR NO KEY UPDATE`), so an operator
    /// setting a PSK at the same moment is ordered before or after, never
    /// lost, and two instances on one PostgreSQL database bootstrapping the
    /// same device at once hand out the same PSK. Returns the stored record.
    ///
    /// [`StoreError::UnknownDevice`] when the device is gone;
    /// [`StoreError::Busy`] when the database stayed locked for
    /// [`BUSY_TIMEOUT`](crate::BUSY_TIMEOUT) or cannot be reached (nothing
    /// was written).
    pub fn bootstrap(&self, update: &PskUpdate) -> Result<PskRecord, StoreError> {
        let iccid = &update.iccid;
        let _writing = self.writing();
        let (current, next) = self.inner.db.bootstrap(update)?;
        // Set even when unchanged: another instance may have issued it.
        self.inner.psk_keys.set(iccid, &next);
        if current.as_ref().map(|c| &c.psk) != Some(&next.psk) {
            tracing::info!(%iccid, origin = next.origin.as_str(), "PSK issued by /bootstrap");
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const ICCIDS: [&str; 4] = [
        "8988280666000000001",
        "08988280666000000001",
        "99999999999999999999",
        "8988280666000000002",
    ];

    #[test]
    fn a_key_slot_is_16_bytes() {
        assert_eq!(std::mem::size_of::<KeySlot>(), 16);
    }

    #[test]
    fn debug_shows_no_key() {
        let keys = PskKeys::default();
        keys.set_key(&ICCIDS[0].parse().unwrap(), b"secret-key-bytes");
        let shown = format!("{keys:?}");
        assert_eq!(shown, "PskKeys { keys: 1 }");
    }

    #[test]
    fn replaced_and_removed_keys_are_wiped_in_the_arena() {
        let mut table = KeyTable::default();
        let a: Iccid = ICCIDS[0].parse().unwrap();
        let b: Iccid = ICCIDS[1].parse().unwrap();
        table.set(&a, b"AAAAAAAAAAAAAAAA");
        table.set(&b, b"BBBBBBBBBBBBBBBB");
        // A key of another length goes elsewhere; the old bytes are zero.
        table.set(&a, b"CCCCCCCCCCCCCCCCCCCC");
        table.remove(&b);
        let bytes: &[u8] = &table.bytes;
        assert!(!bytes.windows(4).any(|w| w == b"AAAA" || w == b"BBBB"));
        assert_eq!(table.key(&a).unwrap().as_slice(), b"CCCCCCCCCCCCCCCCCCCC");
        assert_eq!(table.key(&b), None);
        assert_eq!(table.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, Vec<u8>),
        Remove(usize),
        Fit,
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..ICCIDS.len(), prop::collection::vec(1u8..=255, 1..300))
                .prop_map(|(i, key)| Op::Set(i, key)),
            3 => (0..ICCIDS.len()).prop_map(Op::Remove),
            1 => Just(Op::Fit),
        ]
    }

    proptest! {
        #[test]
        fn the_key_table_answers_like_a_hash_map(ops in prop::collection::vec(any_op(), 1..80)) {
            let mut table = KeyTable::default();
            let mut model: HashMap<Iccid, Vec<u8>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Set(i, key) => {
                        let iccid: Iccid = ICCIDS[i].parse().unwrap();
                        table.set(&iccid, &key);
                        model.insert(iccid, key);
                    }
                    Op::Remove(i) => {
                        let iccid: Iccid = ICCIDS[i].parse().unwrap();
                        table.remove(&iccid);
                        model.remove(&iccid);
                    }
                    Op::Fit => table.fit(),
                }
                prop_assert_eq!(table.len(), model.len());
                for iccid in ICCIDS {
                    let iccid: Iccid = iccid.parse().unwrap();
                    let found = table.key(&iccid).map(|k| k.to_vec());
                    prop_assert_eq!(found.as_ref(), model.get(&iccid));
                }
                // No byte of the arena outside a live key is anything but zero.
                let live: usize = model.values().map(Vec::len).sum();
                prop_assert_eq!(table.bytes.len() - table.garbage, live);
                let nonzero = table.bytes.iter().filter(|&&b| b != 0).count();
                prop_assert_eq!(nonzero, live);
            }
        }
    }
}

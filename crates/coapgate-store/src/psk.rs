//! PSK records (spec.md §2.4): the `psks` table, and the in-memory key map the
//! DTLS handshake reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use coapgate_bootstrap::{PskOrigin, PskRecord, PskUpdate};
use coapgate_model::{Iccid, from_epoch_millis};
use zeroize::Zeroizing;

use crate::backend::{RawPsk, parse_iccid};
use crate::{Store, StoreError};

/// Every device's DTLS key by PSK identity (the ICCID), in memory.
///
/// Obtained from [`Store::psk_keys`]; cheap to clone, `Send + Sync`. The
/// store updates it after each PSK write commits, before the write call
/// returns, so the next DTLS handshake uses the new key. `Debug` shows only
/// how many keys it holds.
#[derive(Clone, Default)]
pub struct PskKeys {
    keys: Arc<RwLock<KeyMap>>,
}

pub(crate) type KeyMap = HashMap<Iccid, Zeroizing<Vec<u8>>>;

impl PskKeys {
    /// The DTLS key for a PSK identity (an ICCID), if the device has a PSK.
    pub fn key(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        let iccid: Iccid = identity.parse().ok()?;
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&iccid)
            .cloned()
    }

    /// How many devices have a key.
    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no device has a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set(&self, iccid: &Iccid, record: &PskRecord) {
        self.set_key(iccid, record.key());
    }

    pub(crate) fn set_key(&self, iccid: &Iccid, key: Zeroizing<Vec<u8>>) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iccid.clone(), key);
    }

    pub(crate) fn remove(&self, iccid: &Iccid) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(iccid);
    }

    /// The keys of stored records (at open and resync).
    pub(crate) fn parse(rows: &[RawPsk]) -> Result<KeyMap, StoreError> {
        let mut keys = HashMap::with_capacity(rows.len());
        for row in rows {
            let record = restore(row)?;
            keys.insert(parse_iccid(&row.iccid, "psk")?, record.key());
        }
        Ok(keys)
    }

    /// Replaces every key.
    pub(crate) fn replace(&self, keys: KeyMap) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
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
    let origin: PskOrigin = row.origin.parse().map_err(|e| corrupt(&row.iccid, &e))?;
    // Never written negative; a corrupted negative value reads as 1970.
    let last = row
        .last_bootstrap_ms
        .map(|ms| from_epoch_millis(u64::try_from(ms).unwrap_or(0)));
    PskRecord::restore(&row.secret, origin, last).map_err(|e| corrupt(&row.iccid, &e))
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

//! PSK records (spec.md §2.4): the `psks` table, and the in-memory key map the
//! DTLS handshake reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use coapgate_bootstrap::{PskOrigin, PskRecord, PskUpdate};
use coapgate_model::{Iccid, epoch_millis, from_epoch_millis};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use zeroize::Zeroizing;

use crate::error::Context;
use crate::{Store, StoreError};

/// Every device's DTLS key by PSK identity (the ICCID), in memory.
///
/// Obtained from [`Store::psk_keys`]; cheap to clone, `Send + Sync`. The
/// store updates it after each PSK write commits, before the write call
/// returns, so the next DTLS handshake uses the new key. `Debug` shows only
/// how many keys it holds.
#[derive(Clone, Default)]
pub struct PskKeys {
    keys: Arc<RwLock<HashMap<Iccid, Zeroizing<Vec<u8>>>>>,
}

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
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iccid.clone(), record.key());
    }

    pub(crate) fn remove(&self, iccid: &Iccid) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(iccid);
    }

    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut stmt = conn
            .prepare("SELECT iccid, secret, origin, last_bootstrap_ms FROM psks")
            .context("load PSKs")?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Zeroizing::new(row.get::<_, String>(1)?),
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                ))
            })
            .context("load PSKs")?;
        let mut keys = HashMap::new();
        for row in rows {
            let (iccid, secret, origin, last) = row.context("load PSKs")?;
            let record = restore(&iccid, &secret, &origin, last)?;
            let iccid = iccid.parse().map_err(|e| corrupt(&iccid, &e))?;
            keys.insert(iccid, record.key());
        }
        Ok(Self {
            keys: Arc::new(RwLock::new(keys)),
        })
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

fn restore(
    iccid: &str,
    secret: &str,
    origin: &str,
    last_ms: Option<i64>,
) -> Result<PskRecord, StoreError> {
    let origin: PskOrigin = origin.parse().map_err(|e| corrupt(iccid, &e))?;
    // Never written negative; a corrupted negative value reads as 1970.
    let last = last_ms.map(|ms| from_epoch_millis(u64::try_from(ms).unwrap_or(0)));
    // The reason names the rule broken, never the secret.
    PskRecord::restore(secret, origin, last).map_err(|e| corrupt(iccid, &e))
}

fn read(tx: &Connection, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
    let row = tx
        .query_row(
            "SELECT secret, origin, last_bootstrap_ms FROM psks WHERE iccid = ?1",
            [iccid.as_str()],
            |row| {
                Ok((
                    Zeroizing::new(row.get::<_, String>(0)?),
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()
        .context("read a PSK")?;
    row.map(|(secret, origin, last)| restore(iccid.as_str(), &secret, &origin, last))
        .transpose()
}

pub(crate) fn device_exists(tx: &Transaction<'_>, iccid: &Iccid) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM devices WHERE iccid = ?1",
            [iccid.as_str()],
            |_| Ok(()),
        )
        .optional()
        .context("look a device up")?
        .is_some())
}

fn write(tx: &Transaction<'_>, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO psks (iccid, secret, origin, last_bootstrap_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (iccid) DO UPDATE SET secret = ?2, origin = ?3, last_bootstrap_ms = ?4, updated_ms = ?5",
        params![
            iccid.as_str(),
            record.psk.expose(),
            record.origin.as_str(),
            record.last_bootstrap.map(epoch_millis),
            epoch_millis(SystemTime::now()),
        ],
    )
    .context("write a PSK")?;
    Ok(())
}

impl Store {
    /// The in-memory DTLS keys, by identity; they follow every later write.
    pub fn psk_keys(&self) -> PskKeys {
        self.inner.psk_keys.clone()
    }

    /// This device's PSK record, as stored.
    pub fn psk(&self, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
        read(&self.conn(), iccid)
    }

    /// Sets a device's PSK (an operator's, from [`PskRecord::operator`]),
    /// replacing whatever it had; the next DTLS handshake uses it.
    /// [`StoreError::UnknownDevice`] when the device does not exist.
    pub fn set_psk(&self, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start writing a PSK")?;
        if !device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        write(&tx, iccid, record)?;
        tx.commit().context("commit a PSK")?;
        self.inner.psk_keys.set(iccid, record);
        tracing::info!(%iccid, origin = record.origin.as_str(), "PSK set");
        Ok(())
    }
}

impl Store {
    /// Applies one `/bootstrap` call: reads the device's PSK record,
    /// [`apply`](PskUpdate::apply)s the update, stores the result, and
    /// makes it the device's DTLS key — one IMMEDIATE transaction on the
    /// writer connection, so an operator setting a PSK at the same moment
    /// is ordered before or after, never lost. Returns the stored record.
    ///
    /// [`StoreError::UnknownDevice`] when the device is gone;
    /// [`StoreError::Busy`] when the database stayed locked for
    /// [`BUSY_TIMEOUT`](crate::BUSY_TIMEOUT) (nothing was written).
    pub fn bootstrap(&self, update: &PskUpdate) -> Result<PskRecord, StoreError> {
        let iccid = &update.iccid;
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("start updating a PSK")?;
        if !device_exists(&tx, iccid)? {
            return Err(StoreError::UnknownDevice {
                iccid: iccid.clone(),
            });
        }
        let current = read(&tx, iccid)?;
        let next = update.apply(current.as_ref());
        write(&tx, iccid, &next)?;
        tx.commit().context("commit a PSK")?;
        if current.as_ref().map(|c| &c.psk) != Some(&next.psk) {
            self.inner.psk_keys.set(iccid, &next);
            tracing::info!(%iccid, origin = next.origin.as_str(), "PSK issued by /bootstrap");
        }
        Ok(next)
    }
}

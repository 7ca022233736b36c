//! Domain types shared by every coapgate crate.
//!
//! A device is identified by its SIM: the [`Iccid`] names it, the source IP
//! address of its SIM ("SIM-as-an-Identity") finds it on the hot path. The
//! types here validate on construction, so a value of type [`Iccid`] is always
//! 19 or 20 decimal digits and a [`Device`] always has a valid identity.
//!
//! The pure crates read devices through the [`DeviceDirectory`] trait; the
//! store crate implements it with an in-memory view that it keeps current.
//! [`epoch_millis`] and [`from_epoch_millis`] convert wall-clock times to
//! and from the epoch milliseconds every crate stores and publishes.
//!
//! ```
//! use std::collections::HashMap;
//! use std::net::IpAddr;
//! use std::sync::Arc;
//! use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid, ModelError};
//!
//! // Identifiers are checked once, when parsed.
//! let iccid: Iccid = "8988280666000000000".parse()?;
//! assert_eq!("12345".parse::<Iccid>(), Err(ModelError::Iccid));
//!
//! // A directory that finds devices by their SIM's address (the store's is
//! // the same idea, kept current as devices change).
//! struct ByIp(HashMap<IpAddr, Arc<Device>>);
//! impl DeviceDirectory for ByIp {
//!     fn by_ip(&self, ip: IpAddr) -> Option<Arc<Device>> {
//!         self.0.get(&ip).cloned()
//!     }
//! }
//!
//! let device = Device {
//!     iccid,
//!     imsi: Some("901405100000000".parse()?),
//!     ip: "10.0.0.7".parse().unwrap(),
//!     status: DeviceStatus::Active,
//!     name: Some("meter 7".into()),
//! };
//! let directory = ByIp(HashMap::from([(device.ip, Arc::new(device))]));
//! let found = directory.by_ip("10.0.0.7".parse().unwrap()).expect("known address");
//! assert!(found.is_active());
//! assert_eq!(found.iccid.as_str(), "8988280666000000000");
//! assert!(directory.by_ip("10.0.0.8".parse().unwrap()).is_none());
//! # Ok::<(), ModelError>(())
//! ```

#![forbid(unsafe_code)]

mod time;

pub use time::{epoch_millis, from_epoch_millis};

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a value was not accepted as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An ICCID must be 19 or 20 decimal digits.
    #[error("an ICCID is 19 or 20 decimal digits")]
    Iccid,
    /// An IMSI must be 6 to 15 decimal digits.
    #[error("an IMSI is 6 to 15 decimal digits")]
    Imsi,
    /// A device status is `ACTIVE` or `INACTIVE`.
    #[error("a status is ACTIVE or INACTIVE")]
    Status,
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// The Integrated Circuit Card Identifier of a SIM: 19 or 20 decimal digits.
///
/// No Luhn check is made (spec.md §6).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Iccid(String);

impl Iccid {
    /// The ICCID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Iccid {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (19..=20).contains(&s.len()) && all_digits(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ModelError::Iccid)
        }
    }
}

impl TryFrom<String> for Iccid {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Iccid> for String {
    fn from(v: Iccid) -> Self {
        v.0
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iccid({})", self.0)
    }
}

/// The International Mobile Subscriber Identity of a SIM: 6 to 15 digits.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Imsi(String);

impl Imsi {
    /// The IMSI as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Imsi {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (6..=15).contains(&s.len()) && all_digits(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ModelError::Imsi)
        }
    }
}

impl TryFrom<String> for Imsi {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Imsi> for String {
    fn from(v: Imsi) -> Self {
        v.0
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imsi({})", self.0)
    }
}

/// Whether a device may talk to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeviceStatus {
    /// The device is served.
    Active,
    /// Every request of the device is answered 4.01 Unauthorized.
    Inactive,
}

impl DeviceStatus {
    /// `ACTIVE` or `INACTIVE`, as stored and as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
        }
    }
}

impl FromStr for DeviceStatus {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ACTIVE" => Ok(Self::Active),
            "INACTIVE" => Ok(Self::Inactive),
            _ => Err(ModelError::Status),
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device (a SIM) known to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The SIM's ICCID; the device's primary key.
    pub iccid: Iccid,
    /// The SIM's IMSI, when known; published in the envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<Imsi>,
    /// The SIM's IP address; at most one device has a given address.
    pub ip: IpAddr,
    /// Whether the device is served.
    pub status: DeviceStatus,
    /// A free-form label for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Device {
    /// Whether requests from this device are served.
    pub fn is_active(&self) -> bool {
        self.status == DeviceStatus::Active
    }
}

/// Finds devices on the hot path.
///
/// Implementations answer from memory: the endpoint calls this once per
/// datagram and must never wait for a database.
pub trait DeviceDirectory: Send + Sync {
    /// The device whose SIM has this address, whatever its status.
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Device>>;
}

impl<T: DeviceDirectory + ?Sized> DeviceDirectory for Arc<T> {
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Device>> {
        (**self).by_ip(ip)
    }
}

/// Which devices have had their one-time `DEVICE_FIRST_TIME_REGISTERED`
/// event published (spec.md §2.3): once per device ever, surviving restarts.
///
/// Read on the hot path, so implementations answer from memory. Recording
/// a registration is a write, which the engine asks its driver for as an
/// output once the broker confirmed the event.
pub trait Registrations: Send + Sync {
    /// Whether the device's first-time event was published and recorded.
    fn is_registered(&self, iccid: &Iccid) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iccid_is_19_or_20_digits() {
        assert!("8988280666000000000".parse::<Iccid>().is_ok());
        assert!("89882806660000000001".parse::<Iccid>().is_ok());
        assert_eq!(
            "898828066600000000".parse::<Iccid>(),
            Err(ModelError::Iccid)
        );
        assert_eq!(
            "898828066600000000012".parse::<Iccid>(),
            Err(ModelError::Iccid)
        );
        assert_eq!(
            "898828066600000000a".parse::<Iccid>(),
            Err(ModelError::Iccid)
        );
        assert_eq!(
            "８98828066600000000".parse::<Iccid>(),
            Err(ModelError::Iccid)
        );
    }

    #[test]
    fn imsi_is_6_to_15_digits() {
        assert!("901405100000000".parse::<Imsi>().is_ok());
        assert!("12345".parse::<Imsi>().is_err());
        assert!("9014051000000001".parse::<Imsi>().is_err());
    }

    #[test]
    fn device_reads_api_json_and_rejects_bad_fields() {
        let d: Device = serde_json::from_str(
            r#"{"iccid":"8988280666000000000","imsi":"901405100000000","ip":"10.0.0.7","status":"ACTIVE"}"#,
        )
        .unwrap();
        assert!(d.is_active());
        assert_eq!(d.ip, "10.0.0.7".parse::<IpAddr>().unwrap());
        let bad =
            serde_json::from_str::<Device>(r#"{"iccid":"1","ip":"10.0.0.7","status":"ACTIVE"}"#);
        assert!(bad.is_err());
        let bad = serde_json::from_str::<Device>(
            r#"{"iccid":"8988280666000000000","ip":"10.0.0.7","status":"ACTIVE","colour":1}"#,
        );
        assert!(bad.is_err());
    }
}

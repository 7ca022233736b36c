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
//! use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus, Iccid, ModelError};
//!
//! // Identifiers are checked once, when parsed.
//! let iccid: Iccid = "8988280666000000000".parse()?;
//! assert_eq!("12345".parse::<Iccid>(), Err(ModelError::Iccid));
//!
//! // A directory that finds devices by their SIM's address (the store's is
//! // the same idea, kept current as devices change).
//! struct ByIp(HashMap<IpAddr, Device>);
//! impl DeviceDirectory for ByIp {
//!     fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
//!         self.0.get(&ip).map(Device::entry)
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
//! let directory = ByIp(HashMap::from([(device.ip, device)]));
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

/// Up to `N` ASCII decimal digits, inline: the text of an [`Iccid`] or an
/// [`Imsi`] without a heap allocation. Unused bytes are zero, so the derived
/// equality and hash see only the text.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Digits<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Digits<N> {
    /// `None` unless `s` is 1 to `N` ASCII digits.
    fn new(s: &str) -> Option<Self> {
        let len = u8::try_from(s.len()).ok()?;
        if s.is_empty() || s.len() > N || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Self { len, bytes })
    }

    fn as_str(&self) -> &str {
        // Only ever ASCII digits (checked in `new`), so never the default.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// The Integrated Circuit Card Identifier of a SIM: 19 or 20 decimal digits.
///
/// No Luhn check is made (spec.md §6). Held inline (no heap memory), so a
/// clone is a copy of 21 bytes; ordered as its text.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Iccid(Digits<20>);

impl Iccid {
    /// The ICCID as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Iccid {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (19..=20).contains(&s.len()) {
            Digits::new(s).map(Self).ok_or(ModelError::Iccid)
        } else {
            Err(ModelError::Iccid)
        }
    }
}

impl PartialOrd for Iccid {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Iccid {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
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
        v.as_str().to_owned()
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iccid({})", self.as_str())
    }
}

/// The International Mobile Subscriber Identity of a SIM: 6 to 15 digits.
///
/// Held inline (no heap memory), so a clone is a copy of 16 bytes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Imsi(Digits<15>);

impl Imsi {
    /// The IMSI as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Imsi {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (6..=15).contains(&s.len()) {
            Digits::new(s).map(Self).ok_or(ModelError::Imsi)
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
        v.as_str().to_owned()
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imsi({})", self.as_str())
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

    /// What the hot path needs of this device.
    pub fn entry(&self) -> DeviceEntry {
        DeviceEntry {
            iccid: self.iccid.clone(),
            imsi: self.imsi.clone(),
            status: self.status,
        }
    }
}

/// What the hot path knows of a device: who it is and whether it is served
/// (a [`Device`] without its address and name). Holds no heap memory, so a
/// directory builds one per lookup without allocating.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceEntry {
    /// The SIM's ICCID.
    pub iccid: Iccid,
    /// The SIM's IMSI, when known.
    pub imsi: Option<Imsi>,
    /// Whether the device is served.
    pub status: DeviceStatus,
}

impl DeviceEntry {
    /// Whether requests from this device are served.
    pub fn is_active(&self) -> bool {
        self.status == DeviceStatus::Active
    }
}

impl From<&Device> for DeviceEntry {
    fn from(device: &Device) -> Self {
        device.entry()
    }
}

/// Finds devices on the hot path.
///
/// Implementations answer from memory: the endpoint calls this once per
/// datagram and must never wait for a database, and should not allocate.
pub trait DeviceDirectory: Send + Sync {
    /// The device whose SIM has this address, whatever its status.
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry>;
}

impl<T: DeviceDirectory + ?Sized> DeviceDirectory for Arc<T> {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
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
    fn iccids_are_inline_and_ordered_as_text() {
        let short: Iccid = "8988280666000000009".parse().unwrap();
        let long: Iccid = "89882806660000000090".parse().unwrap();
        let zeros: Iccid = "0000000000000000000".parse().unwrap();
        // A prefix sorts first, as text does.
        assert!(zeros < short && short < long);
        assert!(long < "8988280666000000010".parse().unwrap());
        assert_eq!(long.as_str(), "89882806660000000090");
        assert_eq!(zeros.to_string(), "0000000000000000000");
        assert_ne!(short, "08988280666000000009".parse().unwrap());
        assert_eq!(String::from(long.clone()), long.as_str());
        assert!(std::mem::size_of::<Iccid>() <= 24);
        assert!(std::mem::size_of::<DeviceEntry>() <= 48);
        let json = serde_json::to_string(&short).unwrap();
        assert_eq!(json, r#""8988280666000000009""#);
        assert_eq!(serde_json::from_str::<Iccid>(&json).unwrap(), short);
        assert!(serde_json::from_str::<Iccid>(r#""898828066600000000x""#).is_err());
    }

    #[test]
    fn imsi_is_6_to_15_digits() {
        assert!("901405100000000".parse::<Imsi>().is_ok());
        assert!("12345".parse::<Imsi>().is_err());
        assert!("9014051000000001".parse::<Imsi>().is_err());
        assert!("".parse::<Imsi>().is_err());
        assert_eq!("000123".parse::<Imsi>().unwrap().as_str(), "000123");
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

//! Device positions (spec.md §2.5): where a device last was, from an Energy
//! Saver template (GPS) or from an operator (a cell-tower fix, …).
//!
//! - [`Position`]: longitude, latitude, source and sample time, validated
//!   on construction (coordinates in range, a source that fits a CSV cell).
//! - [`PositionStore`]: the store trait the engine reads and writes; the
//!   store crate implements it from memory.
//! - [`csv`]: the `/location` body, with coordinates printed as the
//!   shortest decimal that reads back to the same `f64`, never with an
//!   exponent.
//!
//! ```
//! use coapgate_location::{csv, Position};
//! let p = Position::new(13.404954, 52.520008, "GPS", 1_700_000_000).unwrap();
//! assert_eq!(csv(&p), "Longitude,Latitude,Source,SampleTime\n13.404954,52.520008,GPS,1700000000\n");
//! ```

#![forbid(unsafe_code)]

use std::fmt::Write as _;

use coapgate_model::Iccid;

/// The source of positions computed from a template's `location_long` and
/// `location_lat` fields.
pub const GPS: &str = "GPS";

/// The longest position source name.
pub const MAX_SOURCE_LEN: usize = 64;

/// Why a position was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Longitude outside −180…180 or not a number.
    #[error("longitude {0} is not within -180..=180")]
    Longitude(f64),
    /// Latitude outside −90…90 or not a number.
    #[error("latitude {0} is not within -90..=90")]
    Latitude(f64),
    /// A source is 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    #[error("a position source is 1 to 64 characters of A-Z a-z 0-9 _ -")]
    Source,
}

/// Where a device was, when, according to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    longitude: f64,
    latitude: f64,
    source: String,
    sample_time: u64,
}

impl Position {
    /// A position, checked: longitude within −180…180, latitude within
    /// −90…90, a source of 1–64 characters of `A-Z a-z 0-9 _ -` (for example
    /// `GPS` or `CellTower`), the sample time in epoch seconds.
    pub fn new(
        longitude: f64,
        latitude: f64,
        source: &str,
        sample_time: u64,
    ) -> Result<Self, LocationError> {
        if !(-180.0..=180.0).contains(&longitude) {
            return Err(LocationError::Longitude(longitude));
        }
        if !(-90.0..=90.0).contains(&latitude) {
            return Err(LocationError::Latitude(latitude));
        }
        let source_ok = !source.is_empty()
            && source.len() <= MAX_SOURCE_LEN
            && source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !source_ok {
            return Err(LocationError::Source);
        }
        Ok(Self {
            longitude,
            latitude,
            source: source.to_owned(),
            sample_time,
        })
    }

    /// Degrees east.
    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Degrees north.
    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    /// Who determined it: `GPS`, `CellTower`, …
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When, in epoch seconds.
    pub fn sample_time(&self) -> u64 {
        self.sample_time
    }
}

/// Positions as the engine needs them: the latest one per device, and a way
/// to record a new one. Implementations answer from memory and persist on
/// their own schedule (the engine never waits for a disk).
pub trait PositionStore: Send + Sync {
    /// The device's latest position (by sample time), if any.
    fn latest(&self, iccid: &Iccid) -> Option<Position>;
    /// Records a position; it is the latest from now on when its sample
    /// time is not older than the latest's.
    fn record(&self, iccid: &Iccid, position: Position);
}

/// A coordinate as the shortest decimal that reads back to the same `f64`,
/// never in exponent notation (Rust's `Display` for `f64` does both).
pub fn coordinate(value: f64) -> String {
    // -0.0 prints as "-0"; a coordinate has no sign of zero.
    if value == 0.0 {
        return "0".to_owned();
    }
    value.to_string()
}

/// The `/location` body: a header row and the position, `,`-separated,
/// `\n`-terminated.
pub fn csv(position: &Position) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("Longitude,Latitude,Source,SampleTime\n");
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{},{},{},{}",
        coordinate(position.longitude),
        coordinate(position.latitude),
        position.source,
        position.sample_time
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example() {
        let p = Position::new(13.404954, 52.520008, GPS, 1_700_000_000).unwrap();
        assert_eq!(
            csv(&p),
            "Longitude,Latitude,Source,SampleTime\n13.404954,52.520008,GPS,1700000000\n"
        );
    }

    #[test]
    fn coordinates_never_use_an_exponent() {
        assert_eq!(coordinate(1e-7), "0.0000001");
        assert_eq!(coordinate(-0.000_000_123_4), "-0.0000001234");
        assert_eq!(coordinate(180.0), "180");
        assert_eq!(coordinate(-0.0), "0");
        assert_eq!(coordinate(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn positions_are_validated() {
        assert_eq!(
            Position::new(180.1, 0.0, GPS, 0),
            Err(LocationError::Longitude(180.1))
        );
        assert_eq!(
            Position::new(0.0, -90.5, GPS, 0),
            Err(LocationError::Latitude(-90.5))
        );
        assert!(matches!(
            Position::new(f64::NAN, 0.0, GPS, 0),
            Err(LocationError::Longitude(_))
        ));
        assert_eq!(
            Position::new(0.0, 0.0, "Cell Tower", 0),
            Err(LocationError::Source)
        );
        assert_eq!(
            Position::new(0.0, 0.0, "a,b", 0),
            Err(LocationError::Source)
        );
        assert_eq!(Position::new(0.0, 0.0, "", 0), Err(LocationError::Source));
        assert!(Position::new(-180.0, 90.0, "CellTower", 0).is_ok());
    }
}

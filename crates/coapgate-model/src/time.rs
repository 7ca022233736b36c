//! Wall-clock instants as milliseconds since the Unix epoch, the form the
//! store's columns and the published envelopes use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z: representable by `SystemTime` on every platform
/// Rust supports; what [`from_epoch_millis`] gives for a later time the
/// platform cannot hold.
const LATEST_PORTABLE_SECS: u64 = 253_402_300_799;

/// Milliseconds from 1970-01-01T00:00:00Z to `time`.
///
/// A time before 1970 (a clock set wrong) gives 0. The result saturates at
/// `i64::MAX` (some 292 million years), so it always fits a signed 64-bit
/// integer: an SQLite `INTEGER`, a JSON number read as a Java `long`.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use coapgate_model::epoch_millis;
///
/// let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
/// assert_eq!(epoch_millis(t), 1_700_000_000_123);
/// assert_eq!(epoch_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
/// ```
pub fn epoch_millis(time: SystemTime) -> u64 {
    const MAX: u64 = i64::MAX.unsigned_abs();
    time.duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_millis()).map_or(MAX, |ms| ms.min(MAX))
    })
}

/// The instant `millis` milliseconds after 1970-01-01T00:00:00Z: the inverse
/// of [`epoch_millis`] for every value it returns on this platform. A time
/// the platform cannot represent becomes 9999-12-31T23:59:59Z.
pub fn from_epoch_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .or_else(|| UNIX_EPOCH.checked_add(Duration::from_secs(LATEST_PORTABLE_SECS)))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_and_ordinary_times_convert_exactly_both_ways() {
        assert_eq!(epoch_millis(UNIX_EPOCH), 0);
        for ms in [0, 1, 999, 1_000, 1_700_000_000_123, 4_102_444_800_000] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(epoch_millis(t), ms);
            assert_eq!(from_epoch_millis(ms), t);
        }
        // Sub-millisecond parts are cut off, not rounded.
        assert_eq!(epoch_millis(UNIX_EPOCH + Duration::from_micros(1_999)), 1);
    }

    #[test]
    fn before_1970_is_0() {
        assert_eq!(epoch_millis(UNIX_EPOCH - Duration::from_millis(1)), 0);
        assert_eq!(
            epoch_millis(UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 50)),
            0
        );
    }

    #[test]
    fn the_far_future_saturates_at_i64_max() {
        let max = u64::try_from(i64::MAX).unwrap();
        let far = UNIX_EPOCH + Duration::from_millis(max);
        assert_eq!(epoch_millis(far), max);
        // Later than i64::MAX milliseconds, where the platform can say so.
        if let Some(later) = far.checked_add(Duration::from_secs(1_000_000)) {
            assert_eq!(epoch_millis(later), max);
        }
        if let Some(latest) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(epoch_millis(latest), max);
        }
    }

    #[test]
    fn from_epoch_millis_never_panics() {
        for ms in [u64::MAX, u64::MAX / 2, u64::try_from(i64::MAX).unwrap()] {
            let t = from_epoch_millis(ms);
            assert!(t > UNIX_EPOCH + Duration::from_secs(LATEST_PORTABLE_SECS - 1));
        }
    }
}

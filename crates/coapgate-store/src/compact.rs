//! ICCIDs and IMSIs packed into integers, for the in-memory tables of a
//! large fleet ([`DeviceView`](crate::DeviceView), [`PskKeys`](crate::PskKeys)).
//!
//! An ICCID is 19 or 20 decimal digits (leading zeros allowed), up to
//! 10^20 − 1, which is more than a `u64` holds; it is kept as its last 19
//! digits (a number below 10^19, which fits) plus one byte: 0 for a
//! 19-digit ICCID, 10 + the first digit for a 20-digit one. An IMSI (6 to
//! 15 digits, below 10^15) is a number plus its length, so leading zeros
//! survive. Unpacking writes the digits into a buffer on the stack and
//! parses them: no heap allocation.

use coapgate_model::{Iccid, Imsi};

/// 10^19: the 19 low digits of an ICCID are below it (and below 2^64).
const LOW_DIGITS: usize = 19;

/// An ICCID in 9 bytes: see the [module](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PackedIccid {
    /// The last 19 digits, as a number.
    pub low: u64,
    /// 0 for 19 digits; 10 + the first digit for 20.
    pub high: u8,
}

/// The number the ASCII digits spell (at most 19 of them: no overflow).
fn number(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d.wrapping_sub(b'0')))
}

/// Writes `n` into `out` as decimal digits, zero-padded to its length.
fn write_digits(mut n: u64, out: &mut [u8]) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl PackedIccid {
    pub(crate) fn new(iccid: &Iccid) -> Self {
        let digits = iccid.as_str().as_bytes();
        let (first, low) = digits.split_at(digits.len().saturating_sub(LOW_DIGITS));
        Self {
            low: number(low),
            high: first.first().map_or(0, |&d| 10 + d.wrapping_sub(b'0')),
        }
    }

    /// The ICCID again; `None` only for a value no [`Iccid`] packs to.
    pub(crate) fn iccid(self) -> Option<Iccid> {
        let mut text = [0u8; LOW_DIGITS + 1];
        let digits = if self.high >= 10 {
            text[0] = b'0' + (self.high - 10);
            &mut text[..]
        } else {
            &mut text[1..]
        };
        let start = digits.len() - LOW_DIGITS;
        write_digits(self.low, &mut digits[start..]);
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// An IMSI as (number, length); length 0 is no IMSI.
pub(crate) fn pack_imsi(imsi: Option<&Imsi>) -> (u64, u8) {
    match imsi {
        None => (0, 0),
        Some(imsi) => {
            let digits = imsi.as_str().as_bytes();
            // 6 to 15 digits: the length always fits.
            (number(digits), u8::try_from(digits.len()).unwrap_or(0))
        }
    }
}

/// The IMSI [`pack_imsi`] packed; `None` for length 0.
pub(crate) fn unpack_imsi(number: u64, len: u8) -> Option<Imsi> {
    let mut text = [0u8; 15];
    let digits = text.get_mut(..usize::from(len)).filter(|d| !d.is_empty())?;
    write_digits(number, digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn iccids_round_trip_including_leading_zeros_and_past_u64() {
        for text in [
            "8988280666000000000",
            "0000000000000000000",
            "9999999999999999999",
            "89882806660000000001",
            "99999999999999999999",
            "00000000000000000001",
            "18446744073709551616",
        ] {
            let iccid: Iccid = text.parse().unwrap();
            let packed = PackedIccid::new(&iccid);
            assert_eq!(packed.iccid().unwrap().as_str(), text);
        }
        // 19 digits and 20 digits with a leading zero are different ICCIDs.
        let a = PackedIccid::new(&"1234567890123456789".parse().unwrap());
        let b = PackedIccid::new(&"01234567890123456789".parse().unwrap());
        assert_ne!(a, b);
    }

    #[test]
    fn imsis_round_trip_including_leading_zeros() {
        assert_eq!(pack_imsi(None), (0, 0));
        assert_eq!(unpack_imsi(0, 0), None);
        for text in ["901405100000000", "000123", "999999999999999"] {
            let imsi: Imsi = text.parse().unwrap();
            let (n, len) = pack_imsi(Some(&imsi));
            assert_eq!(unpack_imsi(n, len).unwrap().as_str(), text);
        }
    }
}

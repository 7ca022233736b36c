//! A validated selector and how it reads a value out of a payload.

use std::fmt::Write as _;

use serde_json::{Number, Value};

use crate::TranslateError;

/// A selector's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Uint,
    Float,
    Boolean,
    String,
    Hex,
}

impl Kind {
    pub(crate) const NAMES: &'static str = "int, uint, float, boolean, string or hex";

    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "int" => Kind::Int,
            "uint" => Kind::Uint,
            "float" => Kind::Float,
            "boolean" => Kind::Boolean,
            "string" => Kind::String,
            "hex" => Kind::Hex,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Uint => "uint",
            Kind::Float => "float",
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Hex => "hex",
        }
    }

    /// Whether a value of this type may be `len` bytes long.
    pub(crate) fn allows(self, len: u64) -> bool {
        match self {
            Kind::Int | Kind::Uint => matches!(len, 1 | 2 | 4 | 8),
            Kind::Float => matches!(len, 4 | 8),
            Kind::Boolean => len == 1,
            Kind::String | Kind::Hex => true,
        }
    }

    /// The lengths this type allows, for messages.
    pub(crate) fn allowed(self) -> &'static str {
        match self {
            Kind::Int | Kind::Uint => "1, 2, 4 or 8",
            Kind::Float => "4 or 8",
            Kind::Boolean => "1",
            Kind::String | Kind::Hex => "any",
        }
    }
}

/// Which bytes a selector takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// `bytelength` bytes from `byte` (default 1).
    Length(u32),
    /// From `byte` to `endbyte` bytes before the end (`endbyte` ≤ 0, stored
    /// negated).
    FromEnd(u32),
}

/// A validated selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) byte: u32,
    pub(crate) extent: Extent,
    pub(crate) little: bool,
    pub(crate) kind: Kind,
}

/// A value read from a payload, before it becomes JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Uint(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Text(String),
}

impl Scalar {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Scalar::Int(v) => Value::from(v),
            Scalar::Uint(v) => Value::from(v),
            Scalar::F32(v) => f32_value(v),
            Scalar::F64(v) => Number::from_f64(v).map_or(Value::Null, Value::Number),
            Scalar::Bool(v) => Value::Bool(v),
            Scalar::Text(v) => Value::String(v),
        }
    }

    /// The value as an integer, for matching integer cases.
    pub(crate) fn as_integer(&self) -> Option<i128> {
        match *self {
            Scalar::Int(v) => Some(i128::from(v)),
            Scalar::Uint(v) => Some(i128::from(v)),
            Scalar::Bool(v) => Some(i128::from(v)),
            _ => None,
        }
    }
}

/// A 4-byte float as JSON: the shortest decimal that reads back to the same
/// `f32` (`424bbcf9` → `50.934544`, not `50.93454360961914`). That decimal
/// has at most 9 significant digits, so the nearest `f64` prints as the same
/// decimal. NaN and infinities have no JSON form: `null`.
fn f32_value(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    let mut text = StackText::default();
    // `{:e}` is the shortest round-trip form with an exponent: at most 15 bytes.
    let wide = match write!(text, "{v:e}") {
        Ok(()) => text.as_str().parse::<f64>().unwrap_or(f64::from(v)),
        Err(_) => f64::from(v),
    };
    Number::from_f64(wide).map_or(Value::Null, Value::Number)
}

/// A small text buffer on the stack, so formatting a float does not allocate.
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Selector {
    /// The byte range this selector takes from a payload of `len` bytes, or
    /// the error naming the range it wanted.
    fn range(&self, len: usize, asset: &str) -> Result<(usize, usize), TranslateError> {
        let start = i64::from(self.byte);
        let end = match self.extent {
            Extent::Length(n) => start + i64::from(n),
            Extent::FromEnd(n) => i64::try_from(len).unwrap_or(i64::MAX) - i64::from(n),
        };
        match (usize::try_from(start), usize::try_from(end)) {
            (Ok(s), Ok(e)) if s <= e && e <= len => Ok((s, e)),
            _ => Err(TranslateError::OutOfRange {
                asset: asset.to_owned(),
                start,
                end,
                len,
            }),
        }
    }

    /// Reads this selector's value from `payload`; `asset` names it in errors.
    pub(crate) fn read(&self, payload: &[u8], asset: &str) -> Result<Scalar, TranslateError> {
        let (start, end) = self.range(payload.len(), asset)?;
        let bytes = payload.get(start..end).unwrap_or_default();
        let width_error = || TranslateError::Width {
            asset: asset.to_owned(),
            ty: self.kind.name(),
            allowed: self.kind.allowed(),
            start,
            end,
        };
        Ok(match self.kind {
            Kind::Int => Scalar::Int(signed(bytes, self.little).ok_or_else(width_error)?),
            Kind::Uint => Scalar::Uint(unsigned(bytes, self.little).ok_or_else(width_error)?),
            Kind::Float => match bytes.len() {
                4 => Scalar::F32(f32::from_bits(
                    unsigned(bytes, self.little).unwrap_or(0) as u32
                )),
                8 => Scalar::F64(f64::from_bits(unsigned(bytes, self.little).unwrap_or(0))),
                _ => return Err(width_error()),
            },
            Kind::Boolean => match bytes {
                [b] => Scalar::Bool(*b != 0),
                _ => return Err(width_error()),
            },
            Kind::String => match std::str::from_utf8(bytes) {
                Ok(text) => Scalar::Text(text.to_owned()),
                Err(_) => {
                    return Err(TranslateError::Utf8 {
                        asset: asset.to_owned(),
                        start,
                        end,
                    });
                }
            },
            Kind::Hex => Scalar::Text(hex(bytes)),
        })
    }
}

/// An unsigned integer of 1, 2, 4 or 8 bytes.
fn unsigned(bytes: &[u8], little: bool) -> Option<u64> {
    if !matches!(bytes.len(), 1 | 2 | 4 | 8) {
        return None;
    }
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    Some(if little {
        bytes.iter().rev().fold(0, fold)
    } else {
        bytes.iter().fold(0, fold)
    })
}

/// A two's-complement signed integer of 1, 2, 4 or 8 bytes.
fn signed(bytes: &[u8], little: bool) -> Option<i64> {
    let raw = unsigned(bytes, little)?;
    let unused = 64 - 8 * bytes.len() as u32;
    // Shift the sign bit to the top, then arithmetic-shift back.
    Some(((raw << unused) as i64) >> unused)
}

/// Lowercase hexadecimal, no separators.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_and_order() {
        assert_eq!(unsigned(&[0x12, 0x34], false), Some(0x1234));
        assert_eq!(unsigned(&[0x12, 0x34], true), Some(0x3412));
        assert_eq!(signed(&[0xff, 0xfe], false), Some(-2));
        assert_eq!(signed(&[0xfe, 0xff], true), Some(-2));
        assert_eq!(signed(&[0x80], false), Some(-128));
        assert_eq!(signed(&[0x7f], false), Some(127));
        assert_eq!(signed(&[0x80, 0, 0, 0, 0, 0, 0, 0], false), Some(i64::MIN));
        assert_eq!(unsigned(&[0xff; 8], false), Some(u64::MAX));
        assert_eq!(unsigned(&[1, 2, 3], false), None);
        assert_eq!(unsigned(&[], false), None);
    }

    #[test]
    fn float32_prints_its_shortest_form() {
        let v = f32::from_bits(0x424b_bcf9);
        assert_eq!(f32_value(v).to_string(), "50.934544");
        assert_eq!(f32_value(0.1).to_string(), "0.1");
        assert_eq!(f32_value(f32::MAX).to_string(), "3.4028235e+38");
        assert_eq!(
            f32_value(f32::MIN_POSITIVE / 8.0).to_string(),
            "1.469368e-39"
        );
        assert_eq!(f32_value(f32::NAN), Value::Null);
        assert_eq!(f32_value(f32::NEG_INFINITY), Value::Null);
    }

    #[test]
    fn hex_is_lowercase_without_separators() {
        assert_eq!(hex(&[0x00, 0xAB, 0x0f]), "00ab0f");
        assert_eq!(hex(&[]), "");
    }
}

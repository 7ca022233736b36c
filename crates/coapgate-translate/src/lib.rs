//! 1NCE "Energy Saver" templates: turn a compact binary payload into a JSON
//! object (spec.md §5).
//!
//! This crate has one job: parse and validate a template once
//! ([`Template::parse`], [`Template::parse_str`]), then translate payloads
//! with it ([`Template::translate`]) — a walk over the validated statements,
//! no JSON parsing on the hot path. It reads no clock and does no I/O.
//!
//! A template is `{"sense": [statement, ...]}`. Statements run in order and
//! write into one output object, which keeps their order:
//!
//! - mapping `{"asset": "a.b", "value": <selector>}` (dots build nested
//!   objects), optionally with `"custom_type": "location_long"` /
//!   `"location_lat"` (8-byte floats; the pair also yields [`Coordinates`]);
//! - constant `{"asset": "x", "value": "text"}`;
//! - switch `{"switch": <selector>, "on": [{"case": 1, "do": [...]},
//!   {"default": true, "do": [...]}]}`.
//!
//! A selector is `byte` (offset), `bytelength` (default 1) or `endbyte`
//! (≤ 0, counted back from the end), `byteorder` (`big`, the default, or
//! `little`) and `type`: `int`, `uint` (1, 2, 4 or 8 bytes), `float` (4 or
//! 8), `boolean` (1), `string` (UTF-8) or `hex`. The full language, with
//! every rule this crate adds, is in `docs/templates.md`.
//!
//! ```
//! use coapgate_translate::Template;
//!
//! let template = Template::parse_str(r#"{"sense": [
//!     {"asset": "Temperature", "value": {"byte": 0, "bytelength": 2, "type": "int"}},
//!     {"asset": "Humidity",    "value": {"byte": 2, "bytelength": 2, "type": "int"}},
//!     {"asset": "Switch",      "value": {"byte": 4, "type": "boolean"}}
//! ]}"#)?;
//!
//! let translation = template.translate(&[0x00, 0x1A, 0x00, 0x37, 0x00])?;
//! assert_eq!(
//!     translation.value.to_string(),
//!     r#"{"Temperature":26,"Humidity":55,"Switch":false}"#
//! );
//!
//! // A payload too short is an error whose text is the error event's.
//! let error = template.translate(&[0x00, 0x1A]).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"
//! );
//!
//! // An invalid template names the offending path.
//! let error = Template::parse_str(
//!     r#"{"sense": [{"asset": "t", "value": {"byte": 0, "bytelength": 3, "type": "int"}}]}"#,
//! )
//! .unwrap_err();
//! assert_eq!(error.path(), "sense[0].value.bytelength");
//! assert_eq!(
//!     error.to_string(),
//!     "sense[0].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8)"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing here panics on any template or payload; hostile templates are
//! bounded by [`MAX_TEMPLATE_BYTES`], [`MAX_STATEMENTS`], [`MAX_NESTING`],
//! [`MAX_ASSET_BYTES`], [`MAX_ASSET_SEGMENTS`] and [`MAX_CONSTANT_BYTES`].
#![forbid(unsafe_code)]

mod error;
mod parse;
mod selector;

use std::str::FromStr;

use serde_json::{Map, Value};

pub use error::{TemplateError, TranslateError};
use parse::{Axis, CaseValue, Source, Statement};
use selector::Scalar;

/// The longest template text, in bytes (1NCE's API takes request bodies of
/// up to 64 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The most statements and switch entries (`case`/`default`) in a template,
/// counted at every depth.
pub const MAX_STATEMENTS: usize = 1024;
/// How deep switches may nest inside each other's `do` lists.
pub const MAX_NESTING: usize = 8;
/// The longest asset name, in bytes.
pub const MAX_ASSET_BYTES: usize = 256;
/// The most dotted parts in an asset name (the depth of the output object).
pub const MAX_ASSET_SEGMENTS: usize = 16;
/// The longest constant string, in bytes.
pub const MAX_CONSTANT_BYTES: usize = 1024;

/// A validated Energy Saver template, ready to translate payloads.
///
/// Parse it once; [`translate`](Template::translate) is cheap and takes
/// `&self`, so one template can serve every thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    statements: Vec<Statement>,
}

/// A translated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The output object (always a JSON object), keys in the order the
    /// statements first wrote them.
    pub value: Value,
    /// The position the payload carried: present when both a
    /// `location_long` and a `location_lat` statement ran and gave finite
    /// coordinates within ±180° / ±90°.
    pub location: Option<Coordinates>,
}

/// A position from a template's `location_long` / `location_lat` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    /// Degrees east, −180 to 180.
    pub longitude: f64,
    /// Degrees north, −90 to 90.
    pub latitude: f64,
}

impl Coordinates {
    /// The pair, if both are finite and within range.
    fn new(longitude: f64, latitude: f64) -> Option<Coordinates> {
        ((-180.0..=180.0).contains(&longitude) && (-90.0..=90.0).contains(&latitude)).then_some(
            Coordinates {
                longitude,
                latitude,
            },
        )
    }
}

impl Template {
    /// Validates a template given as a JSON object, or as a JSON string
    /// holding the object's text (as 1NCE's API sends it).
    pub fn parse(value: &Value) -> Result<Template, TemplateError> {
        parse::template(value).map(|statements| Template { statements })
    }

    /// Validates a template given as JSON text (at most
    /// [`MAX_TEMPLATE_BYTES`]). The text may also be a JSON string holding
    /// the template's text.
    pub fn parse_str(text: &str) -> Result<Template, TemplateError> {
        Template::parse(&parse::text_to_value(text)?)
    }

    /// Translates `payload` into a JSON object.
    ///
    /// Fails when a selector that runs wants bytes the payload does not have,
    /// an `endbyte` range has a length its type cannot have, or a `string`
    /// is not UTF-8. Statements in switch branches that do not run are not
    /// checked against the payload.
    pub fn translate(&self, payload: &[u8]) -> Result<Translation, TranslateError> {
        let mut run = Run {
            payload,
            output: Map::new(),
            longitude: None,
            latitude: None,
        };
        run.statements(&self.statements)?;
        let location = match (run.longitude, run.latitude) {
            (Some(longitude), Some(latitude)) => Coordinates::new(longitude, latitude),
            _ => None,
        };
        Ok(Translation {
            value: Value::Object(run.output),
            location,
        })
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Template::parse_str(text)
    }
}

impl TryFrom<&Value> for Template {
    type Error = TemplateError;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        Template::parse(value)
    }
}

/// The state of one translation.
struct Run<'a> {
    payload: &'a [u8],
    output: Map<String, Value>,
    longitude: Option<f64>,
    latitude: Option<f64>,
}

impl Run<'_> {
    fn statements(&mut self, statements: &[Statement]) -> Result<(), TranslateError> {
        for statement in statements {
            match statement {
                Statement::Write {
                    asset,
                    source,
                    location,
                } => {
                    let value = match source {
                        Source::Constant(value) => value.clone(),
                        Source::Read(selector) => {
                            let scalar = selector.read(self.payload, &asset.name)?;
                            if let (Some(axis), Scalar::F64(v)) = (location, &scalar) {
                                match axis {
                                    Axis::Longitude => self.longitude = Some(*v),
                                    Axis::Latitude => self.latitude = Some(*v),
                                }
                            }
                            scalar.into_value()
                        }
                    };
                    put(&mut self.output, &asset.segments, value);
                }
                Statement::Switch {
                    path,
                    selector,
                    cases,
                    default,
                } => {
                    let scalar = selector.read(self.payload, path)?;
                    let chosen = cases
                        .iter()
                        .find(|case| matches(&case.value, &scalar))
                        .map(|case| case.body.as_slice())
                        .or(default.as_deref());
                    if let Some(body) = chosen {
                        self.statements(body)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a case value matches a value read by the switch's selector.
/// Validation only lets integer cases reach int/uint/boolean selectors and
/// string cases reach string/hex ones.
fn matches(case: &CaseValue, scalar: &Scalar) -> bool {
    match (case, scalar) {
        (CaseValue::Integer(n), _) => scalar.as_integer() == Some(*n),
        (CaseValue::Text(text), Scalar::Text(read)) => text == read,
        (CaseValue::Text(_), _) => false,
    }
}

/// Writes `value` at the dotted path `segments`, creating objects on the
/// way. A key written before keeps its place and takes the new value.
fn put(output: &mut Map<String, Value>, segments: &[String], value: Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut object = output;
    for segment in parents {
        let slot = object
            .entry(segment.as_str())
            .or_insert_with(|| Value::Object(Map::new()));
        // Validation refuses templates that write both `a` and `a.b`, so a
        // value never sits where an object is needed; replace it if it did.
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            return;
        };
        object = next;
    }
    object.insert(last.clone(), value);
}

/// The fuzz target's body, shared with the corpus replay under `cargo test`.
/// Only with the `fuzzing` feature; not part of the stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Splits `data` at its first NUL byte into a template text (lossy
    /// UTF-8) and a payload, parses the template, and translates the payload
    /// and every prefix of it. Panics (a fuzzing finding) when:
    ///
    /// - a refused template's error has an empty path or a `Display` other
    ///   than `path: reason`;
    /// - translating the same payload twice gives different results;
    /// - a translation is not a JSON object, does not serialize, or its
    ///   text does not parse back;
    /// - a position is outside ±180° / ±90° or not finite;
    /// - a translation error's text does not start with `Asset path:`.
    pub fn template_and_payload(data: &[u8]) {
        let (text, payload) = match data.iter().position(|b| *b == 0) {
            Some(at) => (&data[..at], &data[at + 1..]),
            None => (data, &[][..]),
        };
        let text = String::from_utf8_lossy(text);
        let template = match Template::parse_str(&text) {
            Ok(template) => template,
            Err(error) => {
                assert!(!error.path().is_empty(), "error without a path: {error:?}");
                assert_eq!(
                    error.to_string(),
                    format!("{}: {}", error.path(), error.reason())
                );
                return;
            }
        };
        let _ = format!("{template:?}");
        for end in (0..=payload.len()).rev().take(64) {
            check(&template, &payload[..end]);
        }
    }

    fn check(template: &Template, payload: &[u8]) {
        let first = template.translate(payload);
        assert_eq!(
            first,
            template.translate(payload),
            "translation is not deterministic"
        );
        match first {
            Ok(translation) => {
                assert!(translation.value.is_object(), "output is not an object");
                let text = serde_json::to_string(&translation.value).expect("output serializes");
                let back: Result<Value, _> = serde_json::from_str(&text);
                assert!(back.is_ok(), "output does not parse back: {text}");
                if let Some(at) = translation.location {
                    assert!(at.longitude.is_finite() && at.longitude.abs() <= 180.0);
                    assert!(at.latitude.is_finite() && at.latitude.abs() <= 90.0);
                }
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.starts_with("Asset path:"), "{message}");
                assert!(message.starts_with(&format!("Asset path:{}, Error: ", error.asset())));
            }
        }
    }
}

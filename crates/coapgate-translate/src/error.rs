//! The two error types: [`TemplateError`] when a template is refused,
//! [`TranslateError`] when a payload does not fit a valid template.

/// Why a template is refused, naming the offending place by its path in the
/// template (`sense[2].on[0].do[1].value.bytelength`).
///
/// Every variant holds the `path` and a human-readable `reason`; `Display`
/// prints `path: reason`, for example
/// `sense[2].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8)`.
/// A problem with the template as a whole (not JSON, too large, not an
/// object) has the path `template`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The text is not JSON, or the template is neither a JSON object nor a
    /// string holding one.
    #[error("{path}: {reason}")]
    Syntax {
        /// Where: always `template`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The JSON has the wrong shape: a missing or unknown key, a value of the
    /// wrong JSON kind, a statement that is neither a mapping nor a switch.
    #[error("{path}: {reason}")]
    Structure {
        /// The offending key or value.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A selector is not valid: unknown `type` or `byteorder`, a `byte`,
    /// `bytelength` or `endbyte` out of range or not valid for the type,
    /// `bytelength` together with `endbyte`.
    #[error("{path}: {reason}")]
    Selector {
        /// The offending selector field.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An asset name is not valid (empty, an empty segment between dots, too
    /// long or too deep), or it puts an object where another asset puts a
    /// value (`a` and `a.b` in the same template).
    #[error("{path}: {reason}")]
    Asset {
        /// The offending `asset`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A switch is not valid: a case value that cannot match the selector's
    /// type, an entry with both or neither of `case` and `default`, a second
    /// default, a switch on a float.
    #[error("{path}: {reason}")]
    Switch {
        /// The offending switch, entry or case.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A `custom_type` is unknown, is not on an 8-byte float, or one of
    /// `location_long` / `location_lat` appears without the other.
    #[error("{path}: {reason}")]
    Location {
        /// The offending `custom_type`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The template exceeds a size or depth limit (see the crate's `MAX_*`
    /// constants).
    #[error("{path}: {reason}")]
    Limit {
        /// Where the limit was crossed.
        path: String,
        /// Which limit.
        reason: String,
    },
}

impl TemplateError {
    /// The path of the offending place in the template, e.g.
    /// `sense[2].on[0].do[1].value.bytelength`; `template` for the template
    /// as a whole.
    pub fn path(&self) -> &str {
        match self {
            Self::Syntax { path, .. }
            | Self::Structure { path, .. }
            | Self::Selector { path, .. }
            | Self::Asset { path, .. }
            | Self::Switch { path, .. }
            | Self::Location { path, .. }
            | Self::Limit { path, .. } => path,
        }
    }

    /// Why the template is refused, without the path.
    pub fn reason(&self) -> &str {
        match self {
            Self::Syntax { reason, .. }
            | Self::Structure { reason, .. }
            | Self::Selector { reason, .. }
            | Self::Asset { reason, .. }
            | Self::Switch { reason, .. }
            | Self::Location { reason, .. }
            | Self::Limit { reason, .. } => reason,
        }
    }
}

/// Why a payload could not be translated with a valid template.
///
/// `Display` is the text of the error event (spec.md §2.3), always
/// `Asset path:<asset>, Error: <what>`, for example
/// `Asset path:Humidity, Error: can't extract [2:4] from 2 bytes`. For a
/// switch, which has no asset, `<asset>` is the switch's path in the template
/// (`sense[1].switch`). Ranges are `[a:b]` with `b` exclusive, as absolute
/// offsets into the payload (`b` may be negative when an `endbyte` reaches
/// before the start of a short payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The payload is too short for the selector's range (or, with
    /// `endbyte`, the range ends before it starts).
    #[error("Asset path:{asset}, Error: can't extract [{start}:{end}] from {len} bytes")]
    OutOfRange {
        /// The asset (or switch path) being translated.
        asset: String,
        /// First byte wanted.
        start: i64,
        /// One past the last byte wanted.
        end: i64,
        /// The payload's length.
        len: usize,
    },
    /// An `endbyte` range has a length the type cannot have (an `int` of
    /// 3 bytes, a `boolean` of 2).
    #[error(
        "Asset path:{asset}, Error: [{start}:{end}] is {} bytes, not valid for {ty} ({allowed})",
        end - start
    )]
    Width {
        /// The asset (or switch path) being translated.
        asset: String,
        /// The selector's type.
        ty: &'static str,
        /// The lengths the type allows, e.g. `1, 2, 4 or 8`.
        allowed: &'static str,
        /// First byte of the range.
        start: usize,
        /// One past the last byte of the range.
        end: usize,
    },
    /// A `string` selector's bytes are not UTF-8.
    #[error("Asset path:{asset}, Error: [{start}:{end}] is not valid UTF-8")]
    Utf8 {
        /// The asset (or switch path) being translated.
        asset: String,
        /// First byte of the range.
        start: usize,
        /// One past the last byte of the range.
        end: usize,
    },
}

impl TranslateError {
    /// The asset (or, for a switch, its path in the template) whose value
    /// could not be read.
    pub fn asset(&self) -> &str {
        match self {
            Self::OutOfRange { asset, .. }
            | Self::Width { asset, .. }
            | Self::Utf8 { asset, .. } => asset,
        }
    }
}

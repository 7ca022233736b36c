//! CoAP message decoding and encoding for coapgate: [`coap_lite`] plus the
//! RFC 7252 strictness that coap-lite lacks.
//!
//! This crate has one job: turn a UDP (or decrypted DTLS) datagram into a
//! [`Packet`] that is known to be a well-formed CoAP message, and turn a
//! [`Packet`] back into bytes without ever panicking.
//!
//! [`coap_lite::Packet::from_bytes`] accepts datagrams that RFC 7252 rejects
//! (version ≠ 1, a payload marker followed by nothing, an Empty 0.00 message
//! with a token or payload, reserved code classes). [`decode`] first runs one
//! cheap pre-scan over the header and the options ([`DecodeError`] says what
//! it found and whether the sender deserves a Reset), then hands the datagram
//! to coap-lite. [`encode`] refuses packets coap-lite would encode wrongly
//! (tokens longer than 8 bytes, option values longer than 65 535 bytes, a
//! header token length that disagrees with the token) instead of producing
//! an invalid datagram.
//!
//! Decoding is exact: for every datagram that [`decode`] accepts,
//! [`encode`] gives back the very same bytes (CoAP's option encoding has only
//! one form for each message). The fuzz target in `fuzz/` checks exactly
//! that, through `fuzzing::decode_roundtrip` (compiled only with the
//! `fuzzing` feature, which the fuzz crate and this crate's tests turn on).
//!
//! What this crate does *not* decide: which option numbers a request may
//! carry beyond RFC 7252 ([`unrecognised_critical_option`] takes the extra
//! ones), option value length ranges and repeated non-repeatable options
//! (RFC 7252 §5.4.3/§5.4.5 — the endpoint decides), and whether a message
//! type/code combination (a NON 0.00, an RST carrying a request) makes sense
//! in an exchange.
//!
//! ```
//! use coapgate_codec::{decode, uri_path, MessageType, RequestType, MessageClass};
//!
//! // NON GET /bootstrap with Uri-Host coap.os.1nce.com, as 1NCE's C SDK sends it.
//! let header = [0x50, 0x01, 0xe9, 0x03];
//! let uri_host = [&[0x3d, 0x03][..], b"coap.os.1nce.com"].concat();
//! let path = [&[0x89][..], b"bootstrap"].concat();
//! let packet = decode(&[&header[..], &uri_host, &path].concat()).expect("a valid request");
//! assert_eq!(packet.header.get_type(), MessageType::NonConfirmable);
//! assert_eq!(packet.header.code, MessageClass::Request(RequestType::Get));
//! assert_eq!(uri_path(&packet), [b"bootstrap".as_slice()]);
//! ```
#![forbid(unsafe_code)]

use std::collections::LinkedList;

pub use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};

/// Option numbers used by coapgate, named as in RFC 7252 §5.10 (and RFC 7959
/// for the block options).
pub mod option_number {
    /// If-Match (critical).
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host (critical).
    pub const URI_HOST: u16 = 3;
    /// ETag (elective).
    pub const ETAG: u16 = 4;
    /// If-None-Match (critical).
    pub const IF_NONE_MATCH: u16 = 5;
    /// Uri-Port (critical).
    pub const URI_PORT: u16 = 7;
    /// Location-Path (elective).
    pub const LOCATION_PATH: u16 = 8;
    /// Uri-Path (critical).
    pub const URI_PATH: u16 = 11;
    /// Content-Format (elective).
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age (elective).
    pub const MAX_AGE: u16 = 14;
    /// Uri-Query (critical).
    pub const URI_QUERY: u16 = 15;
    /// Accept (critical).
    pub const ACCEPT: u16 = 17;
    /// Location-Query (elective).
    pub const LOCATION_QUERY: u16 = 20;
    /// Block2 (critical, RFC 7959; not part of RFC 7252).
    pub const BLOCK2: u16 = 23;
    /// Block1 (critical, RFC 7959; not part of RFC 7252).
    pub const BLOCK1: u16 = 27;
    /// Proxy-Uri (critical).
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme (critical).
    pub const PROXY_SCHEME: u16 = 39;
    /// Size1 (elective).
    pub const SIZE1: u16 = 60;

    /// Every option number RFC 7252 defines, in ascending order.
    pub const RFC7252: [u16; 15] = [
        IF_MATCH,
        URI_HOST,
        ETAG,
        IF_NONE_MATCH,
        URI_PORT,
        LOCATION_PATH,
        URI_PATH,
        CONTENT_FORMAT,
        MAX_AGE,
        URI_QUERY,
        ACCEPT,
        LOCATION_QUERY,
        PROXY_URI,
        PROXY_SCHEME,
        SIZE1,
    ];
}

/// The longest token RFC 7252 allows (§3).
pub const MAX_TOKEN_LEN: usize = 8;

/// The longest option value this codec encodes or decodes: 65 535 bytes.
///
/// RFC 7252 §3.1's extended length reaches 269 + 65 535 = 65 804, but
/// coap-lite's decoder rejects lengths above 65 535 (it adds the 269 in a
/// `u16`), and its encoder silently truncates lengths above 65 804. Holding
/// both directions to 65 535 keeps every encoded packet decodable; no UDP
/// datagram can carry a longer value anyway.
pub const MAX_OPTION_VALUE_LEN: usize = u16::MAX as usize;

/// Why a datagram is dropped without any answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The datagram is shorter than the 4-byte CoAP header.
    #[error("shorter than the 4-byte CoAP header")]
    TooShort,
    /// The version field is not 1 (RFC 7252 §3: such messages MUST be silently ignored).
    #[error("CoAP version {0}, not 1")]
    Version(u8),
}

/// What is wrong with a message that has a valid CoAP header
/// (a message format error in the sense of RFC 7252 §4.2/§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Token length 9–15: reserved (RFC 7252 §3).
    #[error("token length {0} is reserved")]
    TokenLength(u8),
    /// The datagram ends inside the token.
    #[error("datagram ends inside the token")]
    TruncatedToken,
    /// An Empty message (code 0.00) with bytes after the message ID
    /// (RFC 7252 §4.1): a token, options or a payload.
    #[error("empty message (0.00) carries a token, options or payload")]
    NonEmptyEmptyMessage,
    /// A code in a reserved class (1, 6 or 7; RFC 7252 §12.1).
    #[error("code class {0} is reserved")]
    ReservedCodeClass(u8),
    /// An option's delta nibble is 15 but the byte is not the payload marker 0xFF.
    #[error("option delta nibble 15 is reserved")]
    ReservedOptionDelta,
    /// An option's length nibble is 15 (reserved).
    #[error("option length nibble 15 is reserved")]
    ReservedOptionLength,
    /// The datagram ends inside an option header or value.
    #[error("datagram ends inside an option")]
    TruncatedOption,
    /// An option value is longer than [`MAX_OPTION_VALUE_LEN`].
    #[error("option value longer than 65535 bytes")]
    OptionValueTooLong,
    /// The option deltas add up to a number beyond 65535.
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    /// A payload marker 0xFF with no payload after it (RFC 7252 §3).
    #[error("payload marker without payload")]
    EmptyPayload,
    /// coap-lite rejected a datagram the pre-scan accepted (should not happen).
    #[error("rejected by coap-lite: {0}")]
    Rejected(&'static str),
}

/// Why a datagram is not a usable CoAP message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the 4-byte header, or version ≠ 1: drop silently, no answer.
    #[error("datagram ignored: {0}")]
    Ignored(IgnoreReason),
    /// A message format error (RFC 7252 §4.2/§4.3): if it was CON, answer RST
    /// with its message ID (see [`DecodeError::reset`]); otherwise drop.
    #[error("message format error in {message_type:?} message {message_id}: {reason}")]
    Format {
        /// The type from the message's header.
        message_type: MessageType,
        /// The message ID from the message's header.
        message_id: u16,
        /// What is wrong with the message.
        reason: FormatError,
    },
}

impl DecodeError {
    /// The RST datagram to send back, when the bad message was confirmable
    /// (RFC 7252 §4.2); `None` when the datagram is to be dropped silently.
    pub fn reset(&self) -> Option<Vec<u8>> {
        match self {
            DecodeError::Format {
                message_type: MessageType::Confirmable,
                message_id,
                ..
            } => Some(reset(*message_id)),
            _ => None,
        }
    }
}

/// Why a [`Packet`] cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The token is longer than 8 bytes (RFC 7252 §3).
    #[error("token of {0} bytes is longer than 8")]
    TokenTooLong(usize),
    /// The header's token length field disagrees with the token itself
    /// (possible through coap-lite's public `Header::set_token_length`).
    #[error("header token length {header} but the token has {token} bytes")]
    TokenLengthMismatch {
        /// The token length field of the header.
        header: u8,
        /// The length of the packet's token.
        token: usize,
    },
    /// An option value is longer than [`MAX_OPTION_VALUE_LEN`].
    #[error("option {number} value of {len} bytes is longer than the encoding allows")]
    OptionTooLong {
        /// The option number.
        number: u16,
        /// The value's length in bytes.
        len: usize,
    },
    /// An Empty (0.00) message with a token, options or payload (RFC 7252 §4.1).
    #[error("an empty message (0.00) cannot carry a token, options or payload")]
    NonEmptyEmptyMessage,
    /// The header's version is not 1.
    #[error("CoAP version {0}, not 1")]
    Version(u8),
    /// The code is in a reserved class (1, 6, 7) or is coap-lite's `UnKnown`
    /// placeholder, which it would encode as 7.31.
    #[error("code {0:#04x} is in a reserved class")]
    ReservedCode(u8),
    /// coap-lite refused to encode the packet.
    #[error("rejected by coap-lite: {0}")]
    Rejected(String),
}

/// The 2-bit message type field as coap-lite's [`MessageType`].
fn message_type_of(first_byte: u8) -> MessageType {
    match (first_byte >> 4) & 0b11 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    }
}

/// Checks everything RFC 7252 requires of a datagram's framing that coap-lite
/// does not, in one pass over the header, token and options (no allocation).
///
/// On success the datagram is a well-formed CoAP message: version 1, token
/// length 0–8 and present, a code in class 0, 2, 4 or 5, an Empty message
/// with nothing after the message ID, every option complete and without
/// reserved nibbles, and a payload marker only in front of a payload.
fn check_format(data: &[u8]) -> Result<(), DecodeError> {
    let [first, code, id_high, id_low, rest @ ..] = data else {
        return Err(DecodeError::Ignored(IgnoreReason::TooShort));
    };
    let version = first >> 6;
    if version != 1 {
        return Err(DecodeError::Ignored(IgnoreReason::Version(version)));
    }
    let fail = |reason| DecodeError::Format {
        message_type: message_type_of(*first),
        message_id: u16::from_be_bytes([*id_high, *id_low]),
        reason,
    };

    let token_length = first & 0x0F;
    if usize::from(token_length) > MAX_TOKEN_LEN {
        return Err(fail(FormatError::TokenLength(token_length)));
    }
    if *code == 0 && !rest.is_empty() {
        return Err(fail(FormatError::NonEmptyEmptyMessage));
    }
    let class = code >> 5;
    if matches!(class, 1 | 6 | 7) {
        return Err(fail(FormatError::ReservedCodeClass(class)));
    }
    let mut rest = rest
        .get(usize::from(token_length)..)
        .ok_or_else(|| fail(FormatError::TruncatedToken))?;

    let mut number: u32 = 0;
    while let Some((&option_header, after)) = rest.split_first() {
        if option_header == 0xFF {
            return if after.is_empty() {
                Err(fail(FormatError::EmptyPayload))
            } else {
                Ok(())
            };
        }
        let (delta, after) = extended_value(option_header >> 4, after)
            .map_err(|nibble15| fail(nibble15.unwrap_or(FormatError::ReservedOptionDelta)))?;
        let (length, after) = extended_value(option_header & 0x0F, after)
            .map_err(|nibble15| fail(nibble15.unwrap_or(FormatError::ReservedOptionLength)))?;
        number += delta;
        if number > u32::from(u16::MAX) {
            return Err(fail(FormatError::OptionNumberOverflow));
        }
        if length as usize > MAX_OPTION_VALUE_LEN {
            return Err(fail(FormatError::OptionValueTooLong));
        }
        rest = after
            .get(length as usize..)
            .ok_or_else(|| fail(FormatError::TruncatedOption))?;
    }
    Ok(())
}

/// Reads an option delta or length (RFC 7252 §3.1) from its nibble and the
/// extended bytes that follow. `Err(None)` means the nibble was the reserved
/// 15; `Err(Some(TruncatedOption))` that the extended bytes are missing.
fn extended_value(nibble: u8, bytes: &[u8]) -> Result<(u32, &[u8]), Option<FormatError>> {
    match nibble {
        0..=12 => Ok((u32::from(nibble), bytes)),
        13 => match bytes {
            [extra, rest @ ..] => Ok((13 + u32::from(*extra), rest)),
            [] => Err(Some(FormatError::TruncatedOption)),
        },
        14 => match bytes {
            [high, low, rest @ ..] => {
                Ok((269 + u32::from(u16::from_be_bytes([*high, *low])), rest))
            }
            _ => Err(Some(FormatError::TruncatedOption)),
        },
        _ => Err(None),
    }
}

/// Decodes a datagram into a well-formed CoAP [`Packet`].
///
/// Never panics. See [`DecodeError`] for what to do with a rejected datagram.
pub fn decode(data: &[u8]) -> Result<Packet, DecodeError> {
    check_format(data)?;
    Packet::from_bytes(data).map_err(|error| DecodeError::Format {
        message_type: message_type_of(data.first().copied().unwrap_or_default()),
        message_id: match data {
            [_, _, high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 0,
        },
        reason: FormatError::Rejected(match error {
            coap_lite::error::MessageError::InvalidHeader => "invalid header",
            coap_lite::error::MessageError::InvalidPacketLength => "invalid packet length",
            coap_lite::error::MessageError::InvalidTokenLength => "invalid token length",
            coap_lite::error::MessageError::InvalidOptionDelta => "invalid option delta",
            coap_lite::error::MessageError::InvalidOptionLength => "invalid option length",
        }),
    })
}

/// Encodes a packet; errors (never panics) when it is not encodable
/// (see [`EncodeError`]).
///
/// No size limit is applied here (coap-lite's default is 1280 bytes): what
/// fits a datagram is the transport's decision.
pub fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let header = &packet.header;
    if header.get_version() != 1 {
        return Err(EncodeError::Version(header.get_version()));
    }
    let token = packet.get_token();
    if token.len() > MAX_TOKEN_LEN {
        return Err(EncodeError::TokenTooLong(token.len()));
    }
    if usize::from(header.get_token_length()) != token.len() {
        return Err(EncodeError::TokenLengthMismatch {
            header: header.get_token_length(),
            token: token.len(),
        });
    }
    let code = u8::from(header.code);
    if matches!(code >> 5, 1 | 6 | 7) {
        return Err(EncodeError::ReservedCode(code));
    }
    let mut has_options = false;
    for (&number, values) in packet.options() {
        for value in values {
            has_options = true;
            if value.len() > MAX_OPTION_VALUE_LEN {
                return Err(EncodeError::OptionTooLong {
                    number,
                    len: value.len(),
                });
            }
        }
    }
    if code == 0 && (!token.is_empty() || has_options || !packet.payload.is_empty()) {
        return Err(EncodeError::NonEmptyEmptyMessage);
    }
    packet
        .to_bytes_unlimited()
        .map_err(|error| EncodeError::Rejected(error.to_string()))
}

/// A 4-byte header-only message of type `type_bits` with code 0.00.
fn empty_message(type_bits: u8, message_id: u16) -> Vec<u8> {
    let [high, low] = message_id.to_be_bytes();
    vec![0x40 | (type_bits << 4), 0x00, high, low]
}

/// An Empty ACK (type ACK, code 0.00) acknowledging `message_id`: 4 bytes.
pub fn empty_ack(message_id: u16) -> Vec<u8> {
    empty_message(2, message_id)
}

/// A Reset (type RST, code 0.00) rejecting `message_id`: 4 bytes.
pub fn reset(message_id: u16) -> Vec<u8> {
    empty_message(3, message_id)
}

/// Sets a token safely: `Err` for more than 8 bytes (coap-lite's own
/// `set_token` panics at 16 bytes or more and mis-encodes 9 to 15).
pub fn set_token(packet: &mut Packet, token: &[u8]) -> Result<(), EncodeError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(EncodeError::TokenTooLong(token.len()));
    }
    packet.set_token(token.to_vec());
    Ok(())
}

/// The number of the first critical option (odd number, RFC 7252 §5.4.1) in
/// the packet that RFC 7252 does not define ([`option_number::RFC7252`]) and
/// that is not in `also_recognised` (for example [`option_number::BLOCK1`]
/// once Block1 is implemented), if any.
///
/// Only option numbers are checked; value lengths and repetitions are not.
pub fn unrecognised_critical_option(packet: &Packet, also_recognised: &[u16]) -> Option<u16> {
    packet
        .options()
        .filter(|(_, values)| !values.is_empty())
        .map(|(&number, _)| number)
        .find(|number| {
            number % 2 == 1
                && !option_number::RFC7252.contains(number)
                && !also_recognised.contains(number)
        })
}

/// The Uri-Path segments as raw bytes, in order (coap-lite's `get_path`
/// drops segments that are not UTF-8).
pub fn uri_path(packet: &Packet) -> Vec<&[u8]> {
    option_values(packet, option_number::URI_PATH).collect()
}

/// The values of every option with `number`, in the order they arrived
/// (for example [`option_number::URI_QUERY`] or
/// [`option_number::LOCATION_QUERY`]).
pub fn option_values(packet: &Packet, number: u16) -> impl Iterator<Item = &[u8]> {
    packet
        .get_option(CoapOption::from(number))
        .into_iter()
        .flat_map(LinkedList::iter)
        .map(Vec::as_slice)
}

/// The body of the `decode` fuzz target, public so that `cargo test` replays
/// the committed corpus through exactly the same checks. Only with the
/// `fuzzing` feature; not part of the stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes `data`; anything that decodes must encode back to the same
    /// bytes and decode again to the same packet, and the helpers must not
    /// panic on it. A rejected datagram must get a Reset exactly when it was
    /// a confirmable message with a format error. Panics on any violation
    /// (a panic is a fuzzing finding).
    pub fn decode_roundtrip(data: &[u8]) {
        match decode(data) {
            Ok(packet) => {
                let bytes = encode(&packet).expect("a decoded packet must encode");
                assert_eq!(bytes, data, "encode(decode(x)) must give back x");
                let again = decode(&bytes).expect("an encoded packet must decode");
                assert_eq!(again, packet, "decode(encode(p)) must give back p");
                let _ = unrecognised_critical_option(&packet, &[option_number::BLOCK1]);
                let _ = uri_path(&packet);
                let _ = option_values(&packet, option_number::URI_QUERY).count();
            }
            Err(error) => {
                let _ = error.to_string();
                match (&error, error.reset()) {
                    (DecodeError::Ignored(_), None) => {}
                    (
                        DecodeError::Format {
                            message_type: MessageType::Confirmable,
                            message_id,
                            ..
                        },
                        Some(rst),
                    ) => {
                        let rst = decode(&rst).expect("our RST must decode");
                        assert_eq!(rst.header.get_type(), MessageType::Reset);
                        assert_eq!(rst.header.message_id, *message_id);
                    }
                    (DecodeError::Format { message_type, .. }, None) => {
                        assert_ne!(*message_type, MessageType::Confirmable)
                    }
                    (error, rst) => panic!("{error:?} must not answer {rst:?}"),
                }
            }
        }
    }
}

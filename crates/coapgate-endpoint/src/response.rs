//! Responses as the pipeline decides them, and their framing as ACK, NON or
//! CON messages.

use coapgate_codec::{self as codec, CoapOption, MessageClass, MessageType, Packet, ResponseType};
use zeroize::Zeroizing;

/// An answer, before it is framed: code, options, payload.
///
/// The payload may hold a PSK (`/bootstrap`), so it is zeroized on drop.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) code: ResponseType,
    options: Vec<(CoapOption, Vec<u8>)>,
    pub(crate) payload: Zeroizing<Vec<u8>>,
}

impl Response {
    /// A response with this code, no options and an empty payload (every
    /// 4.xx and 5.xx of spec.md §2.1).
    pub(crate) fn new(code: ResponseType) -> Self {
        Self {
            code,
            options: Vec::new(),
            payload: Zeroizing::new(Vec::new()),
        }
    }

    /// Adds an option with an unsigned-integer value (RFC 7252 §3.2,
    /// shortest big-endian form).
    pub(crate) fn with_uint_option(mut self, option: CoapOption, value: u32) -> Self {
        let bytes = value.to_be_bytes();
        let first = bytes.iter().take_while(|&&b| b == 0).count();
        self.options.push((option, bytes[first..].to_vec()));
        self
    }

    /// Sets a text/plain (Content-Format 0) payload.
    pub(crate) fn with_text(mut self, payload: Zeroizing<Vec<u8>>) -> Self {
        self.options.push((CoapOption::ContentFormat, Vec::new()));
        self.payload = payload;
        self
    }

    /// The encoded message; `None` (logged) if it cannot be encoded, which a
    /// token from a decoded request and our own options never cause.
    pub(crate) fn encode(
        &self,
        message_type: MessageType,
        message_id: u16,
        token: &[u8],
    ) -> Option<Vec<u8>> {
        let mut packet = Packet::new();
        packet.header.set_type(message_type);
        packet.header.message_id = message_id;
        packet.header.code = MessageClass::Response(self.code);
        for (option, value) in &self.options {
            packet.add_option(*option, value.clone());
        }
        packet.payload = self.payload.to_vec();
        let encoded = codec::set_token(&mut packet, token).and_then(|()| codec::encode(&packet));
        // The packet held the payload (maybe a PSK): wipe that copy too.
        zeroize::Zeroize::zeroize(&mut packet.payload);
        match encoded {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(%error, "could not encode a response");
                None
            }
        }
    }
}

/// Whether the bytes before a message's payload contain the text `89`.
///
/// 1NCE's C SDK finds the `/bootstrap` answer by searching the whole
/// datagram for `89` (the start of every ICCID), so a NON response must not
/// contain it in its header, token or options (spec.md §2.4).
pub(crate) fn has_89_before_payload(message: &[u8], payload_len: usize) -> bool {
    let head = &message[..message.len().saturating_sub(payload_len)];
    head.windows(2).any(|w| w == b"89")
}

/// A response code as `c.dd` text, for metrics.
pub(crate) fn code_label(code: ResponseType) -> &'static str {
    match code {
        ResponseType::Created => "2.01",
        ResponseType::Deleted => "2.02",
        ResponseType::Valid => "2.03",
        ResponseType::Changed => "2.04",
        ResponseType::Content => "2.05",
        ResponseType::Continue => "2.31",
        ResponseType::BadRequest => "4.00",
        ResponseType::Unauthorized => "4.01",
        ResponseType::BadOption => "4.02",
        ResponseType::Forbidden => "4.03",
        ResponseType::NotFound => "4.04",
        ResponseType::MethodNotAllowed => "4.05",
        ResponseType::NotAcceptable => "4.06",
        ResponseType::RequestEntityIncomplete => "4.08",
        ResponseType::Conflict => "4.09",
        ResponseType::PreconditionFailed => "4.12",
        ResponseType::RequestEntityTooLarge => "4.13",
        ResponseType::UnsupportedContentFormat => "4.15",
        ResponseType::UnprocessableEntity => "4.22",
        ResponseType::TooManyRequests => "4.29",
        ResponseType::InternalServerError => "5.00",
        ResponseType::NotImplemented => "5.01",
        ResponseType::BadGateway => "5.02",
        ResponseType::ServiceUnavailable => "5.03",
        ResponseType::GatewayTimeout => "5.04",
        ResponseType::ProxyingNotSupported => "5.05",
        ResponseType::HopLimitReached => "5.08",
        ResponseType::UnKnown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_options_are_shortest_big_endian() {
        let r = Response::new(ResponseType::RequestEntityTooLarge)
            .with_uint_option(CoapOption::Size1, 1024);
        assert_eq!(r.options, vec![(CoapOption::Size1, vec![0x04, 0x00])]);
        let r = Response::new(ResponseType::Content).with_uint_option(CoapOption::MaxAge, 0);
        assert_eq!(r.options, vec![(CoapOption::MaxAge, vec![])]);
    }

    #[test]
    fn finds_89_only_before_the_payload() {
        assert!(has_89_before_payload(b"\x50\x45\x38\x39\xc0\xff8988", 4));
        assert!(!has_89_before_payload(b"\x50\x45\x38\x40\xc0\xff8988", 4));
        // Across the header/option boundary too.
        assert!(has_89_before_payload(b"\x50\x45\x00\x38\x39\xff8988", 4));
    }
}

//! Responses as the pipeline decides them, and their framing as ACK, NON or
//! CON messages.

use coapgate_codec::{self as codec, CoapOption, MessageClass, MessageType, Packet, ResponseType};
use coapgate_exchange::MessageIds;
use zeroize::Zeroizing;

/// Max-Age, in seconds, of a 5.03 Service Unavailable.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 5;

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

    /// 5.03 Service Unavailable with Max-Age: come back later (an
    /// overload, or a store that cannot take a write now).
    pub(crate) fn service_unavailable() -> Self {
        Self::new(ResponseType::ServiceUnavailable)
            .with_uint_option(CoapOption::MaxAge, RETRY_AFTER_SECONDS)
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

impl Response {
    /// The encoded message under a message ID of ours (a NON response, or
    /// a separate CON one), and that ID.
    ///
    /// With a payload, the ID is the next one from `ids` that leaves the
    /// bytes before the payload readable for 1NCE's C SDK: it finds the
    /// `/bootstrap` answer by searching the datagram for `89` (the start of
    /// every ICCID) with C string functions, so those bytes may hold
    /// neither the text `89` nor a `0x00`, which would end the string
    /// early (spec.md §2.4). Only the token, which the device chose, can
    /// make that impossible; then the first ID is used.
    pub(crate) fn encode_own(
        &self,
        message_type: MessageType,
        ids: &mut MessageIds,
        token: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        let mut bytes = self.encode(message_type, 0, token)?;
        let message_id = if self.payload.is_empty() {
            ids.next_id()
        } else {
            let head_len = bytes.len() - self.payload.len();
            let mut head = bytes[..head_len].to_vec();
            let first = ids.next_id();
            let mut readable = |id: u16| {
                head[2..4].copy_from_slice(&id.to_be_bytes());
                c_string_readable(&head)
            };
            if readable(first) {
                first
            } else {
                let id = ids.next_id_where(&mut readable);
                if readable(id) { id } else { first }
            }
        };
        bytes[2..4].copy_from_slice(&message_id.to_be_bytes());
        Some((message_id, bytes))
    }
}

/// Whether bytes before a payload let a C string search reach it: no `0x00`
/// (the end of a C string) and no text `89`.
pub(crate) fn c_string_readable(head: &[u8]) -> bool {
    !head.contains(&0) && !head.windows(2).any(|w| w == b"89")
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
    fn readable_heads_have_neither_nul_nor_89() {
        assert!(c_string_readable(b"\x50\x45\x12\x34\xc0\xff"));
        assert!(!c_string_readable(b"\x50\x45\x38\x39\xc0\xff"));
        assert!(!c_string_readable(b"\x50\x45\x12\x00\xc0\xff"));
        // Across the header/option boundary too.
        assert!(!c_string_readable(b"\x50\x45\x00\x38\x39\xff"));
        assert!(!c_string_readable(b"\x50\x45\x12\x38\x39\xff"));
    }

    /// The field case of spec.md §2.4: a NON 2.05 with no token and a
    /// text/plain payload, whatever message ID the counter is at.
    #[test]
    fn every_message_id_counter_gives_a_readable_bootstrap_answer() {
        let body = b"8988280666000000000,aB3dEf7hIjKlMnOp,coaps://localhost:5684".to_vec();
        let response = Response::new(ResponseType::Content).with_text(Zeroizing::new(body.clone()));
        for start in 0..=u16::MAX {
            let mut ids = MessageIds::new(start);
            let (id, bytes) = response
                .encode_own(MessageType::NonConfirmable, &mut ids, &[])
                .expect("encodes");
            let head = &bytes[..bytes.len() - body.len()];
            assert!(
                c_string_readable(head),
                "start {start:#06x}: id {id:#06x} gives {head:02x?}"
            );
            assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), id);
            assert!(bytes.ends_with(&body));
        }
    }

    #[test]
    fn ids_are_used_in_order_when_the_payload_does_not_care() {
        let response = Response::new(ResponseType::Changed);
        let mut ids = MessageIds::new(0x3838);
        let (id, bytes) = response
            .encode_own(MessageType::Confirmable, &mut ids, &[])
            .expect("encodes");
        assert_eq!((id, &bytes[2..4]), (0x3838, &[0x38, 0x38][..]));
    }
}

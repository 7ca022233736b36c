//! The request every device sends, `POST /data?t=load` with a 4-byte token
//! and the configured payload: encoded once per run, then only the message
//! ID and the token change (both sit at fixed offsets of the CoAP header).

use coapgate_codec::{self as codec, CoapOption, MessageClass, MessageType, Packet, RequestType};

use crate::LoadError;

/// Where the message ID sits in a CoAP datagram (RFC 7252 §3).
const MESSAGE_ID: std::ops::Range<usize> = 2..4;
/// Where a 4-byte token sits: right after the 4-byte header.
const TOKEN: std::ops::Range<usize> = 4..8;

/// The encoded request, message ID and token to be filled in.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    template: Vec<u8>,
}

impl Request {
    /// A CON (or NON) `POST /data?t=load` with `payload_size` bytes of
    /// `abc…z` payload.
    pub(crate) fn new(non: bool, payload_size: usize) -> Result<Self, LoadError> {
        let payload = (0..payload_size).map(|i| b'a' + (i % 26) as u8).collect();
        Ok(Self {
            template: encode(non, 0, 0, payload)?,
        })
    }

    /// The request's bytes with this message ID and token.
    pub(crate) fn bytes(&self, message_id: u16, token: u32) -> Vec<u8> {
        let mut bytes = self.template.clone();
        bytes[MESSAGE_ID].copy_from_slice(&message_id.to_be_bytes());
        bytes[TOKEN].copy_from_slice(&token.to_be_bytes());
        bytes
    }
}

/// The request with every field set, through the codec.
fn encode(non: bool, message_id: u16, token: u32, payload: Vec<u8>) -> Result<Vec<u8>, LoadError> {
    let mut packet = Packet::new();
    packet.header.set_type(if non {
        MessageType::NonConfirmable
    } else {
        MessageType::Confirmable
    });
    packet.header.code = MessageClass::Request(RequestType::Post);
    packet.header.message_id = message_id;
    codec::set_token(&mut packet, &token.to_be_bytes())?;
    packet.add_option(CoapOption::UriPath, b"data".to_vec());
    packet.add_option(CoapOption::UriQuery, b"t=load".to_vec());
    packet.payload = payload;
    Ok(codec::encode(&packet)?)
}

/// The token of a packet as the generator makes them (4 bytes,
/// big-endian); `None` for any other length.
pub(crate) fn token_of(packet: &Packet) -> Option<u32> {
    let token: [u8; 4] = packet.get_token().try_into().ok()?;
    Some(u32::from_be_bytes(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_in_the_template_equals_encoding_each_request() {
        for non in [false, true] {
            let request = Request::new(non, 30).unwrap();
            for (message_id, token) in [(0, 0), (1, 2), (0xBEEF, 0xDEAD_BEEF), (u16::MAX, u32::MAX)]
            {
                let payload = (0..30).map(|i| b'a' + (i % 26) as u8).collect();
                assert_eq!(
                    request.bytes(message_id, token),
                    encode(non, message_id, token, payload).unwrap()
                );
            }
        }
    }

    #[test]
    fn the_request_decodes_as_sent() {
        let bytes = Request::new(false, 3).unwrap().bytes(0x1234, 77);
        let packet = codec::decode(&bytes).unwrap();
        assert_eq!(packet.header.get_type(), MessageType::Confirmable);
        assert_eq!(packet.header.message_id, 0x1234);
        assert_eq!(token_of(&packet), Some(77));
        assert_eq!(packet.payload, b"abc");
        assert_eq!(
            packet
                .get_option(CoapOption::UriPath)
                .unwrap()
                .front()
                .unwrap(),
            b"data"
        );
        let mut other = packet.clone();
        other.set_token(vec![1, 2]);
        assert_eq!(token_of(&other), None);
    }
}

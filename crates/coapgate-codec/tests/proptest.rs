//! Properties of the codec over generated packets and arbitrary bytes.

use coapgate_codec::{
    CoapOption, MessageClass, MessageType, Packet, decode, encode, fuzzing::decode_roundtrip,
    set_token,
};
use proptest::prelude::*;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Confirmable),
        Just(MessageType::NonConfirmable),
        Just(MessageType::Acknowledgement),
        Just(MessageType::Reset),
    ]
}

/// Any code outside the reserved classes 1, 6 and 7, except 0.00.
fn non_empty_code() -> impl Strategy<Value = u8> {
    prop_oneof![1u8..=0x1f, 0x40u8..=0xbf]
}

/// Option numbers: mostly small (the common one-byte deltas), some large.
fn option_number() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0u16..=64, 1 => any::<u16>()]
}

/// Option values: mostly short, some needing the 1- and 2-byte extended lengths.
fn option_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=12),
        2 => proptest::collection::vec(any::<u8>(), 13..=268),
        1 => proptest::collection::vec(any::<u8>(), 269..=600),
    ]
}

/// Packets as the endpoint could build them: an Empty message, or a request
/// or response with a token of 0..=8 bytes, options and a payload.
fn packet() -> impl Strategy<Value = Packet> {
    let empty = (message_type(), any::<u16>()).prop_map(|(message_type, message_id)| {
        let mut packet = Packet::new();
        packet.header.set_type(message_type);
        packet.header.code = MessageClass::Empty;
        packet.header.message_id = message_id;
        packet
    });
    let full = (
        message_type(),
        non_empty_code(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec((option_number(), option_value()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(message_type, code, message_id, token, options, payload)| {
                let mut packet = Packet::new();
                packet.header.set_type(message_type);
                packet.header.code = MessageClass::from(code);
                packet.header.message_id = message_id;
                set_token(&mut packet, &token).expect("at most 8 bytes");
                for (number, value) in options {
                    packet.add_option(CoapOption::from(number), value);
                }
                packet.payload = payload;
                packet
            },
        );
    prop_oneof![1 => empty, 4 => full]
}

/// Datagrams that start with a version-1 header, so that the fuzzing reaches
/// the token and option parsing more often than uniform bytes do.
fn version_1_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        0x40u8..=0x7f,
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(first, code, rest)| [vec![first, code, 0x12, 0x34], rest].concat())
}

proptest! {
    #[test]
    fn every_generated_packet_round_trips_through_encode_and_decode(packet in packet()) {
        let bytes = encode(&packet).expect("a generated packet encodes");
        prop_assert_eq!(decode(&bytes).expect("and decodes"), packet);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_whatever_decodes_re_encodes_exactly(
        data in proptest::collection::vec(any::<u8>(), 0..100)
    ) {
        decode_roundtrip(&data);
    }

    #[test]
    fn version_1_datagrams_never_panic_and_whatever_decodes_re_encodes_exactly(
        data in version_1_datagram()
    ) {
        decode_roundtrip(&data);
    }

    #[test]
    fn every_encoded_packet_passes_the_fuzz_target_checks(packet in packet()) {
        let bytes = encode(&packet).expect("encodes");
        decode_roundtrip(&bytes);
    }
}

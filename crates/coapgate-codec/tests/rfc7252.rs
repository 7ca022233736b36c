//! The codec against RFC 7252 and spec.md §2.1 step 1, one rule per test,
//! each with the exact bytes on the wire.

use coapgate_codec::{
    CoapOption, DecodeError, EncodeError, FormatError, IgnoreReason, MessageClass, MessageType,
    Packet, RequestType, ResponseType, decode, empty_ack, encode, option_number, option_values,
    reset, set_token, unrecognised_critical_option, uri_path,
};

/// Bytes from hex text; spaces are ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii hex");
            u8::from_str_radix(pair, 16).expect("hex digits")
        })
        .collect()
}

fn format_error(data: &[u8]) -> FormatError {
    match decode(data) {
        Err(DecodeError::Format { reason, .. }) => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

// ---- valid messages -------------------------------------------------------

#[test]
fn the_1nce_c_sdk_bootstrap_request_decodes_to_non_get_bootstrap() {
    let datagram = hex("50 01 e9 03 3d 03 636f61702e6f732e316e63652e636f6d 89 626f6f747374726170");
    let packet = decode(&datagram).expect("valid");
    assert_eq!(packet.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(packet.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(packet.header.message_id, 0xe903);
    assert!(packet.get_token().is_empty());
    assert_eq!(
        option_values(&packet, option_number::URI_HOST).collect::<Vec<_>>(),
        [b"coap.os.1nce.com".as_slice()]
    );
    assert_eq!(uri_path(&packet), [b"bootstrap".as_slice()]);
    assert!(packet.payload.is_empty());
    assert_eq!(encode(&packet).expect("encodes"), datagram);
}

#[test]
fn a_con_post_with_uri_query_and_payload_decodes() {
    // CON POST mid 0x1234 token 0xab, Uri-Path "data", Uri-Query "t=test", payload "hi".
    let datagram = hex("41 02 1234 ab b4 64617461 46 743d74657374 ff 6869");
    let packet = decode(&datagram).expect("valid");
    assert_eq!(packet.header.get_type(), MessageType::Confirmable);
    assert_eq!(packet.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(packet.get_token(), [0xab]);
    assert_eq!(uri_path(&packet), [b"data".as_slice()]);
    assert_eq!(
        option_values(&packet, option_number::URI_QUERY).collect::<Vec<_>>(),
        [b"t=test".as_slice()]
    );
    assert_eq!(packet.payload, b"hi");
}

#[test]
fn an_8_byte_token_is_the_longest_allowed() {
    let datagram = hex("58 02 0001 0102030405060708 ff 00");
    let packet = decode(&datagram).expect("valid");
    assert_eq!(packet.get_token(), [1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn an_empty_con_is_a_valid_ping() {
    let packet = decode(&hex("40 00 7777")).expect("valid");
    assert_eq!(packet.header.get_type(), MessageType::Confirmable);
    assert_eq!(packet.header.code, MessageClass::Empty);
}

#[test]
fn option_values_keep_their_order_and_repetitions() {
    // Uri-Path "a", Uri-Path "b", Uri-Query "x=1", Uri-Query "t=z".
    let datagram = hex("40 01 0001 b161 0162 43 783d31 03 743d7a");
    let packet = decode(&datagram).expect("valid");
    assert_eq!(uri_path(&packet), [b"a".as_slice(), b"b"]);
    assert_eq!(
        option_values(&packet, option_number::URI_QUERY).collect::<Vec<_>>(),
        [b"x=1".as_slice(), b"t=z"]
    );
    assert_eq!(
        option_values(&packet, option_number::LOCATION_QUERY).count(),
        0
    );
}

#[test]
fn uri_path_keeps_segments_that_are_not_utf8() {
    let datagram = hex("40 01 0001 b2 ff fe");
    let packet = decode(&datagram).expect("valid");
    assert_eq!(uri_path(&packet), [[0xff, 0xfe].as_slice()]);
}

#[test]
fn extended_option_deltas_and_lengths_decode() {
    // Option 60 (Size1): delta nibble 13, extended delta 47. Option 2000:
    // delta nibble 14, extended 2000 - 60 - 269 = 1671 = 0x0687, a
    // 300-byte value: length nibble 14, extended 300 - 269 = 31.
    let value = vec![0x5a; 300];
    let datagram = [hex("40 01 0001 d1 2f 04 ee 0687 001f"), value.clone()].concat();
    let packet = decode(&datagram).expect("valid");
    assert_eq!(
        option_values(&packet, option_number::SIZE1).collect::<Vec<_>>(),
        [[4].as_slice()]
    );
    assert_eq!(
        option_values(&packet, 2000).collect::<Vec<_>>(),
        [value.as_slice()]
    );
    assert_eq!(encode(&packet).expect("encodes"), datagram);
}

// ---- dropped silently ------------------------------------------------------

#[test]
fn fewer_than_4_bytes_are_ignored() {
    for datagram in [&[][..], &[0x40], &[0x40, 0x01], &[0x40, 0x01, 0x00]] {
        assert_eq!(
            decode(datagram),
            Err(DecodeError::Ignored(IgnoreReason::TooShort))
        );
    }
}

#[test]
fn a_version_other_than_1_is_ignored_without_reset() {
    for (first, version) in [(0x00, 0), (0x80, 2), (0xc0, 3)] {
        let error = decode(&[first, 0x01, 0x00, 0x01]).expect_err("bad version");
        assert_eq!(error, DecodeError::Ignored(IgnoreReason::Version(version)));
        assert_eq!(error.reset(), None);
    }
}

// ---- message format errors ------------------------------------------------

#[test]
fn token_lengths_9_to_15_are_format_errors() {
    for tkl in 9..=15u8 {
        let datagram = [vec![0x40 | tkl, 0x01, 0x00, 0x01], vec![0; 15]].concat();
        assert_eq!(format_error(&datagram), FormatError::TokenLength(tkl));
    }
}

#[test]
fn a_token_cut_short_is_a_format_error() {
    assert_eq!(
        format_error(&hex("44 01 0001 aabb")),
        FormatError::TruncatedToken
    );
}

#[test]
fn an_option_cut_short_is_a_format_error() {
    // Uri-Path announces 4 bytes, 2 arrive.
    assert_eq!(
        format_error(&hex("40 01 0001 b4 6461")),
        FormatError::TruncatedOption
    );
    // Extended delta byte missing.
    assert_eq!(
        format_error(&hex("40 01 0001 d0")),
        FormatError::TruncatedOption
    );
    // Extended 2-byte length with one byte.
    assert_eq!(
        format_error(&hex("40 01 0001 1e 00")),
        FormatError::TruncatedOption
    );
}

#[test]
fn option_delta_nibble_15_that_is_not_the_payload_marker_is_a_format_error() {
    assert_eq!(
        format_error(&hex("40 01 0001 f0 00")),
        FormatError::ReservedOptionDelta
    );
}

#[test]
fn option_length_nibble_15_is_a_format_error() {
    assert_eq!(
        format_error(&hex("40 01 0001 bf 00")),
        FormatError::ReservedOptionLength
    );
}

#[test]
fn option_numbers_beyond_65535_are_a_format_error() {
    // 269 + 0xffff - 1 = 65803, then +12.
    assert_eq!(
        format_error(&hex("40 01 0001 e0 fffe c0")),
        FormatError::OptionNumberOverflow
    );
}

#[test]
fn option_values_longer_than_65535_bytes_are_a_format_error() {
    // Length nibble 14, extended 65535 - 269 + 1 → 65536 bytes.
    let datagram = [hex("40 01 0001 de 02 fef3"), vec![b'x'; 65_536]].concat();
    assert_eq!(format_error(&datagram), FormatError::OptionValueTooLong);
}

#[test]
fn a_payload_marker_with_no_payload_is_a_format_error() {
    assert_eq!(
        format_error(&hex("40 02 0001 ff")),
        FormatError::EmptyPayload
    );
    assert_eq!(
        format_error(&hex("41 02 0001 aa b1 61 ff")),
        FormatError::EmptyPayload
    );
}

#[test]
fn an_empty_message_with_a_token_options_or_payload_is_a_format_error() {
    for datagram in [
        "41 00 0001 aa",
        "40 00 0001 b1 61",
        "40 00 0001 ff 01",
        "60 00 0001 00",
    ] {
        assert_eq!(
            format_error(&hex(datagram)),
            FormatError::NonEmptyEmptyMessage,
            "{datagram}"
        );
    }
}

#[test]
fn reserved_code_classes_1_6_and_7_are_format_errors() {
    for (code, class) in [(0x20, 1), (0x3f, 1), (0xc0, 6), (0xe0, 7), (0xff, 7)] {
        assert_eq!(
            format_error(&[0x40, code, 0x00, 0x01]),
            FormatError::ReservedCodeClass(class)
        );
    }
}

#[test]
fn unassigned_codes_in_the_request_and_response_classes_are_not_format_errors() {
    // 0.08 and 2.06: unknown method / response, the endpoint's business.
    assert!(decode(&[0x40, 0x08, 0x00, 0x01]).is_ok());
    assert!(decode(&[0x60, 0x46, 0x00, 0x01]).is_ok());
}

#[test]
fn a_format_error_names_the_message_type_and_id() {
    assert_eq!(
        decode(&hex("59 02 abcd")),
        Err(DecodeError::Format {
            message_type: MessageType::NonConfirmable,
            message_id: 0xabcd,
            reason: FormatError::TokenLength(9),
        })
    );
}

#[test]
fn a_confirmable_format_error_is_answered_with_rst_and_its_message_id() {
    let error = decode(&hex("40 02 abcd ff")).expect_err("format error");
    assert_eq!(error.reset(), Some(hex("70 00 abcd")));
}

#[test]
fn a_format_error_in_non_ack_or_rst_is_dropped_without_rst() {
    for first in [0x50, 0x60, 0x70] {
        let error = decode(&[first, 0x02, 0xab, 0xcd, 0xff]).expect_err("format error");
        assert_eq!(error.reset(), None, "type byte {first:#x}");
    }
}

// ---- building responses ---------------------------------------------------

#[test]
fn empty_ack_and_reset_are_4_byte_header_only_messages() {
    assert_eq!(empty_ack(0x1234), hex("60 00 1234"));
    assert_eq!(reset(0x1234), hex("70 00 1234"));
    let ack = decode(&empty_ack(7)).expect("valid");
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.code, MessageClass::Empty);
    assert_eq!(ack.header.message_id, 7);
}

#[test]
fn a_piggybacked_response_encodes_as_expected() {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Acknowledgement);
    packet.header.code = MessageClass::Response(ResponseType::Changed);
    packet.header.message_id = 0x1234;
    set_token(&mut packet, &[0xab, 0xcd]).expect("short token");
    assert_eq!(encode(&packet).expect("encodes"), hex("62 44 1234 abcd"));
}

#[test]
fn set_token_refuses_more_than_8_bytes_instead_of_panicking() {
    let mut packet = Packet::new();
    for len in [9, 15, 16, 300] {
        assert_eq!(
            set_token(&mut packet, &vec![0; len]),
            Err(EncodeError::TokenTooLong(len))
        );
    }
    assert!(packet.get_token().is_empty());
    set_token(&mut packet, &[0; 8]).expect("8 bytes are fine");
    assert_eq!(packet.get_token().len(), 8);
}

#[test]
fn encode_refuses_a_token_coap_lite_was_made_to_accept() {
    let mut packet = Packet::new();
    packet.set_token(vec![0; 9]); // coap-lite's own setter, no check
    assert_eq!(encode(&packet), Err(EncodeError::TokenTooLong(9)));
}

#[test]
fn encode_refuses_a_header_token_length_that_disagrees_with_the_token() {
    let mut packet = Packet::new();
    packet.header.set_token_length(3);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::TokenLengthMismatch {
            header: 3,
            token: 0
        })
    );
}

#[test]
fn encode_refuses_option_values_longer_than_the_encoding_allows() {
    let mut packet = Packet::new();
    packet.add_option(CoapOption::UriQuery, vec![b'x'; 65_536]);
    assert_eq!(
        encode(&packet),
        Err(EncodeError::OptionTooLong {
            number: 15,
            len: 65_536
        })
    );
    packet.clear_all_options();
    packet.add_option(CoapOption::UriQuery, vec![b'x'; 65_535]);
    let bytes = encode(&packet).expect("the longest value encodes");
    assert_eq!(decode(&bytes).expect("and decodes"), packet);
}

#[test]
fn encode_refuses_an_empty_message_with_content() {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Empty;
    packet.payload = b"x".to_vec();
    assert_eq!(encode(&packet), Err(EncodeError::NonEmptyEmptyMessage));
}

#[test]
fn encode_refuses_reserved_codes_and_versions() {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Request(RequestType::UnKnown);
    assert_eq!(encode(&packet), Err(EncodeError::ReservedCode(0xff)));
    let mut packet = Packet::new();
    packet.header.set_version(2);
    assert_eq!(encode(&packet), Err(EncodeError::Version(2)));
}

// ---- options the endpoint must check ----------------------------------------

fn with_options(numbers: &[u16]) -> Packet {
    let mut packet = Packet::new();
    for &number in numbers {
        packet.add_option(CoapOption::from(number), b"v".to_vec());
    }
    packet
}

#[test]
fn every_rfc7252_option_is_recognised() {
    let packet = with_options(&[1, 3, 4, 5, 7, 8, 11, 12, 14, 15, 17, 20, 35, 39, 60]);
    assert_eq!(unrecognised_critical_option(&packet, &[]), None);
}

#[test]
fn the_first_unrecognised_critical_option_is_reported() {
    // 9 (OSCORE) and 27 (Block1) are critical but not RFC 7252; 2 and 6 are elective.
    let packet = with_options(&[2, 6, 11, 27, 9]);
    assert_eq!(unrecognised_critical_option(&packet, &[]), Some(9));
}

#[test]
fn unknown_elective_options_are_not_reported() {
    let packet = with_options(&[2, 6, 28, 258, 2048]);
    assert_eq!(unrecognised_critical_option(&packet, &[]), None);
}

#[test]
fn the_engine_can_recognise_more_options() {
    let packet = with_options(&[11, 27]);
    assert_eq!(unrecognised_critical_option(&packet, &[]), Some(27));
    assert_eq!(
        unrecognised_critical_option(&packet, &[option_number::BLOCK1]),
        None
    );
}

#[test]
fn an_option_cleared_by_coap_lite_is_not_reported() {
    let mut packet = with_options(&[9]);
    packet.clear_option(CoapOption::Oscore); // leaves an empty list behind
    assert_eq!(unrecognised_critical_option(&packet, &[]), None);
}

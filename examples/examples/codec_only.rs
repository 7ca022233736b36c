//! The codec alone: decode the bootstrap request 1NCE's C SDK sends
//! (`NON GET coap://coap.os.1nce.com/bootstrap`), print what is in it, then
//! build the response and encode it — no engine, no sockets.
//!
//! `cargo run -p coapgate-examples --example codec_only`

use coapgate_codec::{
    ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType, decode, encode,
    option_number, option_values, set_token, uri_path,
};

/// `50 01 e9 03`: version 1, NON, no token, 0.01 GET, message ID 0xe903;
/// `3d 03 …`: Uri-Host (option 3), 16 bytes; `89 …`: Uri-Path (3 + 8 = 11), 9 bytes.
const BOOTSTRAP_REQUEST: &str =
    "5001e903 3d03 636f61702e6f732e316e63652e636f6d 89 626f6f747374726170";

fn main() {
    let datagram = hex(BOOTSTRAP_REQUEST);
    let request = decode(&datagram).expect("the C SDK's request is valid CoAP");

    println!("type:       {:?}", request.header.get_type());
    println!("code:       {}", request.header.code);
    println!("message ID: {:#06x}", request.header.message_id);
    for (number, values) in request.options() {
        for value in values {
            println!("option {number:>2}:  {:?}", String::from_utf8_lossy(value));
        }
    }
    assert_eq!(request.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(request.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(request.header.message_id, 0xe903);
    assert_eq!(uri_path(&request), [b"bootstrap".as_slice()]);
    assert_eq!(
        option_values(&request, option_number::URI_HOST).collect::<Vec<_>>(),
        [b"coap.os.1nce.com".as_slice()]
    );

    // A NON request gets a NON response (RFC 7252 §5.2.3) with its own
    // message ID and the request's token (here: none).
    let mut response = Packet::new();
    response.header.set_type(MessageType::NonConfirmable);
    response.header.code = MessageClass::Response(ResponseType::Content);
    response.header.message_id = 0x0001;
    set_token(&mut response, request.get_token()).expect("a request's token fits");
    response.set_content_format(ContentFormat::TextPlain);
    response.payload = b"8988280666000000000,0102030405060708090a0b0c0d0e0f10".to_vec();
    let bytes = encode(&response).expect("a well-formed response encodes");
    println!("response:   {}", to_hex(&bytes));

    // What we encode, we decode back unchanged.
    assert_eq!(decode(&bytes).expect("our own bytes decode"), response);
    assert_eq!(
        bytes[..4],
        [0x50, 0x45, 0x00, 0x01],
        "NON 2.05, message ID 1"
    );
}

/// Hex text (spaces allowed) to bytes.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(pair, 16).expect("hex digits")
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

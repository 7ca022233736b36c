//! Fuzz target `decode`: arbitrary datagrams through the CoAP codec.
//! The checks live in `coapgate_codec::fuzzing::decode_roundtrip`, so that
//! `cargo test -p coapgate-codec` replays the corpus through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coapgate_codec::fuzzing::decode_roundtrip(data));

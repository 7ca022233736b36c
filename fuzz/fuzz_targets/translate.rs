//! Fuzz target `translate`: a template's text, a NUL byte, a payload.
//! The checks live in `coapgate_translate::fuzzing::template_and_payload`, so
//! that `cargo test -p coapgate-translate` replays the corpus through the same
//! code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coapgate_translate::fuzzing::template_and_payload(data));

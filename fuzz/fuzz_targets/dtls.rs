//! Fuzz target `dtls`: a script of datagrams from three peers (and clock
//! steps, sends, closes) through a `DtlsServer` on OpenSSL. The script
//! format and the invariants live in `coapgate_dtls::fuzzing`, so that
//! `cargo test -p coapgate-dtls` replays the corpus through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coapgate_dtls::fuzzing::datagrams(data));

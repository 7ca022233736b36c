//! Fuzz target `endpoint`: scripts of datagrams, broker verdicts, broker
//! state flips and clock steps driven through the sans-IO engine. The script
//! format and the invariants live in `coapgate_endpoint::fuzzing`, so that
//! `cargo test -p coapgate-endpoint` replays the corpus through the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coapgate_endpoint::fuzzing::endpoint(data));

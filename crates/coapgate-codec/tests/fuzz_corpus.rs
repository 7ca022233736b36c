//! Replays the committed fuzz corpus (`fuzz/corpus/decode/`) through the
//! fuzz target's own body, so every `cargo test` re-checks the seeds and any
//! past findings without libFuzzer or nightly.
//!
//! Seeds follow a naming rule that makes them a specification too: files
//! named `ok-*` must decode, files named `bad-*` must be rejected. Files
//! libFuzzer adds locally (named by their hash) are replayed as well.

use coapgate_codec::{decode, fuzzing::decode_roundtrip};

#[test]
fn every_file_in_the_decode_corpus_passes_the_fuzz_target() {
    for (name, data) in coapgate_testkit::fuzz_corpus("decode") {
        decode_roundtrip(&data);
        if name.starts_with("ok-") {
            assert!(
                decode(&data).is_ok(),
                "{name} must decode: {:?}",
                decode(&data)
            );
        }
        if name.starts_with("bad-") {
            assert!(decode(&data).is_err(), "{name} must be rejected");
        }
    }
}

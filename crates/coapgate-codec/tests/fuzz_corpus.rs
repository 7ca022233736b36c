//! Replays the committed fuzz corpus (`fuzz/corpus/decode/`) through the
//! fuzz target's own body, so every `cargo test` re-checks the seeds and any
//! past findings without libFuzzer or nightly.
//!
//! Seeds follow a naming rule that makes them a specification too: files
//! named `ok-*` must decode, files named `bad-*` must be rejected. Files
//! libFuzzer adds locally (named by their hash) are replayed as well.

use std::{fs, path::Path};

use coapgate_codec::{decode, fuzzing::decode_roundtrip};

#[test]
fn every_file_in_the_decode_corpus_passes_the_fuzz_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("corpus {} missing: {error}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let data = fs::read(&path)
            .unwrap_or_else(|error| panic!("{} unreadable: {error}", path.display()));
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
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
        replayed += 1;
    }
    assert!(replayed > 0, "corpus {} is empty", dir.display());
}

//! A quick measure of the hot path, not a benchmark suite: the time per
//! translation of 1NCE's Temperature/Humidity/Switch example. Ignored by
//! default; run it in release mode:
//!
//! ```sh
//! cargo test --release -p coapgate-translate --test speed -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::hint::black_box;
use std::time::Instant;

use coapgate_translate::Template;

#[test]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
fn nanoseconds_per_translation() {
    let template = Template::parse_str(
        r#"{"sense": [
            {"asset": "Temperature", "value": {"byte": 0, "bytelength": 2, "type": "int"}},
            {"asset": "Humidity", "value": {"byte": 2, "bytelength": 2, "type": "int"}},
            {"asset": "Switch", "value": {"byte": 4, "type": "boolean"}}
        ]}"#,
    )
    .unwrap();
    let payload = [0x00, 0x1A, 0x00, 0x37, 0x00];
    let rounds = 1_000_000u32;
    for _ in 0..10_000 {
        black_box(template.translate(black_box(&payload)).unwrap());
    }
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(template.translate(black_box(&payload)).unwrap());
    }
    let per = start.elapsed().as_nanos() / u128::from(rounds);
    println!("translate (Temperature/Humidity/Switch): {per} ns per payload");
    // Also with serialization, as the engine publishes it.
    let start = Instant::now();
    for _ in 0..rounds {
        let translation = template.translate(black_box(&payload)).unwrap();
        black_box(serde_json::to_vec(&translation.value).unwrap());
    }
    let per = start.elapsed().as_nanos() / u128::from(rounds);
    println!("translate + serialize: {per} ns per payload");
}

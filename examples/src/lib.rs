//! Examples of embedding coapgate one piece at a time; the code is in
//! `examples/` (run one with `cargo run -p coapgate-examples --example NAME`,
//! see `README.md`). This library is intentionally empty.

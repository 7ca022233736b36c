//! Runs every example and requires it to succeed: each example checks its
//! own results with `assert!` in `main`, so a failing example fails here.
//!
//! `cargo test -p coapgate-examples` builds the examples before it runs the
//! tests, next to this test's own binary (`target/<profile>/examples/`);
//! those binaries are run directly. When they are missing (for example with
//! `cargo test --test examples_run`, which builds no examples), the test
//! falls back to `cargo run --example`.

use std::path::PathBuf;
use std::process::{Command, Output};

const EXAMPLES: [&str; 3] = ["codec_only", "engine_custom_sink", "topic_templates"];

/// `target/<profile>/examples/<name>`, derived from this test's own path
/// (`target/<profile>/deps/examples_run-<hash>`).
fn built_example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn run(name: &str) -> Output {
    let mut command = match built_example(name) {
        Some(path) => Command::new(path),
        None => {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["run", "-q", "-p", "coapgate-examples", "--example", name]);
            cargo
        }
    };
    command
        .output()
        .unwrap_or_else(|error| panic!("could not start example {name}: {error}"))
}

#[test]
fn every_example_runs_and_its_assertions_hold() {
    for name in EXAMPLES {
        let output = run(name);
        assert!(
            output.status.success(),
            "example {name} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.stdout.is_empty(), "example {name} printed nothing");
    }
}

#[test]
fn every_example_file_is_listed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    found.sort();
    assert_eq!(
        found, EXAMPLES,
        "keep EXAMPLES (and README.md) in step with examples/"
    );
}

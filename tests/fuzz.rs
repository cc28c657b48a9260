//! The fuzz targets of `fuzz/` in the normal test run: every file of each
//! target's seed corpus (`fuzz/corpus/TARGET`) and of its regressions (the
//! inputs that once crashed it, `fuzz/regressions/TARGET`), then a bounded
//! number of random mutations of them (seeded, so a failure repeats). The
//! long, coverage-guided runs are `cargo fuzz run TARGET` (fuzz/README.md).

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use gleitzeit::fuzzing;
use std::path::Path;

/// Mutations per target and seed file: enough to shake out shallow bugs in
/// seconds; the coverage-guided fuzzer does the deep search.
const MUTATIONS: usize = 300;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = support::root().join("fuzz").join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        inputs.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
    }
    assert!(!inputs.is_empty(), "no seed corpus for {target}");
    inputs
}

/// A random edit of `seed`: bytes flipped, inserted (often structural ones),
/// removed, or a slice repeated.
fn mutate(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    const INTERESTING: &[u8] = b"{}[]:,\"'\\\n -#&*!|>?$.%@0\xc3\xa9\xff";
    let mut out = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = if out.is_empty() { 0 } else { rng.usize(..out.len()) };
        match rng.u8(..4) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.u8(..8),
            1 => out.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            2 if !out.is_empty() => {
                let end = (at + rng.usize(1..=16)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let end = (at + rng.usize(1..=32)).min(out.len());
                let slice = out[at..end].to_vec();
                for _ in 0..rng.usize(1..=8) {
                    out.splice(at..at, slice.iter().copied());
                }
            }
        }
    }
    out
}

fn exercise(target: &str, mutations: usize, run: fn(&[u8])) {
    let seeds = inputs(target);
    let mut rng = fastrand::Rng::with_seed(0x6c65_6974_7a65_6974);
    for seed in &seeds {
        run(seed);
        for _ in 0..mutations {
            run(&mutate(seed, &mut rng));
        }
    }
}

#[test]
fn workflow_text() {
    exercise("workflow_text", MUTATIONS, fuzzing::workflow_text);
}

#[test]
fn references() {
    exercise("references", MUTATIONS, fuzzing::references);
}

#[test]
fn client_packet() {
    exercise("client_packet", MUTATIONS, fuzzing::client_packet);
}

#[test]
fn settings() {
    exercise("settings", MUTATIONS, fuzzing::settings);
}

/// Each mutation is a round trip to a live daemon: fewer of them.
#[test]
fn server_payload() {
    exercise("server_payload", MUTATIONS / 10, fuzzing::server_payload);
}

/// The targets fuzz/Cargo.toml builds are exactly these, each with a seed corpus.
#[test]
fn every_fuzz_target_has_a_corpus_and_a_test_here() {
    let manifest = std::fs::read_to_string(support::root().join("fuzz/Cargo.toml")).unwrap();
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "gleitzeit-fuzz")
        .collect();
    assert_eq!(targets, ["workflow_text", "references", "client_packet", "settings", "server_payload"]);
    for target in targets {
        assert!(Path::new(&support::root().join("fuzz/corpus").join(target)).is_dir(), "{target}");
        assert!(support::root().join(format!("fuzz/fuzz_targets/{target}.rs")).is_file(), "{target}");
    }
}

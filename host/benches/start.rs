//! Start-up: the wall time of whole commands of the `gleitzeit` binary,
//! with an empty compiled-plugin cache (cold: every plugin compiled), with
//! a filled one (warm), and with the cache off; medians of each.
//!
//! Run: `cargo bench -p gleitzeit --bench start` (`-- --quick` for 5 runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop loudly

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Wall time of one `gleitzeit ARGS` with its cache in `cache`.
fn timed(args: &[&str], cache: &Path) -> Duration {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(root)
        .env_remove("GLEITZEIT_LOG")
        .env_remove("GLEITZEIT_PLUGINS")
        .env_remove("GLEITZEIT_NO_CACHE")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 5 } else { 21 };
    println!(
        "gleitzeit start-up: medians of {runs} runs, {} cores\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| command | cold (empty cache) | warm (cache filled) | warm / cold | cache off |");
    println!("|---|---:|---:|---:|---:|");
    let commands: [&[&str]; 2] = [&["run", "workflows/hello.yaml"], &["workflow", "validate", "workflows/hello.yaml"]];
    for args in commands {
        let cold = median(
            (0..runs)
                .map(|_| {
                    let empty = tempfile::tempdir().unwrap();
                    timed(args, empty.path())
                })
                .collect(),
        );
        let filled = tempfile::tempdir().unwrap();
        timed(args, filled.path());
        let warm = median((0..runs).map(|_| timed(args, filled.path())).collect());
        let mut off = args.to_vec();
        off.push("--no-cache");
        let off = median((0..runs).map(|_| timed(&off, filled.path())).collect());
        let ratio = warm.as_secs_f64() / cold.as_secs_f64();
        println!("| `gleitzeit {}` | {} | {} | {ratio:.2}× | {} |", args.join(" "), ms(cold), ms(warm), ms(off));
    }
}

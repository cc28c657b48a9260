//! Builds the bundled plugins (every crate under `plugins/`) into wasm32-wasip2
//! components with `scripts/build-plugins.sh` and embeds them in the binary,
//! so `gleitzeit` carries its providers wherever it is copied, each with its
//! default manifest (`plugins/NAME/manifest.toml`).
//!
//! `python/v1` (the Python SDK's run-python, with its describe() answer) is
//! built with `scripts/build-python-plugin.sh` when componentize-py is
//! installed, and left out (with a warning) when it is not, or when
//! `GLEITZEIT_BUNDLE_PYTHON=0`: the first build on a fresh machine needs no
//! Python packages.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn Error>> {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = host.parent().ok_or("host/ has no parent directory")?;
    for input in
        ["plugins", "plugin-sdk", "scripts/build-plugins.sh", "scripts/wasm-cargo.sh", "scripts/build-python-plugin.sh"]
    {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let target_dir = root.join("target").join("wasm");
    let status = Command::new(root.join("scripts").join("build-plugins.sh")).arg(&target_dir).status()?;
    if !status.success() {
        return Err("building the bundled plugins failed (see above); \
                    scripts/setup-wasm-target.sh installs the wasm32-wasip2 target"
            .into());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut list = bundled_list(root, &target_dir)?;
    list.push_str(&bundled_python(root, &target_dir.join("python"))?);
    std::fs::write(out.join("bundled_plugins.rs"), list)?;
    Ok(())
}

/// `pub const BUNDLED_PYTHON: Option<(&[u8], &str, &[u8; 32])>`: the
/// python/v1 component, its describe() answer and its SHA-256, if
/// componentize-py is installed.
fn bundled_python(root: &Path, out: &Path) -> Result<String, Box<dyn Error>> {
    // Installing componentize-py later must bring python/v1 in: the
    // packages directory changes then.
    if let Ok(found) =
        Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).output()
        && found.status.success()
    {
        println!("cargo:rerun-if-changed={}", String::from_utf8_lossy(&found.stdout).trim());
    }
    let none = "pub const BUNDLED_PYTHON: Option<(&[u8], &str, &[u8; 32])> = None;\n".to_owned();
    println!("cargo:rerun-if-env-changed=GLEITZEIT_BUNDLE_PYTHON");
    if std::env::var("GLEITZEIT_BUNDLE_PYTHON").is_ok_and(|v| v == "0") {
        return Ok(none);
    }
    let status = Command::new(root.join("scripts").join("build-python-plugin.sh")).arg(out).status()?;
    match status.code() {
        Some(0) => {}
        Some(3) => {
            println!(
                "cargo:warning=python/v1 is not bundled: componentize-py is not installed (scripts/test.sh installs it)"
            );
            return Ok(none);
        }
        _ => return Err("building the bundled python/v1 plugin failed (see above)".into()),
    }
    let (wasm, spec) = (out.join("python.wasm"), out.join("python.spec.json"));
    let hex = std::fs::read_to_string(out.join("python.sha256"))?;
    let digest = (0..32)
        .map(|i| hex.get(2 * i..2 * i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or("python.sha256 is not a SHA-256")?;
    Ok(format!(
        "pub const BUNDLED_PYTHON: Option<(&[u8], &str, &[u8; 32])> = Some((include_bytes!({:?}), include_str!({:?}), &{digest:?}));\n",
        wasm.display().to_string(),
        spec.display().to_string()
    ))
}

/// `pub const BUNDLED: &[(&str, &[u8], Option<&str>)]`: each plugin's name,
/// component and default manifest (`plugins/NAME/manifest.toml`, if any).
fn bundled_list(root: &Path, target_dir: &Path) -> Result<String, Box<dyn Error>> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("plugins"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut list = String::from("pub const BUNDLED: &[(&str, &[u8], Option<&str>)] = &[\n");
    for name in names {
        let wasm = target_dir.join("wasm32-wasip2").join("release").join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!("plugin '{name}' was built but {} is missing", wasm.display()).into());
        }
        let manifest = root.join("plugins").join(&name).join("manifest.toml");
        let manifest = match manifest.is_file() {
            true => format!("Some(include_str!({:?}))", manifest.display().to_string()),
            false => "None".to_owned(),
        };
        writeln!(list, "    ({name:?}, include_bytes!({:?}), {manifest}),", wasm.display().to_string())?;
    }
    list.push_str("];\n");
    Ok(list)
}

//! Builds the bundled plugins (every crate under `plugins/`) into wasm32-wasip2
//! components with `scripts/build-plugins.sh` and embeds them in the binary,
//! so `gleitzeit` carries its providers wherever it is copied, each with its
//! default manifest (`plugins/NAME/manifest.toml`).

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn Error>> {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = host.parent().ok_or("host/ has no parent directory")?;
    for input in ["plugins", "plugin-sdk", "scripts/build-plugins.sh", "scripts/wasm-cargo.sh"] {
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
    std::fs::write(out.join("bundled_plugins.rs"), bundled_list(root, &target_dir)?)?;
    Ok(())
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

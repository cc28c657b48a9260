//! Files only their owner may read: the local admin token, the tokens
//! file, the secrets file. Each is created mode 0600 in a directory made
//! 0700, replaced whole (a temporary file renamed over it, so a reader
//! never sees half a file), and refused when read if others may read it.
//! It knows nothing of what the files hold.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Reading or writing a private file failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("cannot {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: PathBuf, reason: String },
    /// Its mode lets others read it: it is not read.
    #[error("{} is readable by other users (mode {mode:o}): `chmod 600` it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
}

fn io_error(action: &'static str, path: &Path, e: impl std::fmt::Display) -> PrivateFileError {
    PrivateFileError::Io { action, path: path.to_owned(), reason: e.to_string() }
}

/// Create `path` (which must not exist) readable by its owner only.
pub fn create(path: &Path, text: &str) -> Result<(), PrivateFileError> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_error("create", path, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io_error("write", path, e))
}

/// Write `path` whole: a temporary file beside it, renamed over it.
pub fn replace(path: &Path, text: &str) -> Result<(), PrivateFileError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    create(&temporary, text)?;
    std::fs::rename(&temporary, path).map_err(|e| io_error("replace", path, e))
}

/// The text of `path`, or None if it does not exist; refused if others
/// may read it.
pub fn read(path: &Path) -> Result<Option<String>, PrivateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", path, e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_err(|e| io_error("read", path, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(PrivateFileError::Exposed { path: path.to_owned(), mode: mode & 0o777 });
        }
    }
    Ok(Some(text))
}

fn create_dir(dir: &Path) -> Result<(), PrivateFileError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error("create the directory", dir, e))
}

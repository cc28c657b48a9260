//! Token secrets and the files that hold them: `DATA_DIR/token` (the local
//! admin token's secret, mode 0600, so the local user's commands need no
//! flag) and `DATA_DIR/tokens.toml` (the tokens `gleitzeit token create`
//! made: names, roles, grants and SHA-256 hashes, never a secret).

use super::{Grant, Role};
use crate::private_files::{self, PrivateFileError};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The local admin token's secret, in the data directory.
pub const LOCAL_TOKEN_FILE: &str = "token";
/// The local admin token's name (reserved: no other token may take it).
pub const LOCAL_TOKEN_NAME: &str = "local";
/// The created tokens, in the data directory.
pub const TOKENS_FILE: &str = "tokens.toml";
/// Every secret starts so, to be recognisable in a leak scan.
const SECRET_PREFIX: &str = "gzt_";

/// A token as the settings file (`[[auth.tokens]]`) and `tokens.toml`
/// (`[[tokens]]`) hold it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// For provider tokens: the protocols it may serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<String>,
    /// `sha256:` and the hex SHA-256 of the secret.
    pub hash: String,
}

impl TokenEntry {
    pub fn grant(&self) -> Grant {
        Grant { name: self.name.clone(), role: self.role, protocols: self.protocols.clone() }
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !is_token_name(&self.name) {
            return Err(format!(
                "token name '{}' must be 1 to 64 letters, digits, '_', '-' or '.'",
                crate::text::excerpt(&self.name)
            ));
        }
        if self.name == LOCAL_TOKEN_NAME {
            return Err(format!("token name '{LOCAL_TOKEN_NAME}' is the local admin token's"));
        }
        let hex = self.hash.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("token '{}': hash must be 'sha256:' and 64 hex digits", self.name));
        }
        match (self.role, self.protocols.is_empty()) {
            (Role::Provider, true) => {
                return Err(format!("provider token '{}' names no protocol it may serve", self.name));
            }
            (Role::Client | Role::Admin | Role::Metrics, false) => {
                return Err(format!("token '{}': only provider tokens name protocols", self.name));
            }
            _ => {}
        }
        match self.protocols.iter().find(|p| !crate::ids::is_protocol(p)) {
            Some(bad) => Err(format!(
                "token '{}': protocol '{}' is not of the form name/version",
                self.name,
                crate::text::excerpt(bad)
            )),
            None => Ok(()),
        }
    }
}

pub use crate::ids::is_token_name;

/// Reading or writing a token file failed.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot {action} {}: {reason}", path.display())]
    Io { action: &'static str, path: PathBuf, reason: String },
    #[error("invalid token file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{} is readable by other users (mode {mode:o}); it holds the local admin token: `chmod 600` it, or delete it to get a new one",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    /// A token asked for that cannot be made as asked.
    #[error("{reason}")]
    BadToken { reason: String },
    #[error("two tokens are named '{name}'; token names are unique")]
    DuplicateName { name: String },
    #[error("no token is named '{name}' in {}", path.display())]
    NoSuchToken { name: String, path: PathBuf },
}

impl From<PrivateFileError> for TokensFileError {
    fn from(e: PrivateFileError) -> Self {
        match e {
            PrivateFileError::Io { action, path, reason } => Self::Io { action, path, reason },
            PrivateFileError::Exposed { path, mode } => Self::Exposed { path, mode },
        }
    }
}

fn io_error(action: &'static str, path: &Path, e: impl std::fmt::Display) -> TokensFileError {
    TokensFileError::Io { action, path: path.to_owned(), reason: e.to_string() }
}

/// `sha256:HEX` of a secret.
pub(super) fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::from("sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A new token named `name`: its entry (with the hash of its secret) and
/// its secret, which is shown once and never kept.
pub fn new_token(name: &str, role: Role, protocols: Vec<String>) -> Result<(TokenEntry, String), TokensFileError> {
    let secret = new_secret()?;
    let entry = TokenEntry { name: name.to_owned(), role, protocols, hash: hash(&secret) };
    entry.check().map_err(|reason| TokensFileError::BadToken { reason })?;
    Ok((entry, secret))
}

/// A new secret: the prefix and 32 random bytes in hex.
fn new_secret() -> Result<String, TokensFileError> {
    let random = random_hex().map_err(|e| io_error("draw random bytes for", Path::new("a token"), e))?;
    Ok(format!("{SECRET_PREFIX}{random}"))
}

/// 32 random bytes from the operating system, in hex: a secret.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut hex = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Whether `a` and `b` are equal, in time that depends on their length only.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// The tokens in `path` (none if it does not exist), each checked.
pub(super) fn read_file(path: &Path) -> Result<Vec<TokenEntry>, TokensFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", path, e)),
    };
    let invalid = |reason: String| TokensFileError::Invalid { path: path.to_owned(), reason };
    let file: TokensFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    for entry in &file.tokens {
        entry.check().map_err(invalid)?;
    }
    Ok(file.tokens)
}

/// Write `entries` to `path` whole (mode 0600), so a reader never sees
/// half a file.
fn write_file(path: &Path, entries: Vec<TokenEntry>) -> Result<(), TokensFileError> {
    let text = toml::to_string(&TokensFile { tokens: entries }).map_err(|e| io_error("encode", path, e))?;
    let header = "# Tokens made by `gleitzeit token create`: hashes only, never a secret.\n";
    Ok(private_files::replace(path, &format!("{header}{text}"))?)
}

/// Make a token, add it to `DATA_DIR/tokens.toml`, and return its secret
/// (shown once; only its hash is kept).
pub fn create_token(
    data_dir: &Path,
    name: &str,
    role: Role,
    protocols: Vec<String>,
) -> Result<String, TokensFileError> {
    let path = data_dir.join(TOKENS_FILE);
    let (entry, secret) = new_token(name, role, protocols).map_err(|e| match e {
        TokensFileError::BadToken { reason } => TokensFileError::Invalid { path: path.clone(), reason },
        other => other,
    })?;
    let mut entries = read_file(&path)?;
    if entries.iter().any(|e| e.name == name) {
        return Err(TokensFileError::DuplicateName { name: name.to_owned() });
    }
    entries.push(entry);
    write_file(&path, entries)?;
    Ok(secret)
}

/// The tokens `tokens.toml` holds.
pub fn list_tokens(data_dir: &Path) -> Result<Vec<TokenEntry>, TokensFileError> {
    read_file(&data_dir.join(TOKENS_FILE))
}

/// Remove the token named `name` from `tokens.toml`.
pub fn revoke_token(data_dir: &Path, name: &str) -> Result<(), TokensFileError> {
    let path = data_dir.join(TOKENS_FILE);
    let mut entries = read_file(&path)?;
    let before = entries.len();
    entries.retain(|e| e.name != name);
    if entries.len() == before {
        return Err(TokensFileError::NoSuchToken { name: name.to_owned(), path });
    }
    write_file(&path, entries)
}

/// The local admin token's secret: read from `DATA_DIR/token`, or made and
/// written there (mode 0600) on the first start.
pub fn ensure_local_token(data_dir: &Path) -> Result<String, TokensFileError> {
    if let Some(secret) = read_local_token(data_dir)? {
        return Ok(secret);
    }
    let secret = new_secret()?;
    private_files::create(&data_dir.join(LOCAL_TOKEN_FILE), &format!("{secret}\n"))?;
    Ok(secret)
}

/// The secret in `DATA_DIR/token`, if there is one; a file others may read
/// is refused.
pub fn read_local_token(data_dir: &Path) -> Result<Option<String>, TokensFileError> {
    let path = data_dir.join(LOCAL_TOKEN_FILE);
    let Some(text) = private_files::read(&path)? else { return Ok(None) };
    let secret = text.trim();
    if !secret.starts_with(SECRET_PREFIX) {
        return Err(TokensFileError::Invalid {
            path, reason: format!("it does not hold a token ({SECRET_PREFIX}…)")
        });
    }
    Ok(Some(secret.to_owned()))
}

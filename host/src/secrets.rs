//! Secrets: named values (API keys, bearer tokens) the operator keeps so
//! that the host can add them to plugins' outbound requests, while no
//! plugin, workflow, client, log or stored record ever holds one.
//!
//! Where they live, per host:
//! - `DATA_DIR/secrets.toml`, mode 0600, written by `gleitzeit secret set
//!   NAME` (the value read from stdin, never from argv) and `secret rm`;
//! - or the settings file's `[secrets]`, by reference: `NAME = { env =
//!   "VAR" }` or `NAME = { file = "/run/secrets/NAME" }`. A reference
//!   shadows a stored value of the same name.
//!
//! A cluster will keep its secrets in its store beside its tokens; the
//! rest of the host reads them only through [`SecretBook`], so that is one
//! more source here and no change elsewhere (docs/security.md).
//!
//! Values are read when a request needs them: the file is read again when
//! it changes, so a `secret set` takes effect at the next request without a
//! restart. Names follow [`crate::ids::is_secret_name`]; a value is 8 to
//! 16,384 characters without control characters (it goes into a header,
//! and one much shorter could not be told apart from other text when the
//! host removes it from what plugins read).
//!
//! It owns names, values, where they are kept and header templates
//! (`Bearer {secret:NAME}`); it knows nothing of plugins or HTTP.

use crate::locks::lock;
use crate::private_files::{self, PrivateFileError};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::SystemTime;

/// The secrets `gleitzeit secret set` keeps, in the data directory.
pub const SECRETS_FILE: &str = "secrets.toml";
/// The shortest value taken.
pub const MIN_SECRET_CHARS: usize = 8;
/// The longest value taken.
pub const MAX_SECRET_CHARS: usize = 16 * 1024;

/// Why a secret cannot be used or kept.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret '{name}' is not set: set it with `gleitzeit secret set {name}` (value on stdin), or refer to it under [secrets] in the settings file"
    )]
    NotSet { name: String },
    #[error("secret '{name}' is read from the environment variable {var}, which is not set")]
    NoVariable { name: String, var: String },
    #[error("secret '{name}' cannot be read from {}: {reason}", path.display())]
    Unreadable { name: String, path: PathBuf, reason: String },
    #[error("secret name '{shown}' must be 1 to 64 letters, digits, '_', '-' or '.'")]
    BadName { shown: String },
    #[error("secret '{name}': {reason}")]
    BadValue { name: String, reason: String },
    #[error("invalid secrets file {}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    File(#[from] PrivateFileError),
}

/// A secret's value. Its `Debug` does not show it, so it cannot end up in
/// a log line by way of a `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A value the host made itself (a bridge's bearer secret).
    pub fn from_host(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where the settings file says a secret is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretRef {
    /// `{ env = "VAR" }`: an environment variable of the host.
    Env { env: String },
    /// `{ file = "/run/secrets/NAME" }`: the whole file, less a final newline.
    File { file: PathBuf },
}

/// The host's secrets: the data directory's file and the settings file's
/// references. Cheap to share; reads happen when a value is asked for.
#[derive(Debug, Default)]
pub struct SecretBook {
    /// `DATA_DIR/secrets.toml`, if the host has a data directory.
    file: Option<PathBuf>,
    references: BTreeMap<String, SecretRef>,
    stored: Mutex<Stored>,
}

/// The file's values as last read, and when it was last changed then.
#[derive(Debug, Default)]
struct Stored {
    stamp: Option<(SystemTime, u64)>,
    values: BTreeMap<String, Secret>,
}

impl SecretBook {
    /// The secrets of `data_dir` (if any) and the settings file's
    /// `references`, each reference's name checked.
    pub fn new(data_dir: Option<&Path>, references: BTreeMap<String, SecretRef>) -> Result<Self, SecretError> {
        if let Some(bad) = references.keys().find(|n| !crate::ids::is_secret_name(n)) {
            return Err(bad_name(bad));
        }
        let file = data_dir.map(|d| d.join(SECRETS_FILE));
        Ok(Self { file, references, stored: Mutex::default() })
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        let value = match self.references.get(name) {
            Some(SecretRef::Env { env }) => {
                std::env::var(env).map_err(|_| SecretError::NoVariable { name: name.to_owned(), var: env.clone() })?
            }
            Some(SecretRef::File { file }) => read_referenced(name, file)?,
            None => return self.stored(name),
        };
        checked(name, value.trim_end_matches(['\n', '\r']))
    }

    /// Where each secret is kept, by name: `stored` or the reference.
    pub fn list(&self) -> Result<Vec<(String, String)>, SecretError> {
        let mut places: BTreeMap<String, String> = match &self.file {
            Some(path) => read_file(path)?.into_keys().map(|n| (n, format!("stored in {}", path.display()))).collect(),
            None => BTreeMap::new(),
        };
        for (name, reference) in &self.references {
            let place = match reference {
                SecretRef::Env { env } => format!("environment variable {env} (settings file)"),
                SecretRef::File { file } => format!("file {} (settings file)", file.display()),
            };
            places.insert(name.clone(), place);
        }
        Ok(places.into_iter().collect())
    }

    fn stored(&self, name: &str) -> Result<Secret, SecretError> {
        let not_set = || SecretError::NotSet { name: name.to_owned() };
        let Some(path) = &self.file else { return Err(not_set()) };
        let stamp = std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut stored = lock(&self.stored);
        if stored.stamp != stamp || stamp.is_none() {
            stored.values = read_file(path)?;
            stored.stamp = stamp;
        }
        stored.values.get(name).cloned().ok_or_else(not_set)
    }
}

/// Keep `value` as secret `name` in `data_dir`'s file, replacing any.
pub fn set(data_dir: &Path, name: &str, value: &str) -> Result<(), SecretError> {
    if !crate::ids::is_secret_name(name) {
        return Err(bad_name(name));
    }
    let value = checked(name, value)?;
    let path = data_dir.join(SECRETS_FILE);
    let mut values = read_file(&path)?;
    values.insert(name.to_owned(), value);
    write_file(&path, &values)
}

/// Remove secret `name` from `data_dir`'s file; false if it held none.
pub fn remove(data_dir: &Path, name: &str) -> Result<bool, SecretError> {
    let path = data_dir.join(SECRETS_FILE);
    let mut values = read_file(&path)?;
    if values.remove(name).is_none() {
        return Ok(false);
    }
    write_file(&path, &values)?;
    Ok(true)
}

fn bad_name(name: &str) -> SecretError {
    SecretError::BadName { shown: crate::text::excerpt(name) }
}

/// `value` if it may be a secret's.
fn checked(name: &str, value: &str) -> Result<Secret, SecretError> {
    let bad = |reason: String| Err(SecretError::BadValue { name: name.to_owned(), reason });
    let chars = value.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&chars) {
        return bad(format!("a value is {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters, this one has {chars}"));
    }
    if value.chars().any(char::is_control) {
        return bad("a value may not hold control characters (line breaks, tabs)".into());
    }
    Ok(Secret(value.to_owned()))
}

fn read_referenced(name: &str, path: &Path) -> Result<String, SecretError> {
    let unreadable = |reason: String| SecretError::Unreadable { name: name.to_owned(), path: path.to_owned(), reason };
    let size = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?.len();
    if size > MAX_SECRET_CHARS as u64 * 4 {
        return Err(unreadable(format!("it has {size} bytes, more than a secret may")));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))
}

/// The values in `path` (none if it does not exist), each checked.
fn read_file(path: &Path) -> Result<BTreeMap<String, Secret>, SecretError> {
    let Some(text) = private_files::read(path)? else { return Ok(BTreeMap::new()) };
    let bad = |reason: String| SecretError::BadFile { path: path.to_owned(), reason };
    let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    table
        .into_iter()
        .map(|(name, value)| {
            if !crate::ids::is_secret_name(&name) {
                return Err(bad(bad_name(&name).to_string()));
            }
            let value = checked(&name, &value).map_err(|e| bad(e.to_string()))?;
            Ok((name, value))
        })
        .collect()
}

fn write_file(path: &Path, values: &BTreeMap<String, Secret>) -> Result<(), SecretError> {
    let table: BTreeMap<&str, &str> = values.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
    let text =
        toml::to_string(&table).map_err(|e| SecretError::BadFile { path: path.to_owned(), reason: e.to_string() })?;
    let header = "# Secrets kept by `gleitzeit secret set`; the host adds them to plugins' requests.\n";
    Ok(private_files::replace(path, &format!("{header}{text}"))?)
}

/// A text with secrets in it, as written in a manifest:
/// `Bearer {secret:openai}`. Showing it shows the names, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    written: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Secret(String),
}

const OPEN: &str = "{secret:";

impl FromStr for Template {
    type Err = String;

    fn from_str(written: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = written;
        while let Some(at) = rest.find(OPEN) {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + OPEN.len()..];
            let end = after.find('}').ok_or_else(|| format!("'{OPEN}' without its closing '}}'"))?;
            let name = &after[..end];
            if !crate::ids::is_secret_name(name) {
                return Err(bad_name(name).to_string());
            }
            parts.push(Part::Secret(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if written.chars().any(char::is_control) {
            return Err("a header value may not hold control characters".into());
        }
        Ok(Self { written: written.to_owned(), parts })
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl Template {
    /// The secrets it names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each secret's value in place of its name.
    pub fn render(&self, book: &SecretBook) -> Result<Secret, SecretError> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Secret(name) => text.push_str(book.get(name)?.expose()),
            }
        }
        Ok(Secret(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_privately_and_read_again_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let book = SecretBook::new(Some(dir.path()), BTreeMap::new()).unwrap();
        assert!(matches!(book.get("openai"), Err(SecretError::NotSet { .. })));
        set(dir.path(), "openai", "sk-first-value").unwrap();
        assert_eq!(book.get("openai").unwrap().expose(), "sk-first-value");
        set(dir.path(), "openai", "sk-second-value-longer").unwrap();
        assert_eq!(book.get("openai").unwrap().expose(), "sk-second-value-longer");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(SECRETS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(remove(dir.path(), "openai").unwrap());
        assert!(!remove(dir.path(), "openai").unwrap());
        assert!(matches!(book.get("openai"), Err(SecretError::NotSet { .. })));
        assert_eq!(format!("{:?}", Secret("sk-hidden-value".into())), "Secret(…)");
    }

    #[test]
    fn references_shadow_stored_values() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "a", "stored-value").unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let refs = BTreeMap::from([
            ("a".to_owned(), SecretRef::File { file }),
            ("b".to_owned(), SecretRef::Env { env: "GLEITZEIT_TEST_NO_SUCH_VARIABLE".into() }),
        ]);
        let book = SecretBook::new(Some(dir.path()), refs).unwrap();
        assert_eq!(book.get("a").unwrap().expose(), "from-the-file");
        let e = book.get("b").unwrap_err().to_string();
        assert!(e.contains("GLEITZEIT_TEST_NO_SUCH_VARIABLE"), "{e}");
        let listed: Vec<String> = book.list().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(listed, ["a", "b"]);
    }

    #[test]
    fn bad_names_values_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(set(dir.path(), "a b", "long-enough"), Err(SecretError::BadName { .. })));
        let e = set(dir.path(), "short", "abc").unwrap_err().to_string();
        assert!(e.contains("8 to 16384 characters") && !e.contains("abc"), "{e}");
        let e = set(dir.path(), "crlf", "abcdefgh\r\nX-Evil: 1").unwrap_err().to_string();
        assert!(e.contains("control characters") && !e.contains("Evil"), "{e}");
        set(dir.path(), "fine", "long-enough").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.path().join(SECRETS_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let book = SecretBook::new(Some(dir.path()), BTreeMap::new()).unwrap();
        assert!(matches!(book.get("fine"), Err(SecretError::File(PrivateFileError::Exposed { .. }))));
    }

    #[test]
    fn templates_name_secrets_and_render_them() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "openai", "sk-0123456789").unwrap();
        let book = SecretBook::new(Some(dir.path()), BTreeMap::new()).unwrap();
        let t: Template = "Bearer {secret:openai}".parse().unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["openai"]);
        assert_eq!(t.render(&book).unwrap().expose(), "Bearer sk-0123456789");
        assert_eq!(t.to_string(), "Bearer {secret:openai}");
        let plain: Template = "gleitzeit".parse().unwrap();
        assert_eq!(plain.render(&book).unwrap().expose(), "gleitzeit");
        assert!("Bearer {secret:openai".parse::<Template>().unwrap_err().contains("closing"));
        assert!("{secret:a b}".parse::<Template>().is_err());
        assert!("a\nb".parse::<Template>().is_err());
    }
}

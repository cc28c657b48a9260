//! `gleitzeit secret`: keep, list and remove the secrets a host adds to
//! plugins' outbound requests (`DATA_DIR/secrets.toml`, mode 0600, and the
//! settings file's `[secrets]` references; see `crate::secrets`).

use super::Failure;
use super::args::{SecretCommand, SecretPlace};
use super::settings::{ConfigFile, data_dir};
use crate::secrets::{self, SecretBook};
use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

impl SecretPlace {
    fn resolve(&self) -> Result<(PathBuf, ConfigFile), Failure> {
        let file = ConfigFile::load(self.config.as_deref())?;
        let dir = data_dir(self.data_dir.as_deref(), &file)
            .ok_or_else(|| Failure::Input(anyhow::anyhow!("no data directory: set --data-dir or HOME")))?;
        Ok((dir, file))
    }
}

pub(super) fn run(command: SecretCommand) -> Result<ExitCode, Failure> {
    let failed = |e: secrets::SecretError| Failure::Input(e.into());
    match command {
        SecretCommand::Set { name, place } => {
            let (dir, file) = place.resolve()?;
            let value = read_value(&name)?;
            secrets::set(&dir, &name, &value).map_err(failed)?;
            eprintln!("secret '{name}' kept in {}", dir.join(secrets::SECRETS_FILE).display());
            if file.secrets.contains_key(&name) {
                eprintln!("warning: [secrets] {name} of the settings file refers elsewhere and is the one used");
            }
        }
        SecretCommand::List { place } => {
            let (dir, file) = place.resolve()?;
            let book = SecretBook::new(Some(&dir), file.secrets.clone()).map_err(failed)?;
            for (name, kept) in book.list().map_err(failed)? {
                out!("{name}\t{kept}");
            }
        }
        SecretCommand::Rm { name, place } => {
            let (dir, _) = place.resolve()?;
            if !secrets::remove(&dir, &name).map_err(failed)? {
                let path = dir.join(secrets::SECRETS_FILE);
                return Err(Failure::Input(anyhow::anyhow!("no secret is named '{name}' in {}", path.display())));
            }
            eprintln!("secret '{name}' removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from stdin: typed without echo at a terminal, else the whole
/// input less a final line break.
fn read_value(name: &str) -> Result<String, Failure> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("value of secret '{name}': "))
            .map_err(|e| Failure::Input(anyhow::anyhow!("cannot read the value from the terminal: {e}")));
    }
    let mut value = String::new();
    std::io::stdin()
        .take(secrets::MAX_SECRET_CHARS as u64 * 4 + 2)
        .read_to_string(&mut value)
        .map_err(|e| Failure::Input(anyhow::anyhow!("cannot read the value from stdin: {e}")))?;
    Ok(value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_owned())
}

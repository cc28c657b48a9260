//! `gleitzeit token`: make, list and revoke the tokens a host accepts
//! (`DATA_DIR/tokens.toml`; the daemon reads it again when it changes).

use super::Failure;
use super::args::{DataDir, TokenCommand};
use super::settings::default_data_dir;
use crate::auth::{self};
use std::path::PathBuf;
use std::process::ExitCode;

impl DataDir {
    fn resolve(&self) -> Result<PathBuf, Failure> {
        self.data_dir
            .clone()
            .or_else(default_data_dir)
            .ok_or_else(|| Failure::Input(anyhow::anyhow!("no data directory: set --data-dir or HOME")))
    }
}

pub(super) fn run(command: TokenCommand) -> Result<ExitCode, Failure> {
    let failed = |e: auth::TokensFileError| Failure::Input(e.into());
    match command {
        TokenCommand::Create { name, role, protocols, dir } => {
            let dir = dir.resolve()?;
            let secret = auth::create_token(&dir, &name, role, protocols).map_err(failed)?;
            out!("{secret}");
            eprintln!(
                "token '{name}' ({role}) added to {}; the secret above is shown only now",
                dir.join(auth::TOKENS_FILE).display()
            );
        }
        TokenCommand::List { dir } => {
            for entry in auth::list_tokens(&dir.resolve()?).map_err(failed)? {
                out!("{:<24}  {:<8}  {}", entry.name, entry.role.to_string(), entry.protocols.join(","));
            }
        }
        TokenCommand::Revoke { name, dir } => {
            auth::revoke_token(&dir.resolve()?, &name).map_err(failed)?;
            eprintln!("token '{name}' revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

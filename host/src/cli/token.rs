//! `gleitzeit token`: make, list and revoke the tokens a host accepts
//! (`DATA_DIR/tokens.toml`; the daemon reads it again when it changes), or
//! with `--store redis://…` those every host of a cluster accepts.

use super::Failure;
use super::args::{TokenCommand, TokenPlace};
use super::settings::default_data_dir;
use crate::auth;
use crate::store::StoreSpec;
use crate::store::redis::tokens::SharedTokens;
use std::path::PathBuf;
use std::process::ExitCode;

impl TokenPlace {
    fn resolve(&self) -> Result<PathBuf, Failure> {
        self.data_dir
            .clone()
            .or_else(default_data_dir)
            .ok_or_else(|| Failure::Input(anyhow::anyhow!("no data directory: set --data-dir or HOME")))
    }

    /// The cluster's tokens, with `--store`.
    fn shared(&self) -> Result<Option<SharedTokens>, Failure> {
        let failed = |e: crate::store::StoreError| Failure::Input(e.into());
        match &self.store {
            None => Ok(None),
            Some(StoreSpec::Redis(url)) => SharedTokens::open(url).map(Some).map_err(failed),
            Some(_) => Err(Failure::Input(anyhow::anyhow!(
                "--store names where a cluster keeps its tokens: redis://HOST[:PORT][/DB]"
            ))),
        }
    }
}

pub(super) fn run(command: TokenCommand) -> Result<ExitCode, Failure> {
    let failed = |e: auth::TokensFileError| Failure::Input(e.into());
    if let Some(done) = run_shared(&command)? {
        return Ok(done);
    }
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

/// The token commands on a cluster's shared tokens; none without `--store`.
fn run_shared(command: &TokenCommand) -> Result<Option<ExitCode>, Failure> {
    let failed = |e: crate::store::StoreError| Failure::Input(e.into());
    let place = match command {
        TokenCommand::Create { dir, .. } | TokenCommand::List { dir } | TokenCommand::Revoke { dir, .. } => dir,
    };
    let Some(shared) = place.shared()? else { return Ok(None) };
    match command {
        TokenCommand::Create { name, role, protocols, .. } => {
            let (entry, secret) =
                auth::new_token(name, *role, protocols.clone()).map_err(|e| Failure::Input(e.into()))?;
            if !shared.add(&entry).map_err(failed)? {
                return Err(Failure::Input(anyhow::anyhow!("the cluster has a token named '{name}' already")));
            }
            out!("{secret}");
            eprintln!("token '{name}' ({role}) added to the cluster's tokens; the secret above is shown only now");
        }
        TokenCommand::List { .. } => {
            for entry in shared.list().map_err(failed)? {
                out!("{:<24}  {:<8}  {}", entry.name, entry.role.to_string(), entry.protocols.join(","));
            }
        }
        TokenCommand::Revoke { name, .. } => {
            if !shared.remove(name).map_err(failed)? {
                return Err(Failure::Input(anyhow::anyhow!("the cluster has no token named '{name}'")));
            }
            eprintln!("token '{name}' revoked on every host of the cluster");
        }
    }
    Ok(Some(ExitCode::SUCCESS))
}

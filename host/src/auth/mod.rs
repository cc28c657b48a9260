//! Who may do what: tokens with roles, and the one table of what each role
//! may do.
//!
//! A caller proves who it is with a token (a random secret; the host keeps
//! only its SHA-256). Each token has a name, a role and, for providers, the
//! protocols it may serve. A workflow belongs to the token that submitted
//! it (its name is the workflow's `owner`). The threat model is in
//! `docs/security.md`.
//!
//! This module decides; it sends nothing and knows no wire format: the
//! socket layer asks it, and maps its errors to JSON-RPC codes.

mod tokens;

pub use tokens::{
    LOCAL_TOKEN_FILE, LOCAL_TOKEN_NAME, TOKENS_FILE, TokenEntry, TokensFileError, create_token, ensure_local_token,
    is_token_name, list_tokens, new_token, random_hex, read_local_token, revoke_token, same_secret,
};

use crate::locks::lock;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits workflows and tasks; reads and cancels its own.
    Client,
    /// Serves the protocols its token names.
    Provider,
    /// Everything, every user's workflows included.
    Admin,
    /// Reads `/metrics` (a Prometheus server), nothing else.
    Metrics,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Provider => "provider",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        })
    }
}

/// Something a caller asks to do. [`Action::roles`] is the one table of
/// who may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Submit a workflow or a task.
    Submit,
    /// Read or subscribe to a workflow (its own, unless admin).
    Read,
    /// Cancel a workflow (its own, unless admin).
    Cancel,
    /// Register as a provider, answer calls, report progress.
    Serve,
    /// List the protocols and methods the host serves.
    ListProtocols,
    /// List providers and plugins, and watch them come and go.
    Observe,
    /// Read the host's metrics.
    Scrape,
}

impl Action {
    /// The roles allowed to do it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Submit | Action::Read | Action::Cancel => &[Role::Client, Role::Admin],
            Action::Serve => &[Role::Provider, Role::Admin],
            Action::ListProtocols => &[Role::Client, Role::Provider, Role::Admin],
            Action::Observe => &[Role::Admin],
            Action::Scrape => &[Role::Metrics, Role::Admin],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Submit => "submit work",
            Action::Read => "read workflows",
            Action::Cancel => "cancel workflows",
            Action::Serve => "serve protocols",
            Action::ListProtocols => "list protocols",
            Action::Observe => "list or watch providers and plugins",
            Action::Scrape => "read metrics",
        }
    }
}

/// A refusal: what was missing. The messages name no other user's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: this host requires one (pass it in the CONNECT auth payload as {{\"token\": \"…\"}} or an `Authorization: Bearer` header; `gleitzeit token create` makes one)"
    )]
    NoToken,
    #[error("the token is not known to this host (revoked, mistyped, or made for another host)")]
    UnknownToken,
    #[error("a {role} token may not {action}; that needs a token of role {allowed}")]
    WrongRole { role: Role, action: &'static str, allowed: String },
    #[error(
        "token '{name}' may not serve protocol '{protocol}'; a provider token serves only the protocols it was created with (`gleitzeit token create --role provider --protocol {protocol}`)"
    )]
    ProtocolNotGranted { name: String, protocol: String },
    #[error(
        "protocol '{protocol}' is served by a WASM plugin of this host; remote providers may serve it too only if the host's settings list it in [auth] remote_may_serve"
    )]
    ProtocolReserved { protocol: String },
    #[error("provider_id '{provider_id}' belongs to another token")]
    ProviderIdTaken { provider_id: String },
    #[error(
        "origin '{origin}' is not allowed: browsers may drive this host only from the origins in [auth] allowed_origins"
    )]
    OriginNotAllowed { origin: String },
}

impl AuthError {
    /// Whether the caller failed to say who it is (as opposed to being
    /// known, and not allowed).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, AuthError::NoToken | AuthError::UnknownToken)
    }
}

/// A token the host knows: its name, role and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub role: Role,
    /// For providers: the protocols it may serve (`name/version`).
    pub protocols: Vec<String>,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: everyone may do everything, as in the
    /// original system.
    Anyone,
    Token(Arc<Grant>),
}

impl Caller {
    /// Refuse `action` unless this caller's role may do it.
    pub fn may(&self, action: Action) -> Result<(), AuthError> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Token(grant) if action.roles().contains(&grant.role) => Ok(()),
            Caller::Token(grant) => Err(AuthError::WrongRole {
                role: grant.role,
                action: action.describe(),
                allowed: action.roles().iter().map(Role::to_string).collect::<Vec<_>>().join(" or "),
            }),
        }
    }

    /// Refuse to let this caller serve `protocol` unless its token names it
    /// (admins serve any).
    pub fn may_serve(&self, protocol: &str) -> Result<(), AuthError> {
        self.may(Action::Serve)?;
        match self {
            Caller::Token(grant) if grant.role == Role::Provider && !grant.protocols.iter().any(|p| p == protocol) => {
                Err(AuthError::ProtocolNotGranted { name: grant.name.clone(), protocol: protocol.to_owned() })
            }
            _ => Ok(()),
        }
    }

    /// The owner recorded on what this caller submits.
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::Anyone => None,
            Caller::Token(grant) => Some(grant.name.clone()),
        }
    }

    /// Whether this caller may see a workflow owned by `owner`.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(grant) => grant.role == Role::Admin || owner == Some(grant.name.as_str()),
        }
    }

    /// The host's id of the workflow or schedule this caller names `id`.
    /// A client token's ids are its own: the host keeps them as
    /// `TOKEN:ID` (`:` is no id character), so two tokens may use one id,
    /// and neither can learn of the other's or take it first. The token
    /// may name its own either way. Admin tokens (and everyone, with
    /// authentication off) name ids as the host keeps them.
    pub fn own_id<'i>(&self, id: &'i str) -> Cow<'i, str> {
        match self {
            Caller::Token(grant) if grant.role != Role::Admin => {
                let own = id.strip_prefix(grant.name.as_str()).is_some_and(|rest| rest.starts_with(':'));
                if own { Cow::Borrowed(id) } else { Cow::Owned(format!("{}:{id}", grant.name)) }
            }
            _ => Cow::Borrowed(id),
        }
    }

    /// The host ids this caller's `id` may name, to try in order: its own
    /// ([`Caller::own_id`]), then, for a workflow or schedule kept before
    /// ids were scoped, the id as given (which [`Caller::sees`] must still
    /// allow).
    pub fn named_ids<'i>(&self, id: &'i str) -> Vec<Cow<'i, str>> {
        let own = self.own_id(id);
        if own == id { vec![own] } else { vec![own, Cow::Borrowed(id)] }
    }

    /// Whether this caller sees every workflow (and so needs no filter).
    pub fn sees_all(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(grant) => grant.role == Role::Admin,
        }
    }

    /// The token's name, for logs.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "anyone",
            Caller::Token(grant) => &grant.name,
        }
    }
}

/// The tokens a host accepts: the local admin token, those of the settings
/// file, those `gleitzeit token create` wrote to the data directory (read
/// again whenever that file changes, so new and revoked tokens take effect
/// on the next connection) and, in a cluster, those the hosts share (kept
/// in the store; the daemon hands them over as they change).
pub struct Tokens {
    /// By SHA-256 of the secret (`sha256:HEX`): settings and local token.
    fixed: HashMap<String, Arc<Grant>>,
    /// `DATA_DIR/token`, for the daemon's greeting.
    local_file: PathBuf,
    /// `DATA_DIR/tokens.toml`, and what it held when last read.
    file: PathBuf,
    from_file: Mutex<FileTokens>,
    /// The cluster's tokens, by hash.
    shared: Mutex<HashMap<String, Arc<Grant>>>,
    /// Reads the cluster's tokens now: an unknown token is looked up again
    /// (one made a moment ago on another host), at most every
    /// [`SHARED_LOOKUP_EVERY`].
    lookup: Mutex<Option<(SharedLookup, Option<std::time::Instant>)>>,
}

/// Reads the tokens a cluster shares, where they are kept.
pub type SharedLookup = Box<dyn Fn() -> Option<Vec<TokenEntry>> + Send + Sync>;

/// How often an unknown token makes a host read the cluster's tokens: a
/// flood of bad tokens costs the store at most this.
const SHARED_LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Default)]
struct FileTokens {
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, Arc<Grant>>,
}

impl Tokens {
    /// `configured` are the settings file's tokens; `local_secret` the local
    /// admin token; `data_dir` holds `tokens.toml`.
    pub fn new(
        configured: &[TokenEntry],
        local_secret: &str,
        data_dir: &std::path::Path,
    ) -> Result<Self, TokensFileError> {
        let mut fixed = HashMap::new();
        for entry in configured {
            fixed.insert(entry.hash.clone(), Arc::new(entry.grant()));
        }
        let local = Grant { name: LOCAL_TOKEN_NAME.to_owned(), role: Role::Admin, protocols: Vec::new() };
        fixed.insert(tokens::hash(local_secret), Arc::new(local));
        let tokens = Self {
            fixed,
            local_file: data_dir.join(LOCAL_TOKEN_FILE),
            file: data_dir.join(TOKENS_FILE),
            from_file: Mutex::default(),
            shared: Mutex::default(),
            lookup: Mutex::default(),
        };
        // A broken file stops the start (later changes only warn).
        let entries = tokens::read_file(&tokens.file)?;
        tokens.check_names(&entries, configured)?;
        *lock(&tokens.from_file) = FileTokens { stamp: stamp(&tokens.file), by_hash: by_hash(&entries) };
        Ok(tokens)
    }

    fn check_names(&self, from_file: &[TokenEntry], configured: &[TokenEntry]) -> Result<(), TokensFileError> {
        let mut seen = std::collections::HashSet::from([LOCAL_TOKEN_NAME]);
        for entry in configured.iter().chain(from_file) {
            if !seen.insert(entry.name.as_str()) {
                return Err(TokensFileError::DuplicateName { name: entry.name.clone() });
            }
        }
        Ok(())
    }

    /// Who holds `secret`; `None` (no token given) is refused.
    pub fn authenticate(&self, secret: Option<&str>) -> Result<Caller, AuthError> {
        let secret = secret.filter(|s| !s.is_empty()).ok_or(AuthError::NoToken)?;
        let hash = tokens::hash(secret.trim());
        if let Some(grant) = self.fixed.get(&hash) {
            return Ok(Caller::Token(grant.clone()));
        }
        let mut from_file = lock(&self.from_file);
        self.refresh(&mut from_file);
        let found = from_file.by_hash.get(&hash).cloned();
        drop(from_file);
        let shared = || lock(&self.shared).get(&hash).cloned();
        let found = found.or_else(shared).or_else(|| {
            self.look_up_shared();
            shared()
        });
        found.map(Caller::Token).ok_or(AuthError::UnknownToken)
    }

    /// Read the cluster's tokens with `lookup` whenever a token is not
    /// known (see [`SHARED_LOOKUP_EVERY`]).
    pub fn look_up_shared_with(&self, lookup: SharedLookup) {
        *lock(&self.lookup) = Some((lookup, None));
    }

    fn look_up_shared(&self) {
        let mut lookup = lock(&self.lookup);
        let Some((read, last)) = lookup.as_mut() else { return };
        if last.is_some_and(|at| at.elapsed() < SHARED_LOOKUP_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
        if let Some(entries) = read() {
            self.set_shared(&entries);
        }
    }

    /// The cluster's tokens are now `entries` (a revoked one is gone). One
    /// whose name a token of this host already has is left out: names are
    /// who owns a workflow, and must name one token.
    pub fn set_shared(&self, entries: &[TokenEntry]) {
        let mut own: Vec<String> = self.fixed.values().map(|g| g.name.clone()).collect();
        own.extend(lock(&self.from_file).by_hash.values().map(|g| g.name.clone()));
        let (kept, clashing): (Vec<&TokenEntry>, Vec<&TokenEntry>) =
            entries.iter().partition(|e| !own.contains(&e.name) && e.check().is_ok());
        for entry in clashing {
            tracing::warn!(token = %entry.name, "a shared token is left out: this host has a token of that name");
        }
        *lock(&self.shared) = kept.into_iter().map(|e| (e.hash.clone(), Arc::new(e.grant()))).collect();
    }

    /// The token named `name`, if the host still knows it.
    fn named(&self, name: &str) -> Option<Arc<Grant>> {
        if let Some(grant) = self.fixed.values().find(|g| g.name == name) {
            return Some(grant.clone());
        }
        let mut from_file = lock(&self.from_file);
        self.refresh(&mut from_file);
        let found = from_file.by_hash.values().find(|g| g.name == name).cloned();
        drop(from_file);
        found.or_else(|| lock(&self.shared).values().find(|g| g.name == name).cloned())
    }

    /// Read `tokens.toml` again if it changed since it was last read. A
    /// file that cannot be read keeps the tokens it held before.
    fn refresh(&self, from_file: &mut FileTokens) {
        let now = stamp(&self.file);
        if now == from_file.stamp {
            return;
        }
        match tokens::read_file(&self.file) {
            Ok(entries) => *from_file = FileTokens { stamp: now, by_hash: by_hash(&entries) },
            Err(e) => {
                tracing::warn!("{e}; keeping the tokens read before");
                from_file.stamp = now;
            }
        }
    }
}

fn by_hash(entries: &[TokenEntry]) -> HashMap<String, Arc<Grant>> {
    entries.iter().map(|e| (e.hash.clone(), Arc::new(e.grant()))).collect()
}

/// When a file last changed, and its length: enough to notice a rewrite.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Whether callers must show a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every connection shows a token (the default).
    #[default]
    Tokens,
    /// Anyone who reaches the port may do anything (the original system's
    /// unmodified clients); allowed on loopback only.
    Off,
}

/// The operator's rules for a daemon: who it accepts and what remote
/// providers may take on.
pub struct Policy {
    /// `None` when authentication is off.
    pub tokens: Option<Tokens>,
    /// Browser origins allowed besides the host's own loopback pages.
    pub allowed_origins: Vec<String>,
    /// Protocols of WASM plugins that remote providers may serve as well.
    pub remote_may_serve: Vec<String>,
}

impl Policy {
    /// Everyone may do everything: authentication off, nothing shared.
    pub fn open() -> Self {
        Self { tokens: None, allowed_origins: Vec::new(), remote_may_serve: Vec::new() }
    }

    /// One line for the daemon's greeting.
    pub fn describe(&self) -> String {
        match &self.tokens {
            None => "auth: off (anyone who reaches the port may do anything)".to_owned(),
            Some(tokens) => format!(
                "auth: tokens (the local admin token is in {}; more with `gleitzeit token create`)",
                tokens.local_file.display()
            ),
        }
    }

    /// Who holds `secret` (anyone, when authentication is off).
    pub fn authenticate(&self, secret: Option<&str>) -> Result<Caller, AuthError> {
        match &self.tokens {
            None => Ok(Caller::Anyone),
            Some(tokens) => tokens.authenticate(secret),
        }
    }

    /// Who acts for `owner` when nobody is connected (a schedule starting
    /// its owner's run): the token of that name, if the host still knows
    /// it; anyone when authentication is off, or for what was added while
    /// it was off (no owner). None once the token is revoked.
    pub fn holder(&self, owner: Option<&str>) -> Option<Caller> {
        match (&self.tokens, owner) {
            (None, _) | (Some(_), None) => Some(Caller::Anyone),
            (Some(tokens), Some(name)) => tokens.named(name).map(Caller::Token),
        }
    }
}

/// Whether a browser page at `origin` may drive the host: its own loopback
/// pages (`http://127.0.0.1:PORT`, `http://localhost:PORT`,
/// `http://[::1]:PORT`) and the operator's list. Matching the `Host` header
/// instead would let a DNS-rebound page in.
pub fn origin_allowed(origin: &str, port: u16, allowed: &[String]) -> bool {
    let own = ["127.0.0.1", "localhost", "[::1]"].iter().any(|host| origin == format!("http://{host}:{port}"));
    own || allowed.iter().any(|a| a.trim_end_matches('/') == origin)
}

#[cfg(test)]
mod tests;

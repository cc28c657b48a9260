//! The rules for ids: one validator per kind of id (tasks and workflows,
//! token names, protocols, methods, schedules) and how a host id names the
//! id it was given. A leaf: every layer checks ids, so this module names
//! no other.

/// Longest task or workflow id.
pub const MAX_ID_CHARS: usize = 128;
/// Longest schedule id: a run's id adds `-KEY-YYYYMMDDTHHMMSSZ` and must
/// stay within the 128 of a workflow id.
pub const MAX_SCHEDULE_ID_CHARS: usize = 100;

/// True for characters allowed in task ids (and so in references).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A task or workflow id: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_CHARS && s.chars().all(is_id_char)
}

/// Whether `name` may name a token: 1 to 64 of `[A-Za-z0-9_.-]` (a token's
/// name scopes its workflow ids).
pub fn is_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A secret's name (`gleitzeit secret set NAME`, `{secret:NAME}`): the
/// same characters as a token's name.
pub fn is_secret_name(name: &str) -> bool {
    is_token_name(name)
}

/// The id a host id was given as: `ID` of a client token's `TOKEN:ID`
/// (`auth::Caller::own_id` scopes them), any other id as it is.
pub fn given_id(host_id: &str) -> &str {
    host_id.split_once(':').map_or(host_id, |(_, id)| id)
}

/// A schedule id: an id short enough for its runs' ids, or a client
/// token's as the host keeps it (`TOKEN:ID`), which is how an admin names
/// one to replace it.
pub fn is_schedule_id(id: &str) -> bool {
    let given = given_id(id);
    let scope_ok = id.split_once(':').is_none_or(|(token, _)| is_token_name(token));
    scope_ok && is_id(given) && given.chars().count() <= MAX_SCHEDULE_ID_CHARS
}

/// A protocol id, `name/version` (`echo/v1`): the one rule for tasks,
/// remote providers and plugins alike (the original let the version be
/// left out; here it is always named).
pub fn is_protocol(s: &str) -> bool {
    let Some((name, version)) = s.split_once('/') else { return false };
    let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(lower)
        && !version.is_empty()
        && version.chars().all(lower)
        && s.len() <= 100
}

/// `^[a-zA-Z][a-zA-Z0-9_./:-]*$`, the original's method pattern.
pub fn is_method(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c))
        && s.len() <= 200
}

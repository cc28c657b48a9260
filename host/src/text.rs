//! How user text appears in messages. A leaf: errors of every layer quote
//! what they were given through it, so no answer echoes a megabyte back.

/// At most 60 characters of user text.
pub fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(60).collect();
    if chars.next().is_some() { format!("{head}…") } else { head }
}

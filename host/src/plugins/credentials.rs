//! The headers the host adds to a plugin's outbound requests, and the
//! removal of their values from everything the plugin reads back.
//!
//! A manifest's `headers` table names them per granted origin, each value
//! a template over the operator's secrets:
//!
//! ```toml
//! allowed_hosts = ["https://api.openai.com"]
//! [headers."https://api.openai.com"]
//! Authorization = "Bearer {secret:openai}"
//! ```
//!
//! The MCP bridges' bearer secrets are added the same way. A plugin never
//! sees a value: the host sets the header after the plugin built the
//! request (replacing one of the same name the plugin set), and replaces
//! every value it could have sent with `[secret:NAME]` in the response's
//! headers and body before the plugin reads them, so a backend that echoes
//! what it received cannot pass a secret on to a result, a log or a store.
//!
//! It owns no grant: whether the origin may be reached is `outbound`'s.

use super::origins::HostPattern;
use crate::secrets::{Secret, SecretBook, SecretError, Template};
use reqwest::Url;
use reqwest::header::HeaderName;
use std::sync::Arc;

/// Headers a request may not be given this way: they frame the request,
/// and the HTTP client sets them.
const FRAMING: [&str; 5] = ["host", "content-length", "transfer-encoding", "connection", "upgrade"];

/// One header the host adds to requests to a pattern's origins.
#[derive(Debug, Clone)]
pub struct HostHeader {
    pattern: HostPattern,
    name: HeaderName,
    value: Value,
}

#[derive(Debug, Clone)]
enum Value {
    /// From a manifest: read from the secrets when a request is sent.
    Template(Template),
    /// A value the host made itself (a bridge's secret).
    Fixed(Secret),
}

impl HostHeader {
    /// `name: template` for requests to `pattern`, as a manifest's
    /// `[headers."PATTERN"]` gives it.
    pub fn from_manifest(pattern: HostPattern, name: &str, template: &str) -> Result<Self, String> {
        let name = header_name(name)?;
        let template: Template = template.parse().map_err(|e| format!("{name}: {e}"))?;
        Ok(Self { pattern, name, value: Value::Template(template) })
    }

    /// `Authorization: Bearer SECRET` for the host's own endpoint `pattern`.
    pub fn bearer(pattern: HostPattern, secret: &str) -> Self {
        let value = Value::Fixed(Secret::from_host(format!("Bearer {secret}")));
        Self { pattern, name: reqwest::header::AUTHORIZATION, value }
    }

    pub fn pattern(&self) -> &HostPattern {
        &self.pattern
    }

    /// The header's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The secrets it names.
    pub fn secrets(&self) -> Vec<&str> {
        match &self.value {
            Value::Template(t) => t.names().collect(),
            Value::Fixed(_) => Vec::new(),
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{name}' is not a header name"))?;
    if FRAMING.contains(&parsed.as_str()) {
        return Err(format!("'{name}' is set by the HTTP client, not by a manifest"));
    }
    Ok(parsed)
}

/// A plugin's added headers and the secrets they read.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    headers: Arc<[HostHeader]>,
    book: Arc<SecretBook>,
}

/// The headers for one request, and what to remove from its answer.
pub struct ForRequest {
    pub headers: Vec<(HeaderName, Secret)>,
    pub scrub: Scrub,
}

impl Credentials {
    pub fn new(headers: Vec<HostHeader>, book: Arc<SecretBook>) -> Self {
        Self { headers: headers.into(), book }
    }

    /// The same secrets with `more` headers.
    pub fn with(&self, more: Vec<HostHeader>) -> Self {
        let headers = self.headers.iter().cloned().chain(more).collect();
        Self { headers, book: self.book.clone() }
    }

    pub fn book(&self) -> &Arc<SecretBook> {
        &self.book
    }

    pub fn headers(&self) -> &[HostHeader] {
        &self.headers
    }

    /// Whether any header goes to `url`'s origin.
    pub fn any_for(&self, url: &Url) -> bool {
        self.headers.iter().any(|h| h.pattern.matches(url))
    }

    /// The headers to add to a request to `url`, with their values, and the
    /// scrub for its answer (every value this plugin could be sent: a
    /// backend may hold what another request gave it).
    pub fn for_request(&self, url: &Url) -> Result<ForRequest, SecretError> {
        let mut headers = Vec::new();
        for header in self.headers.iter().filter(|h| h.pattern.matches(url)) {
            headers.push((header.name.clone(), self.value(header)?));
        }
        Ok(ForRequest { headers, scrub: self.scrub() })
    }

    fn value(&self, header: &HostHeader) -> Result<Secret, SecretError> {
        match &header.value {
            Value::Template(t) => t.render(&self.book),
            Value::Fixed(secret) => Ok(secret.clone()),
        }
    }

    /// What to remove from answers: each secret's value and each fixed one.
    fn scrub(&self) -> Scrub {
        let mut values = Vec::new();
        for header in self.headers.iter() {
            match &header.value {
                Value::Template(t) => {
                    for name in t.names() {
                        if let Ok(secret) = self.book.get(name) {
                            values.push((secret.expose().as_bytes().to_vec(), format!("[secret:{name}]")));
                        }
                    }
                }
                Value::Fixed(secret) => {
                    let token = secret.expose().trim_start_matches("Bearer ");
                    values.push((token.as_bytes().to_vec(), "[secret:bridge]".to_owned()));
                }
            }
        }
        values.sort();
        values.dedup();
        Scrub { values }
    }
}

/// Values to replace with their labels in what a plugin reads.
#[derive(Debug, Default)]
pub struct Scrub {
    values: Vec<(Vec<u8>, String)>,
}

impl Scrub {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `bytes` with every value replaced by its label.
    pub fn apply(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.values.iter().fold(bytes, |bytes, (value, label)| replace(bytes, value, label.as_bytes()))
    }

    /// How many bytes at the end of `bytes` could be the start of a value
    /// that the next piece of a body completes: a stream holds them back.
    pub fn unfinished_tail(&self, bytes: &[u8]) -> usize {
        let mut longest = 0;
        for (value, _) in &self.values {
            let from = bytes.len().saturating_sub(value.len() - 1);
            for start in memchr::memchr_iter(value[0], &bytes[from..]).map(|i| from + i) {
                let tail = &bytes[start..];
                if value.starts_with(tail) {
                    longest = longest.max(tail.len());
                    break;
                }
            }
        }
        longest
    }
}

fn replace(bytes: Vec<u8>, value: &[u8], label: &[u8]) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(value);
    if finder.find(&bytes).is_none() {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut last = 0;
    for at in finder.find_iter(&bytes) {
        out.extend_from_slice(&bytes[last..at]);
        out.extend_from_slice(label);
        last = at + value.len();
    }
    out.extend_from_slice(&bytes[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_secret(value: &str) -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        crate::secrets::set(dir.path(), "key", value).unwrap();
        let book = Arc::new(SecretBook::new(Some(dir.path()), BTreeMap::new()).unwrap());
        let header =
            HostHeader::from_manifest("https://api.example.com".parse().unwrap(), "X-Api-Key", "{secret:key}").unwrap();
        (dir, Credentials::new(vec![header], book))
    }

    #[test]
    fn headers_go_only_to_their_origin_and_answers_lose_the_values() {
        let (_dir, credentials) = with_secret("sk-abcdefgh");
        let there = credentials.for_request(&Url::parse("https://api.example.com/v1/x").unwrap()).unwrap();
        assert_eq!(there.headers.len(), 1);
        assert_eq!(there.headers[0].1.expose(), "sk-abcdefgh");
        let elsewhere = credentials.for_request(&Url::parse("https://other.example.com/").unwrap()).unwrap();
        assert!(elsewhere.headers.is_empty());
        let echoed = there.scrub.apply(b"you sent sk-abcdefgh and sk-abcdefgh".to_vec());
        assert_eq!(echoed, b"you sent [secret:key] and [secret:key]");
    }

    #[test]
    fn a_stream_holds_back_only_what_could_start_a_value() {
        let (_dir, credentials) = with_secret("sk-abcdefgh");
        let scrub = credentials.for_request(&Url::parse("https://api.example.com/").unwrap()).unwrap().scrub;
        assert_eq!(scrub.unfinished_tail(b"data: hello"), 0);
        assert_eq!(scrub.unfinished_tail(b"data: sk-ab"), 5);
        assert_eq!(scrub.unfinished_tail(b"data: s"), 1);
        assert_eq!(scrub.unfinished_tail(b"sk-abcdefgh"), 0, "a whole value is replaced, not held");
    }

    #[test]
    fn framing_headers_and_bad_names_are_refused() {
        let pattern: HostPattern = "https://a.example".parse().unwrap();
        assert!(HostHeader::from_manifest(pattern.clone(), "Host", "x").unwrap_err().contains("HTTP client"));
        assert!(HostHeader::from_manifest(pattern.clone(), "bad name", "x").unwrap_err().contains("not a header"));
        assert!(HostHeader::from_manifest(pattern, "Authorization", "Bearer {secret:").is_err());
    }
}

//! Origins a plugin's grants name (`allowed_hosts`, `headers`): a
//! pattern is `scheme://host[:port]`: the scheme is `http`, `https` or `*`;
//! the host is a name, an IP address (`[::1]` for IPv6), `*.example.com`
//! (any subdomain, not `example.com` itself) or `*` (any host); the port is a
//! number or `*`, and when left out it is the scheme's default (80, 443).
//! It knows nothing of requests.

use reqwest::Url;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeMatch {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    Any,
    /// Left out: 80 for http, 443 for https.
    Default,
    Exact(u16),
}

/// One `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: SchemeMatch,
    host: HostMatch,
    port: PortMatch,
    text: String,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (scheme, rest) =
            text.split_once("://").ok_or_else(|| format!("'{text}' is not of the form scheme://host[:port]"))?;
        let scheme = match scheme {
            "http" => SchemeMatch::Http,
            "https" => SchemeMatch::Https,
            "*" => SchemeMatch::Any,
            other => return Err(format!("'{text}': the scheme must be http, https or *, not '{other}'")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!("'{text}': give only scheme://host[:port], without path, query or user"));
        }
        let (host, port) = split_port(rest).ok_or_else(|| format!("'{text}': unbalanced brackets around the host"))?;
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => PortMatch::Exact(
                p.parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("'{text}': the port must be a number from 1 to 65535 or *, not '{p}'"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = match host.as_str() {
            "*" => HostMatch::Any,
            _ if host.starts_with("*.") && valid_host(&host[2..]) => HostMatch::Subdomains(host[1..].to_owned()),
            _ if valid_host(&host) => HostMatch::Exact(host),
            _ => return Err(format!("'{text}': '{host}' is not a host name, an IP address, *.domain or *")),
        };
        Ok(Self { scheme, host, port, text: text.to_owned() })
    }
}

/// `host[:port]` or `[v6]:port`; None when brackets do not pair.
fn split_port(rest: &str) -> Option<(&str, Option<&str>)> {
    if rest.starts_with('[') {
        let end = rest.find(']')?;
        let port = rest[end + 1..].strip_prefix(':');
        if port.is_none() && end + 1 != rest.len() {
            return None;
        }
        return Some((&rest[..=end], port));
    }
    Some(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

impl HostPattern {
    /// Whether everything `other` grants is inside this grant too.
    pub fn covers(&self, other: &HostPattern) -> bool {
        let scheme = self.scheme == SchemeMatch::Any || self.scheme == other.scheme;
        let host = match (&self.host, &other.host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Subdomains(suffix), HostMatch::Exact(h) | HostMatch::Subdomains(h)) => {
                h.ends_with(suffix.as_str())
            }
            _ => false,
        };
        let port = self.port == PortMatch::Any || self.port == other.port;
        scheme && host && port
    }

    /// Whether `url` is inside this grant.
    pub fn matches(&self, url: &Url) -> bool {
        let scheme = matches!(
            (self.scheme, url.scheme()),
            (SchemeMatch::Http | SchemeMatch::Any, "http") | (SchemeMatch::Https | SchemeMatch::Any, "https")
        );
        let Some(host) = url.host_str() else { return false };
        let host = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(exact) => host == exact,
            HostMatch::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        };
        let port = match self.port {
            PortMatch::Any => true,
            PortMatch::Default => url.port().is_none(),
            PortMatch::Exact(p) => url.port_or_known_default() == Some(p),
        };
        scheme && host && port
    }
}

/// `scheme://host:port` of a URL: what a grant would have to name.
pub fn origin(url: &Url) -> String {
    let port = url.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, url: &str) -> bool {
        pattern.parse::<HostPattern>().unwrap().matches(&Url::parse(url).unwrap())
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        assert!(allows("http://127.0.0.1:11434", "http://127.0.0.1:11434/api/tags"));
        assert!(!allows("http://127.0.0.1:11434", "http://127.0.0.1:11435/"));
        assert!(!allows("http://127.0.0.1:11434", "https://127.0.0.1:11434/"));
        assert!(allows("https://api.example.com", "https://api.example.com/v1"));
        assert!(allows("https://api.example.com", "https://API.example.com:443/"));
        assert!(!allows("https://api.example.com", "https://api.example.com:8443/"));
        assert!(!allows("https://api.example.com", "https://api.example.com.evil.net/"));
        assert!(allows("https://*.example.com", "https://a.b.example.com/"));
        assert!(!allows("https://*.example.com", "https://example.com/"));
        assert!(!allows("https://*.example.com", "https://badexample.com/"));
        assert!(allows("*://localhost:*", "http://localhost:9/"));
        assert!(allows("*://localhost:*", "https://localhost/"));
        assert!(allows("http://*", "http://anything.at.all/"));
        assert!(!allows("http://*", "https://anything.at.all/"));
        assert!(allows("http://[::1]:8080", "http://[::1]:8080/x"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let error = |p: &str| p.parse::<HostPattern>().unwrap_err();
        assert_eq!(error("example.com"), "'example.com' is not of the form scheme://host[:port]");
        assert_eq!(error("ftp://example.com"), "'ftp://example.com': the scheme must be http, https or *, not 'ftp'");
        assert!(error("https://example.com/api").contains("without path"));
        assert!(error("http://example.com:http").contains("the port must be a number"));
        assert!(error("http://example.com:0").contains("the port must be a number"));
        assert!(error("http://exa mple.com").contains("is not a host name"));
        assert!(error("http://*example.com").contains("is not a host name"));
        assert!(error("http://[::1").contains("brackets"));
    }
}

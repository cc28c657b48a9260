//! Outbound HTTP for plugins (the `http-fetch` import): which hosts a plugin
//! may reach (its `allowed_hosts` patterns), the client that reaches them,
//! redirects checked hop by hop against the same grants, and the cap on
//! response size. It owns no other capability and knows nothing of tasks.
//!
//! The patterns are `origins`'; the headers the host adds, `credentials`'.
//! Requests go straight to the host: proxy variables are ignored, so what a
//! plugin reaches is what its grants say.
//!
//! It knows nothing of the WIT: requests, answers and errors are its own
//! types ([`Request`], [`Response`], [`FetchError`]), which the WIT's
//! implementation (`plugins::imports`) converts, as wasmtime's wasi-http maps
//! its host errors to the WIT's.

use super::credentials::{Credentials, HostHeader, Scrub};
use super::origins::{HostPattern, origin};
use reqwest::Url;
use reqwest::redirect::{Attempt, Policy};
use std::sync::Arc;
use std::time::Duration;

/// A request a plugin asks the host to send.
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Per-request timeout; the task's own deadline applies regardless.
    pub timeout_ms: Option<u32>,
}

/// A whole answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request was not sent or not answered. The texts are what plugins
/// have always been given (the bundled ones read "http-fetch denied").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("http-fetch: invalid URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("http-fetch: only http and https URLs are supported, not '{scheme}'")]
    Scheme { scheme: String },
    #[error("http-fetch: invalid method '{method}'")]
    Method { method: String },
    /// The plugin's grants do not cover the URL.
    #[error(
        "http-fetch denied: plugin '{plugin}' may not reach {wanted} ({granted}; grant it with allowed_hosts = [\"{wanted}\"] in {plugin}.toml)"
    )]
    Denied { plugin: String, wanted: String, granted: String },
    /// A header the host adds cannot be made (its secret is not set).
    #[error("http-fetch {origin}: {reason}")]
    Secret { origin: String, reason: String },
    #[error("http-fetch {origin}: the response is larger than max_response_bytes ({cap} bytes)")]
    TooLarge { origin: String, cap: usize },
    /// Sent, and it failed on the way: `what` is `timed out`, `cannot
    /// connect`, `redirect refused` or `request failed`.
    #[error("http-fetch {origin}: {what}: {detail}")]
    Failed { origin: String, what: &'static str, detail: String },
}

/// Responses larger than this fail unless a manifest says otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Redirects followed per request (each to a granted host).
const MAX_REDIRECTS: usize = 10;

/// How long to wait for a connection: a dead host fails the request fast
/// rather than using the whole task's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A plugin's outbound grants and the client that uses them.
#[derive(Debug, Clone)]
pub struct Outbound {
    allowed: Arc<[HostPattern]>,
    /// Headers the host adds (secrets, the bridges' bearer secrets), never
    /// seen by the plugin.
    credentials: Credentials,
    max_response_bytes: usize,
    /// None when nothing is granted: no client is built for plugins that
    /// may not reach anything.
    client: Option<reqwest::Client>,
}

impl Outbound {
    /// Nothing granted: every request is refused. `secrets` is what a
    /// manifest's headers will read.
    pub fn deny_all(secrets: Arc<crate::secrets::SecretBook>) -> Self {
        Self {
            allowed: Arc::new([]),
            credentials: Credentials::new(Vec::new(), secrets),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            client: None,
        }
    }

    /// Requests to `allowed` origins, with the headers `credentials` adds.
    pub fn new(allowed: Vec<HostPattern>, max_response_bytes: usize, credentials: Credentials) -> Result<Self, String> {
        let allowed: Arc<[HostPattern]> = allowed.into();
        let client = if allowed.is_empty() {
            None
        } else {
            let grants = allowed.clone();
            let given = credentials.clone();
            let redirects = Policy::custom(move |attempt: Attempt| {
                let from = attempt.previous().last().filter(|from| given.any_for(from));
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if from.is_some_and(|from| origin(from) != origin(attempt.url())) {
                    // The client keeps custom headers (an API key) across
                    // origins: a secret goes only where it was meant to.
                    let denied =
                        format!("redirect from an origin the host adds secrets for to {}", origin(attempt.url()));
                    attempt.error(denied)
                } else if grants.iter().any(|g| g.matches(attempt.url())) {
                    attempt.follow()
                } else {
                    let denied = format!("redirect to {} denied: not in allowed_hosts", origin(attempt.url()));
                    attempt.error(denied)
                }
            });
            let client = reqwest::Client::builder()
                .redirect(redirects)
                .connect_timeout(CONNECT_TIMEOUT)
                .no_proxy()
                .user_agent(concat!("gleitzeit/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot set up outbound HTTP: {e}"))?;
            Some(client)
        };
        Ok(Self { allowed, credentials, max_response_bytes, client })
    }

    /// These grants plus the host's own `endpoints` (bridges), each with the
    /// secret to show it.
    pub fn with_endpoints(&self, endpoints: Vec<(HostPattern, String)>) -> Result<Self, String> {
        let allowed = self.allowed.iter().cloned().chain(endpoints.iter().map(|(p, _)| p.clone())).collect();
        let bearers = endpoints.into_iter().map(|(pattern, secret)| HostHeader::bearer(pattern, &secret)).collect();
        Self::new(allowed, self.max_response_bytes, self.credentials.with(bearers))
    }

    /// The headers the host adds to this plugin's requests.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The granted patterns, as written.
    pub fn allowed(&self) -> &[HostPattern] {
        &self.allowed
    }

    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Send `request` for `plugin` if its grants allow the URL and read the
    /// whole answer; the error says what was refused or what failed.
    pub async fn fetch(&self, plugin: &str, request: Request) -> Result<Response, FetchError> {
        let (status, headers, mut body) = self.fetch_stream(plugin, request).await?;
        let mut whole = Vec::new();
        while let Some(chunk) = body.next().await? {
            whole.extend_from_slice(&chunk);
        }
        Ok(Response { status, headers, body: whole })
    }

    /// Send `request` like [`Outbound::fetch`], but return once the headers
    /// are in: the status, the headers and the body to read as it arrives.
    pub async fn fetch_stream(
        &self,
        plugin: &str,
        request: Request,
    ) -> Result<(u16, Vec<(String, String)>, BodyStream), FetchError> {
        let (origin, response, scrub) = self.send(plugin, request).await?;
        let (status, headers) = head(&response, &scrub);
        let body = BodyStream { response, origin, read: 0, cap: self.max_response_bytes, scrub, held: Vec::new() };
        Ok((status, headers, body))
    }

    /// Check the grants, send, and refuse bodies announced as too large.
    /// The answer comes with what to remove from it (the values of the
    /// headers the host added).
    async fn send(&self, plugin: &str, request: Request) -> Result<(String, reqwest::Response, Scrub), FetchError> {
        let url = Url::parse(&request.url)
            .map_err(|e| FetchError::InvalidUrl { url: request.url.clone(), reason: e.to_string() })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme { scheme: url.scheme().to_owned() });
        }
        let client = match &self.client {
            Some(client) if self.allowed.iter().any(|g| g.matches(&url)) => client,
            _ => return Err(self.denial(plugin, &url)),
        };
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| FetchError::Method { method: request.method.clone() })?;
        let origin = origin(&url);
        let added = self
            .credentials
            .for_request(&url)
            .map_err(|e| FetchError::Secret { origin: origin.clone(), reason: e.to_string() })?;
        let mut builder = client.request(method, url);
        for (name, value) in &request.headers {
            // A header the host adds replaces the plugin's of that name.
            if !added.headers.iter().any(|(host_name, _)| host_name.as_str().eq_ignore_ascii_case(name)) {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        for (name, value) in &added.headers {
            let mut value = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| FetchError::Secret {
                origin: origin.clone(),
                reason: format!("{name}: not a header value"),
            })?;
            value.set_sensitive(true);
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        if let Some(ms) = request.timeout_ms {
            builder = builder.timeout(Duration::from_millis(ms.into()));
        }
        let response = builder.send().await.map_err(|e| failure(&origin, &e))?;
        if response.content_length().is_some_and(|n| n > self.max_response_bytes as u64) {
            return Err(too_large(&origin, self.max_response_bytes));
        }
        Ok((origin, response, added.scrub))
    }

    fn denial(&self, plugin: &str, url: &Url) -> FetchError {
        let granted = if self.allowed.is_empty() {
            "it is granted no hosts".to_owned()
        } else {
            let list: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
            format!("it is granted only {}", list.join(", "))
        };
        FetchError::Denied { plugin: plugin.to_owned(), wanted: origin(url), granted }
    }
}

fn head(response: &reqwest::Response, scrub: &Scrub) -> (u16, Vec<(String, String)>) {
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = scrub.apply(value.as_bytes().to_vec());
            (name.as_str().to_owned(), String::from_utf8_lossy(&value).into_owned())
        })
        .collect();
    (response.status().as_u16(), headers)
}

fn too_large(origin: &str, cap: usize) -> FetchError {
    FetchError::TooLarge { origin: origin.to_owned(), cap }
}

/// A response body read piece by piece, within the plugin's response cap.
pub struct BodyStream {
    response: reqwest::Response,
    origin: String,
    read: usize,
    cap: usize,
    /// The values to remove from the body.
    scrub: Scrub,
    /// The end of the pieces so far that could start a value the next
    /// piece completes: passed on with it.
    held: Vec<u8>,
}

impl BodyStream {
    /// The next piece, or None at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, FetchError> {
        loop {
            let Some(chunk) = self.response.chunk().await.map_err(|e| failure(&self.origin, &e))? else {
                let rest = std::mem::take(&mut self.held);
                return Ok((!rest.is_empty()).then_some(rest));
            };
            self.read += chunk.len();
            if self.read > self.cap {
                return Err(too_large(&self.origin, self.cap));
            }
            if self.scrub.is_empty() {
                return Ok(Some(chunk.to_vec()));
            }
            let mut piece = std::mem::take(&mut self.held);
            piece.extend_from_slice(&chunk);
            let mut piece = self.scrub.apply(piece);
            let hold = self.scrub.unfinished_tail(&piece);
            self.held = piece.split_off(piece.len() - hold);
            if !piece.is_empty() {
                return Ok(Some(piece));
            }
        }
    }
}

/// A failed request in one line: what happened (timeout, refused
/// connection, denied redirect) and the causes reqwest records.
fn failure(origin: &str, error: &reqwest::Error) -> FetchError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let detail = if causes.is_empty() { error.to_string() } else { causes.join(": ") };
    FetchError::Failed { origin: origin.to_owned(), what, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_name_the_plugin_the_origin_and_the_fix() {
        let outbound = Outbound::new(vec!["http://127.0.0.1:9".parse().unwrap()], 10, Credentials::default()).unwrap();
        let url = Url::parse("https://example.com/secrets").unwrap();
        assert_eq!(
            outbound.denial("notes", &url).to_string(),
            "http-fetch denied: plugin 'notes' may not reach https://example.com:443 (it is granted only http://127.0.0.1:9; grant it with allowed_hosts = [\"https://example.com:443\"] in notes.toml)"
        );
    }
}

//! The web dashboard at `/`: the page and its two assets, built from
//! `dashboard/` (TypeScript, cytoscape and its dagre layout; `npm run
//! build`) and embedded in the binary, so it works with no network. The
//! page holds no data: it asks for a token and calls the HTTP API like any
//! other client. Served with a content security policy that lets it load
//! and connect to this host only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file: its bytes and media type.
struct Asset {
    body: &'static [u8],
    media_type: &'static str,
}

const PAGE: Asset =
    Asset { body: include_bytes!("../../../dashboard/dist/index.html"), media_type: "text/html; charset=utf-8" };
const SCRIPT: Asset =
    Asset { body: include_bytes!("../../../dashboard/dist/app.js"), media_type: "text/javascript; charset=utf-8" };
const STYLE: Asset =
    Asset { body: include_bytes!("../../../dashboard/dist/app.css"), media_type: "text/css; charset=utf-8" };
const LICENSES: Asset =
    Asset { body: include_bytes!("../../../dashboard/dist/app.js.LEGAL.txt"), media_type: "text/plain; charset=utf-8" };

/// Scripts and connections from this host only; no frames, no plugins; the
/// page may not be framed by another (clickjacking). Inline styles are
/// allowed: cytoscape styles its container inline (the browser test saw the
/// policy block it); no script runs from anywhere but `/assets/app.js`.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of the dashboard, for the daemon's router.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { serve(&PAGE) }))
        .route("/assets/app.js", axum::routing::get(|| async { serve(&SCRIPT) }))
        .route("/assets/app.css", axum::routing::get(|| async { serve(&STYLE) }))
        .route("/assets/licenses.txt", axum::routing::get(|| async { serve(&LICENSES) }))
}

fn serve(asset: &Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small enough to fetch again; a new binary must never show an old page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

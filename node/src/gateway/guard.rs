//! The guard in front of every route: the `Host` check (DNS rebinding),
//! the path length limit, and the security headers on every response.

use super::respond::error_page;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// The security headers on every response.
pub const CSP: &str =
    "default-src 'self'; script-src 'none'; object-src 'none'; frame-src 'none'; \
base-uri 'none'; form-action 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
font-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// Largest path (with query) accepted.
const MAX_PATH: usize = 4096;

/// Host header: an IP literal or `localhost` (a DNS name could be
/// rebound to 127.0.0.1 by a web page's server).
fn host_ok(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The middleware: the checks, then the headers.
pub(super) async fn guard(req: Request, next: Next) -> Response {
    let mut resp = if host_ok(req.headers()) {
        if req.uri().path().len() + req.uri().query().map_or(0, str::len) > MAX_PATH {
            error_page(
                StatusCode::URI_TOO_LONG,
                "Address too long",
                "The requested address is longer than the gateway accepts.",
            )
        } else {
            next.run(req).await
        }
    } else {
        error_page(
            StatusCode::FORBIDDEN,
            "Host not allowed",
            "The gateway answers only requests addressed to an IP address or to localhost \
             (this protects it from DNS rebinding by web pages).",
        )
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("127.0.0.1:8888", true),
            ("localhost:8888", true),
            ("[::1]:8888", true),
            ("evil.example:8888", false),
            ("127.0.0.1.nip.io", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(host_ok(&h), ok, "{host}");
        }
        h.remove(header::HOST);
        assert!(!host_ok(&h));
    }
}

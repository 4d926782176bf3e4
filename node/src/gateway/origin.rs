//! Whether a request comes from another site: a web page elsewhere
//! embedding, linking to or posting to the gateway. Used by the upload
//! form (`upload`) and by key requests (`keys`), which refuse such
//! requests before touching the node.
//!
//! The browser says where a request comes from in three headers, each
//! checked when present:
//! - `Sec-Fetch-Site`: only `same-origin` (a gateway page) and `none` (the
//!   user typed the address, opened a bookmark) are the gateway's own;
//!   `same-site` (another port on the same host) and `cross-site` are not.
//! - `Origin`: must be `http://` + the request's `Host`; `null` (sandboxed
//!   frames, some redirects) is another site.
//! - `Referer`: its origin must be the gateway's. Gateway pages send none
//!   (`Referrer-Policy: no-referrer`).
//!
//! A request with none of them (curl, scripts, older browsers on a plain
//! `http://` link) is the gateway's own. Browsers send `Sec-Fetch-Site`
//! only to potentially trustworthy origins, which a loopback gateway is.

use axum::http::{header, HeaderMap};

/// Whether the request with these headers comes from another site.
pub(super) fn from_other_site(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = text(header::HOST) else {
        // The guard refuses requests without Host before any handler.
        return true;
    };
    let own = own_origin(host);
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return true;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if normalise(origin) != own {
            return true;
        }
    }
    if let Some(referer) = headers.get(header::REFERER) {
        let from = referer.to_str().ok().and_then(origin_of);
        if from.as_deref().map(normalise) != Some(own.clone()) {
            return true;
        }
    }
    false
}

/// `http://` + `host`, normalised.
fn own_origin(host: &str) -> String {
    normalise(&format!("http://{host}"))
}

/// An origin in lower case without the default port (`http://a:80` is
/// `http://a`).
fn normalise(origin: &str) -> String {
    let o = origin.trim().to_ascii_lowercase();
    match o.strip_suffix(":80") {
        Some(rest) if rest.starts_with("http://") => rest.to_owned(),
        _ => o,
    }
}

/// The origin (`scheme://authority`) of an absolute URL, if it has one.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8888"));
        for (k, v) in list {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_metadata_decides() {
        for (site, other) in [
            ("same-origin", false),
            ("none", false),
            ("same-site", true),
            ("cross-site", true),
            ("garbage", true),
            ("", true),
        ] {
            let h = headers(&[("sec-fetch-site", site)]);
            assert_eq!(from_other_site(&h), other, "{site}");
        }
    }

    #[test]
    fn without_fetch_metadata_origin_and_referer_decide() {
        for (list, other) in [
            (&[][..], false),
            (&[("origin", "http://127.0.0.1:8888")][..], false),
            (&[("origin", "HTTP://127.0.0.1:8888")][..], false),
            (&[("origin", "http://127.0.0.1:8000")][..], true),
            (&[("origin", "http://evil.example")][..], true),
            (&[("origin", "https://127.0.0.1:8888")][..], true),
            (&[("origin", "null")][..], true),
            (
                &[("referer", "http://127.0.0.1:8888/USK@x/site/1/")][..],
                false,
            ),
            (&[("referer", "http://127.0.0.1:8888")][..], false),
            (&[("referer", "http://127.0.0.1:8888?q")][..], false),
            (&[("referer", "http://127.0.0.1:8000/evil.html")][..], true),
            (&[("referer", "https://evil.example/")][..], true),
            (
                &[("referer", "http://127.0.0.1:8888.evil.example/")][..],
                true,
            ),
            (&[("referer", "http://x@127.0.0.1:8888/")][..], true),
            (&[("referer", "not a url")][..], true),
            (&[("referer", "/relative")][..], true),
            // Every header present must agree.
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "http://evil.example"),
                ][..],
                true,
            ),
            (
                &[
                    ("sec-fetch-site", "none"),
                    ("referer", "http://evil.example/"),
                ][..],
                true,
            ),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "http://127.0.0.1:8888"),
                    ("referer", "http://127.0.0.1:8888/a"),
                ][..],
                false,
            ),
        ] {
            assert_eq!(from_other_site(&headers(list)), other, "{list:?}");
        }
    }

    #[test]
    fn default_port_and_case() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("LocalHost"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:80"),
        );
        assert!(!from_other_site(&h));
        h.insert(header::HOST, HeaderValue::from_static("[::1]:8888"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://[::1]:8888"),
        );
        assert!(!from_other_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://[::2]:8888"),
        );
        assert!(from_other_site(&h));
    }

    #[test]
    fn no_host_is_never_own() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(from_other_site(&h));
    }
}

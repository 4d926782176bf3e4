//! Response builders and request-parsing helpers shared by the gateway's
//! handlers.

use super::pages;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTML page.
pub(super) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// An error page (see [`pages::error`]).
pub(super) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    html(status, pages::error(title, detail))
}

/// A redirect to `location`, with a page linking there.
pub(super) fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = html(
        status,
        pages::page(
            "Moved",
            &format!("<p><a href=\"{0}\">{0}</a></p>", pages::esc(location)),
        ),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Query parameters, percent-decoded (`+` as space).
pub(super) fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// A file name safe to put in a header or on disk: the last path
/// component, ASCII letters, digits, `.`, `-` and `_` only, no leading
/// dot, at most 100 characters; `file` if nothing is left.
pub(super) fn safe_file_name(name: &str) -> String {
    let n: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let n = n.trim_start_matches('.').to_owned();
    if n.is_empty() {
        "file".into()
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a b\"c.png"), "abc.png");
        assert_eq!(safe_file_name("..."), "file");
    }
}

//! Response builders and request-parsing helpers shared by the gateway's
//! handlers.

use super::pages;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lichen_client::ErrorKind;

/// The one mapping of failures to HTTP: the status and page title of a
/// failed fetch or insert, from its kind alone (FCP codes play no part).
pub(super) fn http_status(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::NewerEdition => (StatusCode::MOVED_PERMANENTLY, "Newer edition"),
        ErrorKind::NotFound | ErrorKind::RouteNotFound => (StatusCode::NOT_FOUND, "Not found"),
        ErrorKind::NotInSite => (StatusCode::NOT_FOUND, "Not in this site"),
        ErrorKind::BadUri | ErrorKind::BadPath => (StatusCode::BAD_REQUEST, "Bad key or path"),
        ErrorKind::TooBig => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
        ErrorKind::Collision => (StatusCode::CONFLICT, "Key already used"),
        ErrorKind::BadContent => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Damaged or hostile document",
        ),
        ErrorKind::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Overloaded"),
        ErrorKind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "Shutting down"),
        ErrorKind::Cancelled => (StatusCode::INTERNAL_SERVER_ERROR, "Cancelled"),
        ErrorKind::LocalDisk => (StatusCode::INTERNAL_SERVER_ERROR, "Disk error"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

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
    form_params(q, 32)
}

/// The first `max` pairs of a query string or an
/// `application/x-www-form-urlencoded` body, decoded.
pub(super) fn form_params(q: Option<&str>, max: usize) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .take(max)
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

/// Whether two tokens are equal, in time that does not depend on where
/// they differ.
pub(super) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_http_status() {
        let table = [
            (ErrorKind::BadUri, 400),
            (ErrorKind::BadPath, 400),
            (ErrorKind::NotInSite, 404),
            (ErrorKind::TooBig, 413),
            (ErrorKind::Collision, 409),
            (ErrorKind::Cancelled, 500),
            (ErrorKind::BadContent, 422),
            (ErrorKind::NewerEdition, 301),
            (ErrorKind::NotFound, 404),
            (ErrorKind::RouteNotFound, 404),
            (ErrorKind::Overloaded, 503),
            (ErrorKind::LocalDisk, 500),
            (ErrorKind::ShuttingDown, 503),
            (ErrorKind::Internal, 500),
        ];
        assert_eq!(table.len(), ErrorKind::ALL.len());
        for (k, (kind, status)) in ErrorKind::ALL.iter().zip(table) {
            assert_eq!(*k, kind);
            assert_eq!(http_status(kind).0.as_u16(), status, "{kind:?}");
        }
    }

    /// The statuses the gateway gave when it read them off FCP codes.
    fn status_from_fcp_code_before(code: u32) -> u16 {
        match code {
            27 => 301,
            13 | 28 | 14 | 30 | 10 | 24 => 404,
            11 | 20 => 400,
            21 | 22 => 413,
            4 | 6 | 9 | 34 | 35 => 422,
            15 => 503,
            _ => 500,
        }
    }

    #[test]
    fn every_fetch_failure_keeps_the_status_it_had() {
        for (e, kind, code) in crate::jobs::codes::fetch_cases() {
            assert_eq!(
                http_status(kind).0.as_u16(),
                status_from_fcp_code_before(code),
                "{e:?}"
            );
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a b\"c.png"), "abc.png");
        assert_eq!(safe_file_name("..."), "file");
    }
}

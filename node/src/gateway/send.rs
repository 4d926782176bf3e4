//! Serving a fetched document: through the content filter (HTML, CSS),
//! checked (images), or as it is (plain text, downloads), with ranges.

use super::doc::{Doc, DocFile};
use super::pages;
use super::respond::{error_page, html, safe_file_name};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lichen_crypto::FreenetUri;
use lichen_filter as filter;

/// Largest HTML or CSS document filtered (larger: offered as a download).
const MAX_FILTERED: u64 = 8 << 20;

/// Parse a single `bytes=` range against `size`: `Ok(None)` for no (or
/// an ignored multi-) range, `Err` for unsatisfiable.
fn parse_range(range: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(r) = range else { return Ok(None) };
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Whether a document of this type is sent as it is (no filter reads it
/// whole first), so a request may send it while it is fetched.
pub(super) fn sent_unfiltered(mime: &str, force_download: bool) -> bool {
    let m = base_mime(mime);
    force_download || m == "text/plain" || filter::is_passable_image(&m)
}

/// A media type without its parameters, lower-cased (`Text/HTML;
/// charset=x` → `text/html`): what [`serve_document`] dispatches on.
fn base_mime(mime: &str) -> String {
    let m = mime.to_ascii_lowercase();
    m.split(';').next().unwrap_or("").trim().to_owned()
}

/// The response for a fetched document (`doc`) at `path`: the request
/// asked `?forcedownload`, `?max-size=`, a `Range` and/or `HEAD`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_document(
    uri: &FreenetUri,
    path: &str,
    mut doc: Doc,
    force_download: bool,
    max_size: Option<u64>,
    range: Option<&str>,
    head: bool,
) -> Response {
    let file = doc.file.clone();
    if let Some(max) = max_size {
        if file.size > max && !force_download {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::page(
                    "Larger than asked",
                    &format!(
                        "<p>The document is {} bytes, more than the max-size of {max}.</p><p><a href=\"{}\">Open it anyway</a></p>",
                        file.size,
                        pages::esc(path)
                    ),
                ),
            );
        }
    }
    let mime = base_mime(&file.mime);
    if force_download {
        let name = uri
            .meta
            .last()
            .map_or_else(|| "download".to_owned(), |n| safe_file_name(n));
        return serve_file(
            doc,
            "application/octet-stream",
            Some(&format!("attachment; filename=\"{name}\"")),
            range,
            head,
        )
        .await;
    }
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" | "text/css" => {
            serve_filtered(&file, path, &mime).await
        }
        "text/plain" => serve_file(doc, "text/plain; charset=utf-8", None, range, head).await,
        m if filter::is_passable_image(m) => {
            let headb = doc.head(16).await.unwrap_or_default();
            if filter::image_magic_ok(m, &headb) {
                serve_file(doc, m, None, range, head).await
            } else {
                html(
                    StatusCode::OK,
                    pages::download_warning(path, &mime, file.size, "This file claims to be an image but its content is not of that type."),
                )
            }
        }
        "image/svg+xml" => html(
            StatusCode::OK,
            pages::download_warning(path, &mime, file.size, "SVG images can contain scripts and links to the outside web; the gateway does not show them."),
        ),
        _ => html(
            StatusCode::OK,
            pages::download_warning(path, &mime, file.size, "The gateway cannot check this type of file for content that would reveal you."),
        ),
    }
}

/// An HTML or CSS document, whole, through the content filter (`mime` is
/// its [`base_mime`]).
async fn serve_filtered(file: &DocFile, path: &str, mime: &str) -> Response {
    if file.size > MAX_FILTERED {
        return html(
            StatusCode::OK,
            pages::download_warning(
                path,
                mime,
                file.size,
                "This page is too large for the content filter.",
            ),
        );
    }
    let Ok(bytes) = file.read_all().await else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Read error",
            "The fetched document could not be read back.",
        );
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let is_css = mime == "text/css";
    let out = tokio::task::spawn_blocking(move || {
        if is_css {
            filter::filter_css(&text)
        } else {
            filter::filter_html(&text)
        }
    })
    .await
    .unwrap_or_default();
    let ct = if is_css {
        "text/css; charset=utf-8"
    } else {
        "text/html; charset=utf-8"
    };
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, ct)], out).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=600"),
    );
    r
}

/// `doc` as it is, or the asked range of it.
async fn serve_file(
    doc: Doc,
    content_type: &str,
    disposition: Option<&str>,
    range: Option<&str>,
    head: bool,
) -> Response {
    let size = doc.file.size;
    let (status, start, len) = match parse_range(range, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut r = error_page(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Bad range",
                "The requested range is outside the document.",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if head {
        Body::empty()
    } else {
        doc.body(start, len)
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=600");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if let Some(d) = disposition {
        b = b.header(header::CONTENT_DISPOSITION, d);
    }
    b.body(body).unwrap_or_else(|_| {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "response",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=0-99"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Err(()));
    }
}

//! `POST /upload`: a file from the home page's form, inserted as a CHK.
//! Same-origin and token checked; the file is spooled to disk first.

use super::origin::from_other_site;
use super::pages;
use super::respond::{constant_eq, error_page, html, http_status, safe_file_name};
use super::state::Gateway;
use crate::ops::{self as engine, PutData, PutSpec};
use axum::extract::multipart::Field;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lichen_client::HasKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Largest upload through the form.
const MAX_UPLOAD: u64 = 4 << 30;
/// Longest wait for the next part of the form.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// Uploads listed on the home page.
const UPLOADS_LISTED: usize = 20;

/// The file field, spooled to disk.
struct Saved {
    path: PathBuf,
    len: u64,
    /// File name, made safe.
    name: String,
    /// Media type, unless the browser sent none or `octet-stream`.
    mime: Option<String>,
}

/// The handler.
pub(super) async fn upload(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    mut mp: Multipart,
) -> Response {
    if from_other_site(&headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The upload form was sent from another site.",
        );
    }
    let (token_ok, saved) = match read_form(&gw, &mut mp).await {
        Ok(form) => form,
        Err(resp) => return *resp,
    };
    if !token_ok {
        if let Some(s) = saved {
            let _ = tokio::fs::remove_file(s.path).await;
        }
        return error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The form's token is missing or wrong. Reload the home page and try again.",
        );
    }
    let Some(saved) = saved else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "No file",
            "Choose a file to insert.",
        );
    };
    insert(&gw, saved).await
}

/// The form's fields: whether its token is right, and the file (only
/// read once the token was).
async fn read_form(
    gw: &Gateway,
    mp: &mut Multipart,
) -> Result<(bool, Option<Saved>), Box<Response>> {
    let expected = gw.csrf_for("upload");
    let mut token_ok = false;
    let mut saved = None;
    loop {
        let field = match tokio::time::timeout(CHUNK_TIMEOUT, mp.next_field()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(Box::new(error_page(
                    StatusCode::BAD_REQUEST,
                    "Bad upload",
                    &e.body_text(),
                )));
            }
            Err(_) => {
                return Err(Box::new(error_page(
                    StatusCode::REQUEST_TIMEOUT,
                    "Upload too slow",
                    "The upload stalled.",
                )));
            }
        };
        match field.name() {
            Some("csrf") => {
                let v = read_token(field).await;
                token_ok = constant_eq(&v, expected.as_bytes());
            }
            Some("file") if token_ok => saved = Some(save_file(gw, field).await?),
            _ => {}
        }
    }
    Ok((token_ok, saved))
}

/// The token field's value (reading stops past 256 bytes).
async fn read_token(mut field: Field<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    while let Ok(Ok(Some(c))) = tokio::time::timeout(CHUNK_TIMEOUT, field.chunk()).await {
        v.extend_from_slice(&c);
        if v.len() > 256 {
            break;
        }
    }
    v
}

/// Spool the file field to a temporary file.
async fn save_file(gw: &Gateway, mut field: Field<'_>) -> Result<Saved, Box<Response>> {
    let name = safe_file_name(field.file_name().unwrap_or("file"));
    let mime = field
        .content_type()
        .map(str::to_owned)
        .filter(|m| m != "application/octet-stream");
    let path = gw.node.tmp_path("gw-upload");
    let seal = gw.node.vault.new_file();
    let created = match tokio::fs::File::create(&path).await {
        Ok(mut f) => f.write_all(&seal.header).await.map(|()| f),
        Err(e) => Err(e),
    };
    let Ok(mut f) = created else {
        return Err(Box::new(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot store the upload",
            "No temporary space.",
        )));
    };
    let mut len = 0u64;
    loop {
        let fail = match tokio::time::timeout(CHUNK_TIMEOUT, field.chunk()).await {
            Ok(Ok(Some(c))) => {
                let at = len;
                len += c.len() as u64;
                let mut c = c.to_vec();
                seal.key.seal_in_place(at, &mut c);
                if len <= MAX_UPLOAD && f.write_all(&c).await.is_ok() {
                    continue;
                }
                error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Upload too large",
                    "The file is larger than the gateway accepts (or the disk is full).",
                )
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => error_page(StatusCode::BAD_REQUEST, "Bad upload", &e.body_text()),
            Err(_) => error_page(
                StatusCode::REQUEST_TIMEOUT,
                "Upload too slow",
                "The upload stalled.",
            ),
        };
        let _ = tokio::fs::remove_file(&path).await;
        return Err(Box::new(fail));
    }
    let _ = f.flush().await;
    Ok(Saved {
        path,
        len,
        name,
        mime,
    })
}

/// Insert the spooled file as a CHK, then delete it.
async fn insert(gw: &Gateway, saved: Saved) -> Response {
    let Saved {
        path,
        len,
        name,
        mime,
    } = saved;
    let spec = PutSpec {
        uri: "CHK@".into(),
        data: if len == 0 {
            PutData::Empty
        } else {
            PutData::Spooled {
                path: path.clone(),
                offset: 0,
                len,
                vault: gw.node.vault.clone(),
            }
        },
        mime,
        dont_compress: false,
        chk_only: false,
        target_filename: Some(name.clone()),
    };
    let r = engine::put(&gw.node, spec, &|_| {}, &|_| {}).await;
    let _ = tokio::fs::remove_file(&path).await;
    match r {
        Ok(uri) => {
            if let Ok(mut u) = gw.uploads.lock() {
                u.push_back((name.clone(), uri.clone()));
                while u.len() > UPLOADS_LISTED {
                    u.pop_front();
                }
            }
            html(
                StatusCode::OK,
                pages::page(
                    "Inserted",
                    &format!(
                        "<p>{} is in the network as</p><p><a href=\"/{u}\"><code>{u}</code></a></p>",
                        pages::esc(&name),
                        u = pages::esc(&uri)
                    ),
                ),
            )
        }
        Err(f) => error_page(http_status(f.kind()).0, "Insert failed", &f.extra),
    }
}

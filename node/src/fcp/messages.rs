//! The FCP messages that describe a request: its `Persistent*` message,
//! its terminal message, the header of its `AllData`.

use super::common::data_len;
use crate::requests::{Outcome, Request, State};
use lichen_fcp::client::{ClientMessage, Persistence, UploadFrom};
use lichen_fcp::codec::Message;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::{FetchErrorCode, InsertErrorCode};

/// The messages that describe a request: its Persistent* message (when
/// `with_persistent` or it is persistent) and its terminal message if done.
pub(super) fn describe(req: &Request, with_persistent: bool, now_ms: u64) -> Vec<Message> {
    let mut out = Vec::new();
    let parsed = ClientMessage::parse_header(&req.header, data_len(&req.header));
    let st = req.snapshot();
    let global = req.global();
    if let Ok(msg) = &parsed {
        if with_persistent || req.persistence != Persistence::Connection {
            match msg {
                ClientMessage::ClientGet(g) => out.push(
                    rep::PersistentGet {
                        identifier: g.identifier.clone(),
                        uri: g.uri.clone(),
                        verbosity: g.verbosity,
                        return_type: g.return_type,
                        persistence: g.persistence,
                        filename: g.filename.clone(),
                        priority_class: g.priority_class,
                        client_token: g.client_token.clone(),
                        global,
                        started: true,
                        max_retries: g.max_retries,
                        binary_blob: g.binary_blob,
                        max_size: g.max_size,
                        real_time: g.real_time,
                    }
                    .to_message(),
                ),
                ClientMessage::ClientPut(p) => out.push(
                    rep::PersistentPut {
                        identifier: p.identifier.clone(),
                        uri: p.uri.clone(),
                        private_uri: None,
                        verbosity: p.verbosity,
                        priority_class: p.priority_class,
                        upload_from: p.upload_from.clone(),
                        persistence: p.persistence,
                        content_type: p.content_type.clone(),
                        global,
                        data_length: data_len(&req.header),
                        client_token: p.client_token.clone(),
                        started: true,
                        max_retries: p.max_retries,
                        target_filename: p.target_filename.clone(),
                        binary_blob: p.binary_blob,
                        compatibility_mode: "COMPAT_CURRENT".into(),
                        dont_compress: p.dont_compress,
                        codecs: p.codecs.clone(),
                        real_time: p.real_time,
                    }
                    .to_message(),
                ),
                ClientMessage::ClientPutComplexDir(d) => {
                    out.push(put_dir_message(&d.options, global, false, &d.files))
                }
                ClientMessage::ClientPutDiskDir(d) => {
                    out.push(put_dir_message(&d.options, global, true, &[]))
                }
                _ => {}
            }
        }
    }
    if let Some(o) = &st.outcome {
        out.push(terminal(req, o, &st, now_ms));
    } else if let Some(uri) = &st.uri {
        out.push(
            rep::UriGenerated {
                identifier: req.identifier.clone(),
                global,
                uri: uri.clone(),
            }
            .to_message(),
        );
    }
    out
}

fn put_dir_message(
    o: &lichen_fcp::client::PutDirOptions,
    global: bool,
    disk: bool,
    files: &[lichen_fcp::client::DirFile],
) -> Message {
    rep::PersistentPutDir {
        identifier: o.identifier.clone(),
        uri: o.uri.clone(),
        private_uri: None,
        verbosity: o.verbosity,
        persistence: o.persistence,
        priority_class: o.priority_class,
        global,
        disk,
        compatibility_mode: "COMPAT_CURRENT".into(),
        default_name: o.default_name.clone(),
        files: files
            .iter()
            .map(|f| rep::PutDirFile {
                name: f.name.clone(),
                upload_from: f.upload_from.clone(),
                data_length: match f.upload_from {
                    UploadFrom::Direct { data_length } => Some(data_length),
                    _ => None,
                },
                content_type: f.content_type.clone(),
            })
            .collect(),
        client_token: o.client_token.clone(),
        started: true,
        max_retries: o.max_retries,
        dont_compress: o.dont_compress,
        codecs: o.codecs.clone(),
        real_time: o.real_time,
    }
    .to_message()
}

/// The terminal message of a finished request (`now_ms` dates one not
/// yet marked completed).
pub(super) fn terminal(req: &Request, o: &Outcome, st: &State, now_ms: u64) -> Message {
    let identifier = req.identifier.clone();
    let global = req.global();
    let completion = st.completed_ms.unwrap_or(now_ms);
    match o {
        Outcome::PutOk {
            uri,
            in_network,
            push_error,
        } => {
            let m = rep::PutSuccessful {
                identifier,
                global,
                uri: uri.clone(),
                startup_time: req.started_ms,
                completion_time: completion,
            }
            .to_message()
            // Without peers the insert lives in this node's client cache
            // only until it is pushed. Clients that know the field tell
            // their user; others ignore it.
            .field(
                "Lichen.InNetwork",
                lichen_fcp::fields::bool_str(*in_network),
            );
            match push_error {
                // Pushing it once peers came failed: insert it again.
                Some(e) => m.field("Lichen.PushFailed", e.clone()),
                None => m,
            }
        }
        Outcome::PutErr { code, extra } => {
            let code = InsertErrorCode::from_code(*code).unwrap_or(InsertErrorCode::InternalError);
            let mut m = rep::PutFailed {
                identifier,
                global,
                code,
                extra: extra.clone(),
                expected_uri: st.uri.clone(),
            }
            .to_message();
            // fred's text for 14 speaks of 64 TB files; Lichen's reason
            // (e.g. the client cache size without peers) is what a client
            // showing CodeDescription should show.
            if let (InsertErrorCode::TooBig, Some(e)) = (code, extra) {
                m.fields.set("CodeDescription", e.clone());
            }
            m
        }
        Outcome::GetOk { mime, len, .. } => rep::DataFound {
            identifier,
            global,
            content_type: mime.clone(),
            data_length: *len,
            startup_time: req.started_ms,
            completion_time: completion,
        }
        .to_message(),
        Outcome::GetErr {
            code,
            extra,
            redirect,
        } => {
            let code = FetchErrorCode::from_code(*code).unwrap_or(FetchErrorCode::InternalError);
            let mut g = rep::GetFailed::new(identifier, global, code);
            g.extra = extra.clone();
            g.redirect_uri = redirect.clone();
            g.to_message()
        }
    }
}

/// The `AllData` header of a finished direct get (the data follows from a file).
pub(super) fn all_data_header(req: &Request, len: u64, mime: &str, now_ms: u64) -> Vec<u8> {
    rep::AllData {
        identifier: req.identifier.clone(),
        global: req.global(),
        data_length: len,
        startup_time: req.started_ms,
        completion_time: req.snapshot().completed_ms.unwrap_or(now_ms),
        content_type: Some(mime.to_string()),
    }
    .header()
}

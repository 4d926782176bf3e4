//! Running one FCP request (`ClientPut`, `ClientGet`, `ClientPutComplexDir`,
//! `ClientPutDiskDir`): the request's message becomes an operation, its
//! progress and URI are kept in the request's state and told through
//! [`Report`], which the FCP front end implements (it knows which
//! connections see the request). Nothing here knows a connection.

use super::codes;
use super::disk::{self, DiskAccess};
use crate::node::Node;
use crate::ops::{self, GetSpec, PutData, PutSpec, SiteFile, StreamOpen};
use crate::requests::RequestRef;
use crate::requests::{Outcome, Progress, Request, Scope};
use crate::sealed::FileSeal;
use crate::util::clock::Clock;
use crate::util::dirfd::{DiskFile, DiskOut};
use crate::util::hold;
use lichen_client::{FetchError, InsertError};
use lichen_fcp::client::{
    ClientGet, ClientMessage, ClientPut, Persistence, PutDirOptions, ReturnType, UploadFrom,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where a running request's news goes (the FCP front end implements it).
pub(crate) trait Report: Send + Sync {
    /// Progress to tell the request's audience (already kept in its state;
    /// at most two a second, always the last).
    fn progress(&self, req: &Request, p: Progress, now_ms: u64);
    /// The request's URI is known (told once per URI).
    fn uri_generated(&self, req: &Request, uri: String);
    /// The output of a `ReturnType=chunked` get: its data goes to the
    /// asking connection as it is decoded.
    fn chunked_output(&self, req: &Arc<Request>) -> StreamOpen;
    /// The output of a direct get seen by its own connection only: once
    /// the document is found and local, its terminal messages and data go
    /// out at once (then `told` is set: nothing more may be sent).
    fn direct_output(&self, req: &Arc<Request>, told: Arc<AtomicBool>) -> StreamOpen;
}

/// A finished request: its outcome and, for a direct get, the file holding
/// the data (sealed under the key when given).
pub(crate) type Finished = (Outcome, Option<(PathBuf, Option<FileSeal>)>);

/// Run one request; returns its outcome and, for direct gets, the file
/// holding the data. `None` for a message that is not a request. `disk`:
/// what it reads or writes on disk, opened when its access was checked;
/// `None` for a request resumed after a restart, whose files are opened
/// again now (by their directory, with no link anywhere).
pub(crate) async fn run(
    node: Arc<Node>,
    report: Arc<dyn Report>,
    req: Arc<Request>,
    msg: ClientMessage,
    disk: Option<DiskAccess>,
    told: Arc<AtomicBool>,
) -> Option<Finished> {
    let verbosity = match &msg {
        ClientMessage::ClientPut(p) => p.verbosity,
        ClientMessage::ClientGet(g) => g.verbosity,
        ClientMessage::ClientPutComplexDir(d) => d.options.verbosity,
        ClientMessage::ClientPutDiskDir(d) => d.options.verbosity,
        _ => lichen_fcp::client::Verbosity(0),
    };
    let cb = Callbacks {
        report,
        clock: node.clock.clone(),
        req: req.clone(),
        simple_progress: verbosity.simple_progress(),
        last: Mutex::new(0),
        told: told.clone(),
    };
    let mut disk = match disk {
        Some(d) => d,
        None => match disk::prepare(&msg, &disk::reopen, &disk::reopen) {
            Ok(d) => d,
            Err((_, extra)) => return Some((disk_failed(&msg, extra), None)),
        },
    };
    match msg {
        ClientMessage::ClientPut(p) => {
            hold::reached(&req.identifier).await;
            Some(put(&node, &req, &p, disk.put.take(), &cb).await)
        }
        ClientMessage::ClientGet(g) => {
            hold::reached(&req.identifier).await;
            Some(get(&node, &req, &g, disk.get.take(), &cb, told).await)
        }
        ClientMessage::ClientPutComplexDir(d) => {
            hold::reached(&req.identifier).await;
            let mut files = Vec::new();
            for (i, f) in d.files.iter().enumerate() {
                let on_disk = disk.files.get_mut(i).and_then(Option::take);
                let data = match put_data(
                    &node.vault,
                    &f.upload_from,
                    req.upload.as_deref(),
                    f.data_offset,
                    on_disk,
                ) {
                    Ok(d) => d,
                    Err(o) => return Some((o, None)),
                };
                files.push(SiteFile {
                    name: f.name.clone(),
                    data,
                    mime: f.content_type.clone(),
                });
            }
            let out = put_site(&node, &req, &d.options, files, &cb).await;
            if d.options.persistence == Persistence::Connection {
                if let Some(u) = &req.upload {
                    let _ = tokio::fs::remove_file(u).await;
                }
            }
            Some((out, None))
        }
        ClientMessage::ClientPutDiskDir(d) => {
            let scanned = match disk.folder.take() {
                Some(folder) => ops::scan_dir(folder, d.include_hidden_files).await,
                None => Err("the folder was not opened".into()),
            };
            let files = match scanned {
                Ok(f) => f,
                Err(e) => {
                    let e =
                        ops::Failure::new(InsertError::Local("cannot read the folder".into()), e);
                    return Some((put_outcome(Err(e)), None));
                }
            };
            hold::reached(&req.identifier).await;
            Some((put_site(&node, &req, &d.options, files, &cb).await, None))
        }
        _ => None,
    }
}

/// The outcome of a request resumed after a restart whose disk files
/// cannot be opened again.
fn disk_failed(msg: &ClientMessage, extra: String) -> Outcome {
    let e = std::io::Error::other(extra.clone());
    match msg {
        ClientMessage::ClientGet(_) => {
            get_err_outcome(ops::Failure::new(FetchError::Write(e), extra))
        }
        _ => put_outcome(Err(ops::Failure::new(InsertError::Read(e), extra))),
    }
}

/// The request's progress and URI callbacks.
struct Callbacks {
    report: Arc<dyn Report>,
    clock: Arc<dyn Clock>,
    req: Arc<Request>,
    /// The client asked for `SimpleProgress` messages.
    simple_progress: bool,
    /// When progress was last told (ms).
    last: Mutex<u64>,
    /// The terminal messages are sent (a streamed `AllData`).
    told: Arc<AtomicBool>,
}

impl Callbacks {
    fn progress(&self, p: Progress) {
        if let Ok(mut s) = self.req.state.lock() {
            s.progress = p;
        }
        // Nothing may follow a streamed AllData's DataFound.
        if !self.simple_progress || self.told.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.now_ms();
        {
            let mut l = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // At most two a second, but always the last one.
            if now.saturating_sub(*l) < 500 && p.succeeded < p.required {
                return;
            }
            *l = now;
        }
        self.report.progress(&self.req, p, now);
    }

    fn uri_generated(&self, uri: String) {
        if let Ok(mut s) = self.req.state.lock() {
            if s.uri.as_deref() == Some(uri.as_str()) {
                return;
            }
            s.uri = Some(uri.clone());
        }
        self.report.uri_generated(&self.req, uri);
    }
}

async fn put(
    node: &Arc<Node>,
    req: &Arc<Request>,
    p: &ClientPut,
    on_disk: Option<DiskFile>,
    cb: &Callbacks,
) -> Finished {
    let data = match &req.stream {
        Some(s) => PutData::Stream(s.clone()),
        None => match put_data(
            &node.vault,
            &p.upload_from,
            req.upload.as_deref(),
            0,
            on_disk,
        ) {
            Ok(d) => d,
            Err(o) => return (o, None),
        },
    };
    let spec = PutSpec {
        uri: p.uri.clone(),
        data,
        mime: p.content_type.clone(),
        dont_compress: p.dont_compress,
        chk_only: p.get_chk_only,
        target_filename: p.target_filename.clone(),
    };
    let out = ops::put_with(
        node,
        spec,
        Some(push_ref(req)),
        &|u| cb.uri_generated(u),
        &|p| cb.progress(p),
    )
    .await;
    if p.persistence == Persistence::Connection {
        if let Some(u) = &req.upload {
            let _ = tokio::fs::remove_file(u).await;
        }
    }
    (put_outcome(out), None)
}

async fn put_site(
    node: &Arc<Node>,
    req: &Arc<Request>,
    options: &PutDirOptions,
    files: Vec<SiteFile>,
    cb: &Callbacks,
) -> Outcome {
    let out = ops::put_site_with(
        node,
        &options.uri,
        files,
        options.default_name.clone(),
        Some(push_ref(req)),
        &|u| cb.uri_generated(u),
        &|p| cb.progress(p),
    )
    .await;
    put_outcome(out)
}

async fn get(
    node: &Arc<Node>,
    req: &Arc<Request>,
    g: &ClientGet,
    on_disk: Option<DiskOut>,
    cb: &Callbacks,
    told: Arc<AtomicBool>,
) -> Finished {
    let direct = g.return_type == ReturnType::Direct;
    let out_path = match g.return_type {
        ReturnType::Direct => Some(if req.persistence == Persistence::Forever {
            node.requests
                .dir()
                .join(format!("data-{:016x}", rand::random::<u64>()))
        } else {
            node.tmp_path("get")
        }),
        // A get to disk writes through its directory's handle (`on_disk`).
        // Chunked data goes to the connection as it is decoded.
        ReturnType::Disk | ReturnType::None | ReturnType::Chunked => None,
    };
    // A result that only waits to be sent on this connection is sealed
    // under an in-memory key; persistent ones must survive a restart and
    // are sealed under the vault (`crate::vault`).
    let seal = direct.then(|| {
        if req.persistence == Persistence::Connection {
            FileSeal::ephemeral()
        } else {
            node.vault.new_file()
        }
    });
    let spec = GetSpec {
        uri: g.uri.clone(),
        max_size: g.max_size,
        out: out_path.clone(),
        seal: seal.clone(),
        ds_only: g.ds_only,
        ignore_ds: g.ignore_ds,
        retries: g.max_retries,
        write_client_cache: g.write_to_client_cache,
    };
    let stream = if g.return_type == ReturnType::Chunked {
        Some(cb.report.chunked_output(req))
    } else {
        (direct && matches!(req.scope, Scope::Connection(_)))
            .then(|| cb.report.direct_output(req, told))
    };
    match ops::get_to(node, spec, on_disk, stream, &|p| cb.progress(p)).await {
        Ok(done) => {
            let data = if direct && req.persistence != Persistence::Connection {
                out_path.clone()
            } else {
                None
            };
            (
                Outcome::GetOk {
                    mime: done.mime,
                    len: done.len,
                    data,
                },
                if direct && !done.streamed {
                    out_path.map(|p| (p, seal))
                } else {
                    None
                },
            )
        }
        Err(f) => {
            if direct {
                if let Some(p) = &out_path {
                    let _ = tokio::fs::remove_file(p).await;
                }
            }
            (get_err_outcome(f), None)
        }
    }
}

/// Where a put's (or a site file's) data comes from. A direct upload is
/// `offset`.. of the spooled payload; an empty direct file needs none; a
/// file from disk was opened when its access was checked (`on_disk`).
fn put_data(
    vault: &crate::vault::Vault,
    from: &UploadFrom,
    upload: Option<&Path>,
    offset: u64,
    on_disk: Option<DiskFile>,
) -> Result<PutData, Outcome> {
    Ok(match from {
        UploadFrom::Direct { data_length } => match upload {
            Some(path) => PutData::Spooled {
                path: path.to_path_buf(),
                offset,
                len: *data_length,
                vault: vault.clone(),
            },
            None if *data_length == 0 => PutData::Empty,
            None => {
                return Err(put_outcome(Err(ops::Failure::from(InsertError::Local(
                    "upload data lost".into(),
                )))))
            }
        },
        UploadFrom::Disk { .. } => match on_disk {
            Some(f) => PutData::Disk(f),
            None => {
                return Err(put_outcome(Err(ops::Failure::from(InsertError::Local(
                    "the file from disk was not opened".into(),
                )))))
            }
        },
        UploadFrom::Redirect { target_uri } => PutData::Redirect(target_uri.clone()),
    })
}

/// The outcome of a finished put, site or file.
fn put_outcome(out: Result<ops::PutDone, ops::Failure<InsertError>>) -> Outcome {
    match out {
        Ok(d) => Outcome::PutOk {
            uri: d.uri,
            in_network: d.in_network,
            push_error: None,
        },
        Err(f) => Outcome::PutErr {
            code: codes::put_failed(&f.error).code(),
            extra: Some(f.extra),
        },
    }
}

/// The outcome of a failed get.
fn get_err_outcome(f: ops::Failure<FetchError>) -> Outcome {
    Outcome::GetErr {
        code: codes::get_failed(&f.error).code(),
        redirect: f.redirect(),
        extra: Some(f.extra),
    }
}

/// The request a background push reports to.
fn push_ref(req: &Request) -> RequestRef {
    RequestRef {
        scope: req.scope.clone(),
        identifier: req.identifier.clone(),
        started_ms: req.started_ms,
    }
}

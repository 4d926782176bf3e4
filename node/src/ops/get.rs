//! A fetch (FCP `ClientGet`, every gateway fetch).

use super::blocks::LocalBlocks;
use super::common::{Failure, GetDone, GetSpec, ProgressFn, StreamOpen};
use super::usk;
use crate::node::Node;
use crate::requests::Progress;
use crate::sealed::FileSeal;
use crate::util::blocking;
use crate::util::dirfd::DiskOut;
use lichen_client::{BlockSource, FetchError};
use lichen_crypto::uri::KeyUri;
use lichen_crypto::{BlockKind, FreenetUri};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Run a ClientGet.
///
/// # Errors
/// A [`Failure`] ([`FetchError::PermanentRedirect`] with the new URI when a
/// newer USK edition is known).
pub async fn get(
    node: &Arc<Node>,
    spec: GetSpec,
    progress: ProgressFn<'_>,
) -> Result<GetDone, Failure<FetchError>> {
    get_streaming(node, spec, None, progress).await
}

/// [`get`], streaming the data to the writer `stream` gives (see
/// [`StreamOpen`]).
///
/// # Errors
/// As [`get`].
pub async fn get_streaming(
    node: &Arc<Node>,
    spec: GetSpec,
    stream: Option<StreamOpen>,
    progress: ProgressFn<'_>,
) -> Result<GetDone, Failure<FetchError>> {
    get_to(node, spec, None, stream, progress).await
}

/// [`get_streaming`], writing to `disk` (a file in a directory opened
/// by handle for FCP direct disk access) instead of `spec.out` when given:
/// `<name>.part` is created exclusively in that directory and renamed to
/// `<name>` at the end without replacing anything.
///
/// # Errors
/// As [`get`]; [`FetchError::Write`] when the output cannot be created or
/// something took its final name meanwhile.
pub(crate) async fn get_to(
    node: &Arc<Node>,
    spec: GetSpec,
    disk: Option<DiskOut>,
    stream: Option<StreamOpen>,
    progress: ProgressFn<'_>,
) -> Result<GetDone, Failure<FetchError>> {
    let uri = FreenetUri::parse(&spec.uri)
        .map_err(|e| Failure::new(FetchError::from(e.clone()), e.to_string()))?;
    let mut blocks = LocalBlocks::new(node.clone());
    blocks.ignore_ds = spec.ignore_ds;
    blocks.ds_only = spec.ds_only && !spec.ignore_ds;
    blocks.keep = spec.write_client_cache;
    // A CHK written by other software (e.g. a Freenet CHK) has a routing key
    // like any other: look for it, and only if a block is there say that
    // Lichen cannot decode it.
    if let KeyUri::Chk { routing_key, .. } = &uri.key {
        if let Err(e) = uri.key.chk_key() {
            return Err(match blocks.fetch(BlockKind::Chk, *routing_key).await {
                Ok(_) => Failure::new(
                    FetchError::InvalidUri(e.to_string().into()),
                    format!("a block exists under this key, but {e}"),
                ),
                Err(_) => Failure::new(FetchError::DataNotFound, "Data not found"),
            });
        }
    }
    let opts = lichen_client::FetchOptions {
        max_size: spec.max_size.unwrap_or(u64::MAX),
        usk_probes: usk::fetch_probes(&uri),
        ..lichen_client::FetchOptions::default()
    };
    let out = spec.out.clone();
    let part = out.as_ref().map(|p| {
        let mut s = p.clone().into_os_string();
        s.push(".part");
        PathBuf::from(s)
    });
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<lichen_client::Progress>();
    let streamed = Arc::new(AtomicBool::new(false));
    let target = match disk.clone() {
        Some(d) => Target::Disk(d),
        None => Target::Path(part.clone()),
    };
    let open = output(stream, target, spec.seal.clone(), streamed.clone());
    let job = blocking::spawn(move || async move {
        let progress_cb = move |p: lichen_client::Progress| {
            let _ = ptx.send(p);
        };
        lichen_client::fetch_to(&blocks, &uri, open, &opts, progress_cb)
            .await
            .map_err(Failure::from)
    });
    while let Some(p) = prx.recv().await {
        progress(Progress {
            total: p.total,
            required: p.needed,
            succeeded: p.done,
            failed: 0,
            finalized: true,
        });
    }
    let res = job.await.unwrap_or_else(|e| {
        Err(Failure::new(
            FetchError::Internal(e.to_string()),
            e.to_string(),
        ))
    });
    let streamed = streamed.load(Ordering::Relaxed);
    let r = match res {
        Ok(r) => r,
        Err(f) => {
            if let Some(p) = part {
                let _ = std::fs::remove_file(p);
            }
            if let Some(d) = &disk {
                d.discard();
            }
            return Err(f);
        }
    };
    if let (false, Some(d)) = (streamed, &disk) {
        d.finish().map_err(|e| {
            d.discard();
            let extra = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "Disk target exists, refusing to overwrite for security reasons".to_string()
            } else {
                format!("cannot write the output file: {e}")
            };
            Failure::new(FetchError::Write(e), extra)
        })?;
    }
    // A streamed document never touched the `.part` file.
    if let (false, Some(part), Some(out)) = (streamed, part, out) {
        std::fs::rename(&part, &out).map_err(|e| {
            let extra = format!("cannot write the output file: {e}");
            Failure::new(FetchError::Write(e), extra)
        })?;
    }
    Ok(GetDone {
        mime: r.mime.unwrap_or_else(|| "application/octet-stream".into()),
        len: r.size,
        streamed,
    })
}

/// Where a fetch writes when no stream takes the document.
enum Target {
    /// This `.part` file (`None`: nowhere).
    Path(Option<PathBuf>),
    /// `<name>.part` in a directory opened by handle.
    Disk(DiskOut),
}

/// The output of a fetch: the caller's stream if it takes this document
/// (setting `streamed`), else the `.part` file (sealed under `seal` when
/// given; renamed at the end), else nowhere.
fn output(
    stream: Option<StreamOpen>,
    target: Target,
    seal: Option<FileSeal>,
    streamed: Arc<AtomicBool>,
) -> impl FnOnce(&lichen_client::Found) -> std::io::Result<Box<dyn Write + Send>> {
    move |found: &lichen_client::Found| -> std::io::Result<Box<dyn Write + Send>> {
        let mime = found.mime.as_deref().unwrap_or("application/octet-stream");
        if let Some(w) = stream.and_then(|s| s(found.size, mime, found.local)) {
            streamed.store(true, Ordering::Relaxed);
            return Ok(w);
        }
        let created = match &target {
            Target::Path(Some(p)) => Some(std::fs::File::create(p)),
            Target::Disk(d) => Some(d.create_part()),
            Target::Path(None) => None,
        };
        match created {
            Some(f) => {
                let f = f.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot create the output file: {e}"))
                })?;
                let f = std::io::BufWriter::with_capacity(1 << 20, f);
                Ok(match &seal {
                    Some(s) => Box::new(s.writer(f)?),
                    None => Box::new(f),
                })
            }
            None => Ok(Box::new(std::io::sink())),
        }
    }
}

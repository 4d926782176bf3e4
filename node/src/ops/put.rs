//! A single-file insert (FCP `ClientPut`, the gateway's upload form), and
//! the room checks and push records every insert shares.

use super::blocks::{Deferred, LocalBlocks};
use super::common::{
    insert_join_failure, open_range, open_spooled, Failure, ProgressFn, PutData, PutDone, PutSpec,
    UriFn,
};
use super::usk;
use crate::node::Node;
use crate::requests::Progress;
use crate::requests::RequestRef;
use crate::util::blocking::{self, UploadStream};
use lichen_client::{BlockSink, InsertError, SinkError};
use lichen_crypto::uri::KeyUri;
use lichen_crypto::{BlockKind, FreenetUri};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Make the store durable before an insert is acknowledged.
async fn flush_store(node: &Arc<Node>) -> Result<(), Failure<InsertError>> {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| insert_join_failure(&e))?
        .map_err(|e| {
            Failure::from(InsertError::Local(format!(
                "the store could not be flushed: {e}"
            )))
        })
}

/// Blocks an insert of `len` bytes makes at most: data blocks, as many FEC
/// check blocks, and the metadata listing them (before compression, so an
/// upper bound).
#[must_use]
pub(crate) fn estimate_blocks(len: u64) -> u64 {
    let data = len.div_ceil(32 * 1024).max(1);
    if data == 1 {
        2
    } else {
        2 * data + (2 * data).div_ceil(256) + 4
    }
}

/// Client cache bytes an insert may leave unpushed: the budget less what
/// earlier inserts waiting to be pushed hold.
fn push_room(node: &Node) -> u64 {
    node.config
        .store
        .client_cache_bytes
        .saturating_sub(node.pushes.pending_bytes() + node.pushes.in_flight.load(Ordering::Relaxed))
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20))
}

/// The PutFailed of an insert that cannot be kept in the client cache
/// until it is pushed.
pub(super) fn too_big_for_cache(node: &Node, need: u64) -> Failure<InsertError> {
    let budget = node.config.store.client_cache_bytes;
    let pending = node.pushes.pending_bytes();
    let held = if pending > 0 {
        format!(
            " ({} of it hold earlier inserts waiting to be pushed)",
            mib(pending)
        )
    } else {
        String::new()
    };
    let why = format!(
            "this node has no peers, so an insert is kept only in its client cache until it can be pushed into the network, \
             and this one does not fit: it needs about {} (data and redundancy blocks), the client cache is {}{held}. \
             Raise client_cache_bytes in the [store] section of the node's config file (e.g. client_cache_bytes = \"8GiB\"), \
             or insert it once the node has peers",
            mib(need),
            mib(budget)
        );
    Failure::new(InsertError::TooBig(why.clone()), why)
}

/// Without peers every block of an insert must fit the client cache until
/// it is pushed: refuse one that cannot, before doing the work.
pub(super) fn check_room(
    node: &Node,
    len: u64,
    extra_blocks: u64,
) -> Result<(), Failure<InsertError>> {
    if node.network().is_some() {
        return Ok(());
    }
    let need = (estimate_blocks(len) + extra_blocks) * BlockKind::Chk.block_len() as u64;
    if need > push_room(node) {
        return Err(too_big_for_cache(node, need));
    }
    Ok(())
}

/// After an insert: make it durable and record what must still be pushed.
/// Returns whether everything reached the network.
pub(super) async fn finish_insert(
    node: &Arc<Node>,
    deferred: &Deferred,
    request: Option<RequestRef>,
) -> Result<bool, Failure<InsertError>> {
    flush_store(node).await?;
    let blocks = deferred.take();
    if blocks.is_empty() {
        return Ok(true);
    }
    tracing::info!(
        "insert stored in the local client cache; not yet in the network ({} block(s) to push once the node has peers)",
        blocks.len()
    );
    node.pushes.add(request, blocks).map_err(|e| {
        Failure::from(InsertError::Local(format!(
            "cannot record the insert for pushing into the network: {e}"
        )))
    })?;
    Ok(false)
}

/// Run a ClientPut. Returns the request URI.
///
/// # Errors
/// A [`Failure`].
pub async fn put(
    node: &Arc<Node>,
    spec: PutSpec,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<String, Failure<InsertError>> {
    put_with(node, spec, None, uri_generated, progress)
        .await
        .map(|d| d.uri)
}

/// Run a ClientPut for `request`. An insert that did not fully reach the
/// network is recorded for the push task (which marks `request` in the
/// network when done).
///
/// # Errors
/// A [`Failure`]; [`InsertError::TooBig`] when the node has no peers and
/// the insert does not fit its client cache.
pub(crate) async fn put_with(
    node: &Arc<Node>,
    spec: PutSpec,
    request: Option<RequestRef>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<PutDone, Failure<InsertError>> {
    let target = FreenetUri::parse(&spec.uri)
        .map_err(|e| Failure::new(InsertError::InvalidUri(e.to_string().into()), e.to_string()))?;
    if !spec.chk_only {
        match &spec.data {
            PutData::File { len, .. }
            | PutData::Spooled { len, .. }
            | PutData::Stream(UploadStream { len, .. }) => {
                check_room(node, *len, 0)?;
            }
            PutData::Disk(f) => check_room(node, f.len(), 0)?,
            PutData::Empty | PutData::Redirect(_) => {}
        }
    }
    let deferred = Arc::new(Deferred::new(node.clone()));
    let blocks = LocalBlocks::tracking(node.clone(), deferred.clone());
    let target = {
        let blocks = blocks.clone();
        blocking::run(move || async move { usk::insert_target(&blocks, target).await })
            .await
            .map_err(|e| insert_join_failure(&e))?
    };
    let opts = insert_options(&spec, target);
    let size = match &spec.data {
        PutData::File { len, .. }
        | PutData::Spooled { len, .. }
        | PutData::Stream(UploadStream { len, .. }) => *len,
        PutData::Disk(f) => f.len(),
        _ => 0,
    };
    let blocks_total = size.div_ceil(32 * 1024).max(1) * 2;
    progress(Progress {
        total: blocks_total,
        required: blocks_total,
        succeeded: 0,
        failed: 0,
        finalized: false,
    });
    let chk_only = spec.chk_only;
    let data = spec.data.clone();
    let result =
        blocking::run(move || async move { insert_data(&blocks, chk_only, data, &opts).await })
            .await
            .map_err(|e| insert_join_failure(&e))?;
    let result = match result {
        Err(_) if deferred.overflowed() => return Err(too_big_for_cache(node, deferred.bytes())),
        r => r?,
    };
    let uri = result.uri.to_string();
    uri_generated(uri.clone());
    let in_network = if chk_only {
        false
    } else {
        finish_insert(node, &deferred, request).await?
    };
    progress(Progress {
        total: result.blocks,
        required: result.blocks,
        succeeded: result.blocks,
        failed: 0,
        finalized: true,
    });
    Ok(PutDone { uri, in_network })
}

/// The client library's options for `spec` inserted at `target` (its USK
/// edition already chosen).
fn insert_options(spec: &PutSpec, mut target: FreenetUri) -> lichen_client::InsertOptions {
    let filename = spec
        .target_filename
        .clone()
        .filter(|f| !f.is_empty())
        .or_else(|| target.meta.first().cloned());
    if matches!(target.key, KeyUri::ChkInsert) {
        target.meta.clear();
    }
    lichen_client::InsertOptions {
        target,
        mime: spec.mime.clone(),
        compress: !spec.dont_compress,
        filename: if matches!(spec.data, PutData::Redirect(_)) {
            None
        } else {
            filename
        },
        ..lichen_client::InsertOptions::default()
    }
}

/// Insert `data` (on a blocking thread: the client library reads and
/// encodes synchronously).
async fn insert_data(
    blocks: &LocalBlocks,
    chk_only: bool,
    data: PutData,
    opts: &lichen_client::InsertOptions,
) -> Result<lichen_client::InsertResult, Failure<InsertError>> {
    match data {
        PutData::File { path, offset, len } => {
            let reader = open_range(&path, offset, len).map_err(|e| {
                let extra = format!("cannot read the upload: {e}");
                Failure::new(InsertError::Read(e), extra)
            })?;
            run_insert(blocks, chk_only, reader, opts).await
        }
        PutData::Spooled {
            path,
            offset,
            len,
            vault,
        } => {
            let reader = open_spooled(&vault, &path, offset, len).map_err(|e| {
                let extra = format!("cannot read the upload: {e}");
                Failure::new(InsertError::Read(e), extra)
            })?;
            run_insert(blocks, chk_only, reader, opts).await
        }
        PutData::Disk(f) => {
            let reader = f.reader().map_err(|e| {
                let extra = format!("cannot read the file: {e}");
                Failure::new(InsertError::Read(e), extra)
            })?;
            let reader = std::io::BufReader::with_capacity(1 << 20, reader);
            run_insert(blocks, chk_only, reader, opts).await
        }
        PutData::Stream(s) => {
            let reader = s.reader().ok_or_else(|| {
                Failure::from(InsertError::Local("the upload was already read".into()))
            })?;
            run_insert(blocks, chk_only, reader, opts).await
        }
        PutData::Empty => run_insert(blocks, chk_only, std::io::empty(), opts).await,
        PutData::Redirect(target) => insert_redirect(blocks, chk_only, target, opts).await,
    }
}

/// A redirect to `target` as the single block of the insert.
async fn insert_redirect(
    blocks: &LocalBlocks,
    chk_only: bool,
    target: String,
    opts: &lichen_client::InsertOptions,
) -> Result<lichen_client::InsertResult, Failure<InsertError>> {
    FreenetUri::parse(&target).map_err(|e| {
        Failure::new(
            InsertError::InvalidUri(e.to_string().into()),
            format!("TargetURI: {e}"),
        )
    })?;
    let meta = lichen_client::Metadata::Redirect(lichen_client::metadata::Redirect {
        target,
        mime: opts.mime.clone(),
        size: None,
        sha256: None,
    });
    insert_metadata(blocks, chk_only, &meta.to_bytes(), &opts.target)
        .await
        .map(|uri| lichen_client::InsertResult {
            uri,
            insert_uri: None,
            size: 0,
            compressed_size: 0,
            codec: lichen_crypto::Codec::None,
            sha256: [0; 32],
            mime: opts.mime.clone(),
            blocks: 1,
        })
}

/// Insert a small metadata document (a redirect) as the single block of
/// `target`.
async fn insert_metadata(
    blocks: &LocalBlocks,
    chk_only: bool,
    bytes: &[u8],
    target: &FreenetUri,
) -> Result<FreenetUri, Failure<InsertError>> {
    use lichen_crypto::{chk, DataFlags};
    let flags = DataFlags {
        metadata: true,
        codec: lichen_crypto::Codec::None,
    };
    let too_big = |e: lichen_crypto::BlockError| {
        Failure::new(InsertError::Internal(e.to_string()), e.to_string())
    };
    let (kind, key, block, uri) = if let Some((private, docname)) = target.key.ssk_insert_target() {
        let (rk, block) = private.encode(&docname, bytes, flags).map_err(too_big)?;
        (BlockKind::Ssk, rk, block, target.to_request())
    } else if matches!(target.key, KeyUri::ChkInsert) {
        let (k, block) = chk::encode(bytes, flags).map_err(too_big)?;
        (BlockKind::Chk, k.routing_key, block, FreenetUri::from(&k))
    } else {
        let why = "a redirect can be inserted under CHK@, an SSK/USK insert URI or a KSK";
        return Err(Failure::new(
            InsertError::InvalidUri(String::from(why).into()),
            why,
        ));
    };
    if !chk_only {
        blocks.put(kind, key, block).await.map_err(|e| match e {
            SinkError::Collision => Failure::new(
                InsertError::Collision,
                "a different document already exists under this key",
            ),
            other => Failure::new(InsertError::Internal(other.to_string()), other.to_string()),
        })?;
    }
    Ok(uri)
}

async fn run_insert<R: std::io::Read + Send>(
    blocks: &LocalBlocks,
    chk_only: bool,
    reader: R,
    opts: &lichen_client::InsertOptions,
) -> Result<lichen_client::InsertResult, Failure<InsertError>> {
    let r = if chk_only {
        lichen_client::insert(&lichen_client::NullSink, reader, opts).await
    } else {
        lichen_client::insert(blocks, reader, opts).await
    };
    r.map_err(Failure::from)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_covers_data_and_check_blocks() {
        assert_eq!(estimate_blocks(0), 2);
        assert_eq!(estimate_blocks(100), 2);
        // 1 MiB: 32 data + 32 check + metadata.
        let e = estimate_blocks(1 << 20);
        assert!((64..80).contains(&e), "{e}");
    }
}

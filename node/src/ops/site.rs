//! A site insert (FCP `ClientPutComplexDir` / `ClientPutDiskDir`) and the
//! folder scan of `ClientPutDiskDir`.

use super::blocks::{Deferred, LocalBlocks};
use super::common::{
    insert_join_failure, open_range, open_spooled, Failure, ProgressFn, PutData, PutDone, SiteFile,
    UriFn,
};
use super::put::{check_room, finish_insert, too_big_for_cache};
use super::usk;
use crate::node::Node;
use crate::requests::Progress;
use crate::requests::RequestRef;
use crate::util::blocking;
use crate::util::dirfd::{self, DirHandle, DiskFile};
use lichen_client::InsertError;
use lichen_crypto::uri::KeyUri;
use lichen_crypto::FreenetUri;
use std::path::PathBuf;
use std::sync::Arc;

/// Walk a directory for ClientPutDiskDir through its handle
/// ([`crate::util::dirfd::scan`]: the rules of
/// [`lichen_client::folder::scan`], the scan `lichen putsite` uses:
/// regular files, hidden ones only if asked, no symbolic links), each file
/// labelled by its guessed MIME type. Each file is opened through the
/// handle again when read (no link, a regular file of the scanned length).
///
/// # Errors
/// A message naming the unreadable path.
pub(crate) async fn scan_dir(
    dir: Arc<DirHandle>,
    include_hidden: bool,
) -> Result<Vec<SiteFile>, String> {
    let scan_dir = dir.clone();
    let files = tokio::task::spawn_blocking(move || dirfd::scan(&scan_dir, include_hidden))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(files
        .into_iter()
        .map(|(name, len)| SiteFile {
            mime: lichen_client::folder::guess_mime(&name).map(str::to_owned),
            data: PutData::Disk(DiskFile::Beneath {
                dir: dir.clone(),
                rel: PathBuf::from(&name),
                len,
            }),
            name,
        })
        .collect())
}

/// Insert a site (ClientPutComplexDir / ClientPutDiskDir). Under a USK the
/// next edition is inserted and unchanged files of the previous edition
/// are reused.
///
/// # Errors
/// A [`Failure`].
pub async fn put_site(
    node: &Arc<Node>,
    uri: &str,
    files: Vec<SiteFile>,
    default_name: Option<String>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<String, Failure<InsertError>> {
    put_site_with(
        node,
        uri,
        files,
        default_name,
        None,
        uri_generated,
        progress,
    )
    .await
    .map(|d| d.uri)
}

/// [`put_site`] for `request`, recording what did not reach the network
/// for the push task (as [`put_with`]).
///
/// # Errors
/// A [`Failure`].
pub(crate) async fn put_site_with(
    node: &Arc<Node>,
    uri: &str,
    files: Vec<SiteFile>,
    default_name: Option<String>,
    request: Option<RequestRef>,
    uri_generated: UriFn<'_>,
    progress: ProgressFn<'_>,
) -> Result<PutDone, Failure<InsertError>> {
    let target = FreenetUri::parse(uri)
        .map_err(|e| Failure::new(InsertError::InvalidUri(e.to_string().into()), e.to_string()))?;
    let total: u64 = files
        .iter()
        .map(|f| match &f.data {
            PutData::File { len, .. } | PutData::Spooled { len, .. } => *len,
            PutData::Disk(f) => f.len(),
            _ => 0,
        })
        .sum();
    check_room(node, total, 2 * files.len() as u64)?;
    let deferred = Arc::new(Deferred::new(node.clone()));
    let blocks = LocalBlocks::tracking(node.clone(), deferred.clone());
    let (target, previous) = {
        let blocks = blocks.clone();
        blocking::run(move || async move { target_and_previous(&blocks, target).await })
            .await
            .map_err(|e| insert_join_failure(&e))?
    };
    let site_files = files
        .into_iter()
        .map(site_file)
        .collect::<Result<Vec<_>, _>>()?;
    let n = u64::try_from(site_files.len()).unwrap_or(u64::MAX);
    progress(Progress {
        total: n,
        required: n,
        succeeded: 0,
        failed: 0,
        finalized: true,
    });
    let opts = lichen_client::SiteOptions {
        target,
        default_name,
        previous,
        ..lichen_client::SiteOptions::default()
    };
    let r = blocking::run(move || async move {
        lichen_client::insert_site(&blocks, site_files, &opts).await
    })
    .await
    .map_err(|e| insert_join_failure(&e))?;
    let r = match r {
        Err(_) if deferred.overflowed() => return Err(too_big_for_cache(node, deferred.bytes())),
        r => r.map_err(Failure::from)?,
    };
    let in_network = finish_insert(node, &deferred, request).await?;
    let uri = r.uri.to_string();
    uri_generated(uri.clone());
    progress(Progress {
        total: n,
        required: n,
        succeeded: n,
        failed: 0,
        finalized: true,
    });
    Ok(PutDone { uri, in_network })
}

/// The edition a site insert goes to, and under a USK the manifest of the
/// edition before it (whose unchanged files are reused).
async fn target_and_previous(
    blocks: &LocalBlocks,
    target: FreenetUri,
) -> (FreenetUri, Option<lichen_client::Manifest>) {
    let target = usk::insert_target(blocks, target).await;
    let previous = match &target.key {
        KeyUri::Usk { edition, .. } if *edition > 0 => {
            let prev = target.to_request().with_edition(edition - 1);
            match lichen_client::fetch_metadata(
                blocks,
                &prev,
                &lichen_client::FetchOptions::default(),
            )
            .await
            {
                Ok(Some(lichen_client::Metadata::Manifest(m))) => Some(m),
                _ => None,
            }
        }
        _ => None,
    };
    (target, previous)
}

/// One file of a site as the client library takes it.
fn site_file(f: SiteFile) -> Result<lichen_client::SiteFile, Failure<InsertError>> {
    let data = match f.data {
        PutData::File { path, offset, len } => lichen_client::SiteData::Reader {
            reader: Box::new(open_range(&path, offset, len).map_err(|e| {
                let extra = format!("cannot read {}: {e}", f.name);
                Failure::new(InsertError::Read(e), extra)
            })?),
            sha256: None,
        },
        PutData::Spooled {
            path,
            offset,
            len,
            vault,
        } => lichen_client::SiteData::Reader {
            reader: Box::new(open_spooled(&vault, &path, offset, len).map_err(|e| {
                let extra = format!("cannot read {}: {e}", f.name);
                Failure::new(InsertError::Read(e), extra)
            })?),
            sha256: None,
        },
        PutData::Disk(file) => lichen_client::SiteData::Reader {
            reader: Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                file.reader().map_err(|e| {
                    let extra = format!("cannot read {}: {e}", f.name);
                    Failure::new(InsertError::Read(e), extra)
                })?,
            )),
            sha256: None,
        },
        PutData::Stream(s) => lichen_client::SiteData::Reader {
            reader: Box::new(s.reader().ok_or_else(|| {
                Failure::new(
                    InsertError::Local("an upload was already read".into()),
                    format!("the upload of {} was already read", f.name),
                )
            })?),
            sha256: None,
        },
        PutData::Empty => lichen_client::SiteData::Bytes(Vec::new()),
        PutData::Redirect(t) => {
            lichen_client::SiteData::Redirect(Box::new(FreenetUri::parse(&t).map_err(|e| {
                Failure::new(
                    InsertError::InvalidUri(e.to_string().into()),
                    format!("{}: {e}", f.name),
                )
            })?))
        }
    };
    Ok(lichen_client::SiteFile {
        path: f.name,
        mime: f.mime,
        data,
    })
}

//! Fetch: follow redirects, metadata levels and manifest paths from a URI
//! to a document, and stream it to a writer.
//!
//! ```text
//! key ──fetch+verify+decrypt──► data?  ──► write (one block)
//!                              metadata ─► Redirect   → next key (meta-strings appended)
//!                                          Inline     → write
//!                                          Manifest   → entry for the next meta-string
//!                                                       (or the default document)
//!                                          Splitfile  → metadata=true: fetch, parse, loop
//!                                                       else: segments → writer
//! ```
//!
//! Every step counts against [`FetchOptions::max_depth`], so cycles and
//! hostile chains end with [`FetchError::TooMuchRecursion`].
//!
//! Splitfile: segments are opened in a random order across the whole file,
//! at most [`FetchOptions::segments_ahead`] held in memory (the next one
//! to write always among them); each request goes to a random open
//! segment, in a random permutation of its blocks, after a random pause
//! (`crate::pace`); at most [`FetchOptions::block_concurrency`] blocks are
//! in flight and no more are requested than a segment still needs (data
//! blocks first, check blocks to replace missing ones and in place of
//! blocks whose part of the key space the source answers slowly: see
//! `Speed`). Segments are written in order.

use crate::error::FetchError;
use crate::io::{BlockSource, SourceError};
use crate::metadata::{
    codec_of, Inline, Manifest, Metadata, Redirect, Segment, Splitfile, MAX_METADATA_LEN,
};
use crate::pace::Pace;
use crate::usk;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lichen_crypto::chk;
use lichen_crypto::{BlockError, BlockKind, Codec, DataFlags, FreenetUri, KeyUri, RoutingKey};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits and knobs of a fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Largest document accepted (FCP `MaxSize`); checked against the
    /// metadata before any data block is fetched.
    pub max_size: u64,
    /// Blocks in flight at once, over all segments.
    pub block_concurrency: usize,
    /// Segments held in memory at once, being fetched or done and waiting
    /// for their turn to be written (each holds up to 4 MiB). A segment
    /// done early whose blocks the source keeps locally
    /// ([`BlockSource::has_local`]) is read back later instead of held.
    pub segments_ahead: usize,
    /// Most metadata steps (redirects, levels, manifest lookups).
    pub max_depth: usize,
    /// For USK URIs: probes spent looking for a newer edition (0: fetch
    /// the edition asked for as is). A newer edition found gives
    /// [`FetchError::PermanentRedirect`].
    pub usk_probes: u32,
    /// Seed of the order of the requests and of the pauses before them:
    /// segments opened in a random order, each request to a random open
    /// segment, each segment's blocks in a random permutation (data
    /// blocks, then check blocks), so that no neighbour receives its arc
    /// of the file in file order (the default draws a fresh seed).
    pub order_seed: u64,
    /// Longest random pause ([`BlockSource::pause`]) before a request for
    /// a block not held locally: each pause is uniform below it, so no
    /// request starts the moment a reply frees its slot.
    pub jitter: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_size: u64::MAX,
            block_concurrency: 96,
            segments_ahead: 4,
            max_depth: 32,
            usk_probes: 0,
            order_seed: rand::random(),
            jitter: crate::REQUEST_JITTER,
        }
    }
}

/// What a fetch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// MIME type from the metadata, else guessed from a file name.
    pub mime: Option<String>,
    /// Bytes written.
    pub size: u64,
}

/// Progress of a splitfile fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Blocks fetched and verified.
    pub done: u64,
    /// Blocks needed to rebuild the document (its data block count).
    pub needed: u64,
    /// Blocks in the splitfile (data + check).
    pub total: u64,
}

/// The document a fetch has reached, told to [`fetch_to`]'s `open` before
/// its first byte is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its size in bytes (as the metadata says; checked at the end).
    pub size: u64,
    /// MIME type from the metadata, else guessed from a file name.
    pub mime: Option<String>,
    /// Every block still needed is held locally ([`BlockSource::has_local`])
    /// or already in memory: the rest of the fetch waits on no network, so
    /// it will most likely succeed (a caller may start sending the data
    /// before the fetch ends).
    pub local: bool,
}

/// Fetch the document `uri` names and write it to `writer`.
///
/// `progress` is called as blocks of the (final) splitfile arrive.
///
/// # Errors
/// [`FetchError`]; its [`crate::HasKind::kind`] says who is at fault. On error
/// part of the document may already have been written.
pub async fn fetch<S, W, P>(
    source: &S,
    uri: &FreenetUri,
    writer: W,
    opts: &FetchOptions,
    progress: P,
) -> Result<FetchResult, FetchError>
where
    S: BlockSource,
    W: Write + Send,
    P: FnMut(Progress) + Send,
{
    fetch_to(source, uri, move |_| Ok(writer), opts, progress).await
}

/// As [`fetch`], with the writer made by `open` once the document is found
/// (its size, type and whether the rest is local are known) and before any
/// byte of it is written. `open` is called at most once; an error from it
/// ends the fetch as [`FetchError::Write`].
///
/// # Errors
/// As [`fetch`].
pub async fn fetch_to<S, W, F, P>(
    source: &S,
    uri: &FreenetUri,
    open: F,
    opts: &FetchOptions,
    mut progress: P,
) -> Result<FetchResult, FetchError>
where
    S: BlockSource,
    W: Write + Send,
    F: FnOnce(&Found) -> std::io::Result<W> + Send,
    P: FnMut(Progress) + Send,
{
    let mut open = Some(open);
    let mut open_writer = |found: Found| -> Result<(W, Found), FetchError> {
        let f = open
            .take()
            .ok_or_else(|| FetchError::Internal("writer opened twice".into()))?;
        Ok((f(&found)?, found))
    };
    let mut meta: VecDeque<String> = uri.meta.iter().cloned().collect();
    let mut mime: Option<String> = None;
    let mut item = Item::Key(check_usk(source, uri, opts).await?);
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > opts.max_depth {
            return Err(FetchError::TooMuchRecursion {
                limit: opts.max_depth,
            });
        }
        item = match item {
            Item::Key(key) => {
                let (flags, data) = fetch_single(source, &key).await?;
                if flags.metadata {
                    let bytes = decompress(flags.codec, data, MAX_METADATA_LEN as u64, true)?;
                    Item::Meta(Metadata::from_bytes(&bytes)?)
                } else {
                    let name = file_name(&mut meta)?;
                    let data = decompress(flags.codec, data, opts.max_size, false)?;
                    let mime = mime.or_else(|| guess(name.as_deref()));
                    return write_whole(&mut open_writer, &data, mime);
                }
            }
            Item::Meta(m) => {
                if mime.is_none() {
                    mime = m.mime().map(str::to_owned);
                }
                match m {
                    Metadata::Redirect(r) => {
                        Item::Key(follow_redirect(&r, &mut meta, opts.max_size)?)
                    }
                    Metadata::Inline(i) => {
                        let name = file_name(&mut meta)?;
                        let data = inline_data(i, opts.max_size)?;
                        let mime = mime.or_else(|| guess(name.as_deref()));
                        return write_whole(&mut open_writer, &data, mime);
                    }
                    Metadata::Splitfile(sf) if sf.metadata => {
                        if sf.size > MAX_METADATA_LEN as u64 {
                            return Err(FetchError::TooBigMetadata {
                                size: sf.size,
                                max: MAX_METADATA_LEN as u64,
                            });
                        }
                        let mut buf = Vec::new();
                        fetch_splitfile(source, &sf, &mut buf, opts, &mut |_| {}).await?;
                        Item::Meta(Metadata::from_bytes(&buf)?)
                    }
                    Metadata::Splitfile(sf) => {
                        let name = file_name(&mut meta)?;
                        check_size(Some(sf.size), opts.max_size)?;
                        let local = all_local(source, &sf);
                        let (mut writer, found) = open_writer(Found {
                            size: sf.size,
                            mime: mime.or_else(|| guess(name.as_deref())),
                            local,
                        })?;
                        fetch_splitfile(source, &sf, &mut writer, opts, &mut progress).await?;
                        writer.flush()?;
                        return Ok(FetchResult {
                            mime: found.mime,
                            size: found.size,
                        });
                    }
                    Metadata::Manifest(man) => {
                        let entry = manifest_entry(man, &mut meta)?;
                        // The directory's type does not apply to its entries.
                        mime = None;
                        Item::Meta(entry)
                    }
                }
            }
        };
    }
}

enum Item {
    Key(KeyUri),
    Meta(Metadata),
}

/// The end of a fetch whose document is whole in memory: open the writer
/// and write it all.
fn write_whole<W: Write>(
    open_writer: impl FnOnce(Found) -> Result<(W, Found), FetchError>,
    data: &[u8],
    mime: Option<String>,
) -> Result<FetchResult, FetchError> {
    let (mut writer, found) = open_writer(Found {
        size: data.len() as u64,
        mime,
        local: true,
    })?;
    writer.write_all(data)?;
    writer.flush()?;
    Ok(FetchResult {
        mime: found.mime,
        size: found.size,
    })
}

/// A redirect's target key; the target's own path components go before
/// those still in `meta`.
fn follow_redirect(
    r: &Redirect,
    meta: &mut VecDeque<String>,
    max_size: u64,
) -> Result<KeyUri, FetchError> {
    check_size(r.size, max_size)?;
    let target = FreenetUri::parse(&r.target).map_err(|e| {
        FetchError::InvalidMetadata(crate::MetadataError::Invalid(format!(
            "redirect target: {e}"
        )))
    })?;
    for m in target.meta.into_iter().rev() {
        meta.push_front(m);
    }
    Ok(target.key)
}

/// Inline data, decompressed and checked against its size and hash.
fn inline_data(i: Inline, max_size: u64) -> Result<Vec<u8>, FetchError> {
    check_size(Some(i.size), max_size)?;
    let data = decompress(codec_of(i.codec)?, i.data, i.size, false)?;
    if data.len() as u64 != i.size {
        return Err(FetchError::SplitfileDecode(
            "inline data has the wrong size".into(),
        ));
    }
    if let Some(h) = i.sha256 {
        if lichen_crypto::sha256(&data) != h.0 {
            return Err(FetchError::HashMismatch);
        }
    }
    Ok(data)
}

/// Whether every data block of `sf` is in the local store.
fn all_local<S: BlockSource>(source: &S, sf: &Splitfile) -> bool {
    sf.segments.iter().all(|seg| {
        (0..usize::from(seg.data)).all(|i| {
            seg.key(i)
                .is_some_and(|k| source.has_local(BlockKind::Chk, &k.routing_key))
        })
    })
}

/// The entry of `man` the next path component names (the default entry
/// when none is left).
fn manifest_entry(mut man: Manifest, meta: &mut VecDeque<String>) -> Result<Metadata, FetchError> {
    let name = match meta.pop_front() {
        Some(n) => n,
        None => man
            .default
            .clone()
            .ok_or(FetchError::NotEnoughPathComponents)?,
    };
    man.entries
        .remove(&name)
        .ok_or_else(|| FetchError::NotInManifest(name.into()))
}

/// Follow the URI's redirects down to the first metadata document that is
/// not a redirect (e.g. a site's manifest, to pass to
/// [`crate::insert_site`] as the previous edition). Returns `None` if the
/// URI holds plain data.
///
/// # Errors
/// As [`fetch`].
pub async fn fetch_metadata<S: BlockSource>(
    source: &S,
    uri: &FreenetUri,
    opts: &FetchOptions,
) -> Result<Option<Metadata>, FetchError> {
    let mut key = uri.key.clone();
    for _ in 0..opts.max_depth {
        let (flags, data) = fetch_single(source, &key).await?;
        if !flags.metadata {
            return Ok(None);
        }
        let bytes = decompress(flags.codec, data, MAX_METADATA_LEN as u64, true)?;
        let mut m = Metadata::from_bytes(&bytes)?;
        for _ in 0..opts.max_depth {
            match m {
                Metadata::Splitfile(sf) if sf.metadata => {
                    let mut buf = Vec::new();
                    fetch_splitfile(source, &sf, &mut buf, opts, &mut |_| {}).await?;
                    m = Metadata::from_bytes(&buf)?;
                }
                other => {
                    m = other;
                    break;
                }
            }
        }
        match m {
            Metadata::Redirect(r) => key = FreenetUri::parse(&r.target)?.key,
            other => return Ok(Some(other)),
        }
    }
    Err(FetchError::TooMuchRecursion {
        limit: opts.max_depth,
    })
}

async fn check_usk<S: BlockSource>(
    source: &S,
    uri: &FreenetUri,
    opts: &FetchOptions,
) -> Result<KeyUri, FetchError> {
    let KeyUri::Usk { key, site, edition } = &uri.key else {
        return Ok(uri.key.clone());
    };
    if opts.usk_probes == 0 && *edition >= 0 {
        return Ok(uri.key.clone());
    }
    let from = edition.unsigned_abs();
    let probes = opts.usk_probes.max(1);
    let latest = usk::find_latest_edition(source, &key.public(), site, from, probes).await?;
    match latest {
        Some(l) if *edition < 0 || l > from => Err(FetchError::PermanentRedirect {
            new_uri: Box::new(
                uri.to_request()
                    .with_edition(i64::try_from(l).unwrap_or(i64::MAX)),
            ),
        }),
        Some(_) => Ok(uri.key.clone()),
        None if *edition < 0 => Err(FetchError::DataNotFound),
        None => Ok(uri.key.clone()),
    }
}

/// Fetch, verify and decrypt the one block a key names.
pub(crate) async fn fetch_single<S: BlockSource>(
    source: &S,
    key: &KeyUri,
) -> Result<(DataFlags, Vec<u8>), FetchError> {
    let decode_err = |e: BlockError| match e {
        BlockError::WrongLength { .. }
        | BlockError::HashMismatch
        | BlockError::WrongPublicKey
        | BlockError::BadSignature => FetchError::DataNotFound,
        e => FetchError::BlockDecode(e),
    };
    match key {
        KeyUri::Chk { .. } => {
            let k = key
                .chk_key()
                .map_err(|e| FetchError::InvalidUri(e.to_string().into()))?;
            let block = source.fetch(BlockKind::Chk, k.routing_key).await?;
            let data = chk::decode(&k, &block).map_err(decode_err)?;
            Ok((k.flags, data))
        }
        KeyUri::Ssk { .. } | KeyUri::Ksk { .. } | KeyUri::Usk { .. } => {
            let (pk, docname) = key.ssk_target().ok_or_else(|| {
                FetchError::InvalidUri(String::from("not a fetchable key").into())
            })?;
            let block = source
                .fetch(BlockKind::Ssk, pk.routing_key(&docname))
                .await?;
            pk.decode(&docname, &block).map_err(decode_err)
        }
        KeyUri::ChkInsert | KeyUri::SskInsertNew => Err(FetchError::InvalidUri(
            String::from("an insert-only URI (CHK@ or SSK@) cannot be fetched").into(),
        )),
    }
}

fn check_size(size: Option<u64>, max: u64) -> Result<(), FetchError> {
    match size {
        Some(s) if s > max => Err(FetchError::TooBig { size: s, max }),
        _ => Ok(()),
    }
}

/// A file reached: at most one meta-string may remain (a file name).
fn file_name(meta: &mut VecDeque<String>) -> Result<Option<String>, FetchError> {
    match meta.len() {
        0 => Ok(None),
        1 => Ok(meta.pop_front()),
        _ => Err(FetchError::TooManyPathComponents(
            meta.drain(..).collect::<Vec<_>>().into(),
        )),
    }
}

fn guess(name: Option<&str>) -> Option<String> {
    name.and_then(crate::folder::guess_mime).map(str::to_owned)
}

/// Decompress at most `limit` bytes.
fn decompress(
    codec: Codec,
    data: Vec<u8>,
    limit: u64,
    metadata: bool,
) -> Result<Vec<u8>, FetchError> {
    let too_big = |size: u64| {
        if metadata {
            FetchError::TooBigMetadata { size, max: limit }
        } else {
            FetchError::TooBig { size, max: limit }
        }
    };
    match codec {
        Codec::None => {
            if data.len() as u64 > limit {
                return Err(too_big(data.len() as u64));
            }
            Ok(data)
        }
        Codec::Zstd => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(&data[..])
                .and_then(|d| d.take(limit.saturating_add(1)).read_to_end(&mut out))
                .map_err(|e| FetchError::SplitfileDecode(format!("zstd: {e}")))?;
            if out.len() as u64 > limit {
                return Err(too_big(out.len() as u64));
            }
            Ok(out)
        }
    }
}

/// Progress shared by the concurrently fetched segments.
struct Shared<'p, P> {
    cb: Mutex<&'p mut P>,
    done: AtomicU64,
    needed: u64,
    total: u64,
}

impl<P: FnMut(Progress)> Shared<'_, P> {
    fn report(&self, done: u64) {
        if let Ok(mut cb) = self.cb.lock() {
            (cb)(Progress {
                done,
                needed: self.needed,
                total: self.total,
            });
        }
    }
    fn block_done(&self) {
        let d = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.report(d);
    }
}

/// Where reassembled bytes go: decompress, bound, hash, write.
struct Out<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
    over: bool,
    inner_err: Option<std::io::Error>,
}

impl<W: Write> Write for Out<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.written + b.len() as u64 > self.limit {
            self.over = true;
            return Err(std::io::Error::other("longer than declared"));
        }
        if let Err(e) = self.inner.write_all(b) {
            let ret = std::io::Error::new(e.kind(), e.to_string());
            self.inner_err = Some(e);
            return Err(ret);
        }
        self.hasher.update(b);
        self.written += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Stream<W: Write> {
    Plain(Out<W>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Out<W>>>),
}

impl<W: Write + Send> Stream<W> {
    fn out(&mut self) -> &mut Out<W> {
        match self {
            Stream::Plain(o) => o,
            Stream::Zstd(d) => d.get_mut(),
        }
    }

    fn map_err(&mut self, e: std::io::Error) -> FetchError {
        let out = self.out();
        if let Some(e) = out.inner_err.take() {
            FetchError::Write(e)
        } else if out.over {
            FetchError::SplitfileDecode("document is longer than its declared size".into())
        } else {
            FetchError::SplitfileDecode(format!("decompression failed: {e}"))
        }
    }

    fn write(&mut self, b: &[u8]) -> Result<(), FetchError> {
        let r = match self {
            Stream::Plain(o) => o.write_all(b),
            Stream::Zstd(d) => d.write_all(b),
        };
        r.map_err(|e| self.map_err(e))
    }

    /// Write a segment's blocks. Plain documents hash and write at once
    /// (two rayon tasks: the SHA-256 need not wait for the writer).
    fn write_all_parts(&mut self, parts: &[&[u8]]) -> Result<(), FetchError> {
        let Stream::Plain(out) = self else {
            for p in parts {
                self.write(p)?;
            }
            return Ok(());
        };
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if out.written + len > out.limit {
            out.over = true;
            return Err(self.map_err(std::io::Error::other("longer than declared")));
        }
        let Out { inner, hasher, .. } = out;
        let (written, ()) = rayon::join(
            || write_all_vectored(inner, parts),
            || parts.iter().for_each(|p| hasher.update(p)),
        );
        if let Err(e) = written {
            out.inner_err = Some(e);
            return Err(self.map_err(std::io::Error::other("write failed")));
        }
        out.written += len;
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, [u8; 32]), FetchError> {
        if let Stream::Zstd(d) = &mut self {
            if let Err(e) = d.flush() {
                return Err(self.map_err(e));
            }
        }
        let out = match self {
            Stream::Plain(o) => o,
            Stream::Zstd(d) => d.into_inner(),
        };
        Ok((out.written, out.hasher.finalize().into()))
    }
}

/// Write every part, in as few calls as the writer allows (a `BufWriter`
/// hands a segment to the file in one `writev` instead of copying it).
fn write_all_vectored<W: Write>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut bufs = &mut slices[..];
    std::io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fetch a splitfile's segments and write the document to `writer`.
///
/// Segments are opened in a random order across the file (see
/// [`Pace::next_segment`]), at most [`FetchOptions::segments_ahead`] held
/// in memory at once; a segment that completes before its turn is held,
/// or, when the source keeps every one of its blocks locally, dropped and
/// read back from the source when its turn comes. Requests go to a random
/// open segment each, at most [`FetchOptions::block_concurrency`] in
/// flight, each after a random pause (none for a block held locally).
pub(crate) async fn fetch_splitfile<S, W, P>(
    source: &S,
    sf: &Splitfile,
    writer: W,
    opts: &FetchOptions,
    progress: &mut P,
) -> Result<(), FetchError>
where
    S: BlockSource,
    W: Write + Send,
    P: FnMut(Progress) + Send,
{
    sf.validate()?;
    let (needed, total) = sf.block_counts();
    let shared = Shared {
        cb: Mutex::new(progress),
        done: AtomicU64::new(0),
        needed,
        total,
    };
    shared.report(0);
    let out = Out {
        inner: writer,
        hasher: Sha256::new(),
        written: 0,
        limit: sf.size,
        over: false,
        inner_err: None,
    };
    let mut stream = match codec_of(sf.codec)? {
        Codec::None => Stream::Plain(out),
        Codec::Zstd => Stream::Zstd(Box::new(
            zstd::stream::write::Decoder::new(out)
                .map_err(|e| FetchError::Internal(e.to_string()))?,
        )),
    };
    let mut remaining = sf.compressed_size;
    let mut write = |blocks: Vec<Vec<u8>>| -> Result<(), FetchError> {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(blocks.len());
        for b in &blocks {
            let take = remaining.min(b.len() as u64);
            // take ≤ b.len(), so the cast is lossless.
            parts.push(&b[..take as usize]);
            remaining -= take;
        }
        stream.write_all_parts(&parts)
    };
    Plan::new(source, sf, opts, &shared).run(&mut write).await?;
    let (written, hash) = stream.finish()?;
    if written != sf.size {
        return Err(FetchError::SplitfileDecode(format!(
            "reassembled {written} bytes, metadata says {}",
            sf.size
        )));
    }
    if hash != sf.sha256.0 {
        return Err(FetchError::HashMismatch);
    }
    Ok(())
}

/// A segment done before its turn to be written.
enum Done {
    /// Its data blocks, in memory, and the routing keys of the blocks it
    /// was rebuilt from (parked once the source holds them all: a block
    /// just fetched may reach the source's local store a little later),
    /// of which the first so many are known to be held.
    Held(Vec<Vec<u8>>, Vec<RoutingKey>, usize),
    /// Every block it used is held by the source: read back when its turn
    /// comes, holding no memory meanwhile.
    Parked,
}

/// The segments of one splitfile fetch: which are open, done, written,
/// and the block requests in flight.
struct Plan<'a, S, P> {
    source: &'a S,
    sf: &'a Splitfile,
    shared: &'a Shared<'a, P>,
    pace: Pace,
    max_held: usize,
    limit: usize,
    opened: Vec<bool>,
    /// Segments whose blocks progress has counted (a parked segment read
    /// back is not counted again).
    counted: Vec<bool>,
    open: Vec<SegFetch>,
    done: BTreeMap<usize, Done>,
    next_write: usize,
    /// How fast the source answers keys in each part of the key space.
    speed: Speed,
}

/// A block request's answer: segment, block, result, and how long the
/// source took when the block was not held locally (`None` when it was).
type Answer = (usize, usize, Result<Vec<u8>, SourceError>, Option<Duration>);

impl<'a, S: BlockSource, P: FnMut(Progress) + Send> Plan<'a, S, P> {
    fn new(
        source: &'a S,
        sf: &'a Splitfile,
        opts: &FetchOptions,
        shared: &'a Shared<'a, P>,
    ) -> Self {
        Plan {
            source,
            sf,
            shared,
            pace: Pace::new(opts.order_seed, opts.jitter),
            max_held: opts.segments_ahead.max(1),
            limit: opts.block_concurrency.max(1),
            opened: vec![false; sf.segments.len()],
            counted: vec![false; sf.segments.len()],
            open: Vec::new(),
            done: BTreeMap::new(),
            next_write: 0,
            speed: Speed::new(),
        }
    }

    /// Segments in memory: being fetched, and done and held.
    fn held(&self) -> (usize, usize) {
        let done = self
            .done
            .values()
            .filter(|d| matches!(d, Done::Held(..)))
            .count();
        (self.open.len(), done)
    }

    /// Fetch every segment, handing each to `write` in file order.
    async fn run<F>(&mut self, write: &mut F) -> Result<(), FetchError>
    where
        F: FnMut(Vec<Vec<u8>>) -> Result<(), FetchError> + Send,
    {
        let mut inflight = FuturesUnordered::new();
        loop {
            if self.next_write == self.sf.segments.len() {
                return Ok(());
            }
            match self.done.remove(&self.next_write) {
                Some(Done::Held(blocks, ..)) => {
                    write(blocks)?;
                    self.next_write += 1;
                    continue;
                }
                // Opened again: read back from the source.
                Some(Done::Parked) => self.opened[self.next_write] = false,
                None => {}
            }
            self.open_segments()?;
            let source = self.source;
            while inflight.len() < self.limit {
                let wants: Vec<usize> = self.open.iter().map(SegFetch::wants).collect();
                let Some(j) = self.pace.pick_weighted(&wants) else {
                    break;
                };
                let seg = &mut self.open[j];
                let speed = &self.speed;
                let Some((i, rk)) = seg.take_next(|rk| speed.is_slow(rk)) else {
                    break;
                };
                let index = seg.index;
                let local = source.has_local(BlockKind::Chk, &rk);
                let delay = if local {
                    Duration::ZERO
                } else {
                    self.pace.delay()
                };
                inflight.push(async move {
                    if !delay.is_zero() {
                        source.pause(delay).await;
                    }
                    let asked = Instant::now();
                    let res = source.fetch(BlockKind::Chk, rk).await;
                    let took = (!local).then(|| asked.elapsed());
                    (index, i, res, took)
                });
            }
            if self.done.contains_key(&self.next_write) {
                continue;
            }
            let Some(answer) = inflight.next().await else {
                return Err(FetchError::Internal("splitfile fetch stalled".into()));
            };
            self.arrived(answer)?;
        }
    }

    /// Open segments while there is room (after parking what can be).
    fn open_segments(&mut self) -> Result<(), FetchError> {
        let (open, held) = self.held();
        if open + held >= self.max_held {
            let mut done = std::mem::take(&mut self.done);
            for d in done.values_mut() {
                self.park(d);
            }
            self.done = done;
        }
        while let Some(index) =
            self.pace
                .next_segment(&self.opened, self.next_write, self.held(), self.max_held)
        {
            self.opened[index] = true;
            let report = !std::mem::replace(&mut self.counted[index], true);
            let seg = SegFetch::open(
                self.source,
                &self.sf.segments[index],
                (index, report),
                &mut self.pace,
                self.shared,
            )?;
            self.settle(seg)?;
        }
        Ok(())
    }

    fn arrived(&mut self, (index, i, res, took): Answer) -> Result<(), FetchError> {
        let Some(j) = self.open.iter().position(|s| s.index == index) else {
            return Err(FetchError::Internal("answer for a segment not open".into()));
        };
        let mut seg = self.open.swap_remove(j);
        if let (Some(took), Ok(_)) = (took, &res) {
            self.speed.answered(&seg.keys[i].routing_key, took);
        }
        seg.arrived(i, res, self.shared)?;
        self.settle(seg)
    }

    /// Keep `seg` open, or move it to `done` once it has enough blocks.
    fn settle(&mut self, mut seg: SegFetch) -> Result<(), FetchError> {
        let Some(blocks) = seg.finish()? else {
            self.open.push(seg);
            return Ok(());
        };
        let mut done = Done::Held(blocks, std::mem::take(&mut seg.used), 0);
        if seg.index != self.next_write {
            self.park(&mut done);
        }
        self.done.insert(seg.index, done);
        Ok(())
    }

    /// Drop a held segment's blocks if the source holds every block it
    /// was rebuilt from (read back in its turn). Each key is confirmed
    /// once, so trying again costs one lookup.
    fn park(&self, done: &mut Done) {
        if let Done::Held(_, used, confirmed) = done {
            while used
                .get(*confirmed)
                .is_some_and(|rk| self.source.has_local(BlockKind::Chk, rk))
            {
                *confirmed += 1;
            }
            if *confirmed == used.len() {
                *done = Done::Parked;
            }
        }
    }
}

/// How long the source takes to answer keys in each part of the key
/// space (the first byte of the routing key, which starts the key's
/// location: a node's peers each take an arc of it), so that a segment
/// asks for blocks whose keys are answered promptly rather than wait on
/// one part that is slow. A request goes to the peer closest to its key;
/// when that peer sends as much as its link carries, every block in its
/// arc queues behind the others, and the download goes at that peer's
/// pace divided by its share of the keys (in the namespace bed's capped
/// fetch, a peer holding a third of the key space held the fetch to 65 %
/// of the downlink). With the choice of any `k` of a segment's `2k`
/// blocks, such an arc is asked for less while it is slow.
///
/// What a neighbour sees: requests for more check blocks and fewer keys in
/// slow arcs. Every node upstream of a slow peer reacts in the same way,
/// a forwarder's requests come from a downloader that sees the same
/// slowness through it, and nothing changes in what is sent for a key.
#[derive(Debug)]
struct Speed {
    /// Per first byte of the routing key: the moving average of the
    /// answer time in microseconds (0: no answer yet).
    average: Vec<f64>,
    /// Answer times above this are slow (recomputed on each answer).
    slow_above: f64,
}

impl Speed {
    /// Weight of the newest answer in its part's average.
    const WEIGHT: f64 = 0.25;
    /// A part is slow when its average exceeds that of the parts answered
    /// quickest (the tenth quickest part) by this factor…
    const FACTOR: f64 = 1.5;
    /// …and by at least this much (µs): below it the difference is noise
    /// (a source that answers at once never has slow parts).
    const MARGIN: f64 = 50_000.0;

    fn new() -> Self {
        Speed {
            average: vec![0.0; 256],
            slow_above: f64::INFINITY,
        }
    }

    fn part(rk: &RoutingKey) -> usize {
        usize::from(rk.0[0])
    }

    /// A network answer for `rk` took `took`.
    fn answered(&mut self, rk: &RoutingKey, took: Duration) {
        let us = took.as_secs_f64() * 1e6;
        let a = &mut self.average[Self::part(rk)];
        *a = if *a == 0.0 {
            us.max(1.0)
        } else {
            (*a * (1.0 - Self::WEIGHT) + us * Self::WEIGHT).max(1.0)
        };
        let mut known: Vec<f64> = self.average.iter().copied().filter(|a| *a > 0.0).collect();
        // Too few parts answered to call any one slow.
        if known.len() < 16 {
            return;
        }
        // Against the prompt parts (the tenth quickest), not the median:
        // when most of the key space belongs to peers that are all sending
        // what their links carry, the median is slow too.
        let nth = known.len() / 10;
        let (_, quick, _) = known.select_nth_unstable_by(nth, f64::total_cmp);
        let quick = *quick;
        self.slow_above = (quick * Self::FACTOR).max(quick + Self::MARGIN);
    }

    /// Keys of `rk`'s part are answered slowly now.
    fn is_slow(&self, rk: &RoutingKey) -> bool {
        self.average[Self::part(rk)] > self.slow_above
    }
}

/// One segment being fetched.
struct SegFetch {
    index: usize,
    k: usize,
    keys: Vec<chk::ChkKey>,
    /// The order its blocks are asked for (data blocks first), how far
    /// every block before `next` has been asked (or held), and which are.
    order: Vec<usize>,
    next: usize,
    asked: Vec<bool>,
    /// Blocks neither asked for nor held.
    unasked: usize,
    raw: Vec<Option<Vec<u8>>>,
    plain: Vec<Option<Vec<u8>>>,
    /// Blocks held or arrived (not yet known bad).
    have: usize,
    inflight: usize,
    /// Routing keys of the blocks it has.
    used: Vec<RoutingKey>,
    /// Count its blocks in the progress (not when read back).
    report: bool,
}

impl SegFetch {
    /// Open segment `index`: its blocks the source holds locally (already
    /// verified) are read and decrypted on the rayon pool, every core at
    /// once.
    fn open<S: BlockSource, P: FnMut(Progress) + Send>(
        source: &S,
        seg: &Segment,
        (index, report): (usize, bool),
        pace: &mut Pace,
        shared: &Shared<'_, P>,
    ) -> Result<Self, FetchError> {
        let k = usize::from(seg.data);
        let n = seg.total();
        let keys: Vec<chk::ChkKey> = (0..n).filter_map(|i| seg.key(i)).collect();
        if keys.len() != n {
            return Err(FetchError::InvalidMetadata(crate::MetadataError::Invalid(
                "segment key list too short".into(),
            )));
        }
        let read = |key: &chk::ChkKey| {
            let block = source.fetch_local(BlockKind::Chk, &key.routing_key)?;
            chk::decrypt_owned(&key.crypto_key, block)
                .ok()
                .filter(|d| d.len() == chk::PAYLOAD_LEN)
        };
        let mut plain: Vec<Option<Vec<u8>>> = keys[..k].par_iter().map(read).collect();
        plain.resize_with(n, || None);
        // A segment rebuilt from check blocks (fetched in place of data
        // blocks that were slow to come) and read back in its turn: its
        // check blocks are held too.
        let missing = plain.iter().filter(|p| p.is_none()).count() - (n - k);
        if missing > 0 {
            let held: Vec<usize> = (k..n)
                .filter(|&i| source.has_local(BlockKind::Chk, &keys[i].routing_key))
                .take(missing)
                .collect();
            let got: Vec<(usize, Option<Vec<u8>>)> =
                held.into_par_iter().map(|i| (i, read(&keys[i]))).collect();
            for (i, p) in got {
                plain[i] = p;
            }
        }
        let used: Vec<RoutingKey> = plain
            .iter()
            .zip(&keys)
            .filter(|(p, _)| p.is_some())
            .map(|(_, key)| key.routing_key)
            .collect();
        if report {
            for _ in 0..used.len() {
                shared.block_done();
            }
        }
        let asked: Vec<bool> = plain.iter().map(Option::is_some).collect();
        let mut s = SegFetch {
            index,
            k,
            order: pace.block_order(k, n),
            next: 0,
            unasked: asked.iter().filter(|a| !**a).count(),
            asked,
            raw: (0..n).map(|_| None).collect(),
            plain,
            have: used.len(),
            inflight: 0,
            used,
            keys,
            report,
        };
        s.skip_held();
        Ok(s)
    }

    /// Move `next` past blocks already asked for or held.
    fn skip_held(&mut self) {
        while self.order.get(self.next).is_some_and(|&i| self.asked[i]) {
            self.next += 1;
        }
    }

    /// How many more requests it wants now.
    fn wants(&self) -> usize {
        self.k
            .saturating_sub(self.have + self.inflight)
            .min(self.unasked)
    }

    /// The next block to ask for: the first in its order whose key the
    /// source does not answer slowly (`slow`), else the first left. Any
    /// `k` of a segment's blocks rebuild it, so a check block whose key
    /// goes to a peer that answers at once serves as well as a data block
    /// stuck behind a peer that is sending all it can.
    fn take_next(&mut self, slow: impl Fn(&RoutingKey) -> bool) -> Option<(usize, RoutingKey)> {
        if self.wants() == 0 {
            return None;
        }
        let left = || self.order[self.next..].iter().filter(|&&i| !self.asked[i]);
        let i = left()
            .find(|&&i| !slow(&self.keys[i].routing_key))
            .or_else(|| left().next())
            .copied()?;
        self.asked[i] = true;
        self.unasked -= 1;
        self.skip_held();
        self.inflight += 1;
        Some((i, self.keys[i].routing_key))
    }

    fn arrived<P: FnMut(Progress) + Send>(
        &mut self,
        i: usize,
        res: Result<Vec<u8>, SourceError>,
        shared: &Shared<'_, P>,
    ) -> Result<(), FetchError> {
        self.inflight -= 1;
        match res {
            // Verified by the source (`BlockSource::fetch`); a block that
            // still does not decrypt counts as missing in `finish`.
            Ok(block) => {
                self.raw[i] = Some(block);
                self.used.push(self.keys[i].routing_key);
                self.have += 1;
                if self.report {
                    shared.block_done();
                }
                Ok(())
            }
            Err(SourceError::Cancelled) => Err(FetchError::Cancelled),
            Err(_) => Ok(()),
        }
    }

    /// Its data blocks once it has enough (decrypted in parallel, rebuilt
    /// by Reed-Solomon if any is missing); `None` while it waits for more.
    fn finish(&mut self) -> Result<Option<Vec<Vec<u8>>>, FetchError> {
        if self.inflight > 0 || (self.have < self.k && self.wants() > 0) {
            return Ok(None);
        }
        if self.have < self.k {
            return Err(FetchError::NotEnoughBlocks {
                segment: self.index,
                have: self.have,
                needed: self.k,
                total: self.order.len(),
            });
        }
        let keys = &self.keys;
        let decoded: Vec<(usize, Option<Vec<u8>>)> = self
            .raw
            .par_iter_mut()
            .enumerate()
            .filter_map(|(i, r)| {
                let d = chk::decrypt_owned(&keys[i].crypto_key, r.take()?)
                    .ok()
                    .filter(|d| d.len() == chk::PAYLOAD_LEN);
                Some((i, d))
            })
            .collect();
        for (i, d) in decoded {
            match d {
                Some(d) => self.plain[i] = Some(d),
                // Verifies but does not decrypt: wrong key in the metadata
                // or a forged insert. Try other blocks.
                None => {
                    self.have -= 1;
                    let rk = self.keys[i].routing_key;
                    self.used.retain(|u| *u != rk);
                }
            }
        }
        if self.have < self.k {
            // Ask for more, or fail if none is left.
            return self.finish();
        }
        self.rebuild().map(Some)
    }

    /// The data blocks from at least `k` decrypted blocks.
    fn rebuild(&mut self) -> Result<Vec<Vec<u8>>, FetchError> {
        let (k, n, index) = (self.k, self.order.len(), self.index);
        let plain = std::mem::take(&mut self.plain);
        if plain[..k].iter().all(Option::is_some) {
            return Ok(plain.into_iter().take(k).flatten().collect());
        }
        let originals = plain[..k]
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_deref().map(|d| (i, d)));
        let recovery = plain[k..]
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.as_deref().map(|d| (i, d)));
        let mut restored = reed_solomon_simd::decode(k, n - k, originals, recovery)
            .map_err(|e| FetchError::SplitfileDecode(format!("segment {index}: {e}")))?;
        let mut out = Vec::with_capacity(k);
        for (i, p) in plain.into_iter().take(k).enumerate() {
            match p.or_else(|| restored.remove(&i)) {
                Some(d) => out.push(d),
                None => {
                    return Err(FetchError::SplitfileDecode(format!(
                        "segment {index}: block {i} not restored"
                    )))
                }
            }
        }
        Ok(out)
    }
}

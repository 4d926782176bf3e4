//! Streaming insert: reader → (zstd) → segments → Reed-Solomon → CHK blocks
//! → sink, then the metadata that ties them together.
//!
//! ```text
//! read 1 MiB sample ── zstd level 1 on the sample: saves ≥ 5 %? ── codec
//!      │
//!      ▼ (1 MiB chunks, SHA-256 of the content on the way)
//! [zstd stream] ──► pending bytes ──► every 4 MiB: a segment
//!                                        │ (rayon) RS check blocks, CHK-encode all 2k blocks
//!                                        ▼
//!                                   sink.put × 2k (bounded concurrency, in a random
//!                                   order, each after a random pause), while the
//!                                   next segment is read and encoded
//! ```
//!
//! Memory: the 1 MiB read buffer, < 2 segments of pending bytes and two
//! segments in flight (their data, check and encrypted blocks): about
//! 30 MiB whatever the document size.

use crate::error::InsertError;
use crate::io::BlockSink;
use crate::metadata::{Hash, Inline, Metadata, Redirect, Segment, Splitfile, KEY_REF_LEN};
use crate::pace::Pace;
use futures::channel::oneshot;
use futures::StreamExt;
use lichen_crypto::chk::{self, ChkKey};
use lichen_crypto::ssk::{self, SskPrivate};
use lichen_crypto::uri::SskKey;
use lichen_crypto::{sha256_parts, BlockKind, Codec, DataFlags, FreenetUri, KeyUri, RoutingKey};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::Duration;

/// Data blocks per full segment.
pub(crate) const SEGMENT_DATA_BLOCKS: usize = 128;
/// Bytes of (compressed) data in a full segment.
pub const SEGMENT_BYTES: usize = SEGMENT_DATA_BLOCKS * chk::PAYLOAD_LEN;
/// How much of the document is compressed on trial to decide the codec.
pub const COMPRESSION_SAMPLE: usize = 1024 * 1024;
/// Read buffer size.
const READ_CHUNK: usize = 1024 * 1024;
/// zstd level of the document stream.
const ZSTD_LEVEL: i32 = 3;
/// zstd level of the trial compression.
const SAMPLE_LEVEL: i32 = 1;
/// Compress only if the sample shrinks to this fraction (in 1/100).
const WORTH_COMPRESSING_PERCENT: usize = 95;
const RANDOM_KEY_DOMAIN: &[u8] = b"lichen/client/random-key/v1";
const CONVERGENT_BLOCK_DOMAIN: &[u8] = b"lichen/client/convergent-block/v1";

/// How to insert a document.
#[derive(Debug, Clone)]
pub struct InsertOptions {
    /// Where: `CHK@` (key computed from content), `SSK@` (fresh key),
    /// an SSK/USK insert URI, or `KSK@keyword`.
    pub target: FreenetUri,
    /// MIME type recorded in the metadata (`Metadata.ContentType`).
    pub mime: Option<String>,
    /// Try zstd (FCP `DontCompress=false`).
    pub compress: bool,
    /// File name appended to a CHK URI as a meta-string
    /// (`TargetFilename`); also used to guess a missing MIME type.
    pub filename: Option<String>,
    /// Randomised block keys. `None`: yes for SSK/KSK/USK targets (so
    /// blocks of well-known content cannot be recognised), no for CHK
    /// (convergent: same content, same URI).
    pub randomise_keys: Option<bool>,
    /// Seed for every random choice of the insert (random keys, a fresh
    /// SSK). `None`: from the OS.
    pub seed: Option<[u8; 32]>,
    /// Blocks handed to the sink concurrently.
    pub concurrency: usize,
    /// Longest random pause ([`BlockSink::pause`]) before each block goes
    /// to the network ([`BlockSink::put`]); each segment's blocks go in a
    /// random order. Both are drawn from [`InsertOptions::seed`].
    pub jitter: Duration,
    /// Data blocks per segment, 1..=128 (default 128). Smaller segments
    /// only make sense for tests.
    pub segment_blocks: usize,
}

impl Default for InsertOptions {
    fn default() -> Self {
        InsertOptions {
            target: FreenetUri::new(KeyUri::ChkInsert),
            mime: None,
            compress: true,
            filename: None,
            randomise_keys: None,
            seed: None,
            concurrency: 16,
            jitter: crate::REQUEST_JITTER,
            segment_blocks: SEGMENT_DATA_BLOCKS,
        }
    }
}

/// What an insert produced.
#[derive(Debug, Clone)]
pub struct InsertResult {
    /// The request URI to give to readers.
    pub uri: FreenetUri,
    /// For SSK and USK targets: the insert URI (private key) that was
    /// used — for `SSK@` the freshly generated one.
    pub insert_uri: Option<FreenetUri>,
    /// Document size in bytes.
    pub size: u64,
    /// Stored (compressed) size.
    pub compressed_size: u64,
    /// Codec chosen.
    pub codec: Codec,
    /// SHA-256 of the document.
    pub sha256: [u8; 32],
    /// MIME type recorded.
    pub mime: Option<String>,
    /// Blocks handed to the sink (data, check and metadata).
    pub blocks: u64,
}

/// Where the top of an insert goes.
#[allow(clippy::large_enum_variant)] // one per insert
pub(crate) enum Target {
    Chk,
    Ssk {
        key: SskPrivate,
        docname: String,
        request: FreenetUri,
        insert: Option<FreenetUri>,
    },
}

pub(crate) fn resolve_target<R: rand::RngCore + rand::CryptoRng>(
    uri: &FreenetUri,
    filename: Option<&str>,
    rng: &mut R,
) -> Result<Target, InsertError> {
    let wrong = |m: &str| Err(InsertError::InvalidUri(m.to_owned().into()));
    match &uri.key {
        KeyUri::ChkInsert | KeyUri::Chk { .. } => Ok(Target::Chk),
        KeyUri::SskInsertNew => {
            let key = SskPrivate::generate(rng);
            let docname = uri
                .meta
                .first()
                .cloned()
                .or_else(|| filename.map(str::to_owned))
                .unwrap_or_default();
            Ok(ssk_target(key, docname))
        }
        KeyUri::Ssk {
            key: SskKey::Private(k),
            docname,
        } => Ok(ssk_target(k.clone(), docname.clone())),
        KeyUri::Ksk { keyword } => Ok(Target::Ssk {
            key: SskPrivate::from_keyword(keyword),
            docname: keyword.clone(),
            request: FreenetUri::new(uri.key.clone()),
            insert: None,
        }),
        KeyUri::Usk {
            key: SskKey::Private(k),
            site,
            edition,
        } => {
            if *edition < 0 {
                return wrong("a USK insert needs a non-negative edition");
            }
            let insert = FreenetUri::new(uri.key.clone());
            Ok(Target::Ssk {
                key: k.clone(),
                docname: lichen_crypto::uri::usk_docname(site, edition.unsigned_abs()),
                request: insert.to_request(),
                insert: Some(insert),
            })
        }
        KeyUri::Ssk { .. } | KeyUri::Usk { .. } => {
            wrong("this is a request URI; inserting needs the insert (private) URI")
        }
    }
}

fn ssk_target(key: SskPrivate, docname: String) -> Target {
    let request = FreenetUri::new(KeyUri::Ssk {
        key: SskKey::Public(key.public()),
        docname: docname.clone(),
    });
    let insert = FreenetUri::new(KeyUri::Ssk {
        key: SskKey::Private(key.clone()),
        docname: docname.clone(),
    });
    Target::Ssk {
        key,
        docname,
        request,
        insert: Some(insert),
    }
}

/// Shared state of one insert: the sink, the key schedule, counters.
pub(crate) struct Ctx<'a, S> {
    pub(crate) sink: &'a S,
    pub(crate) concurrency: usize,
    /// The order of the puts and the pauses before them.
    pub(crate) pace: Pace,
    /// Secret seed of randomised block keys; `None` = convergent.
    pub(crate) seed: Option<[u8; 32]>,
    pub(crate) next_block: u64,
    pub(crate) blocks: u64,
    /// Bytes of a full segment.
    pub(crate) segment_bytes: usize,
}

impl<'a, S: BlockSink> Ctx<'a, S> {
    pub(crate) fn new(sink: &'a S, concurrency: usize, seed: Option<[u8; 32]>, pace: Pace) -> Self {
        Ctx {
            sink,
            concurrency: concurrency.max(1),
            pace,
            seed,
            next_block: 0,
            blocks: 0,
            segment_bytes: SEGMENT_BYTES,
        }
    }

    /// Encode and put one CHK block.
    pub(crate) async fn put_chk(
        &mut self,
        data: &[u8],
        flags: DataFlags,
    ) -> Result<ChkKey, InsertError> {
        // A document's top block is a plain convergent CHK (same data, same
        // key as `chk::encode`) unless keys are randomised.
        let (key, block) = match self.seed {
            Some(_) => encode_block(data, flags, self.seed, self.next_block)?,
            None => chk::encode(data, flags)?,
        };
        self.next_block += 1;
        self.blocks += 1;
        self.sink.pause(self.pace.delay()).await;
        self.sink
            .put(BlockKind::Chk, key.routing_key, block)
            .await?;
        Ok(key)
    }

    async fn put_ssk(
        &mut self,
        key: &SskPrivate,
        docname: &str,
        data: &[u8],
        flags: DataFlags,
    ) -> Result<(), InsertError> {
        let (rk, block) = key.encode(docname, data, flags)?;
        self.blocks += 1;
        self.sink.pause(self.pace.delay()).await;
        self.sink.put(BlockKind::Ssk, rk, block).await?;
        Ok(())
    }
}

fn derive_key(seed: &[u8; 32], index: u64) -> [u8; 32] {
    sha256_parts(&[RANDOM_KEY_DOMAIN, seed, &index.to_be_bytes()])
}

/// Encode splitfile block number `index` of this insert.
///
/// Convergent keys also cover the block's position: identical blocks at
/// different positions (zero-filled regions; a one-block segment whose
/// Reed-Solomon check block equals its data block) get distinct keys, so
/// they are distinct blocks in the network and the redundancy is real.
/// The key stays a function of the content, so the URI is still
/// reproducible (`GetCHKOnly`).
fn encode_block(
    data: &[u8],
    flags: DataFlags,
    seed: Option<[u8; 32]>,
    index: u64,
) -> Result<(ChkKey, Vec<u8>), InsertError> {
    let key = match seed {
        Some(seed) => derive_key(&seed, index),
        None => sha256_parts(&[
            CONVERGENT_BLOCK_DOMAIN,
            &chk::convergent_key(data),
            &index.to_be_bytes(),
        ]),
    };
    Ok(chk::encode_with_key(data, flags, key)?)
}

/// A segment's metadata and its encoded blocks.
struct EncodedSegment {
    meta: Segment,
    blocks: Vec<(RoutingKey, Vec<u8>)>,
}

/// CPU part of a segment: RS check blocks, then all blocks encrypted in
/// parallel. `data` holds up to [`SEGMENT_BYTES`]; the last block is
/// zero-padded to a full block (the stream length is in the metadata).
fn encode_segment(
    mut data: Vec<u8>,
    seed: Option<[u8; 32]>,
    first_index: u64,
) -> Result<EncodedSegment, InsertError> {
    let k = data.len().div_ceil(chk::PAYLOAD_LEN).max(1);
    data.resize(k * chk::PAYLOAD_LEN, 0);
    let shards: Vec<&[u8]> = data.chunks(chk::PAYLOAD_LEN).collect();
    let recovery = reed_solomon_simd::encode(k, k, &shards)
        .map_err(|e| InsertError::Internal(format!("Reed-Solomon encoding failed: {e}")))?;
    let all: Vec<&[u8]> = shards
        .iter()
        .copied()
        .chain(recovery.iter().map(Vec::as_slice))
        .collect();
    let flags = DataFlags::default();
    let encoded: Vec<(ChkKey, Vec<u8>)> = all
        .par_iter()
        .enumerate()
        .map(|(i, s)| encode_block(s, flags, seed, first_index + i as u64))
        .collect::<Result<_, _>>()?;
    let mut keys = Vec::with_capacity(encoded.len() * KEY_REF_LEN);
    let mut blocks = Vec::with_capacity(encoded.len());
    for (key, block) in encoded {
        keys.extend_from_slice(&key.routing_key.0);
        keys.extend_from_slice(&key.crypto_key);
        blocks.push((key.routing_key, block));
    }
    // k ≤ 128 by construction.
    let count = u16::try_from(k).unwrap_or(u16::MAX);
    Ok(EncodedSegment {
        meta: Segment {
            data: count,
            check: count,
            keys,
        },
        blocks,
    })
}

/// Put a segment's blocks: what the sink stores without waiting at once,
/// the rest in a random order, each after a random pause.
async fn put_blocks<S: BlockSink>(
    sink: &S,
    blocks: Vec<(RoutingKey, Vec<u8>)>,
    concurrency: usize,
    pace: &mut Pace,
) -> Result<(), InsertError> {
    if let Some(r) = sink.put_local_batch(BlockKind::Chk, &blocks) {
        return Ok(r?);
    }
    // What the sink can store without waiting is stored from the rayon
    // pool, on every core; the rest goes through the async put.
    let mut rest: Vec<(RoutingKey, Vec<u8>)> = blocks
        .into_par_iter()
        .filter_map(
            |(key, block)| match sink.put_local(BlockKind::Chk, &key, &block) {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(Err(e)),
                None => Some(Ok((key, block))),
            },
        )
        .collect::<Result<_, _>>()?;
    if rest.is_empty() {
        return Ok(());
    }
    pace.shuffle(&mut rest);
    let jobs: Vec<_> = rest
        .into_iter()
        .map(|(key, block)| {
            let delay = pace.delay();
            async move {
                sink.pause(delay).await;
                sink.put(BlockKind::Chk, key, block).await
            }
        })
        .collect();
    let mut puts = futures::stream::iter(jobs).buffer_unordered(concurrency);
    while let Some(r) = puts.next().await {
        r?;
    }
    Ok(())
}

type SegmentJob = oneshot::Receiver<Result<EncodedSegment, InsertError>>;

/// Cuts a byte stream into segments; encodes one segment on the rayon pool
/// while the previous one is put and the next one read.
pub(crate) struct SplitWriter {
    pending: Vec<u8>,
    segments: Vec<Segment>,
    inflight: Option<SegmentJob>,
    stored: u64,
    submitted: bool,
}

impl SplitWriter {
    pub(crate) fn new() -> Self {
        SplitWriter {
            pending: Vec::with_capacity(SEGMENT_BYTES + READ_CHUNK),
            segments: Vec::new(),
            inflight: None,
            stored: 0,
            submitted: false,
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.stored += bytes.len() as u64;
        self.pending.extend_from_slice(bytes);
    }

    /// Submit every full segment in `pending`.
    async fn drain_full<S: BlockSink>(&mut self, ctx: &mut Ctx<'_, S>) -> Result<(), InsertError> {
        let full = ctx.segment_bytes;
        while self.pending.len() >= full {
            let mut rest = Vec::with_capacity(full + READ_CHUNK);
            rest.extend_from_slice(&self.pending[full..]);
            let mut seg = std::mem::replace(&mut self.pending, rest);
            seg.truncate(full);
            self.submit(seg, ctx).await?;
        }
        Ok(())
    }

    async fn submit<S: BlockSink>(
        &mut self,
        seg: Vec<u8>,
        ctx: &mut Ctx<'_, S>,
    ) -> Result<(), InsertError> {
        self.submitted = true;
        let k = seg.len().div_ceil(chk::PAYLOAD_LEN).max(1) as u64;
        let (tx, rx) = oneshot::channel();
        let (seed, first) = (ctx.seed, ctx.next_block);
        ctx.next_block += 2 * k;
        rayon::spawn(move || {
            let _ = tx.send(encode_segment(seg, seed, first));
        });
        if let Some(prev) = self.inflight.replace(rx) {
            self.complete(prev, ctx).await?;
        }
        Ok(())
    }

    async fn complete<S: BlockSink>(
        &mut self,
        job: SegmentJob,
        ctx: &mut Ctx<'_, S>,
    ) -> Result<(), InsertError> {
        let enc = job
            .await
            .map_err(|_| InsertError::Internal("segment encoder stopped".into()))??;
        ctx.blocks += enc.blocks.len() as u64;
        self.segments.push(enc.meta);
        put_blocks(ctx.sink, enc.blocks, ctx.concurrency, &mut ctx.pace).await
    }

    /// True if nothing was submitted and what is pending fits one block.
    fn is_single_block(&self) -> bool {
        !self.submitted && self.pending.len() <= chk::PAYLOAD_LEN
    }

    /// Submit the rest and wait for every segment.
    async fn finish<S: BlockSink>(
        mut self,
        ctx: &mut Ctx<'_, S>,
    ) -> Result<(Vec<Segment>, u64), InsertError> {
        self.drain_full(ctx).await?;
        if !self.pending.is_empty() {
            let seg = std::mem::take(&mut self.pending);
            self.submit(seg, ctx).await?;
        }
        if let Some(job) = self.inflight.take() {
            self.complete(job, ctx).await?;
        }
        Ok((self.segments, self.stored))
    }
}

/// The document as the top of an insert sees it.
pub(crate) enum Doc {
    /// Fits one block; no metadata needed.
    Data { data: Vec<u8>, codec: Codec },
    /// Needs metadata.
    Meta(Metadata),
}

/// A document read whole (at most [`COMPRESSION_SAMPLE`] bytes): zstd if
/// `compress` and that makes it smaller, else as it is.
fn compress_whole(sample: Vec<u8>, compress: bool) -> Result<(Codec, Vec<u8>), InsertError> {
    Ok(if compress && sample.len() > 64 {
        let z = zstd::bulk::compress(&sample, ZSTD_LEVEL)?;
        if z.len() < sample.len() {
            (Codec::Zstd, z)
        } else {
            (Codec::None, sample)
        }
    } else {
        (Codec::None, sample)
    })
}

/// A document longer than its `sample`, compressed on the way to `sw`:
/// the sample, then the rest of `reader`. Returns the bytes read from
/// `reader`.
async fn stream_zstd<S: BlockSink, R: Read>(
    reader: &mut R,
    sample: Vec<u8>,
    hasher: &mut DocHasher,
    sw: &mut SplitWriter,
    ctx: &mut Ctx<'_, S>,
) -> Result<u64, InsertError> {
    let mut size = 0;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    enc.write_all(&sample)?;
    drop(sample);
    move_out(&mut enc, sw);
    sw.drain_full(ctx).await?;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_full(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        enc.write_all(&buf[..n])?;
        move_out(&mut enc, sw);
        sw.drain_full(ctx).await?;
    }
    let tail = enc.finish()?;
    sw.extend(&tail);
    Ok(size)
}

/// As [`stream_zstd`], uncompressed.
async fn stream_plain<S: BlockSink, R: Read>(
    reader: &mut R,
    sample: Vec<u8>,
    hasher: &mut DocHasher,
    sw: &mut SplitWriter,
    ctx: &mut Ctx<'_, S>,
) -> Result<u64, InsertError> {
    let mut size = 0;
    sw.extend(&sample);
    drop(sample);
    loop {
        // Read straight into the pending buffer: no copy.
        let start = sw.pending.len();
        sw.pending.resize(start + READ_CHUNK, 0);
        let n = read_full(reader, &mut sw.pending[start..])?;
        sw.pending.truncate(start + n);
        if n == 0 {
            break;
        }
        hasher.update(&sw.pending[start..]);
        sw.stored += n as u64;
        size += n as u64;
        sw.drain_full(ctx).await?;
    }
    Ok(size)
}

/// Insert a document read from `reader`.
///
/// Streams: memory use is bounded (≈ 30 MiB) whatever the document size.
/// Reads block and the block encoding uses the rayon pool; on a tokio
/// runtime run it where blocking is fine (`spawn_blocking` +
/// `Handle::block_on`, or a dedicated thread) if the reader is slow.
///
/// # Errors
/// [`InsertError`]; the sink may already hold some blocks.
pub async fn insert<S: BlockSink, R: Read + Send>(
    sink: &S,
    mut reader: R,
    opts: &InsertOptions,
) -> Result<InsertResult, InsertError> {
    let mut rng = match opts.seed {
        Some(s) => rand::rngs::StdRng::from_seed(s),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let filename = opts.filename.clone().or_else(|| match opts.target.key {
        KeyUri::ChkInsert | KeyUri::Chk { .. } => opts.target.meta.last().cloned(),
        _ => None,
    });
    let target = resolve_target(&opts.target, filename.as_deref(), &mut rng)?;
    let randomise = opts
        .randomise_keys
        .unwrap_or(!matches!(target, Target::Chk));
    let seed = randomise.then(|| rng.gen::<[u8; 32]>());
    let pace = Pace::new(rng.gen(), opts.jitter);
    let mut ctx = Ctx::new(sink, opts.concurrency, seed, pace);
    ctx.segment_bytes = opts.segment_blocks.clamp(1, SEGMENT_DATA_BLOCKS) * chk::PAYLOAD_LEN;
    let mime = opts.mime.clone().or_else(|| {
        filename
            .as_deref()
            .and_then(crate::folder::guess_mime)
            .map(str::to_owned)
    });

    let mut hasher = DocHasher::new();
    let mut sample = Vec::new();
    let eof = read_up_to(&mut reader, &mut sample, COMPRESSION_SAMPLE)?;
    hasher.update(&sample);
    let mut size = sample.len() as u64;
    let mut sw = SplitWriter::new();
    let codec;
    if eof {
        let (c, stored) = compress_whole(sample, opts.compress)?;
        codec = c;
        sw.extend(&stored);
    } else {
        codec = if opts.compress && worth_compressing(&sample)? {
            Codec::Zstd
        } else {
            Codec::None
        };
        size += match codec {
            Codec::Zstd => stream_zstd(&mut reader, sample, &mut hasher, &mut sw, &mut ctx).await?,
            Codec::None => {
                stream_plain(&mut reader, sample, &mut hasher, &mut sw, &mut ctx).await?
            }
        };
    }
    let sha256: [u8; 32] = hasher.finalize()?;
    let compressed_size;
    let doc = if sw.is_single_block() {
        let data = std::mem::take(&mut sw.pending);
        compressed_size = data.len() as u64;
        match &mime {
            None => Doc::Data { data, codec },
            Some(m) => Doc::Meta(Metadata::Inline(Inline {
                mime: Some(m.clone()),
                codec: codec.id(),
                size,
                data,
                sha256: Some(Hash(sha256)),
            })),
        }
    } else {
        let (segments, stored) = sw.finish(&mut ctx).await?;
        compressed_size = stored;
        Doc::Meta(Metadata::Splitfile(Splitfile {
            size,
            compressed_size,
            codec: codec.id(),
            mime: mime.clone(),
            sha256: Hash(sha256),
            metadata: false,
            segments,
        }))
    };
    let info = DocInfo {
        mime: mime.clone(),
        size: Some(size),
        sha256: Some(sha256),
    };
    let (uri, insert_uri) = place(&mut ctx, doc, &target, &info).await?;
    let uri = match (&target, &filename) {
        (Target::Chk, Some(f)) => uri.with_meta(f),
        _ => uri,
    };
    Ok(InsertResult {
        uri,
        insert_uri,
        size,
        compressed_size,
        codec,
        sha256,
        mime,
        blocks: ctx.blocks,
    })
}

/// The document's SHA-256, off the reading thread once the document is
/// big: the reader hands over copies of what it read (a copy costs a
/// fraction of the hash) and a helper thread hashes them in order, while
/// the reader goes on and the rayon pool encodes.
enum DocHasher {
    Inline(Sha256, u64),
    Thread {
        tx: std::sync::mpsc::SyncSender<Vec<u8>>,
        done: std::thread::JoinHandle<Sha256>,
    },
    /// The helper could not be started or has stopped: hash here.
    Failed(Sha256),
}

/// Bytes hashed inline before the hashing moves to a helper thread.
const INLINE_HASH_BYTES: u64 = 4 << 20;

impl DocHasher {
    fn new() -> Self {
        DocHasher::Inline(Sha256::new(), 0)
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            DocHasher::Inline(h, n) => {
                h.update(b);
                *n += b.len() as u64;
                if *n >= INLINE_HASH_BYTES {
                    let h = std::mem::take(h);
                    *self = Self::spawn(h);
                }
            }
            // Only a panic stops the helper; finalize() reports it.
            DocHasher::Thread { tx, .. } => drop(tx.send(b.to_vec())),
            DocHasher::Failed(h) => h.update(b),
        }
    }

    fn spawn(h: Sha256) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let keep = h.clone();
        match std::thread::Builder::new()
            .name("insert-hash".into())
            .spawn(move || {
                let mut h = h;
                for chunk in rx {
                    h.update(&chunk);
                }
                h
            }) {
            Ok(done) => DocHasher::Thread { tx, done },
            Err(_) => DocHasher::Failed(keep),
        }
    }

    /// The digest.
    fn finalize(self) -> Result<[u8; 32], InsertError> {
        match self {
            DocHasher::Inline(h, _) | DocHasher::Failed(h) => Ok(h.finalize().into()),
            DocHasher::Thread { tx, done } => {
                drop(tx);
                done.join()
                    .map(|h| h.finalize().into())
                    .map_err(|_| InsertError::Internal("the hashing thread stopped".into()))
            }
        }
    }
}

fn move_out(enc: &mut zstd::stream::write::Encoder<'static, Vec<u8>>, sw: &mut SplitWriter) {
    let out = enc.get_mut();
    sw.extend(out);
    out.clear();
}

fn worth_compressing(sample: &[u8]) -> Result<bool, InsertError> {
    let z = zstd::bulk::compress(sample, SAMPLE_LEVEL)?;
    Ok(z.len() * 100 < sample.len() * WORTH_COMPRESSING_PERCENT)
}

/// Fill `buf` from `r` up to `limit` bytes; true if EOF came first.
fn read_up_to<R: Read>(r: &mut R, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    let n = r.take(limit as u64).read_to_end(buf)?;
    if n < limit {
        return Ok(true);
    }
    // Exactly `limit` bytes: peek one more to know whether EOF follows.
    let mut one = [0u8; 1];
    let more = read_full(r, &mut one)?;
    if more == 0 {
        Ok(true)
    } else {
        buf.push(one[0]);
        Ok(false)
    }
}

/// Read until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Facts about the document recorded in redirects.
pub(crate) struct DocInfo {
    pub(crate) mime: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) sha256: Option<[u8; 32]>,
}

/// Encode a metadata document, compressed with zstd if that helps.
fn encode_metadata(m: &Metadata) -> (Vec<u8>, Vec<u8>, Codec) {
    let raw = m.to_bytes();
    if raw.len() > 512 {
        if let Ok(z) = zstd::bulk::compress(&raw, ZSTD_LEVEL) {
            if z.len() < raw.len() {
                return (raw, z, Codec::Zstd);
            }
        }
    }
    (raw.clone(), raw, Codec::None)
}

/// Put the top of a document under `target`; returns (request URI, insert
/// URI).
pub(crate) async fn place<S: BlockSink>(
    ctx: &mut Ctx<'_, S>,
    doc: Doc,
    target: &Target,
    info: &DocInfo,
) -> Result<(FreenetUri, Option<FreenetUri>), InsertError> {
    match target {
        Target::Chk => Ok((place_chk(ctx, doc, info).await?, None)),
        Target::Ssk {
            key,
            docname,
            request,
            insert,
        } => {
            match &doc {
                Doc::Data { data, codec } if data.len() <= ssk::PAYLOAD_LEN => {
                    let flags = DataFlags {
                        metadata: false,
                        codec: *codec,
                    };
                    ctx.put_ssk(key, docname, data, flags).await?;
                    return Ok((request.clone(), insert.clone()));
                }
                Doc::Meta(m) => {
                    let (_, stored, codec) = encode_metadata(m);
                    if stored.len() <= ssk::PAYLOAD_LEN {
                        let flags = DataFlags {
                            metadata: true,
                            codec,
                        };
                        ctx.put_ssk(key, docname, &stored, flags).await?;
                        return Ok((request.clone(), insert.clone()));
                    }
                }
                Doc::Data { .. } => {}
            }
            let chk = place_chk(ctx, doc, info).await?;
            let redirect = Metadata::Redirect(Redirect {
                target: chk.to_string(),
                mime: info.mime.clone(),
                size: info.size,
                sha256: info.sha256.map(Hash),
            });
            let (_, stored, codec) = encode_metadata(&redirect);
            if stored.len() > ssk::PAYLOAD_LEN {
                return Err(InsertError::Internal(
                    "redirect does not fit an SSK block".into(),
                ));
            }
            let flags = DataFlags {
                metadata: true,
                codec,
            };
            ctx.put_ssk(key, docname, &stored, flags).await?;
            Ok((request.clone(), insert.clone()))
        }
    }
}

/// Put a document's top under a CHK: one block if it fits, otherwise
/// more levels of splitfile metadata until the top fits one block.
pub(crate) async fn place_chk<S: BlockSink>(
    ctx: &mut Ctx<'_, S>,
    doc: Doc,
    info: &DocInfo,
) -> Result<FreenetUri, InsertError> {
    let mut m = match doc {
        Doc::Data { data, codec } => {
            let key = ctx
                .put_chk(
                    &data,
                    DataFlags {
                        metadata: false,
                        codec,
                    },
                )
                .await?;
            return Ok(FreenetUri::from(&key));
        }
        Doc::Meta(m) => m,
    };
    // Each level shrinks the metadata ~250-fold; 8 levels is far beyond
    // any document the size limits allow.
    for _ in 0..8 {
        let (raw, stored, codec) = encode_metadata(&m);
        if stored.len() <= chk::PAYLOAD_LEN {
            let key = ctx
                .put_chk(
                    &stored,
                    DataFlags {
                        metadata: true,
                        codec,
                    },
                )
                .await?;
            return Ok(FreenetUri::from(&key));
        }
        if let Metadata::Inline(i) = m {
            // Too big to inline: the data gets its own block.
            let codec = crate::metadata::codec_of(i.codec)
                .map_err(|e| InsertError::Internal(e.to_string()))?;
            let key = ctx
                .put_chk(
                    &i.data,
                    DataFlags {
                        metadata: false,
                        codec,
                    },
                )
                .await?;
            m = Metadata::Redirect(Redirect {
                target: FreenetUri::from(&key).to_string(),
                mime: info.mime.clone(),
                size: info.size,
                sha256: info.sha256.map(Hash),
            });
            continue;
        }
        // Multi-level: the metadata itself becomes a splitfile.
        let mut sw = SplitWriter::new();
        sw.extend(&stored);
        let (segments, compressed_size) = sw.finish(ctx).await?;
        m = Metadata::Splitfile(Splitfile {
            size: raw.len() as u64,
            compressed_size,
            codec: codec.id(),
            mime: None,
            sha256: Hash(lichen_crypto::sha256(&raw)),
            metadata: true,
            segments,
        });
    }
    Err(InsertError::TooBig("metadata does not converge".into()))
}

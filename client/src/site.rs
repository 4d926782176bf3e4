//! Freesites: many files under one manifest, inserted to a CHK, SSK or
//! USK edition.
//!
//! Each file becomes a manifest entry: small files inline (the manifest is
//! zstd-compressed as a whole), larger ones inserted as their own CHK
//! document and referenced by a redirect. Every entry records the file's
//! SHA-256, so inserting the next edition with the previous manifest
//! reuses the entries of unchanged files without inserting them again.

use crate::error::InsertError;
use crate::folder::guess_mime;
use crate::insert::{insert, place, resolve_target, Ctx, Doc, DocInfo, InsertOptions, Target};
use crate::io::BlockSink;
use crate::metadata::{Hash, Inline, Manifest, Metadata, Redirect};
use lichen_crypto::{Codec, FreenetUri, KeyUri};
use rand::{Rng, SeedableRng};
use std::io::Read;

/// One file of a site.
#[derive(Debug)]
pub struct SiteFile {
    /// Path inside the site, `/`-separated (`index.html`, `img/a.png`).
    pub path: String,
    /// MIME type; `None`: guessed from the path.
    pub mime: Option<String>,
    /// The content.
    pub data: SiteData,
}

/// Where a site file's content comes from.
pub enum SiteData {
    /// In memory.
    Bytes(Vec<u8>),
    /// Streamed (e.g. a file on disk). Give its SHA-256 if known, so an
    /// unchanged file can be reused from the previous edition unread.
    Reader {
        /// The content.
        reader: Box<dyn Read + Send>,
        /// SHA-256 of the content, if known.
        sha256: Option<[u8; 32]>,
    },
    /// A redirect to an existing URI (FCP `UploadFrom=redirect`).
    Redirect(Box<FreenetUri>),
}

impl std::fmt::Debug for SiteData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteData::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            SiteData::Reader { .. } => f.write_str("Reader"),
            SiteData::Redirect(_) => f.write_str("Redirect"),
        }
    }
}

/// How to insert a site.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// `CHK@`, `SSK@`, an SSK insert URI or a USK insert URI with the
    /// edition to insert (see [`crate::usk::next_edition`]).
    pub target: FreenetUri,
    /// Default document; `None`: `index.html` if the site has one.
    pub default_name: Option<String>,
    /// The previous edition's manifest ([`crate::fetch_metadata`]):
    /// unchanged files are reused.
    pub previous: Option<Manifest>,
    /// Files up to this size are stored inside the manifest.
    pub inline_max: usize,
    /// Compression, key randomisation, seed and concurrency for the files.
    pub insert: InsertOptions,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            target: FreenetUri::new(KeyUri::ChkInsert),
            default_name: None,
            previous: None,
            inline_max: 2048,
            insert: InsertOptions::default(),
        }
    }
}

/// What a site insert produced.
#[derive(Debug, Clone)]
pub struct SiteResult {
    /// Request URI of the site.
    pub uri: FreenetUri,
    /// Insert URI (SSK/USK targets).
    pub insert_uri: Option<FreenetUri>,
    /// The manifest inserted (keep it for the next edition).
    pub manifest: Manifest,
    /// Files inserted.
    pub inserted: usize,
    /// Files reused from the previous manifest.
    pub reused: usize,
    /// Blocks handed to the sink.
    pub blocks: u64,
}

/// Insert a site: every file, then the manifest under `opts.target`.
///
/// # Errors
/// [`InsertError::InvalidSite`] for a bad path or a file/directory
/// conflict; otherwise as [`insert`].
pub async fn insert_site<S: BlockSink>(
    sink: &S,
    files: Vec<SiteFile>,
    opts: &SiteOptions,
) -> Result<SiteResult, InsertError> {
    let mut rng = match opts.insert.seed {
        Some(s) => rand::rngs::StdRng::from_seed(s),
        None => rand::rngs::StdRng::from_entropy(),
    };
    let target = resolve_target(&opts.target, None, &mut rng)?;
    let randomise = opts
        .insert
        .randomise_keys
        .unwrap_or(!matches!(target, Target::Chk));
    let mut root = Manifest::default();
    let (mut inserted, mut reused, mut blocks) = (0, 0, 0u64);
    for file in files {
        let comps = split_path(&file.path)?;
        let mime = file
            .mime
            .clone()
            .or_else(|| guess_mime(&file.path).map(str::to_owned));
        let previous = opts.previous.as_ref().and_then(|m| lookup(m, &comps));
        let known_hash = match &file.data {
            SiteData::Bytes(b) => Some(lichen_crypto::sha256(b)),
            SiteData::Reader { sha256, .. } => *sha256,
            SiteData::Redirect(_) => None,
        };
        let entry = match (previous, known_hash) {
            (Some(prev), Some(h)) if unchanged(prev, h, mime.as_deref()) => {
                reused += 1;
                prev.clone()
            }
            _ => {
                inserted += 1;
                let file_opts = InsertOptions {
                    target: FreenetUri::new(KeyUri::ChkInsert),
                    mime: mime.clone(),
                    filename: None,
                    randomise_keys: Some(randomise),
                    seed: Some(rng.gen()),
                    ..opts.insert.clone()
                };
                match file.data {
                    SiteData::Redirect(uri) => Metadata::Redirect(Redirect {
                        target: uri.to_string(),
                        mime,
                        size: None,
                        sha256: None,
                    }),
                    SiteData::Bytes(b) if b.len() <= opts.inline_max => Metadata::Inline(Inline {
                        mime,
                        codec: Codec::None.id(),
                        size: b.len() as u64,
                        sha256: known_hash.map(Hash),
                        data: b,
                    }),
                    SiteData::Bytes(b) => {
                        let r = insert(sink, &b[..], &file_opts).await?;
                        blocks += r.blocks;
                        redirect_to(&r)
                    }
                    SiteData::Reader { reader, .. } => {
                        let r = insert(sink, reader, &file_opts).await?;
                        blocks += r.blocks;
                        redirect_to(&r)
                    }
                }
            }
        };
        add(&mut root, &comps, entry)?;
    }
    root.default = match &opts.default_name {
        Some(d) => Some(d.clone()),
        None => root
            .entries
            .contains_key("index.html")
            .then(|| "index.html".to_owned()),
    };
    set_sub_defaults(&mut root);
    let manifest = Metadata::Manifest(root);
    manifest
        .validate()
        .map_err(|e| InsertError::InvalidSite(e.to_string().into()))?;
    let seed = randomise.then(|| rng.gen::<[u8; 32]>());
    let pace = crate::pace::Pace::new(rng.gen(), opts.insert.jitter);
    let mut ctx = Ctx::new(sink, opts.insert.concurrency, seed, pace);
    let info = DocInfo {
        mime: None,
        size: None,
        sha256: None,
    };
    let (uri, insert_uri) = place(&mut ctx, Doc::Meta(manifest.clone()), &target, &info).await?;
    let Metadata::Manifest(manifest) = manifest else {
        return Err(InsertError::Internal("manifest changed type".into()));
    };
    Ok(SiteResult {
        uri,
        insert_uri,
        manifest,
        inserted,
        reused,
        blocks: blocks + ctx.blocks,
    })
}

fn redirect_to(r: &crate::insert::InsertResult) -> Metadata {
    Metadata::Redirect(Redirect {
        target: r.uri.to_string(),
        mime: r.mime.clone(),
        size: Some(r.size),
        sha256: Some(Hash(r.sha256)),
    })
}

fn unchanged(prev: &Metadata, hash: [u8; 32], mime: Option<&str>) -> bool {
    let prev_hash = match prev {
        Metadata::Redirect(r) => r.sha256,
        Metadata::Inline(i) => i.sha256,
        _ => None,
    };
    prev_hash == Some(Hash(hash)) && prev.mime() == mime
}

fn split_path(path: &str) -> Result<Vec<String>, InsertError> {
    let comps: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    for c in &comps {
        if c.is_empty() || c == "." || c == ".." || c.chars().any(char::is_control) {
            return Err(InsertError::InvalidSite(
                format!("path {path:?} has an empty, '.', '..' or control-character component")
                    .into(),
            ));
        }
    }
    Ok(comps)
}

fn lookup<'m>(m: &'m Manifest, comps: &[String]) -> Option<&'m Metadata> {
    let (first, rest) = comps.split_first()?;
    let e = m.entries.get(first)?;
    if rest.is_empty() {
        return Some(e);
    }
    match e {
        Metadata::Manifest(sub) => lookup(sub, rest),
        _ => None,
    }
}

fn add(m: &mut Manifest, comps: &[String], entry: Metadata) -> Result<(), InsertError> {
    let Some((first, rest)) = comps.split_first() else {
        return Err(InsertError::InvalidSite(String::from("empty path").into()));
    };
    if rest.is_empty() {
        if m.entries.contains_key(first) {
            return Err(InsertError::InvalidSite(
                format!("{first:?} appears twice or is both a file and a directory").into(),
            ));
        }
        m.entries.insert(first.clone(), entry);
        return Ok(());
    }
    let sub = m
        .entries
        .entry(first.clone())
        .or_insert_with(|| Metadata::Manifest(Manifest::default()));
    match sub {
        Metadata::Manifest(sub) => add(sub, rest, entry),
        _ => Err(InsertError::InvalidSite(
            format!("{first:?} is both a file and a directory").into(),
        )),
    }
}

fn set_sub_defaults(m: &mut Manifest) {
    for e in m.entries.values_mut() {
        if let Metadata::Manifest(sub) = e {
            if sub.default.is_none() && sub.entries.contains_key("index.html") {
                sub.default = Some("index.html".to_owned());
            }
            set_sub_defaults(sub);
        }
    }
}

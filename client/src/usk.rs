//! USK editions: edition N of site S lives at SSK document `S-N`.
//!
//! Finding the latest edition: probe `from`, then `from+1`, `from+3`,
//! `from+7`, … (doubling steps) until a miss, then binary-search between the
//! last hit and the first miss. The number of probes is bounded by the
//! caller; editions are assumed to be inserted without gaps.

use crate::error::FetchError;
use crate::io::{BlockSource, SourceError};
use lichen_crypto::ssk::SskPublic;
use lichen_crypto::uri::{usk_docname, SskKey};
use lichen_crypto::{verify_block, BlockKind, FreenetUri, KeyUri};

/// The SSK request URI that holds a USK URI's edition (`SSK@…/site-N`),
/// with the same meta-strings. `None` if `uri` is not a USK.
#[must_use]
pub fn usk_to_ssk(uri: &FreenetUri) -> Option<FreenetUri> {
    let KeyUri::Usk { key, site, edition } = &uri.key else {
        return None;
    };
    Some(FreenetUri {
        key: KeyUri::Ssk {
            key: SskKey::Public(key.public()),
            docname: usk_docname(site, edition.unsigned_abs()),
        },
        meta: uri.meta.clone(),
    })
}

/// True if edition `edition` of `site` exists (its SSK block is found and
/// verifies).
///
/// # Errors
/// Only [`FetchError::Cancelled`]; every other failure counts as "absent".
pub async fn edition_exists<S: BlockSource>(
    source: &S,
    key: &SskPublic,
    site: &str,
    edition: u64,
) -> Result<bool, FetchError> {
    let rk = key.routing_key(&usk_docname(site, edition));
    match source.fetch(BlockKind::Ssk, rk).await {
        Ok(block) => Ok(verify_block(BlockKind::Ssk, &rk, &block).is_ok()),
        Err(SourceError::Cancelled) => Err(FetchError::Cancelled),
        Err(_) => Ok(false),
    }
}

/// The latest edition at or after `from`, using at most `max_probes`
/// block fetches; `None` if `from` itself does not exist.
///
/// # Errors
/// [`FetchError::Cancelled`].
pub async fn find_latest_edition<S: BlockSource>(
    source: &S,
    key: &SskPublic,
    site: &str,
    from: u64,
    max_probes: u32,
) -> Result<Option<u64>, FetchError> {
    if max_probes == 0 || !edition_exists(source, key, site, from).await? {
        return Ok(None);
    }
    let mut probes = 1;
    let mut lo = from;
    let mut step = 1u64;
    let mut hi = None;
    while probes < max_probes {
        let Some(e) = lo.checked_add(step) else { break };
        probes += 1;
        if edition_exists(source, key, site, e).await? {
            lo = e;
            step = step.saturating_mul(2);
        } else {
            hi = Some(e);
            break;
        }
    }
    let Some(mut hi) = hi else {
        return Ok(Some(lo));
    };
    while hi - lo > 1 && probes < max_probes {
        let mid = lo + (hi - lo) / 2;
        probes += 1;
        if edition_exists(source, key, site, mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// The edition a new insert of `uri`'s site should use: one after the
/// latest found from the URI's edition, or the URI's edition if that one
/// does not exist yet.
///
/// # Errors
/// [`FetchError::InvalidUri`] if `uri` is not a USK; [`FetchError::Cancelled`].
pub async fn next_edition<S: BlockSource>(
    source: &S,
    uri: &FreenetUri,
    max_probes: u32,
) -> Result<u64, FetchError> {
    let KeyUri::Usk { key, site, edition } = &uri.key else {
        return Err(FetchError::InvalidUri(String::from("not a USK").into()));
    };
    let from = edition.unsigned_abs();
    Ok(
        match find_latest_edition(source, &key.public(), site, from, max_probes).await? {
            Some(l) => l + 1,
            None => from,
        },
    )
}

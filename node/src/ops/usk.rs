//! USK edition search: the one probe policy of the node.
//!
//! An FCP `ClientGet` of a USK (and every gateway fetch, which runs
//! through [`super::get`]), a USK insert looking for its next edition, a
//! `SubscribeUSK` poll and the gateway's look-ahead after serving an
//! edition all search with [`PROBES`] block fetches at most
//! (`lichen_client::usk::find_latest_edition`: doubling steps past the
//! newest known edition, then a binary search between the last hit and the
//! first miss).
//!
//! One count serves them all: 12 probes reach 2,047 editions past the
//! known one when every probe hits, far beyond how many editions a site
//! publishes between two visits, and a search ends after one miss plus a
//! binary search, so a fetch that waits for it is not slowed by the reach.
//! (Before, the subscription used 16 and the look-ahead 8; the
//! subscription polls again every 30 s from the newest edition found, so
//! the smaller reach per round loses nothing.)

use super::blocks::LocalBlocks;
use crate::util::blocking;
use lichen_crypto::ssk::SskPublic;
use lichen_crypto::uri::KeyUri;
use lichen_crypto::FreenetUri;

/// Block fetches one edition search makes at most.
pub(crate) const PROBES: u32 = 12;

/// The probes a fetch of `uri` makes for newer editions: [`PROBES`] for a
/// USK, none for other keys.
pub(super) fn fetch_probes(uri: &FreenetUri) -> u32 {
    if matches!(uri.key, KeyUri::Usk { .. }) {
        PROBES
    } else {
        0
    }
}

/// The latest edition of `site` under `key` at or after `from` (`None`
/// if `from` itself is not found, or the search failed), searched on a
/// blocking thread: for callers outside the client library
/// (`SubscribeUSK`, the gateway's look-ahead).
pub(crate) async fn latest_edition(
    blocks: LocalBlocks,
    key: SskPublic,
    site: String,
    from: u64,
) -> Option<u64> {
    let found = blocking::run(move || async move {
        lichen_client::usk::find_latest_edition(&blocks, &key, &site, from, PROBES).await
    })
    .await;
    match found {
        Ok(Ok(latest)) => latest,
        _ => None,
    }
}

/// For a USK insert target: the edition to insert (the one asked for, or
/// the one after the newest already there). Other URIs are returned as
/// they are.
pub(super) async fn insert_target(source: &LocalBlocks, uri: FreenetUri) -> FreenetUri {
    if let KeyUri::Usk { .. } = uri.key {
        if let Ok(next) = lichen_client::usk::next_edition(source, &uri, PROBES).await {
            return uri.with_edition(i64::try_from(next).unwrap_or(i64::MAX));
        }
    }
    uri
}

//! The newest USK editions the gateway knows of, and the background
//! look-ahead that finds newer ones, so a request for an old edition
//! redirects at once.

use crate::node::Node;
use crate::ops as engine;
use lichen_crypto::{FreenetUri, KeyUri};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Editions seen and probes running, per USK (`key/site`, see [`usk_id`]).
#[derive(Debug, Default)]
pub(super) struct UskEditions {
    /// Newest edition seen per USK.
    latest: Mutex<HashMap<String, i64>>,
    /// USKs whose next editions are being probed in the background.
    probing: Mutex<HashSet<String>>,
}

impl UskEditions {
    /// Edition `ed` of USK `id` exists: keep the newest seen.
    pub(super) fn note(&self, id: String, ed: i64) {
        if let Ok(mut m) = self.latest.lock() {
            let v = m.entry(id).or_insert(ed);
            *v = (*v).max(ed);
        }
    }

    /// The newest edition seen of USK `id`.
    pub(super) fn latest(&self, id: &str) -> Option<i64> {
        self.latest.lock().ok().and_then(|m| m.get(id).copied())
    }
}

/// After serving edition `ed` of a USK, look for newer editions in the
/// background (one probe task per USK at a time); a newer one found makes
/// the next request for an old edition redirect at once.
pub(super) fn look_ahead(
    editions: &Arc<UskEditions>,
    node: &Arc<Node>,
    uri: &FreenetUri,
    id: String,
    ed: i64,
) {
    let KeyUri::Usk { key, site, .. } = &uri.key else {
        return;
    };
    let Ok(from) = u64::try_from(ed) else { return };
    if !editions
        .probing
        .lock()
        .is_ok_and(|mut p| p.insert(id.clone()))
    {
        return;
    }
    let (editions, node) = (editions.clone(), node.clone());
    let (public, site) = (key.public(), site.clone());
    tokio::spawn(async move {
        let blocks = engine::LocalBlocks::new(node);
        // The one USK search policy (`ops::usk::PROBES`).
        let found = engine::usk::latest_edition(blocks, public, site, from + 1).await;
        if let Some(latest) = found {
            if let Ok(latest) = i64::try_from(latest) {
                editions.note(id.clone(), latest);
            }
        }
        if let Ok(mut p) = editions.probing.lock() {
            p.remove(&id);
        }
    });
}

/// A USK's identity without its edition (`key/site`), and the edition.
pub(super) fn usk_id(u: &FreenetUri) -> Option<(String, i64)> {
    match &u.key {
        KeyUri::Usk { edition, .. } => {
            let base = u.to_request().with_edition(0);
            let mut base = FreenetUri::new(base.key);
            base.meta.clear();
            Some((base.to_string(), *edition))
        }
        _ => None,
    }
}

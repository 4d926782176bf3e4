//! The remembered peers: `peers.toml` in the data directory.
//!
//! The node keeps the noderefs of its friends (darknet peers the user
//! added) and of the opennet peers it connected to, so that after a restart
//! it can reconnect without seeds. Only noderefs this node dialed are known
//! (a link carries no noderef), so opennet peers that connected to us are
//! not remembered here; they remember us.
//!
//! File format (TOML, written atomically with mode 0600; see
//! `docs/running.md`):
//!
//! ```toml
//! version = 1
//!
//! [[peer]]
//! kind = "friend"            # or "opennet"
//! noderef = "lichen-noderef-v1:…"
//! last_seen = 1700000000000  # ms since the Unix epoch, 0: never connected
//! failures = 0               # connection attempts failed in a row
//!
//! [[guard]]                  # the first hops of this node's tunnels
//! key = "9f3c…"              # static key, 64 hex digits
//! added = 1700000000000      # ms since the Unix epoch: became a guard
//! seen = 1700000000000       # last connected
//! attempts = 40              # tunnels started through it
//! built = 38                 # of those, built
//! ```
//!
//! Guards are kept so that a restart does not draw new first hops (which
//! would undo what guards are for: `docs/tunnels.md`). A guard saved before
//! this run started counts as added and seen when the run started (the
//! tunnel layer's clock starts there): a restart lengthens a guard's
//! lifetime and its grace while gone, never shortens them.
//!
//! Loading never fails the node: an unreadable or damaged file is reported
//! and moved aside (`peers.toml.damaged`), a bad entry is skipped. Friends
//! are kept however often they fail; opennet entries are bounded
//! (most recently seen first) and forgotten after [`FORGET_AFTER`]
//! failed attempts in a row once not seen for a day.

use super::noderef::NodeRef;
use lichen_routing::NoderefBytes;
use lichen_tunnel::guards::Guard;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Format version this node writes and reads.
pub const VERSION: u32 = 1;
/// Failed connection attempts in a row after which an opennet entry is
/// forgotten (if it was also not seen for [`FORGET_MIN_AGE_MS`]).
pub const FORGET_AFTER: u32 = 8;
/// An opennet entry seen this recently is kept however often it fails (an
/// hour offline must not wipe the list).
pub const FORGET_MIN_AGE_MS: u64 = 24 * 3600 * 1000;
/// Most friends kept (an input bound, not a policy: Fred has no limit).
pub const MAX_FRIENDS: usize = 1000;

/// How a peer came to be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// Added by the user (darknet friend): always reconnected, never
    /// forgotten, accepted on a darknet node.
    Friend,
    /// An opennet peer this node connected to (seed, announcement, path
    /// folding).
    Opennet,
}

/// One remembered peer.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Friend or opennet.
    pub kind: PeerKind,
    /// The verified noderef (shared: in the simulator hundreds of lists
    /// hold the same one).
    pub noderef: Arc<NodeRef>,
    /// Its signed binary form (kept as received: only its owner can sign).
    pub bytes: NoderefBytes,
    /// When a link to it last came up (ms since the epoch; 0: never).
    pub last_seen: u64,
    /// Failed connection attempts since it was last seen.
    pub failures: u32,
    /// The first 8 bytes of `noderef.static_key`, kept beside the entry:
    /// lookups by key walk the list and compare this first (the shared
    /// noderef is one cache miss away). Not the whole key: a simulated
    /// node keeps up to 40 entries, and 24 bytes less an entry is ~1 KiB.
    tag: u64,
}

impl std::fmt::Debug for Entry {
    // Noderefs identify nodes: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("last_seen", &self.last_seen)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The noderef's text form.
    #[must_use]
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            super::noderef::PREFIX,
            lichen_crypto::b64::encode(&self.bytes)
        )
    }

    /// The peer's static key.
    #[must_use]
    pub fn key(&self) -> [u8; 32] {
        self.noderef.static_key
    }

    /// Whether this is the entry of static key `key`.
    fn is(&self, key: &[u8; 32]) -> bool {
        self.tag == tag(key) && self.noderef.static_key == *key
    }
}

/// An entry's [`Entry::tag`]: the first 8 bytes of a static key.
fn tag(key: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    u64::from_le_bytes(b)
}

/// What [`PeerList::add_friend`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A new friend.
    New,
    /// It was an opennet peer; now it is a friend.
    Promoted,
    /// It already was a friend (its noderef was refreshed).
    AlreadyFriend,
}

/// The remembered peers, friends first, then opennet entries most
/// recently seen first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerList {
    entries: Vec<Entry>,
    max_opennet: usize,
    /// The tunnel guards (times: ms since the Unix epoch).
    guards: Vec<Guard>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(default)]
    peer: Vec<OnDiskEntry>,
    #[serde(default)]
    guard: Vec<OnDiskGuard>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDiskGuard {
    key: String,
    added: u64,
    seen: u64,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    built: u32,
}

/// Most guards saved (the tunnel layer keeps a few besides its two).
pub const SAVED_GUARDS: usize = 8;

fn to_hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = char::from(s[2 * i]).to_digit(16)?;
        let lo = char::from(s[2 * i + 1]).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDiskEntry {
    kind: PeerKind,
    noderef: String,
    #[serde(default)]
    last_seen: u64,
    #[serde(default)]
    failures: u32,
}

impl PeerList {
    /// An empty list keeping at most `max_opennet` opennet entries.
    #[must_use]
    pub fn new(max_opennet: usize) -> Self {
        PeerList {
            entries: Vec::new(),
            max_opennet,
            guards: Vec::new(),
        }
    }

    /// The saved tunnel guards (times in ms since the Unix epoch).
    #[must_use]
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// Replace the saved tunnel guards (at most [`SAVED_GUARDS`] are kept).
    pub fn set_guards(&mut self, mut guards: Vec<Guard>) {
        guards.truncate(SAVED_GUARDS);
        self.guards = guards;
    }

    /// All entries, friends first.
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry for a static key.
    #[must_use]
    pub fn get(&self, key: &[u8; 32]) -> Option<&Entry> {
        self.entries.iter().find(|e| e.is(key))
    }

    /// Whether `key` is a friend.
    #[must_use]
    pub fn is_friend(&self, key: &[u8; 32]) -> bool {
        // Friends come first (every change sorts the list).
        self.entries
            .iter()
            .take_while(|e| e.kind == PeerKind::Friend)
            .any(|e| e.is(key))
    }

    /// Number of friends.
    #[must_use]
    pub fn friend_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == PeerKind::Friend)
            .count()
    }

    /// Add (or promote to) a friend. `bytes` is the signed noderef.
    ///
    /// # Errors
    /// The friend list is full ([`MAX_FRIENDS`]).
    pub fn add_friend(&mut self, noderef: NodeRef, bytes: NoderefBytes) -> Result<Added, String> {
        let key = noderef.static_key;
        if let Some(e) = self.entries.iter_mut().find(|e| e.is(&key)) {
            let was = e.kind;
            e.kind = PeerKind::Friend;
            e.noderef = Arc::new(noderef);
            e.bytes = bytes;
            e.failures = 0;
            self.sort();
            return Ok(if was == PeerKind::Friend {
                Added::AlreadyFriend
            } else {
                Added::Promoted
            });
        }
        if self.friend_count() >= MAX_FRIENDS {
            return Err(format!("at most {MAX_FRIENDS} friends"));
        }
        self.entries.push(Entry {
            kind: PeerKind::Friend,
            tag: tag(&key),
            noderef: Arc::new(noderef),
            bytes,
            last_seen: 0,
            failures: 0,
        });
        self.sort();
        Ok(Added::New)
    }

    /// A link to the node came up at `now_ms`. A node not in the list is
    /// remembered as an opennet peer (when `remember` is true: we dialed it
    /// and hold its noderef). Returns whether the list gained an entry.
    pub fn seen(
        &mut self,
        noderef: Option<(&Arc<NodeRef>, &NoderefBytes)>,
        key: &[u8; 32],
        now_ms: u64,
    ) -> bool {
        if let Some(e) = self.entries.iter_mut().find(|e| e.is(key)) {
            e.last_seen = now_ms;
            e.failures = 0;
            if let Some((r, b)) = noderef.filter(|(r, _)| r.static_key == *key) {
                // A newer noderef of the same node (new address).
                e.noderef = Arc::clone(r);
                e.bytes = NoderefBytes::clone(b);
            }
            self.sort();
            return false;
        }
        let Some((r, b)) = noderef else {
            return false;
        };
        if self.max_opennet == 0 {
            return false;
        }
        if self.entries.len() == self.entries.capacity() {
            // Grown to what the list may hold, not doubled past it (a
            // seed's and the simulator's many lists are full ones).
            let room =
                (self.max_opennet + self.friend_count() + 1).saturating_sub(self.entries.len());
            self.entries.reserve_exact(room.clamp(1, 8));
        }
        self.entries.push(Entry {
            kind: PeerKind::Opennet,
            tag: tag(&r.static_key),
            noderef: Arc::clone(r),
            bytes: NoderefBytes::clone(b),
            last_seen: now_ms,
            failures: 0,
        });
        self.sort();
        self.trim();
        self.get(key).is_some()
    }

    /// A connection attempt failed at `now_ms`. Returns true if the entry
    /// was forgotten (opennet, [`FORGET_AFTER`] failures in a row and not
    /// seen for [`FORGET_MIN_AGE_MS`]).
    pub fn failed(&mut self, key: &[u8; 32], now_ms: u64) -> bool {
        let Some(i) = self.entries.iter().position(|e| e.is(key)) else {
            return false;
        };
        let e = &mut self.entries[i];
        e.failures = e.failures.saturating_add(1);
        if e.kind == PeerKind::Opennet
            && e.failures >= FORGET_AFTER
            && now_ms.saturating_sub(e.last_seen) >= FORGET_MIN_AGE_MS
        {
            self.entries.remove(i);
            return true;
        }
        false
    }

    /// Forget a peer.
    pub fn remove(&mut self, key: &[u8; 32]) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.is(key))?;
        Some(self.entries.remove(i))
    }

    /// Friends first, then opennet entries most recently seen first.
    fn sort(&mut self) {
        self.entries.sort_by(|a, b| {
            let rank = |e: &Entry| u8::from(e.kind != PeerKind::Friend);
            rank(a)
                .cmp(&rank(b))
                .then_with(|| b.last_seen.cmp(&a.last_seen))
        });
    }

    /// Keep at most `max_opennet` opennet entries (the most recent).
    fn trim(&mut self) {
        let mut opennet = 0;
        let max = self.max_opennet;
        self.entries.retain(|e| {
            if e.kind == PeerKind::Friend {
                return true;
            }
            opennet += 1;
            opennet <= max
        });
    }

    /// The file's text.
    #[must_use]
    pub fn to_toml(&self) -> String {
        let d = OnDisk {
            version: VERSION,
            peer: self
                .entries
                .iter()
                .map(|e| OnDiskEntry {
                    kind: e.kind,
                    noderef: e.text(),
                    last_seen: e.last_seen,
                    failures: e.failures,
                })
                .collect(),
            guard: self
                .guards
                .iter()
                .map(|g| OnDiskGuard {
                    key: to_hex(&g.key),
                    added: g.added,
                    seen: g.seen,
                    attempts: g.attempts,
                    built: g.built,
                })
                .collect(),
        };
        let body = toml::to_string(&d).unwrap_or_default();
        format!("# Lichen's remembered peers (docs/running.md). Written by the node.\n{body}")
    }

    /// Parse a file's text. Entries whose noderef does not verify are
    /// skipped and reported in the second value (by position only).
    ///
    /// # Errors
    /// A message if the text is not a peer list at all.
    pub fn from_toml(text: &str, max_opennet: usize) -> Result<(Self, Vec<String>), String> {
        let d: OnDisk = toml::from_str(text).map_err(|e| e.to_string())?;
        if d.version != VERSION {
            return Err(format!("unknown version {}", d.version));
        }
        let mut list = PeerList::new(max_opennet);
        let mut warnings = Vec::new();
        for (i, p) in d.peer.into_iter().enumerate() {
            let (noderef, bytes) = match parse_noderef(&p.noderef) {
                Ok(x) => x,
                Err(e) => {
                    warnings.push(format!("peer entry {} skipped: {e}", i + 1));
                    continue;
                }
            };
            if list.get(&noderef.static_key).is_some() {
                warnings.push(format!("peer entry {} skipped: a duplicate", i + 1));
                continue;
            }
            if p.kind == PeerKind::Friend && list.friend_count() >= MAX_FRIENDS {
                warnings.push(format!("peer entry {} skipped: too many friends", i + 1));
                continue;
            }
            list.entries.push(Entry {
                kind: p.kind,
                tag: tag(&noderef.static_key),
                noderef: Arc::new(noderef),
                bytes,
                last_seen: p.last_seen,
                failures: p.failures,
            });
        }
        for (i, g) in d.guard.into_iter().enumerate() {
            let Some(key) = from_hex(&g.key) else {
                warnings.push(format!("guard entry {} skipped: not a key", i + 1));
                continue;
            };
            if list.guards.len() >= SAVED_GUARDS || list.guards.iter().any(|x| x.key == key) {
                warnings.push(format!(
                    "guard entry {} skipped: too many or a duplicate",
                    i + 1
                ));
                continue;
            }
            list.guards.push(Guard {
                key,
                added: g.added,
                seen: g.seen,
                attempts: g.attempts,
                built: g.built.min(g.attempts),
            });
        }
        list.sort();
        list.trim();
        Ok((list, warnings))
    }
}

/// Parse and verify a noderef's text form, keeping its signed bytes.
///
/// # Errors
/// [`NoderefError`](super::NoderefError); never panics.
pub fn parse_noderef(text: &str) -> Result<(NodeRef, NoderefBytes), super::NoderefError> {
    let r = NodeRef::parse(text)?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = compact
        .strip_prefix(super::noderef::PREFIX)
        .and_then(lichen_crypto::b64::decode)
        .ok_or(super::NoderefError::BadBase64)?;
    Ok((r, bytes.into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::NodeKeys;

    fn noderef(i: u8) -> (NodeRef, NoderefBytes) {
        let keys = NodeKeys::from_static_secret([i; 32]);
        let r = NodeRef::new(
            &keys,
            vec![format!("127.0.0.1:{}", 20000 + u16::from(i))
                .parse()
                .unwrap()],
            Some(u64::from(i) << 56),
        );
        let b = r.to_bytes(&keys).into();
        (r, b)
    }

    #[test]
    fn a_bad_entry_is_skipped_and_the_rest_kept() {
        let mut l = PeerList::new(4);
        let (f, fb) = noderef(1);
        l.add_friend(f.clone(), fb).unwrap();
        let text = l.to_toml();
        // A second entry whose noderef was edited (signature fails).
        let (o, ob) = noderef(2);
        let mut tampered = ob.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let bad = format!(
            "{text}\n[[peer]]\nkind = \"opennet\"\nnoderef = \"{}{}\"\n",
            super::super::noderef::PREFIX,
            lichen_crypto::b64::encode(&tampered)
        );
        let (back, warnings) = PeerList::from_toml(&bad, 4).unwrap();
        assert_eq!(back.entries().len(), 1);
        assert!(back.is_friend(&f.static_key));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("entry 2"), "{warnings:?}");
        // Warnings never carry the noderef or the address.
        assert!(!warnings[0].contains("127.0.0.1"));
        let _ = o;
    }

    #[test]
    fn opennet_entries_are_bounded_most_recent_first_friends_kept() {
        let mut l = PeerList::new(3);
        for i in 1..=3u8 {
            let (f, fb) = noderef(100 + i);
            l.add_friend(f, fb).unwrap();
        }
        for i in 1..=10u8 {
            let (o, ob) = noderef(i);
            l.seen(
                Some((&Arc::new(o.clone()), &ob)),
                &o.static_key,
                u64::from(i) * 1000,
            );
        }
        assert_eq!(l.friend_count(), 3);
        let opennet: Vec<u64> = l
            .entries()
            .iter()
            .filter(|e| e.kind == PeerKind::Opennet)
            .map(|e| e.last_seen)
            .collect();
        assert_eq!(opennet, vec![10_000, 9_000, 8_000]);
        // Friends first.
        assert!(l.entries()[..3].iter().all(|e| e.kind == PeerKind::Friend));
        // Reloading a file with more entries than the bound trims it too.
        let mut big = PeerList::new(10);
        for i in 1..=10u8 {
            let (o, ob) = noderef(i);
            big.seen(
                Some((&Arc::new(o.clone()), &ob)),
                &o.static_key,
                u64::from(i),
            );
        }
        let (small, _) = PeerList::from_toml(&big.to_toml(), 2).unwrap();
        assert_eq!(small.entries().len(), 2);
        assert_eq!(small.entries()[0].last_seen, 10);
    }

    #[test]
    fn repeated_failures_forget_opennet_but_never_friends() {
        let mut l = PeerList::new(4);
        let (f, fb) = noderef(1);
        let (o, ob) = noderef(2);
        l.add_friend(f.clone(), fb).unwrap();
        l.seen(Some((&Arc::new(o.clone()), &ob)), &o.static_key, 5);
        let later = 5 + FORGET_MIN_AGE_MS;
        for _ in 1..FORGET_AFTER {
            assert!(!l.failed(&o.static_key, later));
        }
        // Seeing it again resets the count.
        l.seen(None, &o.static_key, 6);
        for _ in 1..FORGET_AFTER {
            assert!(!l.failed(&o.static_key, later));
        }
        // Failing often but seen recently: kept.
        assert!(!l.failed(&o.static_key, 7));
        assert!(!l.failed(&o.static_key, 6 + FORGET_MIN_AGE_MS - 1));
        assert!(l.failed(&o.static_key, later + 1));
        assert!(l.get(&o.static_key).is_none());
        for _ in 0..FORGET_AFTER * 3 {
            assert!(!l.failed(&f.static_key, u64::MAX));
        }
        assert!(l.is_friend(&f.static_key));
        // Adding an opennet peer as a friend promotes it; twice is a duplicate.
        let (p, pb) = noderef(3);
        l.seen(Some((&Arc::new(p.clone()), &pb)), &p.static_key, 7);
        assert_eq!(
            l.add_friend(p.clone(), pb.clone()).unwrap(),
            Added::Promoted
        );
        assert_eq!(l.add_friend(p, pb).unwrap(), Added::AlreadyFriend);
        // Not remembering unknown inbound peers (no noderef).
        let before = l.entries().len();
        assert!(!l.seen(None, &[9; 32], 8));
        assert_eq!(l.entries().len(), before);
    }

    #[test]
    fn guards_round_trip_and_bad_guard_entries_are_skipped() {
        let mut l = PeerList::new(4);
        let g = |b: u8| Guard {
            key: [b; 32],
            added: 1_700_000_000_000,
            seen: 1_700_000_100_000,
            attempts: 30,
            built: 29,
        };
        l.set_guards((0..12).map(g).collect());
        assert_eq!(l.guards().len(), SAVED_GUARDS, "at most SAVED_GUARDS kept");
        let (back, w) = PeerList::from_toml(&l.to_toml(), 4).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(back.guards(), l.guards());
        let text = format!(
            "version = 1\n[[guard]]\nkey = \"zz\"\nadded = 1\nseen = 1\n\
             [[guard]]\nkey = \"{k}\"\nadded = 1\nseen = 2\nattempts = 3\nbuilt = 9\n\
             [[guard]]\nkey = \"{k}\"\nadded = 1\nseen = 2\n",
            k = "ab".repeat(32)
        );
        let (back, w) = PeerList::from_toml(&text, 4).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(back.guards().len(), 1);
        assert_eq!(back.guards()[0].key, [0xab; 32]);
        assert_eq!(back.guards()[0].built, 3, "built is at most attempts");
        assert!(PeerList::from_toml("version = 1\n[[guard]]\nkey = 5\n", 4).is_err());
    }
}

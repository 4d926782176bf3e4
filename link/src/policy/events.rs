//! The policy's steps: every event the driver reports, and the commands of
//! the node's user.

use super::invites::Stage;
use super::{
    identity_of, keep_new_link, key_tag, retry_delay, AddFriendError, Dialed, LinkState, Output,
    PeerInfo, PeerPolicy, Refused, BAN, DROPPED_RETRY, HELLO_DEADLINE, MAX_BANNED,
    MAX_PEERS_PER_PREFIX, MAX_SEED_CLIENTS_PER_PREFIX, OPENNET_RETRY_MAX, RETRY_BASE, SAVE_EVERY,
    SEEDS_AT_ONCE, SEED_RETRY, SHORT_LINK,
};
use crate::noderef::NodeRef;
use crate::peerlist::{Added, Entry, PeerKind};
use lichen_routing::{
    Action, BlockSource, LocalRequest, Location, Message, NoderefBytes, PeerId, RequestId, Verifier,
};
use rand::RngCore;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Entries an empty output queue keeps room for.
const IDLE_QUEUE: usize = 4;

impl<V: Verifier> PeerPolicy<V> {
    // ----------------------------------------------------------- links

    /// Dial `noderef` (bytes: its signed form, to remember it) unless it
    /// is this node, already linked, banned or being dialed.
    pub fn dial(
        &mut self,
        now: Instant,
        noderef: impl Into<Arc<NodeRef>>,
        bytes: Option<NoderefBytes>,
    ) {
        let noderef = noderef.into();
        let key = noderef.static_key;
        if key == self.cfg.own_key
            || self.link_to(&key).is_some()
            || self.is_banned(now, &key)
            || !self.dialing.insert(key)
        {
            return;
        }
        self.out.push_back(Output::Dial { noderef, bytes });
        // A node that asked for an introduction to us before we listed
        // it (two people adding each other one after the other) has its
        // offer answered now: one punch, no ask of our own.
        if self.answer_held_offer(now, &key) {
            return;
        }
        // From behind NAT, a dial to a node behind NAT hangs until it
        // times out (10 s): a friend or remembered peer's introduction
        // is asked for at once, as if the dial had failed. If the dial
        // wins, the introduction finds the link up and stops.
        if self.node.behind_nat() {
            self.punch_after_failed_dial(now, &key);
        }
    }

    /// A dial asked for by [`Output::Dial`] failed.
    pub fn dial_failed(&mut self, now: Instant, key: &[u8; 32]) {
        self.dialing.remove(key);
        self.redeem_done(*key, None);
        self.failed(now, key);
        self.punch_after_failed_dial(now, key);
    }

    /// A link to the node with static key `remote` came up (`dialed`: we
    /// dialed it, as [`Output::Dial`] asked; `from`: the address an
    /// inbound link came from, for the per-network limits; a dialed link
    /// counts under its noderef's first address). `Ok`: the link's id (the
    /// hello is queued); `Err`: close it.
    ///
    /// # Errors
    /// [`Refused`]: why the link is not kept.
    pub fn link_up(
        &mut self,
        now: Instant,
        remote: [u8; 32],
        dialed: Option<Dialed>,
        from: Option<IpAddr>,
        rng: &mut impl RngCore,
    ) -> Result<PeerId, Refused> {
        if dialed.is_some() {
            self.dialing.remove(&remote);
        }
        let (stage, first) = self.invite_stage(now, &remote, dialed.is_some());
        self.admit(now, remote, dialed.is_some(), stage != Stage::None, rng)?;
        let pid = PeerId(self.next_peer);
        self.next_peer += 1;
        if let Some(msg) = first {
            self.out.push_back(Output::Send { peer: pid, msg });
        }
        let hello_now = stage == Stage::None;
        let dialed_now = dialed.is_some();
        let ip = from.or_else(|| {
            dialed
                .as_ref()
                .and_then(|d| d.noderef.addresses.first().map(SocketAddr::ip))
        });
        self.punch_linked(&remote);
        self.insert_link(
            pid,
            LinkState {
                remote,
                routed: false,
                dialed: dialed.map(Box::new),
                since: self.ms(now),
                location: 0,
                located: false,
                seed_client: false,
                ip,
                introduced: None,
                stage,
            },
        );
        if hello_now {
            self.send_hello(pid, dialed_now);
        }
        tracing::debug!(peer = pid.0, "link up");
        Ok(pid)
    }

    /// Hello on link `pid`: our location. Opennet, when we dialed: then
    /// our noderef, so the node we dialed can remember us too.
    pub(super) fn send_hello(&mut self, pid: PeerId, dialed: bool) {
        self.out.push_back(Output::Send {
            peer: pid,
            msg: Message::LocationChanged {
                location: self.location,
            },
        });
        if let (true, true, Some(own)) = (self.cfg.opennet, dialed, &self.cfg.noderef) {
            self.out.push_back(Output::Send {
                peer: pid,
                msg: Message::Noderef {
                    noderef: own.clone(),
                },
            });
        }
    }

    /// Close link `pid` before its hello: a dial that brought it counts
    /// as failed, an invitation being used on it as refused.
    pub(super) fn drop_unrouted(&mut self, now: Instant, pid: PeerId) {
        let Some(p) = self.remove_link(&pid) else {
            return;
        };
        if p.dialed.is_some() {
            self.failed(now, &p.remote);
        }
        if p.stage == Stage::AwaitWelcome {
            self.redeem_done(p.remote, None);
        }
        self.out.push_back(Output::Close { peer: pid });
    }

    /// Whether a new link to `remote` may stay (`invited`: an invitation
    /// is being used on it, so a darknet node keeps it until its first
    /// message); closes the one it replaces.
    fn admit(
        &mut self,
        now: Instant,
        remote: [u8; 32],
        new_dialed: bool,
        invited: bool,
        rng: &mut impl RngCore,
    ) -> Result<(), Refused> {
        if remote == self.cfg.own_key {
            return Err(Refused::Myself);
        }
        if self.is_banned(now, &remote) {
            tracing::debug!("refused a link from a peer banned for misbehaviour");
            return Err(Refused::Banned);
        }
        if !self.cfg.opennet && !self.list.is_friend(&remote) && !invited {
            tracing::debug!("refused a link from a node that is not a friend");
            return Err(Refused::NotAFriend);
        }
        let Some(old) = self.link_to(&remote) else {
            return Ok(());
        };
        let replace = self.links.get(&old).is_none_or(|p| {
            keep_new_link(
                self.age(now, p.since),
                p.dialed.is_some(),
                new_dialed,
                &self.cfg.own_key,
                &remote,
            )
        });
        if !replace {
            tracing::debug!(peer = old.0, "second link to a peer closed");
            return Err(Refused::Duplicate);
        }
        tracing::debug!(peer = old.0, "link replaced by a newer one");
        if let Some(p) = self.remove_link(&old) {
            if p.routed {
                let ms = self.ms(now);
                self.node.remove_peer(ms, old, rng);
                self.tunnel_peer_gone(old);
            }
            self.out.push_back(Output::Close { peer: old });
        }
        Ok(())
    }

    /// A message arrived on link `peer`. `source`: the blocks peers may be
    /// served (the shared spaces, never the client cache).
    pub fn message(
        &mut self,
        now: Instant,
        peer: PeerId,
        msg: Message,
        source: &mut impl BlockSource,
        rng: &mut impl RngCore,
    ) {
        let Some(p) = self.links.get_mut(&peer) else {
            return;
        };
        if let Message::LocationChanged { location: l } = &msg {
            p.location = l.0;
            p.located = true;
        }
        if !p.routed {
            let stage = p.stage;
            if self.invite_message(now, peer, stage, &msg, rng) {
                return;
            }
            if let Message::LocationChanged { location: l } = msg {
                self.hello(now, peer, l, rng);
            } else {
                tracing::debug!(peer = peer.0, "message before the hello dropped");
            }
        } else if matches!(
            msg,
            Message::DialBack { .. } | Message::DialBackResult { .. }
        ) {
            // Seed clients too: a newcomer's first links are to seeds.
            self.reach_message(now, peer, msg);
        } else if matches!(
            msg,
            Message::PunchAsk { .. }
                | Message::PunchOffer { .. }
                | Message::PunchReady { .. }
                | Message::PunchGo { .. }
        ) {
            if !p.seed_client {
                self.punch_message(now, peer, msg);
            }
        } else if let Message::Noderef { noderef } = msg {
            self.introduced(now, peer, noderef);
        } else if let Message::Tunnel { cell } = msg {
            let ms = self.ms(now);
            if let Some(t) = &mut self.tunnels {
                if let Err(e) = t.handle(ms, &mut self.node, peer, &cell, rng) {
                    tracing::debug!(peer = peer.0, error = %e, "tunnel message refused");
                }
            }
        } else {
            tracing::trace!(peer = peer.0, msg = msg.name(), id = ?msg.id(), "recv");
            let seed_client = p.seed_client;
            let ms = self.ms(now);
            self.node.handle_message(ms, peer, msg, source, rng);
            if seed_client && self.node.peers().any(|(q, _)| q == peer) {
                self.promoted(now, peer, rng);
            }
            self.announce_through_next_seed(now, rng);
        }
    }

    /// Fewer than half the peers we may have: the routing core's rule for
    /// announcing again (`Node::maybe_schedule_announce`).
    fn under_connected(&self) -> bool {
        self.node.peer_count() < self.node.config().max_peers / 2
    }

    /// Our announcement has ended and we are still under-connected:
    /// announce through the next seed that linked while it was on its
    /// way ([`PeerPolicy::hello`]), one at a time. Without this a newcomer
    /// whose first seed answered its announcement at once and forwarded
    /// nothing waited for its next scheduled announcement (a minute, then
    /// two, …), which the routing core may send to the same seed.
    fn announce_through_next_seed(&mut self, now: Instant, rng: &mut impl RngCore) {
        if self.announce_next.is_empty() || self.node.announcing() {
            return;
        }
        if !self.under_connected() {
            self.announce_next.clear();
            return;
        }
        let ms = self.ms(now);
        while let Some(pid) = self.announce_next.pop_front() {
            // Nothing happens when it is no longer a peer.
            self.node.announce_via(ms, pid, rng);
            if self.node.announcing() {
                break;
            }
        }
    }

    /// The routing core took seed client `pid` as a peer (its announcement
    /// reached us when we wanted one: as if we had dialed it). Unless its
    /// network already holds [`MAX_PEERS_PER_PREFIX`] peers: then it goes.
    fn promoted(&mut self, now: Instant, pid: PeerId, rng: &mut impl RngCore) {
        let Some(prefix) = self.links.get(&pid).map(LinkState::prefix) else {
            return;
        };
        if self.prefix_count(prefix, false, pid) >= MAX_PEERS_PER_PREFIX {
            let ms = self.ms(now);
            self.node.remove_peer(ms, pid, rng);
            self.remove_link(&pid);
            self.out.push_back(Output::Close { peer: pid });
            return;
        }
        let Some(l) = self.links.get_mut(&pid) else {
            return;
        };
        l.seed_client = false;
        let bytes = l.introduced.take().map(|b| *b);
        // A peer now, for tunnels too: it may be named in our tunnel peer
        // lists, extended to, and be a guard. (Without this a seed, whose
        // peers mostly came as seed clients, named only the few it
        // dialed: a newcomer's tunnels through its seed found no next hop.)
        if let Some(t) = &mut self.tunnels {
            t.peer_added(pid, l.remote);
        }
        tracing::debug!(peer = pid.0, "a seed client became a peer");
        if let Some(b) = bytes {
            self.introduced(now, pid, b);
        }
    }

    /// The peer's hello: admit it to the routing core, or keep it as a
    /// seed client, or close it.
    pub(super) fn hello(&mut self, now: Instant, pid: PeerId, l: Location, rng: &mut impl RngCore) {
        let ms = self.ms(now);
        let wall = self.wall_ms(now);
        let Some(p) = self.links.get_mut(&pid) else {
            return;
        };
        if !p.routed {
            p.routed = true;
            self.unrouted -= 1;
        }
        let (remote, dialed, prefix) = (p.remote, p.dialed.is_some(), p.prefix());
        let friend = self.list.is_friend(&remote);
        let ok = if self.cfg.opennet && !friend {
            // One network holds at most MAX_PEERS_PER_PREFIX slots. A node
            // we dialed is one we asked for; one we remember (we asked for
            // it once) is kept while there is room; any other that dialed
            // us, or a remembered one when we are full, only if the
            // routing core invited it.
            if self.prefix_count(prefix, false, pid) >= MAX_PEERS_PER_PREFIX {
                false
            } else if dialed {
                self.node.accept_requested_peer(ms, pid, l, rng)
            } else if self.list.get(&remote).is_some() {
                self.node.accept_remembered_peer(ms, pid, l, rng)
                    || self.node.accept_opennet_peer(ms, pid, l, rng)
            } else {
                self.node.accept_opennet_peer(ms, pid, l, rng)
            }
        } else {
            self.node.add_peer(ms, pid, l, rng);
            true
        };
        // Refused: a node that dialed us may still announce through us
        // (we may be its seed).
        let seed_client = !ok
            && self.cfg.opennet
            && !dialed
            && self.prefix_count(prefix, true, pid) < MAX_SEED_CLIENTS_PER_PREFIX
            && self.node.accept_seed_client(ms, pid);
        let Some(p) = self.links.get_mut(&pid) else {
            return;
        };
        p.seed_client = seed_client;
        tracing::debug!(
            peer = pid.0,
            accepted = ok,
            seed_client = p.seed_client,
            "hello"
        );
        if p.seed_client {
            // Not remembered, not counted.
            return;
        }
        if !ok {
            self.out.push_back(Output::Close { peer: pid });
            return;
        }
        if let Some(t) = &mut self.tunnels {
            t.peer_added(pid, remote);
        }
        // Remember it (opennet: only nodes we dialed, whose noderef we hold).
        let known = p
            .dialed
            .as_ref()
            .and_then(|d| d.bytes.as_ref().map(|b| (d.noderef.clone(), b.clone())));
        let remember = if self.cfg.opennet {
            known.as_ref()
        } else {
            None
        };
        if self.list.seen(remember.map(|(r, b)| (r, b)), &remote, wall) {
            self.save_now();
        } else if self.list.get(&remote).is_some() {
            self.dirty = true;
        }
        self.retry_at.remove(&remote);
        self.reach_hello(now, pid);
        let seed = self.cfg.seeds.iter().any(|(r, _)| r.static_key == remote);
        if self.cfg.opennet && seed && self.under_connected() {
            if self.node.peer_count() == 1 || !self.node.announcing() {
                // No announcement of ours is on its way: announce through
                // this seed, whichever linked first (a seed that swallowed
                // the last announcement, answering at once and forwarding
                // nothing, must not leave us alone until the next one, a
                // minute or more later). One at a time: announcing through
                // every seed at once fills a newcomer with peers near its
                // own location and few long links (a 300-node opennet
                // found 77 % instead of 97 %).
                self.node.announce_via(ms, pid, rng);
            } else {
                // Another seed's announcement is on its way: this one is
                // next when it ends (it may have gone to a seed that
                // swallows announcements).
                self.announce_next.push_back(pid);
            }
        } else if self.cfg.opennet && self.node.peer_count() == 1 {
            // The first peer (the first node back after losing them
            // all): announce at once so nodes near our location connect
            // to us. Later announcements are the routing core's (while
            // under-connected, backing off).
            self.node
                .handle_local_request(ms, LocalRequest::Announce, rng);
        }
    }

    /// An opennet peer that dialed us sent its noderef: remember it (as
    /// if we had dialed it), if it is really that peer's and the peer was
    /// kept (not a seed client). Anything else is ignored.
    fn introduced(&mut self, now: Instant, pid: PeerId, bytes: NoderefBytes) {
        let Some(p) = self.links.get_mut(&pid) else {
            return;
        };
        if !self.cfg.opennet || p.dialed.is_some() || !p.routed {
            return;
        }
        if p.seed_client {
            // Remembered if it becomes a peer (`promoted`).
            if p.introduced.is_none() && bytes.len() <= self.node.config().max_noderef_len {
                p.introduced = Some(Box::new(bytes));
            }
            return;
        }
        let remote = p.remote;
        // Already remembered with these very bytes (verified when they
        // were first kept; the hello marked it seen): nothing to do.
        if self.list.get(&remote).is_some_and(|e| e.bytes == bytes) {
            return;
        }
        match NodeRef::from_bytes_shared(&bytes) {
            Ok(r) if r.static_key == remote => {
                let wall = self.wall_ms(now);
                if self.list.seen(Some((&r, &bytes)), &remote, wall) {
                    tracing::debug!(peer = pid.0, "remembered a peer that connected to us");
                    self.save_now();
                }
            }
            Ok(_) => tracing::debug!(peer = pid.0, "a peer sent someone else's noderef"),
            Err(e) => tracing::debug!(peer = pid.0, error = %e, "a peer sent a bad noderef"),
        }
    }

    /// Link `peer` ended (not one the policy closed itself).
    pub fn link_closed(&mut self, now: Instant, peer: PeerId, rng: &mut impl RngCore) {
        let Some(p) = self.remove_link(&peer) else {
            return;
        };
        if p.stage == Stage::AwaitWelcome {
            self.redeem_done(p.remote, None);
        }
        if p.routed {
            let ms = self.ms(now);
            self.node.remove_peer(ms, peer, rng);
            self.tunnel_peer_gone(peer);
            // Our announcement may have ended with that link: the next
            // seed's is due now, not at the next timer.
            self.announce_through_next_seed(now, rng);
            // Not redialed at once: a full node closes right after the
            // hello, and would be dialed every tick.
            let friend = self.list.is_friend(&p.remote);
            let short = self.age(now, p.since) < SHORT_LINK;
            if short && p.dialed.is_some() && self.forget_opennet(&p.remote) {
                // A remembered opennet peer we dialed that let us go soon
                // after the hello: it is full and kept us only as a seed
                // client (most often it had dropped us). Redialing it
                // brings the same: in the simulator every dropped peer
                // was parked so about four times. Forgotten; announcements
                // and path folding bring peers that want us.
                tracing::debug!(
                    peer = peer.0,
                    "a remembered peer let us go at once: forgotten"
                );
                return;
            }
            let delay = if friend {
                RETRY_BASE
            } else if short {
                OPENNET_RETRY_MAX / 2
            } else {
                DROPPED_RETRY
            };
            self.retry_later(p.remote, now + delay);
        } else if p.dialed.is_some() {
            // Closed before its hello: refused (a darknet node that does
            // not know us).
            self.failed(now, &p.remote);
        }
    }

    // ----------------------------------------------------------- timers

    /// Every [`super::RECONNECT_TICK`]: close links whose peer has not
    /// said hello within [`HELLO_DEADLINE`]; redial remembered peers that
    /// are down and due; with no peer at all, dial the seeds (at most every
    /// [`SEED_RETRY`]); write `last_seen` changes every [`SAVE_EVERY`].
    pub fn tick(&mut self, now: Instant) {
        self.close_silent(now);
        // A retry time passed is no retry time: dropped, the map holds
        // only peers still waiting (it held every peer dropped since the
        // start: 7 a node after a 30,000-node simulation, beside 26 in
        // its peer list).
        self.retry_at.retain(|_, t| *t > now);
        self.redial(now);
        self.dial_seeds(now);
        self.reach_tick(now);
        if self.dirty && now.saturating_duration_since(self.last_save) >= SAVE_EVERY {
            self.last_save = now;
            self.save_now();
        }
    }

    /// The earliest instant at which [`PeerPolicy::tick`] may have
    /// something to do as things stand (None: nothing until some other
    /// event changes the policy): a link without a hello reaching
    /// [`HELLO_DEADLINE`], a remembered peer due for a redial, the seeds
    /// due for a dial, unsaved changes due for a save. A tick before it
    /// changes nothing and outputs nothing, so a driver with many policies
    /// (the simulator) may skip it; it never names an instant later than
    /// the first tick that would act. It does not change what `tick` does.
    #[must_use]
    pub fn tick_due(&self) -> Option<Instant> {
        fn at(due: &mut Option<Instant>, t: Instant) {
            *due = Some(due.map_or(t, |d| d.min(t)));
        }
        let mut due: Option<Instant> = None;
        debug_assert_eq!(
            self.unrouted,
            self.links.values().filter(|l| !l.routed).count()
        );
        if self.unrouted > 0 {
            for l in self.links.values() {
                if !l.routed {
                    at(&mut due, self.at_ms(l.since) + HELLO_DEADLINE);
                }
            }
        }
        // `redial`: friends always; opennet entries with no peer at all.
        let want = self.opennet_redials();
        for e in self.list.entries() {
            if e.kind == PeerKind::Opennet && want == 0 {
                // Friends come first: the rest are opennet entries too.
                break;
            }
            let key = e.key();
            // Linked or being dialed: nothing to redial (asked first: most
            // remembered peers are linked, and then no retry time is
            // looked up).
            if self.link_to(&key).is_some() || self.dialing.contains(&key) {
                continue;
            }
            // No delay set: due at once.
            let t = self.retry_at.get(&key).copied().unwrap_or(self.start);
            at(&mut due, t);
        }
        // `dial_seeds` (which notes the time even when every seed is
        // already being dialed).
        if self.cfg.opennet && !self.cfg.seeds.is_empty() && self.node.peer_count() == 0 {
            at(
                &mut due,
                self.last_seed_dial.map_or(self.start, |t| t + SEED_RETRY),
            );
        }
        if self.dirty {
            at(&mut due, self.last_save + SAVE_EVERY);
        }
        if let Some(t) = self.reach_due() {
            at(&mut due, t);
        }
        due
    }

    /// Close the links that have been up [`HELLO_DEADLINE`] without a
    /// hello; one we dialed counts as a failed dial.
    fn close_silent(&mut self, now: Instant) {
        if self.unrouted == 0 {
            return;
        }
        let late: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, l)| !l.routed && self.age(now, l.since) >= HELLO_DEADLINE)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in late {
            tracing::debug!(peer = pid.0, "no hello in time: link closed");
            self.drop_unrouted(now, pid);
        }
    }

    /// The routing core's timer ([`PeerPolicy::poll_timeout`]) is due.
    pub fn timeout(&mut self, now: Instant, rng: &mut impl RngCore) {
        let ms = self.ms(now);
        self.node.handle_timeout(ms, rng);
        self.announce_through_next_seed(now, rng);
        if now >= self.next_tunnel_tick {
            self.next_tunnel_tick = now + super::TUNNEL_TICK;
            if let Some(t) = &mut self.tunnels {
                t.tick(ms, &mut self.node, rng);
                // The guards stay peers: a dropped guard is replaced by a
                // backup, one more peer that has been a first hop.
                self.node.keep_peers(t.primary_guards(ms));
            }
            self.sync_guards();
        }
    }

    /// A routed peer's link is gone: so is every tunnel through it.
    fn tunnel_peer_gone(&mut self, peer: PeerId) {
        if let Some(t) = &mut self.tunnels {
            t.peer_removed(peer);
        }
    }

    // --------------------------------------------------------- commands

    /// A fetch or insert of this node's user. Its result comes out as
    /// [`Output::RequestDone`] / [`Output::InsertDone`] with this id.
    pub fn local_request(
        &mut self,
        now: Instant,
        req: LocalRequest,
        rng: &mut impl RngCore,
    ) -> RequestId {
        let ms = self.ms(now);
        match &mut self.tunnels {
            Some(t) => t.local(ms, &mut self.node, req, rng),
            None => self.node.handle_local_request(ms, req, rng),
        }
    }

    /// Add a friend (darknet peer): remembered, dialed now and whenever
    /// the link is down, and accepted on a darknet node.
    ///
    /// # Errors
    /// [`AddFriendError`].
    pub fn add_friend(
        &mut self,
        now: Instant,
        noderef: NodeRef,
        bytes: NoderefBytes,
    ) -> Result<PeerInfo, AddFriendError> {
        let key = noderef.static_key;
        if key == self.cfg.own_key {
            return Err(AddFriendError::Myself);
        }
        match self.list.add_friend(noderef.clone(), bytes.clone()) {
            Ok(Added::AlreadyFriend) => Err(AddFriendError::Duplicate),
            Ok(_) => {
                tracing::info!("added a friend");
                self.save_now();
                self.retry_at.remove(&key);
                self.dial(now, noderef, Some(bytes));
                Ok(self.info(&key))
            }
            Err(e) => Err(AddFriendError::Full(e)),
        }
    }

    /// Forget a peer (by identity, or by an address of its noderef) and
    /// close its link. `None`: no such peer.
    pub fn remove(
        &mut self,
        now: Instant,
        which: &str,
        rng: &mut impl RngCore,
    ) -> Option<PeerInfo> {
        let key = self.find(which)?;
        let info = self.info(&key);
        if self.list.remove(&key).is_some() {
            self.save_now();
        }
        self.retry_at.remove(&key);
        if let Some(pid) = self.link_to(&key) {
            if let Some(p) = self.remove_link(&pid) {
                if p.routed {
                    let ms = self.ms(now);
                    self.node.remove_peer(ms, pid, rng);
                    self.tunnel_peer_gone(pid);
                }
                self.out.push_back(Output::Close { peer: pid });
            }
        }
        tracing::info!("removed a peer");
        Some(info)
    }

    /// Stop: every link is closed and the peer list written if it
    /// changed.
    pub fn shutdown(&mut self) {
        let pids: Vec<PeerId> = self.links.keys().copied().collect();
        for peer in pids {
            self.out.push_back(Output::Close { peer });
        }
        if self.dirty {
            self.save_now();
        }
    }

    // ----------------------------------------------------------- output

    /// The next thing to do, if any. Call after every step until `None`.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            // The node's actions first (a request run as a tunnel's exit
            // answers through the tunnel), then the tunnels' own.
            let a = match self.node.poll_action() {
                Some(a) => match &mut self.tunnels {
                    Some(t) => match t.filter(a) {
                        Some(a) => a,
                        None => continue,
                    },
                    None => a,
                },
                None => match self
                    .tunnels
                    .as_deref_mut()
                    .and_then(lichen_routing::Tunnelled::poll_action)
                {
                    Some(a) => a,
                    None => {
                        // Drained: a burst's queue gives its memory back
                        // (a seed's can reach thousands of entries, and
                        // the simulator holds a policy per node).
                        if self.out.capacity() > IDLE_QUEUE {
                            self.out.shrink_to(IDLE_QUEUE);
                        }
                        return None;
                    }
                },
            };
            self.act(now, a);
        }
    }

    /// Turn one routing action into outputs.
    fn act(&mut self, now: Instant, a: Action) {
        match a {
            Action::Send { to, msg } => {
                tracing::trace!(peer = to.0, msg = msg.name(), id = ?msg.id(), "send");
                if self.links.contains_key(&to) {
                    self.out.push_back(Output::Send { peer: to, msg });
                }
            }
            Action::StoreBlock {
                space,
                key,
                kind,
                block,
            } => self.out.push_back(Output::StoreBlock {
                space,
                key,
                kind,
                block,
            }),
            Action::RequestDone { id, outcome } => {
                self.out.push_back(Output::RequestDone { id, outcome });
            }
            Action::InsertDone { id, outcome } => {
                self.out.push_back(Output::InsertDone { id, outcome });
            }
            Action::Connect { noderef } => match NodeRef::from_bytes_shared(&noderef.address) {
                Ok(r) => self.dial(now, r, Some(noderef.address)),
                Err(e) => tracing::debug!(error = %e, "bad noderef in a connect offer"),
            },
            Action::Punch { noderef, initiator } => self.punch_toward(now, &noderef, initiator),
            Action::Disconnect { peer, why } => self.disconnect(now, peer, why),
            Action::LocationChanged { location } => {
                self.location = location;
                for &peer in self.links.keys() {
                    self.out.push_back(Output::Send {
                        peer,
                        msg: Message::LocationChanged { location },
                    });
                }
            }
        }
    }

    /// The routing core dropped a peer.
    fn disconnect(&mut self, now: Instant, peer: PeerId, why: lichen_routing::Disconnect) {
        let Some(p) = self.remove_link(&peer) else {
            return;
        };
        self.tunnel_peer_gone(peer);
        if why == lichen_routing::Disconnect::Misbehaving {
            tracing::info!(
                "disconnected a misbehaving peer; it is refused for {} minutes",
                BAN.as_secs() / 60
            );
            self.ban(now, p.remote);
        } else if why == lichen_routing::Disconnect::LeastUseful && self.forget_opennet(&p.remote) {
            // Dropped to make room: redialing it would undo that (and it
            // would find us full, and be kept at most as a seed client).
        } else {
            // Not redialed at once (a friend is, later).
            self.retry_later(p.remote, now + DROPPED_RETRY);
        }
        self.out.push_back(Output::Close { peer });
    }

    // ---------------------------------------------------------- helpers

    /// Opennet links from the network `prefix` that are peers (or, with
    /// `seed_clients`, seed clients), other than `except`. No prefix: no
    /// limit, 0.
    fn prefix_count(&self, prefix: Option<[u8; 9]>, seed_clients: bool, except: PeerId) -> usize {
        let Some(prefix) = prefix else {
            return 0;
        };
        // The links from that network only (a seed has thousands).
        self.by_prefix
            .get(prefix)
            .filter(|&pid| {
                pid != except
                    && self.links.get(&pid).is_some_and(|l| {
                        l.routed && l.seed_client == seed_clients && !self.list.is_friend(&l.remote)
                    })
            })
            .count()
    }

    /// Keep link `pid` (and index it by its network).
    fn insert_link(&mut self, pid: PeerId, l: LinkState) {
        if let Some(p) = l.prefix() {
            self.by_prefix.insert(p, pid);
        }
        self.by_key.insert(key_tag(&l.remote), pid);
        self.unrouted += usize::from(!l.routed);
        if let Some(old) = self.links.insert(pid, l) {
            self.unrouted -= usize::from(!old.routed);
            self.unindex(pid, &old);
        }
    }

    /// Forget link `pid`.
    fn remove_link(&mut self, pid: &PeerId) -> Option<LinkState> {
        let l = self.links.remove(pid)?;
        self.unrouted -= usize::from(!l.routed);
        if let Some(r) = self.reach.as_mut() {
            r.local_ports.remove(pid);
        }
        self.unindex(*pid, &l);
        Some(l)
    }

    /// Take link `pid`, whose entry was `l`, out of the indexes.
    fn unindex(&mut self, pid: PeerId, l: &LinkState) {
        if let Some(p) = l.prefix() {
            self.by_prefix.remove(p, pid);
        }
        self.by_key.remove(key_tag(&l.remote), pid);
    }

    fn save_now(&mut self) {
        self.dirty = false;
        self.out.push_back(Output::SavePeers(self.list.clone()));
    }

    /// Keep `key` out for [`BAN`]: refused when it connects, not dialed,
    /// and forgotten if it was only an opennet peer.
    fn ban(&mut self, now: Instant, key: [u8; 32]) {
        self.banned.retain(|_, t| *t > now);
        if self.banned.len() >= MAX_BANNED {
            if let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                self.banned.remove(&oldest);
            }
        }
        self.banned.insert(key, now + BAN);
        self.retry_at.insert(key, now + BAN);
        if !self.list.is_friend(&key) && self.list.remove(&key).is_some() {
            self.save_now();
        }
    }

    /// Redial remembered peer `key` no sooner than `at`. Only the peer
    /// list is redialed, so a node not in it (a seed client, a peer that
    /// dialed us and never sent its noderef) gets no entry: a seed would
    /// otherwise keep one for every newcomer it ever let go (in the
    /// simulator the table grew with the run, 2 KiB a node at 30,000).
    fn retry_later(&mut self, key: [u8; 32], at: Instant) {
        if self.list.get(&key).is_some() {
            self.retry_at.insert(key, at);
        }
    }

    /// Forget `key` if it is a remembered opennet peer (never a friend):
    /// out of the list and not redialed. Returns whether it was.
    fn forget_opennet(&mut self, key: &[u8; 32]) -> bool {
        if self.list.is_friend(key) || self.list.remove(key).is_none() {
            return false;
        }
        self.retry_at.remove(key);
        self.dirty = true;
        true
    }

    /// A dial failed, or a dialed link closed before its hello.
    fn failed(&mut self, now: Instant, key: &[u8; 32]) {
        let wall = self.wall_ms(now);
        if self.list.failed(key, wall) {
            tracing::debug!("forgot an opennet peer that failed repeatedly");
            self.retry_at.remove(key);
            self.save_now();
        } else if let Some(e) = self.list.get(key) {
            self.retry_at
                .insert(*key, now + retry_delay(e.failures, e.kind));
            self.dirty = true;
        }
    }

    /// An opennet node with no peer dials [`SEEDS_AT_ONCE`] of its seeds,
    /// the next ones in its list each time, from a place in the list its
    /// key picks (so newcomers spread over the seeds: each seed keeps a
    /// newcomer a while as a seed client, and a newcomer that dialed every
    /// seed held a slot at each). A seed is remembered, so one that takes
    /// it as a peer is redialed like any other.
    fn dial_seeds(&mut self, now: Instant) {
        if !self.cfg.opennet || self.cfg.seeds.is_empty() || self.node.peer_count() > 0 {
            return;
        }
        if self
            .last_seed_dial
            .is_some_and(|t| now.saturating_duration_since(t) < SEED_RETRY)
        {
            return;
        }
        self.last_seed_dial = Some(now);
        tracing::debug!(seeds = self.cfg.seeds.len(), "no peers: dialing the seeds");
        let seeds = std::sync::Arc::clone(&self.cfg.seeds);
        let n = seeds.len();
        let start = usize::from(u16::from_le_bytes([
            self.cfg.own_key[0],
            self.cfg.own_key[1],
        ]));
        for i in 0..SEEDS_AT_ONCE.min(n) {
            let (r, b) = &seeds[(start + self.seed_round * SEEDS_AT_ONCE + i) % n];
            self.dial(now, r.clone(), Some(b.clone()));
        }
        self.seed_round = self.seed_round.wrapping_add(1);
    }

    /// How many remembered opennet peers [`Self::redial`] may dial now: as
    /// many as the node has room for while it has no peer at all (after
    /// a restart, or cut off), as the seeds are dialed; none otherwise. A
    /// remembered opennet peer keeps a dialer it did not invite only as a
    /// seed client (`Node::accept_opennet_peer`), so a node with peers
    /// gains nothing by redialing: its announcements and path folding
    /// bring it new ones. In the simulator (10,000 nodes) redials while
    /// short of peers were 58,550 links opened, nearly all parked and
    /// closed (seed clients 100,104 against 44,359 without them), for the
    /// same success and 0.06 fewer hops without (docs/simulation.md,
    /// "Tenth pass"). With no peer at all the remembered peers serve as
    /// seeds: each keeps the node as a seed client that may route its
    /// announcement.
    fn opennet_redials(&self) -> usize {
        if !self.cfg.opennet || self.node.peer_count() > 0 {
            return 0;
        }
        self.node
            .config()
            .max_peers
            .saturating_sub(self.dialing.len())
    }

    /// Dial remembered peers that are down and due: friends always,
    /// opennet entries while the node has no peer at all
    /// ([`Self::opennet_redials`]).
    fn redial(&mut self, now: Instant) {
        let mut want = self.opennet_redials();
        let mut due = Vec::new();
        for e in self.list.entries() {
            if e.kind == PeerKind::Opennet && want == 0 {
                // Friends come first: the rest are opennet entries too.
                break;
            }
            let key = e.key();
            if self.link_to(&key).is_some()
                || self.dialing.contains(&key)
                || self.retry_at.get(&key).is_some_and(|t| *t > now)
            {
                continue;
            }
            if e.kind == PeerKind::Opennet {
                want -= 1;
            }
            due.push((e.noderef.clone(), e.bytes.clone()));
        }
        for (r, b) in due {
            self.dial(now, r, Some(b));
        }
    }

    pub(super) fn info(&self, key: &[u8; 32]) -> PeerInfo {
        let entry = self.list.get(key);
        let link = self.link_to(key).and_then(|p| self.links.get(&p));
        PeerInfo {
            identity: identity_of(key),
            kind: entry.map_or(PeerKind::Opennet, |e| e.kind),
            connected: link.is_some_and(|l| l.routed && !l.seed_client),
            location: link
                .and_then(LinkState::location)
                .or_else(|| entry.and_then(|e| e.noderef.location)),
            noderef: entry.map(Entry::text),
            addresses: entry
                .map(|e| e.noderef.addresses.clone())
                .unwrap_or_default(),
            last_seen: entry.map_or(0, |e| e.last_seen),
            link: self.link_to(key),
            traffic: (0, 0),
        }
    }

    /// The peer named by an identity or by one of its noderef's addresses.
    fn find(&self, which: &str) -> Option<[u8; 32]> {
        let which = which.trim();
        self.list
            .entries()
            .iter()
            .map(Entry::key)
            .chain(self.links.values().map(|l| l.remote))
            .find(|k| {
                identity_of(k) == which
                    || self
                        .list
                        .get(k)
                        .is_some_and(|e| e.noderef.addresses.iter().any(|a| a.to_string() == which))
            })
    }
}

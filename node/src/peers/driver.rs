//! The driving task: one loop whose every branch hands one event to the
//! peer policy ([`PeerPolicy`]) and then carries out what the policy asks
//! ([`Driver::carry_out`]). Sockets and tasks live here; the time comes
//! from the node's clock (passed in); every decision is the policy's.
//!
//! An inbound connection holds one of the accept loop's slots
//! ([`crate::util::admission`], a [`Ticket`]) from its accept until its
//! peer's hello ([`PeerPolicy::greeted`]) or its end, so links that finish
//! the handshake and then say nothing are bounded like half-open ones.
//! When the slots are full the oldest such connection is closed to make
//! room; each has [`HELLO_DEADLINE`] from its accept to its hello,
//! [`PRESSED_HELLO_DEADLINE`] while more than half the slots are taken.
//! The accept loop backs off on errors (no free descriptors, ...) instead
//! of spinning ([`Backoff`]).

use super::punch::{self, Punches};
use super::store::{verify, Keeper, StoreSource};
use super::{file, portmap, AddFriendError, Cmd, PeerInfo, PeerSetup};
use crate::util::admission::{self, Gate, Limits, Ticket};
use crate::util::clock::Clock;
use lichen_crypto::BlockKind;
use lichen_crypto::RoutingKey;
use lichen_link::peerlist::PeerList;
use lichen_link::policy::{
    DialBacks, Dialed, Output, PeerPolicy, PolicyConfig, Reachability, HELLO_DEADLINE,
    MAX_HANDSHAKES_PER_RANGE, MAX_INBOUND_HANDSHAKES, PRESSED_HELLO_DEADLINE, RECONNECT_TICK,
};
use lichen_link::{Link, LinkEvent, LinkSender, NodeRef};
use lichen_routing::{
    InsertOutcome, Key, KeyKind, LocalRequest, PeerId, RequestId, RequestOutcome,
};
use lichen_store::{Origin, Space};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A link that came up, or a dial that failed.
pub(super) enum NewLink {
    /// We dialed it.
    Dialed(Link, Dialed),
    /// It dialed us from this address; its slot is held until the hello.
    Accepted(Link, Ticket, IpAddr),
    Failed([u8; 32]),
    /// A dial-back for the peer on this link ran: the address its link
    /// comes from, and whether it answered there.
    Probed(PeerId, SocketAddr, bool),
    /// A hole punch as responder brought a link from this address.
    Punched(Link, IpAddr),
    /// A hole punch toward this key ended without a link (as initiator:
    /// true).
    PunchFailed([u8; 32], bool),
}

impl From<punch::Outcome> for NewLink {
    fn from(o: punch::Outcome) -> Self {
        match o {
            punch::Outcome::Dialed(l, d) => NewLink::Dialed(l, d),
            punch::Outcome::Punched(l, ip) => NewLink::Punched(l, ip),
            punch::Outcome::Failed(key, initiator) => NewLink::PunchFailed(key, initiator),
        }
    }
}

/// How long a dial-back may take (connect and two handshake messages).
/// Behind NAT the SYN is dropped silently, so "not reachable" is known
/// only when this runs out, and a node behind NAT starts punching only
/// then (its noderef needs the verdict's public address): it is most of
/// a NATed newcomer's wait for its NAT–NAT peers. 5 s still covers the
/// kernel's SYN and two resends (at 1 and 3 s) on a slow path.
const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Who waits for a local request.
enum Waiter {
    /// A fetch; keep the block in the client cache.
    Fetch(Key, KeyKind, bool, oneshot::Sender<RequestOutcome>),
    Insert(oneshot::Sender<InsertOutcome>),
}

type Verify = fn(&Key, KeyKind, &[u8]) -> bool;

/// The channels the driving task reads and the handles it updates.
pub(super) struct Channels {
    pub(super) cmds: mpsc::Receiver<Cmd>,
    pub(super) link_tx: mpsc::Sender<NewLink>,
    pub(super) new_links: mpsc::Receiver<NewLink>,
    pub(super) connected: Arc<AtomicUsize>,
    pub(super) stats: Arc<Mutex<lichen_routing::Stats>>,
    pub(super) save: mpsc::UnboundedSender<PeerList>,
    /// What dial-backs said, copied every tick.
    pub(super) reach: Arc<Mutex<Reachability>>,
    /// Where the node listens (asked of peers' dial-backs; None: the
    /// node only answers them).
    pub(super) listen_port: Option<u16>,
    /// The address the noderef names (changed by the driving task when
    /// `PeerSetup::auto_address` is set).
    pub(super) advertised: Arc<Mutex<Option<SocketAddr>>>,
    /// The port mapping the router granted (the `portmap` task's).
    pub(super) mapped: portmap::Shared,
    /// Hole punches under way (shared with the accept loop).
    pub(super) punches: Punches,
    /// The node listens on a loopback address.
    pub(super) loopback_net: bool,
}

/// The driving task's state: the policy and the I/O handles its outputs
/// need.
struct Driver {
    policy: PeerPolicy<Verify>,
    setup: PeerSetup,
    senders: HashMap<PeerId, LinkSender>,
    /// The address each link's other end is at.
    addrs: HashMap<PeerId, SocketAddr>,
    waiters: HashMap<RequestId, Waiter>,
    /// Inbound links before their hello: dropping one lets its slot go
    /// (the task holding it ends).
    ungreeted: HashMap<PeerId, oneshot::Sender<()>>,
    /// Hole punches under way.
    punches: Punches,
    /// This node listens on a loopback address (a test network): only
    /// then are loopback addresses dialed.
    loopback_net: bool,
    /// Invitations being used, by the inviting node's static key.
    redeems: HashMap<[u8; 32], oneshot::Sender<Result<PeerInfo, AddFriendError>>>,
    clock: Arc<dyn Clock>,
    keeper: Keeper,
    rng: StdRng,
    link_tx: mpsc::Sender<NewLink>,
    ev_tx: mpsc::Sender<(PeerId, LinkEvent)>,
    save: mpsc::UnboundedSender<PeerList>,
}

/// Run the peer manager until `shutdown` (or until its handle is gone).
pub(super) async fn drive(
    setup: PeerSetup,
    list: PeerList,
    ch: Channels,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let Channels {
        mut cmds,
        link_tx,
        mut new_links,
        connected,
        stats,
        save,
        reach,
        listen_port,
        advertised,
        mapped,
        punches,
        loopback_net,
    } = ch;
    let (ev_tx, mut events) = mpsc::channel::<(PeerId, LinkEvent)>(1024);
    let mut d = Driver::new(setup, list, clock, (link_tx, ev_tx), save, listen_port);
    d.punches = punches;
    d.loopback_net = loopback_net;
    let mut tick = tokio::time::interval(RECONNECT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The policy's timer, in the clock's time.
        let timer = d
            .policy
            .poll_timeout()
            .map(|t| t.saturating_duration_since(d.clock.now()));
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                d.policy.tick(d.clock.now());
                // Dial-back answers change it, a few times an hour: once
                // a tick is soon enough, and keeps it off every message.
                d.publish_reachability(&reach, &advertised, &mapped);
            }
            c = cmds.recv() => match c {
                Some(c) => d.command(c),
                None => break,
            },
            l = new_links.recv() => match l {
                Some(l) => d.new_link(l),
                None => break,
            },
            e = events.recv() => match e {
                Some((pid, e)) => d.link_event(pid, e),
                None => break,
            },
            () = async {
                match timer {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            } => d.policy.timeout(d.clock.now(), &mut d.rng),
        }
        d.carry_out();
        connected.store(d.policy.peer_count(), Ordering::Relaxed);
        stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&d.policy.all_stats());
    }
    connected.store(0, Ordering::Relaxed);
    d.policy.shutdown();
    d.carry_out();
}

impl Driver {
    fn new(
        setup: PeerSetup,
        list: PeerList,
        clock: Arc<dyn Clock>,
        (link_tx, ev_tx): (mpsc::Sender<NewLink>, mpsc::Sender<(PeerId, LinkEvent)>),
        save: mpsc::UnboundedSender<PeerList>,
        listen_port: Option<u16>,
    ) -> Self {
        let cfg = PolicyConfig {
            own_key: setup.keys.static_public(),
            opennet: setup.opennet,
            noderef: setup.noderef.clone(),
            routing: Arc::new(setup.routing.clone()),
            location: setup.location,
            seeds: setup.seeds.clone().into(),
            tunnels: setup.tunnels,
            dial_backs: match listen_port {
                Some(port) => DialBacks::AnswerAndAsk { port },
                None => DialBacks::Answer,
            },
        };
        let mut policy = PeerPolicy::new(cfg, list, verify as Verify, clock.now(), clock.now_ms());
        // Relay and exit tunnels for others; own requests use them unless
        // `[anonymity] tunnel_hops = 0` (docs/tunnels.md).
        policy.enable_tunnels(setup.keys.static_secret());
        Driver {
            policy,
            keeper: Keeper::new(setup.store.clone()),
            setup,
            senders: HashMap::new(),
            addrs: HashMap::new(),
            waiters: HashMap::new(),
            ungreeted: HashMap::new(),
            punches: Punches::default(),
            redeems: HashMap::new(),
            loopback_net: false,
            clock,
            rng: StdRng::from_entropy(),
            link_tx,
            ev_tx,
            save,
        }
    }

    /// A request of the node's user.
    fn command(&mut self, c: Cmd) {
        let now = self.clock.now();
        match c {
            Cmd::Fetch(key, kind, opts, reply) => {
                let local = if opts.local_first {
                    self.setup
                        .store
                        .get(Origin::Local, BlockKind::from(kind), &RoutingKey(key.0))
                        .ok()
                        .flatten()
                } else {
                    None
                };
                if let Some(f) = local {
                    let _ = reply.send(RequestOutcome::Found(f.block));
                } else {
                    let req = LocalRequest::Fetch { key, kind };
                    let id = self.policy.local_request(now, req, &mut self.rng);
                    self.waiters
                        .insert(id, Waiter::Fetch(key, kind, opts.keep, reply));
                }
            }
            Cmd::Insert(key, kind, block, reply) => {
                // The private client cache, never the shared spaces.
                let _ = self.setup.store.put(
                    Space::Client,
                    BlockKind::from(kind),
                    &RoutingKey(key.0),
                    &block,
                );
                let req = LocalRequest::Insert { key, kind, block };
                let id = self.policy.local_request(now, req, &mut self.rng);
                self.waiters.insert(id, Waiter::Insert(reply));
            }
            Cmd::Connect(r, bytes) => self.policy.dial(now, r, bytes),
            Cmd::PeerCount(reply) => {
                let _ = reply.send(self.policy.peer_count());
            }
            Cmd::AddFriend(r, bytes, reply) => {
                let _ = reply.send(self.policy.add_friend(now, r, bytes));
            }
            Cmd::Remove(which, reply) => {
                let _ = reply.send(self.policy.remove(now, &which, &mut self.rng));
            }
            Cmd::List(reply) => {
                let mut list = self.policy.list();
                for p in &mut list {
                    let sender = p.link.and_then(|pid| self.senders.get(&pid));
                    p.traffic = sender.map_or((0, 0), LinkSender::traffic);
                }
                let _ = reply.send(list);
            }
            Cmd::Invite(valid, reply) => {
                let _ = reply.send(self.policy.invite(now, valid, &mut self.rng));
            }
            Cmd::Redeem(inv, reply) => match self.policy.redeem(now, &inv) {
                Ok(()) => {
                    if let Ok(key) = inv.static_key() {
                        self.redeems.insert(key, reply);
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
        }
    }

    /// A link came up (or a dial failed): the policy keeps it or not.
    fn new_link(&mut self, l: NewLink) {
        let now = self.clock.now();
        let (link, dialed, slot, from) = match l {
            NewLink::Dialed(link, dialed) => (link, Some(dialed), None, None),
            NewLink::Accepted(link, slot, ip) => (link, None, Some(slot), Some(ip)),
            NewLink::Punched(link, ip) => (link, None, None, Some(ip)),
            NewLink::PunchFailed(key, initiator) => {
                self.policy.punch_failed(&key, initiator);
                return;
            }
            NewLink::Failed(key) => {
                self.policy.dial_failed(now, &key);
                return;
            }
            NewLink::Probed(pid, seen, reachable) => {
                self.policy.probe_done(pid, seen, reachable);
                return;
            }
        };
        let remote = link.remote_static();
        let addr = link.remote_addr();
        // A link we opened: the port it left from, which the peer's
        // dial-back answer compares with the one it saw (does our NAT
        // keep ports?).
        let local_port = dialed.as_ref().and(link.local_addr()).map(|a| a.port());
        // A dialed link counts where it went (the policy introduces its
        // peers to each other at these addresses).
        let from = from.or(addr.map(|a| a.ip()));
        let Ok(pid) = self
            .policy
            .link_up(now, remote, dialed, from, &mut self.rng)
        else {
            link.close();
            return;
        };
        if let Some(port) = local_port {
            self.policy.link_local_port(pid, port);
        }
        let (sender, mut rx) = link.into_parts();
        if let Some(slot) = slot {
            // Until the hello (or the link's end), the slot is held; if
            // the slots policy closes it, the link goes.
            let (held, released) = oneshot::channel::<()>();
            self.ungreeted.insert(pid, held);
            let s = sender.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = slot.closed() => s.close(),
                    _ = released => {}
                }
            });
        }
        let ev = self.ev_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if ev.send((pid, e)).await.is_err() {
                    break;
                }
            }
        });
        self.senders.insert(pid, sender);
        if let Some(a) = addr {
            self.addrs.insert(pid, a);
        }
    }

    /// A message on a link, or its end.
    fn link_event(&mut self, pid: PeerId, e: LinkEvent) {
        let now = self.clock.now();
        match e {
            LinkEvent::Message(m) => {
                let mut source = StoreSource(self.setup.store.as_ref(), &self.keeper);
                self.policy.message(now, pid, m, &mut source, &mut self.rng);
                if self.policy.greeted(pid) {
                    self.ungreeted.remove(&pid);
                }
            }
            LinkEvent::Closed(err) => {
                tracing::debug!(peer = pid.0, error = %err, "link down");
                self.senders.remove(&pid);
                self.addrs.remove(&pid);
                self.ungreeted.remove(&pid);
                self.policy.link_closed(now, pid, &mut self.rng);
            }
        }
    }

    /// Do what the policy asks, until it asks nothing more.
    fn carry_out(&mut self) {
        let now = self.clock.now();
        while let Some(o) = self.policy.poll_output(now) {
            match o {
                Output::Dial { noderef, bytes } => self.dial(noderef, bytes),
                Output::Send { peer, msg } => {
                    if let Some(s) = self.senders.get(&peer) {
                        if let Err(e) = s.try_send(msg) {
                            tracing::debug!(peer = peer.0, error = %e, "message dropped");
                        }
                    }
                }
                Output::Close { peer } => {
                    self.ungreeted.remove(&peer);
                    self.addrs.remove(&peer);
                    if let Some(s) = self.senders.remove(&peer) {
                        s.close();
                    }
                }
                Output::Probe { peer, key, port } => self.dial_back(peer, key, port),
                Output::InvitationDone { key, friend } => {
                    if let Some(reply) = self.redeems.remove(&key) {
                        let _ =
                            reply.send(friend.map(|f| *f).ok_or(AddFriendError::InvitationRefused));
                    }
                }
                // Loopback only on a loopback test network (as `dial`).
                Output::Punch { key, addr, dialed }
                    if !self.loopback_net
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified()) =>
                {
                    self.policy.punch_failed(&key, dialed.is_some());
                }
                Output::Punch { key, addr, dialed } => {
                    self.punches
                        .start(&self.setup, &self.link_tx, key, addr, dialed);
                }
                Output::SavePeers(list) => {
                    if self.setup.peer_dir.is_some() {
                        let _ = self.save.send(list);
                    }
                }
                Output::StoreBlock {
                    space,
                    key,
                    kind,
                    block,
                } => {
                    let space = match space {
                        lichen_routing::Space::Store => Space::Store,
                        lichen_routing::Space::Cache => Space::Cache,
                    };
                    // Verified by the routing core (its contract), so a
                    // CHK is not hashed a second time on every hop.
                    self.keeper
                        .keep(space, BlockKind::from(kind), RoutingKey(key.0), block);
                }
                Output::RequestDone { id, outcome } => {
                    if let Some(Waiter::Fetch(key, kind, keep, reply)) = self.waiters.remove(&id) {
                        if let (true, RequestOutcome::Found(b)) = (keep, &outcome) {
                            self.keeper.keep(
                                Space::Client,
                                BlockKind::from(kind),
                                RoutingKey(key.0),
                                b.clone(),
                            );
                        }
                        let _ = reply.send(outcome);
                    }
                }
                Output::InsertDone { id, outcome } => {
                    if let Some(Waiter::Insert(reply)) = self.waiters.remove(&id) {
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
    }

    /// Copy what dial-backs say for the node's status, and (with
    /// `PeerSetup::auto_address`) follow the public address.
    fn publish_reachability(
        &mut self,
        reach: &Mutex<Reachability>,
        advertised: &Mutex<Option<SocketAddr>>,
        mapped: &portmap::Shared,
    ) {
        *reach
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.policy.reachability(self.clock.now());
        // A port mapping's address comes first: dial-backs may see another.
        if self.follow_mapped_address(mapped, advertised) {
            return;
        }
        if self.setup.auto_address {
            self.follow_public_address(advertised);
        }
    }

    /// While the router maps the peer port to a public address, the
    /// noderef names that address (signed anew when it changes). True
    /// while there is such a mapping.
    fn follow_mapped_address(
        &mut self,
        mapped: &portmap::Shared,
        advertised: &Mutex<Option<SocketAddr>>,
    ) -> bool {
        let m = *mapped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(want) = portmap::mapped_address(m.as_ref()) else {
            return false;
        };
        let mut current = advertised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.is_some_and(|now_at| now_at != want) {
            self.advertise(&mut current, want);
            // Dial-backs from now on at the mapped port: "reachable"
            // before the next 30-minute round.
            self.policy.port_changed(self.clock.now(), want.port());
            tracing::info!("the noderef now names the address the router maps");
        }
        true
    }

    /// Sign this node's noderef anew at `want` and hand it to the policy
    /// (what it announces and offers from now on); `current` follows.
    fn advertise(&mut self, current: &mut Option<SocketAddr>, want: SocketAddr) {
        let r = NodeRef::new(&self.setup.keys, vec![want], Some(self.setup.location.0));
        let now = self.clock.now();
        self.policy
            .set_noderef(now, r.to_bytes(&self.setup.keys).into());
        *current = Some(want);
        tracing::debug!(address = %want, "noderef address");
    }

    /// Once peers agree on where they reached this node, its noderef
    /// names that address: signed anew and handed to the policy (what it
    /// announces and offers from now on).
    fn follow_public_address(&mut self, advertised: &Mutex<Option<SocketAddr>>) {
        let mut current = advertised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(now_at) = *current else { return };
        let Some(want) = self.policy.noderef_address(self.clock.now(), now_at) else {
            return;
        };
        self.advertise(&mut current, want);
        tracing::info!("peers reach this node at its public address: the noderef now names it");
    }

    /// Dial the peer on link `peer` back, in its own task: at the IP its
    /// link comes from (never anywhere else), on `port`; the result comes
    /// back as [`NewLink::Probed`].
    fn dial_back(&self, peer: PeerId, key: [u8; 32], port: u16) {
        let Some(&seen) = self.addrs.get(&peer) else {
            return;
        };
        let links = self.link_tx.clone();
        tokio::spawn(async move {
            let to = SocketAddr::new(seen.ip(), port);
            let reachable = Link::dial_back(to, &key, DIAL_BACK_TIMEOUT).await;
            tracing::debug!(peer = peer.0, reachable, "dial-back done");
            let _ = links.send(NewLink::Probed(peer, seen, reachable)).await;
        });
    }

    /// Open a link in its own task; the result comes back as a
    /// [`NewLink`].
    fn dial(&self, noderef: Arc<NodeRef>, bytes: Option<lichen_routing::NoderefBytes>) {
        let setup = self.setup.clone();
        let links = self.link_tx.clone();
        // A loopback address names this host: dialed only on a test
        // network on loopback (this node's own address is one). Anywhere
        // else it is a stand-in (a node listening on every interface
        // before it knows its address) or a peer steering this node at
        // its own local services.
        let mut target = NodeRef::clone(&noderef);
        if !self.loopback_net {
            target
                .addresses
                .retain(|a| !a.ip().is_loopback() && !a.ip().is_unspecified());
        }
        tokio::spawn(async move {
            match Link::connect_noderef(&target, &setup.keys, &setup.link, setup.bandwidth.clone())
                .await
            {
                Ok(l) => {
                    let _ = links
                        .send(NewLink::Dialed(l, Dialed { noderef, bytes }))
                        .await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "outbound link failed");
                    let _ = links.send(NewLink::Failed(noderef.static_key)).await;
                }
            }
        });
    }
}

/// Writes peer-file snapshots in order, the latest of a burst only.
pub(super) async fn saver(
    dir: Option<PathBuf>,
    vault: crate::vault::Vault,
    mut rx: mpsc::UnboundedReceiver<PeerList>,
) {
    while let Some(mut list) = rx.recv().await {
        while let Ok(newer) = rx.try_recv() {
            list = newer;
        }
        let Some(dir) = dir.clone() else { continue };
        let vault = vault.clone();
        let r = tokio::task::spawn_blocking(move || file::save(&list, &dir, &vault)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save the peer list: {e}"),
            Err(e) => tracing::warn!("cannot save the peer list: {e}"),
        }
    }
}

/// Where inbound connections come from: a TCP listener, or in tests one
/// that fails as an exhausted system does.
pub(super) trait Listener: Send + 'static {
    /// The next connection.
    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// The accept loop's pause after an error: [`Backoff::FIRST`], doubling
/// up to [`Backoff::MAX`], back to nothing after a success.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// The last pause (None: the last accept succeeded).
    last: Option<Duration>,
}

impl Backoff {
    /// The first pause after an error.
    pub(super) const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub(super) const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: how long to pause, and whether this error starts
    /// a run of them (the one to log).
    pub(super) fn failed(&mut self) -> (Duration, bool) {
        let next = self
            .last
            .map_or(Self::FIRST, |d| d.saturating_mul(2).min(Self::MAX));
        let first = self.last.is_none();
        self.last = Some(next);
        (next, first)
    }

    /// An accept succeeded: the next error starts from [`Backoff::FIRST`].
    /// True when it ends a run of errors.
    pub(super) fn succeeded(&mut self) -> bool {
        self.last.take().is_some()
    }
}

/// Accept inbound links, each handshake in its own task, within the
/// inbound slots (held until the hello: see the module docs). On errors
/// the loop pauses ([`Backoff`]) and logs once per run of them, without
/// addresses.
pub(super) async fn accept_loop(
    mut listener: impl Listener,
    setup: PeerSetup,
    links: mpsc::Sender<NewLink>,
    shutdown: CancellationToken,
    punches: Punches,
) {
    let gate = Gate::new(Limits {
        slots: MAX_INBOUND_HANDSHAKES,
        per_range: MAX_HANDSHAKES_PER_RANGE,
        deadline: HELLO_DEADLINE,
        pressed_deadline: PRESSED_HELLO_DEADLINE,
        loopback_sources: setup.loopback_sources,
    });
    let mut refused: u64 = 0;
    let mut backoff = Backoff::default();
    let mut sweep_at = None;
    loop {
        let (stream, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            () = admission::sleep_until(sweep_at) => {
                sweep_at = gate.sweep(Instant::now());
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    let (pause, first) = backoff.failed();
                    if first {
                        tracing::warn!(error = %e, "cannot accept peer connections; pausing, up to {} s at a time", Backoff::MAX.as_secs());
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        if backoff.succeeded() {
            tracing::info!("accepting peer connections again");
        }
        // The other side of one of our hole punches, come in first.
        if let Some(dialed) = punches.claim(from) {
            let (setup, links) = (setup.clone(), links.clone());
            tokio::spawn(async move { punch::claimed(stream, &setup, dialed, &links).await });
            continue;
        }
        let ip = from.ip();
        let Some(slot) = gate.enter(Instant::now(), ip) else {
            // Not reached while inbound connections are only ever waiting
            // (none is busy before its hello); kept for the policy's
            // contract.
            refused += 1;
            if refused.is_power_of_two() {
                tracing::info!(refused, "inbound connection slots full: connection closed");
            }
            continue;
        };
        sweep_at = gate.sweep(Instant::now());
        let setup = setup.clone();
        let links = links.clone();
        tokio::spawn(async move {
            let link = tokio::select! {
                l = Link::accept(stream, &setup.keys, &setup.link, setup.bandwidth.clone()) => l,
                // Closed to make room, or past its deadline.
                () = slot.closed() => return,
            };
            match link {
                // The slot goes with the link until its hello.
                Ok(l) => {
                    let _ = links.send(NewLink::Accepted(l, slot, ip)).await;
                }
                Err(e) => tracing::debug!(error = %e, "inbound handshake failed"),
            }
        });
    }
}

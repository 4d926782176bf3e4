//! The peer manager over real loopback links (the policy's own rules
//! are tested without sockets in `lichen_link::policy`).

#![allow(clippy::unwrap_used)]

use super::store::{Keeper, StoreSource};
use super::*;
use crate::util::clock::ManualClock;
use lichen_crypto::{BlockKind, RoutingKey};
use lichen_link::peerlist::PeerKind;
use lichen_link::policy::{HELLO_DEADLINE, MAX_INBOUND_HANDSHAKES};
use lichen_link::{Link, LinkEvent};
use lichen_routing::{BlockSource, Message};
use lichen_store::Space;
use std::time::Duration;

struct TestNode {
    m: PeerManager,
    store: Arc<dyn BlockStore>,
    r: NodeRef,
    bytes: lichen_routing::NoderefBytes,
    stop: CancellationToken,
}

async fn node(secret: u8, location: u64) -> TestNode {
    node_in(secret, location, None).await
}

/// A 16 MiB-per-space memory store.
/// The vault of the test nodes' peer files (the same across restarts).
fn test_vault() -> crate::vault::Vault {
    crate::vault::Vault::new([0x11; 32])
}

fn memory_store(secret: u8, location: u64) -> Arc<dyn BlockStore> {
    Arc::new(lichen_store::MemoryStore::new(
        &lichen_store::StoreConfig::new(
            lichen_store::Budgets {
                store: 1 << 24,
                cache: 1 << 24,
                client: 1 << 24,
            },
            location,
            lichen_store::StoreSecret::from_bytes([secret; 32]),
        ),
    ))
}

async fn node_in(secret: u8, location: u64, dir: Option<PathBuf>) -> TestNode {
    node_with(secret, location, dir, false).await
}

async fn node_with(secret: u8, location: u64, dir: Option<PathBuf>, opennet: bool) -> TestNode {
    node_clocked(secret, location, dir, opennet, Arc::new(SystemClock)).await
}

/// A node whose driver reads the time from `clock`.
async fn node_clocked(
    secret: u8,
    location: u64,
    dir: Option<PathBuf>,
    opennet: bool,
    clock: Arc<dyn Clock>,
) -> TestNode {
    let (setup, l, r) = setup(secret, location, dir, opennet).await;
    let stop = CancellationToken::new();
    let bytes = r.to_bytes(&keys_of(secret)).into();
    TestNode {
        store: setup.store.clone(),
        m: PeerManager::start_with_clock(setup, l, stop.clone(), clock),
        r,
        bytes,
        stop,
    }
}

/// A node's setup, its peer listener and its noderef.
async fn setup(
    secret: u8,
    location: u64,
    dir: Option<PathBuf>,
    opennet: bool,
) -> (PeerSetup, TcpListener, NodeRef) {
    let keys = NodeKeys::from_static_secret([secret; 32]);
    // As the node binds it: shared with hole punches' dials.
    let l = lichen_link::sockets::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let r = NodeRef::new(&keys, vec![l.local_addr().unwrap()], Some(location));
    let store = memory_store(secret, location);
    let setup = PeerSetup {
        noderef: Some(r.to_bytes(&keys).into()),
        keys,
        location: Location(location),
        store: store.clone(),
        link: LinkConfig::default(),
        bandwidth: Arc::new(Bandwidth::unlimited()),
        // Three nodes: every hop caches, so the result does not depend
        // on the random HTL decisions (the anonymity rule is tested in
        // the routing crate).
        routing: lichen_routing::Config {
            request_cache_margin: 0,
            insert_store_margin: 0,
            ..lichen_routing::Config::default()
        },
        opennet,
        peer_dir: dir,
        vault: test_vault(),
        max_remembered: 8,
        seeds: Vec::new(),
        loopback_sources: false,
        auto_address: false,
        port_mapping: None,
        // Networks of two and three nodes: too small for tunnels; these
        // tests are about links and routing.
        tunnels: lichen_routing::TunnelConfig {
            hops: 0,
            ..lichen_routing::TunnelConfig::default()
        },
    };
    (setup, l, r)
}

fn keys_of(secret: u8) -> NodeKeys {
    NodeKeys::from_static_secret([secret; 32])
}

/// Make `a` and `b` friends of each other.
async fn befriend(a: &TestNode, b: &TestNode) {
    a.m.add_friend(b.r.clone(), b.bytes.clone()).await.unwrap();
    b.m.add_friend(a.r.clone(), a.bytes.clone()).await.unwrap();
}

async fn wait_peers(m: &PeerManager, n: usize) {
    for _ in 0..200 {
        if m.peer_count().await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("peers did not connect");
}

/// `stream` is closed by the node within `within` (EOF or reset).
async fn assert_closed(stream: &mut tokio::net::TcpStream, within: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the connection was left open");
}

/// Connections that never finish their handshake cannot keep a real peer
/// out: when all `MAX_INBOUND_HANDSHAKES` slots are taken, the oldest is
/// closed to make room, so the peer gets in at once (not after the
/// deadline) while the flood is still held.
#[tokio::test]
async fn half_open_connections_make_room_for_a_real_peer() {
    let (na, nb) = (node(1, 1 << 62).await, node(2, 2 << 62).await);
    let addr = nb.r.addresses[0];
    let mut idle = Vec::new();
    for _ in 0..MAX_INBOUND_HANDSHAKES {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Let the accept loop take them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    befriend(&na, &nb).await;
    wait_peers(&na.m, 1).await;
    wait_peers(&nb.m, 1).await;
    let took = t.elapsed();
    // Under pressure the deadline is PRESSED_HELLO_DEADLINE (2 s) from
    // the flood's accept: well under it means a slot was made.
    assert!(
        took < Duration::from_secs(1),
        "a peer got in after {took:?}"
    );
    // The oldest made room.
    assert_closed(&mut idle[0], Duration::from_secs(1)).await;
    drop(idle);
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

/// Links that finish the handshake and then never say hello keep their
/// inbound slot: at most `MAX_INBOUND_HANDSHAKES` of them, the next
/// connection closes the oldest; past their deadline they are all closed
/// and a real peer gets in.
#[tokio::test]
async fn silent_links_are_bounded_and_closed_at_their_deadline() {
    let clock = Arc::new(ManualClock::new());
    let b = node_clocked(61, 2 << 62, None, true, clock.clone()).await;
    let addr = b.r.addresses[0];
    let bw = Arc::new(Bandwidth::unlimited());
    let cfg = LinkConfig::default();
    let mut silent = Vec::new();
    for i in 0..MAX_INBOUND_HANDSHAKES {
        let keys = keys_of(100 + u8::try_from(i).unwrap());
        let link = Link::connect_noderef(&b.r, &keys, &cfg, bw.clone())
            .await
            .unwrap();
        let (tx, mut rx) = link.into_parts();
        // The node's hello: its driver has the link.
        let first = rx.recv().await;
        assert!(
            matches!(
                first,
                Some(LinkEvent::Message(Message::LocationChanged { .. }))
            ),
            "link {i}: {first:?}"
        );
        silent.push((tx, rx));
    }
    // One more connection: the oldest silent link makes room.
    let _extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match silent[0].1.recv().await {
                None | Some(LinkEvent::Closed(_)) => return,
                Some(LinkEvent::Message(_)) => {}
            }
        }
    })
    .await;
    assert!(first.is_ok(), "the oldest silent link is still open");
    // The deadline, on the node's clock.
    clock.advance(HELLO_DEADLINE + Duration::from_secs(1));
    for (i, (_tx, rx)) in silent.iter_mut().enumerate() {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await {
                    None | Some(LinkEvent::Closed(_)) => return,
                    Some(LinkEvent::Message(_)) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "silent link {i} still open after the deadline"
        );
    }
    // A real peer gets in.
    let a = node_with(62, 1 << 62, None, true).await;
    a.m.connect(b.r.clone()).await.unwrap();
    wait_peers(&b.m, 1).await;
    for n in [&a, &b] {
        n.stop.cancel();
    }
}

/// A listener that fails as a system out of file descriptors does,
/// counting the calls; it stops the loop after `limit` of them.
struct Exhausted {
    calls: Arc<AtomicUsize>,
    limit: usize,
    stop: CancellationToken,
}

impl driver::Listener for Exhausted {
    async fn accept(&mut self) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.limit {
            self.stop.cancel();
        }
        // EMFILE.
        Err(std::io::Error::from_raw_os_error(24))
    }
}

/// The accept loop pauses after errors (EMFILE) instead of spinning: in
/// 300 ms of errors it tries a handful of times, not thousands.
#[tokio::test]
async fn the_accept_loop_backs_off_on_errors() {
    let (setup, _l, _r) = setup(63, 1 << 62, None, true).await;
    let stop = CancellationToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = Exhausted {
        calls: calls.clone(),
        limit: 1000,
        stop: stop.clone(),
    };
    let (links, _rx) = mpsc::channel(1);
    let task = tokio::spawn(driver::accept_loop(
        listener,
        setup,
        links,
        stop.clone(),
        punch::Punches::default(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.unwrap();
    let n = calls.load(Ordering::SeqCst);
    // 10 + 20 + 40 + 80 + 160 ms: at most 6 tries in 300 ms.
    assert!(n <= 10, "{n} accepts in 300 ms");
    assert!(n >= 1);
}

#[test]
fn the_accept_backoff_doubles_to_its_cap_logs_once_and_resets() {
    let mut b = driver::Backoff::default();
    let (first, log) = b.failed();
    assert_eq!((first, log), (driver::Backoff::FIRST, true));
    let mut last = first;
    for _ in 0..20 {
        let (d, log) = b.failed();
        assert!(!log, "one log per run of errors");
        assert_eq!(d, (last * 2).min(driver::Backoff::MAX));
        last = d;
    }
    assert_eq!(last, driver::Backoff::MAX);
    assert!(b.succeeded());
    assert!(!b.succeeded());
    assert_eq!(b.failed(), (driver::Backoff::FIRST, true));
}

/// FCP `WriteToClientCache=false`: a block fetched from the network is
/// not kept in the client cache; by default it is.
#[tokio::test]
async fn a_fetch_keeps_its_block_in_the_client_cache_only_if_asked() {
    let (na, nb) = (node(4, 1 << 62).await, node(5, 3 << 62).await);
    befriend(&na, &nb).await;
    wait_peers(&na.m, 1).await;
    wait_peers(&nb.m, 1).await;
    let mut keys = Vec::new();
    for text in [&b"not kept"[..], b"kept"] {
        let (chk, block) =
            lichen_crypto::chk::encode(text, lichen_crypto::DataFlags::default()).unwrap();
        na.store
            .put(Space::Store, BlockKind::Chk, &chk.routing_key, &block)
            .unwrap();
        keys.push((Key(chk.routing_key.0), block));
    }
    for ((key, block), keep) in keys.iter().zip([false, true]) {
        let opts = FetchOpts {
            local_first: true,
            keep,
        };
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            nb.m.fetch_with(*key, KeyKind::Chk, opts),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, RequestOutcome::Found(block.clone()));
    }
    let in_client = |k: &Key| {
        nb.store
            .contains_in(Space::Client, BlockKind::Chk, &RoutingKey(k.0))
    };
    // The store writer keeps blocks in order: once the second is in,
    // the first would be too.
    for _ in 0..250 {
        if in_client(&keys[1].0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_client(&keys[1].0), "the default fetch kept nothing");
    assert!(!in_client(&keys[0].0), "keep: false kept the block");
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

#[tokio::test]
async fn a_block_inserted_on_a_is_fetched_on_c_through_b() {
    let (na, nb, nc) = (
        node(1, 1 << 62).await,
        node(2, 2 << 62).await,
        node(3, 3 << 62).await,
    );
    befriend(&na, &nb).await;
    befriend(&nc, &nb).await;
    let (a, b, c) = (&na.m, &nb.m, &nc.m);
    wait_peers(a, 1).await;
    wait_peers(b, 2).await;
    wait_peers(c, 1).await;
    let data = b"hello over real links".repeat(100);
    let (chk, block) =
        lichen_crypto::chk::encode(&data, lichen_crypto::DataFlags::default()).unwrap();
    let key = Key(chk.routing_key.0);
    let ins = tokio::time::timeout(
        Duration::from_secs(30),
        a.insert(key, KeyKind::Chk, block.clone()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        matches!(
            ins,
            InsertOutcome::Success | InsertOutcome::RouteNotFound { .. }
        ),
        "{ins:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(30), c.fetch(key, KeyKind::Chk))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, RequestOutcome::Found(block));
    for n in [&na, &nb, &nc] {
        n.stop.cancel();
    }
}

#[tokio::test]
async fn darknet_refuses_strangers_and_keeps_one_link_per_friend() {
    let a = node(11, 1 << 62).await;
    let b = node(12, 2 << 62).await;
    let stranger = node(13, 3 << 62).await;
    // Both add each other at once: simultaneous dials end in one link.
    befriend(&a, &b).await;
    wait_peers(&a.m, 1).await;
    wait_peers(&b.m, 1).await;
    // The stranger knows a, but a does not know it.
    stranger
        .m
        .add_friend(a.r.clone(), a.bytes.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.m.peer_count().await.unwrap(), 1);
    assert_eq!(b.m.peer_count().await.unwrap(), 1);
    assert_eq!(stranger.m.peer_count().await.unwrap(), 0);
    let listed = a.m.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].connected && listed[0].kind == PeerKind::Friend);
    assert_eq!(listed[0].identity, identity_of(&b.r.static_key));
    // Duplicates and self are refused with typed errors.
    assert_eq!(
        a.m.add_friend(b.r.clone(), b.bytes.clone()).await,
        Err(AddFriendError::Refused(
            lichen_link::policy::AddFriendError::Duplicate
        ))
    );
    assert_eq!(
        a.m.add_friend(a.r.clone(), a.bytes.clone()).await,
        Err(AddFriendError::Refused(
            lichen_link::policy::AddFriendError::Myself
        ))
    );
    // Removing b closes the link; b is then refused too.
    let gone = a.m.remove(&identity_of(&b.r.static_key)).await.unwrap();
    assert!(gone.is_some());
    assert!(a.m.remove("nobody").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.m.peer_count().await.unwrap(), 0);
    for n in [&a, &b, &stranger] {
        n.stop.cancel();
    }
}

#[tokio::test]
async fn friends_are_written_to_the_peer_file_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let a = node_in(21, 1 << 62, Some(dir.path().to_owned())).await;
    let b = node(22, 2 << 62).await;
    a.m.add_friend(b.r.clone(), b.bytes.clone()).await.unwrap();
    a.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), a.m.stopped())
        .await
        .unwrap();
    let loaded = file::load(dir.path(), 8, &test_vault());
    assert!(loaded.list.is_friend(&b.r.static_key));
    // A new manager on the same directory lists it.
    let a2 = node_in(21, 1 << 62, Some(dir.path().to_owned())).await;
    let listed = a2.m.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, PeerKind::Friend);
    a2.stop.cancel();
    b.stop.cancel();
}

#[tokio::test]
async fn a_misbehaving_peer_is_disconnected_and_refused_afterwards() {
    let a = node(41, 1 << 62).await;
    // A friend of a's that turns hostile: it speaks the protocol
    // (real Noise link, hello) and then sends replies to requests it
    // was never given, each an offence.
    let keys = keys_of(42);
    let r = NodeRef::new(&keys, vec!["127.0.0.1:9".parse().unwrap()], Some(2 << 62));
    a.m.add_friend(r.clone(), r.to_bytes(&keys).into())
        .await
        .unwrap();
    let bw = Arc::new(Bandwidth::unlimited());
    let cfg = LinkConfig::default();
    let link = Link::connect_noderef(&a.r, &keys, &cfg, bw.clone())
        .await
        .unwrap();
    let (tx, mut rx) = link.into_parts();
    tx.try_send(Message::LocationChanged {
        location: Location(2 << 62),
    })
    .unwrap();
    wait_peers(&a.m, 1).await;
    let limit = lichen_routing::Config::default().misbehaviour_limit;
    for id in 0..u64::from(limit) + 10 {
        if tx.try_send(Message::Accepted { id }).is_err() {
            break;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = rx.recv().await {
            if matches!(e, LinkEvent::Closed(_)) {
                return true;
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
    assert_eq!(a.m.peer_count().await.unwrap(), 0);
    // Back at once with the same key: closed before any hello.
    let again = Link::connect_noderef(&a.r, &keys, &cfg, bw).await.unwrap();
    let (_tx2, mut rx2) = again.into_parts();
    let first = tokio::time::timeout(Duration::from_secs(10), rx2.recv())
        .await
        .unwrap();
    assert!(
        matches!(first, None | Some(LinkEvent::Closed(_))),
        "a banned peer got {first:?}"
    );
    // Still a friend (the ban ends by itself), but not connected.
    let listed = a.m.list().await.unwrap();
    assert!(listed
        .iter()
        .any(|p| p.kind == PeerKind::Friend && !p.connected));
    a.stop.cancel();
}

#[tokio::test]
async fn an_opennet_node_remembers_a_peer_that_dialed_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = node_with(51, 1 << 62, Some(dir.path().to_owned()), true).await;
    let b = node_with(52, 2 << 62, None, true).await;
    b.m.connect(a.r.clone()).await.unwrap();
    wait_peers(&a.m, 1).await;
    let mut remembered = false;
    for _ in 0..100 {
        let listed = a.m.list().await.unwrap();
        if listed
            .iter()
            .any(|p| p.identity == identity_of(&b.r.static_key) && p.noderef.is_some())
        {
            remembered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(remembered, "a did not remember b");
    // It is in a's peer file: a restarted a can dial b without seeds.
    a.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), a.m.stopped())
        .await
        .unwrap();
    let loaded = file::load(dir.path(), 8, &test_vault());
    assert!(loaded.list.get(&b.r.static_key).is_some());
    b.stop.cancel();
}

#[test]
fn the_store_writer_keeps_blocks_of_every_space_and_kind() {
    let store = memory_store(5, 0);
    let chk = |n: u8| {
        let (k, b) =
            lichen_crypto::chk::encode(&[n; 100], lichen_crypto::DataFlags::default()).unwrap();
        (k.routing_key, b)
    };
    let ssk = lichen_crypto::ssk::SskPrivate::from_keyword("writer");
    let (sk, sb) = ssk
        .encode("doc", b"x", lichen_crypto::DataFlags::default())
        .unwrap();
    let keeper = Keeper::new(store.clone());
    let blocks: Vec<(Space, BlockKind, RoutingKey, Vec<u8>)> = vec![
        (Space::Cache, BlockKind::Chk, chk(1).0, chk(1).1),
        (Space::Store, BlockKind::Chk, chk(2).0, chk(2).1),
        (Space::Client, BlockKind::Chk, chk(3).0, chk(3).1),
        (Space::Cache, BlockKind::Ssk, sk, sb),
    ];
    for (space, kind, key, block) in blocks.clone() {
        keeper.keep(space, kind, key, block);
    }
    // Peers are served the shared blocks at once (written or not), and
    // never the client cache's.
    let mut src = StoreSource(store.as_ref(), &keeper);
    assert_eq!(
        src.get(&Key(blocks[0].2 .0), KeyKind::Chk),
        Some(blocks[0].3.clone())
    );
    assert_eq!(src.get(&Key(blocks[2].2 .0), KeyKind::Chk), None);
    drop(keeper); // the writer drains its queue, then stops
    for _ in 0..200 {
        if blocks
            .iter()
            .all(|(s, k, key, _)| store.contains_in(*s, *k, key))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (space, kind, key, block) in blocks {
        assert_eq!(store.get_in(space, kind, &key).unwrap(), Some(block));
    }
}

/// A node whose noderef names `addr(port)` (`port`: where it listens)
/// rather than where it listens; `auto_address` as in [`PeerSetup`].
async fn node_advertising(
    secret: u8,
    location: u64,
    addr: impl FnOnce(u16) -> std::net::SocketAddr,
    auto_address: bool,
) -> TestNode {
    let (mut s, l, _) = setup(secret, location, None, false).await;
    let keys = keys_of(secret);
    let r = NodeRef::new(
        &keys,
        vec![addr(l.local_addr().unwrap().port())],
        Some(location),
    );
    let bytes: lichen_routing::NoderefBytes = r.to_bytes(&keys).into();
    s.noderef = Some(bytes.clone());
    s.auto_address = auto_address;
    let stop = CancellationToken::new();
    TestNode {
        store: s.store.clone(),
        m: PeerManager::start(s, l, stop.clone()),
        r,
        bytes,
        stop,
    }
}

/// What the node's dial-backs say once `answers` peers answered (within
/// ten seconds).
async fn reachability_after(m: &PeerManager, answers: usize) -> Reachability {
    for _ in 0..500 {
        let r = m.reachability();
        if r.answers >= answers {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no dial-back answer: {:?}", m.reachability());
}

/// A node that listens where its noderef says learns from its peer's
/// dial-back that it is reachable, and at which address.
#[tokio::test]
async fn a_peer_dials_a_listening_node_back() {
    let (na, nb) = (node(71, 1 << 62).await, node(72, 2 << 62).await);
    assert_eq!(na.m.reachability().state, Reachable::Unknown);
    befriend(&na, &nb).await;
    wait_peers(&na.m, 1).await;
    let r = reachability_after(&na.m, 1).await;
    assert_eq!(r.state, Reachable::Yes);
    assert_eq!(
        r.public.map(|a| a.ip()),
        Some(std::net::IpAddr::from([127, 0, 0, 1]))
    );
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

/// A node whose noderef names a port where nothing answers (a NAT with
/// no mapping drops the connection the same way) learns it is not
/// reachable, and still has its peer: it dialed out.
#[tokio::test]
async fn a_node_nobody_can_dial_learns_it_is_not_reachable() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let na = node_advertising(73, 1 << 62, |_| nowhere, false).await;
    let nb = node(74, 2 << 62).await;
    befriend(&na, &nb).await;
    wait_peers(&na.m, 1).await;
    let r = reachability_after(&na.m, 1).await;
    assert_eq!(r.state, Reachable::No);
    assert_eq!(na.m.peer_count().await.unwrap(), 1);
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

/// A node listening on every interface cannot know its address (it
/// starts with a stale one here); once two peers' dial-backs reach it at
/// the same address, its noderef names that one, on its port.
#[tokio::test]
async fn the_noderef_follows_the_address_two_peers_reached() {
    let stale = |port| std::net::SocketAddr::from(([127, 0, 0, 9], port));
    let na = node_advertising(75, 1 << 62, stale, true).await;
    let port = na.r.addresses[0].port();
    let stale = stale(port);
    let (nb, nc) = (node(76, 2 << 62).await, node(77, 3 << 62).await);
    assert_eq!(na.m.advertised_address(), Some(stale));
    befriend(&na, &nb).await;
    let r = reachability_after(&na.m, 1).await;
    assert_eq!(r.state, Reachable::Yes);
    assert_eq!(
        na.m.advertised_address(),
        Some(stale),
        "one peer is not enough"
    );
    befriend(&na, &nc).await;
    reachability_after(&na.m, 2).await;
    let want = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if na.m.advertised_address() == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(na.m.advertised_address(), Some(want));
    for n in [&na, &nb, &nc] {
        n.stop.cancel();
    }
}

/// Two friends that cannot dial each other (each holds a noderef of the
/// other naming a port where nothing answers, as a NAT without a mapping
/// does) link directly through a hole punch their shared friend times:
/// their dials fail, they ask it, it introduces them, and the punch's
/// dials from their listening ports meet.
#[tokio::test]
async fn friends_that_cannot_dial_each_other_link_through_a_punch() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let (na, nb, nr) = (
        node(81, 1 << 62).await,
        node(82, 2 << 62).await,
        node(83, 3 << 62).await,
    );
    befriend(&na, &nr).await;
    befriend(&nb, &nr).await;
    wait_peers(&na.m, 1).await;
    wait_peers(&nb.m, 1).await;
    // Each side's noderef of the other names a dead address.
    let dead = |secret: u8, n: &TestNode| {
        let keys = keys_of(secret);
        let r = NodeRef::new(&keys, vec![nowhere], n.r.location);
        let bytes: lichen_routing::NoderefBytes = r.to_bytes(&keys).into();
        (r, bytes)
    };
    let (rb, bb) = dead(82, &nb);
    let (ra, ba) = dead(81, &na);
    na.m.add_friend(rb, bb).await.unwrap();
    nb.m.add_friend(ra, ba).await.unwrap();
    wait_peers(&na.m, 2).await;
    wait_peers(&nb.m, 2).await;
    let friends = na.m.list().await.unwrap();
    assert_eq!(friends.iter().filter(|p| p.connected).count(), 2);
    // Through a punch (its counts are published once a tick).
    for n in [&na, &nb] {
        let mut r = n.m.reachability();
        for _ in 0..100 {
            if r.punched > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            r = n.m.reachability();
        }
        assert_eq!((r.punches, r.punched), (1, 1));
    }
    for n in [&na, &nb, &nr] {
        n.stop.cancel();
    }
}

/// Two darknet nodes that know nothing of each other become friends
/// through an invitation over real sockets; the invitation works once.
#[tokio::test]
async fn an_invitation_makes_two_darknet_nodes_friends_over_sockets() {
    let (na, nb, nc) = (
        node(91, 1 << 62).await,
        node(92, 2 << 62).await,
        node(93, 3 << 62).await,
    );
    let inv =
        na.m.invite(Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
    let text = inv.to_text();
    let inv = lichen_link::Invitation::parse(&text, 0).unwrap();
    let friend = nb.m.redeem(inv.clone()).await.unwrap();
    assert_eq!(
        friend.identity,
        lichen_link::policy::identity_of(&na.r.static_key)
    );
    wait_peers(&na.m, 1).await;
    wait_peers(&nb.m, 1).await;
    let a_list = na.m.list().await.unwrap();
    assert_eq!(a_list.len(), 1);
    assert_eq!(a_list[0].kind, lichen_link::peerlist::PeerKind::Friend);
    assert!(
        a_list[0].noderef.is_some(),
        "a remembers b's signed noderef"
    );
    // Used: a third node is refused, and a has no new friend.
    assert_eq!(
        nc.m.redeem(inv).await.unwrap_err(),
        AddFriendError::InvitationRefused
    );
    assert_eq!(na.m.list().await.unwrap().len(), 1);
    for n in [&na, &nb, &nc] {
        n.stop.cancel();
    }
}

/// A node listening on every interface does not give out invitations
/// naming its stand-in address (127.0.0.1) before it knows a real one.
#[tokio::test]
async fn no_invitation_names_a_stand_in_address() {
    let stand_in = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let n = node_advertising(95, 1 << 62, stand_in, true).await;
    assert_eq!(
        n.m.invite(Duration::from_secs(60)).await.unwrap(),
        Err(lichen_link::policy::InviteError::AddressUnknown)
    );
    // Told where it listens, it invites.
    let m = node_advertising(96, 2 << 62, stand_in, false).await;
    assert!(m.m.invite(Duration::from_secs(60)).await.unwrap().is_ok());
    for x in [&n, &m] {
        x.stop.cancel();
    }
}

/// A node that does not listen on loopback (here: on every interface,
/// so its noderef names a stand-in 127.0.0.1) does not dial a loopback
/// address a noderef names: a peer could steer it at its own local
/// services.
#[tokio::test]
async fn loopback_addresses_are_dialed_only_on_a_loopback_network() {
    let (mut s, _, _) = setup(97, 1 << 62, None, false).await;
    let l = lichen_link::sockets::listen("0.0.0.0:0".parse().unwrap()).unwrap();
    let keys = keys_of(97);
    let port = l.local_addr().unwrap().port();
    let r = NodeRef::new(&keys, vec![([127, 0, 0, 1], port).into()], Some(1 << 62));
    let bytes: lichen_routing::NoderefBytes = r.to_bytes(&keys).into();
    s.noderef = Some(bytes.clone());
    s.auto_address = true;
    let stop = CancellationToken::new();
    let na = TestNode {
        store: s.store.clone(),
        m: PeerManager::start(s, l, stop.clone()),
        r,
        bytes,
        stop,
    };
    let nb = node(98, 2 << 62).await;
    na.m.add_friend(nb.r.clone(), nb.bytes.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(na.m.peer_count().await.unwrap(), 0, "127.0.0.1 not dialed");
    // On a loopback network (b names 127.0.0.1 as its own), it is.
    nb.m.add_friend(na.r.clone(), na.bytes.clone())
        .await
        .unwrap();
    wait_peers(&nb.m, 1).await;
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

/// `ListPeers` counts each link's wire bytes: what one side sent, the
/// other received.
#[tokio::test]
async fn each_links_bytes_are_counted_on_both_sides() {
    let (na, nb) = (node(99, 1 << 62).await, node(100, 2 << 62).await);
    befriend(&na, &nb).await;
    wait_peers(&na.m, 1).await;
    wait_peers(&nb.m, 1).await;
    let one = |list: Vec<PeerInfo>| {
        let p = list.into_iter().find(|p| p.connected).unwrap();
        assert!(p.link.is_some());
        p.traffic
    };
    let mut last = ((0, 0), (0, 0));
    for _ in 0..100 {
        let a = one(na.m.list().await.unwrap());
        let b = one(nb.m.list().await.unwrap());
        last = (a, b);
        if a.0 > 0 && a.1 > 0 && a == (b.1, b.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a, b) = last;
    assert!(a.0 > 0 && a.1 > 0, "{last:?}");
    assert_eq!(a, (b.1, b.0), "a's sent is b's received and back");
    for n in [&na, &nb] {
        n.stop.cancel();
    }
}

//! Loopback tests of whole links: real TCP on 127.0.0.1, bounded in time.

#![allow(clippy::unwrap_used)]

use super::link::family_turns;
use super::*;
use lichen_routing::{Key, KeyKind, Message};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

fn keys(b: u8) -> NodeKeys {
    NodeKeys::from_static_secret([b; 32])
}

fn fast_cfg() -> LinkConfig {
    LinkConfig {
        handshake_timeout: Duration::from_secs(5),
        ..LinkConfig::default()
    }
}

/// A listener on 127.0.0.1 that accepts one link with `keys`.
async fn listen_one(
    k: NodeKeys,
    cfg: LinkConfig,
) -> (SocketAddr, tokio::task::JoinHandle<Result<Link, LinkError>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        Link::accept(s, &k, &cfg, Arc::new(Bandwidth::unlimited())).await
    });
    (addr, h)
}

/// The error the listener's side of a link ended with (within `LIMIT`).
async fn server_error(server: tokio::task::JoinHandle<Result<Link, LinkError>>) -> LinkError {
    tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
}

async fn next_msg(l: &mut Link) -> Message {
    match tokio::time::timeout(LIMIT, l.recv()).await.unwrap() {
        Some(LinkEvent::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn request(id: u64) -> Message {
    Message::Request {
        id,
        key: Key([id as u8; 32]),
        htl: 18,
        kind: KeyKind::Chk,
    }
}

#[tokio::test]
async fn two_links_exchange_messages_both_ways() {
    let (a, b) = (keys(1), keys(2));
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let (mut la, mut lb) = connect_pair(addr, server, &fast_cfg(), Bandwidth::unlimited()).await;
    assert_eq!(la.remote_static(), b.static_public());
    assert_eq!(lb.remote_static(), a.static_public());
    let (sa, sb) = (la.sender(), lb.sender());
    let block = vec![0x5a; 32786];
    let sender = tokio::spawn(async move {
        for id in 0..200u64 {
            sa.send(request(id)).await.unwrap();
        }
        sa.send(Message::DataFound {
            id: 7,
            block: vec![0x5a; 32786],
        })
        .await
        .unwrap();
        sa
    });
    for id in 0..200u64 {
        assert_eq!(next_msg(&mut lb).await, request(id));
    }
    assert_eq!(next_msg(&mut lb).await, Message::DataFound { id: 7, block });
    for id in 0..50u64 {
        sb.send(Message::Accepted { id }).await.unwrap();
    }
    for id in 0..50u64 {
        assert_eq!(next_msg(&mut la).await, Message::Accepted { id });
    }
    let _sa = sender.await.unwrap();
    // A clean close reaches the other side as `Closed`.
    la.close();
    match tokio::time::timeout(LIMIT, lb.recv()).await.unwrap() {
        Some(LinkEvent::Closed(LinkError::Closed)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_responder_key_fails_the_handshake() {
    let (a, b, c) = (keys(1), keys(2), keys(3));
    let (addr, server) = listen_one(b, fast_cfg()).await;
    let e = Link::connect(
        addr,
        &a,
        &c.static_public(),
        &fast_cfg(),
        Arc::new(Bandwidth::unlimited()),
    )
    .await
    .unwrap_err();
    let se = server_error(server).await;
    assert!(se.is_peer_fault(), "responder: {se}");
    // The initiator sees the responder hang up (or a failed handshake).
    assert!(
        matches!(
            e,
            LinkError::HandshakeClosed | LinkError::Io(_) | LinkError::Handshake(_)
        ),
        "initiator: {e}"
    );
}

#[tokio::test]
async fn garbage_and_truncation_end_the_handshake_with_errors() {
    for garbage in [
        vec![0u8; 0],
        vec![0, 48, 1, 2, 3],
        vec![0xff; 300],
        vec![0, 48].into_iter().chain([7u8; 48]).collect(),
    ] {
        let (addr, server) = listen_one(keys(2), fast_cfg()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&garbage).await.unwrap();
        s.shutdown().await.unwrap();
        let e = server_error(server).await;
        assert!(
            matches!(
                e,
                LinkError::Truncated
                    | LinkError::HandshakeClosed
                    | LinkError::Handshake(_)
                    | LinkError::BadFrameLength(_)
                    | LinkError::Io(_)
            ),
            "{e}"
        );
    }
}

/// A TCP relay that records what passes in each direction.
async fn recording_relay(target: SocketAddr) -> (SocketAddr, Arc<Mutex<[Vec<u8>; 2]>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let rec = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
    let rec2 = rec.clone();
    tokio::spawn(async move {
        let (inbound, _) = l.accept().await.unwrap();
        let outbound = TcpStream::connect(target).await.unwrap();
        let (ir, iw) = inbound.into_split();
        let (or, ow) = outbound.into_split();
        let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                    mut w: tokio::net::tcp::OwnedWriteHalf,
                    dir: usize,
                    rec: Arc<Mutex<[Vec<u8>; 2]>>| async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                rec.lock().unwrap()[dir].extend_from_slice(&buf[..n]);
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        };
        tokio::join!(pump(ir, ow, 0, rec2.clone()), pump(or, iw, 1, rec2));
    });
    (addr, rec)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Split a recorded stream into its length-prefixed records.
/// The first `n` length-prefixed handshake messages of a recorded
/// stream (their lengths), and the rest.
fn handshake_records(mut s: &[u8], n: usize) -> (Vec<usize>, &[u8]) {
    let mut out = Vec::new();
    for _ in 0..n {
        let len = usize::from(u16::from_be_bytes([s[0], s[1]]));
        assert!(s.len() >= 2 + len, "torn record");
        out.push(len);
        s = &s[2 + len..];
    }
    (out, s)
}

#[tokio::test]
async fn a_passive_relay_sees_no_plaintext_keys_or_odd_sizes() {
    let (a, b) = (keys(1), keys(2));
    let (server_addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let (relay_addr, rec) = recording_relay(server_addr).await;
    let cfg = LinkConfig {
        rekey: RekeyPolicy {
            after_frames: 5,
            after_bytes: u64::MAX,
        },
        ..fast_cfg()
    };
    let mut la = Link::connect(
        relay_addr,
        &a,
        &b.static_public(),
        &cfg,
        Arc::new(Bandwidth::unlimited()),
    )
    .await
    .unwrap();
    let mut lb = tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // A test document, encoded as a real CHK block.
    let document: Vec<u8> = b"Lichen wire test: the quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(20_000)
        .collect();
    let (chk, block) =
        lichen_crypto::chk::encode(&document, lichen_crypto::DataFlags::default()).unwrap();
    let key = Key(chk.routing_key.0);
    la.sender()
        .send(Message::Request {
            id: 42,
            key,
            htl: 18,
            kind: KeyKind::Chk,
        })
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut lb).await,
        Message::Request { id: 42, .. }
    ));
    lb.sender()
        .send(Message::DataFound {
            id: 42,
            block: block.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut la).await,
        Message::DataFound {
            id: 42,
            block: block.clone()
        }
    );
    // The plaintext itself too (as if a block were sent unencrypted).
    la.sender()
        .send(Message::InsertData {
            id: 43,
            block: document.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut lb).await,
        Message::InsertData { id: 43, .. }
    ));
    for id in 0..20 {
        la.sender().send(request(id)).await.unwrap();
        next_msg(&mut lb).await;
    }
    la.close();
    let _ = tokio::time::timeout(LIMIT, lb.recv()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let rec = rec.lock().unwrap().clone();
    let all: Vec<u8> = rec.concat();
    assert!(all.len() > 2 * 32 * 1024, "relay saw {} bytes", all.len());
    for secret in [
        &document[..64],
        &document[5000..5064],
        &chk.routing_key.0[..],
        &chk.crypto_key[..],
        &block[..64],
        &block[20_000..20_064],
    ] {
        assert!(!contains(&all, secret), "a secret appears on the wire");
    }
    // Static keys are never sent in clear either (XK encrypts them).
    assert!(!contains(&all, &a.static_public()));
    assert!(!contains(&all, &b.static_public()));

    // Sizes: after the three handshake messages, only whole cells (the
    // records' lengths are sealed: `transport` tests that no clear length
    // is left).
    let (init, init_rest) = handshake_records(&rec[0], 2);
    let (resp, resp_rest) = handshake_records(&rec[1], 1);
    assert_eq!(init, [49, 64], "XK messages 1 and 3");
    assert_eq!(resp, [49], "XK message 2");
    for rest in [init_rest, resp_rest] {
        assert_eq!(rest.len() % frame::CELL, 0, "{} bytes", rest.len());
    }
    assert!(init_rest.len() / frame::CELL > 20);
}

#[tokio::test]
async fn backpressure_bounds_the_send_queue() {
    let b = keys(2);
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let cfg = LinkConfig {
        send_queue_bytes: 4 * 30_000,
        ..fast_cfg()
    };
    let (la, _lb) = connect_pair(addr, server, &cfg, Bandwidth::new(50_000, 0)).await;
    let s = la.sender();
    let mut accepted = 0;
    let mut full = false;
    for id in 0..100 {
        match s.try_send(Message::DataFound {
            id,
            block: vec![1; 30_000],
        }) {
            Ok(()) => accepted += 1,
            Err(LinkError::QueueFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full, "a slow link must push back");
    // Four blocks fit the byte budget; the writer may hold one or two more.
    assert!(accepted <= 6, "{accepted} blocks queued for 120 kB");
}

/// `send` waits for room and loses nothing: a queue that holds one block
/// carries many, in order.
#[tokio::test]
async fn send_waits_for_room_and_delivers_everything_in_order() {
    let b = keys(2);
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let cfg = LinkConfig {
        send_queue_bytes: 40_000,
        ..fast_cfg()
    };
    let (la, mut lb) = connect_pair(addr, server, &cfg, Bandwidth::unlimited()).await;
    let s = la.sender();
    let sender = tokio::spawn(async move {
        for id in 0..40u64 {
            s.send(Message::DataFound {
                id,
                block: vec![u8::try_from(id).unwrap(); 30_000],
            })
            .await
            .unwrap();
        }
    });
    for want in 0..40u64 {
        let ev = tokio::time::timeout(Duration::from_secs(10), lb.recv())
            .await
            .expect("a message was lost or a waiting sender never woke");
        match ev {
            Some(LinkEvent::Message(Message::DataFound { id, block })) => {
                assert_eq!(id, want);
                assert_eq!(block[0], u8::try_from(id).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    sender.await.unwrap();
}

/// The writer seals whatever is queued into one write: a burst of mixed
/// sizes, with rekeys falling inside the batches, arrives whole and in
/// order at both ends.
#[tokio::test]
async fn a_queued_burst_goes_out_in_batches_intact() {
    let b = keys(2);
    let cfg = LinkConfig {
        send_queue_bytes: 64 << 20,
        recv_queue: 1024,
        rekey: RekeyPolicy {
            after_frames: 7,
            after_bytes: u64::MAX,
        },
        ..fast_cfg()
    };
    let (addr, server) = listen_one(b.clone(), cfg.clone()).await;
    let (la, mut lb) = connect_pair(addr, server, &cfg, Bandwidth::unlimited()).await;
    let msg = |i: u64| {
        if i % 3 == 0 {
            Message::DataFound {
                id: i,
                block: vec![u8::try_from(i % 251).unwrap(); 32_786],
            }
        } else {
            Message::Request {
                id: i,
                key: Key([u8::try_from(i % 256).unwrap(); 32]),
                htl: 10,
                kind: KeyKind::Chk,
            }
        }
    };
    // Queued without yielding: the writer finds hundreds waiting.
    let s = la.sender();
    for i in 0..600u64 {
        s.try_send(msg(i)).unwrap();
    }
    for want in 0..600u64 {
        match tokio::time::timeout(LIMIT, lb.recv()).await.unwrap() {
            Some(LinkEvent::Message(m)) => assert_eq!(m, msg(want)),
            other => panic!("message {want}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn upload_limit_is_respected() {
    let b = keys(2);
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    // 200 kB/s with a burst of one second: 600 kB take at least ~2 s.
    let rate = 200_000u64;
    let (la, mut lb) = connect_pair(addr, server, &fast_cfg(), Bandwidth::new(rate, 0)).await;
    let start = tokio::time::Instant::now();
    let s = la.sender();
    tokio::spawn(async move {
        for id in 0..18 {
            s.send(Message::DataFound {
                id,
                block: vec![1; 32786],
            })
            .await
            .unwrap();
        }
    });
    for _ in 0..18 {
        next_msg(&mut lb).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = 18.0 * (33.0 * 1024.0 + 18.0);
    let min = (bytes - rate as f64) / rate as f64;
    assert!(secs >= min * 0.9, "{secs} s < {min} s");
}

#[tokio::test]
async fn keepalive_holds_an_idle_link_and_silence_times_out() {
    let (a, b) = (keys(1), keys(2));
    let cfg = LinkConfig {
        keepalive: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(300),
        ..fast_cfg()
    };
    let (addr, server) = listen_one(b.clone(), cfg.clone()).await;
    let (mut la, lb) = connect_pair(addr, server, &cfg, Bandwidth::unlimited()).await;
    // Idle for 1 s: pings keep both sides up.
    assert!(tokio::time::timeout(Duration::from_secs(1), la.recv())
        .await
        .is_err());
    lb.sender().send(request(1)).await.unwrap();
    assert_eq!(next_msg(&mut la).await, request(1));

    // A peer that handshakes and then says nothing is dropped.
    let (addr, server) = listen_one(b.clone(), cfg.clone()).await;
    let (_stream, _transport) = raw_initiator(addr, &a, &b).await;
    let mut silent = server.await.unwrap().unwrap();
    match tokio::time::timeout(LIMIT, silent.recv()).await.unwrap() {
        Some(LinkEvent::Closed(LinkError::Timeout)) => {}
        other => panic!("{other:?}"),
    }
}

/// `keys(1)` links to the listener at `addr` (`keys(2)`, from
/// [`listen_one`]): the initiator's end and the responder's.
async fn connect_pair(
    addr: SocketAddr,
    server: tokio::task::JoinHandle<Result<Link, LinkError>>,
    cfg: &LinkConfig,
    bandwidth: Bandwidth,
) -> (Link, Link) {
    let la = Link::connect(
        addr,
        &keys(1),
        &keys(2).static_public(),
        cfg,
        Arc::new(bandwidth),
    )
    .await
    .unwrap();
    let lb = tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (la, lb)
}

/// A handshake by hand as initiator from `a` to `b` at `addr`: the raw
/// stream and our transport, to send what a `Link` would not.
async fn raw_initiator(addr: SocketAddr, a: &NodeKeys, b: &NodeKeys) -> (TcpStream, Transport) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut hs = Handshake::initiator(a, &b.static_public()).unwrap();
    let mut buf = Vec::new();
    loop {
        let (n, act) = hs.step(&buf).unwrap();
        buf.drain(..n);
        match act {
            HsAction::Send(x) => stream.write_all(&x).await.unwrap(),
            HsAction::NeedMore => {
                let mut c = [0u8; 256];
                let k = stream.read(&mut c).await.unwrap();
                buf.extend_from_slice(&c[..k]);
            }
            HsAction::Finished => break,
        }
    }
    (stream, hs.finish(RekeyPolicy::default()).unwrap().0)
}

/// A newer node may send message types this version does not know: the
/// authentic frame is skipped and the link goes on (it used to end the
/// link, cutting newer nodes off from older ones).
#[tokio::test]
async fn an_unknown_message_type_is_skipped_and_the_link_stays_up() {
    let (a, b) = (keys(1), keys(2));
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let (mut stream, mut t) = raw_initiator(addr, &a, &b).await;
    let mut lb = server.await.unwrap().unwrap();
    // `{"v": 1, "m": {"Routing": {"FromTheFuture": {"id": 7}}}}`, then a
    // message this version knows.
    use ciborium::cbor;
    let future = cbor!({"v" => 1, "m" => {"Routing" => {"FromTheFuture" => {"id" => 7}}}}).unwrap();
    let mut cbor = Vec::new();
    ciborium::into_writer(&future, &mut cbor).unwrap();
    let mut wire = Vec::new();
    t.seal_cbor(&cbor, &mut wire).unwrap();
    let known = Message::DataNotFound { id: 8 };
    t.seal_into(&LinkMessage::Routing(known.clone()), &mut wire)
        .unwrap();
    stream.write_all(&wire).await.unwrap();
    match tokio::time::timeout(LIMIT, lb.recv()).await.unwrap() {
        Some(LinkEvent::Message(m)) => assert_eq!(m, known),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_the_link() {
    let (a, b) = (keys(1), keys(2));
    let (addr, server) = listen_one(b.clone(), fast_cfg()).await;
    let (mut stream, _) = raw_initiator(addr, &a, &b).await;
    let mut lb = server.await.unwrap().unwrap();
    // A frame of a legal size whose contents are not authentic.
    let mut junk = vec![0x01, 0x10];
    junk.extend(std::iter::repeat_n(0xab, 0x110));
    stream.write_all(&junk).await.unwrap();
    match tokio::time::timeout(LIMIT, lb.recv()).await.unwrap() {
        Some(LinkEvent::Closed(e)) => assert!(matches!(e, LinkError::Decrypt), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A dial-back reaches a node that listens with the key asked for, and
/// leaves no link behind: the responder sees the handshake cut short.
#[tokio::test]
async fn a_dial_back_proves_the_key_and_leaves_no_link() {
    let b = keys(2);
    let kb = b.static_public();
    let (addr, server) = listen_one(b, fast_cfg()).await;
    assert!(Link::dial_back(addr, &kb, LIMIT).await);
    let se = server_error(server).await;
    assert!(
        matches!(
            se,
            LinkError::HandshakeClosed | LinkError::Truncated | LinkError::Io(_)
        ),
        "responder: {se}"
    );
}

/// Another key at that address, or nobody listening: not reached.
#[tokio::test]
async fn a_dial_back_to_the_wrong_key_or_a_closed_port_fails() {
    let (addr, _server) = listen_one(keys(2), fast_cfg()).await;
    assert!(!Link::dial_back(addr, &keys(3).static_public(), LIMIT).await);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = l.local_addr().unwrap();
    drop(l);
    assert!(!Link::dial_back(closed, &keys(2).static_public(), LIMIT).await);
}

/// The address of each end: the one dialed, and the one accepted from.
#[tokio::test]
async fn a_link_knows_the_address_of_its_other_end() {
    let (addr, server) = listen_one(keys(2), fast_cfg()).await;
    let (la, lb) = connect_pair(addr, server, &fast_cfg(), Bandwidth::unlimited()).await;
    assert_eq!(la.remote_addr(), Some(addr));
    let from = lb.remote_addr().unwrap();
    assert_eq!(from.ip(), addr.ip());
    assert_ne!(from.port(), addr.port(), "the dialer's own port");
}

#[test]
fn the_address_families_take_turns() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let (v4a, v4b, v6a, v6b) = (
        a("192.0.2.1:1"),
        a("192.0.2.2:1"),
        a("[2001:db8::1]:1"),
        a("[2001:db8::2]:1"),
    );
    assert_eq!(
        family_turns(&[v4a, v4b, v6a, v6b]),
        vec![v4a, v6a, v4b, v6b]
    );
    assert_eq!(family_turns(&[v6a, v4a, v4b]), vec![v6a, v4a, v4b]);
    assert_eq!(family_turns(&[v4a]), vec![v4a]);
    assert!(family_turns(&[]).is_empty());
}

/// Happy eyeballs: the noderef's first address takes the connection and
/// then says nothing (a stalled path); the second is tried beside it
/// after ATTEMPT_DELAY and wins, long before the first's handshake
/// timeout.
#[tokio::test]
async fn a_stalled_first_address_does_not_hold_up_the_second() {
    let (a, b) = (keys(1), keys(2));
    let stall = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = stall.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            held.push(s);
        }
    });
    let (good, server) = listen_one(b, fast_cfg()).await;
    let r = NodeRef::new(&keys(2), vec![stalled, good], None);
    let t = std::time::Instant::now();
    let link = Link::connect_noderef(&r, &a, &fast_cfg(), Arc::new(Bandwidth::unlimited()))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} (handshake timeout 5 s)"
    );
    assert_eq!(link.remote_addr(), Some(good));
    tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    held.abort();
}

/// A noderef with an IPv4 address where nobody listens and an IPv6
/// loopback one: the link comes up over IPv6. Skipped (said on stderr)
/// where this host has no IPv6.
#[tokio::test]
async fn a_noderef_with_both_families_links_over_the_one_that_answers() {
    let Ok(l6) = TcpListener::bind("[::1]:0").await else {
        eprintln!("SKIPPED: no IPv6 loopback on this host");
        return;
    };
    let six = l6.local_addr().unwrap();
    let b = keys(2);
    let server = tokio::spawn(async move {
        let (s, _) = l6.accept().await?;
        Link::accept(s, &b, &fast_cfg(), Arc::new(Bandwidth::unlimited())).await
    });
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let four = dead.local_addr().unwrap();
    drop(dead);
    let r = NodeRef::new(&keys(2), vec![four, six], None);
    let link = Link::connect_noderef(&r, &keys(1), &fast_cfg(), Arc::new(Bandwidth::unlimited()))
        .await
        .unwrap();
    assert_eq!(link.remote_addr(), Some(six));
    let lb = tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(lb.remote_addr().unwrap().is_ipv6());
}

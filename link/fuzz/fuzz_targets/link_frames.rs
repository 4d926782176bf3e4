#![no_main]
//! Records from an authenticated peer over an ALREADY ESTABLISHED link.
//!
//! The handshake runs once per process; each input starts from the same
//! established pair (`Transport::fuzz_reset_pair`: fixed keys, nonces in
//! step), so no input pays for a handshake. An input is a script of what
//! the sending side writes, which the receiving side then reads in chunks:
//!
//! ```text
//! input  = chunk (u8: 0 = all at once, else bytes per read) || op*
//! op 0   = honest message: kind (u8) || fields   (sealed with Transport::seal_into)
//! op 1   = hand-made envelope: len (u16 BE) || CBOR bytes  (padded as the format says)
//! op 2   = broken record: header len (u8, mod 5) || header || body len (u16) || body
//! op 3   = corrupt the wire so far: position (u16) || xor (u8; 0 truncates there)
//! ```
//!
//! Never panics; and while nothing broken or corrupt was sent, every
//! record opens, and every honest message opens as exactly what was sent.
use libfuzzer_sys::fuzz_target;
use lichen_link::handshake::run_in_memory;
use lichen_link::{frame, Handshake, LinkMessage, NodeKeys, Opened, RekeyPolicy, Transport};
use lichen_routing::{Key, KeyKind, Message};
use std::cell::RefCell;

thread_local! {
    /// (sender, receiver), established once.
    static PAIR: RefCell<Option<(Transport, Transport)>> = RefCell::new(establish());
}

fn establish() -> Option<(Transport, Transport)> {
    let a = NodeKeys::from_static_secret([1; 32]);
    let b = NodeKeys::from_static_secret([2; 32]);
    let mut i = Handshake::initiator(&a, &b.static_public()).ok()?;
    let mut r = Handshake::responder(&b).ok()?;
    run_in_memory(&mut i, &mut r).ok()?;
    Some((
        i.finish(RekeyPolicy::default()).ok()?.0,
        r.finish(RekeyPolicy::default()).ok()?.0,
    ))
}

/// Reads the script; short reads give zeros (the script just ends early).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (0..4).fold(0, |acc, _| (acc << 16) | u64::from(self.u16()))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn honest(s: &mut Script<'_>) -> LinkMessage {
    let id = u64::from(s.u8());
    match s.u8() % 9 {
        0 => LinkMessage::Ping { nonce: s.u64() },
        1 => LinkMessage::Pong { nonce: s.u64() },
        2 => LinkMessage::Rekey,
        3 => LinkMessage::Close,
        4 => {
            let mut k = [0; 32];
            k[0] = s.u8();
            let kind = if s.u8() & 1 == 0 {
                KeyKind::Chk
            } else {
                KeyKind::Ssk
            };
            LinkMessage::Routing(Message::Request {
                id,
                key: Key(k),
                htl: s.u8(),
                kind,
            })
        }
        5 | 6 => {
            // Up to a whole CHK block (32 786 bytes): the largest records.
            let len = usize::from(s.u16()) % 32_787;
            let block = vec![s.u8(); len];
            if s.u8() & 1 == 0 {
                LinkMessage::Routing(Message::DataFound { id, block })
            } else {
                LinkMessage::Routing(Message::InsertData { id, block })
            }
        }
        7 => LinkMessage::Routing(Message::DataNotFound { id }),
        _ => LinkMessage::Routing(Message::RouteNotFound { id, htl: s.u8() }),
    }
}

/// Builds the wire bytes; returns them, the honest messages in order
/// (`None` for a hand-made envelope) and whether anything broke the rules.
fn write(tx: &mut Transport, s: &mut Script<'_>) -> (Vec<u8>, Vec<Option<LinkMessage>>, bool) {
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut broken = false;
    while !s.0.is_empty() {
        match s.u8() % 4 {
            0 => {
                let msg = honest(s);
                // (A Rekey sealed this way switches the sending key too.)
                if tx.seal_into(&msg, &mut wire).is_err() {
                    return (wire, sent, true);
                }
                sent.push(Some(msg));
            }
            1 => {
                let n = usize::from(s.u16());
                let cbor = s.bytes(n);
                let Ok((body, len)) = frame::pad(cbor) else {
                    continue;
                };
                if tx
                    .fuzz_seal_raw(&len.to_be_bytes(), &body, &mut wire)
                    .is_err()
                {
                    return (wire, sent, true);
                }
                // An honest sender switches keys after its Rekey record.
                if matches!(frame::decode(cbor), Ok(LinkMessage::Rekey)) {
                    tx.fuzz_rekey_outgoing();
                }
                sent.push(None);
            }
            2 => {
                broken = true;
                let h = usize::from(s.u8() % 5);
                let header = s.bytes(h).to_vec();
                let n = usize::from(s.u16());
                let body = s.bytes(n).to_vec();
                if tx.fuzz_seal_raw(&header, &body, &mut wire).is_err() {
                    return (wire, sent, true);
                }
            }
            _ => {
                broken = true;
                let at = usize::from(s.u16());
                match s.u8() {
                    0 => wire.truncate(at),
                    x => {
                        if let Some(b) = wire.get_mut(at) {
                            *b ^= x;
                        }
                    }
                }
            }
        }
    }
    (wire, sent, broken)
}

fn read(rx: &mut Transport, wire: &[u8], chunk: usize, sent: &[Option<LinkMessage>], broken: bool) {
    let mut buf = Vec::new();
    let mut opened = 0;
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match rx.open(&buf) {
                Ok(Some((n, got))) => {
                    assert!(n > 0 && n <= buf.len());
                    buf.drain(..n);
                    if !broken {
                        if let (Some(Some(want)), Opened::Message(m)) = (sent.get(opened), &got) {
                            assert_eq!(m, want, "an honest record opened as something else");
                        } else if let Some(Some(_)) = sent.get(opened) {
                            panic!("an honest record did not decode: {got:?}");
                        }
                    }
                    opened += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(broken, "a well-formed record failed to open: {e}");
                    return;
                }
            }
        }
    }
    if !broken {
        assert_eq!(opened, sent.len(), "records left unopened");
        assert!(buf.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    // The stateless decoders, on the raw input.
    let _ = frame::decode_with(data, &mut [0; 64]);
    if let [hi, lo, body @ ..] = data {
        let _ = frame::unpad(body, usize::from(u16::from_be_bytes([*hi, *lo])));
    }
    PAIR.with_borrow_mut(|pair| {
        let Some((tx, rx)) = pair else { return };
        Transport::fuzz_reset_pair(tx, rx);
        let mut s = Script(data);
        let chunk = match s.u8() {
            0 => usize::MAX,
            c => usize::from(c) * 61,
        };
        let (wire, sent, broken) = write(tx, &mut s);
        read(rx, &wire, chunk, &sent, broken);
    });
});

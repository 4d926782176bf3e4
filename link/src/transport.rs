//! Sealing and opening records after the handshake (no I/O).
//!
//! Wire record (see [`frame`]): `ChaChaPoly(len: u16 BE)` (18 bytes, the
//! BOLT 8 length header) `|| ChaChaPoly(cbor || zeros)`, a whole number of
//! [`frame::CELL`]-byte cells in all. Nothing on the wire is plaintext.
//! Each half is one Noise transport message, whose nonces count per
//! direction, so a replayed, dropped, reordered or forged record fails to
//! decrypt and ends the link.
//!
//! Rekeying: after [`RekeyPolicy::after_frames`] records or
//! [`RekeyPolicy::after_bytes`] bytes sent under one key, the sender
//! appends a `Rekey` record and switches its sending key (Noise `REKEY`);
//! the receiver switches its receiving key when it opens that record.

use super::error::LinkError;
use super::frame::{self, LinkMessage};
use std::cell::RefCell;

thread_local! {
    /// Buffers for sealing and opening frames, reused by every link on
    /// this thread (a frame is sealed or opened without awaiting): a
    /// block crossing a link then costs no allocation for its padded
    /// plaintext, its decrypted plaintext or the CBOR decoder's scratch.
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

#[derive(Default)]
struct Bufs {
    /// Padded body being sealed.
    seal: Vec<u8>,
    /// Decrypted body being opened.
    open: Vec<u8>,
    /// The CBOR decoder's scratch ([`frame::SCRATCH`] bytes once used).
    scratch: Vec<u8>,
}

/// When to rekey the sending direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Frames sent under one key.
    pub after_frames: u64,
    /// Bytes sent under one key.
    pub after_bytes: u64,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        // Far below ChaCha20-Poly1305's limits; bounds what one
        // compromised key exposes.
        RekeyPolicy {
            after_frames: 1 << 16,
            after_bytes: 1 << 30,
        }
    }
}

/// What an authentic frame held.
#[derive(Debug)]
pub enum Opened {
    /// A message this node understands.
    Message(LinkMessage),
    /// Contents this node cannot decode: a message type or envelope
    /// version from a newer node (or a broken one). The frame is skipped
    /// and the link goes on, so a new message type does not cut a newer
    /// node off from older ones. Skipping costs no more than opening any
    /// other frame, and the frame was authenticated, so this is no
    /// amplification.
    Unknown(LinkError),
}

/// The encrypted state of an established link.
pub struct Transport {
    noise: snow::TransportState,
    policy: RekeyPolicy,
    frames_since_rekey: u64,
    bytes_since_rekey: u64,
    rekeys_sent: u64,
    rekeys_received: u64,
    /// The length from a header already opened, whose body has not
    /// arrived in full yet (the header's nonce is spent).
    pending: Option<usize>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("rekeys_sent", &self.rekeys_sent)
            .field("rekeys_received", &self.rekeys_received)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(noise: snow::TransportState, policy: RekeyPolicy) -> Self {
        Transport {
            noise,
            policy,
            frames_since_rekey: 0,
            bytes_since_rekey: 0,
            rekeys_sent: 0,
            rekeys_received: 0,
            pending: None,
        }
    }

    fn seal_one(&mut self, msg: &LinkMessage, out: &mut Vec<u8>) -> Result<(), LinkError> {
        BUFS.with_borrow_mut(|b| {
            let len = frame::encode_padded_into(msg, &mut b.seal)?;
            self.seal_record(len, &b.seal, out)
        })
    }

    /// Seal an already encoded envelope (tests use it to send what this
    /// version would never write).
    #[cfg(test)]
    pub(crate) fn seal_cbor(&mut self, cbor: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let (body, len) = frame::pad(cbor)?;
        self.seal_record(len, &body, out)
    }

    /// Append one Noise transport message sealing `plain` to `out`.
    fn seal_part(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let at = out.len();
        out.resize(at + plain.len() + frame::TAG_LEN, 0);
        match self.noise.write_message(plain, &mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(at);
                Err(LinkError::Setup(e.to_string()))
            }
        }
    }

    /// Seal a record: the length header, then the padded body.
    fn seal_record(&mut self, len: u16, body: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let at = out.len();
        self.seal_part(&len.to_be_bytes(), out)?;
        self.seal_part(body, out)?;
        self.frames_since_rekey += 1;
        self.bytes_since_rekey += (out.len() - at) as u64;
        Ok(())
    }

    /// Encrypt `msg` into wire bytes (one frame, or two when a `Rekey`
    /// is due; the key switch happens here).
    ///
    /// # Errors
    /// [`LinkError::MessageTooLarge`].
    pub fn seal(&mut self, msg: &LinkMessage) -> Result<Vec<u8>, LinkError> {
        let mut out = Vec::new();
        self.seal_into(msg, &mut out)?;
        Ok(out)
    }

    /// [`Transport::seal`], appending the frame(s) to `out` (several
    /// messages go out in one write).
    ///
    /// # Errors
    /// As [`Transport::seal`]; `out` may then hold part of a frame.
    /// A `Rekey` passed in is a rekey asked for now: the sending key
    /// switches right after it, as the receiver's does when it reads it.
    pub fn seal_into(&mut self, msg: &LinkMessage, out: &mut Vec<u8>) -> Result<(), LinkError> {
        if *msg != LinkMessage::Rekey {
            self.seal_one(msg, out)?;
            if self.frames_since_rekey < self.policy.after_frames
                && self.bytes_since_rekey < self.policy.after_bytes
            {
                return Ok(());
            }
        }
        self.seal_one(&LinkMessage::Rekey, out)?;
        self.noise.rekey_outgoing();
        self.frames_since_rekey = 0;
        self.bytes_since_rekey = 0;
        self.rekeys_sent += 1;
        Ok(())
    }

    /// Open the first record in `input`. `Ok(None)`: need more bytes
    /// (call again with the same input and more appended). Otherwise the
    /// bytes consumed and what the record held (`Rekey` has already been
    /// acted on when it is returned).
    ///
    /// # Errors
    /// [`LinkError::BadFrameLength`], [`LinkError::Decrypt`],
    /// [`LinkError::BadPadding`]: the link cannot go on. An authentic
    /// record whose contents do not decode is not an error but
    /// [`Opened::Unknown`]. Never panics.
    pub fn open(&mut self, input: &[u8]) -> Result<Option<(usize, Opened)>, LinkError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(head) = input.get(..frame::HEADER_LEN) else {
                    return Ok(None);
                };
                let mut plain = [0u8; frame::HEADER_LEN];
                let n = self
                    .noise
                    .read_message(head, &mut plain)
                    .map_err(|_| LinkError::Decrypt)?;
                let len = match plain.get(..n) {
                    Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
                    _ => return Err(LinkError::BadPadding),
                };
                if frame::body_size(len).is_none() {
                    return Err(LinkError::BadFrameLength(len));
                }
                self.pending = Some(len);
                len
            }
        };
        let record = frame::record_size(len).ok_or(LinkError::BadFrameLength(len))?;
        let Some(ct) = input.get(frame::HEADER_LEN..record) else {
            return Ok(None);
        };
        self.pending = None;
        let decoded = BUFS.with_borrow_mut(|b| {
            let Bufs { open, scratch, .. } = b;
            open.resize(ct.len(), 0);
            let n = self
                .noise
                .read_message(ct, open)
                .map_err(|_| LinkError::Decrypt)?;
            if scratch.len() < frame::SCRATCH {
                scratch.resize(frame::SCRATCH, 0);
            }
            Ok::<_, LinkError>(frame::decode_with(frame::unpad(&open[..n], len)?, scratch))
        })?;
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => return Ok(Some((record, Opened::Unknown(e)))),
        };
        if msg == LinkMessage::Rekey {
            self.noise.rekey_incoming();
            self.rekeys_received += 1;
        }
        Ok(Some((record, Opened::Message(msg))))
    }

    /// Rekeys done in each direction: (sent, received).
    #[must_use]
    pub fn rekeys(&self) -> (u64, u64) {
        (self.rekeys_sent, self.rekeys_received)
    }

    /// Fuzzing only: seal a record whose header plaintext and body are
    /// given as they are (a peer that breaks the framing rules), without
    /// padding checks.
    ///
    /// # Errors
    /// [`LinkError::Setup`] if a part is longer than a Noise message.
    #[cfg(feature = "fuzzing")]
    pub fn fuzz_seal_raw(
        &mut self,
        header: &[u8],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LinkError> {
        self.seal_part(header, out)?;
        self.seal_part(body, out)
    }

    /// Fuzzing only: switch the sending key as an honest sender does right
    /// after a `Rekey` record it built by hand.
    #[cfg(feature = "fuzzing")]
    pub fn fuzz_rekey_outgoing(&mut self) {
        self.noise.rekey_outgoing();
        self.rekeys_sent += 1;
    }

    /// Fuzzing only: put an established pair back in step, whatever the
    /// last input did to it: both directions under fixed keys, the
    /// receiver expecting the sender's next nonce, nothing half-read. Costs
    /// no handshake, so each fuzz input starts from an established link.
    #[cfg(feature = "fuzzing")]
    pub fn fuzz_reset_pair(sender: &mut Transport, receiver: &mut Transport) {
        const K1: [u8; 32] = [0x11; 32];
        const K2: [u8; 32] = [0x22; 32];
        for t in [&mut *sender, &mut *receiver] {
            t.noise.rekey_manually(Some(&K1), Some(&K2));
            t.pending = None;
            t.frames_since_rekey = 0;
            t.bytes_since_rekey = 0;
            t.rekeys_sent = 0;
            t.rekeys_received = 0;
        }
        let next = sender.noise.sending_nonce();
        receiver.noise.set_receiving_nonce(next);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::handshake::{run_in_memory, Handshake};
    use super::super::keys::NodeKeys;
    use super::*;
    use proptest::prelude::*;

    /// An established pair (initiator, responder).
    pub(crate) fn pair(policy: RekeyPolicy) -> (Transport, Transport) {
        let a = NodeKeys::from_static_secret([1; 32]);
        let b = NodeKeys::from_static_secret([2; 32]);
        let mut i = Handshake::initiator(&a, &b.static_public()).unwrap();
        let mut r = Handshake::responder(&b).unwrap();
        run_in_memory(&mut i, &mut r).unwrap();
        (i.finish(policy).unwrap().0, r.finish(policy).unwrap().0)
    }

    fn open_all(t: &mut Transport, mut wire: &[u8]) -> Result<Vec<LinkMessage>, LinkError> {
        let mut out = Vec::new();
        while let Some((n, m)) = t.open(wire)? {
            wire = &wire[n..];
            match m {
                Opened::Message(LinkMessage::Rekey) => {}
                Opened::Message(m) => out.push(m),
                Opened::Unknown(e) => return Err(e),
            }
        }
        assert!(wire.is_empty());
        Ok(out)
    }

    #[test]
    fn rekeying_in_band() {
        let policy = RekeyPolicy {
            after_frames: 3,
            after_bytes: u64::MAX,
        };
        let (mut a, mut b) = pair(policy);
        let mut wire = Vec::new();
        for nonce in 0..10 {
            wire.extend(a.seal(&LinkMessage::Ping { nonce }).unwrap());
        }
        let got = open_all(&mut b, &wire).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(a.rekeys().0, b.rekeys().1);
        assert!(a.rekeys().0 >= 3);
        // And back the other way, independent of the first direction.
        let back = b.seal(&LinkMessage::Pong { nonce: 9 }).unwrap();
        assert_eq!(
            open_all(&mut a, &back).unwrap(),
            vec![LinkMessage::Pong { nonce: 9 }]
        );
    }

    /// A `Rekey` sealed by the caller switches the sending key too, so the
    /// link goes on (it used to switch only the receiver's, and the next
    /// record failed to decrypt).
    #[test]
    fn rekey_asked_for_by_the_caller() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let mut wire = a.seal(&LinkMessage::Ping { nonce: 1 }).unwrap();
        wire.extend(a.seal(&LinkMessage::Rekey).unwrap());
        wire.extend(a.seal(&LinkMessage::Ping { nonce: 2 }).unwrap());
        assert_eq!(
            open_all(&mut b, &wire).unwrap(),
            vec![
                LinkMessage::Ping { nonce: 1 },
                LinkMessage::Ping { nonce: 2 }
            ]
        );
        assert_eq!(a.rekeys(), (1, 0));
        assert_eq!(b.rekeys(), (0, 1));
    }

    #[test]
    fn replay_truncation_and_tampering_are_errors() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let f1 = a.seal(&LinkMessage::Ping { nonce: 1 }).unwrap();
        let f2 = a.seal(&LinkMessage::Ping { nonce: 2 }).unwrap();
        assert!(b.open(&f1[..f1.len() - 1]).unwrap().is_none());
        b.open(&f1).unwrap().unwrap();
        // Replay of frame 1.
        assert!(matches!(b.open(&f1), Err(LinkError::Decrypt)));
        // Tampered frame.
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let mut f = a.seal(&LinkMessage::Ping { nonce: 1 }).unwrap();
        f[10] ^= 1;
        assert!(matches!(b.open(&f), Err(LinkError::Decrypt)));
        // Reordering.
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let _f1 = a.seal(&LinkMessage::Ping { nonce: 1 }).unwrap();
        let f2b = a.seal(&LinkMessage::Ping { nonce: 2 }).unwrap();
        assert!(matches!(b.open(&f2b), Err(LinkError::Decrypt)));
        let _ = f2;
        // Garbage where a header should be.
        assert!(matches!(
            b.open(&[0; frame::HEADER_LEN]),
            Err(LinkError::Decrypt)
        ));
    }

    /// A header whose body arrives in pieces is opened once: its nonce is
    /// spent, and the body still opens when the rest comes.
    #[test]
    fn a_record_arriving_in_pieces_opens() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let m = LinkMessage::Routing(lichen_routing::Message::DataFound {
            id: 3,
            block: vec![9; 32786],
        });
        let wire = a.seal(&m).unwrap();
        for cut in [
            0,
            1,
            frame::HEADER_LEN,
            frame::HEADER_LEN + 1,
            wire.len() - 1,
        ] {
            assert!(b.open(&wire[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let (n, got) = b.open(&wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert!(matches!(got, Opened::Message(g) if g == m));
    }

    /// What a passive observer of the TCP stream gets: whole cells and
    /// nothing else. A tiny message and a 32 KiB block each make records
    /// of whole cells, and no bytes of either tell their sizes: the first
    /// two bytes (where a clear length prefix used to be) are ciphertext,
    /// different for every record, never the record's length.
    #[test]
    fn an_observer_sees_whole_cells_and_no_lengths() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let tiny = LinkMessage::Ping { nonce: 1 };
        let block = LinkMessage::Routing(lichen_routing::Message::DataFound {
            id: 1,
            block: vec![0x5a; 32 * 1024],
        });
        let mut heads = std::collections::BTreeSet::new();
        for i in 0..64 {
            let m = if i % 2 == 0 { &tiny } else { &block };
            let wire = a.seal(m).unwrap();
            assert_eq!(wire.len() % frame::CELL, 0, "{} bytes", wire.len());
            assert!(frame::is_record_size(wire.len()));
            let head = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
            assert_ne!(head + 2, wire.len(), "a clear length prefix");
            assert_ne!(head, wire.len());
            heads.insert(head);
            assert!(matches!(b.open(&wire).unwrap().unwrap().1, Opened::Message(g) if &g == m));
        }
        // Random-looking, not one value per size class.
        assert!(heads.len() > 48, "{} distinct headers", heads.len());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let (_, mut b) = pair(RekeyPolicy::default());
            let _ = b.open(&bytes);
        }

        /// An authentic header with any length, then anything: a clear
        /// error or a wait for more, never a panic.
        #[test]
        fn authentic_header_then_garbage(len in any::<u16>(), short in any::<bool>(),
                                         body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let (mut a, mut b) = pair(RekeyPolicy::default());
            let mut wire = Vec::new();
            let head = len.to_be_bytes();
            a.seal_part(if short { &head[..1] } else { &head[..] }, &mut wire).unwrap();
            wire.extend_from_slice(&body);
            match b.open(&wire) {
                // Fewer bytes than a header (a short header, no body): wait.
                Ok(None) => prop_assert!(
                    wire.len() < frame::HEADER_LEN
                        || (!short && frame::body_size(len.into()).is_some())
                ),
                Ok(Some(_)) => prop_assert!(false, "garbage body opened"),
                Err(LinkError::BadFrameLength(n)) => prop_assert!(n > frame::MAX_MESSAGE && !short),
                Err(LinkError::BadPadding) => prop_assert!(short),
                Err(e) => prop_assert!(matches!(e, LinkError::Decrypt), "{e}"),
            }
        }

        #[test]
        fn wire_sizes_are_padded(sizes in proptest::collection::vec(0usize..40_000, 1..6)) {
            let (mut a, mut b) = pair(RekeyPolicy::default());
            for s in sizes {
                let m = LinkMessage::Routing(lichen_routing::Message::DataFound { id: 1, block: vec![7; s] });
                let wire = a.seal(&m).unwrap();
                prop_assert!(frame::is_record_size(wire.len()));
                prop_assert!(matches!(b.open(&wire).unwrap().unwrap().1, Opened::Message(got) if got == m));
            }
        }
    }

    /// The fuzzing reset puts a pair that a hostile record broke (a
    /// half-read record, a spent nonce, a rekey the sender never made)
    /// back in step, so the next record opens.
    #[cfg(feature = "fuzzing")]
    #[test]
    fn fuzz_reset_pair_resynchronises_a_broken_pair() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let ping = LinkMessage::Ping { nonce: 1 };
        // A lone header: the receiver waits for a body that never comes.
        let wire = a.seal(&ping).unwrap();
        assert!(b.open(&wire[..frame::HEADER_LEN]).unwrap().is_none());
        // A raw Rekey record the sender did not follow with a key switch.
        let (body, len) = frame::pad(&frame::encode(&LinkMessage::Rekey)).unwrap();
        let mut raw = Vec::new();
        a.fuzz_seal_raw(&len.to_be_bytes(), &body, &mut raw)
            .unwrap();
        assert!(b.open(&a.seal(&ping).unwrap()).is_err());
        Transport::fuzz_reset_pair(&mut a, &mut b);
        for n in 0..3 {
            let msg = LinkMessage::Ping { nonce: n };
            let (_, got) = b.open(&a.seal(&msg).unwrap()).unwrap().unwrap();
            assert!(matches!(got, Opened::Message(m) if m == msg));
        }
        // A hand-made Rekey followed by the sender's switch keeps step.
        let mut raw = Vec::new();
        a.fuzz_seal_raw(&len.to_be_bytes(), &body, &mut raw)
            .unwrap();
        a.fuzz_rekey_outgoing();
        assert!(b.open(&raw).unwrap().is_some());
        let (_, got) = b.open(&a.seal(&ping).unwrap()).unwrap().unwrap();
        assert!(matches!(got, Opened::Message(m) if m == ping));
    }
}

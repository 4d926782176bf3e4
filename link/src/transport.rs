//! Sealing and opening frames after the handshake (no I/O).
//!
//! Wire frame: `len: u16 BE || ChaChaPoly ciphertext` where `len` is a
//! padded size plus the 16-byte tag. Noise transport nonces count frames
//! in each direction, so a replayed, dropped, reordered or forged frame
//! fails to decrypt and ends the link.
//!
//! Rekeying: after [`RekeyPolicy::after_frames`] frames or
//! [`RekeyPolicy::after_bytes`] bytes sent under one key, the sender
//! appends a `Rekey` frame and switches its sending key (Noise `REKEY`);
//! the receiver switches its receiving key when it opens that frame.

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
    /// Padded plaintext being sealed.
    seal: Vec<u8>,
    /// Decrypted plaintext being opened.
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
        }
    }

    fn seal_one(&mut self, msg: &LinkMessage, out: &mut Vec<u8>) -> Result<(), LinkError> {
        BUFS.with_borrow_mut(|b| {
            frame::encode_padded_into(msg, &mut b.seal)?;
            self.seal_plain(&b.seal, out)
        })
    }

    /// Seal an already encoded envelope (tests use it to send what this
    /// version would never write).
    #[cfg(test)]
    pub(crate) fn seal_cbor(&mut self, cbor: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        self.seal_plain(&frame::pad(cbor)?, out)
    }

    /// Seal a padded plaintext onto `out`.
    fn seal_plain(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        // The ciphertext goes straight after its length prefix in `out`.
        let at = out.len();
        out.resize(at + 2 + plain.len() + frame::TAG_LEN, 0);
        let n = match self.noise.write_message(plain, &mut out[at + 2..]) {
            Ok(n) => n,
            Err(e) => {
                out.truncate(at);
                return Err(LinkError::Setup(e.to_string()));
            }
        };
        let len = u16::try_from(n).map_err(|_| LinkError::MessageTooLarge(n))?;
        out[at..at + 2].copy_from_slice(&len.to_be_bytes());
        out.truncate(at + 2 + n);
        self.frames_since_rekey += 1;
        self.bytes_since_rekey += n as u64 + 2;
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
    pub fn seal_into(&mut self, msg: &LinkMessage, out: &mut Vec<u8>) -> Result<(), LinkError> {
        self.seal_one(msg, out)?;
        if self.frames_since_rekey >= self.policy.after_frames
            || self.bytes_since_rekey >= self.policy.after_bytes
        {
            self.seal_one(&LinkMessage::Rekey, out)?;
            self.noise.rekey_outgoing();
            self.frames_since_rekey = 0;
            self.bytes_since_rekey = 0;
            self.rekeys_sent += 1;
        }
        Ok(())
    }

    /// Open the first frame in `input`. `Ok(None)`: need more bytes.
    /// Otherwise the bytes consumed and what the frame held (`Rekey` has
    /// already been acted on when it is returned).
    ///
    /// # Errors
    /// [`LinkError::BadFrameLength`], [`LinkError::Decrypt`],
    /// [`LinkError::BadPadding`]: the link cannot go on. An authentic
    /// frame whose contents do not decode is not an error but
    /// [`Opened::Unknown`]. Never panics.
    pub fn open(&mut self, input: &[u8]) -> Result<Option<(usize, Opened)>, LinkError> {
        let Some(head) = input.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if !frame::is_frame_len(len) {
            return Err(LinkError::BadFrameLength(len));
        }
        let Some(ct) = input.get(2..2 + len) else {
            return Ok(None);
        };
        let decoded = BUFS.with_borrow_mut(|b| {
            let Bufs { open, scratch, .. } = b;
            open.resize(len, 0);
            let n = self
                .noise
                .read_message(ct, open)
                .map_err(|_| LinkError::Decrypt)?;
            if scratch.len() < frame::SCRATCH {
                scratch.resize(frame::SCRATCH, 0);
            }
            Ok::<_, LinkError>(frame::decode_with(frame::unpad(&open[..n])?, scratch))
        })?;
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => return Ok(Some((2 + len, Opened::Unknown(e)))),
        };
        if msg == LinkMessage::Rekey {
            self.noise.rekey_incoming();
            self.rekeys_received += 1;
        }
        Ok(Some((2 + len, Opened::Message(msg))))
    }

    /// Rekeys done in each direction: (sent, received).
    #[must_use]
    pub fn rekeys(&self) -> (u64, u64) {
        (self.rekeys_sent, self.rekeys_received)
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
        // Bad length prefix.
        assert!(matches!(
            b.open(&[0, 5, 1, 2]),
            Err(LinkError::BadFrameLength(5))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let (_, mut b) = pair(RekeyPolicy::default());
            let _ = b.open(&bytes);
        }

        #[test]
        fn wire_sizes_are_padded(sizes in proptest::collection::vec(0usize..40_000, 1..6)) {
            let (mut a, mut b) = pair(RekeyPolicy::default());
            for s in sizes {
                let m = LinkMessage::Routing(lichen_routing::Message::DataFound { id: 1, block: vec![7; s] });
                let wire = a.seal(&m).unwrap();
                let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
                prop_assert!(frame::is_frame_len(len));
                prop_assert_eq!(wire.len(), len + 2);
                prop_assert!(matches!(b.open(&wire).unwrap().unwrap().1, Opened::Message(got) if got == m));
            }
        }
    }
}

//! The Noise XK handshake as a step function with no I/O (the shape of
//! arti's `Handshake::step`). The driver feeds it the bytes read so far and
//! does what it says: write bytes, read more, or stop.
//!
//! Each handshake message is framed `len: u16 BE || noise message`. The
//! prologue (`lichen-link-v1`) names the protocol; the link version is in
//! the payloads of messages 1 and 2 (one byte, [`LINK_VERSION`], encrypted
//! like everything after `es`), so two nodes of different versions tell
//! each other so: the responder answers message 1 with its own version
//! and then stops with [`LinkError::Version`], and the initiator stops
//! with the same error on reading message 2. Nodes of version 1 sent
//! empty payloads, read here as version 1. Message 3 has no payload; the
//! responder learns the initiator's static key from it.
//!
//! ```text
//! initiator                              responder
//!   Send(msg1: e, es, [v])  ----->        Recv → NeedMore … then
//!   NeedMore                <-----        Send(msg2: e, ee, [v])
//!   Send(msg3: s, se), Finished ----->   Finished
//! ```

use super::error::LinkError;
use super::keys::NodeKeys;
use super::transport::{RekeyPolicy, Transport};
use super::{NOISE_PARAMS, PROLOGUE};

/// Largest handshake message accepted (XK messages are 49, 49 and 64
/// bytes).
const MAX_HS_MSG: usize = 256;

/// The link version this node speaks: 2 since lengths are sealed and
/// records are whole cells (`docs/wire.md`). Version 1 had clear length
/// prefixes and empty handshake payloads.
pub const LINK_VERSION: u8 = 2;

/// What the driver should do next.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsAction {
    /// Write these bytes to the peer, then call `step` again.
    Send(Vec<u8>),
    /// Read more bytes, append them to the input, call `step` again.
    NeedMore,
    /// The handshake is done: call [`Handshake::finish`].
    Finished,
}

/// One side of a link handshake.
pub struct Handshake {
    state: snow::HandshakeState,
    /// The peer's link version, when it is not ours: the responder still
    /// answers (so the initiator learns why), then stops.
    mismatch: Option<u8>,
    /// Messages written so far.
    sent: u8,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .field("finished", &self.state.is_handshake_finished())
            .finish()
    }
}

fn setup(e: snow::Error) -> LinkError {
    LinkError::Setup(e.to_string())
}

fn builder(keys: &NodeKeys) -> Result<snow::Builder<'_>, LinkError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| LinkError::Setup(e.to_string()))?;
    Ok(snow::Builder::new(params)
        .prologue(PROLOGUE)
        .local_private_key(keys.static_secret()))
}

impl Handshake {
    /// The initiator's side; `remote_static` comes from the responder's
    /// noderef.
    ///
    /// # Errors
    /// [`LinkError::Setup`].
    pub fn initiator(keys: &NodeKeys, remote_static: &[u8; 32]) -> Result<Self, LinkError> {
        let state = builder(keys)?
            .remote_public_key(remote_static)
            .build_initiator()
            .map_err(setup)?;
        Ok(Handshake {
            state,
            mismatch: None,
            sent: 0,
        })
    }

    /// The responder's side.
    ///
    /// # Errors
    /// [`LinkError::Setup`].
    pub fn responder(keys: &NodeKeys) -> Result<Self, LinkError> {
        let state = builder(keys)?.build_responder().map_err(setup)?;
        Ok(Handshake {
            state,
            mismatch: None,
            sent: 0,
        })
    }

    /// Advance. `input` is everything read from the peer and not yet
    /// consumed; returns how many bytes of it were consumed, and what to
    /// do next.
    ///
    /// # Errors
    /// [`LinkError::Handshake`] on garbage, a wrong key or a replay;
    /// [`LinkError::BadFrameLength`] on an oversized message. Never panics.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, HsAction), LinkError> {
        if self.state.is_handshake_finished() {
            return Ok((0, HsAction::Finished));
        }
        if self.state.is_my_turn() {
            // Messages 1 and 2 carry the version; message 3 nothing.
            let mut buf = [0u8; MAX_HS_MSG];
            let version = [LINK_VERSION];
            let payload: &[u8] = if self.sent == 0 { &version } else { &[] };
            self.sent += 1;
            let n = self
                .state
                .write_message(payload, &mut buf)
                .map_err(|e| LinkError::Handshake(e.to_string()))?;
            let mut out = Vec::with_capacity(2 + n);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&buf[..n]);
            return Ok((0, HsAction::Send(out)));
        }
        if let Some(theirs) = self.mismatch {
            // Message 2 told the initiator our version: stop.
            return Err(LinkError::Version {
                ours: LINK_VERSION,
                theirs,
            });
        }
        let Some(head) = input.get(..2) else {
            return Ok((0, HsAction::NeedMore));
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len > MAX_HS_MSG {
            return Err(LinkError::BadFrameLength(len));
        }
        let Some(msg) = input.get(2..2 + len) else {
            return Ok((0, HsAction::NeedMore));
        };
        let mut payload = [0u8; MAX_HS_MSG];
        let n = self
            .state
            .read_message(msg, &mut payload)
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        // The responder read message 1, the initiator message 2: both
        // carry the sender's version. Message 3 carries nothing.
        let theirs = match (&payload[..n], self.state.is_handshake_finished()) {
            ([], false) => Some(1),
            ([v], false) => Some(*v),
            ([], true) => None,
            _ => return Err(LinkError::Handshake("unexpected handshake payload".into())),
        };
        if let Some(theirs) = theirs.filter(|&v| v != LINK_VERSION) {
            if self.state.is_initiator() {
                return Err(LinkError::Version {
                    ours: LINK_VERSION,
                    theirs,
                });
            }
            self.mismatch = Some(theirs);
        }
        let next = if self.state.is_handshake_finished() {
            HsAction::Finished
        } else {
            HsAction::NeedMore
        };
        // After reading, it may be our turn: the caller steps again with
        // the rest of the input and gets `Send`.
        let next = if matches!(next, HsAction::NeedMore) && self.state.is_my_turn() {
            let (_, send) = self.step(&[])?;
            send
        } else {
            next
        };
        Ok((2 + len, next))
    }

    /// Whether the handshake is complete.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The transport state once [`HsAction::Finished`] was returned, with
    /// the peer's static key.
    ///
    /// # Errors
    /// [`LinkError::Handshake`] if the handshake is not finished.
    pub fn finish(self, policy: RekeyPolicy) -> Result<(Transport, [u8; 32]), LinkError> {
        let remote = self
            .state
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| LinkError::Handshake("no remote static key".into()))?;
        let t = self
            .state
            .into_transport_mode()
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        Ok((Transport::new(t, policy), remote))
    }
}

/// Run both sides of a handshake in memory (tests, fuzzing).
///
/// # Errors
/// The first error of either side.
pub fn run_in_memory(
    initiator: &mut Handshake,
    responder: &mut Handshake,
) -> Result<(), LinkError> {
    let mut to_resp = Vec::new();
    let mut to_init = Vec::new();
    for _ in 0..8 {
        if initiator.is_finished() && responder.is_finished() {
            return Ok(());
        }
        let (n, a) = initiator.step(&to_init)?;
        to_init.drain(..n);
        if let HsAction::Send(b) = a {
            to_resp.extend_from_slice(&b);
        }
        let (n, a) = responder.step(&to_resp)?;
        to_resp.drain(..n);
        if let HsAction::Send(b) = a {
            to_init.extend_from_slice(&b);
        }
    }
    if initiator.is_finished() && responder.is_finished() {
        Ok(())
    } else {
        Err(LinkError::Handshake("did not finish".into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(b: u8) -> NodeKeys {
        NodeKeys::from_static_secret([b; 32])
    }

    #[test]
    fn completes_and_authenticates_both_sides() {
        let (a, b) = (keys(1), keys(2));
        let mut i = Handshake::initiator(&a, &b.static_public()).unwrap();
        let mut r = Handshake::responder(&b).unwrap();
        run_in_memory(&mut i, &mut r).unwrap();
        let (_, ri) = i.finish(RekeyPolicy::default()).unwrap();
        let (_, rr) = r.finish(RekeyPolicy::default()).unwrap();
        assert_eq!(ri, b.static_public());
        assert_eq!(rr, a.static_public());
    }

    #[test]
    fn wrong_responder_key_fails() {
        let (a, b, c) = (keys(1), keys(2), keys(3));
        let mut i = Handshake::initiator(&a, &c.static_public()).unwrap();
        let mut r = Handshake::responder(&b).unwrap();
        let e = run_in_memory(&mut i, &mut r).unwrap_err();
        assert!(matches!(e, LinkError::Handshake(_)), "{e}");
        assert!(e.is_peer_fault());
    }

    #[test]
    fn replayed_first_message_fails_on_a_later_step() {
        // A recorded msg1 replayed to a fresh responder gets a msg2 back,
        // but the replayer cannot produce msg3 (no initiator secrets).
        let (a, b) = (keys(1), keys(2));
        let mut i = Handshake::initiator(&a, &b.static_public()).unwrap();
        let (_, HsAction::Send(m1)) = i.step(&[]).unwrap() else {
            panic!()
        };
        let mut r = Handshake::responder(&b).unwrap();
        let (n, act) = r.step(&m1).unwrap();
        assert_eq!(n, m1.len());
        assert!(matches!(act, HsAction::Send(_)));
        // Replaying msg1 where msg3 is expected fails.
        assert!(r.step(&m1).is_err());
    }

    /// Message 1 as a node of link version 1 sends it (empty payload).
    fn v1_message1(a: &NodeKeys, b: &NodeKeys) -> Vec<u8> {
        let mut s = builder(a)
            .unwrap()
            .remote_public_key(&b.static_public())
            .build_initiator()
            .unwrap();
        let mut buf = [0u8; MAX_HS_MSG];
        let n = s.write_message(&[], &mut buf).unwrap();
        let mut out = u16::try_from(n).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&buf[..n]);
        out
    }

    #[test]
    fn a_version_mismatch_is_told_to_both_sides() {
        let (a, b) = (keys(1), keys(2));
        // An old initiator: the responder answers message 1 (with its
        // version, which the old node refuses as an unexpected payload),
        // then stops with a clear error instead of waiting for message 3.
        let m1 = v1_message1(&a, &b);
        assert_eq!(m1.len(), 2 + 48);
        let mut r = Handshake::responder(&b).unwrap();
        let (n, act) = r.step(&m1).unwrap();
        assert_eq!(n, m1.len());
        assert!(matches!(act, HsAction::Send(_)));
        let e = r.step(&[]).unwrap_err();
        assert!(
            matches!(e, LinkError::Version { ours: 2, theirs: 1 }),
            "{e}"
        );
        assert!(!e.is_peer_fault());
        assert!(e.to_string().contains("version 1"), "{e}");
        // A newer responder: the initiator reads its version in message 2.
        let mut i = Handshake::initiator(&a, &b.static_public()).unwrap();
        let (_, HsAction::Send(m1)) = i.step(&[]).unwrap() else {
            panic!()
        };
        let mut r = builder(&b).unwrap().build_responder().unwrap();
        let mut buf = [0u8; MAX_HS_MSG];
        r.read_message(&m1[2..], &mut buf).unwrap();
        let n = r.write_message(&[LINK_VERSION + 1], &mut buf).unwrap();
        let mut m2 = u16::try_from(n).unwrap().to_be_bytes().to_vec();
        m2.extend_from_slice(&buf[..n]);
        let e = i.step(&m2).unwrap_err();
        assert!(
            matches!(e, LinkError::Version { ours: 2, theirs: 3 }),
            "{e}"
        );
    }

    #[test]
    fn handshake_message_sizes() {
        let (a, b) = (keys(1), keys(2));
        let mut i = Handshake::initiator(&a, &b.static_public()).unwrap();
        let mut r = Handshake::responder(&b).unwrap();
        let (_, HsAction::Send(m1)) = i.step(&[]).unwrap() else {
            panic!()
        };
        let (_, HsAction::Send(m2)) = r.step(&m1).unwrap() else {
            panic!()
        };
        let (_, HsAction::Send(m3)) = i.step(&m2).unwrap() else {
            panic!()
        };
        assert_eq!((m1.len(), m2.len(), m3.len()), (2 + 49, 2 + 49, 2 + 64));
        assert_eq!(&m1[..2], &[0, 49]);
        assert_eq!(r.step(&m3).unwrap(), (m3.len(), HsAction::Finished));
    }

    proptest! {
        #[test]
        fn responder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut r = Handshake::responder(&keys(2)).unwrap();
            let mut input = bytes.clone();
            for _ in 0..4 {
                match r.step(&input) {
                    Ok((0, HsAction::NeedMore)) => break,
                    Ok((n, _)) => { input.drain(..n); }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn initiator_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut i = Handshake::initiator(&keys(1), &keys(2).static_public()).unwrap();
            let _ = i.step(&[]);
            let _ = i.step(&bytes);
        }
    }
}

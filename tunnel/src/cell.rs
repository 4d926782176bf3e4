//! What neighbours exchange about tunnels ([`TunnelMsg`], every one
//! [`WIRE_LEN`] bytes) and what a tunnel carries inside its layers
//! ([`Command`]), with the splitting of long messages into cells.
//!
//! ```text
//! TunnelMsg (WIRE_LEN = 6 + CELL bytes, zero-padded):
//!   [kind u8][circ u32 BE][...]
//!   1 Create      [depth u8][X 32]
//!   2 Created     [Y 32][AUTH 32]
//!   3 Forward     [0][cell CELL]      toward the exit
//!   4 Backward    [0][cell CELL]      toward the originator
//!   5 DestroyFwd  (sent by the side that created the circuit)
//!   6 DestroyBwd  (sent by the other side)
//! Command (the plaintext a tunnel's last hop or originator sees):
//!   [cmd u8][len u16 BE][len bytes][zeros]
//!   1 Extend       [hop static key 32][X 32]
//!   2 Extended     [Y 32][AUTH 32]
//!   3 ExtendFailed [reason u8]
//!   4 Data         fragment, more follow
//!   5 DataEnd      last fragment of a message
//!   6 Peers        [static key 32]*  the hop's peers, right after it
//!                  answers a Create (the originator picks the next hop
//!                  from them)
//! ```

use crate::handshake::REPLY_LEN;
use crate::onion::{CELL, MAX_HOPS};
use crate::TunnelError;

/// Every [`TunnelMsg`] on the wire is this long, whatever its kind.
pub const WIRE_LEN: usize = 6 + CELL;
/// Command header: `cmd` and `len`.
pub const COMMAND_HEADER: usize = 3;

/// A circuit's direction on one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the side that created the circuit (toward the exit).
    Forward,
    /// Toward the side that created it (toward the originator).
    Backward,
}

/// A message between two neighbours about one circuit on their link.
#[derive(Clone, PartialEq, Eq)]
pub enum TunnelMsg {
    /// Open a circuit at the receiver, `depth` hops from the originator.
    Create {
        /// The circuit's id on this link, chosen by the sender.
        circ: u32,
        /// The receiver's place on the tunnel (1 = first hop).
        depth: u8,
        /// The originator's ephemeral key.
        x: [u8; 32],
    },
    /// The receiver of a `Create` answers.
    Created {
        /// The circuit.
        circ: u32,
        /// `Y` and `AUTH`.
        reply: [u8; REPLY_LEN],
    },
    /// A cell.
    Cell {
        /// The circuit.
        circ: u32,
        /// Which way it travels.
        dir: Dir,
        /// The layered body.
        body: Box<[u8; CELL]>,
    },
    /// Tear the circuit down.
    Destroy {
        /// The circuit.
        circ: u32,
        /// Who sends it: the creating side (`Forward`) or the other.
        dir: Dir,
    },
}

impl std::fmt::Debug for TunnelMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelMsg::Create { circ, depth, .. } => {
                write!(f, "Create {{ circ: {circ}, depth: {depth} }}")
            }
            TunnelMsg::Created { circ, .. } => write!(f, "Created {{ circ: {circ} }}"),
            TunnelMsg::Cell { circ, dir, .. } => write!(f, "Cell {{ circ: {circ}, dir: {dir:?} }}"),
            TunnelMsg::Destroy { circ, dir } => {
                write!(f, "Destroy {{ circ: {circ}, dir: {dir:?} }}")
            }
        }
    }
}

impl TunnelMsg {
    /// The circuit id on the link.
    #[must_use]
    pub fn circ(&self) -> u32 {
        match self {
            TunnelMsg::Create { circ, .. }
            | TunnelMsg::Created { circ, .. }
            | TunnelMsg::Cell { circ, .. }
            | TunnelMsg::Destroy { circ, .. } => *circ,
        }
    }

    /// The fixed-length wire form.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; WIRE_LEN];
        let kind: u8 = match self {
            TunnelMsg::Create { depth, x, .. } => {
                out[5] = *depth;
                out[6..38].copy_from_slice(x);
                1
            }
            TunnelMsg::Created { reply, .. } => {
                out[5..5 + REPLY_LEN].copy_from_slice(reply);
                2
            }
            TunnelMsg::Cell { dir, body, .. } => {
                out[6..].copy_from_slice(body.as_ref());
                if *dir == Dir::Forward {
                    3
                } else {
                    4
                }
            }
            TunnelMsg::Destroy { dir, .. } => {
                if *dir == Dir::Forward {
                    5
                } else {
                    6
                }
            }
        };
        out[0] = kind;
        out[1..5].copy_from_slice(&self.circ().to_be_bytes());
        out
    }

    /// Parse the wire form.
    ///
    /// # Errors
    /// [`TunnelError::Decode`] for a wrong length, an unknown kind, a
    /// depth outside 1..=[`MAX_HOPS`], or non-zero padding.
    pub fn decode(b: &[u8]) -> Result<Self, TunnelError> {
        if b.len() != WIRE_LEN {
            return Err(TunnelError::Decode("tunnel message of the wrong length"));
        }
        let circ = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let zero_from = |i: usize| -> Result<(), TunnelError> {
            if b[i..].iter().any(|&x| x != 0) {
                return Err(TunnelError::Decode("non-zero padding"));
            }
            Ok(())
        };
        let arr32 = |i: usize| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[i..i + 32]);
            a
        };
        Ok(match b[0] {
            1 => {
                let depth = b[5];
                if depth == 0 || usize::from(depth) > MAX_HOPS {
                    return Err(TunnelError::Decode("create depth out of range"));
                }
                zero_from(38)?;
                TunnelMsg::Create {
                    circ,
                    depth,
                    x: arr32(6),
                }
            }
            2 => {
                zero_from(5 + REPLY_LEN)?;
                let mut reply = [0u8; REPLY_LEN];
                reply.copy_from_slice(&b[5..5 + REPLY_LEN]);
                TunnelMsg::Created { circ, reply }
            }
            k @ (3 | 4) => {
                if b[5] != 0 {
                    return Err(TunnelError::Decode("non-zero padding"));
                }
                let mut body = Box::new([0u8; CELL]);
                body.copy_from_slice(&b[6..]);
                let dir = if k == 3 { Dir::Forward } else { Dir::Backward };
                TunnelMsg::Cell { circ, dir, body }
            }
            k @ (5 | 6) => {
                zero_from(5)?;
                let dir = if k == 5 { Dir::Forward } else { Dir::Backward };
                TunnelMsg::Destroy { circ, dir }
            }
            _ => return Err(TunnelError::Decode("unknown tunnel message kind")),
        })
    }
}

/// What travels inside a tunnel's layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Originator → last hop: extend the tunnel to your peer with this
    /// static key.
    Extend {
        /// The next hop's static key.
        hop: [u8; 32],
        /// The originator's ephemeral key for it.
        x: [u8; 32],
    },
    /// Last hop → originator: the new hop's answer.
    Extended {
        /// `Y` and `AUTH` of the new hop.
        reply: [u8; REPLY_LEN],
    },
    /// Last hop → originator: the extension failed.
    ExtendFailed {
        /// Why ([`ExtendFailure`] as a byte).
        reason: u8,
    },
    /// A hop → originator, right after the hop's handshake: the static
    /// keys of the hop's peers, sealed under the hop's own layer (so the
    /// hops before it cannot change them).
    Peers {
        /// The peers' static keys.
        keys: Vec<[u8; 32]>,
    },
    /// A fragment of a message; `last` ends it.
    Data {
        /// Whether this is the message's last fragment.
        last: bool,
        /// The fragment.
        bytes: Vec<u8>,
    },
}

/// Why a hop could not extend a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExtendFailure {
    /// The named hop is not a peer of the extending node.
    NotAPeer = 1,
    /// The tunnel is already as long as tunnels may be.
    TooLong = 2,
    /// The next hop refused or went away.
    Refused = 3,
}

impl Command {
    /// Encode into a plaintext of exactly `size` bytes.
    ///
    /// # Errors
    /// [`TunnelError::TooLarge`] if it does not fit.
    pub fn encode(&self, size: usize) -> Result<Vec<u8>, TunnelError> {
        let (cmd, body): (u8, Vec<u8>) = match self {
            Command::Extend { hop, x } => (1, [hop.as_slice(), x.as_slice()].concat()),
            Command::Extended { reply } => (2, reply.to_vec()),
            Command::ExtendFailed { reason } => (3, vec![*reason]),
            Command::Peers { keys } => (6, keys.concat()),
            Command::Data { last, bytes } => (if *last { 5 } else { 4 }, bytes.clone()),
        };
        if COMMAND_HEADER + body.len() > size {
            return Err(TunnelError::TooLarge);
        }
        let len = u16::try_from(body.len()).map_err(|_| TunnelError::TooLarge)?;
        let mut out = Vec::with_capacity(size);
        out.push(cmd);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        out.resize(size, 0);
        Ok(out)
    }

    /// Parse a plaintext.
    ///
    /// # Errors
    /// [`TunnelError::Decode`] for an unknown command, a length beyond
    /// the plaintext, a body of the wrong size, or non-zero padding.
    pub fn decode(b: &[u8]) -> Result<Self, TunnelError> {
        if b.len() < COMMAND_HEADER {
            return Err(TunnelError::Decode("command shorter than its header"));
        }
        let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let end = COMMAND_HEADER + len;
        if end > b.len() {
            return Err(TunnelError::Decode("command length beyond the cell"));
        }
        if b[end..].iter().any(|&x| x != 0) {
            return Err(TunnelError::Decode("non-zero padding"));
        }
        let body = &b[COMMAND_HEADER..end];
        let exact = |n: usize| -> Result<(), TunnelError> {
            if len == n {
                Ok(())
            } else {
                Err(TunnelError::Decode("command body of the wrong size"))
            }
        };
        Ok(match b[0] {
            1 => {
                exact(64)?;
                let mut hop = [0u8; 32];
                let mut x = [0u8; 32];
                hop.copy_from_slice(&body[..32]);
                x.copy_from_slice(&body[32..]);
                Command::Extend { hop, x }
            }
            2 => {
                exact(REPLY_LEN)?;
                let mut reply = [0u8; REPLY_LEN];
                reply.copy_from_slice(body);
                Command::Extended { reply }
            }
            3 => {
                exact(1)?;
                Command::ExtendFailed { reason: body[0] }
            }
            6 => {
                if len % 32 != 0 {
                    return Err(TunnelError::Decode("a peer list of partial keys"));
                }
                let keys = body
                    .chunks_exact(32)
                    .map(|c| {
                        let mut k = [0u8; 32];
                        k.copy_from_slice(c);
                        k
                    })
                    .collect();
                Command::Peers { keys }
            }
            4 | 5 => Command::Data {
                last: b[0] == 5,
                bytes: body.to_vec(),
            },
            _ => return Err(TunnelError::Decode("unknown command")),
        })
    }
}

/// Split `data` into `Data` commands that fit plaintexts of `size` bytes.
/// An empty message is one empty last fragment.
#[must_use]
pub fn fragments(data: &[u8], size: usize) -> Vec<Command> {
    let room = size.saturating_sub(COMMAND_HEADER).max(1);
    if data.is_empty() {
        return vec![Command::Data {
            last: true,
            bytes: Vec::new(),
        }];
    }
    let n = data.len().div_ceil(room);
    data.chunks(room)
        .enumerate()
        .map(|(i, c)| Command::Data {
            last: i + 1 == n,
            bytes: c.to_vec(),
        })
        .collect()
}

/// Joins `Data` fragments into messages of at most `max` bytes.
#[derive(Debug, Default)]
pub struct Reassembly {
    buf: Vec<u8>,
}

impl Reassembly {
    /// Add a fragment; a whole message when `last`.
    ///
    /// # Errors
    /// [`TunnelError::TooLarge`] when the message grows beyond `max`
    /// (the buffer is dropped).
    pub fn push(
        &mut self,
        last: bool,
        bytes: &[u8],
        max: usize,
    ) -> Result<Option<Vec<u8>>, TunnelError> {
        if self.buf.len() + bytes.len() > max {
            self.buf = Vec::new();
            return Err(TunnelError::TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        Ok(last.then(|| std::mem::take(&mut self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_message_kind_has_one_length() {
        let msgs = [
            TunnelMsg::Create {
                circ: 7,
                depth: 2,
                x: [9; 32],
            },
            TunnelMsg::Created {
                circ: 7,
                reply: [3; REPLY_LEN],
            },
            TunnelMsg::Cell {
                circ: 7,
                dir: Dir::Backward,
                body: Box::new([5; CELL]),
            },
            TunnelMsg::Destroy {
                circ: 7,
                dir: Dir::Forward,
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(b.len(), WIRE_LEN);
            assert_eq!(TunnelMsg::decode(&b).expect("decode"), m);
        }
    }

    #[test]
    fn bad_wire_messages_are_refused() {
        let good = TunnelMsg::Create {
            circ: 1,
            depth: 1,
            x: [1; 32],
        }
        .encode();
        assert!(TunnelMsg::decode(&good[..WIRE_LEN - 1]).is_err());
        let mut b = good.clone();
        b[5] = 4;
        assert!(TunnelMsg::decode(&b).is_err(), "depth beyond MAX_HOPS");
        let mut b = good.clone();
        b[WIRE_LEN - 1] = 1;
        assert!(TunnelMsg::decode(&b).is_err(), "padding");
        let mut b = good;
        b[0] = 9;
        assert!(TunnelMsg::decode(&b).is_err(), "kind");
    }

    #[test]
    fn fragments_fill_cells_and_reassemble() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let frags = fragments(&data, 1000);
        assert_eq!(frags.len(), 6);
        let mut r = Reassembly::default();
        let mut out = None;
        for f in &frags {
            let enc = f.encode(1000).expect("fits");
            let Command::Data { last, bytes } = Command::decode(&enc).expect("decode") else {
                panic!("not data");
            };
            out = r.push(last, &bytes, 8000).expect("within max");
        }
        assert_eq!(out, Some(data));
        let mut r = Reassembly::default();
        assert!(r.push(false, &[0; 600], 1000).is_ok());
        assert!(r.push(true, &[0; 600], 1000).is_err());
    }

    proptest! {
        #[test]
        fn wire_decoding_never_panics(b in proptest::collection::vec(any::<u8>(), 0..WIRE_LEN + 8)) {
            let _ = TunnelMsg::decode(&b);
        }

        #[test]
        fn command_decoding_never_panics_and_round_trips(b in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(c) = Command::decode(&b) {
                prop_assert_eq!(Command::decode(&c.encode(b.len()).expect("fits")).expect("again"), c);
            }
        }

        #[test]
        fn wire_round_trips(circ in any::<u32>(), body in proptest::collection::vec(any::<u8>(), CELL), fwd in any::<bool>()) {
            let mut cell = Box::new([0u8; CELL]);
            cell.copy_from_slice(&body);
            let dir = if fwd { Dir::Forward } else { Dir::Backward };
            let m = TunnelMsg::Cell { circ, dir, body: cell };
            prop_assert_eq!(TunnelMsg::decode(&m.encode()).expect("decode"), m);
        }
    }
}

//! What a tunnel carries between the originator and the exit: requests
//! for the exit to route as its own, and their outcomes. One message per
//! request or reply, in a tunnel's `Data` fragments (up to 64 KiB).
//!
//! ```text
//! request: [1 fetch | 2 insert][req u32 BE][kind u8][routing key 32][block…]
//! reply:   [3][req u32 BE][outcome u8][block…]
//! ```
//!
//! The kinds and outcomes are the routing core's, by number: the exit
//! maps them; this crate does not depend on the routing core.

use crate::TunnelError;

/// The largest block carried (a CHK block and its headers fit).
pub const BLOCK_MAX: usize = 40 * 1024;

/// The originator asks the exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// Fetch the block under a routing key.
    Fetch {
        /// The originator's number for it (echoed in the reply).
        req: u32,
        /// The key's kind (routing core's numbering).
        kind: u8,
        /// The routing key.
        key: [u8; 32],
    },
    /// Insert a block.
    Insert {
        /// The originator's number for it.
        req: u32,
        /// The key's kind.
        kind: u8,
        /// The routing key.
        key: [u8; 32],
        /// The block.
        block: Vec<u8>,
    },
}

/// How a request routed by the exit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The block, as found (the originator verifies it against its key).
    Found(Vec<u8>),
    /// The HTL ran out.
    NotFound,
    /// Routing ran out of peers (with the HTL left, for inserts).
    RouteNotFound(u8),
    /// The exit's failure table answered.
    RecentlyFailed,
    /// The exit is overloaded; try another tunnel.
    Overloaded,
    /// No answer in time.
    TimedOut,
    /// The insert ran its course.
    Inserted,
    /// SSK collision: the block already stored.
    Collision(Vec<u8>),
    /// The block did not verify; nothing was sent.
    InvalidBlock,
    /// The exit will not take more requests on this tunnel now.
    Refused,
}

/// The exit answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReply {
    /// The request's number.
    pub req: u32,
    /// How it ended.
    pub outcome: Outcome,
}

fn header(op: u8, req: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.push(op);
    v.extend_from_slice(&req.to_be_bytes());
    v
}

fn req_of(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[1], b[2], b[3], b[4]])
}

impl ExitRequest {
    /// The wire form.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ExitRequest::Fetch { req, kind, key } => {
                let mut v = header(1, *req);
                v.push(*kind);
                v.extend_from_slice(key);
                v
            }
            ExitRequest::Insert {
                req,
                kind,
                key,
                block,
            } => {
                let mut v = header(2, *req);
                v.push(*kind);
                v.extend_from_slice(key);
                v.extend_from_slice(block);
                v
            }
        }
    }

    /// Parse the wire form.
    ///
    /// # Errors
    /// [`TunnelError::Decode`] for an unknown operation, a short
    /// message, a fetch with trailing bytes, or an empty or oversized
    /// block.
    pub fn decode(b: &[u8]) -> Result<Self, TunnelError> {
        if b.len() < 38 {
            return Err(TunnelError::Decode("exit request too short"));
        }
        let (req, kind) = (req_of(b), b[5]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&b[6..38]);
        let rest = &b[38..];
        match b[0] {
            1 if rest.is_empty() => Ok(ExitRequest::Fetch { req, kind, key }),
            1 => Err(TunnelError::Decode("exit fetch with trailing bytes")),
            2 if rest.is_empty() || rest.len() > BLOCK_MAX => {
                Err(TunnelError::Decode("exit insert block empty or too large"))
            }
            2 => Ok(ExitRequest::Insert {
                req,
                kind,
                key,
                block: rest.to_vec(),
            }),
            _ => Err(TunnelError::Decode("unknown exit request")),
        }
    }
}

impl ExitReply {
    /// The wire form.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = header(3, self.req);
        let (code, tail): (u8, &[u8]) = match &self.outcome {
            Outcome::Found(b) => (1, b),
            Outcome::NotFound => (2, &[]),
            Outcome::RouteNotFound(_) => (3, &[]),
            Outcome::RecentlyFailed => (4, &[]),
            Outcome::Overloaded => (5, &[]),
            Outcome::TimedOut => (6, &[]),
            Outcome::Inserted => (7, &[]),
            Outcome::Collision(b) => (8, b),
            Outcome::InvalidBlock => (9, &[]),
            Outcome::Refused => (10, &[]),
        };
        v.push(code);
        if let Outcome::RouteNotFound(htl) = self.outcome {
            v.push(htl);
        }
        v.extend_from_slice(tail);
        v
    }

    /// Parse the wire form.
    ///
    /// # Errors
    /// [`TunnelError::Decode`] for an unknown outcome, a short message,
    /// trailing bytes, or an empty or oversized block.
    pub fn decode(b: &[u8]) -> Result<Self, TunnelError> {
        if b.len() < 6 || b[0] != 3 {
            return Err(TunnelError::Decode("not an exit reply"));
        }
        let req = req_of(b);
        let rest = &b[6..];
        let block = || {
            if rest.is_empty() || rest.len() > BLOCK_MAX {
                Err(TunnelError::Decode("exit reply block empty or too large"))
            } else {
                Ok(rest.to_vec())
            }
        };
        let bare = |o: Outcome| {
            if rest.is_empty() {
                Ok(o)
            } else {
                Err(TunnelError::Decode("exit reply with trailing bytes"))
            }
        };
        let outcome = match b[5] {
            1 => Outcome::Found(block()?),
            2 => bare(Outcome::NotFound)?,
            3 => match rest {
                [htl] => Outcome::RouteNotFound(*htl),
                _ => return Err(TunnelError::Decode("route-not-found without its HTL")),
            },
            4 => bare(Outcome::RecentlyFailed)?,
            5 => bare(Outcome::Overloaded)?,
            6 => bare(Outcome::TimedOut)?,
            7 => bare(Outcome::Inserted)?,
            8 => Outcome::Collision(block()?),
            9 => bare(Outcome::InvalidBlock)?,
            10 => bare(Outcome::Refused)?,
            _ => return Err(TunnelError::Decode("unknown exit outcome")),
        };
        Ok(ExitReply { req, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_request_and_outcome_round_trips() {
        let reqs = [
            ExitRequest::Fetch {
                req: 1,
                kind: 0,
                key: [7; 32],
            },
            ExitRequest::Insert {
                req: u32::MAX,
                kind: 1,
                key: [8; 32],
                block: vec![1; 32 * 1024 + 100],
            },
        ];
        for r in reqs {
            assert_eq!(ExitRequest::decode(&r.encode()).expect("decode"), r);
        }
        let outcomes = [
            Outcome::Found(vec![1, 2, 3]),
            Outcome::NotFound,
            Outcome::RouteNotFound(12),
            Outcome::RecentlyFailed,
            Outcome::Overloaded,
            Outcome::TimedOut,
            Outcome::Inserted,
            Outcome::Collision(vec![4; 1024]),
            Outcome::InvalidBlock,
            Outcome::Refused,
        ];
        for outcome in outcomes {
            let r = ExitReply { req: 9, outcome };
            assert_eq!(ExitReply::decode(&r.encode()).expect("decode"), r);
        }
    }

    #[test]
    fn malformed_exit_messages_are_refused() {
        let fetch = ExitRequest::Fetch {
            req: 1,
            kind: 0,
            key: [7; 32],
        }
        .encode();
        assert!(ExitRequest::decode(&fetch[..37]).is_err());
        assert!(ExitRequest::decode(&[fetch.as_slice(), &[0]].concat()).is_err());
        let mut big = fetch.clone();
        big[0] = 2;
        assert!(ExitRequest::decode(&big).is_err(), "insert without a block");
        big.extend(vec![0; BLOCK_MAX + 1]);
        assert!(ExitRequest::decode(&big).is_err(), "oversized block");
        let reply = ExitReply {
            req: 1,
            outcome: Outcome::NotFound,
        }
        .encode();
        assert!(ExitReply::decode(&[reply.as_slice(), &[1]].concat()).is_err());
        let mut unknown = reply;
        unknown[5] = 99;
        assert!(ExitReply::decode(&unknown).is_err());
    }

    proptest! {
        #[test]
        fn exit_decoding_never_panics_and_round_trips(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = ExitRequest::decode(&b) {
                prop_assert_eq!(r.encode(), b.clone());
            }
            if let Ok(r) = ExitReply::decode(&b) {
                prop_assert_eq!(r.encode(), b);
            }
        }
    }
}

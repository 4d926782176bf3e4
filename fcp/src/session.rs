//! Per-connection session logic that needs no node: the ClientHello rule,
//! WatchGlobal flags, identifier collisions and TestDDA bookkeeping.
//!
//! # Protocol flow
//!
//! ```text
//! client: ClientHello Name=… ExpectedVersion=2.0   -> Action::Reply(NodeHello)
//! client: anything else first                      -> Action::Reject(ProtocolError 1, Fatal), close
//! client: a second ClientHello                     -> Action::Reject(ProtocolError 2)
//! client: ClientPut/ClientGet/… Identifier=x       -> Action::Execute(…), x now in use
//! client: the same Identifier (same Global)        -> Action::Reject(IdentifierCollision)
//! node:   request x finished (connection) / removed -> Session::release(x, global)
//! ```
//!
//! The node owns request execution, the persistent queues (which outlive a
//! connection: check their identifiers there too) and all file I/O.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::client::{ClientMessage, MessageInvalid, Verbosity};
use crate::codec::{DecodeError, Message};
use crate::codes::ProtocolErrorCode;
use crate::dda::{path_is_within, DdaAccess, DdaChallenge};
use crate::replies::{
    IdentifierCollision, NodeHello, ProtocolError, Reply, TestDdaComplete, TestDdaReply,
};

/// At most this many TestDDA challenges may be pending on one connection
/// (each makes the node create a file).
pub const MAX_PENDING_DDA: usize = 16;

/// What the node should do with an incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Valid in this state: the node executes it. For a streamed header,
    /// the payload events that follow belong to this request.
    Execute(ClientMessage),
    /// Handled here: send this reply (NodeHello).
    Reply(Message),
    /// Refused: send `reply` (ProtocolError or IdentifierCollision); close
    /// the connection after it when `close`. A streamed payload that
    /// follows must still be read and discarded.
    Reject {
        /// The message to send.
        reply: Message,
        /// Close the connection after sending.
        close: bool,
    },
    /// Nothing to do (`Void`).
    Ignore,
}

/// A set of request identifiers, with the Global flag distinguishing the
/// global queue from the client's own. The node can use one per client name
/// and one for the global queue for persistent requests.
#[derive(Debug, Clone, Default)]
pub struct IdentifierSet {
    ids: HashSet<(bool, String)>,
}

impl IdentifierSet {
    /// Registers `identifier`; `false` if it is already in use (collision).
    pub fn insert(&mut self, identifier: &str, global: bool) -> bool {
        self.ids.insert((global, identifier.to_string()))
    }

    /// Frees `identifier`; `true` if it was in use.
    pub fn remove(&mut self, identifier: &str, global: bool) -> bool {
        self.ids.remove(&(global, identifier.to_string()))
    }

    /// Whether `identifier` is in use.
    pub fn contains(&self, identifier: &str, global: bool) -> bool {
        self.ids.contains(&(global, identifier.to_string()))
    }

    /// Number of identifiers in use.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is in use.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The state of one FCP connection.
#[derive(Debug)]
pub struct Session {
    hello: NodeHello,
    client_name: Option<String>,
    watch_global: Option<Verbosity>,
    identifiers: IdentifierSet,
    dda_pending: HashMap<String, DdaChallenge>,
    dda_results: Vec<(PathBuf, DdaAccess)>,
}

impl Session {
    /// A new connection that will answer ClientHello with `hello`.
    pub fn new(hello: NodeHello) -> Self {
        Session {
            hello,
            client_name: None,
            watch_global: None,
            identifiers: IdentifierSet::default(),
            dda_pending: HashMap::new(),
            dda_results: Vec::new(),
        }
    }

    /// This connection's `ConnectionIdentifier` (FileHash salt).
    pub fn connection_identifier(&self) -> &str {
        &self.hello.connection_identifier
    }

    /// The client's `Name` once ClientHello was received.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// Whether ClientHello was received.
    pub fn hello_received(&self) -> bool {
        self.client_name.is_some()
    }

    /// `Some(mask)` while the client watches the global queue.
    pub fn watching_global(&self) -> Option<Verbosity> {
        self.watch_global
    }

    /// The identifiers of requests started on this connection.
    pub fn identifiers(&self) -> &IdentifierSet {
        &self.identifiers
    }

    /// Frees an identifier: call when a connection request finishes or a
    /// persistent request is removed (RemovePersistentRequest frees it
    /// automatically), or when the node rejects the request itself.
    pub fn release(&mut self, identifier: &str, global: bool) -> bool {
        self.identifiers.remove(identifier, global)
    }

    /// Handles a complete message from the decoder.
    pub fn handle(&mut self, msg: &Message) -> Action {
        self.handle_parsed(ClientMessage::parse(msg))
    }

    /// Handles the header of a message whose payload is streamed.
    pub fn handle_header(&mut self, msg: &Message, data_length: u64) -> Action {
        self.handle_parsed(ClientMessage::parse_header(msg, Some(data_length)))
    }

    /// Handles a decoder error: the ProtocolError to send, and whether to
    /// close (always for fatal errors, and for anything before ClientHello).
    pub fn handle_decode_error(&mut self, err: &DecodeError) -> Action {
        if !self.hello_received() {
            return hello_first(Some(err.to_string()));
        }
        let reply = ProtocolError {
            code: err.protocol_code(),
            extra: Some(err.to_string()),
            fatal: err.is_fatal(),
            identifier: err.identifier().map(str::to_string),
            global: false,
        };
        Action::Reject {
            reply: reply.to_message(),
            close: err.is_fatal(),
        }
    }

    /// Handles the result of [`ClientMessage::parse`].
    pub fn handle_parsed(&mut self, parsed: Result<ClientMessage, MessageInvalid>) -> Action {
        if !self.hello_received() {
            return match parsed {
                Ok(ClientMessage::ClientHello(h)) => {
                    self.client_name = Some(h.name);
                    Action::Reply(self.hello.to_message())
                }
                // fred: any failure or other message first is fatal.
                Ok(_) => hello_first(None),
                Err(e) => hello_first(Some(e.extra)),
            };
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                return Action::Reject {
                    reply: e.to_reply().to_message(),
                    close: false,
                }
            }
        };
        if let Some((id, global)) = msg.request_key() {
            if !self.identifiers.insert(id, global) {
                return Action::Reject {
                    reply: IdentifierCollision {
                        identifier: id.to_string(),
                        global,
                    }
                    .to_message(),
                    close: false,
                };
            }
        }
        match &msg {
            ClientMessage::ClientHello(_) => {
                return Action::Reject {
                    reply: ProtocolError::new(ProtocolErrorCode::NoLateClientHellos, None)
                        .to_message(),
                    close: false,
                }
            }
            ClientMessage::Void => return Action::Ignore,
            ClientMessage::WatchGlobal(w) => {
                self.watch_global = w.enabled.then_some(w.verbosity_mask);
            }
            ClientMessage::RemovePersistentRequest(r) => {
                self.identifiers.remove(&r.identifier, r.global);
            }
            ClientMessage::TestDdaRequest(r)
                if self.dda_pending.len() >= MAX_PENDING_DDA
                    && !self.dda_pending.contains_key(&r.directory) =>
            {
                return reject(
                    ProtocolErrorCode::InvalidMessage,
                    "too many TestDDA requests pending",
                );
            }
            ClientMessage::TestDdaResponse(r) if !self.dda_pending.contains_key(&r.directory) => {
                return reject(
                    ProtocolErrorCode::InvalidField,
                    "The node doesn't have a TestDDA job for this directory",
                );
            }
            _ => {}
        }
        Action::Execute(msg)
    }

    /// Records the challenge the node issued for a TestDDARequest (after
    /// writing the read file) and returns the `TestDDAReply` to send.
    pub fn dda_challenge(&mut self, challenge: DdaChallenge) -> Message {
        let reply = TestDdaReply {
            directory: challenge.directory.clone(),
            read_filename: challenge.read.as_ref().map(|(f, _)| f.clone()),
            write_filename: challenge.write.as_ref().map(|(f, _)| f.clone()),
            content_to_write: challenge.write.as_ref().map(|(_, c)| c.clone()),
        };
        self.dda_pending
            .insert(challenge.directory.clone(), challenge);
        reply.to_message()
    }

    /// The pending challenge for `directory` (so the node knows which files
    /// to read back and delete).
    pub fn dda_pending(&self, directory: &str) -> Option<&DdaChallenge> {
        self.dda_pending.get(directory)
    }

    /// Completes a TestDDA: compares what the client read (`read_content`,
    /// from TestDDAResponse) and what the node found in the write file
    /// (`written_content`, `None` if missing or unreadable) with the
    /// tokens, remembers the result for `canonical_dir` (the directory the
    /// node tested, canonicalised), and returns `TestDDAComplete`.
    /// `None` if there was no pending challenge for `directory`.
    pub fn dda_complete(
        &mut self,
        directory: &str,
        canonical_dir: &Path,
        read_content: Option<&str>,
        written_content: Option<&str>,
    ) -> Option<Message> {
        let challenge = self.dda_pending.remove(directory)?;
        let read_allowed = challenge
            .read
            .as_ref()
            .map(|(_, token)| read_content.is_some_and(|c| c.trim() == token.trim()));
        let write_allowed = challenge
            .write
            .as_ref()
            .map(|(_, token)| written_content.is_some_and(|c| c.trim() == token.trim()));
        let access = DdaAccess {
            read: read_allowed.unwrap_or(false),
            write: write_allowed.unwrap_or(false),
        };
        let limit = 4 * MAX_PENDING_DDA;
        let count = self.dda_results.len();
        match self
            .dda_results
            .iter_mut()
            .find(|(d, _)| d == canonical_dir)
        {
            Some((_, a)) => {
                a.read |= access.read;
                a.write |= access.write;
            }
            None if count < limit => self.dda_results.push((canonical_dir.to_path_buf(), access)),
            None => {}
        }
        Some(
            TestDdaComplete {
                directory: challenge.directory,
                read_allowed,
                write_allowed,
            }
            .to_message(),
        )
    }

    /// What TestDDA proved for exactly the directory `canonical_dir` (not
    /// for a directory above it): the node keeps a handle on each tested
    /// directory and reaches files only through the handle of a directory
    /// that itself passed.
    pub fn dda_access(&self, canonical_dir: &Path) -> DdaAccess {
        self.dda_results
            .iter()
            .find(|(d, _)| d == canonical_dir)
            .map(|(_, a)| *a)
            .unwrap_or_default()
    }

    /// Forgets what TestDDA proved for `canonical_dir` (the node found
    /// another directory under that path: what the old one allowed must
    /// not carry over to it).
    pub fn dda_forget(&mut self, canonical_dir: &Path) {
        self.dda_results.retain(|(d, _)| d != canonical_dir);
    }

    /// Whether a successful TestDDA allows the node to read (`write ==
    /// false`) or write `path` for this client. `path` must be canonical.
    pub fn dda_allows(&self, path: &Path, write: bool) -> bool {
        self.dda_results.iter().any(|(dir, access)| {
            (if write { access.write } else { access.read }) && path_is_within(path, dir)
        })
    }
}

fn hello_first(extra: Option<String>) -> Action {
    let reply = ProtocolError {
        code: ProtocolErrorCode::ClientHelloMustBeFirst,
        extra,
        fatal: true,
        identifier: None,
        global: false,
    };
    Action::Reject {
        reply: reply.to_message(),
        close: true,
    }
}

fn reject(code: ProtocolErrorCode, extra: &str) -> Action {
    Action::Reject {
        reply: ProtocolError::new(code, Some(extra.to_string())).to_message(),
        close: false,
    }
}

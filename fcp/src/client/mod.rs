//! Typed client → node messages.
//!
//! [`ClientMessage::parse`] turns a decoded [`Message`] into a typed struct or
//! a [`MessageInvalid`] carrying the ProtocolError code fred would send. The
//! rules (required fields, defaults, which code for which mistake) follow
//! fred's `*Message.java` constructors. Unknown fields are ignored, never
//! rejected. URIs stay strings here: the node parses them (and answers
//! [`ProtocolErrorCode::FreenetUriParseError`] itself).

//!
//! The messages are grouped by family: [`common`] holds what they share,
//! `put` the inserts, `get` the fetch; this module the rest and the
//! dispatch.

mod common;
mod get;
mod put;

pub use common::{MessageInvalid, Persistence, PriorityClass, ReturnType, UploadFrom, Verbosity};
pub use get::ClientGet;
pub use put::{ClientPut, ClientPutComplexDir, ClientPutDiskDir, DirFile, PutDirOptions};

use crate::codec::Message;
use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;
use common::{non_empty, opt, parse_priority, parse_verbosity, priority_field, required};
use get::parse_get;
use put::{parse_complex_dir, parse_disk_dir, parse_put};

/// `ClientHello`: must be the first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// `Name`: the client's name (persistent requests belong to it).
    pub name: String,
    /// `ExpectedVersion` (fred does not check it; neither do we).
    pub expected_version: String,
}

/// `GenerateSSK`: asks for a fresh SSK keypair (`SSKKeypair` reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSsk {
    /// Optional `Identifier`, echoed in the reply.
    pub identifier: Option<String>,
}

/// `TestDDARequest`: start a direct-disk-access test of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDdaRequest {
    /// `Directory`.
    pub directory: String,
    /// `WantReadDirectory`.
    pub want_read: bool,
    /// `WantWriteDirectory`.
    pub want_write: bool,
}

/// `TestDDAResponse`: the client's answer to `TestDDAReply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDdaResponse {
    /// `Directory`.
    pub directory: String,
    /// `ReadContent`: what the client read from `ReadFilename`.
    pub read_content: Option<String>,
}

/// `WatchGlobal`: (un)subscribe this connection to the global queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchGlobal {
    /// `Enabled` (default true).
    pub enabled: bool,
    /// `VerbosityMask` (default all bits).
    pub verbosity_mask: Verbosity,
}

/// `ListPersistentRequests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPersistentRequests {
    /// Optional `Identifier`, echoed as `ListRequestIdentifier` and in
    /// `EndListPersistentRequests`.
    pub identifier: Option<String>,
}

/// `RemovePersistentRequest` (alias `RemoveRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovePersistentRequest {
    /// `Identifier` (required).
    pub identifier: String,
    /// `Global`.
    pub global: bool,
}

/// `ModifyPersistentRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyPersistentRequest {
    /// `Identifier` (required).
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// New `PriorityClass`.
    pub priority_class: Option<PriorityClass>,
    /// New `ClientToken`.
    pub client_token: Option<String>,
}

/// `GetRequestStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequestStatus {
    /// `Identifier` (required).
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `OnlyData`: only resend the data (AllData).
    pub only_data: bool,
}

/// `SubscribeUSK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeUsk {
    /// `Identifier` (required).
    pub identifier: String,
    /// `URI` (required, a `USK@` key).
    pub uri: String,
    /// `DontPoll`: passive subscription.
    pub dont_poll: bool,
    /// `SparsePoll`.
    pub sparse_poll: bool,
    /// `PriorityClass` (default 4).
    pub priority_class: PriorityClass,
    /// `PriorityClassProgress` (default one better than `PriorityClass`).
    pub priority_class_progress: PriorityClass,
    /// `RealTimeFlag`.
    pub real_time: bool,
    /// `IgnoreUSKDatehints`.
    pub ignore_usk_datehints: bool,
}

/// `UnsubscribeUSK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeUsk {
    /// `Identifier` (required).
    pub identifier: String,
}

/// `GetNode`: the node's reference (`NodeData` reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetNode {
    /// `Identifier`.
    pub identifier: Option<String>,
    /// `GiveOpennetRef`.
    pub give_opennet_ref: bool,
    /// `WithPrivate`.
    pub with_private: bool,
    /// `WithVolatile`.
    pub with_volatile: bool,
}

/// `ListPeers`: `Peer`… then `EndListPeers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPeers {
    /// `Identifier`.
    pub identifier: Option<String>,
    /// `WithMetadata`.
    pub with_metadata: bool,
    /// `WithVolatile`.
    pub with_volatile: bool,
}

/// A parsed client → node message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `ClientHello`.
    ClientHello(ClientHello),
    /// `GenerateSSK`.
    GenerateSsk(GenerateSsk),
    /// `ClientPut`.
    ClientPut(ClientPut),
    /// `ClientGet`.
    ClientGet(ClientGet),
    /// `ClientPutComplexDir`.
    ClientPutComplexDir(ClientPutComplexDir),
    /// `ClientPutDiskDir`.
    ClientPutDiskDir(ClientPutDiskDir),
    /// `TestDDARequest`.
    TestDdaRequest(TestDdaRequest),
    /// `TestDDAResponse`.
    TestDdaResponse(TestDdaResponse),
    /// `WatchGlobal`.
    WatchGlobal(WatchGlobal),
    /// `ListPersistentRequests`.
    ListPersistentRequests(ListPersistentRequests),
    /// `RemovePersistentRequest` / `RemoveRequest`.
    RemovePersistentRequest(RemovePersistentRequest),
    /// `ModifyPersistentRequest`.
    ModifyPersistentRequest(ModifyPersistentRequest),
    /// `GetRequestStatus`.
    GetRequestStatus(GetRequestStatus),
    /// `SubscribeUSK`.
    SubscribeUsk(SubscribeUsk),
    /// `UnsubscribeUSK`.
    UnsubscribeUsk(UnsubscribeUsk),
    /// `GetNode`.
    GetNode(GetNode),
    /// `ListPeers`.
    ListPeers(ListPeers),
    /// `Disconnect`: close this connection.
    Disconnect,
    /// `Shutdown`: stop the node (the node decides whether to obey).
    Shutdown,
    /// `Void`: ignored (fred ignores it too).
    Void,
}

impl ClientMessage {
    /// Parses a complete message; its payload length is `msg.data`'s.
    pub fn parse(msg: &Message) -> Result<ClientMessage, MessageInvalid> {
        Self::parse_header(msg, msg.data.as_ref().map(|d| d.len() as u64))
    }

    /// Parses a message header whose payload (`attached` bytes, `None` if it
    /// ended in `EndMessage`) is being streamed separately.
    pub fn parse_header(
        msg: &Message,
        attached: Option<u64>,
    ) -> Result<ClientMessage, MessageInvalid> {
        let f = &msg.fields;
        let attached_len = attached.unwrap_or(0);
        let parsed = match msg.name.as_str() {
            "ClientHello" => ClientMessage::ClientHello(ClientHello {
                name: required(f, "Name", None, false)?,
                expected_version: required(f, "ExpectedVersion", None, false)?,
            }),
            "GenerateSSK" => ClientMessage::GenerateSsk(GenerateSsk {
                identifier: opt(f, "Identifier"),
            }),
            "ClientPut" => ClientMessage::ClientPut(parse_put(f, attached_len)?),
            "ClientGet" => ClientMessage::ClientGet(parse_get(f)?),
            "ClientPutComplexDir" => {
                ClientMessage::ClientPutComplexDir(parse_complex_dir(f, attached_len)?)
            }
            "ClientPutDiskDir" => ClientMessage::ClientPutDiskDir(parse_disk_dir(f)?),
            "TestDDARequest" => ClientMessage::TestDdaRequest(parse_test_dda(f)?),
            "TestDDAResponse" => ClientMessage::TestDdaResponse(TestDdaResponse {
                directory: non_empty(f, "Directory")?,
                read_content: opt(f, "ReadContent"),
            }),
            "WatchGlobal" => ClientMessage::WatchGlobal(WatchGlobal {
                enabled: f.get_bool("Enabled", true),
                verbosity_mask: match f.get("VerbosityMask") {
                    None => Verbosity(i32::MAX as u32),
                    Some(v) => parse_verbosity(v, None, false)?,
                },
            }),
            "ListPersistentRequests" => {
                ClientMessage::ListPersistentRequests(ListPersistentRequests {
                    identifier: opt(f, "Identifier"),
                })
            }
            "RemovePersistentRequest" | "RemoveRequest" => {
                let global = f.get_bool("Global", false);
                ClientMessage::RemovePersistentRequest(RemovePersistentRequest {
                    identifier: required(f, "Identifier", None, global)?,
                    global,
                })
            }
            "ModifyPersistentRequest" => ClientMessage::ModifyPersistentRequest(parse_modify(f)?),
            "GetRequestStatus" => {
                let global = f.get_bool("Global", false);
                ClientMessage::GetRequestStatus(GetRequestStatus {
                    identifier: required(f, "Identifier", None, global)?,
                    global,
                    only_data: f.get_bool("OnlyData", false),
                })
            }
            "SubscribeUSK" => ClientMessage::SubscribeUsk(parse_subscribe(f)?),
            "UnsubscribeUSK" => ClientMessage::UnsubscribeUsk(UnsubscribeUsk {
                identifier: required(f, "Identifier", None, false)?,
            }),
            "GetNode" => ClientMessage::GetNode(GetNode {
                identifier: opt(f, "Identifier"),
                give_opennet_ref: f.get_bool("GiveOpennetRef", false),
                with_private: f.get_bool("WithPrivate", false),
                with_volatile: f.get_bool("WithVolatile", false),
            }),
            "ListPeers" => ClientMessage::ListPeers(ListPeers {
                identifier: opt(f, "Identifier"),
                with_metadata: f.get_bool("WithMetadata", false),
                with_volatile: f.get_bool("WithVolatile", false),
            }),
            "Disconnect" => ClientMessage::Disconnect,
            "Shutdown" => ClientMessage::Shutdown,
            "Void" => ClientMessage::Void,
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(MessageInvalid::new(
                    ProtocolErrorCode::InvalidMessage,
                    format!("Unknown message name {shown}"),
                )
                .at(f.get("Identifier"), f.get_bool("Global", false)));
            }
        };
        check_payload(&parsed, msg, attached_len)?;
        Ok(parsed)
    }

    /// The request identifier and Global flag of a message that starts a
    /// request (puts, gets, put-dirs, USK subscriptions), for collision
    /// checks.
    pub fn request_key(&self) -> Option<(&str, bool)> {
        match self {
            ClientMessage::ClientPut(m) => Some((&m.identifier, m.global)),
            ClientMessage::ClientGet(m) => Some((&m.identifier, m.global)),
            ClientMessage::ClientPutComplexDir(m) => {
                Some((&m.options.identifier, m.options.global))
            }
            ClientMessage::ClientPutDiskDir(m) => Some((&m.options.identifier, m.options.global)),
            ClientMessage::SubscribeUsk(m) => Some((&m.identifier, false)),
            _ => None,
        }
    }
}

fn parse_subscribe(f: &Fields) -> Result<SubscribeUsk, MessageInvalid> {
    let identifier = required(f, "Identifier", None, false)?;
    let id = Some(identifier.as_str());
    let uri = f.get("URI").map(str::to_string).ok_or_else(|| {
        MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            "Expected a URI on SubscribeUSK",
        )
        .at(id, false)
    })?;
    let bare = uri.strip_prefix("freenet:").unwrap_or(&uri);
    if !bare
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("USK@"))
    {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidField,
            "Could not parse URI: not a USK",
        )
        .at(id, false));
    }
    let dont_poll = f.get_bool("DontPoll", false);
    let priority_class = priority_field(f, PriorityClass::BULK_SPLITFILE, id, false)?;
    let priority_class_progress = match f.get("PriorityClassProgress") {
        Some(v) => parse_priority(v, id, false)?,
        None => PriorityClass(priority_class.0.saturating_sub(1)),
    };
    Ok(SubscribeUsk {
        sparse_poll: !dont_poll && f.get_bool("SparsePoll", false),
        dont_poll,
        priority_class,
        priority_class_progress,
        real_time: f.get_bool("RealTimeFlag", false),
        ignore_usk_datehints: f.get_bool("IgnoreUSKDatehints", false),
        uri,
        identifier,
    })
}

fn parse_test_dda(f: &Fields) -> Result<TestDdaRequest, MessageInvalid> {
    let directory = non_empty(f, "Directory")?;
    let want_read = f.get_bool("WantReadDirectory", false);
    let want_write = f.get_bool("WantWriteDirectory", false);
    if !want_read && !want_write {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidMessage,
            "Both WantReadDirectory and WantWriteDirectory are set to false: what's the point of sending a message?",
        ));
    }
    Ok(TestDdaRequest {
        directory,
        want_read,
        want_write,
    })
}

fn parse_modify(f: &Fields) -> Result<ModifyPersistentRequest, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let priority_class = match f.get("PriorityClass") {
        Some(v) => Some(parse_priority(v, Some(&identifier), global)?),
        None => None,
    };
    Ok(ModifyPersistentRequest {
        client_token: opt(f, "ClientToken"),
        identifier,
        global,
        priority_class,
    })
}

/// A payload on a message that takes none means the client and we
/// disagree about framing; fred would have mis-framed it too.
fn check_payload(
    parsed: &ClientMessage,
    msg: &Message,
    attached_len: u64,
) -> Result<(), MessageInvalid> {
    let takes_data = matches!(
        parsed,
        ClientMessage::ClientPut(ClientPut {
            upload_from: UploadFrom::Direct { .. },
            ..
        }) | ClientMessage::ClientPutComplexDir(_)
    );
    if attached_len > 0 && !takes_data {
        let f = &msg.fields;
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidMessage,
            format!("{} does not take a data payload", msg.name),
        )
        .at(f.get("Identifier"), f.get_bool("Global", false)));
    }
    Ok(())
}

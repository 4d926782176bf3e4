//! Typed client → node messages.
//!
//! [`ClientMessage::parse`] turns a decoded [`Message`] into a typed struct or
//! a [`MessageInvalid`] carrying the ProtocolError code fred would send. The
//! rules (required fields, defaults, which code for which mistake) follow
//! fred's `*Message.java` constructors. Unknown fields are ignored, never
//! rejected. URIs stay strings here: the node parses them (and answers
//! [`ProtocolErrorCode::FreenetUriParseError`] itself).

use crate::codec::Message;
use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;

/// A client message that cannot be accepted, with the ProtocolError to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {extra}")]
pub struct MessageInvalid {
    /// The ProtocolError code.
    pub code: ProtocolErrorCode,
    /// `ExtraDescription`: what exactly was wrong.
    pub extra: String,
    /// The request's `Identifier`, if one was parsed.
    pub identifier: Option<String>,
    /// The request's `Global` flag.
    pub global: bool,
}

impl MessageInvalid {
    /// A new error.
    pub fn new(code: ProtocolErrorCode, extra: impl Into<String>) -> Self {
        MessageInvalid {
            code,
            extra: extra.into(),
            identifier: None,
            global: false,
        }
    }

    fn at(mut self, identifier: Option<&str>, global: bool) -> Self {
        self.identifier = identifier.map(str::to_string);
        self.global = global;
        self
    }

    /// The `ProtocolError` reply (not fatal: the connection stays open).
    pub fn to_reply(&self) -> crate::replies::ProtocolError {
        crate::replies::ProtocolError {
            code: self.code,
            extra: Some(self.extra.clone()),
            fatal: false,
            identifier: self.identifier.clone(),
            global: self.global,
        }
    }
}

/// `Persistence`: how long a request lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Persistence {
    /// Until the connection closes (default).
    #[default]
    Connection,
    /// Until the node restarts; survives reconnects.
    Reboot,
    /// Survives node restarts.
    Forever,
}

impl Persistence {
    /// Wire spelling: `connection`, `reboot`, `forever`.
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::Connection => "connection",
            Persistence::Reboot => "reboot",
            Persistence::Forever => "forever",
        }
    }

    /// Whether the request outlives its connection.
    pub fn is_persistent(self) -> bool {
        self != Persistence::Connection
    }
}

/// `ReturnType` of a ClientGet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnType {
    /// Data comes back in an `AllData` message (default).
    #[default]
    Direct,
    /// Data is only checked, not returned.
    None,
    /// Data is written to `Filename` (needs TestDDA write access).
    Disk,
    /// The data goes to this connection as it is decoded, in `DataChunk`
    /// messages ended by `DataFound` or `GetFailed` (fred reserved the name
    /// for this and never built it). Needs `Persistence=connection`.
    Chunked,
}

impl ReturnType {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnType::Direct => "direct",
            ReturnType::None => "none",
            ReturnType::Disk => "disk",
            ReturnType::Chunked => "chunked",
        }
    }
}

/// `UploadFrom` of a ClientPut or of one file of a ClientPutComplexDir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadFrom {
    /// The data follows the message (`DataLength` bytes).
    Direct {
        /// Number of bytes.
        data_length: u64,
    },
    /// The node reads a file (needs TestDDA read access or `FileHash`).
    Disk {
        /// Path of the file, as the client sent it.
        filename: String,
        /// `FileHash`: base64 SHA-256 of `"<ConnectionIdentifier>-<Identifier>-"`
        /// followed by the file content; see [`crate::dda::file_hash_salt`].
        file_hash: Option<String>,
    },
    /// Insert a redirect to another key.
    Redirect {
        /// `TargetURI`.
        target_uri: String,
    },
}

impl UploadFrom {
    /// Wire spelling: `direct`, `disk`, `redirect`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UploadFrom::Direct { .. } => "direct",
            UploadFrom::Disk { .. } => "disk",
            UploadFrom::Redirect { .. } => "redirect",
        }
    }
}

/// The `Verbosity` bitmask: which optional progress messages a client wants.
/// Bits are fred's (`ClientGet`/`ClientPutBase`). Send an optional message
/// only when its bit is set: pyFreenet fails on messages it did not expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Verbosity(pub u32);

impl Verbosity {
    /// `SimpleProgress` messages.
    pub const SIMPLE_PROGRESS: u32 = 1;
    /// `SendingToNetwork` messages.
    pub const SENT_TO_NETWORK: u32 = 2;
    /// `CompatibilityMode` messages.
    pub const COMPATIBILITY_MODE: u32 = 4;
    /// `ExpectedHashes` messages.
    pub const EXPECTED_HASHES: u32 = 8;
    /// `ExpectedMIME` messages (gets).
    pub const EXPECTED_TYPE: u32 = 32;
    /// `ExpectedDataLength` messages (gets).
    pub const EXPECTED_SIZE: u32 = 64;
    /// `EnterFiniteCooldown` messages.
    pub const ENTER_FINITE_COOLDOWN: u32 = 128;
    /// `PutFetchable` messages (puts).
    pub const PUT_FETCHABLE: u32 = 256;
    /// `StartedCompression`/`FinishedCompression` messages (puts).
    pub const COMPRESSION_START_END: u32 = 512;

    /// Whether every bit of `bit` is set.
    pub fn wants(self, bit: u32) -> bool {
        self.0 & bit == bit
    }

    /// Whether `SimpleProgress` should be sent.
    pub fn simple_progress(self) -> bool {
        self.wants(Self::SIMPLE_PROGRESS)
    }

    /// Whether `PutFetchable` should be sent.
    pub fn put_fetchable(self) -> bool {
        self.wants(Self::PUT_FETCHABLE)
    }
}

/// `PriorityClass`, 0 (maximum) to 6 (paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PriorityClass(pub u8);

impl PriorityClass {
    /// 0: maximum (fproxy interactive).
    pub const MAXIMUM: PriorityClass = PriorityClass(0);
    /// 1: interactive.
    pub const INTERACTIVE: PriorityClass = PriorityClass(1);
    /// 2: immediate splitfile (default for direct gets and puts).
    pub const IMMEDIATE_SPLITFILE: PriorityClass = PriorityClass(2);
    /// 3: update.
    pub const UPDATE: PriorityClass = PriorityClass(3);
    /// 4: bulk splitfile (default for disk gets and USK subscriptions).
    pub const BULK_SPLITFILE: PriorityClass = PriorityClass(4);
    /// 5: prefetch (default for ReturnType=none).
    pub const PREFETCH: PriorityClass = PriorityClass(5);
    /// 6: paused.
    pub const PAUSED: PriorityClass = PriorityClass(6);
}

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

/// `ClientPut`: insert one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPut {
    /// `URI`: `CHK@`, `SSK@…/name`, `KSK@name`, `USK@…/name/N`
    /// (`CHK@` with `BinaryBlob`). A single path component on a CHK is a
    /// filename hint, as in fred.
    pub uri: String,
    /// `Identifier` (required).
    pub identifier: String,
    /// `Verbosity` (default 0).
    pub verbosity: Verbosity,
    /// `MaxRetries` (default 0; -1 = forever).
    pub max_retries: i32,
    /// `PriorityClass` (default 2).
    pub priority_class: PriorityClass,
    /// `GetCHKOnly`: compute the CHK, insert nothing.
    pub get_chk_only: bool,
    /// `Global`: on the global queue.
    pub global: bool,
    /// `DontCompress`.
    pub dont_compress: bool,
    /// `Codecs`: comma-separated codec names the client allows.
    pub codecs: Option<String>,
    /// `ClientToken`: opaque, echoed in PersistentPut.
    pub client_token: Option<String>,
    /// `Persistence` (default connection).
    pub persistence: Persistence,
    /// `TargetFilename` (`Some("")` means: explicitly no filename).
    pub target_filename: Option<String>,
    /// `EarlyEncode`.
    pub early_encode: bool,
    /// `UploadFrom` with its source fields.
    pub upload_from: UploadFrom,
    /// `BinaryBlob`.
    pub binary_blob: bool,
    /// `Metadata.ContentType` (MIME type).
    pub content_type: Option<String>,
    /// `RealTimeFlag`.
    pub real_time: bool,
    /// `LocalRequestOnly`.
    pub local_request_only: bool,
    /// `ExtraInsertsSingleBlock`.
    pub extra_inserts_single_block: Option<i32>,
    /// `CompatibilityMode` (name or number, unchecked).
    pub compatibility_mode: Option<String>,
    /// `IgnoreUSKDatehints`.
    pub ignore_usk_datehints: bool,
}

/// `ClientGet`: fetch one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGet {
    /// `URI` (required).
    pub uri: String,
    /// `Identifier` (required).
    pub identifier: String,
    /// `Verbosity` (default 0).
    pub verbosity: Verbosity,
    /// `ReturnType` (default direct).
    pub return_type: ReturnType,
    /// `Filename` (required for ReturnType=disk).
    pub filename: Option<String>,
    /// `TempFilename`.
    pub temp_filename: Option<String>,
    /// `MaxSize` (None = unlimited).
    pub max_size: Option<u64>,
    /// `MaxTempSize` (None = unlimited).
    pub max_temp_size: Option<u64>,
    /// `MaxRetries` (default 0; -1 = forever).
    pub max_retries: i32,
    /// `PriorityClass` (default by return type: direct 2, disk 4, none 5).
    pub priority_class: PriorityClass,
    /// `Persistence`.
    pub persistence: Persistence,
    /// `Global`.
    pub global: bool,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `IgnoreDS`: do not look in the local store.
    pub ignore_ds: bool,
    /// `DSOnly`: only look in the local store.
    pub ds_only: bool,
    /// `BinaryBlob`.
    pub binary_blob: bool,
    /// `FilterData`: run the content filter.
    pub filter_data: bool,
    /// `RealTimeFlag`.
    pub real_time: bool,
    /// `AllowedMIMETypes` (`;`-separated on the wire).
    pub allowed_mime_types: Option<Vec<String>>,
    /// `Charset`.
    pub charset: Option<String>,
    /// `IgnoreUSKDatehints`.
    pub ignore_usk_datehints: bool,
    /// `WriteToClientCache` (default true). fred defaults it to false for
    /// persistent gets, which keep their progress in fred's own temporary
    /// storage; Lichen's persistent gets resume after a restart from the
    /// blocks in the client cache, so it is on for them too.
    pub write_to_client_cache: bool,
}

/// The fields shared by ClientPutComplexDir and ClientPutDiskDir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDirOptions {
    /// `Identifier` (required).
    pub identifier: String,
    /// `URI` (required): where the manifest goes.
    pub uri: String,
    /// `Verbosity`.
    pub verbosity: Verbosity,
    /// `MaxRetries`.
    pub max_retries: i32,
    /// `PriorityClass` (default 2).
    pub priority_class: PriorityClass,
    /// `GetCHKOnly`.
    pub get_chk_only: bool,
    /// `DontCompress`.
    pub dont_compress: bool,
    /// `Codecs`.
    pub codecs: Option<String>,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `Persistence`.
    pub persistence: Persistence,
    /// `Global`.
    pub global: bool,
    /// `DefaultName`: the default document (e.g. `index.html`).
    pub default_name: Option<String>,
    /// `EarlyEncode`.
    pub early_encode: bool,
    /// `RealTimeFlag`.
    pub real_time: bool,
    /// `LocalRequestOnly`.
    pub local_request_only: bool,
    /// `TargetFilename`.
    pub target_filename: Option<String>,
}

/// One `Files.N.*` entry of a ClientPutComplexDir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFile {
    /// `Files.N.Name`: path inside the site, `/`-separated.
    pub name: String,
    /// `Files.N.Metadata.ContentType`.
    pub content_type: Option<String>,
    /// Where the content comes from. For `Direct`, the bytes are at
    /// [`DirFile::data_offset`] in the message payload.
    pub upload_from: UploadFrom,
    /// Offset of this file's bytes in the payload (direct files only; the
    /// direct files' data is concatenated in `N` order).
    pub data_offset: u64,
}

/// `ClientPutComplexDir`: a freesite given file by file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPutComplexDir {
    /// The common put-dir fields.
    pub options: PutDirOptions,
    /// `Files.0…`, in order (stops at the first missing index, as fred).
    pub files: Vec<DirFile>,
    /// Total payload bytes (the direct files' data).
    pub data_length: u64,
}

/// `ClientPutDiskDir`: a freesite read from a directory by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPutDiskDir {
    /// The common put-dir fields.
    pub options: PutDirOptions,
    /// `Filename`: the directory.
    pub filename: String,
    /// `AllowUnreadableFiles`.
    pub allow_unreadable_files: bool,
    /// `includeHiddenFiles` (fred's spelling).
    pub include_hidden_files: bool,
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
            "ClientPutDiskDir" => {
                let options = parse_dir_options(f)?;
                let filename = required(f, "Filename", Some(&options.identifier), options.global)?;
                ClientMessage::ClientPutDiskDir(ClientPutDiskDir {
                    filename,
                    allow_unreadable_files: f.get_bool("AllowUnreadableFiles", false),
                    include_hidden_files: f.get_bool("includeHiddenFiles", false),
                    options,
                })
            }
            "TestDDARequest" => {
                let directory = non_empty(f, "Directory")?;
                let want_read = f.get_bool("WantReadDirectory", false);
                let want_write = f.get_bool("WantWriteDirectory", false);
                if !want_read && !want_write {
                    return Err(MessageInvalid::new(
                        ProtocolErrorCode::InvalidMessage,
                        "Both WantReadDirectory and WantWriteDirectory are set to false: what's the point of sending a message?",
                    ));
                }
                ClientMessage::TestDdaRequest(TestDdaRequest {
                    directory,
                    want_read,
                    want_write,
                })
            }
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
            "ModifyPersistentRequest" => {
                let global = f.get_bool("Global", false);
                let identifier = required(f, "Identifier", None, global)?;
                let priority_class = match f.get("PriorityClass") {
                    Some(v) => Some(parse_priority(v, Some(&identifier), global)?),
                    None => None,
                };
                ClientMessage::ModifyPersistentRequest(ModifyPersistentRequest {
                    client_token: opt(f, "ClientToken"),
                    identifier,
                    global,
                    priority_class,
                })
            }
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
        // A payload on a message that takes none means the client and we
        // disagree about framing; fred would have mis-framed it too.
        let takes_data = matches!(
            parsed,
            ClientMessage::ClientPut(ClientPut {
                upload_from: UploadFrom::Direct { .. },
                ..
            }) | ClientMessage::ClientPutComplexDir(_)
        );
        if attached_len > 0 && !takes_data {
            return Err(MessageInvalid::new(
                ProtocolErrorCode::InvalidMessage,
                format!("{} does not take a data payload", msg.name),
            )
            .at(f.get("Identifier"), f.get_bool("Global", false)));
        }
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

fn opt(f: &Fields, key: &str) -> Option<String> {
    f.get(key).map(str::to_string)
}

fn required(
    f: &Fields,
    key: &str,
    ident: Option<&str>,
    global: bool,
) -> Result<String, MessageInvalid> {
    f.get(key).map(str::to_string).ok_or_else(|| {
        MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            format!("Missing field {key}"),
        )
        .at(ident, global)
    })
}

fn non_empty(f: &Fields, key: &str) -> Result<String, MessageInvalid> {
    match f.get(key) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        Some(_) => Err(MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            format!("The specified {key} can't be empty!"),
        )),
        None => Err(MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            format!("No {key} given!"),
        )),
    }
}

fn number_error(key: &str, v: &str, ident: Option<&str>, global: bool) -> MessageInvalid {
    let shown: String = v.chars().take(64).collect();
    MessageInvalid::new(
        ProtocolErrorCode::ErrorParsingNumber,
        format!("Error parsing {key} field: {shown:?}"),
    )
    .at(ident, global)
}

/// Java's `Integer.parseInt`/`Long.parseLong`: optional sign, decimal digits.
fn parse_i64(v: &str) -> Option<i64> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<i64>().ok()
}

fn parse_i32_field(
    f: &Fields,
    key: &str,
    default: i32,
    ident: Option<&str>,
    global: bool,
) -> Result<i32, MessageInvalid> {
    match f.get(key) {
        None => Ok(default),
        Some(v) => parse_i64(v)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| number_error(key, v, ident, global)),
    }
}

fn parse_verbosity(
    v: &str,
    ident: Option<&str>,
    global: bool,
) -> Result<Verbosity, MessageInvalid> {
    // Java int: negative values set the high bits (e.g. -1 = everything).
    parse_i64(v)
        .and_then(|n| i32::try_from(n).ok())
        .map(|n| Verbosity(n as u32))
        .ok_or_else(|| number_error("Verbosity", v, ident, global))
}

fn parse_priority(
    v: &str,
    ident: Option<&str>,
    global: bool,
) -> Result<PriorityClass, MessageInvalid> {
    let n = parse_i64(v)
        .and_then(|n| i16::try_from(n).ok())
        .ok_or_else(|| number_error("PriorityClass", v, ident, global))?;
    if !(0..=6).contains(&n) {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidField,
            format!("Invalid priority class {n} - range is 6 to 0"),
        )
        .at(ident, global));
    }
    Ok(PriorityClass(n as u8))
}

fn priority_field(
    f: &Fields,
    default: PriorityClass,
    ident: Option<&str>,
    global: bool,
) -> Result<PriorityClass, MessageInvalid> {
    match f.get("PriorityClass") {
        None => Ok(default),
        Some(v) => parse_priority(v, ident, global),
    }
}

fn verbosity_field(
    f: &Fields,
    ident: Option<&str>,
    global: bool,
) -> Result<Verbosity, MessageInvalid> {
    match f.get("Verbosity") {
        None => Ok(Verbosity(0)),
        Some(v) => parse_verbosity(v, ident, global),
    }
}

fn persistence_field(
    f: &Fields,
    ident: Option<&str>,
    global: bool,
) -> Result<Persistence, MessageInvalid> {
    match f.get("Persistence") {
        None => Ok(Persistence::Connection),
        Some(v) if v.eq_ignore_ascii_case("connection") => Ok(Persistence::Connection),
        Some(v) if v.eq_ignore_ascii_case("reboot") => Ok(Persistence::Reboot),
        Some(v) if v.eq_ignore_ascii_case("forever") => Ok(Persistence::Forever),
        // fred reports a bad Persistence as ERROR_PARSING_NUMBER.
        Some(v) => Err(number_error("Persistence", v, ident, global)),
    }
}

fn size_field(
    f: &Fields,
    key: &str,
    ident: Option<&str>,
    global: bool,
) -> Result<Option<u64>, MessageInvalid> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => {
            let n = parse_i64(v).ok_or_else(|| number_error(key, v, ident, global))?;
            u64::try_from(n).map(Some).map_err(|_| {
                MessageInvalid::new(
                    ProtocolErrorCode::InvalidField,
                    format!("{key} must be positive"),
                )
                .at(ident, global)
            })
        }
    }
}

fn global_needs_persistence(
    persistence: Persistence,
    ident: &str,
    global: bool,
) -> Result<(), MessageInvalid> {
    if global && persistence == Persistence::Connection {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::NotSupported,
            "Global requests must be persistent",
        )
        .at(Some(ident), global));
    }
    Ok(())
}

fn parse_put(f: &Fields, attached: u64) -> Result<ClientPut, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let id = Some(identifier.as_str());
    let binary_blob = f.get_bool("BinaryBlob", false);
    let uri = if binary_blob {
        f.get("URI").unwrap_or("CHK@").to_string()
    } else {
        required(f, "URI", id, global)?
    };
    let upload_from = match f.get("UploadFrom") {
        None => direct_length(f, attached, id, global)?,
        Some(u) if u.eq_ignore_ascii_case("direct") => direct_length(f, attached, id, global)?,
        Some(u) if u.eq_ignore_ascii_case("disk") => UploadFrom::Disk {
            filename: required(f, "Filename", id, global)?,
            file_hash: opt(f, "FileHash"),
        },
        Some(u) if u.eq_ignore_ascii_case("redirect") => UploadFrom::Redirect {
            target_uri: f.get("TargetURI").map(str::to_string).ok_or_else(|| {
                MessageInvalid::new(
                    ProtocolErrorCode::MissingField,
                    "TargetURI missing but UploadFrom=redirect",
                )
                .at(id, global)
            })?,
        },
        Some(u) => {
            let shown: String = u.chars().take(64).collect();
            return Err(MessageInvalid::new(
                ProtocolErrorCode::InvalidField,
                format!("UploadFrom invalid or unrecognized: {shown}"),
            )
            .at(id, global));
        }
    };
    let target_filename = opt(f, "TargetFilename");
    if target_filename.as_deref().is_some_and(|t| t.contains('/')) {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidField,
            "TargetFilename must not contain slashes",
        )
        .at(id, global));
    }
    let persistence = persistence_field(f, id, global)?;
    global_needs_persistence(persistence, &identifier, global)?;
    Ok(ClientPut {
        verbosity: verbosity_field(f, id, global)?,
        max_retries: parse_i32_field(f, "MaxRetries", 0, id, global)?,
        priority_class: priority_field(f, PriorityClass::IMMEDIATE_SPLITFILE, id, global)?,
        get_chk_only: f.get_bool("GetCHKOnly", false),
        dont_compress: f.get_bool("DontCompress", false),
        codecs: opt(f, "Codecs"),
        client_token: opt(f, "ClientToken"),
        persistence,
        target_filename,
        early_encode: f.get_bool("EarlyEncode", false),
        upload_from,
        binary_blob,
        content_type: opt(f, "Metadata.ContentType"),
        real_time: f.get_bool("RealTimeFlag", false),
        local_request_only: f.get_bool("LocalRequestOnly", false),
        extra_inserts_single_block: match f.get("ExtraInsertsSingleBlock") {
            Some(_) => Some(parse_i32_field(
                f,
                "ExtraInsertsSingleBlock",
                0,
                id,
                global,
            )?),
            None => None,
        },
        compatibility_mode: opt(f, "CompatibilityMode"),
        ignore_usk_datehints: f.get_bool("IgnoreUSKDatehints", false),
        uri,
        identifier,
        global,
    })
}

fn direct_length(
    f: &Fields,
    attached: u64,
    id: Option<&str>,
    global: bool,
) -> Result<UploadFrom, MessageInvalid> {
    let v = f.get("DataLength").ok_or_else(|| {
        MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            "Need DataLength on a ClientPut",
        )
        .at(id, global)
    })?;
    let n = parse_i64(v)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| number_error("DataLength", v, id, global))?;
    if n != attached {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidMessage,
            format!(
                "DataLength={n} but {attached} bytes of data attached (did you end with Data?)"
            ),
        )
        .at(id, global));
    }
    Ok(UploadFrom::Direct { data_length: n })
}

fn parse_get(f: &Fields) -> Result<ClientGet, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let id = Some(identifier.as_str());
    let uri = f.get("URI").map(str::to_string).ok_or_else(|| {
        MessageInvalid::new(ProtocolErrorCode::FreenetUriParseError, "No URI").at(id, global)
    })?;
    let return_type = match f.get("ReturnType") {
        None => ReturnType::Direct,
        Some(r) if r.eq_ignore_ascii_case("direct") => ReturnType::Direct,
        Some(r) if r.eq_ignore_ascii_case("none") => ReturnType::None,
        Some(r) if r.eq_ignore_ascii_case("disk") => ReturnType::Disk,
        Some(r) if r.eq_ignore_ascii_case("chunked") => ReturnType::Chunked,
        Some(r) => {
            let shown: String = r.chars().take(64).collect();
            return Err(MessageInvalid::new(
                ProtocolErrorCode::InvalidField,
                format!("Unable to parse ReturnType {shown}"),
            )
            .at(id, global));
        }
    };
    let filename = match return_type {
        ReturnType::Disk => Some(f.get("Filename").map(str::to_string).ok_or_else(|| {
            MessageInvalid::new(ProtocolErrorCode::MissingField, "Missing Filename").at(id, global)
        })?),
        _ => opt(f, "Filename"),
    };
    let default_priority = match return_type {
        ReturnType::Disk => PriorityClass::BULK_SPLITFILE,
        ReturnType::None => PriorityClass::PREFETCH,
        _ => PriorityClass::IMMEDIATE_SPLITFILE,
    };
    let max_retries = parse_i32_field(f, "MaxRetries", 0, id, global)?;
    if max_retries < -1 {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidField,
            "Max retries must be -1 or larger",
        )
        .at(id, global));
    }
    let persistence = persistence_field(f, id, global)?;
    global_needs_persistence(persistence, &identifier, global)?;
    if return_type == ReturnType::Chunked && persistence != Persistence::Connection {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidField,
            "ReturnType=chunked needs Persistence=connection: its data goes to this connection only, as it is decoded",
        )
        .at(id, global));
    }
    if size_field(f, "InitialMetadata.DataLength", id, global)?.unwrap_or(0) > 0 {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::NotSupported,
            "InitialMetadata is not supported",
        )
        .at(id, global));
    }
    Ok(ClientGet {
        verbosity: verbosity_field(f, id, global)?,
        temp_filename: opt(f, "TempFilename"),
        max_size: size_field(f, "MaxSize", id, global)?,
        max_temp_size: size_field(f, "MaxTempSize", id, global)?,
        max_retries,
        priority_class: priority_field(f, default_priority, id, global)?,
        persistence,
        client_token: opt(f, "ClientToken"),
        ignore_ds: f.get_bool("IgnoreDS", false),
        ds_only: f.get_bool("DSOnly", false),
        binary_blob: f.get_bool("BinaryBlob", false),
        filter_data: f.get_bool("FilterData", false),
        real_time: f.get_bool("RealTimeFlag", false),
        allowed_mime_types: f
            .get("AllowedMIMETypes")
            .map(|s| s.split(';').map(str::to_string).collect()),
        charset: opt(f, "Charset"),
        ignore_usk_datehints: f.get_bool("IgnoreUSKDatehints", false),
        write_to_client_cache: f.get_bool("WriteToClientCache", true),
        return_type,
        filename,
        uri,
        identifier,
        global,
    })
}

fn parse_dir_options(f: &Fields) -> Result<PutDirOptions, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let id = Some(identifier.as_str());
    let persistence = persistence_field(f, id, global)?;
    global_needs_persistence(persistence, &identifier, global)?;
    Ok(PutDirOptions {
        uri: required(f, "URI", id, global)?,
        verbosity: verbosity_field(f, id, global)?,
        max_retries: parse_i32_field(f, "MaxRetries", 0, id, global)?,
        priority_class: priority_field(f, PriorityClass::IMMEDIATE_SPLITFILE, id, global)?,
        get_chk_only: f.get_bool("GetCHKOnly", false),
        dont_compress: f.get_bool("DontCompress", false),
        codecs: opt(f, "Codecs"),
        client_token: opt(f, "ClientToken"),
        persistence,
        default_name: opt(f, "DefaultName"),
        early_encode: f.get_bool("EarlyEncode", false),
        real_time: f.get_bool("RealTimeFlag", false),
        local_request_only: f.get_bool("LocalRequestOnly", false),
        target_filename: opt(f, "TargetFilename"),
        identifier,
        global,
    })
}

fn parse_complex_dir(f: &Fields, attached: u64) -> Result<ClientPutComplexDir, MessageInvalid> {
    let options = parse_dir_options(f)?;
    let id = Some(options.identifier.as_str());
    let global = options.global;
    let mut files = Vec::new();
    let mut offset: u64 = 0;
    // The decoder bounds the field count, so this loop is bounded too.
    for i in 0..=f.len() {
        let key = |k: &str| format!("Files.{i}.{k}");
        let Some(name) = f.get(&key("Name")) else {
            break;
        };
        let content_type = opt(f, &key("Metadata.ContentType"));
        let upload_from = match f.get(&key("UploadFrom")) {
            None => dir_direct(f, &key("DataLength"), name, id, global)?,
            Some(u) if u.eq_ignore_ascii_case("direct") => {
                dir_direct(f, &key("DataLength"), name, id, global)?
            }
            Some(u) if u.eq_ignore_ascii_case("disk") => UploadFrom::Disk {
                filename: f.get(&key("Filename")).map(str::to_string).ok_or_else(|| {
                    MessageInvalid::new(
                        ProtocolErrorCode::MissingField,
                        format!("Missing field: Filename on {name}"),
                    )
                    .at(id, global)
                })?,
                file_hash: opt(f, &key("FileHash")),
            },
            Some(u) if u.eq_ignore_ascii_case("redirect") => UploadFrom::Redirect {
                target_uri: f
                    .get(&key("TargetURI"))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        MessageInvalid::new(
                            ProtocolErrorCode::MissingField,
                            "TargetURI missing but UploadFrom=redirect",
                        )
                        .at(id, global)
                    })?,
            },
            Some(u) => {
                let shown: String = u.chars().take(64).collect();
                return Err(MessageInvalid::new(
                    ProtocolErrorCode::InvalidField,
                    format!("Unsupported or unknown UploadFrom: {shown}"),
                )
                .at(id, global));
            }
        };
        let data_offset = offset;
        if let UploadFrom::Direct { data_length } = upload_from {
            offset = offset.saturating_add(data_length);
        }
        files.push(DirFile {
            name: name.to_string(),
            content_type,
            upload_from,
            data_offset,
        });
    }
    if files.is_empty() {
        return Err(
            MessageInvalid::new(ProtocolErrorCode::MissingField, "Missing Files section")
                .at(id, global),
        );
    }
    if offset != attached {
        return Err(MessageInvalid::new(
            ProtocolErrorCode::InvalidMessage,
            format!("direct files total {offset} bytes but {attached} bytes of data attached"),
        )
        .at(id, global));
    }
    Ok(ClientPutComplexDir {
        options,
        files,
        data_length: offset,
    })
}

fn dir_direct(
    f: &Fields,
    key: &str,
    name: &str,
    id: Option<&str>,
    global: bool,
) -> Result<UploadFrom, MessageInvalid> {
    let v = f.get(key).ok_or_else(|| {
        MessageInvalid::new(
            ProtocolErrorCode::MissingField,
            format!("UploadFrom=direct requires a DataLength for {name}"),
        )
        .at(id, global)
    })?;
    let n = parse_i64(v)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| number_error("DataLength", v, id, global))?;
    Ok(UploadFrom::Direct { data_length: n })
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

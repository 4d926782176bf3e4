//! Node → client message builders.
//!
//! Each struct holds what the node knows; [`Reply::to_message`] lays it out
//! with fred's field names and order. Times (`StartupTime`,
//! `CompletionTime`, `LastProgress`) are milliseconds since the Unix epoch,
//! passed in by the caller: this crate reads no clock.
//!
//! Send a message only when the client asked for it (pyFreenet fails a
//! request on an unexpected message type): `SimpleProgress` only with
//! [`crate::Verbosity::simple_progress`], `PutFetchable` only with
//! [`crate::Verbosity::put_fetchable`].

use crate::client::{Persistence, PriorityClass, ReturnType, UploadFrom, Verbosity};
use crate::codec::Message;
use crate::codes::{FetchErrorCode, InsertErrorCode, ProtocolErrorCode};
use crate::fields::{bool_str, Fields};

/// A node → client message.
pub trait Reply {
    /// The message name.
    const NAME: &'static str;
    /// The fields, in fred's order.
    fn fields(&self) -> Fields;
    /// The whole message (no payload).
    fn to_message(&self) -> Message {
        Message {
            name: Self::NAME.to_string(),
            fields: self.fields(),
            data: None,
        }
    }
}

fn fields_with(pairs: &[(&str, String)]) -> Fields {
    pairs.iter().map(|(k, v)| (*k, v.clone())).collect()
}

/// Formats the `CompressionCodecs` value of NodeHello the way fred does and
/// pyFreenet parses it: `"2 - GZIP(0), ZSTD(1)"`.
pub fn compression_codecs_descriptor(codecs: &[(&str, u16)]) -> String {
    let list: Vec<String> = codecs.iter().map(|(n, id)| format!("{n}({id})")).collect();
    format!("{} - {}", codecs.len(), list.join(", "))
}

/// A `ConnectionIdentifier` from random bytes: lower-case hex, and never
/// all digits (pyFreenet turns numeric field values into integers, then
/// fails when it salts a FileHash with it).
pub fn connection_identifier(random: [u8; 16]) -> String {
    let mut s: String = random.iter().map(|b| format!("{b:02x}")).collect();
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.replace_range(0..1, "a");
    }
    s
}

/// `NodeHello`: the answer to ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHello {
    /// `ConnectionIdentifier`: random per connection, non-numeric (see
    /// [`connection_identifier`]); salts FileHash.
    pub connection_identifier: String,
    /// `CompressionCodecs` as (name, number), e.g. `[("ZSTD", 0)]`; clients
    /// echo the names in `Codecs`.
    pub compression_codecs: Vec<(String, u16)>,
    /// `Node` (default `Fred`: some clients check it).
    pub node: String,
    /// `Version`, fred's `name,series,protocol,build` layout.
    pub version: String,
    /// `Build`: fred build number clients gate features on.
    pub build: u32,
    /// `Revision`.
    pub revision: String,
    /// `ExtBuild`.
    pub ext_build: u32,
    /// `ExtRevision`.
    pub ext_revision: String,
    /// `Testnet`.
    pub testnet: bool,
    /// `NodeLanguage`.
    pub node_language: String,
}

impl NodeHello {
    /// Lichen's NodeHello: FCPVersion 2.0, fred-compatible version fields
    /// (build 1506, as current fred, so clients enable every feature).
    pub fn lichen(connection_identifier: String, compression_codecs: Vec<(String, u16)>) -> Self {
        NodeHello {
            connection_identifier,
            compression_codecs,
            node: "Fred".into(),
            version: "Fred,0.7,1.0,1506".into(),
            build: 1506,
            revision: concat!("lichen-", env!("CARGO_PKG_VERSION")).into(),
            ext_build: 29,
            ext_revision: "v29".into(),
            testnet: false,
            node_language: "ENGLISH".into(),
        }
    }
}

impl Reply for NodeHello {
    const NAME: &'static str = "NodeHello";
    fn fields(&self) -> Fields {
        let codecs: Vec<(&str, u16)> = self
            .compression_codecs
            .iter()
            .map(|(n, i)| (n.as_str(), *i))
            .collect();
        fields_with(&[
            ("FCPVersion", "2.0".into()),
            ("Node", self.node.clone()),
            ("Version", self.version.clone()),
            ("Build", self.build.to_string()),
            ("Revision", self.revision.clone()),
            ("ExtBuild", self.ext_build.to_string()),
            ("ExtRevision", self.ext_revision.clone()),
            ("Testnet", bool_str(self.testnet).into()),
            ("CompressionCodecs", compression_codecs_descriptor(&codecs)),
            ("ConnectionIdentifier", self.connection_identifier.clone()),
            ("NodeLanguage", self.node_language.clone()),
        ])
    }
}

/// `ProtocolError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The code.
    pub code: ProtocolErrorCode,
    /// `ExtraDescription`.
    pub extra: Option<String>,
    /// `Fatal`: the node closes the connection after sending it.
    pub fatal: bool,
    /// `Identifier` of the request, if known.
    pub identifier: Option<String>,
    /// `Global`.
    pub global: bool,
}

impl ProtocolError {
    /// A non-fatal error with no identifier.
    pub fn new(code: ProtocolErrorCode, extra: Option<String>) -> Self {
        ProtocolError {
            code,
            extra,
            fatal: false,
            identifier: None,
            global: false,
        }
    }
}

impl Reply for ProtocolError {
    const NAME: &'static str = "ProtocolError";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push_opt("Identifier", self.identifier.clone());
        f.push("Code", self.code.code().to_string());
        f.push("CodeDescription", self.code.description());
        f.push_opt("ExtraDescription", self.extra.clone());
        f.push("Fatal", bool_str(self.fatal));
        f.push("Global", bool_str(self.global));
        f
    }
}

/// `IdentifierCollision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierCollision {
    /// The identifier already in use.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
}

impl Reply for IdentifierCollision {
    const NAME: &'static str = "IdentifierCollision";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
        ])
    }
}

/// `SSKKeypair`: the answer to GenerateSSK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SskKeypair {
    /// `InsertURI` (`SSK@<private>,<crypto>,<extra>/`).
    pub insert_uri: String,
    /// `RequestURI`.
    pub request_uri: String,
    /// `Identifier` of the GenerateSSK, if it had one.
    pub identifier: Option<String>,
}

impl Reply for SskKeypair {
    const NAME: &'static str = "SSKKeypair";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("InsertURI", self.insert_uri.clone()),
            ("RequestURI", self.request_uri.clone()),
        ]);
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

macro_rules! id_uri_reply {
    ($(#[$m:meta])* $name:ident, $wire:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// `Identifier`.
            pub identifier: String,
            /// `Global`.
            pub global: bool,
            /// `URI`.
            pub uri: String,
        }
    };
}

id_uri_reply!(
    /// `URIGenerated`: the final URI of an insert is known.
    UriGenerated,
    "URIGenerated"
);
impl Reply for UriGenerated {
    const NAME: &'static str = "URIGenerated";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("URI", self.uri.clone()),
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
        ])
    }
}

id_uri_reply!(
    /// `PutFetchable`: the insert can be fetched (only with Verbosity bit 256).
    PutFetchable,
    "PutFetchable"
);
impl Reply for PutFetchable {
    const NAME: &'static str = "PutFetchable";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
            ("URI", self.uri.clone()),
        ])
    }
}

/// `PutSuccessful`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSuccessful {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `URI`: the request URI of the inserted data.
    pub uri: String,
    /// `StartupTime` (ms since epoch).
    pub startup_time: u64,
    /// `CompletionTime` (ms since epoch).
    pub completion_time: u64,
}

impl Reply for PutSuccessful {
    const NAME: &'static str = "PutSuccessful";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
            ("URI", self.uri.clone()),
            ("StartupTime", self.startup_time.to_string()),
            ("CompletionTime", self.completion_time.to_string()),
        ])
    }
}

/// `PutFailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutFailed {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `Code`.
    pub code: InsertErrorCode,
    /// `ExtraDescription`.
    pub extra: Option<String>,
    /// `ExpectedURI`: the URI the data would have had (e.g. on collision).
    pub expected_uri: Option<String>,
}

impl Reply for PutFailed {
    const NAME: &'static str = "PutFailed";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
            ("Code", self.code.code().to_string()),
            ("CodeDescription", self.code.description().into()),
        ]);
        f.push_opt("ExtraDescription", self.extra.clone());
        f.push("Fatal", bool_str(self.code.is_fatal()));
        f.push("ShortCodeDescription", self.code.short_description());
        f.push_opt("ExpectedURI", self.expected_uri.clone());
        f
    }
}

/// `DataFound`: a get succeeded (data follows in AllData for ReturnType=direct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFound {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `Metadata.ContentType`.
    pub content_type: String,
    /// `DataLength`.
    pub data_length: u64,
    /// `StartupTime`.
    pub startup_time: u64,
    /// `CompletionTime`.
    pub completion_time: u64,
}

impl Reply for DataFound {
    const NAME: &'static str = "DataFound";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
            ("Metadata.ContentType", self.content_type.clone()),
            ("DataLength", self.data_length.to_string()),
            ("StartupTime", self.startup_time.to_string()),
            ("CompletionTime", self.completion_time.to_string()),
        ])
    }
}

/// `DataChunk` (Lichen): one piece of the data of a `ReturnType=chunked`
/// get, sent as the fetch decodes it. Pieces come in order (`Offset` is
/// the bytes sent before this one); the first also names the document's
/// `TotalLength` and type. `DataFound` ends a complete document, `GetFailed`
/// one that failed after some pieces (the client discards them). Build the
/// header with [`DataChunk::header`] and send `data_length` bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    /// `Identifier`.
    pub identifier: String,
    /// `Offset`: bytes of the document sent before this piece.
    pub offset: u64,
    /// `DataLength`: bytes in this piece.
    pub data_length: u64,
    /// `TotalLength` (first piece only).
    pub total_length: Option<u64>,
    /// `Metadata.ContentType` (first piece only).
    pub content_type: Option<String>,
}

impl DataChunk {
    /// The encoded header, ending in `Data`; exactly `data_length` payload
    /// bytes must follow.
    pub fn header(&self) -> Vec<u8> {
        self.to_message().encode_header(Some(self.data_length))
    }
}

impl Reply for DataChunk {
    const NAME: &'static str = "DataChunk";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Offset", self.offset.to_string()),
            ("DataLength", self.data_length.to_string()),
        ]);
        f.push_opt("TotalLength", self.total_length.map(|n| n.to_string()));
        f.push_opt("Metadata.ContentType", self.content_type.clone());
        f
    }
}

/// `AllData`: the data of a ReturnType=direct get. Build the header with
/// [`AllData::header`] and stream `data_length` bytes after it, or attach a
/// small payload with [`AllData::with_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllData {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `DataLength`.
    pub data_length: u64,
    /// `StartupTime`.
    pub startup_time: u64,
    /// `CompletionTime`.
    pub completion_time: u64,
    /// `Metadata.ContentType`.
    pub content_type: Option<String>,
}

impl AllData {
    /// The encoded header, ending in `Data`; exactly `data_length` payload
    /// bytes must follow.
    pub fn header(&self) -> Vec<u8> {
        self.to_message().encode_header(Some(self.data_length))
    }

    /// The whole message with its payload (`data_length` is taken from it).
    pub fn with_data(&self, data: Vec<u8>) -> Message {
        Message::with_data(Self::NAME, self.fields(), data)
    }
}

impl Reply for AllData {
    const NAME: &'static str = "AllData";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("DataLength", self.data_length.to_string()),
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
            ("StartupTime", self.startup_time.to_string()),
            ("CompletionTime", self.completion_time.to_string()),
        ]);
        f.push_opt("Metadata.ContentType", self.content_type.clone());
        f
    }
}

/// `GetFailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetFailed {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `Code`.
    pub code: FetchErrorCode,
    /// `ExtraDescription`.
    pub extra: Option<String>,
    /// `ExpectedDataLength`.
    pub expected_data_length: Option<u64>,
    /// `ExpectedMetadata.ContentType`.
    pub expected_content_type: Option<String>,
    /// `FinalizedExpected`.
    pub finalized_expected: bool,
    /// `RedirectURI`: the newer URI for code 27 (PermanentRedirect) and the
    /// shortened URI for code 11 (TooManyPathComponents); pyFreenet follows it.
    pub redirect_uri: Option<String>,
}

impl GetFailed {
    /// A failure with just a code.
    pub fn new(identifier: String, global: bool, code: FetchErrorCode) -> Self {
        GetFailed {
            identifier,
            global,
            code,
            extra: None,
            expected_data_length: None,
            expected_content_type: None,
            finalized_expected: false,
            redirect_uri: None,
        }
    }

    /// Code 27 with the newer URI.
    pub fn permanent_redirect(identifier: String, global: bool, new_uri: String) -> Self {
        GetFailed {
            redirect_uri: Some(new_uri),
            ..GetFailed::new(identifier, global, FetchErrorCode::PermanentRedirect)
        }
    }
}

impl Reply for GetFailed {
    const NAME: &'static str = "GetFailed";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("Code", self.code.code().to_string()),
            ("CodeDescription", self.code.description().into()),
        ]);
        f.push_opt("ExtraDescription", self.extra.clone());
        f.push("Fatal", bool_str(self.code.is_fatal()));
        f.push("ShortCodeDescription", self.code.short_description());
        f.push("Identifier", self.identifier.clone());
        f.push("Global", bool_str(self.global));
        f.push_opt(
            "ExpectedDataLength",
            self.expected_data_length.map(|n| n.to_string()),
        );
        f.push_opt(
            "ExpectedMetadata.ContentType",
            self.expected_content_type.clone(),
        );
        if self.finalized_expected {
            f.push("FinalizedExpected", "true");
        }
        f.push_opt("RedirectURI", self.redirect_uri.clone());
        f
    }
}

/// `SimpleProgress` (only when the request's Verbosity has bit 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleProgress {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `Total` blocks.
    pub total: u64,
    /// `Required` blocks.
    pub required: u64,
    /// `Failed` blocks.
    pub failed: u64,
    /// `FatallyFailed` blocks.
    pub fatally_failed: u64,
    /// `Succeeded` blocks.
    pub succeeded: u64,
    /// `LastProgress` (ms since epoch, 0 = never).
    pub last_progress: u64,
    /// `FinalizedTotal`: whether `Total` is final.
    pub finalized_total: bool,
}

impl Reply for SimpleProgress {
    const NAME: &'static str = "SimpleProgress";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Total", self.total.to_string()),
            ("Required", self.required.to_string()),
            ("Failed", self.failed.to_string()),
            ("FatallyFailed", self.fatally_failed.to_string()),
            ("Succeeded", self.succeeded.to_string()),
            ("LastProgress", self.last_progress.to_string()),
            ("FinalizedTotal", bool_str(self.finalized_total).into()),
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
        ])
    }
}

/// `PersistentGet`: describes a get (in ListPersistentRequests, on
/// GetRequestStatus, and to global-queue watchers when it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentGet {
    /// `Identifier`.
    pub identifier: String,
    /// `URI`.
    pub uri: String,
    /// `Verbosity`.
    pub verbosity: Verbosity,
    /// `ReturnType`.
    pub return_type: ReturnType,
    /// `Persistence`.
    pub persistence: Persistence,
    /// `Filename` (ReturnType=disk).
    pub filename: Option<String>,
    /// `PriorityClass`.
    pub priority_class: PriorityClass,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `Global`.
    pub global: bool,
    /// `Started`.
    pub started: bool,
    /// `MaxRetries`.
    pub max_retries: i32,
    /// `BinaryBlob`.
    pub binary_blob: bool,
    /// `MaxSize` (fred sends Long.MAX_VALUE for unlimited).
    pub max_size: Option<u64>,
    /// `RealTime`.
    pub real_time: bool,
}

impl Reply for PersistentGet {
    const NAME: &'static str = "PersistentGet";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("URI", self.uri.clone()),
            ("Verbosity", (self.verbosity.0 as i32).to_string()),
            ("ReturnType", self.return_type.as_str().into()),
            ("Persistence", self.persistence.as_str().into()),
        ]);
        if self.return_type == ReturnType::Disk {
            f.push_opt("Filename", self.filename.clone());
        }
        f.push("PriorityClass", self.priority_class.0.to_string());
        f.push_opt("ClientToken", self.client_token.clone());
        f.push("Global", bool_str(self.global));
        f.push("Started", bool_str(self.started));
        f.push("MaxRetries", self.max_retries.to_string());
        f.push("BinaryBlob", bool_str(self.binary_blob));
        f.push(
            "MaxSize",
            self.max_size.unwrap_or(i64::MAX as u64).to_string(),
        );
        f.push("RealTime", bool_str(self.real_time));
        f
    }
}

/// `PersistentPut`: describes a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentPut {
    /// `Identifier`.
    pub identifier: String,
    /// `URI` (as given by the client).
    pub uri: String,
    /// `PrivateURI`.
    pub private_uri: Option<String>,
    /// `Verbosity`.
    pub verbosity: Verbosity,
    /// `PriorityClass`.
    pub priority_class: PriorityClass,
    /// `UploadFrom` (+ `Filename` / `TargetURI`).
    pub upload_from: UploadFrom,
    /// `Persistence`.
    pub persistence: Persistence,
    /// `Metadata.ContentType`.
    pub content_type: Option<String>,
    /// `Global`.
    pub global: bool,
    /// `DataLength`.
    pub data_length: Option<u64>,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `Started`.
    pub started: bool,
    /// `MaxRetries`.
    pub max_retries: i32,
    /// `TargetFilename`.
    pub target_filename: Option<String>,
    /// `BinaryBlob` (sent only when true, as fred).
    pub binary_blob: bool,
    /// `CompatibilityMode` (fred: `COMPAT_CURRENT` etc.).
    pub compatibility_mode: String,
    /// `DontCompress`.
    pub dont_compress: bool,
    /// `Codecs`.
    pub codecs: Option<String>,
    /// `RealTime`.
    pub real_time: bool,
}

impl Reply for PersistentPut {
    const NAME: &'static str = "PersistentPut";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("Identifier", self.identifier.clone());
        f.push("URI", self.uri.clone());
        f.push_opt("PrivateURI", self.private_uri.clone());
        f.push("Verbosity", (self.verbosity.0 as i32).to_string());
        f.push("PriorityClass", self.priority_class.0.to_string());
        f.push("UploadFrom", self.upload_from.as_str());
        f.push("Persistence", self.persistence.as_str());
        match &self.upload_from {
            UploadFrom::Disk { filename, .. } => f.push("Filename", filename.clone()),
            UploadFrom::Redirect { target_uri } => f.push("TargetURI", target_uri.clone()),
            UploadFrom::Direct { .. } => {}
        }
        f.push_opt("Metadata.ContentType", self.content_type.clone());
        f.push("Global", bool_str(self.global));
        f.push_opt("DataLength", self.data_length.map(|n| n.to_string()));
        f.push_opt("ClientToken", self.client_token.clone());
        f.push("Started", bool_str(self.started));
        f.push("MaxRetries", self.max_retries.to_string());
        f.push_opt("TargetFilename", self.target_filename.clone());
        if self.binary_blob {
            f.push("BinaryBlob", "true");
        }
        f.push("CompatibilityMode", self.compatibility_mode.clone());
        f.push("DontCompress", bool_str(self.dont_compress));
        f.push_opt("Codecs", self.codecs.clone());
        f.push("RealTime", bool_str(self.real_time));
        f
    }
}

/// One file of a [`PersistentPutDir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDirFile {
    /// `Name`.
    pub name: String,
    /// Source: `redirect` (+TargetURI), `disk` (+Filename), `direct`.
    pub upload_from: UploadFrom,
    /// `DataLength` (not for redirects).
    pub data_length: Option<u64>,
    /// `Metadata.ContentType`.
    pub content_type: Option<String>,
}

/// `PersistentPutDir`: describes a site insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentPutDir {
    /// `Identifier`.
    pub identifier: String,
    /// `URI`.
    pub uri: String,
    /// `PrivateURI`.
    pub private_uri: Option<String>,
    /// `Verbosity`.
    pub verbosity: Verbosity,
    /// `Persistence`.
    pub persistence: Persistence,
    /// `PriorityClass`.
    pub priority_class: PriorityClass,
    /// `Global`.
    pub global: bool,
    /// `PutDirType`: true for `disk`, false for `complex`.
    pub disk: bool,
    /// `CompatibilityMode`.
    pub compatibility_mode: String,
    /// `DefaultName`.
    pub default_name: Option<String>,
    /// `Files.N.*` and `Files.Count`.
    pub files: Vec<PutDirFile>,
    /// `ClientToken`.
    pub client_token: Option<String>,
    /// `Started`.
    pub started: bool,
    /// `MaxRetries`.
    pub max_retries: i32,
    /// `DontCompress`.
    pub dont_compress: bool,
    /// `Codecs`.
    pub codecs: Option<String>,
    /// `RealTime`.
    pub real_time: bool,
}

impl Reply for PersistentPutDir {
    const NAME: &'static str = "PersistentPutDir";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("Identifier", self.identifier.clone());
        f.push("URI", self.uri.clone());
        f.push_opt("PrivateURI", self.private_uri.clone());
        f.push("Verbosity", (self.verbosity.0 as i32).to_string());
        f.push("Persistence", self.persistence.as_str());
        f.push("PriorityClass", self.priority_class.0.to_string());
        f.push("Global", bool_str(self.global));
        f.push("PutDirType", if self.disk { "disk" } else { "complex" });
        f.push("CompatibilityMode", self.compatibility_mode.clone());
        f.push_opt("DefaultName", self.default_name.clone());
        for (i, file) in self.files.iter().enumerate() {
            let k = |s: &str| format!("Files.{i}.{s}");
            f.push(k("Name"), file.name.clone());
            match &file.upload_from {
                UploadFrom::Redirect { target_uri } => {
                    f.push(k("UploadFrom"), "redirect");
                    f.push(k("TargetURI"), target_uri.clone());
                }
                other => {
                    f.push_opt(&k("DataLength"), file.data_length.map(|n| n.to_string()));
                    f.push_opt(&k("Metadata.ContentType"), file.content_type.clone());
                    f.push(k("UploadFrom"), other.as_str());
                    if let UploadFrom::Disk { filename, .. } = other {
                        f.push(k("Filename"), filename.clone());
                    }
                }
            }
        }
        f.push("Files.Count", self.files.len().to_string());
        f.push_opt("ClientToken", self.client_token.clone());
        f.push("Started", bool_str(self.started));
        f.push("MaxRetries", self.max_retries.to_string());
        f.push("DontCompress", bool_str(self.dont_compress));
        f.push_opt("Codecs", self.codecs.clone());
        f.push("RealTime", bool_str(self.real_time));
        f
    }
}

/// `EndListPersistentRequests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndListPersistentRequests {
    /// The ListPersistentRequests `Identifier`, if it had one.
    pub identifier: Option<String>,
}

impl Reply for EndListPersistentRequests {
    const NAME: &'static str = "EndListPersistentRequests";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `PersistentRequestRemoved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentRequestRemoved {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
}

impl Reply for PersistentRequestRemoved {
    const NAME: &'static str = "PersistentRequestRemoved";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
        ])
    }
}

/// `PersistentRequestModified`: the answer to ModifyPersistentRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentRequestModified {
    /// `Identifier`.
    pub identifier: String,
    /// `Global`.
    pub global: bool,
    /// `ClientToken`, if changed.
    pub client_token: Option<String>,
    /// `PriorityClass`, if changed.
    pub priority_class: Option<PriorityClass>,
}

impl Reply for PersistentRequestModified {
    const NAME: &'static str = "PersistentRequestModified";
    fn fields(&self) -> Fields {
        let mut f = fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Global", bool_str(self.global).into()),
        ]);
        f.push_opt("ClientToken", self.client_token.clone());
        f.push_opt(
            "PriorityClass",
            self.priority_class.map(|p| p.0.to_string()),
        );
        f
    }
}

/// `TestDDAReply`: the node's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDdaReply {
    /// `Directory`.
    pub directory: String,
    /// `ReadFilename`: a file the node wrote; the client returns its content.
    pub read_filename: Option<String>,
    /// `WriteFilename`: a file the client must create…
    pub write_filename: Option<String>,
    /// `ContentToWrite`: …with this content.
    pub content_to_write: Option<String>,
}

impl Reply for TestDdaReply {
    const NAME: &'static str = "TestDDAReply";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("Directory", self.directory.clone());
        f.push_opt("ReadFilename", self.read_filename.clone());
        if self.write_filename.is_some() {
            f.push_opt("WriteFilename", self.write_filename.clone());
            f.push(
                "ContentToWrite",
                self.content_to_write.clone().unwrap_or_default(),
            );
        }
        f
    }
}

/// `TestDDAComplete`: the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDdaComplete {
    /// `Directory`.
    pub directory: String,
    /// `ReadDirectoryAllowed` (present when read access was tested).
    pub read_allowed: Option<bool>,
    /// `WriteDirectoryAllowed` (present when write access was tested).
    pub write_allowed: Option<bool>,
}

impl Reply for TestDdaComplete {
    const NAME: &'static str = "TestDDAComplete";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("Directory", self.directory.clone());
        f.push_opt("ReadDirectoryAllowed", self.read_allowed.map(bool_str));
        f.push_opt("WriteDirectoryAllowed", self.write_allowed.map(bool_str));
        f
    }
}

/// `SubscribedUSK`: a SubscribeUSK was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedUsk {
    /// `Identifier`.
    pub identifier: String,
    /// `URI`.
    pub uri: String,
    /// `DontPoll`.
    pub dont_poll: bool,
}

impl Reply for SubscribedUsk {
    const NAME: &'static str = "SubscribedUSK";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("URI", self.uri.clone()),
            ("DontPoll", bool_str(self.dont_poll).into()),
        ])
    }
}

/// `SubscribedUSKUpdate`: a newer edition was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedUskUpdate {
    /// `Identifier`.
    pub identifier: String,
    /// `Edition`.
    pub edition: u64,
    /// `URI` of that edition.
    pub uri: String,
    /// `NewKnownGood`.
    pub new_known_good: bool,
    /// `NewSlotToo`.
    pub new_slot_too: bool,
}

impl Reply for SubscribedUskUpdate {
    const NAME: &'static str = "SubscribedUSKUpdate";
    fn fields(&self) -> Fields {
        fields_with(&[
            ("Identifier", self.identifier.clone()),
            ("Edition", self.edition.to_string()),
            ("URI", self.uri.clone()),
            ("NewKnownGood", bool_str(self.new_known_good).into()),
            ("NewSlotToo", bool_str(self.new_slot_too).into()),
        ])
    }
}

/// `NodeData`: the node reference (free-form fields, like fred's
/// `exportDarknetPublicFieldSet`), plus `Identifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeData {
    /// The reference fields (e.g. `identity`, `location`, `physical.udp`,
    /// `version`; `volatile.*` with WithVolatile). No private keys unless
    /// the client asked WithPrivate.
    pub fields: Fields,
    /// `Identifier` of the GetNode.
    pub identifier: Option<String>,
}

impl Reply for NodeData {
    const NAME: &'static str = "NodeData";
    fn fields(&self) -> Fields {
        let mut f = self.fields.clone();
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `ConfigData`: the answer to `GetConfig` and `ModifyConfig`, the node's
/// settings by name under `current.`, `default.`, `shortDescription.`,
/// `longDescription.`, `sortOrder.`, `expertFlag.`, `forceWriteFlag.` and
/// `dataType.` (those asked for), plus `Identifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigData {
    /// The settings' fields.
    pub fields: Fields,
    /// `Identifier` of the GetConfig or ModifyConfig.
    pub identifier: Option<String>,
}

impl Reply for ConfigData {
    const NAME: &'static str = "ConfigData";
    fn fields(&self) -> Fields {
        let mut f = self.fields.clone();
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `Peer`: one peer in a ListPeers answer (free-form reference fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's reference fields (`identity`, `location`, …,
    /// `volatile.status`, …).
    pub fields: Fields,
    /// `Identifier` of the ListPeers.
    pub identifier: Option<String>,
}

impl Reply for Peer {
    const NAME: &'static str = "Peer";
    fn fields(&self) -> Fields {
        let mut f = self.fields.clone();
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `EndListPeers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndListPeers {
    /// `Identifier` of the ListPeers.
    pub identifier: Option<String>,
}

impl Reply for EndListPeers {
    const NAME: &'static str = "EndListPeers";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `PeerRemoved`: the answer to `RemovePeer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRemoved {
    /// The removed peer's identity.
    pub identity: String,
    /// The `NodeIdentifier` the client gave.
    pub node_identifier: String,
    /// `Identifier` of the RemovePeer.
    pub identifier: Option<String>,
}

impl Reply for PeerRemoved {
    const NAME: &'static str = "PeerRemoved";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("Identity", self.identity.clone());
        f.push("NodeIdentifier", self.node_identifier.clone());
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// `UnknownNodeIdentifier`: no peer matches a `NodeIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownNodeIdentifier {
    /// The `NodeIdentifier` the client gave.
    pub node_identifier: String,
    /// `Identifier` of the request.
    pub identifier: Option<String>,
}

impl Reply for UnknownNodeIdentifier {
    const NAME: &'static str = "UnknownNodeIdentifier";
    fn fields(&self) -> Fields {
        let mut f = Fields::new();
        f.push("NodeIdentifier", self.node_identifier.clone());
        f.push_opt("Identifier", self.identifier.clone());
        f
    }
}

/// Adds `ListRequestIdentifier` to a message sent in answer to a
/// ListPersistentRequests that had an `Identifier` (fred does the same).
pub fn with_list_request_identifier(
    mut message: Message,
    list_identifier: Option<&str>,
) -> Message {
    if let Some(id) = list_identifier {
        message.fields.set("ListRequestIdentifier", id);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_descriptor_matches_pyfreenet_parser() {
        assert_eq!(
            compression_codecs_descriptor(&[("GZIP", 0), ("BZIP2", 1), ("LZMA", 2)]),
            "3 - GZIP(0), BZIP2(1), LZMA(2)"
        );
    }

    #[test]
    fn connection_identifier_is_never_numeric() {
        let id = connection_identifier([0x11; 16]);
        assert!(id.starts_with('a'));
        assert_eq!(id.len(), 32);
        assert_eq!(connection_identifier([0xab; 16]), "ab".repeat(16));
    }

    #[test]
    fn get_failed_redirect() {
        let m = GetFailed::permanent_redirect("x".into(), false, "USK@a/b/5".into()).to_message();
        assert_eq!(m.get("Code"), Some("27"));
        assert_eq!(m.get("ShortCodeDescription"), Some("New URI"));
        assert_eq!(m.get("RedirectURI"), Some("USK@a/b/5"));
        assert_eq!(m.get("Fatal"), Some("true"));
    }
}

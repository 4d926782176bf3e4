//! What every client message shares: the [`MessageInvalid`] error, the
//! enumerated field types and the field readers that apply fred's rules
//! (required, numbers, defaults, Global needs persistence).

use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;

/// A client message that cannot be accepted, with the ProtocolError to send.
/// `Display` shows the code only: `extra` may quote the client's URIs and
/// file names, which are for the client's reply, never for a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}")]
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

    pub(super) fn at(mut self, identifier: Option<&str>, global: bool) -> Self {
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

pub(super) fn opt(f: &Fields, key: &str) -> Option<String> {
    f.get(key).map(str::to_string)
}

pub(super) fn required(
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

pub(super) fn non_empty(f: &Fields, key: &str) -> Result<String, MessageInvalid> {
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

pub(super) fn number_error(
    key: &str,
    v: &str,
    ident: Option<&str>,
    global: bool,
) -> MessageInvalid {
    let shown: String = v.chars().take(64).collect();
    MessageInvalid::new(
        ProtocolErrorCode::ErrorParsingNumber,
        format!("Error parsing {key} field: {shown:?}"),
    )
    .at(ident, global)
}

/// Java's `Integer.parseInt`/`Long.parseLong`: optional sign, decimal digits.
pub(super) fn parse_i64(v: &str) -> Option<i64> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<i64>().ok()
}

pub(super) fn parse_i32_field(
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

pub(super) fn parse_verbosity(
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

pub(super) fn parse_priority(
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

pub(super) fn priority_field(
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

pub(super) fn verbosity_field(
    f: &Fields,
    ident: Option<&str>,
    global: bool,
) -> Result<Verbosity, MessageInvalid> {
    match f.get("Verbosity") {
        None => Ok(Verbosity(0)),
        Some(v) => parse_verbosity(v, ident, global),
    }
}

pub(super) fn persistence_field(
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

pub(super) fn size_field(
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

pub(super) fn global_needs_persistence(
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

//! The insert messages: `ClientPut`, `ClientPutComplexDir` and
//! `ClientPutDiskDir`.

use super::common::{
    global_needs_persistence, number_error, opt, parse_i32_field, parse_i64, persistence_field,
    priority_field, required, verbosity_field, MessageInvalid, Persistence, PriorityClass,
    UploadFrom, Verbosity,
};
use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;

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

/// The struct literal `$T { .. }` with the [`Common`] fields taken from
/// `$c` (`ClientPut` and `PutDirOptions` keep them as their own fields).
macro_rules! with_common {
    ($c:ident, $T:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
        $T {
            verbosity: $c.verbosity,
            max_retries: $c.max_retries,
            priority_class: $c.priority_class,
            get_chk_only: $c.get_chk_only,
            dont_compress: $c.dont_compress,
            codecs: $c.codecs,
            client_token: $c.client_token,
            early_encode: $c.early_encode,
            real_time: $c.real_time,
            local_request_only: $c.local_request_only,
            $($field $(: $value)?),*
        }
    };
}

pub(super) fn parse_put(f: &Fields, attached: u64) -> Result<ClientPut, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let id = Some(identifier.as_str());
    let binary_blob = f.get_bool("BinaryBlob", false);
    let uri = if binary_blob {
        f.get("URI").unwrap_or("CHK@").to_string()
    } else {
        required(f, "URI", id, global)?
    };
    let upload_from = upload_from(f, &str::to_string, None, (id, global), || {
        direct_length(f, attached, id, global)
    })?;
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
    let c = Common::parse(f, id, global)?;
    Ok(with_common!(
        c,
        ClientPut {
            persistence,
            target_filename,
            upload_from,
            binary_blob,
            content_type: opt(f, "Metadata.ContentType"),
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
        }
    ))
}

/// The fields `ClientPut` shares with the put-dir messages (each message
/// parses its `Identifier`, `URI` and `Persistence` first, then these, in
/// this order).
struct Common {
    verbosity: Verbosity,
    max_retries: i32,
    priority_class: PriorityClass,
    get_chk_only: bool,
    dont_compress: bool,
    codecs: Option<String>,
    client_token: Option<String>,
    early_encode: bool,
    real_time: bool,
    local_request_only: bool,
}

impl Common {
    fn parse(f: &Fields, id: Option<&str>, global: bool) -> Result<Common, MessageInvalid> {
        Ok(Common {
            verbosity: verbosity_field(f, id, global)?,
            max_retries: parse_i32_field(f, "MaxRetries", 0, id, global)?,
            priority_class: priority_field(f, PriorityClass::IMMEDIATE_SPLITFILE, id, global)?,
            get_chk_only: f.get_bool("GetCHKOnly", false),
            dont_compress: f.get_bool("DontCompress", false),
            codecs: opt(f, "Codecs"),
            client_token: opt(f, "ClientToken"),
            early_encode: f.get_bool("EarlyEncode", false),
            real_time: f.get_bool("RealTimeFlag", false),
            local_request_only: f.get_bool("LocalRequestOnly", false),
        })
    }
}

/// Where one upload's content comes from: `UploadFrom` and the fields it
/// needs, named by `key` (a `ClientPut`'s own fields, or a complex dir's
/// `Files.N.*`). `file`: the complex dir entry's name, for fred's wording
/// of its errors; `direct` parses a direct upload's length.
fn upload_from(
    f: &Fields,
    key: &dyn Fn(&str) -> String,
    file: Option<&str>,
    (id, global): (Option<&str>, bool),
    direct: impl FnOnce() -> Result<UploadFrom, MessageInvalid>,
) -> Result<UploadFrom, MessageInvalid> {
    let missing = |text: String| MessageInvalid::new(ProtocolErrorCode::MissingField, text);
    match f.get(&key("UploadFrom")) {
        None => direct(),
        Some(u) if u.eq_ignore_ascii_case("direct") => direct(),
        Some(u) if u.eq_ignore_ascii_case("disk") => Ok(UploadFrom::Disk {
            filename: f.get(&key("Filename")).map(str::to_string).ok_or_else(|| {
                missing(match file {
                    Some(name) => format!("Missing field: Filename on {name}"),
                    None => "Missing field Filename".to_string(),
                })
                .at(id, global)
            })?,
            file_hash: opt(f, &key("FileHash")),
        }),
        Some(u) if u.eq_ignore_ascii_case("redirect") => Ok(UploadFrom::Redirect {
            target_uri: f
                .get(&key("TargetURI"))
                .map(str::to_string)
                .ok_or_else(|| {
                    missing("TargetURI missing but UploadFrom=redirect".into()).at(id, global)
                })?,
        }),
        Some(u) => {
            let shown: String = u.chars().take(64).collect();
            let text = match file {
                Some(_) => format!("Unsupported or unknown UploadFrom: {shown}"),
                None => format!("UploadFrom invalid or unrecognized: {shown}"),
            };
            Err(MessageInvalid::new(ProtocolErrorCode::InvalidField, text).at(id, global))
        }
    }
}

pub(super) fn direct_length(
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

fn parse_dir_options(f: &Fields) -> Result<PutDirOptions, MessageInvalid> {
    let global = f.get_bool("Global", false);
    let identifier = required(f, "Identifier", None, global)?;
    let id = Some(identifier.as_str());
    let persistence = persistence_field(f, id, global)?;
    global_needs_persistence(persistence, &identifier, global)?;
    let uri = required(f, "URI", id, global)?;
    let c = Common::parse(f, id, global)?;
    Ok(with_common!(
        c,
        PutDirOptions {
            uri,
            persistence,
            default_name: opt(f, "DefaultName"),
            target_filename: opt(f, "TargetFilename"),
            identifier,
            global,
        }
    ))
}

pub(super) fn parse_complex_dir(
    f: &Fields,
    attached: u64,
) -> Result<ClientPutComplexDir, MessageInvalid> {
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
        let upload_from = upload_from(f, &key, Some(name), (id, global), || {
            dir_direct(f, &key("DataLength"), name, id, global)
        })?;
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

pub(super) fn dir_direct(
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

pub(super) fn parse_disk_dir(f: &Fields) -> Result<ClientPutDiskDir, MessageInvalid> {
    let options = parse_dir_options(f)?;
    let filename = required(f, "Filename", Some(&options.identifier), options.global)?;
    Ok(ClientPutDiskDir {
        filename,
        allow_unreadable_files: f.get_bool("AllowUnreadableFiles", false),
        include_hidden_files: f.get_bool("includeHiddenFiles", false),
        options,
    })
}

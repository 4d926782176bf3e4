//! The fetch message: `ClientGet`.

use super::common::{
    global_needs_persistence, opt, parse_i32_field, persistence_field, priority_field, required,
    size_field, verbosity_field, MessageInvalid, Persistence, PriorityClass, ReturnType, Verbosity,
};
use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;

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

pub(super) fn parse_get(f: &Fields) -> Result<ClientGet, MessageInvalid> {
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

//! The FCP 2.0 wire format: an incremental decoder and an encoder, no I/O.
//!
//! # Wire format
//!
//! ```text
//! ClientPut                <- message name line
//! URI=CHK@                 <- Key=Value lines (key trimmed, value verbatim)
//! Identifier=id1
//! DataLength=5
//! Data                     <- end marker: `Data` (payload follows) or `EndMessage`
//! hello                    <- exactly DataLength raw bytes
//! ```
//!
//! Lines end in `\n` or `\r\n`. Empty lines are skipped, so are lines that
//! start with `#` (fred's `SimpleFieldSet` treats them as comments). A line
//! without `=` ends the header: `Data` means a payload follows, anything
//! starting with `End` (`EndMessage`, `End`) ends the message; any other word
//! is a bad end marker (fred answers it with ProtocolError 3 and carries on).
//!
//! # Memory
//!
//! The decoder keeps at most one partial line (≤ [`Limits::max_line_bytes`]),
//! one message header (≤ [`Limits::max_header_bytes`]) and — only for
//! payloads up to [`Limits::inline_data_limit`] — the payload. Larger payloads
//! are handed out as [`Event::Data`] chunks as they arrive, so a 1 GiB
//! upload goes to disk with memory bounded by the size of the chunks fed in.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};

use crate::codes::ProtocolErrorCode;
use crate::fields::Fields;

/// Hard limits of the decoder. Every one is enforced with a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line (name or `Key=Value`), excluding the line ending.
    /// fred allows 4096 bytes for a field line; 64 KiB leaves room for long
    /// USK paths and for clients that send big values, and is still small.
    pub max_line_bytes: usize,
    /// Most fields in one message. A freesite with N files needs about
    /// 3–4 fields per file in ClientPutComplexDir, so 16 384 fields allow a
    /// site of ~4000 files in one message (fred has no limit at all).
    pub max_fields: usize,
    /// Most bytes in one message header (name + fields + end marker).
    pub max_header_bytes: usize,
    /// Largest payload (`DataLength`) accepted at all.
    pub max_data_length: u64,
    /// Payloads up to this size are buffered and delivered inside
    /// [`Event::Message`]; larger ones are streamed as
    /// [`Event::Header`] + [`Event::Data`]… + [`Event::DataEnd`].
    /// Set 0 to stream every payload.
    pub inline_data_limit: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_fields: 16 * 1024,
            max_header_bytes: 2 * 1024 * 1024,
            max_data_length: 1 << 40, // 1 TiB
            inline_data_limit: 1024 * 1024,
        }
    }
}

/// One FCP message: name, ordered fields, optional payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The message name, e.g. `ClientHello`.
    pub name: String,
    /// The `Key=Value` fields in wire order.
    pub fields: Fields,
    /// The payload after `Data`, if any. `None` on a streamed header.
    pub data: Option<Vec<u8>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("name", &self.name)
            .field("fields", &self.fields)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .finish()
    }
}

impl Message {
    /// A message with no fields and no payload.
    pub fn new(name: impl Into<String>) -> Self {
        Message {
            name: name.into(),
            fields: Fields::new(),
            data: None,
        }
    }

    /// A message carrying `data`; sets `DataLength` to its length.
    pub fn with_data(name: impl Into<String>, mut fields: Fields, data: Vec<u8>) -> Self {
        fields.set("DataLength", data.len().to_string());
        Message {
            name: name.into(),
            fields,
            data: Some(data),
        }
    }

    /// Builder: appends a field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push(key, value);
        self
    }

    /// The first value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key)
    }

    /// Encodes the whole message (header and payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.data.as_ref().map_or(0, Vec::len));
        encode_header_into(
            &mut out,
            &self.name,
            &self.fields,
            self.data.as_ref().map(|d| d.len() as u64),
        );
        if let Some(d) = &self.data {
            out.extend_from_slice(d);
        }
        out
    }

    /// Writes the whole message (header and payload) to `w`.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        let mut header = Vec::with_capacity(256);
        encode_header_into(
            &mut header,
            &self.name,
            &self.fields,
            self.data.as_ref().map(|d| d.len() as u64),
        );
        w.write_all(&header)?;
        if let Some(d) = &self.data {
            w.write_all(d)?;
        }
        Ok(())
    }

    /// Encodes only the header. With `Some(len)` the header has
    /// `DataLength=len` and ends in `Data`: the caller then writes exactly
    /// `len` payload bytes itself (streaming a big `AllData` from disk).
    /// With `None` it ends in `EndMessage`. `self.data` is ignored.
    pub fn encode_header(&self, data_length: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        encode_header_into(&mut out, &self.name, &self.fields, data_length);
        out
    }
}

/// Writes `name`, `fields` and the end marker into `out`.
///
/// With `data_length = Some(n)`, a `DataLength` field is written with value
/// `n` (replacing the first `DataLength` in `fields`, or appended) and the
/// header ends in `Data`; otherwise it ends in `EndMessage`.
///
/// Framing cannot be broken by field contents: CR and LF in values become
/// spaces; CR, LF and `=` in keys and names become `_`. An empty name is
/// written as `Void` (a message every node ignores).
pub fn encode_header_into(
    out: &mut Vec<u8>,
    name: &str,
    fields: &Fields,
    data_length: Option<u64>,
) {
    if name.is_empty() {
        out.extend_from_slice(b"Void");
    } else {
        push_sanitised(out, name, true);
    }
    out.push(b'\n');
    let mut wrote_length = false;
    for (k, v) in fields.iter() {
        if let (Some(n), "DataLength") = (data_length, k) {
            // The real length replaces the first DataLength; duplicates are
            // dropped so no reader can be confused.
            if !wrote_length {
                wrote_length = true;
                out.extend_from_slice(b"DataLength=");
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'\n');
            }
            continue;
        }
        push_sanitised(out, k, true);
        out.push(b'=');
        push_sanitised(out, v, false);
        out.push(b'\n');
    }
    match data_length {
        Some(n) => {
            if !wrote_length {
                out.extend_from_slice(b"DataLength=");
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'\n');
            }
            out.extend_from_slice(b"Data\n");
        }
        None => out.extend_from_slice(b"EndMessage\n"),
    }
}

fn push_sanitised(out: &mut Vec<u8>, s: &str, is_key: bool) {
    for &b in s.as_bytes() {
        let b = match b {
            b'\r' | b'\n' if is_key => b'_',
            b'=' if is_key => b'_',
            b'\r' | b'\n' => b' ',
            other => other,
        };
        out.push(b);
    }
}

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message; `data` is `Some` when it carried a payload of at
    /// most [`Limits::inline_data_limit`] bytes.
    Message(Message),
    /// The header of a message whose payload (`data_length` bytes) is too big
    /// to buffer; [`Event::Data`] chunks and one [`Event::DataEnd`] follow.
    Header {
        /// The message, with `data == None`.
        message: Message,
        /// The number of payload bytes that follow.
        data_length: u64,
    },
    /// A chunk of a streamed payload (never empty).
    Data(Bytes),
    /// The streamed payload is complete.
    DataEnd,
}

/// A decoding failure. All are fatal for the connection (the byte stream can
/// no longer be framed) except [`DecodeError::BadEndMarker`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line was longer than [`Limits::max_line_bytes`].
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A message had more than [`Limits::max_fields`] fields.
    #[error("message {name:?} has more than {limit} fields")]
    TooManyFields {
        /// The message name.
        name: String,
        /// The limit in force.
        limit: usize,
    },
    /// A message header was longer than [`Limits::max_header_bytes`].
    #[error("message header longer than {limit} bytes")]
    HeaderTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The header ended in a word that is neither `Data` nor `End…`.
    /// Not fatal: the message is dropped and decoding continues.
    #[error("invalid end marker {marker:?} on message {name:?}")]
    BadEndMarker {
        /// The message name.
        name: String,
        /// The offending line.
        marker: String,
        /// The message's `Identifier`, if it had one.
        identifier: Option<String>,
    },
    /// A message ended in `Data` but its payload length is unknown.
    #[error("message {name:?} ends in Data but has no DataLength")]
    MissingDataLength {
        /// The message name.
        name: String,
    },
    /// `DataLength` (or a per-file `DataLength`) is not a decimal number.
    #[error("DataLength {value:?} is not a number")]
    BadDataLength {
        /// The value sent.
        value: String,
    },
    /// `DataLength` is larger than [`Limits::max_data_length`].
    #[error("DataLength {length} exceeds the limit of {limit} bytes")]
    DataTooLong {
        /// The length announced (saturated at `u64::MAX`).
        length: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The input ended in the middle of a message (see [`Decoder::finish`]).
    #[error("connection closed in the middle of a message")]
    Truncated,
}

impl DecodeError {
    /// Whether the connection must be closed (the stream cannot be re-framed).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::BadEndMarker { .. })
    }

    /// The ProtocolError code to report to the client.
    pub fn protocol_code(&self) -> ProtocolErrorCode {
        match self {
            DecodeError::BadDataLength { .. } => ProtocolErrorCode::ErrorParsingNumber,
            DecodeError::MissingDataLength { .. } => ProtocolErrorCode::MissingField,
            DecodeError::DataTooLong { .. } => ProtocolErrorCode::InvalidField,
            _ => ProtocolErrorCode::MessageParseError,
        }
    }

    /// The `Identifier` of the message, when known.
    pub fn identifier(&self) -> Option<&str> {
        match self {
            DecodeError::BadEndMarker { identifier, .. } => identifier.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for a message name line.
    Name,
    /// Reading `Key=Value` lines.
    Fields {
        name: String,
        fields: Fields,
        header_bytes: usize,
    },
    /// Buffering a small payload.
    Inline { message: Message, len: usize },
    /// Handing out a big payload.
    Streaming { remaining: u64 },
    /// A fatal error happened; it is repeated forever.
    Failed(DecodeError),
}

/// Incremental FCP decoder. Feed it bytes with [`Decoder::feed`], then call
/// [`Decoder::next_event`] until it returns `Ok(None)`.
///
/// It never panics on any input; every limit violation is a typed
/// [`DecodeError`]. After a fatal error it returns that error forever.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buf: BytesMut,
    /// Bytes of `buf` already scanned for `\n` without finding one.
    scanned: usize,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            buf: BytesMut::new(),
            scanned: 0,
            state: State::Name,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends received bytes. Call [`Decoder::next_event`] until it returns
    /// `Ok(None)` before feeding more, so memory stays bounded.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Failed(_)) {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the decoder is between messages with nothing buffered: the
    /// peer may close the connection here without losing anything.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Name) && self.buf.iter().all(|b| b.is_ascii_whitespace())
    }

    /// Call at end of input: `Err(Truncated)` if a message was cut off.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ if self.is_idle() => Ok(()),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// The next complete event, `Ok(None)` if more input is needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        match self.step() {
            Err(e) if e.is_fatal() => {
                self.buf = BytesMut::new();
                self.state = State::Failed(e.clone());
                Err(e)
            }
            other => other,
        }
    }

    fn step(&mut self) -> Result<Option<Event>, DecodeError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Streaming { remaining } => {
                    if *remaining == 0 {
                        self.state = State::Name;
                        return Ok(Some(Event::DataEnd));
                    }
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (*remaining).min(self.buf.len() as u64) as usize;
                    *remaining -= take as u64;
                    return Ok(Some(Event::Data(self.buf.split_to(take).freeze())));
                }
                State::Inline { len, .. } => {
                    if self.buf.len() < *len {
                        return Ok(None);
                    }
                    let len = *len;
                    let data = self.buf.split_to(len).to_vec();
                    let State::Inline { mut message, .. } =
                        std::mem::replace(&mut self.state, State::Name)
                    else {
                        unreachable!("state checked above")
                    };
                    message.data = Some(data);
                    return Ok(Some(Event::Message(message)));
                }
                State::Name => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    let line = line.trim_end_matches('\r');
                    if line.trim().is_empty() {
                        continue;
                    }
                    let header_bytes = line.len() + 1;
                    self.state = State::Fields {
                        name: line.to_string(),
                        fields: Fields::new(),
                        header_bytes,
                    };
                }
                State::Fields { .. } => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if let Some(ev) = self.field_line(&line)? {
                        return Ok(Some(ev));
                    }
                }
            }
        }
    }

    /// Handles one line in the Fields state; returns an event when the
    /// header is complete.
    fn field_line(&mut self, line: &str) -> Result<Option<Event>, DecodeError> {
        let limits = self.limits;
        let State::Fields {
            name,
            fields,
            header_bytes,
        } = &mut self.state
        else {
            return Ok(None);
        };
        *header_bytes += line.len() + 1;
        if *header_bytes > limits.max_header_bytes {
            return Err(DecodeError::HeaderTooLarge {
                limit: limits.max_header_bytes,
            });
        }
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        if let Some(eq) = line.find('=') {
            if fields.len() >= limits.max_fields {
                return Err(DecodeError::TooManyFields {
                    name: name.clone(),
                    limit: limits.max_fields,
                });
            }
            fields.push(line[..eq].trim(), &line[eq + 1..]);
            return Ok(None);
        }
        // End marker.
        let State::Fields { name, fields, .. } = std::mem::replace(&mut self.state, State::Name)
        else {
            return Ok(None);
        };
        let message = Message {
            name,
            fields,
            data: None,
        };
        if line == "Data" {
            let len = payload_length(&message.name, &message.fields, limits.max_fields)?;
            if len > limits.max_data_length {
                return Err(DecodeError::DataTooLong {
                    length: len,
                    limit: limits.max_data_length,
                });
            }
            if len <= limits.inline_data_limit && len <= usize::MAX as u64 {
                self.state = State::Inline {
                    message,
                    len: len as usize,
                };
                return Ok(None);
            }
            self.state = State::Streaming { remaining: len };
            return Ok(Some(Event::Header {
                message,
                data_length: len,
            }));
        }
        if line.starts_with("End") {
            return Ok(Some(Event::Message(message)));
        }
        Err(DecodeError::BadEndMarker {
            identifier: message.fields.get("Identifier").map(str::to_string),
            name: message.name,
            marker: line.chars().take(128).collect(),
        })
    }

    /// Takes one line (without its `\n`; a trailing `\r` is removed by the
    /// caller or here), enforcing the line limit.
    fn take_line(&mut self) -> Result<Option<String>, DecodeError> {
        let max = self.limits.max_line_bytes;
        let start = self.scanned.min(self.buf.len());
        match self.buf[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = start + i;
                let mut content = end;
                if content > 0 && self.buf[content - 1] == b'\r' {
                    content -= 1;
                }
                if content > max {
                    return Err(DecodeError::LineTooLong { limit: max });
                }
                let line = self.buf.split_to(end + 1);
                self.scanned = 0;
                Ok(Some(String::from_utf8_lossy(&line[..content]).into_owned()))
            }
            None => {
                self.scanned = self.buf.len();
                // +1: a trailing '\r' whose '\n' has not arrived yet.
                if self.buf.len() > max + 1 {
                    return Err(DecodeError::LineTooLong { limit: max });
                }
                Ok(None)
            }
        }
    }
}

/// How many payload bytes follow a message that ended in `Data`.
///
/// `DataLength` when present. Otherwise, as fred does, the sum of the
/// `Files.N.DataLength` of the direct files of a `ClientPutComplexDir`, or
/// `InitialMetadata.DataLength` of a `ClientGet`.
pub fn payload_length(name: &str, fields: &Fields, max_files: usize) -> Result<u64, DecodeError> {
    if let Some(v) = fields.get("DataLength") {
        return parse_length(v);
    }
    if name == "ClientPutComplexDir" {
        let mut total: u64 = 0;
        for i in 0..max_files {
            let prefix = format!("Files.{i}.");
            if fields.get(&format!("{prefix}Name")).is_none() {
                break;
            }
            let direct = fields
                .get(&format!("{prefix}UploadFrom"))
                .is_none_or(|u| u.eq_ignore_ascii_case("direct"));
            if direct {
                let len = match fields.get(&format!("{prefix}DataLength")) {
                    Some(v) => parse_length(v)?,
                    None => {
                        return Err(DecodeError::MissingDataLength {
                            name: name.to_string(),
                        })
                    }
                };
                total = total.saturating_add(len);
            }
        }
        return Ok(total);
    }
    if let Some(v) = fields.get("InitialMetadata.DataLength") {
        return parse_length(v);
    }
    Err(DecodeError::MissingDataLength {
        name: name.to_string(),
    })
}

fn parse_length(v: &str) -> Result<u64, DecodeError> {
    let bad = || DecodeError::BadDataLength {
        value: v.chars().take(64).collect(),
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // All digits: the only failure left is overflow, reported as too long.
    Ok(v.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn decode_all(limits: Limits, input: &[u8]) -> Vec<Result<Event, DecodeError>> {
        let mut d = Decoder::new(limits);
        d.feed(input);
        let mut out = vec![];
        loop {
            match d.next_event() {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err(e));
                    if fatal {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn simple_message_crlf() {
        let ev = decode_all(
            Limits::default(),
            b"\r\nClientHello\r\nName=x\r\nExpectedVersion=2.0\r\nEndMessage\r\n",
        );
        let Ok(Event::Message(m)) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(m.name, "ClientHello");
        assert_eq!(m.get("Name"), Some("x"));
        assert_eq!(m.get("ExpectedVersion"), Some("2.0"));
        assert_eq!(m.data, None);
    }

    #[test]
    fn inline_and_streamed_data() {
        let input = b"ClientPut\nDataLength=5\nData\nhelloVoid\nEndMessage\n";
        let ev = decode_all(Limits::default(), input);
        assert!(
            matches!(&ev[0], Ok(Event::Message(m)) if m.data.as_deref() == Some(&b"hello"[..]))
        );
        assert!(matches!(&ev[1], Ok(Event::Message(m)) if m.name == "Void"));
        let limits = Limits {
            inline_data_limit: 2,
            ..Limits::default()
        };
        let ev = decode_all(limits, input);
        assert!(matches!(&ev[0], Ok(Event::Header { data_length: 5, .. })));
        assert_eq!(ev[1], Ok(Event::Data(Bytes::from_static(b"hello"))));
        assert_eq!(ev[2], Ok(Event::DataEnd));
        assert!(matches!(&ev[3], Ok(Event::Message(m)) if m.name == "Void"));
    }

    #[test]
    fn encoder_fixes_data_length_and_sanitises() {
        let mut f = Fields::new();
        f.push("DataLength", "999");
        f.push("Bad\nKey", "evil\nEndMessage");
        let m = Message {
            name: "AllData".into(),
            fields: f,
            data: Some(b"ab".to_vec()),
        };
        assert_eq!(
            m.encode(),
            b"AllData\nDataLength=2\nBad_Key=evil EndMessage\nData\nab".to_vec()
        );
    }

    #[test]
    fn bad_end_marker_is_not_fatal() {
        let ev = decode_all(
            Limits::default(),
            b"GetNode\nIdentifier=a\nBogus\nGetNode\nEndMessage\n",
        );
        assert!(
            matches!(&ev[0], Err(DecodeError::BadEndMarker { identifier: Some(i), .. }) if i == "a")
        );
        assert!(matches!(&ev[1], Ok(Event::Message(_))));
    }

    #[test]
    fn complex_dir_length_is_summed() {
        let input = b"ClientPutComplexDir\nFiles.0.Name=a\nFiles.0.DataLength=2\nFiles.1.Name=b\nFiles.1.UploadFrom=disk\nFiles.2.Name=c\nFiles.2.UploadFrom=direct\nFiles.2.DataLength=3\nData\nxxyyy";
        let ev = decode_all(Limits::default(), input);
        assert!(
            matches!(&ev[0], Ok(Event::Message(m)) if m.data.as_deref() == Some(&b"xxyyy"[..]))
        );
    }
}

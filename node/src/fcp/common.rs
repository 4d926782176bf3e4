//! What the FCP server's modules share: the connection queue's message
//! type, the limits, and small helpers.

use crate::sealed::FileSeal;
use crate::util::dirfd::DirHandle;
use lichen_fcp::codec::Message;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages queued for one connection before it counts as not reading.
pub(super) const QUEUE: usize = 1024;
/// A write that makes no progress for this long closes the connection.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A message that stalls half-way for this long closes the connection.
pub(super) const MID_MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Payloads up to this size are buffered in memory; larger ones stream to disk.
pub(super) const INLINE_LIMIT: u64 = 256 * 1024;
/// Chunks (about a segment, 4 MiB, each) of a streamed `AllData` queued
/// between the fetch and the connection's writer.
pub(super) const STREAM_CHUNKS: usize = 4;
/// Largest `DataChunk` of a `ReturnType=chunked` get.
pub(super) const DATA_CHUNK_MAX: usize = 1 << 20;
/// `DataChunk`s of one get queued for its connection and not yet written:
/// a client that reads slowly slows the fetch, with at most 4 MiB waiting.
pub(super) const DATA_CHUNKS_QUEUED: usize = 4;

/// How a result file to send is sealed.
#[derive(Debug)]
pub(crate) enum ReadSeal {
    /// Not sealed.
    Plain,
    /// Under this seal, known in memory.
    Known(FileSeal),
    /// Under the vault, its key in the file's header.
    FromHeader(crate::vault::Vault),
}

/// Something to send on a connection.
#[derive(Debug)]
pub(crate) enum Out {
    /// Bytes of a complete message.
    Msg(Vec<u8>),
    /// A message header followed by the contents of a file.
    File {
        /// Header bytes (ending in `Data\n`).
        header: Vec<u8>,
        /// File whose bytes follow.
        path: PathBuf,
        /// Bytes to send.
        len: u64,
        /// Delete the file afterwards.
        remove: bool,
        /// How the file is sealed ([`crate::sealed`]).
        seal: ReadSeal,
    },
    /// A `DataChunk` message; `_room` is the get's queue place, given back
    /// once the chunk is written (or dropped with the connection).
    Chunk {
        /// The whole message, header and data.
        bytes: Vec<u8>,
        /// Held until written.
        _room: tokio::sync::OwnedSemaphorePermit,
    },
    /// A message header followed by `len` bytes that arrive on `data` as a
    /// fetch decodes them. If `data` closes early the connection is
    /// closed: the message cannot be finished.
    Stream {
        /// Header bytes (ending in `Data\n`).
        header: Vec<u8>,
        /// Bytes announced in the header.
        len: u64,
        /// The bytes, in order.
        data: mpsc::Receiver<Vec<u8>>,
    },
}

/// The `DataLength` of a request's message header.
pub(super) fn data_len(header: &Message) -> Option<u64> {
    header.get("DataLength").and_then(|v| v.trim().parse().ok())
}

/// A mutex's guard, poisoned or not.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The directory handles of one connection's TestDDAs (see `dda`).
#[derive(Debug, Default)]
pub(super) struct DdaDirs {
    /// The directory of each pending challenge, by the name the client
    /// gave (as the session keeps the challenge).
    pub(super) pending: std::collections::HashMap<String, Arc<DirHandle>>,
    /// Directories a TestDDA allowed something in; what each allows is
    /// `Session::dda_access` of its path.
    pub(super) granted: Vec<Arc<DirHandle>>,
}

//! Starting an FCP request on the connection that asked: disk access
//! checks, then the request joins the queue and its job starts.

use super::common::lock;
use super::conn::{Conn, Payload};
use super::run::start_request;
use crate::jobs::disk::{self, Denied, DiskAccess};
use crate::requests::{Request, Scope, State};
use crate::util::dirfd::DiskFile;
use lichen_crypto::FreenetUri;
use lichen_fcp::client::{ClientMessage, ClientPut, Persistence, UploadFrom};
use lichen_fcp::codec::Message;
use lichen_fcp::dda::file_hash_salt;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::ProtocolErrorCode;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

impl Conn {
    /// Start a request: disk access checks, the URI, the queue entry.
    pub(super) async fn start(
        &self,
        msg: ClientMessage,
        header: Option<Message>,
        payload: Option<Payload>,
    ) {
        let (upload, stream) = match payload {
            Some(Payload::Spooled(p)) => (Some(p), None),
            Some(Payload::Streaming(s)) => (None, Some(s)),
            None => (None, None),
        };
        let Some((ident, global)) = msg.request_key().map(|(i, g)| (i.to_string(), g)) else {
            return;
        };
        let persistence = match &msg {
            ClientMessage::ClientPut(p) => p.persistence,
            ClientMessage::ClientGet(g) => g.persistence,
            ClientMessage::ClientPutComplexDir(d) => d.options.persistence,
            ClientMessage::ClientPutDiskDir(d) => d.options.persistence,
            _ => Persistence::Connection,
        };
        let fail = |code: ProtocolErrorCode, extra: &str| {
            lock(&self.session).release(&ident, global);
            if let Some(u) = &upload {
                let _ = std::fs::remove_file(u);
            }
            self.protocol_error(code, extra, Some(&ident), global);
        };
        // Disk access checks happen here, on the connection that asked;
        // what they allow is opened now and used by handle from then on.
        let disk = match self.disk_access(&msg).await {
            Ok(d) => d,
            Err((code, extra)) => return fail(code, &extra),
        };
        let uri_field = match &msg {
            ClientMessage::ClientPut(p) => &p.uri,
            ClientMessage::ClientGet(g) => &g.uri,
            ClientMessage::ClientPutComplexDir(d) => &d.options.uri,
            ClientMessage::ClientPutDiskDir(d) => &d.options.uri,
            _ => return,
        };
        if let Err(e) = FreenetUri::parse(uri_field) {
            return fail(
                ProtocolErrorCode::FreenetUriParseError,
                &format!("Error parsing freenet URI: {e}"),
            );
        }
        let scope = self.scope(persistence, global);
        let mut header = header.unwrap_or_else(|| Message::new("Unknown"));
        if scope == Scope::Global {
            header.fields.set("X-Lichen-Origin", self.id.to_string());
        }
        // Forever requests keep their upload in the request directory, so
        // that it survives the restart that empties tmp/.
        let upload = match (upload, persistence) {
            (Some(u), Persistence::Forever) => {
                let dest = self
                    .node
                    .requests
                    .dir()
                    .join(format!("upload-{:016x}", rand::random::<u64>()));
                match tokio::fs::rename(&u, &dest).await {
                    Ok(()) => Some(dest),
                    Err(_) => Some(u),
                }
            }
            (u, _) => u,
        };
        let req = Arc::new(Request {
            scope: scope.clone(),
            identifier: ident.clone(),
            header,
            persistence,
            upload,
            stream,
            started_ms: self.hub.now_ms(),
            cancel: CancellationToken::new(),
            state: Mutex::new(State::default()),
        });
        if !self.node.requests.insert(req.clone()) {
            lock(&self.session).release(&ident, global);
            if let Some(u) = &req.upload {
                let _ = std::fs::remove_file(u);
            }
            self.send(
                &rep::IdentifierCollision {
                    identifier: ident,
                    global,
                }
                .to_message(),
            );
            return;
        }
        start_request(
            &self.node,
            &self.hub,
            req,
            msg,
            Some(disk),
            Some(self.session.clone()),
        );
    }

    /// Opens what `msg` reads or writes on disk, if this connection may
    /// (see `jobs::disk`); the error to answer if not.
    async fn disk_access(&self, msg: &ClientMessage) -> Result<DiskAccess, Denied> {
        let lookup = |dir: &Path, write: bool| self.dda_lookup(dir, write);
        // A put from disk outside the approved directories may still prove
        // with FileHash that the client can read the file: it is opened by
        // its own directory, and the hash checked on the open file.
        let file_hash = match msg {
            ClientMessage::ClientPut(ClientPut {
                upload_from:
                    UploadFrom::Disk {
                        file_hash: Some(h), ..
                    },
                identifier,
                ..
            }) => Some((h.clone(), identifier.clone())),
            _ => None,
        };
        let unchecked = |dir: &Path, write: bool| match file_hash {
            Some(_) => disk::reopen(dir, write),
            None => Ok(None),
        };
        let access = disk::prepare(msg, &lookup, &unchecked)?;
        if let (true, Some(file), Some((want, identifier))) =
            (access.put_needs_hash, &access.put, file_hash)
        {
            let salt = file_hash_salt(lock(&self.session).connection_identifier(), &identifier);
            if !file_hash_matches(file.clone(), &salt, &want).await {
                return Err(disk::denied(""));
            }
        }
        Ok(access)
    }
}

/// Whether SHA-256(salt ‖ file) is the client's `FileHash`, read from
/// the open file.
async fn file_hash_matches(file: DiskFile, salt: &str, want: &str) -> bool {
    let Some(want) = lichen_fcp::dda::decode_file_hash(want) else {
        return false;
    };
    let salt = salt.to_string();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::io::Read;
        let mut h = sha2::Sha256::new();
        h.update(salt.as_bytes());
        let Ok(mut f) = file.reader() else {
            return false;
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        <[u8; 32]>::from(h.finalize()) == want
    })
    .await
    .unwrap_or(false)
}

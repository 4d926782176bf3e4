//! Starting an FCP request on the connection that asked: disk access
//! checks, then the request joins the queue and its job starts.

use super::common::lock;
use super::conn::{Conn, Payload};
use super::run::start_request;
use crate::requests::{Request, Scope, State};
use lichen_crypto::FreenetUri;
use lichen_fcp::client::{
    ClientGet, ClientMessage, ClientPut, Persistence, ReturnType, UploadFrom,
};
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
        // Disk access checks happen here, on the connection that asked.
        if let Err((code, extra)) = self.disk_access(&msg).await {
            return fail(code, extra);
        }
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
        start_request(&self.node, &self.hub, req, msg, Some(self.session.clone()));
    }

    /// Whether this connection may read (or, for a get to disk, write)
    /// the files `msg` names; the error to answer if not.
    async fn disk_access(
        &self,
        msg: &ClientMessage,
    ) -> Result<(), (ProtocolErrorCode, &'static str)> {
        match &msg {
            ClientMessage::ClientPut(ClientPut {
                upload_from:
                    UploadFrom::Disk {
                        filename,
                        file_hash,
                    },
                identifier,
                ..
            }) => {
                let Ok(path) = tokio::fs::canonicalize(filename).await else {
                    return Err((
                        ProtocolErrorCode::FileNotFound,
                        "File not found, not a file or not readable",
                    ));
                };
                if !path.is_file() {
                    return Err((ProtocolErrorCode::NotAFileError, "Filepath is not a file"));
                }
                let allowed = self.disk_allowed(&path, false)
                    || match file_hash {
                        Some(h) => {
                            let salt = file_hash_salt(
                                lock(&self.session).connection_identifier(),
                                identifier,
                            );
                            file_hash_matches(&path, &salt, h).await
                        }
                        None => false,
                    };
                if !allowed {
                    return Err((ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?"));
                }
            }
            ClientMessage::ClientGet(ClientGet {
                return_type: ReturnType::Disk,
                filename,
                ..
            }) => {
                let Some(f) = filename else {
                    return Err((ProtocolErrorCode::MissingField, "Missing field Filename"));
                };
                let p = Path::new(f);
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                let (Ok(dir), Some(name)) = (tokio::fs::canonicalize(&parent).await, p.file_name())
                else {
                    return Err((
                        ProtocolErrorCode::CouldNotCreateFile,
                        "Could not create file",
                    ));
                };
                if !self.disk_allowed(&dir.join(name), true) {
                    return Err((ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?"));
                }
                if dir.join(name).exists() {
                    return Err((
                        ProtocolErrorCode::DiskTargetExists,
                        "Disk target exists, refusing to overwrite for security reasons",
                    ));
                }
            }
            ClientMessage::ClientPutDiskDir(d) => {
                let Ok(path) = tokio::fs::canonicalize(&d.filename).await else {
                    return Err((
                        ProtocolErrorCode::FileNotFound,
                        "File not found, not a file or not readable",
                    ));
                };
                if !path.is_dir() || !self.disk_allowed(&path, false) {
                    return Err((
                        ProtocolErrorCode::DirectDiskAccessDenied,
                        "Direct Disk Access operation denied: did you use TestDDA?",
                    ));
                }
            }
            ClientMessage::ClientPutComplexDir(d) => {
                for f in &d.files {
                    if let UploadFrom::Disk { filename, .. } = &f.upload_from {
                        let ok = match tokio::fs::canonicalize(filename).await {
                            Ok(p) => p.is_file() && self.disk_allowed(&p, false),
                            Err(_) => false,
                        };
                        if !ok {
                            return Err((ProtocolErrorCode::DirectDiskAccessDenied, "Direct Disk Access operation denied for a file of the site: did you use TestDDA?"));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn file_hash_matches(path: &Path, salt: &str, want: &str) -> bool {
    let Some(want) = lichen_fcp::dda::decode_file_hash(want) else {
        return false;
    };
    let path = path.to_path_buf();
    let salt = salt.to_string();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        use std::io::Read;
        let mut h = sha2::Sha256::new();
        h.update(salt.as_bytes());
        let Ok(mut f) = std::fs::File::open(&path) else {
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

//! One FCP connection: its reader loop (decoder, session, payload
//! spooling or streaming) and the connection's own state.

use super::access;
use super::common::{lock, Out, ReadSeal, INLINE_LIMIT, MID_MESSAGE_TIMEOUT, QUEUE};
use super::hub::Hub;
use super::messages::all_data_header;
use super::{output, subscribe};
use crate::node::Node;
use crate::requests::{Request, Scope};
use crate::util::blocking::UploadStream;
use lichen_fcp::client::{ClientMessage, ClientPut, Persistence, UploadFrom};
use lichen_fcp::codec::Message;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::session::Action;
use lichen_fcp::{Decoder, Event, Limits, ProtocolErrorCode, Session};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(super) struct Conn {
    pub(super) node: Arc<Node>,
    pub(super) hub: Arc<Hub>,
    pub(super) id: u64,
    pub(super) session: Arc<Mutex<Session>>,
    /// Whether the client's address has full access (`[fcp]
    /// full_access_hosts`); without it, `access` refuses some messages.
    full_access: bool,
    /// The directory handles of this connection's TestDDAs.
    pub(super) dda: Mutex<super::common::DdaDirs>,
}

#[allow(clippy::large_enum_variant)] // one per connection
enum Upload {
    Idle,
    Spool {
        msg: Box<ClientMessage>,
        header: Message,
        path: PathBuf,
        file: BufWriter<tokio::fs::File>,
        /// The spool is sealed under the vault (`crate::vault`).
        seal: crate::sealed::FileSeal,
        /// Data bytes written so far.
        written: u64,
    },
    /// A direct ClientPut whose insert already runs, reading the payload
    /// from this channel as it arrives.
    Stream(mpsc::Sender<tokio_util::bytes::Bytes>),
    Discard,
}

/// A request's payload: spooled to a file, or streamed to the request.
pub(super) enum Payload {
    Spooled(PathBuf),
    Streaming(UploadStream),
}

/// Chunks of a streamed upload queued for the insert.
const UPLOAD_CHUNKS: usize = 16;

pub(super) async fn connection(
    node: Arc<Node>,
    hub: Arc<Hub>,
    stream: TcpStream,
    full_access: bool,
) {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let close = CancellationToken::new();
    let id = hub.register(tx, close.clone());
    let writer = tokio::spawn(output::writer(wr, rx, close.clone()));
    let mut rnd = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
    let hello = rep::NodeHello::lichen(
        rep::connection_identifier(rnd),
        vec![("ZSTD".to_string(), 0)],
    );
    let conn = Conn {
        node: node.clone(),
        hub: hub.clone(),
        id,
        session: Arc::new(Mutex::new(Session::new(hello))),
        full_access,
        dda: Mutex::default(),
    };
    let mut dec = Decoder::new(Limits {
        max_data_length: node.config.fcp.max_upload_bytes,
        inline_data_limit: INLINE_LIMIT,
        ..Limits::default()
    });
    let mut upload = Upload::Idle;
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let idle = dec.is_idle() && matches!(upload, Upload::Idle);
        let read = async {
            if idle {
                rd.read(&mut buf).await
            } else {
                match tokio::time::timeout(MID_MESSAGE_TIMEOUT, rd.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::other("stalled mid-message")),
                }
            }
        };
        let n = tokio::select! {
            () = close.cancelled() => break,
            () = node.shutdown.cancelled() => break,
            r = read => match r { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        dec.feed(&buf[..n]);
        loop {
            match dec.next_event() {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    if !conn.on_event(ev, &mut upload).await {
                        break 'outer;
                    }
                }
                Err(e) => {
                    let action = lock(&conn.session).handle_decode_error(&e);
                    if !conn.act(action).await {
                        break 'outer;
                    }
                    if e.is_fatal() {
                        break 'outer;
                    }
                }
            }
        }
    }
    if let Upload::Spool { path, .. } = upload {
        let _ = tokio::fs::remove_file(path).await;
    }
    hub.unregister(id);
    subscribe::connection_closed(id);
    // Connection-scoped requests die with their connection.
    for req in node.requests.list(&[Scope::Connection(id)]) {
        node.requests.remove(&req.scope, &req.identifier);
    }
    close.cancel();
    let _ = writer.await;
}

impl Conn {
    pub(super) fn send(&self, msg: &Message) {
        self.hub.send_to(self.id, Out::Msg(msg.encode()));
    }

    pub(super) fn protocol_error(
        &self,
        code: ProtocolErrorCode,
        extra: &str,
        ident: Option<&str>,
        global: bool,
    ) {
        let mut e = rep::ProtocolError::new(code, Some(extra.to_string()));
        e.identifier = ident.map(str::to_string);
        e.global = global;
        self.send(&e.to_message());
    }

    /// Returns false when the connection must close.
    pub(super) async fn act(&self, action: Action) -> bool {
        match action {
            Action::Reply(m) => {
                self.send(&m);
                self.update_hub();
                true
            }
            Action::Reject { reply, close } => {
                self.send(&reply);
                !close
            }
            Action::Ignore => true,
            Action::Execute(msg) => self.execute(msg, None, None).await,
        }
    }

    async fn on_event(&self, ev: Event, upload: &mut Upload) -> bool {
        match ev {
            Event::Message(m) => self.on_message(m).await,
            Event::Header {
                message,
                data_length,
            } => self.on_header(message, data_length, upload).await,
            Event::Data(chunk) => self.on_data(chunk, upload).await,
            Event::DataEnd => self.on_data_end(upload).await,
        }
    }

    /// Whether `m` was refused for want of full access (the refusal is
    /// sent; nothing else happens). Before ClientHello the session's own
    /// rule (hello first) applies.
    fn refused(&self, m: &Message) -> bool {
        if self.full_access || !lock(&self.session).hello_received() {
            return false;
        }
        let Some(why) = access::needs_full_access(m) else {
            return false;
        };
        tracing::debug!("refused {} from a client without full access", m.name);
        self.send(&access::refusal(m, why));
        true
    }

    /// A whole message (its payload, if any, in memory).
    async fn on_message(&self, m: Message) -> bool {
        if self.refused(&m) {
            return true;
        }
        // Peer management is answered here (the typed parser in
        // lichen-fcp does not know these messages).
        if m.data.is_none()
            && matches!(
                m.name.as_str(),
                "AddPeer" | "CreateInvitation" | "RemovePeer"
            )
            && lock(&self.session).hello_received()
        {
            self.peer_message(&m).await;
            return true;
        }
        // So are the settings (`GetConfig` / `ModifyConfig`).
        if m.data.is_none()
            && matches!(m.name.as_str(), "GetConfig" | "ModifyConfig")
            && lock(&self.session).hello_received()
        {
            let reply = if m.name == "GetConfig" {
                super::config::get_config(&self.node, &m.fields)
            } else {
                super::config::modify_config(&self.node, &m.fields).await
            };
            self.send(&reply);
            return true;
        }
        let action = lock(&self.session).handle(&m);
        match (action, m.data) {
            (Action::Execute(msg), Some(data)) => {
                let path = self.node.tmp_path("upload");
                if let Err(e) = self.node.vault.write_file(&path, &data).await {
                    tracing::warn!("cannot spool an upload: {e}");
                    self.spool_failed(&msg, "cannot spool upload");
                    return true;
                }
                let header = Message {
                    name: m.name,
                    fields: m.fields,
                    data: None,
                };
                self.execute(msg, Some(header), Some(Payload::Spooled(path)))
                    .await
            }
            (Action::Execute(msg), None) => {
                let header = Message {
                    name: m.name,
                    fields: m.fields,
                    data: None,
                };
                self.execute(msg, Some(header), None).await
            }
            (a, _) => self.act(a).await,
        }
    }

    /// The header of a message whose payload follows.
    async fn on_header(&self, message: Message, data_length: u64, upload: &mut Upload) -> bool {
        if self.refused(&message) {
            // Its payload is read and dropped.
            *upload = Upload::Discard;
            return true;
        }
        let action = lock(&self.session).handle_header(&message, data_length);
        match action {
            // A direct put that lives only as long as this
            // connection: insert while the data arrives.
            Action::Execute(
                msg @ ClientMessage::ClientPut(ClientPut {
                    upload_from: UploadFrom::Direct { .. },
                    persistence: Persistence::Connection,
                    ..
                }),
            ) => {
                let (tx, rx) = mpsc::channel(UPLOAD_CHUNKS);
                *upload = Upload::Stream(tx);
                let stream = UploadStream::new(rx, data_length);
                self.execute(msg, Some(message), Some(Payload::Streaming(stream)))
                    .await
            }
            Action::Execute(msg) => {
                let path = self.node.tmp_path("upload");
                let seal = self.node.vault.new_file();
                let created = match tokio::fs::File::create(&path).await {
                    Ok(mut f) => f.write_all(&seal.header).await.map(|()| f),
                    Err(e) => Err(e),
                };
                match created {
                    Ok(f) => {
                        *upload = Upload::Spool {
                            msg: Box::new(msg),
                            header: message,
                            path,
                            file: BufWriter::with_capacity(1 << 20, f),
                            seal,
                            written: 0,
                        };
                    }
                    Err(e) => {
                        tracing::warn!("cannot spool an upload: {e}");
                        self.spool_failed(&msg, "cannot spool upload");
                        *upload = Upload::Discard;
                    }
                }
                true
            }
            other => {
                *upload = Upload::Discard;
                self.act(other).await
            }
        }
    }

    /// A piece of a payload.
    async fn on_data(&self, chunk: tokio_util::bytes::Bytes, upload: &mut Upload) -> bool {
        if let Upload::Stream(tx) = upload {
            // The insert gone (failed, or refused at start): the
            // rest of the payload is read and dropped.
            if tx.send(chunk).await.is_err() {
                *upload = Upload::Discard;
            }
            return true;
        }
        if let Upload::Spool {
            file,
            seal,
            written,
            ..
        } = upload
        {
            let mut chunk = chunk.to_vec();
            seal.key.seal_in_place(*written, &mut chunk);
            *written += chunk.len() as u64;
            if let Err(e) = file.write_all(&chunk).await {
                tracing::warn!("cannot spool an upload: {e}");
                if let Upload::Spool { msg, path, .. } = std::mem::replace(upload, Upload::Discard)
                {
                    let _ = tokio::fs::remove_file(path).await;
                    self.spool_failed(&msg, "cannot spool upload (disk full?)");
                }
            }
        }
        true
    }

    /// An upload could not be spooled: its identifier is free again, and
    /// the client is told.
    fn spool_failed(&self, msg: &ClientMessage, extra: &str) {
        self.release_ident(msg);
        self.protocol_error(ProtocolErrorCode::InternalError, extra, None, false);
    }

    /// The end of a payload: a spooled one's request starts.
    async fn on_data_end(&self, upload: &mut Upload) -> bool {
        match std::mem::replace(upload, Upload::Idle) {
            Upload::Spool {
                msg,
                header,
                path,
                mut file,
                ..
            } => {
                if file.flush().await.is_err() {
                    let _ = tokio::fs::remove_file(&path).await;
                    self.spool_failed(&msg, "cannot spool upload");
                    return true;
                }
                drop(file);
                self.execute(*msg, Some(header), Some(Payload::Spooled(path)))
                    .await
            }
            _ => true,
        }
    }

    pub(super) fn release_ident(&self, msg: &ClientMessage) {
        if let Some((id, g)) = msg.request_key() {
            lock(&self.session).release(id, g);
        }
    }

    pub(super) fn scope(&self, persistence: Persistence, global: bool) -> Scope {
        if global {
            Scope::Global
        } else if persistence == Persistence::Connection {
            Scope::Connection(self.id)
        } else {
            Scope::Client(self.queue_name(lock(&self.session).client_name()))
        }
    }

    /// The name this connection's persistent requests are kept under: the
    /// client's `Name`, prefixed for a client without full access, so that
    /// it never sees or touches the requests of a full-access client (the
    /// owner's tools) by giving the same `Name`.
    fn queue_name(&self, name: Option<&str>) -> String {
        let name = name.unwrap_or("");
        if self.full_access {
            name.to_string()
        } else {
            format!("{}{name}", access::RESTRICTED_QUEUE_PREFIX)
        }
    }

    /// Tell the hub this connection's queue name and WatchGlobal state.
    pub(super) fn update_hub(&self) {
        let s = lock(&self.session);
        let name = s.client_name().map(|n| self.queue_name(Some(n)));
        self.hub
            .update(self.id, name, s.watching_global().is_some());
    }

    /// The queue a `Global=true` message names, else every queue this
    /// connection sees.
    pub(super) fn scopes_for(&self, global: bool) -> Vec<Scope> {
        if global {
            vec![Scope::Global]
        } else {
            self.visible_scopes()
        }
    }

    pub(super) fn no_such_identifier(&self, identifier: &str, global: bool) {
        self.protocol_error(
            ProtocolErrorCode::NoSuchIdentifier,
            "No such identifier",
            Some(identifier),
            global,
        );
    }

    pub(super) fn visible_scopes(&self) -> Vec<Scope> {
        let s = lock(&self.session);
        let mut v = vec![
            Scope::Connection(self.id),
            Scope::Client(self.queue_name(s.client_name())),
        ];
        if s.watching_global().is_some() {
            v.push(Scope::Global);
        }
        v
    }
}

impl Conn {
    pub(super) fn send_all_data(
        &self,
        req: &Request,
        path: &Path,
        len: u64,
        mime: &str,
        remove: bool,
    ) {
        self.hub.send_to(
            self.id,
            Out::File {
                header: all_data_header(req, len, mime, self.hub.now_ms()),
                path: path.to_path_buf(),
                len,
                remove,
                seal: ReadSeal::FromHeader(self.node.vault.clone()),
            },
        );
    }
}

//! The FCP request queue: every running or finished request a client can
//! still ask about, and the on-disk records of `Persistence=forever` ones.
//!
//! A forever request is written to `<data dir>/requests/<name>.rec` when
//! it starts and rewritten when it finishes (atomically); its direct upload
//! and a direct download's result stay in `<data dir>/requests/` too. All
//! three are sealed under the node's vault (`crate::vault`): the record
//! (JSON inside) as a record of purpose `"request"`, named by a keyed hash
//! of its scope and identifier; the upload and result as sealed files. On
//! restart each record is read back, finished ones are listed again and
//! unfinished ones run again from the start. A damaged record is kept
//! aside (`.bad`), never deleted. Records of earlier versions (`.json`, in
//! the clear, with plain files) are sealed when they are read.

use crate::files::write_atomic;
use crate::vault::Vault;
use lichen_fcp::client::Persistence;
use lichen_fcp::codec::Message;
#[cfg(test)]
use lichen_fcp::FetchErrorCode;
use lichen_fcp::{Decoder, Event, Limits};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Whose request it is: decides who may see it and who gets its messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Scope {
    /// The global queue (`Global=true`): every connection watching it.
    Global,
    /// A client's own queue, by its ClientHello `Name`.
    Client(String),
    /// A `Persistence=connection` request of one connection.
    Connection(u64),
}

/// Which FCP request an insert belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestRef {
    /// Its scope.
    pub(crate) scope: Scope,
    /// Its identifier.
    pub(crate) identifier: String,
    /// When it started (tells it from a later request with the same name).
    pub(crate) started_ms: u64,
}

/// Progress of a running request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Blocks in all.
    pub total: u64,
    /// Blocks needed to finish.
    pub required: u64,
    /// Blocks done.
    pub succeeded: u64,
    /// Blocks that failed (and may be retried).
    pub failed: u64,
    /// Whether `total` is final.
    pub finalized: bool,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// Insert done.
    PutOk {
        /// The request URI.
        uri: String,
        /// The blocks went to peers too (not only the client cache). An
        /// insert made without peers turns `true` once it has been pushed
        /// (`crate::push`).
        #[serde(default)]
        in_network: bool,
        /// Pushing an insert made without peers failed (blocks evicted from
        /// the client cache first): why, for the user. It must be inserted
        /// again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push_error: Option<String>,
    },
    /// Insert failed.
    PutErr {
        /// Freenet InsertException code.
        code: u32,
        /// Detail.
        extra: Option<String>,
    },
    /// Fetch done.
    GetOk {
        /// MIME type.
        mime: String,
        /// Bytes.
        len: u64,
        /// For ReturnType=direct persistent requests: where the data waits.
        data: Option<PathBuf>,
    },
    /// Fetch failed.
    GetErr {
        /// Freenet FetchException code.
        code: u32,
        /// Detail.
        extra: Option<String>,
        /// For code 27: the new URI.
        redirect: Option<String>,
    },
}

impl Outcome {
    /// A failed fetch.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn get_err(code: FetchErrorCode, extra: impl Into<Option<String>>) -> Self {
        Outcome::GetErr {
            code: code.code(),
            extra: extra.into(),
            redirect: None,
        }
    }
}

/// Mutable state of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    /// Latest progress.
    pub(crate) progress: Progress,
    /// URI known so far (URIGenerated).
    pub(crate) uri: Option<String>,
    /// Set once finished.
    pub(crate) outcome: Option<Outcome>,
    /// When it finished (ms).
    pub(crate) completed_ms: Option<u64>,
}

/// One request.
#[derive(Debug)]
pub(crate) struct Request {
    /// Whose.
    pub(crate) scope: Scope,
    /// The client's `Identifier`.
    pub(crate) identifier: String,
    /// The original message header (re-parsed after a restart).
    pub(crate) header: Message,
    /// Persistence.
    pub(crate) persistence: Persistence,
    /// Spooled direct upload data.
    pub(crate) upload: Option<PathBuf>,
    /// A direct upload the request reads as it arrives (connection
    /// persistence only; never saved).
    pub(crate) stream: Option<crate::util::blocking::UploadStream>,
    /// When it started (ms).
    pub(crate) started_ms: u64,
    /// Cancelled on RemovePersistentRequest or when its connection closes.
    pub(crate) cancel: CancellationToken,
    /// Progress and outcome.
    pub(crate) state: Mutex<State>,
}

impl Request {
    /// Whether the request's `Global` flag is set.
    #[must_use]
    pub(crate) fn global(&self) -> bool {
        self.scope == Scope::Global
    }

    /// A copy of the current state.
    #[must_use]
    pub(crate) fn snapshot(&self) -> State {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    version: u32,
    scope: Scope,
    identifier: String,
    /// The message header in FCP wire format.
    header: String,
    upload: Option<PathBuf>,
    started_ms: u64,
    completed_ms: Option<u64>,
    outcome: Option<Outcome>,
}

type Key = (Scope, String);

/// The purpose records are sealed for (`crate::vault`).
const PURPOSE: &str = "request";

/// All requests.
#[derive(Debug)]
pub(crate) struct Requests {
    dir: PathBuf,
    vault: Vault,
    map: Mutex<HashMap<Key, Arc<Request>>>,
}

/// Most requests kept at once (running or finished, all clients): a bound
/// on memory against a client that starts requests forever.
pub(crate) const MAX_REQUESTS: usize = 100_000;

impl Requests {
    /// Open the queue in `data_dir`, reading forever-persistent records.
    ///
    /// # Errors
    /// I/O errors creating the directory.
    pub(crate) fn open(data_dir: &Path, vault: Vault) -> std::io::Result<Self> {
        let dir = data_dir.join("requests");
        std::fs::create_dir_all(&dir)?;
        let r = Requests {
            dir,
            vault,
            map: Mutex::new(HashMap::new()),
        };
        r.load();
        Ok(r)
    }

    /// Directory for forever-persistent data files.
    #[must_use]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let legacy = match path.extension().and_then(|x| x.to_str()) {
                Some("rec") => false,
                Some("json") => true,
                _ => continue,
            };
            match self.read_record(&path, legacy) {
                Some((rec, header)) => {
                    let req = Arc::new(Request {
                        scope: rec.scope.clone(),
                        identifier: rec.identifier.clone(),
                        header,
                        persistence: Persistence::Forever,
                        upload: rec.upload,
                        stream: None,
                        started_ms: rec.started_ms,
                        cancel: CancellationToken::new(),
                        state: Mutex::new(State {
                            outcome: rec.outcome,
                            completed_ms: rec.completed_ms,
                            ..State::default()
                        }),
                    });
                    if legacy {
                        self.seal_legacy(&req, &path);
                    }
                    if let Ok(mut m) = self.map.lock() {
                        m.insert((rec.scope, rec.identifier), req);
                    }
                }
                None => {
                    tracing::warn!("a persistent request record is damaged; kept aside as .bad");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        self.remove_orphans();
    }

    /// Uploads and results no record names: left by a node killed between
    /// moving a spool here and writing its record, or between removing a
    /// record and its files. Nothing can ever read them.
    fn remove_orphans(&self) {
        let named: std::collections::HashSet<PathBuf> = self
            .map
            .lock()
            .map(|m| {
                m.values()
                    .flat_map(|r| {
                        let data = match r.snapshot().outcome {
                            Some(Outcome::GetOk { data, .. }) => data,
                            _ => None,
                        };
                        r.upload.clone().into_iter().chain(data)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let spool = name.starts_with("upload-") || name.starts_with("data-");
            // `.tmp`: an atomic record write that never got renamed.
            let torn = name.ends_with(".tmp") || name.ends_with(".sealing");
            if ((spool && !named.contains(&path)) || torn) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!("removed {removed} file(s) of persistent requests that no record names");
        }
    }

    fn read_record(&self, path: &Path, legacy: bool) -> Option<(Record, Message)> {
        let bytes = std::fs::read(path).ok()?;
        let json = if legacy {
            bytes
        } else {
            self.vault.open(PURPOSE, &bytes).ok()?
        };
        let rec = serde_json::from_slice::<Record>(&json).ok()?;
        let header = parse_header(&rec.header)?;
        Some((rec, header))
    }

    /// A record of an earlier version, in the clear with plain files: seal
    /// its files in place and the record under its new name, then remove
    /// the clear one.
    fn seal_legacy(&self, req: &Request, path: &Path) {
        let data = match req.snapshot().outcome {
            Some(Outcome::GetOk { data, .. }) => data,
            _ => None,
        };
        for f in req.upload.iter().chain(data.iter()) {
            if let Err(e) = self.vault.seal_file_in_place(f) {
                tracing::warn!("cannot seal a persistent request's file: {e}");
                return;
            }
        }
        if self.save(req) {
            crate::files::remove_wiped(path);
        }
    }

    /// Add a request; `false` (and nothing added) if the identifier is
    /// taken in that scope or the queue is full.
    pub(crate) fn insert(&self, req: Arc<Request>) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let key = (req.scope.clone(), req.identifier.clone());
        if m.contains_key(&key) || m.len() >= MAX_REQUESTS {
            return false;
        }
        m.insert(key, req.clone());
        drop(m);
        self.save(&req);
        true
    }

    /// Whether `identifier` is taken in `scope`.
    #[must_use]
    pub(crate) fn contains(&self, scope: &Scope, identifier: &str) -> bool {
        self.map
            .lock()
            .map(|m| m.contains_key(&(scope.clone(), identifier.to_string())))
            .unwrap_or(false)
    }

    /// Look a request up.
    #[must_use]
    pub(crate) fn get(&self, scope: &Scope, identifier: &str) -> Option<Arc<Request>> {
        self.map
            .lock()
            .ok()?
            .get(&(scope.clone(), identifier.to_string()))
            .cloned()
    }

    /// Remove a request (cancelling it) and its files.
    pub(crate) fn remove(&self, scope: &Scope, identifier: &str) -> Option<Arc<Request>> {
        let req = self
            .map
            .lock()
            .ok()?
            .remove(&(scope.clone(), identifier.to_string()))?;
        req.cancel.cancel();
        if req.persistence == Persistence::Forever {
            let _ = std::fs::remove_file(self.record_path(&req));
        }
        if let Some(u) = &req.upload {
            let _ = std::fs::remove_file(u);
        }
        if let Some(Outcome::GetOk {
            data: Some(path), ..
        }) = req.snapshot().outcome
        {
            let _ = std::fs::remove_file(path);
        }
        Some(req)
    }

    /// Every request in the given scopes, oldest first.
    #[must_use]
    pub(crate) fn list(&self, scopes: &[Scope]) -> Vec<Arc<Request>> {
        let mut v: Vec<Arc<Request>> = self
            .map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|r| scopes.contains(&r.scope))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| {
            a.started_ms
                .cmp(&b.started_ms)
                .then(a.identifier.cmp(&b.identifier))
        });
        v
    }

    /// Every forever request that has not finished (to restart at boot).
    #[must_use]
    pub(crate) fn unfinished(&self) -> Vec<Arc<Request>> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|r| r.snapshot().outcome.is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Record an outcome (and persist it for forever requests).
    pub(crate) fn finish(&self, req: &Arc<Request>, outcome: Outcome, now_ms: u64) {
        if let Ok(mut s) = req.state.lock() {
            s.outcome = Some(outcome);
            s.completed_ms = Some(now_ms);
        }
        // A request removed meanwhile must not come back from disk.
        if self.contains(&req.scope, &req.identifier) {
            self.save(req);
        }
    }

    /// A background push of an insert made without peers ended: mark its
    /// request as in the network (`error` `None`) or as failed to push.
    /// Nothing happens if the request is gone or is not a finished put.
    pub(crate) fn pushed(&self, r: &RequestRef, error: Option<String>) {
        let Some(req) = self.get(&r.scope, &r.identifier) else {
            return;
        };
        if req.started_ms != r.started_ms {
            return;
        }
        let changed = match req.state.lock() {
            Ok(mut s) => match &mut s.outcome {
                Some(Outcome::PutOk {
                    in_network,
                    push_error,
                    ..
                }) => {
                    *in_network = error.is_none();
                    *push_error = error;
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        if changed {
            self.save(&req);
        }
    }

    fn record_path(&self, req: &Request) -> PathBuf {
        let scope = match &req.scope {
            Scope::Global => "g".to_string(),
            Scope::Client(c) => format!("c:{c}"),
            Scope::Connection(n) => format!("x:{n}"),
        };
        let name = self
            .vault
            .name(PURPOSE, &[scope.as_bytes(), req.identifier.as_bytes()]);
        self.dir.join(format!("{name}.rec"))
    }

    /// Write a forever request's record; whether it was written.
    fn save(&self, req: &Request) -> bool {
        if req.persistence != Persistence::Forever {
            return false;
        }
        let s = req.snapshot();
        let rec = Record {
            version: 1,
            scope: req.scope.clone(),
            identifier: req.identifier.clone(),
            header: String::from_utf8_lossy(&req.header.encode_header(None)).into_owned(),
            upload: req.upload.clone(),
            started_ms: req.started_ms,
            completed_ms: s.completed_ms,
            outcome: s.outcome,
        };
        let Ok(json) = serde_json::to_vec(&rec) else {
            return false;
        };
        let sealed = self.vault.seal(PURPOSE, &json);
        match write_atomic(&self.record_path(req), &sealed, true) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("cannot save a persistent request: {e}");
                false
            }
        }
    }
}

fn parse_header(text: &str) -> Option<Message> {
    let mut d = Decoder::new(Limits {
        inline_data_limit: 0,
        ..Limits::default()
    });
    d.feed(text.as_bytes());
    match d.next_event() {
        Ok(Some(Event::Message(m))) => Some(m),
        Ok(Some(Event::Header { message, .. })) => Some(message),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(scope: Scope, id: &str, persistence: Persistence) -> Arc<Request> {
        Arc::new(Request {
            scope,
            identifier: id.into(),
            header: Message::new("ClientGet")
                .field("URI", "KSK@x")
                .field("Identifier", id),
            persistence,
            upload: None,
            stream: None,
            started_ms: 1,
            cancel: CancellationToken::new(),
            state: Mutex::new(State::default()),
        })
    }

    #[test]
    fn forever_requests_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = Requests::open(dir.path(), Vault::new([1; 32])).unwrap();
        let a = req(Scope::Global, "a", Persistence::Forever);
        assert!(r.insert(a.clone()));
        assert!(!r.insert(req(Scope::Global, "a", Persistence::Forever)));
        assert!(r.insert(req(Scope::Client("c".into()), "a", Persistence::Reboot)));
        r.finish(&a, Outcome::get_err(FetchErrorCode::DataNotFound, None), 5);
        drop(r);
        let r = Requests::open(dir.path(), Vault::new([1; 32])).unwrap();
        let back = r.list(&[Scope::Global, Scope::Client("c".into())]);
        assert_eq!(back.len(), 1, "only the forever request survives");
        assert_eq!(back[0].identifier, "a");
        assert_eq!(back[0].header.get("URI"), Some("KSK@x"));
        assert!(matches!(
            back[0].snapshot().outcome,
            Some(Outcome::GetErr { code: 13, .. })
        ));
        assert!(r.remove(&Scope::Global, "a").is_some());
        drop(r);
        assert!(Requests::open(dir.path(), Vault::new([1; 32]))
            .unwrap()
            .list(&[Scope::Global])
            .is_empty());
    }

    #[test]
    fn files_no_record_names_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::new([1; 32]);
        let r = Requests::open(dir.path(), v.clone()).unwrap();
        let kept = dir.path().join("requests/upload-00000000000000aa");
        std::fs::write(&kept, b"sealed upload").unwrap();
        let mut a = req(Scope::Global, "a", Persistence::Forever);
        Arc::get_mut(&mut a).unwrap().upload = Some(kept.clone());
        assert!(r.insert(a));
        drop(r);
        let orphans = [
            "upload-00000000000000bb",
            "data-00000000000000cc",
            "data-00000000000000dd.part",
            "x.tmp",
        ];
        for o in orphans {
            std::fs::write(dir.path().join("requests").join(o), b"left by a kill").unwrap();
        }
        let r = Requests::open(dir.path(), v).unwrap();
        assert_eq!(r.list(&[Scope::Global]).len(), 1);
        assert!(kept.exists(), "a file its record names is kept");
        for o in orphans {
            assert!(
                !dir.path().join("requests").join(o).exists(),
                "{o} left behind"
            );
        }
    }

    #[test]
    fn a_push_marks_the_put_in_network_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = Requests::open(dir.path(), Vault::new([1; 32])).unwrap();
        let a = req(Scope::Global, "p", Persistence::Forever);
        assert!(r.insert(a.clone()));
        r.finish(
            &a,
            Outcome::PutOk {
                uri: "CHK@x".into(),
                in_network: false,
                push_error: None,
            },
            5,
        );
        let rf = |started_ms| RequestRef {
            scope: Scope::Global,
            identifier: "p".into(),
            started_ms,
        };
        // Another request that had the same name: untouched.
        r.pushed(&rf(2), None);
        assert!(matches!(
            a.snapshot().outcome,
            Some(Outcome::PutOk {
                in_network: false,
                ..
            })
        ));
        r.pushed(&rf(1), None);
        drop(r);
        let r = Requests::open(dir.path(), Vault::new([1; 32])).unwrap();
        let back = r.get(&Scope::Global, "p").unwrap();
        assert!(matches!(
            back.snapshot().outcome,
            Some(Outcome::PutOk {
                in_network: true,
                push_error: None,
                ..
            })
        ));
        r.pushed(&rf(1), Some("lost".into()));
        assert!(matches!(
            back.snapshot().outcome,
            Some(Outcome::PutOk {
                in_network: false,
                push_error: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn damaged_record_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("requests")).unwrap();
        std::fs::write(dir.path().join("requests/x.json"), "{not json").unwrap();
        let r = Requests::open(dir.path(), Vault::new([1; 32])).unwrap();
        assert!(r.list(&[Scope::Global]).is_empty());
        assert!(dir.path().join("requests/x.bad").exists());
    }
}

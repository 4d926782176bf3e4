//! The gateway's fetches ("jobs"): one per key, shared by every request
//! for it, bounded in number, kept a while after they end so reloads and
//! ranges find them.

use super::doc::{DocFile, JobError, JobState, PublishingWriter, Streamed};
use super::respond::{error_page, http_status};
use crate::node::Node;
use crate::ops::{self as engine, GetSpec};
use crate::sealed::{FileSeal, SealKey};
use axum::http::StatusCode;
use axum::response::Response;
use lichen_client::{ErrorKind, FetchError, HasKind};
use lichen_crypto::FreenetUri;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Largest document the gateway fetches.
const MAX_DOCUMENT: u64 = 4 << 30;
/// Fetches held (running or finished) at once.
const MAX_JOBS: usize = 128;
/// Fetches running at once.
const MAX_RUNNING: usize = 8;
/// How long a finished fetch is kept for further requests (ranges,
/// reloads) after its last use.
const DONE_TTL: Duration = Duration::from_secs(120);
/// How long a failure is remembered (so a progress page sees it).
const FAILED_TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Job {
    rx: watch::Receiver<JobState>,
    last_used: Instant,
}

/// The fetches held, by key.
#[derive(Debug)]
pub(super) struct Jobs {
    table: Mutex<HashMap<String, Job>>,
    running: Arc<Semaphore>,
    /// Fetches started so far (shown on the home page).
    started: AtomicU64,
}

impl Jobs {
    /// No fetches yet.
    pub(super) fn new() -> Self {
        Jobs {
            table: Mutex::new(HashMap::new()),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            started: AtomicU64::new(0),
        }
    }

    /// How many fetches were started so far.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// How many fetches are held (running or finished).
    pub(super) fn held(&self) -> usize {
        self.table.lock().map(|j| j.len()).unwrap_or(0)
    }

    /// The job for `key`, started on `node` if needed.
    pub(super) fn job_for(
        &self,
        node: &Arc<Node>,
        key: &str,
        uri: &FreenetUri,
    ) -> Result<watch::Receiver<JobState>, Box<Response>> {
        let mut jobs = self.table.lock().map_err(|_| {
            Box::new(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "lock poisoned",
            ))
        })?;
        let now = node.clock.now();
        if let Some(j) = jobs.get_mut(key) {
            j.last_used = now;
            return Ok(j.rx.clone());
        }
        make_room(&mut jobs, now)?;
        let (tx, rx) = watch::channel(JobState::Running {
            done: 0,
            needed: 0,
            streamed: None,
        });
        jobs.insert(
            key.to_owned(),
            Job {
                rx: rx.clone(),
                last_used: now,
            },
        );
        drop(jobs);
        self.started.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(fetch(
            node.clone(),
            self.running.clone(),
            uri.to_string(),
            tx,
        ));
        Ok(rx)
    }
}

/// Forget old results, then the least recently used finished ones until
/// a new job fits; an error page if every held job is still running.
fn make_room(jobs: &mut HashMap<String, Job>, now: Instant) -> Result<(), Box<Response>> {
    jobs.retain(|_, j| match &*j.rx.borrow() {
        JobState::Running { .. } => true,
        JobState::Done(_) => now.duration_since(j.last_used) < DONE_TTL,
        JobState::Failed(_) => now.duration_since(j.last_used) < FAILED_TTL,
    });
    while jobs.len() >= MAX_JOBS {
        let oldest = jobs
            .iter()
            .filter(|(_, j)| !matches!(&*j.rx.borrow(), JobState::Running { .. }))
            .min_by_key(|(_, j)| j.last_used)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                jobs.remove(&k);
            }
            None => {
                return Err(Box::new(error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many fetches",
                    "The gateway is running as many fetches as it can. Try again in a moment.",
                )))
            }
        }
    }
    Ok(())
}

/// The fetch of `uri` (once one of the `running` permits is free), told
/// to the job's watchers through `tx`.
async fn fetch(node: Arc<Node>, running: Arc<Semaphore>, uri: String, tx: watch::Sender<JobState>) {
    let Ok(_permit) = running.acquire_owned().await else {
        return;
    };
    let out = node.tmp_path("gw");
    let seal = FileSeal::ephemeral();
    let key = seal.key.clone();
    let spec = GetSpec {
        uri,
        max_size: Some(MAX_DOCUMENT),
        out: Some(out.clone()),
        seal: Some(seal),
        ds_only: false,
        ignore_ds: false,
        retries: 0,
        // A page's files and a reload find what was fetched.
        write_client_cache: true,
    };
    let tx2 = tx.clone();
    let progress = move |p: crate::requests::Progress| {
        tx2.send_modify(|s| {
            if let JobState::Running { done, needed, .. } = s {
                *done = p.succeeded;
                *needed = p.required;
            }
        });
    };
    // The document goes to its file as it is decoded, and requests
    // that serve it unfiltered send it from there meanwhile.
    let open = stream_open(tx.clone(), out.clone(), key.clone());
    let result = tokio::select! {
        r = engine::get_streaming(&node, spec, Some(open), &progress) => Some(r),
        () = node.shutdown.cancelled() => None,
    };
    let streamed = match &*tx.borrow() {
        JobState::Running { streamed, .. } => streamed.as_ref().map(|s| s.file.clone()),
        _ => None,
    };
    let state = match result {
        None => JobState::Failed(Arc::new(job_error(
            ErrorKind::ShuttingDown,
            "The node is shutting down.".into(),
            None,
        ))),
        Some(Ok(done)) => JobState::Done(match streamed {
            Some(file) if done.streamed => file,
            _ => Arc::new(DocFile {
                path: out,
                key,
                mime: done.mime,
                size: done.len,
            }),
        }),
        Some(Err(f)) => JobState::Failed(Arc::new(fetch_error(f))),
    };
    tx.send_replace(state);
}

/// Opens the job's file at `out` once the fetch knows the document's size
/// and type, and publishes it to the job's watchers.
fn stream_open(tx: watch::Sender<JobState>, out: PathBuf, key: SealKey) -> engine::StreamOpen {
    Box::new(move |size, mime, _local| {
        let f = std::fs::File::create(&out).ok()?;
        let file = Arc::new(DocFile {
            path: out,
            key: key.clone(),
            mime: mime.to_owned(),
            size,
        });
        tx.send_modify(|s| {
            if let JobState::Running { streamed, .. } = s {
                *streamed = Some(Streamed { file, written: 0 });
            }
        });
        Some(Box::new(PublishingWriter::new(f, &key, tx)))
    })
}

/// The page of a failed fetch: its status and title from the one mapping
/// of kinds to HTTP.
fn fetch_error(f: engine::Failure<FetchError>) -> JobError {
    let kind = f.kind();
    let detail = match kind {
        ErrorKind::NotFound => "The document was not found (yet). It may not be in the network, or not reachable right now.".to_owned(),
        _ => f.extra.clone(),
    };
    job_error(kind, detail, f.redirect())
}

fn job_error(kind: ErrorKind, detail: String, redirect: Option<String>) -> JobError {
    let (status, title) = http_status(kind);
    JobError {
        status,
        title,
        detail,
        redirect,
    }
}

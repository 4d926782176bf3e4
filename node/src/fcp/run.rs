//! Running a request for the FCP server: its job (`jobs::request`) in a
//! task, its news told to the connections that see it.

use super::common::{lock, Out, ReadSeal};
use super::hub::Hub;
use super::messages::{all_data_header, terminal};
use super::output;
use crate::jobs::disk::DiskAccess;
use crate::jobs::request::{self, Report};
use crate::node::Node;
use crate::ops::StreamOpen;
use crate::requests::{Outcome, Progress, Request};
use lichen_fcp::client::{ClientMessage, Persistence};
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::Session;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A request's news, told through the hub.
struct Reporter(Arc<Hub>);

/// Spawn the task that runs a request and reports to its audience. `disk`:
/// what it reads or writes on disk, opened when its access was checked
/// (`None` for a request resumed after a restart: opened again then).
pub(super) fn start_request(
    node: &Arc<Node>,
    hub: &Arc<Hub>,
    req: Arc<Request>,
    msg: ClientMessage,
    disk: Option<DiskAccess>,
    session: Option<Arc<Mutex<Session>>>,
) {
    let report: Arc<dyn Report> = Arc::new(Reporter(hub.clone()));
    let (node, hub) = (node.clone(), hub.clone());
    tokio::spawn(async move {
        let cancel = req.cancel.clone();
        let told = Arc::new(AtomicBool::new(false));
        let run = request::run(node.clone(), report, req.clone(), msg, disk, told.clone());
        let outcome = tokio::select! {
            o = run => o,
            () = cancel.cancelled() => None,
            () = node.shutdown.cancelled() => None,
        };
        let Some((outcome, direct)) = outcome else {
            return; // removed, disconnected or shutting down: nobody to tell
        };
        node.requests.finish(&req, outcome.clone(), hub.now_ms());
        let st = req.snapshot();
        if !told.load(Ordering::Relaxed) {
            hub.deliver(&req, &terminal(&req, &outcome, &st, hub.now_ms()));
        }
        if let (Outcome::GetOk { len, mime, .. }, Some((path, seal))) = (&outcome, direct) {
            // Direct data goes straight to the audience; persistent
            // requests keep a copy for GetRequestStatus.
            let keep = req.persistence != Persistence::Connection;
            let ids = hub.audience(&req);
            if ids.is_empty() && !keep {
                let _ = tokio::fs::remove_file(&path).await;
            }
            let header = all_data_header(&req, *len, mime, hub.now_ms());
            let n = ids.len();
            for (i, id) in ids.into_iter().enumerate() {
                hub.send_to(
                    id,
                    Out::File {
                        header: header.clone(),
                        path: path.clone(),
                        len: *len,
                        remove: !keep && i + 1 == n,
                        seal: seal.clone().map_or(ReadSeal::Plain, ReadSeal::Known),
                    },
                );
            }
        }
        if req.persistence == Persistence::Connection {
            node.requests.remove(&req.scope, &req.identifier);
            if let Some(s) = session {
                lock(&s).release(&req.identifier, req.global());
            }
        }
    });
}

impl Report for Reporter {
    fn progress(&self, req: &Request, p: Progress, now_ms: u64) {
        let m = rep::SimpleProgress {
            identifier: req.identifier.clone(),
            global: req.global(),
            total: p.total,
            required: p.required,
            failed: p.failed,
            fatally_failed: 0,
            succeeded: p.succeeded,
            last_progress: now_ms,
            finalized_total: p.finalized,
        }
        .to_message();
        self.0.deliver_progress(req, &m);
    }

    fn uri_generated(&self, req: &Request, uri: String) {
        self.0.deliver(
            req,
            &rep::UriGenerated {
                identifier: req.identifier.clone(),
                global: req.global(),
                uri,
            }
            .to_message(),
        );
    }

    fn chunked_output(&self, req: &Arc<Request>) -> StreamOpen {
        output::chunked_open(&self.0, req)
    }

    fn direct_output(&self, req: &Arc<Request>, told: Arc<AtomicBool>) -> StreamOpen {
        output::stream_open(&self.0, req, told)
    }
}

//! A test hook: hold a request between the check of its disk access and
//! the first read or write of its files, so that a test can swap a file or
//! directory for a symbolic link at exactly that point
//! (`node/tests/dda_races.rs`). Nothing is ever held unless a test asked
//! for the request's identifier with [`hold`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// Where requests with one identifier wait.
#[derive(Debug)]
pub struct Gate {
    reached: AtomicUsize,
    open: watch::Sender<bool>,
}

impl Gate {
    /// How many requests reached the gate.
    pub fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }

    /// Lets the waiting requests (and later ones) go on.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

static GATES: Mutex<Option<HashMap<String, Arc<Gate>>>> = Mutex::new(None);

/// Holds every disk request with this `identifier` at its gate until
/// [`Gate::open`].
pub fn hold(identifier: &str) -> Arc<Gate> {
    let gate = Arc::new(Gate {
        reached: AtomicUsize::new(0),
        open: watch::Sender::new(false),
    });
    GATES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(identifier.to_string(), gate.clone());
    gate
}

/// A disk request's access is checked and its files opened: wait here if
/// a test holds its identifier.
pub(crate) async fn reached(identifier: &str) {
    let gate = GATES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|g| g.get(identifier).cloned());
    if let Some(g) = gate {
        let mut rx = g.open.subscribe();
        g.reached.fetch_add(1, Ordering::SeqCst);
        let _ = rx.wait_for(|open| *open).await;
    }
}

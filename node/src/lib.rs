#![doc = include_str!("../README.md")]

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fcp_server;
pub mod gateway;
pub mod identity;
pub mod net;
pub mod node;
pub mod requests;
pub mod status;
pub mod usk;

use anyhow::Context;
use config::Config;
use std::sync::Arc;

/// Run a node until SIGINT/SIGTERM (or an FCP `Shutdown`): open the data
/// directory, serve FCP, resume persistent requests, then shut down
/// cleanly (requests stopped, store flushed).
///
/// # Errors
/// Startup failures (data directory, identity, store, ports in use).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let fcp_addr = config.fcp.listen;
    let node = node::Node::open(config)?;
    let listener = tokio::net::TcpListener::bind(fcp_addr)
        .await
        .with_context(|| {
            format!("cannot listen for FCP on {fcp_addr} (is another node running? use --fcp-port)")
        })?;
    tracing::info!(
        "Lichen node started; FCP on {}, data in {}",
        listener.local_addr().map_or(fcp_addr, |a| a),
        node.data_dir.display()
    );
    let fcp = tokio::spawn(fcp_server::serve(node.clone(), listener));
    fcp_server::resume(&node);
    gateway::start(&node).await?;
    wait_for_signal(&node).await;
    tracing::info!("shutting down");
    node.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), fcp).await;
    let store = node.store.clone();
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("the store could not be flushed at shutdown");
    }
    Ok(())
}

async fn wait_for_signal(node: &Arc<node::Node>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let term_fut = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term_fut => {}
            () = node.shutdown.cancelled() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = node.shutdown.cancelled() => {}
    }
}

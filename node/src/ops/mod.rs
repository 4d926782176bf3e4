//! Operations: put, get, site and USK edition search over the node's
//! blocks (the client cache and store, and the network when the node has
//! peers). The jobs (FCP requests, the push task) and the gateway run
//! them; they know nothing of FCP connections: progress and the URI go to
//! the callbacks they are given.
//!
//! - `blocks`: the block source and sink ([`LocalBlocks`]).
//! - `put`: a single-file insert ([`put`], [`put_with`]).
//! - `get`: a fetch ([`get`], [`get_streaming`]).
//! - `site`: a site insert ([`put_site`], [`put_site_with`]) and the folder
//!   scan of `ClientPutDiskDir` ([`scan_dir`]).
//! - `usk`: the one USK edition search policy.

mod blocks;
mod common;
mod get;
mod put;
mod site;
pub(crate) mod usk;

pub use crate::util::blocking::UploadStream;
pub(crate) use blocks::LocalBlocks;
pub(crate) use common::PutDone;
pub use common::{
    Failure, GetDone, GetSpec, ProgressFn, PutData, PutSpec, SiteFile, StreamOpen, UriFn,
};
pub(crate) use get::get_to;
pub use get::{get, get_streaming};
pub use put::put;
pub(crate) use put::put_with;
pub use site::put_site;
pub(crate) use site::{put_site_with, scan_dir};

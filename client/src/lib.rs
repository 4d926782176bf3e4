#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

mod error;
mod fetch;
pub mod folder;
mod insert;
pub mod io;
pub mod metadata;
mod pace;
mod site;
pub mod usk;

pub use error::{ErrorKind, Fault, FetchError, HasKind, InsertError};
pub use fetch::{fetch, fetch_metadata, fetch_to, FetchOptions, FetchResult, Found, Progress};
pub use insert::{insert, InsertOptions, InsertResult, COMPRESSION_SAMPLE, SEGMENT_BYTES};
pub use io::{BlockSink, BlockSource, MemoryBlocks, NullSink, SinkError, SourceError};
pub use metadata::{Manifest, Metadata, MetadataError};
pub use pace::REQUEST_JITTER;
pub use site::{insert_site, SiteData, SiteFile, SiteOptions, SiteResult};

//! The one mapping of failures to FCP codes: an operation's error, by its
//! [`ErrorKind`] and, where fred's codes tell cases of one kind apart, by
//! its variant, to the `Code` of `GetFailed` and `PutFailed`.
//!
//! These are the numbers fred sends for the same cases; clients act on
//! them (pyFreenet follows `Code=27` to its `RedirectURI`), so a case must
//! never change its code. The gateway's HTTP statuses come from the kind
//! alone (`gateway::respond::http_status`), never from these numbers.

use lichen_client::{ErrorKind, FetchError, HasKind, InsertError};
use lichen_fcp::{FetchErrorCode, InsertErrorCode};

/// The `GetFailed` code of a failed fetch.
pub(crate) fn get_failed(e: &FetchError) -> FetchErrorCode {
    use FetchErrorCode as C;
    match e.kind() {
        ErrorKind::BadUri => C::InvalidUri,
        ErrorKind::BadPath => C::TooManyPathComponents,
        ErrorKind::NotInSite => match e {
            FetchError::NotEnoughPathComponents => C::NotEnoughPathComponents,
            _ => C::NotInArchive,
        },
        ErrorKind::TooBig => match e {
            FetchError::TooBigMetadata { .. } => C::TooBigMetadata,
            _ => C::TooBig,
        },
        ErrorKind::Cancelled => C::Cancelled,
        ErrorKind::BadContent => match e {
            FetchError::BlockDecode(_) => C::BlockDecodeError,
            FetchError::TooMuchRecursion { .. } => C::TooMuchRecursion,
            FetchError::HashMismatch => C::ContentHashFailed,
            FetchError::SplitfileDecode(_) => C::SplitfileDecodeError,
            _ => C::InvalidMetadata,
        },
        ErrorKind::NewerEdition => C::PermanentRedirect,
        ErrorKind::NotFound => match e {
            FetchError::RecentlyFailed => C::RecentlyFailed,
            FetchError::NotEnoughBlocks { .. } => C::AllDataNotFound,
            _ => C::DataNotFound,
        },
        ErrorKind::RouteNotFound => C::RouteNotFound,
        ErrorKind::Overloaded => C::RejectedOverload,
        ErrorKind::LocalDisk => C::BucketError,
        // A fetch is never refused for a collision; a shutdown ends the
        // runtime before its requests (fred has no code for either).
        ErrorKind::Collision | ErrorKind::ShuttingDown | ErrorKind::Internal => C::InternalError,
    }
}

/// The `PutFailed` code of a failed insert.
pub(crate) fn put_failed(e: &InsertError) -> InsertErrorCode {
    use InsertErrorCode as C;
    match e.kind() {
        ErrorKind::BadUri => C::InvalidUri,
        ErrorKind::LocalDisk => C::BucketError,
        ErrorKind::Overloaded => C::RejectedOverload,
        ErrorKind::RouteNotFound => C::RouteNotFound,
        ErrorKind::Collision => C::Collision,
        ErrorKind::Cancelled => C::Cancelled,
        ErrorKind::TooBig => C::TooBig,
        // Kinds an insert does not fail with (they are about fetched
        // documents), a shutdown, and bugs.
        ErrorKind::BadPath
        | ErrorKind::NotInSite
        | ErrorKind::BadContent
        | ErrorKind::NewerEdition
        | ErrorKind::NotFound
        | ErrorKind::ShuttingDown
        | ErrorKind::Internal => C::InternalError,
    }
}

/// Every fetch error, its kind and the `GetFailed` code the node sent for
/// it before kinds existed (the gateway's tests use it too).
#[cfg(test)]
pub(crate) fn fetch_cases() -> Vec<(FetchError, ErrorKind, u32)> {
    use lichen_crypto::{BlockError, FreenetUri};
    let uri = FreenetUri::parse("KSK@a").unwrap_or_else(|e| panic!("{e}"));
    vec![
        (
            FetchError::InvalidUri(String::from("x").into()),
            ErrorKind::BadUri,
            20,
        ),
        (FetchError::DataNotFound, ErrorKind::NotFound, 13),
        (FetchError::RouteNotFound, ErrorKind::RouteNotFound, 14),
        (FetchError::Overload, ErrorKind::Overloaded, 15),
        (FetchError::RecentlyFailed, ErrorKind::NotFound, 30),
        (FetchError::Cancelled, ErrorKind::Cancelled, 25),
        (
            FetchError::BlockDecode(BlockError::Decrypt),
            ErrorKind::BadContent,
            6,
        ),
        (
            FetchError::InvalidMetadata(lichen_client::MetadataError::Invalid("x".into())),
            ErrorKind::BadContent,
            4,
        ),
        (
            FetchError::TooMuchRecursion { limit: 1 },
            ErrorKind::BadContent,
            9,
        ),
        (
            FetchError::TooManyPathComponents(vec![String::from("a")].into()),
            ErrorKind::BadPath,
            11,
        ),
        (
            FetchError::NotEnoughPathComponents,
            ErrorKind::NotInSite,
            24,
        ),
        (
            FetchError::NotInManifest(String::from("a").into()),
            ErrorKind::NotInSite,
            10,
        ),
        (
            FetchError::TooBig { size: 2, max: 1 },
            ErrorKind::TooBig,
            21,
        ),
        (
            FetchError::TooBigMetadata { size: 2, max: 1 },
            ErrorKind::TooBig,
            22,
        ),
        (
            FetchError::NotEnoughBlocks {
                segment: 0,
                have: 1,
                needed: 2,
                total: 3,
            },
            ErrorKind::NotFound,
            28,
        ),
        (
            FetchError::SplitfileDecode("x".into()),
            ErrorKind::BadContent,
            35,
        ),
        (FetchError::HashMismatch, ErrorKind::BadContent, 34),
        (
            FetchError::PermanentRedirect {
                new_uri: Box::new(uri),
            },
            ErrorKind::NewerEdition,
            27,
        ),
        (
            FetchError::Write(std::io::Error::other("x")),
            ErrorKind::LocalDisk,
            12,
        ),
        (FetchError::Internal("x".into()), ErrorKind::Internal, 17),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn insert_cases() -> Vec<(InsertError, ErrorKind, u32)> {
        vec![
            (
                InsertError::InvalidUri(String::from("x").into()),
                ErrorKind::BadUri,
                1,
            ),
            (
                InsertError::InvalidSite(String::from("x").into()),
                ErrorKind::BadUri,
                1,
            ),
            (
                InsertError::Read(std::io::Error::other("x")),
                ErrorKind::LocalDisk,
                2,
            ),
            (InsertError::Local("x".into()), ErrorKind::LocalDisk, 2),
            (InsertError::Internal("x".into()), ErrorKind::Internal, 3),
            (InsertError::Overload, ErrorKind::Overloaded, 4),
            (InsertError::RouteNotFound, ErrorKind::RouteNotFound, 5),
            (InsertError::Collision, ErrorKind::Collision, 9),
            (InsertError::Cancelled, ErrorKind::Cancelled, 10),
            (InsertError::TooBig("x".into()), ErrorKind::TooBig, 14),
        ]
    }

    #[test]
    fn every_fetch_error_keeps_freds_get_failed_code() {
        let mut kinds = BTreeSet::new();
        for (e, kind, code) in fetch_cases() {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(get_failed(&e).code(), code, "{e:?}");
            kinds.insert(kind);
        }
        // Every kind a fetch fails with is in the table.
        let not_fetch = [ErrorKind::Collision, ErrorKind::ShuttingDown];
        for k in ErrorKind::ALL {
            assert_eq!(kinds.contains(k), !not_fetch.contains(k), "{k:?}");
        }
    }

    #[test]
    fn every_insert_error_keeps_freds_put_failed_code() {
        let mut kinds = BTreeSet::new();
        for (e, kind, code) in insert_cases() {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(put_failed(&e).code(), code, "{e:?}");
            kinds.insert(kind);
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                ErrorKind::BadUri,
                ErrorKind::TooBig,
                ErrorKind::Collision,
                ErrorKind::Cancelled,
                ErrorKind::RouteNotFound,
                ErrorKind::Overloaded,
                ErrorKind::LocalDisk,
                ErrorKind::Internal,
            ]
        );
    }
}

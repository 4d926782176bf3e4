//! Freenet's numeric error codes, with fred's English descriptions.
//!
//! Numbers and texts come from fred: `ProtocolErrorMessage.java` (protocol
//! errors), `FetchException.FetchExceptionMode` and `InsertException.
//! InsertExceptionMode` with the `FetchException.longError.N` /
//! `shortError.N` strings of `freenet.l10n.en.properties` (GetFailed and
//! PutFailed). Clients match on the numbers (pyFreenet follows a GetFailed
//! with `Code=27` to its `RedirectURI`), so they must never change.

macro_rules! code_table {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $const_name:literal, $short:literal, $long:literal, $fatal:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $code, )*
        }

        impl $name {
            /// Every code, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The number sent on the wire (`Code=`).
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The code for a number, if it is one fred defines.
            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// fred's Java constant name, e.g. `DATA_NOT_FOUND`.
            pub fn constant_name(self) -> &'static str {
                match self { $( $name::$variant => $const_name, )* }
            }

            /// fred's short description (`ShortCodeDescription`).
            pub fn short_description(self) -> &'static str {
                match self { $( $name::$variant => $short, )* }
            }

            /// fred's long description (`CodeDescription`).
            pub fn description(self) -> &'static str {
                match self { $( $name::$variant => $long, )* }
            }

            /// Whether retrying cannot help (fred's `isFatal`; for
            /// protocol errors, whether fred closes the connection).
            pub fn is_fatal(self) -> bool {
                match self { $( $name::$variant => $fatal, )* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} ({})", self.description(), self.code())
            }
        }
    };
}

code_table! {
    /// `ProtocolError` codes (fred `ProtocolErrorMessage`). `is_fatal` is
    /// true only where fred closes the connection unconditionally.
    ProtocolErrorCode {
        /// The first message of a connection was not ClientHello.
        ClientHelloMustBeFirst = 1, "CLIENT_HELLO_MUST_BE_FIRST_MESSAGE", "ClientHello must be first message", "ClientHello must be first message", true;
        /// A second ClientHello.
        NoLateClientHellos = 2, "NO_LATE_CLIENT_HELLOS", "No late ClientHello's accepted", "No late ClientHello's accepted", false;
        /// The message could not be parsed.
        MessageParseError = 3, "MESSAGE_PARSE_ERROR", "Unknown message parsing error", "Unknown message parsing error", false;
        /// A Freenet URI could not be parsed.
        FreenetUriParseError = 4, "FREENET_URI_PARSE_ERROR", "Error parsing freenet URI", "Error parsing freenet URI", false;
        /// A required field is missing.
        MissingField = 5, "MISSING_FIELD", "Missing field", "Missing field", false;
        /// A numeric field is not a number (fred also uses it for a bad Persistence).
        ErrorParsingNumber = 6, "ERROR_PARSING_NUMBER", "Error parsing a numeric field", "Error parsing a numeric field", false;
        /// Unknown message, or a message that makes no sense here.
        InvalidMessage = 7, "INVALID_MESSAGE", "Don't know what to do with message", "Don't know what to do with message", false;
        /// A field has an invalid value.
        InvalidField = 8, "INVALID_FIELD", "Invalid field value", "Invalid field value", false;
        /// File not found, not a file, or not readable.
        FileNotFound = 9, "FILE_NOT_FOUND", "File not found, not a file or not readable", "File not found, not a file or not readable", false;
        /// The disk target of a download exists.
        DiskTargetExists = 10, "DISK_TARGET_EXISTS", "Disk target exists, refusing to overwrite for security reasons", "Disk target exists, refusing to overwrite for security reasons", false;
        /// Could not create a file.
        CouldNotCreateFile = 12, "COULD_NOT_CREATE_FILE", "Could not create file", "Could not create file", false;
        /// Could not write a file.
        CouldNotWriteFile = 13, "COULD_NOT_WRITE_FILE", "Could not write file", "Could not write file", false;
        /// Could not rename a file.
        CouldNotRenameFile = 14, "COULD_NOT_RENAME_FILE", "Could not rename file", "Could not rename file", false;
        /// No request with that identifier.
        NoSuchIdentifier = 15, "NO_SUCH_IDENTIFIER", "No such identifier", "No such identifier", false;
        /// Not supported.
        NotSupported = 16, "NOT_SUPPORTED", "Not supported", "Not supported", false;
        /// Internal error.
        InternalError = 17, "INTERNAL_ERROR", "Internal error", "Internal error", false;
        /// The node is shutting down.
        ShuttingDown = 18, "SHUTTING_DOWN", "Shutting down", "Shutting down", true;
        /// No such node identifier (unused by fred).
        NoSuchNodeIdentifier = 19, "NO_SUCH_NODE_IDENTIFIER", "No such nodeIdentifier", "No such nodeIdentifier", false;
        /// A URL could not be parsed.
        UrlParseError = 20, "URL_PARSE_ERROR", "Error parsing URL", "Error parsing URL", false;
        /// A node reference could not be parsed.
        RefParseError = 21, "REF_PARSE_ERROR", "Reference could not be parsed", "Reference could not be parsed", false;
        /// A file could not be read.
        FileParseError = 22, "FILE_PARSE_ERROR", "File could not be read", "File could not be read", false;
        /// The path is not a file.
        NotAFileError = 23, "NOT_A_FILE_ERROR", "Filepath is not a file", "Filepath is not a file", false;
        /// Access denied.
        AccessDenied = 24, "ACCESS_DENIED", "Access denied", "Access denied", false;
        /// Disk access without a successful TestDDA or with a wrong FileHash.
        DirectDiskAccessDenied = 25, "DIRECT_DISK_ACCESS_DENIED", "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?", "Direct Disk Access operation denied: did you send a FileHash field ? Did you use TestDDA?", false;
        /// Could not read a file.
        CouldNotReadFile = 26, "COULD_NOT_READ_FILE", "Could not read file", "Could not read file", false;
        /// A reference's signature failed to verify.
        RefSignatureInvalid = 27, "REF_SIGNATURE_INVALID", "Reference signature failed to verify", "Reference signature failed to verify", false;
        /// A node cannot peer with itself.
        CannotPeerWithSelf = 28, "CANNOT_PEER_WITH_SELF", "Node cannot peer with itself", "Node cannot peer with itself", false;
        /// Already a peer with that reference.
        DuplicatePeerRef = 29, "DUPLICATE_PEER_REF", "Node already has a peer with that ref", "Node already has a peer with that ref", false;
        /// Opennet is disabled.
        OpennetDisabled = 30, "OPENNET_DISABLED", "Opennet is currently disabled in the node's configuration", "Opennet is currently disabled in the node's configuration", false;
        /// Only available on a darknet peer.
        DarknetOnly = 31, "DARKNET_ONLY", "Operation only available on a darknet peer", "Operation only available on a darknet peer", false;
        /// No such plugin.
        NoSuchPlugin = 32, "NO_SUCH_PLUGIN", "No such plugin", "No such plugin", false;
        /// Persistence is disabled.
        PersistenceDisabled = 33, "PERSISTENCE_DISABLED", "Persistence disabled (e.g. encrypted queue waiting for password?)", "Persistence disabled (e.g. encrypted queue waiting for password?)", false;
        /// Too many files in one folder of a site insert.
        TooManyFilesInInsert = 34, "TOO_MANY_FILES_IN_INSERT", "Too many files in a single folder on a freesite insert", "Too many files in a single folder on a freesite insert", false;
        /// Bad MIME type.
        BadMimeType = 35, "BAD_MIME_TYPE", "Bad MIME type", "Bad MIME type", false;
        /// Not supported for that return type.
        WrongReturnType = 36, "WRONG_RETURN_TYPE", "Not supported for that return type", "Not supported for that return type", false;
        /// Disk I/O error.
        IoError = 37, "IO_ERROR", "Disk I/O error", "Disk I/O error", false;
        /// Plugins are disabled.
        PluginsDisabled = 38, "PLUGINS_DISABLED", "Plugins disabled", "Plugins disabled", false;
    }
}

code_table! {
    /// `GetFailed` codes (fred `FetchException.FetchExceptionMode`).
    FetchErrorCode {
        /// Too many levels of recursion into archives.
        TooDeepArchiveRecursion = 1, "TOO_DEEP_ARCHIVE_RECURSION", "Too deep archive recursion", "Too many levels of recursion into archives", true;
        /// Unknown splitfile metadata.
        UnknownSplitfileMetadata = 2, "UNKNOWN_SPLITFILE_METADATA", "Unknown splitfile metadata", "Don't know what to do with splitfile", true;
        /// Unknown metadata.
        UnknownMetadata = 3, "UNKNOWN_METADATA", "Unknown metadata", "Don't know what to do with metadata", true;
        /// Metadata could not be parsed.
        InvalidMetadata = 4, "INVALID_METADATA", "Invalid metadata", "Failed to parse metadata", true;
        /// Archive extraction failed.
        ArchiveFailure = 5, "ARCHIVE_FAILURE", "Archive failure", "Failure in extracting files from an archive", true;
        /// A block was found but failed to decode.
        BlockDecodeError = 6, "BLOCK_DECODE_ERROR", "Block decode error", "Failed to decode a block", true;
        /// Too many levels of split metadata.
        TooManyMetadataLevels = 7, "TOO_MANY_METADATA_LEVELS", "Too many metadata levels", "Too many levels of split metadata", true;
        /// Too many archive restarts.
        TooManyArchiveRestarts = 8, "TOO_MANY_ARCHIVE_RESTARTS", "Too many archive restarts", "Request was restarted too many times due to archives changing", true;
        /// Too many redirects (too much recursion).
        TooMuchRecursion = 9, "TOO_MUCH_RECURSION", "Too much recursion", "Too many redirects (too much recursion)", true;
        /// File not in archive.
        NotInArchive = 10, "NOT_IN_ARCHIVE", "Not in archive", "File not in archive", true;
        /// Too many path components (pyFreenet follows `RedirectURI`).
        TooManyPathComponents = 11, "TOO_MANY_PATH_COMPONENTS", "Too many path components", "Too many path components - not a manifest? Try removing one", true;
        /// Temporary files error.
        BucketError = 12, "BUCKET_ERROR", "Temporary files error", "Internal temp files error, maybe disk full or permissions problem?", true;
        /// Data not found.
        DataNotFound = 13, "DATA_NOT_FOUND", "Data not found", "Data not found", false;
        /// Route not found.
        RouteNotFound = 14, "ROUTE_NOT_FOUND", "Route not found", "Route not found - could not find enough nodes to be sure the data doesn't exist", false;
        /// A node was overloaded or timed out.
        RejectedOverload = 15, "REJECTED_OVERLOAD", "Timeout or overload", "A node was overloaded or timed out", false;
        /// Too many redirects.
        TooManyRedirects = 16, "TOO_MANY_REDIRECTS", "Too many redirects", "Too many redirects - loop?", true;
        /// Internal error.
        InternalError = 17, "INTERNAL_ERROR", "Internal error", "Internal error, probably a bug", true;
        /// Found but the transfer failed.
        TransferFailed = 18, "TRANSFER_FAILED", "Transfer failed", "Found the file, but lost it while receiving the data", false;
        /// Splitfile error.
        SplitfileError = 19, "SPLITFILE_ERROR", "Splitfile error", "Splitfile error", false;
        /// Invalid URI.
        InvalidUri = 20, "INVALID_URI", "Invalid URI", "Invalid URI", true;
        /// Larger than MaxSize.
        TooBig = 21, "TOO_BIG", "Too big", "Too big", true;
        /// Metadata too big.
        TooBigMetadata = 22, "TOO_BIG_METADATA", "Metadata too big", "Metadata too big", true;
        /// Too many blocks per segment.
        TooManyBlocksPerSegment = 23, "TOO_MANY_BLOCKS_PER_SEGMENT", "Too many blocks per segment", "Too many blocks per segment", true;
        /// Not enough path components and no default document.
        NotEnoughPathComponents = 24, "NOT_ENOUGH_PATH_COMPONENTS", "Not enough path components", "Give more path components in URI", true;
        /// Cancelled.
        Cancelled = 25, "CANCELLED", "Cancelled by caller", "Cancelled", true;
        /// Archive restarted.
        ArchiveRestart = 26, "ARCHIVE_RESTART", "Archive restarted", "Archive restarted", true;
        /// A newer USK edition exists; `RedirectURI` names it (HTTP 301).
        PermanentRedirect = 27, "PERMANENT_REDIRECT", "New URI", "Permanent redirect: use the new URI", true;
        /// Some blocks found, not enough to decode.
        AllDataNotFound = 28, "ALL_DATA_NOT_FOUND", "Not enough data found", "Some of the data was found, but not enough to fetch the key.", false;
        /// MIME type not in the allowed list.
        WrongMimeType = 29, "WRONG_MIME_TYPE", "Wrong content type", "Wrong content type: The key was not in the list of allowed content types provided by the client", true;
        /// Recently failed.
        RecentlyFailed = 30, "RECENTLY_FAILED", "Data not found (recently failed)", "The request was terminated by a node because it had recently received a request for the same key and that request had failed", false;
        /// Content filter failed.
        ContentValidationFailed = 31, "CONTENT_VALIDATION_FAILED", "Content sanitization failed", "The page (or file) appears to be corrupt, but might be dangerous; you should not open this page unless you know what you are doing. Normally Freenet can filter pages of this type, but this page is so broken that we are unable to make it safe. If you open it anyway it won't be filtered, so it may give away your IP address.", true;
        /// Content filter does not know the type.
        ContentValidationUnknownMime = 32, "CONTENT_VALIDATION_UNKNOWN_MIME", "Content filter encountered unknown type", "The data is of an unknown type which might be dangerous", true;
        /// Content filter knows the type is dangerous.
        ContentValidationBadMime = 33, "CONTENT_VALIDATION_BAD_MIME", "Content filter encountered dangerous type", "The data is of a type known to be dangerous, so the content filter has stopped the request", true;
        /// Hash in metadata does not match the data.
        ContentHashFailed = 34, "CONTENT_HASH_FAILED", "Content does not match hashes in metadata", "The hashes in the metadata do not match the actual data. The data may have been corrupted during download, or it may have been broken when it was inserted for example if the node inserting was broken or the data changed on disk mid-insert.", true;
        /// FEC decoding produced a block not in the key list.
        SplitfileDecodeError = 35, "SPLITFILE_DECODE_ERROR", "Splitfile decode error", "Splitfile decoding produced a data block that wasn't in the original list of keys. It is likely that the insert was corrupted, but it is possible that this is a bug or hardware failure on your computer.", true;
        /// Extension incompatible with the MIME type.
        MimeIncompatibleWithExtension = 36, "MIME_INCOMPATIBLE_WITH_EXTENSION", "Filename doesn't match MIME type for filtered download to disk", "The file claims to have a safe MIME type but is being downloaded to disk with a file extension not compatible with that type. For example, \"virus.exe\" claiming to be a text file would trigger this error. This might just be a bad filename, but it might be a malicious file trying to get past the content filter.", true;
        /// Not enough disk space.
        NotEnoughDiskSpace = 37, "NOT_ENOUGH_DISK_SPACE", "Not enough disk space", "There is not enough disk space to start a download or to start the next stage of a download. Please free up some disk space and restart the request.", true;
    }
}

code_table! {
    /// `PutFailed` codes (fred `InsertException.InsertExceptionMode`).
    InsertErrorCode {
        /// The URI cannot be used.
        InvalidUri = 1, "INVALID_URI", "Invalid URI", "Caller supplied a URI we cannot use", true;
        /// Temporary files error.
        BucketError = 2, "BUCKET_ERROR", "Temp files error", "Internal bucket error: out of disk space/permissions problem?", true;
        /// Internal error.
        InternalError = 3, "INTERNAL_ERROR", "Internal error", "Internal error", true;
        /// Downstream timeout or overload.
        RejectedOverload = 4, "REJECTED_OVERLOAD", "Timeout or overload", "A downstream node timed out or was severely overloaded", false;
        /// Could not reach enough nodes.
        RouteNotFound = 5, "ROUTE_NOT_FOUND", "Route not found", "Could not propagate the insert to enough nodes (normal on small networks, try fetching it anyway)", false;
        /// Fatal errors in a splitfile insert.
        FatalErrorsInBlocks = 6, "FATAL_ERRORS_IN_BLOCKS", "Some blocks failed fatally", "Fatal errors in a splitfile insert", true;
        /// Blocks ran out of retries.
        TooManyRetriesInBlocks = 7, "TOO_MANY_RETRIES_IN_BLOCKS", "Some blocks ran out of retries", "Could not insert splitfile: ran out of retries (nonfatal errors)", false;
        /// The insert could not leave the node.
        RouteReallyNotFound = 8, "ROUTE_REALLY_NOT_FOUND", "Request could not leave the node", "Insert could not leave this Freenet node at all", false;
        /// Collided with different existing data (SSK/KSK write-once).
        Collision = 9, "COLLISION", "Collided with existing data", "Insert collided with different, pre-existing data at the same key", true;
        /// Cancelled.
        Cancelled = 10, "CANCELLED", "Cancelled", "Cancelled by user", true;
        /// A meta string (`/`) in the key.
        MetaStringsNotSupported = 11, "META_STRINGS_NOT_SUPPORTED", "Meta string used in the key", "Path component (most likely a '/') used in the URI", true;
        /// Bad binary blob.
        BinaryBlobFormatError = 12, "BINARY_BLOB_FORMAT_ERROR", "Binary blob format error", "Binary blob format error", true;
        /// Too many files in one folder.
        TooManyFiles = 13, "TOO_MANY_FILES", "Too many files in a single folder", "Too many files in a single folder on a freesite insert", false;
        /// File too large.
        TooBig = 14, "TOO_BIG", "File is too large", "Uploading files larger than 64TB not supported at present", true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_fred() {
        assert_eq!(ProtocolErrorCode::ClientHelloMustBeFirst.code(), 1);
        assert_eq!(ProtocolErrorCode::MissingField.code(), 5);
        assert_eq!(ProtocolErrorCode::DirectDiskAccessDenied.code(), 25);
        assert_eq!(FetchErrorCode::DataNotFound.code(), 13);
        assert_eq!(FetchErrorCode::PermanentRedirect.code(), 27);
        assert_eq!(FetchErrorCode::AllDataNotFound.code(), 28);
        assert_eq!(InsertErrorCode::Collision.code(), 9);
        assert_eq!(ProtocolErrorCode::from_code(11), None);
        for c in FetchErrorCode::ALL {
            assert_eq!(FetchErrorCode::from_code(c.code()), Some(*c));
        }
        assert_eq!(FetchErrorCode::ALL.len(), 37);
        assert_eq!(InsertErrorCode::ALL.len(), 14);
        assert_eq!(ProtocolErrorCode::ALL.len(), 37);
    }
}

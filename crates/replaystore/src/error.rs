//! The one error type of the crate. Every variant carries the context an operator needs to act:
//! the path, segment id and offset of a corrupt block, the field of an invalid chunk.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which one and on what path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// Another process (or another `Store` in this process) owns the directory.
    #[error("store directory {path} is locked by another process")]
    Locked { path: PathBuf },

    /// A chunk handed to `append` was refused; nothing of it was stored.
    #[error("invalid chunk: field `{field}` {reason}")]
    InvalidChunk { field: &'static str, reason: String },

    /// A chunk's SDK timestamp cannot be trusted: not a time at all, or outside the window the
    /// store accepts around the chunk's arrival (`Config::max_ts_behind` / `max_ts_ahead`),
    /// after correcting the client's clock skew from its send time when one was given. Nothing
    /// of the chunk was stored; counted in `Stats::chunks_refused_timestamp`.
    #[error("chunk refused: `{field}` = {value_ms} ms {reason} (store clock at arrival: {arrival_ms} ms)")]
    Timestamp {
        field: &'static str,
        value_ms: i64,
        arrival_ms: i64,
        reason: String,
    },

    /// A `Config` value is out of range.
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// Bytes on disk failed a check (checksum, magic, bounds). The rest of the store is unaffected.
    #[error("corrupt data in segment {segment} ({path}) at offset {offset}: {reason}")]
    Corrupt {
        segment: u64,
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A flush round failed; nothing appended before the failing call is claimed durable.
    #[error("flush failed, data not durable: {0}")]
    FlushFailed(String),

    /// The chunk belongs to a deleted session, or to a person deleted after its first timestamp;
    /// it was dropped (and counted in `Stats::chunks_refused_deleted`).
    #[error("chunk refused: {reason}")]
    Deleted { reason: String },

    /// A request to the object store (remote tier) failed; `context` says which and on what key.
    #[error("object store: {context}: {source}")]
    Remote {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The store is shutting down or a previous fatal error closed it.
    #[error("store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidChunk {
            field,
            reason: reason.into(),
        }
    }
}

/// `map_err` helper: `file.sync_data().ctx(|| format!("fsync {path:?}"))?`.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

//! replaystore: an embedded, log-structured store for session-recording blobs (opaque
//! payloads; replaystore-posthog gives rrweb recordings their meaning).
//!
//! ```no_run
//! use replaystore::{Chunk, Config, Store};
//! let store = Store::open("/tmp/replays", Config::default())?;
//! store.append(Chunk {
//!     team: 1,
//!     session_id: "0192d3c0-...".into(),
//!     person: "user-42".into(),
//!     window_id: None,
//!     first_ts_ms: 1_700_000_000_000,
//!     last_ts_ms: 1_700_000_002_000,
//!     sent_at_ms: None,
//!     payload: br#"[{"type":4,"data":{},"timestamp":1700000000000}]"#.to_vec(),
//! })?;
//! store.flush()?; // durable from here on
//! // `None` means never stored, expired by retention, or erased by a deletion.
//! if let Some(session) = store.read_session(1, "0192d3c0-...")? {
//!     assert_eq!(session.chunks.len(), 1);
//! }
//! # Ok::<(), replaystore::Error>(())
//! ```
//!
//! See docs/design.md for the architecture and durability contract, docs/format.md for bytes,
//! docs/scale-out.md for the object-storage tier (`Config::with_remote(RemoteConfig::new("s3://..."))`).

// No engine function over 70 lines (threshold in clippy.toml): one screen, one sitting.
#![warn(clippy::too_many_lines)]

pub mod annotation;
mod background;
pub mod chunk;
mod compaction;
mod compress;
pub mod config;
mod deletion;
pub mod error;
mod failpoint;
pub mod filter;
mod flush;
pub mod format;
pub mod fs;
mod maintenance;
mod read;
mod recovery;
pub mod remote;
mod retention;
mod seek;
mod segment;
mod segment_set;
mod session_index;
mod signal;
mod source;
pub mod storage;
mod store;
mod tombstone;
mod units;
mod verify;
mod write_buffer;
mod writer;

/// Whether this build has crash points (the `failpoints` feature): tests that kill a process at
/// one check it.
#[doc(hidden)]
pub const FAILPOINTS: bool = cfg!(feature = "failpoints");
/// A crash point an embedder places in its own code (the Kafka consumer's, between an upload
/// and its commit): aborts where `REPLAYSTORE_CRASH_AT` says, with the `failpoints` feature;
/// nothing without it.
pub use failpoint::crash_point;

pub use annotation::{AnnotationFilter, AnnotationPart, Annotator, BlockContext, Facets};
pub use chunk::Chunk;
pub use compaction::CompactionReport;
pub use config::{Clock, Config, ManualClock, PayloadTransform, SystemClock};
pub use error::{Error, Result};
pub use filter::{Page, SessionFilter, SortBy};
pub use read::{SeekRead, SessionData, SessionSummary, Stats, StoredChunk};
pub use recovery::RecoveryReport;
pub use remote::{RemoteConfig, RemoteStatus, SyncReport, TierStats};
pub use retention::{RetentionReport, DAY_MS};
pub use seek::ReadTrace;
pub use segment::RemoteRead;
pub use session_index::SessionIndexReport;
pub use source::SourceOffsets;
pub use store::Store;
pub use tombstone::{DeletionStatus, Purged, Target, Tombstone};
pub use verify::VerifyReport;

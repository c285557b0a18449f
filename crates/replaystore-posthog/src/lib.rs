//! PostHog's side of replaystore: what posthog-js sends (`posthog`: request bodies in every
//! encoding the SDK uses, `$snapshot` events to chunks, its in-event gzip normalized away) and
//! what rrweb events mean (`rrweb::RrwebAnnotator`: the session summaries PostHog lists
//! recordings by, kept by the engine as opaque annotations; `listing`: those summaries decoded
//! for listings and filters; `markers`: a session's timeline for the replay page; `playback`:
//! its events from a moment on). The engine stores opaque payloads; this crate gives them meaning.

/// The non-validating scanner the analyzer (and the CLI's ingest, to split JSON lines into
/// events before each is parsed) step over values with.
pub mod defaults;
pub mod jsonscan;
pub mod listing;
pub mod markers;
pub mod playback;
pub mod posthog;
pub mod rrweb;
pub mod summary;

pub use defaults::configure;
pub use listing::{ActivityFilter, ListQuery, SessionRow};
pub use posthog::Normalize;
pub use rrweb::RrwebAnnotator;
pub use summary::Summary;

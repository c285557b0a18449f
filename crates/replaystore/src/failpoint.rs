//! Crash points for tests, in the manner of raft-engine's fail points: built with the cargo
//! feature `failpoints`, the process aborts at the point named by the environment variable
//! `REPLAYSTORE_CRASH_AT` (a real crash: no destructor, no flush), so a test can run a
//! `replaystore` process up to a precise step and check what the next open makes of the
//! directory. Without the feature (release builds) a crash point is an empty inline function:
//! no environment variable is read.

#[cfg(feature = "failpoints")]
static CRASH_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Aborts the process if `REPLAYSTORE_CRASH_AT` equals `name`.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(name: &str) {
    let at = CRASH_AT.get_or_init(|| std::env::var("REPLAYSTORE_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        eprintln!("replaystore: crash point {name} reached, aborting");
        std::process::abort();
    }
}

/// Crash points are compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}

//! Crash points for tests, in the manner of raft-engine's fail points: when the environment
//! variable `REPLAYSTORE_CRASH_AT` names a point, the process aborts there (a real crash: no
//! destructor, no flush), so a test can run a `replaystore` process up to a precise step and
//! check what the next open makes of the directory. Costs one load of a cached value per call.

use std::sync::OnceLock;

static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if `REPLAYSTORE_CRASH_AT` equals `name`.
pub(crate) fn crash_point(name: &str) {
    let at = CRASH_AT.get_or_init(|| std::env::var("REPLAYSTORE_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        eprintln!("replaystore: crash point {name} reached, aborting");
        std::process::abort();
    }
}

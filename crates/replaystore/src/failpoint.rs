//! Crash points for tests, in the manner of raft-engine's fail points: built with the cargo
//! feature `failpoints`, the process aborts at the point named by the environment variable
//! `REPLAYSTORE_CRASH_AT` (a real crash: no destructor, no flush), so a test can run a
//! `replaystore` process up to a precise step and check what the next open makes of the
//! directory. Without the feature (release builds) a crash point is an empty inline function:
//! no environment variable is read.

/// The crash point named by `REPLAYSTORE_CRASH_AT`: `NAME` (its first pass) or `NAME@N` (its
/// N-th pass, counted from 1), so that a test can let a few flushes through before the one it
/// kills.
#[cfg(feature = "failpoints")]
struct CrashAt {
    name: String,
    pass: u64,
    passes: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "failpoints")]
static CRASH_AT: std::sync::OnceLock<Option<CrashAt>> = std::sync::OnceLock::new();

#[cfg(feature = "failpoints")]
fn parse_crash_at(v: &str) -> CrashAt {
    let (name, pass) = match v.rsplit_once('@') {
        Some((name, n)) => (name, n.parse().unwrap_or(1)),
        None => (v, 1),
    };
    CrashAt {
        name: name.to_string(),
        pass: pass.max(1),
        passes: std::sync::atomic::AtomicU64::new(0),
    }
}

/// Aborts the process on the pass of `name` that `REPLAYSTORE_CRASH_AT` names.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    let at = CRASH_AT.get_or_init(|| {
        std::env::var("REPLAYSTORE_CRASH_AT")
            .ok()
            .map(|v| parse_crash_at(&v))
    });
    let Some(at) = at.as_ref().filter(|a| a.name == name) else {
        return;
    };
    let pass = at.passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if pass == at.pass {
        eprintln!("replaystore: crash point {name} reached (pass {pass}), aborting");
        std::process::abort();
    }
}

/// Crash points are compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

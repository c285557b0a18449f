//! Background work runs at a lower priority than ingestion (`Config::background_nice`): the
//! maintenance thread's nice value, read from /proc, is the opener's plus the configured steps.

#[cfg(target_os = "linux")]
#[test]
fn the_maintenance_thread_runs_at_the_configured_nice_value(
) -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir()?;
    let config = replaystore::Config::default()
        .with_maintenance_interval(Some(Duration::from_secs(3600)))
        .with_background_nice(7);
    // SAFETY: getpriority(PRIO_PROCESS, 0) reads the calling thread's nice value.
    let opener = i64::from(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
    let expected = (opener + 7).min(19);
    let store = replaystore::Store::open(dir.path(), config)?;
    // Threads name themselves and lower their priority as they start: poll until both show.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (maintenance, flusher) = loop {
        let seen = (
            thread_nice("replaystore-mai")?,
            thread_nice("replaystore-flu")?,
        );
        if seen.0 == Some(expected) && seen.1.is_some() || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        maintenance,
        Some(expected),
        "maintenance thread's nice value (opener at {opener})"
    );
    assert_eq!(
        flusher,
        Some(opener),
        "the flusher keeps the opener's priority"
    );
    store.close()?;
    Ok(())
}

/// The nice value of this process's thread whose name (15 bytes at most) is `comm`.
#[cfg(target_os = "linux")]
fn thread_nice(comm: &str) -> std::io::Result<Option<i64>> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        if std::fs::read_to_string(path.join("comm"))?.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat"))?;
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        return Ok(after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok()));
    }
    Ok(None)
}

//! Source offsets (`Store::append_from_source`) are kept with the chunks: they survive a
//! reopen and a regroup, and leave with the data when it is erased.

use std::sync::Arc;
use std::time::Duration;

use replaystore::{Chunk, Config, ManualClock, SourceOffsets, Store};

const T0: i64 = 1_795_000_000_000;

fn chunk(session: &str, i: i64) -> Chunk {
    Chunk {
        team: 1,
        session_id: session.into(),
        person: format!("person-{session}"),
        window_id: None,
        first_ts_ms: T0 + i * 1000,
        last_ts_ms: T0 + i * 1000 + 500,
        sent_at_ms: None,
        payload: format!(r#"[{{"type":3,"i":{i}}}]"#).into_bytes(),
    }
}

fn config(clock: &Arc<ManualClock>) -> Config {
    Config::default()
        .with_clock(clock.clone())
        .with_maintenance_interval(None)
        .with_regroup_idle(Duration::from_secs(60))
}

#[test]
fn offsets_survive_reopen_and_regroup_and_leave_with_erased_data() -> replaystore::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| replaystore::Error::Io {
        context: "tempdir".into(),
        source: e,
    })?;
    let clock = Arc::new(ManualClock::new(T0 + 10_000));
    let store = Store::open(dir.path(), config(&clock))?;
    // Offsets 0..10 alternate between two sessions; an unsourced append between them.
    for o in 0..10u64 {
        let session = if o % 2 == 0 { "a" } else { "b" };
        store.append_from_source(chunk(session, o as i64), o)?;
    }
    store.append(chunk("c", 0))?;
    store.flush()?;
    let all = SourceOffsets {
        max: Some(9),
        held: (0..10).collect(),
    };
    assert_eq!(store.source_offsets(0)?, all);
    assert_eq!(store.source_offsets(7)?.held, vec![7, 8, 9]);
    store.close()?;

    let store = Store::open(dir.path(), config(&clock))?;
    assert_eq!(store.source_offsets(0)?, all, "after reopen");
    // Idle sessions are regrouped into new blocks: the offsets go with their chunks.
    store.seal_active()?;
    clock.advance(Duration::from_secs(3600));
    store.compact()?;
    assert!(store.stats()?.bytes_regrouped > 0, "the pass regrouped");
    assert_eq!(store.source_offsets(0)?, all, "after regroup");
    // Erasing session b removes its chunks, and with them its offsets.
    store.delete_session(1, "b")?;
    store.compact()?;
    let left = store.source_offsets(0)?;
    assert_eq!(left.held, vec![0, 2, 4, 6, 8]);
    assert_eq!(left.max, Some(8));
    store.close()
}

//! What a player needs to start at a moment: the session's events as plain rrweb JSON
//! (posthog-js's in-event gzip inflated), from the last full snapshot at or before that
//! moment. rrweb rebuilds the page from a full snapshot (type 2) and the meta event (type 4)
//! before it; everything earlier is not needed to show what came after.

use replaystore::{PayloadTransform, StoredChunk};

use crate::jsonscan::{members, number};
use crate::posthog::{payload_events, Normalize};

const META: i64 = 4;
const FULL_SNAPSHOT: i64 = 2;

/// One event's exact JSON text, with the two fields a seek looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainEvent {
    pub kind: Option<i64>,
    pub ts_ms: i64,
    pub json: String,
}

/// The events of `chunks` in order, as rrweb-player plays them. A chunk whose payload is not
/// an array of events contributes none (the store keeps what it was sent; a player cannot use
/// it).
pub fn plain_events(chunks: &[StoredChunk]) -> Vec<PlainEvent> {
    let mut out = Vec::new();
    for c in chunks {
        let plain = Normalize.transform(&c.payload);
        let Ok(events) = payload_events(plain.as_deref().unwrap_or(&c.payload)) else {
            continue;
        };
        for e in events {
            let (mut kind, mut ts) = (None, 0.0);
            members(e.get().as_bytes(), 0, &mut |k, v| match k {
                b"type" => kind = number(v).map(|n| n as i64),
                b"timestamp" => ts = number(v).unwrap_or(0.0),
                _ => {}
            });
            out.push(PlainEvent {
                kind,
                ts_ms: ts as i64,
                json: e.get().to_string(),
            });
        }
    }
    out
}

/// The events a player needs to show `from_ms` and what follows: the meta event before the
/// last full snapshot at or before `from_ms`, that snapshot, and every event after it. All of
/// them when no full snapshot is that early (the player starts at the beginning).
pub fn from_full_snapshot(mut events: Vec<PlainEvent>, from_ms: i64) -> Vec<PlainEvent> {
    let Some(snap) = events
        .iter()
        .rposition(|e| e.kind == Some(FULL_SNAPSHOT) && e.ts_ms <= from_ms)
    else {
        return events;
    };
    let meta = events[..snap].iter().rposition(|e| e.kind == Some(META));
    let mut out = events.split_off(snap);
    if let Some(m) = meta {
        out.insert(0, events.swap_remove(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(payload: &str) -> StoredChunk {
        StoredChunk {
            window_id: None,
            first_ts_ms: 0,
            last_ts_ms: 0,
            arrival_ms: 0,
            keyframe_ms: None,
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn starts_at_the_meta_and_full_snapshot_at_or_before_the_moment() {
        let chunks = [
            chunk(
                r#"[{"type":4,"data":{"href":"a"},"timestamp":100},{"type":2,"data":{},"timestamp":101},{"type":3,"data":{},"timestamp":150}]"#,
            ),
            chunk(
                r#"[{"type":4,"data":{"href":"b"},"timestamp":200},{"type":3,"data":{},"timestamp":201},{"type":2,"data":{},"timestamp":202},{"type":3,"data":{},"timestamp":250}]"#,
            ),
        ];
        let ts = |v: &[PlainEvent]| v.iter().map(|e| e.ts_ms).collect::<Vec<_>>();
        let all = plain_events(&chunks);
        assert_eq!(ts(&all), [100, 101, 150, 200, 201, 202, 250]);
        assert_eq!(
            ts(&from_full_snapshot(all.clone(), 99)),
            ts(&all),
            "before any"
        );
        assert_eq!(
            ts(&from_full_snapshot(all.clone(), 150)),
            [100, 101, 150, 200, 201, 202, 250]
        );
        assert_eq!(ts(&from_full_snapshot(all.clone(), 202)), [200, 202, 250]);
        let late = from_full_snapshot(all, 10_000);
        assert_eq!(ts(&late), [200, 202, 250]);
        assert!(late[0].json.contains(r#""href":"b""#));
    }
}

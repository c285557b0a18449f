//! PostHog capture's Kafka message on `session_recording_snapshot_item_events` (its
//! `CapturedEvent`, keyed by session id): `{uuid, distinct_id, ip, data, now, sent_at, token,
//! event}`, where `data` is the event serialized a second time as a JSON string: capture merges
//! a request's `$snapshot` events into one `$snapshot_items` event. `data` may also hold a
//! posthog-js `$snapshot` event as `/s/` receives it, or be the event object itself: all three
//! decode through the same wire decoder as `/s/` and `ingest`.

use serde::Deserialize;
use serde_json::value::RawValue;

use replaystore::Chunk;
use replaystore_posthog::posthog::{parse_event, sent_at_ms, WireError};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    token: Option<String>,
    /// Capture's clock when it received the request (RFC 3339).
    #[serde(borrow, default)]
    now: Option<&'a RawValue>,
    /// The client's clock when it sent the request, as capture read it.
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
}

/// One message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The project token (the envelope's, else the event's), for the caller to map to a team.
    pub token: Option<String>,
    /// The chunk, team 0; `sent_at_ms` is the client's send time when the message has one.
    pub chunk: Chunk,
    /// Capture's clock at receipt (`now`), when given: the consumer measures the client's skew
    /// against it, not against its own clock, which is later by the time spent in Kafka.
    pub received_ms: Option<i64>,
}

/// Decodes one message value; `Ok(None)` for an event that is not a recording.
pub fn decode(value: &[u8]) -> Result<Option<Decoded>, WireError> {
    let env: Envelope = serde_json::from_slice(value)
        .map_err(|e| WireError::Invalid(format!("invalid capture envelope: {e}")))?;
    let text;
    let json = if env.data.get().starts_with('"') {
        text = serde_json::from_str::<String>(env.data.get())
            .map_err(|e| WireError::Invalid(format!("`data` is not a JSON string: {e}")))?;
        text.as_str()
    } else {
        env.data.get()
    };
    let Some((event_token, mut chunk)) = parse_event(json)? else {
        return Ok(None);
    };
    let time = |field: &str, v: Option<&RawValue>| match v {
        Some(v) => sent_at_ms(field, v.get().as_bytes()),
        None => Ok(None),
    };
    if let Some(sent) = time("sent_at", env.sent_at)? {
        chunk.sent_at_ms = Some(sent);
    }
    Ok(Some(Decoded {
        token: env.token.or(event_token),
        chunk,
        received_ms: time("now", env.now)?,
    }))
}

impl Decoded {
    /// The chunk to append when the store's clock reads `arrival_ms`: its send time moved by
    /// the time the message spent between capture and this consumer, so that the skew the
    /// store measures (arrival - send) is capture's (receipt - send) and a backlog is not
    /// mistaken for a fast client clock. `fallback_received_ms` (the Kafka message timestamp)
    /// stands in for a missing `now`.
    pub fn into_chunk(self, arrival_ms: i64, fallback_received_ms: Option<i64>) -> Chunk {
        let mut chunk = self.chunk;
        if let (Some(sent), Some(received)) =
            (chunk.sent_at_ms, self.received_ms.or(fallback_received_ms))
        {
            chunk.sent_at_ms = Some(sent.saturating_add(arrival_ms.saturating_sub(received)));
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"event":"$snapshot_items","properties":{"distinct_id":"p1","$session_id":"s1","$window_id":"w1","$snapshot_source":"web","$snapshot_items":[{"type":4,"data":{},"timestamp":1000},{"type":3,"data":{},"timestamp":2000}],"$lib":"web"}}"#;

    fn envelope(data: &str, extra: &str) -> String {
        format!(
            r#"{{"uuid":"0190","distinct_id":"p1","ip":"127.0.0.1","data":{data},"now":"1970-01-01T00:00:05.000Z","token":"phc_a","event":"$snapshot_items"{extra}}}"#
        )
    }

    #[test]
    fn capture_messages_decode_to_chunks() -> Result<(), Box<dyn std::error::Error>> {
        let quoted = serde_json::to_string(EV)?;
        let msg = envelope(&quoted, r#","sent_at":"1970-01-01T00:00:04.000Z""#);
        let d = decode(msg.as_bytes())?.ok_or("a recording")?;
        assert_eq!(d.token.as_deref(), Some("phc_a"));
        assert_eq!(
            (d.chunk.session_id.as_str(), d.chunk.person.as_str()),
            ("s1", "p1")
        );
        assert_eq!((d.chunk.first_ts_ms, d.chunk.last_ts_ms), (1000, 2000));
        assert_eq!(
            (d.chunk.sent_at_ms, d.received_ms),
            (Some(4000), Some(5000))
        );
        assert!(d.chunk.payload.starts_with(br#"[{"type":4"#));
        // Consumed 60 s after capture: the skew the store will see is capture's (1 s).
        let c = d.clone().into_chunk(65_000, None);
        assert_eq!(c.sent_at_ms, Some(64_000));
        // The event as an object, and a posthog-js `$snapshot` event, decode the same.
        let object = decode(envelope(EV, "").as_bytes())?.ok_or("object")?;
        assert_eq!(object.chunk.payload, d.chunk.payload);
        assert_eq!(object.chunk.sent_at_ms, None);
        let snapshot = EV
            .replace(r#""event":"$snapshot_items""#, r#""event":"$snapshot""#)
            .replace(r#""$snapshot_items":["#, r#""$snapshot_data":["#);
        let js = decode(envelope(&snapshot, "").as_bytes())?.ok_or("js")?;
        assert_eq!(js.chunk, object.chunk);
        Ok(())
    }

    #[test]
    fn other_events_are_skipped_and_bad_ones_refused() {
        let pageview = envelope(r#"{"event":"$pageview","properties":{}}"#, "");
        assert_eq!(decode(pageview.as_bytes()), Ok(None));
        assert!(decode(b"not json").is_err());
        assert!(decode(envelope("\"{\\\"event\\\":", "").as_bytes()).is_err());
        let bad_time = envelope(EV, r#","sent_at":"yesterday""#);
        let e = decode(bad_time.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("sent_at"), "{e}");
    }
}

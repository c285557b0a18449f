//! The unit of ingestion: one chunk of one session, as an SDK sends it, and its validation.

use std::time::Duration;

use crate::error::{Error, Result};

/// Longest accepted `session_id`, in bytes.
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Longest accepted `person` (distinct id), in bytes.
pub const MAX_PERSON_BYTES: usize = 256;
/// Longest accepted `window_id`, in bytes.
pub const MAX_WINDOW_ID_BYTES: usize = 128;

/// One chunk of a recording. The engine stores `payload` as opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub team: u64,
    pub session_id: String,
    pub person: String,
    pub window_id: Option<String>,
    /// The SDK's timestamps (ms since the epoch) of the chunk's first and last event, by the
    /// client's clock: data for ordering and playback, validated against the store's clock
    /// when the chunk arrives (see `Config::max_ts_behind`), never trusted for retention or
    /// erasure.
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// When the client sent the chunk, by the client's own clock (for the SDK the
    /// replaystore-posthog crate decodes: a query parameter or a body field). When given, the
    /// store measures the client's clock skew from it and shifts `first_ts_ms`/`last_ts_ms` by
    /// it.
    pub sent_at_ms: Option<i64>,
    pub payload: Vec<u8>,
}

impl Chunk {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<()> {
        check_id("session_id", &self.session_id, MAX_SESSION_ID_BYTES)?;
        check_id("person", &self.person, MAX_PERSON_BYTES)?;
        if let Some(w) = &self.window_id {
            if w.len() > MAX_WINDOW_ID_BYTES {
                return Err(Error::invalid(
                    "window_id",
                    format!("is {} bytes, more than {MAX_WINDOW_ID_BYTES}", w.len()),
                ));
            }
        }
        if self.first_ts_ms > self.last_ts_ms {
            return Err(Error::invalid(
                "first_ts_ms",
                format!(
                    "({}) is after last_ts_ms ({})",
                    self.first_ts_ms, self.last_ts_ms
                ),
            ));
        }
        if self.payload.len() > max_payload_bytes {
            return Err(Error::invalid(
                "payload",
                format!(
                    "is {} bytes, more than max_payload_bytes ({max_payload_bytes})",
                    self.payload.len()
                ),
            ));
        }
        Ok(())
    }

    /// Bytes this chunk holds in the write buffer (payload plus identifiers).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.payload.len()
            + self.session_id.len()
            + self.person.len()
            + self.window_id.as_ref().map_or(0, |w| w.len())
            + 64
    }
}

/// The rules `append` applies to a chunk's SDK timestamps, from the `Config`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockRules {
    pub max_behind: Duration,
    pub max_ahead: Duration,
    pub skew_tolerance: Duration,
}

/// A chunk as the store accepted it: its timestamps corrected for the client's clock skew and
/// validated, stamped with the store's clock.
#[derive(Debug, Clone)]
pub(crate) struct Stamped {
    pub chunk: Chunk,
    pub stamp: Stamp,
}

impl Stamped {
    /// Corrects and validates `chunk`'s timestamps against `arrival_ms` (the store's clock now).
    /// With a send time, a client clock off by more than the tolerance is corrected by shifting
    /// both timestamps by the same offset (relative timing intact).
    /// Then both must lie in [arrival - max_behind, arrival + max_ahead].
    pub fn accept(mut chunk: Chunk, arrival_ms: i64, rules: &ClockRules) -> Result<Stamped> {
        let mut offset = 0i64;
        if let Some(sent) = chunk.sent_at_ms {
            let skew = arrival_ms
                .checked_sub(sent)
                .ok_or_else(|| Error::Timestamp {
                    field: "sent_at_ms",
                    value_ms: sent,
                    arrival_ms,
                    reason: "is not a time the store can compare with its clock".into(),
                })?;
            if skew.unsigned_abs() > rules.skew_tolerance.as_millis() as u64 {
                offset = skew;
                chunk.first_ts_ms = shifted("first_ts_ms", chunk.first_ts_ms, skew, arrival_ms)?;
                chunk.last_ts_ms = shifted("last_ts_ms", chunk.last_ts_ms, skew, arrival_ms)?;
            }
        }
        let behind = rules.max_behind.as_millis() as i64;
        let ahead = rules.max_ahead.as_millis() as i64;
        let no_send_time = chunk.sent_at_ms.is_none();
        let why = |what: String| match no_send_time {
            true => format!("{what}; the chunk gave no send time to correct its clock by"),
            false => format!("{what}, even after correcting the client's clock by {offset} ms"),
        };
        if chunk.first_ts_ms < arrival_ms.saturating_sub(behind) {
            return Err(Error::Timestamp {
                field: "first_ts_ms",
                value_ms: chunk.first_ts_ms,
                arrival_ms,
                reason: why(format!(
                    "is more than max_ts_behind ({behind} ms) in the past"
                )),
            });
        }
        if chunk.last_ts_ms > arrival_ms.saturating_add(ahead) {
            return Err(Error::Timestamp {
                field: "last_ts_ms",
                value_ms: chunk.last_ts_ms,
                arrival_ms,
                reason: why(format!(
                    "is more than max_ts_ahead ({ahead} ms) in the future"
                )),
            });
        }
        Ok(Stamped {
            chunk,
            stamp: Stamp {
                arrival_ms,
                clock_offset_ms: offset,
                keyframe_ms: None,
                source_offset: None,
            },
        })
    }

    /// Bytes this chunk holds in the write buffer.
    pub fn buffered_bytes(&self) -> usize {
        self.chunk.buffered_bytes() + std::mem::size_of::<Stamp>()
    }
}

/// What the store knows of one chunk beyond its payload: when it arrived, the clock skew
/// correction applied to its timestamps, and where it came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub arrival_ms: i64,
    /// Added to the SDK's timestamps (store clock minus client clock at send time); 0 when the
    /// client's clock was within `Config::clock_skew_tolerance` or gave no send time.
    pub clock_offset_ms: i64,
    /// When the chunk holds a keyframe (a point playback can start from without what came
    /// before; `Annotator::keyframe`), the time of its first one, on the same (corrected) clock
    /// as `first_ts_ms`. Set by the compression workers, or carried over by regrouping.
    pub keyframe_ms: Option<i64>,
    /// The position of the chunk in its source (a Kafka partition's offset), when the embedder
    /// appended it with one (`Store::append_from_source`): kept with the chunk in its block, so
    /// that a consumer resumes from what the store holds (`Store::source_offsets`).
    pub source_offset: Option<u64>,
}

/// Chunks of one session (one team, one session id) in append order, each with its stamp: the
/// unit a flush compresses into a block. Two vectors rather than one of `Stamped`, so that an
/// `Annotator` sees the chunks as one slice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    pub chunks: Vec<Chunk>,
    pub stamps: Vec<Stamp>,
}

impl Group {
    pub fn push(&mut self, s: Stamped) {
        self.chunks.push(s.chunk);
        self.stamps.push(s.stamp);
        debug_assert_eq!(self.chunks.len(), self.stamps.len());
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn raw_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.payload.len()).sum()
    }

    /// Back into single chunks (a failed flush puts them back in the buffer).
    pub fn into_stamped(self) -> impl Iterator<Item = Stamped> {
        self.chunks
            .into_iter()
            .zip(self.stamps)
            .map(|(chunk, stamp)| Stamped { chunk, stamp })
    }
}

fn shifted(field: &'static str, ts: i64, by: i64, arrival_ms: i64) -> Result<i64> {
    ts.checked_add(by).ok_or_else(|| Error::Timestamp {
        field,
        value_ms: ts,
        arrival_ms,
        reason: format!("overflows when corrected by the client's clock skew ({by} ms)"),
    })
}

fn check_id(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes, more than {max}", value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> Chunk {
        Chunk {
            team: 1,
            session_id: "s".into(),
            person: "p".into(),
            window_id: None,
            first_ts_ms: 1,
            last_ts_ms: 2,
            sent_at_ms: None,
            payload: vec![0; 10],
        }
    }

    fn field_of(c: &Chunk, max: usize) -> &'static str {
        match c.validate(max) {
            Err(Error::InvalidChunk { field, .. }) => field,
            other => panic!("expected InvalidChunk, got {other:?}"),
        }
    }

    #[test]
    fn names_the_bad_field() {
        assert!(chunk().validate(10).is_ok());
        let mut c = chunk();
        c.session_id = String::new();
        assert_eq!(field_of(&c, 10), "session_id");
        let mut c = chunk();
        c.session_id = "x".repeat(129);
        assert_eq!(field_of(&c, 10), "session_id");
        let mut c = chunk();
        c.person = "x".repeat(257);
        assert_eq!(field_of(&c, 10), "person");
        let mut c = chunk();
        c.window_id = Some("w".repeat(129));
        assert_eq!(field_of(&c, 10), "window_id");
        let mut c = chunk();
        c.first_ts_ms = 3;
        assert_eq!(field_of(&c, 10), "first_ts_ms");
        assert_eq!(field_of(&chunk(), 9), "payload");
    }

    const NOW: i64 = 1_795_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn rules() -> ClockRules {
        ClockRules {
            max_behind: Duration::from_secs(48 * 3600),
            max_ahead: Duration::from_secs(3600),
            skew_tolerance: Duration::from_secs(10),
        }
    }

    fn at(first: i64, sent: Option<i64>) -> Chunk {
        Chunk {
            first_ts_ms: first,
            last_ts_ms: first + 2000,
            sent_at_ms: sent,
            ..chunk()
        }
    }

    fn refused(c: Chunk) -> &'static str {
        match Stamped::accept(c, NOW, &rules()) {
            Err(Error::Timestamp { field, .. }) => field,
            other => panic!("expected Error::Timestamp, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_are_validated_against_arrival() -> Result<()> {
        let ok = Stamped::accept(at(NOW - 5000, None), NOW, &rules())?;
        assert_eq!(ok.stamp.arrival_ms, NOW);
        assert_eq!(ok.stamp.clock_offset_ms, 0);
        assert_eq!(ok.chunk.first_ts_ms, NOW - 5000);
        // Without a send time, a wrong clock is refused, naming the field.
        assert_eq!(refused(at(NOW + 365 * 24 * HOUR, None)), "last_ts_ms");
        assert_eq!(refused(at(0, None)), "first_ts_ms");
        assert_eq!(refused(at(-1, None)), "first_ts_ms");
        assert_eq!(refused(at(i64::MAX - 2000, None)), "last_ts_ms");
        assert_eq!(refused(at(i64::MIN, None)), "first_ts_ms");
        assert_eq!(refused(at(NOW - 49 * HOUR, None)), "first_ts_ms");
        Ok(())
    }

    #[test]
    fn skew_is_corrected_from_the_send_time() -> Result<()> {
        // A device a year ahead: shifted back by the same offset, relative timing intact.
        let year = 365 * 24 * HOUR;
        let c = at(NOW + year - 3000, Some(NOW + year));
        let s = Stamped::accept(c, NOW, &rules())?;
        assert_eq!(s.stamp.clock_offset_ms, -year);
        assert_eq!(s.chunk.first_ts_ms, NOW - 3000);
        assert_eq!(s.chunk.last_ts_ms, NOW - 1000);
        // A dead RTC battery (1970) with a send time: corrected forward.
        let s = Stamped::accept(at(1000, Some(4000)), NOW, &rules())?;
        assert_eq!(s.chunk.first_ts_ms, NOW - 3000);
        // Latency within the tolerance is not "skew".
        let s = Stamped::accept(at(NOW - 9000, Some(NOW - 2000)), NOW, &rules())?;
        assert_eq!(
            (s.stamp.clock_offset_ms, s.chunk.first_ts_ms),
            (0, NOW - 9000)
        );
        // A send time that cannot be compared, or a chunk still outside after correction.
        assert_eq!(refused(at(NOW, Some(i64::MIN))), "sent_at_ms");
        assert_eq!(refused(at(NOW - 72 * HOUR, Some(NOW))), "first_ts_ms");
        assert_eq!(refused(at(i64::MAX - 2000, Some(0))), "first_ts_ms");
        Ok(())
    }
}

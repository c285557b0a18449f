//! The unit of ingestion: one chunk of one session, as an SDK sends it, and its validation.

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
    /// When the client sent the chunk, by the client's own clock (posthog-js: the `_` query
    /// parameter of `/s/`, or `sent_at` / `$sent_at` in the body). When given, the store
    /// measures the client's clock skew from it and shifts `first_ts_ms`/`last_ts_ms` by it.
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
}

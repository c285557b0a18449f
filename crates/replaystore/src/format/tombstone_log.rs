//! The tombstone log's record bodies (docs/format.md, "Tombstone log"), framed by `records`:
//! a pending request names its target in clear, a retired one keeps only a keyed hash of it.
//!
//! ```text
//! body: kind u8 | request id u64 | team u64 | requested_ms i64 | rest
//!   kind 1 (person) / 2 (session), pending:  id_len u16 | identifier (UTF-8)
//!   kind 3, retired:  target kind u8 | keyed hash [32] | completed_ms i64
//!                     | sessions_removed u64 | bytes_removed u64 | segments_rewritten u64
//! ```

use super::records::{frame, records};
use super::{put_i64, put_u16, put_u64, Bytes, DecodeError, DecodeResult};

pub const KIND_PERSON: u8 = 1;
pub const KIND_SESSION: u8 = 2;
pub const KIND_RETIRED: u8 = 3;
/// The longest record body a log may hold.
pub const MAX_RECORD: usize = 4096;

/// What every record starts with: its kind and the request it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub kind: u8,
    pub id: u64,
    pub team: u64,
    pub at_ms: i64,
}

/// A pending request (`KIND_PERSON` or `KIND_SESSION` in `head.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecord<'a> {
    pub head: RecordHead,
    pub target: &'a str,
}

/// A retired request (`KIND_RETIRED` in `head.kind`): the kind of its target, the keyed hash
/// of it, and what its purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredRecord {
    pub head: RecordHead,
    pub target_kind: u8,
    pub hash: [u8; 32],
    pub completed_ms: i64,
    pub sessions_removed: u64,
    pub bytes_removed: u64,
    pub segments_rewritten: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRecord<'a> {
    Pending(PendingRecord<'a>),
    Retired(RetiredRecord),
}

impl RecordHead {
    fn decode(b: &mut Bytes<'_>) -> DecodeResult<RecordHead> {
        Ok(RecordHead {
            kind: b.u8()?,
            id: b.u64()?,
            team: b.u64()?,
            at_ms: b.i64()?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        put_u64(out, self.id);
        put_u64(out, self.team);
        put_i64(out, self.at_ms);
    }
}

impl<'a> LogRecord<'a> {
    pub fn head(&self) -> &RecordHead {
        match self {
            LogRecord::Pending(p) => &p.head,
            LogRecord::Retired(r) => &r.head,
        }
    }

    /// Appends the record, framed, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64);
        self.head().encode(&mut body);
        match self {
            LogRecord::Pending(p) => {
                put_u16(&mut body, p.target.len() as u16);
                body.extend_from_slice(p.target.as_bytes());
            }
            LogRecord::Retired(r) => {
                body.push(r.target_kind);
                body.extend_from_slice(&r.hash);
                put_i64(&mut body, r.completed_ms);
                put_u64(&mut body, r.sessions_removed);
                put_u64(&mut body, r.bytes_removed);
                put_u64(&mut body, r.segments_rewritten);
            }
        }
        frame(&body, out);
    }

    /// Decodes one record body.
    pub fn decode(body: &'a [u8]) -> DecodeResult<LogRecord<'a>> {
        let mut b = Bytes::new(body);
        let head = RecordHead::decode(&mut b)?;
        match head.kind {
            KIND_PERSON | KIND_SESSION => {
                let n = b.u16()? as usize;
                let target = b.str(n, "identifier")?;
                Ok(LogRecord::Pending(PendingRecord { head, target }))
            }
            KIND_RETIRED => {
                let target_kind = b.u8()?;
                let mut hash = [0u8; 32];
                hash.copy_from_slice(b.take(32)?);
                Ok(LogRecord::Retired(RetiredRecord {
                    head,
                    target_kind,
                    hash,
                    completed_ms: b.i64()?,
                    sessions_removed: b.u64()?,
                    bytes_removed: b.u64()?,
                    segments_rewritten: b.u64()?,
                }))
            }
            k => Err(DecodeError::new(format!("unknown record kind {k}"))),
        }
    }
}

/// The heads of the whole records of a log's bytes, in order, up to the first record that is
/// torn or too short to hold a head.
pub fn heads(bytes: &[u8]) -> impl Iterator<Item = RecordHead> + '_ {
    records(bytes, MAX_RECORD).map_while(|r| RecordHead::decode(&mut Bytes::new(r.body)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let head = |kind, id| RecordHead {
            kind,
            id,
            team: 7,
            at_ms: -3,
        };
        let pending = LogRecord::Pending(PendingRecord {
            head: head(KIND_PERSON, 1),
            target: "person-é",
        });
        let retired = LogRecord::Retired(RetiredRecord {
            head: head(KIND_RETIRED, 2),
            target_kind: KIND_SESSION,
            hash: [9; 32],
            completed_ms: 5,
            sessions_removed: 1,
            bytes_removed: 2,
            segments_rewritten: 3,
        });
        let mut log = Vec::new();
        pending.encode(&mut log);
        retired.encode(&mut log);
        let back: Vec<LogRecord> = records(&log, MAX_RECORD)
            .map(|r| LogRecord::decode(r.body).expect("decodes"))
            .collect();
        assert_eq!(back, vec![pending, retired]);
        let ids: Vec<u64> = heads(&log[..log.len() - 1]).map(|h| h.id).collect();
        assert_eq!(ids, vec![1], "a torn last record is not listed");
    }
}

//! Deletion requests: the tombstone log and the in-memory deny set built from it.
//!
//! `tombstones.log` is a sequence of records `len u32 | crc32 u32 | body` (docs/format.md). A
//! pending tombstone names its team and person or session in clear: it must, to find the data.
//! Once compaction has physically removed everything it covers, the tombstone is *retired*: the
//! log is rewritten (temp file, fsync, rename, fsync directory) with the identifier replaced by a
//! keyed BLAKE3 hash, kept only so that late chunks of the deleted person or session are still
//! refused, plus the figures `deletion_status` reports.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::records::records;
use crate::format::tombstone_log::{
    heads, LogRecord, PendingRecord, RecordHead, RetiredRecord, KIND_PERSON, KIND_RETIRED,
    KIND_SESSION, MAX_RECORD,
};
use crate::format::DecodeResult;
use crate::fs::Fs;
use crate::storage::{Appender, FileHandle, OpenMode};

/// The longest retention a lane can have (`Config` refuses more).
const MAX_RETENTION_DAYS: i64 = 3650;

/// What a deletion request covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every block of this person that arrived (store clock) at or before the request.
    Person(String),
    /// Every block of this session.
    Session(String),
}

impl Target {
    fn kind(&self) -> u8 {
        match self {
            Target::Person(_) => KIND_PERSON,
            Target::Session(_) => KIND_SESSION,
        }
    }
    fn id(&self) -> &str {
        match self {
            Target::Person(s) | Target::Session(s) => s,
        }
    }
}

/// What the deletion requests make of a new chunk (`Tombstones::admission`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Dropped, and why.
    Refused(String),
    /// Stored; `after` is the time of the latest request deleting its person, if any.
    Admit { after: Option<i64> },
}

/// A pending deletion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: u64,
    pub team: u64,
    pub target: Target,
    /// Wall-clock ms when the request was made durable.
    pub at_ms: i64,
}

/// Figures of a finished deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub sessions_removed: u64,
    pub bytes_removed: u64,
    pub segments_rewritten: u64,
}

/// Where a deletion request stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeletionStatus {
    /// Hidden from reads since `requested_ms`; bytes not yet physically removed.
    Pending { requested_ms: i64 },
    /// Physically removed from every file of the store.
    Done {
        requested_ms: i64,
        completed_ms: i64,
        #[serde(flatten)]
        purged: Purged,
    },
    /// No request with this id.
    Unknown,
}

#[derive(Debug, Clone)]
struct Retired {
    id: u64,
    kind: u8,
    team: u64,
    hash: [u8; 32],
    at_ms: i64,
    completed_ms: i64,
    purged: Purged,
}

impl Tombstone {
    /// Its record in the log.
    fn record(&self) -> LogRecord<'_> {
        LogRecord::Pending(PendingRecord {
            head: RecordHead {
                kind: self.target.kind(),
                id: self.id,
                team: self.team,
                at_ms: self.at_ms,
            },
            target: self.target.id(),
        })
    }
}

impl Retired {
    /// Its record in the log.
    fn record(&self) -> LogRecord<'static> {
        LogRecord::Retired(RetiredRecord {
            head: RecordHead {
                kind: KIND_RETIRED,
                id: self.id,
                team: self.team,
                at_ms: self.at_ms,
            },
            target_kind: self.kind,
            hash: self.hash,
            completed_ms: self.completed_ms,
            sessions_removed: self.purged.sessions_removed,
            bytes_removed: self.purged.bytes_removed,
            segments_rewritten: self.purged.segments_rewritten,
        })
    }
}

pub(crate) struct Tombstones {
    path: PathBuf,
    file: FileHandle,
    fs: Fs,
    /// An append failed and could not be undone: the next change rewrites the whole log.
    needs_rewrite: bool,
    key: [u8; 32],
    pending: Vec<Tombstone>,
    retired: Vec<Retired>,
    /// keyed hash of (kind, team, identifier) -> request time, for pending and retired ones.
    deny: HashMap<[u8; 32], i64>,
    /// Pending requests by what they hide, for the read path.
    hidden_sessions: HashMap<(u64, String), i64>,
    hidden_persons: HashMap<(u64, String), i64>,
    next_id: u64,
}

impl Tombstones {
    /// Opens (or creates) the log and the store's secret hashing key; a torn tail is cut.
    pub fn open(dir: &Path, fs: &Fs) -> Result<Tombstones> {
        // Temp files of a rewrite (or an adoption) cut short by a crash: a log's may name
        // deleted persons in clear long after their requests are retired.
        for tmp in ["tombstones.log.tmp", "KEY.tmp"] {
            let p = dir.join(tmp);
            if fs.exists(&p) {
                log::warn!(
                    "{}: removing an interrupted rewrite's temp file",
                    p.display()
                );
                fs.remove(&p).ctx(|| format!("remove {}", p.display()))?;
            }
        }
        let key = load_or_create_key(dir, fs)?;
        let path = dir.join("tombstones.log");
        let created = !fs.exists(&path);
        let file = fs.open_ctx(&path, OpenMode::Append)?;
        if created {
            // The first request fsyncs the file; its directory entry must be durable too.
            fs.sync_dir_ctx(dir)?;
        }
        let bytes = file
            .read_to_end()
            .ctx(|| format!("read {}", path.display()))?;
        let mut t = Tombstones {
            path,
            file,
            fs: fs.clone(),
            needs_rewrite: false,
            key,
            pending: Vec::new(),
            retired: Vec::new(),
            deny: HashMap::new(),
            hidden_sessions: HashMap::new(),
            hidden_persons: HashMap::new(),
            next_id: 1,
        };
        let good = t.replay(&bytes);
        t.reindex();
        if good < bytes.len() {
            log::warn!("{}: cutting torn tail at {good}", t.path.display());
            t.fs.truncate(&t.file, &t.path, good as u64)
                .and_then(|_| t.fs.sync(&t.file, &t.path, true))
                .ctx(|| format!("cut {}", t.path.display()))?;
        }
        Ok(t)
    }

    /// Applies every whole, valid record; returns the length they span.
    fn replay(&mut self, bytes: &[u8]) -> usize {
        let mut pos = 0;
        for r in records(bytes, MAX_RECORD) {
            match self.apply(r.body) {
                Ok(()) => pos = r.end(),
                Err(e) => {
                    log::error!("{}: bad record at {pos}: {}", self.path.display(), e.0);
                    break;
                }
            }
        }
        pos
    }

    fn apply(&mut self, body: &[u8]) -> DecodeResult<()> {
        let record = LogRecord::decode(body)?;
        let RecordHead {
            id, team, at_ms, ..
        } = *record.head();
        self.next_id = self.next_id.max(id + 1);
        match record {
            LogRecord::Pending(p) => {
                let target = match p.head.kind {
                    KIND_PERSON => Target::Person(p.target.to_string()),
                    _ => Target::Session(p.target.to_string()),
                };
                self.deny.insert(self.hash(team, &target), at_ms);
                self.pending.push(Tombstone {
                    id,
                    team,
                    target,
                    at_ms,
                });
            }
            LogRecord::Retired(r) => {
                self.pending.retain(|t| t.id != id);
                self.deny.insert(r.hash, at_ms);
                self.retired.push(Retired {
                    id,
                    kind: r.target_kind,
                    team,
                    hash: r.hash,
                    at_ms,
                    completed_ms: r.completed_ms,
                    purged: Purged {
                        sessions_removed: r.sessions_removed,
                        bytes_removed: r.bytes_removed,
                        segments_rewritten: r.segments_rewritten,
                    },
                });
            }
        }
        Ok(())
    }

    fn hash(&self, team: u64, target: &Target) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&[target.kind()]);
        h.update(&team.to_le_bytes());
        h.update(target.id().as_bytes());
        *h.finalize().as_bytes()
    }

    /// Appends a request and fsyncs: when this returns, the deletion survives a crash.
    pub fn add(&mut self, team: u64, target: Target, now_ms: i64) -> Result<Tombstone> {
        let t = Tombstone {
            id: self.next_id,
            team,
            target,
            at_ms: now_ms,
        };
        let mut rec = Vec::new();
        t.record().encode(&mut rec);
        if self.needs_rewrite {
            self.pending.push(t.clone());
            if let Err(e) = self.rewrite() {
                self.pending.pop();
                return Err(e);
            }
        } else {
            self.append(&rec)?;
            self.pending.push(t.clone());
        }
        self.next_id += 1;
        self.deny.insert(self.hash(team, &t.target), now_ms);
        self.reindex();
        Ok(t)
    }

    /// Appends one record and fsyncs. On failure the log is cut back to what it held, so that a
    /// partial record never sits before later ones; if even that fails, the next change
    /// rewrites the log whole.
    fn append(&mut self, rec: &[u8]) -> Result<()> {
        let path = &self.path;
        let before = self
            .file
            .size()
            .ctx(|| format!("stat {}", path.display()))?;
        let res = self
            .fs
            .write(&mut Appender(self.file.clone()), path, rec)
            .and_then(|_| self.fs.sync(&self.file, path, false))
            .ctx(|| format!("append to {}", path.display()));
        if res.is_err() {
            let undone = self
                .fs
                .truncate(&self.file, path, before)
                .and_then(|_| self.fs.sync(&self.file, path, false));
            self.needs_rewrite = undone.is_err();
        }
        res
    }

    /// Rebuilds the read-path maps from the pending list.
    fn reindex(&mut self) {
        self.hidden_sessions.clear();
        self.hidden_persons.clear();
        for t in &self.pending {
            let map = match &t.target {
                Target::Session(_) => &mut self.hidden_sessions,
                Target::Person(_) => &mut self.hidden_persons,
            };
            let at = map
                .entry((t.team, t.target.id().to_string()))
                .or_insert(t.at_ms);
            *at = (*at).max(t.at_ms);
        }
    }

    pub fn pending(&self) -> &[Tombstone] {
        &self.pending
    }

    /// What the deletion requests make of a new chunk, with one hash per identifier: refused
    /// when its session is deleted, or its person was deleted at or after the chunk's first
    /// timestamp (validated and skew-corrected by then: recorded before the request, arriving
    /// late); otherwise admitted, with the time of the latest request deleting its person (the
    /// chunk must arrive after it).
    pub fn admission(&self, team: u64, session: &str, person: &str, first_ts: i64) -> Admission {
        if self.deny.is_empty() {
            return Admission::Admit { after: None };
        }
        let session_hash = self.hash(team, &Target::Session(session.to_string()));
        if self.deny.contains_key(&session_hash) {
            return Admission::Refused("its session was deleted".into());
        }
        match self
            .deny
            .get(&self.hash(team, &Target::Person(person.to_string())))
        {
            Some(&at) if first_ts <= at => {
                Admission::Refused(format!("its person was deleted at {at} ms"))
            }
            at => Admission::Admit { after: at.copied() },
        }
    }

    /// Why a new chunk must be refused, if it must (see `admission`).
    #[cfg(test)]
    pub fn refuses(&self, team: u64, session: &str, person: &str, first_ts: i64) -> Option<String> {
        match self.admission(team, session, person, first_ts) {
            Admission::Refused(reason) => Some(reason),
            Admission::Admit { .. } => None,
        }
    }

    /// Is this session hidden by a pending request?
    pub fn session_deleted(&self, team: u64, session: &str) -> bool {
        !self.hidden_sessions.is_empty()
            && self
                .hidden_sessions
                .contains_key(&(team, session.to_string()))
    }

    /// Time of the latest pending request deleting this person, if any: blocks of the person
    /// that start at or before it are hidden.
    pub fn person_deleted_at(&self, team: u64, person: &str) -> Option<i64> {
        if self.hidden_persons.is_empty() {
            return None;
        }
        self.hidden_persons
            .get(&(team, person.to_string()))
            .copied()
    }

    pub fn status(&self, id: u64) -> DeletionStatus {
        if let Some(t) = self.pending.iter().find(|t| t.id == id) {
            return DeletionStatus::Pending {
                requested_ms: t.at_ms,
            };
        }
        match self.retired.iter().find(|r| r.id == id) {
            Some(r) => DeletionStatus::Done {
                requested_ms: r.at_ms,
                completed_ms: r.completed_ms,
                purged: r.purged,
            },
            None => DeletionStatus::Unknown,
        }
    }

    /// Retires finished requests: rewrites the log so their identifiers are gone from it.
    pub fn retire(&mut self, done: &[(u64, Purged)], now_ms: i64) -> Result<()> {
        for &(id, purged) in done {
            let Some(i) = self.pending.iter().position(|t| t.id == id) else {
                continue;
            };
            let t = self.pending.remove(i);
            let hash = self.hash(t.team, &t.target);
            let kind = t.target.kind();
            self.retired.push(Retired {
                id,
                kind,
                team: t.team,
                hash,
                at_ms: t.at_ms,
                completed_ms: now_ms,
                purged,
            });
        }
        // A retired request older than the longest retention can go: any chunk it would refuse
        // is past every lane's retention anyway.
        let horizon = now_ms.saturating_sub(MAX_RETENTION_DAYS * crate::units::DAY_MS);
        self.retired.retain(|r| r.at_ms >= horizon);
        self.deny.retain(|_, at| *at >= horizon);
        self.reindex();
        self.rewrite()
    }

    /// Writes the whole log anew (pending in clear, retired as hashes) and swaps it in.
    fn rewrite(&mut self) -> Result<()> {
        let mut out = Vec::new();
        for r in &self.retired {
            r.record().encode(&mut out);
        }
        for t in &self.pending {
            t.record().encode(&mut out);
        }
        let tmp = self.path.with_extension("log.tmp");
        self.fs.replace_file(&self.path, &tmp, &[&out])?;
        self.file = self
            .fs
            .open(&self.path, OpenMode::Append)
            .ctx(|| format!("reopen {}", self.path.display()))?;
        self.needs_rewrite = false;
        Ok(())
    }
}

/// A request as a tombstone log names it: (id, team, requested at ms).
pub(crate) type RequestKey = (u64, u64, i64);

/// The requests named by the whole records of a tombstone log's bytes (a torn tail is ignored),
/// as (id, team, requested at): the pending ones, and all of them, pending or retired. Lets two
/// copies of a log be compared without the key (adoption of a bucket, `remote::adopt`).
pub(crate) fn log_requests(bytes: &[u8]) -> (Vec<RequestKey>, Vec<RequestKey>) {
    let (mut pending, mut all) = (Vec::new(), Vec::new());
    for h in heads(bytes) {
        all.push((h.id, h.team, h.at_ms));
        if h.kind != KIND_RETIRED {
            pending.push((h.id, h.team, h.at_ms));
        }
    }
    (pending, all)
}

/// The store's secret key for hashing retired identifiers, created at first open.
fn load_or_create_key(dir: &Path, fs: &Fs) -> Result<[u8; 32]> {
    let path = dir.join("KEY");
    match fs.read(&path) {
        Ok(k) if k.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&k);
            return Ok(key);
        }
        Ok(_) => {
            return Err(Error::Corrupt {
                segment: 0,
                path,
                offset: 0,
                reason: "the key file must hold exactly 32 bytes".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    }
    let mut key = [0u8; 32];
    // The entropy source, not a store file: read from the OS whatever the storage.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .ctx(|| "read /dev/urandom".to_string())?;
    fs.replace_file(&path, &dir.join("KEY.tmp"), &[&key])?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// A rewrite's temp file left by a crash names identifiers in clear: open removes it.
    #[test]
    fn leftover_temp_files_are_removed_at_open() -> TestResult {
        let dir = tempfile::tempdir()?;
        let tmp = dir.path().join("tombstones.log.tmp");
        std::fs::write(&tmp, b"alice@example.com")?;
        std::fs::write(dir.path().join("KEY.tmp"), [7u8; 32])?;
        let _t = Tombstones::open(dir.path(), &Fs::default())?;
        assert!(!tmp.exists() && !dir.path().join("KEY.tmp").exists());
        Ok(())
    }

    #[test]
    fn requests_survive_reopen_and_retirement_forgets_identifiers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut t = Tombstones::open(dir.path(), &Fs::default())?;
        let a = t.add(1, Target::Person("alice@example.com".into()), 1000)?;
        let b = t.add(1, Target::Session("sess-9".into()), 2000)?;
        assert!(t.refuses(1, "x", "alice@example.com", 1000).is_some());
        assert!(
            t.refuses(1, "x", "alice@example.com", 1001).is_none(),
            "after the request"
        );
        assert!(
            t.refuses(2, "x", "alice@example.com", 0).is_none(),
            "other team"
        );
        assert!(t.refuses(1, "sess-9", "bob", 5000).is_some());
        drop(t);
        let mut t = Tombstones::open(dir.path(), &Fs::default())?;
        assert_eq!(t.pending().len(), 2);
        assert_eq!(
            t.status(a.id),
            DeletionStatus::Pending { requested_ms: 1000 }
        );
        let purged = Purged {
            sessions_removed: 3,
            bytes_removed: 100,
            segments_rewritten: 1,
        };
        t.retire(&[(a.id, purged)], 3000)?;
        let log = std::fs::read(dir.path().join("tombstones.log"))?;
        assert!(!log.windows(17).any(|w| w == b"alice@example.com"));
        assert!(log.windows(6).any(|w| w == b"sess-9"), "still pending");
        drop(t);
        let t = Tombstones::open(dir.path(), &Fs::default())?;
        assert_eq!(
            t.status(a.id),
            DeletionStatus::Done {
                requested_ms: 1000,
                completed_ms: 3000,
                purged
            }
        );
        assert!(
            t.refuses(1, "x", "alice@example.com", 999).is_some(),
            "late chunks still refused"
        );
        assert_eq!(
            t.status(b.id),
            DeletionStatus::Pending { requested_ms: 2000 }
        );
        assert_eq!(t.status(99), DeletionStatus::Unknown);
        let mut reopened = Tombstones::open(dir.path(), &Fs::default())?;
        let c = reopened.add(1, Target::Person("z".into()), 1)?;
        assert_eq!(c.id, 3, "ids keep growing");
        Ok(())
    }

    #[test]
    fn torn_tail_of_the_log_is_cut() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut t = Tombstones::open(dir.path(), &Fs::default())?;
        t.add(1, Target::Person("p".into()), 1)?;
        t.add(1, Target::Person("q".into()), 2)?;
        drop(t);
        let path = dir.path().join("tombstones.log");
        let len = std::fs::metadata(&path)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - 3)?;
        let t = Tombstones::open(dir.path(), &Fs::default())?;
        assert_eq!(t.pending().len(), 1);
        Ok(())
    }
}

//! The stores of the partitions this consumer owns, and what it knows of each: offsets, counts,
//! whether its fetches are paused. The run loop and the rebalance callback (which librdkafka
//! calls from inside `poll`, on the same thread) share it behind one mutex; the metrics thread
//! only reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use replaystore::{Config, Error as StoreError, RemoteConfig, Store};

use crate::erasure::{Erasures, Feed, Receipts, Request};

/// The partitions, whoever holds the lock: a panic elsewhere cannot leave them half-updated in
/// a way that matters more than stopping would.
pub fn lock(parts: &Mutex<Partitions>) -> MutexGuard<'_, Partitions> {
    parts.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a partition's store is opened.
#[derive(Clone)]
pub struct StoreFactory {
    pub dir: PathBuf,
    /// The bucket (`s3://bucket/prefix`...): partition N's store uses `<prefix>/p<N>`.
    pub remote: Option<RemoteConfig>,
    pub config: Config,
}

impl StoreFactory {
    fn open(&self, partition: i32) -> Result<Store, StoreError> {
        let name = format!("p{partition}");
        let config = match &self.remote {
            Some(remote) => {
                let mut remote = remote.clone();
                remote.url = format!("{}/{name}", remote.url.trim_end_matches('/'));
                self.config.clone().with_remote(remote)
            }
            None => self.config.clone(),
        };
        Store::open(self.dir.join(name), config)
    }
}

/// One owned partition.
pub struct Partition {
    pub store: Store,
    /// Offset of the next message to read: one past the last one appended or skipped.
    pub next: Option<i64>,
    /// `next` as of the last flush that returned.
    pub durable: Option<i64>,
    /// What the group's offset was last committed at: `durable`, or with a bucket what the
    /// last upload point put there (`make_durable`).
    pub committed: Option<i64>,
    /// The offset of a message the store refused for a full buffer: fetches are paused, and
    /// resume from it once the store accepts again; later messages are dropped until then.
    pub refused_at: Option<i64>,
    /// Bytes appended since the last flush.
    pub unflushed: usize,
    /// Offsets at or after the resume position that the store already holds (ascending): a
    /// message at one of them is passed over, not stored twice.
    pub held: Vec<u64>,
    pub counts: Counts,
    /// The fleet's deletion requests this store holds and has not purged yet.
    erasures: Erasures,
    /// When it was assigned here, until its first append (then `None`): the new owner's half
    /// of a hand-over.
    assigned: Option<Instant>,
    /// The Kafka timestamps of the messages appended since the last flush, for the latency
    /// from produce to durable.
    pub unflushed_ts: Vec<i64>,
}

/// What `Partition::make_durable` did.
pub struct Durable {
    /// The Kafka timestamps of the messages the flush made durable.
    pub flushed_ts: Vec<i64>,
    /// The offset to commit to the group now, if any.
    pub commit: Option<Commit>,
}

/// A group offset, and what the store knows of the data past it: every chunk of a message at
/// or after `offset` arrived, by the store's clock, at or after `arrived_since_ms` (the time
/// the flush before the commit began, less a margin for the clock stepping back). Kept in the
/// commit's metadata, so that the next owner reads the offsets of just the remote segments
/// that can hold such messages (`Store::source_offsets_since`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub offset: i64,
    pub arrived_since_ms: Option<i64>,
}

/// How far back of the flush's start `arrived_since_ms` is put: a clock stepping back by less
/// than this cannot hide a chunk from the next owner.
const CLOCK_MARGIN_MS: i64 = 10_000;
const METADATA_KEY: &str = "arrived_since_ms=";

impl Commit {
    pub fn metadata(&self) -> String {
        self.arrived_since_ms
            .map(|ms| format!("{METADATA_KEY}{ms}"))
            .unwrap_or_default()
    }

    pub fn from_group(offset: i64, metadata: &str) -> Commit {
        let arrived_since_ms = metadata
            .strip_prefix(METADATA_KEY)
            .and_then(|v| v.parse().ok());
        Commit {
            offset,
            arrived_since_ms,
        }
    }
}

impl Partition {
    /// Flushes what was appended since the last flush, and says what the group may be told.
    /// Without a bucket, the flushed offset (the store's disk is where the next owner reads).
    /// With one, only at an upload point (`upload`: the active segment sealed and everything
    /// sealed uploaded): a member on another machine takes the partition over from the
    /// bucket, so the group's offset must not pass what the bucket holds, or a lost machine
    /// would lose what it had flushed and not uploaded. `None` when the flush failed.
    /// `remote`: the store has a bucket (the factory's; not asked of the store, which would
    /// walk its segment list on every flush).
    pub fn make_durable(&mut self, p: i32, remote: bool, upload: bool) -> Option<Durable> {
        let next = self.next?;
        let since = self.store.config().parts.clock.now_ms() - CLOCK_MARGIN_MS;
        let mut flushed_ts = Vec::new();
        if self.durable != Some(next) {
            if let Err(e) = self.store.flush() {
                log::warn!("partition {p}: flush: {e}");
                return None;
            }
            self.unflushed = 0;
            self.durable = Some(next);
            flushed_ts = std::mem::take(&mut self.unflushed_ts);
        }
        if self.committed == Some(next) || (remote && !upload) {
            return Some(Durable {
                flushed_ts,
                commit: None,
            });
        }
        if remote {
            let uploaded = self
                .store
                .seal_active()
                .and_then(|()| self.store.sync_remote());
            match uploaded {
                Ok(r) if r.errors.is_empty() => {}
                Ok(r) => {
                    log::warn!("partition {p}: upload: {:?} (retried next time)", r.errors);
                    return Some(Durable {
                        flushed_ts,
                        commit: None,
                    });
                }
                Err(e) => {
                    log::warn!("partition {p}: upload: {e} (retried next time)");
                    return Some(Durable {
                        flushed_ts,
                        commit: None,
                    });
                }
            }
        }
        self.committed = Some(next);
        Some(Durable {
            flushed_ts,
            commit: Some(Commit {
                offset: next,
                arrived_since_ms: remote.then_some(since),
            }),
        })
    }

    /// Notes an append; the first after assignment logs how long the partition took to
    /// become writable here (the log's wall clock, compared with the old owner's revoke line,
    /// gives the hand-over time).
    pub fn appended(&mut self, p: i32, kafka_ts: Option<i64>) {
        if let Some(at) = self.assigned.take() {
            log::info!(
                "partition {p}: first append {:.0} ms after assignment (at {} ms)",
                at.elapsed().as_secs_f64() * 1e3,
                wall_ms()
            );
        }
        if let Some(ts) = kafka_ts {
            self.unflushed_ts.push(ts);
        }
    }
}

/// The system clock in ms since the epoch (for log lines read across processes).
pub fn wall_ms() -> i64 {
    replaystore::Clock::now_ms(&replaystore::SystemClock)
}

/// Per-partition counters, for `/metrics` and the final report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub messages: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// Messages that are not recordings (other events).
    pub skipped: u64,
    /// Messages that could not be decoded or that the store refused for good (bad timestamps,
    /// unknown token): logged and passed over.
    pub refused: u64,
    /// Messages of an erased person or session, refused by the store's deletion requests (read
    /// late, or again after a hand-over): passed over, as they must be.
    pub erased: u64,
    /// Times fetches were paused because the store refused appends.
    pub pauses: u64,
    /// Messages passed over because the store already held their offset (read again after a
    /// crash between a flush and its commit, or after a hand-over).
    pub duplicates: u64,
    /// The partition's high watermark when last asked (for the lag).
    pub high_watermark: Option<i64>,
}

/// The owned partitions, by number.
pub struct Partitions {
    factory: StoreFactory,
    owned: BTreeMap<i32, Partition>,
    /// Totals of partitions that were revoked, so that counters never go down.
    pub retired: Counts,
    /// The first failure of the rebalance callback, which cannot return it: the run loop stops
    /// with it.
    pub failed: Option<crate::Error>,
    /// The deletion topic and the receipts, when the consumer takes part in fleet erasure.
    fleet: Option<Fleet>,
}

/// Erasure across the fleet (`erasure`): the requests read from the deletion topic and where
/// each partition's store reports on them.
pub struct Fleet {
    pub feed: Feed,
    pub receipts: Receipts,
    /// The bucket's receipts as read at the start of the current assignment: one read for all
    /// the partitions it assigns (`Partitions::begin_assignment`).
    pub read: Vec<crate::erasure::Receipt>,
}

impl Partitions {
    pub fn new(factory: StoreFactory) -> Partitions {
        Partitions {
            factory,
            owned: BTreeMap::new(),
            retired: Counts::default(),
            failed: None,
            fleet: None,
        }
    }

    /// Takes part in fleet erasure: every store opened from now on gets every request of
    /// `fleet`'s feed.
    pub fn join_fleet(&mut self, fleet: Fleet) {
        self.fleet = Some(fleet);
    }

    pub fn factory(&self) -> &StoreFactory {
        &self.factory
    }

    /// Opens partition `p`'s store (from the bucket, when the directory is new and a remote
    /// is set) and returns where to resume (`resume_at`). The offsets the store holds from
    /// there on are kept to be passed over.
    pub fn assign(&mut self, p: i32, group: Option<Commit>) -> crate::Result<Option<i64>> {
        let committed = group.map(|c| c.offset);
        let wrap = |source| crate::Error::Store {
            partition: p,
            source,
        };
        if let Some(part) = self.owned.get(&p) {
            return Ok(part.next);
        }
        let opening = Instant::now();
        let store = self.factory.open(p).map_err(wrap)?;
        let opened_ms = ms(opening.elapsed());
        let from = committed.map_or(0, |c| c.max(0) as u64);
        let remote = self.factory.remote.is_some();
        let offsets = match remote_since(remote, group) {
            Some(since) => store.source_offsets_since(from, since),
            None => store.source_offsets(from),
        }
        .map_err(wrap)?;
        let after_store = offsets.max.map(|m| m as i64 + 1);
        let resume = resume_at(committed, after_store);
        let erasures = self.erasures_for(p, &store)?;
        let assigned = Instant::now();
        log::info!(
            "partition {p}: store opened in {opened_ms:.0} ms; group committed {committed:?}, \
             store holds up to {:?} ({} from {from} on): resuming at {resume:?}",
            offsets.max,
            offsets.held.len()
        );
        self.owned.insert(
            p,
            Partition {
                store,
                next: resume,
                durable: resume,
                committed: resume,
                refused_at: None,
                unflushed: 0,
                held: offsets.held,
                counts: Counts::default(),
                erasures,
                assigned: Some(assigned),
                unflushed_ts: Vec::new(),
            },
        );
        Ok(resume)
    }

    /// Gives partition `p` up: flush, and with a bucket seal and sync so that the next owner
    /// finds everything there; then close (releasing the directory's lock). Returns the offset
    /// everything before which is durable.
    pub fn revoke(&mut self, p: i32) -> crate::Result<Option<Commit>> {
        let Some(part) = self.owned.remove(&p) else {
            return Ok(None);
        };
        add(&mut self.retired, &part.counts);
        let wrap = |source| crate::Error::Store {
            partition: p,
            source,
        };
        let (start, wall) = (Instant::now(), wall_ms());
        let since = part.store.config().parts.clock.now_ms() - CLOCK_MARGIN_MS;
        part.store.flush().map_err(wrap)?;
        let flushed = start.elapsed();
        let remote = self.factory.remote.is_some();
        let mut uploaded = true;
        if remote {
            part.store.seal_active().map_err(wrap)?;
            let report = part.store.sync_remote().map_err(wrap)?;
            if !report.errors.is_empty() {
                log::warn!("partition {p}: sync before hand-over: {:?}", report.errors);
                uploaded = false; // the bucket lacks some: the group's offset stays
            }
        }
        let synced = start.elapsed();
        let next = part.next.filter(|_| uploaded).map(|offset| Commit {
            offset,
            arrived_since_ms: remote.then_some(since),
        });
        part.store.close().map_err(wrap)?;
        if remote && uploaded {
            // The bucket holds everything now. A local copy left behind would be opened again
            // if the partition came back here, and would miss (and, its segment ids running
            // on from its own, overwrite) what other owners uploaded meanwhile: remove it, so
            // that a return adopts the bucket afresh.
            let dir = self.factory.dir.join(format!("p{p}"));
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!(
                    "partition {p}: remove {} after hand-over: {e}",
                    dir.display()
                );
            }
        }
        log::info!(
            "partition {p}: revoked at {wall} ms, handed over in {:.0} ms (flush {:.0}, seal and \
             sync {:.0}, close {:.0})",
            ms(start.elapsed()),
            ms(flushed),
            ms(synced - flushed),
            ms(start.elapsed() - synced)
        );
        Ok(next)
    }

    /// A newly opened store's erasures: what the bucket's receipts say is done in it, and
    /// every other request of the feed applied (before anything is appended: a request
    /// applied later would not cover chunks appended in between).
    fn erasures_for(&mut self, p: i32, store: &Store) -> crate::Result<Erasures> {
        let Some(fleet) = self.fleet.as_mut() else {
            return Ok(Erasures::default());
        };
        // The feed is not polled here: what it returns would then be missing from the stores
        // owned already (the run loop's `poll_deletions` gives new requests to all of them).
        let mut erasures = Erasures::from_receipts(p, &fleet.read);
        for req in fleet.feed.known() {
            erasures.apply(p, store, req, &fleet.receipts)?;
        }
        Ok(erasures)
    }

    /// Reads the bucket's receipts once for the partitions an assignment is about to open.
    pub fn begin_assignment(&mut self) -> crate::Result<()> {
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.read = fleet.receipts.read(None)?;
        }
        Ok(())
    }

    /// Reads the deletion topic and applies what is new to every owned store.
    pub fn poll_deletions(&mut self) -> crate::Result<Vec<Request>> {
        let Some(fleet) = self.fleet.as_mut() else {
            return Ok(Vec::new());
        };
        let new = fleet.feed.poll();
        for req in &new {
            log::info!("deletion request {} (team {}) read", req.id, req.team);
            for (p, part) in self.owned.iter_mut() {
                // One store failing must not keep the request from the others.
                if let Err(e) = part.erasures.apply(*p, &part.store, req, &fleet.receipts) {
                    log::warn!("partition {p}: deletion request {}: {e}", req.id);
                }
            }
        }
        Ok(new)
    }

    /// Purges the stores that hold requests not done yet, and reports those done.
    pub fn progress_erasures(&mut self) -> crate::Result<()> {
        let Some(fleet) = self.fleet.as_ref() else {
            return Ok(());
        };
        let remote = self.factory.remote.is_some();
        for (p, part) in self.owned.iter_mut() {
            if part.erasures.has_pending() {
                part.erasures
                    .progress(*p, &part.store, remote, &fleet.receipts)?;
            }
        }
        Ok(())
    }

    pub fn get_mut(&mut self, p: i32) -> Option<&mut Partition> {
        self.owned.get_mut(&p)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &Partition)> {
        self.owned.iter().map(|(p, part)| (*p, part))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut Partition)> {
        self.owned.iter_mut().map(|(p, part)| (*p, part))
    }

    pub fn numbers(&self) -> Vec<i32> {
        self.owned.keys().copied().collect()
    }

    /// Totals over owned and revoked partitions.
    pub fn totals(&self) -> Counts {
        let mut t = self.retired;
        for part in self.owned.values() {
            add(&mut t, &part.counts);
        }
        t
    }
}

/// Which remote segments to read source offsets from when a store is opened: those holding a
/// chunk that arrived after the group's commit (its metadata), or all of them when the group
/// has no commit at all (the previous owner died before its first: what it uploaded until then
/// is at most one upload interval, plus what sealed meanwhile). None without a bucket, or when
/// the commit says nothing (made without one).
fn remote_since(remote: bool, group: Option<Commit>) -> Option<i64> {
    if !remote {
        return None;
    }
    match group {
        None => Some(i64::MIN),
        Some(c) => c.arrived_since_ms,
    }
}

/// Where a partition is read from, given the group's committed offset and one past the
/// highest offset its store holds: the lower of the two. The group's offset when the store is
/// ahead of it (a member died between a flush and its commit: what the store holds past it is
/// passed over); the store's when the group is ahead (a store that lost its newest data, or
/// was restored from an older copy, reads it again). With no commit but a store holding
/// something, the topic's start (0, or the earliest kept, through `auto.offset.reset`) rather
/// than past the store's highest: one flush writes several lanes' files, and a crash between
/// them can leave gaps below it. `None` when neither knows anything: the topic's start.
fn resume_at(committed: Option<i64>, after_store: Option<i64>) -> Option<i64> {
    match (committed, after_store) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (None, Some(_)) => Some(0),
        (c, None) => c,
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn add(into: &mut Counts, c: &Counts) {
    into.messages += c.messages;
    into.bytes += c.bytes;
    into.chunks += c.chunks;
    into.skipped += c.skipped;
    into.refused += c.refused;
    into.erased += c.erased;
    into.pauses += c.pauses;
    into.duplicates += c.duplicates;
}

#[cfg(test)]
mod tests {
    use super::resume_at;

    #[test]
    fn resumes_at_the_lower_of_the_group_and_the_store() {
        assert_eq!(resume_at(None, None), None);
        assert_eq!(resume_at(Some(7), None), Some(7));
        assert_eq!(
            resume_at(Some(7), Some(10)),
            Some(7),
            "store ahead: pass over its part"
        );
        assert_eq!(
            resume_at(Some(7), Some(3)),
            Some(3),
            "store behind: read again"
        );
        assert_eq!(
            resume_at(None, Some(10)),
            Some(0),
            "no commit: from the start"
        );
    }
}

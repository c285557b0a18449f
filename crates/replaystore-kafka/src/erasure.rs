//! Erasure across the fleet. A person's sessions sit on any partition (the key is the session
//! id), so a request to erase them goes to every store: `publish` puts it on the deletion topic
//! (one partition, compacted: a request is kept until it is superseded, never expired), every
//! consumer reads that topic whole and outside the group (`Feed`), and applies each request to
//! every partition it owns, now and whenever it is assigned one later. Each partition's store
//! reports to the bucket (`Receipts`): a `pending` receipt once the request is durable in the
//! store, a `done` one once its bytes are gone from every file and object of that store.
//! `deletion-status --remote` reads them back and says done only when every partition is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use replaystore::remote::Bucket;
use replaystore::{DeletionStatus, RemoteConfig};
use serde::{Deserialize, Serialize};

/// Bounds on what a request may carry (a request is data from the topic: untrusted).
const MAX_ID_BYTES: usize = 64;
const MAX_PERSON_BYTES: usize = 1024;

/// One request to erase a person, as it travels on the deletion topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the publisher (`new_id`): names the request's receipts.
    pub id: String,
    pub team: u64,
    pub person: String,
    /// The publisher's clock, for the record: each store deletes by its own clock.
    pub requested_ms: i64,
}

impl Request {
    pub fn new(team: u64, person: &str, now_ms: i64) -> Request {
        Request {
            id: new_id(now_ms),
            team,
            person: person.to_string(),
            requested_ms: now_ms,
        }
    }

    /// Parses and checks a message of the deletion topic.
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        let r: Request = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let id_ok = (1..=MAX_ID_BYTES).contains(&r.id.len())
            && r.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(format!("bad request id {:?}", r.id));
        }
        if !(1..=MAX_PERSON_BYTES).contains(&r.person.len()) {
            return Err("person empty or too long".into());
        }
        Ok(r)
    }
}

/// A request id: the time, then 8 hex digits that differ between requests of one millisecond.
fn new_id(now_ms: i64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms);
    h.write_u32(std::process::id());
    format!("{now_ms}-{:08x}", h.finish() as u32)
}

/// Puts the requests on the deletion topic (keyed by id) and waits until the broker has them.
pub fn publish(
    brokers: &str,
    topic: &str,
    client_config: &[(String, String)],
    requests: &[Request],
) -> crate::Result<()> {
    let publisher = crate::produce::Publisher::new(brokers, topic, client_config)?;
    for r in requests {
        let body = serde_json::to_vec(r).unwrap_or_default();
        publisher.send(r.id.as_bytes(), &body)?;
    }
    publisher.flush()
}

/// The deletion topic, read whole from its start by every consumer (assigned, not subscribed:
/// no group shares it out).
pub(crate) struct Feed {
    consumer: BaseConsumer,
    /// Every request read so far, by id.
    known: BTreeMap<String, Request>,
}

impl Feed {
    pub(crate) fn open(base: ClientConfig, topic: &str) -> crate::Result<Feed> {
        let mut config = base;
        config
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        Ok(Feed {
            consumer,
            known: BTreeMap::new(),
        })
    }

    /// The requests read since the last call (none waits).
    pub(crate) fn poll(&mut self) -> Vec<Request> {
        let mut new = Vec::new();
        while let Some(m) = self.consumer.poll(Duration::ZERO) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("deletion topic: {e}");
                    break;
                }
            };
            match Request::decode(m.payload().unwrap_or_default()) {
                Ok(r) if !self.known.contains_key(&r.id) => {
                    self.known.insert(r.id.clone(), r.clone());
                    new.push(r);
                }
                Ok(_) => {}
                Err(e) => log::warn!("deletion topic offset {}: {e}", m.offset()),
            }
        }
        new
    }

    /// Reads until nothing arrives for `quiet` (at start, before any partition is stored).
    pub(crate) fn catch_up(&mut self, quiet: Duration) {
        let mut last = std::time::Instant::now();
        while last.elapsed() < quiet {
            if self.poll().is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            } else {
                last = std::time::Instant::now();
            }
        }
    }

    pub(crate) fn known(&self) -> impl Iterator<Item = &Request> {
        self.known.values()
    }
}

/// What a partition's store reports about one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub request: String,
    pub partition: i32,
    /// `pending` (durable in the store, hidden from reads) or `done` (bytes gone).
    pub status: String,
    /// The store's clock when it recorded the request.
    pub requested_ms: i64,
    pub completed_ms: Option<i64>,
    pub sessions_removed: u64,
    pub bytes_removed: u64,
}

impl Receipt {
    fn of(request: &str, partition: i32, status: &DeletionStatus) -> Option<Receipt> {
        let mut r = Receipt {
            request: request.to_string(),
            partition,
            status: "pending".into(),
            requested_ms: 0,
            completed_ms: None,
            sessions_removed: 0,
            bytes_removed: 0,
        };
        match status {
            DeletionStatus::Pending { requested_ms } => r.requested_ms = *requested_ms,
            DeletionStatus::Done {
                requested_ms,
                completed_ms,
                purged,
            } => {
                r.status = "done".into();
                r.requested_ms = *requested_ms;
                r.completed_ms = Some(*completed_ms);
                r.sessions_removed = purged.sessions_removed;
                r.bytes_removed = purged.bytes_removed;
            }
            _ => return None,
        }
        Some(r)
    }

    pub fn is_done(&self) -> bool {
        self.status == "done"
    }
}

/// The receipts, in the bucket (or a directory, through a `file://` config) at
/// `receipts/<request>/p<N>.json`: they name no person, only the request.
pub struct Receipts {
    bucket: Bucket,
}

impl Receipts {
    pub fn open(config: &RemoteConfig) -> crate::Result<Receipts> {
        let bucket = Bucket::open(config).map_err(|e| crate::Error::Receipts(e.to_string()))?;
        Ok(Receipts { bucket })
    }

    fn write(&self, r: &Receipt) -> crate::Result<()> {
        let key = format!("receipts/{}/p{}.json", r.request, r.partition);
        let body = serde_json::to_vec(r).unwrap_or_default();
        self.bucket
            .put(&key, body)
            .map_err(|e| crate::Error::Receipts(e.to_string()))
    }

    /// Every receipt under `receipts/` (of `request` only, when given).
    pub fn read(&self, request: Option<&str>) -> crate::Result<Vec<Receipt>> {
        let under = match request {
            Some(r) => format!("receipts/{r}"),
            None => "receipts".into(),
        };
        let objects = self
            .bucket
            .read_all(&under)
            .map_err(|e| crate::Error::Receipts(e.to_string()))?;
        Ok(objects
            .iter()
            .filter_map(|o| serde_json::from_slice(o.bytes.as_deref()?).ok())
            .collect())
    }
}

/// One partition's side of the erasures: the requests its store holds that are not done yet.
#[derive(Debug, Default)]
pub(crate) struct Erasures {
    /// Request id -> the store's id for it.
    pending: BTreeMap<String, u64>,
    /// Requests done in this store (from its receipts, or seen done here).
    done: BTreeSet<String>,
}

impl Erasures {
    /// Starts from the receipts the bucket holds for partition `p`: done ones are not applied
    /// again (a store that a previous owner purged).
    pub(crate) fn from_receipts(p: i32, receipts: &[Receipt]) -> Erasures {
        let done = receipts
            .iter()
            .filter(|r| r.partition == p && r.is_done())
            .map(|r| r.request.clone())
            .collect();
        Erasures {
            pending: BTreeMap::new(),
            done,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Records `req` in the store (durable when this returns) unless it is known here, and
    /// writes its `pending` receipt.
    pub(crate) fn apply(
        &mut self,
        p: i32,
        store: &replaystore::Store,
        req: &Request,
        receipts: &Receipts,
    ) -> crate::Result<()> {
        if self.done.contains(&req.id) || self.pending.contains_key(&req.id) {
            return Ok(());
        }
        let local = store
            .delete_person(req.team, &req.person)
            .map_err(|source| crate::Error::Store {
                partition: p,
                source,
            })?;
        self.pending.insert(req.id.clone(), local);
        if let Some(r) = Receipt::of(&req.id, p, &store.deletion_status(local)) {
            receipts.write(&r)?;
        }
        Ok(())
    }

    /// Purges what is pending (a compaction pass, then with a bucket an upload pass that
    /// deletes the replaced objects) and writes a `done` receipt for each request now done.
    pub(crate) fn progress(
        &mut self,
        p: i32,
        store: &replaystore::Store,
        remote: bool,
        receipts: &Receipts,
    ) -> crate::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let wrap = |source| crate::Error::Store {
            partition: p,
            source,
        };
        store.compact().map_err(wrap)?;
        if remote {
            store.sync_remote().map_err(wrap)?;
        }
        let mut finished = Vec::new();
        for (request, &local) in &self.pending {
            let status = store.deletion_status(local);
            if matches!(status, DeletionStatus::Done { .. }) {
                if let Some(r) = Receipt::of(request, p, &status) {
                    receipts.write(&r)?;
                }
                finished.push(request.clone());
            }
        }
        for r in finished {
            self.pending.remove(&r);
            self.done.insert(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_use() {
        let ok = Request::new(3, "alice@example.com", 1_700_000_000_000);
        let bytes = serde_json::to_vec(&ok).unwrap();
        assert_eq!(Request::decode(&bytes), Ok(ok.clone()));
        let mut bad = ok.clone();
        bad.id = "../../etc".into();
        assert!(Request::decode(&serde_json::to_vec(&bad).unwrap()).is_err());
        bad.id = "x".repeat(MAX_ID_BYTES + 1);
        assert!(Request::decode(&serde_json::to_vec(&bad).unwrap()).is_err());
        let mut empty = ok;
        empty.person.clear();
        assert!(Request::decode(&serde_json::to_vec(&empty).unwrap()).is_err());
        assert!(Request::decode(b"{not json").is_err());
    }

    #[test]
    fn done_receipts_of_the_partition_are_not_applied_again() {
        let receipt = |partition, status: &str| Receipt {
            request: "r1".into(),
            partition,
            status: status.into(),
            requested_ms: 1,
            completed_ms: None,
            sessions_removed: 0,
            bytes_removed: 0,
        };
        let e = Erasures::from_receipts(2, &[receipt(2, "done"), receipt(3, "done")]);
        assert!(e.done.contains("r1"));
        let e = Erasures::from_receipts(2, &[receipt(2, "pending"), receipt(1, "done")]);
        assert!(e.done.is_empty());
    }
}

//! The member's side of rebalances: librdkafka calls `Ctx::rebalance` from inside `poll`, on
//! the run loop's thread, when partitions are assigned (their stores opened, where to resume
//! set) or revoked (their stores handed over: flushed, uploaded, closed, offsets committed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::{ClientContext, NativeClient};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::generation;
use crate::partition::{lock, Commit, Partitions};

pub(crate) struct Ctx {
    parts: Arc<Mutex<Partitions>>,
    topic: String,
    /// A second client of the same group that never joins it: it reads the group's committed
    /// offsets from inside the rebalance callback, where the member itself cannot be called.
    offsets: BaseConsumer,
    /// Rebalances seen, to catch one the coordinator skipped (`generation`).
    watch: Mutex<generation::Watch>,
    /// Set when it did: the run loop leaves the group and joins again as a new member.
    pub(crate) rejoin: AtomicBool,
}

impl Ctx {
    pub(crate) fn new(parts: Arc<Mutex<Partitions>>, topic: &str, offsets: BaseConsumer) -> Ctx {
        Ctx {
            parts,
            topic: topic.to_string(),
            offsets,
            watch: Mutex::default(),
            rejoin: AtomicBool::new(false),
        }
    }

    /// The group's committed offset of each partition in `tpl` (absent when it has none).
    fn committed(&self, tpl: &TopicPartitionList) -> crate::Result<HashMap<i32, Commit>> {
        let got = self
            .offsets
            .committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), Commit::from_group(o, e.metadata()))),
                _ => None,
            })
            .collect())
    }

    /// Opens the stores of newly assigned partitions and sets where each resumes (`tpl`'s
    /// offsets, which librdkafka then fetches from).
    fn assign(&self, parts: &mut Partitions, tpl: &mut TopicPartitionList) -> crate::Result<()> {
        let committed = self.committed(tpl)?;
        parts.begin_assignment()?;
        let numbers: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for p in numbers {
            if let Some(at) = parts.assign(p, committed.get(&p).copied())? {
                tpl.set_partition_offset(&self.topic, p, Offset::Offset(at))?;
            }
        }
        Ok(())
    }
}

impl Ctx {
    /// Hands the revoked partitions over: each store flushed (with a bucket, sealed and
    /// synced) and closed, then their offsets committed, synchronously, before librdkafka gives
    /// them up. The next owner, on another machine, sees in the group's offset exactly what
    /// the bucket holds (it cannot read the offsets inside remote segments).
    fn revoke(
        &self,
        native: &NativeClient,
        parts: &mut Partitions,
        tpl: &TopicPartitionList,
    ) -> crate::Result<()> {
        let mut done = TopicPartitionList::new();
        // Every revoked partition is closed, whatever happens to another: one left open would
        // be written to after librdkafka gave it away.
        let mut first_error = None;
        for e in tpl.elements() {
            let handed = match parts.revoke(e.partition()) {
                Ok(h) => h,
                Err(err) => {
                    first_error.get_or_insert(err);
                    None
                }
            };
            if let Some(c) = handed {
                done.add_partition_offset(&self.topic, e.partition(), Offset::Offset(c.offset))?;
                if let Some(mut el) = done.find_partition(&self.topic, e.partition()) {
                    el.set_metadata(c.metadata());
                }
            }
        }
        if done.count() == 0 {
            return first_error.map_or(Ok(()), Err);
        }
        // SAFETY: both handles are live for the call; a synchronous commit from the rebalance
        // callback is what librdkafka documents for committing on revoke.
        let err = unsafe { rdkafka_sys::rd_kafka_commit(native.ptr(), done.ptr(), 0) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            log::warn!("commit on revoke: {err:?}");
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    /// Opens the stores of assigned partitions before librdkafka starts fetching them, and
    /// flushes and closes (with a bucket: seals and syncs) revoked ones before it gives them up,
    /// so that the next owner opens a store that holds everything read so far.
    fn rebalance(&self, native: &NativeClient, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        {
            let mut parts = lock(&self.parts);
            let done = match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                    let generation = generation::current(native);
                    let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
                    if watch.assigned(generation) {
                        log::warn!(
                            "the group's coordinator ended a rebalance in the generation it began \
                             ({generation:?}): leaving and joining again as a new member"
                        );
                        self.rejoin.store(true, Ordering::Relaxed);
                    }
                    self.assign(&mut parts, tpl)
                }
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                    self.watch
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .revoked();
                    self.revoke(native, &mut parts, tpl)
                }
                _ => Ok(()),
            };
            if let Err(e) = done {
                log::error!("rebalance: {e}");
                parts.failed.get_or_insert(e);
            }
        }
        // librdkafka's own (un)assignment, as rdkafka does it for every context.
        DefaultConsumerContext.rebalance(native, err, tpl);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            log::warn!("offset commit: {e}");
        }
    }
}
